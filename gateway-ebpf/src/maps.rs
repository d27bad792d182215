//! The BPF maps. Types and names are shared with the controller through `gateway_common::maps`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray,
        ProgramArray,
    },
};
use gateway_common::{
    conntrack::{ConnEntry, ConnKey, Timeouts},
    counters::COUNTER_COUNT,
    maps::{
        FlowKey, FlowStats, InterfaceInfo, MAX_CONNTRACK, MAX_ELASTIC_IPS, MAX_FLOWS,
        MAX_INTERFACES, MAX_ROUTES, MAX_SUBNETS, RouteKeyV4, RouteKeyV6, RouteTarget, SubnetInfo,
    },
    nat::{
        FragmentKey, FragmentTranslation, MAX_NAT_FRAGMENTS, MAX_NAT_GATEWAYS, MAX_NAT_MAPPINGS,
        Nat64FragmentIn, Nat64FragmentKey, Nat64FragmentOut, NatGatewayInfo, NatMapping,
        NatMappingKey,
    },
};

use crate::nat44::NatWork;

/// The tail-called programs (see `gateway_common::maps::tail`), filled by the controller.
#[map(name = "TAIL_PROGRAMS")]
pub static TAIL_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(5, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// ifindex -> role of every interface the program is attached to.
#[map(name = "INTERFACES")]
pub static INTERFACES: HashMap<u32, InterfaceInfo> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// ifindex -> ifindex of the interfaces the program may redirect to.
#[map(name = "REDIRECT_DEVICES")]
pub static REDIRECT_DEVICES: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

/// Subnet prefixes, looked up by an address to find its subnet and route table.
#[map(name = "SUBNETS_V4")]
pub static SUBNETS_V4: LpmTrie<[u8; 4], SubnetInfo> = LpmTrie::with_max_entries(MAX_SUBNETS, 0);
#[map(name = "SUBNETS_V6")]
pub static SUBNETS_V6: LpmTrie<[u8; 16], SubnetInfo> = LpmTrie::with_max_entries(MAX_SUBNETS, 0);

/// (route table, destination prefix) -> target.
#[map(name = "ROUTES_V4")]
pub static ROUTES_V4: LpmTrie<RouteKeyV4, RouteTarget> = LpmTrie::with_max_entries(MAX_ROUTES, 0);
#[map(name = "ROUTES_V6")]
pub static ROUTES_V6: LpmTrie<RouteKeyV6, RouteTarget> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

/// The internet gateway's Elastic IP associations, both ways.
#[map(name = "ELASTIC_IP_BY_PRIVATE")]
pub static ELASTIC_IP_BY_PRIVATE: HashMap<[u8; 4], [u8; 4]> =
    HashMap::with_max_entries(MAX_ELASTIC_IPS, 0);
#[map(name = "ELASTIC_IP_BY_PUBLIC")]
pub static ELASTIC_IP_BY_PUBLIC: HashMap<[u8; 4], [u8; 4]> =
    HashMap::with_max_entries(MAX_ELASTIC_IPS, 0);

/// Per-flow packet and byte counts for flow logs and the fast path's cached decisions (swept by
/// the controller). LRU, unlike connection tracking: it holds statistics and a cache, not state,
/// so a flood of new flows (a scan) evicts the least recently used entries instead of filling
/// the table; an evicted flow only loses its not-yet-logged counts and its cached next hop.
#[map(name = "FLOWS")]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> =
    LruPerCpuHashMap::with_max_entries(MAX_FLOWS, 0);

/// One per-CPU slot where a new flow entry is assembled before insertion.
#[map(name = "FLOW_SCRATCH")]
pub static FLOW_SCRATCH: PerCpuArray<FlowStats> = PerCpuArray::with_max_entries(1, 0);

/// Connection tracking (egress-only internet gateway now, NAT gateway later). A plain hash map
/// with explicit expiry, never an LRU: eviction would silently cut live flows. Not preallocated.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: HashMap<ConnKey, ConnEntry> =
    HashMap::with_max_entries(MAX_CONNTRACK, BPF_F_NO_PREALLOC);

/// The idle timeouts, one entry written by the controller from the config.
#[map(name = "CONNTRACK_TIMEOUTS")]
pub static CONNTRACK_TIMEOUTS: Array<Timeouts> = Array::with_max_entries(1, 0);

/// The NAT gateways' settings, indexed by the gateway's index in the config.
#[map(name = "NAT_GATEWAYS")]
pub static NAT_GATEWAYS: Array<NatGatewayInfo> = Array::with_max_entries(MAX_NAT_GATEWAYS, 0);

/// Public IPv4 address of a NAT gateway -> the gateway's index.
#[map(name = "NAT_PUBLIC_IPS")]
pub static NAT_PUBLIC_IPS: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(MAX_NAT_GATEWAYS * 8, 0);

/// Endpoint-independent mappings, both ways (see `gateway_common::nat`). Plain hash, explicit
/// expiry by the controller, claimed with `BPF_NOEXIST`.
#[map(name = "NAT_MAPPINGS")]
pub static NAT_MAPPINGS: HashMap<NatMappingKey, NatMapping> =
    HashMap::with_max_entries(MAX_NAT_MAPPINGS, BPF_F_NO_PREALLOC);

/// First fragments' translations, for the later fragments of the same packet. An LRU: an
/// evicted entry only costs the rest of one fragmented packet.
#[map(name = "NAT_FRAGMENTS")]
pub static NAT_FRAGMENTS: LruHashMap<FragmentKey, FragmentTranslation> =
    LruHashMap::with_max_entries(MAX_NAT_FRAGMENTS, 0);

/// NAT64 first fragments' translations, for the later fragments of the same packet (LRUs, like
/// `NAT_FRAGMENTS`): an IPv6 client's train -> the IPv4 addresses it left with, and an IPv4
/// train of a reply -> the IPv6 addresses it arrives with.
#[map(name = "NAT64_FRAGMENTS_OUT")]
pub static NAT64_FRAGMENTS_OUT: LruHashMap<Nat64FragmentKey, Nat64FragmentOut> =
    LruHashMap::with_max_entries(MAX_NAT_FRAGMENTS, 0);
#[map(name = "NAT64_FRAGMENTS_IN")]
pub static NAT64_FRAGMENTS_IN: LruHashMap<FragmentKey, Nat64FragmentIn> =
    LruHashMap::with_max_entries(MAX_NAT_FRAGMENTS, 0);

/// Per-CPU working space of the NAT paths: keys and entries too big for the BPF stack.
#[map(name = "NAT_WORK")]
pub static NAT_WORK: PerCpuArray<NatWork> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's budget of new REJECT flow records for the current second (see flow.rs).
#[map(name = "REJECT_BUDGET")]
pub static REJECT_BUDGET: PerCpuArray<RejectBudget> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct RejectBudget {
    pub window_start_ns: u64,
    pub used: u64,
}
