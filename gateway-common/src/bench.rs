//! Map values of the benchmark's own XDP programs (`gateway-ebpf/src/bench.rs`), written by
//! `cargo xtask bench`.

/// What the generator writes into each frame. Flow `i` (0 <= i <= `flows_mask`) has the source
/// address `src` + (i & (2^`addr_bits` - 1)) (added to the last 32 bits) and the source port
/// `src_port` + (i >> `addr_bits`). `ip_check` and `l4_check` are the checksums of flow 0's frame,
/// which userspace built whole; the others are derived from them incrementally, so the cost does not
/// depend on the packet size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GeneratorConfig {
    /// Flow count - 1; the flow count is a power of two.
    pub flows_mask: u32,
    pub addr_bits: u32,
    /// 4 or 6.
    pub family: u32,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u32,
    /// IPv4 addresses use the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Destination then source MAC.
    pub macs: [u8; 12],
    /// Host order.
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub _pad: [u8; 3],
    /// As read from the frame (big-endian value).
    pub ip_check: u16,
    pub l4_check: u16,
}

const _: () = assert!(core::mem::size_of::<GeneratorConfig>() == 72);

/// The static hop of `bench_fwd_limit`: MACs to write; the egress device is `FWD_LIMIT_DEVICE[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FwdLimitConfig {
    /// Destination then source MAC.
    pub macs: [u8; 12],
    pub _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<FwdLimitConfig>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: `#[repr(C)]`, integers and byte arrays only, every padding byte an explicit field.
    unsafe impl aya::Pod for GeneratorConfig {}
    unsafe impl aya::Pod for FwdLimitConfig {}
}
