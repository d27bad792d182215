//! The benchmark's own XDP programs (`cargo xtask bench`), kept in the gateway's object so that
//! one build serves both. None of them is ever attached by the gateway itself.
//!
//! - [`bench_generator`] runs through `BPF_PROG_RUN` in live-frames mode and sends every frame out
//!   of the generator veth with `XDP_TX`. Live-frame pages are recycled without being
//!   re-initialised, so each run rewrites every header field a device under test may have changed
//!   (MACs, the IP header's fields up to the addresses, TTL / hop limit, ports, checksums; a NAT64
//!   translation moves the headers, so a recycled page can hold parts of another header anywhere
//!   before the transport header), which also spreads the frames over the configured number of
//!   flows.
//! - [`bench_sink`] counts what arrives at the far end and drops it.
//! - [`bench_fwd_limit`] is the calibration hop: a static MAC rewrite and redirect, what any XDP
//!   forwarder must at least do.
//! - [`bench_drop`] and [`bench_empty`] are the trivial baselines (drop rate, per-path cost).
//!   `bench_drop` counts what it drops in one per-CPU slot, so that its rate is read the way the
//!   gateway's drop counters are.
//!
//! The map value layouts are mirrored in `xtask/src/bench/` (sizes asserted on both sides).

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};
use gateway_common::{
    bench::{FwdLimitConfig, GeneratorConfig},
    checksum::{update_u16, update_u32},
};

const FAMILY_IPV4: u32 = 4;
const FAMILY_IPV6: u32 = 6;
const PROTOCOL_TCP: u32 = 6;
const PROTOCOL_UDP: u32 = 17;
/// The destination port of every generated packet; the sink counts only these, so that a
/// scenario whose frames never arrive cannot pass on neighbour discovery or other stray traffic.
const BENCH_PORT: u16 = 9;

/// Slots of `BENCH_SINK`.
const SINK_PACKETS: u32 = 0;
const SINK_BYTES: u32 = 1;
/// Frames that are not the generator's (neighbour discovery and the like), counted apart.
const SINK_OTHER: u32 = 2;

#[map(name = "BENCH_GENERATOR")]
static BENCH_GENERATOR: Array<GeneratorConfig> = Array::with_max_entries(1, 0);

/// Per CPU: [0] frames generated so far (the flow index comes from it).
#[map(name = "BENCH_GENERATED")]
static BENCH_GENERATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "BENCH_SINK")]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// Per CPU: [0] frames `bench_drop` dropped.
#[map(name = "BENCH_DROPPED")]
static BENCH_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "BENCH_FWD_LIMIT")]
static BENCH_FWD_LIMIT: Array<FwdLimitConfig> = Array::with_max_entries(1, 0);

#[map(name = "BENCH_FWD_LIMIT_DEVICE")]
static BENCH_FWD_LIMIT_DEVICE: DevMap = DevMap::with_max_entries(1, 0);

/// Offsets in an untagged Ethernet frame.
const L3: usize = 14;
const V4_TTL: usize = L3 + 8;
const V4_CHECK: usize = L3 + 10;
const V4_SRC: usize = L3 + 12;
const V4_DST: usize = L3 + 16;
const V4_L4: usize = L3 + 20;
const V6_HOP_LIMIT: usize = L3 + 7;
const V6_SRC: usize = L3 + 8;
const V6_DST: usize = L3 + 24;
const V6_L4: usize = L3 + 40;
/// Offset of the checksum inside the transport header.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

#[inline(always)]
fn counter_add(map: &PerCpuArray<u64>, index: u32, value: u64) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += value };
    }
}

#[inline(always)]
unsafe fn write_bytes<const N: usize>(base: *mut u8, offset: usize, bytes: [u8; N]) {
    // SAFETY: the caller bounds-checked `base + offset + N`.
    unsafe { core::ptr::write_unaligned(base.add(offset) as *mut [u8; N], bytes) };
}

#[inline(always)]
fn be32(bytes: &[u8; 16], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A UDP checksum of 0 means "none": a computed 0 is sent as 0xffff.
#[inline(always)]
fn udp_nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

#[xdp]
pub fn bench_generator(ctx: XdpContext) -> u32 {
    let Some(config) = BENCH_GENERATOR.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(generated) = BENCH_GENERATED.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot; BPF_PROG_RUN runs the program on one CPU.
    let index = unsafe {
        let index = *generated;
        *generated = index + 1;
        index as u32 & config.flows_mask
    };
    // One monomorphic path per header layout, so that every offset is a constant the verifier
    // checks against one bound.
    match (config.family, config.protocol) {
        (FAMILY_IPV4, PROTOCOL_UDP) => emit::<V4_L4, UDP_CHECK>(&ctx, config, index),
        (FAMILY_IPV4, PROTOCOL_TCP) => emit::<V4_L4, TCP_CHECK>(&ctx, config, index),
        (FAMILY_IPV6, PROTOCOL_UDP) => emit::<V6_L4, UDP_CHECK>(&ctx, config, index),
        (FAMILY_IPV6, PROTOCOL_TCP) => emit::<V6_L4, TCP_CHECK>(&ctx, config, index),
        _ => xdp_action::XDP_ABORTED,
    }
}

/// Writes flow `index` into a frame whose transport header starts at `L4` (so the family is
/// `L4 == V4_L4` or not) and whose transport checksum is at `L4 + CHECK`.
#[inline(always)]
fn emit<const L4: usize, const CHECK: usize>(
    ctx: &XdpContext,
    config: &GeneratorConfig,
    index: u32,
) -> u32 {
    let data = ctx.data();
    if data + L4 + CHECK + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let ipv4 = L4 == V4_L4;
    let addr_bits = config.addr_bits & 31;
    let addr_index = index & ((1u32 << addr_bits) - 1);
    let src_port = config.src_port.wrapping_add((index >> addr_bits) as u16);
    let old_low = if ipv4 {
        be32(&config.src, 0)
    } else {
        be32(&config.src, 12)
    };
    let new_low = old_low.wrapping_add(addr_index);
    // The transport checksum covers the pseudo-header's source address and the source port.
    let l4_check = update_u16(
        update_u32(config.l4_check, old_low, new_low),
        config.src_port,
        src_port,
    );
    let base = data as *mut u8;
    // SAFETY: every write below ends at or before L4 + CHECK + 2, checked above.
    unsafe {
        write_bytes(base, 0, config.macs);
        // The fixed fields of the IP header too, from the ether type to the protocol: a NAT64
        // device under test moves the headers (the frame starts 20 bytes later or earlier in the
        // page), so the recycled page holds parts of another header there.
        let length = (ctx.data_end() - data) as u16;
        if ipv4 {
            // As the userspace template has them (the header checksum derives from it): version
            // 4, 20-byte header, no TOS, the total length, ID 0, don't fragment, the protocol.
            write_bytes(base, L3 - 2, 0x0800u16.to_be_bytes());
            write_bytes(base, L3, [0x45, 0]);
            write_bytes(base, L3 + 2, (length - L3 as u16).to_be_bytes());
            write_bytes(base, L3 + 4, [0, 0, 0x40, 0]);
            *base.add(V4_TTL + 1) = config.protocol as u8;
            *base.add(V4_TTL) = config.ttl;
            let ip_check = update_u32(config.ip_check, old_low, new_low);
            write_bytes(base, V4_CHECK, ip_check.to_be_bytes());
            write_bytes(base, V4_SRC, new_low.to_be_bytes());
            write_bytes(
                base,
                V4_DST,
                [config.dst[0], config.dst[1], config.dst[2], config.dst[3]],
            );
        } else {
            // Version 6, no traffic class or flow label, the payload length, the next header.
            write_bytes(base, L3 - 2, 0x86ddu16.to_be_bytes());
            write_bytes(base, L3, [0x60, 0, 0, 0]);
            write_bytes(base, L3 + 4, (length - V6_L4 as u16).to_be_bytes());
            *base.add(V6_HOP_LIMIT - 1) = config.protocol as u8;
            *base.add(V6_HOP_LIMIT) = config.ttl;
            write_bytes(base, V6_SRC, config.src);
            write_bytes(base, V6_SRC + 12, new_low.to_be_bytes());
            write_bytes(base, V6_DST, config.dst);
        }
        write_bytes(base, L4, src_port.to_be_bytes());
        write_bytes(base, L4 + 2, config.dst_port.to_be_bytes());
        let check = if CHECK == UDP_CHECK {
            udp_nonzero(l4_check)
        } else {
            l4_check
        };
        write_bytes(base, L4 + CHECK, check.to_be_bytes());
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let length = (end - data) as u64;
    if carries_bench_port(data, end) {
        counter_add(&BENCH_SINK, SINK_PACKETS, 1);
        counter_add(&BENCH_SINK, SINK_BYTES, length);
    } else {
        counter_add(&BENCH_SINK, SINK_OTHER, 1);
    }
    xdp_action::XDP_DROP
}

/// Whether the frame at `data..end` is a generator's packet: TCP or UDP to BENCH_PORT behind a
/// fixed-size IPv4 or IPv6 header. Each family is bounds-checked on its own, because a NAT64
/// translation delivers IPv4 frames 20 bytes shorter than the IPv6 frames the generator sent
/// (44 bytes for a 64-byte frame), shorter than any IPv6 frame the check could ask for.
#[inline(always)]
fn carries_bench_port(data: usize, end: usize) -> bool {
    if data + L3 > end {
        return false;
    }
    let base = data as *const u8;
    // SAFETY: every read below is bounds-checked against `end` first.
    unsafe {
        let port_at = |l4: usize| u16::from_be_bytes([*base.add(l4 + 2), *base.add(l4 + 3)]);
        // The port is read inside each arm, right behind its own bounds check, so that the
        // verifier sees one constant offset per path.
        let (protocol, port) = match u16::from_be_bytes([*base.add(12), *base.add(13)]) {
            0x0800 if data + V4_L4 + 4 <= end => (*base.add(L3 + 9), port_at(V4_L4)),
            0x86dd if data + V6_L4 + 4 <= end => (*base.add(L3 + 6), port_at(V6_L4)),
            _ => return false,
        };
        (protocol == PROTOCOL_TCP as u8 || protocol == PROTOCOL_UDP as u8) && port == BENCH_PORT
    }
}

#[xdp]
pub fn bench_fwd_limit(ctx: XdpContext) -> u32 {
    let Some(config) = BENCH_FWD_LIMIT.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: bounds-checked above.
    unsafe { write_bytes(data as *mut u8, 0, config.macs) };
    BENCH_FWD_LIMIT_DEVICE
        .redirect(0, 0)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    counter_add(&BENCH_DROPPED, 0, 1);
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
