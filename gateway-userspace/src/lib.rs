//! The gateway controller as a library, so that the tests and `xtask` can drive it.

pub mod config;
pub mod control;
pub mod dataplane;
pub mod dns64;
pub mod flowlog;
pub mod flowlog_task;

/// The compiled XDP object, embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway"));
