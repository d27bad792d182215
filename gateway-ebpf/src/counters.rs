//! Verdict and drop counters (see `gateway_common::counters` for the names users read).

use gateway_common::Counter;

use crate::{maps::COUNTERS, verdict};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Hands the packet to the kernel, counting why.
#[inline(always)]
pub fn pass(reason: Counter) -> u32 {
    count(reason);
    verdict::PASS
}

/// Drops the packet, counting why.
#[inline(always)]
pub fn drop(reason: Counter) -> u32 {
    count(reason);
    verdict::DROP
}
