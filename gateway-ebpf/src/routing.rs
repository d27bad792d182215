//! Route selection, as a VPC route table does it: the source address picks the subnet and so its
//! route table, the longest prefix match on the destination picks the target. Traffic arriving
//! from the internet is accepted only for a subnet whose route table sends that source back
//! through the gateway it came from (for IPv4 that is the internet gateway's Elastic IPs).

use aya_ebpf::{bindings::xdp_action, maps::lpm_trie::Key, programs::XdpContext};
use gateway_common::{
    Counter,
    maps::{RouteKeyV4, RouteKeyV6, RouteTarget, SubnetInfo, direction, target},
};

use crate::{
    counters::{count, drop, pass},
    eigw,
    flow::{self, Handling},
    forwarding, igw,
    maps::{NAT_PUBLIC_IPS, ROUTES_V4, ROUTES_V6, SUBNETS_V4, SUBNETS_V6},
    nat44, nat64,
    parsing::{Ipv4Packet, Ipv6Packet},
};

/// Subnet info for an IPv4 address, if it is inside a subnet.
#[inline(always)]
pub fn subnet_v4(addr: [u8; 4]) -> Option<SubnetInfo> {
    SUBNETS_V4.get(Key::new(32, addr)).copied()
}

/// Subnet info for an IPv6 address. Out of line with a scalar result, so the 20-byte key lives
/// in its own small frame rather than in the IPv6 path's.
#[inline(never)]
fn subnet_v6_packed(addr: &[u8; 16]) -> u64 {
    match SUBNETS_V6.get(Key::new(128, *addr)) {
        Some(info) => ((info.route_table as u64) << 32) | info.subnet_index as u64,
        None => u64::MAX,
    }
}

#[inline(always)]
pub fn subnet_v6(addr: &[u8; 16]) -> Option<SubnetInfo> {
    let packed = subnet_v6_packed(addr);
    (packed != u64::MAX).then_some(SubnetInfo {
        route_table: (packed >> 32) as u32,
        subnet_index: packed as u32,
    })
}

/// Longest-prefix route for `destination` in `route_table`.
#[inline(always)]
pub fn route_v4(route_table: u32, destination: [u8; 4]) -> Option<RouteTarget> {
    let key = Key::new(
        32 + 32,
        RouteKeyV4 {
            route_table: route_table.to_be_bytes(),
            destination,
        },
    );
    ROUTES_V4.get(&key).copied()
}

/// The target kind of the longest-prefix IPv6 route, 0 for none. Out of line for the same
/// reason as [`subnet_v6_packed`].
#[inline(never)]
fn route_v6_kind(route_table: u32, destination: &[u8; 16]) -> u32 {
    route_v6(route_table, destination).map_or(0, |route| route.kind)
}

/// The route of an IPv6 destination: its target kind and gateway index.
#[inline(always)]
fn route_v6(route_table: u32, destination: &[u8; 16]) -> Option<RouteTarget> {
    let key = Key::new(
        32 + 128,
        RouteKeyV6 {
            route_table: route_table.to_be_bytes(),
            destination: *destination,
        },
    );
    ROUTES_V6.get(&key).copied()
}

/// Drops an IPv4 packet and records it as a REJECT flow.
#[inline(always)]
pub fn reject_v4(
    packet: &Ipv4Packet,
    ingress: u32,
    reason: Counter,
    subnet_index: u32,
    flow_direction: u8,
) -> u32 {
    let handling = Handling::new(0, flow_direction, Some(reason), subnet_index);
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(packet.src, packet.src_port),
        flow::endpoint(packet.dst, packet.dst_port),
        handling,
    );
    drop(reason)
}

/// Drops an IPv6 packet and records it as a REJECT flow.
#[inline(always)]
pub fn reject_v6(
    packet: &Ipv6Packet,
    ingress: u32,
    reason: Counter,
    subnet_index: u32,
    flow_direction: u8,
) -> u32 {
    flow::account_v6(
        packet,
        ingress,
        Handling::new(0, flow_direction, Some(reason), subnet_index),
    );
    drop(reason)
}

#[inline(always)]
pub fn ipv4(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, facing_internet: bool) -> u32 {
    if facing_internet {
        // SAFETY: plain data copied out.
        if let Some(gateway) = unsafe { NAT_PUBLIC_IPS.get(packet.dst) }.copied() {
            return nat44::inbound(ctx, packet, ingress, gateway);
        }
        return igw::inbound_ipv4(ctx, packet, ingress);
    }
    let Some(subnet) = subnet_v4(packet.src) else {
        return pass(Counter::PassNotOurs);
    };
    let Some(route) = route_v4(subnet.route_table, packet.dst) else {
        return reject_v4(
            packet,
            ingress,
            Counter::DropNoRoute,
            subnet.subnet_index,
            direction::EGRESS,
        );
    };
    match route.kind {
        target::LOCAL => forward_local_v4(ctx, packet, ingress, subnet.subnet_index),
        target::INTERNET_GATEWAY => igw::outbound_ipv4(ctx, packet, ingress, subnet.subnet_index),
        target::NAT_GATEWAY => nat44::outbound(
            ctx,
            packet,
            ingress,
            subnet.subnet_index,
            route.gateway_index,
        ),
        target::BLACKHOLE => reject_v4(
            packet,
            ingress,
            Counter::DropRouteBlackhole,
            subnet.subnet_index,
            direction::EGRESS,
        ),
        _ => reject_v4(
            packet,
            ingress,
            Counter::DropUnsupportedTarget,
            subnet.subnet_index,
            direction::EGRESS,
        ),
    }
}

#[inline(always)]
pub fn ipv6(ctx: &XdpContext, packet: &Ipv6Packet, ingress: u32, facing_internet: bool) -> u32 {
    if facing_internet {
        // Inbound: the destination's subnet must route the source back through a gateway that
        // lets it in: the internet gateway always, the egress-only gateway for tracked flows.
        let Some(subnet) = subnet_v6(&packet.dst) else {
            return pass(Counter::PassNotOurs);
        };
        return match route_v6_kind(subnet.route_table, &packet.src) {
            target::INTERNET_GATEWAY => igw::pass_through_ipv6(
                ctx,
                packet,
                ingress,
                subnet.subnet_index,
                direction::INGRESS,
            ),
            target::EGRESS_ONLY_INTERNET_GATEWAY => {
                eigw::inbound(ctx, packet, ingress, subnet.subnet_index)
            }
            _ => reject_v6(
                packet,
                ingress,
                Counter::DropInboundNotRouted,
                subnet.subnet_index,
                direction::INGRESS,
            ),
        };
    }
    let Some(subnet) = subnet_v6(&packet.src) else {
        return pass(Counter::PassNotOurs);
    };
    let route = route_v6(subnet.route_table, &packet.dst).unwrap_or_default();
    match route.kind {
        0 => reject_v6(
            packet,
            ingress,
            Counter::DropNoRoute,
            subnet.subnet_index,
            direction::EGRESS,
        ),
        target::LOCAL => igw::pass_through_ipv6(
            ctx,
            packet,
            ingress,
            subnet.subnet_index,
            direction::INTERNAL,
        ),
        target::INTERNET_GATEWAY => {
            igw::pass_through_ipv6(ctx, packet, ingress, subnet.subnet_index, direction::EGRESS)
        }
        target::EGRESS_ONLY_INTERNET_GATEWAY => {
            eigw::outbound(ctx, packet, ingress, subnet.subnet_index)
        }
        target::NAT_GATEWAY => nat64::outbound(
            ctx,
            packet,
            ingress,
            subnet.subnet_index,
            route.gateway_index,
        ),
        target::BLACKHOLE => reject_v6(
            packet,
            ingress,
            Counter::DropRouteBlackhole,
            subnet.subnet_index,
            direction::EGRESS,
        ),
        _ => reject_v6(
            packet,
            ingress,
            Counter::DropUnsupportedTarget,
            subnet.subnet_index,
            direction::EGRESS,
        ),
    }
}

/// IPv4 inside the VPC (route target `local`): forwarded unchanged.
#[inline(always)]
fn forward_local_v4(ctx: &XdpContext, packet: &Ipv4Packet, ingress: u32, subnet_index: u32) -> u32 {
    if packet.ttl <= 1 {
        return pass(Counter::PassTtlExpired);
    }
    flow::account_v4(
        packet,
        ingress,
        flow::endpoint(packet.src, packet.src_port),
        flow::endpoint(packet.dst, packet.dst_port),
        Handling::new(target::LOCAL, direction::INTERNAL, None, subnet_index),
    );
    // Counted once forwarded: a local route also covers the gateway's own addresses, which the
    // FIB hands to the kernel.
    let verdict = forwarding::ipv4(ctx, packet, packet.src, packet.dst, ingress);
    if verdict == xdp_action::XDP_REDIRECT {
        count(Counter::ForwardLocal);
    }
    verdict
}
