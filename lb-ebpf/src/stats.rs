//! Per-CPU counters: no atomics needed, the agent sums the CPUs.

use aya_ebpf::maps::PerCpuArray;
use lb_common::Counter;

use crate::maps::{EVENTS, GLOBAL_STATS, REAL_STATS, SERVICE_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: usize, new_flow: bool) {
    if let Some(c) = map.get_ptr_mut(index) {
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
    bump(&GLOBAL_STATS, reason, bytes, false);
}

/// Counts a frame forwarded to a real.
#[inline(always)]
pub fn count_real(real: u32, bytes: usize, new_flow: bool) {
    bump(&REAL_STATS, real, bytes, new_flow);
}

/// Counts a frame that hit a service (forwarded or dropped).
#[inline(always)]
pub fn count_service(service: u32, bytes: usize, new_flow: bool) {
    bump(&SERVICE_STATS, service, bytes, new_flow);
}

/// Counts an event (`lb_common::event`).
#[inline(always)]
pub fn event(index: u32) {
    if let Some(c) = EVENTS.get_ptr_mut(index) {
        // SAFETY: per-CPU value.
        unsafe { *c += 1 };
    }
}
