//! NAT gateway state shared by the dataplane and the controller: the per-gateway settings, the
//! endpoint-independent mapping table, the fragment table, and the pure port-selection logic.
//!
//! A NAT44 session is two `CONNTRACK` entries (see [`crate::conntrack::kind`]): `NAT44_OUT`, keyed
//! by the private endpoint and the destination, and `NAT44_IN`, keyed by the public endpoint and
//! the destination. With endpoint-independent mapping (the default) the public endpoint of a
//! private endpoint is also kept in `NAT_MAPPINGS`, under two keys: the private endpoint (kind
//! [`mapping::PRIVATE`]: which public endpoint it uses, whatever the destination) and the public
//! endpoint (kind [`mapping::PUBLIC`]: the port reservation, claimed with `BPF_NOEXIST`). With
//! endpoint-dependent mapping the `NAT44_IN` entry itself is the reservation, so a public port
//! serves many private endpoints as long as their destinations differ.
//!
//! Addresses are 16 bytes with a family so that NAT64 sessions (an IPv6 private endpoint behind
//! the same IPv4 pool) fit the same tables later.

/// Most public IPv4 addresses of one NAT gateway (AWS: 1 primary + 7 secondary).
pub const MAX_PUBLIC_IPS: usize = 8;
/// Most NAT gateways in one configuration (size of `NAT_GATEWAYS`).
pub const MAX_NAT_GATEWAYS: u32 = 16;
/// Ports tried on each public IP before moving to the next one.
pub const PROBES_PER_IP: u32 = 32;
/// Capacity of `NAT_MAPPINGS` (two entries per endpoint-independent mapping).
pub const MAX_NAT_MAPPINGS: u32 = 1 << 20;
/// Capacity of the fragment LRU table.
pub const MAX_NAT_FRAGMENTS: u32 = 8192;

/// Values of [`NatGatewayInfo::mapping`].
pub mod mapping_mode {
    /// RFC 4787 REQ-1: one public endpoint per private endpoint, whatever the destination.
    pub const ENDPOINT_INDEPENDENT: u8 = 0;
    /// AWS's model: a public port is reused towards different destinations.
    pub const ENDPOINT_DEPENDENT: u8 = 1;
}

/// Values of [`NatMappingKey::kind`].
pub mod mapping {
    /// Keyed by the private endpoint; the value is the public endpoint.
    pub const PRIVATE: u8 = 1;
    /// Keyed by the public endpoint (the port reservation); the value is the private endpoint.
    pub const PUBLIC: u8 = 2;
}

/// Value of the `NAT_GATEWAYS` array, indexed by the gateway's index in the config.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatGatewayInfo {
    pub public_ips: [[u8; 4]; MAX_PUBLIC_IPS],
    /// 0: the slot is unused.
    pub public_ip_count: u8,
    /// One of [`mapping_mode`].
    pub mapping: u8,
    /// 1: a packet from inside on a timed-out TCP session gets a RST back (AWS's behaviour).
    pub rst_on_idle_timeout: u8,
    pub _pad: u8,
    /// Inclusive source port range, host order.
    pub port_min: u16,
    pub port_max: u16,
    /// NAT64 (RFC 6146): the prefix IPv4 addresses are embedded in (RFC 6052); length 0 when the
    /// gateway does not translate IPv6.
    pub nat64_prefix: [u8; 16],
    pub nat64_prefix_len: u8,
    /// One of [`udp_zero_checksum`]: an unfragmented IPv4 UDP datagram without a checksum,
    /// translated to IPv6 (where the checksum is mandatory).
    pub nat64_udp_zero_checksum: u8,
    pub _pad2: [u8; 2],
}

/// Values of [`NatGatewayInfo::nat64_udp_zero_checksum`].
pub mod udp_zero_checksum {
    /// Compute the checksum over the datagram (RFC 7915 s4.5, the default).
    pub const COMPUTE: u8 = 0;
    /// Drop it and count it.
    pub const DROP: u8 = 1;
}

/// Key of `NAT_MAPPINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatMappingKey {
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    /// Host order (ICMP echo: the identifier).
    pub port: u16,
    pub protocol: u8,
    /// 4 or 6 (of `addr`).
    pub family: u8,
    /// One of [`mapping`].
    pub kind: u8,
    /// The NAT gateway's index.
    pub gateway: u8,
    pub _pad: [u8; 2],
}

/// Value of `NAT_MAPPINGS`: the endpoint on the other side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatMapping {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub _pad: [u8; 5],
    /// `bpf_ktime_get_coarse_ns` when the mapping was made and when a session last used it
    /// (written when a session is created; the controller deletes a mapping once no live session
    /// uses it and it has not been used for a grace period).
    pub created_ns: u64,
    pub last_used_ns: u64,
}

/// Key of `NAT_FRAGMENTS` (an LRU: losing an entry only drops later fragments, never a flow):
/// the fragment train as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub id: [u8; 2],
    pub protocol: u8,
    pub _pad: u8,
}

/// Value of `NAT_FRAGMENTS`: the address that replaces the source (outbound) or the destination
/// (inbound) of the later fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentTranslation {
    pub addr: [u8; 4],
    /// 1: replace the source; 2: replace the destination.
    pub field: u8,
    pub _pad: [u8; 3],
}

/// Values of [`FragmentTranslation::field`].
pub mod fragment_field {
    pub const SOURCE: u8 = 1;
    pub const DESTINATION: u8 = 2;
}

/// Key of `NAT64_FRAGMENTS_OUT` (an LRU, like `NAT_FRAGMENTS`): an IPv6 client's fragment train
/// as it arrives (RFC 8200 s4.5: source, destination and the 32-bit identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat64FragmentKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: [u8; 4],
}

/// Value of `NAT64_FRAGMENTS_OUT`: the IPv4 addresses the first fragment of the train left with
/// (the session's public address, the destination extracted from the NAT64 prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat64FragmentOut {
    pub public: [u8; 4],
    pub remote: [u8; 4],
}

/// Value of `NAT64_FRAGMENTS_IN`, keyed by the IPv4 train as it arrives ([`FragmentKey`]): the
/// IPv6 addresses the first fragment was translated to and the client's subnet (flow logs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat64FragmentIn {
    /// The IPv4 source embedded in the NAT64 prefix.
    pub remote6: [u8; 16],
    pub client: [u8; 16],
    pub subnet_index: u32,
}

/// The public IP a private address tries first (RFC 4787 REQ-2, paired pooling: one private host
/// keeps one public address while it has free ports there).
#[inline(always)]
pub const fn preferred_ip_index(private: [u8; 4], count: u32) -> u32 {
    if count == 0 {
        return 0;
    }
    let mixed = u32::from_be_bytes(private).wrapping_mul(0x9e37_79b1);
    (mixed >> 16) % count
}

/// The `probe`-th port tried on one public IP: the private port first when it is inside the range
/// (port preservation), then ports from a random start upwards, wrapping inside the range.
#[inline(always)]
pub const fn port_candidate(min: u16, max: u16, private_port: u16, random: u32, probe: u32) -> u16 {
    let span = (max as u32).wrapping_sub(min as u32).wrapping_add(1);
    if span == 0 || span > 65536 {
        return min;
    }
    let preserve = private_port >= min && private_port <= max;
    if probe == 0 && preserve {
        return private_port;
    }
    let start = random % span;
    (min as u32 + (start + probe) % span) as u16
}

const _: () = assert!(core::mem::size_of::<NatGatewayInfo>() == 60);
const _: () = assert!(core::mem::size_of::<NatMappingKey>() == 24);
const _: () = assert!(core::mem::size_of::<NatMapping>() == 40);
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragmentTranslation>() == 8);
const _: () = assert!(core::mem::size_of::<Nat64FragmentKey>() == 36);
const _: () = assert!(core::mem::size_of::<Nat64FragmentOut>() == 8);
const _: () = assert!(core::mem::size_of::<Nat64FragmentIn>() == 36);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: `#[repr(C)]`, integers and byte arrays only, padding explicit.
    unsafe impl aya::Pod for NatGatewayInfo {}
    unsafe impl aya::Pod for NatMappingKey {}
    unsafe impl aya::Pod for NatMapping {}
    unsafe impl aya::Pod for FragmentKey {}
    unsafe impl aya::Pod for FragmentTranslation {}
    unsafe impl aya::Pod for Nat64FragmentKey {}
    unsafe impl aya::Pod for Nat64FragmentOut {}
    unsafe impl aya::Pod for Nat64FragmentIn {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserves_the_port_when_it_is_in_the_range() {
        assert_eq!(port_candidate(1024, 65535, 40000, 12345, 0), 40000);
        // Probe 1 and later: from the random start.
        assert_eq!(port_candidate(1024, 65535, 40000, 0, 1), 1025);
    }

    #[test]
    fn out_of_range_ports_start_at_random_and_stay_in_the_range() {
        for random in [0u32, 1, 7, 65535, u32::MAX] {
            for probe in 0..100 {
                let port = port_candidate(1024, 1025, 80, random, probe);
                assert!((1024..=1025).contains(&port), "{port}");
            }
        }
        assert_eq!(port_candidate(1024, 65535, 80, 0, 0), 1024);
        assert_eq!(port_candidate(1024, 65535, 80, 5, 0), 1029);
    }

    #[test]
    fn probing_covers_a_small_range_entirely() {
        let mut seen = [false; 4];
        for probe in 0..4 {
            let port = port_candidate(5000, 5003, 1, 2, probe);
            seen[(port - 5000) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn full_range_wraps_without_overflow() {
        assert_eq!(port_candidate(1, 65535, 0, 65534, 1), 1);
        assert_eq!(port_candidate(0, 65535, 7, 65535, 1), 0);
    }

    #[test]
    fn preferred_ip_is_stable_and_in_range() {
        for count in 1..=8 {
            let index = preferred_ip_index([10, 0, 1, 10], count);
            assert!(index < count);
            assert_eq!(index, preferred_ip_index([10, 0, 1, 10], count));
        }
        assert_eq!(preferred_ip_index([10, 0, 1, 10], 0), 0);
    }
}
