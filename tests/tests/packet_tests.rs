//! Packet tests of the XDP dataplane through `BPF_PROG_TEST_RUN`, one table row per behaviour.
//!
//! Each test loads the gateway inside its own network namespace (two veth interfaces, routes and
//! permanent neighbour entries, so `bpf_fib_lookup` answers deterministically; see
//! `packet::gateway`) and feeds it frames built with etherparse. A row names the input frame, the
//! interface it arrives on, the verdict, the frame the program must leave behind (built
//! independently, with every checksum computed from scratch, and compared byte for byte), and the
//! counters that must move by one. Every other counter must stay still: each packet gets exactly
//! one verdict reason.
//!
//! Run as root: `cargo test -p gateway-tests --test packet_tests`.

mod packet;

use std::time::Duration;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, IcmpEchoHeader, Icmpv4Type, Icmpv6Type, IpNumber,
    Ipv4HeaderSlice, PacketBuilder,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};
use gateway_common::{
    Counter,
    maps::{action, direction, family, target},
};

use crate::packet::{
    empty::EmptyXdp,
    frames::*,
    gateway::{Side, TestGateway, Verdict, counter_delta, expected_delta, xdp_md},
};

/// What the program must leave in the frame.
enum Output {
    /// Byte for byte the input.
    Unchanged,
    /// Byte for byte this frame.
    Frame(Vec<u8>),
    /// Not checked (dropped frames).
    Ignored,
}

struct Row {
    description: &'static str,
    ingress: Side,
    input: Vec<u8>,
    verdict: Verdict,
    output: Output,
    /// Counters that move by exactly one (besides `rx_packets`); all others stay still.
    counters: &'static [Counter],
}

fn row(
    description: &'static str,
    ingress: Side,
    input: Vec<u8>,
    verdict: Verdict,
    output: Output,
    counters: &'static [Counter],
) -> Row {
    Row {
        description,
        ingress,
        input,
        verdict,
        output,
        counters,
    }
}

fn redirect(frame: Vec<u8>) -> Output {
    Output::Frame(frame)
}

const TIME_EXCEEDED: Icmpv4Type = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);
const FRAG_NEEDED: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
const PORT_UNREACHABLE: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);

fn echo_request() -> L4 {
    L4::Icmp4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }))
}

fn echo_reply() -> L4 {
    L4::Icmp4(Icmpv4Type::EchoReply(IcmpEchoHeader { id: 7, seq: 1 }))
}

/// TCP SYN from `src` to the remote host, port 40000 -> 443.
fn tcp_out(link: Link, src: [u8; 4], ttl: u8) -> Vec<u8> {
    eth4(link, ipv4(&v4(src, REMOTE, ttl), tcp(40000, 443), PAYLOAD))
}

/// TCP from the remote host to `dst`, port 443 -> 40000.
fn tcp_in(link: Link, dst: [u8; 4], ttl: u8) -> Vec<u8> {
    eth4(link, ipv4(&v4(REMOTE, dst, ttl), tcp(443, 40000), PAYLOAD))
}

/// The frame with the UDP checksum (after an option-less IPv4 header) set to zero: "none".
fn without_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 20 + 6..14 + 20 + 8].fill(0);
    frame
}

/// The frame with the 16-bit field at `offset` one (one's complement) more than correct.
fn off_by_one(mut frame: Vec<u8>, offset: usize) -> Vec<u8> {
    add_to_field(&mut frame, offset, 1);
    frame
}

/// An ICMPv6 neighbour solicitation for `target_address`.
fn neighbour_solicitation(dst: [u8; 16], target_address: [u8; 16]) -> Vec<u8> {
    eth6(
        FROM_INSTANCE,
        ipv6(
            INSTANCE6,
            dst,
            255,
            L4::Icmp6(Icmpv6Type::NeighborSolicitation),
            &target_address,
        ),
    )
}

fn arp_request() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(INSTANCE_MAC, [0xff; 6])
        .arp(
            ArpEthIpv4Packet {
                operation: ArpOperation::REQUEST,
                sender_mac: INSTANCE_MAC,
                sender_ipv4: INSTANCE,
                target_mac: [0; 6],
                target_ipv4: GATEWAY_VPC,
            }
            .into(),
        )
        .write(&mut out)
        .unwrap_or_else(|error| panic!("building an ARP request: {error}"));
    out
}

/// `packet` followed by `trailer` (bytes after the IPv4 total length: Ethernet padding, trailers).
fn with_trailer(mut frame: Vec<u8>, trailer: &[u8]) -> Vec<u8> {
    frame.extend_from_slice(trailer);
    frame
}

/// The first `len` bytes of `packet`.
fn cut(packet: Vec<u8>, len: usize) -> Vec<u8> {
    packet[..len].to_vec()
}

/// The TCP checksum offset in an untagged frame with an option-less IPv4 header.
const TCP_CHECKSUM_AT: usize = 14 + 20 + 16;
/// The IPv4 header checksum offset in an untagged frame.
const IPV4_CHECKSUM_AT: usize = 14 + 10;

fn rows() -> Vec<Row> {
    use Counter::*;
    use Side::*;
    use Verdict::*;

    // What the router quotes back: the packets as they left the gateway (translated).
    let udp_probe_as_sent = ipv4(&v4(ELASTIC_IP, REMOTE, 1), udp(40000, 33434), PAYLOAD);
    let udp_probe_as_instance_sent = ipv4(&v4(INSTANCE, REMOTE, 1), udp(40000, 33434), PAYLOAD);
    let tcp_as_sent = ipv4(&v4(ELASTIC_IP, REMOTE, 63), tcp(40000, 443), PAYLOAD);
    let tcp_as_instance_sent = ipv4(&v4(INSTANCE, REMOTE, 63), tcp(40000, 443), PAYLOAD);
    let big_tcp_as_sent = ipv4(&v4(ELASTIC_IP, REMOTE, 63), tcp(40000, 443), &[0x5a; 1400]);
    let big_tcp_as_instance_sent = ipv4(&v4(INSTANCE, REMOTE, 63), tcp(40000, 443), &[0x5a; 1400]);
    // What the instance quotes in its own error: a packet from the internet, as it arrived.
    let udp_to_instance = ipv4(&v4(REMOTE, INSTANCE, 62), udp(33434, 53), PAYLOAD);
    let udp_to_elastic_ip = ipv4(&v4(REMOTE, ELASTIC_IP, 62), udp(33434, 53), PAYLOAD);
    // A later fragment: no transport header, only the IPv4 header may change.
    let fragment_payload = [0xc3; 24];
    // NOP, NOP, NOP, end of options (IHL 6); and 40 bytes of NOPs (IHL 15, the maximum).
    let short_options = [1, 1, 1, 0];
    let long_options = [1; 40];

    vec![
        // --- IPv4 out through the internet gateway: source -> Elastic IP, TTL - 1, new MACs.
        row(
            "IPv4 TCP out from an instance with an Elastic IP: source translated",
            Vpc,
            tcp_out(FROM_INSTANCE, INSTANCE, 64),
            Redirect,
            redirect(tcp_out(TO_INTERNET, ELASTIC_IP, 63)),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 UDP out: source translated, UDP checksum updated",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, REMOTE, 64), udp(40000, 53), PAYLOAD),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(&v4(ELASTIC_IP, REMOTE, 63), udp(40000, 53), PAYLOAD),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 UDP out without checksum (0): stays 0",
            Vpc,
            without_udp_checksum(eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, REMOTE, 64), udp(40000, 53), PAYLOAD),
            )),
            Redirect,
            redirect(without_udp_checksum(eth4(
                TO_INTERNET,
                ipv4(&v4(ELASTIC_IP, REMOTE, 63), udp(40000, 53), PAYLOAD),
            ))),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "ICMP echo request out: source translated (ICMP checksum has no pseudo-header)",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, REMOTE, 64), echo_request(), PAYLOAD),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(&v4(ELASTIC_IP, REMOTE, 63), echo_request(), PAYLOAD),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 out with options (IHL 6): translated, options kept",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64).options(&short_options),
                    tcp(40000, 443),
                    PAYLOAD,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(
                    &v4(ELASTIC_IP, REMOTE, 63).options(&short_options),
                    tcp(40000, 443),
                    PAYLOAD,
                ),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 UDP out with 40 bytes of options (IHL 15): translated",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64).options(&long_options),
                    udp(40000, 53),
                    PAYLOAD,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(
                    &v4(ELASTIC_IP, REMOTE, 63).options(&long_options),
                    udp(40000, 53),
                    PAYLOAD,
                ),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 first fragment (MF) out: translated with its TCP checksum",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64).fragment(true, 0),
                    tcp(40000, 443),
                    PAYLOAD,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(
                    &v4(ELASTIC_IP, REMOTE, 63).fragment(true, 0),
                    tcp(40000, 443),
                    PAYLOAD,
                ),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 later fragment out: only the IPv4 header changes",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64).fragment(false, 185),
                    L4::Raw(IpNumber::TCP),
                    &fragment_payload,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(
                    &v4(ELASTIC_IP, REMOTE, 63).fragment(false, 185),
                    L4::Raw(IpNumber::TCP),
                    &fragment_payload,
                ),
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 TCP out with a wrong TCP checksum: stays wrong by the same amount",
            Vpc,
            off_by_one(tcp_out(FROM_INSTANCE, INSTANCE, 64), TCP_CHECKSUM_AT),
            Redirect,
            redirect(off_by_one(
                tcp_out(TO_INTERNET, ELASTIC_IP, 63),
                TCP_CHECKSUM_AT,
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "IPv4 out with a wrong header checksum: stays wrong by the same amount",
            Vpc,
            off_by_one(tcp_out(FROM_INSTANCE, INSTANCE, 64), IPV4_CHECKSUM_AT),
            Redirect,
            redirect(off_by_one(
                tcp_out(TO_INTERNET, ELASTIC_IP, 63),
                IPV4_CHECKSUM_AT,
            )),
            &[ForwardIgwOutboundIpv4],
        ),
        row(
            "802.1Q-tagged IPv4 out: translated in XDP, TTL and MACs left to the kernel's VLAN device",
            Vpc,
            tcp_out(FROM_INSTANCE.tagged(100), INSTANCE, 64),
            Pass,
            Output::Frame(tcp_out(FROM_INSTANCE.tagged(100), ELASTIC_IP, 64)),
            &[ForwardIgwOutboundIpv4, PassVlanToKernel],
        ),
        row(
            "IPv4 out from an instance without an Elastic IP: dropped",
            Vpc,
            tcp_out(FROM_INSTANCE, INSTANCE_NO_EIP, 64),
            Drop,
            Output::Ignored,
            &[DropIgwNoPublicIpv4],
        ),
        row(
            "IPv4 out with TTL 1: to the kernel untranslated (it answers Time Exceeded)",
            Vpc,
            tcp_out(FROM_INSTANCE, INSTANCE, 1),
            Pass,
            Output::Unchanged,
            &[PassTtlExpired],
        ),
        row(
            "IPv4 out to a blackhole route: dropped",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, BLACKHOLED, 64), tcp(40000, 443), PAYLOAD),
            ),
            Drop,
            Output::Ignored,
            &[DropRouteBlackhole],
        ),
        row(
            "IPv4 out from a subnet whose route table has no default route: dropped",
            Vpc,
            tcp_out(FROM_INSTANCE, ISOLATED_HOST, 64),
            Drop,
            Output::Ignored,
            &[DropNoRoute],
        ),
        // --- IPv4 in through the internet gateway: Elastic IP -> private address.
        row(
            "IPv4 TCP in to an Elastic IP: destination translated, sent to the instance",
            Internet,
            tcp_in(FROM_INTERNET, ELASTIC_IP, 64),
            Redirect,
            redirect(tcp_in(TO_INSTANCE, INSTANCE, 63)),
            &[ForwardIgwInboundIpv4],
        ),
        row(
            "ICMP echo reply in to an Elastic IP: destination translated",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(&v4(REMOTE, ELASTIC_IP, 64), echo_reply(), PAYLOAD),
            ),
            Redirect,
            redirect(eth4(
                TO_INSTANCE,
                ipv4(&v4(REMOTE, INSTANCE, 63), echo_reply(), PAYLOAD),
            )),
            &[ForwardIgwInboundIpv4],
        ),
        row(
            "IPv4 in to a private address directly: dropped",
            Internet,
            tcp_in(FROM_INTERNET, INSTANCE, 64),
            Drop,
            Output::Ignored,
            &[DropIgwInboundNoElasticIp],
        ),
        row(
            "IPv4 in from a source the subnet's route table blackholes: dropped",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(&v4(BLACKHOLED, ELASTIC_IP, 64), tcp(443, 40000), PAYLOAD),
            ),
            Drop,
            Output::Ignored,
            &[DropInboundNotRouted],
        ),
        // --- ICMP errors: the quoted packet is translated too (RFC 5508).
        row(
            "ICMP Time Exceeded in, quoting a UDP probe from the Elastic IP: outer and quoted translated",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(
                    &v4(ROUTER, ELASTIC_IP, 64),
                    L4::Icmp4(TIME_EXCEEDED),
                    &udp_probe_as_sent,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INSTANCE,
                ipv4(
                    &v4(ROUTER, INSTANCE, 63),
                    L4::Icmp4(TIME_EXCEEDED),
                    &udp_probe_as_instance_sent,
                ),
            )),
            &[IcmpErrorTranslatedInbound, ForwardIgwInboundIpv4],
        ),
        row(
            "ICMP Fragmentation Needed in, quoting TCP: outer and quoted translated",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(
                    &v4(ROUTER, ELASTIC_IP, 64),
                    L4::Icmp4(FRAG_NEEDED),
                    &tcp_as_sent,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INSTANCE,
                ipv4(
                    &v4(ROUTER, INSTANCE, 63),
                    L4::Icmp4(FRAG_NEEDED),
                    &tcp_as_instance_sent,
                ),
            )),
            &[IcmpErrorTranslatedInbound, ForwardIgwInboundIpv4],
        ),
        row(
            "ICMP Fragmentation Needed in, quoting only 8 bytes of TCP: quoted IPv4 header translated",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(
                    &v4(ROUTER, ELASTIC_IP, 64),
                    L4::Icmp4(FRAG_NEEDED),
                    &big_tcp_as_sent[..28],
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INSTANCE,
                ipv4(
                    &v4(ROUTER, INSTANCE, 63),
                    L4::Icmp4(FRAG_NEEDED),
                    &big_tcp_as_instance_sent[..28],
                ),
            )),
            &[IcmpErrorTranslatedInbound, ForwardIgwInboundIpv4],
        ),
        row(
            "ICMP error in with bytes after the IPv4 packet (Ethernet trailer): trailer and ICMP checksum intact",
            Internet,
            with_trailer(
                eth4(
                    FROM_INTERNET,
                    ipv4(
                        &v4(ROUTER, ELASTIC_IP, 64),
                        L4::Icmp4(FRAG_NEEDED),
                        &big_tcp_as_sent[..28],
                    ),
                ),
                &[0xee; 12],
            ),
            Redirect,
            redirect(with_trailer(
                eth4(
                    TO_INSTANCE,
                    ipv4(
                        &v4(ROUTER, INSTANCE, 63),
                        L4::Icmp4(FRAG_NEEDED),
                        &big_tcp_as_instance_sent[..28],
                    ),
                ),
                &[0xee; 12],
            )),
            &[IcmpErrorTranslatedInbound, ForwardIgwInboundIpv4],
        ),
        row(
            "ICMP error in quoting an address that is not the Elastic IP: dropped",
            Internet,
            eth4(
                FROM_INTERNET,
                ipv4(
                    &v4(ROUTER, ELASTIC_IP, 64),
                    L4::Icmp4(TIME_EXCEEDED),
                    &ipv4(&v4(OTHER_PUBLIC, REMOTE, 1), udp(40000, 33434), PAYLOAD),
                ),
            ),
            Drop,
            Output::Ignored,
            &[DropIcmpErrorNoMatch],
        ),
        row(
            "ICMP Port Unreachable out from the instance: outer source and quoted destination translated",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64),
                    L4::Icmp4(PORT_UNREACHABLE),
                    &udp_to_instance,
                ),
            ),
            Redirect,
            redirect(eth4(
                TO_INTERNET,
                ipv4(
                    &v4(ELASTIC_IP, REMOTE, 63),
                    L4::Icmp4(PORT_UNREACHABLE),
                    &udp_to_elastic_ip,
                ),
            )),
            &[IcmpErrorTranslatedOutbound, ForwardIgwOutboundIpv4],
        ),
        // --- IPv6: never translated, only forwarded.
        row(
            "IPv6 TCP out: unchanged but hop limit - 1 and MACs",
            Vpc,
            eth6(
                FROM_INSTANCE,
                ipv6(INSTANCE6, REMOTE6, 64, tcp(40000, 443), PAYLOAD),
            ),
            Redirect,
            redirect(eth6(
                TO_INTERNET,
                ipv6(INSTANCE6, REMOTE6, 63, tcp(40000, 443), PAYLOAD),
            )),
            &[ForwardIgwOutboundIpv6],
        ),
        row(
            "IPv6 TCP in: unchanged but hop limit - 1 and MACs",
            Internet,
            eth6(
                FROM_INTERNET,
                ipv6(REMOTE6, INSTANCE6, 64, tcp(443, 40000), PAYLOAD),
            ),
            Redirect,
            redirect(eth6(
                TO_INSTANCE,
                ipv6(REMOTE6, INSTANCE6, 63, tcp(443, 40000), PAYLOAD),
            )),
            &[ForwardIgwInboundIpv6],
        ),
        row(
            "IPv6 out with hop limit 1: to the kernel unchanged",
            Vpc,
            eth6(
                FROM_INSTANCE,
                ipv6(INSTANCE6, REMOTE6, 1, tcp(40000, 443), PAYLOAD),
            ),
            Pass,
            Output::Unchanged,
            &[PassTtlExpired],
        ),
        // --- Not the gateway's: handed to the kernel untouched.
        row(
            "ARP request: to the kernel",
            Vpc,
            arp_request(),
            Pass,
            Output::Unchanged,
            &[PassNotIp],
        ),
        row(
            "IPv6 neighbour solicitation to the solicited-node multicast address: to the kernel as ND",
            Vpc,
            neighbour_solicitation(SOLICITED_NODE6, GATEWAY_VPC6),
            Pass,
            Output::Unchanged,
            &[PassNeighbourDiscovery],
        ),
        row(
            "IPv6 neighbour solicitation unicast (reachability probe): to the kernel as ND",
            Vpc,
            neighbour_solicitation(GATEWAY_VPC6, GATEWAY_VPC6),
            Pass,
            Output::Unchanged,
            &[PassNeighbourDiscovery],
        ),
        row(
            "IPv4 multicast (224.0.0.5): to the kernel",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, MULTICAST, 1), udp(5000, 5000), PAYLOAD),
            ),
            Pass,
            Output::Unchanged,
            &[PassNotOurs],
        ),
        row(
            "IPv4 to the gateway's own address (route local, FIB local): to the kernel",
            Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, GATEWAY_VPC, 64), tcp(40000, 22), PAYLOAD),
            ),
            Pass,
            Output::Unchanged,
            &[PassLocalDestination],
        ),
        // --- Malformed: the headers the gateway reads must be inside the IPv4 packet.
        row(
            "IPv4 whose total length ends inside the TCP header, frame padded to 60 bytes: dropped",
            Vpc,
            with_trailer(
                eth4(
                    FROM_INSTANCE,
                    ipv4(
                        &v4(INSTANCE, REMOTE, 64),
                        L4::Raw(IpNumber::TCP),
                        &cut(ipv4(&v4(INSTANCE, REMOTE, 64), tcp(40000, 443), &[]), 30)[20..],
                    ),
                ),
                &[0; 16],
            ),
            Drop,
            Output::Ignored,
            &[DropTruncatedTcp],
        ),
    ]
}

/// Runs one row; `Err` lists every way the result differs from the row.
/// Runs a row. On `second_run` the row's flow has already been forwarded once, so a forwarded
/// packet may come from the fast path: the output must be the same, and the counters the same
/// plus `fast_path_forwarded`. Returns whether the fast path forwarded it.
fn check_row(gateway: &mut TestGateway, row: &Row, second_run: bool) -> Result<bool, String> {
    let before = gateway.counters();
    let outcome = gateway
        .try_run(row.ingress, &row.input, 1)
        .map_err(|error| format!("the kernel refused to run the program: {error}"))?;
    let after = gateway.counters();
    let mut problems = Vec::new();
    if outcome.verdict != row.verdict {
        problems.push(format!(
            "verdict {:?}, expected {:?}",
            outcome.verdict, row.verdict
        ));
    }
    let expected_frame = match &row.output {
        Output::Unchanged => Some(&row.input),
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
    let mut moved = counter_delta(&before, &after);
    let fast = second_run && moved.remove(Counter::FastPathForwarded.name()) == Some(1);
    let expected = expected_delta(row.counters);
    if moved != expected {
        problems.push(format!("counters moved {moved:?}, expected {expected:?}"));
    }
    if problems.is_empty() {
        Ok(fast)
    } else {
        let run = if second_run {
            " (second packet of the flow)"
        } else {
            ""
        };
        Err(format!("{}{run}", problems.join("\n")))
    }
}

#[test]
fn packet_table() {
    let mut gateway = TestGateway::new();
    let rows = rows();
    let mut failures = Vec::new();
    let mut fast_path_rows = 0;
    for row in &rows {
        // Each row starts as a new flow (slow path); a forwarded row runs a second time, when the
        // fast path may forward it from the flow's cached decision, with the same result.
        gateway.forget_flows();
        let mut result = check_row(&mut gateway, row, false);
        if result.is_ok() && row.verdict == Verdict::Redirect {
            result = check_row(&mut gateway, row, true);
            if result == Ok(true) {
                fast_path_rows += 1;
            }
        }
        match result {
            Ok(_) => eprintln!("ok     {}", row.description),
            Err(problem) => {
                eprintln!("FAIL   {}\n{problem}", row.description);
                failures.push(format!("{}\n{problem}", row.description));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
    // Translated TCP/UDP/ICMP out and in, IPv6 both ways, IPv4 with options: at least these
    // second packets must have come from the fast path.
    assert!(
        fast_path_rows >= 8,
        "only {fast_path_rows} forwarded rows used the fast path on their second packet"
    );
}

/// A frame to cut short, and where its headers are.
struct Truncated {
    description: &'static str,
    ingress: Side,
    frame: Vec<u8>,
    /// Offset of the IP header.
    l3: usize,
    ipv6: bool,
    /// Offset of the transport header, and how much of it the gateway needs.
    l4: usize,
    l4_needed: usize,
    /// The drop counter for a transport header cut short (IP lengths consistent with the cut).
    l4_counter: Counter,
}

/// The frame cut to `len` with the IP length field rewritten to end there too (and the IPv4
/// header checksum recomputed): a well-formed IP packet whose transport header is cut.
fn consistently_cut(case: &Truncated, len: usize) -> Vec<u8> {
    let mut frame = case.frame[..len].to_vec();
    let l3 = case.l3;
    if case.ipv6 {
        let payload_length = (len - l3 - 40) as u16;
        frame[l3 + 4..l3 + 6].copy_from_slice(&payload_length.to_be_bytes());
    } else {
        frame[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
        let header_length = ihl_bytes(&frame[l3..]);
        let header = Ipv4HeaderSlice::from_slice(&frame[l3..l3 + header_length])
            .unwrap_or_else(|error| panic!("re-reading the cut IPv4 header: {error}"))
            .to_header();
        frame[l3 + 10..l3 + 12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    }
    frame
}

#[test]
fn truncated_frames_are_dropped_never_forwarded() {
    let mut gateway = TestGateway::new();
    let time_exceeded = ipv4(
        &v4(ROUTER, ELASTIC_IP, 64),
        L4::Icmp4(TIME_EXCEEDED),
        &ipv4(&v4(ELASTIC_IP, REMOTE, 1), udp(40000, 33434), PAYLOAD),
    );
    let cases = [
        Truncated {
            description: "TCP/IPv4 out",
            ingress: Side::Vpc,
            frame: tcp_out(FROM_INSTANCE, INSTANCE, 64),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 20,
            l4_counter: Counter::DropTruncatedTcp,
        },
        Truncated {
            description: "UDP/IPv4 out",
            ingress: Side::Vpc,
            frame: eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, REMOTE, 64), udp(40000, 53), PAYLOAD),
            ),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 8,
            l4_counter: Counter::DropTruncatedUdp,
        },
        Truncated {
            description: "ICMP echo/IPv4 out",
            ingress: Side::Vpc,
            frame: eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, REMOTE, 64), echo_request(), PAYLOAD),
            ),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 8,
            l4_counter: Counter::DropTruncatedIcmp,
        },
        Truncated {
            description: "ICMP Time Exceeded/IPv4 in (ICMP header + quoted IPv4 header)",
            ingress: Side::Internet,
            frame: eth4(FROM_INTERNET, time_exceeded),
            l3: 14,
            ipv6: false,
            l4: 34,
            l4_needed: 8 + 20,
            l4_counter: Counter::DropTruncatedIcmp,
        },
        Truncated {
            description: "TCP/IPv4 with options (IHL 6) out",
            ingress: Side::Vpc,
            frame: eth4(
                FROM_INSTANCE,
                ipv4(
                    &v4(INSTANCE, REMOTE, 64).options(&[1, 1, 1, 0]),
                    tcp(40000, 443),
                    PAYLOAD,
                ),
            ),
            l3: 14,
            ipv6: false,
            l4: 38,
            l4_needed: 20,
            l4_counter: Counter::DropTruncatedTcp,
        },
        Truncated {
            description: "802.1Q-tagged TCP/IPv4 out",
            ingress: Side::Vpc,
            frame: tcp_out(FROM_INSTANCE.tagged(100), INSTANCE, 64),
            l3: 18,
            ipv6: false,
            l4: 38,
            l4_needed: 20,
            l4_counter: Counter::DropTruncatedTcp,
        },
        Truncated {
            description: "TCP/IPv6 out",
            ingress: Side::Vpc,
            frame: eth6(
                FROM_INSTANCE,
                ipv6(INSTANCE6, REMOTE6, 64, tcp(40000, 443), PAYLOAD),
            ),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 20,
            l4_counter: Counter::DropTruncatedTcp,
        },
        Truncated {
            description: "UDP/IPv6 in",
            ingress: Side::Internet,
            frame: eth6(
                FROM_INTERNET,
                ipv6(REMOTE6, INSTANCE6, 64, udp(53, 40000), PAYLOAD),
            ),
            l3: 14,
            ipv6: true,
            l4: 54,
            l4_needed: 8,
            l4_counter: Counter::DropTruncatedUdp,
        },
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        // The frame as it is, cut at every length: the IP length fields now overrun the frame.
        for len in 0..case.frame.len() {
            let expected = if len < 14 {
                Counter::DropTruncatedEthernet
            } else if len < case.l3 {
                Counter::DropTruncatedVlan
            } else if case.ipv6 {
                Counter::DropTruncatedIpv6
            } else if len < case.l3 + 20 {
                Counter::DropTruncatedIpv4
            } else {
                Counter::DropMalformedIpv4
            };
            let frame = &case.frame[..len];
            checked += 1;
            if let Err(problem) = check_drop(&mut gateway, case.ingress, frame, expected) {
                failures.push(format!(
                    "{} cut to {len} bytes: {problem}",
                    case.description
                ));
            }
        }
        // Well-formed IP packets whose transport header is cut.
        for len in case.l4..case.l4 + case.l4_needed {
            let frame = consistently_cut(case, len);
            checked += 1;
            if let Err(problem) = check_drop(&mut gateway, case.ingress, &frame, case.l4_counter) {
                failures.push(format!(
                    "{} with the IP packet ending {} bytes into the transport header: {problem}",
                    case.description,
                    len - case.l4
                ));
            }
        }
    }
    eprintln!("{checked} truncated frames checked");
    assert!(
        failures.is_empty(),
        "{} truncated frames mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs a frame that must be dropped with `counter` (and nothing else). Frames shorter than an
/// Ethernet header never reach the program: the kernel refuses them with EINVAL, which passes
/// for `DropTruncatedEthernet`.
fn check_drop(
    gateway: &mut TestGateway,
    side: Side,
    frame: &[u8],
    counter: Counter,
) -> Result<(), String> {
    let before = gateway.counters();
    let outcome = match gateway.try_run(side, frame, 1) {
        Ok(outcome) => outcome,
        Err(_) if counter == Counter::DropTruncatedEthernet => return Ok(()),
        Err(error) => return Err(format!("the kernel refused to run the program: {error}")),
    };
    let moved = counter_delta(&before, &gateway.counters());
    let expected = expected_delta(&[counter]);
    if outcome.verdict == Verdict::Drop && moved == expected {
        Ok(())
    } else {
        Err(format!(
            "verdict {:?}, counters moved {moved:?}; expected Drop and {expected:?}",
            outcome.verdict
        ))
    }
}

#[test]
fn flows_record_translation_and_rejection() {
    let mut gateway = TestGateway::new();
    let vpc0 = gateway.ifindex(Side::Vpc);
    let inet0 = gateway.ifindex(Side::Internet);
    let outbound = tcp_out(FROM_INSTANCE, INSTANCE, 64);
    let inbound = tcp_in(FROM_INTERNET, ELASTIC_IP, 64);
    let rejected = tcp_out(FROM_INSTANCE, INSTANCE_NO_EIP, 64);
    for (side, frame, verdict) in [
        (Side::Vpc, &outbound, Verdict::Redirect),
        (Side::Vpc, &outbound, Verdict::Redirect),
        (Side::Internet, &inbound, Verdict::Redirect),
        (Side::Vpc, &rejected, Verdict::Drop),
    ] {
        let outcome = gateway.run(side, frame);
        assert_eq!(outcome.verdict, verdict, "flow test packet from {side:?}");
    }
    let flows = gateway
        .dataplane
        .flows()
        .unwrap_or_else(|error| panic!("reading the flows: {error:#}"));
    let wide = |addr: [u8; 4]| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&addr);
        bytes
    };
    let find = |src: [u8; 4], dst: [u8; 4]| {
        flows
            .iter()
            .find(|(key, _)| key.src == wide(src) && key.dst == wide(dst))
            .unwrap_or_else(|| panic!("no flow {src:?} -> {dst:?} in {flows:#?}"))
    };
    // IPv4 header + TCP header + payload.
    let ip_bytes = (20 + 20 + PAYLOAD.len()) as u64;

    let (key, stats) = find(INSTANCE, REMOTE);
    assert_eq!(
        (key.family, key.protocol, key.src_port, key.dst_port),
        (family::IPV4, 6, 40000, 443),
        "outbound flow key {key:?}"
    );
    assert_eq!(key.ingress_ifindex, vpc0, "outbound flow key {key:?}");
    assert_eq!(key.action, action::ACCEPT, "outbound flow key {key:?}");
    assert_eq!(stats.translated_src, wide(ELASTIC_IP), "outbound {stats:?}");
    assert_eq!(stats.translated_dst, wide(REMOTE), "outbound {stats:?}");
    assert_eq!(
        (stats.packets, stats.bytes),
        (2, 2 * ip_bytes),
        "outbound {stats:?}"
    );
    assert_eq!(stats.direction, direction::EGRESS, "outbound {stats:?}");
    assert_eq!(
        stats.route_target,
        target::INTERNET_GATEWAY,
        "outbound {stats:?}"
    );
    assert_eq!(
        (stats.drop_reason, stats.subnet_index),
        (0, 0),
        "outbound {stats:?}"
    );
    assert_eq!(stats.tcp_flags, 0x02, "outbound SYN flag {stats:?}");

    let (key, stats) = find(REMOTE, ELASTIC_IP);
    assert_eq!(key.ingress_ifindex, inet0, "inbound flow key {key:?}");
    assert_eq!(key.action, action::ACCEPT, "inbound flow key {key:?}");
    assert_eq!(stats.translated_src, wide(REMOTE), "inbound {stats:?}");
    assert_eq!(stats.translated_dst, wide(INSTANCE), "inbound {stats:?}");
    assert_eq!(stats.direction, direction::INGRESS, "inbound {stats:?}");
    assert_eq!(stats.packets, 1, "inbound {stats:?}");

    let (key, stats) = find(INSTANCE_NO_EIP, REMOTE);
    assert_eq!(key.action, action::REJECT, "rejected flow key {key:?}");
    assert_eq!(
        stats.drop_reason,
        Counter::DropIgwNoPublicIpv4 as u16,
        "rejected {stats:?}"
    );
    assert_eq!(
        stats.translated_src,
        wide(INSTANCE_NO_EIP),
        "rejected {stats:?}"
    );
    assert_eq!(stats.direction, direction::EGRESS, "rejected {stats:?}");
    assert_eq!(stats.packets, 1, "rejected {stats:?}");
}

/// Program cost per path through `BPF_PROG_TEST_RUN`, next to an empty XDP program. Prints the
/// numbers; asserts only the verdicts.
///
/// Two measurements, because the kernel runs `repeat` iterations over the *same* buffer: a
/// translated packet is not translated again on the second run (its source is now the Elastic
/// IP), and every forwarded run decrements the TTL. So:
/// - `repeat = 1`, many calls, fresh frame each: the real path, plus the timer's own overhead
///   (the same in the empty program's number);
/// - `repeat = 100000`: the kernel's average over the runs, exact for paths that leave the frame
///   as it was (drops, passes); for the rewriting paths it is the cost of the path the rewritten
///   frame takes from the second run on, shown in the last column;
/// - IPv6 with hop limit 255 and `repeat = 250`: a forwarding path measured hot, every run alike.
///
/// Other tests of this binary run in parallel; for quieter numbers run this one alone:
/// `cargo test -p gateway-tests --test packet_tests per_path_cost_report -- --nocapture`.
#[test]
fn per_path_cost_report() {
    const CALLS: usize = 20_000;
    const REPEAT: u32 = 100_000;
    let mut gateway = TestGateway::new();
    let empty = EmptyXdp::load();
    let paths = [
        (
            "IPv4 out, translated",
            Side::Vpc,
            tcp_out(FROM_INSTANCE, INSTANCE, 64),
            Verdict::Redirect,
        ),
        (
            "IPv4 in, translated",
            Side::Internet,
            tcp_in(FROM_INTERNET, ELASTIC_IP, 64),
            Verdict::Redirect,
        ),
        (
            "IPv6 pass-through",
            Side::Vpc,
            eth6(
                FROM_INSTANCE,
                ipv6(INSTANCE6, REMOTE6, 64, tcp(40000, 443), PAYLOAD),
            ),
            Verdict::Redirect,
        ),
        (
            "drop: no Elastic IP",
            Side::Vpc,
            tcp_out(FROM_INSTANCE, INSTANCE_NO_EIP, 64),
            Verdict::Drop,
        ),
        (
            "pass: not ours (multicast)",
            Side::Vpc,
            eth4(
                FROM_INSTANCE,
                ipv4(&v4(INSTANCE, MULTICAST, 1), udp(5000, 5000), PAYLOAD),
            ),
            Verdict::Pass,
        ),
    ];
    let baseline_frame = tcp_out(FROM_INSTANCE, INSTANCE, 64);
    let baseline_ctx = xdp_md(gateway.ifindex(Side::Vpc), baseline_frame.len());

    // repeat = 1, interleaved so that drift hits every path alike.
    let mut single: Vec<Vec<Duration>> = vec![Vec::with_capacity(CALLS); paths.len() + 1];
    for _ in 0..CALLS {
        for (index, (name, side, frame, verdict)) in paths.iter().enumerate() {
            let outcome = gateway.run(*side, frame);
            assert_eq!(outcome.verdict, *verdict, "{name}");
            single[index].push(outcome.duration);
        }
        let (verdict, duration) = empty.run(&baseline_frame, &baseline_ctx, 1);
        assert_eq!(verdict, 2, "the empty program returns XDP_PASS");
        single[paths.len()].push(duration);
    }
    // (10th percentile, median) of a path's samples.
    let quantiles = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        (samples[samples.len() / 10], samples[samples.len() / 2])
    };
    let (empty_p10, empty_single) = quantiles(&mut single[paths.len()]);

    let (_, empty_repeated) = empty.run(&baseline_frame, &baseline_ctx, REPEAT);
    eprintln!(
        "\nper-path cost through BPF_PROG_TEST_RUN ({} CPUs), nanoseconds per run",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    eprintln!(
        "{:<28} {:>9} | {:>8} {:>8} {:>8} | {:>9}  (verdict of the repeated runs)",
        "path", "verdict", "p10", "median", "-empty", "repeated"
    );
    eprintln!(
        "{:<28} {:>9} | {:>8} {:>8} {:>8} | {:>9}  (Pass)",
        "empty XDP program",
        "Pass",
        empty_p10.as_nanos(),
        empty_single.as_nanos(),
        0,
        empty_repeated.as_nanos(),
    );
    for (index, (name, side, frame, verdict)) in paths.iter().enumerate() {
        let (p10, single_median) = quantiles(&mut single[index]);
        let repeated = gateway
            .try_run(*side, frame, REPEAT)
            .unwrap_or_else(|error| panic!("{name}, repeat {REPEAT}: {error}"));
        eprintln!(
            "{:<28} {:>9} | {:>8} {:>8} {:>8} | {:>9}  ({:?})",
            name,
            format!("{verdict:?}"),
            p10.as_nanos(),
            single_median.as_nanos(),
            single_median.as_nanos() as i128 - empty_single.as_nanos() as i128,
            repeated.duration.as_nanos(),
            repeated.verdict
        );
    }
    // A forwarding path that survives repetition: hop limit 255 stays above 1 for 250 runs.
    let forwarded = eth6(
        FROM_INSTANCE,
        ipv6(INSTANCE6, REMOTE6, 255, tcp(40000, 443), PAYLOAD),
    );
    let repeated = gateway
        .try_run(Side::Vpc, &forwarded, 250)
        .unwrap_or_else(|error| panic!("IPv6 pass-through, repeat 250: {error}"));
    assert_eq!(repeated.verdict, Verdict::Redirect, "IPv6 after 250 hops");
    let (_, empty_250) = empty.run(&baseline_frame, &baseline_ctx, 250);
    eprintln!(
        "{:<28} {:>9} | {:>36} | {:>9}  (Redirect; empty program: {} ns)",
        "IPv6 pass-through x250",
        "Redirect",
        "hop limit 255, repeat 250",
        repeated.duration.as_nanos(),
        empty_250.as_nanos()
    );
}

/// A scan from ever new ports must not churn the flow table: past 4096 new REJECT flows per
/// second on a CPU, drops are still counted but get no flow record.
#[test]
fn a_flood_of_rejected_flows_is_counted_but_not_all_recorded() {
    const PACKETS: u16 = 9000;
    const BUDGET: u64 = 4096;
    let mut gateway = TestGateway::new();
    let before = gateway.counters();
    let started = std::time::Instant::now();
    for port in 0..PACKETS {
        let frame = eth4(
            FROM_INSTANCE,
            ipv4(
                &v4(INSTANCE_NO_EIP, REMOTE, 64),
                tcp(10000 + port, 443),
                PAYLOAD,
            ),
        );
        let outcome = gateway.run(Side::Vpc, &frame);
        assert_eq!(
            outcome.verdict,
            Verdict::Drop,
            "packet from port {}",
            10000 + port
        );
    }
    let elapsed = started.elapsed();
    let moved = counter_delta(&before, &gateway.counters());
    let count = |counter: Counter| moved.get(counter.name()).copied().unwrap_or(0);
    assert_eq!(
        count(Counter::DropIgwNoPublicIpv4),
        u64::from(PACKETS),
        "every packet is dropped and counted: {moved:?}"
    );
    let recorded = gateway
        .dataplane
        .flows()
        .unwrap_or_else(|error| panic!("reading the flows: {error:#}"))
        .iter()
        .filter(|(key, _)| key.action == action::REJECT)
        .count() as u64;
    // The budget is per CPU (the test thread may move between CPUs) and refills each second, so
    // the run may span a few windows.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let windows = (elapsed.as_secs() + 2) * cpus;
    assert_eq!(
        recorded + count(Counter::FlowLogRejectsSkipped),
        u64::from(PACKETS),
        "each dropped flow is either recorded or counted as skipped: {moved:?}"
    );
    assert!(
        recorded <= BUDGET * windows && recorded >= BUDGET.min(u64::from(PACKETS)),
        "{recorded} REJECT records in {elapsed:?}: the budget is {BUDGET} per second per CPU"
    );
}
