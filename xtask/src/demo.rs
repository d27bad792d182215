//! `cargo xtask demo`: the internet gateway, then the egress-only internet gateway, then a NAT
//! gateway doing NAT64 with DNS64 for the instance made IPv6-only, between four network
//! namespaces, with real traffic.
//!
//! The verdict is based on what the internet host observed (the peer address its socat server
//! reports, and a tcpdump capture on its interface), on what the instance got back (the DNS64
//! answer, the ping replies) and on the flow log, never on what the gateway says about itself.

use std::{
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use gateway_tests::{
    Capture, GatewayProcess, IgwTopology, Netns, addr, capture,
    dns::{self, Transport, ZoneServer},
    example_config_path, example_path, flowlog,
    gateway::{DEMO_FLOW_LOG, control_socket_of},
    traffic,
    util::wait_until,
};
use hickory_proto::rr::RecordType;

use crate::{cmd, setup};

const PICTURE: &str = r"
instance                gateway (XDP)                               router                                    internet host
eth0 ------------------ gw-vpc                 gw-inet ------------ rtr-gw               rtr-inet ----------- eth0
10.0.1.10/24            10.0.1.1/24            198.51.100.1/24      198.51.100.2/24      192.0.2.1/24         192.0.2.10/24
2001:db8:1000:1::10/64  2001:db8:1000:1::1/64  2001:db8:ffff::1/64  2001:db8:ffff::2/64  2001:db8:eeee::1/64  2001:db8:eeee::10/64

Elastic IP 203.0.113.10 <-> 10.0.1.10. The router sends 203.0.113.0/24 and 2001:db8:1000::/56
to the gateway and has no route to 10.0.0.0/16: a private address only gets out translated.

Phase 2: the subnet's IPv6 goes through an egress-only internet gateway instead.
Phase 3: the instance loses its IPv4; a NAT gateway (public 203.0.113.20) translates the NAT64
prefix 2001:db8:64::/96 to IPv4, and its DNS64 on [2001:db8:1000:1::1]:53 synthesises AAAA
records from the A records of a DNS server on the internet host (192.0.2.10).
";

/// TCP ports of the demo's socat servers.
const OUTBOUND_PORT: u16 = 7000;
const INBOUND_PORT: u16 = 7001;
const EGRESS_ONLY_INBOUND_PORT: u16 = 7002;
/// examples/egress-only.toml's flow log.
const EGRESS_ONLY_FLOW_LOG: &str = "/tmp/gateway-demo/egress-only-flow.log";
/// examples/nat64.toml's flow log.
const NAT64_FLOW_LOG: &str = "/tmp/gateway-demo/nat64-flow.log";
/// The internet host's name in the upstream DNS server: an A record (192.0.2.10), no AAAA.
const SERVER_NAME: &str = "server.example.";
/// examples/nat64.toml's NAT64 prefix.
const NAT64_PREFIX: &str = "2001:db8:64::/96";

pub fn demo() -> anyhow::Result<()> {
    setup::setup()?;
    let bin = cmd::build_gateway(true)?;

    // Ctrl-C must not kill us before the namespaces are removed: the handler only raises a flag;
    // the children in our process group get the SIGINT themselves and end, the step that waited
    // for them returns, and the next check unwinds through the guards' Drop.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let result = run(&bin, &interrupted);
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted; the namespaces have been removed");
    }
    if result.is_ok() {
        println!(
            "\nnamespaces removed; the flow logs stay in {DEMO_FLOW_LOG}, {EGRESS_ONLY_FLOW_LOG} \
             and {NAT64_FLOW_LOG}"
        );
    }
    result
}

fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn heading(text: &str) {
    println!("\n==> {text}");
}

fn run(bin: &Path, interrupted: &AtomicBool) -> anyhow::Result<()> {
    heading("building the topology");
    let topology = IgwTopology::new()?;
    println!("{PICTURE}");
    for (role, ns) in [
        ("instance", &topology.instance),
        ("gateway", &topology.gateway),
        ("router", &topology.router),
        ("internet host", &topology.internet),
    ] {
        println!("  {role:<14} ip netns exec {} ...", ns.name());
    }
    check(interrupted)?;

    heading("starting the gateway");
    let config = example_config_path();
    let flow_log = Path::new(DEMO_FLOW_LOG);
    if let Some(dir) = flow_log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A flow log from an earlier run would mix old records into this run's verdict.
    if flow_log.exists() {
        fs::remove_file(flow_log).with_context(|| format!("removing old {DEMO_FLOW_LOG}"))?;
    }
    if let Some(dir) = control_socket_of(&config)?.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!(
        "  ip netns exec {} {} run --config {}",
        topology.gateway.name(),
        bin.display(),
        config.display()
    );
    let gateway = GatewayProcess::start_echoing(&topology.gateway, bin, &config)?;
    check(interrupted)?;

    heading("traffic");
    // What reaches the internet host from the instance: its own packets only, not the router's
    // neighbour discovery.
    let internet_capture = Capture::start(
        &topology.internet,
        "eth0",
        "(tcp or udp or icmp or (icmp6 and ip6[40] == 128)) and \
         (dst host 192.0.2.10 or dst host 2001:db8:eeee::10)",
    )?;
    let instance_capture = Capture::start(
        &topology.instance,
        "eth0",
        &format!("tcp and dst host 10.0.1.10 and dst port {INBOUND_PORT}"),
    )?;
    // Read the client's line before answering: a server that closes with unread data sends a
    // RST, which can destroy the answer before the client reads it.
    let reply = "read line; echo \"$SOCAT_PEERADDR\"";
    start_socat_server(
        &topology.internet,
        &format!("TCP4-LISTEN:{OUTBOUND_PORT},bind=192.0.2.10,reuseaddr,fork"),
        reply,
        OUTBOUND_PORT,
    )?;
    start_socat_server(
        &topology.internet,
        &format!("TCP6-LISTEN:{OUTBOUND_PORT},bind=[2001:db8:eeee::10],ipv6only=1,reuseaddr,fork"),
        reply,
        OUTBOUND_PORT,
    )?;
    start_socat_server(
        &topology.instance,
        &format!("TCP4-LISTEN:{INBOUND_PORT},reuseaddr,fork"),
        reply,
        INBOUND_PORT,
    )?;

    let mut observations = Observations::default();
    for target in [IpAddr::from(addr::INTERNET_V4), addr::INTERNET_V6.into()] {
        let ok = traffic::ping(&topology.instance, target, 3);
        println!(
            "  ping instance -> {target}: {}",
            if ok { "replies" } else { "NO REPLY" }
        );
        check(interrupted)?;
    }
    observations.tcp_v4 = socat_client(
        &topology.instance,
        &format!("TCP4:192.0.2.10:{OUTBOUND_PORT}"),
        "instance -> 192.0.2.10 (TCP)",
    );
    check(interrupted)?;
    observations.tcp_v6 = socat_client(
        &topology.instance,
        &format!("TCP6:[2001:db8:eeee::10]:{OUTBOUND_PORT}"),
        "instance -> 2001:db8:eeee::10 (TCP)",
    );
    check(interrupted)?;
    observations.inbound = socat_client(
        &topology.internet,
        &format!("TCP4:203.0.113.10:{INBOUND_PORT}"),
        "internet host -> Elastic IP 203.0.113.10 (TCP)",
    );
    check(interrupted)?;

    let seen_by_internet = capture::sources(&internet_capture.stop()?);
    let seen_by_instance = capture::sources(&instance_capture.stop()?);
    println!("  tcpdump on the internet host: packets from {seen_by_internet:?}");
    println!("  tcpdump on the instance (port {INBOUND_PORT}): packets from {seen_by_instance:?}");

    heading("flow log");
    println!("  waiting 2.5 s for the 1 s aggregation interval to flush");
    thread::sleep(Duration::from_millis(2500));
    check(interrupted)?;
    match gateway.stop()? {
        Some(status) => println!("  gateway stopped ({status})"),
        None => println!("  gateway stopped"),
    }
    let records = match flowlog::read_lines(flow_log) {
        Ok(lines) => lines,
        Err(err) => {
            println!("  no flow log: {err:#}");
            Vec::new()
        }
    };
    for line in &records {
        println!("  {line}");
    }

    heading("verdict");
    let mut failures = verdict(
        &observations,
        &seen_by_internet,
        &seen_by_instance,
        &records,
    );
    failures += egress_only(&topology, bin, interrupted)?;
    failures += nat64(&topology, bin, interrupted)?;
    drop(topology);
    if failures > 0 {
        bail!("{failures} expectation(s) not met (see the verdicts above)");
    }
    Ok(())
}

/// The second half of the experiment: the same instance with IPv6 routed through an egress-only
/// internet gateway (examples/egress-only.toml). Its flows go out with its own address; the
/// internet cannot open one towards it. Returns how many expectations were not met.
fn egress_only(
    topology: &IgwTopology,
    bin: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<usize> {
    heading("egress-only internet gateway: IPv6 of the same subnet routed to eigw-demo");
    let config = example_path("egress-only.toml");
    let flow_log = Path::new(EGRESS_ONLY_FLOW_LOG);
    if flow_log.exists() {
        fs::remove_file(flow_log)
            .with_context(|| format!("removing old {EGRESS_ONLY_FLOW_LOG}"))?;
    }
    println!(
        "  ip netns exec {} {} run --config {}",
        topology.gateway.name(),
        bin.display(),
        config.display()
    );
    let gateway = GatewayProcess::start_echoing(&topology.gateway, bin, &config)?;
    check(interrupted)?;

    let inside_capture = Capture::start(
        &topology.instance,
        "eth0",
        &format!("ip6 and tcp and dst port {EGRESS_ONLY_INBOUND_PORT}"),
    )?;
    start_socat_server(
        &topology.instance,
        &format!(
            "TCP6-LISTEN:{EGRESS_ONLY_INBOUND_PORT},bind=[2001:db8:1000:1::10],ipv6only=1,reuseaddr,fork"
        ),
        "read line; echo \"$SOCAT_PEERADDR\"",
        EGRESS_ONLY_INBOUND_PORT,
    )?;
    let pinged = traffic::ping(&topology.instance, addr::INTERNET_V6.into(), 3);
    println!(
        "  ping instance -> 2001:db8:eeee::10: {}",
        if pinged { "replies" } else { "NO REPLY" }
    );
    let outbound = socat_client(
        &topology.instance,
        &format!("TCP6:[2001:db8:eeee::10]:{OUTBOUND_PORT}"),
        "instance -> 2001:db8:eeee::10 (TCP)",
    );
    check(interrupted)?;
    let inbound = socat_client(
        &topology.internet,
        &format!("TCP6:[2001:db8:1000:1::10]:{EGRESS_ONLY_INBOUND_PORT},connect-timeout=3"),
        "internet host -> 2001:db8:1000:1::10 (TCP, unsolicited)",
    );
    if inbound.is_none() {
        println!("  (that failure is the point: nothing unsolicited gets in)");
    }
    check(interrupted)?;
    let reached_inside = capture::sources(&inside_capture.stop()?);
    println!(
        "  tcpdump on the instance (port {EGRESS_ONLY_INBOUND_PORT}): packets from {reached_inside:?}"
    );
    println!("  waiting 2.5 s for the 1 s aggregation interval to flush");
    thread::sleep(Duration::from_millis(2500));
    check(interrupted)?;
    gateway.stop()?;
    let records = flowlog::read_lines(flow_log).unwrap_or_default();
    for line in &records {
        println!("  {line}");
    }

    let mut failures = 0;
    let mut say = |ok: bool, text: String| {
        println!("  {} {text}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let inst6 = IpAddr::from(addr::INSTANCE_V6);
    say(
        pinged && outbound == Some(inst6),
        match outbound {
            Some(seen) => format!(
                "Egress-only, out: the internet host saw {seen}{}",
                if seen == inst6 {
                    ", the instance's own address (not translated)"
                } else {
                    ", expected the instance's own address"
                }
            ),
            None => "Egress-only, out: the instance could not reach the internet host".to_owned(),
        },
    );
    say(
        inbound.is_none() && reached_inside.is_empty(),
        if inbound.is_none() && reached_inside.is_empty() {
            "Egress-only, in: the internet host's connection attempt got no answer and not one \
             of its packets reached the instance"
                .to_owned()
        } else {
            format!(
                "Egress-only, in: an unsolicited connection got through (answer {inbound:?}, \
                 packets inside from {reached_inside:?})"
            )
        },
    );
    let parsed: Vec<flowlog::FlowRecord> = records
        .iter()
        .filter_map(|line| flowlog::FlowRecord::parse(line).ok())
        .collect();
    let rejected = parsed
        .iter()
        .filter(|record| record.action == "REJECT" && record.dstaddr == inst6)
        .count();
    say(
        rejected > 0,
        format!("Flow log: {rejected} REJECT record(s) for traffic from the internet to {inst6}"),
    );
    Ok(failures)
}

/// The third part: the instance loses its IPv4 and reaches the IPv4-only internet host through
/// the NAT gateway's NAT64, finding its address through the gateway's DNS64
/// (examples/nat64.toml). Returns how many expectations were not met.
fn nat64(topology: &IgwTopology, bin: &Path, interrupted: &AtomicBool) -> anyhow::Result<usize> {
    heading("NAT gateway with NAT64 and DNS64: the instance made IPv6-only");
    let instance = &topology.instance;
    println!(
        "  ip netns exec {} ip -4 addr flush dev eth0; ip -4 route flush dev eth0",
        instance.name()
    );
    topology.make_instance_ipv6_only()?;
    let zone = ZoneServer::start(&topology.internet, &[addr::INTERNET_V4.into()])?;
    println!(
        "  DNS server on the internet host, {}:53 (UDP, TCP): {SERVER_NAME} A {} and no AAAA",
        addr::INTERNET_V4,
        addr::INTERNET_V4
    );
    let config = example_path("nat64.toml");
    let flow_log = Path::new(NAT64_FLOW_LOG);
    if flow_log.exists() {
        fs::remove_file(flow_log).with_context(|| format!("removing old {NAT64_FLOW_LOG}"))?;
    }
    println!(
        "  ip netns exec {} {} run --config {}",
        topology.gateway.name(),
        bin.display(),
        config.display()
    );
    let gateway = GatewayProcess::start_echoing(&topology.gateway, bin, &config)?;
    check(interrupted)?;

    // DNS64: the instance asks the gateway for the AAAA of a name that only has an A record.
    let resolver = SocketAddr::new(addr::GATEWAY_VPC_V6.into(), 53);
    let expected = nat64_address(addr::INTERNET_V4);
    let synthesised: Option<Ipv6Addr> = match dns::ask(
        instance,
        resolver,
        &dns::query(SERVER_NAME, RecordType::AAAA),
        Transport::Udp,
    ) {
        Ok(answer) => {
            let rows = dns::answer_rows(&answer);
            println!(
                "  instance asks {resolver} for {SERVER_NAME} AAAA: {} answer(s), rcode {}",
                rows.len(),
                answer.response_code
            );
            for (owner, ttl, kind, data) in &rows {
                println!("    {owner} {ttl} IN {kind} {data}");
            }
            rows.iter()
                .find(|row| row.2 == "AAAA")
                .and_then(|row| row.3.parse().ok())
        }
        Err(err) => {
            println!("  instance asks {resolver} for {SERVER_NAME} AAAA: FAILED: {err:#}");
            None
        }
    };
    let asked: Vec<String> = zone
        .received()
        .iter()
        .map(|query| format!("{} {}", query.record_type, query.name))
        .collect();
    println!("  the DNS server on the internet host was asked: {asked:?}");
    let asked_for_a = asked
        .iter()
        .any(|query| query == &format!("A {SERVER_NAME}"));
    check(interrupted)?;

    // Started after the lookup: the DNS64's own query to the upstream leaves from the gateway's
    // address, not through the NAT.
    let internet_capture = Capture::start(
        &topology.internet,
        "eth0",
        "(tcp or udp or icmp or (icmp6 and ip6[40] == 128)) and not port 53 and \
         (dst host 192.0.2.10 or dst host 2001:db8:eeee::10)",
    )?;
    // Use the synthesised address when there is one (otherwise the expected one, to show whether
    // the translation works without DNS).
    let target = IpAddr::from(synthesised.unwrap_or(expected));
    let ping = traffic::ping_output(instance, target, 3, None);
    let replies = match &ping {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(&format!("from {target}")))
            .count(),
        Err(_) => 0,
    };
    println!(
        "  ping instance -> {target}: {}",
        if replies > 0 {
            format!("{replies} of 3 echo replies from {target}")
        } else {
            "NO REPLY".to_owned()
        }
    );
    check(interrupted)?;
    let tcp = socat_client(
        instance,
        &format!("TCP6:[{target}]:{OUTBOUND_PORT}"),
        &format!("instance -> [{target}]:{OUTBOUND_PORT} (TCP)"),
    );
    check(interrupted)?;
    let seen_by_internet = capture::sources(&internet_capture.stop()?);
    println!("  tcpdump on the internet host: packets from {seen_by_internet:?}");

    println!("  waiting 2.5 s for the 1 s aggregation interval to flush");
    thread::sleep(Duration::from_millis(2500));
    check(interrupted)?;
    gateway.stop()?;
    drop(zone);
    let records = flowlog::read_lines(flow_log).unwrap_or_default();
    println!(
        "  (format: version account-id interface-id srcaddr dstaddr srcport dstport protocol \
         packets bytes start end action log-status pkt-srcaddr pkt-dstaddr flow-direction)"
    );
    for line in &records {
        println!("  {line}");
    }

    let mut failures = 0;
    let mut say = |ok: bool, text: String| {
        println!("  {} {text}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    say(
        synthesised == Some(expected) && asked_for_a,
        match synthesised {
            Some(got) if got == expected && asked_for_a => format!(
                "DNS64: {SERVER_NAME} AAAA -> {got}, its A record {} inside {NAT64_PREFIX}",
                addr::INTERNET_V4
            ),
            Some(got) => format!(
                "DNS64: {SERVER_NAME} AAAA -> {got}, expected {expected} after an A query \
                 upstream (the upstream was asked {asked:?})"
            ),
            None => format!("DNS64: no AAAA for {SERVER_NAME}, expected {expected}"),
        },
    );
    let public = IpAddr::from(addr::NAT_PUBLIC_V4);
    let v4_seen: Vec<IpAddr> = tcp
        .into_iter()
        .chain(seen_by_internet.iter().copied())
        .collect();
    say(
        tcp == Some(public) && v4_seen.iter().all(|seen| *seen == public),
        match tcp {
            None => format!("NAT64, TCP: the instance could not reach [{target}]:{OUTBOUND_PORT}"),
            Some(_) if v4_seen.iter().all(|seen| *seen == public) => format!(
                "NAT64, TCP: the internet host saw {public}, the NAT gateway's public IPv4 \
                 (translated from {})",
                addr::INSTANCE_V6
            ),
            Some(_) => format!(
                "NAT64, TCP: the internet host saw {}, expected only {public}",
                list(&v4_seen)
            ),
        },
    );
    say(
        replies > 0,
        if replies > 0 {
            format!(
                "NAT64, ping: ICMPv6 echo to {target} answered (ICMPv4 echo to {} on the \
                 internet)",
                addr::INTERNET_V4
            )
        } else {
            format!("NAT64, ping: no echo reply from {target}")
        },
    );
    let instance_v6 = addr::INSTANCE_V6.to_string();
    let public_text = public.to_string();
    let translated = records
        .iter()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() == 17 && fields[3] == public_text && fields[14] == instance_v6
        })
        .count();
    say(
        translated > 0,
        format!(
            "Flow log: {translated} record(s) with pkt-srcaddr {instance_v6} and srcaddr \
             {public_text}"
        ),
    );
    Ok(failures)
}

/// `v4` inside the NAT64 prefix 2001:db8:64::/96 (RFC 6052: the last 32 bits).
fn nat64_address(v4: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x64,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

/// The peer address each socat server reported (None when the exchange failed).
#[derive(Default)]
struct Observations {
    tcp_v4: Option<IpAddr>,
    tcp_v6: Option<IpAddr>,
    inbound: Option<IpAddr>,
}

/// Prints one line per expectation; returns how many were not met.
fn verdict(
    observed: &Observations,
    seen_by_internet: &[IpAddr],
    seen_by_instance: &[IpAddr],
    records: &[String],
) -> usize {
    let mut failures = 0;
    let mut say = |ok: bool, text: String| {
        println!("  {} {text}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };

    let v4_seen: Vec<IpAddr> = observed
        .tcp_v4
        .into_iter()
        .chain(seen_by_internet.iter().copied().filter(IpAddr::is_ipv4))
        .collect();
    let eip = IpAddr::from(addr::ELASTIC_IP);
    say(
        !v4_seen.is_empty() && v4_seen.iter().all(|a| *a == eip),
        match v4_seen.first() {
            None => "IPv4: nothing from the instance reached the internet host".to_owned(),
            Some(_) if v4_seen.iter().all(|a| *a == eip) => format!(
                "IPv4: the internet host saw {eip}, the Elastic IP (translated from {})",
                addr::INSTANCE_V4
            ),
            Some(_) => format!(
                "IPv4: the internet host saw {}, expected only the Elastic IP {eip}",
                list(&v4_seen)
            ),
        },
    );

    let v6_seen: Vec<IpAddr> = observed
        .tcp_v6
        .into_iter()
        .chain(seen_by_internet.iter().copied().filter(IpAddr::is_ipv6))
        .collect();
    let inst6 = IpAddr::from(addr::INSTANCE_V6);
    say(
        !v6_seen.is_empty() && v6_seen.iter().all(|a| *a == inst6),
        match v6_seen.first() {
            None => "IPv6: nothing from the instance reached the internet host".to_owned(),
            Some(_) if v6_seen.iter().all(|a| *a == inst6) => format!(
                "IPv6: the internet host saw {inst6}, the instance's own address (not translated)"
            ),
            Some(_) => format!(
                "IPv6: the internet host saw {}, expected only {inst6}",
                list(&v6_seen)
            ),
        },
    );

    let host = IpAddr::from(addr::INTERNET_V4);
    let inbound_seen: Vec<IpAddr> = observed
        .inbound
        .into_iter()
        .chain(seen_by_instance.iter().copied())
        .collect();
    say(
        observed.inbound == Some(host) && inbound_seen.iter().all(|a| *a == host),
        match observed.inbound {
            None => format!(
                "Inbound: the connection to the Elastic IP {eip} did not reach the instance"
            ),
            Some(seen) => format!(
                "Inbound: the connection to the Elastic IP {eip} reached the instance, which saw \
                 {seen}{}",
                if seen == host {
                    ", the internet host's real address"
                } else {
                    " (expected the internet host's real address 192.0.2.10)"
                }
            ),
        },
    );

    let parsed: Vec<flowlog::FlowRecord> = records
        .iter()
        .filter_map(|line| flowlog::FlowRecord::parse(line).ok())
        .collect();
    for (family, src) in [("IPv4", eip), ("IPv6", inst6)] {
        let found = parsed.iter().filter(|r| r.srcaddr == src).count();
        say(
            found > 0,
            format!("Flow log: {found} {family} record(s) with srcaddr {src}"),
        );
    }
    failures
}

fn list(addrs: &[IpAddr]) -> String {
    let mut unique: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    unique.dedup();
    unique.join(", ")
}

/// Starts `socat -d ADDRESS SYSTEM:REPLY` in `ns` and waits until it listens on `port`. socat sets
/// `$SOCAT_PEERADDR` for the SYSTEM command: the server answers each client with the address it
/// saw, which is the observation the verdict uses.
fn start_socat_server(ns: &Netns, listen: &str, reply: &str, port: u16) -> anyhow::Result<()> {
    let system = format!("SYSTEM:{reply}");
    println!("  ip netns exec {} socat {listen} '{system}' &", ns.name());
    let mut cmd = ns.command(["socat", listen, &system]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Killed with the namespace.
    ns.spawn_command(&mut cmd)?;
    let filter = format!("sport = :{port}");
    wait_until(
        Duration::from_secs(5),
        &format!("socat to listen on port {port} in {}", ns.name()),
        || Ok(!ns.run(["ss", "-H", "-ltn", &filter])?.trim().is_empty()),
    )
}

/// Connects with socat, prints what the server answered (the client's address as it saw it) and
/// returns it parsed.
fn socat_client(ns: &Netns, connect: &str, label: &str) -> Option<IpAddr> {
    let result = (|| -> anyhow::Result<String> {
        let mut cmd = ns.command(["socat", "-T", "5", "-t", "2", "-", connect]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ns.spawn_command(&mut cmd)?;
        child
            .stdin
            .take()
            .context("socat stdin")?
            .write_all(b"hello\n")
            .context("writing to socat")?;
        let output = child.wait_with_output().context("waiting for socat")?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if stdout.is_empty() {
            bail!(
                "no answer ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(stdout)
    })();
    match result {
        Ok(answer) => {
            // socat writes IPv6 peers in brackets and in full (2001:0db8:...).
            let peer: Option<IpAddr> = answer.trim_matches(['[', ']']).parse().ok();
            let shown = peer.map_or(answer, |p| p.to_string());
            println!("  {label}: the server saw the client as {shown}");
            peer
        }
        Err(err) => {
            println!("  {label}: FAILED: {err:#}");
            None
        }
    }
}
