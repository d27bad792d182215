//! Packet tests of the NAT gateway (NAT44) through `BPF_PROG_TEST_RUN`.
//!
//! Unlike the stateless rows of `packet_tests.rs`, NAT behaviour depends on what came before, so
//! each test is a short story: packets in order, each output compared byte for byte with a frame
//! etherparse built from field values (every checksum computed from scratch), and the counters
//! that name the behaviour checked. The gateway runs in its own namespace (see `packet::gateway`).
//!
//! Run as root: `cargo test -p gateway-tests --test nat44_packet_tests`.

#[expect(
    dead_code,
    reason = "helpers shared with packet_tests.rs; this binary uses part of them"
)]
mod packet;

use std::time::Duration;

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, IpNumber, SlicedPacket, TransportSlice,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};

use crate::packet::{
    empty::EmptyXdp,
    frames::*,
    gateway::{Side, TestGateway, Verdict, counter_delta, parse_config, xdp_md},
};

/// The NAT gateway's public addresses.
const PUBLIC: [u8; 4] = [203, 0, 113, 20];
const PUBLIC2: [u8; 4] = [203, 0, 113, 21];
/// A second private host (its neighbour entry has the instance's MAC).
const HOST_B: [u8; 4] = [10, 0, 1, 11];
const HOST_C: [u8; 4] = [10, 0, 1, 12];
const REMOTE2: [u8; 4] = [192, 0, 2, 20];

/// The test VPC with subnet 10.0.1.0/24 routed to a NAT gateway; `nat_extra` is added to the NAT
/// gateway's table, `tail` to the file.
fn nat_config(public_ips: &str, nat_extra: &str, tail: &str) -> String {
    format!(
        r#"
[vpc]
id = "vpc-nat-tests"
account_id = "123456789012"
ipv4_cidrs = ["10.0.0.0/16"]

[[interfaces]]
name = "vpc0"
role = "vpc"

[[interfaces]]
name = "inet0"
role = "internet"

[[subnets]]
id = "subnet-private"
ipv4_cidr = "10.0.1.0/24"
route_table = "rtb-private"

[[route_tables]]
id = "rtb-private"
routes = [{{ destination = "0.0.0.0/0", target = "nat-tests" }}]

[[nat_gateways]]
id = "nat-tests"
public_ips = [{public_ips}]
{nat_extra}
{tail}
"#
    )
}

/// The gateway loaded with a NAT test configuration.
fn nat_gateway(config_text: &str) -> TestGateway {
    TestGateway::with_config(&parse_config(config_text), &[])
}

fn default_gateway() -> TestGateway {
    nat_gateway(&nat_config("\"203.0.113.20\"", "", ""))
}

const TO_HOST: Link = TO_INSTANCE;

fn tcp_frame(link: Link, src: [u8; 4], dst: [u8; 4], ttl: u8, sport: u16, dport: u16) -> Vec<u8> {
    eth4(link, ipv4(&v4(src, dst, ttl), tcp(sport, dport), PAYLOAD))
}

fn udp_frame(link: Link, src: [u8; 4], dst: [u8; 4], ttl: u8, sport: u16, dport: u16) -> Vec<u8> {
    eth4(link, ipv4(&v4(src, dst, ttl), udp(sport, dport), PAYLOAD))
}

fn echo(link: Link, src: [u8; 4], dst: [u8; 4], ttl: u8, id: u16, request: bool) -> Vec<u8> {
    let header = IcmpEchoHeader { id, seq: 1 };
    let icmp = if request {
        Icmpv4Type::EchoRequest(header)
    } else {
        Icmpv4Type::EchoReply(header)
    };
    eth4(link, ipv4(&v4(src, dst, ttl), L4::Icmp4(icmp), PAYLOAD))
}

/// Every checksum of an output frame, verified by etherparse independently of the expected frame.
fn assert_checksums_valid(frame: &[u8]) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse parses the output");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4");
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let payload = ip.payload().payload;
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .expect("tcp checksum");
            assert_eq!(tcp.checksum(), expected, "TCP checksum");
        }
        Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
            let expected = udp
                .to_header()
                .calc_checksum_ipv4(&header, udp.payload())
                .expect("udp checksum");
            assert_eq!(udp.checksum(), expected, "UDP checksum");
        }
        Some(TransportSlice::Icmpv4(_)) => {
            assert_eq!(
                gateway_common::checksum::full(payload),
                0,
                "ICMP checksum over the message"
            );
        }
        _ => {}
    }
}

/// Runs one packet and checks the verdict and, if given, the output frame byte for byte.
fn send(
    gateway: &mut TestGateway,
    what: &str,
    side: Side,
    input: &[u8],
    verdict: Verdict,
    expected: Option<&[u8]>,
) -> Vec<u8> {
    let before = gateway.counters();
    let outcome = gateway.run(side, input);
    assert_eq!(
        outcome.verdict,
        verdict,
        "{what}: verdict (counters moved: {:?})",
        counter_delta(&before, &gateway.counters())
    );
    if let Some(expected) = expected {
        assert!(
            outcome.frame == expected,
            "{what}: output frame\n{}",
            hex_diff(expected, &outcome.frame)
        );
    }
    if matches!(verdict, Verdict::Redirect | Verdict::Tx) {
        assert_checksums_valid(&outcome.frame);
    }
    outcome.frame
}

/// Sends and checks which counters moved by how much (only the listed ones are checked).
fn send_counted(
    gateway: &mut TestGateway,
    what: &str,
    side: Side,
    input: &[u8],
    verdict: Verdict,
    expected: Option<&[u8]>,
    counters: &[(&str, u64)],
) -> Vec<u8> {
    let before = gateway.counters();
    let frame = send(gateway, what, side, input, verdict, expected);
    let delta = counter_delta(&before, &gateway.counters());
    for (name, moved) in counters {
        assert_eq!(
            delta.get(name).copied().unwrap_or(0),
            *moved,
            "{what}: counter {name} (all moved: {delta:?})"
        );
    }
    frame
}

#[test]
fn tcp_udp_icmp_mappings_and_replies() {
    let mut gw = default_gateway();
    use Side::*;
    use Verdict::*;
    // TCP: a new mapping, the source port kept.
    send_counted(
        &mut gw,
        "TCP SYN out",
        Vpc,
        &tcp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 40000, 443),
        Redirect,
        Some(&tcp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 40000, 443)),
        &[
            ("nat_connection_attempt", 1),
            ("nat_mapping_created", 1),
            ("nat_port_preserved", 1),
            ("conntrack_created", 1),
            ("forward_nat_outbound", 1),
            ("nat_packets_in_from_source", 1),
            ("nat_packets_out_to_destination", 1),
        ],
    );
    send_counted(
        &mut gw,
        "TCP SYN-ACK back",
        Internet,
        &tcp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 443, 40000),
        Redirect,
        Some(&tcp_frame(TO_HOST, REMOTE, INSTANCE, 63, 443, 40000)),
        &[
            ("forward_nat_inbound", 1),
            ("nat_connection_established", 1),
            ("nat_packets_in_from_destination", 1),
            ("nat_packets_out_to_source", 1),
        ],
    );
    // Later packets: the same session, nothing new.
    send_counted(
        &mut gw,
        "TCP again",
        Vpc,
        &tcp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 40000, 443),
        Redirect,
        Some(&tcp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 40000, 443)),
        &[("nat_connection_attempt", 0), ("forward_nat_outbound", 1)],
    );
    // UDP, and a UDP checksum of 0 stays 0.
    send(
        &mut gw,
        "UDP out",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5353, 53)),
    );
    let mut no_checksum_in = udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53);
    no_checksum_in[14 + 26..14 + 28].fill(0);
    let mut no_checksum_out = udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5353, 53);
    no_checksum_out[14 + 26..14 + 28].fill(0);
    send(
        &mut gw,
        "UDP without checksum",
        Vpc,
        &no_checksum_in,
        Redirect,
        Some(&no_checksum_out),
    );
    send(
        &mut gw,
        "UDP reply",
        Internet,
        &udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5353),
        Redirect,
        Some(&udp_frame(TO_HOST, REMOTE, INSTANCE, 63, 53, 5353)),
    );
    // ICMP echo: identifier 7 is outside the port range, so it gets a random one in the range.
    let out = send(
        &mut gw,
        "echo request",
        Vpc,
        &echo(FROM_INSTANCE, INSTANCE, REMOTE, 64, 7, true),
        Redirect,
        None,
    );
    let id = u16::from_be_bytes([out[14 + 24], out[14 + 25]]);
    assert!(id >= 1024, "identifier {id} in the port range");
    assert_eq!(out, echo(TO_INTERNET, PUBLIC, REMOTE, 63, id, true));
    send(
        &mut gw,
        "echo reply",
        Internet,
        &echo(FROM_INTERNET, REMOTE, PUBLIC, 64, id, false),
        Redirect,
        Some(&echo(TO_HOST, REMOTE, INSTANCE, 63, 7, false)),
    );
    // Sessions: TCP, UDP and ICMP, two halves each.
    let entries = gw.dataplane.conntrack().expect("conntrack");
    assert_eq!(entries.len(), 6, "{entries:?}");
}

#[test]
fn unsolicited_inbound_is_dropped_and_filtering_is_address_and_port_dependent() {
    let mut gw = default_gateway();
    use Side::*;
    use Verdict::*;
    for (what, frame, counter) in [
        (
            "TCP SYN",
            tcp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 443, 40000),
            "drop_nat_unsolicited_tcp_syn",
        ),
        (
            "UDP",
            udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5353),
            "drop_nat_unsolicited_udp",
        ),
        (
            "echo request",
            echo(FROM_INTERNET, REMOTE, PUBLIC, 64, 7, true),
            "drop_nat_unsolicited_icmp",
        ),
    ] {
        send_counted(&mut gw, what, Internet, &frame, Drop, None, &[(counter, 1)]);
    }
    // A session to REMOTE:53 lets in neither another port of REMOTE nor another host.
    send(
        &mut gw,
        "UDP out",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Redirect,
        None,
    );
    for (what, frame) in [
        (
            "other port",
            udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 54, 5353),
        ),
        (
            "other host",
            udp_frame(FROM_INTERNET, REMOTE2, PUBLIC, 64, 53, 5353),
        ),
    ] {
        send_counted(
            &mut gw,
            what,
            Internet,
            &frame,
            Drop,
            None,
            &[("drop_nat_unsolicited_udp", 1)],
        );
    }
    // The REJECT is in the flow table.
    let flows = gw.dataplane.flows().expect("flows");
    assert!(
        flows
            .iter()
            .any(|(key, _)| key.action == gateway_common::maps::action::REJECT),
        "{flows:?}"
    );
}

#[test]
fn endpoint_independent_mapping_and_hairpin() {
    let mut gw = default_gateway();
    use Side::*;
    use Verdict::*;
    // One private endpoint, two destinations: one public endpoint (RFC 4787 REQ-1).
    send(
        &mut gw,
        "A to REMOTE",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5353, 53)),
    );
    send_counted(
        &mut gw,
        "A to REMOTE2",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE2, 64, 5353, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE2, 63, 5353, 53)),
        &[("nat_connection_attempt", 1), ("nat_mapping_created", 0)],
    );
    // Hairpin: B talks to A's public endpoint; A has not talked to B yet, so B's packet is
    // refused, but B's session now exists.
    send_counted(
        &mut gw,
        "B to A's public endpoint, unsolicited for A",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, PUBLIC, 64, 6000, 5353),
        Drop,
        None,
        &[("drop_nat_unsolicited_udp", 1)],
    );
    // A to B's public endpoint: delivered to B with A's public source (REQ-9).
    send_counted(
        &mut gw,
        "A to B's public endpoint",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, PUBLIC, 64, 5353, 6000),
        Redirect,
        Some(&udp_frame(TO_HOST, PUBLIC, HOST_B, 63, 5353, 6000)),
        &[("forward_nat_hairpin", 1)],
    );
    // Now that A has talked to B's public endpoint, B's packets to A's public endpoint are the
    // answers: delivered to A with B's public source.
    send_counted(
        &mut gw,
        "B to A's public endpoint, now an answer",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, PUBLIC, 64, 6000, 5353),
        Redirect,
        Some(&udp_frame(TO_HOST, PUBLIC, INSTANCE, 63, 6000, 5353)),
        &[("forward_nat_hairpin", 1), ("drop_nat_unsolicited_udp", 0)],
    );
    // A's session to REMOTE right after B's packet: A's own public endpoint, not the one the
    // previous packet on this CPU used. It is an established session seen before on this CPU,
    // so the fast path forwards it, still through the session (the output above proves which).
    send_counted(
        &mut gw,
        "A to REMOTE again, after B's packet",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5353, 53)),
        &[
            ("forward_nat_outbound", 1),
            ("nat_connection_attempt", 0),
            ("fast_path_forwarded", 1),
        ],
    );
}

#[test]
fn tiny_port_range_collision_second_choice_and_exhaustion() {
    let mut gw = nat_gateway(&nat_config(
        "\"203.0.113.20\"",
        "port_range = \"5000-5001\"",
        "",
    ));
    use Side::*;
    use Verdict::*;
    send(
        &mut gw,
        "A keeps 5000",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5000, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5000, 53)),
    );
    let before = gw.counters();
    send(
        &mut gw,
        "B wants 5000, gets 5001",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, REMOTE, 64, 5000, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5001, 53)),
    );
    let delta = counter_delta(&before, &gw.counters());
    assert!(
        delta.get("nat_port_probes").copied().unwrap_or(0) >= 1,
        "{delta:?}"
    );
    assert_eq!(delta.get("nat_port_preserved"), None);
    send_counted(
        &mut gw,
        "C finds no port",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_C, REMOTE, 64, 7000, 53),
        Drop,
        None,
        &[
            ("nat_error_port_allocation", 1),
            ("nat_port_probes", 32),
            ("forward_nat_outbound", 0),
        ],
    );
    // The replies still reach A and B.
    send(
        &mut gw,
        "reply to B",
        Internet,
        &udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5001),
        Redirect,
        Some(&udp_frame(TO_HOST, REMOTE, HOST_B, 63, 53, 5000)),
    );
}

#[test]
fn second_public_ip_is_used_before_failing() {
    let mut gw = nat_gateway(&nat_config(
        "\"203.0.113.20\", \"203.0.113.21\"",
        "port_range = \"5000-5000\"",
        "",
    ));
    let first = send(
        &mut gw,
        "A",
        Side::Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5000, 53),
        Verdict::Redirect,
        None,
    );
    let second = send(
        &mut gw,
        "B",
        Side::Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, REMOTE, 64, 5000, 53),
        Verdict::Redirect,
        None,
    );
    let source = |frame: &[u8]| [frame[26], frame[27], frame[28], frame[29]];
    let mut used = [source(&first), source(&second)];
    used.sort();
    assert_eq!(used, [PUBLIC, PUBLIC2]);
    send_counted(
        &mut gw,
        "C",
        Side::Vpc,
        &udp_frame(FROM_INSTANCE, HOST_C, REMOTE, 64, 5000, 53),
        Verdict::Drop,
        None,
        &[("nat_error_port_allocation", 1)],
    );
}

#[test]
fn endpoint_dependent_mapping_reuses_ports_per_destination() {
    let mut gw = nat_gateway(&nat_config(
        "\"203.0.113.20\"",
        "port_range = \"5000-5000\"\nmapping = \"endpoint-dependent\"",
        "",
    ));
    use Side::*;
    use Verdict::*;
    send(
        &mut gw,
        "A to REMOTE",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5000, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE, 63, 5000, 53)),
    );
    send(
        &mut gw,
        "B to REMOTE2: the same public port",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, REMOTE2, 64, 5000, 53),
        Redirect,
        Some(&udp_frame(TO_INTERNET, PUBLIC, REMOTE2, 63, 5000, 53)),
    );
    send_counted(
        &mut gw,
        "B to REMOTE: taken",
        Vpc,
        &udp_frame(FROM_INSTANCE, HOST_B, REMOTE, 64, 5000, 53),
        Drop,
        None,
        &[("nat_error_port_allocation", 1)],
    );
    send(
        &mut gw,
        "reply from REMOTE2 goes to B",
        Internet,
        &udp_frame(FROM_INTERNET, REMOTE2, PUBLIC, 64, 53, 5000),
        Redirect,
        Some(&udp_frame(TO_HOST, REMOTE2, HOST_B, 63, 53, 5000)),
    );
    send(
        &mut gw,
        "reply from REMOTE goes to A",
        Internet,
        &udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5000),
        Redirect,
        Some(&udp_frame(TO_HOST, REMOTE, INSTANCE, 63, 53, 5000)),
    );
}

const FRAG_NEEDED: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
const PORT_UNREACHABLE: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
const TIME_EXCEEDED: Icmpv4Type = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);

fn icmp_error(
    link: Link,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    kind: Icmpv4Type,
    quoted: &[u8],
) -> Vec<u8> {
    eth4(link, ipv4(&v4(src, dst, ttl), L4::Icmp4(kind), quoted))
}

#[test]
fn icmp_errors_are_translated_back_for_tcp_udp_and_icmp() {
    let mut gw = default_gateway();
    use Side::*;
    use Verdict::*;
    send(
        &mut gw,
        "TCP out",
        Vpc,
        &tcp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 40000, 443),
        Redirect,
        None,
    );
    send(
        &mut gw,
        "UDP out",
        Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Redirect,
        None,
    );
    let out = send(
        &mut gw,
        "echo out",
        Vpc,
        &echo(FROM_INSTANCE, INSTANCE, REMOTE, 64, 7, true),
        Redirect,
        None,
    );
    let id = u16::from_be_bytes([out[14 + 24], out[14 + 25]]);

    // Quotes as the router saw the packets, and as the host sent them.
    let tcp_as_sent = ipv4(&v4(PUBLIC, REMOTE, 63), tcp(40000, 443), PAYLOAD);
    let tcp_as_host_sent = ipv4(&v4(INSTANCE, REMOTE, 63), tcp(40000, 443), PAYLOAD);
    let udp_as_sent = ipv4(&v4(PUBLIC, REMOTE, 63), udp(5353, 53), PAYLOAD);
    let udp_as_host_sent = ipv4(&v4(INSTANCE, REMOTE, 63), udp(5353, 53), PAYLOAD);
    let echo_header = |id| Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: 1 });
    let echo_as_sent = ipv4(&v4(PUBLIC, REMOTE, 1), L4::Icmp4(echo_header(id)), PAYLOAD);
    let echo_as_host_sent = ipv4(&v4(INSTANCE, REMOTE, 1), L4::Icmp4(echo_header(7)), PAYLOAD);
    for (what, kind, sent, host_sent) in [
        (
            "frag needed about TCP",
            FRAG_NEEDED,
            &tcp_as_sent,
            &tcp_as_host_sent,
        ),
        (
            "port unreachable about UDP",
            PORT_UNREACHABLE,
            &udp_as_sent,
            &udp_as_host_sent,
        ),
        (
            "time exceeded about an echo",
            TIME_EXCEEDED,
            &echo_as_sent,
            &echo_as_host_sent,
        ),
    ] {
        send_counted(
            &mut gw,
            what,
            Internet,
            &icmp_error(FROM_INTERNET, ROUTER, PUBLIC, 64, kind.clone(), sent),
            Redirect,
            Some(&icmp_error(TO_HOST, ROUTER, INSTANCE, 63, kind, host_sent)),
            &[
                ("nat_icmp_error_translated_inbound", 1),
                ("conntrack_created", 0),
            ],
        );
    }
    // A quote cut after 8 bytes of TCP (no checksum in it) is translated too.
    send(
        &mut gw,
        "frag needed with a short quote",
        Internet,
        &icmp_error(
            FROM_INTERNET,
            ROUTER,
            PUBLIC,
            64,
            FRAG_NEEDED,
            &tcp_as_sent[..28],
        ),
        Redirect,
        Some(&icmp_error(
            TO_HOST,
            ROUTER,
            INSTANCE,
            63,
            FRAG_NEEDED,
            &tcp_as_host_sent[..28],
        )),
    );
    // No session: dropped, nothing created.
    let unknown = ipv4(&v4(PUBLIC, REMOTE, 63), udp(1234, 9), PAYLOAD);
    send_counted(
        &mut gw,
        "error about no session",
        Internet,
        &icmp_error(
            FROM_INTERNET,
            ROUTER,
            PUBLIC,
            64,
            PORT_UNREACHABLE,
            &unknown,
        ),
        Drop,
        None,
        &[("drop_nat_icmp_error_no_flow", 1), ("conntrack_created", 0)],
    );
    // From inside: a port unreachable about a reply is translated to the public side.
    let reply_as_received = ipv4(&v4(REMOTE, INSTANCE, 63), udp(53, 5353), PAYLOAD);
    let reply_as_sent = ipv4(&v4(REMOTE, PUBLIC, 63), udp(53, 5353), PAYLOAD);
    send_counted(
        &mut gw,
        "error from inside",
        Vpc,
        &icmp_error(
            FROM_INSTANCE,
            INSTANCE,
            REMOTE,
            64,
            PORT_UNREACHABLE,
            &reply_as_received,
        ),
        Redirect,
        Some(&icmp_error(
            TO_INTERNET,
            PUBLIC,
            REMOTE,
            63,
            PORT_UNREACHABLE,
            &reply_as_sent,
        )),
        &[("nat_icmp_error_translated_outbound", 1)],
    );
    assert_eq!(gw.dataplane.conntrack().expect("conntrack").len(), 6);
}

#[test]
fn fragments_follow_the_first_and_out_of_order_ones_are_dropped() {
    let mut gw = default_gateway();
    use Side::*;
    use Verdict::*;
    let first = |src, ttl, link| {
        eth4(
            link,
            ipv4(
                &v4(src, REMOTE, ttl).fragment(true, 0),
                udp(5353, 53),
                &[0xab; 32],
            ),
        )
    };
    let later = |src, dst, ttl, link| {
        eth4(
            link,
            ipv4(
                &v4(src, dst, ttl).fragment(false, 5),
                L4::Raw(IpNumber::UDP),
                &[0xcd; 24],
            ),
        )
    };
    send(
        &mut gw,
        "first fragment",
        Vpc,
        &first(INSTANCE, 64, FROM_INSTANCE),
        Redirect,
        Some(&first(PUBLIC, 63, TO_INTERNET)),
    );
    send_counted(
        &mut gw,
        "later fragment",
        Vpc,
        &later(INSTANCE, REMOTE, 64, FROM_INSTANCE),
        Redirect,
        Some(&later(PUBLIC, REMOTE, 63, TO_INTERNET)),
        &[("nat_fragment_translated", 1)],
    );
    send_counted(
        &mut gw,
        "later fragment before its first",
        Vpc,
        &later(HOST_B, REMOTE, 64, FROM_INSTANCE),
        Drop,
        None,
        &[("drop_nat_fragment_out_of_order", 1)],
    );
    // Inbound: a fragmented reply.
    let first_in = |dst, ttl, link| {
        eth4(
            link,
            ipv4(
                &v4(REMOTE, dst, ttl).fragment(true, 0),
                udp(53, 5353),
                &[0xab; 32],
            ),
        )
    };
    send(
        &mut gw,
        "first fragment in",
        Internet,
        &first_in(PUBLIC, 64, FROM_INTERNET),
        Redirect,
        Some(&first_in(INSTANCE, 63, TO_HOST)),
    );
    send(
        &mut gw,
        "later fragment in",
        Internet,
        &later(REMOTE, PUBLIC, 64, FROM_INTERNET),
        Redirect,
        Some(&later(REMOTE, INSTANCE, 63, TO_HOST)),
    );
}

#[test]
fn rst_on_idle_timeout() {
    let mut gw = nat_gateway(&nat_config(
        "\"203.0.113.20\"",
        "rst_on_idle_timeout = true",
        "[conntrack]\ntcp_transitory_idle_seconds = 1\n",
    ));
    send(
        &mut gw,
        "SYN",
        Side::Vpc,
        &tcp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 40000, 443),
        Verdict::Redirect,
        None,
    );
    std::thread::sleep(Duration::from_millis(2300));
    // A data packet (ACK) on the timed-out session: a RST comes back.
    let mut ack = Vec::new();
    etherparse::PacketBuilder::ethernet2(INSTANCE_MAC, VPC0_MAC)
        .ipv4(INSTANCE, REMOTE, 64)
        .tcp(40000, 443, 1000, 512)
        .ack(777)
        .write(&mut ack, PAYLOAD)
        .expect("ack");
    let mut rst = Vec::new();
    let builder = etherparse::PacketBuilder::ethernet2(VPC0_MAC, INSTANCE_MAC)
        .ip(etherparse::IpHeaders::Ipv4(
            {
                let mut header =
                    etherparse::Ipv4Header::new(0, 64, IpNumber::TCP, REMOTE, INSTANCE)
                        .expect("ip");
                header.dont_fragment = true;
                header
            },
            Default::default(),
        ))
        .tcp(443, 40000, 777, 0)
        .rst();
    builder.write(&mut rst, &[]).expect("rst");
    send_counted(
        &mut gw,
        "ACK after the timeout",
        Side::Vpc,
        &ack,
        Verdict::Tx,
        Some(&rst),
        &[("nat_rst_on_idle", 1), ("conntrack_created", 0)],
    );
    // A new SYN makes a new session.
    send(
        &mut gw,
        "new SYN",
        Side::Vpc,
        &tcp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 40000, 443),
        Verdict::Redirect,
        None,
    );
}

/// Per-packet cost of the NAT paths (median of single runs minus the empty program's).
/// `cargo test -p gateway-tests --test nat44_packet_tests nat_cost_report -- --nocapture`
#[test]
fn nat_cost_report() {
    const CALLS: usize = 5000;
    let mut gw = default_gateway();
    let empty = EmptyXdp::load();
    let out = udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53);
    let back = udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5353);
    assert_eq!(gw.run(Side::Vpc, &out).verdict, Verdict::Redirect);
    let ctx = xdp_md(gw.ifindex(Side::Vpc), out.len());
    let median = |mut samples: Vec<Duration>| {
        samples.sort_unstable();
        samples[samples.len() / 2].as_nanos() as i128
    };
    let (mut established_out, mut established_in, mut new_flow, mut baseline) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for index in 0..CALLS {
        let outcome = gw.run(Side::Vpc, &out);
        assert_eq!(outcome.verdict, Verdict::Redirect);
        established_out.push(outcome.duration);
        let outcome = gw.run(Side::Internet, &back);
        assert_eq!(outcome.verdict, Verdict::Redirect);
        established_in.push(outcome.duration);
        // A new private port each time: a new mapping and session (port preserved).
        let fresh = udp_frame(FROM_INSTANCE, HOST_B, REMOTE, 64, 10000 + index as u16, 53);
        let outcome = gw.run(Side::Vpc, &fresh);
        assert_eq!(outcome.verdict, Verdict::Redirect);
        new_flow.push(outcome.duration);
        baseline.push(empty.run(&out, &ctx, 1).1);
    }
    let empty_ns = median(baseline);
    eprintln!(
        "\nNAT44 per-packet cost through BPF_PROG_TEST_RUN, median of {CALLS} single runs (ns)"
    );
    eprintln!("empty XDP program                {empty_ns:>6}");
    for (name, samples) in [
        ("established outbound (UDP)", established_out),
        ("established inbound (UDP)", established_in),
        ("new flow (mapping + session)", new_flow),
    ] {
        let value = median(samples);
        eprintln!("{name:<32} {value:>6}  (-empty: {})", value - empty_ns);
    }
}

#[test]
fn controller_sweep_removes_both_halves_and_the_mapping() {
    let mut gw = nat_gateway(&nat_config(
        "\"203.0.113.20\"",
        "",
        "[conntrack]\nudp_idle_seconds = 1\n",
    ));
    send(
        &mut gw,
        "UDP out",
        Side::Vpc,
        &udp_frame(FROM_INSTANCE, INSTANCE, REMOTE, 64, 5353, 53),
        Verdict::Redirect,
        None,
    );
    assert_eq!(gw.dataplane.conntrack().expect("ct").len(), 2);
    std::thread::sleep(Duration::from_millis(2300));
    // The reply after the timeout is refused even before the sweep.
    send_counted(
        &mut gw,
        "late reply",
        Side::Internet,
        &udp_frame(FROM_INTERNET, REMOTE, PUBLIC, 64, 53, 5353),
        Verdict::Drop,
        None,
        &[("drop_nat_unsolicited_udp", 1)],
    );
    let timeouts = gw.dataplane.timeouts().expect("timeouts");
    // Far enough in the future that the mapping's grace period is over too.
    let later = gateway::flowlog_task::monotonic_coarse_ns() + 60_000_000_000;
    let sweep = gw
        .dataplane
        .sweep_conntrack(&timeouts, later)
        .expect("sweep");
    assert_eq!(sweep.nat_idle_timeouts, 1);
    assert_eq!(sweep.mappings_deleted, 1);
    assert!(gw.dataplane.conntrack().expect("ct").is_empty());
}
