//! Types and pure logic shared by the XDP programs (`gateway-ebpf`) and the controller
//! (`gateway-userspace`).
//!
//! Everything that crosses the kernel boundary lives here as `#[repr(C)]` plain data with explicit
//! padding, so that both sides agree on the layout byte for byte. Sizes are asserted at compile
//! time. The `user` feature adds `aya::Pod` impls for the controller.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod bench;
pub mod checksum;
pub mod conntrack;
pub mod counters;
pub mod maps;
pub mod nat;
pub mod nat64;

pub use counters::Counter;
