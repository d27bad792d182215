//! Connection tracking shared by the stateful gateways: the egress-only internet gateway (IPv6)
//! now, the NAT gateway (NAT44, NAT64) later. One table for both families.
//!
//! An entry is keyed by the inside (VPC) endpoint and the remote (internet) endpoint, so the
//! outbound packet (inside = source) and the reply (inside = destination) find the same entry.
//! The table is a plain hash map with explicit expiry: the dataplane treats an entry idle for
//! longer than its state's timeout as absent, and the controller deletes it. Nothing is evicted
//! behind a live flow's back; a full table refuses new flows with a counter.

/// Values of [`ConnKey::kind`]: what owns the entry.
pub mod kind {
    /// A flow through the egress-only internet gateway (no translation).
    pub const EGRESS_ONLY: u8 = 1;
    /// A NAT44 session, keyed as it leaves: inside = private address and port, remote = the
    /// destination. Holds the session's state and counters; `translated_*` is the public side.
    pub const NAT44_OUT: u8 = 2;
    /// The other half of a NAT44 session, keyed as replies arrive: inside = public address and
    /// port, remote = the destination. `translated_*` is the private side; state lives in the
    /// `NAT44_OUT` entry. Inserted and deleted together with it.
    pub const NAT44_IN: u8 = 3;
    /// A NAT64 session, keyed as it leaves: inside = the IPv6 client and its port, remote = the
    /// IPv4 destination (extracted from the NAT64 prefix). Its other half is a `NAT44_IN` entry
    /// (the public IPv4 side is shared with NAT44) whose `translated_family` is 6.
    pub const NAT64_OUT: u8 = 4;
}

/// Key of the `CONNTRACK` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The VPC-side address (IPv4 in the first 4 bytes).
    pub inside_addr: [u8; 16],
    /// The internet-side address.
    pub remote_addr: [u8; 16],
    /// Host byte order. ICMP echo: the identifier in `inside_port`, 0 in `remote_port`.
    pub inside_port: u16,
    pub remote_port: u16,
    /// IANA protocol number of the transport (after extension headers).
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    /// One of [`kind`].
    pub kind: u8,
    pub _pad: u8,
}

/// Values of [`ConnEntry::state`].
pub mod state {
    /// UDP, ICMP and other protocols: seen outbound.
    pub const OPEN: u8 = 0;
    /// TCP: SYN seen from inside, no answer yet.
    pub const TCP_SYN_SENT: u8 = 1;
    /// TCP: both sides have sent a SYN (or the connection was picked up mid-stream).
    pub const TCP_ESTABLISHED: u8 = 2;
    /// TCP: one side has sent a FIN.
    pub const TCP_FIN_WAIT: u8 = 3;
    /// TCP: both sides have sent a FIN.
    pub const TCP_CLOSING: u8 = 4;
    /// TCP: reset by either side.
    pub const TCP_CLOSED: u8 = 5;

    /// A name for `gateway conntrack`.
    pub const fn name(state: u8) -> &'static str {
        match state {
            OPEN => "open",
            TCP_SYN_SENT => "syn-sent",
            TCP_ESTABLISHED => "established",
            TCP_FIN_WAIT => "fin-wait",
            TCP_CLOSING => "closing",
            TCP_CLOSED => "closed",
            _ => "unknown",
        }
    }
}

/// Bits of [`ConnEntry::fin_seen`].
pub const FIN_FROM_INSIDE: u8 = 1;
pub const FIN_FROM_REMOTE: u8 = 2;

/// Value of the `CONNTRACK` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    /// `bpf_ktime_get_coarse_ns` when the entry was created and when a packet last refreshed it.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Packets and bytes from inside and from the remote side (updated with atomic adds).
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// One of [`state`].
    pub state: u8,
    /// [`FIN_FROM_INSIDE`] | [`FIN_FROM_REMOTE`].
    pub fin_seen: u8,
    pub _pad: [u8; 2],
    /// Subnet index of the inside address (flow logs, `gateway conntrack`).
    pub subnet_index: u32,
    /// NAT: the other side of the translation (see [`kind`]); zero for untranslated flows.
    pub translated_addr: [u8; 16],
    /// Host byte order (ICMP echo: the identifier).
    pub translated_port: u16,
    /// NAT: index of the NAT gateway in the config.
    pub gateway: u8,
    /// NAT: the family of `translated_addr` (6 for the inbound half of a NAT64 session), 0 when
    /// there is no translation or it is IPv4.
    pub translated_family: u8,
    pub _pad2: [u8; 4],
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Idle timeouts, in nanoseconds, by state. Value of the one-entry `CONNTRACK_TIMEOUTS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established_ns: u64,
    /// SYN sent, FIN seen, reset.
    pub tcp_transitory_ns: u64,
    pub udp_ns: u64,
    pub icmp_ns: u64,
    /// Any other protocol.
    pub other_ns: u64,
}

const SECOND: u64 = 1_000_000_000;

impl Default for Timeouts {
    /// AWS's NAT gateway numbers: 350 s idle for an established TCP connection, and the RFC
    /// minimums elsewhere (TCP transitory 240 s, UDP 300 s, ICMP 60 s).
    fn default() -> Self {
        Timeouts {
            tcp_established_ns: 350 * SECOND,
            tcp_transitory_ns: 240 * SECOND,
            udp_ns: 300 * SECOND,
            icmp_ns: 60 * SECOND,
            other_ns: 300 * SECOND,
        }
    }
}

impl Timeouts {
    /// The idle timeout of an entry in `state` for `protocol`.
    #[inline(always)]
    pub const fn for_entry(&self, protocol: u8, state: u8) -> u64 {
        match protocol {
            6 => match state {
                state::TCP_ESTABLISHED => self.tcp_established_ns,
                _ => self.tcp_transitory_ns,
            },
            17 => self.udp_ns,
            1 | 58 => self.icmp_ns,
            _ => self.other_ns,
        }
    }
}

/// The TCP state and FIN bits after a packet with `flags` from inside (`outbound`) or from the
/// remote side. Whether the packet may pass is the caller's decision (an inbound packet other
/// than SYN or RST while the entry waits for the answer to its SYN is dropped).
#[inline(always)]
pub const fn tcp_transition(current: u8, fin_seen: u8, flags: u8, outbound: bool) -> (u8, u8) {
    let mut fin_seen = fin_seen;
    if flags & tcp_flags::RST != 0 {
        return (state::TCP_CLOSED, fin_seen);
    }
    if flags & tcp_flags::FIN != 0 {
        fin_seen |= if outbound {
            FIN_FROM_INSIDE
        } else {
            FIN_FROM_REMOTE
        };
    }
    let next = match current {
        state::TCP_SYN_SENT => {
            // The answer to our SYN (SYN-ACK, or a SYN in a simultaneous open) establishes it.
            if !outbound && flags & tcp_flags::SYN != 0 {
                state::TCP_ESTABLISHED
            } else {
                state::TCP_SYN_SENT
            }
        }
        state::TCP_CLOSED => {
            // A new SYN from inside reuses the tuple (as Linux conntrack allows).
            if outbound && flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
                return (state::TCP_SYN_SENT, 0);
            }
            state::TCP_CLOSED
        }
        _ => state::TCP_ESTABLISHED,
    };
    let next = if next == state::TCP_ESTABLISHED || next == state::TCP_FIN_WAIT {
        if fin_seen == FIN_FROM_INSIDE | FIN_FROM_REMOTE {
            state::TCP_CLOSING
        } else if fin_seen != 0 {
            state::TCP_FIN_WAIT
        } else {
            state::TCP_ESTABLISHED
        }
    } else {
        next
    };
    (next, fin_seen)
}

/// The state a new TCP entry starts in, from the first outbound packet's flags. A connection
/// picked up mid-stream (after a restart of the gateway) is taken as established, as Linux
/// conntrack does; a RST creates nothing (`None`).
#[inline(always)]
pub const fn tcp_initial_state(flags: u8) -> Option<u8> {
    if flags & tcp_flags::RST != 0 {
        None
    } else if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
        Some(state::TCP_SYN_SENT)
    } else {
        Some(state::TCP_ESTABLISHED)
    }
}

const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);
const _: () = assert!(core::mem::size_of::<ConnEntry>() == 80);
const _: () = assert!(core::mem::size_of::<Timeouts>() == 40);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: `#[repr(C)]`, integers and byte arrays only, padding explicit.
    unsafe impl aya::Pod for ConnKey {}
    unsafe impl aya::Pod for ConnEntry {}
    unsafe impl aya::Pod for Timeouts {}
}

#[cfg(test)]
mod tests {
    use super::{state::*, tcp_flags::*, *};

    fn run(sequence: &[(u8, bool)]) -> u8 {
        let (first_flags, first_outbound) = sequence[0];
        assert!(first_outbound, "entries are created from inside");
        let mut current = tcp_initial_state(first_flags).expect("creates an entry");
        let mut fins = 0;
        for &(flags, outbound) in &sequence[1..] {
            (current, fins) = tcp_transition(current, fins, flags, outbound);
        }
        current
    }

    #[test]
    fn three_way_handshake_establishes() {
        assert_eq!(run(&[(SYN, true)]), TCP_SYN_SENT);
        assert_eq!(run(&[(SYN, true), (SYN | ACK, false)]), TCP_ESTABLISHED);
        assert_eq!(
            run(&[(SYN, true), (SYN | ACK, false), (ACK, true)]),
            TCP_ESTABLISHED
        );
    }

    #[test]
    fn simultaneous_open_establishes() {
        assert_eq!(
            run(&[(SYN, true), (SYN, false), (SYN | ACK, true)]),
            TCP_ESTABLISHED
        );
    }

    #[test]
    fn inbound_ack_before_syn_ack_does_not_establish() {
        assert_eq!(run(&[(SYN, true), (ACK, false)]), TCP_SYN_SENT);
    }

    #[test]
    fn fins_from_both_sides_close() {
        let established = [(SYN, true), (SYN | ACK, false), (ACK, true)];
        let mut one_fin = established.to_vec();
        one_fin.push((FIN | ACK, true));
        assert_eq!(run(&one_fin), TCP_FIN_WAIT);
        let mut two_fins = one_fin.clone();
        two_fins.push((FIN | ACK, false));
        assert_eq!(run(&two_fins), TCP_CLOSING);
        // The same FIN twice from one side is still one side.
        let mut repeated = one_fin.clone();
        repeated.push((FIN | ACK, true));
        assert_eq!(run(&repeated), TCP_FIN_WAIT);
    }

    #[test]
    fn reset_closes_and_a_new_syn_reopens() {
        assert_eq!(run(&[(SYN, true), (RST | ACK, false)]), TCP_CLOSED);
        assert_eq!(run(&[(SYN, true), (RST, false), (ACK, false)]), TCP_CLOSED);
        assert_eq!(run(&[(SYN, true), (RST, false), (SYN, true)]), TCP_SYN_SENT);
    }

    #[test]
    fn mid_stream_pickup_and_rst_creation() {
        assert_eq!(tcp_initial_state(ACK), Some(TCP_ESTABLISHED));
        assert_eq!(tcp_initial_state(SYN | ACK), Some(TCP_ESTABLISHED));
        assert_eq!(tcp_initial_state(RST), None);
        assert_eq!(tcp_initial_state(RST | ACK), None);
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let timeouts = Timeouts::default();
        assert_eq!(timeouts.for_entry(6, TCP_ESTABLISHED), 350 * SECOND);
        assert_eq!(timeouts.for_entry(6, TCP_SYN_SENT), 240 * SECOND);
        assert_eq!(timeouts.for_entry(6, TCP_CLOSED), 240 * SECOND);
        assert_eq!(timeouts.for_entry(17, OPEN), 300 * SECOND);
        assert_eq!(timeouts.for_entry(58, OPEN), 60 * SECOND);
        assert_eq!(timeouts.for_entry(1, OPEN), 60 * SECOND);
        assert_eq!(timeouts.for_entry(50, OPEN), 300 * SECOND);
    }
}
