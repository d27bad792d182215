//! Packet tests of the NAT gateway's NAT64 (RFC 6146 sessions, RFC 7915 header translation,
//! RFC 6052 addresses) through `BPF_PROG_TEST_RUN`.
//!
//! Like `nat44_packet_tests.rs`, each test is a short story: packets in order, each output
//! compared byte for byte with a frame etherparse built from field values (every checksum
//! computed from scratch), every forwarded frame parsed again by etherparse and its checksums
//! verified, and the counters that name the behaviour checked. Expectations follow the RFCs; where
//! the dataplane deviates, the test fails rather than encode the deviation.
//!
//! The translated IPv4 identification is the translator's choice (RFC 7915 s5.1, random here), so
//! an expected IPv4 frame takes it from the output and is then built (header checksum included)
//! from scratch around it: the comparison covers every other byte.
//!
//! Run as root: `cargo test -p gateway-tests --test nat64_packet_tests`.

#[expect(
    dead_code,
    reason = "helpers shared with packet_tests.rs; this binary uses part of them"
)]
mod packet;

use std::collections::BTreeMap;

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, IpDscp, IpEcn, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Header, Ipv4HeaderSlice, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    Ipv6RawExtHeader, Ipv6RoutingExtensions, NetSlice, PacketBuilder, PacketBuilderStep,
    SlicedPacket, TransportSlice, checksum::Sum16BitWords,
};
use gateway_common::{
    maps::{action, direction, family, target},
    nat64::Nat64Prefix,
};

use crate::packet::{
    frames::*,
    gateway::{Side, TestGateway, Verdict, counter_delta, parse_config},
};

/// The NAT gateway's public address.
const PUBLIC: [u8; 4] = [203, 0, 113, 20];
/// The IPv6 clients (the second one's neighbour entry has the instance's MAC).
const CLIENT: [u8; 16] = INSTANCE6;
const CLIENT_B: [u8; 16] = v6([0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 0x11]);
/// An IPv4-only NAT44 host of the same subnet (its neighbour entry exists in every test gateway).
const NAT44_HOST: [u8; 4] = [10, 0, 1, 11];
/// A router on the IPv4 path that reports errors.
const ROUTER_ON_PATH: [u8; 4] = [192, 0, 2, 1];
/// A global IPv4 address, which the Well-Known Prefix may carry (RFC 6052 s3.1).
const GLOBAL: [u8; 4] = [8, 8, 8, 8];

/// The network-specific prefix most tests use: documentation addresses may be embedded in it.
const NSP: &str = "2001:db8:64::/96";
const WKP: &str = "64:ff9b::/96";

/// `v4` embedded in [`NSP`] (RFC 6052 s2.2, /96: the last four bytes), written out here rather
/// than computed by the code under test.
const fn nsp(v4: [u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = v4;
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, a, b, c, d,
    ]
}

/// The test VPC (10.0.0.0/16 + 2001:db8:1000::/56) whose subnet 10.0.1.0/24 +
/// 2001:db8:1000:1::/64 routes 0.0.0.0/0 and the NAT64 prefix to one NAT gateway with public
/// address 203.0.113.20; `nat_extra` is added to the gateway's table.
fn nat64_config(prefix: &str, nat_extra: &str) -> String {
    format!(
        r#"
[vpc]
id = "vpc-nat64-tests"
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
id = "subnet-private"
ipv4_cidr = "10.0.1.0/24"
ipv6_cidr = "2001:db8:1000:1::/64"
route_table = "rtb-private"

[[route_tables]]
id = "rtb-private"
routes = [
  {{ destination = "0.0.0.0/0", target = "nat-tests" }},
  {{ destination = "{prefix}", target = "nat-tests" }},
]

[[nat_gateways]]
id = "nat-tests"
public_ips = ["203.0.113.20"]
nat64_prefix = "{prefix}"
{nat_extra}
"#
    )
}

fn mac_text(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The gateway with a NAT64 configuration; `extra_setup` are further `ip` commands.
fn nat64_gateway_with(prefix: &str, nat_extra: &str, extra_setup: &[String]) -> TestGateway {
    let mut setup = vec![format!(
        "-6 neigh add 2001:db8:1000:1::11 lladdr {} nud permanent dev vpc0",
        mac_text(INSTANCE_MAC)
    )];
    setup.extend_from_slice(extra_setup);
    TestGateway::with_config(&parse_config(&nat64_config(prefix, nat_extra)), &setup)
}

fn nat64_gateway(prefix: &str) -> TestGateway {
    nat64_gateway_with(prefix, "", &[])
}

// --- Packets, built by etherparse from field values.

/// IPv4 header fields.
#[derive(Clone, Debug)]
struct Ip4 {
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    tos: u8,
    id: u16,
    dont_fragment: bool,
    more_fragments: bool,
    /// In 8-byte units.
    fragment_offset: u16,
    /// A multiple of 4 bytes.
    options: Vec<u8>,
}

fn ip4(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Ip4 {
    Ip4 {
        src,
        dst,
        ttl,
        tos: 0,
        id: 0x4242,
        dont_fragment: false,
        more_fragments: false,
        fragment_offset: 0,
        options: Vec::new(),
    }
}

impl Ip4 {
    fn tos(self, tos: u8) -> Ip4 {
        Ip4 { tos, ..self }
    }
    fn id(self, id: u16) -> Ip4 {
        Ip4 { id, ..self }
    }
    fn df(self, dont_fragment: bool) -> Ip4 {
        Ip4 {
            dont_fragment,
            ..self
        }
    }
    fn options(self, options: &[u8]) -> Ip4 {
        Ip4 {
            options: options.to_vec(),
            ..self
        }
    }
    fn fragment(self, more_fragments: bool, fragment_offset: u16) -> Ip4 {
        Ip4 {
            more_fragments,
            fragment_offset,
            ..self
        }
    }

    fn header(&self, protocol: IpNumber) -> Ipv4Header {
        let mut header = Ipv4Header::new(0, self.ttl, protocol, self.src, self.dst)
            .unwrap_or_else(|error| panic!("IPv4 header: {error}"));
        header.dscp = IpDscp::try_new(self.tos >> 2).expect("DSCP has 6 bits");
        header.ecn = IpEcn::try_new(self.tos & 3).expect("ECN has 2 bits");
        header.identification = self.id;
        header.dont_fragment = self.dont_fragment;
        header.more_fragments = self.more_fragments;
        header.fragment_offset =
            IpFragOffset::try_new(self.fragment_offset).expect("fragment offset has 13 bits");
        header.options = Ipv4Options::try_from(&self.options[..]).expect("IPv4 options");
        header
    }
}

/// IPv6 header fields, extension headers included.
#[derive(Clone, Debug)]
struct Ip6 {
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    traffic_class: u8,
    flow_label: u32,
    extensions: Ipv6Extensions,
}

fn ip6(src: [u8; 16], dst: [u8; 16], hop_limit: u8) -> Ip6 {
    Ip6 {
        src,
        dst,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
        extensions: Ipv6Extensions::default(),
    }
}

impl Ip6 {
    fn class_and_label(self, traffic_class: u8, flow_label: u32) -> Ip6 {
        Ip6 {
            traffic_class,
            flow_label,
            ..self
        }
    }
    fn extensions(self, extensions: Ipv6Extensions) -> Ip6 {
        Ip6 { extensions, ..self }
    }

    fn headers(&self) -> IpHeaders {
        IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: self.traffic_class,
                flow_label: Ipv6FlowLabel::try_new(self.flow_label).expect("20-bit flow label"),
                hop_limit: self.hop_limit,
                source: self.src,
                destination: self.dst,
                ..Ipv6Header::default()
            },
            self.extensions.clone(),
        )
    }
}

/// The upper layer of a built packet.
#[derive(Clone, Debug)]
enum Upper {
    Udp(u16, u16),
    /// A TCP SYN.
    Syn(u16, u16),
    /// A TCP SYN-ACK.
    SynAck(u16, u16),
    /// A TCP segment with ACK and PSH (data).
    Data(u16, u16),
    /// ICMP or ICMPv6 echo request / reply with this identifier, sequence 1.
    EchoRequest(u16),
    EchoReply(u16),
    /// Any ICMP message: type, code and bytes 5-8.
    Icmp(u8, u8, [u8; 4]),
}

const TCP_ACK_NUMBER: u32 = 0x0a0b_0c0d;
const TCP_WINDOW: u16 = 64240;

fn write_upper(
    builder: PacketBuilderStep<IpHeaders>,
    upper: &Upper,
    payload: &[u8],
    ipv6: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let echo = |id| IcmpEchoHeader { id, seq: 1 };
    let written = match *upper {
        Upper::Udp(sport, dport) => builder.udp(sport, dport).write(&mut out, payload),
        Upper::Syn(sport, dport) => builder
            .tcp(sport, dport, TCP_SEQUENCE, TCP_WINDOW)
            .syn()
            .write(&mut out, payload),
        Upper::SynAck(sport, dport) => builder
            .tcp(sport, dport, TCP_SEQUENCE, TCP_WINDOW)
            .syn()
            .ack(TCP_ACK_NUMBER)
            .write(&mut out, payload),
        Upper::Data(sport, dport) => builder
            .tcp(sport, dport, TCP_SEQUENCE + 1, TCP_WINDOW)
            .ack(TCP_ACK_NUMBER)
            .psh()
            .write(&mut out, payload),
        Upper::EchoRequest(id) if ipv6 => builder
            .icmpv6(Icmpv6Type::EchoRequest(echo(id)))
            .write(&mut out, payload),
        Upper::EchoReply(id) if ipv6 => builder
            .icmpv6(Icmpv6Type::EchoReply(echo(id)))
            .write(&mut out, payload),
        Upper::EchoRequest(id) => builder
            .icmpv4(Icmpv4Type::EchoRequest(echo(id)))
            .write(&mut out, payload),
        Upper::EchoReply(id) => builder
            .icmpv4(Icmpv4Type::EchoReply(echo(id)))
            .write(&mut out, payload),
        Upper::Icmp(type_u8, code_u8, bytes5to8) if ipv6 => builder
            .icmpv6(Icmpv6Type::Unknown {
                type_u8,
                code_u8,
                bytes5to8,
            })
            .write(&mut out, payload),
        Upper::Icmp(type_u8, code_u8, bytes5to8) => builder
            .icmpv4(Icmpv4Type::Unknown {
                type_u8,
                code_u8,
                bytes5to8,
            })
            .write(&mut out, payload),
    };
    written.unwrap_or_else(|error| panic!("building {upper:?}: {error}"));
    out
}

fn protocol4(upper: &Upper) -> IpNumber {
    match upper {
        Upper::Udp(..) => IpNumber::UDP,
        Upper::Syn(..) | Upper::SynAck(..) | Upper::Data(..) => IpNumber::TCP,
        _ => IpNumber::ICMP,
    }
}

/// An IPv4 packet (no link layer).
fn packet4(ip: &Ip4, upper: Upper, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ip(IpHeaders::Ipv4(
        ip.header(protocol4(&upper)),
        Default::default(),
    ));
    write_upper(builder, &upper, payload, false)
}

/// An IPv6 packet (no link layer).
fn packet6(ip: &Ip6, upper: Upper, payload: &[u8]) -> Vec<u8> {
    write_upper(PacketBuilder::ip(ip.headers()), &upper, payload, true)
}

/// ICMP type, code and the 32-bit field after the checksum (MTU, pointer, or unused).
fn icmp(type_u8: u8, code_u8: u8, rest: u32) -> Upper {
    Upper::Icmp(type_u8, code_u8, rest.to_be_bytes())
}

/// ICMPv4 Parameter Problem pointer: the first byte of the field.
fn icmp4_pointer(code: u8, pointer: u8) -> Upper {
    Upper::Icmp(12, code, [pointer, 0, 0, 0])
}

/// The IPv4 identification of an untagged frame (whatever the translator chose).
fn ipv4_id(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[18], frame[19]])
}

/// Offset of the UDP/TCP/ICMP checksum in an untagged frame with a bare IPv4 or IPv6 header.
fn checksum_offset(upper: &Upper, ipv6: bool) -> usize {
    let l4 = if ipv6 { 14 + 40 } else { 14 + 20 };
    l4 + match upper {
        Upper::Udp(..) => 6,
        Upper::Syn(..) | Upper::SynAck(..) | Upper::Data(..) => 16,
        _ => 2,
    }
}

// --- Checks.

/// Every checksum of an output frame, verified by etherparse independently of the expected
/// frame: the IPv4 header, the transport (TCP, UDP, ICMP over the message, ICMPv6 over the
/// pseudo-header and message) and, in an ICMPv4 error, the quoted IPv4 header. A fragment's
/// transport checksum covers the whole datagram: the fragment tests check it reassembled. An
/// IPv6 fragment is not handed to etherparse at all, which reads the Fragment header in the IPv4
/// layout (see [`Frag6`]).
fn assert_checksums_valid(what: &str, frame: &[u8]) {
    if frame.len() > 20 && frame[12..14] == [0x86, 0xdd] && frame[20] == 44 {
        return;
    }
    let sliced = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|error| panic!("{what}: etherparse cannot parse the output: {error}"));
    match (&sliced.net, &sliced.transport) {
        (Some(NetSlice::Ipv4(ip)), transport) => {
            let header = ip.header().to_header();
            assert_eq!(
                header.header_checksum,
                header.calc_header_checksum(),
                "{what}: IPv4 header checksum"
            );
            match transport {
                Some(TransportSlice::Tcp(tcp)) => assert_eq!(
                    tcp.checksum(),
                    tcp.calc_checksum_ipv4(header.source, header.destination)
                        .expect("TCP length"),
                    "{what}: TCP checksum"
                ),
                Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => assert_eq!(
                    udp.checksum(),
                    udp.to_header()
                        .calc_checksum_ipv4(&header, udp.payload())
                        .expect("UDP length"),
                    "{what}: UDP checksum"
                ),
                Some(TransportSlice::Icmpv4(icmp)) => {
                    assert_eq!(
                        Sum16BitWords::new()
                            .add_slice(icmp.slice())
                            .ones_complement(),
                        0,
                        "{what}: ICMP checksum over the message"
                    );
                    let body = &icmp.slice()[8..];
                    if matches!(icmp.slice()[0], 3 | 11 | 12) && body.len() >= 20 {
                        let quoted = Ipv4HeaderSlice::from_slice(body)
                            .unwrap_or_else(|error| panic!("{what}: quoted IPv4 header: {error}"))
                            .to_header();
                        assert_eq!(
                            quoted.header_checksum,
                            quoted.calc_header_checksum(),
                            "{what}: quoted IPv4 header checksum"
                        );
                    }
                }
                _ => {}
            }
        }
        (Some(NetSlice::Ipv6(ip)), transport) => {
            let header = ip.header().to_header();
            match transport {
                Some(TransportSlice::Tcp(tcp)) => assert_eq!(
                    tcp.checksum(),
                    tcp.calc_checksum_ipv6(header.source, header.destination)
                        .expect("TCP length"),
                    "{what}: TCP checksum"
                ),
                Some(TransportSlice::Udp(udp)) => assert_eq!(
                    udp.checksum(),
                    udp.to_header()
                        .calc_checksum_ipv6(&header, udp.payload())
                        .expect("UDP length"),
                    "{what}: UDP checksum (never 0 over IPv6)"
                ),
                Some(TransportSlice::Icmpv6(icmp)) => assert!(
                    icmp.is_checksum_valid(header.source, header.destination),
                    "{what}: ICMPv6 checksum"
                ),
                _ => {}
            }
        }
        _ => panic!("{what}: not an IP frame"),
    }
}

/// Counters whose movement is a verdict: every one that moved must be expected.
fn is_verdict_counter(name: &str) -> bool {
    ["forward_", "drop_", "pass_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Runs one packet, checks the verdict and the counters: each listed one moved by exactly its
/// amount, and no unlisted verdict counter (`forward_*`, `drop_*`, `pass_*`) moved. A forwarded
/// frame is parsed by etherparse and its checksums verified. Returns the output frame.
fn send(
    gateway: &mut TestGateway,
    what: &str,
    side: Side,
    input: &[u8],
    verdict: Verdict,
    counters: &[(&str, u64)],
) -> Vec<u8> {
    let output = send_unverified(gateway, what, side, input, verdict, counters);
    if matches!(verdict, Verdict::Redirect | Verdict::Tx | Verdict::Pass) && output != input {
        assert_checksums_valid(what, &output);
    }
    output
}

/// [`send`] without the checksum verification, for packets sent with a wrong checksum on purpose.
fn send_unverified(
    gateway: &mut TestGateway,
    what: &str,
    side: Side,
    input: &[u8],
    verdict: Verdict,
    counters: &[(&str, u64)],
) -> Vec<u8> {
    let before = gateway.counters();
    let outcome = gateway.run(side, input);
    let delta = counter_delta(&before, &gateway.counters());
    assert_eq!(
        outcome.verdict, verdict,
        "{what}: verdict (counters moved: {delta:?})"
    );
    check_counters(what, &delta, counters);
    outcome.frame
}

fn check_counters(what: &str, delta: &BTreeMap<&'static str, u64>, counters: &[(&str, u64)]) {
    for (name, moved) in counters {
        assert_eq!(
            delta.get(name).copied().unwrap_or(0),
            *moved,
            "{what}: counter {name} (all moved: {delta:?})"
        );
    }
    for (name, moved) in delta {
        assert!(
            !is_verdict_counter(name) || counters.iter().any(|(listed, _)| listed == name),
            "{what}: counter {name} moved by {moved} unexpectedly (all moved: {delta:?})"
        );
    }
}

fn assert_frame(what: &str, expected: &[u8], actual: &[u8]) {
    assert!(
        actual == expected,
        "{what}: output frame\n{}",
        hex_diff(expected, actual)
    );
}

/// Sends and compares the output with `expected` byte for byte.
fn expect_frame(
    gateway: &mut TestGateway,
    what: &str,
    side: Side,
    input: &[u8],
    expected: &[u8],
    counters: &[(&str, u64)],
) -> Vec<u8> {
    let output = send(gateway, what, side, input, Verdict::Redirect, counters);
    assert_frame(what, expected, &output);
    output
}

/// Sends an IPv6 packet that must leave as IPv4: `expected` builds the IPv4 packet for the
/// identification the translator chose, which must also be the output's.
fn expect_ipv4_out(
    gateway: &mut TestGateway,
    what: &str,
    input: &[u8],
    expected: impl Fn(u16) -> Vec<u8>,
    counters: &[(&str, u64)],
) -> Vec<u8> {
    let output = send(gateway, what, Side::Vpc, input, Verdict::Redirect, counters);
    assert!(
        output.len() >= 34,
        "{what}: output too short: {output:02x?}"
    );
    assert_frame(
        what,
        &eth4(TO_INTERNET, expected(ipv4_id(&output))),
        &output,
    );
    output
}

/// Sends a frame that must be dropped, counted by `counter` (and no other verdict counter).
fn expect_drop(gateway: &mut TestGateway, what: &str, side: Side, input: &[u8], counter: &str) {
    send(gateway, what, side, input, Verdict::Drop, &[(counter, 1)]);
}

/// Runs `check` on every row, each under `catch_unwind`, then fails with all the rows that
/// failed: one dataplane bug must not hide the rows after it.
fn check_every_row<T>(table: &str, rows: Vec<T>, mut check: impl FnMut(T)) {
    let count = rows.len();
    let mut failures = Vec::new();
    for row in rows {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(row)));
        if let Err(panic) = result {
            failures.push(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "(panic without a message)".into()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the {count} {table} rows failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

const OUTBOUND: &[(&str, u64)] = &[("forward_nat64_outbound", 1)];
const INBOUND: &[(&str, u64)] = &[("forward_nat64_inbound", 1)];

/// The client's UDP datagram to `remote` through the NSP.
fn udp_out(client: [u8; 16], remote: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    eth6(
        FROM_INSTANCE,
        packet6(
            &ip6(client, nsp(remote), 64),
            Upper::Udp(sport, dport),
            PAYLOAD,
        ),
    )
}

/// The IPv4 reply from `remote` to the public endpoint.
fn udp_in(remote: [u8; 4], sport: u16, public_port: u16) -> Vec<u8> {
    eth4(
        FROM_INTERNET,
        packet4(
            &ip4(remote, PUBLIC, 64).df(true),
            Upper::Udp(sport, public_port),
            PAYLOAD,
        ),
    )
}

/// The reply as the client receives it.
fn udp_to_client(client: [u8; 16], remote: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    eth6(
        TO_INSTANCE,
        packet6(
            &ip6(nsp(remote), client, 63),
            Upper::Udp(sport, dport),
            PAYLOAD,
        ),
    )
}

/// The client's datagram as it leaves: from the public endpoint, TTL decremented once.
fn udp_from_public(public_port: u16, remote: [u8; 4], dport: u16, id: u16) -> Vec<u8> {
    packet4(
        &ip4(PUBLIC, remote, 63).id(id),
        Upper::Udp(public_port, dport),
        PAYLOAD,
    )
}

// --- IPv6 -> IPv4 and back: TCP, UDP, ICMP echo.

#[test]
fn udp_is_translated_both_ways_with_tos_ttl_and_flow_label() {
    let mut gw = nat64_gateway(NSP);
    // Traffic class EF (DSCP 46) and a flow label: the TOS carries the class (RFC 7915 s5.1),
    // the label has no IPv4 counterpart.
    let input = eth6(
        FROM_INSTANCE,
        packet6(
            &ip6(CLIENT, nsp(REMOTE), 64).class_and_label(0xb8, 0x12345),
            Upper::Udp(5353, 53),
            PAYLOAD,
        ),
    );
    expect_ipv4_out(
        &mut gw,
        "UDP out",
        &input,
        |id| {
            packet4(
                &ip4(PUBLIC, REMOTE, 63).tos(0xb8).id(id),
                Upper::Udp(5353, 53),
                PAYLOAD,
            )
        },
        &[
            ("forward_nat64_outbound", 1),
            ("nat_connection_attempt", 1),
            ("nat_mapping_created", 1),
            ("nat_port_preserved", 1),
            ("nat_packets_in_from_source", 1),
            ("nat_packets_out_to_destination", 1),
        ],
    );
    // The reply: TOS 0x28 becomes the traffic class, the flow label is 0, the hop limit the TTL
    // minus one (RFC 7915 s4.1), the source the remote inside the prefix (RFC 6052).
    let reply = eth4(
        FROM_INTERNET,
        packet4(
            &ip4(REMOTE, PUBLIC, 64).tos(0x28).df(true),
            Upper::Udp(53, 5353),
            PAYLOAD,
        ),
    );
    expect_frame(
        &mut gw,
        "UDP reply",
        Side::Internet,
        &reply,
        &eth6(
            TO_INSTANCE,
            packet6(
                &ip6(nsp(REMOTE), CLIENT, 63).class_and_label(0x28, 0),
                Upper::Udp(53, 5353),
                PAYLOAD,
            ),
        ),
        &[
            ("forward_nat64_inbound", 1),
            ("nat_packets_in_from_destination", 1),
            ("nat_packets_out_to_source", 1),
        ],
    );
    // One session: the NAT64 inside half and the shared outside half.
    assert_eq!(gw.dataplane.conntrack().expect("conntrack").len(), 2);
    // A second datagram uses the same session.
    expect_ipv4_out(
        &mut gw,
        "UDP again",
        &udp_out(CLIENT, REMOTE, 5353, 53),
        |id| udp_from_public(5353, REMOTE, 53, id),
        &[("forward_nat64_outbound", 1), ("nat_connection_attempt", 0)],
    );
    // The identification is the translator's to choose (RFC 7915 s5.1); it is random, not fixed.
    let identifications: std::collections::BTreeSet<u16> = (0..8)
        .map(|_| {
            let output = send(
                &mut gw,
                "UDP for its identification",
                Side::Vpc,
                &udp_out(CLIENT, REMOTE, 5353, 53),
                Verdict::Redirect,
                OUTBOUND,
            );
            ipv4_id(&output)
        })
        .collect();
    assert!(
        identifications.len() > 1,
        "8 translated packets, identifications {identifications:?}"
    );
    // A reply with TTL 1 expires here: the kernel answers it with Time Exceeded, untranslated.
    let expiring = eth4(
        FROM_INTERNET,
        packet4(&ip4(REMOTE, PUBLIC, 1), Upper::Udp(53, 5353), PAYLOAD),
    );
    let output = send(
        &mut gw,
        "reply with TTL 1",
        Side::Internet,
        &expiring,
        Verdict::Pass,
        &[("pass_ttl_expired", 1)],
    );
    assert_frame("reply with TTL 1", &expiring, &output);
}

/// A TCP segment from the client to REMOTE through the prefix, as sent.
fn tcp_out(upper: Upper) -> Vec<u8> {
    eth6(
        FROM_INSTANCE,
        packet6(&ip6(CLIENT, nsp(REMOTE), 64), upper, PAYLOAD),
    )
}

/// [`tcp_out`] as it leaves, translated (the IPv4 identification is the gateway's).
fn tcp_sent(upper: Upper, id: u16) -> Vec<u8> {
    packet4(&ip4(PUBLIC, REMOTE, 63).id(id), upper, PAYLOAD)
}

/// A TCP segment from REMOTE to the public address, as sent.
fn tcp_back(upper: Upper) -> Vec<u8> {
    eth4(
        FROM_INTERNET,
        packet4(&ip4(REMOTE, PUBLIC, 64).df(true), upper, PAYLOAD),
    )
}

/// [`tcp_back`] as the client receives it.
fn tcp_received(upper: Upper) -> Vec<u8> {
    eth6(
        TO_INSTANCE,
        packet6(&ip6(nsp(REMOTE), CLIENT, 63), upper, PAYLOAD),
    )
}

#[test]
fn tcp_syn_then_data_both_ways() {
    let mut gw = nat64_gateway(NSP);
    let (out, sent, back, received) = (tcp_out, tcp_sent, tcp_back, tcp_received);
    expect_ipv4_out(
        &mut gw,
        "SYN",
        &out(Upper::Syn(40000, 443)),
        |id| sent(Upper::Syn(40000, 443), id),
        &[
            ("forward_nat64_outbound", 1),
            ("nat_connection_attempt", 1),
            ("nat_connection_established", 0),
        ],
    );
    expect_frame(
        &mut gw,
        "SYN-ACK",
        Side::Internet,
        &back(Upper::SynAck(443, 40000)),
        &received(Upper::SynAck(443, 40000)),
        &[
            ("forward_nat64_inbound", 1),
            ("nat_connection_established", 1),
        ],
    );
    expect_ipv4_out(
        &mut gw,
        "data out",
        &out(Upper::Data(40000, 443)),
        |id| sent(Upper::Data(40000, 443), id),
        &[("forward_nat64_outbound", 1), ("nat_connection_attempt", 0)],
    );
    expect_frame(
        &mut gw,
        "data in",
        Side::Internet,
        &back(Upper::Data(443, 40000)),
        &received(Upper::Data(443, 40000)),
        INBOUND,
    );
}

/// RFC 6146 s3.5.2 and RFC 5382 REQ-2: a simultaneous open works through NAT64. The IPv4 peer's
/// bare SYN is unsolicited (and dropped silently) before the client's SYN made the session, and
/// answers it afterwards: the session is established by the two SYNs crossing.
#[test]
fn tcp_simultaneous_open_through_nat64() {
    let mut gw = nat64_gateway(NSP);
    let (out, sent, back, received) = (tcp_out, tcp_sent, tcp_back, tcp_received);
    expect_drop(
        &mut gw,
        "the peer's SYN before any session",
        Side::Internet,
        &back(Upper::Syn(5000, 40000)),
        "drop_nat_unsolicited_tcp_syn",
    );
    expect_ipv4_out(
        &mut gw,
        "the client's SYN",
        &out(Upper::Syn(40000, 5000)),
        |id| sent(Upper::Syn(40000, 5000), id),
        &[
            ("forward_nat64_outbound", 1),
            ("nat_connection_attempt", 1),
            ("nat_connection_established", 0),
        ],
    );
    expect_frame(
        &mut gw,
        "the peer's SYN, crossing",
        Side::Internet,
        &back(Upper::Syn(5000, 40000)),
        &received(Upper::Syn(5000, 40000)),
        &[
            ("forward_nat64_inbound", 1),
            ("nat_connection_established", 1),
        ],
    );
    expect_ipv4_out(
        &mut gw,
        "the client's SYN-ACK",
        &out(Upper::SynAck(40000, 5000)),
        |id| sent(Upper::SynAck(40000, 5000), id),
        &[("forward_nat64_outbound", 1), ("nat_connection_attempt", 0)],
    );
    expect_frame(
        &mut gw,
        "the peer's SYN-ACK",
        Side::Internet,
        &back(Upper::SynAck(5000, 40000)),
        &received(Upper::SynAck(5000, 40000)),
        &[
            ("forward_nat64_inbound", 1),
            ("nat_connection_established", 0),
        ],
    );
    expect_frame(
        &mut gw,
        "data in",
        Side::Internet,
        &back(Upper::Data(5000, 40000)),
        &received(Upper::Data(5000, 40000)),
        INBOUND,
    );
}

#[test]
fn icmpv6_echo_becomes_icmp_echo_with_the_identifier_mapped() {
    let mut gw = nat64_gateway(NSP);
    let request = |id| {
        eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64),
                Upper::EchoRequest(id),
                PAYLOAD,
            ),
        )
    };
    let reply = |id| {
        eth4(
            FROM_INTERNET,
            packet4(
                &ip4(REMOTE, PUBLIC, 64).df(true),
                Upper::EchoReply(id),
                PAYLOAD,
            ),
        )
    };
    let reply_received = |id| {
        eth6(
            TO_INSTANCE,
            packet6(&ip6(nsp(REMOTE), CLIENT, 63), Upper::EchoReply(id), PAYLOAD),
        )
    };
    // Identifier 7 is below the port range: the session gets one in the range.
    let output = send(
        &mut gw,
        "echo request id 7",
        Side::Vpc,
        &request(7),
        Verdict::Redirect,
        OUTBOUND,
    );
    let mapped = u16::from_be_bytes([output[14 + 24], output[14 + 25]]);
    assert!(mapped >= 1024, "identifier {mapped} in the port range");
    assert_frame(
        "echo request id 7",
        &eth4(
            TO_INTERNET,
            packet4(
                &ip4(PUBLIC, REMOTE, 63).id(ipv4_id(&output)),
                Upper::EchoRequest(mapped),
                PAYLOAD,
            ),
        ),
        &output,
    );
    expect_frame(
        &mut gw,
        "echo reply to the mapped identifier",
        Side::Internet,
        &reply(mapped),
        &reply_received(7),
        INBOUND,
    );
    // An identifier in the range and free is kept.
    expect_ipv4_out(
        &mut gw,
        "echo request id 4000",
        &request(4000),
        |id| {
            packet4(
                &ip4(PUBLIC, REMOTE, 63).id(id),
                Upper::EchoRequest(4000),
                PAYLOAD,
            )
        },
        &[("forward_nat64_outbound", 1), ("nat_port_preserved", 1)],
    );
    expect_frame(
        &mut gw,
        "echo reply 4000",
        Side::Internet,
        &reply(4000),
        &reply_received(4000),
        INBOUND,
    );
}

#[test]
fn df_is_clear_up_to_1260_translated_bytes_and_set_above() {
    let mut gw = nat64_gateway(NSP);
    // UDP payload so that the IPv4 packet is 20 + 8 + payload bytes long.
    for (ipv4_length, dont_fragment) in [(1260usize, false), (1261, true)] {
        let payload = vec![0x5a; ipv4_length - 28];
        let input = eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64),
                Upper::Udp(5353, 53),
                &payload,
            ),
        );
        expect_ipv4_out(
            &mut gw,
            &format!("{ipv4_length} bytes translated"),
            &input,
            |id| {
                packet4(
                    &ip4(PUBLIC, REMOTE, 63).id(id).df(dont_fragment),
                    Upper::Udp(5353, 53),
                    &payload,
                )
            },
            OUTBOUND,
        );
    }
}

#[test]
fn wrong_transport_checksums_stay_wrong_by_the_same_amount() {
    const DELTA: u16 = 0x1111;
    let mut gw = nat64_gateway(NSP);
    // Sessions first, with correct checksums.
    for upper in [Upper::Udp(5353, 53), Upper::Syn(40000, 443)] {
        send(
            &mut gw,
            "session",
            Side::Vpc,
            &eth6(
                FROM_INSTANCE,
                packet6(&ip6(CLIENT, nsp(REMOTE), 64), upper, PAYLOAD),
            ),
            Verdict::Redirect,
            OUTBOUND,
        );
    }
    send(
        &mut gw,
        "SYN-ACK",
        Side::Internet,
        &eth4(
            FROM_INTERNET,
            packet4(&ip4(REMOTE, PUBLIC, 64), Upper::SynAck(443, 40000), PAYLOAD),
        ),
        Verdict::Redirect,
        INBOUND,
    );
    // The public ports equal the private ones (preserved), so each packet keeps its upper layer.
    for upper in [
        Upper::Udp(5353, 53),
        Upper::Data(40000, 443),
        Upper::EchoRequest(4000),
    ] {
        let what = format!("{upper:?} out with its checksum off by {DELTA:#x}");
        let mut input = eth6(
            FROM_INSTANCE,
            packet6(&ip6(CLIENT, nsp(REMOTE), 64), upper.clone(), PAYLOAD),
        );
        add_to_field(&mut input, checksum_offset(&upper, true), DELTA);
        let output = send_unverified(
            &mut gw,
            &what,
            Side::Vpc,
            &input,
            Verdict::Redirect,
            OUTBOUND,
        );
        let mut expected = eth4(
            TO_INTERNET,
            packet4(
                &ip4(PUBLIC, REMOTE, 63).id(ipv4_id(&output)),
                upper.clone(),
                PAYLOAD,
            ),
        );
        add_to_field(&mut expected, checksum_offset(&upper, false), DELTA);
        assert_frame(&what, &expected, &output);
    }
    for upper in [
        Upper::Udp(53, 5353),
        Upper::Data(443, 40000),
        Upper::EchoReply(4000),
    ] {
        let what = format!("{upper:?} in with its checksum off by {DELTA:#x}");
        let mut input = eth4(
            FROM_INTERNET,
            packet4(&ip4(REMOTE, PUBLIC, 64).df(true), upper.clone(), PAYLOAD),
        );
        add_to_field(&mut input, checksum_offset(&upper, false), DELTA);
        let mut expected = eth6(
            TO_INSTANCE,
            packet6(&ip6(nsp(REMOTE), CLIENT, 63), upper.clone(), PAYLOAD),
        );
        add_to_field(&mut expected, checksum_offset(&upper, true), DELTA);
        let output = send_unverified(
            &mut gw,
            &what,
            Side::Internet,
            &input,
            Verdict::Redirect,
            INBOUND,
        );
        assert_frame(&what, &expected, &output);
    }
}

#[test]
fn udp_without_checksum_from_ipv4_gets_one_or_is_dropped() {
    let mut gw = nat64_gateway(NSP);
    send(
        &mut gw,
        "session",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    let mut no_checksum = udp_in(REMOTE, 53, 5353);
    no_checksum[14 + 20 + 6..14 + 20 + 8].fill(0);
    expect_frame(
        &mut gw,
        "UDP reply without a checksum",
        Side::Internet,
        &no_checksum,
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        &[
            ("forward_nat64_inbound", 1),
            ("nat64_udp_checksum_computed", 1),
        ],
    );

    let mut gw = nat64_gateway_with(NSP, "nat64_udp_zero_checksum = \"drop\"", &[]);
    send(
        &mut gw,
        "session",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    expect_drop(
        &mut gw,
        "UDP reply without a checksum, configured to drop",
        Side::Internet,
        &no_checksum,
        "drop_nat64_udp_zero_checksum",
    );
    expect_frame(
        &mut gw,
        "UDP reply with a checksum",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        INBOUND,
    );
}

// --- IPv4 options, IPv6 extension headers, fragments.

#[test]
fn ipv4_options_are_removed_and_only_unexpired_source_routes_dropped() {
    let mut gw = nat64_gateway(NSP);
    send(
        &mut gw,
        "session",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    let hop = ROUTER_ON_PATH;
    // Record Route with room for one address (type 7, length 7, pointer 4), then End of Options.
    let record_route = [7, 7, 4, 0, 0, 0, 0, 0];
    let nop_padding = [1, 1, 1, 0];
    // Loose (131) and strict (137) source routes with one address: pointer 4 points at it
    // (unexpired), pointer 8 is past the option's 7 bytes (used up).
    let lsrr = |pointer| [131, 7, pointer, hop[0], hop[1], hop[2], hop[3], 0];
    let ssrr = |pointer| [137, 7, pointer, hop[0], hop[1], hop[2], hop[3], 0];
    let with_options = |options: &[u8]| {
        eth4(
            FROM_INTERNET,
            packet4(
                &ip4(REMOTE, PUBLIC, 64).df(true).options(options),
                Upper::Udp(53, 5353),
                PAYLOAD,
            ),
        )
    };
    let translated = udp_to_client(CLIENT, REMOTE, 53, 5353);
    for (what, options) in [
        ("Record Route", &record_route[..]),
        ("NOP padding and End of Options", &nop_padding[..]),
        ("used-up loose source route", &lsrr(8)[..]),
        ("used-up strict source route", &ssrr(8)[..]),
    ] {
        expect_frame(
            &mut gw,
            what,
            Side::Internet,
            &with_options(options),
            &translated,
            INBOUND,
        );
    }
    for (what, options) in [
        ("unexpired loose source route", lsrr(4)),
        ("unexpired strict source route", ssrr(4)),
    ] {
        expect_drop(
            &mut gw,
            what,
            Side::Internet,
            &with_options(&options),
            "drop_nat64_source_route",
        );
    }
}

/// A Hop-by-Hop or Destination Options header with one PadN option (8 bytes in all).
fn padding_options(next: IpNumber) -> Ipv6RawExtHeader {
    Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0])
        .unwrap_or_else(|error| panic!("options header: {error}"))
}

/// A Routing header of type 0 with `segments_left` and one address.
fn routing_header(next: IpNumber, segments_left: u8) -> Ipv6RoutingExtensions {
    let mut data = vec![0, segments_left, 0, 0, 0, 0];
    data.extend_from_slice(&nsp(REMOTE));
    Ipv6RoutingExtensions {
        routing: Ipv6RawExtHeader::new_raw(next, &data)
            .unwrap_or_else(|error| panic!("routing header: {error}")),
        final_destination_options: None,
    }
}

/// The fields of an IPv6 fragment train. Its packets' Fragment header is written by hand:
/// etherparse 0.19 writes the M flag and offset in the IPv4 layout (JulianSchmid/etherparse#150);
/// RFC 8200 s4.5 has `offset << 3 | M`.
#[derive(Clone, Copy)]
struct Frag6 {
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    id: u32,
    next: IpNumber,
}

impl Frag6 {
    /// One fragment: `offset` in 8-byte units.
    fn packet(&self, (offset, more_fragments): (u16, bool), body: &[u8]) -> Vec<u8> {
        let mut packet = Ipv6Header {
            payload_length: (8 + body.len()) as u16,
            next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
            hop_limit: self.hop_limit,
            source: self.src,
            destination: self.dst,
            ..Ipv6Header::default()
        }
        .to_bytes()
        .to_vec();
        packet.extend_from_slice(&[self.next.0, 0]);
        packet.extend_from_slice(&((offset << 3) | u16::from(more_fragments)).to_be_bytes());
        packet.extend_from_slice(&self.id.to_be_bytes());
        packet.extend_from_slice(body);
        packet
    }
}

/// An IPv4 fragment: `ip` (its identification, MF and offset) around `body`, a piece of the
/// datagram's transport bytes, with the header checksum computed.
fn fragment4(ip: &Ip4, protocol: IpNumber, body: &[u8]) -> Vec<u8> {
    let mut header = ip.header(protocol);
    header.set_payload_len(body.len()).expect("fragment length");
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(body);
    packet
}

/// A UDP datagram's checksum verified over the reassembled datagram and its pseudo-header
/// (RFC 768; RFC 8200 s8.1 for IPv6): the one's complement sum of it all must be 0xffff.
fn assert_udp_checksum(what: &str, src: &[u8], dst: &[u8], udp: &[u8]) {
    assert_ne!(
        u16::from_be_bytes([udp[6], udp[7]]),
        0,
        "{what}: the UDP checksum is present"
    );
    assert_transport_checksum(what, IpNumber::UDP, src, dst, udp);
}

/// Like [`assert_udp_checksum`] for any transport whose checksum covers the pseudo-header.
fn assert_transport_checksum(
    what: &str,
    protocol: IpNumber,
    src: &[u8],
    dst: &[u8],
    transport: &[u8],
) {
    let sum = Sum16BitWords::new()
        .add_slice(src)
        .add_slice(dst)
        .add_2bytes([0, protocol.0])
        .add_2bytes((transport.len() as u16).to_be_bytes())
        .add_slice(transport);
    assert_eq!(
        sum.ones_complement(),
        0,
        "{what}: transport checksum of the datagram"
    );
}

/// The transport bytes of a train of untagged output frames put back together by offset, with
/// each fragment's identification (as the frames carry it).
fn reassemble(what: &str, frames: &[Vec<u8>]) -> (Vec<u8>, Vec<u32>) {
    let mut pieces = Vec::new();
    let mut ids = Vec::new();
    for frame in frames {
        let packet = &frame[14..];
        let (offset, id, body) = if packet[0] >> 4 == 4 {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let offset = usize::from(u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff) * 8;
            let id = u32::from(u16::from_be_bytes([packet[4], packet[5]]));
            (offset, id, &packet[ihl..total])
        } else {
            assert_eq!(
                packet[6], 44,
                "{what}: a Fragment header follows the IPv6 header"
            );
            let field = u16::from_be_bytes([packet[42], packet[43]]);
            let id = u32::from_be_bytes([packet[44], packet[45], packet[46], packet[47]]);
            (usize::from(field >> 3) * 8, id, &packet[48..])
        };
        pieces.push((offset, body.to_vec()));
        ids.push(id);
    }
    pieces.sort();
    let mut datagram = Vec::new();
    for (offset, body) in pieces {
        assert_eq!(offset, datagram.len(), "{what}: fragments leave no gap");
        datagram.extend_from_slice(&body);
    }
    (datagram, ids)
}

#[test]
fn ipv6_extension_headers_are_skipped_and_removed_or_refused() {
    let mut gw = nat64_gateway(NSP);
    let with = |extensions: Ipv6Extensions| {
        eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64).extensions(extensions),
                Upper::Udp(5353, 53),
                PAYLOAD,
            ),
        )
    };
    let plain = |id| udp_from_public(5353, REMOTE, 53, id);
    expect_ipv4_out(
        &mut gw,
        "Hop-by-Hop and Destination Options before UDP",
        &with(Ipv6Extensions {
            hop_by_hop_options: Some(padding_options(IpNumber::IPV6_DESTINATION_OPTIONS)),
            destination_options: Some(padding_options(IpNumber::UDP)),
            ..Default::default()
        }),
        plain,
        OUTBOUND,
    );
    expect_ipv4_out(
        &mut gw,
        "Routing header with no segments left",
        &with(Ipv6Extensions {
            routing: Some(routing_header(IpNumber::UDP, 0)),
            ..Default::default()
        }),
        plain,
        OUTBOUND,
    );
    expect_drop(
        &mut gw,
        "Routing header with a segment left (RFC 7915 s5.1)",
        Side::Vpc,
        &with(Ipv6Extensions {
            routing: Some(routing_header(IpNumber::UDP, 1)),
            ..Default::default()
        }),
        "drop_nat64_routing_header",
    );
    // A Fragment header after them is translated (see the fragment tests); fragmented ICMPv6
    // is not (RFC 7915 s5.2: its checksum covers the whole message and its length).
    let echo = packet6(
        &ip6(CLIENT, nsp(REMOTE), 64),
        Upper::EchoRequest(4000),
        &[0xab; 32],
    );
    let icmp_fragment = Frag6 {
        next: IpNumber::IPV6_ICMP,
        ..frag6_from_client(0x1234)
    };
    for (what, offset_and_more, body) in [
        ("ICMPv6 first fragment", (0, true), &echo[40..]),
        ("ICMPv6 later fragment", (5, false), &[0xcd; 24][..]),
    ] {
        expect_drop(
            &mut gw,
            what,
            Side::Vpc,
            &eth6(FROM_INSTANCE, icmp_fragment.packet(offset_and_more, body)),
            "drop_nat64_fragment",
        );
    }
    // Hop limit 1: the kernel answers with Time Exceeded (the packet is left as it came).
    let expiring = eth6(
        FROM_INSTANCE,
        packet6(&ip6(CLIENT, nsp(REMOTE), 1), Upper::Udp(5353, 53), PAYLOAD),
    );
    let output = send(
        &mut gw,
        "hop limit 1",
        Side::Vpc,
        &expiring,
        Verdict::Pass,
        &[("pass_ttl_expired", 1)],
    );
    assert_frame("hop limit 1", &expiring, &output);
    // Stateful NAT64 carries TCP, UDP and ICMP only (RFC 6146 s1.2.2): ESP and GRE are refused.
    for (what, next_header, counter) in [
        (
            "ESP",
            IpNumber::ENCAPSULATING_SECURITY_PAYLOAD,
            "drop_nat64_extension_headers",
        ),
        ("GRE", IpNumber::GRE, "drop_nat_unsupported_protocol"),
    ] {
        let mut packet = Ipv6Header {
            payload_length: 24,
            next_header,
            hop_limit: 64,
            source: CLIENT,
            destination: nsp(REMOTE),
            ..Ipv6Header::default()
        }
        .to_bytes()
        .to_vec();
        packet.extend_from_slice(&[0x5a; 24]);
        expect_drop(
            &mut gw,
            what,
            Side::Vpc,
            &eth6(FROM_INSTANCE, packet),
            counter,
        );
    }
}

/// The client's fragment train to [`REMOTE`] through the NSP.
fn frag6_from_client(id: u32) -> Frag6 {
    Frag6 {
        src: CLIENT,
        dst: nsp(REMOTE),
        hop_limit: 64,
        id,
        next: IpNumber::UDP,
    }
}

/// A 72-byte UDP datagram (8 + 64) split in two: 32 bytes (offset 0, M), then 40 (offset 4).
const FRAGMENTED_PAYLOAD: [u8; 64] = {
    let mut payload = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        payload[i] = (i as u8).wrapping_mul(37) ^ 0x5a;
        i += 1;
    }
    payload
};
const FIRST_PART: usize = 32;

#[test]
fn fragments_from_the_client_are_translated_one_by_one() {
    let mut gw = nat64_gateway(NSP);
    // The datagram as the client sent it, and as it must arrive reassembled at the remote.
    let udp6 = packet6(
        &ip6(CLIENT, nsp(REMOTE), 64),
        Upper::Udp(5353, 53),
        &FRAGMENTED_PAYLOAD,
    )[40..]
        .to_vec();
    let udp4 = packet4(
        &ip4(PUBLIC, REMOTE, 63),
        Upper::Udp(5353, 53),
        &FRAGMENTED_PAYLOAD,
    )[20..]
        .to_vec();
    let train = frag6_from_client(0x0bad_cafe);
    let first = eth6(FROM_INSTANCE, train.packet((0, true), &udp6[..FIRST_PART]));
    let later = eth6(FROM_INSTANCE, train.packet((4, false), &udp6[FIRST_PART..]));
    // A later fragment has no ports: before its first fragment nothing says where it goes.
    send(
        &mut gw,
        "later fragment before the first",
        Side::Vpc,
        &later,
        Verdict::Drop,
        &[
            ("drop_nat64_fragment_out_of_order", 1),
            ("nat64_fragment_translated", 0),
        ],
    );
    // RFC 7915 s5.1.1: identification = the low 16 bits of the IPv6 one, DF clear, MF = M, the
    // offset copied; the UDP checksum (over the whole datagram) updated for the new
    // pseudo-header.
    let fragment_out = |more: bool, offset: u16, body: &[u8]| {
        eth4(
            TO_INTERNET,
            fragment4(
                &ip4(PUBLIC, REMOTE, 63).id(0xcafe).fragment(more, offset),
                IpNumber::UDP,
                body,
            ),
        )
    };
    let first_out = expect_frame(
        &mut gw,
        "first fragment",
        Side::Vpc,
        &first,
        &fragment_out(true, 0, &udp4[..FIRST_PART]),
        &[
            ("forward_nat64_outbound", 1),
            ("nat64_fragment_translated", 1),
            ("nat_connection_attempt", 1),
            ("nat_port_preserved", 1),
            ("nat_packets_in_from_source", 1),
            ("nat_packets_out_to_destination", 1),
        ],
    );
    let later_out = expect_frame(
        &mut gw,
        "later fragment",
        Side::Vpc,
        &later,
        &fragment_out(false, 4, &udp4[FIRST_PART..]),
        &[
            ("forward_nat64_outbound", 1),
            ("nat64_fragment_translated", 1),
            ("nat_connection_attempt", 0),
        ],
    );
    let (datagram, ids) = reassemble("IPv4 fragments", &[later_out, first_out]);
    assert_eq!(ids, [0xcafe, 0xcafe], "identifications");
    assert_eq!(datagram, udp4, "reassembled datagram");
    assert_udp_checksum("IPv4 reassembly", &PUBLIC, &REMOTE, &datagram);
    // The reply of the session the first fragment made comes back.
    expect_frame(
        &mut gw,
        "reply",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        INBOUND,
    );
    // Another train of the same client is another packet: its later fragment is not known.
    send(
        &mut gw,
        "later fragment of another train",
        Side::Vpc,
        &eth6(
            FROM_INSTANCE,
            frag6_from_client(0x0bad_0001).packet((4, false), &udp6[FIRST_PART..]),
        ),
        Verdict::Drop,
        &[("drop_nat64_fragment_out_of_order", 1)],
    );
    // Hop limit 1: left to the kernel (Time Exceeded), as unfragmented packets.
    let expiring = eth6(
        FROM_INSTANCE,
        Frag6 {
            hop_limit: 1,
            ..train
        }
        .packet((4, false), &udp6[FIRST_PART..]),
    );
    let output = send(
        &mut gw,
        "fragment with hop limit 1",
        Side::Vpc,
        &expiring,
        Verdict::Pass,
        &[("pass_ttl_expired", 1)],
    );
    assert_frame("fragment with hop limit 1", &expiring, &output);
    // Extension headers before the Fragment header are skipped and removed, as without one:
    // a Hop-by-Hop header with one PadN option.
    let mut with_options = frag6_from_client(0x0bad_0002).packet((0, false), &udp6);
    with_options[6] = IpNumber::IPV6_HEADER_HOP_BY_HOP.0;
    with_options[4..6].copy_from_slice(&((8 + 8 + udp6.len()) as u16).to_be_bytes());
    with_options.splice(
        40..40,
        [IpNumber::IPV6_FRAGMENTATION_HEADER.0, 0, 1, 4, 0, 0, 0, 0],
    );
    expect_frame(
        &mut gw,
        "Hop-by-Hop, then a whole datagram in one fragment (offset 0, M clear)",
        Side::Vpc,
        &eth6(FROM_INSTANCE, with_options),
        &eth4(
            TO_INTERNET,
            fragment4(&ip4(PUBLIC, REMOTE, 63).id(0x0002), IpNumber::UDP, &udp4),
        ),
        &[
            ("forward_nat64_outbound", 1),
            ("nat64_fragment_translated", 1),
        ],
    );
    // A TCP segment (a SYN with data) in two fragments: a new session, the checksum updated.
    let tcp6 = packet6(
        &ip6(CLIENT, nsp(REMOTE), 64),
        Upper::Syn(40000, 443),
        &FRAGMENTED_PAYLOAD,
    )[40..]
        .to_vec();
    let tcp4 = packet4(
        &ip4(PUBLIC, REMOTE, 63),
        Upper::Syn(40000, 443),
        &FRAGMENTED_PAYLOAD,
    )[20..]
        .to_vec();
    let tcp_train = Frag6 {
        next: IpNumber::TCP,
        ..frag6_from_client(0x0bad_0003)
    };
    let tcp_out = |more: bool, offset: u16, body: &[u8]| {
        eth4(
            TO_INTERNET,
            fragment4(
                &ip4(PUBLIC, REMOTE, 63).id(0x0003).fragment(more, offset),
                IpNumber::TCP,
                body,
            ),
        )
    };
    let tcp_first = expect_frame(
        &mut gw,
        "TCP first fragment",
        Side::Vpc,
        &eth6(FROM_INSTANCE, tcp_train.packet((0, true), &tcp6[..24])),
        &tcp_out(true, 0, &tcp4[..24]),
        &[
            ("forward_nat64_outbound", 1),
            ("nat64_fragment_translated", 1),
            ("nat_connection_attempt", 1),
        ],
    );
    let tcp_later = expect_frame(
        &mut gw,
        "TCP later fragment",
        Side::Vpc,
        &eth6(FROM_INSTANCE, tcp_train.packet((3, false), &tcp6[24..])),
        &tcp_out(false, 3, &tcp4[24..]),
        &[
            ("forward_nat64_outbound", 1),
            ("nat64_fragment_translated", 1),
        ],
    );
    let (segment, _) = reassemble("TCP fragments", &[tcp_first, tcp_later]);
    assert_eq!(segment, tcp4, "reassembled segment");
    assert_transport_checksum("TCP reassembly", IpNumber::TCP, &PUBLIC, &REMOTE, &segment);
    // A first fragment too short for its transport header is not translated.
    expect_drop(
        &mut gw,
        "first fragment without the whole UDP header",
        Side::Vpc,
        &eth6(
            FROM_INSTANCE,
            frag6_from_client(0x77).packet((0, true), &udp6[..4]),
        ),
        "drop_nat64_fragment",
    );
}

#[test]
fn udp_fragmented_in_ipv4_reaches_the_client_with_a_fragment_header() {
    let mut gw = nat64_gateway(NSP);
    send(
        &mut gw,
        "session",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    let udp4 = packet4(
        &ip4(REMOTE, PUBLIC, 64),
        Upper::Udp(53, 5353),
        &FRAGMENTED_PAYLOAD,
    )[20..]
        .to_vec();
    let udp6 = packet6(
        &ip6(nsp(REMOTE), CLIENT, 63),
        Upper::Udp(53, 5353),
        &FRAGMENTED_PAYLOAD,
    )[40..]
        .to_vec();
    let fragment_in = |more: bool, offset: u16, body: &[u8]| {
        eth4(
            FROM_INTERNET,
            fragment4(
                &ip4(REMOTE, PUBLIC, 64).id(0xbeef).fragment(more, offset),
                IpNumber::UDP,
                body,
            ),
        )
    };
    let first = fragment_in(true, 0, &udp4[..FIRST_PART]);
    let later = fragment_in(false, 4, &udp4[FIRST_PART..]);
    // A later fragment has no ports: before its first nothing ties it to the session.
    expect_drop(
        &mut gw,
        "later fragment before the first",
        Side::Internet,
        &later,
        "drop_nat_fragment_out_of_order",
    );
    // RFC 7915 s4.1.1: a Fragment header with the identification zero-extended, the offset and
    // M copied; the hop limit is the TTL less one; the UDP checksum updated.
    let to_client = Frag6 {
        src: nsp(REMOTE),
        dst: CLIENT,
        hop_limit: 63,
        id: 0xbeef,
        next: IpNumber::UDP,
    };
    let first_out = expect_frame(
        &mut gw,
        "first fragment",
        Side::Internet,
        &first,
        &eth6(
            TO_INSTANCE,
            to_client.packet((0, true), &udp6[..FIRST_PART]),
        ),
        &[
            ("forward_nat64_inbound", 1),
            ("nat64_fragment_translated", 1),
            ("nat_packets_in_from_destination", 1),
            ("nat_packets_out_to_source", 1),
        ],
    );
    let later_out = expect_frame(
        &mut gw,
        "later fragment",
        Side::Internet,
        &later,
        &eth6(
            TO_INSTANCE,
            to_client.packet((4, false), &udp6[FIRST_PART..]),
        ),
        &[
            ("forward_nat64_inbound", 1),
            ("nat64_fragment_translated", 1),
        ],
    );
    let (datagram, ids) = reassemble("IPv6 fragments", &[first_out, later_out]);
    assert_eq!(ids, [0xbeef, 0xbeef], "identifications");
    assert_eq!(datagram, udp6, "reassembled datagram");
    assert_udp_checksum("IPv6 reassembly", &nsp(REMOTE), &CLIENT, &datagram);
    // A first fragment without a UDP checksum: none can be computed from a fragment
    // (RFC 7915 s4.5), so it is dropped, and its later fragments with it.
    let mut no_checksum = udp4.clone();
    no_checksum[6..8].fill(0);
    let train = |more: bool, offset: u16, body: &[u8]| {
        eth4(
            FROM_INTERNET,
            fragment4(
                &ip4(REMOTE, PUBLIC, 64).id(0xbef0).fragment(more, offset),
                IpNumber::UDP,
                body,
            ),
        )
    };
    expect_drop(
        &mut gw,
        "first fragment without a UDP checksum",
        Side::Internet,
        &train(true, 0, &no_checksum[..FIRST_PART]),
        "drop_nat64_udp_zero_checksum",
    );
    expect_drop(
        &mut gw,
        "its later fragment",
        Side::Internet,
        &train(false, 4, &no_checksum[FIRST_PART..]),
        "drop_nat_fragment_out_of_order",
    );
    // Fragmented ICMP is not translated (RFC 7915 s4.2).
    send(
        &mut gw,
        "echo request session",
        Side::Vpc,
        &eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64),
                Upper::EchoRequest(4000),
                PAYLOAD,
            ),
        ),
        Verdict::Redirect,
        OUTBOUND,
    );
    let echo = packet4(
        &ip4(REMOTE, PUBLIC, 64),
        Upper::EchoReply(4000),
        &FRAGMENTED_PAYLOAD,
    );
    expect_drop(
        &mut gw,
        "first fragment of an echo reply",
        Side::Internet,
        &eth4(
            FROM_INTERNET,
            fragment4(
                &ip4(REMOTE, PUBLIC, 64).id(0xbef1).fragment(true, 0),
                IpNumber::ICMP,
                &echo[20..20 + FIRST_PART],
            ),
        ),
        "drop_nat64_fragment",
    );
    // The session is intact.
    expect_frame(
        &mut gw,
        "unfragmented reply",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        INBOUND,
    );
}

// --- RFC 6052 prefixes.

#[test]
fn every_prefix_length_extracts_and_embeds_per_rfc6052() {
    // RFC 6052 s2.4 Table 1: 192.0.2.33 in each prefix.
    const EMBEDDED: [u8; 4] = [192, 0, 2, 33];
    let rows: [(&str, u8, [u16; 8]); 6] = [
        (
            "2001:db8::/32",
            32,
            [0x2001, 0xdb8, 0xc000, 0x221, 0, 0, 0, 0],
        ),
        (
            "2001:db8:100::/40",
            40,
            [0x2001, 0xdb8, 0x1c0, 0x2, 0x21, 0, 0, 0],
        ),
        (
            "2001:db8:122::/48",
            48,
            [0x2001, 0xdb8, 0x122, 0xc000, 0x2, 0x2100, 0, 0],
        ),
        (
            "2001:db8:122:300::/56",
            56,
            [0x2001, 0xdb8, 0x122, 0x3c0, 0, 0x221, 0, 0],
        ),
        (
            "2001:db8:122:344::/64",
            64,
            [0x2001, 0xdb8, 0x122, 0x344, 0xc0, 0x2, 0x2100, 0],
        ),
        (
            "2001:db8:122:344::/96",
            96,
            [0x2001, 0xdb8, 0x122, 0x344, 0, 0, 0xc000, 0x221],
        ),
    ];
    for (prefix_text, length, groups) in rows {
        let embedded = v6(groups);
        let prefix_address: std::net::Ipv6Addr = prefix_text
            .split('/')
            .next()
            .and_then(|text| text.parse().ok())
            .expect("prefix address");
        let prefix = Nat64Prefix::new(prefix_address.octets(), length).expect("valid prefix");
        assert_eq!(
            prefix.embed(EMBEDDED),
            Some(embedded),
            "{prefix_text}: gateway_common agrees with RFC 6052 Table 1"
        );
        let mut gw = nat64_gateway(prefix_text);
        let what = format!("{prefix_text}: UDP to {embedded:02x?}");
        expect_ipv4_out(
            &mut gw,
            &what,
            &eth6(
                FROM_INSTANCE,
                packet6(&ip6(CLIENT, embedded, 64), Upper::Udp(5353, 53), PAYLOAD),
            ),
            |id| udp_from_public(5353, EMBEDDED, 53, id),
            OUTBOUND,
        );
        expect_frame(
            &mut gw,
            &format!("{prefix_text}: reply from 192.0.2.33"),
            Side::Internet,
            &udp_in(EMBEDDED, 53, 5353),
            &eth6(
                TO_INSTANCE,
                packet6(&ip6(embedded, CLIENT, 63), Upper::Udp(53, 5353), PAYLOAD),
            ),
            INBOUND,
        );
        // RFC 6052 s2.2: the u octet (bits 64-71) is ignored when extracting; /96 has none
        // outside the prefix.
        if length < 96 {
            let mut with_u = embedded;
            with_u[8] = 0xff;
            expect_ipv4_out(
                &mut gw,
                &format!("{prefix_text}: non-zero u octet"),
                &eth6(
                    FROM_INSTANCE,
                    packet6(&ip6(CLIENT, with_u, 64), Upper::Udp(5353, 53), PAYLOAD),
                ),
                |id| udp_from_public(5353, EMBEDDED, 53, id),
                OUTBOUND,
            );
        }
    }
}

#[test]
fn well_known_prefix_carries_only_global_ipv4_addresses() {
    let mut gw = nat64_gateway(WKP);
    let wkp = |v4: [u8; 4]| {
        let mut address = gateway_common::nat64::WELL_KNOWN_PREFIX;
        address[12..].copy_from_slice(&v4);
        address
    };
    assert_eq!(
        wkp(GLOBAL),
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0x808, 0x808]),
        "64:ff9b::808:808"
    );
    // RFC 6052 s3.1: documentation and private addresses must not be reached through the WKP.
    for (what, v4) in [
        ("documentation 192.0.2.10", REMOTE),
        ("private 10.1.2.3", [10, 1, 2, 3]),
    ] {
        expect_drop(
            &mut gw,
            what,
            Side::Vpc,
            &eth6(
                FROM_INSTANCE,
                packet6(&ip6(CLIENT, wkp(v4), 64), Upper::Udp(5353, 53), PAYLOAD),
            ),
            "drop_nat64_non_global",
        );
    }
    assert!(gw.dataplane.conntrack().expect("conntrack").is_empty());
    expect_ipv4_out(
        &mut gw,
        "global 8.8.8.8",
        &eth6(
            FROM_INSTANCE,
            packet6(&ip6(CLIENT, wkp(GLOBAL), 64), Upper::Udp(5353, 53), PAYLOAD),
        ),
        |id| udp_from_public(5353, GLOBAL, 53, id),
        OUTBOUND,
    );
    expect_frame(
        &mut gw,
        "reply from 8.8.8.8",
        Side::Internet,
        &udp_in(GLOBAL, 53, 5353),
        &eth6(
            TO_INSTANCE,
            packet6(&ip6(wkp(GLOBAL), CLIENT, 63), Upper::Udp(53, 5353), PAYLOAD),
        ),
        INBOUND,
    );
}

// --- Sessions: filtering, sharing with NAT44, hairpinning.

#[test]
fn unsolicited_ipv4_is_dropped_and_filtering_is_address_and_port_dependent() {
    let mut gw = nat64_gateway(NSP);
    for (what, upper, counter) in [
        (
            "TCP SYN",
            Upper::Syn(443, 40000),
            "drop_nat_unsolicited_tcp_syn",
        ),
        ("UDP", Upper::Udp(53, 5353), "drop_nat_unsolicited_udp"),
        (
            "echo request",
            Upper::EchoRequest(4000),
            "drop_nat_unsolicited_icmp",
        ),
    ] {
        expect_drop(
            &mut gw,
            &format!("unsolicited {what}"),
            Side::Internet,
            &eth4(
                FROM_INTERNET,
                packet4(&ip4(REMOTE, PUBLIC, 64), upper, PAYLOAD),
            ),
            counter,
        );
    }
    send(
        &mut gw,
        "session to REMOTE:53",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    expect_drop(
        &mut gw,
        "from another port of REMOTE",
        Side::Internet,
        &udp_in(REMOTE, 54, 5353),
        "drop_nat_unsolicited_udp",
    );
    expect_drop(
        &mut gw,
        "from another host",
        Side::Internet,
        &udp_in([192, 0, 2, 20], 53, 5353),
        "drop_nat_unsolicited_udp",
    );
    assert_eq!(gw.dataplane.conntrack().expect("conntrack").len(), 2);
}

#[test]
fn nat44_and_nat64_clients_share_one_port_space() {
    let mut gw = nat64_gateway(NSP);
    // The NAT44 host takes public port 5353 first.
    let nat44_out = eth4(
        FROM_INSTANCE,
        packet4(
            &ip4(NAT44_HOST, REMOTE, 64).df(true),
            Upper::Udp(5353, 53),
            PAYLOAD,
        ),
    );
    expect_frame(
        &mut gw,
        "NAT44 host keeps 5353",
        Side::Vpc,
        &nat44_out,
        &eth4(
            TO_INTERNET,
            packet4(
                &ip4(PUBLIC, REMOTE, 63).df(true),
                Upper::Udp(5353, 53),
                PAYLOAD,
            ),
        ),
        &[("forward_nat_outbound", 1), ("nat_port_preserved", 1)],
    );
    // The IPv6 client with the same source port gets another public port.
    let output = send(
        &mut gw,
        "NAT64 client from 5353",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        &[("forward_nat64_outbound", 1), ("nat_port_preserved", 0)],
    );
    let public_port = u16::from_be_bytes([output[34], output[35]]);
    assert_ne!(public_port, 5353, "the NAT64 session took the NAT44 port");
    assert!(public_port >= 1024);
    assert_frame(
        "NAT64 client from 5353",
        &eth4(
            TO_INTERNET,
            udp_from_public(public_port, REMOTE, 53, ipv4_id(&output)),
        ),
        &output,
    );
    // Each reply reaches its own client, in its own family.
    expect_frame(
        &mut gw,
        "reply to the NAT64 client",
        Side::Internet,
        &udp_in(REMOTE, 53, public_port),
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        INBOUND,
    );
    expect_frame(
        &mut gw,
        "reply to the NAT44 host",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        &eth4(
            TO_INSTANCE,
            packet4(
                &ip4(REMOTE, NAT44_HOST, 63).df(true),
                Upper::Udp(53, 5353),
                PAYLOAD,
            ),
        ),
        &[("forward_nat_inbound", 1)],
    );
    assert_eq!(gw.dataplane.conntrack().expect("conntrack").len(), 4);
}

#[test]
fn hairpin_between_ipv6_clients_and_to_a_nat44_host() {
    let mut gw = nat64_gateway(NSP);
    // A's public endpoint: PUBLIC:5353 (endpoint-independent, port preserved).
    send(
        &mut gw,
        "A to REMOTE",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        &[("forward_nat64_outbound", 1), ("nat_port_preserved", 1)],
    );
    // B to A's public endpoint: B's session (PUBLIC:6000 towards PUBLIC:5353) is made, but A
    // has not talked to PUBLIC:6000, so A's filtering refuses the packet.
    expect_drop(
        &mut gw,
        "B to A's public endpoint, unsolicited for A",
        Side::Vpc,
        &udp_out(CLIENT_B, PUBLIC, 6000, 5353),
        "drop_nat_unsolicited_udp",
    );
    // A to B's public endpoint: B's session admits it; B sees A's public endpoint in the prefix.
    expect_frame(
        &mut gw,
        "A to B's public endpoint",
        Side::Vpc,
        &udp_out(CLIENT, PUBLIC, 5353, 6000),
        &udp_to_client(CLIENT_B, PUBLIC, 5353, 6000),
        &[("forward_nat64_hairpin", 1)],
    );
    expect_frame(
        &mut gw,
        "B to A's public endpoint, now an answer",
        Side::Vpc,
        &udp_out(CLIENT_B, PUBLIC, 6000, 5353),
        &udp_to_client(CLIENT, PUBLIC, 6000, 5353),
        &[("forward_nat64_hairpin", 1)],
    );
    // A to PUBLIC:7000, which nobody holds yet: refused, but A's session towards it is made.
    expect_drop(
        &mut gw,
        "A to an unheld public port",
        Side::Vpc,
        &udp_out(CLIENT, PUBLIC, 5353, 7000),
        "drop_nat_unsolicited_udp",
    );
    // The NAT44 host takes PUBLIC:7000 reaching A's public endpoint, which A's session now
    // admits; but only IPv6 clients hairpin through NAT64, so it is refused all the same.
    let nat44_to_a = eth4(
        FROM_INSTANCE,
        packet4(
            &ip4(NAT44_HOST, PUBLIC, 64).df(true),
            Upper::Udp(7000, 5353),
            PAYLOAD,
        ),
    );
    expect_drop(
        &mut gw,
        "NAT44 host to A's public endpoint",
        Side::Vpc,
        &nat44_to_a,
        "drop_nat64_hairpin_from_ipv4",
    );
    // A to the NAT44 host's public endpoint (PUBLIC:7000, made towards PUBLIC:5353 just now):
    // delivered as IPv4 from A's public endpoint.
    let output = send(
        &mut gw,
        "A to the NAT44 host's public endpoint",
        Side::Vpc,
        &udp_out(CLIENT, PUBLIC, 5353, 7000),
        Verdict::Redirect,
        &[("forward_nat64_hairpin", 1)],
    );
    assert_frame(
        "A to the NAT44 host's public endpoint",
        &eth4(
            TO_INSTANCE,
            packet4(
                &ip4(PUBLIC, NAT44_HOST, 63).id(ipv4_id(&output)),
                Upper::Udp(5353, 7000),
                PAYLOAD,
            ),
        ),
        &output,
    );
}

// --- ICMP errors.

/// A gateway with a NAT64 UDP session CLIENT:5353 <-> PUBLIC:5353 <-> REMOTE:53; returns it and
/// the client's datagram as it left (the IPv4 packet an error from the internet quotes).
fn gateway_with_udp_session(extra_setup: &[String]) -> (TestGateway, Vec<u8>) {
    let mut gw = nat64_gateway_with(NSP, "", extra_setup);
    let output = send(
        &mut gw,
        "session",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    (gw, output[14..].to_vec())
}

/// The client's datagram as an IPv4 router quoting it describes it, translated back: the quoted
/// TTL becomes the hop limit (not decremented), flow label 0.
fn client_datagram_quoted(hop_limit: u8) -> Vec<u8> {
    packet6(
        &ip6(CLIENT, nsp(REMOTE), hop_limit),
        Upper::Udp(5353, 53),
        PAYLOAD,
    )
}

/// An ICMPv4 error from `ROUTER_ON_PATH` to the public address.
fn icmp4_error_in(kind: Upper, quoted: &[u8]) -> Vec<u8> {
    eth4(
        FROM_INTERNET,
        packet4(&ip4(ROUTER_ON_PATH, PUBLIC, 64), kind, quoted),
    )
}

/// The ICMPv6 error the client must receive, from the router inside the prefix.
fn icmp6_error_to_client(kind: Upper, quoted: &[u8]) -> Vec<u8> {
    eth6(
        TO_INSTANCE,
        packet6(&ip6(nsp(ROUTER_ON_PATH), CLIENT, 63), kind, quoted),
    )
}

const ICMP_IN: &[(&str, u64)] = &[
    ("forward_nat64_inbound", 1),
    ("nat64_icmp_error_translated_inbound", 1),
    ("conntrack_created", 0),
];
const ICMP_OUT: &[(&str, u64)] = &[
    ("forward_nat64_outbound", 1),
    ("nat64_icmp_error_translated_outbound", 1),
    ("conntrack_created", 0),
];

#[test]
fn icmpv4_errors_are_translated_to_icmpv6_with_their_quote() {
    let (mut gw, sent) = gateway_with_udp_session(&[]);
    let quote6 = client_datagram_quoted(63);
    // RFC 7915 s4.2, with the RFC 1191 plateau and the IPv6 minimum MTU for frag needed.
    let rows: Vec<(&str, Upper, Upper)> = vec![
        ("net unreachable 3/0 -> 1/0", icmp(3, 0, 0), icmp(1, 0, 0)),
        ("host unreachable 3/1 -> 1/0", icmp(3, 1, 0), icmp(1, 0, 0)),
        (
            "protocol unreachable 3/2 -> parameter problem 4/1 at the next header (6)",
            icmp(3, 2, 0),
            icmp(4, 1, 6),
        ),
        ("port unreachable 3/3 -> 1/4", icmp(3, 3, 0), icmp(1, 4, 0)),
        (
            "frag needed 3/4 MTU 1400 -> packet too big 2/0 MTU 1420",
            icmp(3, 4, 1400),
            icmp(2, 0, 1420),
        ),
        (
            "frag needed 3/4 MTU 1100 -> MTU 1280, the IPv6 minimum",
            icmp(3, 4, 1100),
            icmp(2, 0, 1280),
        ),
        (
            "frag needed 3/4 MTU 1600 -> MTU 1500, the client's link (RFC 7915 s4.2 minimum)",
            icmp(3, 4, 1600),
            icmp(2, 0, 1500),
        ),
        (
            "admin prohibited 3/13 -> 1/1",
            icmp(3, 13, 0),
            icmp(1, 1, 0),
        ),
        ("time exceeded 11/0 -> 3/0", icmp(11, 0, 0), icmp(3, 0, 0)),
        (
            "reassembly time exceeded 11/1 -> 3/1",
            icmp(11, 1, 0),
            icmp(3, 1, 0),
        ),
        (
            "parameter problem 12/0 at the TTL (8) -> 4/0 at the hop limit (7)",
            icmp4_pointer(0, 8),
            icmp(4, 0, 7),
        ),
        (
            "parameter problem 12/0 at the protocol (9) -> 4/0 at the next header (6)",
            icmp4_pointer(0, 9),
            icmp(4, 0, 6),
        ),
        (
            "parameter problem 12/0 at the source (12) -> 4/0 at the source (8)",
            icmp4_pointer(0, 12),
            icmp(4, 0, 8),
        ),
        (
            "parameter problem 12/0 at the destination (16) -> 4/0 at the destination (24)",
            icmp4_pointer(0, 16),
            icmp(4, 0, 24),
        ),
        (
            "parameter problem 12/2 at the total length (2) -> 4/0 at the payload length (4)",
            icmp4_pointer(2, 2),
            icmp(4, 0, 4),
        ),
    ];
    check_every_row("ICMPv4 error", rows, |(what, kind, translated)| {
        expect_frame(
            &mut gw,
            what,
            Side::Internet,
            &icmp4_error_in(kind, &sent),
            &icmp6_error_to_client(translated, &quote6),
            ICMP_IN,
        );
    });
}

#[test]
fn frag_needed_without_an_mtu_uses_the_rfc1191_plateau_below_the_quoted_length() {
    // Links of 9000 bytes on the client's side, so that the client's link does not cap the MTU.
    let (mut gw, sent) = gateway_with_udp_session(&[
        "link set vpc0 mtu 9000".to_string(),
        "link set vpc0-peer mtu 9000".to_string(),
    ]);
    // The quote as a pre-RFC 1191 router sends it: the quoted Total Length says 1500 bytes (the
    // quote itself is cut after a few bytes, as ICMP quotes are).
    let mut long = sent.clone();
    long[2..4].copy_from_slice(&1500u16.to_be_bytes());
    let header = Ipv4HeaderSlice::from_slice(&long[..20])
        .expect("quoted header")
        .to_header();
    long[10..12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    // The translated quote says so too: payload length 1480.
    let mut quote6 = client_datagram_quoted(63);
    quote6[4..6].copy_from_slice(&1480u16.to_be_bytes());
    // Plateau below 1500: 1492; + 20 for the IPv6 header (RFC 7915 s4.2, RFC 1191 s7).
    expect_frame(
        &mut gw,
        "frag needed MTU 0, quoted total length 1500 -> MTU 1512",
        Side::Internet,
        &icmp4_error_in(icmp(3, 4, 0), &long),
        &icmp6_error_to_client(icmp(2, 0, 1512), &quote6),
        ICMP_IN,
    );
    // A quoted packet of 1200 bytes: plateau 1006, + 20 = 1026, raised to the IPv6 minimum 1280.
    long[2..4].copy_from_slice(&1200u16.to_be_bytes());
    let header = Ipv4HeaderSlice::from_slice(&long[..20])
        .expect("quoted header")
        .to_header();
    long[10..12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    quote6[4..6].copy_from_slice(&1180u16.to_be_bytes());
    expect_frame(
        &mut gw,
        "frag needed MTU 0, quoted total length 1200 -> MTU 1280",
        Side::Internet,
        &icmp4_error_in(icmp(3, 4, 0), &long),
        &icmp6_error_to_client(icmp(2, 0, 1280), &quote6),
        ICMP_IN,
    );
}

#[test]
fn untranslatable_or_unrelated_icmpv4_errors_are_dropped() {
    let (mut gw, sent) = gateway_with_udp_session(&[]);
    let rows = vec![
        (
            "host precedence violation 3/14",
            icmp(3, 14, 0),
            "drop_nat64_icmp_untranslatable",
        ),
        (
            "parameter problem 12/1 (missing option)",
            icmp4_pointer(1, 0),
            "drop_nat64_icmp_untranslatable",
        ),
        (
            "parameter problem 12/0 at the header checksum (10): no IPv6 field",
            icmp4_pointer(0, 10),
            "drop_nat64_icmp_untranslatable",
        ),
        (
            "parameter problem 12/0 at the identification (4): no IPv6 field",
            icmp4_pointer(0, 4),
            "drop_nat64_icmp_untranslatable",
        ),
        // Not errors to the NAT gateway (RFC 5508 translates types 3, 11 and 12): refused as
        // unsolicited ICMP before any session is looked at.
        (
            "source quench 4/0",
            icmp(4, 0, 0),
            "drop_nat_unsolicited_icmp",
        ),
        ("redirect 5/0", icmp(5, 0, 0), "drop_nat_unsolicited_icmp"),
    ];
    check_every_row("untranslatable ICMPv4", rows, |(what, kind, counter)| {
        expect_drop(
            &mut gw,
            what,
            Side::Internet,
            &icmp4_error_in(kind, &sent),
            counter,
        );
    });
    // About no session: dropped as NAT44 does (RFC 5508 REQ-4).
    let unknown = udp_from_public(1234, REMOTE, 9, 1);
    expect_drop(
        &mut gw,
        "port unreachable about no session",
        Side::Internet,
        &icmp4_error_in(icmp(3, 3, 0), &unknown),
        "drop_nat_icmp_error_no_flow",
    );
}

/// The reply as the client received it (what the client's ICMPv6 error quotes).
fn reply_as_received(payload: &[u8]) -> Vec<u8> {
    packet6(&ip6(nsp(REMOTE), CLIENT, 63), Upper::Udp(53, 5353), payload)
}

/// An ICMPv6 error from the client about a reply.
fn icmp6_error_out(kind: Upper, quoted: &[u8]) -> Vec<u8> {
    eth6(
        FROM_INSTANCE,
        packet6(&ip6(CLIENT, nsp(REMOTE), 64), kind, quoted),
    )
}

/// The IPv4 identification of the packet quoted in an ICMPv4 error (untagged frame, outer header
/// without options): the translator's choice, like the outer one.
fn quoted_ipv4_id(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[14 + 28 + 4], frame[14 + 28 + 5]])
}

/// The ICMPv4 error the remote must receive, from the public address, quoting the reply as the
/// remote sent it (to the public endpoint; TTL as quoted; DF and identification per RFC 7915
/// s5.1), cut to `quote_length` bytes.
fn icmp4_error_to_remote(
    kind: Upper,
    outer_id: u16,
    quoted_id: u16,
    payload: &[u8],
    quote_length: usize,
) -> Vec<u8> {
    let mut quote = packet4(
        &ip4(REMOTE, PUBLIC, 63)
            .id(quoted_id)
            .df(20 + 8 + payload.len() > 1260),
        Upper::Udp(53, 5353),
        payload,
    );
    quote.truncate(quote_length);
    eth4(
        TO_INTERNET,
        packet4(&ip4(PUBLIC, REMOTE, 63).id(outer_id), kind, &quote),
    )
}

#[test]
fn icmpv6_errors_from_the_client_are_translated_to_icmpv4_with_their_quote() {
    let (mut gw, _) = gateway_with_udp_session(&[]);
    let quoted = reply_as_received(PAYLOAD);
    // RFC 7915 s5.2.
    let rows: Vec<(&str, Upper, Upper)> = vec![
        (
            "no route 1/0 -> host unreachable 3/1",
            icmp(1, 0, 0),
            icmp(3, 1, 0),
        ),
        (
            "admin prohibited 1/1 -> host prohibited 3/10",
            icmp(1, 1, 0),
            icmp(3, 10, 0),
        ),
        (
            "address unreachable 1/3 -> host unreachable 3/1",
            icmp(1, 3, 0),
            icmp(3, 1, 0),
        ),
        ("port unreachable 1/4 -> 3/3", icmp(1, 4, 0), icmp(3, 3, 0)),
        (
            "packet too big 2/0 MTU 1300 -> frag needed 3/4 MTU 1280",
            icmp(2, 0, 1300),
            icmp(3, 4, 1280),
        ),
        ("time exceeded 3/0 -> 11/0", icmp(3, 0, 0), icmp(11, 0, 0)),
        (
            "parameter problem 4/0 at the hop limit (7) -> 12/0 at the TTL (8)",
            icmp(4, 0, 7),
            icmp4_pointer(0, 8),
        ),
        (
            "parameter problem 4/0 at the next header (6) -> 12/0 at the protocol (9)",
            icmp(4, 0, 6),
            icmp4_pointer(0, 9),
        ),
        (
            "parameter problem 4/0 in the source (8..23) -> 12/0 at the source (12)",
            icmp(4, 0, 15),
            icmp4_pointer(0, 12),
        ),
        (
            "parameter problem 4/0 in the destination (24..39) -> 12/0 at the destination (16)",
            icmp(4, 0, 24),
            icmp4_pointer(0, 16),
        ),
        (
            "parameter problem 4/0 at the payload length (4) -> 12/0 at the total length (2)",
            icmp(4, 0, 4),
            icmp4_pointer(0, 2),
        ),
        (
            "parameter problem 4/1 (unknown next header) -> protocol unreachable 3/2",
            icmp(4, 1, 6),
            icmp(3, 2, 0),
        ),
    ];
    check_every_row("ICMPv6 error", rows, |(what, kind, translated)| {
        let output = send(
            &mut gw,
            what,
            Side::Vpc,
            &icmp6_error_out(kind, &quoted),
            Verdict::Redirect,
            ICMP_OUT,
        );
        assert!(output.len() > 14 + 28 + 20, "{what}: output too short");
        let expected = icmp4_error_to_remote(
            translated,
            ipv4_id(&output),
            quoted_ipv4_id(&output),
            PAYLOAD,
            usize::MAX,
        );
        assert_frame(what, &expected, &output);
    });
}

#[test]
fn untranslatable_or_unrelated_icmpv6_errors_are_dropped() {
    let (mut gw, _) = gateway_with_udp_session(&[]);
    let quoted = reply_as_received(PAYLOAD);
    let rows = vec![
        (
            "parameter problem 4/2 (unrecognised option)",
            icmp(4, 2, 40),
        ),
        (
            "parameter problem 4/0 in the flow label (2): no IPv4 field",
            icmp(4, 0, 2),
        ),
        ("destination unreachable 1/5 (source policy)", icmp(1, 5, 0)),
        ("MLD query 130 to the prefix", icmp(130, 0, 0)),
    ];
    check_every_row("untranslatable ICMPv6", rows, |(what, kind)| {
        expect_drop(
            &mut gw,
            what,
            Side::Vpc,
            &icmp6_error_out(kind, &quoted),
            "drop_nat64_icmp_untranslatable",
        );
    });
    let unknown = packet6(&ip6(nsp(REMOTE), CLIENT, 63), Upper::Udp(9, 1234), PAYLOAD);
    expect_drop(
        &mut gw,
        "port unreachable about no session",
        Side::Vpc,
        &icmp6_error_out(icmp(1, 4, 0), &unknown),
        "drop_nat_icmp_error_no_flow",
    );
}

#[test]
fn translated_icmp_errors_fit_the_minimum_mtu_of_their_family() {
    // ICMPv4 -> ICMPv6: a router quoting the whole of a 1380-byte IPv4 packet (1408 bytes of
    // error); the ICMPv6 error is cut to 1280 bytes (RFC 4443 s2.4, RFC 7915 s4.2).
    let mut gw = nat64_gateway(NSP);
    let payload = vec![0x77; 1352];
    let big = eth6(
        FROM_INSTANCE,
        packet6(
            &ip6(CLIENT, nsp(REMOTE), 64),
            Upper::Udp(5353, 53),
            &payload,
        ),
    );
    let output = send(
        &mut gw,
        "1400-byte datagram",
        Side::Vpc,
        &big,
        Verdict::Redirect,
        OUTBOUND,
    );
    let sent = output[14..].to_vec();
    assert_eq!(sent.len(), 1380);
    let mut quote6 = packet6(
        &ip6(CLIENT, nsp(REMOTE), 63),
        Upper::Udp(5353, 53),
        &payload,
    );
    quote6.truncate(1280 - 40 - 8);
    let expected = icmp6_error_to_client(icmp(2, 0, 1320), &quote6);
    let received = expect_frame(
        &mut gw,
        "frag needed quoting 1380 bytes",
        Side::Internet,
        &icmp4_error_in(icmp(3, 4, 1300), &sent),
        &expected,
        ICMP_IN,
    );
    assert_eq!(received.len() - 14, 1280);

    // ICMPv6 -> ICMPv4: the client quotes as much of a 1280-byte reply as fits in 1280 bytes;
    // the ICMPv4 error is cut to 576 bytes (RFC 1812 s4.3.2.3, RFC 7915 s5.2).
    let payload = vec![0x66; 1232];
    send(
        &mut gw,
        "1280-byte reply",
        Side::Internet,
        &eth4(
            FROM_INTERNET,
            packet4(
                &ip4(REMOTE, PUBLIC, 64).df(true),
                Upper::Udp(53, 5353),
                &payload,
            ),
        ),
        Verdict::Redirect,
        INBOUND,
    );
    let mut quoted = reply_as_received(&payload);
    quoted.truncate(1280 - 48);
    let output = send(
        &mut gw,
        "port unreachable quoting 1232 bytes",
        Side::Vpc,
        &icmp6_error_out(icmp(1, 4, 0), &quoted),
        Verdict::Redirect,
        ICMP_OUT,
    );
    assert_eq!(output.len() - 14, 576, "ICMPv4 error length");
    let expected = icmp4_error_to_remote(
        icmp(3, 3, 0),
        ipv4_id(&output),
        quoted_ipv4_id(&output),
        &payload,
        576 - 28,
    );
    assert_frame("port unreachable quoting 1232 bytes", &expected, &output);
}

// --- Truncation, VLAN, flows.

/// A NAT64 frame to cut short, and where its headers are.
struct Cut {
    what: &'static str,
    side: Side,
    frame: Vec<u8>,
    l3: usize,
    ipv6: bool,
    /// Offset of the transport header, and how many of its bytes the gateway needs.
    l4: usize,
    l4_needed: usize,
}

/// The frame cut to `len` bytes with the IP length field rewritten to end there (and the IPv4
/// header checksum recomputed): a well-formed IP packet whose transport header is cut.
fn consistently_cut(cut: &Cut, len: usize) -> Vec<u8> {
    let mut frame = cut.frame[..len].to_vec();
    let l3 = cut.l3;
    if cut.ipv6 {
        frame[l3 + 4..l3 + 6].copy_from_slice(&((len - l3 - 40) as u16).to_be_bytes());
    } else {
        frame[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
        let header_length = ihl_bytes(&frame[l3..]);
        let header = Ipv4HeaderSlice::from_slice(&frame[l3..l3 + header_length])
            .expect("cut IPv4 header")
            .to_header();
        frame[l3 + 10..l3 + 12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    }
    frame
}

/// A cut frame must be dropped with exactly one `drop_*` counter or handed to the kernel with a
/// `pass_*` one: never forwarded, never aborted. Frames shorter than an Ethernet header never
/// reach the program (the kernel refuses them).
fn check_cut(gw: &mut TestGateway, side: Side, frame: &[u8]) -> Result<(), String> {
    let before = gw.counters();
    let outcome = match gw.try_run(side, frame, 1) {
        Ok(outcome) => outcome,
        Err(_) if frame.len() < 14 => return Ok(()),
        Err(error) => return Err(format!("the kernel refused to run the program: {error}")),
    };
    let moved = counter_delta(&before, &gw.counters());
    let verdicts: Vec<_> = moved
        .keys()
        .filter(|name| is_verdict_counter(name))
        .collect();
    let fine = match outcome.verdict {
        Verdict::Drop => verdicts.len() == 1 && verdicts[0].starts_with("drop_"),
        Verdict::Pass => {
            verdicts.iter().all(|name| name.starts_with("pass_")) && !verdicts.is_empty()
        }
        _ => false,
    };
    if fine {
        Ok(())
    } else {
        Err(format!(
            "verdict {:?}, counters moved {moved:?}",
            outcome.verdict
        ))
    }
}

#[test]
fn truncated_nat64_frames_are_dropped_or_passed_never_forwarded() {
    let (mut gw, sent) = gateway_with_udp_session(&[]);
    send(
        &mut gw,
        "TCP session",
        Side::Vpc,
        &eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64),
                Upper::Syn(40000, 443),
                PAYLOAD,
            ),
        ),
        Verdict::Redirect,
        OUTBOUND,
    );
    let out6 = |upper| {
        eth6(
            FROM_INSTANCE,
            packet6(&ip6(CLIENT, nsp(REMOTE), 64), upper, PAYLOAD),
        )
    };
    let cuts = [
        Cut {
            what: "UDP/IPv6 to the prefix",
            side: Side::Vpc,
            frame: out6(Upper::Udp(5353, 53)),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 8,
        },
        Cut {
            what: "TCP/IPv6 to the prefix",
            side: Side::Vpc,
            frame: out6(Upper::Data(40000, 443)),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 20,
        },
        Cut {
            what: "ICMPv6 echo to the prefix",
            side: Side::Vpc,
            frame: out6(Upper::EchoRequest(4000)),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 8,
        },
        Cut {
            what: "UDP/IPv6 behind Hop-by-Hop and Destination Options",
            side: Side::Vpc,
            frame: eth6(
                FROM_INSTANCE,
                packet6(
                    &ip6(CLIENT, nsp(REMOTE), 64).extensions(Ipv6Extensions {
                        hop_by_hop_options: Some(padding_options(
                            IpNumber::IPV6_DESTINATION_OPTIONS,
                        )),
                        destination_options: Some(padding_options(IpNumber::UDP)),
                        ..Default::default()
                    }),
                    Upper::Udp(5353, 53),
                    PAYLOAD,
                ),
            ),
            l3: 14,
            ipv6: true,
            l4: 70,
            l4_needed: 8,
        },
        Cut {
            what: "ICMPv6 port unreachable from the client",
            side: Side::Vpc,
            frame: icmp6_error_out(icmp(1, 4, 0), &reply_as_received(PAYLOAD)),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 8 + 40 + 8,
        },
        Cut {
            what: "UDP/IPv4 reply",
            side: Side::Internet,
            frame: udp_in(REMOTE, 53, 5353),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 8,
        },
        Cut {
            what: "TCP/IPv4 reply",
            side: Side::Internet,
            frame: eth4(
                FROM_INTERNET,
                packet4(&ip4(REMOTE, PUBLIC, 64), Upper::SynAck(443, 40000), PAYLOAD),
            ),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 20,
        },
        Cut {
            what: "UDP/IPv4 reply with a Record Route option",
            side: Side::Internet,
            frame: eth4(
                FROM_INTERNET,
                packet4(
                    &ip4(REMOTE, PUBLIC, 64).options(&[7, 7, 4, 0, 0, 0, 0, 0]),
                    Upper::Udp(53, 5353),
                    PAYLOAD,
                ),
            ),
            l3: 14,
            ipv6: false,
            l4: 42,
            l4_needed: 8,
        },
        Cut {
            what: "ICMPv4 port unreachable to the public address",
            side: Side::Internet,
            frame: icmp4_error_in(icmp(3, 3, 0), &sent),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 8 + 20 + 8,
        },
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for cut in &cuts {
        for len in 0..cut.frame.len() {
            checked += 1;
            if let Err(problem) = check_cut(&mut gw, cut.side, &cut.frame[..len]) {
                failures.push(format!("{} cut to {len} bytes: {problem}", cut.what));
            }
        }
        for len in cut.l4..cut.l4 + cut.l4_needed {
            checked += 1;
            if let Err(problem) = check_cut(&mut gw, cut.side, &consistently_cut(cut, len)) {
                failures.push(format!(
                    "{} ending {} bytes into the transport header: {problem}",
                    cut.what,
                    len - cut.l4
                ));
            }
        }
    }
    eprintln!("{checked} cut NAT64 frames checked");
    assert!(
        failures.is_empty(),
        "{} cut frames mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing was disturbed: the session still carries replies.
    expect_frame(
        &mut gw,
        "reply after the sweep",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        &udp_to_client(CLIENT, REMOTE, 53, 5353),
        INBOUND,
    );
}

#[test]
fn vlan_tagged_nat64_is_translated_and_left_to_the_kernel() {
    let mut gw = nat64_gateway(NSP);
    let input = eth6(
        FROM_INSTANCE.tagged(100),
        packet6(&ip6(CLIENT, nsp(REMOTE), 64), Upper::Udp(5353, 53), PAYLOAD),
    );
    let output = send(
        &mut gw,
        "tagged UDP out",
        Side::Vpc,
        &input,
        Verdict::Pass,
        &[("forward_nat64_outbound", 1), ("pass_vlan_to_kernel", 1)],
    );
    // Translated in XDP; the TTL and the MACs are the kernel's VLAN device's to change.
    let id = u16::from_be_bytes([output[22], output[23]]);
    assert_frame(
        "tagged UDP out",
        &eth4(
            FROM_INSTANCE.tagged(100),
            packet4(
                &ip4(PUBLIC, REMOTE, 64).id(id),
                Upper::Udp(5353, 53),
                PAYLOAD,
            ),
        ),
        &output,
    );
}

#[test]
fn flow_entries_record_the_translated_endpoints() {
    let mut gw = nat64_gateway(NSP);
    let vpc0 = gw.ifindex(Side::Vpc);
    let inet0 = gw.ifindex(Side::Internet);
    send(
        &mut gw,
        "UDP out",
        Side::Vpc,
        &udp_out(CLIENT, REMOTE, 5353, 53),
        Verdict::Redirect,
        OUTBOUND,
    );
    send(
        &mut gw,
        "UDP reply",
        Side::Internet,
        &udp_in(REMOTE, 53, 5353),
        Verdict::Redirect,
        INBOUND,
    );
    expect_drop(
        &mut gw,
        "a Routing header with a segment left",
        Side::Vpc,
        &eth6(
            FROM_INSTANCE,
            packet6(
                &ip6(CLIENT, nsp(REMOTE), 64).extensions(Ipv6Extensions {
                    routing: Some(routing_header(IpNumber::UDP, 1)),
                    ..Default::default()
                }),
                Upper::Udp(5354, 53),
                PAYLOAD,
            ),
        ),
        "drop_nat64_routing_header",
    );
    let flows = gw.dataplane.flows().expect("flows");
    let wide = |v4: [u8; 4]| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&v4);
        bytes
    };
    let find = |src: [u8; 16], dst: [u8; 16], sport: u16| {
        flows
            .iter()
            .find(|(key, _)| key.src == src && key.dst == dst && key.src_port == sport)
            .unwrap_or_else(|| panic!("no flow {src:02x?} -> {dst:02x?} in {flows:#?}"))
    };
    let (key, stats) = find(CLIENT, nsp(REMOTE), 5353);
    assert_eq!(
        (key.family, key.protocol, key.dst_port, key.ingress_ifindex),
        (family::IPV6, 17, 53, vpc0),
        "outbound key {key:?}"
    );
    assert_eq!(key.action, action::ACCEPT);
    assert_eq!(
        (
            stats.translated_src,
            stats.translated_dst,
            stats.translated_src_port,
            stats.translated_dst_port
        ),
        (wide(PUBLIC), wide(REMOTE), 5353, 53),
        "outbound: the IPv4 endpoints it left with {stats:?}"
    );
    assert_eq!(
        (stats.route_target, stats.direction, stats.packets),
        (target::NAT_GATEWAY, direction::EGRESS, 1),
        "{stats:?}"
    );
    // IPv6 header + UDP header + payload, as it arrived.
    assert_eq!(stats.bytes, (40 + 8 + PAYLOAD.len()) as u64, "{stats:?}");

    let (key, stats) = find(wide(REMOTE), wide(PUBLIC), 53);
    assert_eq!(
        (key.family, key.protocol, key.dst_port, key.ingress_ifindex),
        (family::IPV4, 17, 5353, inet0),
        "inbound key {key:?}"
    );
    assert_eq!(
        (
            stats.translated_src,
            stats.translated_dst,
            stats.translated_src_port,
            stats.translated_dst_port
        ),
        (nsp(REMOTE), CLIENT, 53, 5353),
        "inbound: the IPv6 endpoints it left with {stats:?}"
    );
    assert_eq!(stats.direction, direction::INGRESS, "{stats:?}");

    let (key, stats) = flows
        .iter()
        .find(|(key, _)| key.action == action::REJECT)
        .unwrap_or_else(|| panic!("no REJECT flow in {flows:#?}"));
    assert_eq!((key.src, key.dst), (CLIENT, nsp(REMOTE)), "{key:?}");
    assert_eq!(
        stats.drop_reason,
        gateway_common::Counter::DropNat64RoutingHeader as u16,
        "{stats:?}"
    );
}

/// The second packet of an established NAT64 flow, each way, takes the fast path (the next hop
/// cached in its flow entry, the session still refreshed) and leaves exactly as the first did.
#[test]
fn established_flows_take_the_fast_path_with_identical_output() {
    let mut gw = nat64_gateway(NSP);
    let input = eth6(
        FROM_INSTANCE,
        packet6(&ip6(CLIENT, nsp(REMOTE), 64), Upper::Udp(5353, 53), PAYLOAD),
    );
    let expected = |id| {
        packet4(
            &ip4(PUBLIC, REMOTE, 63).id(id),
            Upper::Udp(5353, 53),
            PAYLOAD,
        )
    };
    let session = [
        ("forward_nat64_outbound", 1),
        ("nat_connection_attempt", 1),
        ("nat_mapping_created", 1),
        ("nat_port_preserved", 1),
        ("nat_packets_in_from_source", 1),
        ("nat_packets_out_to_destination", 1),
    ];
    expect_ipv4_out(&mut gw, "first packet out", &input, expected, &session);
    expect_ipv4_out(
        &mut gw,
        "second packet out (fast path)",
        &input,
        expected,
        &[
            ("forward_nat64_outbound", 1),
            ("fast_path_forwarded", 1),
            ("nat_packets_in_from_source", 1),
            ("nat_packets_out_to_destination", 1),
        ],
    );
    let reply = eth4(
        FROM_INTERNET,
        packet4(&ip4(REMOTE, PUBLIC, 64), Upper::Udp(53, 5353), PAYLOAD),
    );
    let translated = eth6(
        TO_INSTANCE,
        packet6(&ip6(nsp(REMOTE), CLIENT, 63), Upper::Udp(53, 5353), PAYLOAD),
    );
    let inbound = [
        ("forward_nat64_inbound", 1),
        ("nat_packets_in_from_destination", 1),
        ("nat_packets_out_to_source", 1),
    ];
    expect_frame(
        &mut gw,
        "first reply",
        Side::Internet,
        &reply,
        &translated,
        &inbound,
    );
    let mut fast = inbound.to_vec();
    fast.push(("fast_path_forwarded", 1));
    expect_frame(
        &mut gw,
        "second reply (fast path)",
        Side::Internet,
        &reply,
        &translated,
        &fast,
    );
}

/// RFC 7915 s4: an IPv4 reply with DF set that would not fit the client's link once translated
/// (1500 bytes of IPv4 are 1520 of IPv6, over the 1500-byte link) is answered by the gateway
/// with ICMPv4 "fragmentation needed", MTU 1480, from the public address, quoting the reply's
/// header and first 8 bytes; it goes back out where it came from. Without DF, and at 1480 bytes,
/// it is translated.
#[test]
fn a_reply_too_big_for_the_client_link_is_answered_with_fragmentation_needed() {
    let mut gw = nat64_gateway(NSP);
    expect_ipv4_out(
        &mut gw,
        "UDP out",
        &udp_out(CLIENT, REMOTE, 5353, 53),
        |id| {
            packet4(
                &ip4(PUBLIC, REMOTE, 63).id(id),
                Upper::Udp(5353, 53),
                PAYLOAD,
            )
        },
        &[
            ("forward_nat64_outbound", 1),
            ("nat_connection_attempt", 1),
            ("nat_mapping_created", 1),
            ("nat_port_preserved", 1),
            ("nat_packets_in_from_source", 1),
            ("nat_packets_out_to_destination", 1),
        ],
    );
    let big = vec![0x5a; 1500 - 28];
    let reply = packet4(
        &ip4(REMOTE, PUBLIC, 64).df(true),
        Upper::Udp(53, 5353),
        &big,
    );
    let quote = reply[..28].to_vec();
    let answer = eth4(
        TO_INTERNET,
        packet4(
            &ip4(PUBLIC, REMOTE, 64).id(0),
            Upper::Icmp(3, 4, [0, 0, 0x05, 0xc8]),
            &quote,
        ),
    );
    let output = send(
        &mut gw,
        "1500-byte reply with DF",
        Side::Internet,
        &eth4(FROM_INTERNET, reply),
        Verdict::Tx,
        &[("nat64_frag_needed_sent", 1)],
    );
    assert_frame("fragmentation needed", &answer, &output);
    // The same size without DF is translated and, too big for the FIB's next hop, handed to the
    // kernel (RFC 7915 would fragment it; the gateway does not, see the README).
    let without_df = packet4(&ip4(REMOTE, PUBLIC, 64), Upper::Udp(53, 5353), &big);
    send_unverified(
        &mut gw,
        "1500-byte reply without DF",
        Side::Internet,
        &eth4(FROM_INTERNET, without_df),
        Verdict::Pass,
        &[("forward_nat64_inbound", 1), ("pass_frag_needed", 1)],
    );
    // 1480 bytes become 1500: they fit, and are translated.
    let fits = vec![0x5a; 1480 - 28];
    expect_frame(
        &mut gw,
        "1480-byte reply with DF",
        Side::Internet,
        &eth4(
            FROM_INTERNET,
            packet4(
                &ip4(REMOTE, PUBLIC, 64).df(true),
                Upper::Udp(53, 5353),
                &fits,
            ),
        ),
        &eth6(
            TO_INSTANCE,
            packet6(&ip6(nsp(REMOTE), CLIENT, 63), Upper::Udp(53, 5353), &fits),
        ),
        INBOUND,
    );
}
