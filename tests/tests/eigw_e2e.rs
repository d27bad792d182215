//! End-to-end tests of the egress-only internet gateway: real traffic between network namespaces
//! through `gateway run --config examples/egress-only.toml` (the `IgwTopology` addresses: the
//! instance 2001:db8:1000:1::10 in a subnet whose `::/0` goes to the egress-only gateway, the
//! internet host 2001:db8:eeee::10 behind a router).
//!
//! Each test builds its own four namespaces and its own config/flow-log/socket directory, so the
//! tests run in parallel. They need root. What decides comes from the far end: the peer address
//! the internet host's `accept`/`recv_from` returned, a capture inside the instance namespace,
//! the instance's own route cache.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use etherparse::{
    IcmpEchoHeader, Icmpv6Type, PacketBuilder,
    icmpv6::{DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader, TimeExceededCode},
};
use gateway::control::{ConntrackRow, StatsReply};
use gateway_tests::{
    Capture, GatewayConfigFiles, GatewayProcess, IgwTopology, Netns, addr, capture, example_path,
    flowlog, flowlog::FlowRecord, gateway_binary, traffic,
};

const FOUR_MB: usize = 4 * 1024 * 1024;

/// The topology with the gateway running `examples/egress-only.toml`. Fields drop in order: the
/// gateway stops (SIGINT) before its namespaces go away.
struct Eigw {
    gateway: GatewayProcess,
    files: GatewayConfigFiles,
    net: IgwTopology,
}

impl Eigw {
    fn start() -> Self {
        let net = IgwTopology::new().expect("building the topology");
        let (files, gateway) = net
            .start_example_gateway(&example_path("egress-only.toml"))
            .expect("starting the gateway with examples/egress-only.toml");
        Self {
            gateway,
            files,
            net,
        }
    }

    /// Runs `gateway ARGS --socket SOCKET` (a client of the running gateway) and returns stdout.
    fn cli(&self, args: &[&str]) -> String {
        let binary = gateway_binary().expect("the gateway binary");
        let mut command = vec![binary.to_string_lossy().into_owned()];
        command.extend(args.iter().map(|arg| arg.to_string()));
        command.push("--socket".into());
        command.push(self.files.socket.to_string_lossy().into_owned());
        self.net
            .gateway
            .run(&command)
            .unwrap_or_else(|error| panic!("gateway {args:?}: {error:#}"))
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let reply: StatsReply = serde_json::from_str(&self.cli(&["stats", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway stats --json`: {error}"));
        reply.counters
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters()
            .into_iter()
            .find(|(counter, _)| counter == name)
            .unwrap_or_else(|| panic!("no counter {name} in `gateway stats`"))
            .1
    }

    fn conntrack(&self) -> Vec<ConntrackRow> {
        serde_json::from_str(&self.cli(&["conntrack", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway conntrack --json`: {error}"))
    }
}

fn ip(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

#[test]
fn ipv6_tcp_from_the_instance_arrives_intact_from_its_own_address() {
    let eigw = Eigw::start();
    let seen = traffic::tcp_exchange(
        &eigw.net.internet,
        ip(addr::INTERNET_V6),
        &eigw.net.instance,
        ip(addr::INTERNET_V6),
        FOUR_MB,
        FOUR_MB,
    )
    .unwrap_or_else(|e| {
        panic!(
            "4 MB each way instance <-> 2001:db8:eeee::10: {e:?}\ngateway output:\n{}",
            eigw.gateway.output()
        )
    });
    assert_eq!(
        seen.server_saw_peer.ip(),
        ip(addr::INSTANCE_V6),
        "the internet host's accept() must report the instance's own address ({seen:?})"
    );
    assert_eq!(
        seen.server_saw_peer, seen.client_local,
        "address and port unchanged end to end ({seen:?})"
    );
    assert_eq!((seen.uploaded, seen.downloaded), (FOUR_MB, FOUR_MB));
    assert!(
        eigw.counter("forward_eigw_outbound") > 0 && eigw.counter("forward_eigw_inbound") > 0,
        "the transfer went through the egress-only gateway: {:?}",
        eigw.counters()
    );
}

#[test]
fn ipv6_udp_from_the_instance_is_echoed_back_from_its_own_address() {
    let eigw = Eigw::start();
    let seen = traffic::udp_echo(
        &eigw.net.internet,
        ip(addr::INTERNET_V6),
        &eigw.net.instance,
        ip(addr::INTERNET_V6),
        20,
        1200,
    )
    .expect("UDP echo instance -> 2001:db8:eeee::10");
    assert_eq!(seen.echoed, 20, "every datagram comes back ({seen:?})");
    assert!(
        !seen.server_saw_peers.is_empty()
            && seen
                .server_saw_peers
                .iter()
                .all(|peer| peer.ip() == ip(addr::INSTANCE_V6)),
        "the internet host's recv_from must report the instance's own address ({seen:?})"
    );
}

#[test]
fn ipv6_ping_from_the_instance_is_answered_and_arrives_from_its_own_address() {
    let eigw = Eigw::start();
    let capture = Capture::start(&eigw.net.internet, "eth0", "icmp6 and ip6[40] == 128")
        .expect("starting tcpdump on the internet host");
    let output = traffic::ping_output(&eigw.net.instance, ip(addr::INTERNET_V6), 3, None)
        .expect("running ping");
    assert!(
        output.status.success(),
        "ping 2001:db8:eeee::10 from the instance got no reply:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let sources = capture::sources(&capture.stop().expect("stopping tcpdump"));
    assert_eq!(
        sources,
        vec![ip(addr::INSTANCE_V6)],
        "sources of the echo requests the internet host received"
    );
}

/// A TCP connection from the instance to the internet host, held open until dropped.
struct HeldConnection {
    /// The instance's end and the internet host's end.
    local: SocketAddr,
    remote: SocketAddr,
    close: mpsc::Sender<()>,
    client: thread::JoinHandle<anyhow::Result<()>>,
    server: thread::JoinHandle<anyhow::Result<usize>>,
}

impl HeldConnection {
    fn open(instance: &Netns, internet: &Netns) -> HeldConnection {
        let (port_tx, port_rx) = mpsc::channel();
        let server = internet.spawn_thread(move || {
            let listener = TcpListener::bind((addr::INTERNET_V6, 0)).context("binding")?;
            port_tx.send(listener.local_addr()?.port())?;
            let (mut stream, _) = listener.accept().context("accept")?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut received = Vec::new();
            stream.read_to_end(&mut received).context("reading")?;
            Ok(received.len())
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the held connection's server did not start");
        let remote = SocketAddr::new(ip(addr::INTERNET_V6), port);
        let (local_tx, local_rx) = mpsc::channel();
        let (close, close_rx) = mpsc::channel::<()>();
        let client = instance.spawn_thread(move || {
            let mut stream = TcpStream::connect_timeout(&remote, Duration::from_secs(10))
                .with_context(|| format!("connecting to {remote}"))?;
            stream.write_all(&[0x42; 1000])?;
            local_tx.send(stream.local_addr()?)?;
            // Held until the test says so (or gives up on it).
            let _ = close_rx.recv_timeout(Duration::from_secs(60));
            Ok(())
        });
        let local = local_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the held connection did not connect");
        HeldConnection {
            local,
            remote,
            close,
            client,
            server,
        }
    }

    fn close(self) {
        let _ = self.close.send(());
        let client = self.client.join().expect("client thread");
        client.expect("the held connection's client");
        let received = self.server.join().expect("server thread");
        assert_eq!(
            received.expect("the held connection's server"),
            1000,
            "bytes over the held connection"
        );
    }
}

fn endpoint(address: SocketAddr) -> String {
    format!("[{}]:{}", address.ip(), address.port())
}

#[test]
fn gateway_conntrack_shows_the_live_ipv6_flows() {
    let eigw = Eigw::start();
    let udp = traffic::udp_echo(
        &eigw.net.internet,
        ip(addr::INTERNET_V6),
        &eigw.net.instance,
        ip(addr::INTERNET_V6),
        3,
        100,
    )
    .expect("UDP echo");
    assert_eq!(udp.echoed, 3, "{udp:?}");
    assert!(
        traffic::ping(&eigw.net.instance, ip(addr::INTERNET_V6), 2),
        "ping6 from the instance"
    );
    let held = HeldConnection::open(&eigw.net.instance, &eigw.net.internet);
    let (local, remote) = (endpoint(held.local), endpoint(held.remote));

    // The data segment's ACK may still be on its way: wait for both directions to be counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = eigw.conntrack();
        let done = rows
            .iter()
            .any(|row| row.inside == local && row.remote == remote && row.packets_in >= 2);
        if done || Instant::now() >= deadline {
            break rows;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let shown = format!("{rows:#?}");
    let tcp = rows
        .iter()
        .find(|row| row.inside == local && row.remote == remote)
        .unwrap_or_else(|| panic!("no conntrack row {local} <-> {remote} in {shown}"));
    assert_eq!(
        (
            tcp.protocol.as_str(),
            tcp.gateway.as_str(),
            tcp.state.as_str()
        ),
        ("tcp", "egress-only", "established"),
        "{tcp:?}"
    );
    assert!(
        tcp.packets_out >= 3 && tcp.packets_in >= 2 && tcp.bytes_out > 1000,
        "SYN, ACK and 1000 bytes out; SYN-ACK and ACK in: {tcp:?}"
    );
    for (protocol, state) in [("udp", "open"), ("icmpv6", "open")] {
        let row = rows
            .iter()
            .find(|row| row.protocol == protocol)
            .unwrap_or_else(|| panic!("no {protocol} row in {shown}"));
        assert!(
            row.inside.starts_with("[2001:db8:1000:1::10]:")
                && row.remote.starts_with("[2001:db8:eeee::10]:")
                && row.state == state
                && row.packets_out > 0
                && row.packets_in > 0,
            "{protocol}: {row:?}"
        );
    }
    let udp_peer = udp
        .server_saw_peers
        .iter()
        .next()
        .expect("the UDP server saw a peer");
    assert!(
        rows.iter()
            .any(|row| row.protocol == "udp" && row.inside == endpoint(*udp_peer)),
        "the UDP row is the echo's flow ({udp_peer}): {shown}"
    );

    // The human form, and the address filter.
    let table = eigw.cli(&["conntrack"]);
    assert!(
        table.lines().any(|line| line.contains(&local)
            && line.contains(&remote)
            && line.contains("established")
            && line.contains("egress-only")),
        "`gateway conntrack` lists the held connection:\n{table}"
    );
    let filtered: Vec<ConntrackRow> =
        serde_json::from_str(&eigw.cli(&["conntrack", "--json", "--address", "2001:db8:eeee::10"]))
            .expect("parsing the filtered conntrack");
    assert_eq!(
        filtered.len(),
        rows.len(),
        "every flow is with the internet host"
    );
    let none: Vec<ConntrackRow> =
        serde_json::from_str(&eigw.cli(&["conntrack", "--json", "--address", "2001:db8:eeee::99"]))
            .expect("parsing the filtered conntrack");
    assert!(none.is_empty(), "no flow with ::99: {none:?}");
    held.close();
}

// --- The scan.

const PROBED_TCP_PORT: u16 = 7777;
const PROBED_UDP_PORT: u16 = 7778;
const SCAN_TCP_PORTS: std::ops::RangeInclusive<u16> = 1..=1024;
const SCAN_UDP_PORTS: std::ops::RangeInclusive<u16> = 1..=200;

/// An IPv6 packet from the internet host to the instance.
fn from_internet() -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ipv6(addr::INTERNET_V6.octets(), addr::INSTANCE_V6.octets(), 64)
}

fn write(
    builder: impl FnOnce(&mut Vec<u8>) -> Result<(), etherparse::err::packet::BuildWriteError>,
) -> Vec<u8> {
    let mut out = Vec::new();
    builder(&mut out).unwrap_or_else(|error| panic!("building a scan packet: {error}"));
    out
}

fn tcp_probe(sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    write(|out| {
        let mut builder = from_internet().tcp(sport, dport, 0x7a7a_0000, 64240);
        for flag in flags.chars() {
            builder = match flag {
                'S' => builder.syn(),
                'A' => builder.ack(0x0102_0304),
                'R' => builder.rst(),
                'F' => builder.fin(),
                other => panic!("unknown TCP flag {other}"),
            };
        }
        builder.write(out, &[])
    })
}

fn udp_probe(sport: u16, dport: u16) -> Vec<u8> {
    write(|out| from_internet().udp(sport, dport).write(out, b"probe"))
}

fn icmp_probe(icmp: Icmpv6Type, body: &[u8]) -> Vec<u8> {
    write(|out| from_internet().icmpv6(icmp).write(out, body))
}

/// A packet the instance might have sent (and did not): what a spoofed error quotes.
fn quoted_from_instance(dport: u16) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ipv6(addr::INSTANCE_V6.octets(), addr::INTERNET_V6.octets(), 63)
            .tcp(33333, dport, 1, 64240)
            .ack(1)
            .write(out, &[0x5a; 64])
    })
}

/// Every kind of unsolicited packet, with how many of each.
fn scan_packets() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut syns: Vec<Vec<u8>> = SCAN_TCP_PORTS
        .map(|port| tcp_probe(40000, port, "S"))
        .collect();
    syns.push(tcp_probe(40000, PROBED_TCP_PORT, "S"));
    let others: Vec<Vec<u8>> = ["A", "R", "RA", "FA", "SA", "F"]
        .iter()
        .flat_map(|flags| {
            [PROBED_TCP_PORT, 22, 80, 443]
                .into_iter()
                .map(move |port| tcp_probe(41000, port, flags))
        })
        .collect();
    let mut udps: Vec<Vec<u8>> = SCAN_UDP_PORTS.map(|port| udp_probe(53, port)).collect();
    udps.push(udp_probe(53, PROBED_UDP_PORT));
    let echos: Vec<Vec<u8>> = (0..10)
        .map(|seq| {
            icmp_probe(
                Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 0x5ca1, seq }),
                b"scan",
            )
        })
        .collect();
    let errors: Vec<Vec<u8>> = [
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
        Icmpv6Type::ParameterProblem(ParameterProblemHeader {
            code: ParameterProblemCode::ErroneousHeaderField,
            pointer: 6,
        }),
    ]
    .into_iter()
    .flat_map(|icmp| {
        [80, PROBED_TCP_PORT]
            .into_iter()
            .map(move |port| icmp_probe(icmp, &quoted_from_instance(port)))
    })
    .collect();
    let other_protocol = {
        // SCTP (132): a protocol the gateway has no name for.
        let mut header = etherparse::Ipv6Header {
            next_header: etherparse::IpNumber(132),
            hop_limit: 64,
            source: addr::INTERNET_V6.octets(),
            destination: addr::INSTANCE_V6.octets(),
            ..Default::default()
        };
        header.set_payload_length(32).expect("payload length");
        let mut packet = header.to_bytes().to_vec();
        packet.extend_from_slice(&[0x11; 32]);
        vec![packet]
    };
    let later_fragment = {
        let mut header = etherparse::Ipv6Header {
            next_header: etherparse::IpNumber(44),
            hop_limit: 64,
            source: addr::INTERNET_V6.octets(),
            destination: addr::INSTANCE_V6.octets(),
            ..Default::default()
        };
        header.set_payload_length(8 + 24).expect("payload length");
        let mut packet = header.to_bytes().to_vec();
        // Fragment header by hand (RFC 8200 4.5; etherparse 0.19 encodes M and the offset's
        // low bits in the wrong place): TCP, offset 100, more fragments.
        packet.extend_from_slice(&[6, 0]);
        packet.extend_from_slice(&((100u16 << 3) | 1).to_be_bytes());
        packet.extend_from_slice(&0x5ca1_ab1e_u32.to_be_bytes());
        packet.extend_from_slice(&[0xc3; 24]);
        vec![packet]
    };
    vec![
        ("TCP SYN", syns),
        ("TCP ACK/RST/FIN/SYN-ACK", others),
        ("UDP", udps),
        ("ICMPv6 echo request", echos),
        ("ICMPv6 error quoting an unknown flow", errors),
        ("other protocol", other_protocol),
        ("later fragment", later_fragment),
    ]
}

/// What the capture inside the instance must never see: anything from the internet host other
/// than neighbour discovery (which cannot come from an off-link address anyway).
const INSIDE_FILTER: &str = "ip6 and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)";

#[test]
fn a_scan_from_the_internet_reaches_nothing_inside() {
    let eigw = Eigw::start();
    let (instance, internet) = (&eigw.net.instance, &eigw.net.internet);
    // Services listening inside: they must never hear from the scan.
    let (listeners_tx, listeners_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let services = instance.spawn_thread(move || {
        let tcp = TcpListener::bind((Ipv6Addr::UNSPECIFIED, PROBED_TCP_PORT))?;
        let udp = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, PROBED_UDP_PORT))?;
        tcp.set_nonblocking(true)?;
        udp.set_nonblocking(true)?;
        listeners_tx.send(())?;
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
        let accepted = tcp.accept().ok().map(|(_, peer)| peer);
        let mut buf = [0u8; 2048];
        let received = udp.recv_from(&mut buf).ok().map(|(_, peer)| peer);
        Ok((accepted, received))
    });
    listeners_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the services inside did not start");

    let before: std::collections::BTreeMap<String, u64> = eigw.counters().into_iter().collect();
    let capture = Capture::start(instance, "eth0", INSIDE_FILTER).expect("starting tcpdump inside");
    let scan_started = unix_now();

    // The raw scan.
    let scan = scan_packets();
    let mut sent = Vec::new();
    for (kind, packets) in scan {
        sent.push((kind, packets.len()));
        traffic::send_raw(internet, packets)
            .unwrap_or_else(|error| panic!("sending from {}: {error:#}", internet.name()));
    }
    // Real connection attempts (the kernel's own SYNs and retransmissions) and pings.
    let target = SocketAddr::new(ip(addr::INSTANCE_V6), PROBED_TCP_PORT);
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
        "a connection from the internet to [instance]:{PROBED_TCP_PORT} succeeded"
    );
    let ping = traffic::ping_output(internet, ip(addr::INSTANCE_V6), 3, None).expect("ping6");
    assert!(
        !ping.status.success(),
        "ping6 from the internet to the instance got a reply:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    thread::sleep(Duration::from_millis(500));
    let inside = capture.stop().expect("stopping tcpdump inside");
    let _ = done_tx.send(());
    let (accepted, received) = services
        .join()
        .expect("services thread")
        .expect("the services inside");

    let from_internet: Vec<&capture::Packet> = inside
        .iter()
        .filter(|packet| packet.src == ip(addr::INTERNET_V6))
        .collect();
    assert!(
        from_internet.is_empty(),
        "{} packets from the internet host reached the instance:\n{}",
        from_internet.len(),
        from_internet
            .iter()
            .map(|packet| packet.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        accepted, None,
        "the TCP service inside accepted a connection"
    );
    assert_eq!(received, None, "the UDP service inside received a datagram");

    // The scan did reach the gateway, and was dropped there by kind.
    let after: std::collections::BTreeMap<String, u64> = eigw.counters().into_iter().collect();
    let moved =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let count_of = |kind: &str| {
        sent.iter()
            .find(|(sent_kind, _)| *sent_kind == kind)
            .map_or(0, |(_, count)| *count as u64)
    };
    for (counter, at_least) in [
        ("drop_eigw_unsolicited_tcp_syn", count_of("TCP SYN")),
        (
            "drop_eigw_unsolicited_tcp",
            count_of("TCP ACK/RST/FIN/SYN-ACK"),
        ),
        ("drop_eigw_unsolicited_udp", count_of("UDP")),
        (
            "drop_eigw_unsolicited_icmpv6",
            count_of("ICMPv6 echo request"),
        ),
        (
            "drop_eigw_icmp_error_no_flow",
            count_of("ICMPv6 error quoting an unknown flow"),
        ),
        ("drop_eigw_unsolicited_other", count_of("other protocol")),
        ("drop_eigw_fragment", count_of("later fragment")),
    ] {
        assert!(
            moved(counter) >= at_least,
            "{counter} moved by {}, expected at least {at_least} (sent {sent:?})",
            moved(counter)
        );
    }
    assert_eq!(
        moved("forward_eigw_inbound") + moved("eigw_icmp_error_related"),
        0,
        "nothing was let in: {after:?}"
    );
    let stats = eigw.cli(&["stats"]);
    for counter in [
        "drop_eigw_unsolicited_tcp_syn",
        "drop_eigw_unsolicited_tcp",
        "drop_eigw_unsolicited_udp",
        "drop_eigw_unsolicited_icmpv6",
        "drop_eigw_icmp_error_no_flow",
    ] {
        assert!(
            stats.lines().any(|line| line.starts_with(counter)),
            "`gateway stats` shows {counter}:\n{stats}"
        );
    }
    assert!(
        eigw.conntrack().is_empty(),
        "the scan created state: {:?}",
        eigw.conntrack()
    );

    // The capture works: a reply to the instance's own ping is seen from the same host.
    let control = Capture::start(instance, "eth0", INSIDE_FILTER).expect("starting tcpdump");
    assert!(
        traffic::ping(instance, ip(addr::INTERNET_V6), 2),
        "ping6 from the instance"
    );
    let seen = control.stop().expect("stopping tcpdump");
    assert!(
        seen.iter()
            .any(|packet| packet.src == ip(addr::INTERNET_V6)),
        "the capture inside sees the echo replies (control): {seen:?}"
    );

    // Flow logs: REJECT records for the scan (aggregated over 1 s).
    thread::sleep(Duration::from_millis(2500));
    let records = read_flow_log(&eigw.files.flow_log);
    let rejected: Vec<&FlowRecord> = records
        .iter()
        .filter(|record| {
            record.srcaddr == ip(addr::INTERNET_V6)
                && record.dstaddr == ip(addr::INSTANCE_V6)
                && record.action == "REJECT"
        })
        .collect();
    let dump = records
        .iter()
        .map(|record| record.line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for (protocol, port) in [
        (6, PROBED_TCP_PORT),
        (6, 22),
        (17, PROBED_UDP_PORT),
        (58, 0),
    ] {
        assert!(
            rejected
                .iter()
                .any(|record| record.protocol == protocol && (port == 0 || record.dstport == port)),
            "no REJECT record for protocol {protocol} port {port} from the scan:\n{dump}"
        );
    }
    assert!(
        rejected.len() >= SCAN_TCP_PORTS.count(),
        "one REJECT record per scanned TCP port at least ({} records)",
        rejected.len()
    );
    assert!(
        rejected
            .iter()
            .all(|record| record.start + 1 >= scan_started && record.log_status == "OK"),
        "REJECT records from the scan: {rejected:#?}"
    );
    assert!(
        !records
            .iter()
            .any(|record| record.srcaddr == ip(addr::INTERNET_V6)
                && record.dstaddr == ip(addr::INSTANCE_V6)
                && record.action == "ACCEPT"
                && record.start + 1 >= scan_started
                && record.protocol != 58),
        "only the control ping's replies may be ACCEPTed from the internet host:\n{dump}"
    );
}

fn read_flow_log(path: &Path) -> Vec<FlowRecord> {
    flowlog::read_lines(path)
        .expect("reading the flow log")
        .iter()
        .map(|line| {
            FlowRecord::parse(line)
                .unwrap_or_else(|e| panic!("not a default-format (v2) flow-log line: {e:#}"))
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn packet_too_big_from_the_router_reaches_the_instance_and_a_large_transfer_completes() {
    let eigw = Eigw::start();
    // The router's link to the internet host carries 1400 bytes: the instance's 1500-byte
    // segments make the router answer Packet Too Big, from 2001:db8:ffff::2, through the gateway.
    eigw.net
        .router
        .ip(["link", "set", "rtr-inet", "mtu", "1400"])
        .expect("MTU 1400 on the router's internet link");
    let capture = Capture::start(&eigw.net.instance, "eth0", "icmp6 and ip6[40] == 2")
        .expect("starting tcpdump inside");
    // Upload only: the internet host's own 1500-byte segments would not fit the router's link
    // either, and a link drops what is too big to receive without any Packet Too Big.
    const EIGHT_MB: usize = 8 * 1024 * 1024;
    let seen = traffic::tcp_exchange(
        &eigw.net.internet,
        ip(addr::INTERNET_V6),
        &eigw.net.instance,
        ip(addr::INTERNET_V6),
        EIGHT_MB,
        0,
    )
    .unwrap_or_else(|e| {
        panic!(
            "8 MB from the instance over a 1400-byte hop: {e:?}\ngateway output:\n{}",
            eigw.gateway.output()
        )
    });
    assert_eq!(seen.uploaded, EIGHT_MB, "every byte arrived, verified");
    assert_eq!(seen.server_saw_peer.ip(), ip(addr::INSTANCE_V6), "{seen:?}");
    let too_big = capture.stop().expect("stopping tcpdump");
    assert!(
        too_big
            .iter()
            .any(|packet| packet.src == ip(addr::ROUTER_GW_V6)
                && packet.dst == ip(addr::INSTANCE_V6)),
        "the router's Packet Too Big reached the instance: {too_big:?}"
    );
    let route = eigw
        .net
        .instance
        .ip(["-6", "route", "get", "2001:db8:eeee::10"])
        .expect("ip route get");
    assert!(
        route.contains("mtu 1400"),
        "the instance learned the path MTU: {route}"
    );
    assert!(
        eigw.counter("eigw_icmp_error_related") > 0,
        "the gateway let the error in as related: {:?}",
        eigw.counters()
    );
    assert_eq!(
        eigw.counter("drop_eigw_icmp_error_no_flow"),
        0,
        "no Packet Too Big was refused"
    );
}
