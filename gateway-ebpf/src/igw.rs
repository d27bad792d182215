//! The internet gateway: IPv4 1:1 NAT between an instance's private address and its Elastic IP,
//! in both directions, including the packet quoted inside ICMP errors (RFC 5508) so traceroute
//! and path MTU discovery work through it. IPv6 is never translated.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{
    Counter,
    maps::{direction, target},
};
use network_types::ip::Ipv4Hdr;

use crate::{
    checksum,
    counters::{count, pass},
    flow::{self, Handling},
    forwarding,
    maps::{ELASTIC_IP_BY_PRIVATE, ELASTIC_IP_BY_PUBLIC},
    parsing::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, MAX_L4_OFFSET, ptr_at},
    routing::{reject_v4, route_v4, subnet_v4},
};

/// Offsets of the addresses in an IPv4 header.
pub const SOURCE: usize = 12;
pub const DESTINATION: usize = 16;
/// Offsets of the checksum in the TCP and UDP headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;
/// Offset of the quoted IPv4 header inside an ICMP error.
const ICMP_QUOTE: usize = 8;

/// IPv4 from an instance to the internet: source private -> Elastic IP.
#[inline(never)]
pub fn outbound_ipv4(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    subnet_index: u32,
) -> u32 {
    // SAFETY: plain data copied out.
    let Some(public) = (unsafe { ELASTIC_IP_BY_PRIVATE.get(packet.src) }).copied() else {
        return reject_v4(
            packet,
            ingress,
            Counter::DropIgwNoPublicIpv4,
            subnet_index,
            direction::EGRESS,
        );
    };
    if packet.ttl <= 1 {
        // Untranslated, so the kernel's Time Exceeded goes back to the instance.
        return pass(Counter::PassTtlExpired);
    }
    if packet.icmp_error {
        // An error the instance sends about a packet it received: that packet was addressed to
        // the private address, which the internet only knows as the Elastic IP.
        if let Err(reason) = translate_quoted(ctx, packet, DESTINATION, packet.src, public) {
            return reject_v4(packet, ingress, reason, subnet_index, direction::EGRESS);
        }
        count(Counter::IcmpErrorTranslatedOutbound);
    }
    if rewrite_address(ctx, packet, SOURCE, packet.src, public).is_err() {
        return reject_v4(
            packet,
            ingress,
            Counter::DropTruncatedIpv4,
            subnet_index,
            direction::EGRESS,
        );
    }
    count(Counter::ForwardIgwOutboundIpv4);
    account_translated(
        packet,
        ingress,
        public,
        packet.dst,
        subnet_index,
        direction::EGRESS,
    );
    forwarding::ipv4(ctx, packet, public, packet.dst, ingress)
}

/// IPv4 from the internet: destination Elastic IP -> private address.
#[inline(never)]
pub fn inbound_ipv4(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32) -> u32 {
    // SAFETY: plain data copied out.
    let Some(private) = (unsafe { ELASTIC_IP_BY_PUBLIC.get(packet.dst) }).copied() else {
        return match subnet_v4(packet.dst) {
            // The internet cannot address private IPv4 addresses directly.
            Some(subnet) => reject_v4(
                packet,
                ingress,
                Counter::DropIgwInboundNoElasticIp,
                subnet.subnet_index,
                direction::INGRESS,
            ),
            None => pass(Counter::PassNotOurs),
        };
    };
    let Some(subnet) = subnet_v4(private) else {
        return reject_v4(
            packet,
            ingress,
            Counter::DropInboundNotRouted,
            u32::MAX,
            direction::INGRESS,
        );
    };
    let routed_back = route_v4(subnet.route_table, packet.src);
    if !matches!(routed_back, Some(route) if route.kind == target::INTERNET_GATEWAY) {
        return reject_v4(
            packet,
            ingress,
            Counter::DropInboundNotRouted,
            subnet.subnet_index,
            direction::INGRESS,
        );
    }
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    if packet.icmp_error {
        // An error about a packet the instance sent: it left with the Elastic IP as source.
        if let Err(reason) = translate_quoted(ctx, packet, SOURCE, packet.dst, private) {
            return reject_v4(
                packet,
                ingress,
                reason,
                subnet.subnet_index,
                direction::INGRESS,
            );
        }
        count(Counter::IcmpErrorTranslatedInbound);
    }
    if rewrite_address(ctx, packet, DESTINATION, packet.dst, private).is_err() {
        return reject_v4(
            packet,
            ingress,
            Counter::DropTruncatedIpv4,
            subnet.subnet_index,
            direction::INGRESS,
        );
    }
    count(Counter::ForwardIgwInboundIpv4);
    account_translated(
        packet,
        ingress,
        packet.src,
        private,
        subnet.subnet_index,
        direction::INGRESS,
    );
    forwarding::ipv4(ctx, packet, packet.src, private, ingress)
}

/// IPv6 through the internet gateway (or inside the VPC): forwarded unchanged.
#[inline(never)]
pub fn pass_through_ipv6(
    ctx: &XdpContext,
    packet: &Ipv6Packet,
    ingress: u32,
    subnet_index: u32,
    flow_direction: u8,
) -> u32 {
    if packet.hop_limit <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    let (counter, route_target) = match flow_direction {
        direction::INTERNAL => (Counter::ForwardLocal, target::LOCAL),
        direction::INGRESS => (Counter::ForwardIgwInboundIpv6, target::INTERNET_GATEWAY),
        _ => (Counter::ForwardIgwOutboundIpv6, target::INTERNET_GATEWAY),
    };
    // Inside the VPC, counted once forwarded: a local route also covers the gateway's own
    // addresses, which the FIB hands to the kernel.
    let local = flow_direction == direction::INTERNAL;
    if !local {
        count(counter);
    }
    flow::account_v6(
        packet,
        ingress,
        Handling::new(route_target, flow_direction, None, subnet_index),
    );
    let verdict = forwarding::ipv6(ctx, packet, ingress);
    if local && verdict == xdp_action::XDP_REDIRECT {
        count(counter);
    }
    verdict
}

#[inline(always)]
fn account_translated(
    packet: &Ipv4Packet,
    ingress: u32,
    src: [u8; 4],
    dst: [u8; 4],
    subnet_index: u32,
    flow_direction: u8,
) {
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(src, packet.src_port),
        flow::endpoint(dst, packet.dst_port),
        Handling::new(target::INTERNET_GATEWAY, flow_direction, None, subnet_index),
    );
}

/// Rewrites the IPv4 source (`SOURCE`) or destination (`DESTINATION`) address from `old` to
/// `new`, updating the IPv4 header checksum and, in a packet that carries the transport header,
/// the TCP or UDP checksum (their pseudo-header includes the addresses; ICMP has none).
#[inline(always)]
pub fn rewrite_address(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    offset: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), ()> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, packet.l3).ok_or(())?;
    // SAFETY: bounds-checked above; every access goes through `ip`, the checked pointer.
    unsafe {
        checksum::replace_u32(&raw mut (*ip).check, old, new);
        if offset == SOURCE {
            (*ip).src_addr = new;
        } else {
            (*ip).dst_addr = new;
        }
    }
    if packet.later_fragment || packet.l4 > MAX_L4_OFFSET {
        return Ok(());
    }
    if packet.protocol == IPPROTO_TCP {
        let check: *mut [u8; 2] = ptr_at(ctx, packet.l4 + TCP_CHECK).ok_or(())?;
        checksum::replace_u32(check, old, new);
    } else if packet.protocol == IPPROTO_UDP {
        let check: *mut [u8; 2] = ptr_at(ctx, packet.l4 + UDP_CHECK).ok_or(())?;
        checksum::replace_u32_udp(check, old, new);
    }
    Ok(())
}

/// The head of an ICMP error: the ICMP header and the quoted IPv4 header.
#[repr(C)]
struct IcmpErrorHead {
    icmp_type: u8,
    icmp_code: u8,
    icmp_check: [u8; 2],
    rest_of_header: [u8; 4],
    quoted: Ipv4Hdr,
}

/// Translates the IPv4 packet quoted by an ICMP error: the quoted address at `offset` must be
/// `old` (otherwise the error is not about a translated flow) and becomes `new`. The quoted IPv4
/// checksum, the quoted TCP/UDP checksum when it is within the quote, and the ICMP checksum that
/// covers all of them are updated incrementally.
#[inline(always)]
fn translate_quoted(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    offset: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), Counter> {
    if packet.l4 > MAX_L4_OFFSET {
        return Err(Counter::DropTruncatedIcmp);
    }
    let head: *mut IcmpErrorHead = ptr_at(ctx, packet.l4).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above; every access goes through `head`, the checked pointer.
    let (inner_vihl, inner_protocol, inner_frags, quoted) = unsafe {
        let inner = &(*head).quoted;
        let quoted = if offset == SOURCE {
            inner.src_addr
        } else {
            inner.dst_addr
        };
        (inner.vihl, inner.proto, inner.frags, quoted)
    };
    let inner_header_length = ((inner_vihl & 0x0f) as usize) << 2;
    if inner_vihl >> 4 != 4 || inner_header_length < Ipv4Hdr::LEN {
        return Err(Counter::DropTruncatedIcmp);
    }
    if quoted != old {
        return Err(Counter::DropIcmpErrorNoMatch);
    }
    // SAFETY: as above.
    unsafe {
        let inner_check = &raw mut (*head).quoted.check;
        let icmp_check = &raw mut (*head).icmp_check;
        let before = checksum::read(inner_check);
        checksum::replace_u32(inner_check, old, new);
        let after = checksum::read(inner_check);
        if offset == SOURCE {
            (*head).quoted.src_addr = new;
        } else {
            (*head).quoted.dst_addr = new;
        }
        checksum::replace_u32(icmp_check, old, new);
        checksum::replace_u16(icmp_check, before, after);
    }
    // The quoted transport checksum, when the quote is long enough to hold it.
    let first_fragment = u16::from_be_bytes(inner_frags) & 0x1fff == 0;
    let inner_l4 = packet.l4 + ICMP_QUOTE + inner_header_length;
    if !first_fragment || inner_l4 > MAX_L4_OFFSET + ICMP_QUOTE + 60 {
        return Ok(());
    }
    let check_offset = if inner_protocol == IPPROTO_TCP {
        inner_l4 + TCP_CHECK
    } else if inner_protocol == IPPROTO_UDP {
        inner_l4 + UDP_CHECK
    } else {
        return Ok(());
    };
    // Only within the ICMP message: bytes after the outer IP packet are not part of the quote.
    if check_offset + 2 > packet.l3 + packet.total_length as usize {
        return Ok(());
    }
    if let Some(check) = ptr_at::<[u8; 2]>(ctx, check_offset) {
        let before = checksum::read(check);
        if inner_protocol == IPPROTO_UDP {
            checksum::replace_u32_udp(check, old, new);
        } else {
            checksum::replace_u32(check, old, new);
        }
        let after = checksum::read(check);
        // Re-derive the ICMP checksum pointer: the verifier forgets ranges across checks.
        if let Some(icmp_check) = ptr_at::<[u8; 2]>(ctx, packet.l4 + 2) {
            checksum::replace_u16(icmp_check, before, after);
        }
    }
    Ok(())
}
