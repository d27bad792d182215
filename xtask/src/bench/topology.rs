//! generator namespace -> gateway namespace (the device under test) -> sink namespace.
//!
//! ```text
//!  gen ns              gateway ns                         sink ns
//!  gen0  <== veth ==>  gwb-vpc [DUT]  gwb-inet  <== veth ==>  sink0 (bench_sink)
//!  BPF_PROG_RUN        10.0.0.1/16    198.19.255.1/24          "internet router"
//!  live frames, XDP_TX 2001:db8:1000:1::1/64                  198.19.255.2, 2001:db8:ffff::2
//!  (bench_sink)        2001:db8:1000:2::1/64 (egress-only subnet)
//! ```
//!
//! Most scenarios send from the generator namespace towards the internet. The egress-only
//! scenario also sends the other way: the generator program then runs in the sink namespace
//! (out of `sink0`), and `gen0` counts what arrives with the same sink program.
//!
//! The gateway namespace is a router in its own right (forwarding on, routes, static neighbours),
//! so the same topology measures the kernel forwarding baseline with nothing attached. Every
//! neighbour is static: no packet waits for ARP or ND. All addresses are documentation or
//! benchmarking ranges and exist only inside these namespaces.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Context as _;

use super::netns::Netns;

pub const GEN_IF: &str = "gen0";
/// The gateway's interfaces, as its configuration names them.
pub const VPC_IF: &str = "gwb-vpc";
pub const INET_IF: &str = "gwb-inet";
pub const SINK_IF: &str = "sink0";

pub const GEN_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 1, 1];
pub const VPC_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 1, 2];
pub const INET_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 2, 1];
pub const SINK_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 2, 2];

/// Elastic IPs in the benchmark's config: private 10.0.1.0 + i <-> public 198.18.0.0 + i.
pub const ELASTIC_IPS: u32 = 1024;
pub const FIRST_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 0);
pub const FIRST_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// In the subnet, without an Elastic IP (the "drop no-EIP" path).
pub const PRIVATE_WITHOUT_EIP: Ipv4Addr = Ipv4Addr::new(10, 0, 200, 1);
/// Outside every subnet (the "pass not ours" path).
pub const NOT_OURS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The internet host every generated packet goes to.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const INTERNET_HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 1);
/// First IPv6 source of the generator; flows add to the last 32 bits.
pub const FIRST_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, 1, 0, 0, 1, 0);
/// First instance of the subnet behind the egress-only internet gateway; flows add to the last 32
/// bits, up to [`EGRESS_ONLY_HOSTS`] addresses (each with a static neighbour entry).
pub const FIRST_EGRESS_ONLY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, 2, 0, 0, 1, 0);
pub const EGRESS_ONLY_HOSTS: u32 = 1024;

/// The NAT gateway's subnet (scenarios S1, S2), in a second VPC CIDR of [`gateway_config_nat`]:
/// flows add to the address (up to [`NAT_HOSTS`] instances), then to the source port.
pub const FIRST_NAT_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 0);
pub const NAT_HOSTS: u32 = 1 << 16;
/// The NAT gateway's public IPs: AWS's most (one primary, seven secondary), so that the port
/// space (8 x 64512) is not what limits the table; the nftables baseline translates to the same.
pub const FIRST_NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 0);
pub const NAT_PUBLIC_IPS: u32 = 8;

/// The IPv6-only subnet whose route to [`NAT64_PREFIX`] goes to the NAT gateway (scenario S6),
/// in the VPC's IPv6 CIDR: flows add to the last 32 bits of [`FIRST_NAT64_CLIENT`] (up to
/// [`NAT64_CLIENTS`] instances), then to the source port.
pub const NAT64_SUBNET: &str = "2001:db8:1000:3::/64";
pub const FIRST_NAT64_CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, 3, 0, 0, 1, 0);
/// Fewer instances than S1's 64k: the TAYGA baseline maps every instance to an address of its
/// own and finds a free one by walking a list, so 64k instances could not even be primed (over
/// 40 s of TAYGA's CPU without finishing); 1024 instances with up to 64 ports each still make
/// 64k flows.
pub const NAT64_CLIENTS: u32 = 1 << 10;
/// The NAT gateway's NAT64 prefix: a network-specific /96 (RFC 6052), since the well-known
/// 64:ff9b::/96 must not carry non-global IPv4 addresses such as the benchmark's.
pub const NAT64_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0);
pub const NAT64_PREFIX_LEN: u8 = 96;

/// `ipv4` embedded in [`NAT64_PREFIX`] (RFC 6052, a /96: the last 4 bytes).
pub fn nat64_address(ipv4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(NAT64_PREFIX) | u128::from(u32::from(ipv4)))
}

/// The three namespaces and their veths. Dropping it deletes everything.
pub struct Topology {
    // Field order is drop order: the namespaces go last, after whoever borrowed them.
    pub generator: Netns,
    pub gateway: Netns,
    pub sink: Netns,
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Topology {
    pub fn create() -> anyhow::Result<Topology> {
        let topology = Topology {
            generator: Netns::new("gen")?,
            gateway: Netns::new("gw")?,
            sink: Netns::new("sink")?,
        };
        topology.wire().context("building the benchmark topology")?;
        Ok(topology)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (generator, gateway, sink) = (&self.generator, &self.gateway, &self.sink);
        // The ends that are not routers have no business sending router solicitations or
        // neighbour discovery into the measurement.
        for end in [generator, sink] {
            end.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            end.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        generator.ip([
            "link",
            "add",
            GEN_IF,
            "address",
            &mac(GEN_MAC),
            "type",
            "veth",
            "peer",
            "name",
            VPC_IF,
            "address",
            &mac(VPC_MAC),
            "netns",
            gateway.name(),
        ])?;
        gateway.ip([
            "link",
            "add",
            INET_IF,
            "address",
            &mac(INET_MAC),
            "type",
            "veth",
            "peer",
            "name",
            SINK_IF,
            "address",
            &mac(SINK_MAC),
            "netns",
            sink.name(),
        ])?;
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        gateway.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        gateway.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        for (netns, interface) in [
            (generator, GEN_IF),
            (gateway, VPC_IF),
            (gateway, INET_IF),
            (sink, SINK_IF),
        ] {
            netns.ip(["link", "set", interface, "up"])?;
        }
        for (address, interface) in [("10.0.0.1/16", VPC_IF), ("198.19.255.1/24", INET_IF)] {
            gateway.ip(["addr", "add", address, "dev", interface])?;
        }
        for (address, interface) in [
            ("2001:db8:1000:1::1/64", VPC_IF),
            ("2001:db8:1000:2::1/64", VPC_IF),
            ("2001:db8:1000:3::1/64", VPC_IF),
            ("2001:db8:ffff::1/64", INET_IF),
        ] {
            gateway.ip(["-6", "addr", "add", address, "dev", interface, "nodad"])?;
        }
        gateway.ip([
            "route",
            "add",
            "default",
            "via",
            "198.19.255.2",
            "dev",
            INET_IF,
        ])?;
        gateway.ip([
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:ffff::2",
            "dev",
            INET_IF,
        ])?;
        // The NAT gateway's subnet (scenarios S1, S2, S5): a second VPC CIDR, on the VPC side.
        gateway.ip([
            "route",
            "add",
            &format!("{FIRST_NAT_PRIVATE}/16"),
            "dev",
            VPC_IF,
        ])?;
        for (address, lladdr, interface) in [
            // The instance of the NAT44 reply path (program-cost scenario).
            ("10.3.0.0", GEN_MAC, VPC_IF),
            ("198.19.255.2", SINK_MAC, INET_IF),
            ("2001:db8:ffff::2", SINK_MAC, INET_IF),
            // The instance of the NAT64 reply path (program-cost scenario).
            ("2001:db8:1000:3::1:0", GEN_MAC, VPC_IF),
            // The instance of the inbound path (program-cost scenario).
            ("10.0.1.0", GEN_MAC, VPC_IF),
        ] {
            gateway.ip([
                "neigh",
                "replace",
                address,
                "lladdr",
                &mac(lladdr),
                "dev",
                interface,
                "nud",
                "permanent",
            ])?;
        }
        // The instances behind the egress-only gateway: static too (the kernel baselines
        // forward replies to them, and the gateway's FIB lookups must find them).
        let mut batch = String::new();
        for index in 0..EGRESS_ONLY_HOSTS {
            let host = Ipv6Addr::from(u128::from(FIRST_EGRESS_ONLY_V6) + u128::from(index));
            // Writing to a String cannot fail.
            let _ = writeln!(
                batch,
                "neigh replace {host} lladdr {} dev {VPC_IF} nud permanent",
                mac(GEN_MAC)
            );
        }
        gateway
            .ip_batch(&batch)
            .context("static neighbours of the egress-only subnet")?;
        // GRO keeps the veth's NAPI instance alive without an XDP program, which is what lets
        // XDP frames from the generator reach the kernel-forwarding baseline at all (both ways:
        // the egress-only scenario also sends from the internet side).
        for interface in [VPC_IF, INET_IF] {
            gateway.exec(["ethtool", "-K", interface, "gro", "on"])?;
        }
        Ok(())
    }

    /// Moves the gateway veths' receive processing into NAPI kernel threads pinned to `cpu`,
    /// away from the generator's CPU. Without it the generator's own CPU runs the device under
    /// test in softirq right after each batch, and the measured rate would be that of the
    /// generator and the gateway together. Returns the number of threads pinned.
    pub fn isolate_gateway_rx(&self, cpu: usize) -> anyhow::Result<usize> {
        let mut pinned = 0;
        for interface in [VPC_IF, INET_IF] {
            self.gateway.exec([
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{interface}/threaded"),
            ])?;
            pinned += pin_napi_threads(interface, cpu)?;
        }
        Ok(pinned)
    }
}

/// Pins every NAPI kernel thread of `interface` (named `napi/<interface>-<id>`) to `cpu`.
pub fn pin_napi_threads(interface: &str, cpu: usize) -> anyhow::Result<usize> {
    let prefix = format!("napi/{interface}-");
    let mut pinned = 0;
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // Threads come and go: an unreadable comm is simply not ours.
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end().starts_with(&prefix) {
            pin(pid, cpu).with_context(|| format!("pinning {} to CPU {cpu}", comm.trim_end()))?;
            boost(pid).with_context(|| format!("raising the priority of {}", comm.trim_end()))?;
            pinned += 1;
        }
    }
    Ok(pinned)
}

/// Gives thread `tid` (0: the calling thread) nice -20, so that whatever else the machine runs
/// (builds, other tests) takes less of the CPUs being measured. Still fair scheduling: unlike a
/// real-time class it cannot lock anyone out.
pub fn boost(tid: libc::pid_t) -> anyhow::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = if tid == 0 {
        unsafe { libc::gettid() }
    } else {
        tid
    };
    // SAFETY: plain syscall; on Linux PRIO_PROCESS with a thread id changes only that thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setpriority");
    }
    Ok(())
}

/// Pins thread `pid` (0: the calling thread) to `cpu`.
pub fn pin(pid: libc::pid_t, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

/// The gateway configuration of the benchmark, in the format users write: one subnet behind the
/// internet gateway with [`ELASTIC_IPS`] Elastic IPs, IPv4 and IPv6 default routes to it, and an
/// IPv6-only subnet whose default route is an egress-only internet gateway.
pub fn gateway_config() -> String {
    let mut text = String::from(
        r#"# Generated by `cargo xtask bench`.
[vpc]
id = "vpc-0bench"
account_id = "123456789012"
ipv4_cidrs = ["10.0.0.0/16"]
ipv6_cidrs = ["2001:db8:1000::/56"]

[[interfaces]]
name = "gwb-vpc"
role = "vpc"

[[interfaces]]
name = "gwb-inet"
role = "internet"

[[subnets]]
id = "subnet-bench"
ipv4_cidr = "10.0.0.0/16"
ipv6_cidr = "2001:db8:1000:1::/64"
route_table = "rtb-bench"

# IPv6 only, behind the egress-only internet gateway (scenario S4).
[[subnets]]
id = "subnet-bench-egress-only"
ipv6_cidr = "2001:db8:1000:2::/64"
route_table = "rtb-bench-egress-only"

[[route_tables]]
id = "rtb-bench"
routes = [
  { destination = "0.0.0.0/0", target = "igw-bench" },
  { destination = "::/0", target = "igw-bench" },
]

[[route_tables]]
id = "rtb-bench-egress-only"
routes = [{ destination = "::/0", target = "eigw-bench" }]

[[egress_only_internet_gateways]]
id = "eigw-bench"

[internet_gateway]
id = "igw-bench"
elastic_ips = [
"#,
    );
    for index in 0..ELASTIC_IPS {
        let private = Ipv4Addr::from(u32::from(FIRST_PRIVATE) + index);
        let public = Ipv4Addr::from(u32::from(FIRST_PUBLIC) + index);
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "  {{ private = \"{private}\", public = \"{public}\" }},"
        );
    }
    text.push_str("]\n");
    text
}

/// [`gateway_config`] plus a NAT gateway (scenarios S1, S2): a second VPC CIDR whose subnet's
/// default route is `nat-bench` with [`NAT_PUBLIC_IPS`] public IPs and the default port range and
/// mapping. Only keys that a dataplane without NAT also parses: such a dataplane refuses the route
/// to the NAT gateway, which is how the benchmark knows (see [`nat_unsupported`]).
pub fn gateway_config_nat() -> String {
    let base = gateway_config();
    let mut text = base.replacen(
        "ipv4_cidrs = [\"10.0.0.0/16\"]",
        "ipv4_cidrs = [\"10.0.0.0/16\", \"10.3.0.0/16\"]",
        1,
    );
    let public_ips = (0..NAT_PUBLIC_IPS)
        .map(|index| {
            format!(
                "\"{}\"",
                Ipv4Addr::from(u32::from(FIRST_NAT_PUBLIC) + index)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        r#"
# Scenarios S1 and S2: a private subnet behind a NAT gateway.
[[subnets]]
id = "subnet-bench-nat"
ipv4_cidr = "{FIRST_NAT_PRIVATE}/16"
route_table = "rtb-bench-nat"

[[route_tables]]
id = "rtb-bench-nat"
routes = [{{ destination = "0.0.0.0/0", target = "nat-bench" }}]

[[nat_gateways]]
id = "nat-bench"
public_ips = [{public_ips}]
"#
    );
    text
}

/// [`gateway_config_nat`] plus NAT64 (scenario S6): the NAT gateway gets [`NAT64_PREFIX`], and
/// an IPv6-only subnet ([`NAT64_SUBNET`]) routes that prefix to it, the way AWS routes
/// 64:ff9b::/96 to a NAT gateway. A dataplane without NAT64 refuses the IPv6 route to the NAT
/// gateway (see [`nat64_unsupported`]).
pub fn gateway_config_nat64() -> String {
    let mut text = gateway_config_nat();
    // The NAT gateway's table is the last one of gateway_config_nat: the key lands in it (were it
    // not so, the parser would report the key as unknown where it landed).
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        r#"nat64_prefix = "{NAT64_PREFIX}/{NAT64_PREFIX_LEN}"

# Scenario S6: IPv6-only instances reach IPv4 hosts through the NAT gateway's NAT64.
[[subnets]]
id = "subnet-bench-nat64"
ipv6_cidr = "{NAT64_SUBNET}"
route_table = "rtb-bench-nat64"

[[route_tables]]
id = "rtb-bench-nat64"
routes = [{{ destination = "{NAT64_PREFIX}/{NAT64_PREFIX_LEN}", target = "nat-bench" }}]
"#
    );
    text
}

/// Why the dataplane cannot run the NAT scenarios, if it cannot: its config parser refuses the
/// route to a NAT gateway (a dataplane without NAT44). Any other problem with the config is an
/// error of the benchmark itself.
pub fn nat_unsupported() -> anyhow::Result<Option<String>> {
    refused_for(
        &gateway_config_nat(),
        "bench-nat.toml",
        &["NAT gateway", "not"],
    )
}

/// Why the dataplane cannot run NAT64 (scenario S6's "ours", its S5 rows), if it cannot: its
/// config parser refuses the IPv6 route to the NAT gateway (a dataplane without NAT64, or without
/// NAT at all).
pub fn nat64_unsupported() -> anyhow::Result<Option<String>> {
    if let Some(reason) = nat_unsupported()? {
        return Ok(Some(reason));
    }
    refused_for(
        &gateway_config_nat64(),
        "bench-nat64.toml",
        &["NAT gateway", "NAT64"],
    )
}

/// `Ok(Some(reason))` when the gateway's parser refuses `config` only for a feature the dataplane
/// lacks: every problem it reports (one a line) contains every word of `expected`. Any other
/// problem is an error of the benchmark's own config.
fn refused_for(config: &str, name: &str, expected: &[&str]) -> anyhow::Result<Option<String>> {
    match gateway::config::Config::parse(config, name) {
        Ok(_) => Ok(None),
        Err(error) => {
            let text = error.to_string();
            anyhow::ensure!(
                text.lines()
                    .filter(|line| !line.trim().is_empty())
                    .all(|line| expected.iter().all(|word| line.contains(word))),
                "the benchmark's config {name}: {text}"
            );
            Ok(Some(text))
        }
    }
}

/// The public address of a private one in [`gateway_config`].
pub fn elastic_ip_of(private: Ipv4Addr) -> Option<Ipv4Addr> {
    let index = u32::from(private).checked_sub(u32::from(FIRST_PRIVATE))?;
    (index < ELASTIC_IPS).then(|| Ipv4Addr::from(u32::from(FIRST_PUBLIC) + index))
}

pub fn v4(addr: Ipv4Addr) -> IpAddr {
    IpAddr::V4(addr)
}

pub fn v6(addr: Ipv6Addr) -> IpAddr {
    IpAddr::V6(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validates() {
        let config = gateway::config::Config::parse(&gateway_config(), "bench.toml")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.egress_only_internet_gateways.len(), 1);
        assert_eq!(config.subnets.len(), 2);
        let igw = config.internet_gateway.unwrap();
        assert_eq!(igw.elastic_ips.len(), ELASTIC_IPS as usize);
        assert_eq!(
            elastic_ip_of(Ipv4Addr::new(10, 0, 4, 255)),
            Some(Ipv4Addr::new(198, 18, 3, 255))
        );
        assert_eq!(elastic_ip_of(PRIVATE_WITHOUT_EIP), None);
    }

    /// Parses where the dataplane has NAT44; elsewhere the only complaint is the NAT route.
    #[test]
    fn nat_config_parses_or_is_refused_for_nat() {
        match nat_unsupported().unwrap() {
            None => {
                let config = gateway::config::Config::parse(&gateway_config_nat(), "bench.toml")
                    .unwrap_or_else(|error| panic!("{error}"));
                assert_eq!(config.nat_gateways.len(), 1);
                assert_eq!(
                    config.nat_gateways[0].public_ips.len(),
                    NAT_PUBLIC_IPS as usize
                );
                assert_eq!(config.subnets.len(), 3);
            }
            Some(reason) => assert!(reason.contains("nat-bench"), "{reason}"),
        }
    }

    /// Parses where the dataplane has NAT64; elsewhere the only complaint is the IPv6 route to
    /// the NAT gateway.
    #[test]
    fn nat64_config_parses_or_is_refused_for_nat64() {
        match nat64_unsupported().unwrap() {
            None => {
                let config = gateway::config::Config::parse(&gateway_config_nat64(), "bench.toml")
                    .unwrap_or_else(|error| panic!("{error}"));
                assert_eq!(
                    config.nat_gateways[0].nat64_prefix,
                    Some(
                        format!("{NAT64_PREFIX}/{NAT64_PREFIX_LEN}")
                            .parse()
                            .unwrap()
                    )
                );
                assert_eq!(config.subnets.len(), 4);
            }
            Some(reason) => assert!(reason.contains("nat-bench"), "{reason}"),
        }
    }

    #[test]
    fn nat64_addresses_embed_the_ipv4_address() {
        assert_eq!(
            nat64_address(INTERNET_HOST),
            "2001:db8:64::c613:1".parse::<Ipv6Addr>().unwrap()
        );
        let client: Ipv6Addr = NAT64_SUBNET.split('/').next().unwrap().parse().unwrap();
        assert_eq!(
            u128::from(FIRST_NAT64_CLIENT) >> 64,
            u128::from(client) >> 64,
            "the first client is in the NAT64 subnet"
        );
    }
}
