//! The NAT gateway, IPv4 to IPv4 (NAT44): private sources share the gateway's public addresses.
//!
//! A session is two `CONNTRACK` entries made together (see `gateway_common::nat`): `NAT44_OUT`
//! keyed by the private endpoint and the destination (state, counters, the public endpoint) and
//! `NAT44_IN` keyed by the public endpoint and the destination (the private endpoint). Replies
//! find `NAT44_IN`, then check that `NAT44_OUT` is live and points back, so a stale half never
//! lets anything in. Filtering is address-and-port dependent: only the destination a session was
//! made for gets in. Endpoint-independent mapping keeps one public endpoint per private endpoint
//! in `NAT_MAPPINGS`; endpoint-dependent mapping reserves ports per destination.
//!
//! Keys and entries are built in a per-CPU work area ([`NatWork`]), never on the stack, and every
//! cold step (allocation, ICMP errors, fragments, the RST) is out of line.

use aya_ebpf::cty::c_void;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, xdp_action},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_loop, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use gateway_common::{
    Counter,
    checksum::{update_u16, update_u32},
    conntrack::{self as ct, ConnEntry, ConnKey, kind, state, tcp_flags},
    maps::{FlowKey, direction, family, tail, target},
    nat::{
        FragmentKey, FragmentTranslation, MAX_PUBLIC_IPS, Nat64FragmentIn, Nat64FragmentKey,
        Nat64FragmentOut, NatGatewayInfo, NatMapping, NatMappingKey, PROBES_PER_IP, fragment_field,
        mapping, mapping_mode, port_candidate, preferred_ip_index,
    },
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    checksum,
    conntrack::timeout,
    counters::{count, drop, pass},
    flow::{self, Handling, widen},
    forwarding,
    igw::{DESTINATION, SOURCE, rewrite_address},
    maps::{CONNTRACK, NAT_FRAGMENTS, NAT_GATEWAYS, NAT_MAPPINGS, NAT_PUBLIC_IPS, NAT_WORK},
    nat64,
    parsing::{
        IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, MAX_L4_OFFSET, ptr_at,
    },
};

const ICMP_ECHO_REPLY: u16 = 0;
const ICMP_ECHO_REQUEST: u16 = 8;
const EEXIST: i32 = -17;

/// What the out-of-line steps below [`outbound`] and [`inbound`] (hairpin, later fragments, ICMP
/// errors) return when they have translated the packet: forward it from `work.src` to `work.dst`.
/// The caller does, so the forwarding frame and the fast path's under it sit one frame higher
/// on the 512-byte BPF stack. Never an XDP verdict.
const FORWARD: u32 = u32::MAX;

/// Forwards the packet a step below translated (it returned [`FORWARD`]), or returns its verdict.
#[inline(always)]
fn forward_if_asked(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    work: &NatWork,
    verdict: u32,
) -> u32 {
    if verdict == FORWARD {
        forwarding::ipv4(ctx, packet, work.src, work.dst, ingress)
    } else {
        verdict
    }
}

/// The NAT paths' per-CPU working state.
#[repr(C)]
pub struct NatWork {
    pub out_key: ConnKey,
    pub in_key: ConnKey,
    pub entry: ConnEntry,
    pub peer: ConnEntry,
    pub mkey: NatMappingKey,
    pub mval: NatMapping,
    pub rkey: NatMappingKey,
    pub rval: NatMapping,
    pub info: NatGatewayInfo,
    pub frag_key: FragmentKey,
    pub frag_value: FragmentTranslation,
    pub now: u64,
    /// The packet's endpoints as it arrived (ICMP echo: the identifier as the inside port).
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// The endpoint that replaces the private one (outbound) or the public one (inbound).
    pub public_addr: [u8; 4],
    pub private_addr: [u8; 4],
    pub public_port: u16,
    pub private_port: u16,
    pub subnet_index: u32,
    /// Port allocation: the random start and the preferred public IP.
    pub random: u32,
    pub first_ip: u32,
    pub bytes: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub gateway: u8,
    /// 1: the session was refused because it timed out and the gateway answers with a RST.
    pub rst: u8,
    /// 1: the IN entry of the session being created was inserted by this packet.
    pub in_inserted: u8,
    /// The family of the private endpoint: 4 (NAT44) or 6 (NAT64, the client is `private6`).
    pub family: u8,
    /// NAT64: the IPv6 client.
    pub private6: [u8; 16],
    /// NAT64: the IPv4 remote embedded in the NAT64 prefix (RFC 6052).
    pub remote6: [u8; 16],
    /// NAT64: the translated packet handed to forwarding (kept here, off the 512-byte stack).
    pub packet4: Ipv4Packet,
    pub packet6: Ipv6Packet,
    /// NAT64: the frame's link header (Ethernet and an optional 802.1Q tag), kept while the
    /// IP header is replaced.
    pub link: [u8; 18],
    /// NAT64: header layout of the packet being translated.
    pub l3: u16,
    pub l4: u16,
    pub transport_length: u16,
    pub tos: u8,
    pub ttl: u8,
    /// NAT64: the packet as it leaves, for the flow record.
    pub translated: flow::Translated,
    /// NAT64: the flow entry (as the packet arrived) that takes the next hop of its translation,
    /// and the longest arriving packet that next hop is known to fit.
    pub origin_key: FlowKey,
    pub origin_length: u16,
    /// NAT64: the IPv4 options of the packet being translated.
    pub options: [u8; 64],
    pub options_end: u8,
    /// NAT64 hairpin: the sender as the IPv6 packet had it.
    pub hairpin_client: [u8; 16],
    pub hairpin_client_port: u16,
    pub hairpin_dport: u16,
    /// NAT64 ICMP errors: the translated type, code and rest of header, and the quoted
    /// header's fields.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// 1: the outbound IPv6 packet is an ICMPv6 error.
    pub icmp_error: u8,
    /// NAT64: the IPv4 packet being translated has DF set.
    pub df: u8,
    pub icmp_rest: [u8; 4],
    pub quoted_tos: u8,
    pub quoted_ttl: u8,
    pub quoted_protocol: u8,
    pub quoted_payload_length: u16,
    /// The sum of the quoted addresses' words as they were (for the quoted checksum).
    pub quoted_old_sum: u32,
    /// The quoted packet's IPv4 destination embedded in the prefix.
    pub quoted_remote6: [u8; 16],
    /// An ICMPv6 error's headers (see `nat64::ICMP6_ERROR_HEAD`).
    pub error_head: [u8; 88],
    pub option_at: u8,
    pub option_verdict: u8,
    /// NAT64 fragments: the train's identification (IPv4: zero-extended), its offset and
    /// more-fragments flag in the IPv6 layout (`offset << 3 | M`), and the sum of the words of
    /// the addresses the transport checksum covered as the packet arrived.
    pub frag_id: u32,
    pub frag_field: u16,
    pub frag_old_sum: u32,
    pub frag6_key: Nat64FragmentKey,
    pub frag6_out: Nat64FragmentOut,
    pub frag64_in: Nat64FragmentIn,
}

/// The private endpoint's address as keys hold it, with its family and the OUT kind.
#[inline(always)]
fn private_key_addr(work: &NatWork) -> ([u8; 16], u8, u8) {
    if work.family == family::IPV6 {
        (work.private6, family::IPV6, kind::NAT64_OUT)
    } else {
        (widen(work.src), family::IPV4, kind::NAT44_OUT)
    }
}

#[inline(always)]
pub fn narrow(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

#[inline(always)]
pub fn count_bytes(packets: Counter, bytes: Counter, length: u16) {
    count(packets);
    if let Some(slot) = crate::maps::COUNTERS.get_ptr_mut(bytes as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += length as u64 };
    }
}

#[inline(always)]
pub fn work() -> Option<&'static mut NatWork> {
    // SAFETY: per-CPU slot, used by one packet at a time on this CPU.
    NAT_WORK.get_ptr_mut(0).map(|work| unsafe { &mut *work })
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Drops a packet and records it as a REJECT flow.
#[inline(always)]
fn reject(packet: &Ipv4Packet, ingress: u32, reason: Counter, subnet_index: u32, dir: u8) -> u32 {
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(packet.src, packet.src_port),
        flow::endpoint(packet.dst, packet.dst_port),
        Handling::new(0, dir, Some(reason), subnet_index),
    );
    drop(reason)
}

/// Reads the session identity of a TCP, UDP or ICMP echo packet into the work area. ICMP: the
/// echo identifier is the source port of a request (outbound) and the destination port of a
/// reply (inbound), the other port 0.
#[inline(always)]
fn identify(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
    outbound: bool,
) -> Result<(), Counter> {
    work.src = packet.src;
    work.dst = packet.dst;
    work.protocol = packet.protocol;
    work.tcp_flags = packet.tcp_flags;
    work.bytes = packet.total_length;
    work.rst = 0;
    work.in_inserted = 0;
    work.family = family::IPV4;
    match packet.protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            work.sport = packet.src_port;
            work.dport = packet.dst_port;
        }
        IPPROTO_ICMP => {
            let wanted = if outbound {
                ICMP_ECHO_REQUEST
            } else {
                ICMP_ECHO_REPLY
            };
            if packet.src_port != wanted {
                return Err(if outbound {
                    Counter::DropNatUnsupportedProtocol
                } else {
                    Counter::DropNatUnsolicitedIcmp
                });
            }
            if packet.l4 > MAX_L4_OFFSET {
                return Err(Counter::DropTruncatedIcmp);
            }
            let icmp: *const [u8; 8] = ptr_at(ctx, packet.l4).ok_or(Counter::DropTruncatedIcmp)?;
            // SAFETY: bounds-checked above.
            let identifier = unsafe { u16::from_be_bytes([(*icmp)[4], (*icmp)[5]]) };
            if outbound {
                work.sport = identifier;
                work.dport = 0;
            } else {
                work.sport = 0;
                work.dport = identifier;
            }
        }
        _ => {
            return Err(if outbound {
                Counter::DropNatUnsupportedProtocol
            } else {
                Counter::DropNatUnsolicitedOther
            });
        }
    }
    Ok(())
}

#[inline(always)]
pub fn set_out_key(work: &mut NatWork) {
    let (inside_addr, key_family, key_kind) = private_key_addr(work);
    work.out_key = ConnKey {
        inside_addr,
        remote_addr: widen(work.dst),
        inside_port: work.sport,
        remote_port: work.dport,
        protocol: work.protocol,
        family: key_family,
        kind: key_kind,
        _pad: 0,
    };
}

/// The IN key of a packet arriving at the public side (`work.dst`:`work.dport` is public).
#[inline(always)]
fn set_in_key_inbound(work: &mut NatWork) {
    work.in_key = ConnKey {
        inside_addr: widen(work.dst),
        remote_addr: widen(work.src),
        inside_port: work.dport,
        remote_port: work.sport,
        protocol: work.protocol,
        family: family::IPV4,
        kind: kind::NAT44_IN,
        _pad: 0,
    };
}

#[inline(always)]
pub fn is_live(entry: *const ConnEntry, protocol: u8, now: u64) -> bool {
    // SAFETY: map value pointer; fields read once.
    let (state, last_seen) = unsafe { ((*entry).state, (*entry).last_seen_ns) };
    match timeout(protocol, state) {
        Some(limit) => now.saturating_sub(last_seen) <= limit,
        None => false,
    }
}

/// Updates a live session's state and counters for a packet from inside (`outbound`) or from the
/// destination. `Some(reason)` to drop it (a TCP packet out of step with the session).
#[inline(always)]
pub fn refresh(entry: *mut ConnEntry, work: &NatWork, outbound: bool) -> Option<Counter> {
    // SAFETY: live map value.
    unsafe {
        if work.protocol == IPPROTO_TCP {
            let flags = work.tcp_flags;
            let current = (*entry).state;
            if !outbound
                && current == state::TCP_SYN_SENT
                && flags & (tcp_flags::SYN | tcp_flags::RST) == 0
            {
                return Some(Counter::DropNatUnsolicitedTcp);
            }
            let (next, fins) = ct::tcp_transition(current, (*entry).fin_seen, flags, outbound);
            if current == state::TCP_SYN_SENT && next == state::TCP_ESTABLISHED {
                count(Counter::NatConnectionEstablished);
            }
            (*entry).state = next;
            (*entry).fin_seen = fins;
        }
        (*entry).last_seen_ns = work.now;
        if outbound {
            (*entry).packets_out += 1;
            (*entry).bytes_out += work.bytes as u64;
        } else {
            (*entry).packets_in += 1;
            (*entry).bytes_in += work.bytes as u64;
        }
    }
    None
}

/// Finds or creates the session of an outbound packet; the public endpoint is left in
/// `work.public_addr`/`public_port`. Out of line, returning a scalar.
#[inline(never)]
pub fn session_outbound(work: &mut NatWork) -> Option<Counter> {
    set_out_key(work);
    if let Some(entry) = CONNTRACK.get_ptr_mut(&work.out_key) {
        if is_live(entry, work.protocol, work.now) {
            // Not `refresh(..)?`: its `None` is success, and `?` would return before the public
            // endpoint is read, leaving the previous packet's in the per-CPU work area.
            if let Some(reason) = refresh(entry, work, true) {
                return Some(reason);
            }
            // SAFETY: live map value.
            unsafe {
                work.public_addr = narrow(&(*entry).translated_addr);
                work.public_port = (*entry).translated_port;
            }
            return None;
        }
        let flags = work.tcp_flags;
        let new_syn = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if work.protocol == IPPROTO_TCP
            && work.info.rst_on_idle_timeout != 0
            && !new_syn
            && flags & tcp_flags::RST == 0
        {
            work.rst = 1;
            return Some(Counter::NatRstOnIdle);
        }
        // Otherwise the timed-out session is replaced below.
    }
    let initial = if work.protocol == IPPROTO_TCP {
        match ct::tcp_initial_state(work.tcp_flags) {
            Some(initial) => initial,
            None => return Some(Counter::DropNatTcpNoSession),
        }
    } else {
        state::OPEN
    };
    count(Counter::NatConnectionAttempt);
    if work.info.mapping == mapping_mode::ENDPOINT_INDEPENDENT {
        if let Some(reason) = endpoint_independent_mapping(work) {
            return Some(reason);
        }
    } else if let Some(reason) = allocate(work) {
        return Some(reason);
    }
    insert_session(work, initial)
}

/// Finds the private endpoint's mapping, or makes one.
#[inline(always)]
fn endpoint_independent_mapping(work: &mut NatWork) -> Option<Counter> {
    let (addr, key_family, _) = private_key_addr(work);
    work.mkey = NatMappingKey {
        addr,
        port: work.sport,
        protocol: work.protocol,
        family: key_family,
        kind: mapping::PRIVATE,
        gateway: work.gateway,
        _pad: [0; 2],
    };
    if let Some(existing) = NAT_MAPPINGS.get_ptr_mut(&work.mkey) {
        // SAFETY: live map value.
        unsafe {
            work.public_addr = narrow(&(*existing).addr);
            work.public_port = (*existing).port;
            (*existing).last_used_ns = work.now;
        }
        return None;
    }
    allocate(work)
}

/// Outcomes of one claim attempt.
const CLAIMED: u32 = 0;
const TAKEN: u32 = 1;
const FULL: u32 = 2;

/// Allocates a public endpoint: the private port on the preferred public IP if free, then a
/// random start and a bounded probe on every public IP in turn. The probe runs in `bpf_loop`, so
/// the verifier checks its body once rather than once per iteration.
#[inline(never)]
fn allocate(work: &mut NatWork) -> Option<Counter> {
    let ip_count = work.info.public_ip_count as u32;
    if ip_count == 0 || ip_count > MAX_PUBLIC_IPS as u32 {
        return Some(Counter::DropNatNoGateway);
    }
    // SAFETY: helper without side effects.
    work.random = unsafe { bpf_get_prandom_u32() };
    work.first_ip = preferred_ip_index(work.src, ip_count);
    let mut outcome: u64 = TAKEN as u64;
    // SAFETY: the callback is a BPF subprogram; its context is this stack slot.
    unsafe {
        bpf_loop(
            ip_count * PROBES_PER_IP,
            probe as *mut c_void,
            &mut outcome as *mut u64 as *mut c_void,
            0,
        );
    }
    match outcome as u32 {
        CLAIMED => {
            count(Counter::NatMappingCreated);
            if work.public_port == work.sport {
                count(Counter::NatPortPreserved);
            }
            None
        }
        FULL => Some(Counter::DropConntrackFull),
        _ => Some(Counter::NatErrorPortAllocation),
    }
}

/// One probe of [`allocate`]: `index` = public IP round * `PROBES_PER_IP` + probe. Returns 1 to
/// stop (claimed, or the table is full), 0 to go on.
#[inline(never)]
extern "C" fn probe(index: u64, outcome: *mut c_void) -> i64 {
    let Some(work) = work() else {
        return 1;
    };
    let ip_count = work.info.public_ip_count as u32;
    if ip_count == 0 {
        return 1;
    }
    let round = index as u32 / PROBES_PER_IP;
    let attempt = index as u32 % PROBES_PER_IP;
    let ip_index = ((work.first_ip + round) % ip_count) as usize & (MAX_PUBLIC_IPS - 1);
    work.public_addr = work.info.public_ips[ip_index];
    work.public_port = port_candidate(
        work.info.port_min,
        work.info.port_max,
        work.sport,
        work.random,
        attempt,
    );
    let result = claim(work);
    if result == TAKEN {
        count(Counter::NatPortProbes);
        return 0;
    }
    // SAFETY: `outcome` is the caller's stack slot.
    unsafe { *(outcome as *mut u64) = result as u64 };
    1
}

/// Tries to reserve `work.public_addr:public_port`: the public mapping key (endpoint-independent,
/// then the private one) or the session's IN entry (endpoint-dependent).
#[inline(never)]
fn claim(work: &mut NatWork) -> u32 {
    if work.info.mapping == mapping_mode::ENDPOINT_INDEPENDENT {
        work.rkey = NatMappingKey {
            addr: widen(work.public_addr),
            port: work.public_port,
            protocol: work.protocol,
            family: family::IPV4,
            kind: mapping::PUBLIC,
            gateway: work.gateway,
            _pad: [0; 2],
        };
        let (addr, key_family, _) = private_key_addr(work);
        work.rval = NatMapping {
            addr,
            port: work.sport,
            family: key_family,
            _pad: [0; 5],
            created_ns: work.now,
            last_used_ns: work.now,
        };
        match NAT_MAPPINGS.insert(&work.rkey, &work.rval, BPF_NOEXIST as u64) {
            Ok(()) => {}
            Err(EEXIST) => return TAKEN,
            Err(_) => return FULL,
        }
        work.mval = NatMapping {
            addr: widen(work.public_addr),
            port: work.public_port,
            family: family::IPV4,
            _pad: [0; 5],
            created_ns: work.now,
            last_used_ns: work.now,
        };
        if NAT_MAPPINGS
            .insert(&work.mkey, &work.mval, BPF_NOEXIST as u64)
            .is_ok()
        {
            return CLAIMED;
        }
        // Another CPU mapped this private endpoint first (or the table is full): give the port
        // back and use its mapping.
        let _ = NAT_MAPPINGS.remove(&work.rkey);
        return match NAT_MAPPINGS.get_ptr(&work.mkey) {
            Some(existing) => {
                // SAFETY: live map value.
                unsafe {
                    work.public_addr = narrow(&(*existing).addr);
                    work.public_port = (*existing).port;
                }
                CLAIMED
            }
            None => FULL,
        };
    }
    set_peer(work);
    match CONNTRACK.insert(&work.in_key, &work.peer, BPF_NOEXIST as u64) {
        Ok(()) => {
            work.in_inserted = 1;
            CLAIMED
        }
        Err(EEXIST) => TAKEN,
        Err(_) => FULL,
    }
}

/// The IN half of the session being created, for `work.public_addr:public_port`.
#[inline(always)]
fn set_peer(work: &mut NatWork) {
    work.in_key = ConnKey {
        inside_addr: widen(work.public_addr),
        remote_addr: widen(work.dst),
        inside_port: work.public_port,
        remote_port: work.dport,
        protocol: work.protocol,
        family: family::IPV4,
        kind: kind::NAT44_IN,
        _pad: 0,
    };
    work.peer = ConnEntry {
        created_ns: work.now,
        last_seen_ns: work.now,
        packets_out: 0,
        bytes_out: 0,
        packets_in: 0,
        bytes_in: 0,
        state: state::OPEN,
        fin_seen: 0,
        _pad: [0; 2],
        subnet_index: work.subnet_index,
        translated_addr: private_key_addr(work).0,
        translated_port: work.sport,
        gateway: work.gateway,
        translated_family: if work.family == family::IPV6 {
            family::IPV6
        } else {
            0
        },
        _pad2: [0; 4],
    };
}

/// Inserts both halves of a new session (the IN half first: it is the claim on the public side),
/// or joins the session another CPU made at the same moment.
#[inline(never)]
fn insert_session(work: &mut NatWork, initial: u8) -> Option<Counter> {
    if work.in_inserted == 0 {
        set_peer(work);
        match CONNTRACK.insert(&work.in_key, &work.peer, BPF_NOEXIST as u64) {
            Ok(()) => work.in_inserted = 1,
            // Endpoint-independent: the public endpoint is this private endpoint's, so an IN
            // entry for it and this destination is ours (a racing CPU's or a timed-out one).
            Err(EEXIST) => {
                if CONNTRACK
                    .insert(&work.in_key, &work.peer, BPF_ANY as u64)
                    .is_err()
                {
                    return Some(Counter::DropConntrackFull);
                }
            }
            Err(_) => return Some(Counter::DropConntrackFull),
        }
    }
    work.entry = ConnEntry {
        created_ns: work.now,
        last_seen_ns: work.now,
        packets_out: 1,
        bytes_out: work.bytes as u64,
        packets_in: 0,
        bytes_in: 0,
        state: initial,
        fin_seen: 0,
        _pad: [0; 2],
        subnet_index: work.subnet_index,
        translated_addr: widen(work.public_addr),
        translated_port: work.public_port,
        gateway: work.gateway,
        translated_family: 0,
        _pad2: [0; 4],
    };
    if CONNTRACK
        .insert(&work.out_key, &work.entry, BPF_NOEXIST as u64)
        .is_ok()
    {
        if work.protocol != IPPROTO_TCP {
            count(Counter::NatConnectionEstablished);
        }
        count(Counter::ConntrackCreated);
        return None;
    }
    match CONNTRACK.get_ptr_mut(&work.out_key) {
        Some(existing) if is_live(existing, work.protocol, work.now) => {
            // Another CPU made the session first: use its public endpoint, give ours back.
            // SAFETY: live map value.
            let (theirs_addr, theirs_port) = unsafe {
                (
                    narrow(&(*existing).translated_addr),
                    (*existing).translated_port,
                )
            };
            if (theirs_addr != work.public_addr || theirs_port != work.public_port)
                && work.in_inserted != 0
            {
                let _ = CONNTRACK.remove(&work.in_key);
            }
            work.public_addr = theirs_addr;
            work.public_port = theirs_port;
            refresh(existing, work, true)
        }
        Some(_) => {
            // A timed-out session the sweeper has not deleted yet: replaced. Its IN half, if it
            // was another public endpoint, no longer points back and is swept as an orphan.
            if CONNTRACK
                .insert(&work.out_key, &work.entry, BPF_ANY as u64)
                .is_err()
            {
                return Some(Counter::DropConntrackFull);
            }
            count(Counter::ConntrackCreated);
            if work.protocol != IPPROTO_TCP {
                count(Counter::NatConnectionEstablished);
            }
            None
        }
        None => {
            if work.in_inserted != 0 {
                let _ = CONNTRACK.remove(&work.in_key);
            }
            Some(Counter::DropConntrackFull)
        }
    }
}

/// Finds the session of a packet arriving at a public endpoint (from the internet, or hairpinned)
/// and refreshes it; the private endpoint is left in `work.private_addr`/`private_port`.
#[inline(never)]
pub fn session_inbound(work: &mut NatWork) -> Option<Counter> {
    set_in_key_inbound(work);
    let Some(peer) = CONNTRACK.get_ptr(&work.in_key) else {
        return Some(unsolicited(work.protocol, work.tcp_flags));
    };
    read_peer(work, peer);
    let Some(entry) = CONNTRACK.get_ptr_mut(&work.out_key) else {
        return Some(unsolicited(work.protocol, work.tcp_flags));
    };
    // SAFETY: live map value.
    let points_back = unsafe {
        narrow(&(*entry).translated_addr) == work.dst && (*entry).translated_port == work.dport
    };
    if !points_back || !is_live(entry, work.protocol, work.now) {
        return Some(unsolicited(work.protocol, work.tcp_flags));
    }
    // SAFETY: live map value.
    work.subnet_index = unsafe { (*entry).subnet_index };
    refresh(entry, work, false)
}

/// Reads the private endpoint from a session's IN half and builds the key of its OUT half (with
/// `work.src`:`work.sport` as the remote endpoint).
#[inline(always)]
fn read_peer(work: &mut NatWork, peer: *const ConnEntry) {
    // SAFETY: live map value.
    unsafe {
        work.private_port = (*peer).translated_port;
        if (*peer).translated_family == family::IPV6 {
            work.family = family::IPV6;
            work.private6 = (*peer).translated_addr;
            work.private_addr = [0; 4];
        } else {
            work.family = family::IPV4;
            work.private_addr = narrow(&(*peer).translated_addr);
        }
    }
    let (inside_addr, key_family, key_kind) = if work.family == family::IPV6 {
        (work.private6, family::IPV6, kind::NAT64_OUT)
    } else {
        (widen(work.private_addr), family::IPV4, kind::NAT44_OUT)
    };
    work.out_key = ConnKey {
        inside_addr,
        remote_addr: widen(work.src),
        inside_port: work.private_port,
        remote_port: work.sport,
        protocol: work.protocol,
        family: key_family,
        kind: key_kind,
        _pad: 0,
    };
}

#[inline(always)]
fn unsolicited(protocol: u8, flags: u8) -> Counter {
    match protocol {
        IPPROTO_TCP => {
            if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                Counter::DropNatUnsolicitedTcpSyn
            } else {
                Counter::DropNatUnsolicitedTcp
            }
        }
        IPPROTO_UDP => Counter::DropNatUnsolicitedUdp,
        IPPROTO_ICMP => Counter::DropNatUnsolicitedIcmp,
        _ => Counter::DropNatUnsolicitedOther,
    }
}

/// Rewrites the source (`SOURCE`) or destination (`DESTINATION`) port of a TCP/UDP packet, or
/// the identifier of an ICMP echo, with its checksum.
#[inline(always)]
fn rewrite_port(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    field: usize,
    old: u16,
    new: u16,
) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    if packet.l4 > MAX_L4_OFFSET {
        return Err(());
    }
    match packet.protocol {
        IPPROTO_TCP => {
            let tcp: *mut [u8; 18] = ptr_at(ctx, packet.l4).ok_or(())?;
            // SAFETY: bounds-checked above; all through the checked pointer.
            unsafe {
                let tcp = &mut *tcp;
                let [high, low] = new.to_be_bytes();
                if field == SOURCE {
                    tcp[0] = high;
                    tcp[1] = low;
                } else {
                    tcp[2] = high;
                    tcp[3] = low;
                }
                let check = u16::from_be_bytes([tcp[16], tcp[17]]);
                let check = update_u16(check, old, new);
                tcp[16..18].copy_from_slice(&check.to_be_bytes());
            }
        }
        IPPROTO_UDP => {
            let udp: *mut [u8; 8] = ptr_at(ctx, packet.l4).ok_or(())?;
            // SAFETY: as above.
            unsafe {
                let udp = &mut *udp;
                let [high, low] = new.to_be_bytes();
                if field == SOURCE {
                    udp[0] = high;
                    udp[1] = low;
                } else {
                    udp[2] = high;
                    udp[3] = low;
                }
                let check = u16::from_be_bytes([udp[6], udp[7]]);
                if check != 0 {
                    let mut check = update_u16(check, old, new);
                    if check == 0 {
                        check = 0xffff;
                    }
                    udp[6..8].copy_from_slice(&check.to_be_bytes());
                }
            }
        }
        _ => {
            let icmp: *mut [u8; 8] = ptr_at(ctx, packet.l4).ok_or(())?;
            // SAFETY: as above.
            unsafe {
                let icmp = &mut *icmp;
                icmp[4..6].copy_from_slice(&new.to_be_bytes());
                let check = u16::from_be_bytes([icmp[2], icmp[3]]);
                let check = update_u16(check, old, new);
                icmp[2..4].copy_from_slice(&check.to_be_bytes());
            }
        }
    }
    Ok(())
}

/// The IPv4 identification and whether more fragments follow (bit 16).
#[inline(always)]
fn fragment_info(ctx: &XdpContext, packet: &Ipv4Packet) -> u32 {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, packet.l3) else {
        return 0;
    };
    // SAFETY: bounds-checked above.
    let (id, frags) = unsafe { ((*ip).id, (*ip).frags) };
    let more = (frags[0] & 0x20) != 0;
    ((more as u32) << 16) | u16::from_be_bytes(id) as u32
}

/// Remembers a first fragment's translation for the later fragments of the same packet.
#[inline(never)]
fn remember_fragment(work: &mut NatWork, id: u16, addr: [u8; 4], field: u8) {
    work.frag_key = FragmentKey {
        src: work.src,
        dst: work.dst,
        id: id.to_be_bytes(),
        protocol: work.protocol,
        _pad: 0,
    };
    work.frag_value = FragmentTranslation {
        addr,
        field,
        _pad: [0; 3],
    };
    let _ = NAT_FRAGMENTS.insert(&work.frag_key, &work.frag_value, 0);
}

/// IPv4 from a private subnet whose route sends it to NAT gateway `gateway`.
#[inline(never)]
pub fn outbound(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    subnet_index: u32,
    gateway: u32,
) -> u32 {
    count_bytes(
        Counter::NatPacketsInFromSource,
        Counter::NatBytesInFromSource,
        packet.total_length,
    );
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    let Some(work) = work() else {
        return drop(Counter::DropNatNoGateway);
    };
    let Some(info) = NAT_GATEWAYS.get(gateway) else {
        return reject(
            packet,
            ingress,
            Counter::DropNatNoGateway,
            subnet_index,
            direction::EGRESS,
        );
    };
    if info.public_ip_count == 0 {
        return reject(
            packet,
            ingress,
            Counter::DropNatNoGateway,
            subnet_index,
            direction::EGRESS,
        );
    }
    work.info = *info;
    work.gateway = gateway as u8;
    work.subnet_index = subnet_index;
    work.now = now();
    work.family = family::IPV4;
    if packet.later_fragment {
        let verdict = later_fragment(ctx, packet, ingress, work, direction::EGRESS);
        return forward_if_asked(ctx, packet, ingress, work, verdict);
    }
    if packet.icmp_error {
        let verdict = icmp_error(ctx, packet, ingress, work, direction::EGRESS);
        return forward_if_asked(ctx, packet, ingress, work, verdict);
    }
    if let Err(reason) = identify(ctx, packet, work, true) {
        return reject(packet, ingress, reason, subnet_index, direction::EGRESS);
    }
    if let Some(reason) = session_outbound(work) {
        if work.rst != 0 {
            return send_rst(ctx, packet);
        }
        return reject(packet, ingress, reason, subnet_index, direction::EGRESS);
    }
    let public = work.public_addr;
    let public_port = work.public_port;
    if rewrite_address(ctx, packet, SOURCE, packet.src, public).is_err()
        || rewrite_port(ctx, packet, SOURCE, work.sport, public_port).is_err()
    {
        return drop(Counter::DropTruncatedIpv4);
    }
    let fragment = fragment_info(ctx, packet);
    if fragment >> 16 != 0 {
        remember_fragment(work, fragment as u16, public, fragment_field::SOURCE);
    }
    // SAFETY: plain data copied out.
    if unsafe { NAT_PUBLIC_IPS.get(packet.dst) }.is_some() {
        let verdict = hairpin(ctx, packet, ingress, work);
        return forward_if_asked(ctx, packet, ingress, work, verdict);
    }
    count(Counter::ForwardNatOutbound);
    count_bytes(
        Counter::NatPacketsOutToDestination,
        Counter::NatBytesOutToDestination,
        packet.total_length,
    );
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(
            public,
            if packet.protocol == IPPROTO_ICMP {
                packet.src_port
            } else {
                public_port
            },
        ),
        flow::endpoint(packet.dst, packet.dst_port),
        Handling::new(target::NAT_GATEWAY, direction::EGRESS, None, subnet_index),
    );
    forwarding::ipv4(ctx, packet, public, packet.dst, ingress)
}

/// A translated packet from inside addressed to one of the gateway's public endpoints: it goes
/// back in through that endpoint's session, with the public source (RFC 4787 REQ-9). Returns
/// [`FORWARD`] once translated.
#[inline(never)]
fn hairpin(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, work: &mut NatWork) -> u32 {
    let subnet_index = work.subnet_index;
    work.src = work.public_addr;
    work.sport = work.public_port;
    if packet.protocol == IPPROTO_ICMP {
        // An echo request is never an answer.
        return reject(
            packet,
            ingress,
            Counter::DropNatUnsolicitedIcmp,
            subnet_index,
            direction::INTERNAL,
        );
    }
    if let Some(reason) = session_inbound(work) {
        return reject(packet, ingress, reason, subnet_index, direction::INTERNAL);
    }
    if work.family == family::IPV6 {
        // RFC 6146 hairpinning is between IPv6 clients; an IPv4 host reaching a NAT64 mapping
        // through the public address is not translated to IPv6.
        return reject(
            packet,
            ingress,
            Counter::DropNat64HairpinFromIpv4,
            subnet_index,
            direction::INTERNAL,
        );
    }
    let private = work.private_addr;
    if rewrite_address(ctx, packet, DESTINATION, packet.dst, private).is_err()
        || rewrite_port(ctx, packet, DESTINATION, work.dport, work.private_port).is_err()
    {
        return drop(Counter::DropTruncatedIpv4);
    }
    count(Counter::ForwardNatHairpin);
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(work.src, work.sport),
        flow::endpoint(private, work.private_port),
        Handling::new(target::NAT_GATEWAY, direction::INTERNAL, None, subnet_index),
    );
    work.dst = private;
    FORWARD
}

/// The fast path's share of the NAT gateway, for a TCP or UDP packet of a live session that is
/// neither a fragment nor hairpinned: refreshes the session exactly as the slow path does and
/// returns the endpoint to rewrite to (outbound: the public source; inbound: the private
/// destination) packed as `1 << 48 | address << 16 | port`. 0: the slow path must decide
/// (a new flow, an expired or unknown session, a packet out of step with it), and nothing was
/// changed.
#[inline(never)]
pub fn fast_session(ctx: &XdpContext, packet: &Ipv4Packet, outbound: bool) -> u64 {
    if packet.protocol != IPPROTO_TCP && packet.protocol != IPPROTO_UDP {
        return 0;
    }
    if packet.later_fragment || fragment_info(ctx, packet) >> 16 != 0 {
        return 0;
    }
    let Some(work) = work() else {
        return 0;
    };
    work.now = now();
    if identify(ctx, packet, work, outbound).is_err() {
        return 0;
    }
    let (addr, port) = if outbound {
        // SAFETY: plain data, only tested for presence.
        if unsafe { NAT_PUBLIC_IPS.get(packet.dst) }.is_some() {
            return 0;
        }
        set_out_key(work);
        let Some(entry) = CONNTRACK.get_ptr_mut(&work.out_key) else {
            return 0;
        };
        if !is_live(entry, work.protocol, work.now) || refresh(entry, work, true).is_some() {
            return 0;
        }
        // SAFETY: live map value.
        unsafe { (narrow(&(*entry).translated_addr), (*entry).translated_port) }
    } else {
        if session_inbound(work).is_some() {
            return 0;
        }
        if work.family == family::IPV6 {
            // Refreshed; translated to IPv6 by the caller.
            return FAST_NAT64;
        }
        (work.private_addr, work.private_port)
    };
    count_fast_path(outbound, packet.total_length);
    (1 << 48) | ((u32::from_be_bytes(addr) as u64) << 16) | port as u64
}

/// What [`fast_session`] returns for a reply of a live NAT64 session (refreshed, the client in
/// the work area): never a packed endpoint, whose bit 48 is set.
pub const FAST_NAT64: u64 = 2 << 48;

/// The counters the slow path moves for a forwarded packet of an established session.
#[inline(always)]
fn count_fast_path(outbound: bool, length: u16) {
    if outbound {
        count_bytes(
            Counter::NatPacketsInFromSource,
            Counter::NatBytesInFromSource,
            length,
        );
        count(Counter::ForwardNatOutbound);
        count_bytes(
            Counter::NatPacketsOutToDestination,
            Counter::NatBytesOutToDestination,
            length,
        );
    } else {
        count_bytes(
            Counter::NatPacketsInFromDestination,
            Counter::NatBytesInFromDestination,
            length,
        );
        count(Counter::ForwardNatInbound);
        count_bytes(
            Counter::NatPacketsOutToSource,
            Counter::NatBytesOutToSource,
            length,
        );
    }
}

/// Rewrites a fast-path packet to the endpoint [`fast_session`] returned: the source of an
/// outbound packet, the destination of an inbound one.
#[inline(always)]
pub fn fast_rewrite(ctx: &XdpContext, packet: &Ipv4Packet, outbound: bool, packed: u64) -> bool {
    let addr = ((packed >> 16) as u32).to_be_bytes();
    let port = packed as u16;
    if outbound {
        rewrite_address(ctx, packet, SOURCE, packet.src, addr).is_ok()
            && rewrite_port(ctx, packet, SOURCE, packet.src_port, port).is_ok()
    } else {
        rewrite_address(ctx, packet, DESTINATION, packet.dst, addr).is_ok()
            && rewrite_port(ctx, packet, DESTINATION, packet.dst_port, port).is_ok()
    }
}

/// IPv4 from the internet to public address of NAT gateway `gateway`.
#[inline(never)]
pub fn inbound(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, gateway: u32) -> u32 {
    count_bytes(
        Counter::NatPacketsInFromDestination,
        Counter::NatBytesInFromDestination,
        packet.total_length,
    );
    let Some(work) = work() else {
        return drop(Counter::DropNatNoGateway);
    };
    work.gateway = gateway as u8;
    work.subnet_index = u32::MAX;
    work.now = now();
    work.family = family::IPV4;
    if packet.later_fragment {
        let verdict = later_fragment(ctx, packet, ingress, work, direction::INGRESS);
        return forward_if_asked(ctx, packet, ingress, work, verdict);
    }
    if packet.icmp_error {
        let verdict = icmp_error(ctx, packet, ingress, work, direction::INGRESS);
        return forward_if_asked(ctx, packet, ingress, work, verdict);
    }
    if let Err(reason) = identify(ctx, packet, work, false) {
        return reject(packet, ingress, reason, u32::MAX, direction::INGRESS);
    }
    if let Some(reason) = session_inbound(work) {
        return reject(packet, ingress, reason, u32::MAX, direction::INGRESS);
    }
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    if work.family == family::IPV6 {
        return nat64::inbound(ctx, packet, ingress, work);
    }
    let private = work.private_addr;
    if rewrite_address(ctx, packet, DESTINATION, packet.dst, private).is_err()
        || rewrite_port(ctx, packet, DESTINATION, work.dport, work.private_port).is_err()
    {
        return drop(Counter::DropTruncatedIpv4);
    }
    let fragment = fragment_info(ctx, packet);
    if fragment >> 16 != 0 {
        remember_fragment(work, fragment as u16, private, fragment_field::DESTINATION);
    }
    count(Counter::ForwardNatInbound);
    count_bytes(
        Counter::NatPacketsOutToSource,
        Counter::NatBytesOutToSource,
        packet.total_length,
    );
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(packet.src, packet.src_port),
        flow::endpoint(
            private,
            if packet.protocol == IPPROTO_ICMP {
                packet.dst_port
            } else {
                work.private_port
            },
        ),
        Handling::new(
            target::NAT_GATEWAY,
            direction::INGRESS,
            None,
            work.subnet_index,
        ),
    );
    forwarding::ipv4(ctx, packet, packet.src, private, ingress)
}

/// A fragment other than the first: translated like the first fragment of its packet, whose
/// translation `NAT_FRAGMENTS` holds; without it (it came first, or was never seen) dropped.
/// Returns [`FORWARD`] once translated.
#[inline(never)]
fn later_fragment(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    work: &mut NatWork,
    dir: u8,
) -> u32 {
    let subnet_index = work.subnet_index;
    let id = fragment_info(ctx, packet) as u16;
    work.frag_key = FragmentKey {
        src: packet.src,
        dst: packet.dst,
        id: id.to_be_bytes(),
        protocol: packet.protocol,
        _pad: 0,
    };
    // SAFETY: plain data copied out.
    let Some(translation) = (unsafe { NAT_FRAGMENTS.get(&work.frag_key) }).copied() else {
        if dir == direction::INGRESS {
            // Perhaps of a reply to a NAT64 session: the tail-called `nat64_fragment_in` looks
            // in its own table (and drops it as out of order when it is not there either).
            return crate::TAIL_CALL + tail::NAT64_FRAGMENT_INBOUND;
        }
        return reject(
            packet,
            ingress,
            Counter::DropNatFragmentOutOfOrder,
            subnet_index,
            dir,
        );
    };
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    let (src, dst) = if translation.field == fragment_field::SOURCE {
        (translation.addr, packet.dst)
    } else {
        (packet.src, translation.addr)
    };
    let (field, old) = if translation.field == fragment_field::SOURCE {
        (SOURCE, packet.src)
    } else {
        (DESTINATION, packet.dst)
    };
    if rewrite_address(ctx, packet, field, old, translation.addr).is_err() {
        return drop(Counter::DropTruncatedIpv4);
    }
    count(Counter::NatFragmentTranslated);
    if dir == direction::EGRESS {
        count(Counter::ForwardNatOutbound);
        count_bytes(
            Counter::NatPacketsOutToDestination,
            Counter::NatBytesOutToDestination,
            packet.total_length,
        );
    } else {
        count(Counter::ForwardNatInbound);
        count_bytes(
            Counter::NatPacketsOutToSource,
            Counter::NatBytesOutToSource,
            packet.total_length,
        );
    }
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(src, 0),
        flow::endpoint(dst, 0),
        Handling::new(target::NAT_GATEWAY, dir, None, subnet_index),
    );
    work.src = src;
    work.dst = dst;
    FORWARD
}

/// The head of an ICMP error: its header and the quoted IPv4 header.
#[repr(C)]
struct IcmpErrorHead {
    icmp: [u8; 8],
    quoted: Ipv4Hdr,
}

/// An ICMP error about a NAT session (RFC 5508): from the internet (`INGRESS`, the quoted packet
/// left with the public source) or from a private host (`EGRESS`, the quoted packet arrived at
/// its private destination). The quoted packet is translated back, then the outer address.
/// Errors never create, refresh or delete sessions. Returns [`FORWARD`] once translated.
#[inline(never)]
fn icmp_error(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    ingress: u32,
    work: &mut NatWork,
    dir: u8,
) -> u32 {
    let subnet_index = work.subnet_index;
    let inbound = dir == direction::INGRESS;
    if let Some(reason) = quoted_session(ctx, packet, work, inbound) {
        return reject(packet, ingress, reason, subnet_index, dir);
    }
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    if inbound && work.family == family::IPV6 {
        return crate::TAIL_CALL + tail::NAT64_ICMP_ERROR_INBOUND;
    }
    if let Err(reason) = rewrite_quote(ctx, packet, work, inbound) {
        return reject(packet, ingress, reason, subnet_index, dir);
    }
    // The outer address: the error goes to the private host (inbound) or leaves from the public
    // address (outbound).
    let rewritten = if inbound {
        work.src = packet.src;
        work.dst = work.private_addr;
        rewrite_address(ctx, packet, DESTINATION, packet.dst, work.private_addr)
    } else {
        work.src = work.public_addr;
        work.dst = packet.dst;
        rewrite_address(ctx, packet, SOURCE, packet.src, work.public_addr)
    };
    if rewritten.is_err() {
        return drop(Counter::DropTruncatedIpv4);
    }
    if inbound {
        count(Counter::NatIcmpErrorTranslatedInbound);
        count(Counter::ForwardNatInbound);
        count_bytes(
            Counter::NatPacketsOutToSource,
            Counter::NatBytesOutToSource,
            packet.total_length,
        );
    } else {
        count(Counter::NatIcmpErrorTranslatedOutbound);
        count(Counter::ForwardNatOutbound);
        count_bytes(
            Counter::NatPacketsOutToDestination,
            Counter::NatBytesOutToDestination,
            packet.total_length,
        );
    }
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(work.src, packet.src_port),
        flow::endpoint(work.dst, packet.dst_port),
        Handling::new(target::NAT_GATEWAY, dir, None, work.subnet_index),
    );
    FORWARD
}

/// Finds the live session of the packet an ICMP error quotes. Inbound: the quoted packet is
/// public:port -> destination; outbound: destination -> private:port. Fills both endpoints.
#[inline(never)]
fn quoted_session(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
    inbound: bool,
) -> Option<Counter> {
    if packet.l4 > MAX_L4_OFFSET {
        return Some(Counter::DropTruncatedIcmp);
    }
    let Some(head) = ptr_at::<IcmpErrorHead>(ctx, packet.l4) else {
        return Some(Counter::DropTruncatedIcmp);
    };
    // SAFETY: bounds-checked above.
    let (vihl, protocol, quoted_src, quoted_dst) = unsafe {
        let quoted = &(*head).quoted;
        (quoted.vihl, quoted.proto, quoted.src_addr, quoted.dst_addr)
    };
    let header_length = ((vihl & 0x0f) as usize) << 2;
    if vihl >> 4 != 4 || header_length < Ipv4Hdr::LEN {
        return Some(Counter::DropTruncatedIcmp);
    }
    let quoted_l4 = packet.l4 + 8 + header_length;
    if quoted_l4 > MAX_L4_OFFSET + 8 + 60 {
        return Some(Counter::DropTruncatedIcmp);
    }
    let Some(transport) = ptr_at::<[u8; 8]>(ctx, quoted_l4) else {
        return Some(Counter::DropTruncatedIcmp);
    };
    // SAFETY: bounds-checked above.
    let transport = unsafe { *transport };
    let (mut sport, mut dport) = (
        u16::from_be_bytes([transport[0], transport[1]]),
        u16::from_be_bytes([transport[2], transport[3]]),
    );
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMP => {
            let identifier = u16::from_be_bytes([transport[4], transport[5]]);
            // Inbound errors quote our echo request; outbound ones the reply the host got.
            let wanted = if inbound {
                ICMP_ECHO_REQUEST
            } else {
                ICMP_ECHO_REPLY
            };
            if transport[0] as u16 != wanted {
                return Some(Counter::DropNatIcmpErrorNoFlow);
            }
            if inbound {
                sport = identifier;
                dport = 0;
            } else {
                sport = 0;
                dport = identifier;
            }
        }
        _ => return Some(Counter::DropNatIcmpErrorNoFlow),
    }
    work.protocol = protocol;
    if inbound {
        // The error must be addressed to the public endpoint that sent the quoted packet.
        if quoted_src != packet.dst {
            return Some(Counter::DropNatIcmpErrorNoFlow);
        }
        work.in_key = ConnKey {
            inside_addr: widen(quoted_src),
            remote_addr: widen(quoted_dst),
            inside_port: sport,
            remote_port: dport,
            protocol,
            family: family::IPV4,
            kind: kind::NAT44_IN,
            _pad: 0,
        };
        work.public_addr = quoted_src;
        work.public_port = sport;
        work.src = quoted_dst;
        work.sport = dport;
        if lookup_quoted_inbound(work) != 0 {
            return Some(Counter::DropNatIcmpErrorNoFlow);
        }
    } else {
        if quoted_dst != packet.src {
            return Some(Counter::DropNatIcmpErrorNoFlow);
        }
        work.out_key = ConnKey {
            inside_addr: widen(quoted_dst),
            remote_addr: widen(quoted_src),
            inside_port: dport,
            remote_port: sport,
            protocol,
            family: family::IPV4,
            kind: kind::NAT44_OUT,
            _pad: 0,
        };
        work.private_addr = quoted_dst;
        work.private_port = dport;
        if lookup_quoted_outbound(work) != 0 {
            return Some(Counter::DropNatIcmpErrorNoFlow);
        }
    }
    None
}

/// Inbound error: `work.in_key` -> the private endpoint, checked against a live OUT half.
/// 0 when found.
#[inline(never)]
fn lookup_quoted_inbound(work: &mut NatWork) -> u32 {
    let Some(peer) = CONNTRACK.get_ptr(&work.in_key) else {
        return 1;
    };
    read_peer(work, peer);
    let Some(entry) = CONNTRACK.get_ptr(&work.out_key) else {
        return 1;
    };
    // SAFETY: live map value.
    let points_back = unsafe {
        narrow(&(*entry).translated_addr) == work.public_addr
            && (*entry).translated_port == work.public_port
    };
    if !points_back || !is_live(entry, work.protocol, work.now) {
        return 1;
    }
    // SAFETY: live map value.
    work.subnet_index = unsafe { (*entry).subnet_index };
    0
}

/// Outbound error: `work.out_key` -> the public endpoint of a live session. 0 when found.
#[inline(never)]
pub fn lookup_quoted_outbound(work: &mut NatWork) -> u32 {
    let Some(entry) = CONNTRACK.get_ptr(&work.out_key) else {
        return 1;
    };
    if !is_live(entry, work.protocol, work.now) {
        return 1;
    }
    // SAFETY: live map value.
    unsafe {
        work.public_addr = narrow(&(*entry).translated_addr);
        work.public_port = (*entry).translated_port;
    }
    0
}

/// Adds a 16-bit field's change to the checksum at `offset` (re-derived for the verifier).
#[inline(always)]
fn adjust(ctx: &XdpContext, offset: usize, old: u16, new: u16) {
    if offset > MAX_L4_OFFSET + 2 {
        return;
    }
    if let Some(check) = ptr_at::<[u8; 2]>(ctx, offset) {
        checksum::replace_u16(check, old, new);
    }
}

/// Rewrites the packet an ICMP error quotes: inbound, its source public -> private (address and
/// port); outbound, its destination private -> public. The quoted IPv4 checksum, the quoted
/// transport checksum when the quote holds it, and the ICMP checksum over all of them follow.
#[inline(never)]
fn rewrite_quote(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    work: &mut NatWork,
    inbound: bool,
) -> Result<(), Counter> {
    let (old_addr, new_addr, old_port, new_port) = if inbound {
        (
            work.public_addr,
            work.private_addr,
            work.public_port,
            work.private_port,
        )
    } else {
        (
            work.private_addr,
            work.public_addr,
            work.private_port,
            work.public_port,
        )
    };
    if packet.l4 > MAX_L4_OFFSET {
        return Err(Counter::DropTruncatedIcmp);
    }
    let icmp_check_at = packet.l4 + 2;
    let head: *mut IcmpErrorHead = ptr_at(ctx, packet.l4).ok_or(Counter::DropTruncatedIcmp)?;
    // SAFETY: bounds-checked above; every access through `head`.
    let header_length = unsafe {
        let quoted = &raw mut (*head).quoted;
        let before = checksum::read(&raw const (*quoted).check);
        checksum::replace_u32(&raw mut (*quoted).check, old_addr, new_addr);
        let after = checksum::read(&raw const (*quoted).check);
        if inbound {
            (*quoted).src_addr = new_addr;
        } else {
            (*quoted).dst_addr = new_addr;
        }
        let icmp_check = (&raw mut (*head).icmp)
            .cast::<u8>()
            .add(2)
            .cast::<[u8; 2]>();
        checksum::replace_u32(icmp_check, old_addr, new_addr);
        checksum::replace_u16(icmp_check, before, after);
        (((*quoted).vihl & 0x0f) as usize) << 2
    };
    let quoted_l4 = packet.l4 + 8 + header_length;
    if quoted_l4 > MAX_L4_OFFSET + 8 + 60 {
        return Err(Counter::DropTruncatedIcmp);
    }
    let end = packet.l3 + packet.total_length as usize;
    let protocol = work.protocol;
    // The port (TCP/UDP: source or destination; ICMP echo: the identifier).
    let port_at = if protocol == IPPROTO_ICMP {
        quoted_l4 + 4
    } else if inbound {
        quoted_l4
    } else {
        quoted_l4 + 2
    };
    let Some(port) = ptr_at::<[u8; 2]>(ctx, port_at) else {
        return Err(Counter::DropTruncatedIcmp);
    };
    checksum::write(port, new_port);
    adjust(ctx, icmp_check_at, old_port, new_port);
    // The quoted transport checksum, when it is inside the ICMP message.
    let check_at = match protocol {
        IPPROTO_TCP => quoted_l4 + 16,
        IPPROTO_UDP => quoted_l4 + 6,
        _ => quoted_l4 + 2,
    };
    if check_at + 2 > end || check_at > MAX_L4_OFFSET + 8 + 60 + 16 {
        return Ok(());
    }
    let Some(check) = ptr_at::<[u8; 2]>(ctx, check_at) else {
        return Ok(());
    };
    let before = checksum::read(check);
    if protocol == IPPROTO_UDP && before == 0 {
        return Ok(());
    }
    let mut after = update_u16(before, old_port, new_port);
    if protocol != IPPROTO_ICMP {
        // TCP and UDP cover the pseudo-header with the address.
        after = update_u32(
            after,
            u32::from_be_bytes(old_addr),
            u32::from_be_bytes(new_addr),
        );
        if protocol == IPPROTO_UDP && after == 0 {
            after = 0xffff;
        }
    }
    checksum::write(check, after);
    adjust(ctx, icmp_check_at, before, after);
    Ok(())
}

/// Answers a TCP packet from inside on a timed-out session with a RST (AWS's behaviour, when
/// `rst_on_idle_timeout` is set): the frame is cut to the headers, turned around and sent back
/// out of the interface it came in on. Only option-less IPv4 headers are answered; others are
/// dropped with the same counter.
#[inline(never)]
fn send_rst(ctx: &XdpContext, packet: &Ipv4Packet) -> u32 {
    count(Counter::NatRstOnIdle);
    if packet.l4 != packet.l3 + Ipv4Hdr::LEN || packet.l3 != EthHdr::LEN {
        return xdp_action::XDP_DROP;
    }
    const L4: usize = EthHdr::LEN + Ipv4Hdr::LEN;
    let Some(tcp) = ptr_at::<[u8; 20]>(ctx, L4) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked above.
    let (seq, ack, flags, data_offset) = unsafe {
        let t = &*tcp;
        (
            u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            t[13],
            ((t[12] >> 4) as u32) << 2,
        )
    };
    let payload = (packet.total_length as u32).saturating_sub(Ipv4Hdr::LEN as u32 + data_offset)
        + (flags & (tcp_flags::SYN | tcp_flags::FIN) != 0) as u32;
    // RFC 793: an ACK is answered with <SEQ=SEG.ACK><CTL=RST>, anything else with
    // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    let (reply_seq, reply_ack, reply_flags) = if flags & tcp_flags::ACK != 0 {
        (ack, 0u32, tcp_flags::RST)
    } else {
        (
            0u32,
            seq.wrapping_add(payload),
            tcp_flags::RST | tcp_flags::ACK,
        )
    };
    let length = ctx.data_end() - ctx.data();
    let wanted = L4 + 20;
    if length > wanted {
        // SAFETY: shrinking the frame; pointers are re-derived below.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((length - wanted) as i32)) } != 0 {
            return xdp_action::XDP_DROP;
        }
    }
    let Some(frame) = ptr_at::<[u8; L4 + 20]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked above.
    let f = unsafe { &mut *frame };
    // Ethernet: turned around.
    for i in 0..6 {
        f.swap(i, i + 6);
    }
    // IPv4: addresses swapped, fresh header.
    let ip = EthHdr::LEN;
    for i in 0..4 {
        f.swap(ip + 12 + i, ip + 16 + i);
    }
    f[ip] = 0x45;
    f[ip + 1] = 0;
    f[ip + 2..ip + 4].copy_from_slice(&40u16.to_be_bytes());
    f[ip + 4..ip + 6].copy_from_slice(&[0, 0]);
    f[ip + 6..ip + 8].copy_from_slice(&[0x40, 0]);
    f[ip + 8] = 64;
    f[ip + 9] = IPPROTO_TCP;
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for i in 0..10 {
        sum += u16::from_be_bytes([f[ip + 2 * i], f[ip + 2 * i + 1]]) as u32;
    }
    let check = !gateway_common::checksum::fold(sum);
    f[ip + 10..ip + 12].copy_from_slice(&check.to_be_bytes());
    // TCP: ports swapped, RST.
    let t = L4;
    f.swap(t, t + 2);
    f.swap(t + 1, t + 3);
    f[t + 4..t + 8].copy_from_slice(&reply_seq.to_be_bytes());
    f[t + 8..t + 12].copy_from_slice(&reply_ack.to_be_bytes());
    f[t + 12] = 0x50;
    f[t + 13] = reply_flags;
    f[t + 14..t + 20].copy_from_slice(&[0; 6]);
    // Pseudo-header (addresses, protocol, length) + header.
    let mut sum = IPPROTO_TCP as u32 + 20;
    for i in 0..4 {
        sum += u16::from_be_bytes([f[ip + 12 + 2 * i], f[ip + 13 + 2 * i]]) as u32;
    }
    for i in 0..10 {
        sum += u16::from_be_bytes([f[t + 2 * i], f[t + 2 * i + 1]]) as u32;
    }
    let check = !gateway_common::checksum::fold(sum);
    f[t + 16..t + 18].copy_from_slice(&check.to_be_bytes());
    xdp_action::XDP_TX
}
