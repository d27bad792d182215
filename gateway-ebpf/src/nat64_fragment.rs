//! NAT64 of fragments (RFC 7915 s4.1 and s5.1, RFC 6146 s3.4 and s3.5), in the two tail-called
//! programs `nat64_fragment_out` and `nat64_fragment_in`: the main program only hands them the
//! packet (see `gateway_common::maps::tail`).
//!
//! Fragments are translated one by one, never reassembled. A first fragment carries the
//! transport header: its session is found or made as for an unfragmented packet, its ports and
//! transport checksum are translated (the checksum covers the whole datagram, but only the
//! addresses and a port change, so the incremental update is the same), and the addresses it
//! was translated with are remembered for its train in an LRU table. Later fragments carry no
//! ports and take their addresses from there; one that arrives before its first fragment (or
//! after the entry was evicted) is dropped and counted. The identification, the offset and the
//! more-fragments flag are carried over: IPv6 -> IPv4 takes the identification's low 16 bits
//! and clears DF; IPv4 -> IPv6 inserts a Fragment header with the identification zero-extended.
//! Fragmented ICMP is not translated (RFC 7915: its checksum, or the ICMPv6 pseudo-header's
//! length, needs the whole message), nor fragmented IPv4 UDP without a checksum (one cannot be
//! computed from a fragment).

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use gateway_common::{
    Counter,
    checksum::fold,
    maps::{direction, target},
    nat::{FragmentKey, Nat64FragmentIn, Nat64FragmentKey, Nat64FragmentOut},
};

use crate::{
    counters::{count, drop, pass},
    flow::{self, Handling},
    maps::{NAT_PUBLIC_IPS, NAT64_FRAGMENTS_IN, NAT64_FRAGMENTS_OUT},
    nat44::{self, NatWork},
    nat64::{
        self, ETH_P_IPV4, ETH_P_IPV6, INTO_REMOTE6, IPV4_HEADER, IPV6_HEADER, MAX_LINK,
        MAX_NAT64_L4, embed_into, may_carry, prefix_of, reject4, reject6, restore_link,
        rewrite_ports, save_link, set_packet4, set_packet6, sum4, sum16, unexpired_source_route,
    },
    parsing::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, ptr_at,
    },
};

/// IPv6 Fragment header: next header, reserved, `offset << 3 | M`, identification.
const FRAGMENT_HEADER: usize = 8;
const IPPROTO_FRAGMENT: u8 = 44;
/// The headers of a translated IPv4 fragment: IPv6 and Fragment header.
const IPV6_FRAGMENT_HEADERS: usize = IPV6_HEADER + FRAGMENT_HEADER;
/// Extension headers allowed before the Fragment header (Hop-by-Hop, Destination Options,
/// Routing with no segments left), as the unfragmented path allows before the transport.
const MAX_EXTENSION_HEADERS: usize = 3;

/// Whether `frag_field` (`offset << 3 | M`) is of a fragment other than the first.
#[inline(always)]
fn is_later(frag_field: u16) -> bool {
    frag_field >> 3 != 0
}

// --- IPv6 -> IPv4.

/// An IPv6 fragment from a NAT64 client (`nat64::outbound` set up the gateway in the work area).
#[inline(always)]
pub fn outbound(
    ctx: &XdpContext,
    packet: &mut Ipv6Packet,
    ingress: u32,
    work: &mut NatWork,
) -> u32 {
    let subnet_index = work.subnet_index;
    if let Err(reason) = classify_outbound(ctx, packet, work) {
        return reject6(packet, ingress, reason, subnet_index);
    }
    // The flow is the transport's, as for an unfragmented packet (a later fragment: no ports).
    packet.next_header = work.protocol;
    packet.src_port = work.sport;
    packet.dst_port = work.dport;
    let verdict = if is_later(work.frag_field) {
        later_outbound(packet, ingress, work)
    } else {
        first_outbound(packet, ingress, work)
    };
    if verdict != FORWARD {
        return verdict;
    }
    if let Err(reason) = write_ipv4(ctx, work) {
        return drop(reason);
    }
    if !is_later(work.frag_field)
        && let Err(reason) = translate_ports4(ctx, work)
    {
        return drop(reason);
    }
    count(Counter::Nat64FragmentTranslated);
    nat64::send_ipv4(ctx, work, ingress)
}

/// What [`first_outbound`] and friends return once the work area describes the translated
/// packet. Never an XDP verdict.
const FORWARD: u32 = u32::MAX;

/// The offset of the Fragment header behind the IPv6 header at `l3` and the extension headers
/// the translation may drop.
#[inline(always)]
fn fragment_header_at(ctx: &XdpContext, l3: usize) -> Result<usize, Counter> {
    let next: *const u8 = ptr_at(ctx, l3 + 6).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let mut next = unsafe { *next };
    let mut offset = l3 + IPV6_HEADER;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        if offset > MAX_NAT64_L4 {
            return Err(Counter::DropNat64ExtensionHeaders);
        }
        match next {
            IPPROTO_FRAGMENT => return Ok(offset),
            0 | 60 | 43 => {
                let header: *const [u8; 4] =
                    ptr_at(ctx, offset).ok_or(Counter::DropTruncatedIpv6)?;
                // SAFETY: bounds-checked above.
                let header = unsafe { *header };
                if next == 43 && header[3] != 0 {
                    return Err(Counter::DropNat64RoutingHeader);
                }
                next = header[0];
                offset += (header[1] as usize + 1) * 8;
            }
            _ => break,
        }
    }
    Err(Counter::DropNat64ExtensionHeaders)
}

/// Reads an IPv6 fragment from a client into the work area, as `nat64::classify_outbound` does
/// for an unfragmented packet: the layout behind the Fragment header, the fragment's fields
/// and, in a first fragment, the transport header.
#[inline(never)]
fn classify_outbound(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let prefix = prefix_of(work);
    let destination = prefix
        .extract(&packet.dst)
        .ok_or(Counter::DropNat64NotInPrefix)?;
    if may_carry(work, u32::from_be_bytes(destination)) == 0 {
        return Err(Counter::DropNat64NonGlobal);
    }
    let at = fragment_header_at(ctx, packet.l3)?;
    let ip: *const [u8; 2] = ptr_at(ctx, packet.l3).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let head = unsafe { *ip };
    let fragment: *const [u8; FRAGMENT_HEADER] =
        ptr_at(ctx, at).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let f = unsafe { *fragment };
    let l4 = at + FRAGMENT_HEADER;
    let end = packet.l3 + packet.total_length as usize;
    if l4 > end {
        return Err(Counter::DropTruncatedIpv6);
    }
    work.frag_id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    work.frag_field = u16::from_be_bytes([f[2], f[3]]) & 0xfff9;
    work.l3 = packet.l3 as u16;
    work.l4 = l4 as u16;
    work.transport_length = (end - l4) as u16;
    nat64::set_client(work, packet, head, destination);
    work.sport = 0;
    work.dport = 0;
    work.protocol = match f[0] {
        IPPROTO_TCP | IPPROTO_UDP => f[0],
        // RFC 7915 s5.2: fragmented ICMPv6 is not translated. Extension headers in the
        // fragmentable part would have to be found behind the Fragment header.
        IPPROTO_ICMPV6 | 0 | 43 | 44 | 50 | 51 | 60 => return Err(Counter::DropNat64Fragment),
        _ => return Err(Counter::DropNatUnsupportedProtocol),
    };
    if is_later(work.frag_field) {
        return Ok(());
    }
    // A first fragment carries the whole transport header (TCP's checksum and flags are read).
    let needed = if work.protocol == IPPROTO_TCP { 20 } else { 8 };
    if (work.transport_length as usize) < needed || l4 > MAX_NAT64_L4 + FRAGMENT_HEADER {
        return Err(Counter::DropNat64Fragment);
    }
    let transport: *const [u8; 8] = ptr_at(ctx, l4).ok_or(Counter::DropNat64Fragment)?;
    // SAFETY: bounds-checked above.
    let t = unsafe { *transport };
    work.sport = u16::from_be_bytes([t[0], t[1]]);
    work.dport = u16::from_be_bytes([t[2], t[3]]);
    if work.protocol == IPPROTO_TCP {
        let flags: *const u8 = ptr_at(ctx, l4 + 13).ok_or(Counter::DropNat64Fragment)?;
        // SAFETY: bounds-checked above.
        work.tcp_flags = unsafe { *flags };
    }
    Ok(())
}

/// A first fragment: its session, as for an unfragmented packet, and its train remembered.
#[inline(never)]
fn first_outbound(packet: &Ipv6Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    if let Some(reason) = nat44::session_outbound(work) {
        return reject6(packet, ingress, reason, subnet_index);
    }
    // SAFETY: plain data, only tested for presence.
    if unsafe { NAT_PUBLIC_IPS.get(work.dst) }.is_some() {
        // Hairpinned fragments are not translated (see the README).
        return reject6(packet, ingress, Counter::DropNat64Fragment, subnet_index);
    }
    work.translated = flow::Translated {
        src: flow::widen(work.public_addr),
        dst: flow::widen(work.dst),
        ports: (work.public_port as u32) << 16 | work.dport as u32,
    };
    flow::account_v6_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::EGRESS, None, subnet_index),
    );
    let (public, destination) = (work.public_addr, work.dst);
    let (public_port, dport) = (work.public_port, work.dport);
    set_packet4(work, public, destination, public_port, dport);
    if work.frag_field & 1 != 0 {
        work.frag6_key = Nat64FragmentKey {
            src: work.private6,
            dst: work.remote6,
            id: work.frag_id.to_be_bytes(),
        };
        work.frag6_out = Nat64FragmentOut {
            public,
            remote: destination,
        };
        let _ = NAT64_FRAGMENTS_OUT.insert(&work.frag6_key, &work.frag6_out, 0);
    }
    FORWARD
}

/// A later fragment: the addresses its first fragment left with.
#[inline(never)]
fn later_outbound(packet: &Ipv6Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    work.frag6_key = Nat64FragmentKey {
        src: work.private6,
        dst: work.remote6,
        id: work.frag_id.to_be_bytes(),
    };
    // SAFETY: plain data copied out.
    let Some(translation) = (unsafe { NAT64_FRAGMENTS_OUT.get(&work.frag6_key) }).copied() else {
        return reject6(
            packet,
            ingress,
            Counter::DropNat64FragmentOutOfOrder,
            subnet_index,
        );
    };
    work.translated = flow::Translated {
        src: flow::widen(translation.public),
        dst: flow::widen(translation.remote),
        ports: 0,
    };
    flow::account_v6_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::EGRESS, None, subnet_index),
    );
    set_packet4(work, translation.public, translation.remote, 0, 0);
    FORWARD
}

/// Replaces the IPv6 header, the extension headers and the Fragment header with the IPv4 header
/// of `work.packet4` (RFC 7915 s5.1.1): the identification's low 16 bits, DF clear, MF and the
/// offset copied.
#[inline(never)]
fn write_ipv4(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK)
        || l4 < l3 + IPV6_FRAGMENT_HEADERS
        || l4 > MAX_NAT64_L4 + FRAGMENT_HEADER
    {
        return Err(Counter::DropTruncatedIpv6);
    }
    save_link(ctx, work)?;
    let header = ipv4_header(work);
    let shrink = l4 - l3 - IPV4_HEADER;
    // SAFETY: moves the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, shrink as i32) } != 0 {
        return Err(Counter::DropNat64HeadAdjust);
    }
    restore_link(ctx, work, ETH_P_IPV4)?;
    let ip: *mut [u8; IPV4_HEADER] = ptr_at(ctx, l3).ok_or(Counter::DropNat64HeadAdjust)?;
    // SAFETY: bounds-checked above.
    unsafe { *ip = header };
    Ok(())
}

#[inline(always)]
fn ipv4_header(work: &NatWork) -> [u8; IPV4_HEADER] {
    let packet = &work.packet4;
    let mut h = [0u8; IPV4_HEADER];
    h[0] = 0x45;
    h[1] = work.tos;
    h[2..4].copy_from_slice(&packet.total_length.to_be_bytes());
    h[4..6].copy_from_slice(&(work.frag_id as u16).to_be_bytes());
    let flags = ((work.frag_field & 1) << 13) | (work.frag_field >> 3);
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[8] = packet.ttl;
    h[9] = packet.protocol;
    h[12..16].copy_from_slice(&packet.src);
    h[16..20].copy_from_slice(&packet.dst);
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HEADER {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u32;
        i += 2;
    }
    h[10..12].copy_from_slice(&(!fold(sum)).to_be_bytes());
    h
}

/// The first fragment's TCP or UDP header behind the new IPv4 header: the public source port,
/// and the checksum updated for the pseudo-header's addresses and the port.
#[inline(never)]
fn translate_ports4(ctx: &XdpContext, work: &NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    if l3 > MAX_LINK {
        return Err(Counter::DropTruncatedIpv6);
    }
    let transport = l3 + IPV4_HEADER;
    let old = sum16(&work.private6) + sum16(&work.remote6) + work.sport as u32 + work.dport as u32;
    let new = sum4(work.packet4.src)
        + sum4(work.packet4.dst)
        + work.packet4.src_port as u32
        + work.packet4.dst_port as u32;
    let port = work.packet4.src_port.to_be_bytes();
    if work.protocol == IPPROTO_TCP {
        let tcp: *mut [u8; 18] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedTcp)?;
        // SAFETY: bounds-checked above.
        let tcp = unsafe { &mut *tcp };
        rewrite_ports(tcp, 16, old, new, false);
        tcp[0..2].copy_from_slice(&port);
    } else {
        let udp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
        // SAFETY: bounds-checked above.
        let udp = unsafe { &mut *udp };
        rewrite_ports(udp, 6, old, new, true);
        udp[0..2].copy_from_slice(&port);
    }
    Ok(())
}

// --- IPv4 -> IPv6.

/// An IPv4 fragment of a reply: a first fragment whose NAT64 session `nat44::inbound` found (in
/// the work area), or a later fragment `NAT_FRAGMENTS` does not know.
#[inline(always)]
pub fn inbound(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    if let Err(reason) = classify_inbound(ctx, packet, work) {
        return reject4(packet, ingress, reason, subnet_index);
    }
    let verdict = if packet.later_fragment {
        later_inbound(packet, ingress, work)
    } else {
        first_inbound(ctx, packet, ingress, work)
    };
    if verdict != FORWARD {
        return verdict;
    }
    if let Err(reason) = write_ipv6(ctx, work) {
        return drop(reason);
    }
    if !packet.later_fragment
        && let Err(reason) = translate_ports6(ctx, work)
    {
        return drop(reason);
    }
    count(Counter::Nat64FragmentTranslated);
    nat64::send_ipv6(ctx, work, ingress)
}

/// Reads an IPv4 fragment's layout and fields into the work area.
#[inline(always)]
fn classify_inbound(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let ip: *const [u8; IPV4_HEADER] = ptr_at(ctx, packet.l3).ok_or(Counter::DropTruncatedIpv4)?;
    // SAFETY: bounds-checked above.
    let h = unsafe { *ip };
    let flags = u16::from_be_bytes([h[6], h[7]]);
    work.frag_id = u16::from_be_bytes([h[4], h[5]]) as u32;
    work.frag_field = ((flags & 0x1fff) << 3) | ((flags >> 13) & 1);
    work.frag_old_sum = sum4(packet.src) + sum4(packet.dst);
    work.l3 = packet.l3 as u16;
    work.l4 = packet.l4 as u16;
    work.transport_length = packet.total_length - (packet.l4 - packet.l3) as u16;
    work.tos = h[1];
    work.ttl = packet.ttl;
    work.protocol = packet.protocol;
    work.frag_key = FragmentKey {
        src: packet.src,
        dst: packet.dst,
        id: [h[4], h[5]],
        protocol: packet.protocol,
        _pad: 0,
    };
    Ok(())
}

/// A first fragment of a reply (RFC 7915 s4.1): the checks `nat64::classify_inbound` makes,
/// then its train remembered.
#[inline(never)]
fn first_inbound(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    if let Err(reason) = check_first_inbound(ctx, packet, work) {
        return reject4(packet, ingress, reason, subnet_index);
    }
    work.translated = flow::Translated {
        src: work.remote6,
        dst: work.private6,
        ports: (work.sport as u32) << 16 | work.private_port as u32,
    };
    flow::account_v4_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::INGRESS, None, subnet_index),
    );
    let (sport, dport) = (work.sport, work.private_port);
    set_packet6(work, sport, dport);
    work.packet6.src = work.remote6;
    work.packet6.dst = work.private6;
    work.packet6.total_length += FRAGMENT_HEADER as u16;
    work.frag64_in = Nat64FragmentIn {
        remote6: work.remote6,
        client: work.private6,
        subnet_index,
    };
    let _ = NAT64_FRAGMENTS_IN.insert(&work.frag_key, &work.frag64_in, 0);
    FORWARD
}

/// The refusals of a first fragment: ICMP (RFC 7915 s4.2: fragmented ICMP is not translated), a
/// source the prefix may not carry, an unexpired source route, UDP without a checksum (none can
/// be computed from one fragment).
#[inline(never)]
fn check_first_inbound(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    if work.protocol == IPPROTO_ICMP {
        return Err(Counter::DropNat64Fragment);
    }
    if embed_into(work, u32::from_be_bytes(packet.src), INTO_REMOTE6) != 0 {
        return Err(Counter::DropNat64NonGlobal);
    }
    if packet.l4 > packet.l3 + IPV4_HEADER && unexpired_source_route(ctx, packet, work)? {
        return Err(Counter::DropNat64SourceRoute);
    }
    if work.protocol == IPPROTO_UDP {
        if packet.l4 > MAX_LINK + 60 {
            return Err(Counter::DropMalformedIpv4);
        }
        let udp: *const [u8; 8] = ptr_at(ctx, packet.l4).ok_or(Counter::DropTruncatedUdp)?;
        // SAFETY: bounds-checked above.
        let check = unsafe { u16::from_be_bytes([(*udp)[6], (*udp)[7]]) };
        if check == 0 {
            return Err(Counter::DropNat64UdpZeroChecksum);
        }
    }
    Ok(())
}

/// A later fragment of a reply: the addresses its first fragment was translated to.
#[inline(never)]
fn later_inbound(packet: &Ipv4Packet, ingress: u32, work: &mut NatWork) -> u32 {
    // SAFETY: plain data copied out.
    let Some(translation) = (unsafe { NAT64_FRAGMENTS_IN.get(&work.frag_key) }).copied() else {
        return reject4(
            packet,
            ingress,
            Counter::DropNatFragmentOutOfOrder,
            work.subnet_index,
        );
    };
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    work.remote6 = translation.remote6;
    work.private6 = translation.client;
    work.translated = flow::Translated {
        src: translation.remote6,
        dst: translation.client,
        ports: 0,
    };
    flow::account_v4_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(
            target::NAT_GATEWAY,
            direction::INGRESS,
            None,
            translation.subnet_index,
        ),
    );
    set_packet6(work, 0, 0);
    work.packet6.src = translation.remote6;
    work.packet6.dst = translation.client;
    work.packet6.total_length += FRAGMENT_HEADER as u16;
    FORWARD
}

/// Replaces the IPv4 header (options included) with an IPv6 header and a Fragment header
/// (RFC 7915 s4.1.1): identification zero-extended, offset and M copied.
#[inline(never)]
fn write_ipv6(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK) || l4 < l3 + IPV4_HEADER || l4 > MAX_LINK + 60 {
        return Err(Counter::DropMalformedIpv4);
    }
    save_link(ctx, work)?;
    let header = ipv6_headers(work);
    let grow = IPV6_FRAGMENT_HEADERS as i32 - (l4 - l3) as i32;
    // SAFETY: moves the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Counter::DropNat64HeadAdjust);
    }
    restore_link(ctx, work, ETH_P_IPV6)?;
    let ip: *mut [u8; IPV6_FRAGMENT_HEADERS] =
        ptr_at(ctx, l3).ok_or(Counter::DropNat64HeadAdjust)?;
    // SAFETY: bounds-checked above.
    unsafe { *ip = header };
    Ok(())
}

#[inline(always)]
fn ipv6_headers(work: &NatWork) -> [u8; IPV6_FRAGMENT_HEADERS] {
    let packet = &work.packet6;
    let mut h = [0u8; IPV6_FRAGMENT_HEADERS];
    h[0] = 0x60 | (work.tos >> 4);
    h[1] = work.tos << 4;
    let payload = work.transport_length + FRAGMENT_HEADER as u16;
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = IPPROTO_FRAGMENT;
    h[7] = packet.hop_limit;
    h[8..24].copy_from_slice(&packet.src);
    h[24..40].copy_from_slice(&packet.dst);
    h[40] = work.protocol;
    h[42..44].copy_from_slice(&work.frag_field.to_be_bytes());
    h[44..48].copy_from_slice(&work.frag_id.to_be_bytes());
    h
}

/// The first fragment's TCP or UDP header behind the new headers: the client's destination
/// port, and the checksum updated for the pseudo-header's addresses and the port.
#[inline(never)]
fn translate_ports6(ctx: &XdpContext, work: &NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    if l3 > MAX_LINK {
        return Err(Counter::DropMalformedIpv4);
    }
    let transport = l3 + IPV6_FRAGMENT_HEADERS;
    let old = work.frag_old_sum + work.dport as u32;
    let new = sum16(&work.packet6.src) + sum16(&work.packet6.dst) + work.packet6.dst_port as u32;
    let port = work.packet6.dst_port.to_be_bytes();
    if work.protocol == IPPROTO_TCP {
        let tcp: *mut [u8; 18] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedTcp)?;
        // SAFETY: bounds-checked above.
        let tcp = unsafe { &mut *tcp };
        rewrite_ports(tcp, 16, old, new, false);
        tcp[2..4].copy_from_slice(&port);
    } else {
        let udp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
        // SAFETY: bounds-checked above.
        let udp = unsafe { &mut *udp };
        // Never 0 here (refused before); a computed 0 is written as 0xffff.
        rewrite_ports(udp, 6, old, new, true);
        udp[2..4].copy_from_slice(&port);
    }
    Ok(())
}
