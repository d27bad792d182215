//! The egress-only internet gateway: IPv6 flows started inside go out unchanged and their replies
//! come back; nothing unsolicited gets in. ICMPv6 errors from outside are let in only when the
//! packet they quote belongs to a tracked flow (RFC 4890, RFC 6092), so path MTU discovery works;
//! an error never creates or refreshes state.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use gateway_common::{
    Counter,
    conntrack::{self as ct, ConnEntry, ConnKey, kind, state, tcp_flags},
    maps::{direction, family, target},
};
use network_types::ip::Ipv6Hdr;

use crate::{
    conntrack::{self, CreateError},
    counters::{count, pass},
    flow::{self, Handling},
    forwarding,
    parsing::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv6Packet, ipv6_upper_layer, ptr_at},
    routing::reject_v6,
};

const ICMPV6_ECHO_REQUEST: u16 = 128;
const ICMPV6_ECHO_REPLY: u16 = 129;

/// The transport identity of a packet for connection tracking.
struct Transport {
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    later_fragment: bool,
    /// ICMPv6 type (0 otherwise).
    icmp_type: u16,
}

/// Finds the transport behind any extension headers. ICMPv6 echo uses its identifier as the port
/// on both sides, so that request and reply meet in one entry.
#[inline(always)]
fn transport_of(ctx: &XdpContext, packet: &Ipv6Packet) -> Result<Transport, Counter> {
    let mut transport = Transport {
        protocol: packet.next_header,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        tcp_flags: packet.tcp_flags,
        later_fragment: false,
        icmp_type: 0,
    };
    let direct = matches!(
        packet.next_header,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6
    );
    let l4 = if direct {
        packet.l3 + Ipv6Hdr::LEN
    } else {
        let upper = ipv6_upper_layer(ctx, packet.l3)?;
        transport.protocol = upper.protocol;
        transport.later_fragment = upper.later_fragment;
        transport.src_port = 0;
        transport.dst_port = 0;
        if upper.later_fragment {
            return Ok(transport);
        }
        if upper.protocol == IPPROTO_TCP || upper.protocol == IPPROTO_UDP {
            let ports: *const [u8; 14] = ptr_at(ctx, upper.l4).ok_or(Counter::DropTruncatedTcp)?;
            // SAFETY: bounds-checked above.
            let ports = unsafe { *ports };
            transport.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            transport.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            if upper.protocol == IPPROTO_TCP {
                transport.tcp_flags = ports[13];
            }
        }
        upper.l4
    };
    if transport.protocol == IPPROTO_ICMPV6 {
        let icmp: *const [u8; 8] = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedIcmp)?;
        // SAFETY: bounds-checked above.
        let icmp = unsafe { *icmp };
        transport.icmp_type = icmp[0] as u16;
        let is_echo =
            transport.icmp_type == ICMPV6_ECHO_REQUEST || transport.icmp_type == ICMPV6_ECHO_REPLY;
        let identifier = if is_echo {
            u16::from_be_bytes([icmp[4], icmp[5]])
        } else {
            0
        };
        transport.src_port = identifier;
        transport.dst_port = identifier;
    }
    Ok(transport)
}

#[inline(always)]
fn is_icmpv6_error(transport: &Transport) -> bool {
    transport.protocol == IPPROTO_ICMPV6 && transport.icmp_type >= 1 && transport.icmp_type <= 4
}

#[inline(always)]
fn key(inside: [u8; 16], remote: [u8; 16], transport: &Transport, outbound: bool) -> ConnKey {
    let (inside_port, remote_port) = if transport.protocol == IPPROTO_ICMPV6 {
        (transport.src_port, 0)
    } else if outbound {
        (transport.src_port, transport.dst_port)
    } else {
        (transport.dst_port, transport.src_port)
    };
    ConnKey {
        inside_addr: inside,
        remote_addr: remote,
        inside_port,
        remote_port,
        protocol: transport.protocol,
        family: family::IPV6,
        kind: kind::EGRESS_ONLY,
        _pad: 0,
    }
}

/// IPv6 from an instance through the egress-only gateway: create or refresh the flow's state and
/// forward it unchanged.
#[inline(never)]
pub fn outbound(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32, subnet_index: u32) -> u32 {
    if packet.hop_limit <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    let transport = match transport_of(ctx, packet) {
        Ok(transport) => transport,
        Err(reason) => {
            return reject_v6(packet, ingress, reason, subnet_index, direction::EGRESS);
        }
    };
    // Later fragments, errors and replies the instance sends (echo replies, ...) need no state
    // of their own: they belong to a flow, or answer something that was let in.
    let stateless = transport.later_fragment
        || is_icmpv6_error(&transport)
        || (transport.protocol == IPPROTO_ICMPV6 && transport.icmp_type != ICMPV6_ECHO_REQUEST);
    if !stateless {
        let flow_key = key(packet.src, packet.dst, &transport, true);
        // SAFETY: helper without side effects.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if let Some(reason) = track_outbound(
            &flow_key,
            &transport,
            packet.total_length,
            now,
            subnet_index,
        ) {
            return reject_v6(packet, ingress, reason, subnet_index, direction::EGRESS);
        }
    }
    count(Counter::ForwardEigwOutbound);
    flow::account_v6(
        packet,
        ingress,
        Handling::new(
            target::EGRESS_ONLY_INTERNET_GATEWAY,
            direction::EGRESS,
            None,
            subnet_index,
        ),
    );
    forwarding::ipv6(ctx, packet, ingress)
}

/// Refreshes a live entry with an outbound packet.
#[inline(always)]
fn refresh_outbound(entry: *mut ConnEntry, protocol: u8, tcp_flags: u8, bytes: u16, now: u64) {
    // SAFETY: live map value.
    unsafe {
        if protocol == IPPROTO_TCP {
            let (next, fins) =
                ct::tcp_transition((*entry).state, (*entry).fin_seen, tcp_flags, true);
            (*entry).state = next;
            (*entry).fin_seen = fins;
        }
        (*entry).last_seen_ns = now;
        conntrack::add_packet(
            &raw mut (*entry).packets_out,
            &raw mut (*entry).bytes_out,
            bytes,
        );
    }
}

/// The fast path's share of the egress-only gateway: for a TCP or UDP packet right behind the
/// IPv6 header, refresh its live entry (outbound) or check and refresh it (a reply). `false`:
/// the slow path must decide (a new flow, an unsolicited packet, anything unusual), and nothing
/// was changed.
#[inline(never)]
pub fn fast_track(packet: &Ipv6Packet, outbound: bool, now: u64) -> bool {
    if packet.next_header != IPPROTO_TCP && packet.next_header != IPPROTO_UDP {
        return false;
    }
    let transport = Transport {
        protocol: packet.next_header,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        tcp_flags: packet.tcp_flags,
        later_fragment: false,
        icmp_type: 0,
    };
    if outbound {
        let flow_key = key(packet.src, packet.dst, &transport, true);
        match conntrack::lookup_live(&flow_key, now) {
            Some(entry) => {
                refresh_outbound(
                    entry,
                    flow_key.protocol,
                    transport.tcp_flags,
                    packet.total_length,
                    now,
                );
                true
            }
            None => false,
        }
    } else {
        let flow_key = key(packet.dst, packet.src, &transport, false);
        // Refuses (changing nothing) exactly where the slow path would drop.
        track_inbound(&flow_key, &transport, packet.total_length, now).is_none()
    }
}

/// Creates or refreshes the state of an outbound packet's flow; `Some(reason)` to drop it.
/// Out of line (returning a scalar) so its key and entry do not weigh on the caller's stack.
#[inline(never)]
fn track_outbound(
    flow_key: &ConnKey,
    transport: &Transport,
    bytes: u16,
    now: u64,
    subnet_index: u32,
) -> Option<Counter> {
    if let Some(entry) = conntrack::lookup_live(flow_key, now) {
        refresh_outbound(entry, flow_key.protocol, transport.tcp_flags, bytes, now);
        return None;
    }
    let initial = if flow_key.protocol == IPPROTO_TCP {
        // A RST creates nothing (it ends something the table does not know): forward it.
        ct::tcp_initial_state(transport.tcp_flags)?
    } else {
        state::OPEN
    };
    let entry = ConnEntry {
        created_ns: now,
        last_seen_ns: now,
        packets_out: 1,
        bytes_out: bytes as u64,
        packets_in: 0,
        bytes_in: 0,
        state: initial,
        fin_seen: 0,
        _pad: [0; 2],
        subnet_index,
        translated_addr: [0; 16],
        translated_port: 0,
        gateway: 0,
        translated_family: 0,
        _pad2: [0; 4],
    };
    match conntrack::create(flow_key, &entry) {
        Ok(existing) => {
            // SAFETY: live map value. Either ours (already counted) or a stale or racing entry
            // that this packet now restarts.
            unsafe {
                if (*existing).created_ns != now {
                    (*existing).created_ns = now;
                    (*existing).last_seen_ns = now;
                    (*existing).state = initial;
                    (*existing).fin_seen = 0;
                    (*existing).packets_out = 1;
                    (*existing).bytes_out = bytes as u64;
                    (*existing).packets_in = 0;
                    (*existing).bytes_in = 0;
                }
            }
            count(Counter::ConntrackCreated);
            None
        }
        Err(CreateError::Full) => Some(Counter::DropConntrackFull),
    }
}

/// IPv6 from the internet to a subnet behind the egress-only gateway: only replies of tracked
/// flows, and errors about them, get in.
#[inline(never)]
pub fn inbound(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32, subnet_index: u32) -> u32 {
    let transport = match transport_of(ctx, packet) {
        Ok(transport) => transport,
        Err(reason) => {
            return reject_v6(packet, ingress, reason, subnet_index, direction::INGRESS);
        }
    };
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if is_icmpv6_error(&transport) {
        if !quoted_flow_is_tracked(ctx, packet, now) {
            return reject_v6(
                packet,
                ingress,
                Counter::DropEigwIcmpErrorNoFlow,
                subnet_index,
                direction::INGRESS,
            );
        }
        count(Counter::EigwIcmpErrorRelated);
    } else {
        if transport.later_fragment {
            return reject_v6(
                packet,
                ingress,
                Counter::DropEigwFragment,
                subnet_index,
                direction::INGRESS,
            );
        }
        let flow_key = key(packet.dst, packet.src, &transport, false);
        if let Some(reason) = track_inbound(&flow_key, &transport, packet.total_length, now) {
            return reject_v6(packet, ingress, reason, subnet_index, direction::INGRESS);
        }
    }
    if packet.hop_limit <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    count(Counter::ForwardEigwInbound);
    flow::account_v6(
        packet,
        ingress,
        Handling::new(
            target::EGRESS_ONLY_INTERNET_GATEWAY,
            direction::INGRESS,
            None,
            subnet_index,
        ),
    );
    forwarding::ipv6(ctx, packet, ingress)
}

/// The drop reason for an inbound packet without state.
#[inline(always)]
fn unsolicited(transport: &Transport) -> Counter {
    match transport.protocol {
        IPPROTO_TCP => {
            if transport.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                Counter::DropEigwUnsolicitedTcpSyn
            } else {
                Counter::DropEigwUnsolicitedTcp
            }
        }
        IPPROTO_UDP => Counter::DropEigwUnsolicitedUdp,
        IPPROTO_ICMPV6 => Counter::DropEigwUnsolicitedIcmpv6,
        _ => Counter::DropEigwUnsolicitedOther,
    }
}

/// Checks and refreshes the state of an inbound packet's flow; `Some(reason)` to drop it.
#[inline(never)]
fn track_inbound(
    flow_key: &ConnKey,
    transport: &Transport,
    bytes: u16,
    now: u64,
) -> Option<Counter> {
    // Only an echo reply answers an echo request; an inbound request is never a reply.
    if transport.protocol == IPPROTO_ICMPV6 && transport.icmp_type != ICMPV6_ECHO_REPLY {
        return Some(Counter::DropEigwUnsolicitedIcmpv6);
    }
    let Some(entry) = conntrack::lookup_live(flow_key, now) else {
        return Some(unsolicited(transport));
    };
    // SAFETY: live map value.
    unsafe {
        if flow_key.protocol == IPPROTO_TCP {
            let flags = transport.tcp_flags;
            let current = (*entry).state;
            // Waiting for the answer to our SYN: only a SYN(-ACK) or a RST is an answer.
            if current == state::TCP_SYN_SENT && flags & (tcp_flags::SYN | tcp_flags::RST) == 0 {
                return Some(Counter::DropEigwUnsolicitedTcp);
            }
            let (next, fins) = ct::tcp_transition(current, (*entry).fin_seen, flags, false);
            (*entry).state = next;
            (*entry).fin_seen = fins;
        }
        (*entry).last_seen_ns = now;
        conntrack::add_packet(
            &raw mut (*entry).packets_in,
            &raw mut (*entry).bytes_in,
            bytes,
        );
    }
    None
}

/// The head of an ICMPv6 error: its header, the quoted IPv6 header and the first 8 bytes of the
/// quoted transport header.
#[repr(C)]
struct Icmpv6ErrorHead {
    icmp: [u8; 8],
    quoted: Ipv6Hdr,
    quoted_transport: [u8; 8],
}

/// Whether the packet quoted by an ICMPv6 error is one of a tracked flow. The quoted packet went
/// out from inside: its source is the inside address.
#[inline(always)]
fn quoted_flow_is_tracked(ctx: &XdpContext, packet: &Ipv6Packet, now: u64) -> bool {
    let Some(head) = ptr_at::<Icmpv6ErrorHead>(ctx, packet.l3 + Ipv6Hdr::LEN) else {
        return false;
    };
    // SAFETY: bounds-checked above.
    let head = unsafe { &*head };
    // The error must be addressed to the host that sent the quoted packet.
    if head.quoted.src_addr != packet.dst {
        return false;
    }
    let mut protocol = head.quoted.next_hdr;
    let mut quoted = head.quoted_transport;
    if !matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
        // The quoted packet carried extension headers (Destination Options, a Fragment header
        // when the instance fragmented it, ...): its ports are behind them. A later fragment
        // quotes no ports, so it cannot be matched.
        let Ok(upper) = ipv6_upper_layer(ctx, packet.l3 + Ipv6Hdr::LEN + 8) else {
            return false;
        };
        if upper.later_fragment {
            return false;
        }
        let Some(behind) = ptr_at::<[u8; 8]>(ctx, upper.l4) else {
            return false;
        };
        protocol = upper.protocol;
        // SAFETY: bounds-checked above.
        quoted = unsafe { *behind };
    }
    let mut transport = Transport {
        protocol,
        src_port: u16::from_be_bytes([quoted[0], quoted[1]]),
        dst_port: u16::from_be_bytes([quoted[2], quoted[3]]),
        tcp_flags: 0,
        later_fragment: false,
        icmp_type: 0,
    };
    if protocol == IPPROTO_ICMPV6 {
        if quoted[0] as u16 != ICMPV6_ECHO_REQUEST {
            return false;
        }
        let identifier = u16::from_be_bytes([quoted[4], quoted[5]]);
        transport.src_port = identifier;
        transport.dst_port = identifier;
    }
    let flow_key = key(head.quoted.src_addr, head.quoted.dst_addr, &transport, true);
    conntrack::lookup_live(&flow_key, now).is_some()
}
