//! End-to-end tests of the internet gateway: real traffic between network namespaces through
//! `gateway run --config examples/igw-demo.toml` (see `IgwTopology` for the addresses).
//!
//! Each test builds its own four namespaces and its own config/flow-log/socket directory, so the
//! tests run in parallel. They need root. The observations that decide come from the far end
//! (the peer address a server's `accept` returned, a tcpdump capture), not from the gateway.

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gateway::control::{self, StatsReply};
use gateway_tests::{
    Capture, GatewayConfigFiles, GatewayProcess, IgwTopology, addr, capture, flowlog,
    flowlog::FlowRecord, traffic,
};

/// Large enough for many windows and GRO/GSO-sized aggregates, small enough to stay fast.
const FOUR_MB: usize = 4 * 1024 * 1024;

/// A topology with the gateway running. Fields drop in order: the gateway stops (SIGINT) before
/// its namespaces go away.
struct Igw {
    gateway: GatewayProcess,
    files: GatewayConfigFiles,
    net: IgwTopology,
}

impl Igw {
    fn start() -> Self {
        let net = IgwTopology::new().expect("building the topology");
        let (files, gateway) = net
            .start_default_gateway()
            .expect("starting the gateway with examples/igw-demo.toml");
        Self {
            gateway,
            files,
            net,
        }
    }
}

impl Igw {
    /// A dataplane counter from `gateway stats`: the proof that XDP, not the kernel's own
    /// forwarding (also enabled in the gateway namespace), carried the traffic.
    fn counter(&self, name: &str) -> u64 {
        let reply =
            control::request(&self.files.socket, "stats").expect("asking the gateway for stats");
        let stats: StatsReply = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("parsing the stats reply {reply:?}: {e}"));
        stats
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| *value)
            .unwrap_or_else(|| panic!("no counter {name} in {reply}"))
    }

    fn assert_counted(&self, name: &str) {
        let value = self.counter(name);
        assert!(
            value > 0,
            "counter {name} is 0: the traffic did not go through the XDP path\ngateway output:\n{}",
            self.gateway.output()
        );
    }
}

fn ip(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

#[test]
fn ipv4_tcp_from_instance_arrives_intact_from_the_elastic_ip() {
    let igw = Igw::start();
    let seen = traffic::tcp_exchange(
        &igw.net.internet,
        ip(addr::INTERNET_V4),
        &igw.net.instance,
        ip(addr::INTERNET_V4),
        FOUR_MB,
        FOUR_MB,
    )
    .unwrap_or_else(|e| {
        panic!(
            "4 MB each way instance <-> 192.0.2.10: {e:?}\ngateway output:\n{}",
            igw.gateway.output()
        )
    });
    assert_eq!(
        seen.server_saw_peer.ip(),
        ip(addr::ELASTIC_IP),
        "the internet host must see the Elastic IP, not the private address ({seen:?})"
    );
    assert_eq!(
        seen.client_local.ip(),
        ip(addr::INSTANCE_V4),
        "the instance keeps its private address ({seen:?})"
    );
    assert_eq!(
        seen.server_saw_peer.port(),
        seen.client_local.port(),
        "1:1 NAT keeps the source port ({seen:?})"
    );
    assert_eq!((seen.uploaded, seen.downloaded), (FOUR_MB, FOUR_MB));
    igw.assert_counted("forward_igw_outbound_ipv4");
    igw.assert_counted("forward_igw_inbound_ipv4");
}

#[test]
fn ipv6_tcp_from_instance_arrives_intact_from_its_own_address() {
    let igw = Igw::start();
    let seen = traffic::tcp_exchange(
        &igw.net.internet,
        ip(addr::INTERNET_V6),
        &igw.net.instance,
        ip(addr::INTERNET_V6),
        FOUR_MB,
        FOUR_MB,
    )
    .unwrap_or_else(|e| {
        panic!(
            "4 MB each way instance <-> 2001:db8:eeee::10: {e:?}\ngateway output:\n{}",
            igw.gateway.output()
        )
    });
    assert_eq!(
        seen.server_saw_peer.ip(),
        ip(addr::INSTANCE_V6),
        "IPv6 is not translated: the internet host sees the instance's address ({seen:?})"
    );
    assert_eq!((seen.uploaded, seen.downloaded), (FOUR_MB, FOUR_MB));
    igw.assert_counted("forward_igw_outbound_ipv6");
    igw.assert_counted("forward_igw_inbound_ipv6");
}

#[test]
fn ipv4_udp_from_instance_is_echoed_back_through_the_elastic_ip() {
    let igw = Igw::start();
    let seen = traffic::udp_echo(
        &igw.net.internet,
        ip(addr::INTERNET_V4),
        &igw.net.instance,
        ip(addr::INTERNET_V4),
        20,
        1200,
    )
    .expect("UDP echo instance -> 192.0.2.10");
    assert_eq!(seen.echoed, 20, "every datagram comes back ({seen:?})");
    assert!(
        seen.server_saw_peers
            .iter()
            .all(|peer| peer.ip() == ip(addr::ELASTIC_IP)),
        "the internet host must see only the Elastic IP ({seen:?})"
    );
}

#[test]
fn ipv6_udp_from_instance_is_echoed_back_from_its_own_address() {
    let igw = Igw::start();
    let seen = traffic::udp_echo(
        &igw.net.internet,
        ip(addr::INTERNET_V6),
        &igw.net.instance,
        ip(addr::INTERNET_V6),
        20,
        1200,
    )
    .expect("UDP echo instance -> 2001:db8:eeee::10");
    assert_eq!(seen.echoed, 20, "every datagram comes back ({seen:?})");
    assert!(
        seen.server_saw_peers
            .iter()
            .all(|peer| peer.ip() == ip(addr::INSTANCE_V6)),
        "the internet host must see the instance's own address ({seen:?})"
    );
}

/// Pings `target` from the instance and returns the sources of the echo requests that the
/// internet host received.
fn ping_and_capture(igw: &Igw, target: IpAddr) -> Vec<IpAddr> {
    let capture = Capture::start(
        &igw.net.internet,
        "eth0",
        "(icmp and icmp[0] == 8) or (icmp6 and ip6[40] == 128)",
    )
    .expect("starting tcpdump on the internet host");
    let output = traffic::ping_output(&igw.net.instance, target, 3, None).expect("running ping");
    assert!(
        output.status.success(),
        "ping {target} from the instance got no reply:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    capture::sources(&capture.stop().expect("stopping tcpdump"))
}

#[test]
fn ipv4_ping_from_instance_is_answered_and_arrives_from_the_elastic_ip() {
    let igw = Igw::start();
    let sources = ping_and_capture(&igw, ip(addr::INTERNET_V4));
    assert_eq!(sources, vec![ip(addr::ELASTIC_IP)], "echo request sources");
}

#[test]
fn ipv6_ping_from_instance_is_answered_and_arrives_from_its_own_address() {
    let igw = Igw::start();
    let sources = ping_and_capture(&igw, ip(addr::INTERNET_V6));
    assert_eq!(sources, vec![ip(addr::INSTANCE_V6)], "echo request sources");
}

#[test]
fn inbound_tcp_to_the_elastic_ip_reaches_the_instance_from_the_real_internet_address() {
    let igw = Igw::start();
    let seen = traffic::tcp_exchange(
        &igw.net.instance,
        ip(addr::INSTANCE_V4),
        &igw.net.internet,
        ip(addr::ELASTIC_IP),
        256 * 1024,
        256 * 1024,
    )
    .unwrap_or_else(|e| {
        panic!(
            "internet host -> 203.0.113.10: {e:?}\ngateway output:\n{}",
            igw.gateway.output()
        )
    });
    assert_eq!(
        seen.server_saw_peer.ip(),
        ip(addr::INTERNET_V4),
        "the instance sees the internet host's real address ({seen:?})"
    );
    assert_eq!(
        seen.client_saw_peer.ip(),
        ip(addr::ELASTIC_IP),
        "the internet host talks to the Elastic IP ({seen:?})"
    );
    igw.assert_counted("forward_igw_inbound_ipv4");
}

#[test]
fn ipv4_ttl_expiring_beyond_the_gateway_returns_time_exceeded_from_the_router() {
    let igw = Igw::start();
    // Hop 2 is the router: its Time Exceeded goes to the Elastic IP and quotes the translated
    // probe, so it only reaches the traceroute socket if the gateway translates both back.
    let hops = traffic::traceroute(&igw.net.instance, ip(addr::INTERNET_V4), 3)
        .expect("traceroute 192.0.2.10");
    assert_eq!(
        hops,
        vec![
            Some(ip(addr::GATEWAY_VPC_V4)),
            Some(ip(addr::ROUTER_GW_V4)),
            Some(ip(addr::INTERNET_V4))
        ],
        "traceroute hops (UDP probes)"
    );
    // The same with an ICMP echo (ping's raw socket matches the quoted echo id and sequence).
    let output = traffic::ping_output(&igw.net.instance, ip(addr::INTERNET_V4), 1, Some(2))
        .expect("ping -t 2");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("From 198.51.100.2") && text.contains("Time to live exceeded"),
        "ping -t 2 must report Time to live exceeded from 198.51.100.2:\n{text}"
    );
    igw.assert_counted("icmp_error_translated_inbound");
}

#[test]
fn ipv6_hop_limit_expiring_beyond_the_gateway_returns_time_exceeded_from_the_router() {
    let igw = Igw::start();
    let hops = traffic::traceroute(&igw.net.instance, ip(addr::INTERNET_V6), 3)
        .expect("traceroute -6 2001:db8:eeee::10");
    assert_eq!(
        hops,
        vec![
            Some(ip(addr::GATEWAY_VPC_V6)),
            Some(ip(addr::ROUTER_GW_V6)),
            Some(ip(addr::INTERNET_V6))
        ],
        "traceroute -6 hops (UDP probes)"
    );
}

#[test]
fn flow_log_records_ipv4_from_the_elastic_ip_and_ipv6_from_the_instance_address() {
    let igw = Igw::start();
    let before = unix_now();
    let v4 = traffic::tcp_exchange(
        &igw.net.internet,
        ip(addr::INTERNET_V4),
        &igw.net.instance,
        ip(addr::INTERNET_V4),
        64 * 1024,
        64 * 1024,
    )
    .expect("IPv4 TCP exchange");
    let v6 = traffic::tcp_exchange(
        &igw.net.internet,
        ip(addr::INTERNET_V6),
        &igw.net.instance,
        ip(addr::INTERNET_V6),
        64 * 1024,
        64 * 1024,
    )
    .expect("IPv6 TCP exchange");
    // The example config aggregates over 1 s: by 2.5 s every record of that traffic is written.
    thread::sleep(Duration::from_millis(2500));
    let after = unix_now();

    let lines = flowlog::read_lines(&igw.files.flow_log).expect("reading the flow log");
    let records: Vec<FlowRecord> = lines
        .iter()
        .map(|line| {
            FlowRecord::parse(line)
                .unwrap_or_else(|e| panic!("not a default-format (v2) flow-log line: {e:#}"))
        })
        .collect();
    let dump = lines.join("\n");

    for (family, exchange, src, dst) in [
        ("IPv4", &v4, ip(addr::ELASTIC_IP), ip(addr::INTERNET_V4)),
        ("IPv6", &v6, ip(addr::INSTANCE_V6), ip(addr::INTERNET_V6)),
    ] {
        let wanted = SocketAddr::new(src, exchange.client_local.port());
        let record = records
            .iter()
            .find(|r| {
                r.srcaddr == src
                    && r.dstaddr == dst
                    && r.srcport == wanted.port()
                    && r.dstport == exchange.client_saw_peer.port()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {family} record {wanted} -> {} in the flow log:\n{dump}",
                    exchange.client_saw_peer
                )
            });
        assert_eq!(record.version, 2, "{family}: {}", record.line);
        if let Some(account) = &igw.files.account_id {
            assert_eq!(
                &record.account_id, account,
                "{family}: account-id from the config: {}",
                record.line
            );
        }
        assert_eq!(
            record.protocol, 6,
            "{family}: TCP is protocol 6: {}",
            record.line
        );
        assert!(
            record.packets > 0 && record.bytes > 0,
            "{family}: counts: {}",
            record.line
        );
        assert!(
            before.saturating_sub(1) <= record.start
                && record.start <= record.end
                && record.end <= after + 1,
            "{family}: start/end within the test ({before}..{after}): {}",
            record.line
        );
        assert_eq!(
            (record.action.as_str(), record.log_status.as_str()),
            ("ACCEPT", "OK"),
            "{family}: {}",
            record.line
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn ipv4_from_a_private_address_without_elastic_ip_does_not_reach_the_internet() {
    let igw = Igw::start();
    // A second private address on the instance, with no Elastic IP mapped to it.
    igw.net
        .instance
        .ip(["addr", "add", "10.0.1.20/24", "dev", "eth0"])
        .expect("adding 10.0.1.20 to the instance");
    let capture = Capture::start(&igw.net.internet, "eth0", "icmp")
        .expect("starting tcpdump on the internet host");
    let output = igw
        .net
        .instance
        .exec([
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "10.0.1.20",
            "192.0.2.10",
        ])
        .expect("running ping");
    let packets = capture.stop().expect("stopping tcpdump");
    assert!(
        !output.status.success(),
        "ping from 10.0.1.20 (no Elastic IP) must get no reply:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        packets.is_empty(),
        "nothing from 10.0.1.20 may reach the internet host, translated or not: {packets:?}"
    );
    igw.assert_counted("drop_igw_no_public_ipv4");
}
