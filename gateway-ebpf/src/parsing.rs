//! Header parsing: Ethernet (one optional 802.1Q tag), IPv4 (IHL honoured), IPv6, and the
//! TCP/UDP/ICMP/ICMPv6 header that follows.
//!
//! Each helper bounds-checks exactly what it reads. A frame cut inside a header the gateway needs
//! is dropped with a named counter; traffic the gateway does not own is handed to the kernel.

use aya_ebpf::programs::XdpContext;
use gateway_common::Counter;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Largest offset of an L4 header we accept (Ethernet + VLAN + IPv4 with 40 bytes of options);
/// also keeps every variable offset visibly bounded for the verifier.
pub const MAX_L4_OFFSET: usize = 18 + 60;

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None` if it does not fit.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// An IPv4 packet the gateway may handle.
#[derive(Default)]
pub struct Ipv4Packet {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the transport header (`l3` + IHL * 4).
    pub l4: usize,
    pub vlan_tagged: bool,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    pub ttl: u8,
    pub total_length: u16,
    /// A fragment other than the first: no transport header.
    pub later_fragment: bool,
    /// Host order; ICMP: type and code.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// ICMP error (Destination Unreachable, Time Exceeded, Parameter Problem) quoting a packet.
    pub icmp_error: bool,
    /// NAT64: translated from an IPv6 packet whose flow entry (`NatWork::origin_key`) takes the
    /// next hop the forwarding step finds.
    pub nat64_origin: bool,
}

/// An IPv6 packet the gateway may handle.
#[derive(Default)]
pub struct Ipv6Packet {
    pub l3: usize,
    pub vlan_tagged: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    pub hop_limit: u8,
    /// IPv6 header + payload.
    pub total_length: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// NAT64: translated from an IPv4 packet (see [`Ipv4Packet::nat64_origin`]).
    pub nat64_origin: bool,
}

/// What a layer-3 parser found. The packet itself is written into the caller's struct, so that
/// it exists once on the stack.
pub enum Parsed {
    Packet,
    /// Not the gateway's: hand to the kernel, counting why.
    Pass(Counter),
}

/// The link layer: where the IP header starts and which family it is.
pub struct Link {
    pub ether_type: u16,
    pub l3: usize,
    pub vlan_tagged: bool,
}

/// Parses the Ethernet header and one optional VLAN tag. `Err` carries the drop counter.
#[inline(always)]
pub fn parse_link(ctx: &XdpContext) -> Result<Link, Counter> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEthernet)?;
    // SAFETY: bounds-checked above.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = EthHdr::LEN;
    let mut vlan_tagged = false;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag: *const [u8; 4] = ptr_at(ctx, EthHdr::LEN).ok_or(Counter::DropTruncatedVlan)?;
        // SAFETY: bounds-checked above.
        let tag = unsafe { *tag };
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += 4;
        vlan_tagged = true;
    }
    Ok(Link {
        ether_type,
        l3,
        vlan_tagged,
    })
}

/// Addresses no gateway translates or routes: multicast, broadcast, loopback, link-local,
/// "this network".
#[inline(always)]
fn ipv4_not_routable(addr: [u8; 4]) -> bool {
    addr[0] == 0 || addr[0] == 127 || addr[0] >= 224 || (addr[0] == 169 && addr[1] == 254)
}

#[inline(always)]
pub fn parse_ipv4(
    ctx: &XdpContext,
    l3: usize,
    vlan_tagged: bool,
    packet: &mut Ipv4Packet,
) -> Result<Parsed, Counter> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIpv4)?;
    // SAFETY: bounds-checked above; the header is copied out (20 bytes).
    let ip = unsafe { *ip };
    let header_length = ((ip.vihl & 0x0f) as usize) << 2;
    let total_length = u16::from_be_bytes(ip.tot_len);
    if ip.vihl >> 4 != 4
        || header_length < Ipv4Hdr::LEN
        || (total_length as usize) < header_length
        || ctx.data() + l3 + total_length as usize > ctx.data_end()
    {
        return Err(Counter::DropMalformedIpv4);
    }
    if ipv4_not_routable(ip.src_addr) || ipv4_not_routable(ip.dst_addr) {
        return Ok(Parsed::Pass(Counter::PassNotOurs));
    }
    let fragment_offset = u16::from_be_bytes(ip.frags) & 0x1fff;
    packet.l3 = l3;
    packet.l4 = l3 + header_length;
    packet.vlan_tagged = vlan_tagged;
    packet.src = ip.src_addr;
    packet.dst = ip.dst_addr;
    packet.protocol = ip.proto;
    packet.ttl = ip.ttl;
    packet.total_length = total_length;
    packet.later_fragment = fragment_offset != 0;
    if packet.later_fragment {
        return Ok(Parsed::Packet);
    }
    let end = l3 + total_length as usize;
    let transport = parse_transport(ctx, packet.l4, end, packet.protocol, IPPROTO_ICMP)?;
    packet.src_port = transport.src_port;
    packet.dst_port = transport.dst_port;
    packet.tcp_flags = transport.tcp_flags;
    if packet.protocol == IPPROTO_ICMP {
        let icmp_type = transport.src_port;
        packet.icmp_error = icmp_type == 3 || icmp_type == 11 || icmp_type == 12;
    }
    Ok(Parsed::Packet)
}

#[inline(always)]
pub fn parse_ipv6(
    ctx: &XdpContext,
    l3: usize,
    vlan_tagged: bool,
    packet: &mut Ipv6Packet,
) -> Result<Parsed, Counter> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let ip = unsafe { &*ip };
    let payload_length = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.vcf[0] >> 4 != 6 || ctx.data() + l3 + Ipv6Hdr::LEN + payload_length > ctx.data_end() {
        return Err(Counter::DropTruncatedIpv6);
    }
    // Copied straight into the caller's struct: 32 bytes held in registers would spill.
    packet.src = ip.src_addr;
    packet.dst = ip.dst_addr;
    packet.l3 = l3;
    packet.vlan_tagged = vlan_tagged;
    packet.next_header = ip.next_hdr;
    packet.hop_limit = ip.hop_limit;
    packet.total_length = (Ipv6Hdr::LEN + payload_length) as u16;
    // Extension headers are carried through untouched; flows behind them are tracked by address.
    let end = l3 + Ipv6Hdr::LEN + payload_length;
    let transport = parse_transport(
        ctx,
        l3 + Ipv6Hdr::LEN,
        end,
        packet.next_header,
        IPPROTO_ICMPV6,
    )?;
    if packet.next_header == IPPROTO_ICMPV6 && (133..=137).contains(&transport.src_port) {
        return Ok(Parsed::Pass(Counter::PassNeighbourDiscovery));
    }
    // Multicast, link-local, loopback and unspecified addresses belong to the link, not to us.
    let (src, dst) = (&packet.src, &packet.dst);
    if dst[0] == 0xff
        || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80)
        || (src[0] == 0xfe && src[1] & 0xc0 == 0x80)
        || *src == [0; 16]
    {
        return Ok(Parsed::Pass(Counter::PassNotOurs));
    }
    packet.src_port = transport.src_port;
    packet.dst_port = transport.dst_port;
    packet.tcp_flags = transport.tcp_flags;
    Ok(Parsed::Packet)
}

pub struct Transport {
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
}

/// Reads ports (TCP/UDP) or type and code (ICMP/ICMPv6) at `l4`; other protocols have none.
/// The header must end within the frame and within the IP packet, which ends at `end` (bytes
/// after it are link-layer padding or trailers, not transport header).
#[inline(always)]
fn parse_transport(
    ctx: &XdpContext,
    l4: usize,
    end: usize,
    protocol: u8,
    icmp_protocol: u8,
) -> Result<Transport, Counter> {
    if l4 > MAX_L4_OFFSET {
        return Err(Counter::DropMalformedIpv4);
    }
    let within = |length: usize| l4 + length <= end;
    let mut transport = Transport {
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
    };
    if protocol == IPPROTO_TCP {
        // The frame check first: the compiler would drop it as implied by the packet-length
        // check, and the verifier needs to see it.
        let tcp: *const TcpHdr = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedTcp)?;
        if !within(TcpHdr::LEN) {
            return Err(Counter::DropTruncatedTcp);
        }
        // SAFETY: bounds-checked above; read through the same pointer, since the verifier only
        // knows the range of the register it checked.
        unsafe {
            transport.src_port = u16::from_be_bytes((*tcp).source);
            transport.dst_port = u16::from_be_bytes((*tcp).dest);
            // Byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN.
            transport.tcp_flags = *(tcp as *const u8).add(13);
        }
    } else if protocol == IPPROTO_UDP {
        let udp: *const UdpHdr = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedUdp)?;
        if !within(UdpHdr::LEN) {
            return Err(Counter::DropTruncatedUdp);
        }
        // SAFETY: bounds-checked above.
        let udp = unsafe { &*udp };
        transport.src_port = u16::from_be_bytes(udp.src);
        transport.dst_port = u16::from_be_bytes(udp.dst);
    } else if protocol == icmp_protocol {
        // Type, code, checksum and the 4-byte rest of header.
        let icmp: *const [u8; 8] = ptr_at(ctx, l4).ok_or(Counter::DropTruncatedIcmp)?;
        if !within(8) {
            return Err(Counter::DropTruncatedIcmp);
        }
        // SAFETY: bounds-checked above.
        let icmp = unsafe { *icmp };
        transport.src_port = icmp[0] as u16;
        transport.dst_port = icmp[1] as u16;
    }
    Ok(transport)
}

/// IPv6 extension headers walked before giving up (Hop-by-Hop, Routing, Fragment, Destination
/// Options, Authentication); more than this is refused as malformed.
const MAX_EXTENSION_HEADERS: usize = 4;
/// Bound on the transport offset behind extension headers, for the verifier.
const MAX_EXTENSION_OFFSET: usize = 18 + 40 + 512;

/// The transport behind the IPv6 extension headers.
pub struct UpperLayer {
    pub protocol: u8,
    pub l4: usize,
    /// A fragment other than the first: no transport header follows.
    pub later_fragment: bool,
}

/// Walks the extension headers after the IPv6 header at `l3`.
#[inline(always)]
pub fn ipv6_upper_layer(ctx: &XdpContext, l3: usize) -> Result<UpperLayer, Counter> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let mut next = unsafe { (*ip).next_hdr };
    let mut offset = l3 + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        if offset > MAX_EXTENSION_OFFSET {
            return Err(Counter::DropTruncatedIpv6);
        }
        match next {
            // Hop-by-Hop, Routing, Destination Options: length in 8-octet units, not counting
            // the first 8. Authentication: in 4-octet units, not counting the first 2.
            0 | 43 | 60 | 51 => {
                let header: *const [u8; 2] =
                    ptr_at(ctx, offset).ok_or(Counter::DropTruncatedIpv6)?;
                // SAFETY: bounds-checked above.
                let header = unsafe { *header };
                let length = if next == 51 {
                    (header[1] as usize + 2) * 4
                } else {
                    (header[1] as usize + 1) * 8
                };
                next = header[0];
                offset += length;
            }
            44 => {
                let header: *const [u8; 4] =
                    ptr_at(ctx, offset).ok_or(Counter::DropTruncatedIpv6)?;
                // SAFETY: bounds-checked above.
                let header = unsafe { *header };
                next = header[0];
                offset += 8;
                if u16::from_be_bytes([header[2], header[3]]) >> 3 != 0 {
                    return Ok(UpperLayer {
                        protocol: next,
                        l4: offset,
                        later_fragment: true,
                    });
                }
            }
            _ => {
                return Ok(UpperLayer {
                    protocol: next,
                    l4: offset,
                    later_fragment: false,
                });
            }
        }
    }
    Err(Counter::DropTruncatedIpv6)
}
