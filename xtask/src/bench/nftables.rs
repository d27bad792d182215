//! The stateful-firewall baseline of the egress-only scenario: Linux forwarding with an nftables
//! ruleset in the gateway namespace that lets out whatever the VPC side starts and lets in only
//! what conntrack knows as established or related. The table lives in the namespace: it goes with
//! it even if the driver is killed.

use anyhow::{Context as _, bail, ensure};

use super::{netns::Netns, topology};

const TABLE: &str = "gwbench";
/// Counts what the policy drops (the unsolicited flood's drop rate).
const DROP_COUNTER: &str = "unsolicited";

/// The ruleset, as `nft -f` reads it.
pub fn ruleset() -> String {
    format!(
        "table inet {TABLE} {{
    counter {DROP_COUNTER} {{
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname \"{vpc}\" oifname \"{inet}\" ct state new accept
        counter name \"{DROP_COUNTER}\" drop
    }}
}}
",
        vpc = topology::VPC_IF,
        inet = topology::INET_IF,
    )
}

pub fn install(netns: &Netns) -> anyhow::Result<()> {
    netns
        .exec_with_input(["nft", "-f", "-"], &ruleset())
        .context("installing the nftables ruleset (ct state established,related)")?;
    Ok(())
}

pub fn remove(netns: &Netns) -> anyhow::Result<()> {
    netns
        .exec(["nft", "delete", "table", "inet", TABLE])
        .context("removing the nftables ruleset")?;
    Ok(())
}

const NAT_TABLE: &str = "gwbench_nat";

/// The NAT44 baseline (scenarios S1, S2): Linux forwarding with conntrack and a source NAT rule
/// to the same public IPs as the gateway's NAT gateway, as `nft -f` reads it.
pub fn nat_ruleset() -> String {
    let first = topology::FIRST_NAT_PUBLIC;
    let last = std::net::Ipv4Addr::from(u32::from(first) + topology::NAT_PUBLIC_IPS - 1);
    // No port range: the rule would then need a transport protocol match, and the kernel keeps a
    // source port of 1024 or more in 1024-65535 anyway, the NAT gateway's default range.
    format!(
        "table ip {NAT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"{inet}\" snat ip to {first}-{last}
    }}
}}
",
        inet = topology::INET_IF,
    )
}

pub fn install_nat(netns: &Netns) -> anyhow::Result<()> {
    netns
        .exec_with_input(["nft", "-f", "-"], &nat_ruleset())
        .context("installing the nftables NAT ruleset (snat)")?;
    Ok(())
}

pub fn remove_nat(netns: &Netns) -> anyhow::Result<()> {
    netns
        .exec(["nft", "delete", "table", "ip", NAT_TABLE])
        .context("removing the nftables NAT ruleset")?;
    Ok(())
}

/// Connections the namespace's conntrack holds now, and its limit (`nf_conntrack_max`, one value
/// for the whole machine; the count is per namespace).
pub fn conntrack_count(netns: &Netns) -> anyhow::Result<(u64, u64)> {
    let read = |key: &str| -> anyhow::Result<u64> {
        let text = netns.exec(["cat", &format!("/proc/sys/net/netfilter/{key}")])?;
        text.trim()
            .parse()
            .with_context(|| format!("{key}: {text:?}"))
    };
    Ok((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// Deletes every conntrack entry of the calling thread's namespace (ctnetlink's flush: an
/// IPCTNL_MSG_CT_DELETE without attributes), so that the next trial starts with an empty table.
pub fn flush_conntrack() -> anyhow::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(NETLINK_NETFILTER)");
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) + nfgenmsg (4 bytes: family, version, res_id).
    let mut message = Vec::with_capacity(20);
    message.extend_from_slice(&20u32.to_ne_bytes());
    message.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    message.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    // SAFETY: sockaddr_nl is plain data; the buffer is valid for its length.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sending the conntrack flush");
    }
    let mut answer = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let received =
        unsafe { libc::recv(fd.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) };
    if received < 0 {
        return Err(std::io::Error::last_os_error()).context("reading the conntrack flush's ack");
    }
    ensure!(received >= 20, "short answer to the conntrack flush");
    // NLMSG_ERROR (2) with error 0 is the ack.
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    let error = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    ensure!(
        kind == libc::NLMSG_ERROR as u16 && error == 0,
        "the conntrack flush failed: {}",
        std::io::Error::from_raw_os_error(-error)
    );
    Ok(())
}

/// Packets the ruleset has dropped so far.
pub fn dropped(netns: &Netns) -> anyhow::Result<u64> {
    let text = netns
        .exec(["nft", "-j", "list", "counter", "inet", TABLE, DROP_COUNTER])
        .context("reading the nftables drop counter")?;
    packets_of(&text)
}

/// The `packets` of the counter in `nft -j list counter` output.
fn packets_of(json: &str) -> anyhow::Result<u64> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("parsing nft's JSON output")?;
    let entries = value["nftables"]
        .as_array()
        .context("no \"nftables\" array in nft's output")?;
    for entry in entries {
        if let Some(packets) = entry["counter"]["packets"].as_u64() {
            return Ok(packets);
        }
    }
    bail!("no counter in nft's output: {json}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"counter": {"family": "inet", "name": "unsolicited", "table": "gwbench", "handle": 1, "packets": 1234, "bytes": 78976}}]}"#;
        assert_eq!(packets_of(json).unwrap(), 1234);
        assert!(packets_of(r#"{"nftables": []}"#).is_err());
    }

    #[test]
    fn nat_ruleset_translates_to_the_public_ips() {
        let rules = nat_ruleset();
        assert!(rules.contains("type nat hook postrouting priority srcnat"));
        assert!(rules.contains("oifname \"gwb-inet\" snat ip to 198.18.16.0-198.18.16.7"));
    }

    #[test]
    fn ruleset_names_the_interfaces() {
        let rules = ruleset();
        assert!(rules.contains("policy drop"));
        assert!(rules.contains("ct state established,related accept"));
        assert!(rules.contains("iifname \"gwb-vpc\" oifname \"gwb-inet\" ct state new accept"));
    }
}
