//! Forwarding: `bpf_fib_lookup` for the next hop, TTL / hop-limit decrement, MAC rewrite and
//! redirect through the device map. Whatever the fast path cannot finish (no neighbour entry yet,
//! too big for the egress MTU, a local destination, an egress interface the gateway does not
//! attach to, a VLAN-tagged frame) is handed to the kernel, which forwards or answers as a router.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibLookup,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use gateway_common::Counter;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    checksum,
    counters::pass,
    fastpath,
    maps::REDIRECT_DEVICES,
    parsing::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, ptr_at},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Ethernet and one 802.1Q tag.
const MAX_LINK_HEADER: usize = 18;

/// Forwards an IPv4 packet whose addresses are now `src` -> `dst`. Out of line: every path ends
/// here, and one copy of the FIB parameter block on the stack is enough.
#[inline(never)]
pub fn ipv4(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    src: [u8; 4],
    dst: [u8; 4],
    ingress: u32,
) -> u32 {
    // SAFETY: plain C struct, all-zero is valid.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = packet.protocol;
    if packet.protocol == IPPROTO_TCP || packet.protocol == IPPROTO_UDP {
        fib.sport = packet.src_port.to_be();
        fib.dport = packet.dst_port.to_be();
    }
    fib.__bindgen_anon_1.tot_len = packet.total_length;
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    let verdict = lookup(ctx, &mut fib);
    if verdict != 0 {
        return verdict;
    }
    if packet.vlan_tagged {
        return pass(Counter::PassVlanToKernel);
    }
    if REDIRECT_DEVICES.get(fib.ifindex).is_none() {
        return pass(Counter::PassEgressNotAttached);
    }
    fastpath::remember_v4(packet, ingress, &fib);
    // Bounded for the verifier: the packet may be a NAT64 translation kept in a map.
    if packet.l3 > MAX_LINK_HEADER {
        return pass(Counter::PassFibOther);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, packet.l3) else {
        return pass(Counter::PassFibOther);
    };
    // TTL and protocol share one 16-bit word of the header checksum.
    // SAFETY: bounds-checked above.
    unsafe {
        let old_word = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).ttl -= 1;
        let new_word = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        checksum::replace_u16(&raw mut (*ip).check, old_word, new_word);
    }
    redirect(ctx, &fib)
}

/// Forwards an IPv6 packet (addresses unchanged). Out of line, as [`ipv4`].
#[inline(never)]
pub fn ipv6(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32) -> u32 {
    // SAFETY: plain C struct, all-zero is valid.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = packet.next_header;
    if packet.next_header == IPPROTO_TCP || packet.next_header == IPPROTO_UDP {
        fib.sport = packet.src_port.to_be();
        fib.dport = packet.dst_port.to_be();
    }
    fib.__bindgen_anon_1.tot_len = packet.total_length;
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv6_src = words(packet.src);
    fib.__bindgen_anon_4.ipv6_dst = words(packet.dst);
    let verdict = lookup(ctx, &mut fib);
    if verdict != 0 {
        return verdict;
    }
    if packet.vlan_tagged {
        return pass(Counter::PassVlanToKernel);
    }
    if REDIRECT_DEVICES.get(fib.ifindex).is_none() {
        return pass(Counter::PassEgressNotAttached);
    }
    fastpath::remember_v6(packet, ingress, &fib);
    if packet.l3 > MAX_LINK_HEADER {
        return pass(Counter::PassFibOther);
    }
    // Hop limit is byte 7 of the IPv6 header; IPv6 has no header checksum.
    let Some(hop_limit) = ptr_at::<u8>(ctx, packet.l3 + 7) else {
        return pass(Counter::PassFibOther);
    };
    // SAFETY: bounds-checked above.
    unsafe { *hop_limit -= 1 };
    redirect(ctx, &fib)
}

/// The MTU of the route to an IPv6 packet's destination (the egress link's, or the route's),
/// when the FIB has one.
#[inline(never)]
pub fn ipv6_path_mtu(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32) -> Option<u16> {
    // SAFETY: plain C struct, all-zero is valid.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = packet.next_header;
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv6_src = words(packet.src);
    fib.__bindgen_anon_4.ipv6_dst = words(packet.dst);
    // SAFETY: `fib` is a valid, initialised parameter block of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut fib as *mut _,
            core::mem::size_of::<FibLookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: the lookup wrote the MTU of the route into the union.
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
            (mtu != 0).then_some(mtu)
        }
        _ => None,
    }
}

#[inline(always)]
fn words(addr: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// Runs the FIB lookup. Returns 0 on success, otherwise the (already counted) XDP_PASS verdict.
#[inline(always)]
fn lookup(ctx: &XdpContext, fib: &mut FibLookup) -> u32 {
    // SAFETY: `fib` is a valid, initialised parameter block of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib as *mut _,
            core::mem::size_of::<FibLookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => 0,
        BPF_FIB_LKUP_RET_NO_NEIGH => pass(Counter::PassNoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => pass(Counter::PassFragNeeded),
        BPF_FIB_LKUP_RET_NOT_FWDED => pass(Counter::PassLocalDestination),
        _ => pass(Counter::PassFibOther),
    }
}

#[inline(always)]
fn redirect(ctx: &XdpContext, fib: &FibLookup) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(Counter::PassFibOther);
    };
    // SAFETY: bounds-checked above.
    unsafe {
        (*eth).dst_addr = fib.dmac;
        (*eth).src_addr = fib.smac;
    }
    REDIRECT_DEVICES
        .redirect(fib.ifindex, 0)
        .unwrap_or_else(|_| pass(Counter::PassEgressNotAttached))
}
