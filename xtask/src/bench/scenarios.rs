//! The scenarios of issue 5, one function each. A scenario whose dataplane does not exist yet
//! reports why in a "not measured" row; measuring it later means filling in its function.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use super::{
    Protocol,
    driver::{Bench, Case, Direction, Metric, Priming, Variant, check_stop},
    frame::{self, BENCH_PORT, FIRST_SOURCE_PORT, FrameSpec, TCP_ACK, TCP_SYN},
    programs::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    report::{
        NewConnections, NewConnectionsRun, NotMeasured, PathCost, ProgramCost, RatioRow,
        Throughput, flows_label,
    },
    stats::{Ratio, Summary},
    topology::{self, v4, v6},
};

/// What the scenarios found.
#[derive(Default)]
pub struct Findings {
    pub throughput: Vec<Throughput>,
    pub program_cost: Option<ProgramCost>,
    pub new_connections: Option<NewConnections>,
    pub not_measured: Vec<NotMeasured>,
}

pub struct Scenario {
    pub id: &'static str,
    pub title: &'static str,
    pub run: fn(&mut Bench, &mut Findings) -> anyhow::Result<()>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "S0",
        title: "calibration: fwd_limit vs kernel forwarding",
        run: s0_calibration,
    },
    Scenario {
        id: "S1",
        title: "NAT44, established flows (vs fwd_limit, vs nftables source NAT)",
        run: s1_nat44_established,
    },
    Scenario {
        id: "S2",
        title: "NAT44, new connections per second, table capacity, memory per connection",
        run: s2_nat44_new_connections,
    },
    Scenario {
        id: "S3",
        title: "internet gateway: IPv4 1:1 NAT and IPv6 pass-through (vs fwd_limit, vs kernel)",
        run: s3_internet_gateway,
    },
    Scenario {
        id: "S4",
        title: "egress-only: established IPv6 flows (vs nftables ct state), unsolicited flood (vs XDP drop)",
        run: s4_egress_only,
    },
    Scenario {
        id: "S5",
        title: "per-path program cost (BPF_PROG_TEST_RUN) minus an empty program",
        run: s5_program_cost,
    },
    Scenario {
        id: "S6",
        title: "NAT64, established flows (vs fwd_limit, vs TAYGA with nftables source NAT)",
        run: s6_nat64_established,
    },
];

/// Where the flow index is split between source addresses and ports: up to one address per
/// Elastic IP, then ports.
fn addr_bits(flows: u32) -> u32 {
    flows.min(topology::ELASTIC_IPS).trailing_zeros()
}

/// The generator's IPv4 stream: instances with Elastic IPs -> one internet host.
fn ipv4_outbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        dst_mac: topology::VPC_MAC,
        src_mac: topology::GEN_MAC,
        src: v4(topology::FIRST_PRIVATE),
        dst: v4(topology::INTERNET_HOST),
        protocol: bench.options.protocol,
        size: bench.options.packet_size,
        ttl: 64,
        tcp_flags: TCP_ACK,
        flows,
        addr_bits: addr_bits(flows),
    }
}

/// The generator's IPv6 stream: subnet addresses -> one internet host.
fn ipv6_outbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        src: v6(topology::FIRST_SOURCE_V6),
        dst: v6(topology::INTERNET_HOST_V6),
        ..ipv4_outbound(bench, flows)
    }
}

fn s0_calibration(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    let flows = 1024;
    let case = Case {
        scenario: "S0",
        case: "calibration, IPv4".into(),
        label: format!("S0 v4 {}", flows_label(flows)),
        spec: ipv4_outbound(bench, flows),
        direction: Direction::Outbound,
        metric: Metric::Delivered,
        priming: None,
        variants: vec![Variant::FwdLimit, Variant::Kernel],
        ratios: vec![(Variant::FwdLimit, Variant::Kernel, None)],
        nat64: false,
    };
    findings.throughput.push(bench.measure(&case)?);
    Ok(())
}

fn not_yet(findings: &mut Findings, id: &str, reason: &str) -> anyhow::Result<()> {
    let title = SCENARIOS
        .iter()
        .find(|scenario| scenario.id == id)
        .map_or("", |scenario| scenario.title);
    findings.not_measured.push(NotMeasured {
        scenario: id.into(),
        title: title.into(),
        reason: reason.into(),
    });
    Ok(())
}

/// The generator's stream through the NAT gateway: instances of the NAT subnet (up to
/// [`topology::NAT_HOSTS`] addresses, then ports) -> one internet host. Always UDP, whatever
/// `--protocol` says: one packet makes a UDP session in both NATs, where TCP would need a
/// handshake that the generator cannot answer.
fn nat_outbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        src: v4(topology::FIRST_NAT_PRIVATE),
        protocol: Protocol::Udp,
        addr_bits: flows.min(topology::NAT_HOSTS).trailing_zeros(),
        ..ipv4_outbound(bench, flows)
    }
}

/// The most flows S1 primes and measures: 1M sessions do not fit the default table (2^20
/// CONNTRACK entries, two per session: 512k sessions), nor 8 public IPs' ports towards one
/// destination (8 x 64512).
const S1_MAX_FLOWS: u32 = 1 << 16;

/// Whether the NAT scenarios can run; if not, records them as not measured (a dataplane without
/// NAT44 refuses the route to the NAT gateway).
fn nat_available(findings: &mut Findings, id: &str) -> anyhow::Result<bool> {
    match topology::nat_unsupported()? {
        None => Ok(true),
        Some(reason) => {
            eprintln!("  {id}: no NAT gateway in this dataplane ({reason})");
            not_yet(
                findings,
                id,
                "not yet supported by the dataplane (no NAT gateway in the XDP program yet)",
            )?;
            Ok(false)
        }
    }
}

fn s1_nat44_established(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    if !nat_available(findings, "S1")? {
        return Ok(());
    }
    let config = topology::gateway_config_nat();
    let flow_counts = bench.options.flows.clone();
    for &flows in flow_counts.iter().filter(|&&flows| flows <= S1_MAX_FLOWS) {
        check_stop()?;
        // A fresh gateway per case: the NAT tables start empty; priming makes every session
        // (one packet per flow creates it in the gateway and in the kernel's conntrack alike).
        bench.fresh_gateway_with(&config)?;
        let spec = nat_outbound(bench, flows);
        let priming = Priming {
            outbound: (0..flows).map(|index| spec.frame(index)).collect(),
            inbound: Vec::new(),
        };
        let case = Case {
            scenario: "S1",
            case: "NAT44 established, outbound".into(),
            label: format!("S1 NAT44 {}", flows_label(flows)),
            spec,
            direction: Direction::Outbound,
            metric: Metric::Delivered,
            priming: Some(priming),
            variants: vec![Variant::Ours, Variant::FwdLimit, Variant::NftablesNat],
            ratios: vec![
                (Variant::Ours, Variant::FwdLimit, Some(0.7)),
                (Variant::Ours, Variant::NftablesNat, Some(3.0)),
            ],
            nat64: false,
        };
        findings.throughput.push(bench.measure(&case)?);
    }
    if flow_counts.iter().any(|&flows| flows > S1_MAX_FLOWS) {
        bench.warnings.push(format!(
            "S1 stops at {}: more NAT sessions than the default table holds (CONNTRACK 2^20 \
             entries, two per session) and than 8 public IPs have ports towards one destination",
            flows_label(S1_MAX_FLOWS)
        ));
    }
    Ok(())
}

/// S2's flows: 2^24 (65536 instances x 256 source ports), more than any trial sends, so that
/// every generated frame is a new connection.
const S2_FLOWS: u32 = 1 << 24;
/// The target: tracked connections in the default configuration.
const S2_CAPACITY_TARGET: u64 = 1 << 20;

fn s2_nat44_new_connections(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    if !nat_available(findings, "S2")? {
        return Ok(());
    }
    let config = topology::gateway_config_nat();
    let spec = nat_outbound(bench, S2_FLOWS);
    // Short windows: the rate is that of a table far from full.
    // The fill: runs of a second until the table stops growing (quick: one short run).
    let (window, fill) = if bench.options.quick {
        (Duration::from_millis(100), (Duration::from_millis(500), 1))
    } else {
        (
            bench.options.trial.min(Duration::from_millis(200)),
            (Duration::from_secs(1), 15),
        )
    };
    let variants = [Variant::Ours, Variant::NftablesNat];
    let found = bench.new_connections(&spec, &config, &variants, window, fill)?;
    let trials = |variant: Variant| -> Vec<f64> {
        found
            .iter()
            .find(|run| run.variant == variant)
            .map(|run| run.mcps_trials.clone())
            .unwrap_or_default()
    };
    let ratio =
        Ratio::of(&trials(Variant::Ours), &trials(Variant::NftablesNat)).map(|ratio| RatioRow {
            numerator: Variant::Ours.name().into(),
            denominator: Variant::NftablesNat.name().into(),
            ratio,
            target: Some(5.0),
            met: Some(ratio.of_medians >= 5.0),
        });
    let runs = found
        .into_iter()
        .map(|run| NewConnectionsRun {
            name: run.variant.name().into(),
            description: run.variant.description().into(),
            mcps: Summary::of(&run.mcps_trials).unwrap_or_default(),
            mcps_trials: run.mcps_trials,
            reached: run.reached,
            limit: run.limit,
            fill_seconds: run.fill_seconds,
            capacity_note: run.capacity_note,
            slab_bytes_per_connection: run.slab_bytes_per_connection,
            table_bytes_per_connection: run.table_bytes_per_connection,
            memory_note: run.memory_note,
        })
        .collect();
    findings.new_connections = Some(NewConnections {
        method: format!(
            "Every generated packet is a new UDP flow ({} distinct flows: {} instances of the NAT \
             subnet x source ports, one internet host), so each packet that reaches the sink is \
             a connection the device under test created. Rate: {} interleaved trials per variant \
             of {:.2} s, each from an empty table (ours: a fresh gateway; nftables: a conntrack \
             flush). Capacity and memory: then per variant from an empty table, runs of {:.1} s \
             until the table grows by less than 1% in one (at most {}); slab bytes are the growth of all slab caches (/proc/slabinfo, active \
             objects x object size) over that run per connection held at its end, which counts \
             allocator rounding and whatever else the machine allocated meanwhile, and reads \
             low when freed objects (the flush, the previous gateway's maps) are reused; table \
             bytes are the more precise figure.",
            spec.flows,
            topology::NAT_HOSTS,
            if bench.options.quick {
                1
            } else {
                bench.options.trials
            },
            window.as_secs_f64(),
            fill.0.as_secs_f64(),
            fill.1,
        ),
        flows: spec.flows,
        frame_len: spec.frame_len(),
        variants: runs,
        ratio,
        capacity_target: S2_CAPACITY_TARGET,
    });
    Ok(())
}

/// Builds a case's frame stream for a flow count.
type StreamOf = fn(&Bench, u32) -> FrameSpec;

fn s3_internet_gateway(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    let flow_counts = bench.options.flows.clone();
    let cases: [(&str, &str, StreamOf); 2] = [
        ("IPv4 1:1 NAT outbound", "v4", ipv4_outbound),
        ("IPv6 pass-through outbound", "v6", ipv6_outbound),
    ];
    for (name, short, spec) in cases {
        for &flows in &flow_counts {
            check_stop()?;
            // A fresh gateway per case: the flow-log table starts empty every time.
            bench.fresh_gateway()?;
            let case = Case {
                scenario: "S3",
                case: name.into(),
                label: format!("S3 {short} {}", flows_label(flows)),
                spec: spec(bench, flows),
                direction: Direction::Outbound,
                metric: Metric::Delivered,
                priming: None,
                variants: vec![Variant::Ours, Variant::FwdLimit, Variant::Kernel],
                ratios: vec![
                    (Variant::Ours, Variant::FwdLimit, Some(0.85)),
                    (Variant::Ours, Variant::Kernel, None),
                ],
                nat64: false,
            };
            findings.throughput.push(bench.measure(&case)?);
        }
    }
    Ok(())
}

/// The egress-only subnet's instances -> one internet host (from the VPC side).
fn egress_only_outbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        src: v6(topology::FIRST_EGRESS_ONLY_V6),
        dst: v6(topology::INTERNET_HOST_V6),
        addr_bits: flows.min(topology::EGRESS_ONLY_HOSTS).trailing_zeros(),
        ..ipv4_outbound(bench, flows)
    }
}

/// Internet hosts (up to 64k addresses, then ports) -> one instance of the egress-only subnet
/// (from the internet side).
fn egress_only_inbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        dst_mac: topology::INET_MAC,
        src_mac: topology::SINK_MAC,
        src: v6(topology::INTERNET_HOST_V6),
        dst: v6(topology::FIRST_EGRESS_ONLY_V6),
        addr_bits: flows.min(1 << 16).trailing_zeros(),
        ..ipv4_outbound(bench, flows)
    }
}

/// The most flows S4a primes: every flow's packets are sent one by one before each trial.
const S4A_MAX_FLOWS: u32 = 1 << 16;

fn s4_egress_only(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    let flow_counts = bench.options.flows.clone();
    // S4a: established flows, both ways. Every flow is primed before each trial of the
    // variants that track flows: the instance's packet, then the internet's reply, so that the
    // gateway's and the kernel's conntrack know it as established.
    for direction in [Direction::Outbound, Direction::Inbound] {
        for &flows in flow_counts.iter().filter(|&&flows| flows <= S4A_MAX_FLOWS) {
            check_stop()?;
            bench.fresh_gateway()?;
            let (spec, priming, name, short) = match direction {
                Direction::Outbound => {
                    let spec = egress_only_outbound(bench, flows);
                    let priming = Priming {
                        outbound: (0..flows).map(|index| spec.frame(index)).collect(),
                        inbound: (0..flows)
                            .map(|index| {
                                spec.reverse_frame(index, topology::INET_MAC, topology::SINK_MAC)
                            })
                            .collect(),
                    };
                    (
                        spec,
                        priming,
                        "egress-only IPv6 established, outbound",
                        "out",
                    )
                }
                Direction::Inbound => {
                    let spec = egress_only_inbound(bench, flows);
                    let priming = Priming {
                        outbound: (0..flows)
                            .map(|index| {
                                spec.reverse_frame(index, topology::VPC_MAC, topology::GEN_MAC)
                            })
                            .collect(),
                        inbound: (0..flows).map(|index| spec.frame(index)).collect(),
                    };
                    (
                        spec,
                        priming,
                        "egress-only IPv6 established, replies (inbound)",
                        "in",
                    )
                }
            };
            let case = Case {
                scenario: "S4a",
                case: name.into(),
                label: format!("S4a {short} {}", flows_label(flows)),
                spec,
                direction,
                metric: Metric::Delivered,
                priming: Some(priming),
                variants: vec![Variant::Ours, Variant::FwdLimit, Variant::Nftables],
                ratios: vec![
                    (Variant::Ours, Variant::Nftables, None),
                    (Variant::Ours, Variant::FwdLimit, None),
                ],
                nat64: false,
            };
            findings.throughput.push(bench.measure(&case)?);
        }
    }
    // S4b: an unsolicited TCP SYN flood from many sources and ports; the rate is what each
    // variant drops per second, and nothing may get through.
    for &flows in flow_counts.iter().filter(|&&flows| flows >= 1 << 10) {
        check_stop()?;
        bench.fresh_gateway()?;
        let case = Case {
            scenario: "S4b",
            case: "unsolicited inbound TCP SYN flood".into(),
            label: format!("S4b SYN {} (drops)", flows_label(flows)),
            spec: FrameSpec {
                protocol: Protocol::Tcp,
                tcp_flags: TCP_SYN,
                ..egress_only_inbound(bench, flows)
            },
            direction: Direction::Inbound,
            metric: Metric::Dropped,
            priming: None,
            variants: vec![Variant::Ours, Variant::Drop, Variant::Nftables],
            ratios: vec![
                (Variant::Ours, Variant::Drop, Some(0.8)),
                (Variant::Ours, Variant::Nftables, None),
            ],
            nat64: false,
        };
        findings.throughput.push(bench.measure(&case)?);
    }
    Ok(())
}

/// One of S5's paths: its name, the frame, the interface it arrives on, the verdict it must get.
type TimedPath = (&'static str, Vec<u8>, u32, u32);

/// S5's NAT64 paths: an IPv6-only instance's UDP packet to the internet host through the NAT64
/// prefix, and the host's reply. The session is made once, before the batches, by running the
/// outbound frame through the gateway; its translation tells the public endpoint the reply goes
/// to. Both translations are checked field by field (the frame shrinks by 20 bytes one way and
/// grows by 20 the other), so that the costs are those of paths that really translate.
fn nat64_paths(bench: &mut Bench, udp_v6: &FrameSpec) -> anyhow::Result<Vec<TimedPath>> {
    let (vpc, inet) = (bench.ifindex_vpc(), bench.ifindex_inet());
    let client = FrameSpec {
        src: v6(topology::FIRST_NAT64_CLIENT),
        dst: v6(topology::nat64_address(topology::INTERNET_HOST)),
        ..udp_v6.clone()
    };
    let request = client.frame(0);
    let translated = bench
        .run_gateway_once(&request, vpc, XDP_REDIRECT)
        .context("S5 NAT64 outbound")?;
    let out = frame::check_nat64(&request, &translated, topology::NAT64_PREFIX)
        .map_err(|reason| anyhow::anyhow!("S5 NAT64 outbound: {reason}"))?;
    let first_public = u32::from(topology::FIRST_NAT_PUBLIC);
    let public = match out.src {
        IpAddr::V4(public)
            if (first_public..first_public + topology::NAT_PUBLIC_IPS)
                .contains(&u32::from(public)) =>
        {
            public
        }
        other => bail!("S5 NAT64 outbound: source {other}, not a public IP of the NAT gateway"),
    };
    ensure!(
        (out.dst_mac, out.src_mac) == (topology::SINK_MAC, topology::INET_MAC),
        "S5 NAT64 outbound: not addressed to the internet side's next hop: {out:?}"
    );
    // The reply: the internet host answers the public endpoint.
    let reply = FrameSpec {
        src: v4(public),
        dst: v4(topology::INTERNET_HOST),
        flows: 1 << 16,
        ..udp_v6.clone()
    }
    .reverse_frame(
        u32::from(out.src_port.wrapping_sub(FIRST_SOURCE_PORT)),
        topology::INET_MAC,
        topology::SINK_MAC,
    );
    let back = bench
        .run_gateway_once(&reply, inet, XDP_REDIRECT)
        .context("S5 NAT64 reply")?;
    let into = frame::check_nat64(&reply, &back, topology::NAT64_PREFIX)
        .map_err(|reason| anyhow::anyhow!("S5 NAT64 reply: {reason}"))?;
    ensure!(
        (into.dst, into.dst_port) == (client.src, FIRST_SOURCE_PORT)
            && (into.dst_mac, into.src_mac) == (topology::GEN_MAC, topology::VPC_MAC),
        "S5 NAT64 reply: not delivered to the instance's endpoint {}:{FIRST_SOURCE_PORT}: {into:?}",
        client.src
    );
    ensure!(
        out.dst_port == BENCH_PORT && into.src_port == BENCH_PORT,
        "S5 NAT64: the internet host's port changed"
    );
    Ok(vec![
        (
            "NAT64 outbound (established session, IPv6 -> IPv4)",
            request,
            vpc,
            XDP_REDIRECT,
        ),
        (
            "NAT64 reply (established session, IPv4 -> IPv6)",
            reply,
            inet,
            XDP_REDIRECT,
        ),
    ])
}

fn s5_program_cost(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    // With NAT44 in the dataplane, the config with the NAT gateway (a superset of the other):
    // its paths are timed too.
    // With NAT64 too, the config with it (a superset of the NAT one).
    let nat = topology::nat_unsupported()?.is_none();
    let nat64 = topology::nat64_unsupported()?.is_none();
    if nat64 {
        bench.fresh_gateway_with(&topology::gateway_config_nat64())?;
    } else if nat {
        bench.fresh_gateway_with(&topology::gateway_config_nat())?;
    } else {
        bench.fresh_gateway()?;
    }
    let (batches, calls) = if bench.options.quick {
        (3, 2_000)
    } else {
        (11, 20_000)
    };
    let frame = |src, dst, dst_mac, src_mac| {
        FrameSpec {
            dst_mac,
            src_mac,
            src,
            dst,
            protocol: Protocol::Udp,
            size: 64,
            ttl: 64,
            tcp_flags: TCP_ACK,
            flows: 1,
            addr_bits: 0,
        }
        .frame(0)
    };
    let outbound = |src| {
        frame(
            v4(src),
            v4(topology::INTERNET_HOST),
            topology::VPC_MAC,
            topology::GEN_MAC,
        )
    };
    let (vpc, inet) = (bench.ifindex_vpc(), bench.ifindex_inet());
    let egress_only = FrameSpec {
        dst_mac: topology::VPC_MAC,
        src_mac: topology::GEN_MAC,
        src: v6(topology::FIRST_EGRESS_ONLY_V6),
        dst: v6(topology::INTERNET_HOST_V6),
        protocol: Protocol::Udp,
        size: 64,
        ttl: 64,
        tcp_flags: TCP_ACK,
        flows: 1,
        addr_bits: 0,
    };
    let first_public =
        topology::elastic_ip_of(topology::FIRST_PRIVATE).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut paths: Vec<TimedPath> = vec![
        (
            "IGW IPv4 outbound (private -> Elastic IP)",
            outbound(topology::FIRST_PRIVATE),
            vpc,
            XDP_REDIRECT,
        ),
        (
            "IGW IPv4 inbound (Elastic IP -> private)",
            frame(
                v4(topology::INTERNET_HOST),
                v4(first_public),
                topology::INET_MAC,
                topology::SINK_MAC,
            ),
            inet,
            XDP_REDIRECT,
        ),
        (
            "IPv6 pass-through outbound",
            frame(
                v6(topology::FIRST_SOURCE_V6),
                v6(topology::INTERNET_HOST_V6),
                topology::VPC_MAC,
                topology::GEN_MAC,
            ),
            vpc,
            XDP_REDIRECT,
        ),
        // The outbound path runs first in every batch: it creates the flow the reply matches.
        (
            "EIGW IPv6 outbound (tracked flow)",
            egress_only.frame(0),
            vpc,
            XDP_REDIRECT,
        ),
        (
            "EIGW IPv6 reply (tracked flow)",
            egress_only.reverse_frame(0, topology::INET_MAC, topology::SINK_MAC),
            inet,
            XDP_REDIRECT,
        ),
        (
            "EIGW drop: unsolicited inbound TCP SYN",
            FrameSpec {
                dst_mac: topology::INET_MAC,
                src_mac: topology::SINK_MAC,
                src: v6(topology::INTERNET_HOST_V6),
                dst: v6(topology::FIRST_EGRESS_ONLY_V6),
                protocol: Protocol::Tcp,
                tcp_flags: TCP_SYN,
                ..egress_only.clone()
            }
            .frame(0),
            inet,
            XDP_DROP,
        ),
        (
            "IPv4 drop: no Elastic IP",
            outbound(topology::PRIVATE_WITHOUT_EIP),
            vpc,
            XDP_DROP,
        ),
        (
            "pass: not ours",
            outbound(topology::NOT_OURS),
            vpc,
            XDP_PASS,
        ),
    ];
    if nat {
        // The session is made once, before the batches; the reply goes to its public endpoint.
        let nat_outbound = outbound(topology::FIRST_NAT_PRIVATE);
        bench.with_gateway_program(|bench, gateway| {
            bench.run_cost(gateway, &nat_outbound, vpc, XDP_REDIRECT, 1, 1)
        })?;
        let (public, port) =
            bench.nat_public_endpoint((topology::FIRST_NAT_PRIVATE, FIRST_SOURCE_PORT))?;
        let reply = FrameSpec {
            dst_mac: topology::INET_MAC,
            src_mac: topology::SINK_MAC,
            src: v4(public),
            dst: v4(topology::INTERNET_HOST),
            protocol: Protocol::Udp,
            size: 64,
            ttl: 64,
            tcp_flags: TCP_ACK,
            flows: 1 << 16,
            addr_bits: 0,
        }
        .reverse_frame(
            u32::from(port.wrapping_sub(FIRST_SOURCE_PORT)),
            topology::INET_MAC,
            topology::SINK_MAC,
        );
        let at = paths.len() - 2;
        paths.splice(
            at..at,
            [
                (
                    "NAT44 outbound (established session)",
                    nat_outbound,
                    vpc,
                    XDP_REDIRECT,
                ),
                (
                    "NAT44 reply (established session)",
                    reply,
                    inet,
                    XDP_REDIRECT,
                ),
            ],
        );
    }
    if nat64 {
        let at = paths.len() - 2;
        let rows = nat64_paths(bench, &egress_only)?;
        paths.splice(at..at, rows);
    }
    let empty_frame = outbound(topology::FIRST_PRIVATE);
    let repeat = if bench.options.quick {
        10_000
    } else {
        1_000_000
    };
    let (empty, per_path, repeated) = bench.with_gateway_program(|bench, gateway| {
        let empty_program = bench.programs().program(programs::EMPTY)?;
        let mut empty = Vec::new();
        let mut per_path = vec![Vec::new(); paths.len()];
        // Batches interleave the paths, so a disturbance hits all of them alike.
        for _ in 0..batches {
            check_stop()?;
            empty.push(bench.run_cost(empty_program, &empty_frame, vpc, XDP_PASS, calls, 1)?);
            for (slot, (name, frame, ingress, verdict)) in paths.iter().enumerate() {
                let cost = bench
                    .run_cost(gateway, frame, *ingress, *verdict, calls, 1)
                    .map_err(|error| anyhow::anyhow!("S5 {name}: {error:#}"))?;
                per_path[slot].push(cost);
            }
        }
        // The paths that leave the frame unchanged can also run in the kernel's own loop, which
        // has no per-call overhead: the figure comparable with other XDP programs'.
        let mut repeated = vec![None; paths.len()];
        for (slot, (_, frame, ingress, verdict)) in paths.iter().enumerate() {
            if *verdict != XDP_REDIRECT {
                repeated[slot] =
                    Some(bench.run_cost(gateway, frame, *ingress, *verdict, 1, repeat)?);
            }
        }
        let empty_repeated =
            bench.run_cost(empty_program, &empty_frame, vpc, XDP_PASS, 1, repeat)?;
        Ok((empty, per_path, (empty_repeated, repeated)))
    })?;
    let (empty_repeated, repeated) = repeated;
    let empty_ns = Summary::of(&empty).unwrap_or_default();
    let verdict_name = |verdict: u32| match verdict {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    };
    let paths = paths
        .iter()
        .zip(per_path)
        .zip(repeated)
        .map(|(((name, _, _, verdict), samples), repeated)| {
            let ns = Summary::of(&samples).unwrap_or_default();
            PathCost {
                path: (*name).into(),
                verdict: verdict_name(*verdict).into(),
                ns,
                above_empty_ns: ns.median - empty_ns.median,
                repeated_ns: repeated,
            }
        })
        .collect();
    findings.program_cost = Some(ProgramCost {
        method: format!(
            "Each number is the mean of {calls} BPF_PROG_TEST_RUN calls with repeat = 1 (the \
             gateway rewrites the frame and the kernel does not restore it between repeats, so \
             every run needs a fresh copy), as timed by the kernel, in the gateway namespace with \
             the maps filled from the benchmark config; median of {batches} interleaved batches \
             [min–max]. The per-call overhead is in every number, so the column to read is \
             \"above empty\"; caches are hot, so it is a lower bound. Paths that leave the frame \
             unchanged are also timed with repeat = {repeat} in one call (the kernel's loop, no \
             per-call overhead)."
        ),
        empty_ns,
        empty_repeated_ns: empty_repeated,
        repeat,
        paths,
    });
    Ok(())
}

/// The generator's stream through NAT64: IPv6-only instances of the NAT64 subnet (up to
/// [`topology::NAT64_CLIENTS`] addresses, then ports) -> the internet host's IPv4 address in
/// the NAT64 prefix. UDP, as S1 and for the same reason.
fn nat64_outbound(bench: &Bench, flows: u32) -> FrameSpec {
    FrameSpec {
        src: v6(topology::FIRST_NAT64_CLIENT),
        dst: v6(topology::nat64_address(topology::INTERNET_HOST)),
        protocol: Protocol::Udp,
        addr_bits: flows.min(topology::NAT64_CLIENTS).trailing_zeros(),
        ..ipv4_outbound(bench, flows)
    }
}

/// The most flows S6 primes and measures, as S1 (the same NAT tables).
const S6_MAX_FLOWS: u32 = S1_MAX_FLOWS;

fn s6_nat64_established(bench: &mut Bench, findings: &mut Findings) -> anyhow::Result<()> {
    // The baselines run whether or not the dataplane has NAT64 yet; ours only once it has.
    let ours = match topology::nat64_unsupported()? {
        None => true,
        Some(reason) => {
            eprintln!("  S6: no NAT64 in this dataplane ({reason})");
            findings.not_measured.push(NotMeasured {
                scenario: "S6".into(),
                title: "NAT64 established flows, ours (the baselines are measured)".into(),
                reason: "not yet supported by the dataplane (IPv6 routes to a NAT gateway are \
                         refused)"
                    .into(),
            });
            false
        }
    };
    let config = if ours {
        topology::gateway_config_nat64()
    } else {
        topology::gateway_config()
    };
    let quick = bench.options.quick;
    // Quick runs prove that frames go through and arrive translated: one trial is enough.
    let trials = if quick { 1 } else { bench.options.trials };
    let mut variants = Vec::new();
    let mut ratios = Vec::new();
    if ours {
        variants.push(Variant::Ours);
        ratios.push((Variant::Ours, Variant::FwdLimit, Some(0.6)));
    }
    variants.push(Variant::FwdLimit);
    // TAYGA only in full runs: the smoke run proves our frames go through, and TAYGA's start
    // (a TUN device, a userspace daemon) once left its priming short on a busy machine.
    if !quick {
        variants.push(Variant::Tayga);
        if ours {
            ratios.push((Variant::Ours, Variant::Tayga, Some(10.0)));
        }
    }
    let flow_counts = bench.options.flows.clone();
    for &flows in flow_counts.iter().filter(|&&flows| flows <= S6_MAX_FLOWS) {
        check_stop()?;
        // Fresh tables per case: a new gateway, and TAYGA started again when first used.
        bench.fresh_gateway_with(&config)?;
        bench.stop_tayga()?;
        let spec = nat64_outbound(bench, flows);
        let priming = Priming {
            outbound: (0..flows).map(|index| spec.frame(index)).collect(),
            inbound: Vec::new(),
        };
        let case = Case {
            scenario: "S6",
            case: "NAT64 established, outbound (IPv6 -> IPv4)".into(),
            label: format!("S6 NAT64 {}", flows_label(flows)),
            spec,
            direction: Direction::Outbound,
            metric: Metric::Delivered,
            priming: Some(priming),
            variants: variants.clone(),
            ratios: ratios.clone(),
            nat64: true,
        };
        let measured = bench.measure_with_trials(&case, trials);
        bench.stop_tayga()?;
        findings.throughput.push(measured?);
    }
    if flow_counts.iter().any(|&flows| flows > S6_MAX_FLOWS) {
        bench.warnings.push(format!(
            "S6 stops at {}, as S1 does (the same NAT tables)",
            flows_label(S6_MAX_FLOWS)
        ));
    }
    Ok(())
}
