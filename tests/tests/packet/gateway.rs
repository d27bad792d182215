//! The gateway under test: a network namespace with the two interfaces, routes and neighbours the
//! FIB lookup needs, the XDP program loaded inside it with the test VPC's config, and
//! `BPF_PROG_TEST_RUN` through it.
//!
//! ```text
//!   instance 10.0.1.10 / 2001:db8:1000:1::10 (mac INSTANCE)       router 198.51.100.2 / 2001:db8:ffff::2 (mac ROUTER)
//!        |                                                              |
//!   vpc0 10.0.1.1/24, 2001:db8:1000:1::1/64 (VPC0) -- XDP -- inet0 198.51.100.1/24, 2001:db8:ffff::1/64 (INET0)
//! ```

use std::collections::BTreeMap;

use aya::programs::{TestRun as _, TestRunOptions, TestRunResult};
use gateway::{
    config::Config,
    dataplane::{Dataplane, MapPlan, ifindex_of},
};
use gateway_common::Counter;

use super::{frames::*, netns::NetNs};

/// XDP verdicts as `BPF_PROG_TEST_RUN` returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl Verdict {
    pub fn from_raw(raw: u32) -> Verdict {
        match raw {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => Verdict::Other(other),
        }
    }
}

/// Which interface a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `vpc0`, facing the instances.
    Vpc,
    /// `inet0`, facing the internet.
    Internet,
}

/// What one `BPF_PROG_TEST_RUN` returned.
pub struct Outcome {
    pub verdict: Verdict,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    pub duration: std::time::Duration,
}

/// The test VPC, as a configuration file:
/// - VPC 10.0.0.0/16 + 2001:db8:1000::/56;
/// - subnet 0: 10.0.1.0/24 + 2001:db8:1000:1::/64, route table `rtb-public`: the implicit local
///   routes, 0.0.0.0/0 and ::/0 -> internet gateway, 192.0.2.128/25 -> blackhole;
/// - subnet 1: 10.0.2.0/24, route table `rtb-isolated`: the local routes only (no way out);
/// - Elastic IP 10.0.1.10 <-> 203.0.113.10 (10.0.1.11 has none).
pub const TEST_CONFIG: &str = r#"
[vpc]
id = "vpc-packet-tests"
account_id = "123456789012"
ipv4_cidrs = ["10.0.0.0/16"]
ipv6_cidrs = ["2001:db8:1000::/56"]

[[interfaces]]
name = "vpc0"
role = "vpc"

[[interfaces]]
name = "inet0"
role = "internet"

[[subnets]]
id = "subnet-public"
ipv4_cidr = "10.0.1.0/24"
ipv6_cidr = "2001:db8:1000:1::/64"
route_table = "rtb-public"

[[subnets]]
id = "subnet-isolated"
ipv4_cidr = "10.0.2.0/24"
route_table = "rtb-isolated"

[[route_tables]]
id = "rtb-public"
routes = [
  { destination = "0.0.0.0/0", target = "igw-packet-tests" },
  { destination = "::/0", target = "igw-packet-tests" },
  { destination = "192.0.2.128/25", target = "blackhole" },
]

[[route_tables]]
id = "rtb-isolated"
routes = []

[internet_gateway]
id = "igw-packet-tests"
elastic_ips = [{ private = "10.0.1.10", public = "203.0.113.10" }]
"#;

pub fn test_config() -> Config {
    parse_config(TEST_CONFIG)
}

/// Parses a packet-test configuration, panicking with every problem the parser found.
pub fn parse_config(text: &str) -> Config {
    Config::parse(text, "packet-tests.toml")
        .unwrap_or_else(|error| panic!("the packet tests' config: {error}"))
}

/// The loaded gateway in its own namespace. Field order matters: the program and its maps are
/// released before the namespace is left and deleted.
pub struct TestGateway {
    pub dataplane: Dataplane,
    vpc0: u32,
    inet0: u32,
    _netns: NetNs,
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl TestGateway {
    /// The gateway with [`TEST_CONFIG`].
    pub fn new() -> TestGateway {
        TestGateway::with_config(&test_config(), &[])
    }

    /// The gateway with another configuration of the same two interfaces; `extra_setup` are
    /// further `ip` commands (addresses, neighbours) that configuration needs in the namespace.
    pub fn with_config(config: &Config, extra_setup: &[String]) -> TestGateway {
        pin_to_one_cpu();
        let netns = NetNs::enter();
        for command in [
            "link set lo up".to_string(),
            "link add vpc0 type veth peer name vpc0-peer".into(),
            "link add inet0 type veth peer name inet0-peer".into(),
            format!("link set vpc0 address {}", mac(VPC0_MAC)),
            format!("link set inet0 address {}", mac(INET0_MAC)),
            "addr add 10.0.1.1/24 dev vpc0".into(),
            "addr add 2001:db8:1000:1::1/64 dev vpc0 nodad".into(),
            "addr add 198.51.100.1/24 dev inet0".into(),
            "addr add 2001:db8:ffff::1/64 dev inet0 nodad".into(),
            "link set vpc0 up".into(),
            "link set vpc0-peer up".into(),
            "link set inet0 up".into(),
            "link set inet0-peer up".into(),
            "route add default via 198.51.100.2 dev inet0".into(),
            "-6 route add default via 2001:db8:ffff::2 dev inet0".into(),
            format!(
                "neigh add 10.0.1.10 lladdr {} nud permanent dev vpc0",
                mac(INSTANCE_MAC)
            ),
            format!(
                "neigh add 10.0.1.11 lladdr {} nud permanent dev vpc0",
                mac(INSTANCE_MAC)
            ),
            format!(
                "neigh add 2001:db8:1000:1::10 lladdr {} nud permanent dev vpc0",
                mac(INSTANCE_MAC)
            ),
            format!(
                "neigh add 198.51.100.2 lladdr {} nud permanent dev inet0",
                mac(ROUTER_MAC)
            ),
            format!(
                "neigh add 2001:db8:ffff::2 lladdr {} nud permanent dev inet0",
                mac(ROUTER_MAC)
            ),
        ]
        .iter()
        .chain(extra_setup)
        {
            netns.ip(command);
        }
        netns.sysctl("net.ipv4.ip_forward=1");
        netns.sysctl("net.ipv6.conf.all.forwarding=1");

        // Inside the namespace from here on: interface names and the device map resolve there.
        let vpc0 = ifindex_of("vpc0").expect("vpc0 exists in the test namespace");
        let inet0 = ifindex_of("inet0").expect("inet0 exists in the test namespace");
        let mut dataplane = Dataplane::load()
            .unwrap_or_else(|error| panic!("loading the dataplane in {}: {error:#}", netns.name()));
        let plan = MapPlan::new(config, ifindex_of)
            .unwrap_or_else(|error| panic!("map plan for the test config: {error:#}"));
        dataplane
            .apply(&plan)
            .unwrap_or_else(|error| panic!("writing the maps: {error:#}"));
        TestGateway {
            dataplane,
            vpc0,
            inet0,
            _netns: netns,
        }
    }

    /// Deletes every flow-log entry, and with them the cached next hops of the fast path, so the
    /// next packet takes the slow path.
    pub fn forget_flows(&mut self) {
        let keys: Vec<_> = self
            .dataplane
            .flows()
            .unwrap_or_else(|error| panic!("reading the flow table: {error:#}"))
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        self.dataplane
            .remove_flows(&keys)
            .unwrap_or_else(|error| panic!("clearing the flow table: {error:#}"));
    }

    pub fn ifindex(&self, side: Side) -> u32 {
        match side {
            Side::Vpc => self.vpc0,
            Side::Internet => self.inet0,
        }
    }

    /// Runs the program `repeat` times over `frame` arriving on `side`. `Err` is the kernel's
    /// refusal to run (e.g. a frame shorter than an Ethernet header).
    pub fn try_run(
        &mut self,
        side: Side,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Outcome, aya::programs::ProgramError> {
        let ctx = xdp_md(self.ifindex(side), frame.len());
        let mut out = vec![0u8; frame.len() + 256];
        let TestRunResult {
            return_value,
            duration,
            data_size_out,
            ..
        } = self
            .dataplane
            .program()
            .unwrap_or_else(|error| panic!("the XDP program: {error:#}"))
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::default()
            })?;
        out.truncate(data_size_out as usize);
        Ok(Outcome {
            verdict: Verdict::from_raw(return_value),
            frame: out,
            duration,
        })
    }

    /// Runs the program once; panics if the kernel refuses.
    pub fn run(&mut self, side: Side, frame: &[u8]) -> Outcome {
        self.try_run(side, frame, 1).unwrap_or_else(|error| {
            panic!(
                "BPF_PROG_TEST_RUN on a {}-byte frame from {side:?}: {error}",
                frame.len()
            )
        })
    }

    /// Every counter, summed over the CPUs.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.dataplane
            .counters()
            .unwrap_or_else(|error| panic!("reading the counters: {error:#}"))
            .into_iter()
            .map(|(counter, value)| (counter.name(), value))
            .collect()
    }
}

/// `struct xdp_md` for `ctx_in`: only the ingress interface is set. The kernel requires
/// `data_end` to equal the frame length and `data`, `data_meta`, `egress_ifindex` to be zero.
pub fn xdp_md(ingress_ifindex: u32, frame_len: usize) -> Vec<u8> {
    let fields: [u32; 6] = [
        0,                // data
        frame_len as u32, // data_end
        0,                // data_meta
        ingress_ifindex,  // ingress_ifindex
        0,                // rx_queue_index
        0,                // egress_ifindex
    ];
    fields
        .iter()
        .flat_map(|field| field.to_ne_bytes())
        .collect()
}

/// The counters that moved between two snapshots, and by how much.
pub fn counter_delta(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    after
        .iter()
        .filter_map(|(name, value)| {
            let moved = value - before.get(name).copied().unwrap_or(0);
            (moved != 0).then_some((*name, moved))
        })
        .collect()
}

/// What a single packet should move: `rx_packets` and each of `counters` by one.
pub fn expected_delta(counters: &[Counter]) -> BTreeMap<&'static str, u64> {
    let mut expected = BTreeMap::from([(Counter::RxPackets.name(), 1)]);
    for counter in counters {
        *expected.entry(counter.name()).or_insert(0) += 1;
    }
    expected
}

/// Pins the calling thread to the first CPU it may run on: `BPF_PROG_TEST_RUN` runs the program
/// on the caller's CPU, and the flow entries (and so the fast path's cached decisions) are per
/// CPU, so a test that expects a flow's second packet to take the fast path must not move.
fn pin_to_one_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here; 0 = the calling thread.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|&cpu| libc::CPU_ISSET(cpu, &allowed))
        else {
            return;
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
    }
}
