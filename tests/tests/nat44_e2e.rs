//! End-to-end tests of the NAT gateway (NAT44): real traffic between network namespaces through
//! `gateway run --config examples/nat-gateway.toml`. The `IgwTopology` with a second private host
//! (`IgwTopology::add_second_instance`): 10.0.1.10 and 10.0.1.11 in a subnet whose `0.0.0.0/0`
//! goes to the NAT gateway with the public address 203.0.113.20; the internet host 192.0.2.10
//! behind a router that sends 203.0.113.0/24 to the gateway and knows nothing of 10.0.0.0/16.
//!
//! Each test builds its own five namespaces and its own config/flow-log/socket directory, so the
//! tests run in parallel. They need root. What decides comes from the far ends: the peer address
//! the internet host's `accept`/`recv_from` returned, captures on both sides, the gateway's own
//! `gateway conntrack`, its flow log and its mapping log.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder};
use gateway::control::{ConntrackRow, StatsReply};
use gateway_tests::{
    Capture, GatewayConfigFiles, GatewayProcess, IgwTopology, Netns, addr, example_path,
    gateway_binary, traffic, write_gateway_config,
};

const FOUR_MB: usize = 4 * 1024 * 1024;
const PUBLIC: Ipv4Addr = addr::NAT_PUBLIC_V4;

/// The topology with both private hosts and the gateway running `examples/nat-gateway.toml`.
/// Fields drop in order: the gateway stops (SIGINT) before its namespaces go away.
struct Nat {
    gateway: GatewayProcess,
    files: GatewayConfigFiles,
    net: IgwTopology,
}

impl Nat {
    fn start() -> Self {
        Self::start_with("")
    }

    /// Starts the gateway with `extra` (TOML tables) appended to the example config.
    fn start_with(extra: &str) -> Self {
        let mut net = IgwTopology::new().expect("building the topology");
        net.add_second_instance()
            .expect("adding the second private host");
        let files = write_gateway_config(&example_path("nat-gateway.toml"), net.dir())
            .expect("writing examples/nat-gateway.toml into the test directory");
        if !extra.is_empty() {
            let mut text = fs::read_to_string(&files.config).expect("reading the test config");
            text.push('\n');
            text.push_str(extra);
            fs::write(&files.config, text).expect("writing the test config");
        }
        let gateway = net
            .start_gateway(&files.config)
            .expect("starting the gateway with examples/nat-gateway.toml");
        Self {
            gateway,
            files,
            net,
        }
    }

    fn second(&self) -> &Netns {
        self.net
            .second_instance
            .as_ref()
            .expect("the second private host exists")
    }

    /// Runs `gateway ARGS --socket SOCKET` (a client of the running gateway) and returns stdout.
    fn cli(&self, args: &[&str]) -> String {
        let binary = gateway_binary().expect("the gateway binary");
        let mut command = vec![binary.to_string_lossy().into_owned()];
        command.extend(args.iter().map(|arg| arg.to_string()));
        command.push("--socket".into());
        command.push(self.files.socket.to_string_lossy().into_owned());
        self.net.gateway.run(&command).unwrap_or_else(|error| {
            panic!(
                "gateway {args:?}: {error:#}\ngateway output:\n{}",
                self.gateway.output()
            )
        })
    }

    fn stats(&self) -> StatsReply {
        serde_json::from_str(&self.cli(&["stats", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway stats --json`: {error}"))
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        self.stats().counters.into_iter().collect()
    }

    /// A NAT metric under its AWS name (`gateway stats`' `nat` section).
    fn nat_metric(&self, name: &str) -> u64 {
        self.stats()
            .nat
            .into_iter()
            .find(|(metric, _)| metric == name)
            .unwrap_or_else(|| panic!("no NAT metric {name} in `gateway stats`"))
            .1
    }

    fn counter(&self, name: &str) -> u64 {
        *self
            .counters()
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name} in `gateway stats`"))
    }

    fn conntrack(&self) -> Vec<ConntrackRow> {
        serde_json::from_str(&self.cli(&["conntrack", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway conntrack --json`: {error}"))
    }

    fn flow_log(&self) -> Vec<CustomRecord> {
        match fs::read_to_string(&self.files.flow_log) {
            Ok(text) => text
                .lines()
                .filter(|line| !line.trim().is_empty() && !line.starts_with("version "))
                .map(CustomRecord::parse)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn ip(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

/// One record of the example's custom flow-log format: `version account-id interface-id srcaddr
/// dstaddr srcport dstport protocol packets bytes start end action log-status pkt-srcaddr
/// pkt-dstaddr flow-direction`.
#[derive(Debug, Clone)]
struct CustomRecord {
    srcaddr: String,
    dstaddr: String,
    protocol: String,
    action: String,
    pkt_srcaddr: String,
    pkt_dstaddr: String,
    line: String,
}

impl CustomRecord {
    fn parse(line: &str) -> Self {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields.len(),
            17,
            "a flow-log line of the example's custom format has 17 fields: {line:?}"
        );
        Self {
            srcaddr: fields[3].to_owned(),
            dstaddr: fields[4].to_owned(),
            protocol: fields[7].to_owned(),
            action: fields[12].to_owned(),
            pkt_srcaddr: fields[14].to_owned(),
            pkt_dstaddr: fields[15].to_owned(),
            line: line.to_owned(),
        }
    }
}

fn lines(records: &[CustomRecord]) -> String {
    records
        .iter()
        .map(|record| record.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one private host's traffic saw.
#[derive(Debug)]
struct HostTraffic {
    tcp: traffic::TcpExchange,
    udp: traffic::UdpEcho,
    ping: std::process::Output,
}

/// TCP (4 MB each way, verified), UDP echo and ping from `host` to the internet host, at once.
fn all_traffic(nat: &Nat, host: &Netns) -> HostTraffic {
    let internet = &nat.net.internet;
    thread::scope(|scope| {
        let tcp = scope.spawn(|| {
            traffic::tcp_exchange(
                internet,
                ip(addr::INTERNET_V4),
                host,
                ip(addr::INTERNET_V4),
                FOUR_MB,
                FOUR_MB,
            )
        });
        let udp = scope.spawn(|| {
            traffic::udp_echo(
                internet,
                ip(addr::INTERNET_V4),
                host,
                ip(addr::INTERNET_V4),
                20,
                1000,
            )
        });
        let ping = scope.spawn(|| traffic::ping_output(host, ip(addr::INTERNET_V4), 5, None));
        let name = host.name();
        HostTraffic {
            tcp: tcp.join().expect("TCP thread").unwrap_or_else(|error| {
                panic!(
                    "4 MB each way {name} <-> 192.0.2.10: {error:#}\ngateway output:\n{}",
                    nat.gateway.output()
                )
            }),
            udp: udp
                .join()
                .expect("UDP thread")
                .unwrap_or_else(|error| panic!("UDP echo {name} -> 192.0.2.10: {error:#}")),
            ping: ping
                .join()
                .expect("ping thread")
                .unwrap_or_else(|error| panic!("ping from {name}: {error:#}")),
        }
    })
}

#[test]
fn two_private_hosts_share_the_public_address_over_tcp_udp_and_ping_at_once() {
    let nat = Nat::start();
    let capture = Capture::start(&nat.net.internet, "eth0", "ip")
        .expect("starting tcpdump on the internet host");
    let (first, second) = thread::scope(|scope| {
        let first = scope.spawn(|| all_traffic(&nat, &nat.net.instance));
        let second = scope.spawn(|| all_traffic(&nat, nat.second()));
        (
            first.join().expect("first host's traffic"),
            second.join().expect("second host's traffic"),
        )
    });
    let seen_outside = capture.stop().expect("stopping tcpdump");

    let mut public_endpoints = BTreeSet::new();
    for (host, private, seen) in [
        ("10.0.1.10", addr::INSTANCE_V4, &first),
        ("10.0.1.11", addr::SECOND_INSTANCE_V4, &second),
    ] {
        assert_eq!(
            (seen.tcp.uploaded, seen.tcp.downloaded),
            (FOUR_MB, FOUR_MB),
            "{host}: every byte both ways ({seen:?})"
        );
        assert_eq!(
            seen.tcp.client_local.ip(),
            ip(private),
            "{host}: the client's own address is private ({seen:?})"
        );
        assert_eq!(
            seen.tcp.server_saw_peer.ip(),
            ip(PUBLIC),
            "{host}: the internet host's accept() reports the NAT's public address ({seen:?})"
        );
        assert_eq!(
            seen.udp.echoed, 20,
            "{host}: every datagram echoed ({seen:?})"
        );
        assert!(
            !seen.udp.server_saw_peers.is_empty()
                && seen
                    .udp
                    .server_saw_peers
                    .iter()
                    .all(|peer| peer.ip() == ip(PUBLIC)),
            "{host}: the UDP server saw only the public address ({seen:?})"
        );
        assert!(
            seen.ping.status.success(),
            "{host}: ping 192.0.2.10 got no reply:\n{}{}",
            String::from_utf8_lossy(&seen.ping.stdout),
            String::from_utf8_lossy(&seen.ping.stderr)
        );
        public_endpoints.insert(("tcp", seen.tcp.server_saw_peer));
        for peer in &seen.udp.server_saw_peers {
            public_endpoints.insert(("udp", *peer));
        }
    }
    let tcp_ports: BTreeSet<u16> = [first.tcp.server_saw_peer, second.tcp.server_saw_peer]
        .iter()
        .map(SocketAddr::port)
        .collect();
    assert_eq!(
        tcp_ports.len(),
        2,
        "the two hosts' TCP connections have distinct public ports ({first:?} / {second:?})"
    );
    let udp_first: BTreeSet<SocketAddr> = first.udp.server_saw_peers.clone();
    assert!(
        udp_first.is_disjoint(&second.udp.server_saw_peers),
        "the two hosts' UDP flows have distinct public endpoints ({first:?} / {second:?})"
    );

    // Outside, only the public address: no private address ever crossed the router.
    let sources: BTreeSet<IpAddr> = seen_outside
        .iter()
        .filter(|packet| packet.dst == ip(addr::INTERNET_V4))
        .map(|packet| packet.src)
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([ip(PUBLIC)]),
        "sources of what the internet host received"
    );
    let echo_requests = seen_outside
        .iter()
        .filter(|packet| packet.line.contains("ICMP echo request"))
        .count();
    assert!(
        echo_requests >= 2,
        "both hosts' echo requests reached the internet host: {echo_requests}"
    );

    let counters = nat.counters();
    for name in [
        "forward_nat_outbound",
        "forward_nat_inbound",
        "nat_connection_attempt",
        "nat_connection_established",
        "nat_mapping_created",
        "nat_bytes_out_to_destination",
        "nat_bytes_out_to_source",
        // Established sessions' packets take the fast path, still through their session.
        "fast_path_forwarded",
    ] {
        assert!(
            counters.get(name).copied().unwrap_or(0) > 0,
            "{name} counted: {counters:?}"
        );
    }
    for name in ["nat_error_port_allocation", "drop_conntrack_full"] {
        assert_eq!(
            counters.get(name).copied().unwrap_or(0),
            0,
            "{name}: {counters:?}"
        );
    }
    assert!(
        counters["nat_bytes_out_to_destination"] >= 2 * FOUR_MB as u64
            && counters["nat_bytes_out_to_source"] >= 2 * FOUR_MB as u64,
        "the transfers went through the NAT: {counters:?}"
    );

    assert!(
        nat.nat_metric("ActiveConnectionCount") >= 4,
        "the sessions are active (ActiveConnectionCount): {:?}",
        nat.stats().nat
    );

    // `gateway conntrack`: the sessions with their private and public endpoints.
    let rows = nat.conntrack();
    let shown = format!("{rows:#?}");
    for (host, seen) in [("10.0.1.10", &first), ("10.0.1.11", &second)] {
        let tcp = rows
            .iter()
            .find(|row| row.protocol == "tcp" && row.inside == seen.tcp.client_local.to_string())
            .unwrap_or_else(|| panic!("{host}: no TCP session in {shown}"));
        assert_eq!(
            (tcp.gateway.as_str(), tcp.public.clone(), tcp.remote.clone()),
            (
                "nat",
                Some(seen.tcp.server_saw_peer.to_string()),
                seen.tcp.client_saw_peer.to_string()
            ),
            "{host}: {tcp:?}"
        );
        assert!(
            tcp.packets_out > 100 && tcp.bytes_out > FOUR_MB as u64 && tcp.packets_in > 100,
            "{host}: the TCP session counted the transfer: {tcp:?}"
        );
        for peer in &seen.udp.server_saw_peers {
            let udp = rows
                .iter()
                .find(|row| row.protocol == "udp" && row.public == Some(peer.to_string()))
                .unwrap_or_else(|| panic!("{host}: no UDP session for {peer} in {shown}"));
            assert!(
                udp.inside.starts_with(&format!("{host}:"))
                    && udp.state == "open"
                    && udp.packets_out > 0
                    && udp.packets_in > 0,
                "{host}: {udp:?}"
            );
        }
        assert!(
            rows.iter().any(|row| row.protocol == "icmp"
                && row.inside.starts_with(&format!("{host}:"))
                && row
                    .public
                    .as_deref()
                    .is_some_and(|p| p.starts_with("203.0.113.20:"))
                && row.packets_in > 0),
            "{host}: an ICMP echo session in {shown}"
        );
    }
    let table = nat.cli(&["conntrack"]);
    let line_of_first = format!("{}", first.tcp.client_local);
    assert!(
        table.lines().any(|line| line.contains(&line_of_first)
            && line.contains(&first.tcp.server_saw_peer.to_string())),
        "`gateway conntrack` lists 10.0.1.10's TCP session with its public endpoint:\n{table}"
    );
    let filtered: Vec<ConntrackRow> =
        serde_json::from_str(&nat.cli(&["conntrack", "--json", "--address", "10.0.1.11"]))
            .expect("parsing the filtered conntrack");
    assert!(
        !filtered.is_empty()
            && filtered
                .iter()
                .all(|row| row.inside.starts_with("10.0.1.11:")),
        "--address 10.0.1.11 keeps that host's sessions only: {filtered:#?}"
    );

    // Flow logs (1 s aggregation): the private source in pkt-srcaddr, the public one in srcaddr.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = nat.flow_log();
        let found = |private: &str, protocol: &str| {
            records.iter().any(|record| {
                record.pkt_srcaddr == private
                    && record.srcaddr == PUBLIC.to_string()
                    && record.dstaddr == "192.0.2.10"
                    && record.pkt_dstaddr == "192.0.2.10"
                    && record.protocol == protocol
                    && record.action == "ACCEPT"
            })
        };
        let all = ["10.0.1.10", "10.0.1.11"].iter().all(|host| {
            ["6", "17", "1"]
                .iter()
                .all(|protocol| found(host, protocol))
        });
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow-log records of both hosts' TCP, UDP and ICMP with the private source in \
             pkt-srcaddr and 203.0.113.20 in srcaddr:\n{}",
            lines(&records)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

// --- Nothing gets in.

const PROBED_TCP_PORT: u16 = 7777;
const PROBED_UDP_PORT: u16 = 7778;
const SCAN_TCP_PORTS: std::ops::RangeInclusive<u16> = 1..=1024;
const SCAN_UDP_PORTS: std::ops::RangeInclusive<u16> = 1..=200;

fn from_internet_to(destination: Ipv4Addr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ipv4(addr::INTERNET_V4.octets(), destination.octets(), 64)
}

fn build(
    builder: impl FnOnce(&mut Vec<u8>) -> Result<(), etherparse::err::packet::BuildWriteError>,
) -> Vec<u8> {
    let mut out = Vec::new();
    builder(&mut out).unwrap_or_else(|error| panic!("building a scan packet: {error}"));
    out
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to(PUBLIC)
            .tcp(sport, dport, 0x7a7a_0000, 64240)
            .syn()
            .write(out, &[])
    })
}

fn ack(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to(PUBLIC)
            .tcp(sport, dport, 0x7a7a_0000, 64240)
            .ack(0x0102_0304)
            .write(out, &[])
    })
}

fn udp_probe(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to(PUBLIC)
            .udp(sport, dport)
            .write(out, b"probe")
    })
}

fn echo_request(id: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to(PUBLIC)
            .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: 1 }))
            .write(out, b"probe")
    })
}

/// Services listening on both private hosts; they must never hear from the internet.
fn services(
    host: &Netns,
) -> (
    mpsc::Sender<()>,
    thread::JoinHandle<anyhow::Result<Vec<String>>>,
) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let handle = host.spawn_thread(move || {
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PROBED_TCP_PORT))?;
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBED_UDP_PORT))?;
        tcp.set_nonblocking(true)?;
        udp.set_nonblocking(true)?;
        ready_tx.send(())?;
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
        let mut heard = Vec::new();
        while let Ok((_, peer)) = tcp.accept() {
            heard.push(format!("TCP connection from {peer}"));
        }
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            heard.push(format!("UDP datagram from {peer}"));
        }
        Ok(heard)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the services in {} did not start", host.name()));
    (done_tx, handle)
}

/// What the captures inside must never see: anything from the internet host.
const INSIDE_FILTER: &str = "ip and src host 192.0.2.10";

#[test]
fn unsolicited_connections_and_a_port_scan_from_the_internet_reach_nothing_inside() {
    let nat = Nat::start();
    let (instance, second, internet) = (&nat.net.instance, nat.second(), &nat.net.internet);
    // A live session first: a public mapping exists, and still only its own peer gets in.
    let udp = traffic::udp_echo(
        internet,
        ip(addr::INTERNET_V4),
        instance,
        ip(addr::INTERNET_V4),
        3,
        100,
    )
    .expect("UDP echo from 10.0.1.10");
    assert_eq!(udp.echoed, 3, "{udp:?}");
    let mapped = udp
        .server_saw_peers
        .iter()
        .next()
        .expect("the UDP server saw a peer")
        .port();

    let listening = [services(instance), services(second)];
    let before = nat.counters();
    let captures = [
        Capture::start(instance, "eth0", INSIDE_FILTER).expect("starting tcpdump in 10.0.1.10"),
        Capture::start(second, "eth0", INSIDE_FILTER).expect("starting tcpdump in 10.0.1.11"),
    ];

    // The scan: SYNs to every well-known port and to the services' port, stray ACKs, UDP, pings,
    // and packets to the live mapping's public port from another source port of the same host.
    let mut syns: Vec<Vec<u8>> = SCAN_TCP_PORTS.map(|port| syn(40000, port)).collect();
    syns.push(syn(40000, PROBED_TCP_PORT));
    syns.push(syn(40000, mapped));
    let acks: Vec<Vec<u8>> = [PROBED_TCP_PORT, 22, 80, 443, mapped]
        .into_iter()
        .map(|port| ack(41000, port))
        .collect();
    let mut udps: Vec<Vec<u8>> = SCAN_UDP_PORTS.map(|port| udp_probe(42000, port)).collect();
    udps.push(udp_probe(42000, PROBED_UDP_PORT));
    udps.push(udp_probe(42000, mapped));
    let pings: Vec<Vec<u8>> = (1..=10).map(echo_request).collect();
    let sent = [
        ("drop_nat_unsolicited_tcp_syn", syns.len() as u64),
        ("drop_nat_unsolicited_tcp", acks.len() as u64),
        ("drop_nat_unsolicited_udp", udps.len() as u64),
        ("drop_nat_unsolicited_icmp", pings.len() as u64),
    ];
    for packets in [syns, acks, udps, pings] {
        traffic::send_raw(internet, packets)
            .unwrap_or_else(|error| panic!("sending from {}: {error:#}", internet.name()));
    }
    // A real connection attempt (the kernel's SYN and its retransmission) and a real ping.
    let target = SocketAddr::new(ip(PUBLIC), PROBED_TCP_PORT);
    let connected = internet
        .enter(move || {
            Ok(TcpStream::connect_timeout(
                &target,
                Duration::from_millis(1500),
            ))
        })
        .expect("connect attempt");
    assert!(
        connected.is_err(),
        "a connection from the internet to {target} succeeded"
    );
    let ping = traffic::ping_output(internet, ip(PUBLIC), 3, None).expect("ping");
    assert!(
        !ping.status.success(),
        "ping from the internet to 203.0.113.20 got a reply:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    thread::sleep(Duration::from_millis(500));

    for (host, capture) in ["10.0.1.10", "10.0.1.11"].into_iter().zip(captures) {
        let inside = capture.stop().expect("stopping tcpdump inside");
        assert!(
            inside.is_empty(),
            "{} packets from the internet host reached {host}:\n{}",
            inside.len(),
            inside
                .iter()
                .map(|packet| packet.line.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for (host, (done, handle)) in ["10.0.1.10", "10.0.1.11"].into_iter().zip(listening) {
        let _ = done.send(());
        let heard = handle
            .join()
            .expect("services thread")
            .unwrap_or_else(|error| panic!("the services in {host}: {error:#}"));
        assert!(heard.is_empty(), "the services in {host} heard: {heard:?}");
    }

    let after = nat.counters();
    let moved =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    for (counter, at_least) in sent {
        assert!(
            moved(counter) >= at_least,
            "{counter} moved by {}, expected at least {at_least}: {after:?}",
            moved(counter)
        );
    }
    assert_eq!(
        moved("forward_nat_inbound") + moved("nat_icmp_error_translated_inbound"),
        0,
        "nothing was let in: {after:?}"
    );
    let rows = nat.conntrack();
    assert!(
        rows.iter()
            .all(|row| row.inside.starts_with("10.0.1.10:") && row.protocol == "udp"),
        "the scan created no state (only the UDP echo's session is there): {rows:#?}"
    );

    // The captures work: the answer to a ping from inside is seen inside.
    let control = Capture::start(second, "eth0", INSIDE_FILTER).expect("starting tcpdump");
    assert!(
        traffic::ping(second, ip(addr::INTERNET_V4), 2),
        "ping from 10.0.1.11"
    );
    let seen = control.stop().expect("stopping tcpdump");
    assert!(
        seen.iter()
            .any(|packet| packet.src == ip(addr::INTERNET_V4)),
        "the capture inside sees the echo replies (control): {seen:?}"
    );

    // Flow logs: REJECT records for the scan, to the public address.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = nat.flow_log();
        let rejected = |protocol: &str| {
            records.iter().any(|record| {
                record.action == "REJECT"
                    && record.pkt_srcaddr == "192.0.2.10"
                    && record.pkt_dstaddr == PUBLIC.to_string()
                    && record.protocol == protocol
            })
        };
        if rejected("6") && rejected("17") && rejected("1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "REJECT records for the TCP, UDP and ICMP probes:\n{}",
            lines(&records)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

// --- Expiry.

/// Every idle timeout 2 s: the sweeper then runs every second.
const SHORT_TIMEOUTS: &str = "[conntrack]
tcp_established_idle_seconds = 2
tcp_transitory_idle_seconds = 2
udp_idle_seconds = 2
icmp_idle_seconds = 2
other_idle_seconds = 2
";

/// A UDP socket made in `ns` (it stays there wherever it is used from).
fn udp_socket(ns: &Netns, bind: SocketAddr) -> UdpSocket {
    ns.enter(move || {
        let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(socket)
    })
    .unwrap_or_else(|error| panic!("a UDP socket in {}: {error:#}", ns.name()))
}

fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(length, peer)| (buf[..length].to_vec(), peer))
}

#[test]
fn expired_sessions_are_swept_and_no_longer_let_anything_in() {
    let nat = Nat::start_with(SHORT_TIMEOUTS);
    let inside = udp_socket(nat.second(), SocketAddr::new(ip(Ipv4Addr::UNSPECIFIED), 0));
    let outside = udp_socket(&nat.net.internet, SocketAddr::new(ip(addr::INTERNET_V4), 0));
    let server = outside.local_addr().expect("the internet host's socket");
    let private_port = inside.local_addr().expect("the private socket").port();

    // The session: out, and the internet host's answer back in.
    inside
        .send_to(b"hello", server)
        .expect("sending from 10.0.1.11");
    let (data, public) = receive(&outside).unwrap_or_else(|| {
        panic!(
            "the internet host got nothing from 10.0.1.11: {:?}\n{}",
            nat.counters(),
            nat.gateway.output()
        )
    });
    assert_eq!(data, b"hello");
    assert_eq!(public.ip(), ip(PUBLIC), "the public address outside");
    outside.send_to(b"live", public).expect("answering");
    let (data, from) =
        receive(&inside).expect("the answer reaches 10.0.1.11 while the session lives");
    assert_eq!((data.as_slice(), from), (&b"live"[..], server));
    let rows = nat.conntrack();
    assert!(
        rows.iter().any(|row| row.protocol == "udp"
            && row.inside == format!("10.0.1.11:{private_port}")
            && row.public == Some(public.to_string())
            && row.remote == server.to_string()),
        "the live session in `gateway conntrack`: {rows:#?}"
    );
    let idle_before = nat.nat_metric("IdleTimeoutCount");

    // Idle: the sweeper removes both halves within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !nat.conntrack().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sweeper left expired sessions: {:#?}",
            nat.conntrack()
        );
        thread::sleep(Duration::from_millis(250));
    }
    assert!(
        nat.nat_metric("IdleTimeoutCount") > idle_before,
        "the expiry counted as an idle timeout (IdleTimeoutCount): {:?}",
        nat.counters()
    );

    // From outside, the old public endpoint now leads nowhere.
    let capture =
        Capture::start(nat.second(), "eth0", INSIDE_FILTER).expect("starting tcpdump inside");
    let dropped_before = nat.counter("drop_nat_unsolicited_udp");
    for _ in 0..3 {
        outside.send_to(b"late", public).expect("sending late");
    }
    let late = receive(&inside);
    let seen = capture.stop().expect("stopping tcpdump");
    assert_eq!(
        late, None,
        "a datagram reached 10.0.1.11 after its session expired"
    );
    assert!(
        seen.is_empty(),
        "packets reached 10.0.1.11 after expiry: {seen:?}"
    );
    assert!(
        nat.counter("drop_nat_unsolicited_udp") >= dropped_before + 3,
        "the late datagrams were dropped as unsolicited: {:?}",
        nat.counters()
    );

    // The mapping log has the finished mapping: private and public endpoints.
    let mapping_log = nat.net.dir().join("nat-mappings.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(&mapping_log).unwrap_or_default();
        if text.lines().any(|line| {
            line.contains(&format!("10.0.1.11:{private_port}"))
                && line.contains(&public.to_string())
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mapping log {} has no line for 10.0.1.11:{private_port} -> {public}:\n{text}",
            mapping_log.display()
        );
        thread::sleep(Duration::from_millis(250));
    }
    // The controller keeps running, and a new session works again.
    inside.send_to(b"again", server).expect("sending again");
    let (data, _) = receive(&outside).expect("a new session from 10.0.1.11 after the expiry");
    assert_eq!(data, b"again");
}
