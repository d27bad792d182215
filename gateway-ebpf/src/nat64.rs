//! The NAT gateway, IPv6 to IPv4: stateful NAT64 (RFC 6146) with the header translation of
//! RFC 7915 and the address mapping of RFC 6052.
//!
//! An IPv6-only client reaches an IPv4 host at `prefix + IPv4` (64:ff9b::/96 by default). The
//! session is the NAT44 one with an IPv6 private side: a `NAT64_OUT` entry keyed by the client
//! and the IPv4 destination, and the shared `NAT44_IN` entry keyed by the public endpoint, whose
//! `translated_family` says the client is IPv6. Both families therefore draw from one public pool
//! and one port space, and replies find their session the same way; only the last step differs:
//! the packet changes family.
//!
//! Changing family moves the start of the transport header by 20 bytes (more with IPv4 options
//! or IPv6 extension headers): the link header and the new IP header are written into headroom
//! made with `bpf_xdp_adjust_head`, and the transport header and payload never move. Transport
//! checksums are updated for the new pseudo-header incrementally, so a wrong checksum stays wrong
//! by the same amount; ICMP, whose IPv6 checksum covers a pseudo-header and whose IPv4 one does
//! not, likewise. ICMP errors, whose quoted packet changes size too, get their checksum computed
//! anew over the translated message.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_csum_diff, bpf_get_prandom_u32, bpf_loop, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use gateway_common::{
    Counter,
    checksum::fold,
    maps::{FlowStats, direction, family, target},
    nat::udp_zero_checksum,
    nat64::{
        self as rfc, Icmp4To6, Icmp6To4, Nat64Prefix, icmp4_to_icmp6, icmp6_to_icmp4,
        is_global_ipv4,
    },
};

use crate::{
    counters::{count, drop, pass},
    fastpath::{self, NOT_HANDLED},
    flow::{self, Handling},
    forwarding,
    maps::{CONNTRACK, NAT_GATEWAYS, NAT_PUBLIC_IPS},
    nat44::{self, NatWork},
    parsing::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, ptr_at,
    },
};

pub(crate) const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
pub(crate) const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
pub(crate) const IPV4_HEADER: usize = 20;
pub(crate) const IPV6_HEADER: usize = 40;
/// Ethernet + one 802.1Q tag.
pub(crate) const MAX_LINK: usize = 18;
/// IPv6 extension headers walked before the transport header (Hop-by-Hop, Destination Options,
/// Routing with no segments left); more is a counted drop.
const MAX_EXTENSION_HEADERS: usize = 3;
/// Bound on the transport header's offset behind extension headers, for the verifier.
pub(crate) const MAX_NAT64_L4: usize = MAX_LINK + IPV6_HEADER + 256;
/// Longest run of bytes summed for a checksum computed from scratch (a UDP datagram without a
/// checksum, a translated ICMP error): a standard Ethernet MTU.
const MAX_SUMMED: usize = 1500;
/// An ICMPv6 error may not exceed the IPv6 minimum MTU, an ICMPv4 one 576 bytes (RFC 7915 s4.2,
/// s5.2, from RFC 4443 and RFC 1812).
const MAX_ICMPV6_ERROR: usize = 1280;
const MAX_ICMPV4_ERROR: usize = 576;

/// Sum of the 16-bit words of an IPv6 address.
#[inline(always)]
pub(crate) fn sum16(addr: &[u8; 16]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 16 {
        sum += u16::from_be_bytes([addr[i], addr[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Sum of the 16-bit words of an IPv4 address.
#[inline(always)]
pub(crate) fn sum4(addr: [u8; 4]) -> u32 {
    u16::from_be_bytes([addr[0], addr[1]]) as u32 + u16::from_be_bytes([addr[2], addr[3]]) as u32
}

/// RFC 1624 eqn. 3 for a whole set of words at once: `old` and `new` are the one's complement
/// sums of the words that left and the words that came in.
#[inline(always)]
pub(crate) fn replace_sum(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u32 & 0xffff) + (!fold(old) as u32 & 0xffff) + fold(new) as u32;
    !fold(sum)
}

/// The prefix of the gateway in the work area.
#[inline(always)]
pub(crate) fn prefix_of(work: &NatWork) -> Nat64Prefix {
    Nat64Prefix {
        addr: work.info.nat64_prefix,
        len: work.info.nat64_prefix_len,
        _pad: [0; 3],
    }
}

/// Where [`embed_into`] writes.
pub(crate) const INTO_REMOTE6: u32 = 0;
const INTO_QUOTED_REMOTE6: u32 = 1;
const INTO_TRANSLATED_SRC: u32 = 2;

/// Writes `addr` embedded in the gateway's NAT64 prefix into the work area (`into`); 0 when done,
/// 1 when RFC 6052 s3.1 forbids it (the well-known prefix with a non-global IPv4 address).
/// Out of line, like [`may_carry`]: the global-address test branches a dozen ways, and the
/// verifier should follow those branches here, not each through the rest of the caller.
#[inline(never)]
pub(crate) fn embed_into(work: &mut NatWork, addr: u32, into: u32) -> u32 {
    if may_carry(work, addr) == 0 {
        return 1;
    }
    let slot = match into {
        INTO_REMOTE6 => &mut work.remote6,
        INTO_QUOTED_REMOTE6 => &mut work.quoted_remote6,
        _ => &mut work.translated.src,
    };
    let prefix = Nat64Prefix {
        addr: work.info.nat64_prefix,
        len: work.info.nat64_prefix_len,
        _pad: [0; 3],
    };
    match prefix.embed(addr.to_be_bytes()) {
        Some(embedded) => {
            *slot = embedded;
            0
        }
        None => 1,
    }
}

/// 1 when the gateway's prefix may carry `addr` (RFC 6052 s3.1), else 0. Out of line (see
/// [`embed_into`]).
#[inline(never)]
pub(crate) fn may_carry(work: &NatWork, addr: u32) -> u32 {
    let prefix = prefix_of(work);
    (!prefix.is_well_known() || is_global_ipv4(addr.to_be_bytes())) as u32
}

#[inline(always)]
pub(crate) fn reject6(
    packet: &Ipv6Packet,
    ingress: u32,
    reason: Counter,
    subnet_index: u32,
) -> u32 {
    flow::account_v6(
        packet,
        ingress,
        Handling::new(0, direction::EGRESS, Some(reason), subnet_index),
    );
    drop(reason)
}

#[inline(always)]
pub(crate) fn reject4(
    packet: &Ipv4Packet,
    ingress: u32,
    reason: Counter,
    subnet_index: u32,
) -> u32 {
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(packet.src, packet.src_port),
        flow::endpoint(packet.dst, packet.dst_port),
        Handling::new(0, direction::INGRESS, Some(reason), subnet_index),
    );
    drop(reason)
}

/// IPv6 from a private subnet to the NAT64 prefix of NAT gateway `gateway`.
#[inline(never)]
pub fn outbound(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    ingress: u32,
    subnet_index: u32,
    gateway: u32,
) -> u32 {
    nat44::count_bytes(
        Counter::NatPacketsInFromSource,
        Counter::NatBytesInFromSource,
        packet.total_length,
    );
    if packet.hop_limit <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    let Some(work) = nat44::work() else {
        return drop(Counter::DropNatNoGateway);
    };
    let Some(info) = NAT_GATEWAYS.get(gateway) else {
        return reject6(packet, ingress, Counter::DropNatNoGateway, subnet_index);
    };
    if info.public_ip_count == 0 || info.nat64_prefix_len == 0 {
        return reject6(packet, ingress, Counter::DropNatNoGateway, subnet_index);
    }
    work.info = *info;
    work.gateway = gateway as u8;
    work.subnet_index = subnet_index;
    work.now = nat44::now();
    if let Err(reason) = classify_outbound(ctx, packet, work) {
        if reason == Counter::DropNat64Fragment {
            // Translated by the tail-called `nat64_fragment_out`, which parses it again.
            return crate::TAIL_CALL + gateway_common::maps::tail::NAT64_FRAGMENT_OUTBOUND;
        }
        return reject6(packet, ingress, reason, subnet_index);
    }
    if work.icmp_error != 0 {
        // Translated by the tail-called `nat64_icmp_error_out`, from the work area.
        return crate::TAIL_CALL + gateway_common::maps::tail::NAT64_ICMP_ERROR_OUTBOUND;
    }
    if let Some(reason) = nat44::session_outbound(work) {
        // No RST is crafted for an IPv6 client on a timed-out session: the packet is dropped.
        return reject6(packet, ingress, reason, subnet_index);
    }
    // SAFETY: plain data, only tested for presence.
    if unsafe { NAT_PUBLIC_IPS.get(work.dst) }.is_some() {
        return hairpin(ctx, packet, ingress, work);
    }
    let sport = if work.protocol == IPPROTO_ICMP {
        packet.src_port
    } else {
        work.public_port
    };
    work.translated = flow::Translated {
        src: flow::widen(work.public_addr),
        dst: flow::widen(work.dst),
        ports: (sport as u32) << 16 | work.dport as u32,
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
    // The next hop is kept in this packet's flow entry for the fast path (only for packets
    // without extension headers, the only ones it takes).
    if work.l4 as usize == packet.l3 + IPV6_HEADER {
        let key = &mut work.origin_key;
        key.src = packet.src;
        key.dst = packet.dst;
        key.src_port = packet.src_port;
        key.dst_port = packet.dst_port;
        key.ingress_ifindex = ingress;
        key.protocol = packet.next_header;
        key.family = family::IPV6;
        key.action = gateway_common::maps::action::ACCEPT;
        key._pad = 0;
        work.origin_length = packet.total_length;
        work.packet4.nat64_origin = true;
    }
    if let Err(reason) = to_ipv4(ctx, work) {
        return drop(reason);
    }
    send_ipv4(ctx, work, ingress)
}

/// The IPv4 packet `to_ipv4` writes: its addresses and ports (ICMP echo: the identifier as the
/// source port).
#[inline(always)]
pub(crate) fn set_packet4(work: &mut NatWork, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) {
    let protocol = work.protocol;
    let l3 = work.l3 as usize;
    let transport_length = work.transport_length;
    let ttl = work.ttl;
    let flags = work.tcp_flags;
    let packet = &mut work.packet4;
    packet.l3 = l3;
    packet.l4 = l3 + IPV4_HEADER;
    packet.vlan_tagged = l3 != 14;
    packet.src = src;
    packet.dst = dst;
    packet.protocol = protocol;
    packet.ttl = ttl;
    packet.total_length = transport_length + IPV4_HEADER as u16;
    packet.later_fragment = false;
    packet.src_port = sport;
    packet.dst_port = dport;
    packet.tcp_flags = flags;
    packet.icmp_error = false;
    packet.nat64_origin = false;
}

/// The IPv6 packet `to_ipv6` writes.
#[inline(always)]
pub(crate) fn set_packet6(work: &mut NatWork, sport: u16, dport: u16) {
    let next_header = if work.protocol == IPPROTO_ICMP {
        IPPROTO_ICMPV6
    } else {
        work.protocol
    };
    let l3 = work.l3 as usize;
    let transport_length = work.transport_length;
    let ttl = work.ttl;
    let flags = work.tcp_flags;
    let packet = &mut work.packet6;
    packet.l3 = l3;
    packet.vlan_tagged = l3 != 14;
    packet.next_header = next_header;
    packet.hop_limit = ttl;
    packet.total_length = transport_length + IPV6_HEADER as u16;
    packet.src_port = sport;
    packet.dst_port = dport;
    packet.tcp_flags = flags;
    packet.nat64_origin = false;
}

/// Walks the extension headers and reads the transport header of an outbound packet into the
/// work area; `work.icmp_error` says whether it is an ICMPv6 error (else TCP, UDP or an echo
/// request). Returns `Result<(), _>`: a wider value would come back through a stack pointer,
/// which the verifier refuses.
#[inline(never)]
fn classify_outbound(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let prefix = prefix_of(work);
    if !prefix.contains(&packet.dst) {
        return Err(Counter::DropNat64NotInPrefix);
    }
    let destination = prefix
        .extract(&packet.dst)
        .ok_or(Counter::DropNat64NotInPrefix)?;
    if may_carry(work, u32::from_be_bytes(destination)) == 0 {
        return Err(Counter::DropNat64NonGlobal);
    }
    let (protocol, l4) = upper_layer(ctx, packet.l3)?;
    let ip: *const [u8; 2] = ptr_at(ctx, packet.l3).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let head = unsafe { *ip };
    let end = packet.l3 + packet.total_length as usize;
    if l4 > end {
        return Err(Counter::DropTruncatedIpv6);
    }
    work.l3 = packet.l3 as u16;
    work.l4 = l4 as u16;
    work.transport_length = (end - l4) as u16;
    set_client(work, packet, head, destination);
    // Every transport header has 8 bytes (a minimal UDP datagram has no more); the TCP flags
    // are read on their own.
    let transport: *const [u8; 8] = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let t = unsafe { *transport };
    match protocol {
        IPPROTO_TCP => {
            if work.transport_length < 20 {
                return Err(Counter::DropTruncatedTcp);
            }
            work.protocol = IPPROTO_TCP;
            work.sport = u16::from_be_bytes([t[0], t[1]]);
            work.dport = u16::from_be_bytes([t[2], t[3]]);
            let flags: *const u8 = ptr_at(ctx, l4 + 13).ok_or(Counter::DropTruncatedTcp)?;
            // SAFETY: bounds-checked above.
            work.tcp_flags = unsafe { *flags };
            Ok(())
        }
        IPPROTO_UDP => {
            if work.transport_length < 8 {
                return Err(Counter::DropTruncatedUdp);
            }
            work.protocol = IPPROTO_UDP;
            work.sport = u16::from_be_bytes([t[0], t[1]]);
            work.dport = u16::from_be_bytes([t[2], t[3]]);
            Ok(())
        }
        IPPROTO_ICMPV6 => {
            if work.transport_length < 8 {
                return Err(Counter::DropTruncatedIcmp);
            }
            work.protocol = IPPROTO_ICMP;
            match t[0] {
                rfc::icmp6_type::ECHO_REQUEST => {
                    work.sport = u16::from_be_bytes([t[4], t[5]]);
                    work.dport = 0;
                    Ok(())
                }
                1..=4 => {
                    work.icmp_error = 1;
                    Ok(())
                }
                _ => Err(Counter::DropNat64IcmpUntranslatable),
            }
        }
        _ => Err(Counter::DropNatUnsupportedProtocol),
    }
}

/// The transport protocol and its offset behind the IPv6 header at `l3`: Hop-by-Hop and
/// Destination Options are skipped (and dropped by the translation), a Routing header only with
/// no segments left (RFC 7915 s5.1); fragments are not translated.
#[inline(always)]
fn upper_layer(ctx: &XdpContext, l3: usize) -> Result<(u8, usize), Counter> {
    let next: *const u8 = ptr_at(ctx, l3 + 6).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let mut next = unsafe { *next };
    let mut offset = l3 + IPV6_HEADER;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            0 | 60 | 43 => {
                if offset > MAX_NAT64_L4 {
                    return Err(Counter::DropNat64ExtensionHeaders);
                }
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
            44 => return Err(Counter::DropNat64Fragment),
            _ => break,
        }
    }
    match next {
        0 | 60 | 43 | 44 | 50 | 51 => Err(Counter::DropNat64ExtensionHeaders),
        _ if offset > MAX_NAT64_L4 => Err(Counter::DropNat64ExtensionHeaders),
        _ => Ok((next, offset)),
    }
}

/// Copies the link header (Ethernet, and the 802.1Q tag when there is one) into the work area.
#[inline(always)]
pub(crate) fn save_link(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let link: *const [u8; MAX_LINK] = ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEthernet)?;
    // SAFETY: bounds-checked above (every IP packet is longer than 18 bytes of link header).
    work.link = unsafe { *link };
    Ok(())
}

/// Writes the saved link header at the (new) start of the frame with the other EtherType.
#[inline(always)]
pub(crate) fn restore_link(
    ctx: &XdpContext,
    work: &NatWork,
    ether_type: [u8; 2],
) -> Result<(), Counter> {
    let mut link = work.link;
    if work.l3 == 14 {
        link[12] = ether_type[0];
        link[13] = ether_type[1];
        let out: *mut [u8; 14] = ptr_at(ctx, 0).ok_or(Counter::DropNat64HeadAdjust)?;
        let mut head = [0u8; 14];
        head.copy_from_slice(&link[..14]);
        // SAFETY: bounds-checked above.
        unsafe { *out = head };
    } else {
        link[16] = ether_type[0];
        link[17] = ether_type[1];
        let out: *mut [u8; MAX_LINK] = ptr_at(ctx, 0).ok_or(Counter::DropNat64HeadAdjust)?;
        // SAFETY: bounds-checked above.
        unsafe { *out = link };
    }
    Ok(())
}

/// An IPv4 header for `work.packet4` (RFC 7915 s5.1): TOS from the traffic class, TTL as it
/// arrived (forwarding decrements it once), DF when longer than 1260 bytes, a fresh
/// identification.
#[inline(always)]
fn ipv4_header(work: &NatWork) -> [u8; IPV4_HEADER] {
    let packet = &work.packet4;
    let mut h = [0u8; IPV4_HEADER];
    h[0] = 0x45;
    h[1] = work.tos;
    h[2..4].copy_from_slice(&packet.total_length.to_be_bytes());
    // SAFETY: helper without side effects.
    let id = unsafe { bpf_get_prandom_u32() } as u16;
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6] = if rfc::translated_df(packet.total_length) {
        0x40
    } else {
        0
    };
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

/// An IPv6 header for `work.packet6` (RFC 7915 s4.1): traffic class from the TOS, flow label 0,
/// hop limit as it arrived (forwarding decrements it once).
#[inline(always)]
fn ipv6_header(work: &NatWork) -> [u8; IPV6_HEADER] {
    let packet = &work.packet6;
    let mut h = [0u8; IPV6_HEADER];
    h[0] = 0x60 | (work.tos >> 4);
    h[1] = work.tos << 4;
    h[4..6].copy_from_slice(&work.transport_length.to_be_bytes());
    h[6] = packet.next_header;
    h[7] = packet.hop_limit;
    h[8..24].copy_from_slice(&packet.src);
    h[24..40].copy_from_slice(&packet.dst);
    h
}

/// Replaces the IPv6 header (and the extension headers before `work.l4`) with the IPv4 header of
/// `work.packet4`, and updates the transport header: source or destination port (ICMP: the echo
/// type and identifier) and checksum. `work.private6`/`remote6` are the IPv6 addresses the
/// transport checksum covered, `work.sport`/`dport` its ports.
#[inline(never)]
fn to_ipv4(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK) || l4 < l3 + IPV6_HEADER || l4 > MAX_NAT64_L4 {
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
    let old_addresses = sum16(&work.private6) + sum16(&work.remote6);
    let new_addresses = sum4(work.packet4.src) + sum4(work.packet4.dst);
    let transport = l3 + IPV4_HEADER;
    match work.protocol {
        IPPROTO_TCP => {
            let tcp: *mut [u8; 18] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedTcp)?;
            // SAFETY: bounds-checked above.
            let tcp = unsafe { &mut *tcp };
            rewrite_ports(
                tcp,
                16,
                old_addresses + work.sport as u32 + work.dport as u32,
                new_addresses + work.packet4.src_port as u32 + work.packet4.dst_port as u32,
                false,
            );
            tcp[0..2].copy_from_slice(&work.packet4.src_port.to_be_bytes());
            tcp[2..4].copy_from_slice(&work.packet4.dst_port.to_be_bytes());
        }
        IPPROTO_UDP => {
            let udp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
            // SAFETY: bounds-checked above.
            let udp = unsafe { &mut *udp };
            rewrite_ports(
                udp,
                6,
                old_addresses + work.sport as u32 + work.dport as u32,
                new_addresses + work.packet4.src_port as u32 + work.packet4.dst_port as u32,
                true,
            );
            udp[0..2].copy_from_slice(&work.packet4.src_port.to_be_bytes());
            udp[2..4].copy_from_slice(&work.packet4.dst_port.to_be_bytes());
        }
        _ => {
            let icmp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedIcmp)?;
            // SAFETY: bounds-checked above.
            let icmp = unsafe { &mut *icmp };
            // ICMPv6 covers a pseudo-header (addresses, length, next header 58); ICMPv4 none.
            let length = work.transport_length as u32;
            let old = old_addresses
                + IPPROTO_ICMPV6 as u32
                + length
                + u16::from_be_bytes([icmp[0], icmp[1]]) as u32
                + u16::from_be_bytes([icmp[4], icmp[5]]) as u32;
            icmp[0] = rfc::icmp4_type::ECHO_REQUEST;
            icmp[4..6].copy_from_slice(&work.packet4.src_port.to_be_bytes());
            let new = u16::from_be_bytes([icmp[0], icmp[1]]) as u32 + work.packet4.src_port as u32;
            let check = replace_sum(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
            icmp[2..4].copy_from_slice(&check.to_be_bytes());
        }
    }
    Ok(())
}

/// Updates the checksum at `at` of a TCP or UDP header whose covered words sum `old` before and
/// `new` after. UDP over IPv4 keeps "no checksum" (0) and writes a computed 0 as 0xffff.
#[inline(always)]
pub(crate) fn rewrite_ports<const N: usize>(
    header: &mut [u8; N],
    at: usize,
    old: u32,
    new: u32,
    udp: bool,
) {
    if at + 2 > N {
        return;
    }
    let check = u16::from_be_bytes([header[at], header[at + 1]]);
    if udp && check == 0 {
        return;
    }
    let mut updated = replace_sum(check, old, new);
    if udp && updated == 0 {
        updated = 0xffff;
    }
    header[at..at + 2].copy_from_slice(&updated.to_be_bytes());
}

/// An IPv6 client's packet to the NAT gateway's own public address (through the prefix): sent
/// on to the session that holds the public endpoint, with the sender's public endpoint as its
/// source (RFC 6146 s3.8). An IPv6 session behind it gets an IPv6 packet from
/// `prefix + public address`; a NAT44 session an IPv4 packet.
#[inline(never)]
fn hairpin(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    if work.protocol == IPPROTO_ICMP {
        // An echo request is never an answer.
        return reject6(
            packet,
            ingress,
            Counter::DropNatUnsolicitedIcmp,
            subnet_index,
        );
    }
    // The sender as the IPv6 transport checksum covers it; then the packet as it would arrive
    // at the public side.
    work.hairpin_client = work.private6;
    work.hairpin_client_port = work.sport;
    work.hairpin_dport = work.dport;
    work.src = work.public_addr;
    work.sport = work.public_port;
    if let Some(reason) = nat44::session_inbound(work) {
        return reject6(packet, ingress, reason, subnet_index);
    }
    count(Counter::ForwardNat64Hairpin);
    if work.family == family::IPV6 {
        // Embedded here rather than below: one frame less on the deepest call chain.
        if embed_into(
            work,
            u32::from_be_bytes(work.public_addr),
            INTO_TRANSLATED_SRC,
        ) != 0
        {
            return reject6(packet, ingress, Counter::DropNat64NonGlobal, subnet_index);
        }
        if let Err(reason) = hairpin_to_ipv6(ctx, packet, work) {
            return reject6(packet, ingress, reason, subnet_index);
        }
        flow::account_v6_translated(
            packet,
            ingress,
            &work.translated,
            Handling::new(target::NAT_GATEWAY, direction::INTERNAL, None, subnet_index),
        );
        return forwarding::ipv6(ctx, &work.packet6, ingress);
    }
    hairpin_to_ipv4(work);
    flow::account_v6_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::INTERNAL, None, subnet_index),
    );
    if let Err(reason) = to_ipv4(ctx, work) {
        return drop(reason);
    }
    forwarding::ipv4(
        ctx,
        &work.packet4,
        work.packet4.src,
        work.packet4.dst,
        ingress,
    )
}

/// Hairpin to a NAT44 session: the packet becomes IPv4 from the sender's public endpoint to the
/// private host.
#[inline(never)]
fn hairpin_to_ipv4(work: &mut NatWork) {
    work.translated.src = flow::widen(work.public_addr);
    work.translated.dst = flow::widen(work.private_addr);
    work.translated.ports = (work.public_port as u32) << 16 | work.private_port as u32;
    // `to_ipv4` takes the old checksum words from these.
    work.private6 = work.hairpin_client;
    work.sport = work.hairpin_client_port;
    work.dport = work.hairpin_dport;
    let (public, private) = (work.public_addr, work.private_addr);
    let (public_port, private_port) = (work.public_port, work.private_port);
    set_packet4(work, public, private, public_port, private_port);
}

/// Hairpin between two IPv6 clients: the packet stays IPv6, from `prefix + public address` of
/// the sender to the other client, ports from the sessions; the transport checksum follows.
#[inline(never)]
fn hairpin_to_ipv6(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    work.translated.dst = work.private6;
    work.translated.ports = (work.public_port as u32) << 16 | work.private_port as u32;
    let (new_sport, new_dport) = (work.public_port, work.private_port);
    let old = sum16(&work.hairpin_client)
        + sum16(&work.remote6)
        + work.hairpin_client_port as u32
        + work.hairpin_dport as u32;
    let new = sum16(&work.translated.src)
        + sum16(&work.translated.dst)
        + new_sport as u32
        + new_dport as u32;
    let l4 = work.l4 as usize;
    if l4 > MAX_NAT64_L4 || packet.l3 > MAX_LINK {
        return Err(Counter::DropTruncatedIpv6);
    }
    if work.protocol == IPPROTO_TCP {
        let tcp: *mut [u8; 18] = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedTcp)?;
        // SAFETY: bounds-checked above.
        let tcp = unsafe { &mut *tcp };
        rewrite_ports(tcp, 16, old, new, false);
        tcp[0..2].copy_from_slice(&new_sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&new_dport.to_be_bytes());
    } else {
        let udp: *mut [u8; 8] = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedUdp)?;
        // SAFETY: bounds-checked above.
        let udp = unsafe { &mut *udp };
        rewrite_ports(udp, 6, old, new, false);
        udp[0..2].copy_from_slice(&new_sport.to_be_bytes());
        udp[2..4].copy_from_slice(&new_dport.to_be_bytes());
    }
    let addresses: *mut [u8; 32] = ptr_at(ctx, packet.l3 + 8).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let addresses = unsafe { &mut *addresses };
    addresses[..16].copy_from_slice(&work.translated.src);
    addresses[16..].copy_from_slice(&work.translated.dst);
    let out = &mut work.packet6;
    out.l3 = packet.l3;
    out.vlan_tagged = packet.vlan_tagged;
    out.src = work.translated.src;
    out.dst = work.translated.dst;
    out.next_header = packet.next_header;
    out.hop_limit = packet.hop_limit;
    out.total_length = packet.total_length;
    out.src_port = new_sport;
    out.dst_port = new_dport;
    out.tcp_flags = packet.tcp_flags;
    out.nat64_origin = false;
    Ok(())
}

/// IPv4 reply to a NAT64 session (found by [`nat44::inbound`], the client in `work.private6`
/// and `work.private_port`): translated to IPv6 from `prefix + source`.
#[inline(never)]
pub fn inbound(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let Some(info) = NAT_GATEWAYS.get(work.gateway as u32) else {
        return reject4(packet, ingress, Counter::DropNatNoGateway, u32::MAX);
    };
    work.info = *info;
    let subnet_index = work.subnet_index;
    if let Err(reason) = classify_inbound(ctx, packet, work) {
        if reason == Counter::DropNat64Fragment {
            // A first fragment (MF): translated by the tail-called `nat64_fragment_in`, from the
            // session in the work area.
            return crate::TAIL_CALL + gateway_common::maps::tail::NAT64_FRAGMENT_INBOUND;
        }
        return reject4(packet, ingress, reason, subnet_index);
    }
    let sport = if work.protocol == IPPROTO_ICMP {
        packet.dst_port
    } else {
        work.sport
    };
    work.translated = flow::Translated {
        src: work.remote6,
        dst: work.private6,
        ports: (sport as u32) << 16 | work.private_port as u32,
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
    // RFC 7915 s4: with DF set, a packet that will not fit the client's link once translated
    // is answered with "fragmentation needed" (the gateway cannot fragment IPv6 on the way).
    // Anything up to 1280 bytes fits every IPv6 link; the fast path never takes a longer packet
    // than the next hop accepted.
    if work.packet6.total_length as u32 > rfc::IPV6_MIN_MTU
        && work.df != 0
        && let Some(mtu) = forwarding::ipv6_path_mtu(ctx, &work.packet6, ingress)
        && work.packet6.total_length > mtu
    {
        work.icmp_rest = [0, 0, 0, 0];
        work.icmp_rest[2..4].copy_from_slice(&(mtu - IPV4_HEADER as u16).to_be_bytes());
        return crate::TAIL_CALL + gateway_common::maps::tail::NAT64_TOO_BIG;
    }
    // The next hop goes to this packet's flow entry for the fast path; what fits the IPv6 next
    // hop fits it 20 bytes shorter as IPv4.
    let key = &mut work.origin_key;
    key.src = flow::widen(packet.src);
    key.dst = flow::widen(packet.dst);
    key.src_port = packet.src_port;
    key.dst_port = packet.dst_port;
    key.ingress_ifindex = ingress;
    key.protocol = packet.protocol;
    key.family = family::IPV4;
    key.action = gateway_common::maps::action::ACCEPT;
    key._pad = 0;
    work.origin_length = work.packet6.total_length - IPV4_HEADER as u16;
    work.packet6.nat64_origin = true;
    if let Err(reason) = to_ipv6(ctx, work) {
        return drop(reason);
    }
    if work.protocol == IPPROTO_UDP
        && let Err(reason) = udp_checksum(ctx, work)
    {
        return drop(reason);
    }
    send_ipv6(ctx, work, ingress)
}

/// Checks an inbound IPv4 packet for translation and fills the layout: no fragments, no
/// unexpired source route, a source the prefix may carry, the UDP checksum rule.
#[inline(never)]
fn classify_inbound(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let ip: *const [u8; IPV4_HEADER] = ptr_at(ctx, packet.l3).ok_or(Counter::DropTruncatedIpv4)?;
    // SAFETY: bounds-checked above.
    let header = unsafe { *ip };
    work.df = (header[6] & 0x40 != 0) as u8;
    if header[6] & 0x20 != 0 || packet.later_fragment {
        return Err(Counter::DropNat64Fragment);
    }
    if embed_into(work, u32::from_be_bytes(packet.src), INTO_REMOTE6) != 0 {
        return Err(Counter::DropNat64NonGlobal);
    }
    if packet.l4 > packet.l3 + IPV4_HEADER && unexpired_source_route(ctx, packet, work)? {
        return Err(Counter::DropNat64SourceRoute);
    }
    work.l3 = packet.l3 as u16;
    work.l4 = packet.l4 as u16;
    work.transport_length = packet.total_length - (packet.l4 - packet.l3) as u16;
    work.tos = header[1];
    work.ttl = packet.ttl;
    if work.protocol == IPPROTO_UDP {
        let udp: *const [u8; 8] = ptr_at(ctx, packet.l4).ok_or(Counter::DropTruncatedUdp)?;
        // SAFETY: bounds-checked above.
        let check = unsafe { u16::from_be_bytes([(*udp)[6], (*udp)[7]]) };
        if check == 0
            && (work.info.nat64_udp_zero_checksum == udp_zero_checksum::DROP
                || work.transport_length as usize > MAX_SUMMED)
        {
            return Err(Counter::DropNat64UdpZeroChecksum);
        }
    }
    Ok(())
}

/// Whether the IPv4 options hold a loose or strict source route that is not used up
/// (RFC 7915 s4.1: such a packet is dropped; expired ones translate normally). The options are
/// copied into the work area in 4-byte words (the IHL counts them) and walked there.
#[inline(never)]
pub(crate) fn unexpired_source_route(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
) -> Result<bool, Counter> {
    let start = packet.l3 + IPV4_HEADER;
    if packet.l4 > MAX_LINK + 60 || start > MAX_LINK + IPV4_HEADER || packet.l4 < start {
        return Err(Counter::DropMalformedIpv4);
    }
    let words = (packet.l4 - start) >> 2;
    work.options = [0; 64];
    for i in 0..10 {
        if i >= words {
            break;
        }
        let word: *const [u8; 4] = ptr_at(ctx, start + i * 4).ok_or(Counter::DropMalformedIpv4)?;
        // SAFETY: bounds-checked above.
        let word = unsafe { *word };
        // Indices masked into the 64-byte area: visibly in bounds for the verifier.
        work.options[(i * 4) & 63] = word[0];
        work.options[(i * 4 + 1) & 63] = word[1];
        work.options[(i * 4 + 2) & 63] = word[2];
        work.options[(i * 4 + 3) & 63] = word[3];
    }
    work.options_end = (words * 4) as u8;
    work.option_at = 0;
    work.option_verdict = OPTIONS_OK;
    // In `bpf_loop`: the verifier checks one step once instead of every path through 40.
    // SAFETY: the callback is a BPF subprogram; it works on this CPU's work area.
    unsafe {
        bpf_loop(40, walk_option as *mut c_void, core::ptr::null_mut(), 0);
    }
    // Read back through a volatile load: the callback wrote it behind the compiler's back (it
    // would otherwise reuse the value stored before the loop).
    // SAFETY: a field of this CPU's work area.
    match unsafe { core::ptr::read_volatile(&raw const work.option_verdict) } {
        OPTIONS_OK => Ok(false),
        OPTIONS_SOURCE_ROUTE => Ok(true),
        _ => Err(Counter::DropMalformedIpv4),
    }
}

const OPTIONS_OK: u8 = 0;
const OPTIONS_SOURCE_ROUTE: u8 = 1;
const OPTIONS_MALFORMED: u8 = 2;

/// One option of [`unexpired_source_route`]'s walk. Returns 1 to stop, 0 to go on.
#[inline(never)]
extern "C" fn walk_option(_index: u64, _context: *mut c_void) -> i64 {
    let Some(work) = nat44::work() else {
        return 1;
    };
    let at = work.option_at as usize;
    let end = work.options_end as usize;
    if at >= end {
        return 1;
    }
    let kind = work.options[at & 63];
    match kind {
        // End of options.
        0 => return 1,
        // No operation.
        1 => {
            work.option_at += 1;
            return 0;
        }
        _ => {}
    }
    let length = work.options[(at + 1) & 63] as usize;
    let pointer = work.options[(at + 2) & 63] as usize;
    if length < 2 || at + length > end {
        work.option_verdict = OPTIONS_MALFORMED;
        return 1;
    }
    // Loose (131) and strict (137) source route: the pointer (1-based) is past the last
    // address once the route is used up.
    if (kind == 131 || kind == 137) && pointer <= length {
        work.option_verdict = OPTIONS_SOURCE_ROUTE;
        return 1;
    }
    work.option_at = (at + length) as u8;
    0
}

/// Replaces the IPv4 header (options included) with the IPv6 header of `work.packet6` and
/// updates the transport header: destination port (ICMP: echo reply type and identifier) and
/// checksum; a UDP datagram without a checksum gets one.
#[inline(never)]
fn to_ipv6(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK) || l4 < l3 + IPV4_HEADER || l4 > MAX_LINK + 60 {
        return Err(Counter::DropMalformedIpv4);
    }
    save_link(ctx, work)?;
    let header = ipv6_header(work);
    let grow = IPV6_HEADER - (l4 - l3);
    // The old header's words, before they are overwritten.
    let old_addresses = {
        let ip: *const [u8; IPV4_HEADER] = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIpv4)?;
        // SAFETY: bounds-checked above.
        let h = unsafe { *ip };
        sum4([h[12], h[13], h[14], h[15]]) + sum4([h[16], h[17], h[18], h[19]])
    };
    // SAFETY: moves the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Err(Counter::DropNat64HeadAdjust);
    }
    restore_link(ctx, work, ETH_P_IPV6)?;
    let ip: *mut [u8; IPV6_HEADER] = ptr_at(ctx, l3).ok_or(Counter::DropNat64HeadAdjust)?;
    // SAFETY: bounds-checked above.
    unsafe { *ip = header };
    let new_addresses = sum16(&work.packet6.src) + sum16(&work.packet6.dst);
    let transport = l3 + IPV6_HEADER;
    let old_port = work.dport;
    let new_port = work.packet6.dst_port;
    match work.protocol {
        IPPROTO_TCP => {
            let tcp: *mut [u8; 18] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedTcp)?;
            // SAFETY: bounds-checked above.
            let tcp = unsafe { &mut *tcp };
            rewrite_ports(
                tcp,
                16,
                old_addresses + old_port as u32,
                new_addresses + new_port as u32,
                false,
            );
            tcp[2..4].copy_from_slice(&new_port.to_be_bytes());
        }
        IPPROTO_UDP => {
            let udp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
            // SAFETY: bounds-checked above.
            let udp = unsafe { &mut *udp };
            udp[2..4].copy_from_slice(&new_port.to_be_bytes());
            let check = u16::from_be_bytes([udp[6], udp[7]]);
            if check != 0 {
                let updated = replace_sum(
                    check,
                    old_addresses + old_port as u32,
                    new_addresses + new_port as u32,
                );
                let updated = if updated == 0 { 0xffff } else { updated };
                udp[6..8].copy_from_slice(&updated.to_be_bytes());
            }
            // A datagram without a checksum keeps 0 here; `udp_checksum` computes it (out of
            // this function, so that its call chain stays off the fast path's).
        }
        _ => {
            let icmp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedIcmp)?;
            // SAFETY: bounds-checked above.
            let icmp = unsafe { &mut *icmp };
            let old = u16::from_be_bytes([icmp[0], icmp[1]]) as u32
                + u16::from_be_bytes([icmp[4], icmp[5]]) as u32;
            icmp[0] = rfc::icmp6_type::ECHO_REPLY;
            icmp[4..6].copy_from_slice(&new_port.to_be_bytes());
            let new = new_addresses
                + IPPROTO_ICMPV6 as u32
                + work.transport_length as u32
                + u16::from_be_bytes([icmp[0], icmp[1]]) as u32
                + new_port as u32;
            let check = replace_sum(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
            icmp[2..4].copy_from_slice(&check.to_be_bytes());
        }
    }
    Ok(())
}

/// Gives a translated UDP datagram that arrived without a checksum (RFC 7915 s4.5) the checksum
/// IPv6 requires, computed over the datagram and the new pseudo-header.
#[inline(never)]
fn udp_checksum(ctx: &XdpContext, work: &NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    if l3 > MAX_LINK {
        return Err(Counter::DropTruncatedUdp);
    }
    let transport = l3 + IPV6_HEADER;
    let udp: *const [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
    // SAFETY: bounds-checked above.
    if unsafe { (*udp)[6] != 0 || (*udp)[7] != 0 } {
        return Ok(());
    }
    let sum = sum_bytes(ctx, transport, work.transport_length as usize)
        .ok_or(Counter::DropNat64UdpZeroChecksum)?;
    let pseudo = sum16(&work.packet6.src)
        + sum16(&work.packet6.dst)
        + work.transport_length as u32
        + IPPROTO_UDP as u32;
    let mut computed = !fold(fold(sum) as u32 + fold(pseudo) as u32);
    if computed == 0 {
        computed = 0xffff;
    }
    let udp: *mut [u8; 8] = ptr_at(ctx, transport).ok_or(Counter::DropTruncatedUdp)?;
    // SAFETY: bounds-checked above.
    let udp = unsafe { &mut *udp };
    udp[6..8].copy_from_slice(&computed.to_be_bytes());
    count(Counter::Nat64UdpChecksumComputed);
    Ok(())
}

/// The one's complement sum of `length` bytes of the frame from `start` (an odd last byte padded
/// with zero), or `None` when they are not all in the frame or not 8 to [`MAX_SUMMED`] bytes.
/// The kernel sums fixed-size chunks (`bpf_csum_diff`), so that the verifier walks a few dozen
/// steps rather than a word-by-word loop.
#[inline(never)]
fn sum_bytes(ctx: &XdpContext, start: usize, length: usize) -> Option<u32> {
    if start > MAX_LINK + IPV6_HEADER + IPV6_HEADER + 8 || !(8..=MAX_SUMMED).contains(&length) {
        return None;
    }
    // Native-order (little-endian) sums from the kernel, folded and turned around at the end.
    let mut native: u64 = 0;
    let mut at = start;
    let mut left = length;
    for _ in 0..MAX_SUMMED / 64 {
        if left < 64 {
            break;
        }
        native += chunk_sum::<64>(ctx, at)? as u64;
        at += 64;
        left -= 64;
    }
    if left >= 32 {
        native += chunk_sum::<32>(ctx, at)? as u64;
        at += 32;
        left -= 32;
    }
    if left >= 16 {
        native += chunk_sum::<16>(ctx, at)? as u64;
        at += 16;
        left -= 16;
    }
    if left >= 8 {
        native += chunk_sum::<8>(ctx, at)? as u64;
        at += 8;
        left -= 8;
    }
    if left >= 4 {
        native += chunk_sum::<4>(ctx, at)? as u64;
        left -= 4;
    }
    // At most 27 sums below 2^32 each: two folds bring it into 32 bits.
    native = (native & 0xffff_ffff) + (native >> 32);
    native = (native & 0xffff_ffff) + (native >> 32);
    let folded = fold(native as u32);
    let mut sum = folded.swap_bytes() as u32;
    // The last 1-3 bytes: read as the word that ends the run (the run is at least 8 bytes).
    if left != 0 {
        // Masked (the value is below 2048 anyway) so that the compiler cannot fold the "- 4" into
        // the bounds check, which the verifier would then not recognise.
        let word: *const [u8; 4] = ptr_at(ctx, (start + length - 4) & 0x7ff)?;
        // SAFETY: bounds-checked above.
        let word = unsafe { *word };
        sum += match left {
            1 => (word[3] as u32) << 8,
            2 => u16::from_be_bytes([word[2], word[3]]) as u32,
            _ => u16::from_be_bytes([word[1], word[2]]) as u32 + ((word[3] as u32) << 8),
        };
    }
    Some(sum)
}

/// The kernel's (native-order, unfolded) one's complement sum of `N` bytes at `at`.
#[inline(always)]
fn chunk_sum<const N: usize>(ctx: &XdpContext, at: usize) -> Option<u32> {
    if at > MAX_LINK + IPV6_HEADER + IPV6_HEADER + 8 + MAX_SUMMED {
        return None;
    }
    let chunk: *mut [u8; N] = ptr_at(ctx, at)?;
    // SAFETY: `N` bytes bounds-checked above; no `from` buffer.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, chunk as *mut u32, N as u32, 0) };
    if sum < 0 { None } else { Some(sum as u32) }
}

/// Bound on the start of a quoted transport header, for the verifier: link, outer IPv4 header
/// with options, ICMP header, quoted IPv4 header with options.
const MAX_QUOTED_L4: usize = MAX_LINK + 60 + 8 + 60;
/// Where the quoted transport header sits once an ICMPv4 error is translated: after the IPv6
/// header, the ICMPv6 header and the quoted IPv6 header.
const TRANSLATED_QUOTE_V6: usize = IPV6_HEADER + 8 + IPV6_HEADER;
/// Once an ICMPv6 error is translated: IPv4 header, ICMPv4 header, quoted IPv4 header.
const TRANSLATED_QUOTE_V4: usize = IPV4_HEADER + 8 + IPV4_HEADER;

/// The two headers of an ICMPv4 error that change: the ICMP header and the quoted IPv4 header
/// (its options, if any, are dropped in the translation).
#[repr(C)]
struct Icmp4ErrorHead {
    icmp: [u8; 8],
    quoted: [u8; IPV4_HEADER],
}

/// An ICMPv6 error without extension headers up to its quoted transport header: the IPv6
/// header, the ICMPv6 header and the quoted IPv6 header.
pub const ICMP6_ERROR_HEAD: usize = IPV6_HEADER + 8 + IPV6_HEADER;

/// ICMPv4 error from the internet about a NAT64 session (the quoted packet left from the public
/// endpoint; `nat44::quoted_session` found the client): translated to ICMPv6 per RFC 7915 s4.2,
/// the quoted packet with it (RFC 6146 s3.5.3): outer source `prefix + source` (the gateway's
/// own prefixed address when RFC 6052 forbids that one, RFC 6791), quoted packet from the client
/// to `prefix + destination` with the client's port, the result at most 1280 bytes, and the
/// ICMPv6 checksum computed over it.
#[inline(always)]
pub fn icmp_error_inbound(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    work: &mut NatWork,
) -> u32 {
    let Some(info) = NAT_GATEWAYS.get(work.gateway as u32) else {
        return reject4(packet, ingress, Counter::DropNatNoGateway, u32::MAX);
    };
    work.info = *info;
    let subnet_index = work.subnet_index;
    if let Err(reason) = read_icmp4_error(ctx, packet, work) {
        return reject4(packet, ingress, reason, subnet_index);
    }
    work.translated = flow::Translated {
        src: work.remote6,
        dst: work.private6,
        ports: (work.icmp_type as u32) << 16 | work.icmp_code as u32,
    };
    flow::account_v4_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::INGRESS, None, subnet_index),
    );
    if let Err(reason) = write_icmp6_error(ctx, work) {
        return drop(reason);
    }
    if work.icmp_type == rfc::icmp6_type::PACKET_TOO_BIG {
        clamp_packet_too_big(ctx, work, ingress);
    }
    count(Counter::Nat64IcmpErrorTranslatedInbound);
    send_ipv6(ctx, work, ingress)
}

/// Reads what the ICMPv6 error is made of into the work area: type, code and the rest of the
/// header in ICMPv6 terms, the outer source, the quoted header's fields, the sizes.
#[inline(never)]
fn read_icmp4_error(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let l3 = packet.l3;
    let l4 = packet.l4;
    if (l3 != 14 && l3 != MAX_LINK) || l4 > MAX_LINK + 60 || l4 < l3 + IPV4_HEADER {
        return Err(Counter::DropMalformedIpv4);
    }
    // Outer header, ICMP header and quoted header copied into the work area, off the stack.
    let outer: *const [u8; IPV4_HEADER] = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIpv4)?;
    // SAFETY: bounds-checked above.
    let outer = unsafe { &*outer };
    work.error_head[..IPV4_HEADER].copy_from_slice(outer);
    let head: *const Icmp4ErrorHead = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above.
    let (icmp, quoted) = unsafe { (&(*head).icmp, &(*head).quoted) };
    work.error_head[IPV4_HEADER..IPV4_HEADER + 8].copy_from_slice(icmp);
    work.error_head[Q4..Q4 + IPV4_HEADER].copy_from_slice(quoted);
    let quoted_header = ((work.error_head[Q4] & 0x0f) as usize) << 2;
    let quoted_l4 = l4 + 8 + quoted_header;
    let end = l3 + packet.total_length as usize;
    if quoted_header < IPV4_HEADER || quoted_l4 > MAX_QUOTED_L4 || quoted_l4 + 8 > end {
        return Err(Counter::DropTruncatedIcmp);
    }
    if map_icmp4_error(work) != 0 {
        return Err(Counter::DropNat64IcmpUntranslatable);
    }
    // RFC 6791: a source the prefix may not carry (a router with a private address behind the
    // well-known prefix) is replaced by the gateway's own public address.
    let router = u32::from_be_bytes([
        work.error_head[12],
        work.error_head[13],
        work.error_head[14],
        work.error_head[15],
    ]);
    if embed_into(work, router, INTO_REMOTE6) != 0
        && embed_into(
            work,
            u32::from_be_bytes(work.info.public_ips[0]),
            INTO_REMOTE6,
        ) != 0
    {
        return Err(Counter::DropNat64NonGlobal);
    }
    let h = &work.error_head;
    let quoted_src = [h[Q4 + 12], h[Q4 + 13], h[Q4 + 14], h[Q4 + 15]];
    let quoted_dst = [h[Q4 + 16], h[Q4 + 17], h[Q4 + 18], h[Q4 + 19]];
    if embed_into(work, u32::from_be_bytes(quoted_dst), INTO_QUOTED_REMOTE6) != 0 {
        return Err(Counter::DropNat64NonGlobal);
    }
    let h = &work.error_head;
    let quoted_total = u16::from_be_bytes([h[Q4 + 2], h[Q4 + 3]]);
    work.tos = h[1];
    work.ttl = h[8];
    work.quoted_tos = h[Q4 + 1];
    work.quoted_ttl = h[Q4 + 8];
    work.quoted_protocol = h[Q4 + 9];
    work.quoted_payload_length = quoted_total.saturating_sub(quoted_header as u16);
    work.quoted_old_sum = sum4(quoted_src) + sum4(quoted_dst);
    work.l3 = l3 as u16;
    work.l4 = quoted_l4 as u16;
    // The quoted transport bytes the message holds, cut so that the IPv6 packet fits 1280.
    work.transport_length = (end - quoted_l4).min(MAX_ICMPV6_ERROR - TRANSLATED_QUOTE_V6) as u16;
    Ok(())
}

/// Where the quoted IPv4 header sits in `work.error_head` (after the outer and ICMP headers).
const Q4: usize = IPV4_HEADER + 8;

/// RFC 7915 s4.2 for the ICMPv4 error in `work.error_head`: the ICMPv6 type, code and rest of
/// header into the work area; 1 when it has no translation. Out of line: the table branches a
/// few dozen ways, and the verifier should follow them here, not each through the caller.
#[inline(never)]
fn map_icmp4_error(work: &mut NatWork) -> u32 {
    let h = &work.error_head;
    let icmp = [h[IPV4_HEADER], h[IPV4_HEADER + 1], h[IPV4_HEADER + 4]];
    let mtu = u16::from_be_bytes([h[IPV4_HEADER + 6], h[IPV4_HEADER + 7]]);
    let quoted_total = u16::from_be_bytes([h[Q4 + 2], h[Q4 + 3]]);
    let (icmp6_type, icmp6_code, rest) = match icmp4_to_icmp6(icmp[0], icmp[1], icmp[2]) {
        Icmp4To6::Error {
            icmp6_type,
            icmp6_code,
        } => (icmp6_type, icmp6_code, 0u32),
        Icmp4To6::PacketTooBig => (
            rfc::icmp6_type::PACKET_TOO_BIG,
            0,
            rfc::ipv6_mtu_from_ipv4(mtu, quoted_total),
        ),
        Icmp4To6::ParameterProblem {
            icmp6_code,
            pointer,
        } => (rfc::icmp6_type::PARAMETER_PROBLEM, icmp6_code, pointer),
        Icmp4To6::Query { .. } | Icmp4To6::Drop => return 1,
    };
    work.icmp_type = icmp6_type;
    work.icmp_code = icmp6_code;
    work.icmp_rest = rest.to_be_bytes();
    0
}

/// RFC 7915 s5.2 for the ICMPv6 error in `work.error_head` (see [`map_icmp4_error`]).
#[inline(never)]
fn map_icmp6_error(work: &mut NatWork) -> u32 {
    let h = &work.error_head;
    let (icmp_type, icmp_code) = (h[IPV6_HEADER], h[IPV6_HEADER + 1]);
    let pointer = u32::from_be_bytes([
        h[IPV6_HEADER + 4],
        h[IPV6_HEADER + 5],
        h[IPV6_HEADER + 6],
        h[IPV6_HEADER + 7],
    ]);
    let (icmp4_type, icmp4_code, rest) = match icmp6_to_icmp4(icmp_type, icmp_code, pointer) {
        Icmp6To4::Error {
            icmp4_type,
            icmp4_code,
        } => (icmp4_type, icmp4_code, [0u8; 4]),
        Icmp6To4::FragmentationNeeded => {
            let mtu = rfc::ipv4_mtu_from_ipv6(pointer).to_be_bytes();
            (
                rfc::icmp4_type::DESTINATION_UNREACHABLE,
                4,
                [0, 0, mtu[0], mtu[1]],
            )
        }
        Icmp6To4::ParameterProblem { pointer } => {
            (rfc::icmp4_type::PARAMETER_PROBLEM, 0, [pointer, 0, 0, 0])
        }
        Icmp6To4::Query { .. } | Icmp6To4::Drop => return 1,
    };
    work.icmp_type = icmp4_type;
    work.icmp_code = icmp4_code;
    work.icmp_rest = rest;
    0
}

/// Rewrites the frame as the ICMPv6 error `read_icmp4_error` prepared.
#[inline(never)]
fn write_icmp6_error(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let quoted_l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK)
        || quoted_l4 > MAX_QUOTED_L4
        || quoted_l4 < l3 + Q4 + IPV4_HEADER
    {
        return Err(Counter::DropMalformedIpv4);
    }
    save_link(ctx, work)?;
    let kept = work.transport_length as usize;
    let grow = TRANSLATED_QUOTE_V6 as i32 - (quoted_l4 - l3) as i32;
    // SAFETY: moves the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Counter::DropNat64HeadAdjust);
    }
    cut_frame(ctx, l3 + TRANSLATED_QUOTE_V6 + kept)?;
    restore_link(ctx, work, ETH_P_IPV6)?;
    let payload = (8 + IPV6_HEADER + kept) as u16;
    let heads: *mut [u8; TRANSLATED_QUOTE_V6] =
        ptr_at(ctx, l3).ok_or(Counter::DropNat64HeadAdjust)?;
    // SAFETY: bounds-checked above.
    let h = unsafe { &mut *heads };
    // The outer IPv6 header.
    h[0] = 0x60 | (work.tos >> 4);
    h[1] = work.tos << 4;
    h[2] = 0;
    h[3] = 0;
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = IPPROTO_ICMPV6;
    h[7] = work.ttl;
    h[8..24].copy_from_slice(&work.remote6);
    h[24..40].copy_from_slice(&work.private6);
    // The ICMPv6 header (checksum below).
    h[40] = work.icmp_type;
    h[41] = work.icmp_code;
    h[42] = 0;
    h[43] = 0;
    h[44..48].copy_from_slice(&work.icmp_rest);
    // The quoted IPv6 header: from the client to the prefixed destination, as it left the client.
    let quoted_next = if work.quoted_protocol == IPPROTO_ICMP {
        IPPROTO_ICMPV6
    } else {
        work.quoted_protocol
    };
    h[48] = 0x60 | (work.quoted_tos >> 4);
    h[49] = work.quoted_tos << 4;
    h[50] = 0;
    h[51] = 0;
    h[52..54].copy_from_slice(&work.quoted_payload_length.to_be_bytes());
    h[54] = quoted_next;
    h[55] = work.quoted_ttl;
    h[56..72].copy_from_slice(&work.private6);
    h[72..88].copy_from_slice(&work.quoted_remote6);
    let new_sum = sum16(&work.private6) + sum16(&work.quoted_remote6);
    translate_quoted_transport(ctx, work, l3 + TRANSLATED_QUOTE_V6, new_sum, true)?;
    // The checksum over the ICMPv6 message and its pseudo-header.
    let icmp = l3 + IPV6_HEADER;
    let length = payload as usize;
    let sum = sum_bytes(ctx, icmp, length).ok_or(Counter::DropTruncatedIcmp)?;
    let pseudo =
        sum16(&work.remote6) + sum16(&work.private6) + length as u32 + IPPROTO_ICMPV6 as u32;
    let check = !fold(fold(sum) as u32 + fold(pseudo) as u32);
    let field: *mut [u8; 2] = ptr_at(ctx, icmp + 2).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above.
    unsafe { *field = check.to_be_bytes() };
    work.packet6.l3 = l3;
    work.packet6.vlan_tagged = l3 != 14;
    work.packet6.src = work.remote6;
    work.packet6.dst = work.private6;
    work.packet6.next_header = IPPROTO_ICMPV6;
    work.packet6.hop_limit = work.ttl;
    work.packet6.total_length = IPV6_HEADER as u16 + payload;
    work.packet6.src_port = work.icmp_type as u16;
    work.packet6.dst_port = work.icmp_code as u16;
    work.packet6.tcp_flags = 0;
    work.packet6.nat64_origin = false;
    Ok(())
}

/// RFC 7915 s4.2: the MTU of a translated Packet Too Big is also at most the MTU of the link
/// towards the client (never below 1280): asked of the FIB, and the ICMPv6 checksum follows.
#[inline(never)]
fn clamp_packet_too_big(ctx: &XdpContext, work: &mut NatWork, ingress: u32) {
    let Some(link_mtu) = forwarding::ipv6_path_mtu(ctx, &work.packet6, ingress) else {
        return;
    };
    let link_mtu = (link_mtu as u32).max(rfc::IPV6_MIN_MTU);
    let mtu = u32::from_be_bytes(work.icmp_rest);
    if mtu <= link_mtu {
        return;
    }
    let l3 = work.l3 as usize;
    if l3 > MAX_LINK {
        return;
    }
    let Some(icmp) = ptr_at::<[u8; 8]>(ctx, l3 + IPV6_HEADER) else {
        return;
    };
    // SAFETY: bounds-checked above.
    let icmp = unsafe { &mut *icmp };
    let old = (mtu >> 16) + (mtu & 0xffff);
    let new = (link_mtu >> 16) + (link_mtu & 0xffff);
    let check = replace_sum(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    icmp[4..8].copy_from_slice(&link_mtu.to_be_bytes());
}

/// Cuts the frame to `length` bytes when it is longer (an error over the size limit, or link
/// padding).
#[inline(always)]
fn cut_frame(ctx: &XdpContext, length: usize) -> Result<(), Counter> {
    let current = ctx.data_end() - ctx.data();
    if current > length {
        // SAFETY: shrinking the frame; pointers are derived again afterwards.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((current - length) as i32)) } != 0 {
            return Err(Counter::DropNat64HeadAdjust);
        }
    }
    Ok(())
}

/// The transport header an ICMP error quotes, at `at`, moved to the other family: the port (or
/// echo identifier) of the NAT64 client side swapped, ICMP echo types changed, and its checksum
/// updated for the new addresses when the quote holds it (`work.quoted_old_sum` are the old
/// addresses' words, `new_sum` the new ones'). `to_ipv6`: the quote was IPv4 (an inbound error
/// quotes the client's packet: its source port public -> private); otherwise it was IPv6 (an
/// outbound error quotes a reply: its destination port private -> public).
#[inline(always)]
fn translate_quoted_transport(
    ctx: &XdpContext,
    work: &NatWork,
    at: usize,
    new_sum: u32,
    to_ipv6: bool,
) -> Result<(), Counter> {
    if at > MAX_LINK + TRANSLATED_QUOTE_V6 {
        return Err(Counter::DropTruncatedIcmp);
    }
    let kept = work.transport_length as usize;
    let quote: *mut [u8; 8] = ptr_at(ctx, at).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above.
    let q = unsafe { &mut *quote };
    let (old_port, new_port) = if to_ipv6 {
        (work.public_port, work.private_port)
    } else {
        (work.private_port, work.public_port)
    };
    let port_at = match work.quoted_protocol {
        IPPROTO_TCP | IPPROTO_UDP if to_ipv6 => 0,
        IPPROTO_TCP | IPPROTO_UDP => 2,
        _ => 4,
    };
    let port_at = port_at & 7;
    q[port_at] = (new_port >> 8) as u8;
    q[(port_at + 1) & 7] = new_port as u8;
    let old_words = work.quoted_old_sum + old_port as u32;
    let new_words = new_sum + new_port as u32;
    match work.quoted_protocol {
        IPPROTO_UDP => {
            let check = u16::from_be_bytes([q[6], q[7]]);
            if check != 0 {
                let mut updated = replace_sum(check, old_words, new_words);
                if updated == 0 {
                    updated = 0xffff;
                }
                q[6..8].copy_from_slice(&updated.to_be_bytes());
            }
        }
        IPPROTO_TCP => {
            // The TCP checksum is only there when the quote holds 18 bytes.
            if kept >= 18 {
                let tcp: *mut [u8; 18] = ptr_at(ctx, at).ok_or(Counter::DropTruncatedIcmp)?;
                // SAFETY: bounds-checked above.
                let t = unsafe { &mut *tcp };
                let check = u16::from_be_bytes([t[16], t[17]]);
                let updated = replace_sum(check, old_words, new_words);
                t[16..18].copy_from_slice(&updated.to_be_bytes());
            }
        }
        _ => {
            // An ICMP echo quoted: the type moves to the other family and the pseudo-header,
            // which only ICMPv6 covers, comes in or goes out (with the quoted payload length).
            let old_type = u16::from_be_bytes([q[0], q[1]]) as u32;
            q[0] = match (to_ipv6, q[0]) {
                (true, rfc::icmp4_type::ECHO_REQUEST) => rfc::icmp6_type::ECHO_REQUEST,
                (true, _) => rfc::icmp6_type::ECHO_REPLY,
                (false, rfc::icmp6_type::ECHO_REPLY) => rfc::icmp4_type::ECHO_REPLY,
                (false, _) => rfc::icmp4_type::ECHO_REQUEST,
            };
            let new_type = u16::from_be_bytes([q[0], q[1]]) as u32;
            let pseudo = work.quoted_payload_length as u32 + IPPROTO_ICMPV6 as u32;
            let (old, new) = if to_ipv6 {
                (
                    old_type + old_port as u32,
                    new_sum + pseudo + new_type + new_port as u32,
                )
            } else {
                (
                    work.quoted_old_sum + pseudo + old_type + old_port as u32,
                    new_type + new_port as u32,
                )
            };
            let check = replace_sum(u16::from_be_bytes([q[2], q[3]]), old, new);
            q[2..4].copy_from_slice(&check.to_be_bytes());
        }
    }
    Ok(())
}

/// ICMPv6 error from a client about a NAT64 reply (the quoted packet came from
/// `prefix + remote` to the client): translated to ICMPv4 per RFC 7915 s5.2 from the session's
/// public address to the remote, the quoted packet translated back to the IPv4 it was (remote to
/// public endpoint), at most 576 bytes, the ICMPv4 checksum computed.
#[inline(always)]
pub fn icmp_error_outbound(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    ingress: u32,
    work: &mut NatWork,
) -> u32 {
    let subnet_index = work.subnet_index;
    if let Err(reason) = read_icmp6_error(ctx, packet, work) {
        return reject6(packet, ingress, reason, subnet_index);
    }
    if nat44::lookup_quoted_outbound(work) != 0 {
        return reject6(
            packet,
            ingress,
            Counter::DropNatIcmpErrorNoFlow,
            subnet_index,
        );
    }
    work.translated = flow::Translated {
        src: flow::widen(work.public_addr),
        dst: flow::widen(work.dst),
        ports: (work.icmp_type as u32) << 16 | work.icmp_code as u32,
    };
    flow::account_v6_translated(
        packet,
        ingress,
        &work.translated,
        Handling::new(target::NAT_GATEWAY, direction::EGRESS, None, subnet_index),
    );
    if let Err(reason) = write_icmp4_error(ctx, work) {
        return drop(reason);
    }
    count(Counter::Nat64IcmpErrorTranslatedOutbound);
    send_ipv4(ctx, work, ingress)
}

/// Reads an ICMPv6 error from a client and the reply it quotes, and sets up the session lookup
/// (`work.out_key`) for `nat44::lookup_quoted_outbound`. Errors with extension headers, outer or
/// quoted, are not translated.
#[inline(never)]
fn read_icmp6_error(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    work: &mut NatWork,
) -> Result<(), Counter> {
    let l3 = packet.l3;
    if (l3 != 14 && l3 != MAX_LINK) || work.l4 as usize != l3 + IPV6_HEADER {
        return Err(Counter::DropNat64IcmpUntranslatable);
    }
    let head: *const [u8; ICMP6_ERROR_HEAD] = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above; copied into the work area, off the stack.
    work.error_head = unsafe { *head };
    let quoted_l4 = l3 + ICMP6_ERROR_HEAD;
    let end = l3 + packet.total_length as usize;
    if quoted_l4 + 8 > end {
        return Err(Counter::DropTruncatedIcmp);
    }
    if map_icmp6_error(work) != 0 {
        return Err(Counter::DropNat64IcmpUntranslatable);
    }
    let h = &work.error_head;
    work.tos = (h[0] << 4) | (h[1] >> 4);
    work.ttl = h[7];
    work.quoted_tos = (h[48] << 4) | (h[49] >> 4);
    work.quoted_ttl = h[55];
    work.quoted_payload_length = u16::from_be_bytes([h[52], h[53]]);
    let quoted_next = h[54];
    // The quoted reply: from `prefix + remote` to the client (the error's sender).
    for i in 0..16 {
        work.remote6[i] = work.error_head[56 + i];
        work.private6[i] = work.error_head[72 + i];
    }
    if work.private6 != packet.src {
        return Err(Counter::DropNatIcmpErrorNoFlow);
    }
    let prefix = prefix_of(work);
    if !prefix.contains(&work.remote6) {
        return Err(Counter::DropNatIcmpErrorNoFlow);
    }
    work.dst = prefix
        .extract(&work.remote6)
        .ok_or(Counter::DropNatIcmpErrorNoFlow)?;
    let transport: *const [u8; 8] = ptr_at(ctx, quoted_l4).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above.
    let t = unsafe { *transport };
    let (protocol, remote_port, client_port) = match quoted_next {
        IPPROTO_TCP | IPPROTO_UDP => (
            quoted_next,
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        ),
        IPPROTO_ICMPV6 if t[0] == rfc::icmp6_type::ECHO_REPLY => {
            (IPPROTO_ICMP, 0, u16::from_be_bytes([t[4], t[5]]))
        }
        _ => return Err(Counter::DropNatIcmpErrorNoFlow),
    };
    work.protocol = protocol;
    work.quoted_protocol = protocol;
    work.private_port = client_port;
    work.out_key = gateway_common::conntrack::ConnKey {
        inside_addr: work.private6,
        remote_addr: flow::widen(work.dst),
        inside_port: client_port,
        remote_port,
        protocol,
        family: family::IPV6,
        kind: gateway_common::conntrack::kind::NAT64_OUT,
        _pad: 0,
    };
    work.quoted_old_sum = sum16(&work.remote6) + sum16(&work.private6);
    work.l3 = l3 as u16;
    work.l4 = quoted_l4 as u16;
    work.transport_length = (end - quoted_l4).min(MAX_ICMPV4_ERROR - TRANSLATED_QUOTE_V4) as u16;
    Ok(())
}

/// Rewrites the frame as the ICMPv4 error `read_icmp6_error` prepared (the session's public
/// endpoint is in `work.public_addr`/`public_port`).
#[inline(never)]
fn write_icmp4_error(ctx: &XdpContext, work: &mut NatWork) -> Result<(), Counter> {
    let l3 = work.l3 as usize;
    let quoted_l4 = work.l4 as usize;
    if (l3 != 14 && l3 != MAX_LINK)
        || quoted_l4 > MAX_NAT64_L4 + 8 + IPV6_HEADER
        || quoted_l4 < l3 + TRANSLATED_QUOTE_V4
    {
        return Err(Counter::DropTruncatedIpv6);
    }
    save_link(ctx, work)?;
    let kept = work.transport_length as usize;
    let shrink = (quoted_l4 - l3 - TRANSLATED_QUOTE_V4) as i32;
    // SAFETY: moves the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, shrink) } != 0 {
        return Err(Counter::DropNat64HeadAdjust);
    }
    cut_frame(ctx, l3 + TRANSLATED_QUOTE_V4 + kept)?;
    restore_link(ctx, work, ETH_P_IPV4)?;
    let total = (TRANSLATED_QUOTE_V4 + kept) as u16;
    let quoted_total = IPV4_HEADER as u16 + work.quoted_payload_length;
    let heads: *mut [u8; TRANSLATED_QUOTE_V4] =
        ptr_at(ctx, l3).ok_or(Counter::DropNat64HeadAdjust)?;
    // SAFETY: bounds-checked above.
    let h = unsafe { &mut *heads };
    // The outer IPv4 header.
    write_ipv4_header(
        h,
        0,
        [work.tos, IPPROTO_ICMP, work.ttl],
        total,
        work.public_addr,
        work.dst,
    );
    // The ICMPv4 header (checksum below).
    h[20] = work.icmp_type;
    h[21] = work.icmp_code;
    h[22] = 0;
    h[23] = 0;
    h[24..28].copy_from_slice(&work.icmp_rest);
    // The quoted IPv4 header: the reply as it arrived from the remote at the public endpoint.
    write_ipv4_header(
        h,
        28,
        [work.quoted_tos, work.quoted_protocol, work.quoted_ttl],
        quoted_total,
        work.dst,
        work.public_addr,
    );
    let new_sum = sum4(work.dst) + sum4(work.public_addr);
    translate_quoted_transport(ctx, work, l3 + TRANSLATED_QUOTE_V4, new_sum, false)?;
    let icmp = l3 + IPV4_HEADER;
    let length = total as usize - IPV4_HEADER;
    let sum = sum_bytes(ctx, icmp, length).ok_or(Counter::DropTruncatedIcmp)?;
    let check = !fold(sum);
    let field: *mut [u8; 2] = ptr_at(ctx, icmp + 2).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above.
    unsafe { *field = check.to_be_bytes() };
    let (public, remote) = (work.public_addr, work.dst);
    let out = &mut work.packet4;
    out.l3 = l3;
    out.l4 = l3 + IPV4_HEADER;
    out.vlan_tagged = l3 != 14;
    out.src = public;
    out.dst = remote;
    out.protocol = IPPROTO_ICMP;
    out.total_length = total;
    out.later_fragment = false;
    out.src_port = 0;
    out.dst_port = 0;
    out.tcp_flags = 0;
    out.icmp_error = true;
    out.nat64_origin = false;
    Ok(())
}

/// An option-less IPv4 header at `at` of `h`: `[tos, protocol, ttl]`, identification 0 and DF
/// clear (an ICMP error is never fragmented on the way), its checksum computed.
#[inline(always)]
fn write_ipv4_header(
    h: &mut [u8; TRANSLATED_QUOTE_V4],
    at: usize,
    fields: [u8; 3],
    total: u16,
    src: [u8; 4],
    dst: [u8; 4],
) {
    if at + IPV4_HEADER > TRANSLATED_QUOTE_V4 {
        return;
    }
    let mut header = [0u8; IPV4_HEADER];
    header[0] = 0x45;
    header[1] = fields[0];
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[8] = fields[2];
    header[9] = fields[1];
    header[12..16].copy_from_slice(&src);
    header[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HEADER {
        sum += u16::from_be_bytes([header[i], header[i + 1]]) as u32;
        i += 2;
    }
    header[10..12].copy_from_slice(&(!fold(sum)).to_be_bytes());
    h[at..at + IPV4_HEADER].copy_from_slice(&header);
}

/// The fast path of an established NAT64 flow from a client (TCP or UDP, no extension headers):
/// its flow entry holds the IPv4 destination and the next hop, its session is refreshed exactly
/// as the slow path does, and the packet is translated and sent. `NOT_HANDLED` (nothing
/// changed) when the session is not live or the packet is out of step with it.
#[inline(never)]
pub fn fast_outbound(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    stats: &mut FlowStats,
    now: u64,
) -> u32 {
    if packet.next_header != IPPROTO_TCP && packet.next_header != IPPROTO_UDP {
        return NOT_HANDLED;
    }
    let Some(work) = nat44::work() else {
        return NOT_HANDLED;
    };
    work.now = now;
    work.family = family::IPV6;
    work.private6 = packet.src;
    work.remote6 = packet.dst;
    work.src = [
        packet.src[12],
        packet.src[13],
        packet.src[14],
        packet.src[15],
    ];
    work.dst = [
        stats.translated_dst[0],
        stats.translated_dst[1],
        stats.translated_dst[2],
        stats.translated_dst[3],
    ];
    work.sport = packet.src_port;
    work.dport = packet.dst_port;
    work.protocol = packet.next_header;
    work.tcp_flags = packet.tcp_flags;
    work.bytes = packet.total_length;
    nat44::set_out_key(work);
    let Some(entry) = CONNTRACK.get_ptr_mut(&work.out_key) else {
        return NOT_HANDLED;
    };
    if !nat44::is_live(entry, work.protocol, now) || nat44::refresh(entry, work, true).is_some() {
        return NOT_HANDLED;
    }
    // SAFETY: live map value.
    let (public, public_port) = unsafe {
        (
            nat44::narrow(&(*entry).translated_addr),
            (*entry).translated_port,
        )
    };
    // From here on the session is refreshed: a failure is a drop.
    let Some(ip) = ptr_at::<[u8; 2]>(ctx, packet.l3) else {
        return drop(Counter::DropTruncatedIpv6);
    };
    // SAFETY: bounds-checked above.
    let head = unsafe { *ip };
    work.tos = (head[0] << 4) | (head[1] >> 4);
    work.ttl = packet.hop_limit;
    work.l3 = packet.l3 as u16;
    work.l4 = (packet.l3 + IPV6_HEADER) as u16;
    work.transport_length = packet.total_length - IPV6_HEADER as u16;
    let destination = work.dst;
    let dport = work.dport;
    set_packet4(work, public, destination, public_port, dport);
    if let Err(reason) = to_ipv4(ctx, work) {
        return drop(reason);
    }
    count_fast_path(true, packet.total_length, work.packet4.total_length);
    // The TTL is decremented once, in the new header (its checksum with it).
    let l3 = work.packet4.l3;
    if l3 > MAX_LINK {
        return drop(Counter::DropTruncatedIpv4);
    }
    let Some(ip) = ptr_at::<[u8; IPV4_HEADER]>(ctx, l3) else {
        return drop(Counter::DropTruncatedIpv4);
    };
    // SAFETY: bounds-checked above.
    let ip = unsafe { &mut *ip };
    let old_word = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new_word = u16::from_be_bytes([ip[8], ip[9]]);
    let check = replace_sum(
        u16::from_be_bytes([ip[10], ip[11]]),
        old_word as u32,
        new_word as u32,
    );
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    flow::add_fast_path_packet(stats, packet.total_length, packet.tcp_flags, now);
    fastpath::redirect(ctx, stats)
}

/// The fast path of a reply to a NAT64 session (`nat44::fast_session` found and refreshed it;
/// the client is in the work area, the prefixed source in the flow entry): translated to IPv6
/// and sent. Packets with IPv4 options or a UDP datagram without a checksum are left to the
/// slow path.
#[inline(never)]
pub fn fast_inbound(ctx: &XdpContext, packet: &Ipv4Packet, stats: &mut FlowStats, now: u64) -> u32 {
    let Some(work) = nat44::work() else {
        return NOT_HANDLED;
    };
    if packet.l4 != packet.l3 + IPV4_HEADER || packet.l3 > MAX_LINK {
        return NOT_HANDLED;
    }
    let Some(ip) = ptr_at::<[u8; 2]>(ctx, packet.l3) else {
        return NOT_HANDLED;
    };
    // SAFETY: bounds-checked above.
    let head = unsafe { *ip };
    if packet.protocol == IPPROTO_UDP {
        let Some(udp) = ptr_at::<[u8; 8]>(ctx, packet.l3 + IPV4_HEADER) else {
            return NOT_HANDLED;
        };
        // SAFETY: bounds-checked above.
        if unsafe { (*udp)[6] == 0 && (*udp)[7] == 0 } {
            return NOT_HANDLED;
        }
    }
    work.remote6 = stats.translated_src;
    work.tos = head[1];
    work.ttl = packet.ttl;
    work.l3 = packet.l3 as u16;
    work.l4 = packet.l4 as u16;
    work.transport_length = packet.total_length - IPV4_HEADER as u16;
    let (sport, private_port) = (work.sport, work.private_port);
    set_packet6(work, sport, private_port);
    work.packet6.src = work.remote6;
    work.packet6.dst = work.private6;
    if let Err(reason) = to_ipv6(ctx, work) {
        return drop(reason);
    }
    count_fast_path(false, packet.total_length, work.packet6.total_length);
    let l3 = work.packet6.l3;
    if l3 > MAX_LINK {
        return drop(Counter::DropTruncatedIpv6);
    }
    let Some(hop_limit) = ptr_at::<u8>(ctx, l3 + 7) else {
        return drop(Counter::DropTruncatedIpv6);
    };
    // SAFETY: bounds-checked above.
    unsafe { *hop_limit -= 1 };
    flow::add_fast_path_packet(stats, packet.total_length, packet.tcp_flags, now);
    fastpath::redirect(ctx, stats)
}

/// The counters the slow path moves for a translated packet, `arriving` bytes in one family and
/// `leaving` in the other.
#[inline(always)]
fn count_fast_path(outbound: bool, arriving: u16, leaving: u16) {
    if outbound {
        nat44::count_bytes(
            Counter::NatPacketsInFromSource,
            Counter::NatBytesInFromSource,
            arriving,
        );
        count(Counter::ForwardNat64Outbound);
        nat44::count_bytes(
            Counter::NatPacketsOutToDestination,
            Counter::NatBytesOutToDestination,
            leaving,
        );
    } else {
        nat44::count_bytes(
            Counter::NatPacketsInFromDestination,
            Counter::NatBytesInFromDestination,
            arriving,
        );
        count(Counter::ForwardNat64Inbound);
        nat44::count_bytes(
            Counter::NatPacketsOutToSource,
            Counter::NatBytesOutToSource,
            leaving,
        );
    }
}

/// Answers an IPv4 reply to a NAT64 session that has DF set and would not fit the client's link
/// once translated (RFC 7915 s4; RFC 1191): ICMPv4 "fragmentation needed" (3/4) with the MTU the
/// IPv4 side must use (`work.icmp_rest`: the link MTU - 20), from the public address to the
/// sender, quoting its IPv4 header and the first 8 bytes of its payload, sent back out of the
/// interface it came in on. The packet itself is dropped.
#[inline(always)]
pub fn answer_too_big(ctx: &XdpContext, packet: &Ipv4Packet, work: &mut NatWork) -> u32 {
    // The link header is turned around in place; a VLAN-tagged one is left to the kernel's
    // VLAN device, which this path does not address.
    if packet.l3 != 14 || packet.l4 < packet.l3 + IPV4_HEADER || packet.l4 > packet.l3 + 60 {
        return drop(Counter::DropNat64TooBig);
    }
    let quoted = packet.l4 - packet.l3 + 8;
    if (packet.total_length as usize) < quoted {
        return drop(Counter::DropNat64TooBig);
    }
    if save_link(ctx, work).is_err() {
        return drop(Counter::DropNat64TooBig);
    }
    // SAFETY: grows the frame's start; every pointer is derived again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -((IPV4_HEADER + 8) as i32)) } != 0 {
        return drop(Counter::DropNat64HeadAdjust);
    }
    // New layout: Ethernet, IPv4, ICMPv4, then the original header where it already is.
    const ICMP: usize = 14 + IPV4_HEADER;
    if cut_frame(ctx, ICMP + 8 + quoted).is_err() {
        return drop(Counter::DropNat64TooBig);
    }
    let Some(head) = ptr_at::<[u8; ICMP + 8]>(ctx, 0) else {
        return drop(Counter::DropNat64TooBig);
    };
    // SAFETY: bounds-checked above.
    let h = unsafe { &mut *head };
    // Ethernet: back to where it came from.
    h[..6].copy_from_slice(&work.link[6..12]);
    h[6..12].copy_from_slice(&work.link[..6]);
    h[12] = ETH_P_IPV4[0];
    h[13] = ETH_P_IPV4[1];
    let mut ip = [0u8; IPV4_HEADER];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IPV4_HEADER + 8 + quoted) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP;
    ip[12..16].copy_from_slice(&packet.dst);
    ip[16..20].copy_from_slice(&packet.src);
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HEADER {
        sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
        i += 2;
    }
    ip[10..12].copy_from_slice(&(!fold(sum)).to_be_bytes());
    h[14..ICMP].copy_from_slice(&ip);
    h[ICMP] = rfc::icmp4_type::DESTINATION_UNREACHABLE;
    h[ICMP + 1] = 4;
    h[ICMP + 2] = 0;
    h[ICMP + 3] = 0;
    h[ICMP + 4..ICMP + 8].copy_from_slice(&work.icmp_rest);
    let Some(sum) = sum_bytes(ctx, ICMP, 8 + quoted) else {
        return drop(Counter::DropNat64TooBig);
    };
    let Some(check) = ptr_at::<[u8; 2]>(ctx, ICMP + 2) else {
        return drop(Counter::DropNat64TooBig);
    };
    // SAFETY: bounds-checked above.
    unsafe { *check = (!fold(sum)).to_be_bytes() };
    count(Counter::Nat64FragNeededSent);
    aya_ebpf::bindings::xdp_action::XDP_TX
}

/// Counts and forwards a packet translated to IPv4 (`work.packet4`), towards the internet.
#[inline(always)]
pub(crate) fn send_ipv4(ctx: &XdpContext, work: &NatWork, ingress: u32) -> u32 {
    count(Counter::ForwardNat64Outbound);
    nat44::count_bytes(
        Counter::NatPacketsOutToDestination,
        Counter::NatBytesOutToDestination,
        work.packet4.total_length,
    );
    forwarding::ipv4(
        ctx,
        &work.packet4,
        work.packet4.src,
        work.packet4.dst,
        ingress,
    )
}

/// Counts and forwards a packet translated to IPv6 (`work.packet6`), towards the client.
#[inline(always)]
pub(crate) fn send_ipv6(ctx: &XdpContext, work: &NatWork, ingress: u32) -> u32 {
    count(Counter::ForwardNat64Inbound);
    nat44::count_bytes(
        Counter::NatPacketsOutToSource,
        Counter::NatBytesOutToSource,
        work.packet6.total_length,
    );
    forwarding::ipv6(ctx, &work.packet6, ingress)
}

/// The work area for a packet from NAT64 client `packet.src` to IPv4 `destination` (`head`: the
/// first two bytes of its IPv6 header, for the traffic class).
#[inline(always)]
pub(crate) fn set_client(
    work: &mut NatWork,
    packet: &Ipv6Packet,
    head: [u8; 2],
    destination: [u8; 4],
) {
    work.tos = (head[0] << 4) | (head[1] >> 4);
    work.ttl = packet.hop_limit;
    work.family = family::IPV6;
    work.private6 = packet.src;
    work.remote6 = packet.dst;
    // Only hashed (the preferred public IP); the client is `private6`.
    work.src = [
        packet.src[12],
        packet.src[13],
        packet.src[14],
        packet.src[15],
    ];
    work.dst = destination;
    work.bytes = packet.total_length;
    work.rst = 0;
    work.in_inserted = 0;
    work.tcp_flags = 0;
    work.icmp_error = 0;
}
