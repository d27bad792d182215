//! The test network's addresses and the frame builders. Every frame — input and expected output —
//! is built by etherparse from field values, so each checksum in an expected frame is computed
//! from scratch, independently of the dataplane's incremental updates.

use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Type, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Header, Ipv4Options, PacketBuilder, SingleVlanHeader, VlanId, VlanPcp,
};

pub const INSTANCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x0a];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0x02];
pub const VPC0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const INET0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];

/// An instance with an Elastic IP, and the Elastic IP.
pub const INSTANCE: [u8; 4] = [10, 0, 1, 10];
pub const ELASTIC_IP: [u8; 4] = [203, 0, 113, 10];
/// An instance of the same subnet without an Elastic IP.
pub const INSTANCE_NO_EIP: [u8; 4] = [10, 0, 1, 11];
/// A host in the subnet whose route table has no way out.
pub const ISOLATED_HOST: [u8; 4] = [10, 0, 2, 5];
/// The gateway's own address on vpc0.
pub const GATEWAY_VPC: [u8; 4] = [10, 0, 1, 1];
/// A public address that is not one of our Elastic IPs.
pub const OTHER_PUBLIC: [u8; 4] = [203, 0, 113, 99];
/// A host on the internet, and one inside the blackholed 192.0.2.128/25.
pub const REMOTE: [u8; 4] = [192, 0, 2, 10];
pub const BLACKHOLED: [u8; 4] = [192, 0, 2, 200];
/// The internet router behind inet0.
pub const ROUTER: [u8; 4] = [198, 51, 100, 2];
pub const MULTICAST: [u8; 4] = [224, 0, 0, 5];

pub const INSTANCE6: [u8; 16] = v6([0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 0x10]);
pub const GATEWAY_VPC6: [u8; 16] = v6([0x2001, 0xdb8, 0x1000, 1, 0, 0, 0, 1]);
pub const REMOTE6: [u8; 16] = v6([0x2001, 0xdb8, 0xeeee, 0, 0, 0, 0, 0x10]);
/// The solicited-node multicast address of 2001:db8:1000:1::1.
pub const SOLICITED_NODE6: [u8; 16] = v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 1]);

pub const fn v6(groups: [u16; 8]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let mut index = 0;
    while index < 8 {
        let [high, low] = groups[index].to_be_bytes();
        bytes[2 * index] = high;
        bytes[2 * index + 1] = low;
        index += 1;
    }
    bytes
}

pub const PAYLOAD: &[u8] = b"gateway packet test";
pub const TCP_SEQUENCE: u32 = 0x0102_0304;

/// The Ethernet addressing of a frame (and an optional 802.1Q tag).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan: Option<u16>,
}

impl Link {
    pub const fn tagged(self, vlan: u16) -> Link {
        Link {
            vlan: Some(vlan),
            ..self
        }
    }
}

/// Instance -> vpc0.
pub const FROM_INSTANCE: Link = Link {
    src: INSTANCE_MAC,
    dst: VPC0_MAC,
    vlan: None,
};
/// Router -> inet0.
pub const FROM_INTERNET: Link = Link {
    src: ROUTER_MAC,
    dst: INET0_MAC,
    vlan: None,
};
/// inet0 -> router: what a redirected outbound frame must carry.
pub const TO_INTERNET: Link = Link {
    src: INET0_MAC,
    dst: ROUTER_MAC,
    vlan: None,
};
/// vpc0 -> instance: what a redirected inbound frame must carry.
pub const TO_INSTANCE: Link = Link {
    src: VPC0_MAC,
    dst: INSTANCE_MAC,
    vlan: None,
};

/// An Ethernet frame (with its 802.1Q tag if any) around `payload`.
pub fn frame(link: Link, ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let outer_type = if link.vlan.is_some() {
        EtherType::VLAN_TAGGED_FRAME
    } else {
        ether_type
    };
    let mut bytes = Ethernet2Header {
        source: link.src,
        destination: link.dst,
        ether_type: outer_type,
    }
    .to_bytes()
    .to_vec();
    if let Some(vlan) = link.vlan {
        bytes.extend(
            SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(vlan).expect("VLAN id below 4096"),
                ether_type,
            }
            .to_bytes(),
        );
    }
    bytes.extend_from_slice(payload);
    bytes
}

pub fn eth4(link: Link, packet: Vec<u8>) -> Vec<u8> {
    frame(link, EtherType::IPV4, &packet)
}

pub fn eth6(link: Link, packet: Vec<u8>) -> Vec<u8> {
    frame(link, EtherType::IPV6, &packet)
}

/// The IPv4 header fields the rows vary.
#[derive(Clone, Debug)]
pub struct V4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    /// IPv4 options, a multiple of 4 bytes (IHL = 5 + len / 4).
    pub options: Vec<u8>,
    /// (more fragments, fragment offset in 8-byte units).
    pub fragment: (bool, u16),
}

pub fn v4(src: [u8; 4], dst: [u8; 4], ttl: u8) -> V4 {
    V4 {
        src,
        dst,
        ttl,
        options: Vec::new(),
        fragment: (false, 0),
    }
}

impl V4 {
    pub fn options(mut self, options: &[u8]) -> V4 {
        self.options = options.to_vec();
        self
    }

    pub fn fragment(mut self, more_fragments: bool, offset: u16) -> V4 {
        self.fragment = (more_fragments, offset);
        self
    }

    fn header(&self, protocol: IpNumber) -> Ipv4Header {
        let mut header =
            Ipv4Header::new(0, self.ttl, protocol, self.src, self.dst).expect("IPv4 header");
        header.identification = 0x4242;
        header.dont_fragment = self.fragment == (false, 0);
        header.more_fragments = self.fragment.0;
        header.fragment_offset = IpFragOffset::try_new(self.fragment.1).expect("fragment offset");
        header.options = Ipv4Options::try_from(&self.options[..]).expect("IPv4 options");
        header
    }
}

/// What follows the IP header.
#[derive(Clone, Debug)]
pub enum L4 {
    /// A TCP SYN.
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6 (whichever the IP version needs).
    Icmp4(Icmpv4Type),
    Icmp6(Icmpv6Type),
    /// Raw bytes after the IP header with this protocol number (no transport header is built).
    Raw(IpNumber),
}

pub fn tcp(sport: u16, dport: u16) -> L4 {
    L4::Tcp { sport, dport }
}

pub fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

/// An IPv4 packet (no link layer), every checksum computed by etherparse.
pub fn ipv4(ip: &V4, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let protocol = match &l4 {
        L4::Tcp { .. } => IpNumber::TCP,
        L4::Udp { .. } => IpNumber::UDP,
        L4::Icmp4(_) => IpNumber::ICMP,
        L4::Icmp6(_) => IpNumber::IPV6_ICMP,
        L4::Raw(protocol) => *protocol,
    };
    let builder = PacketBuilder::ip(IpHeaders::Ipv4(ip.header(protocol), Default::default()));
    let written = match l4 {
        L4::Tcp { sport, dport } => builder
            .tcp(sport, dport, TCP_SEQUENCE, 64240)
            .syn()
            .write(&mut out, payload),
        L4::Udp { sport, dport } => builder.udp(sport, dport).write(&mut out, payload),
        L4::Icmp4(icmp) => builder.icmpv4(icmp).write(&mut out, payload),
        L4::Icmp6(_) => panic!("ICMPv6 inside IPv4"),
        L4::Raw(protocol) => {
            let mut header = ip.header(protocol);
            header
                .set_payload_len(payload.len())
                .expect("IPv4 payload length");
            header.header_checksum = header.calc_header_checksum();
            out.extend_from_slice(&header.to_bytes());
            out.extend_from_slice(payload);
            Ok(())
        }
    };
    written.unwrap_or_else(|error| panic!("building an IPv4 packet: {error}"));
    out
}

/// An IPv6 packet (no link layer), every checksum computed by etherparse.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let builder = PacketBuilder::ipv6(src, dst, hop_limit);
    let written = match l4 {
        L4::Tcp { sport, dport } => builder
            .tcp(sport, dport, TCP_SEQUENCE, 64240)
            .syn()
            .write(&mut out, payload),
        L4::Udp { sport, dport } => builder.udp(sport, dport).write(&mut out, payload),
        L4::Icmp6(icmp) => builder.icmpv6(icmp).write(&mut out, payload),
        other => panic!("{other:?} not built over IPv6"),
    };
    written.unwrap_or_else(|error| panic!("building an IPv6 packet: {error}"));
    out
}

/// Length of the IPv4 header at the start of `packet`.
pub fn ihl_bytes(packet: &[u8]) -> usize {
    usize::from(packet[0] & 0x0f) * 4
}

/// One's complement addition of 16-bit words.
pub fn ones_add(a: u16, b: u16) -> u16 {
    let sum = u32::from(a) + u32::from(b);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// Adds `delta` (one's complement) to the 16-bit field at `offset` of `bytes`.
pub fn add_to_field(bytes: &mut [u8], offset: usize, delta: u16) {
    let value = u16::from_be_bytes([bytes[offset], bytes[offset + 1]]);
    bytes[offset..offset + 2].copy_from_slice(&ones_add(value, delta).to_be_bytes());
}

/// Hex dump of `expected` and `actual`, 16 bytes a line, differing bytes marked with `^^`.
pub fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut text = format!(
        "expected {} bytes, actual {} bytes\n",
        expected.len(),
        actual.len()
    );
    let lines = expected.len().max(actual.len()).div_ceil(16);
    for line in 0..lines {
        let range = line * 16..(line + 1) * 16;
        let row = |bytes: &[u8]| -> String {
            range
                .clone()
                .map(|index| match bytes.get(index) {
                    Some(byte) => format!("{byte:02x} "),
                    None => "   ".into(),
                })
                .collect()
        };
        let marks: String = range
            .clone()
            .map(|index| {
                if expected.get(index) == actual.get(index) {
                    "   "
                } else {
                    "^^ "
                }
            })
            .collect();
        text.push_str(&format!(
            "{:04x}  expected {}\n",
            range.start,
            row(expected)
        ));
        text.push_str(&format!("      actual   {}\n", row(actual)));
        if marks.contains('^') {
            text.push_str(&format!("               {marks}\n"));
        }
    }
    text
}
