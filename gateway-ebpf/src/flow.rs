//! Per-flow accounting for flow logs: one per-CPU entry per (addresses, ports, protocol, ingress
//! interface, action), with packet and byte counts, first and last packet times, and what the
//! packet looked like after translation. The controller sums the CPUs, writes the records and
//! deletes idle entries.
//!
//! The entry points are out of line and take few, scalar arguments so that the key and the value
//! live only in their own small stack frame, not in every caller's.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use gateway_common::{
    Counter,
    maps::{FlowKey, FlowStats, action, family},
};

use crate::{
    counters::count,
    maps::{FLOW_SCRATCH, FLOWS, REJECT_BUDGET},
    parsing::{Ipv4Packet, Ipv6Packet},
};

/// How a flow was handled, packed into one scalar for the out-of-line call.
#[derive(Clone, Copy)]
pub struct Handling(u64);

impl Handling {
    /// `route_target`: `maps::target` kind (0 none); `direction`: `maps::direction`;
    /// `drop_reason`: the drop counter for a REJECT, `None` for an accepted packet.
    #[inline(always)]
    pub fn new(
        route_target: u32,
        direction: u8,
        drop_reason: Option<Counter>,
        subnet_index: u32,
    ) -> Self {
        let reason = match drop_reason {
            Some(counter) => counter as u64,
            None => 0,
        };
        Handling(
            (subnet_index as u64)
                | ((route_target as u64 & 0xff) << 32)
                | ((direction as u64) << 40)
                | (reason << 48),
        )
    }

    #[inline(always)]
    fn subnet_index(self) -> u32 {
        self.0 as u32
    }

    #[inline(always)]
    fn route_target(self) -> u32 {
        ((self.0 >> 32) & 0xff) as u32
    }

    #[inline(always)]
    fn direction(self) -> u8 {
        (self.0 >> 40) as u8
    }

    #[inline(always)]
    fn drop_reason(self) -> u16 {
        (self.0 >> 48) as u16
    }
}

/// An IPv4 address in a 16-byte address field (first 4 bytes, the rest zero).
#[inline(always)]
pub fn widen(addr: [u8; 4]) -> [u8; 16] {
    let mut wide = [0u8; 16];
    wide[0] = addr[0];
    wide[1] = addr[1];
    wide[2] = addr[2];
    wide[3] = addr[3];
    wide
}

/// The flow key of an accepted IPv4 packet as it arrived (the fast path's lookup key).
#[inline(always)]
pub fn accepted_key_v4(packet: &Ipv4Packet, ingress: u32) -> FlowKey {
    FlowKey {
        src: widen(packet.src),
        dst: widen(packet.dst),
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        ingress_ifindex: ingress,
        protocol: packet.protocol,
        family: family::IPV4,
        action: action::ACCEPT,
        _pad: 0,
    }
}

/// The flow key of an accepted IPv6 packet.
#[inline(always)]
pub fn accepted_key_v6(packet: &Ipv6Packet, ingress: u32) -> FlowKey {
    FlowKey {
        src: packet.src,
        dst: packet.dst,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        ingress_ifindex: ingress,
        protocol: packet.next_header,
        family: family::IPV6,
        action: action::ACCEPT,
        _pad: 0,
    }
}

/// Adds a packet forwarded by the fast path to its (this CPU's) entry.
#[inline(always)]
pub fn add_fast_path_packet(stats: &mut FlowStats, bytes: u16, tcp_flags: u8, now: u64) {
    stats.packets += 1;
    stats.bytes += bytes as u64;
    stats.last_seen_ns = now;
    stats.tcp_flags |= aws_tcp_flags(tcp_flags);
}

/// An IPv4 endpoint packed into one scalar for [`account_v4`]: the address as read from the
/// packet (`u32::from_ne_bytes`) in the low 32 bits, the port (host order) above.
#[inline(always)]
pub fn endpoint(addr: [u8; 4], port: u16) -> u64 {
    u32::from_ne_bytes(addr) as u64 | (port as u64) << 32
}

/// Accounts an IPv4 packet that leaves with endpoints `src` -> `dst` (see [`endpoint`]).
#[inline(never)]
pub fn account_v4(packet: &Ipv4Packet, ingress: u32, src: u64, dst: u64, handling: Handling) {
    let mut key = accepted_key_v4(packet, ingress);
    key.action = action_of(handling);
    account(
        &key,
        packet.total_length,
        aws_tcp_flags(packet.tcp_flags),
        &widen((src as u32).to_ne_bytes()),
        &widen((dst as u32).to_ne_bytes()),
        ((src >> 16) as u32 & 0xffff_0000) | (dst >> 32) as u32 & 0xffff,
        handling,
    );
}

/// Accounts an IPv6 packet (never translated).
#[inline(never)]
pub fn account_v6(packet: &Ipv6Packet, ingress: u32, handling: Handling) {
    let mut key = accepted_key_v6(packet, ingress);
    key.action = action_of(handling);
    account(
        &key,
        packet.total_length,
        aws_tcp_flags(packet.tcp_flags),
        &packet.src,
        &packet.dst,
        ((packet.src_port as u32) << 16) | packet.dst_port as u32,
        handling,
    );
}

/// A NAT64 packet as it leaves, in the other family (IPv4 addresses in the first 4 bytes):
/// kept in the NAT work area so the accounting call takes one pointer.
#[derive(Default)]
pub struct Translated {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The source port in the high 16 bits, the destination port in the low.
    pub ports: u32,
}

/// Accounts an IPv6 packet that leaves translated to IPv4 (NAT64).
#[inline(never)]
pub fn account_v6_translated(
    packet: &Ipv6Packet,
    ingress: u32,
    translated: &Translated,
    handling: Handling,
) {
    let mut key = accepted_key_v6(packet, ingress);
    key.action = action_of(handling);
    account(
        &key,
        packet.total_length,
        aws_tcp_flags(packet.tcp_flags),
        &translated.src,
        &translated.dst,
        translated.ports,
        handling,
    );
}

/// Accounts an IPv4 packet that leaves translated to IPv6 (a NAT64 reply).
#[inline(never)]
pub fn account_v4_translated(
    packet: &Ipv4Packet,
    ingress: u32,
    translated: &Translated,
    handling: Handling,
) {
    let mut key = accepted_key_v4(packet, ingress);
    key.action = action_of(handling);
    account(
        &key,
        packet.total_length,
        aws_tcp_flags(packet.tcp_flags),
        &translated.src,
        &translated.dst,
        translated.ports,
        handling,
    );
}

/// A packet's TCP flags as flow logs report them: FIN (1), SYN (2), RST (4), and ACK (16) only
/// together with SYN, so that OR-ing packets gives AWS's values (2 for the client's SYN,
/// 18 for the server's SYN-ACK).
#[inline(always)]
fn aws_tcp_flags(raw: u8) -> u8 {
    let mut flags = raw & 0x07;
    if raw & 0x12 == 0x12 {
        flags |= 0x10;
    }
    flags
}

#[inline(always)]
fn action_of(handling: Handling) -> u8 {
    if handling.drop_reason() != 0 {
        action::REJECT
    } else {
        action::ACCEPT
    }
}

/// `ports`: the translated source port in the high 16 bits, the destination port in the low.
#[inline(always)]
fn account(
    key: &FlowKey,
    bytes: u16,
    tcp_flags: u8,
    translated_src: &[u8; 16],
    translated_dst: &[u8; 16],
    ports: u32,
    handling: Handling,
) {
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (slot, new_entry) = match FLOWS.get_ptr_mut(key) {
        Some(stats) => {
            // SAFETY: per-CPU value, no concurrent writer on this CPU.
            let stats = unsafe { &mut *stats };
            if stats.packets != 0 {
                stats.packets += 1;
                stats.bytes += bytes as u64;
                stats.last_seen_ns = now;
                stats.tcp_flags |= tcp_flags;
                return;
            }
            // The entry was created by another CPU: this CPU's slot starts zeroed.
            (stats, false)
        }
        // A flood of rejected packets from ever new sources (a scan) would otherwise push one new
        // entry per packet through the LRU, evicting live flows' records at a high cost per
        // packet: past a per-CPU budget per second, new REJECT flows are counted, not recorded.
        None if handling.drop_reason() != 0 && !reject_record_allowed(now) => {
            count(Counter::FlowLogRejectsSkipped);
            return;
        }
        // A new entry is assembled in a per-CPU scratch slot: the BPF stack is too small for it.
        None => match FLOW_SCRATCH.get_ptr_mut(0) {
            // SAFETY: per-CPU scratch slot, no concurrent writer on this CPU.
            Some(scratch) => (unsafe { &mut *scratch }, true),
            None => return,
        },
    };
    fill(
        slot,
        bytes,
        tcp_flags,
        now,
        translated_src,
        translated_dst,
        ports,
        handling,
    );
    // By reference: by value the 112-byte entry would be copied onto the stack.
    #[expect(clippy::needless_borrows_for_generic_args, reason = "stack size")]
    let inserted = new_entry && FLOWS.insert(key, &*slot, 0).is_err();
    if inserted {
        count(Counter::FlowTableFull);
    }
}

/// New REJECT flow records each CPU may create per second.
const REJECT_RECORDS_PER_SECOND: u64 = 4096;
const SECOND_NS: u64 = 1_000_000_000;

/// Takes one new REJECT record from this CPU's budget for the current second.
#[inline(always)]
fn reject_record_allowed(now: u64) -> bool {
    let Some(budget) = REJECT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let budget = unsafe { &mut *budget };
    if now.wrapping_sub(budget.window_start_ns) >= SECOND_NS {
        budget.window_start_ns = now;
        budget.used = 0;
    }
    if budget.used >= REJECT_RECORDS_PER_SECOND {
        return false;
    }
    budget.used += 1;
    true
}

/// Writes a flow's first packet into a value slot.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "inlined; one call per slot kind")]
fn fill(
    stats: &mut FlowStats,
    bytes: u16,
    tcp_flags: u8,
    now: u64,
    translated_src: &[u8; 16],
    translated_dst: &[u8; 16],
    ports: u32,
    handling: Handling,
) {
    stats.packets = 1;
    stats.bytes = bytes as u64;
    stats.first_seen_ns = now;
    stats.last_seen_ns = now;
    stats.translated_src = *translated_src;
    stats.translated_dst = *translated_dst;
    stats.translated_src_port = (ports >> 16) as u16;
    stats.translated_dst_port = ports as u16;
    stats.route_target = handling.route_target();
    stats.subnet_index = handling.subnet_index();
    stats.tcp_flags = tcp_flags;
    stats.direction = handling.direction();
    stats.drop_reason = handling.drop_reason();
    // The scratch slot may hold another flow's next hop.
    stats.next_hop_checked_ns = 0;
}
