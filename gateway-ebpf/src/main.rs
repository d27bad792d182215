//! The gateway's XDP program: one entry point attached to every configured interface.
//!
//! A packet goes parse -> route -> gateway rewrite -> forward, each step in its own module:
//! [`parsing`] finds the headers, [`routing`] picks the subnet's route table and the target,
//! [`igw`] does the internet gateway's 1:1 NAT, [`forwarding`] does the FIB lookup, MAC rewrite and
//! redirect, [`flow`] keeps the per-flow counts the controller turns into flow logs, and
//! [`counters`] counts every verdict. Anything the gateway does not own goes to the kernel.
#![no_std]
#![no_main]

mod bench;
mod checksum;
mod conntrack;
mod counters;
mod eigw;
mod fastpath;
mod flow;
mod forwarding;
mod igw;
mod maps;
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference to the per-CPU work area: by value they would be copied onto the 512-byte stack"
)]
mod nat44;
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys are passed by reference to the per-CPU work area, as in nat44"
)]
mod nat64;
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference to the per-CPU work area: by value they would be copied onto the 512-byte stack"
)]
mod nat64_fragment;
mod parsing;
mod routing;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use gateway_common::{Counter, maps::role};

use crate::{
    counters::{count, pass},
    maps::{INTERFACES, TAIL_PROGRAMS},
};

/// What a path below returns to hand the packet to tail-called program `slot`
/// (`TAIL_CALL + slot`): never an XDP verdict. The per-CPU NAT work area carries its state.
pub const TAIL_CALL: u32 = 0x7000_0000;

#[xdp]
pub fn gateway(ctx: XdpContext) -> u32 {
    let verdict = handle(&ctx);
    if verdict < TAIL_CALL {
        return verdict;
    }
    // SAFETY: the slot holds an XDP program of this object, or nothing (then it returns).
    unsafe { TAIL_PROGRAMS.tail_call(&ctx, verdict - TAIL_CALL) };
    counters::drop(Counter::DropTailCall)
}

/// ICMPv4 error about a NAT64 session, from [`gateway`] (the session found, in the work area).
#[xdp]
pub fn nat64_icmp_error_in(ctx: XdpContext) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    let mut packet = parsing::Ipv4Packet::default();
    if !reparse_ipv4(&ctx, &mut packet) {
        return counters::drop(Counter::DropTailCall);
    }
    let Some(work) = nat44::work() else {
        return counters::drop(Counter::DropTailCall);
    };
    nat64::icmp_error_inbound(&ctx, &packet, ingress, work)
}

/// ICMPv6 error from a NAT64 client, from [`gateway`] (classified, in the work area).
#[xdp]
pub fn nat64_icmp_error_out(ctx: XdpContext) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    let mut packet = parsing::Ipv6Packet::default();
    if !reparse_ipv6(&ctx, &mut packet) {
        return counters::drop(Counter::DropTailCall);
    }
    let Some(work) = nat44::work() else {
        return counters::drop(Counter::DropTailCall);
    };
    nat64::icmp_error_outbound(&ctx, &packet, ingress, work)
}

/// IPv6 fragment from a NAT64 client, from [`gateway`] (the gateway in the work area).
#[xdp]
pub fn nat64_fragment_out(ctx: XdpContext) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    let mut packet = parsing::Ipv6Packet::default();
    if !reparse_ipv6(&ctx, &mut packet) {
        return counters::drop(Counter::DropTailCall);
    }
    let Some(work) = nat44::work() else {
        return counters::drop(Counter::DropTailCall);
    };
    nat64_fragment::outbound(&ctx, &mut packet, ingress, work)
}

/// IPv4 fragment to a NAT gateway's public address, from [`gateway`]: a first fragment of a
/// NAT64 session (found, in the work area) or a later fragment NAT44 does not know.
#[xdp]
pub fn nat64_fragment_in(ctx: XdpContext) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    let mut packet = parsing::Ipv4Packet::default();
    if !reparse_ipv4(&ctx, &mut packet) {
        return counters::drop(Counter::DropTailCall);
    }
    let Some(work) = nat44::work() else {
        return counters::drop(Counter::DropTailCall);
    };
    nat64_fragment::inbound(&ctx, &packet, ingress, work)
}

/// An IPv4 reply to a NAT64 session too big for the client's link with DF set, from [`gateway`]
/// (the MTU in the work area): answered with ICMPv4 "fragmentation needed".
#[xdp]
pub fn nat64_too_big(ctx: XdpContext) -> u32 {
    let mut packet = parsing::Ipv4Packet::default();
    if !reparse_ipv4(&ctx, &mut packet) {
        return counters::drop(Counter::DropTailCall);
    }
    let Some(work) = nat44::work() else {
        return counters::drop(Counter::DropTailCall);
    };
    nat64::answer_too_big(&ctx, &packet, work)
}

/// A tail-called program's IPv4 packet, parsed again (the caller's stack is gone; the work
/// area holds what it found). False when it is not the IPv4 packet the caller handed over.
#[inline(always)]
fn reparse_ipv4(ctx: &XdpContext, packet: &mut parsing::Ipv4Packet) -> bool {
    matches!(parsing::parse_link(ctx), Ok(link) if link.ether_type == parsing::ETH_P_IPV4
    && matches!(
        parsing::parse_ipv4(ctx, link.l3, link.vlan_tagged, packet),
        Ok(parsing::Parsed::Packet)
    ))
}

/// Like [`reparse_ipv4`] for IPv6.
#[inline(always)]
fn reparse_ipv6(ctx: &XdpContext, packet: &mut parsing::Ipv6Packet) -> bool {
    matches!(parsing::parse_link(ctx), Ok(link) if link.ether_type == parsing::ETH_P_IPV6
    && matches!(
        parsing::parse_ipv6(ctx, link.l3, link.vlan_tagged, packet),
        Ok(parsing::Parsed::Packet)
    ))
}

#[inline(always)]
fn handle(ctx: &XdpContext) -> u32 {
    count(Counter::RxPackets);
    let ingress = ctx.ingress_ifindex() as u32;
    let link = match parsing::parse_link(ctx) {
        Ok(link) => link,
        Err(reason) => return counters::drop(reason),
    };
    match link.ether_type {
        parsing::ETH_P_IPV4 => ipv4(ctx, link.l3, link.vlan_tagged, ingress),
        parsing::ETH_P_IPV6 => ipv6(ctx, link.l3, link.vlan_tagged, ingress),
        _ => pass(Counter::PassNotIp),
    }
}

/// Whether the interface faces the internet; `None` if it is not configured (attached during a
/// reload, say), when its traffic is left to the kernel. Looked up only on the slow path: the
/// fast path's flow entries exist only for configured interfaces.
#[inline(always)]
fn facing_internet(ingress: u32) -> Option<bool> {
    // SAFETY: plain-data value, read once.
    let interface = unsafe { INTERFACES.get(ingress) }?;
    Some(interface.role == role::INTERNET)
}

/// The IPv4 path, out of line so each family's stack is its own.
#[inline(never)]
fn ipv4(ctx: &XdpContext, l3: usize, vlan_tagged: bool, ingress: u32) -> u32 {
    let mut packet = parsing::Ipv4Packet::default();
    match parsing::parse_ipv4(ctx, l3, vlan_tagged, &mut packet) {
        Ok(parsing::Parsed::Packet) => match fastpath::ipv4(ctx, &packet, ingress) {
            fastpath::NOT_HANDLED => match facing_internet(ingress) {
                Some(facing) => routing::ipv4(ctx, &packet, ingress, facing),
                None => pass(Counter::PassNotOurs),
            },
            verdict => verdict,
        },
        Ok(parsing::Parsed::Pass(reason)) => pass(reason),
        Err(reason) => counters::drop(reason),
    }
}

/// The IPv6 path, out of line so each family's stack is its own.
#[inline(never)]
fn ipv6(ctx: &XdpContext, l3: usize, vlan_tagged: bool, ingress: u32) -> u32 {
    let mut packet = parsing::Ipv6Packet::default();
    match parsing::parse_ipv6(ctx, l3, vlan_tagged, &mut packet) {
        Ok(parsing::Parsed::Packet) => match fastpath::ipv6(ctx, &packet, ingress) {
            fastpath::NOT_HANDLED => match facing_internet(ingress) {
                Some(facing) => routing::ipv6(ctx, &packet, ingress, facing),
                None => pass(Counter::PassNotOurs),
            },
            verdict => verdict,
        },
        Ok(parsing::Parsed::Pass(reason)) => pass(reason),
        Err(reason) => counters::drop(reason),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// XDP verdicts re-exported for the modules.
pub(crate) mod verdict {
    pub use super::xdp_action::{XDP_DROP as DROP, XDP_PASS as PASS};
}
