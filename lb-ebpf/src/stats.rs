//! Per-CPU counters: no atomics needed, the agent sums the CPUs.

use lb_common::Counter;

use crate::{
    index,
    maps::{EVENTS, GLOBAL_STATS, REAL_STATS, SERVICE_STATS},
};

#[inline(always)]
fn bump(c: Option<*mut Counter>, bytes: usize, new_flow: bool) {
    if let Some(c) = c {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
}

/// Counts a frame under the reason the program decided on.
#[inline(always)]
pub fn count_global(reason: u32, bytes: usize) {
    bump(GLOBAL_STATS.get_ptr_mut(reason), bytes, false);
}

/// Counts a frame forwarded to a real.
#[inline(always)]
pub fn count_real(real: u32, bytes: usize, new_flow: bool) {
    bump(REAL_STATS.get_ptr_mut(real), bytes, new_flow);
}

/// Counts a frame that hit a service (forwarded or dropped).
#[inline(always)]
pub fn count_service(service: u32, bytes: usize, new_flow: bool) {
    bump(SERVICE_STATS.get_ptr_mut(service), bytes, new_flow);
}

/// Counts event `E` (`lb_common::event`).
#[inline(always)]
pub fn event<const E: usize>() {
    if let Some(c) = index::per_cpu_at::<E, u64>(&EVENTS) {
        // SAFETY: per-CPU value.
        unsafe { *c += 1 };
    }
}
