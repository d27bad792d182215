//! The fast path: a flow whose first packet went through the whole pipeline (subnet and route
//! lookups, the gateway's decision, the FIB) has that outcome in its flow entry: the translated
//! addresses and the next hop. Later packets of the flow are rewritten and redirected from the
//! entry alone, skipping the route-table and FIB lookups that dominate the per-packet cost.
//!
//! Stateless decisions (internet gateway and local routes) are taken from the entry alone. For
//! the egress-only and NAT gateways the entry saves the route and FIB lookups, but every TCP/UDP
//! packet still refreshes (outbound) or must match (replies) its connection-tracking session, and
//! a NAT packet is rewritten to the endpoint its session holds; ICMP, fragments, hairpinned
//! packets and anything else go through the slow path. A cached next hop is used
//! for at most `NEXT_HOP_CACHE_NS`, so neighbour and route changes take effect within a second,
//! and only for packets no longer than one the FIB already accepted (its MTU check). Everything
//! else, and anything unusual about a packet (TTL about to expire, ICMP errors, VLAN tags), takes
//! the slow path.

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibLookup, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext,
};
use gateway_common::{
    Counter,
    maps::{FlowStats, NEXT_HOP_CACHE_NS, direction, target},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    checksum,
    counters::{count, drop},
    eigw, flow,
    igw::{DESTINATION, SOURCE, rewrite_address},
    maps::{FLOWS, REDIRECT_DEVICES},
    nat44, nat64,
    parsing::{Ipv4Packet, Ipv6Packet, ptr_at},
};

/// Returned when the fast path does not handle the packet (never a verdict the program returns
/// for a handled packet: XDP_ABORTED).
pub const NOT_HANDLED: u32 = 0;

/// Whether a flow entry's cached next hop may forward a packet of `length` bytes at `now`.
#[inline(always)]
fn usable(stats: &FlowStats, length: u16, now: u64) -> bool {
    stats.packets != 0
        && stats.next_hop_checked_ns != 0
        && now.wrapping_sub(stats.next_hop_checked_ns) < NEXT_HOP_CACHE_NS
        && length <= stats.next_hop_max_length
        && (stats.route_target == target::INTERNET_GATEWAY
            || stats.route_target == target::LOCAL
            || stats.route_target == target::EGRESS_ONLY_INTERNET_GATEWAY
            || stats.route_target == target::NAT_GATEWAY)
}

/// The forwarding counter of a cached decision.
#[inline(always)]
fn forward_counter(stats: &FlowStats, ipv6: bool) -> Counter {
    match (stats.route_target, stats.direction, ipv6) {
        (target::LOCAL, _, _) => Counter::ForwardLocal,
        (target::EGRESS_ONLY_INTERNET_GATEWAY, direction::INGRESS, _) => {
            Counter::ForwardEigwInbound
        }
        (target::EGRESS_ONLY_INTERNET_GATEWAY, _, _) => Counter::ForwardEigwOutbound,
        (_, direction::INGRESS, false) => Counter::ForwardIgwInboundIpv4,
        (_, _, false) => Counter::ForwardIgwOutboundIpv4,
        (_, direction::INGRESS, true) => Counter::ForwardIgwInboundIpv6,
        _ => Counter::ForwardIgwOutboundIpv6,
    }
}

/// Sends the (already rewritten) packet to the cached next hop. From here on the packet is
/// changed, so a failure is a drop, never a second trip through the slow path. (The slow path
/// only caches a next hop it found in the device map, which does not change while it runs.)
#[inline(always)]
pub fn redirect(ctx: &XdpContext, stats: &FlowStats) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTruncatedEthernet);
    };
    // SAFETY: bounds-checked above.
    unsafe {
        (*eth).dst_addr = stats.next_hop_dmac;
        (*eth).src_addr = stats.next_hop_smac;
    }
    count(Counter::FastPathForwarded);
    REDIRECT_DEVICES
        .redirect(stats.next_hop_ifindex, 0)
        .unwrap_or_else(|_| drop(Counter::DropFastPathRedirect))
}

/// Forwards an IPv4 packet from its flow entry, or returns [`NOT_HANDLED`].
#[inline(never)]
pub fn ipv4(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32) -> u32 {
    if packet.ttl <= 1 || packet.icmp_error || packet.vlan_tagged {
        return NOT_HANDLED;
    }
    let key = flow::accepted_key_v4(packet, ingress);
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        return NOT_HANDLED;
    };
    // SAFETY: this CPU's value of the entry.
    let stats = unsafe { &mut *stats };
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !usable(stats, packet.total_length, now) {
        return NOT_HANDLED;
    }
    if stats.route_target == target::NAT_GATEWAY {
        let outbound = stats.direction != direction::INGRESS;
        let packed = nat44::fast_session(ctx, packet, outbound);
        if packed == 0 {
            return NOT_HANDLED;
        }
        if packed == nat44::FAST_NAT64 {
            return nat64::fast_inbound(ctx, packet, stats, now);
        }
        // The session is refreshed and counted: from here on a failure is a drop.
        if !nat44::fast_rewrite(ctx, packet, outbound, packed) {
            return drop(Counter::DropTruncatedIpv4);
        }
        return finish_v4(ctx, packet, stats, now);
    }
    let src = [
        stats.translated_src[0],
        stats.translated_src[1],
        stats.translated_src[2],
        stats.translated_src[3],
    ];
    let dst = [
        stats.translated_dst[0],
        stats.translated_dst[1],
        stats.translated_dst[2],
        stats.translated_dst[3],
    ];
    // The header bounds were checked when parsing, so these do not fail; if one did, the packet
    // may be half rewritten and is dropped rather than translated twice.
    if src != packet.src && rewrite_address(ctx, packet, SOURCE, packet.src, src).is_err() {
        return drop(Counter::DropTruncatedIpv4);
    }
    if dst != packet.dst && rewrite_address(ctx, packet, DESTINATION, packet.dst, dst).is_err() {
        return drop(Counter::DropTruncatedIpv4);
    }
    count(forward_counter(stats, false));
    finish_v4(ctx, packet, stats, now)
}

/// TTL, flow statistics and redirect of a rewritten IPv4 packet.
#[inline(always)]
fn finish_v4(ctx: &XdpContext, packet: &Ipv4Packet, stats: &mut FlowStats, now: u64) -> u32 {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, packet.l3) else {
        return drop(Counter::DropTruncatedIpv4);
    };
    // SAFETY: bounds-checked above.
    unsafe {
        let old_word = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).ttl -= 1;
        let new_word = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        checksum::replace_u16(&raw mut (*ip).check, old_word, new_word);
    }
    flow::add_fast_path_packet(stats, packet.total_length, packet.tcp_flags, now);
    redirect(ctx, stats)
}

/// Forwards an IPv6 packet from its flow entry, or returns [`NOT_HANDLED`].
#[inline(never)]
pub fn ipv6(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32) -> u32 {
    if packet.hop_limit <= 1 || packet.vlan_tagged {
        return NOT_HANDLED;
    }
    let key = flow::accepted_key_v6(packet, ingress);
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        return NOT_HANDLED;
    };
    // SAFETY: this CPU's value of the entry.
    let stats = unsafe { &mut *stats };
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !usable(stats, packet.total_length, now) {
        return NOT_HANDLED;
    }
    if stats.route_target == target::NAT_GATEWAY {
        // IPv6 through a NAT gateway is NAT64.
        return nat64::fast_outbound(ctx, packet, stats, now);
    }
    if stats.route_target == target::EGRESS_ONLY_INTERNET_GATEWAY
        && !eigw::fast_track(packet, stats.direction != direction::INGRESS, now)
    {
        return NOT_HANDLED;
    }
    // Hop limit is byte 7 of the IPv6 header; IPv6 has no header checksum.
    let Some(hop_limit) = ptr_at::<u8>(ctx, packet.l3 + 7) else {
        return NOT_HANDLED;
    };
    // SAFETY: bounds-checked above.
    unsafe { *hop_limit -= 1 };
    count(forward_counter(stats, true));
    flow::add_fast_path_packet(stats, packet.total_length, packet.tcp_flags, now);
    redirect(ctx, stats)
}

/// Stores the FIB's answer in the flow entry of an IPv4 packet the slow path is forwarding.
/// Out of line: the key would otherwise sit on the forwarding frame.
#[inline(never)]
pub fn remember_v4(packet: &Ipv4Packet, ingress: u32, fib: &FibLookup) {
    if packet.nat64_origin {
        remember_nat64_origin(fib);
        return;
    }
    remember(
        &flow::accepted_key_v4(packet, ingress),
        fib,
        packet.total_length,
    );
}

/// Like [`remember_v4`] for IPv6.
#[inline(never)]
pub fn remember_v6(packet: &Ipv6Packet, ingress: u32, fib: &FibLookup) {
    if packet.nat64_origin {
        remember_nat64_origin(fib);
        return;
    }
    remember(
        &flow::accepted_key_v6(packet, ingress),
        fib,
        packet.total_length,
    );
}

/// A NAT64 translation's next hop goes to the flow entry of the packet as it arrived, in the
/// other family (`NatWork::origin_key`), for the length it arrived with.
#[inline(always)]
fn remember_nat64_origin(fib: &FibLookup) {
    if let Some(work) = nat44::work() {
        remember(&work.origin_key, fib, work.origin_length);
    }
}

#[inline(always)]
fn remember(key: &gateway_common::maps::FlowKey, fib: &FibLookup, length: u16) {
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: this CPU's value of the entry.
    let stats = unsafe { &mut *stats };
    // SAFETY: helper without side effects.
    stats.next_hop_checked_ns = unsafe { bpf_ktime_get_coarse_ns() };
    stats.next_hop_ifindex = fib.ifindex;
    stats.next_hop_dmac = fib.dmac;
    stats.next_hop_smac = fib.smac;
    if length > stats.next_hop_max_length {
        stats.next_hop_max_length = length;
    }
}
