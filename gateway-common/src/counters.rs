//! Named per-CPU counters: one slot for every verdict and every drop reason of the dataplane.
//!
//! The dataplane increments `COUNTERS[Counter::X as u32]`; the controller sums the per-CPU slots and
//! prints them under [`Counter::name`]. The list is the single source for the kernel side, the
//! `gateway stats` output and the README table.

macro_rules! counters {
    ($($variant:ident => $name:literal, $help:literal;)+) => {
        /// Index of a counter in the `COUNTERS` per-CPU array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($variant,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];

            /// The name users see (`gateway stats`, metrics, README).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }

            /// One line saying what the counter counts.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Counter::$variant => $help,)+
                }
            }
        }
    };
}

counters! {
    RxPackets => "rx_packets", "packets seen by the XDP program on any attached interface";

    PassNotIp => "pass_not_ip", "non-IP frames (ARP, LLDP, ...) handed to the kernel";
    PassNotOurs => "pass_not_ours", "IP traffic the gateway does not own (no subnet, no Elastic IP, link-local, multicast) handed to the kernel";
    PassNeighbourDiscovery => "pass_neighbour_discovery", "IPv6 neighbour and router discovery handed to the kernel";
    PassLocalDestination => "pass_local_destination", "traffic addressed to the gateway itself handed to the kernel";
    PassTtlExpired => "pass_ttl_expired", "TTL or hop limit <= 1: the kernel answers with Time Exceeded";
    PassNoNeighbour => "pass_no_neighbour", "no ARP/ND entry for the next hop yet: the kernel resolves it and forwards";
    PassFragNeeded => "pass_frag_needed", "larger than the egress MTU: the kernel fragments or answers Fragmentation Needed / Packet Too Big";
    PassFibOther => "pass_fib_other", "the kernel FIB could not route it (unreachable, prohibit, forwarding disabled): the kernel decides";
    PassEgressNotAttached => "pass_egress_not_attached", "routed out of an interface the gateway does not attach to: the kernel forwards it";
    PassVlanToKernel => "pass_vlan_to_kernel", "802.1Q-tagged packet translated in XDP and forwarded by the kernel's VLAN device";

    ForwardLocal => "forward_local", "forwarded inside the VPC (route target local)";
    ForwardIgwOutboundIpv4 => "forward_igw_outbound_ipv4", "IPv4 from an instance to the internet, source rewritten to its Elastic IP";
    ForwardIgwInboundIpv4 => "forward_igw_inbound_ipv4", "IPv4 from the internet to an Elastic IP, destination rewritten to the private address";
    ForwardIgwOutboundIpv6 => "forward_igw_outbound_ipv6", "IPv6 from an instance to the internet, unchanged";
    ForwardIgwInboundIpv6 => "forward_igw_inbound_ipv6", "IPv6 from the internet to an instance, unchanged";
    IcmpErrorTranslatedOutbound => "icmp_error_translated_outbound", "ICMP errors from an instance whose quoted packet was translated to the Elastic IP";
    IcmpErrorTranslatedInbound => "icmp_error_translated_inbound", "ICMP errors from the internet whose quoted packet was translated back to the private address";

    DropTruncatedEthernet => "drop_truncated_ethernet", "frame shorter than an Ethernet header";
    DropTruncatedVlan => "drop_truncated_vlan", "frame cut inside the 802.1Q tag";
    DropTruncatedIpv4 => "drop_truncated_ipv4", "frame cut inside the IPv4 header";
    DropMalformedIpv4 => "drop_malformed_ipv4", "IPv4 header with IHL < 5, total length shorter than the header or longer than the frame";
    DropTruncatedIpv6 => "drop_truncated_ipv6", "frame cut inside the IPv6 header or payload length longer than the frame";
    DropTruncatedTcp => "drop_truncated_tcp", "frame cut inside the TCP header";
    DropTruncatedUdp => "drop_truncated_udp", "frame cut inside the UDP header";
    DropTruncatedIcmp => "drop_truncated_icmp", "frame cut inside the ICMP/ICMPv6 header or its quoted packet";
    DropIgwNoPublicIpv4 => "drop_igw_no_public_ipv4", "IPv4 routed to the internet gateway from an address without an Elastic IP";
    DropIgwInboundNoElasticIp => "drop_igw_inbound_no_elastic_ip", "IPv4 from the internet to a private address that has no Elastic IP";
    DropRouteBlackhole => "drop_route_blackhole", "route target blackhole";
    DropNoRoute => "drop_no_route", "no route in the subnet's route table matches the destination";
    DropInboundNotRouted => "drop_inbound_not_routed", "from the internet to a subnet whose route table does not send that source through the internet gateway";
    DropIcmpErrorNoMatch => "drop_icmp_error_no_match", "ICMP error whose quoted packet does not belong to a translated address";
    DropUnsupportedTarget => "drop_unsupported_target", "route target this dataplane version does not implement";
    FastPathForwarded => "fast_path_forwarded", "forwarded from the flow's cached decision and next hop, without route or FIB lookups (also counted under its forward_* counter)";
    DropFastPathRedirect => "drop_fast_path_redirect", "the cached next hop's interface refused the redirect (a translated packet is never sent through the pipeline twice)";
    ForwardEigwOutbound => "forward_eigw_outbound", "IPv6 from an instance through the egress-only internet gateway (state created or refreshed)";
    ForwardEigwInbound => "forward_eigw_inbound", "IPv6 reply through the egress-only internet gateway, matching a tracked flow";
    EigwIcmpErrorRelated => "eigw_icmp_error_related", "ICMPv6 error from the internet let in because the packet it quotes belongs to a tracked flow";
    ConntrackCreated => "conntrack_created", "connection-tracking entries created";
    DropConntrackFull => "drop_conntrack_full", "new flow refused: the connection-tracking table is full (existing flows are not disturbed)";
    DropEigwUnsolicitedTcpSyn => "drop_eigw_unsolicited_tcp_syn", "unsolicited TCP SYN from the internet to an egress-only subnet";
    DropEigwUnsolicitedTcp => "drop_eigw_unsolicited_tcp", "TCP from the internet (ACK, RST, ...) without a tracked flow, or out of step with it";
    DropEigwUnsolicitedUdp => "drop_eigw_unsolicited_udp", "UDP from the internet without a tracked flow";
    DropEigwUnsolicitedIcmpv6 => "drop_eigw_unsolicited_icmpv6", "ICMPv6 informational message (echo request, ...) from the internet without a tracked flow";
    DropEigwUnsolicitedOther => "drop_eigw_unsolicited_other", "other protocol from the internet without a tracked flow";
    DropEigwIcmpErrorNoFlow => "drop_eigw_icmp_error_no_flow", "ICMPv6 error from the internet quoting a packet of no tracked flow";
    DropEigwFragment => "drop_eigw_fragment", "IPv6 non-first fragment from the internet to an egress-only subnet (no ports to match; see README)";
    FlowLogRejectsSkipped => "flow_log_rejects_skipped", "dropped packets of new flows not given a REJECT flow-log record: more than 4096 new rejected flows per second on one CPU (a flood or scan); the drops are counted all the same";
    FlowTableFull => "flow_table_full", "a flow entry could not be created (kernel out of memory): the packet was forwarded but not logged";

    ForwardNatOutbound => "forward_nat_outbound", "IPv4 from a private subnet through a NAT gateway, source translated to a public address and port";
    ForwardNatInbound => "forward_nat_inbound", "IPv4 reply to a NAT session, destination translated back to the private address and port";
    ForwardNatHairpin => "forward_nat_hairpin", "IPv4 from inside to a NAT gateway's public mapping, delivered inside with the public source (RFC 4787 REQ-9)";
    NatConnectionAttempt => "nat_connection_attempt", "new NAT sessions asked for by a packet from inside (AWS ConnectionAttemptCount)";
    NatConnectionEstablished => "nat_connection_established", "NAT sessions established: TCP on the answer to its SYN, UDP and ICMP when created (AWS ConnectionEstablishedCount)";
    NatMappingCreated => "nat_mapping_created", "new public endpoints allocated (endpoint-independent mappings, or endpoint-dependent sessions)";
    NatPortPreserved => "nat_port_preserved", "new public endpoints that kept the private source port";
    NatPortProbes => "nat_port_probes", "ports found taken while allocating (retries of the bounded probe)";
    NatErrorPortAllocation => "nat_error_port_allocation", "new NAT session refused: no free port on any public IP within the probe bound (AWS ErrorPortAllocation)";
    NatIcmpErrorTranslatedInbound => "nat_icmp_error_translated_inbound", "ICMP error from the internet about a NAT session, translated back to the private host (RFC 5508)";
    NatIcmpErrorTranslatedOutbound => "nat_icmp_error_translated_outbound", "ICMP error from a private host about a NAT session's reply, translated to the public side";
    NatFragmentTranslated => "nat_fragment_translated", "later IPv4 fragment translated like the first fragment of its packet";
    NatRstOnIdle => "nat_rst_on_idle", "TCP packet from inside on a timed-out NAT session answered with a RST (rst_on_idle_timeout)";
    NatPacketsInFromSource => "nat_packets_in_from_source", "packets from private hosts to a NAT gateway (AWS PacketsInFromSource)";
    NatBytesInFromSource => "nat_bytes_in_from_source", "bytes (IP) from private hosts to a NAT gateway (AWS BytesInFromSource)";
    NatPacketsOutToDestination => "nat_packets_out_to_destination", "translated packets sent towards the internet (AWS PacketsOutToDestination)";
    NatBytesOutToDestination => "nat_bytes_out_to_destination", "translated bytes sent towards the internet (AWS BytesOutToDestination)";
    NatPacketsInFromDestination => "nat_packets_in_from_destination", "packets from the internet to a NAT gateway's public addresses (AWS PacketsInFromDestination)";
    NatBytesInFromDestination => "nat_bytes_in_from_destination", "bytes from the internet to a NAT gateway's public addresses (AWS BytesInFromDestination)";
    NatPacketsOutToSource => "nat_packets_out_to_source", "translated packets sent to private hosts (AWS PacketsOutToSource)";
    NatBytesOutToSource => "nat_bytes_out_to_source", "translated bytes sent to private hosts (AWS BytesOutToSource)";
    DropNatUnsolicitedTcpSyn => "drop_nat_unsolicited_tcp_syn", "TCP SYN from the internet to a NAT public address without a session (no inbound connections)";
    DropNatUnsolicitedTcp => "drop_nat_unsolicited_tcp", "other TCP from the internet to a NAT public address without a session, or out of step with it";
    DropNatUnsolicitedUdp => "drop_nat_unsolicited_udp", "UDP from the internet to a NAT public address without a session";
    DropNatUnsolicitedIcmp => "drop_nat_unsolicited_icmp", "ICMP query from the internet to a NAT public address without a session (echo requests included)";
    DropNatUnsolicitedOther => "drop_nat_unsolicited_other", "other protocol from the internet to a NAT public address";
    DropNatUnsupportedProtocol => "drop_nat_unsupported_protocol", "from inside through a NAT gateway: not TCP, UDP, ICMP echo request or ICMP error";
    DropNatIcmpErrorNoFlow => "drop_nat_icmp_error_no_flow", "ICMP error about no live NAT session (or not addressed to its endpoint): dropped (RFC 5508 REQ-4/5)";
    DropNatFragmentOutOfOrder => "drop_nat_fragment_out_of_order", "later IPv4 fragment arriving before the first fragment of its packet (no ports to translate with; see README)";
    DropNatTcpNoSession => "drop_nat_tcp_no_session", "TCP RST from inside without a NAT session: nothing to translate it with";
    DropNatNoGateway => "drop_nat_no_gateway", "route to a NAT gateway the dataplane has no settings for (controller not ready)";
    ForwardNat64Outbound => "forward_nat64_outbound", "IPv6 from a private subnet to a NAT gateway's NAT64 prefix, translated to IPv4 from a public address and port (RFC 6146, RFC 7915)";
    ForwardNat64Inbound => "forward_nat64_inbound", "IPv4 reply to a NAT64 session, translated to IPv6 for the client, source embedded in the NAT64 prefix";
    ForwardNat64Hairpin => "forward_nat64_hairpin", "IPv6 from a client to a NAT gateway's own public address through the NAT64 prefix, delivered to the session behind it (RFC 6146 s3.8)";
    Nat64IcmpErrorTranslatedInbound => "nat64_icmp_error_translated_inbound", "ICMPv4 error about a NAT64 session translated to ICMPv6 for the client, quoted packet included (RFC 7915 s4.2)";
    Nat64IcmpErrorTranslatedOutbound => "nat64_icmp_error_translated_outbound", "ICMPv6 error from a client about a NAT64 session's reply translated to ICMPv4 (RFC 7915 s5.2)";
    Nat64UdpChecksumComputed => "nat64_udp_checksum_computed", "IPv4 UDP datagrams without a checksum given one on their way to IPv6 (nat64_udp_zero_checksum = compute)";
    DropNat64UdpZeroChecksum => "drop_nat64_udp_zero_checksum", "IPv4 UDP without a checksum towards a NAT64 client, dropped (nat64_udp_zero_checksum = drop, fragmented, or too long to checksum here)";
    DropNat64NotInPrefix => "drop_nat64_not_in_prefix", "IPv6 routed to a NAT gateway but outside its NAT64 prefix";
    DropNat64NonGlobal => "drop_nat64_non_global", "NAT64 with the well-known prefix 64:ff9b::/96 and a non-global IPv4 address (RFC 6052 s3.1)";
    DropNat64Fragment => "drop_nat64_fragment", "fragment through NAT64 that is not translated: ICMP/ICMPv6 (RFC 7915), a first fragment without its whole transport header, extension headers after the Fragment header, or a hairpinned fragment (see README)";
    DropNat64SourceRoute => "drop_nat64_source_route", "IPv4 with an unexpired source route option towards a NAT64 client (RFC 7915 s4.1)";
    DropNat64RoutingHeader => "drop_nat64_routing_header", "IPv6 with a Routing header with segments left through NAT64 (RFC 7915 s5.1)";
    DropNat64ExtensionHeaders => "drop_nat64_extension_headers", "IPv6 through NAT64 with more or longer extension headers than the dataplane walks, or ESP/AH";
    DropNat64IcmpUntranslatable => "drop_nat64_icmp_untranslatable", "ICMP message with no counterpart in the other family (RFC 7915 tables), or an ICMPv6 informational other than echo";
    DropNat64HeadAdjust => "drop_nat64_head_adjust", "the frame's headroom could not be resized to the other family's header";
    Nat64FragNeededSent => "nat64_frag_needed_sent", "IPv4 replies with DF set too big for the NAT64 client's link once translated, answered with ICMPv4 fragmentation needed (RFC 7915 s4)";
    DropNat64TooBig => "drop_nat64_too_big", "IPv4 reply too big for the NAT64 client's link that could not be answered with fragmentation needed (VLAN-tagged or malformed)";
    DropTailCall => "drop_tail_call", "a cold path's tail-called program is missing (not loaded by the controller) or was handed a packet it cannot parse";
    DropNat64HairpinFromIpv4 => "drop_nat64_hairpin_from_ipv4", "IPv4 from inside to a public endpoint held by a NAT64 session (only IPv6 clients hairpin through NAT64)";
    Nat64FragmentTranslated => "nat64_fragment_translated", "fragment translated through NAT64, either way, identification, offset and more-fragments flag carried over (RFC 7915 s4.1, s5.1; also counted under its forward_nat64_* counter)";
    DropNat64FragmentOutOfOrder => "drop_nat64_fragment_out_of_order", "later IPv6 fragment from a NAT64 client arriving before the first fragment of its packet (no ports to translate with; see README)";
}

/// Number of counters; the size of the `COUNTERS` map.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's counter table is what users read: it must name every counter.
    #[test]
    fn readme_lists_every_counter() {
        let readme = include_str!("../../README.md");
        for counter in Counter::ALL {
            assert!(
                readme.contains(&std::format!(
                    "| `{}` | {} |",
                    counter.name(),
                    counter.help()
                )),
                "README.md's counter table lacks `{}` (or its text differs from counters.rs)",
                counter.name()
            );
        }
    }

    #[test]
    fn indices_follow_declaration_order_and_names_are_unique() {
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
            assert!(!counter.help().is_empty());
            for other in &Counter::ALL[index + 1..] {
                assert_ne!(counter.name(), other.name());
            }
        }
    }
}
