//! Connection-tracking helpers over the `CONNTRACK` map (see `gateway_common::conntrack`).

use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_common::conntrack::{ConnEntry, ConnKey, Timeouts};

use crate::maps::{CONNTRACK, CONNTRACK_TIMEOUTS};

/// The configured idle timeout for an entry, or `None` if the controller has not written the
/// timeouts yet (then nothing is tracked: the gateway is still starting).
#[inline(always)]
pub fn timeout(protocol: u8, state: u8) -> Option<u64> {
    let timeouts: &Timeouts = CONNTRACK_TIMEOUTS.get(0)?;
    Some(timeouts.for_entry(protocol, state))
}

/// A live (not expired) entry for `key`.
#[inline(always)]
pub fn lookup_live(key: &ConnKey, now: u64) -> Option<*mut ConnEntry> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: map value pointer; fields read once.
    let (protocol, state, last_seen) =
        unsafe { (key.protocol, (*entry).state, (*entry).last_seen_ns) };
    let limit = timeout(protocol, state)?;
    if now.saturating_sub(last_seen) > limit {
        return None;
    }
    Some(entry)
}

/// Why a new entry could not be created.
pub enum CreateError {
    /// The table is full.
    Full,
}

/// Creates an entry; if another CPU created it first (or an expired one is in the way), the
/// existing entry is taken over and returned instead, so both CPUs update one entry.
#[inline(always)]
pub fn create(key: &ConnKey, entry: &ConnEntry) -> Result<*mut ConnEntry, CreateError> {
    if CONNTRACK.insert(key, entry, BPF_NOEXIST as u64).is_ok() {
        return CONNTRACK.get_ptr_mut(key).ok_or(CreateError::Full);
    }
    // EEXIST (a race, or an expired entry the sweeper has not deleted yet) or E2BIG (full).
    match CONNTRACK.get_ptr_mut(key) {
        Some(existing) => Ok(existing),
        None => Err(CreateError::Full),
    }
}

/// Adds a packet to an entry's counters. Plain adds: two CPUs updating one entry at the same
/// instant can lose an increment, which only makes `gateway conntrack`'s informational counts
/// approximate (flow logs count exactly, per CPU).
#[inline(always)]
pub fn add_packet(counter_packets: *mut u64, counter_bytes: *mut u64, bytes: u16) {
    // SAFETY: both point into a live map value.
    unsafe {
        *counter_packets += 1;
        *counter_bytes += bytes as u64;
    }
}
