//! Packet tests of the egress-only internet gateway through `BPF_PROG_TEST_RUN`.
//!
//! The gateway runs with a VPC whose private subnet (2001:db8:1000:1::/64, the instance
//! 2001:db8:1000:1::10) routes `::/0` to an egress-only internet gateway, and whose public subnet
//! (2001:db8:1000:2::/64, an instance at ::20) routes `::/0` to the internet gateway. The tests are
//! stateful sequences: each step names the frame, the side it arrives on, the verdict, the frame
//! the program must leave behind (built independently with etherparse) and the exact set of
//! counters that move by one; the connection-tracking table is read back between steps through
//! `Dataplane::conntrack()`.
//!
//! Each test loads its own gateway in its own network namespace (see `packet::gateway`), so they
//! run in parallel. Run as root: `cargo test -p gateway-tests --test eigw_packet_tests`.

#[expect(
    dead_code,
    reason = "helpers shared with packet_tests.rs; this binary uses part of them"
)]
mod packet;

use std::time::Duration;

use etherparse::{
    IcmpEchoHeader, Icmpv6Type, IpHeaders, IpNumber, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
    icmpv6::{DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader, TimeExceededCode},
};
use gateway_common::{
    Counter,
    conntrack::{ConnEntry, ConnKey, kind, state, tcp_flags::*},
    maps::{FlowKey, FlowStats, action, direction, family, target},
};

use crate::packet::{
    empty::EmptyXdp,
    frames::*,
    gateway::{Side, TestGateway, Verdict, counter_delta, expected_delta, parse_config, xdp_md},
};

/// A second instance of the private subnet (quoted as the sender of packets it never sent).
const OTHER_INSTANCE6: [u8; 16] = v6([0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 0x11]);
/// An instance of the public subnet (internet gateway both ways).
const PUBLIC_INSTANCE6: [u8; 16] = v6([0x2001, 0xdb8, 0x1000, 2, 0, 0, 0, 0x20]);
/// Another internet host.
const OTHER_REMOTE6: [u8; 16] = v6([0x2001, 0xdb8, 0xeeee, 0, 0, 0, 0, 0x11]);
/// The router on the path, as the source of ICMPv6 errors; and the gateway's internet address.
const ROUTER6: [u8; 16] = v6([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2]);
const GATEWAY_INET6: [u8; 16] = v6([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1]);

/// The test VPC with an egress-only internet gateway; `conntrack` is the `[conntrack]` section.
fn eigw_config_text(conntrack: &str) -> String {
    format!(
        r#"
[vpc]
id = "vpc-eigw-packet-tests"
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

[[subnets]]
id = "subnet-public"
ipv4_cidr = "10.0.2.0/24"
ipv6_cidr = "2001:db8:1000:2::/64"
route_table = "rtb-public"

[[route_tables]]
id = "rtb-private"
routes = [
  {{ destination = "0.0.0.0/0", target = "igw-packet-tests" }},
  {{ destination = "::/0", target = "eigw-packet-tests" }},
]

[[route_tables]]
id = "rtb-public"
routes = [
  {{ destination = "0.0.0.0/0", target = "igw-packet-tests" }},
  {{ destination = "::/0", target = "igw-packet-tests" }},
]

[internet_gateway]
id = "igw-packet-tests"
elastic_ips = [{{ private = "10.0.1.10", public = "203.0.113.10" }}]

[[egress_only_internet_gateways]]
id = "eigw-packet-tests"

{conntrack}
"#
    )
}

/// The public subnet needs its own on-link prefix and a neighbour in the gateway's namespace.
fn public_subnet_setup() -> Vec<String> {
    vec![
        "addr add 2001:db8:1000:2::1/64 dev vpc0 nodad".to_string(),
        "neigh add 2001:db8:1000:2::20 lladdr 02:00:00:00:0a:0a nud permanent dev vpc0".to_string(),
    ]
}

/// The gateway with the default timeouts (minutes: nothing expires during a test).
fn eigw_gateway() -> TestGateway {
    TestGateway::with_config(&parse_config(&eigw_config_text("")), &public_subnet_setup())
}

/// The gateway with 1-second timeouts, except 2 s for established TCP.
fn short_timeout_gateway() -> TestGateway {
    let conntrack = "[conntrack]
tcp_established_idle_seconds = 2
tcp_transitory_idle_seconds = 1
udp_idle_seconds = 1
icmp_idle_seconds = 1
other_idle_seconds = 1";
    TestGateway::with_config(
        &parse_config(&eigw_config_text(conntrack)),
        &public_subnet_setup(),
    )
}

// --- Packets (IPv6, no link layer), every checksum computed by etherparse.

const SEQUENCE: u32 = 0x1000_0000;
const ACK_NUMBER: u32 = 0x2000_0000;

/// A TCP segment with `flags` (FIN, SYN, RST, ACK from `gateway_common::conntrack::tcp_flags`).
fn tcp6(
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    ports: (u16, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_with(
        PacketBuilder::ipv6(src, dst, hop_limit),
        ports,
        flags,
        payload,
    )
}

fn tcp_with(
    builder: etherparse::PacketBuilderStep<IpHeaders>,
    (sport, dport): (u16, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut builder = builder.tcp(sport, dport, SEQUENCE, 64240);
    if flags & SYN != 0 {
        builder = builder.syn();
    }
    if flags & FIN != 0 {
        builder = builder.fin();
    }
    if flags & RST != 0 {
        builder = builder.rst();
    }
    if flags & ACK != 0 {
        builder = builder.ack(ACK_NUMBER);
    }
    let mut out = Vec::new();
    builder
        .write(&mut out, payload)
        .unwrap_or_else(|error| panic!("building a TCP/IPv6 packet: {error}"));
    out
}

fn udp6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, (sport, dport): (u16, u16)) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, hop_limit)
        .udp(sport, dport)
        .write(&mut out, PAYLOAD)
        .unwrap_or_else(|error| panic!("building a UDP/IPv6 packet: {error}"));
    out
}

fn icmp6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, icmp: Icmpv6Type, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, hop_limit)
        .icmpv6(icmp)
        .write(&mut out, body)
        .unwrap_or_else(|error| panic!("building an ICMPv6 packet: {error}"));
    out
}

fn echo_request(id: u16) -> Icmpv6Type {
    Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq: 1 })
}

fn echo_reply(id: u16) -> Icmpv6Type {
    Icmpv6Type::EchoReply(IcmpEchoHeader { id, seq: 1 })
}

const PACKET_TOO_BIG: Icmpv6Type = Icmpv6Type::PacketTooBig { mtu: 1280 };
const PORT_UNREACHABLE: Icmpv6Type = Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port);
const TIME_EXCEEDED: Icmpv6Type = Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded);
const PARAMETER_PROBLEM: Icmpv6Type = Icmpv6Type::ParameterProblem(ParameterProblemHeader {
    code: ParameterProblemCode::ErroneousHeaderField,
    pointer: 6,
});

/// An IPv6 packet with a raw payload and protocol `next_header` (no transport header built).
fn raw6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, next_header: u8, body: &[u8]) -> Vec<u8> {
    let mut header = Ipv6Header {
        next_header: IpNumber(next_header),
        hop_limit,
        source: src,
        destination: dst,
        ..Ipv6Header::default()
    };
    header
        .set_payload_length(body.len())
        .unwrap_or_else(|error| panic!("IPv6 payload length: {error}"));
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The IPv6 header `Ipv6Header::default()` plus a Destination Options header (PadN) before TCP.
fn tcp6_behind_destination_options(
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    ports: (u16, u16),
    flags: u8,
) -> Vec<u8> {
    let header = Ipv6Header {
        hop_limit,
        source: src,
        destination: dst,
        ..Ipv6Header::default()
    };
    // PadN option of 4 bytes of padding: 6 bytes of option data, the smallest header (8 bytes).
    let options = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0])
        .unwrap_or_else(|error| panic!("destination options: {error}"));
    let extensions = etherparse::Ipv6Extensions {
        destination_options: Some(options),
        ..Default::default()
    };
    tcp_with(
        PacketBuilder::ip(IpHeaders::Ipv6(header, extensions)),
        ports,
        flags,
        PAYLOAD,
    )
}

/// An IPv6 fragment of a `protocol` packet: offset in 8-byte units, `body` after the Fragment
/// header as is (a later fragment carries no transport header).
///
/// The 8-byte Fragment header is written here rather than by etherparse: etherparse 0.19's
/// `Ipv6FragmentHeader::to_bytes` puts the M flag in bit 7 of byte 3 and the offset's low bits
/// below it (the IPv4 layout; JulianSchmid/etherparse#150, fixed in 0.20), so a first fragment
/// (offset 0, M) comes out as offset 16. RFC 8200 4.5: bytes 2-3 are `offset << 3 | M`.
fn fragment6(
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    protocol: IpNumber,
    (offset, more_fragments): (u16, bool),
    body: &[u8],
) -> Vec<u8> {
    assert!(offset < 1 << 13, "fragment offset {offset} has 13 bits");
    let offset_and_flag = (offset << 3) | u16::from(more_fragments);
    let mut rest = vec![protocol.0, 0];
    rest.extend_from_slice(&offset_and_flag.to_be_bytes());
    rest.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    rest.extend_from_slice(body);
    raw6(src, dst, hop_limit, 44, &rest)
}

// --- Steps.

/// What the program must leave in the frame.
enum Output {
    Unchanged,
    Frame(Vec<u8>),
    /// Not checked (dropped frames).
    Ignored,
}

struct Step {
    description: String,
    side: Side,
    input: Vec<u8>,
    verdict: Verdict,
    output: Output,
    /// Counters that move by exactly one besides `rx_packets`; every other counter stays still.
    counters: Vec<Counter>,
}

/// An instance's packet built by `packet(hop_limit)`: forwarded to the router, hop limit - 1.
fn out_forwarded(description: &str, packet: impl Fn(u8) -> Vec<u8>, counters: &[Counter]) -> Step {
    Step {
        description: description.to_string(),
        side: Side::Vpc,
        input: eth6(FROM_INSTANCE, packet(64)),
        verdict: Verdict::Redirect,
        output: Output::Frame(eth6(TO_INTERNET, packet(63))),
        counters: counters.to_vec(),
    }
}

/// A packet from the internet built by `packet(hop_limit)`: forwarded to the instance.
fn in_forwarded(description: &str, packet: impl Fn(u8) -> Vec<u8>, counters: &[Counter]) -> Step {
    Step {
        description: description.to_string(),
        side: Side::Internet,
        input: eth6(FROM_INTERNET, packet(64)),
        verdict: Verdict::Redirect,
        output: Output::Frame(eth6(TO_INSTANCE, packet(63))),
        counters: counters.to_vec(),
    }
}

/// A reply through the egress-only gateway.
fn reply_passes(description: &str, packet: impl Fn(u8) -> Vec<u8>) -> Step {
    in_forwarded(description, packet, &[Counter::ForwardEigwInbound])
}

/// A packet from the internet, dropped with `counter`.
fn in_dropped(description: &str, packet: Vec<u8>, counter: Counter) -> Step {
    Step {
        description: description.to_string(),
        side: Side::Internet,
        input: eth6(FROM_INTERNET, packet),
        verdict: Verdict::Drop,
        output: Output::Ignored,
        counters: vec![counter],
    }
}

/// Runs one step; panics with everything that differs. A forwarded packet of a flow seen before
/// may come from the fast path (same output, plus `fast_path_forwarded`): returns whether it did.
fn run_step(gateway: &mut TestGateway, step: &Step) -> bool {
    let before = gateway.counters();
    let outcome = gateway
        .try_run(step.side, &step.input, 1)
        .unwrap_or_else(|error| {
            panic!(
                "{}: the kernel refused to run the program: {error}",
                step.description
            )
        });
    let mut moved = counter_delta(&before, &gateway.counters());
    let fast = step.verdict == Verdict::Redirect
        && moved.remove(Counter::FastPathForwarded.name()) == Some(1);
    let mut problems = Vec::new();
    if outcome.verdict != step.verdict {
        problems.push(format!(
            "verdict {:?}, expected {:?}",
            outcome.verdict, step.verdict
        ));
    }
    let expected_frame = match &step.output {
        Output::Unchanged => Some(&step.input),
        Output::Frame(frame) => Some(frame),
        Output::Ignored => None,
    };
    if let Some(expected) = expected_frame
        && *expected != outcome.frame
    {
        problems.push(format!(
            "output frame differs:\n{}",
            hex_diff(expected, &outcome.frame)
        ));
    }
    let expected = expected_delta(&step.counters);
    if moved != expected {
        problems.push(format!("counters moved {moved:?}, expected {expected:?}"));
    }
    assert!(
        problems.is_empty(),
        "step {:?} (from {:?}):\n{}\nconntrack table:\n{}",
        step.description,
        step.side,
        problems.join("\n"),
        describe(&table(gateway))
    );
    eprintln!(
        "ok     {}{}",
        step.description,
        if fast { " (fast path)" } else { "" }
    );
    fast
}

/// Runs the steps in order; returns how many the fast path forwarded.
fn run_steps(gateway: &mut TestGateway, steps: &[Step]) -> usize {
    steps.iter().filter(|step| run_step(gateway, step)).count()
}

// --- The connection-tracking table.

fn table(gateway: &TestGateway) -> Vec<(ConnKey, ConnEntry)> {
    gateway
        .dataplane
        .conntrack()
        .unwrap_or_else(|error| panic!("reading the conntrack table: {error:#}"))
}

/// The table one entry a line, addresses readable.
fn describe(entries: &[(ConnKey, ConnEntry)]) -> String {
    entries
        .iter()
        .map(|(key, entry)| {
            format!(
                "  proto {} [{}]:{} <-> [{}]:{} kind {} family {}: {} out {}/{} in {}/{} \
                 created {} last seen {}",
                key.protocol,
                std::net::Ipv6Addr::from(key.inside_addr),
                key.inside_port,
                std::net::Ipv6Addr::from(key.remote_addr),
                key.remote_port,
                key.kind,
                key.family,
                state::name(entry.state),
                entry.packets_out,
                entry.bytes_out,
                entry.packets_in,
                entry.bytes_in,
                entry.created_ns,
                entry.last_seen_ns
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The key of a flow through the egress-only gateway (ICMPv6 echo: identifier, 0).
fn flow_key(
    protocol: u8,
    inside: [u8; 16],
    inside_port: u16,
    remote: [u8; 16],
    remote_port: u16,
) -> ConnKey {
    ConnKey {
        inside_addr: inside,
        remote_addr: remote,
        inside_port,
        remote_port,
        protocol,
        family: family::IPV6,
        kind: kind::EGRESS_ONLY,
        _pad: 0,
    }
}

fn tcp_key(inside_port: u16, remote_port: u16) -> ConnKey {
    flow_key(6, INSTANCE6, inside_port, REMOTE6, remote_port)
}

fn udp_key(inside_port: u16, remote_port: u16) -> ConnKey {
    flow_key(17, INSTANCE6, inside_port, REMOTE6, remote_port)
}

fn echo_key(identifier: u16) -> ConnKey {
    flow_key(58, INSTANCE6, identifier, REMOTE6, 0)
}

/// The entry of `key`; panics (showing the table) if there is none.
fn entry(gateway: &TestGateway, key: &ConnKey, context: &str) -> ConnEntry {
    let entries = table(gateway);
    entries
        .iter()
        .find(|(candidate, _)| candidate == key)
        .map(|(_, entry)| *entry)
        .unwrap_or_else(|| {
            panic!(
                "{context}: no conntrack entry {key:?} in:\n{}",
                describe(&entries)
            )
        })
}

fn assert_state(gateway: &TestGateway, key: &ConnKey, expected: u8, context: &str) {
    let found = entry(gateway, key, context);
    assert_eq!(
        state::name(found.state),
        state::name(expected),
        "{context}: state of {key:?} ({found:?})"
    );
}

fn assert_table_len(gateway: &TestGateway, expected: usize, context: &str) {
    let entries = table(gateway);
    assert_eq!(
        entries.len(),
        expected,
        "{context}: conntrack entries:\n{}",
        describe(&entries)
    );
}

// --- Flows used by several tests.

const TCP_PORTS_OUT: (u16, u16) = (40000, 443);
const TCP_PORTS_IN: (u16, u16) = (443, 40000);

fn tcp_out(flags: u8) -> impl Fn(u8) -> Vec<u8> {
    move |hop| tcp6(INSTANCE6, REMOTE6, hop, TCP_PORTS_OUT, flags, PAYLOAD)
}

fn tcp_in(flags: u8) -> impl Fn(u8) -> Vec<u8> {
    move |hop| tcp6(REMOTE6, INSTANCE6, hop, TCP_PORTS_IN, flags, PAYLOAD)
}

/// Bytes of an IPv6 TCP packet of this file's payload (IPv6 header included), as conntrack counts.
fn tcp_packet_bytes() -> u64 {
    (40 + 20 + PAYLOAD.len()) as u64
}

// --- Tests.

#[test]
fn outbound_tcp_creates_state_and_its_replies_pass() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    assert_table_len(&gateway, 0, "a fresh gateway");
    run_step(
        &mut gateway,
        &out_forwarded(
            "TCP SYN out: state created, forwarded unchanged but hop limit - 1",
            tcp_out(SYN),
            &[ForwardEigwOutbound, ConntrackCreated],
        ),
    );
    let key = tcp_key(40000, 443);
    let created = entry(&gateway, &key, "after the SYN");
    assert_eq!(state::name(created.state), "syn-sent", "{created:?}");
    assert_eq!(
        (
            created.packets_out,
            created.bytes_out,
            created.packets_in,
            created.bytes_in
        ),
        (1, tcp_packet_bytes(), 0, 0),
        "counts after the SYN: {created:?}"
    );
    assert_eq!(created.subnet_index, 0, "the private subnet: {created:?}");
    assert_eq!(
        created.created_ns, created.last_seen_ns,
        "a new entry: {created:?}"
    );
    assert_table_len(&gateway, 1, "one flow");

    run_step(
        &mut gateway,
        &reply_passes("TCP SYN-ACK in: the reply passes", tcp_in(SYN | ACK)),
    );
    assert_state(&gateway, &key, state::TCP_ESTABLISHED, "after the SYN-ACK");
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP ACK out: state refreshed, nothing created",
                tcp_out(ACK),
                &[ForwardEigwOutbound],
            ),
            reply_passes("TCP data in", tcp_in(ACK)),
            out_forwarded("TCP FIN out", tcp_out(FIN | ACK), &[ForwardEigwOutbound]),
        ],
    );
    assert_state(&gateway, &key, state::TCP_FIN_WAIT, "after our FIN");
    run_step(&mut gateway, &reply_passes("TCP FIN in", tcp_in(FIN | ACK)));
    assert_state(&gateway, &key, state::TCP_CLOSING, "after both FINs");
    run_step(
        &mut gateway,
        &out_forwarded("TCP last ACK out", tcp_out(ACK), &[ForwardEigwOutbound]),
    );
    let last = entry(&gateway, &key, "at the end");
    assert_eq!(
        (last.packets_out, last.packets_in),
        (4, 3),
        "packets each way: {last:?}"
    );
    assert_eq!(
        (last.bytes_out, last.bytes_in),
        (4 * tcp_packet_bytes(), 3 * tcp_packet_bytes()),
        "bytes each way: {last:?}"
    );
    assert!(
        last.last_seen_ns >= created.last_seen_ns && last.created_ns == created.created_ns,
        "refreshed, not recreated: {created:?} -> {last:?}"
    );
    assert_table_len(&gateway, 1, "still one flow");
}

#[test]
fn an_inbound_reset_closes_and_a_new_syn_reopens() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let key = tcp_key(40000, 443);
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes(
                "RST-ACK in answering the SYN: passes (port closed)",
                tcp_in(RST | ACK),
            ),
        ],
    );
    assert_state(&gateway, &key, state::TCP_CLOSED, "after the RST");
    run_step(
        &mut gateway,
        &out_forwarded(
            "TCP SYN out on the same ports: reopens the entry",
            tcp_out(SYN),
            &[ForwardEigwOutbound],
        ),
    );
    assert_state(&gateway, &key, state::TCP_SYN_SENT, "after the new SYN");
    assert_table_len(&gateway, 1, "the same entry");
}

#[test]
fn unsolicited_inbound_is_dropped_and_counted_by_kind() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let tcp = |flags| tcp6(REMOTE6, INSTANCE6, 64, (443, 40000), flags, PAYLOAD);
    let steps = [
        in_dropped("unsolicited TCP SYN", tcp(SYN), DropEigwUnsolicitedTcpSyn),
        in_dropped("unsolicited TCP ACK", tcp(ACK), DropEigwUnsolicitedTcp),
        in_dropped("unsolicited TCP RST", tcp(RST), DropEigwUnsolicitedTcp),
        in_dropped(
            "unsolicited TCP RST-ACK",
            tcp(RST | ACK),
            DropEigwUnsolicitedTcp,
        ),
        in_dropped(
            "unsolicited TCP SYN-ACK",
            tcp(SYN | ACK),
            DropEigwUnsolicitedTcp,
        ),
        in_dropped(
            "unsolicited TCP FIN-ACK",
            tcp(FIN | ACK),
            DropEigwUnsolicitedTcp,
        ),
        in_dropped(
            "unsolicited TCP SYN to port 22",
            tcp6(REMOTE6, INSTANCE6, 64, (50000, 22), SYN, &[]),
            DropEigwUnsolicitedTcpSyn,
        ),
        in_dropped(
            "unsolicited UDP",
            udp6(REMOTE6, INSTANCE6, 64, (53, 40000)),
            DropEigwUnsolicitedUdp,
        ),
        in_dropped(
            "unsolicited ICMPv6 echo request",
            icmp6(REMOTE6, INSTANCE6, 64, echo_request(7), PAYLOAD),
            DropEigwUnsolicitedIcmpv6,
        ),
        in_dropped(
            "ICMPv6 echo reply without a request",
            icmp6(REMOTE6, INSTANCE6, 64, echo_reply(7), PAYLOAD),
            DropEigwUnsolicitedIcmpv6,
        ),
        in_dropped(
            "another protocol (SCTP, 132)",
            raw6(REMOTE6, INSTANCE6, 64, 132, &[0x11; 32]),
            DropEigwUnsolicitedOther,
        ),
        in_dropped(
            "unsolicited TCP SYN with hop limit 1: dropped, not handed to the kernel",
            tcp6(REMOTE6, INSTANCE6, 1, (443, 40000), SYN, &[]),
            DropEigwUnsolicitedTcpSyn,
        ),
        in_dropped(
            "unsolicited TCP SYN to another instance of the private subnet",
            tcp6(REMOTE6, OTHER_INSTANCE6, 64, (443, 40000), SYN, &[]),
            DropEigwUnsolicitedTcpSyn,
        ),
    ];
    run_steps(&mut gateway, &steps);
    assert_table_len(&gateway, 0, "nothing unsolicited creates state");

    // Every drop is a REJECT flow with its reason, direction ingress, no route target.
    let flows = gateway
        .dataplane
        .flows()
        .unwrap_or_else(|error| panic!("reading the flows: {error:#}"));
    let find = |src_port: u16, dst_port: u16, protocol: u8| -> (FlowKey, FlowStats) {
        *flows
            .iter()
            .find(|(key, _)| {
                key.src == REMOTE6
                    && key.dst == INSTANCE6
                    && (key.src_port, key.dst_port, key.protocol) == (src_port, dst_port, protocol)
            })
            .unwrap_or_else(|| {
                panic!("no flow {src_port} -> {dst_port} protocol {protocol} in {flows:#?}")
            })
    };
    for (src_port, dst_port, protocol, reason) in [
        (50000, 22, 6, DropEigwUnsolicitedTcpSyn),
        (53, 40000, 17, DropEigwUnsolicitedUdp),
        (128, 0, 58, DropEigwUnsolicitedIcmpv6),
    ] {
        let (key, stats) = find(src_port, dst_port, protocol);
        assert_eq!(key.action, action::REJECT, "{key:?} {stats:?}");
        assert_eq!(key.family, family::IPV6, "{key:?}");
        assert_eq!(
            key.ingress_ifindex,
            gateway.ifindex(Side::Internet),
            "{key:?}"
        );
        assert_eq!(stats.drop_reason, reason as u16, "{key:?} {stats:?}");
        assert_eq!(stats.direction, direction::INGRESS, "{stats:?}");
        assert_eq!(stats.route_target, 0, "{stats:?}");
        assert_eq!(stats.subnet_index, 0, "{stats:?}");
    }
}

#[test]
fn replies_must_match_the_whole_flow() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            in_dropped(
                "SYN-ACK from another remote port",
                tcp6(REMOTE6, INSTANCE6, 64, (444, 40000), SYN | ACK, &[]),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "SYN-ACK to another local port",
                tcp6(REMOTE6, INSTANCE6, 64, (443, 40001), SYN | ACK, &[]),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "SYN-ACK from another internet host",
                tcp6(OTHER_REMOTE6, INSTANCE6, 64, TCP_PORTS_IN, SYN | ACK, &[]),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "SYN-ACK to another instance",
                tcp6(REMOTE6, OTHER_INSTANCE6, 64, TCP_PORTS_IN, SYN | ACK, &[]),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "UDP on the TCP flow's ports",
                udp6(REMOTE6, INSTANCE6, 64, TCP_PORTS_IN),
                DropEigwUnsolicitedUdp,
            ),
        ],
    );
    assert_state(
        &gateway,
        &tcp_key(40000, 443),
        state::TCP_SYN_SENT,
        "the near misses change nothing",
    );
    assert_table_len(&gateway, 1, "near misses create nothing");
}

#[test]
fn an_inbound_ack_while_syn_sent_is_dropped() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let key = tcp_key(40000, 443);
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            in_dropped(
                "TCP ACK in before any SYN-ACK",
                tcp_in(ACK)(64),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "TCP FIN-ACK in before any SYN-ACK",
                tcp_in(FIN | ACK)(64),
                DropEigwUnsolicitedTcp,
            ),
        ],
    );
    let waiting = entry(&gateway, &key, "after the early ACK");
    assert_eq!(state::name(waiting.state), "syn-sent", "{waiting:?}");
    assert_eq!(
        (waiting.packets_in, waiting.bytes_in),
        (0, 0),
        "dropped packets are not counted in the entry: {waiting:?}"
    );
    run_steps(
        &mut gateway,
        &[
            reply_passes("TCP SYN-ACK in", tcp_in(SYN | ACK)),
            reply_passes("TCP ACK in, now established", tcp_in(ACK)),
        ],
    );
    assert_state(&gateway, &key, state::TCP_ESTABLISHED, "after the SYN-ACK");
}

#[test]
fn simultaneous_open_establishes() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let key = tcp_key(40000, 443);
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes("TCP SYN in (the peer opens too)", tcp_in(SYN)),
        ],
    );
    assert_state(&gateway, &key, state::TCP_ESTABLISHED, "after both SYNs");
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN-ACK out",
                tcp_out(SYN | ACK),
                &[ForwardEigwOutbound],
            ),
            reply_passes("TCP SYN-ACK in", tcp_in(SYN | ACK)),
            reply_passes("TCP ACK in", tcp_in(ACK)),
        ],
    );
    assert_state(
        &gateway,
        &key,
        state::TCP_ESTABLISHED,
        "after the handshake",
    );
    assert_table_len(&gateway, 1, "one entry");
}

#[test]
fn udp_out_then_reply_in_passes() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let out = |hop| udp6(INSTANCE6, REMOTE6, hop, (40000, 53));
    let reply = |hop| udp6(REMOTE6, INSTANCE6, hop, (53, 40000));
    run_step(
        &mut gateway,
        &out_forwarded(
            "UDP out: state created",
            out,
            &[ForwardEigwOutbound, ConntrackCreated],
        ),
    );
    let key = udp_key(40000, 53);
    assert_state(&gateway, &key, state::OPEN, "after the datagram out");
    let fast = run_steps(
        &mut gateway,
        &[
            reply_passes("UDP reply in", reply),
            reply_passes("UDP second reply in", reply),
            out_forwarded("UDP out again: refreshed", out, &[ForwardEigwOutbound]),
            in_dropped(
                "UDP from another remote port",
                udp6(REMOTE6, INSTANCE6, 64, (5353, 40000)),
                DropEigwUnsolicitedUdp,
            ),
            in_dropped(
                "UDP from another host to the flow's port",
                udp6(OTHER_REMOTE6, INSTANCE6, 64, (53, 40000)),
                DropEigwUnsolicitedUdp,
            ),
        ],
    );
    let found = entry(&gateway, &key, "after the replies");
    assert_eq!(
        (found.packets_out, found.packets_in),
        (2, 2),
        "packets each way: {found:?}"
    );
    assert_table_len(&gateway, 1, "one entry");
    // The second reply and the second datagram out come from the fast path, which still
    // refreshed the entry (the counts above) and still dropped the near misses.
    assert_eq!(fast, 2, "packets forwarded by the fast path");
}

#[test]
fn icmpv6_echo_out_then_reply_in_passes() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    run_step(
        &mut gateway,
        &out_forwarded(
            "ICMPv6 echo request out (id 7): state created",
            |hop| icmp6(INSTANCE6, REMOTE6, hop, echo_request(7), PAYLOAD),
            &[ForwardEigwOutbound, ConntrackCreated],
        ),
    );
    assert_state(
        &gateway,
        &echo_key(7),
        state::OPEN,
        "after the echo request",
    );
    run_steps(
        &mut gateway,
        &[
            reply_passes("ICMPv6 echo reply in (id 7)", |hop| {
                icmp6(REMOTE6, INSTANCE6, hop, echo_reply(7), PAYLOAD)
            }),
            in_dropped(
                "ICMPv6 echo reply with another identifier (8)",
                icmp6(REMOTE6, INSTANCE6, 64, echo_reply(8), PAYLOAD),
                DropEigwUnsolicitedIcmpv6,
            ),
            in_dropped(
                "ICMPv6 echo reply (id 7) from another host",
                icmp6(OTHER_REMOTE6, INSTANCE6, 64, echo_reply(7), PAYLOAD),
                DropEigwUnsolicitedIcmpv6,
            ),
            in_dropped(
                "ICMPv6 echo request in with the tracked identifier: a request is never a reply",
                icmp6(REMOTE6, INSTANCE6, 64, echo_request(7), PAYLOAD),
                DropEigwUnsolicitedIcmpv6,
            ),
            out_forwarded(
                "ICMPv6 echo reply out (the instance answers something): no state",
                |hop| icmp6(INSTANCE6, REMOTE6, hop, echo_reply(9), PAYLOAD),
                &[ForwardEigwOutbound],
            ),
        ],
    );
    let found = entry(&gateway, &echo_key(7), "after the reply");
    assert_eq!((found.packets_out, found.packets_in), (1, 1), "{found:?}");
    assert_table_len(&gateway, 1, "only the echo request's entry");
}

/// An ICMPv6 error from the router on the path quoting `quoted` (the packet as it left).
fn error_from_router(icmp: Icmpv6Type, quoted: &[u8]) -> impl Fn(u8) -> Vec<u8> + '_ {
    move |hop| icmp6(ROUTER6, INSTANCE6, hop, icmp, quoted)
}

#[test]
fn icmpv6_errors_quoting_a_tracked_flow_pass_without_touching_state() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    // Three tracked flows, each as it left the gateway (hop limit 63).
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes("TCP SYN-ACK in", tcp_in(SYN | ACK)),
            out_forwarded(
                "UDP out",
                |hop| udp6(INSTANCE6, REMOTE6, hop, (40000, 33434)),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            out_forwarded(
                "ICMPv6 echo request out",
                |hop| icmp6(INSTANCE6, REMOTE6, hop, echo_request(7), PAYLOAD),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
        ],
    );
    let big_tcp_as_sent = tcp6(INSTANCE6, REMOTE6, 63, TCP_PORTS_OUT, ACK, &[0x5a; 1400]);
    // A Packet Too Big quotes as much as fits in 1280 bytes: 1280 - 40 - 8.
    let quoted_tcp = &big_tcp_as_sent[..1232];
    let quoted_udp = udp6(INSTANCE6, REMOTE6, 63, (40000, 33434));
    let quoted_echo = icmp6(INSTANCE6, REMOTE6, 63, echo_request(7), PAYLOAD);
    let snapshot = table(&gateway);
    assert_eq!(snapshot.len(), 3, "three flows:\n{}", describe(&snapshot));

    let related = [EigwIcmpErrorRelated, ForwardEigwInbound];
    run_steps(
        &mut gateway,
        &[
            in_forwarded(
                "Packet Too Big quoting the TCP flow (1232 bytes of it)",
                error_from_router(PACKET_TOO_BIG, quoted_tcp),
                &related,
            ),
            in_forwarded(
                "Packet Too Big quoting only 48 bytes (IPv6 + 8 of TCP)",
                error_from_router(PACKET_TOO_BIG, &big_tcp_as_sent[..48]),
                &related,
            ),
            in_forwarded(
                "Destination Unreachable (port) quoting the UDP flow",
                |hop| icmp6(REMOTE6, INSTANCE6, hop, PORT_UNREACHABLE, &quoted_udp),
                &related,
            ),
            in_forwarded(
                "Time Exceeded quoting the UDP flow (traceroute)",
                error_from_router(TIME_EXCEEDED, &quoted_udp),
                &related,
            ),
            in_forwarded(
                "Time Exceeded quoting the echo request",
                error_from_router(TIME_EXCEEDED, &quoted_echo),
                &related,
            ),
            in_forwarded(
                "Parameter Problem quoting the TCP flow",
                error_from_router(PARAMETER_PROBLEM, &big_tcp_as_sent[..48]),
                &related,
            ),
            in_forwarded(
                "Destination Unreachable quoting the TCP flow from the remote host itself",
                |hop| {
                    icmp6(
                        REMOTE6,
                        INSTANCE6,
                        hop,
                        PORT_UNREACHABLE,
                        &big_tcp_as_sent[..48],
                    )
                },
                &related,
            ),
        ],
    );
    assert_eq!(
        table(&gateway),
        snapshot,
        "errors neither refresh nor count into the entries they are about"
    );

    let unknown_tcp = tcp6(INSTANCE6, REMOTE6, 63, (40001, 443), ACK, &[0x5a; 64]);
    let from_other_instance = tcp6(OTHER_INSTANCE6, REMOTE6, 63, TCP_PORTS_OUT, ACK, PAYLOAD);
    let to_other_remote = udp6(INSTANCE6, OTHER_REMOTE6, 63, (40000, 33434));
    let other_echo = icmp6(INSTANCE6, REMOTE6, 63, echo_request(8), PAYLOAD);
    let quoted_reply = icmp6(INSTANCE6, REMOTE6, 63, echo_reply(7), PAYLOAD);
    let quoted_udp_as_tcp = raw6(INSTANCE6, REMOTE6, 63, 6, &quoted_udp[40..]);
    let no_flow = DropEigwIcmpErrorNoFlow;
    run_steps(
        &mut gateway,
        &[
            in_dropped(
                "Packet Too Big quoting an unknown TCP port",
                error_from_router(PACKET_TOO_BIG, &unknown_tcp)(64),
                no_flow,
            ),
            in_dropped(
                "Destination Unreachable quoting a UDP flow to another host",
                error_from_router(PORT_UNREACHABLE, &to_other_remote)(64),
                no_flow,
            ),
            in_dropped(
                "Time Exceeded quoting another echo identifier",
                error_from_router(TIME_EXCEEDED, &other_echo)(64),
                no_flow,
            ),
            in_dropped(
                "Time Exceeded quoting an echo reply (not a tracked request)",
                error_from_router(TIME_EXCEEDED, &quoted_reply)(64),
                no_flow,
            ),
            in_dropped(
                "Parameter Problem quoting the UDP flow's ports as TCP",
                error_from_router(PARAMETER_PROBLEM, &quoted_udp_as_tcp)(64),
                no_flow,
            ),
            in_dropped(
                "Packet Too Big to the instance quoting a packet another instance sent",
                error_from_router(PACKET_TOO_BIG, &from_other_instance)(64),
                no_flow,
            ),
            in_dropped(
                "Packet Too Big quoting the tracked flow, sent to another instance",
                icmp6(ROUTER6, OTHER_INSTANCE6, 64, PACKET_TOO_BIG, quoted_tcp),
                no_flow,
            ),
            in_dropped(
                "Packet Too Big cut inside the quoted IPv6 header",
                error_from_router(PACKET_TOO_BIG, &big_tcp_as_sent[..30])(64),
                no_flow,
            ),
        ],
    );
    assert_eq!(
        table(&gateway),
        snapshot,
        "errors about unknown flows create nothing and change nothing"
    );

    // The instance's own errors go out statelessly.
    run_step(
        &mut gateway,
        &out_forwarded(
            "Destination Unreachable out from the instance: forwarded, no state",
            |hop| {
                icmp6(
                    INSTANCE6,
                    REMOTE6,
                    hop,
                    PORT_UNREACHABLE,
                    &udp6(REMOTE6, INSTANCE6, 62, (33434, 53)),
                )
            },
            &[ForwardEigwOutbound],
        ),
    );
    assert_eq!(table(&gateway), snapshot, "an error never creates state");
}

#[test]
fn replies_are_dropped_after_expiry_and_a_new_packet_out_reopens() {
    use Counter::*;
    let mut gateway = short_timeout_gateway();
    let established = tcp_key(40001, 443);
    let established_out =
        |flags| move |hop| tcp6(INSTANCE6, REMOTE6, hop, (40001, 443), flags, PAYLOAD);
    let established_in =
        |flags| move |hop| tcp6(REMOTE6, INSTANCE6, hop, (443, 40001), flags, PAYLOAD);
    let udp_out = |hop| udp6(INSTANCE6, REMOTE6, hop, (40000, 53));
    let udp_reply = |hop| udp6(REMOTE6, INSTANCE6, hop, (53, 40000));
    let quoted_udp = udp6(INSTANCE6, REMOTE6, 63, (40000, 53));
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out (syn-sent: 1 s)",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            out_forwarded(
                "second TCP SYN out",
                established_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes("its SYN-ACK (established: 2 s)", established_in(SYN | ACK)),
            out_forwarded(
                "UDP out (1 s)",
                udp_out,
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            out_forwarded(
                "ICMPv6 echo request out (1 s)",
                |hop| icmp6(INSTANCE6, REMOTE6, hop, echo_request(7), PAYLOAD),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
        ],
    );
    assert_state(
        &gateway,
        &established,
        state::TCP_ESTABLISHED,
        "before the wait",
    );
    std::thread::sleep(Duration::from_millis(1500));
    run_steps(
        &mut gateway,
        &[
            in_dropped(
                "SYN-ACK 1.5 s after the SYN (syn-sent expired)",
                tcp_in(SYN | ACK)(64),
                DropEigwUnsolicitedTcp,
            ),
            in_dropped(
                "UDP reply 1.5 s later",
                udp_reply(64),
                DropEigwUnsolicitedUdp,
            ),
            in_dropped(
                "ICMPv6 echo reply 1.5 s later",
                icmp6(REMOTE6, INSTANCE6, 64, echo_reply(7), PAYLOAD),
                DropEigwUnsolicitedIcmpv6,
            ),
            in_dropped(
                "Packet Too Big quoting the expired UDP flow",
                error_from_router(PACKET_TOO_BIG, &quoted_udp)(64),
                DropEigwIcmpErrorNoFlow,
            ),
            reply_passes(
                "data on the established flow 1.5 s later (2 s timeout): passes, refreshes",
                established_in(ACK),
            ),
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    run_step(
        &mut gateway,
        &reply_passes(
            "established flow again 1.5 s after its refresh: still live",
            established_in(ACK),
        ),
    );
    std::thread::sleep(Duration::from_millis(2500));
    run_step(
        &mut gateway,
        &in_dropped(
            "established flow idle 2.5 s (2 s timeout)",
            established_in(ACK)(64),
            DropEigwUnsolicitedTcp,
        ),
    );

    // The expired entries are still in the table (the controller's sweeper deletes them; here
    // nobody does): a new packet out takes the stale entry over as a new flow.
    let stale = entry(&gateway, &udp_key(40000, 53), "the stale UDP entry");
    run_step(
        &mut gateway,
        &out_forwarded(
            "UDP out again after expiry: a new flow",
            udp_out,
            &[ForwardEigwOutbound, ConntrackCreated],
        ),
    );
    let renewed = entry(&gateway, &udp_key(40000, 53), "the renewed UDP entry");
    assert!(
        renewed.created_ns > stale.created_ns && renewed.last_seen_ns == renewed.created_ns,
        "restarted: {stale:?} -> {renewed:?}"
    );
    run_step(
        &mut gateway,
        &reply_passes("UDP reply to the new flow", udp_reply),
    );
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out again after expiry",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes("its SYN-ACK", tcp_in(SYN | ACK)),
        ],
    );
    assert_state(
        &gateway,
        &tcp_key(40000, 443),
        state::TCP_ESTABLISHED,
        "the reopened TCP flow",
    );
    // The dataplane's view and the sweeper's agree.
    let timeouts = gateway_common::conntrack::Timeouts {
        tcp_established_ns: 2_000_000_000,
        tcp_transitory_ns: 1_000_000_000,
        udp_ns: 1_000_000_000,
        icmp_ns: 1_000_000_000,
        other_ns: 1_000_000_000,
    };
    let newest = table(&gateway)
        .iter()
        .map(|(_, entry)| entry.last_seen_ns)
        .max()
        .unwrap_or(0);
    let deleted = gateway
        .dataplane
        .sweep_conntrack(&timeouts, newest)
        .unwrap_or_else(|error| panic!("sweeping: {error:#}"))
        .deleted;
    assert_eq!(
        deleted,
        2,
        "the expired echo and established entries go, the live ones stay:\n{}",
        describe(&table(&gateway))
    );
    assert_table_len(&gateway, 2, "the reopened UDP and TCP flows");
}

#[test]
fn extension_headers_and_fragments() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    run_step(
        &mut gateway,
        &out_forwarded(
            "TCP SYN out behind a Destination Options header: tracked with its ports",
            |hop| tcp6_behind_destination_options(INSTANCE6, REMOTE6, hop, TCP_PORTS_OUT, SYN),
            &[ForwardEigwOutbound, ConntrackCreated],
        ),
    );
    assert_state(
        &gateway,
        &tcp_key(40000, 443),
        state::TCP_SYN_SENT,
        "the SYN behind Destination Options",
    );
    assert_table_len(&gateway, 1, "one entry, with ports");
    run_steps(
        &mut gateway,
        &[
            reply_passes("plain SYN-ACK in", tcp_in(SYN | ACK)),
            in_forwarded(
                "ACK in behind a Destination Options header",
                |hop| tcp6_behind_destination_options(REMOTE6, INSTANCE6, hop, TCP_PORTS_IN, ACK),
                &[ForwardEigwInbound],
            ),
            in_dropped(
                "unsolicited SYN behind a Destination Options header",
                tcp6_behind_destination_options(REMOTE6, INSTANCE6, 64, (443, 22), SYN),
                DropEigwUnsolicitedTcpSyn,
            ),
        ],
    );

    // Fragments: the first one has the ports, the later ones none.
    let udp_reply = udp6(REMOTE6, INSTANCE6, 64, (53, 40000));
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "UDP out",
                |hop| udp6(INSTANCE6, REMOTE6, hop, (40000, 53)),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            in_forwarded(
                "first fragment of the UDP reply: matched by its ports",
                |hop| {
                    fragment6(
                        REMOTE6,
                        INSTANCE6,
                        hop,
                        IpNumber::UDP,
                        (0, true),
                        &udp_reply[40..],
                    )
                },
                &[ForwardEigwInbound],
            ),
            in_dropped(
                "later fragment of the UDP reply: no ports, dropped",
                fragment6(
                    REMOTE6,
                    INSTANCE6,
                    64,
                    IpNumber::UDP,
                    (185, false),
                    &[0xc3; 24],
                ),
                DropEigwFragment,
            ),
            in_dropped(
                "unsolicited later fragment",
                fragment6(
                    REMOTE6,
                    INSTANCE6,
                    64,
                    IpNumber::TCP,
                    (100, true),
                    &[0xc3; 24],
                ),
                DropEigwFragment,
            ),
            in_dropped(
                "unsolicited first fragment of a UDP datagram",
                fragment6(
                    REMOTE6,
                    INSTANCE6,
                    64,
                    IpNumber::UDP,
                    (0, true),
                    &udp6(REMOTE6, INSTANCE6, 64, (53, 40999))[40..],
                ),
                DropEigwUnsolicitedUdp,
            ),
            out_forwarded(
                "later fragment out: forwarded without state",
                |hop| {
                    fragment6(
                        INSTANCE6,
                        REMOTE6,
                        hop,
                        IpNumber::UDP,
                        (185, false),
                        &[0xc3; 24],
                    )
                },
                &[ForwardEigwOutbound],
            ),
        ],
    );
    assert_table_len(&gateway, 2, "the TCP and UDP flows only");
}

/// Errors quoting a tracked packet that carried an extension header. RFC 4890 4.3.1: a Packet
/// Too Big for a flow the gateway lets out must get back in, or path MTU discovery breaks.
#[test]
fn icmpv6_errors_quoting_a_tracked_packet_with_extension_headers_pass() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out behind Destination Options",
                |hop| tcp6_behind_destination_options(INSTANCE6, REMOTE6, hop, TCP_PORTS_OUT, SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            out_forwarded(
                "UDP out",
                |hop| udp6(INSTANCE6, REMOTE6, hop, (40000, 53)),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
        ],
    );
    let quoted_options =
        tcp6_behind_destination_options(INSTANCE6, REMOTE6, 63, TCP_PORTS_OUT, SYN);
    let quoted_first_fragment = fragment6(
        INSTANCE6,
        REMOTE6,
        63,
        IpNumber::UDP,
        (0, true),
        &udp6(INSTANCE6, REMOTE6, 63, (40000, 53))[40..],
    );
    let quoted_later_fragment = fragment6(
        INSTANCE6,
        REMOTE6,
        63,
        IpNumber::UDP,
        (185, false),
        &[0xc3; 24],
    );
    let quoted_unknown_options =
        tcp6_behind_destination_options(INSTANCE6, REMOTE6, 63, (40001, 443), SYN);
    let related = [EigwIcmpErrorRelated, ForwardEigwInbound];
    run_steps(
        &mut gateway,
        &[
            in_forwarded(
                "Packet Too Big quoting the TCP SYN behind Destination Options",
                error_from_router(PACKET_TOO_BIG, &quoted_options),
                &related,
            ),
            in_forwarded(
                "Packet Too Big quoting the first fragment of a tracked UDP datagram",
                error_from_router(PACKET_TOO_BIG, &quoted_first_fragment),
                &related,
            ),
            in_dropped(
                "Packet Too Big quoting a later fragment (no ports to match)",
                error_from_router(PACKET_TOO_BIG, &quoted_later_fragment)(64),
                DropEigwIcmpErrorNoFlow,
            ),
            in_dropped(
                "Packet Too Big quoting an unknown flow behind Destination Options",
                error_from_router(PACKET_TOO_BIG, &quoted_unknown_options)(64),
                DropEigwIcmpErrorNoFlow,
            ),
        ],
    );
    assert_table_len(&gateway, 2, "errors create nothing");
}

#[test]
fn neighbour_discovery_and_the_gateways_own_addresses_go_to_the_kernel() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let gateway_inet_solicited = v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 1]);
    let steps = [
        Step {
            description: "neighbour solicitation from the instance for the gateway".into(),
            side: Side::Vpc,
            input: eth6(
                FROM_INSTANCE,
                icmp6(
                    INSTANCE6,
                    SOLICITED_NODE6,
                    255,
                    Icmpv6Type::NeighborSolicitation,
                    &GATEWAY_VPC6,
                ),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassNeighbourDiscovery],
        },
        Step {
            description: "unicast neighbour solicitation from the instance (reachability)".into(),
            side: Side::Vpc,
            input: eth6(
                FROM_INSTANCE,
                icmp6(
                    INSTANCE6,
                    GATEWAY_VPC6,
                    255,
                    Icmpv6Type::NeighborSolicitation,
                    &GATEWAY_VPC6,
                ),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassNeighbourDiscovery],
        },
        Step {
            description: "neighbour solicitation from the router for the gateway".into(),
            side: Side::Internet,
            input: eth6(
                FROM_INTERNET,
                icmp6(
                    ROUTER6,
                    gateway_inet_solicited,
                    255,
                    Icmpv6Type::NeighborSolicitation,
                    &GATEWAY_INET6,
                ),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassNeighbourDiscovery],
        },
        Step {
            description: "neighbour solicitation from the internet side naming the instance".into(),
            side: Side::Internet,
            input: eth6(
                FROM_INTERNET,
                icmp6(
                    ROUTER6,
                    INSTANCE6,
                    255,
                    Icmpv6Type::NeighborSolicitation,
                    &INSTANCE6,
                ),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassNeighbourDiscovery],
        },
        Step {
            description: "echo request from the internet to the gateway's own address".into(),
            side: Side::Internet,
            input: eth6(
                FROM_INTERNET,
                icmp6(REMOTE6, GATEWAY_INET6, 64, echo_request(3), PAYLOAD),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassNotOurs],
        },
        Step {
            description: "echo request from the instance to the gateway's VPC address".into(),
            side: Side::Vpc,
            input: eth6(
                FROM_INSTANCE,
                icmp6(INSTANCE6, GATEWAY_VPC6, 64, echo_request(3), PAYLOAD),
            ),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassLocalDestination],
        },
        Step {
            description: "TCP out with hop limit 1: to the kernel, which answers Time Exceeded"
                .into(),
            side: Side::Vpc,
            input: eth6(FROM_INSTANCE, tcp_out(SYN)(1)),
            verdict: Verdict::Pass,
            output: Output::Unchanged,
            counters: vec![PassTtlExpired],
        },
    ];
    run_steps(&mut gateway, &steps);
    assert_table_len(&gateway, 0, "none of these is a flow");
}

#[test]
fn a_public_subnet_in_the_same_config_is_unaffected() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    let steps = [
        Step {
            description: "unsolicited TCP SYN to the public subnet: passes".into(),
            side: Side::Internet,
            input: eth6(
                FROM_INTERNET,
                tcp6(REMOTE6, PUBLIC_INSTANCE6, 64, (50000, 22), SYN, &[]),
            ),
            verdict: Verdict::Redirect,
            output: Output::Frame(eth6(
                TO_INSTANCE,
                tcp6(REMOTE6, PUBLIC_INSTANCE6, 63, (50000, 22), SYN, &[]),
            )),
            counters: vec![ForwardIgwInboundIpv6],
        },
        Step {
            description: "unsolicited echo request to the public subnet: passes".into(),
            side: Side::Internet,
            input: eth6(
                FROM_INTERNET,
                icmp6(REMOTE6, PUBLIC_INSTANCE6, 64, echo_request(5), PAYLOAD),
            ),
            verdict: Verdict::Redirect,
            output: Output::Frame(eth6(
                TO_INSTANCE,
                icmp6(REMOTE6, PUBLIC_INSTANCE6, 63, echo_request(5), PAYLOAD),
            )),
            counters: vec![ForwardIgwInboundIpv6],
        },
        Step {
            description: "TCP out from the public subnet: internet gateway, no state".into(),
            side: Side::Vpc,
            input: eth6(
                FROM_INSTANCE,
                tcp6(PUBLIC_INSTANCE6, REMOTE6, 64, TCP_PORTS_OUT, SYN, &[]),
            ),
            verdict: Verdict::Redirect,
            output: Output::Frame(eth6(
                TO_INTERNET,
                tcp6(PUBLIC_INSTANCE6, REMOTE6, 63, TCP_PORTS_OUT, SYN, &[]),
            )),
            counters: vec![ForwardIgwOutboundIpv6],
        },
        in_dropped(
            "the same SYN to the private subnet: dropped",
            tcp6(REMOTE6, INSTANCE6, 64, (50000, 22), SYN, &[]),
            DropEigwUnsolicitedTcpSyn,
        ),
    ];
    run_steps(&mut gateway, &steps);
    assert_table_len(&gateway, 0, "the internet gateway tracks nothing");

    let flows = gateway
        .dataplane
        .flows()
        .unwrap_or_else(|error| panic!("reading the flows: {error:#}"));
    let (_, stats) = flows
        .iter()
        .find(|(key, _)| key.src == PUBLIC_INSTANCE6 && key.action == action::ACCEPT)
        .unwrap_or_else(|| panic!("no accepted flow from the public instance in {flows:#?}"));
    assert_eq!(stats.route_target, target::INTERNET_GATEWAY, "{stats:?}");
}

#[test]
fn eigw_flows_are_accepted_with_their_target() {
    use Counter::*;
    let mut gateway = eigw_gateway();
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[ForwardEigwOutbound, ConntrackCreated],
            ),
            reply_passes("TCP SYN-ACK in", tcp_in(SYN | ACK)),
        ],
    );
    let flows = gateway
        .dataplane
        .flows()
        .unwrap_or_else(|error| panic!("reading the flows: {error:#}"));
    for (src, dst, wanted_direction) in [
        (INSTANCE6, REMOTE6, direction::EGRESS),
        (REMOTE6, INSTANCE6, direction::INGRESS),
    ] {
        let (key, stats) = flows
            .iter()
            .find(|(key, _)| key.src == src && key.dst == dst)
            .unwrap_or_else(|| panic!("no flow {src:?} -> {dst:?} in {flows:#?}"));
        assert_eq!(key.action, action::ACCEPT, "{key:?}");
        assert_eq!(
            stats.route_target,
            target::EGRESS_ONLY_INTERNET_GATEWAY,
            "{stats:?}"
        );
        assert_eq!(stats.direction, wanted_direction, "{stats:?}");
        assert_eq!(
            (stats.translated_src, stats.translated_dst),
            (src, dst),
            "IPv6 is not translated: {stats:?}"
        );
        assert_eq!(stats.packets, 1, "{stats:?}");
    }
}

/// Per-packet cost of the egress-only paths through `BPF_PROG_TEST_RUN`, measured as
/// `packet_tests::per_path_cost_report` does: `repeat = 1` and many calls (each run gets a fresh
/// copy of the frame), interleaved with the empty XDP program; median minus the empty program's
/// median. Prints the numbers; asserts only the verdicts. For quieter numbers run it alone:
/// `cargo test -p gateway-tests --test eigw_packet_tests per_path_cost -- --nocapture`.
#[test]
fn per_path_cost_report() {
    const CALLS: usize = 20_000;
    let mut gateway = eigw_gateway();
    let empty = EmptyXdp::load();
    // A tracked, established flow for the refresh and reply paths.
    run_steps(
        &mut gateway,
        &[
            out_forwarded(
                "TCP SYN out",
                tcp_out(SYN),
                &[Counter::ForwardEigwOutbound, Counter::ConntrackCreated],
            ),
            reply_passes("TCP SYN-ACK in", tcp_in(SYN | ACK)),
        ],
    );
    let quoted = tcp6(INSTANCE6, REMOTE6, 63, TCP_PORTS_OUT, ACK, &[0x5a; 64]);
    // New flows: one source port per call, so every call creates an entry.
    let new_flows: Vec<Vec<u8>> = (0..CALLS)
        .map(|index| {
            eth6(
                FROM_INSTANCE,
                tcp6(
                    INSTANCE6,
                    REMOTE6,
                    64,
                    (10000 + index as u16, 443),
                    SYN,
                    &[],
                ),
            )
        })
        .collect();
    let paths = [
        (
            "out, tracked flow (refresh)",
            Side::Vpc,
            eth6(FROM_INSTANCE, tcp_out(ACK)(64)),
            Verdict::Redirect,
        ),
        (
            "reply in, tracked flow",
            Side::Internet,
            eth6(FROM_INTERNET, tcp_in(ACK)(64)),
            Verdict::Redirect,
        ),
        (
            "drop: unsolicited TCP SYN",
            Side::Internet,
            eth6(
                FROM_INTERNET,
                tcp6(REMOTE6, INSTANCE6, 64, (50000, 22), SYN, &[]),
            ),
            Verdict::Drop,
        ),
        (
            "drop: unsolicited UDP",
            Side::Internet,
            eth6(FROM_INTERNET, udp6(REMOTE6, INSTANCE6, 64, (53, 40999))),
            Verdict::Drop,
        ),
        (
            "ICMPv6 PTB, tracked flow",
            Side::Internet,
            eth6(
                FROM_INTERNET,
                icmp6(ROUTER6, INSTANCE6, 64, PACKET_TOO_BIG, &quoted),
            ),
            Verdict::Redirect,
        ),
        (
            "IGW IPv6 in (public subnet)",
            Side::Internet,
            eth6(
                FROM_INTERNET,
                tcp6(REMOTE6, PUBLIC_INSTANCE6, 64, (50000, 22), SYN, &[]),
            ),
            Verdict::Redirect,
        ),
    ];
    let baseline_frame = eth6(FROM_INSTANCE, tcp_out(ACK)(64));
    let baseline_ctx = xdp_md(gateway.ifindex(Side::Vpc), baseline_frame.len());

    // Column 0: new flow; 1..: the paths; last: the empty program.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(CALLS); paths.len() + 2];
    for new_flow in &new_flows {
        let outcome = gateway.run(Side::Vpc, new_flow);
        assert_eq!(outcome.verdict, Verdict::Redirect, "out, new flow");
        samples[0].push(outcome.duration);
        for (index, (name, side, frame, verdict)) in paths.iter().enumerate() {
            let outcome = gateway.run(*side, frame);
            assert_eq!(outcome.verdict, *verdict, "{name}");
            samples[index + 1].push(outcome.duration);
        }
        let (verdict, duration) = empty.run(&baseline_frame, &baseline_ctx, 1);
        assert_eq!(verdict, 2, "the empty program returns XDP_PASS");
        samples[paths.len() + 1].push(duration);
    }
    let quantiles = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        (
            samples[samples.len() / 10].as_nanos(),
            samples[samples.len() / 2].as_nanos(),
        )
    };
    let (empty_p10, empty_median) = quantiles(&mut samples[paths.len() + 1]);
    eprintln!(
        "\negress-only gateway, per-path cost through BPF_PROG_TEST_RUN ({} CPUs, {CALLS} calls \
         each, repeat 1), nanoseconds per run",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    eprintln!(
        "{:<34} {:>9} | {:>8} {:>8} {:>8}",
        "path", "verdict", "p10", "median", "-empty"
    );
    eprintln!(
        "{:<34} {:>9} | {:>8} {:>8} {:>8}",
        "empty XDP program", "Pass", empty_p10, empty_median, 0
    );
    let names = std::iter::once(("out, new flow (create)", Verdict::Redirect))
        .chain(paths.iter().map(|(name, _, _, verdict)| (*name, *verdict)));
    for (index, (name, verdict)) in names.enumerate() {
        let (p10, median) = quantiles(&mut samples[index]);
        eprintln!(
            "{:<34} {:>9} | {:>8} {:>8} {:>8}",
            name,
            format!("{verdict:?}"),
            p10,
            median,
            median as i128 - empty_median as i128
        );
    }
    assert_eq!(
        table(&gateway).len(),
        CALLS + 1,
        "one entry per new flow plus the established one"
    );
}
