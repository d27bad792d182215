//! The stateful-firewall baseline of the egress-only scenario: Linux forwarding with an nftables
//! ruleset in the gateway namespace that lets out whatever the VPC side starts and lets in only
//! what conntrack knows as established or related. The table lives in the namespace: it goes with
//! it even if the driver is killed.

use anyhow::{Context as _, bail};

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
    fn ruleset_names_the_interfaces() {
        let rules = ruleset();
        assert!(rules.contains("policy drop"));
        assert!(rules.contains("ct state established,related accept"));
        assert!(rules.contains("iifname \"gwb-vpc\" oifname \"gwb-inet\" ct state new accept"));
    }
}
