//! The internet-gateway topology: four namespaces in a line.
//!
//! ```text
//! instance                gateway (XDP)                               router                                    internet host
//! eth0 ------------------ gw-vpc                 gw-inet ------------ rtr-gw               rtr-inet ----------- eth0
//! 10.0.1.10/24            10.0.1.1/24            198.51.100.1/24      198.51.100.2/24      192.0.2.1/24         192.0.2.10/24
//! 2001:db8:1000:1::10/64  2001:db8:1000:1::1/64  2001:db8:ffff::1/64  2001:db8:ffff::2/64  2001:db8:eeee::1/64  2001:db8:eeee::10/64
//!
//! Elastic IP 203.0.113.10 <-> 10.0.1.10. The router sends 203.0.113.0/24 and 2001:db8:1000::/56
//! to the gateway and has no route to 10.0.0.0/16: a private address only gets out translated.
//! ```
//!
//! `examples/igw-demo.toml` depends on these names and addresses.
//!
//! [`IgwTopology::add_second_instance`] adds a second private host, 10.0.1.11, in a fifth
//! namespace: a macvlan (bridge mode) on the instance's `eth0`, so both hosts share the one link
//! to the gateway's `gw-vpc` (`examples/nat-gateway.toml` puts both behind a NAT gateway).
//! [`IgwTopology::make_instance_ipv6_only`] removes the instance's IPv4, for NAT64.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    gateway::{GatewayConfigFiles, GatewayProcess, gateway_binary, write_gateway_config},
    netns::Netns,
    util::{TempDir, wait_until},
};

/// The addresses of the topology, named by what they are.
pub mod addr {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The instance's private IPv4 address (VPC subnet 10.0.1.0/24).
    pub const INSTANCE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
    /// The instance's global IPv6 address: the internet sees it as is.
    pub const INSTANCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 0x10);
    /// The second private host's address (see [`IgwTopology::add_second_instance`]).
    pub const SECOND_INSTANCE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
    /// The NAT gateway's public address in `examples/nat-gateway.toml`.
    pub const NAT_PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
    /// The Elastic IP that the gateway maps 1:1 to [`INSTANCE_V4`].
    pub const ELASTIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// The gateway's VPC-side addresses (the instance's default routers).
    pub const GATEWAY_VPC_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    pub const GATEWAY_VPC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 1);
    /// The gateway's internet-side addresses.
    pub const GATEWAY_INET_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    pub const GATEWAY_INET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
    /// The router's gateway-side addresses: the source of its ICMP errors towards the VPC.
    pub const ROUTER_GW_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    pub const ROUTER_GW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2);
    /// The router's internet-side addresses.
    pub const ROUTER_INET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const ROUTER_INET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xeeee, 0, 0, 0, 0, 1);
    /// The internet host.
    pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xeeee, 0, 0, 0, 0, 0x10);
}

/// Interface names, fixed because the gateway config names them.
pub mod ifname {
    pub const INSTANCE: &str = "eth0";
    pub const GATEWAY_VPC: &str = "gw-vpc";
    pub const GATEWAY_INET: &str = "gw-inet";
    pub const ROUTER_GW: &str = "rtr-gw";
    pub const ROUTER_INET: &str = "rtr-inet";
    pub const INTERNET: &str = "eth0";
}

/// Four namespaces wired as in the module docs, plus a private temp dir for config files, flow
/// logs and the control socket. Dropping it removes everything.
#[derive(Debug)]
pub struct IgwTopology {
    pub instance: Netns,
    pub gateway: Netns,
    pub router: Netns,
    pub internet: Netns,
    /// The second private host, once [`IgwTopology::add_second_instance`] has made it.
    pub second_instance: Option<Netns>,
    dir: TempDir,
}

impl IgwTopology {
    /// Builds the topology and waits until every link is up and no IPv6 address is tentative.
    pub fn new() -> anyhow::Result<Self> {
        let topology = Self {
            instance: Netns::new("igw-inst")?,
            gateway: Netns::new("igw-gw")?,
            router: Netns::new("igw-rtr")?,
            internet: Netns::new("igw-inet")?,
            second_instance: None,
            dir: TempDir::new("igw")?,
        };
        topology
            .wire()
            .context("building the internet-gateway topology")?;
        Ok(topology)
    }

    /// Adds the second private host 10.0.1.11/24 (default route via 10.0.1.1) in its own
    /// namespace, on a macvlan of the instance's `eth0` (named `eth0` there too), and returns it.
    pub fn add_second_instance(&mut self) -> anyhow::Result<&Netns> {
        use addr::*;
        use ifname::*;

        let second = Netns::new("igw-inst2")?;
        second.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        second.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        // Made in the instance's namespace (its lower device is there), then moved and renamed.
        const TEMPORARY: &str = "eth0-second";
        self.instance
            .ip([
                "link", "add", TEMPORARY, "link", INSTANCE, "type", "macvlan", "mode", "bridge",
            ])
            .context("creating the second host's macvlan on the instance's eth0")?;
        self.instance
            .ip(["link", "set", TEMPORARY, "netns", second.name()])?;
        second.ip(["link", "set", TEMPORARY, "name", INSTANCE])?;
        second.ip([
            "addr",
            "add",
            &format!("{SECOND_INSTANCE_V4}/24"),
            "dev",
            INSTANCE,
        ])?;
        // As for every other interface: full checksums leave the host (see `wire`).
        second
            .run(["ethtool", "-K", INSTANCE, "tx", "off"])
            .context("turning tx checksum offload off on the second host's eth0")?;
        second.ip(["link", "set", INSTANCE, "up"])?;
        route(&second, "default", &GATEWAY_VPC_V4.into())?;
        wait_until(
            Duration::from_secs(10),
            &format!("{INSTANCE} in {} to come up", second.name()),
            || {
                Ok(second
                    .ip(["-o", "link", "show", "dev", INSTANCE])?
                    .contains("LOWER_UP"))
            },
        )?;
        Ok(self.second_instance.insert(second))
    }

    /// Takes the instance's IPv4 away: its address on `eth0` and every IPv4 route through it,
    /// leaving an IPv6-only host (loopback keeps 127.0.0.1) whose default IPv6 route still goes
    /// to the gateway, as an instance behind NAT64 has. Fails unless no global IPv4 address and
    /// no IPv4 route are left.
    pub fn make_instance_ipv6_only(&self) -> anyhow::Result<()> {
        use ifname::INSTANCE;

        self.instance.ip(["-4", "addr", "flush", "dev", INSTANCE])?;
        self.instance
            .ip(["-4", "route", "flush", "dev", INSTANCE])?;
        let addresses = self
            .instance
            .ip(["-4", "-o", "addr", "show", "scope", "global"])?;
        let routes = self.instance.ip(["-4", "route", "show"])?;
        anyhow::ensure!(
            addresses.trim().is_empty() && routes.trim().is_empty(),
            "{} still has IPv4: addresses {addresses:?}, routes {routes:?}",
            self.instance.name()
        );
        Ok(())
    }

    /// A directory private to this topology, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the example config with its flow log and control socket moved into `dir` (see
    /// [`write_gateway_config`]).
    pub fn write_config(&self, dir: &Path) -> anyhow::Result<GatewayConfigFiles> {
        write_gateway_config(&example_config_path(), dir)
    }

    /// Starts `gateway run --config CONFIG` in the gateway namespace and waits for its control
    /// socket. The binary comes from [`gateway_binary`].
    pub fn start_gateway(&self, config: &Path) -> anyhow::Result<GatewayProcess> {
        GatewayProcess::start(&self.gateway, &gateway_binary()?, config)
    }

    /// The common case: write the config into [`IgwTopology::dir`] and start the gateway with it.
    pub fn start_default_gateway(&self) -> anyhow::Result<(GatewayConfigFiles, GatewayProcess)> {
        self.start_example_gateway(&example_config_path())
    }

    /// Like [`IgwTopology::start_default_gateway`] with another example config (e.g.
    /// [`example_path`]`("egress-only.toml")`), rewritten into [`IgwTopology::dir`].
    pub fn start_example_gateway(
        &self,
        example: &Path,
    ) -> anyhow::Result<(GatewayConfigFiles, GatewayProcess)> {
        let files = write_gateway_config(example, self.dir())?;
        let gateway = self.start_gateway(&files.config)?;
        Ok((files, gateway))
    }

    fn wire(&self) -> anyhow::Result<()> {
        use addr::*;
        use ifname::*;

        for ns in self.all() {
            // With DAD on, a fresh IPv6 address stays tentative (unusable) for a second or more;
            // `nodad` covers the global ones, this covers the link-local ones.
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        for ns in [&self.gateway, &self.router] {
            // Forwarding must be on for the kernel path and for bpf_fib_lookup in XDP.
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }

        // Each pair is created inside the namespaces, so names never meet in the root namespace
        // and parallel topologies can all use eth0, gw-vpc, ...
        veth(&self.instance, INSTANCE, &self.gateway, GATEWAY_VPC)?;
        veth(&self.gateway, GATEWAY_INET, &self.router, ROUTER_GW)?;
        veth(&self.router, ROUTER_INET, &self.internet, INTERNET)?;

        address(
            &self.instance,
            INSTANCE,
            "10.0.1.10/24",
            "2001:db8:1000:1::10/64",
        )?;
        address(
            &self.gateway,
            GATEWAY_VPC,
            "10.0.1.1/24",
            "2001:db8:1000:1::1/64",
        )?;
        address(
            &self.gateway,
            GATEWAY_INET,
            "198.51.100.1/24",
            "2001:db8:ffff::1/64",
        )?;
        address(
            &self.router,
            ROUTER_GW,
            "198.51.100.2/24",
            "2001:db8:ffff::2/64",
        )?;
        address(
            &self.router,
            ROUTER_INET,
            "192.0.2.1/24",
            "2001:db8:eeee::1/64",
        )?;
        address(
            &self.internet,
            INTERNET,
            "192.0.2.10/24",
            "2001:db8:eeee::10/64",
        )?;

        // Packets from a veth carry CHECKSUM_PARTIAL (only the pseudo-header sum) unless tx
        // checksum offload is off, and XDP_REDIRECT skips the kernel's fix-up; full checksums keep
        // the test about the gateway, not about offload.
        for (ns, dev) in self.interfaces() {
            ns.run(["ethtool", "-K", dev, "tx", "off"])
                .with_context(|| format!("turning tx checksum offload off on {dev}"))?;
        }
        // A veth accepts XDP_REDIRECT-ed frames only when the receiving end has NAPI, i.e. its own
        // XDP program or GRO on. These two receive what the gateway redirects.
        for (ns, dev) in [(&self.instance, INSTANCE), (&self.router, ROUTER_GW)] {
            ns.run(["ethtool", "-K", dev, "gro", "on"])
                .with_context(|| format!("turning GRO on on {dev}"))?;
        }

        for (ns, dev) in self.interfaces() {
            ns.ip(["link", "set", dev, "up"])?;
        }

        route(&self.instance, "default", &GATEWAY_VPC_V4.into())?;
        route(&self.instance, "default", &GATEWAY_VPC_V6.into())?;
        route(&self.gateway, "default", &ROUTER_GW_V4.into())?;
        route(&self.gateway, "default", &ROUTER_GW_V6.into())?;
        route(&self.router, "203.0.113.0/24", &GATEWAY_INET_V4.into())?;
        route(&self.router, "2001:db8:1000::/56", &GATEWAY_INET_V6.into())?;
        route(&self.internet, "default", &ROUTER_INET_V4.into())?;
        route(&self.internet, "default", &ROUTER_INET_V6.into())?;

        for (ns, dev) in self.interfaces() {
            wait_until(
                Duration::from_secs(10),
                &format!("{dev} in {} to come up", ns.name()),
                || {
                    Ok(ns
                        .ip(["-o", "link", "show", "dev", dev])?
                        .contains("LOWER_UP"))
                },
            )?;
        }
        for ns in self.all() {
            wait_until(
                Duration::from_secs(10),
                &format!("IPv6 addresses in {} to leave tentative state", ns.name()),
                || {
                    Ok(ns
                        .ip(["-6", "-o", "addr", "show", "tentative"])?
                        .trim()
                        .is_empty())
                },
            )?;
        }
        Ok(())
    }

    fn all(&self) -> [&Netns; 4] {
        [&self.instance, &self.gateway, &self.router, &self.internet]
    }

    fn interfaces(&self) -> [(&Netns, &'static str); 6] {
        use ifname::*;
        [
            (&self.instance, INSTANCE),
            (&self.gateway, GATEWAY_VPC),
            (&self.gateway, GATEWAY_INET),
            (&self.router, ROUTER_GW),
            (&self.router, ROUTER_INET),
            (&self.internet, INTERNET),
        ]
    }
}

/// `examples/igw-demo.toml` in the source tree (found from this crate, not from the working
/// directory, so tests and xtask agree).
pub fn example_config_path() -> PathBuf {
    example_path("igw-demo.toml")
}

/// `examples/<name>` in the source tree; every example there fits this topology.
pub fn example_path(name: &str) -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .unwrap_or(tests_crate)
        .join("examples")
        .join(name)
}

fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> anyhow::Result<()> {
    a.ip([
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])
    .with_context(|| {
        format!(
            "creating veth {a_name} ({}) <-> {b_name} ({})",
            a.name(),
            b.name()
        )
    })?;
    Ok(())
}

fn address(ns: &Netns, dev: &str, v4: &str, v6: &str) -> anyhow::Result<()> {
    ns.ip(["addr", "add", v4, "dev", dev])?;
    ns.ip(["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
    Ok(())
}

fn route(ns: &Netns, to: &str, via: &IpAddr) -> anyhow::Result<()> {
    let family = if via.is_ipv4() { "-4" } else { "-6" };
    ns.ip([family, "route", "add", to, "via", &via.to_string()])?;
    Ok(())
}

/// An unspecified address of the same family, for binding.
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}
