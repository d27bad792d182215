//! The generator's frames, built whole in userspace: the template the kernel copies into every
//! live-frame page, and the per-flow frames the self-test compares the generator's output with.
//!
//! Flow `i` differs from flow 0 only in the source address (its last 32 bits plus
//! `i & (2^addr_bits - 1)`) and the source port (plus `i >> addr_bits`); the generator derives its
//! checksums from flow 0's incrementally, these functions compute them from scratch.

use std::net::IpAddr;

use anyhow::{bail, ensure};

/// The destination port of every generated packet (the discard service); the sink counts only
/// these (mirrors `BENCH_PORT` in gateway-ebpf/src/bench.rs).
pub const BENCH_PORT: u16 = 9;
/// The first source port.
pub const FIRST_SOURCE_PORT: u16 = 1024;
/// TCP flags of the generated segments: ACK (an established flow) or SYN (a connection attempt).
pub const TCP_ACK: u8 = 0x10;
pub const TCP_SYN: u8 = 0x02;

use super::Protocol;

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => 17,
            Protocol::Tcp => 6,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Protocol::Udp => 8,
            Protocol::Tcp => 20,
        }
    }

    /// Offset of the checksum inside the transport header.
    fn check_offset(self) -> usize {
        match self {
            Protocol::Udp => 6,
            Protocol::Tcp => 16,
        }
    }
}

/// Everything that makes the generator's frames.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Flow 0's source; both addresses of the same family.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Requested frame length without FCS; raised to the headers' length when smaller.
    pub size: usize,
    pub ttl: u8,
    /// TCP flags ([`TCP_ACK`] or [`TCP_SYN`]); ignored for UDP.
    pub tcp_flags: u8,
    /// Flow count (a power of two) and how many of its low bits pick the source address.
    pub flows: u32,
    pub addr_bits: u32,
}

impl FrameSpec {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.flows.is_power_of_two(),
            "flow count {} is not a power of two",
            self.flows
        );
        ensure!(
            1u32.checked_shl(self.addr_bits)
                .is_some_and(|addresses| addresses <= self.flows),
            "{} address bits for {} flows",
            self.addr_bits,
            self.flows
        );
        let ports = self.flows >> self.addr_bits;
        ensure!(
            u32::from(FIRST_SOURCE_PORT) + ports <= 65536,
            "{ports} source ports per address do not fit above {FIRST_SOURCE_PORT}"
        );
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            bail!(
                "source {} and destination {} differ in family",
                self.src,
                self.dst
            );
        }
        Ok(())
    }

    fn l3_len(&self) -> usize {
        if self.src.is_ipv4() { 20 } else { 40 }
    }

    /// The frame length actually used.
    pub fn frame_len(&self) -> usize {
        self.size
            .max(14 + self.l3_len() + self.protocol.header_len())
    }

    /// Source address and port of flow `index` (taken modulo the flow count).
    pub fn flow(&self, index: u32) -> (IpAddr, u16) {
        let index = index & (self.flows - 1);
        let addr_index = index & ((1u32 << self.addr_bits) - 1);
        let port = FIRST_SOURCE_PORT.wrapping_add((index >> self.addr_bits) as u16);
        let src = match self.src {
            IpAddr::V4(base) => IpAddr::V4(u32::from(base).wrapping_add(addr_index).into()),
            IpAddr::V6(base) => {
                let base = u128::from(base);
                let low = (base as u32).wrapping_add(addr_index);
                IpAddr::V6(((base & !0xffff_ffff) | u128::from(low)).into())
            }
        };
        (src, port)
    }

    /// The whole frame of flow `index`, checksums computed from scratch.
    pub fn frame(&self, index: u32) -> Vec<u8> {
        let (src, src_port) = self.flow(index);
        self.build(
            (self.dst_mac, self.src_mac),
            (src, src_port),
            (self.dst, BENCH_PORT),
        )
    }

    /// The frame going the other way in flow `index` (the reply to [`FrameSpec::frame`], or the
    /// packet a reply answers): addresses and ports swapped, sent from `src_mac` to `dst_mac`.
    pub fn reverse_frame(&self, index: u32, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let (src, src_port) = self.flow(index);
        self.build((dst_mac, src_mac), (self.dst, BENCH_PORT), (src, src_port))
    }

    /// A frame of this spec's protocol, size and TTL between two endpoints (address, port).
    fn build(
        &self,
        (dst_mac, src_mac): ([u8; 6], [u8; 6]),
        (src, src_port): (IpAddr, u16),
        (dst, dst_port): (IpAddr, u16),
    ) -> Vec<u8> {
        let len = self.frame_len();
        let l3_len = self.l3_len();
        let l4 = 14 + l3_len;
        let l4_len = len - l4;
        let mut frame = vec![0u8; len];
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&src_mac);
        // The payload is a recognisable pattern, never touched by anyone on the way.
        for (offset, byte) in frame[l4 + self.protocol.header_len()..]
            .iter_mut()
            .enumerate()
        {
            *byte = offset as u8;
        }
        let pseudo = match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                let ip = &mut frame[14..34];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
                // Don't fragment, like the TCP and QUIC traffic a gateway mostly sees.
                ip[6] = 0x40;
                ip[8] = self.ttl;
                ip[9] = self.protocol.number();
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let check = !fold(sum(ip));
                ip[10..12].copy_from_slice(&check.to_be_bytes());
                let mut pseudo = Vec::with_capacity(12);
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, self.protocol.number()]);
                pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
                pseudo
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                let ip = &mut frame[14..54];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                ip[6] = self.protocol.number();
                ip[7] = self.ttl;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                let mut pseudo = Vec::with_capacity(40);
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, self.protocol.number()]);
                pseudo
            }
            _ => unreachable!("validate() rejects mixed families"),
        };
        {
            let transport = &mut frame[l4..];
            transport[0..2].copy_from_slice(&src_port.to_be_bytes());
            transport[2..4].copy_from_slice(&dst_port.to_be_bytes());
            match self.protocol {
                Protocol::Udp => {
                    transport[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                }
                Protocol::Tcp => {
                    // Data offset 5 words, the spec's flags, some window.
                    transport[12] = 5 << 4;
                    transport[13] = self.tcp_flags;
                    transport[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
                }
            }
        }
        let mut check = !fold(sum(&pseudo) + sum(&frame[l4..]));
        if self.protocol == Protocol::Udp && check == 0 {
            check = 0xffff;
        }
        let at = l4 + self.protocol.check_offset();
        frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
        frame
    }

    /// Checksums of flow 0 as the generator reads them: (IPv4 header or 0, transport).
    pub fn template_checksums(&self) -> (u16, u16) {
        let frame = self.frame(0);
        let l4 = 14 + self.l3_len();
        let ip = if self.src.is_ipv4() {
            u16::from_be_bytes([frame[24], frame[25]])
        } else {
            0
        };
        let at = l4 + self.protocol.check_offset();
        (ip, u16::from_be_bytes([frame[at], frame[at + 1]]))
    }
}

/// One's complement sum of 16-bit big-endian words (odd tail padded with zero), unfolded.
fn sum(bytes: &[u8]) -> u32 {
    let mut total = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        total += u32::from(word);
    }
    total
}

fn fold(mut total: u32) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

/// Whether a frame's IPv4 header and TCP/UDP checksums verify (used by the self-test on the
/// generator's real output). Returns the reason when they do not.
pub fn verify_checksums(frame: &[u8], protocol: Protocol) -> Result<(), String> {
    let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    let (pseudo, l4) = match ether_type {
        0x0800 => {
            if fold(sum(&frame[14..34])) != 0xffff {
                return Err("IPv4 header checksum".into());
            }
            let mut pseudo = frame[26..34].to_vec();
            pseudo.extend_from_slice(&[0, frame[23]]);
            let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
            pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
            (pseudo, 34)
        }
        0x86dd => {
            let mut pseudo = frame[22..54].to_vec();
            pseudo.extend_from_slice(
                &u32::from(u16::from_be_bytes([frame[18], frame[19]])).to_be_bytes(),
            );
            pseudo.extend_from_slice(&[0, 0, 0, frame[20]]);
            (pseudo, 54)
        }
        other => return Err(format!("ether type {other:#06x}")),
    };
    let check_at = l4 + protocol.check_offset();
    if protocol == Protocol::Udp && frame[check_at] == 0 && frame[check_at + 1] == 0 {
        return Err("UDP checksum 0".into());
    }
    if fold(sum(&pseudo) + sum(&frame[l4..])) != 0xffff {
        return Err(format!("{protocol:?} checksum"));
    }
    Ok(())
}

/// The fields of a UDP frame (untagged Ethernet, IPv4 without options or IPv6 without extension
/// headers) that a translation must get right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Parses a UDP frame whose lengths agree with each other and whose checksums verify.
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame<'_>, String> {
    let at = |range: std::ops::Range<usize>| {
        frame
            .get(range.clone())
            .ok_or_else(|| format!("{}-byte frame cut before byte {}", frame.len(), range.end))
    };
    let word = |offset: usize| -> Result<u16, String> {
        let bytes = at(offset..offset + 2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let (src, dst, ttl, protocol, l4) = match word(12)? {
        0x0800 => {
            let ip = at(14..34)?;
            if ip[0] != 0x45 {
                return Err(format!("IPv4 version/IHL byte {:#04x}", ip[0]));
            }
            if usize::from(word(16)?) != frame.len() - 14 {
                return Err(format!(
                    "IPv4 total length {} in a {}-byte frame",
                    word(16)?,
                    frame.len()
                ));
            }
            let address = |offset: usize| {
                IpAddr::from(<[u8; 4]>::try_from(&ip[offset..offset + 4]).unwrap_or_default())
            };
            (address(12), address(16), ip[8], ip[9], 34)
        }
        0x86dd => {
            let ip = at(14..54)?;
            if usize::from(word(18)?) != frame.len() - 54 {
                return Err(format!(
                    "IPv6 payload length {} in a {}-byte frame",
                    word(18)?,
                    frame.len()
                ));
            }
            let address = |offset: usize| {
                IpAddr::from(<[u8; 16]>::try_from(&ip[offset..offset + 16]).unwrap_or_default())
            };
            (address(8), address(24), ip[7], ip[6], 54)
        }
        other => return Err(format!("ether type {other:#06x}")),
    };
    if protocol != Protocol::Udp.number() {
        return Err(format!("protocol {protocol}, not UDP"));
    }
    if usize::from(word(l4 + 4)?) != frame.len() - l4 {
        return Err(format!(
            "UDP length {} in a {}-byte frame",
            word(l4 + 4)?,
            frame.len()
        ));
    }
    verify_checksums(frame, Protocol::Udp)?;
    let mac = |offset: usize| -> Result<[u8; 6], String> {
        at(offset..offset + 6).map(|bytes| bytes.try_into().unwrap_or_default())
    };
    Ok(UdpFrame {
        dst_mac: mac(0)?,
        src_mac: mac(6)?,
        src,
        dst,
        ttl,
        src_port: word(l4)?,
        dst_port: word(l4 + 2)?,
        payload: &frame[l4 + 8..],
    })
}

/// Checks that `output` is the stateful NAT64 translation (RFC 7915 headers, RFC 6052 addresses
/// with the /96 `prefix`) of the UDP frame `input`, in either direction, as far as it does not
/// depend on the session: the other family, 20 bytes shorter (IPv6 -> IPv4) or longer, checksums
/// right, TTL / hop limit one less, the payload untouched, and the address and port of the side
/// that the prefix maps carried over (IPv6 -> IPv4: the destination; IPv4 -> IPv6: the source).
/// Returns the parsed output for the caller to check the session's side.
pub fn check_nat64<'a>(
    input: &[u8],
    output: &'a [u8],
    prefix: std::net::Ipv6Addr,
) -> Result<UdpFrame<'a>, String> {
    let sent = parse_udp(input).map_err(|reason| format!("the input: {reason}"))?;
    let translated = parse_udp(output).map_err(|reason| format!("the translation: {reason}"))?;
    let embedded = |ipv4: std::net::Ipv4Addr| {
        IpAddr::V6((u128::from(prefix) | u128::from(u32::from(ipv4))).into())
    };
    match (sent.dst, translated.dst, sent.src, translated.src) {
        (IpAddr::V6(_), IpAddr::V4(ipv4), _, _) => {
            if output.len() + 20 != input.len() {
                return Err(format!("{} bytes from {}", output.len(), input.len()));
            }
            if sent.dst != embedded(ipv4) {
                return Err(format!("destination {} from {}", translated.dst, sent.dst));
            }
            if translated.dst_port != sent.dst_port {
                return Err(format!(
                    "destination port {} from {}",
                    translated.dst_port, sent.dst_port
                ));
            }
        }
        (IpAddr::V4(_), IpAddr::V6(_), IpAddr::V4(ipv4), _) => {
            if output.len() != input.len() + 20 {
                return Err(format!("{} bytes from {}", output.len(), input.len()));
            }
            if translated.src != embedded(ipv4) {
                return Err(format!("source {} from {}", translated.src, sent.src));
            }
            if translated.src_port != sent.src_port {
                return Err(format!(
                    "source port {} from {}",
                    translated.src_port, sent.src_port
                ));
            }
        }
        _ => {
            return Err(format!(
                "{} -> {} became {} -> {}: not translated to the other family",
                sent.src, sent.dst, translated.src, translated.dst
            ));
        }
    }
    if u16::from(translated.ttl) + 1 != u16::from(sent.ttl) {
        return Err(format!("TTL {} from {}", translated.ttl, sent.ttl));
    }
    if translated.payload != sent.payload {
        return Err("the payload changed".into());
    }
    Ok(translated)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use gateway_common_checksum::update;

    use super::*;

    /// The generator's incremental arithmetic (gateway_common::checksum, RFC 1624), restated so
    /// that this test needs no BPF build.
    mod gateway_common_checksum {
        pub fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
            let mut total = u32::from(!check);
            for (old, new) in old.chunks(2).zip(new.chunks(2)) {
                total += u32::from(!u16::from_be_bytes([old[0], old[1]]));
                total += u32::from(u16::from_be_bytes([new[0], new[1]]));
            }
            !super::fold(total)
        }
    }

    fn spec(src: IpAddr, dst: IpAddr, protocol: Protocol, flows: u32, addr_bits: u32) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0, 0, 1, 2],
            src_mac: [2, 0, 0, 0, 1, 1],
            src,
            dst,
            protocol,
            size: 64,
            ttl: 64,
            tcp_flags: TCP_ACK,
            flows,
            addr_bits,
        }
    }

    fn specs() -> Vec<FrameSpec> {
        let v4 = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)),
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        );
        let v6 = (
            IpAddr::V6("2001:db8:1000:1::1:0".parse::<Ipv6Addr>().unwrap()),
            IpAddr::V6("2001:db8:beef::1".parse::<Ipv6Addr>().unwrap()),
        );
        let mut specs = Vec::new();
        for (src, dst) in [v4, v6] {
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                specs.push(spec(src, dst, protocol, 1 << 20, 10));
            }
        }
        specs
    }

    #[test]
    fn frames_parse_and_verify() {
        for spec in specs() {
            spec.validate().unwrap();
            for index in [0, 1, 1023, 1024, 777_777] {
                let frame = spec.frame(index);
                assert_eq!(frame.len(), spec.frame_len());
                verify_checksums(&frame, spec.protocol).unwrap();
                let packet = SlicedPacket::from_ethernet(&frame).unwrap();
                let (src, port) = spec.flow(index);
                match packet.net.unwrap() {
                    NetSlice::Ipv4(ip) => {
                        assert_eq!(IpAddr::V4(ip.header().source_addr()), src);
                        assert_eq!(ip.header().ttl(), 64);
                    }
                    NetSlice::Ipv6(ip) => {
                        assert_eq!(IpAddr::V6(ip.header().source_addr()), src);
                        assert_eq!(ip.header().hop_limit(), 64);
                    }
                    _ => panic!("not IP"),
                }
                let (sport, dport) = match packet.transport.unwrap() {
                    TransportSlice::Udp(udp) => (udp.source_port(), udp.destination_port()),
                    TransportSlice::Tcp(tcp) => (tcp.source_port(), tcp.destination_port()),
                    _ => panic!("not TCP/UDP"),
                };
                assert_eq!((sport, dport), (port, BENCH_PORT));
            }
        }
    }

    #[test]
    fn flows_spread_over_addresses_then_ports() {
        let spec = &specs()[0];
        assert_eq!(spec.flow(0), (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 1024));
        assert_eq!(
            spec.flow(1023),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 4, 255)), 1024)
        );
        assert_eq!(
            spec.flow(1024),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 1025)
        );
        // Wraps at the flow count.
        assert_eq!(spec.flow(1 << 20), spec.flow(0));
    }

    /// What the generator does: flow 0's checksums adjusted for the new source address word and
    /// port give the same frame as building it whole.
    #[test]
    fn incremental_checksums_match_whole_frames() {
        for spec in specs() {
            let (ip0, l40) = spec.template_checksums();
            let (src0, port0) = spec.flow(0);
            let low = |addr: IpAddr| match addr {
                IpAddr::V4(a) => a.octets(),
                IpAddr::V6(a) => {
                    let o = a.octets();
                    [o[12], o[13], o[14], o[15]]
                }
            };
            for index in [1, 2, 1023, 1024, 65_535, 1_048_575] {
                let (src, port) = spec.flow(index);
                let whole = spec.frame(index);
                let l4_check = update(
                    update(l40, &low(src0), &low(src)),
                    &port0.to_be_bytes(),
                    &port.to_be_bytes(),
                );
                let l4_check = if spec.protocol == Protocol::Udp && l4_check == 0 {
                    0xffff
                } else {
                    l4_check
                };
                let l4 = if src.is_ipv4() { 34 } else { 54 };
                let at = l4 + spec.protocol.check_offset();
                assert_eq!(
                    u16::from_be_bytes([whole[at], whole[at + 1]]),
                    l4_check,
                    "{spec:?} flow {index}"
                );
                if src.is_ipv4() {
                    let ip_check = update(ip0, &low(src0), &low(src));
                    assert_eq!(u16::from_be_bytes([whole[24], whole[25]]), ip_check);
                }
            }
        }
    }

    #[test]
    fn reverse_frames_swap_the_endpoints() {
        for spec in specs() {
            let (src, port) = spec.flow(777);
            let reply = spec.reverse_frame(777, [2, 0, 0, 0, 9, 1], [2, 0, 0, 0, 9, 2]);
            assert_eq!(reply.len(), spec.frame_len());
            assert_eq!(&reply[..12], &[2, 0, 0, 0, 9, 1, 2, 0, 0, 0, 9, 2]);
            verify_checksums(&reply, spec.protocol).unwrap();
            let packet = SlicedPacket::from_ethernet(&reply).unwrap();
            let (reply_src, reply_dst) = match packet.net.unwrap() {
                NetSlice::Ipv4(ip) => (
                    IpAddr::V4(ip.header().source_addr()),
                    IpAddr::V4(ip.header().destination_addr()),
                ),
                NetSlice::Ipv6(ip) => (
                    IpAddr::V6(ip.header().source_addr()),
                    IpAddr::V6(ip.header().destination_addr()),
                ),
                _ => panic!("not IP"),
            };
            assert_eq!((reply_src, reply_dst), (spec.dst, src));
            let ports = match packet.transport.unwrap() {
                TransportSlice::Udp(udp) => (udp.source_port(), udp.destination_port()),
                TransportSlice::Tcp(tcp) => (tcp.source_port(), tcp.destination_port()),
                _ => panic!("not TCP/UDP"),
            };
            assert_eq!(ports, (BENCH_PORT, port));
        }
    }

    #[test]
    fn syn_frames() {
        let mut spec = specs()[1].clone();
        assert_eq!(spec.protocol, Protocol::Tcp);
        spec.tcp_flags = TCP_SYN;
        let frame = spec.frame(3);
        verify_checksums(&frame, Protocol::Tcp).unwrap();
        match SlicedPacket::from_ethernet(&frame)
            .unwrap()
            .transport
            .unwrap()
        {
            TransportSlice::Tcp(tcp) => assert!(tcp.syn() && !tcp.ack()),
            _ => panic!("not TCP"),
        }
    }

    /// A NAT64 session as the bench's S5 sees it: client -> 2001:db8:64::198.19.0.1, translated
    /// to 198.18.16.0:1024 -> 198.19.0.1, and the reply.
    fn nat64_frames() -> (FrameSpec, FrameSpec) {
        let client = spec(
            IpAddr::V6("2001:db8:1000:3::1:0".parse::<Ipv6Addr>().unwrap()),
            IpAddr::V6("2001:db8:64::c613:1".parse::<Ipv6Addr>().unwrap()),
            Protocol::Udp,
            1,
            0,
        );
        let public = FrameSpec {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 16, 0)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            ..client.clone()
        };
        (client, public)
    }

    const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0);

    #[test]
    fn nat64_translations_check_out() {
        let (client, public) = nat64_frames();
        let request = client.frame(0);
        let translated = FrameSpec {
            size: request.len() - 20,
            ttl: 63,
            ..public.clone()
        }
        .frame(0);
        let out = check_nat64(&request, &translated, PREFIX).unwrap();
        assert_eq!(out.src, public.src);
        assert_eq!(
            (out.src_port, out.dst_port),
            (FIRST_SOURCE_PORT, BENCH_PORT)
        );

        let reply = public.reverse_frame(0, [2, 0, 0, 0, 9, 1], [2, 0, 0, 0, 9, 2]);
        let back = FrameSpec {
            size: reply.len() + 20,
            ttl: 63,
            ..client.clone()
        }
        .reverse_frame(0, [2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]);
        let out = check_nat64(&reply, &back, PREFIX).unwrap();
        assert_eq!(out.dst, client.src);
        assert_eq!(out.dst_mac, [2, 0, 0, 0, 1, 1]);
        assert_eq!(out.payload.len(), reply.len() - 42);
    }

    #[test]
    fn nat64_check_finds_what_is_wrong() {
        let (client, public) = nat64_frames();
        let request = client.frame(0);
        let translation = |spec: FrameSpec| spec.frame(0);
        let good = FrameSpec {
            size: request.len() - 20,
            ttl: 63,
            ..public.clone()
        };
        let error = |output: &[u8]| check_nat64(&request, output, PREFIX).unwrap_err();
        assert!(error(&request).contains("not translated"));
        assert!(
            error(&translation(FrameSpec {
                ttl: 64,
                ..good.clone()
            }))
            .contains("TTL")
        );
        assert!(
            error(&translation(FrameSpec {
                size: 64,
                ..good.clone()
            }))
            .contains("bytes")
        );
        let elsewhere = FrameSpec {
            dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
            ..good.clone()
        };
        assert!(error(&translation(elsewhere)).contains("destination"));
        let mut damaged = translation(good.clone());
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(error(&damaged).contains("checksum"));
        let mut cut = translation(good);
        cut.truncate(30);
        assert!(error(&cut).contains("cut"));
    }

    #[test]
    fn validation() {
        let mut bad = specs()[0].clone();
        bad.flows = 1000;
        assert!(bad.validate().is_err());
        bad.flows = 1 << 20;
        bad.addr_bits = 1;
        assert!(bad.validate().is_err(), "2^19 ports per address do not fit");
        bad.addr_bits = 21;
        assert!(bad.validate().is_err());
    }
}
