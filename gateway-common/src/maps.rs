//! Keys and values of the BPF maps, and the names of the maps themselves.
//!
//! Addresses are stored as bytes in network order. Integers that the dataplane compares against
//! packet fields are documented with their byte order. No `bool`, `Option` or enum crosses the
//! boundary: flags are `u8`/`u32` with named constants.

/// Map names, as the controller looks them up in the loaded object.
pub mod names {
    pub const COUNTERS: &str = "COUNTERS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const REDIRECT_DEVICES: &str = "REDIRECT_DEVICES";
    pub const SUBNETS_V4: &str = "SUBNETS_V4";
    pub const SUBNETS_V6: &str = "SUBNETS_V6";
    pub const ROUTES_V4: &str = "ROUTES_V4";
    pub const ROUTES_V6: &str = "ROUTES_V6";
    pub const ELASTIC_IP_BY_PRIVATE: &str = "ELASTIC_IP_BY_PRIVATE";
    pub const ELASTIC_IP_BY_PUBLIC: &str = "ELASTIC_IP_BY_PUBLIC";
    pub const FLOWS: &str = "FLOWS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const CONNTRACK_TIMEOUTS: &str = "CONNTRACK_TIMEOUTS";
    pub const NAT_GATEWAYS: &str = "NAT_GATEWAYS";
    pub const NAT_PUBLIC_IPS: &str = "NAT_PUBLIC_IPS";
    pub const NAT_MAPPINGS: &str = "NAT_MAPPINGS";
    pub const NAT_FRAGMENTS: &str = "NAT_FRAGMENTS";
    pub const NAT64_FRAGMENTS_OUT: &str = "NAT64_FRAGMENTS_OUT";
    pub const NAT64_FRAGMENTS_IN: &str = "NAT64_FRAGMENTS_IN";
    pub const TAIL_PROGRAMS: &str = "TAIL_PROGRAMS";
}

/// The programs `gateway` hands a packet to with a tail call (slots of `TAIL_PROGRAMS`): cold
/// paths the verifier then checks once, on their own, rather than along every path of `gateway`
/// that leads to them, and that start with a fresh 512-byte stack.
pub mod tail {
    /// An ICMPv4 error about a NAT64 session, translated to ICMPv6 (RFC 7915 s4.2).
    pub const NAT64_ICMP_ERROR_INBOUND: u32 = 0;
    /// An ICMPv6 error from a NAT64 client, translated to ICMPv4 (RFC 7915 s5.2).
    pub const NAT64_ICMP_ERROR_OUTBOUND: u32 = 1;
    /// An IPv6 fragment from a NAT64 client, translated to an IPv4 fragment (RFC 7915 s5.1).
    pub const NAT64_FRAGMENT_OUTBOUND: u32 = 2;
    /// An IPv4 fragment of a reply to a NAT64 session, translated to an IPv6 fragment (RFC 7915
    /// s4.1): a first fragment whose session `gateway` found, or a later fragment NAT44 does
    /// not know.
    pub const NAT64_FRAGMENT_INBOUND: u32 = 3;
    /// An IPv4 reply with DF set that would not fit the client's link once translated: answered
    /// with ICMPv4 "fragmentation needed" (RFC 7915 s4, RFC 1191).
    pub const NAT64_TOO_BIG: u32 = 4;
    /// Program names, by slot.
    pub const PROGRAMS: [&str; 5] = [
        "nat64_icmp_error_in",
        "nat64_icmp_error_out",
        "nat64_fragment_out",
        "nat64_fragment_in",
        "nat64_too_big",
    ];
}

/// Name of the XDP entry program in the object.
pub const XDP_PROGRAM: &str = "gateway";

/// Capacities. Route tables are small (AWS allows 50 routes per table by default, we allow more).
pub const MAX_INTERFACES: u32 = 64;
pub const MAX_SUBNETS: u32 = 4096;
pub const MAX_ROUTES: u32 = 16384;
pub const MAX_ELASTIC_IPS: u32 = 65536;
pub const MAX_FLOWS: u32 = 262_144;
/// Connection-tracking capacity. The map is not preallocated: memory is taken per entry.
pub const MAX_CONNTRACK: u32 = 1 << 20;

/// What an interface faces. Values of [`InterfaceInfo::role`].
pub mod role {
    /// Faces the VPC subnets (instances).
    pub const VPC: u32 = 1;
    /// Faces the internet.
    pub const INTERNET: u32 = 2;
}

/// Value of `INTERFACES`, keyed by ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// One of [`role`].
    pub role: u32,
    /// Reserved, zero.
    pub _reserved: u32,
}

/// Value of `SUBNETS_V4` / `SUBNETS_V6` (LPM tries keyed by the subnet prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetInfo {
    /// The route table associated with the subnet (an index the controller assigns).
    pub route_table: u32,
    /// The subnet's index in the config, for flow logs (`subnet-id`).
    pub subnet_index: u32,
}

/// Data of an IPv4 route key: LPM prefix length = 32 + the route's prefix length, so that the
/// route table always matches whole and the destination matches longest-prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKeyV4 {
    /// Route table index, big-endian (the trie compares bytes from the first one).
    pub route_table: [u8; 4],
    pub destination: [u8; 4],
}

/// Like [`RouteKeyV4`] for IPv6: LPM prefix length = 32 + the route's prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKeyV6 {
    pub route_table: [u8; 4],
    pub destination: [u8; 16],
}

/// Bits a route table index takes in a route key.
pub const ROUTE_TABLE_BITS: u32 = 32;

/// Kinds of route target. Values of [`RouteTarget::kind`].
pub mod target {
    /// Deliver inside the VPC.
    pub const LOCAL: u32 = 1;
    /// The internet gateway: 1:1 NAT for IPv4, unchanged for IPv6.
    pub const INTERNET_GATEWAY: u32 = 2;
    /// Drop.
    pub const BLACKHOLE: u32 = 3;
    /// A NAT gateway (NAT44 / NAT64).
    pub const NAT_GATEWAY: u32 = 4;
    /// An egress-only internet gateway (IPv6).
    pub const EGRESS_ONLY_INTERNET_GATEWAY: u32 = 5;
}

/// Value of `ROUTES_V4` / `ROUTES_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTarget {
    /// One of [`target`].
    pub kind: u32,
    /// Which gateway of that kind (index in the config), for gateways that can be several.
    pub gateway_index: u32,
}

/// Values of [`FlowKey::action`], the flow-log `action` field.
pub mod action {
    pub const ACCEPT: u8 = 1;
    pub const REJECT: u8 = 2;
}

/// Values of [`FlowStats::direction`], the flow-log `flow-direction` field as seen from the VPC.
pub mod direction {
    /// From the VPC towards the internet.
    pub const EGRESS: u8 = 1;
    /// From the internet into the VPC.
    pub const INGRESS: u8 = 2;
    /// Between two subnets of the VPC.
    pub const INTERNAL: u8 = 3;
}

/// Values of [`FlowKey::family`].
pub mod family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// Key of `FLOWS` (per-CPU hash), one entry per flow as the packet arrived at the gateway, before
/// any translation (these are the flow log's `pkt-srcaddr`/`pkt-dstaddr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv4 addresses use the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order; ICMP: type in `src_port`, code in `dst_port` (echo: identifier in both).
    pub src_port: u16,
    pub dst_port: u16,
    /// Interface the packet arrived on.
    pub ingress_ifindex: u32,
    /// IANA protocol number.
    pub protocol: u8,
    /// One of [`family`].
    pub family: u8,
    /// One of [`action`].
    pub action: u8,
    pub _pad: u8,
}

/// Value of `FLOWS`: counts and what the flow looks like after translation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Addresses and ports as the packet left (the flow log's `srcaddr`/`dstaddr`).
    pub translated_src: [u8; 16],
    pub translated_dst: [u8; 16],
    pub translated_src_port: u16,
    pub translated_dst_port: u16,
    /// Route target kind that handled the flow ([`target`]), 0 when none.
    pub route_target: u32,
    /// Subnet index of the VPC-side address, `u32::MAX` when none.
    pub subnet_index: u32,
    /// OR of the TCP flags seen, in flow-log form: FIN, SYN, RST, and ACK only with SYN.
    pub tcp_flags: u8,
    /// One of [`direction`].
    pub direction: u8,
    /// Why a REJECT was dropped: the [`crate::Counter`] index, 0 for ACCEPT.
    pub drop_reason: u16,
    /// The next hop this CPU's last FIB lookup gave for the flow, so that later packets skip
    /// the route and FIB lookups (the fast path). 0 when there is none; stale after
    /// [`NEXT_HOP_CACHE_NS`].
    pub next_hop_checked_ns: u64,
    pub next_hop_ifindex: u32,
    /// The largest IP total length the FIB accepted for this next hop (its MTU check); a larger
    /// packet takes the slow path.
    pub next_hop_max_length: u16,
    pub _pad1: u16,
    pub next_hop_dmac: [u8; 6],
    pub next_hop_smac: [u8; 6],
    pub _pad2: u32,
}

/// How long a cached next hop is used before the FIB is asked again (neighbour or route changes
/// take effect within this time).
pub const NEXT_HOP_CACHE_NS: u64 = 1_000_000_000;

const _: () = assert!(core::mem::size_of::<InterfaceInfo>() == 8);
const _: () = assert!(core::mem::size_of::<SubnetInfo>() == 8);
const _: () = assert!(core::mem::size_of::<RouteKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<RouteKeyV6>() == 20);
const _: () = assert!(core::mem::size_of::<RouteTarget>() == 8);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 44);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 112);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made of integers and byte arrays, with every padding
    // byte an explicit field, so any bit pattern is valid and none is uninitialised.
    unsafe impl aya::Pod for InterfaceInfo {}
    unsafe impl aya::Pod for SubnetInfo {}
    unsafe impl aya::Pod for RouteKeyV4 {}
    unsafe impl aya::Pod for RouteKeyV6 {}
    unsafe impl aya::Pod for RouteTarget {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowStats {}
}
