//! Array-map lookups at constant or counter indexes, without a key on the stack.
//!
//! Without CAP_PERFMON the verifier follows a stack store with a Spectre v4 barrier (`nospec`,
//! an `lfence` on x86) unless the slot held plain data before, and a lookup key is such a store:
//! every event counted and every `get(0)` paid one, ~10–15 ns each on the machines of
//! BENCHMARKS.md. These lookups read their key from read-only global data (`.rodata`) instead: a
//! map value, which needs no store at all. With CAP_PERFMON they cost what a stack key does.
//!
//! Other indexes (real and service ids, ring slots) keep their stack key: a key in a per-CPU
//! scratch value needs one more helper call, and the values live across it are spilled to the
//! stack, which costs the barriers back (measured: the object's frames grew).

use core::{ffi::c_void, ptr::NonNull};

use aya_ebpf::{
    helpers::bpf_map_lookup_elem,
    maps::{Array, PerCpuArray},
};
use lb_common::{event, reason};

const fn max(a: u32, b: u32) -> u32 {
    if a > b { a } else { b }
}

/// How many indexes `INDEXES` holds: every event counter's and reason counter's.
const SMALL: usize = max(reason::COUNT, event::COUNT) as usize;

/// `INDEXES[i] == i`, in read-only global data.
static INDEXES: [u32; SMALL] = {
    let mut a = [0u32; SMALL];
    let mut i = 0;
    while i < SMALL {
        a[i] = i as u32;
        i += 1;
    }
    a
};

#[inline(always)]
fn raw<T>(map: *const c_void, key: *const u32) -> Option<NonNull<T>> {
    // SAFETY: `map` is a map definition and `key` points at a u32 map value.
    NonNull::new(unsafe { bpf_map_lookup_elem(map.cast_mut(), key.cast()) }.cast())
}

#[inline(always)]
fn def<M>(map: &'static M) -> *const c_void {
    core::ptr::from_ref(map).cast()
}

/// Entry 0 of an array map (`Array::get(0)`).
#[inline(always)]
pub fn first<T>(map: &'static Array<T>) -> Option<&'static T> {
    // SAFETY: an array map value lives as long as the map; the agent replaces values whole.
    Some(unsafe { raw::<T>(def(map), &INDEXES[0])?.as_ref() })
}

/// This CPU's entry 0 of a per-CPU array map (`PerCpuArray::get_ptr_mut(0)`).
#[inline(always)]
pub fn per_cpu_first<T>(map: &'static PerCpuArray<T>) -> Option<*mut T> {
    Some(raw::<T>(def(map), &INDEXES[0])?.as_ptr())
}

/// This CPU's entry `I` of a per-CPU counter map indexed by event (a constant: an index only
/// known at run time would make the key's address a variable offset into `.rodata`, which the
/// verifier refuses without CAP_PERFMON when paths with different indexes meet).
#[inline(always)]
pub fn per_cpu_at<const I: usize, T>(map: &'static PerCpuArray<T>) -> Option<*mut T> {
    Some(raw::<T>(def(map), &INDEXES[I])?.as_ptr())
}
