//! NAT64 logic shared by the dataplane and the controller: the IPv4-embedded IPv6 address format
//! (RFC 6052), the ICMP type/code translation tables (RFC 7915 s4.2 and s5.2, used by stateful
//! NAT64 through RFC 6146 s3.7) and the MTU/DF arithmetic of the header translation.
//!
//! Everything here runs in the XDP program as well, so it follows the verifier's rules: no loops
//! (the six prefix lengths and the plateau table are written out), only constant indices into
//! fixed arrays, no 128-bit arithmetic and no division.

/// The Well-Known Prefix 64:ff9b::/96 (RFC 6052 s2.1).
pub const WELL_KNOWN_PREFIX: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Length of the Well-Known Prefix.
pub const WELL_KNOWN_PREFIX_LEN: u8 = 96;

/// Smallest MTU every IPv6 link supports (RFC 8200 s5).
pub const IPV6_MIN_MTU: u32 = 1280;
/// Smallest MTU every IPv4 link supports (RFC 791).
pub const IPV4_MIN_MTU: u16 = 68;
/// Size difference between the fixed IPv6 header (40) and an IPv4 header without options (20).
pub const HEADER_SIZE_DIFFERENCE: u16 = 20;
/// RFC 7915 s5.1: an IPv4 packet translated from an unfragmented IPv6 packet of at most this many
/// bytes leaves DF clear, because it still fits a 1280-byte IPv6 link after translation back.
pub const DF_THRESHOLD: u16 = 1260;

/// ICMPv4 message types (RFC 792 and the IANA registry) that the translation tables name.
pub mod icmp4_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DESTINATION_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ALTERNATE_HOST_ADDRESS: u8 = 6;
    pub const ECHO_REQUEST: u8 = 8;
    pub const ROUTER_ADVERTISEMENT: u8 = 9;
    pub const ROUTER_SOLICITATION: u8 = 10;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMP_REPLY: u8 = 14;
    pub const INFORMATION_REQUEST: u8 = 15;
    pub const INFORMATION_REPLY: u8 = 16;
    pub const ADDRESS_MASK_REQUEST: u8 = 17;
    pub const ADDRESS_MASK_REPLY: u8 = 18;
}

/// ICMPv6 message types (RFC 4443, RFC 4861, RFC 2710/3810) that the translation tables name.
pub mod icmp6_type {
    pub const DESTINATION_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const MLD_QUERY: u8 = 130;
    pub const MLD_REPORT: u8 = 131;
    pub const MLD_DONE: u8 = 132;
    pub const ROUTER_SOLICITATION: u8 = 133;
    pub const ROUTER_ADVERTISEMENT: u8 = 134;
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    pub const MLDV2_REPORT: u8 = 143;
}

/// A NAT64 prefix as the dataplane stores it: address bytes and length (one of 32, 40, 48, 56, 64
/// or 96). Bits of `addr` past `len` are ignored by every method; [`Nat64Prefix::new`] rejects
/// them so that a configuration error is reported instead of silently masked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat64Prefix {
    pub addr: [u8; 16],
    pub len: u8,
    pub _pad: [u8; 3],
}

/// Why [`Nat64Prefix::new`] refused a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat64PrefixError {
    /// RFC 6052 s2.2 allows only /32, /40, /48, /56, /64 and /96.
    BadLength(u8),
    /// The address has bits set past the prefix length.
    HostBitsSet,
    /// RFC 6052 s2.2: bits 64-71 (the "u" octet) must be zero, which a /96 prefix covers.
    NonZeroU,
}

impl core::fmt::Display for Nat64PrefixError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadLength(len) => write!(
                f,
                "NAT64 prefix length /{len} is not one of /32, /40, /48, /56, /64, /96 (RFC 6052 s2.2)"
            ),
            Self::HostBitsSet => write!(f, "NAT64 prefix has address bits set past its length"),
            Self::NonZeroU => write!(
                f,
                "NAT64 /96 prefix has a non-zero octet at bits 64-71, which RFC 6052 s2.2 reserves as zero"
            ),
        }
    }
}

/// The masks of the two 64-bit halves of an address that a prefix of `len` bits covers, or `None`
/// when RFC 6052 does not allow that length.
#[inline(always)]
const fn prefix_masks(len: u8) -> Option<(u64, u64)> {
    if !is_allowed_length(len) {
        return None;
    }
    // Computed rather than matched per length: the verifier then walks one path, not six, at
    // every use in the XDP program.
    let bits = len as u32;
    if bits <= 64 {
        Some((u64::MAX << (64 - bits), 0))
    } else {
        Some((u64::MAX, u64::MAX << (128 - bits)))
    }
}

/// RFC 6052 s2.2: /32, /40, /48, /56, /64 or /96.
#[inline(always)]
const fn is_allowed_length(len: u8) -> bool {
    (len >= 32 && len <= 64 && len & 7 == 0) || len == 96
}

/// The two big-endian 64-bit halves of an IPv6 address (two u64s instead of one u128, which BPF
/// cannot do arithmetic on).
#[inline(always)]
const fn halves(addr: &[u8; 16]) -> (u64, u64) {
    let high = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let low = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    (high, low)
}

#[inline(always)]
const fn join(high: u64, low: u64) -> [u8; 16] {
    let h = high.to_be_bytes();
    let l = low.to_be_bytes();
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

impl Nat64Prefix {
    /// The Well-Known Prefix 64:ff9b::/96.
    pub const WELL_KNOWN: Self = Self {
        addr: WELL_KNOWN_PREFIX,
        len: WELL_KNOWN_PREFIX_LEN,
        _pad: [0; 3],
    };

    /// A validated prefix (RFC 6052 s2.2): an allowed length, no bits past it, and for /96 a zero
    /// u octet. The controller uses this on configuration input.
    pub const fn new(addr: [u8; 16], len: u8) -> Result<Self, Nat64PrefixError> {
        let Some((high_mask, low_mask)) = prefix_masks(len) else {
            return Err(Nat64PrefixError::BadLength(len));
        };
        let (high, low) = halves(&addr);
        if high & !high_mask != 0 || low & !low_mask != 0 {
            return Err(Nat64PrefixError::HostBitsSet);
        }
        if addr[8] != 0 {
            return Err(Nat64PrefixError::NonZeroU);
        }
        Ok(Self {
            addr,
            len,
            _pad: [0; 3],
        })
    }

    /// Whether `addr` lies in the prefix. Always false for a length RFC 6052 does not allow (such a
    /// prefix cannot hold an IPv4 address, so nothing is "in" it for NAT64 purposes).
    #[inline(always)]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let Some((high_mask, low_mask)) = prefix_masks(self.len) else {
            return false;
        };
        let (prefix_high, prefix_low) = halves(&self.addr);
        let (high, low) = halves(addr);
        (high ^ prefix_high) & high_mask == 0 && (low ^ prefix_low) & low_mask == 0
    }

    /// RFC 6052 s2.2: `v4` embedded in the prefix, with the u octet (byte 8) and the suffix zero.
    /// `None` if the length is not one of the six.
    #[inline(always)]
    pub fn embed(&self, v4: [u8; 4]) -> Option<[u8; 16]> {
        let (high_mask, low_mask) = prefix_masks(self.len)?;
        let (high, low) = halves(&self.addr);
        let (mut high, mut low) = (high & high_mask, low & low_mask);
        let address = u32::from_be_bytes(v4) as u64;
        if self.len == 96 {
            low |= address;
        } else {
            // Up to /64 the address fills the rest of the first half (`in_high` bytes) and
            // continues after the u octet (byte 8) in the second half.
            let in_high = 8 - (self.len as u32 >> 3);
            high |= address >> (8 * (4 - in_high));
            let rest = address & ((1u64 << (8 * (4 - in_high))) - 1);
            low |= rest << (8 * (3 + in_high));
        }
        // The u octet reads zero whatever the stored prefix says.
        low &= !(0xffu64 << 56);
        Some(join(high, low))
    }

    /// The IPv4 address embedded in `addr` at this prefix's length (RFC 6052 s2.2, skipping byte
    /// 8). The u octet and the suffix are not checked: s2.2 asks a translator to extract the
    /// address even when they are non-zero. Whether `addr` is in the prefix is not checked either
    /// (see [`Nat64Prefix::contains`]). `None` for a bad length.
    #[inline(always)]
    pub fn extract(&self, addr: &[u8; 16]) -> Option<[u8; 4]> {
        if !is_allowed_length(self.len) {
            return None;
        }
        let (high, low) = halves(addr);
        if self.len == 96 {
            return Some((low as u32).to_be_bytes());
        }
        let in_high = 8 - (self.len as u32 >> 3);
        let first = (high & ((1u64 << (8 * in_high)) - 1)) << (8 * (4 - in_high));
        let rest = (low >> (8 * (3 + in_high))) & ((1u64 << (8 * (4 - in_high))) - 1);
        Some(((first | rest) as u32).to_be_bytes())
    }

    /// Whether this is 64:ff9b::/96.
    #[inline(always)]
    pub fn is_well_known(&self) -> bool {
        self.len == WELL_KNOWN_PREFIX_LEN && Self::WELL_KNOWN.contains(&self.addr)
    }

    /// RFC 6052 s3.1: whether `v4` may appear behind this prefix. With the Well-Known Prefix only
    /// global IPv4 addresses may; a translator drops packets whose address combines the two.
    #[inline(always)]
    pub fn may_embed(&self, v4: [u8; 4]) -> bool {
        !self.is_well_known() || is_global_ipv4(v4)
    }
}

/// Whether `v4` is inside `network`/`len` (`network` given as a host-order integer).
#[inline(always)]
const fn in_ipv4_block(v4: u32, network: u32, len: u32) -> bool {
    // len is a constant 1..=32 at every call site, so the shift never overflows.
    let mask = u32::MAX << (32 - len);
    v4 & mask == network
}

/// RFC 6052 s3.1 with RFC 5735 s3 and RFC 6598: whether an IPv4 address is global. The WKP must not
/// be used with the others: 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24,
/// 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4, 240/4 (which
/// includes 255.255.255.255). All of 192.0.0/24 counts as non-global, as in RFC 5735, which RFC
/// 6052 cites; the few globally reachable exceptions RFC 6890's registry later added there (e.g.
/// 192.0.0.9) are not worth a special case for a translator.
#[inline(always)]
pub const fn is_global_ipv4(v4: [u8; 4]) -> bool {
    let a = u32::from_be_bytes(v4);
    !(in_ipv4_block(a, 0x0000_0000, 8) // 0.0.0.0/8 "this network"
        || in_ipv4_block(a, 0x0a00_0000, 8) // 10.0.0.0/8 private
        || in_ipv4_block(a, 0x6440_0000, 10) // 100.64.0.0/10 shared (CGN)
        || in_ipv4_block(a, 0x7f00_0000, 8) // 127.0.0.0/8 loopback
        || in_ipv4_block(a, 0xa9fe_0000, 16) // 169.254.0.0/16 link local
        || in_ipv4_block(a, 0xac10_0000, 12) // 172.16.0.0/12 private
        || in_ipv4_block(a, 0xc000_0000, 24) // 192.0.0.0/24 IETF protocol assignments
        || in_ipv4_block(a, 0xc000_0200, 24) // 192.0.2.0/24 TEST-NET-1
        || in_ipv4_block(a, 0xc058_6300, 24) // 192.88.99.0/24 6to4 relay anycast
        || in_ipv4_block(a, 0xc0a8_0000, 16) // 192.168.0.0/16 private
        || in_ipv4_block(a, 0xc612_0000, 15) // 198.18.0.0/15 benchmarking
        || in_ipv4_block(a, 0xc633_6400, 24) // 198.51.100.0/24 TEST-NET-2
        || in_ipv4_block(a, 0xcb00_7100, 24) // 203.0.113.0/24 TEST-NET-3
        || in_ipv4_block(a, 0xe000_0000, 4) // 224.0.0.0/4 multicast
        || in_ipv4_block(a, 0xf000_0000, 4)) // 240.0.0.0/4 reserved, and broadcast
}

/// What the translator does with an ICMPv4 message (RFC 7915 s4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp4To6 {
    /// Echo request/reply: set the type; code, identifier and sequence are carried over.
    Query { icmp6_type: u8 },
    /// An error translated to this ICMPv6 type and code; the quoted packet is translated too.
    Error { icmp6_type: u8, icmp6_code: u8 },
    /// Fragmentation Needed becomes Packet Too Big (2/0); the MTU comes from
    /// [`ipv6_mtu_from_ipv4`].
    PacketTooBig,
    /// Parameter Problem (type 4) with this code and pointer.
    ParameterProblem { icmp6_code: u8, pointer: u32 },
    /// Silently dropped.
    Drop,
}

/// RFC 7915 s4.2: what becomes of an ICMPv4 message with this type and code. `pointer` is byte 4
/// of the ICMPv4 header, read only for Parameter Problem.
#[inline(always)]
pub fn icmp4_to_icmp6(icmp_type: u8, code: u8, pointer: u8) -> Icmp4To6 {
    use icmp4_type as v4;
    use icmp6_type as v6;
    match (icmp_type, code) {
        // Echo and Echo Reply: adjust the type. The RFC puts no condition on the code, so any code
        // is translated and carried over unchanged.
        (v4::ECHO_REQUEST, _) => Icmp4To6::Query {
            icmp6_type: v6::ECHO_REQUEST,
        },
        (v4::ECHO_REPLY, _) => Icmp4To6::Query {
            icmp6_type: v6::ECHO_REPLY,
        },

        // Destination Unreachable -> ICMPv6 Destination Unreachable (1), per code:
        // 0, 1 (net, host), 5 (source route failed), 6, 7, 8 (unknown net/host, isolated),
        // 11, 12 (net/host unreachable for TOS) -> 0 (no route to destination).
        (v4::DESTINATION_UNREACHABLE, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => Icmp4To6::Error {
            icmp6_type: v6::DESTINATION_UNREACHABLE,
            icmp6_code: 0,
        },
        // 2 (protocol unreachable) -> Parameter Problem 1 (unrecognized Next Header), pointing at
        // the Next Header field (byte 6 of the IPv6 header).
        (v4::DESTINATION_UNREACHABLE, 2) => Icmp4To6::ParameterProblem {
            icmp6_code: 1,
            pointer: 6,
        },
        // 3 (port unreachable) -> 4 (port unreachable).
        (v4::DESTINATION_UNREACHABLE, 3) => Icmp4To6::Error {
            icmp6_type: v6::DESTINATION_UNREACHABLE,
            icmp6_code: 4,
        },
        // 4 (fragmentation needed and DF set) -> Packet Too Big.
        (v4::DESTINATION_UNREACHABLE, 4) => Icmp4To6::PacketTooBig,
        // 9, 10 (net/host administratively prohibited), 13 (communication administratively
        // prohibited), 15 (precedence cutoff) -> 1 (administratively prohibited).
        (v4::DESTINATION_UNREACHABLE, 9 | 10 | 13 | 15) => Icmp4To6::Error {
            icmp6_type: v6::DESTINATION_UNREACHABLE,
            icmp6_code: 1,
        },
        // 14 (host precedence violation): silently drop.
        (v4::DESTINATION_UNREACHABLE, 14) => Icmp4To6::Drop,
        // Other codes: silently drop.
        (v4::DESTINATION_UNREACHABLE, 16..=u8::MAX) => Icmp4To6::Drop,

        // Time Exceeded -> ICMPv6 Time Exceeded (3), code unchanged.
        (v4::TIME_EXCEEDED, _) => Icmp4To6::Error {
            icmp6_type: v6::TIME_EXCEEDED,
            icmp6_code: code,
        },

        // Parameter Problem 0 (pointer indicates the error) and 2 (bad length) -> Parameter
        // Problem 0 with the pointer moved to the matching IPv6 field; a field without one drops.
        (v4::PARAMETER_PROBLEM, 0 | 2) => match ipv6_pointer_from_ipv4(pointer) {
            Some(pointer) => Icmp4To6::ParameterProblem {
                icmp6_code: 0,
                pointer,
            },
            None => Icmp4To6::Drop,
        },
        // 1 (missing a required option): silently drop.
        (v4::PARAMETER_PROBLEM, 1) => Icmp4To6::Drop,
        // Other codes: silently drop.
        (v4::PARAMETER_PROBLEM, 3..=u8::MAX) => Icmp4To6::Drop,

        // Source Quench (obsolete in ICMPv6), Redirect (single hop), Alternate Host Address:
        // silently drop.
        (v4::SOURCE_QUENCH | v4::REDIRECT | v4::ALTERNATE_HOST_ADDRESS, _) => Icmp4To6::Drop,
        // Router Advertisement/Solicitation (single hop): silently drop.
        (v4::ROUTER_ADVERTISEMENT | v4::ROUTER_SOLICITATION, _) => Icmp4To6::Drop,
        // Timestamp, Information (obsolete) and Address Mask requests and replies: silently drop.
        (
            v4::TIMESTAMP
            | v4::TIMESTAMP_REPLY
            | v4::INFORMATION_REQUEST
            | v4::INFORMATION_REPLY
            | v4::ADDRESS_MASK_REQUEST
            | v4::ADDRESS_MASK_REPLY,
            _,
        ) => Icmp4To6::Drop,
        // Any other type: silently drop.
        (1 | 2 | 7 | 19..=u8::MAX, _) => Icmp4To6::Drop,
    }
}

/// RFC 7915 s4.2 Figure 3: the IPv6 header offset that corresponds to an IPv4 Parameter Problem
/// pointer, or `None` where the IPv4 field has no IPv6 counterpart (identification, flags,
/// fragment offset, header checksum) or the pointer lies past the fixed IPv4 header.
#[inline(always)]
pub const fn ipv6_pointer_from_ipv4(pointer: u8) -> Option<u32> {
    match pointer {
        0 => Some(0),         // Version/IHL -> Version/Traffic Class
        1 => Some(1),         // Type of Service -> Traffic Class/Flow Label
        2 | 3 => Some(4),     // Total Length -> Payload Length
        4..=7 => None,        // Identification, Flags/Fragment Offset
        8 => Some(7),         // Time to Live -> Hop Limit
        9 => Some(6),         // Protocol -> Next Header
        10 | 11 => None,      // Header Checksum
        12..=15 => Some(8),   // Source Address
        16..=19 => Some(24),  // Destination Address
        20..=u8::MAX => None, // options or beyond: not listed
    }
}

/// What the translator does with an ICMPv6 message (RFC 7915 s5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp6To4 {
    /// Echo request/reply: set the type; code, identifier and sequence are carried over.
    Query { icmp4_type: u8 },
    /// An error translated to this ICMPv4 type and code; the quoted packet is translated too.
    Error { icmp4_type: u8, icmp4_code: u8 },
    /// Packet Too Big becomes Fragmentation Needed (3/4); the MTU comes from
    /// [`ipv4_mtu_from_ipv6`].
    FragmentationNeeded,
    /// Parameter Problem 12/0 with this pointer.
    ParameterProblem { pointer: u8 },
    /// Silently dropped.
    Drop,
}

/// RFC 7915 s5.2: what becomes of an ICMPv6 message with this type and code. `pointer` is the
/// 32-bit Parameter Problem pointer, read only for Parameter Problem.
#[inline(always)]
pub fn icmp6_to_icmp4(icmp_type: u8, code: u8, pointer: u32) -> Icmp6To4 {
    use icmp4_type as v4;
    use icmp6_type as v6;
    match (icmp_type, code) {
        // Echo Request and Echo Reply: adjust the type (the RFC puts no condition on the code).
        (v6::ECHO_REQUEST, _) => Icmp6To4::Query {
            icmp4_type: v4::ECHO_REQUEST,
        },
        (v6::ECHO_REPLY, _) => Icmp6To4::Query {
            icmp4_type: v4::ECHO_REPLY,
        },

        // Destination Unreachable -> ICMPv4 Destination Unreachable (3), per code:
        // 0 (no route), 2 (beyond scope of source address), 3 (address unreachable)
        // -> 1 (host unreachable).
        (v6::DESTINATION_UNREACHABLE, 0 | 2 | 3) => Icmp6To4::Error {
            icmp4_type: v4::DESTINATION_UNREACHABLE,
            icmp4_code: 1,
        },
        // 1 (administratively prohibited) -> 10 (host administratively prohibited). Some
        // translators use 13 here; RFC 7915 says 10.
        (v6::DESTINATION_UNREACHABLE, 1) => Icmp6To4::Error {
            icmp4_type: v4::DESTINATION_UNREACHABLE,
            icmp4_code: 10,
        },
        // 4 (port unreachable) -> 3 (port unreachable).
        (v6::DESTINATION_UNREACHABLE, 4) => Icmp6To4::Error {
            icmp4_type: v4::DESTINATION_UNREACHABLE,
            icmp4_code: 3,
        },
        // "Other Code values: Silently drop." RFC 7915 lists codes 0-4 only, so 5 (source address
        // failed ingress/egress policy, RFC 4443) and 6 (reject route) are dropped as well rather
        // than guessed into host unreachable.
        (v6::DESTINATION_UNREACHABLE, 5..=u8::MAX) => Icmp6To4::Drop,

        // Packet Too Big -> Fragmentation Needed (3/4). RFC 4443 s3.2: the code is set to 0 by the
        // originator and ignored by the receiver, so it is not checked.
        (v6::PACKET_TOO_BIG, _) => Icmp6To4::FragmentationNeeded,

        // Time Exceeded -> ICMPv4 Time Exceeded (11), code unchanged.
        (v6::TIME_EXCEEDED, _) => Icmp6To4::Error {
            icmp4_type: v4::TIME_EXCEEDED,
            icmp4_code: code,
        },

        // Parameter Problem 0 (erroneous header field) -> 12/0 with the pointer moved to the
        // matching IPv4 field; a field without one drops.
        (v6::PARAMETER_PROBLEM, 0) => match ipv4_pointer_from_ipv6(pointer) {
            Some(pointer) => Icmp6To4::ParameterProblem { pointer },
            None => Icmp6To4::Drop,
        },
        // 1 (unrecognized Next Header) -> 3/2 (protocol unreachable).
        (v6::PARAMETER_PROBLEM, 1) => Icmp6To4::Error {
            icmp4_type: v4::DESTINATION_UNREACHABLE,
            icmp4_code: 2,
        },
        // 2 (unrecognized IPv6 option): silently drop.
        (v6::PARAMETER_PROBLEM, 2) => Icmp6To4::Drop,
        // Other codes (3 and up, e.g. RFC 7112's incomplete header chain): silently drop.
        (v6::PARAMETER_PROBLEM, 3..=u8::MAX) => Icmp6To4::Drop,

        // MLD (single hop): silently drop.
        (v6::MLD_QUERY | v6::MLD_REPORT | v6::MLD_DONE | v6::MLDV2_REPORT, _) => Icmp6To4::Drop,
        // Neighbor Discovery (single hop): silently drop.
        (
            v6::ROUTER_SOLICITATION
            | v6::ROUTER_ADVERTISEMENT
            | v6::NEIGHBOR_SOLICITATION
            | v6::NEIGHBOR_ADVERTISEMENT
            | v6::REDIRECT,
            _,
        ) => Icmp6To4::Drop,
        // Unknown error messages (types below 128): silently drop.
        (0 | 5..=127, _) => Icmp6To4::Drop,
        // Unknown informational messages: silently drop.
        (138..=142 | 144..=u8::MAX, _) => Icmp6To4::Drop,
    }
}

/// RFC 7915 s5.2 Figure 6: the IPv4 header offset that corresponds to an ICMPv6 Parameter Problem
/// pointer, or `None` for the Flow Label bytes (no IPv4 counterpart) and for pointers past the
/// fixed IPv6 header.
#[inline(always)]
pub const fn ipv4_pointer_from_ipv6(pointer: u32) -> Option<u8> {
    match pointer {
        0 => Some(0),          // Version/Traffic Class -> Version/IHL
        1 => Some(1),          // Traffic Class/Flow Label -> Type of Service
        2 | 3 => None,         // Flow Label
        4 | 5 => Some(2),      // Payload Length -> Total Length
        6 => Some(9),          // Next Header -> Protocol
        7 => Some(8),          // Hop Limit -> Time to Live
        8..=23 => Some(12),    // Source Address
        24..=39 => Some(16),   // Destination Address
        40..=u32::MAX => None, // extension headers or payload: not listed
    }
}

/// RFC 1191 s7: the largest plateau of the MTU table strictly below `length`, and 68 (the IPv4
/// minimum) when no plateau is below it. The table: 65535, 32000, 17914, 8166, 4352, 2002, 1492,
/// 1006, 508, 296, 68.
#[inline(always)]
pub const fn plateau_below(length: u16) -> u16 {
    if length > 32000 {
        32000
    } else if length > 17914 {
        17914
    } else if length > 8166 {
        8166
    } else if length > 4352 {
        4352
    } else if length > 2002 {
        2002
    } else if length > 1492 {
        1492
    } else if length > 1006 {
        1006
    } else if length > 508 {
        508
    } else if length > 296 {
        296
    } else {
        IPV4_MIN_MTU
    }
}

/// RFC 7915 s4.2: the Packet Too Big MTU for an ICMPv4 Fragmentation Needed: MTU4 + 20, or, when
/// the router left MTU4 at 0 (pre-RFC 1191), the plateau below the quoted packet's Total Length
/// plus 20. Never below 1280: RFC 8021 deprecates the atomic fragments a smaller value would ask for,
/// and IPv6 hosts ignore it anyway. The caller still takes the minimum with its own next-hop MTUs.
#[inline(always)]
pub const fn ipv6_mtu_from_ipv4(mtu4: u16, quoted_total_length: u16) -> u32 {
    let ipv4_mtu = if mtu4 == 0 {
        plateau_below(quoted_total_length)
    } else {
        mtu4
    };
    let mtu = ipv4_mtu as u32 + HEADER_SIZE_DIFFERENCE as u32;
    if mtu < IPV6_MIN_MTU {
        IPV6_MIN_MTU
    } else {
        mtu
    }
}

/// RFC 7915 s5.2: the Fragmentation Needed MTU for an ICMPv6 Packet Too Big: MTU6 - 20, clamped to
/// 68..=65535 (the field is 16 bits, and no IPv4 link is smaller than 68). The caller still takes
/// the minimum with its own next-hop MTUs.
#[inline(always)]
pub const fn ipv4_mtu_from_ipv6(mtu6: u32) -> u16 {
    let mtu = mtu6.saturating_sub(HEADER_SIZE_DIFFERENCE as u32);
    if mtu < IPV4_MIN_MTU as u32 {
        IPV4_MIN_MTU
    } else if mtu > u16::MAX as u32 {
        u16::MAX
    } else {
        mtu as u16
    }
}

/// RFC 7915 s5.1: the DF bit of the IPv4 packet translated from an unfragmented IPv6 packet: set
/// when the IPv4 packet is longer than 1260 bytes, so that path MTU discovery keeps working; left
/// clear for smaller packets so that an IPv4 link below 1280 may still fragment them.
#[inline(always)]
pub const fn translated_df(ipv4_total_length: u16) -> bool {
    ipv4_total_length > DF_THRESHOLD
}

const _: () = assert!(core::mem::size_of::<Nat64Prefix>() == 20);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: `#[repr(C)]`, byte arrays and integers only, padding explicit.
    unsafe impl aya::Pod for Nat64Prefix {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    const VECTORS: &str = include_str!("../tests/data/rfc6052-vectors.json");

    struct Vector {
        prefix: Nat64Prefix,
        v4: [u8; 4],
        v6: [u8; 16],
        source: String,
    }

    fn prefix(text: &str) -> Nat64Prefix {
        let (addr, len) = text.split_once('/').expect("prefix has a length");
        let addr: Ipv6Addr = addr.parse().expect("prefix address");
        Nat64Prefix::new(addr.octets(), len.parse().expect("prefix length")).expect("valid prefix")
    }

    fn vectors() -> Vec<Vector> {
        let json: serde_json::Value = serde_json::from_str(VECTORS).expect("vectors parse");
        let field = |entry: &serde_json::Value, name: &str| -> String {
            entry[name]
                .as_str()
                .unwrap_or_else(|| panic!("vector field {name}"))
                .into()
        };
        let vectors: Vec<Vector> = json
            .as_array()
            .expect("vectors are a list")
            .iter()
            .map(|entry| Vector {
                prefix: prefix(&field(entry, "prefix")),
                v4: field(entry, "ipv4")
                    .parse::<Ipv4Addr>()
                    .expect("ipv4")
                    .octets(),
                v6: field(entry, "ipv6")
                    .parse::<Ipv6Addr>()
                    .expect("ipv6")
                    .octets(),
                source: field(entry, "source"),
            })
            .collect();
        assert_eq!(vectors.len(), 7, "RFC 6052 s2.4 has 6 + 1 examples");
        vectors
    }

    #[test]
    fn embeds_and_extracts_every_rfc6052_vector() {
        for vector in vectors() {
            let context = format!("{} /{}", vector.source, vector.prefix.len);
            assert_eq!(
                vector.prefix.embed(vector.v4),
                Some(vector.v6),
                "embed {context}"
            );
            assert_eq!(
                vector.prefix.extract(&vector.v6),
                Some(vector.v4),
                "extract {context}"
            );
            assert!(vector.prefix.contains(&vector.v6), "contains {context}");
        }
    }

    #[test]
    fn well_known_prefix_is_recognised() {
        let wkp = prefix("64:ff9b::/96");
        assert_eq!(wkp, Nat64Prefix::WELL_KNOWN);
        assert!(wkp.is_well_known());
        assert!(!prefix("64:ff9b::/64").is_well_known());
        assert!(!prefix("64:ff9b:1::/96").is_well_known());
        assert!(!prefix("2001:db8::/96").is_well_known());
    }

    #[test]
    fn extracts_despite_nonzero_u_octet_and_suffix() {
        for vector in vectors() {
            let mut dirty = vector.v6;
            dirty[8] = 0xab;
            // Every byte after the embedded address is suffix; fill them all.
            let suffix_start = match vector.prefix.len {
                32 => 9,
                40 => 10,
                48 => 11,
                56 => 12,
                64 => 13,
                _ => 16,
            };
            for byte in dirty.iter_mut().skip(suffix_start) {
                *byte = 0xee;
            }
            assert_eq!(
                vector.prefix.extract(&dirty),
                Some(vector.v4),
                "{} /{}",
                vector.source,
                vector.prefix.len
            );
        }
    }

    #[test]
    fn every_length_round_trips() {
        let addresses = [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [192, 0, 2, 33],
            [1, 2, 3, 4],
            [203, 0, 113, 200],
        ];
        for len in [32, 40, 48, 56, 64, 96] {
            let mut addr = [0u8; 16];
            addr[0] = 0x20;
            addr[1] = 0x01;
            addr[2] = 0x0d;
            addr[3] = 0xb8;
            let prefix = Nat64Prefix::new(addr, len).expect("valid");
            for v4 in addresses {
                let v6 = prefix.embed(v4).expect("embed");
                assert_eq!(v6[8], 0, "u octet /{len}");
                assert!(prefix.contains(&v6), "/{len} {v4:?}");
                assert_eq!(prefix.extract(&v6), Some(v4), "/{len} {v4:?}");
            }
        }
    }

    #[test]
    fn bad_lengths_embed_and_extract_nothing() {
        for len in [0u8, 1, 31, 33, 63, 65, 95, 97, 128, 255] {
            let prefix = Nat64Prefix {
                addr: WELL_KNOWN_PREFIX,
                len,
                _pad: [0; 3],
            };
            assert_eq!(prefix.embed([1, 2, 3, 4]), None, "/{len}");
            assert_eq!(prefix.extract(&WELL_KNOWN_PREFIX), None, "/{len}");
            assert!(!prefix.contains(&WELL_KNOWN_PREFIX), "/{len}");
            assert_eq!(
                Nat64Prefix::new(WELL_KNOWN_PREFIX, len),
                Err(Nat64PrefixError::BadLength(len))
            );
        }
    }

    #[test]
    fn new_rejects_host_bits_and_a_nonzero_u_octet() {
        let with_host_bits: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            Nat64Prefix::new(with_host_bits.octets(), 64),
            Err(Nat64PrefixError::HostBitsSet)
        );
        let with_u: Ipv6Addr = "2001:db8:0:0:100::".parse().unwrap();
        assert_eq!(
            Nat64Prefix::new(with_u.octets(), 96),
            Err(Nat64PrefixError::NonZeroU)
        );
        // Past /64 the u octet is host bits.
        assert_eq!(
            Nat64Prefix::new(with_u.octets(), 64),
            Err(Nat64PrefixError::HostBitsSet)
        );
        assert!(
            Nat64Prefix::new(with_u.octets(), 96)
                .unwrap_err()
                .to_string()
                .contains("64-71")
        );
    }

    #[test]
    fn embed_ignores_stray_bits_in_a_stored_prefix() {
        let mut addr = [0xffu8; 16];
        addr[0] = 0x20;
        let sloppy = Nat64Prefix {
            addr,
            len: 40,
            _pad: [0; 3],
        };
        let v6 = sloppy.embed([10, 20, 30, 40]).unwrap();
        assert_eq!(
            v6,
            [
                0x20, 0xff, 0xff, 0xff, 0xff, 10, 20, 30, 0, 40, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn contains_stops_at_the_prefix_boundary() {
        for (text, last_prefix_byte) in [
            ("2001:db8::/32", 3usize),
            ("2001:db8:100::/40", 4),
            ("2001:db8:122::/48", 5),
            ("2001:db8:122:300::/56", 6),
            ("2001:db8:122:344::/64", 7),
            ("2001:db8:122:344::/96", 11),
        ] {
            let prefix = prefix(text);
            let inside = prefix.addr;
            assert!(prefix.contains(&inside), "{text}");
            // The first byte past the prefix may be anything.
            let mut past = inside;
            past[last_prefix_byte + 1] ^= 0xff;
            assert!(prefix.contains(&past), "{text} first byte past");
            let mut all_ones_past = inside;
            for byte in all_ones_past.iter_mut().skip(last_prefix_byte + 1) {
                *byte = 0xff;
            }
            assert!(prefix.contains(&all_ones_past), "{text} all host bits");
            // The last bit of the prefix may not.
            let mut last_bit = inside;
            last_bit[last_prefix_byte] ^= 0x01;
            assert!(!prefix.contains(&last_bit), "{text} last prefix bit");
            let mut first_bit = inside;
            first_bit[0] ^= 0x80;
            assert!(!prefix.contains(&first_bit), "{text} first prefix bit");
        }
    }

    #[test]
    fn global_ipv4_ranges() {
        // (first, last) of every special-purpose block, and the addresses just outside it.
        let special: [([u8; 4], [u8; 4]); 15] = [
            ([0, 0, 0, 0], [0, 255, 255, 255]),
            ([10, 0, 0, 0], [10, 255, 255, 255]),
            ([100, 64, 0, 0], [100, 127, 255, 255]),
            ([127, 0, 0, 0], [127, 255, 255, 255]),
            ([169, 254, 0, 0], [169, 254, 255, 255]),
            ([172, 16, 0, 0], [172, 31, 255, 255]),
            ([192, 0, 0, 0], [192, 0, 0, 255]),
            ([192, 0, 2, 0], [192, 0, 2, 255]),
            ([192, 88, 99, 0], [192, 88, 99, 255]),
            ([192, 168, 0, 0], [192, 168, 255, 255]),
            ([198, 18, 0, 0], [198, 19, 255, 255]),
            ([198, 51, 100, 0], [198, 51, 100, 255]),
            ([203, 0, 113, 0], [203, 0, 113, 255]),
            ([224, 0, 0, 0], [239, 255, 255, 255]),
            ([240, 0, 0, 0], [255, 255, 255, 255]),
        ];
        for (first, last) in special {
            assert!(!is_global_ipv4(first), "{first:?}");
            assert!(!is_global_ipv4(last), "{last:?}");
            let before = u32::from_be_bytes(first).wrapping_sub(1).to_be_bytes();
            let after = u32::from_be_bytes(last).wrapping_add(1).to_be_bytes();
            // Neighbours that are themselves special (0.0.0.0 - 1, the 192.0.x blocks, 224/4 next
            // to 240/4, wrap-around) are covered by their own entries.
            let neighbour_special = |a: [u8; 4]| {
                special.iter().any(|(f, l)| {
                    (u32::from_be_bytes(*f)..=u32::from_be_bytes(*l))
                        .contains(&u32::from_be_bytes(a))
                })
            };
            if !neighbour_special(before) {
                assert!(is_global_ipv4(before), "{before:?} before {first:?}");
            }
            if !neighbour_special(after) {
                assert!(is_global_ipv4(after), "{after:?} after {last:?}");
            }
        }
        for global in [
            [1, 1, 1, 1],
            [8, 8, 8, 8],
            [100, 63, 255, 255],
            [100, 128, 0, 0],
            [172, 15, 255, 255],
            [172, 32, 0, 0],
            [192, 0, 1, 1],
            [198, 17, 255, 255],
            [198, 20, 0, 0],
            [223, 255, 255, 255],
        ] {
            assert!(is_global_ipv4(global), "{global:?}");
        }
    }

    #[test]
    fn well_known_prefix_embeds_only_global_addresses() {
        let wkp = Nat64Prefix::WELL_KNOWN;
        // RFC 6052's own Table 2 example (192.0.2.33, documentation space) is not global.
        assert!(!wkp.may_embed([192, 0, 2, 33]));
        assert!(!wkp.may_embed([10, 1, 2, 3]));
        assert!(wkp.may_embed([8, 8, 8, 8]));
        let network_specific = prefix("2001:db8:122:344::/96");
        assert!(network_specific.may_embed([10, 1, 2, 3]));
    }

    fn error4(icmp6_type: u8, icmp6_code: u8) -> Icmp4To6 {
        Icmp4To6::Error {
            icmp6_type,
            icmp6_code,
        }
    }

    #[test]
    fn icmpv4_to_icmpv6_table() {
        use Icmp4To6::*;
        let table: Vec<(u8, u8, Icmp4To6)> = vec![
            (8, 0, Query { icmp6_type: 128 }),
            (0, 0, Query { icmp6_type: 129 }),
            (3, 0, error4(1, 0)),
            (3, 1, error4(1, 0)),
            (
                3,
                2,
                ParameterProblem {
                    icmp6_code: 1,
                    pointer: 6,
                },
            ),
            (3, 3, error4(1, 4)),
            (3, 4, PacketTooBig),
            (3, 5, error4(1, 0)),
            (3, 6, error4(1, 0)),
            (3, 7, error4(1, 0)),
            (3, 8, error4(1, 0)),
            (3, 9, error4(1, 1)),
            (3, 10, error4(1, 1)),
            (3, 11, error4(1, 0)),
            (3, 12, error4(1, 0)),
            (3, 13, error4(1, 1)),
            (3, 14, Drop),
            (3, 15, error4(1, 1)),
            (3, 16, Drop),
            (3, 255, Drop),
            (11, 0, error4(3, 0)),
            (11, 1, error4(3, 1)),
            (12, 1, Drop),
            (12, 3, Drop),
            (4, 0, Drop),
            (5, 0, Drop),
            (5, 1, Drop),
            (6, 0, Drop),
            (9, 0, Drop),
            (10, 0, Drop),
            (13, 0, Drop),
            (14, 0, Drop),
            (15, 0, Drop),
            (16, 0, Drop),
            (17, 0, Drop),
            (18, 0, Drop),
            (1, 0, Drop),
            (2, 0, Drop),
            (7, 0, Drop),
            (19, 0, Drop),
            (42, 0, Drop),
            (255, 0, Drop),
        ];
        for (icmp_type, code, expected) in table {
            assert_eq!(
                icmp4_to_icmp6(icmp_type, code, 0),
                expected,
                "ICMPv4 {icmp_type}/{code}"
            );
        }
        // Only the translated types depend on anything; the rest drop whatever the code.
        for icmp_type in 0..=u8::MAX {
            if matches!(icmp_type, 0 | 3 | 8 | 11 | 12) {
                continue;
            }
            for code in 0..=u8::MAX {
                assert_eq!(
                    icmp4_to_icmp6(icmp_type, code, 0),
                    Drop,
                    "{icmp_type}/{code}"
                );
            }
        }
    }

    #[test]
    fn icmpv4_parameter_problem_pointers() {
        // RFC 7915 Figure 3, pointer by pointer; `None` drops.
        let expected: [Option<u32>; 21] = [
            Some(0),  // 0 version/IHL
            Some(1),  // 1 type of service
            Some(4),  // 2 total length
            Some(4),  // 3
            None,     // 4 identification
            None,     // 5
            None,     // 6 flags
            None,     // 7 fragment offset
            Some(7),  // 8 TTL
            Some(6),  // 9 protocol
            None,     // 10 checksum
            None,     // 11
            Some(8),  // 12 source
            Some(8),  // 13
            Some(8),  // 14
            Some(8),  // 15
            Some(24), // 16 destination
            Some(24), // 17
            Some(24), // 18
            Some(24), // 19
            None,     // 20 options
        ];
        for (pointer, expected) in expected.iter().enumerate() {
            let translated = match expected {
                Some(pointer6) => Icmp4To6::ParameterProblem {
                    icmp6_code: 0,
                    pointer: *pointer6,
                },
                None => Icmp4To6::Drop,
            };
            for code in [0, 2] {
                assert_eq!(
                    icmp4_to_icmp6(12, code, pointer as u8),
                    translated,
                    "12/{code} pointer {pointer}"
                );
            }
            assert_eq!(icmp4_to_icmp6(12, 1, pointer as u8), Icmp4To6::Drop);
        }
        assert_eq!(ipv6_pointer_from_ipv4(255), None);
    }

    fn error6(icmp4_type: u8, icmp4_code: u8) -> Icmp6To4 {
        Icmp6To4::Error {
            icmp4_type,
            icmp4_code,
        }
    }

    #[test]
    fn icmpv6_to_icmpv4_table() {
        use Icmp6To4::*;
        let table: Vec<(u8, u8, Icmp6To4)> = vec![
            (128, 0, Query { icmp4_type: 8 }),
            (129, 0, Query { icmp4_type: 0 }),
            (1, 0, error6(3, 1)),
            (1, 1, error6(3, 10)),
            (1, 2, error6(3, 1)),
            (1, 3, error6(3, 1)),
            (1, 4, error6(3, 3)),
            // Not in RFC 7915's list: dropped (see icmp6_to_icmp4).
            (1, 5, Drop),
            (1, 6, Drop),
            (1, 7, Drop),
            (1, 255, Drop),
            (2, 0, FragmentationNeeded),
            (3, 0, error6(11, 0)),
            (3, 1, error6(11, 1)),
            (4, 1, error6(3, 2)),
            (4, 2, Drop),
            (4, 3, Drop),
            (4, 255, Drop),
            (130, 0, Drop),
            (131, 0, Drop),
            (132, 0, Drop),
            (133, 0, Drop),
            (134, 0, Drop),
            (135, 0, Drop),
            (136, 0, Drop),
            (137, 0, Drop),
            (143, 0, Drop),
            (0, 0, Drop),
            (5, 0, Drop),
            (127, 0, Drop),
            (138, 0, Drop),
            (200, 0, Drop),
            (255, 0, Drop),
        ];
        for (icmp_type, code, expected) in table {
            assert_eq!(
                icmp6_to_icmp4(icmp_type, code, 0),
                expected,
                "ICMPv6 {icmp_type}/{code}"
            );
        }
        for icmp_type in 0..=u8::MAX {
            if matches!(icmp_type, 1..=4 | 128 | 129) {
                continue;
            }
            for code in 0..=u8::MAX {
                assert_eq!(
                    icmp6_to_icmp4(icmp_type, code, 0),
                    Drop,
                    "{icmp_type}/{code}"
                );
            }
        }
    }

    #[test]
    fn icmpv6_parameter_problem_pointers() {
        // RFC 7915 Figure 6, pointer by pointer; `None` drops.
        let mut expected: [Option<u8>; 41] = [None; 41];
        expected[0] = Some(0); // version/traffic class
        expected[1] = Some(1); // traffic class/flow label
        // 2, 3: flow label, none
        expected[4] = Some(2); // payload length
        expected[5] = Some(2);
        expected[6] = Some(9); // next header -> protocol
        expected[7] = Some(8); // hop limit -> TTL
        for slot in &mut expected[8..=23] {
            *slot = Some(12); // source
        }
        for slot in &mut expected[24..=39] {
            *slot = Some(16); // destination
        }
        // 40: past the fixed header, none
        for (pointer, expected) in expected.iter().enumerate() {
            let translated = match expected {
                Some(pointer4) => Icmp6To4::ParameterProblem { pointer: *pointer4 },
                None => Icmp6To4::Drop,
            };
            assert_eq!(
                icmp6_to_icmp4(4, 0, pointer as u32),
                translated,
                "4/0 pointer {pointer}"
            );
        }
        for pointer in [41, 255, 256, 0x1_0000, u32::MAX] {
            assert_eq!(icmp6_to_icmp4(4, 0, pointer), Icmp6To4::Drop, "{pointer}");
        }
        // The pointer only matters for code 0.
        assert_eq!(icmp6_to_icmp4(4, 1, 12345), error6(3, 2));
    }

    #[test]
    fn plateaus() {
        assert_eq!(plateau_below(0), 68);
        assert_eq!(plateau_below(68), 68);
        assert_eq!(plateau_below(296), 68);
        assert_eq!(plateau_below(297), 296);
        assert_eq!(plateau_below(576), 508);
        assert_eq!(plateau_below(1006), 508);
        assert_eq!(plateau_below(1007), 1006);
        assert_eq!(plateau_below(1500), 1492);
        assert_eq!(plateau_below(2002), 1492);
        assert_eq!(plateau_below(4353), 4352);
        assert_eq!(plateau_below(9000), 8166);
        assert_eq!(plateau_below(17915), 17914);
        assert_eq!(plateau_below(32000), 17914);
        assert_eq!(plateau_below(32001), 32000);
        assert_eq!(plateau_below(65535), 32000);
    }

    #[test]
    fn mtu_arithmetic() {
        // Fragmentation Needed -> Packet Too Big.
        assert_eq!(ipv6_mtu_from_ipv4(1400, 1500), 1420);
        assert_eq!(ipv6_mtu_from_ipv4(1260, 1500), 1280);
        // 1240 + 20 is below the IPv6 minimum.
        assert_eq!(ipv6_mtu_from_ipv4(1240, 1500), 1280);
        assert_eq!(ipv6_mtu_from_ipv4(68, 1500), 1280);
        // MTU 0: the plateau below the quoted Total Length, + 20.
        assert_eq!(ipv6_mtu_from_ipv4(0, 1500), 1492 + 20);
        assert_eq!(ipv6_mtu_from_ipv4(0, 9000), 8166 + 20);
        assert_eq!(ipv6_mtu_from_ipv4(0, 1400), 1280);
        assert_eq!(ipv6_mtu_from_ipv4(0, 0), 1280);
        assert_eq!(ipv6_mtu_from_ipv4(65535, 0), 65555);
        // Packet Too Big -> Fragmentation Needed.
        assert_eq!(ipv4_mtu_from_ipv6(1280), 1260);
        assert_eq!(ipv4_mtu_from_ipv6(1500), 1480);
        assert_eq!(ipv4_mtu_from_ipv6(65555), 65535);
        assert_eq!(ipv4_mtu_from_ipv6(65556), 65535);
        assert_eq!(ipv4_mtu_from_ipv6(u32::MAX), 65535);
        assert_eq!(ipv4_mtu_from_ipv6(88), 68);
        assert_eq!(ipv4_mtu_from_ipv6(50), 68);
        assert_eq!(ipv4_mtu_from_ipv6(0), 68);
    }

    #[test]
    fn df_threshold() {
        assert!(!translated_df(0));
        assert!(!translated_df(1260));
        assert!(translated_df(1261));
        assert!(translated_df(1500));
        assert!(translated_df(u16::MAX));
    }
}
