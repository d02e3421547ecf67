//! Map keys and values, written in place in a caller's [`Buf`] with volatile 64-bit stores.
//!
//! Volatile: LLVM otherwise merges the zero fields of a key (IPv4's unused address words,
//! padding, port 0) into a `memset` call whose loop the verifier rejects for agents without
//! CAP_PERFMON. In place and 64 bits at a time: without CAP_PERFMON the verifier follows each
//! stack store with a Spectre v4 barrier (an `lfence`, BENCHMARKS.md), so a 40-byte flow key
//! costs five, where building it field by field and returning it by value cost about thirty.

use core::{
    mem::{MaybeUninit, size_of},
    ptr::addr_of_mut,
};

use lb_common::{Addr, Binding, FlowKey, FlowReport, FragKey, PersistKey, ServiceKey, VipKey};

/// Room for one key or value on the caller's stack, aligned for 64-bit stores (the verifier
/// refuses misaligned stack access).
#[repr(C, align(8))]
pub struct Buf<T>(MaybeUninit<T>);

impl<T> Buf<T> {
    #[inline(always)]
    pub const fn new() -> Self {
        Buf(MaybeUninit::uninit())
    }
}

const _: () = {
    assert!(size_of::<FlowKey>() == 40 && size_of::<FragKey>() == 40);
    assert!(size_of::<ServiceKey>() == 20 && size_of::<VipKey>() == 20);
    assert!(size_of::<PersistKey>() == 24 && size_of::<Binding>() == 16);
};

/// Two u32 fields as the 64-bit word that holds them (little-endian: `lo` first).
#[inline(always)]
fn pair(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | u64::from(hi) << 32
}

/// Writes 64-bit word `i` of `buf`.
#[inline(always)]
fn word<T>(buf: &mut Buf<T>, i: usize, w: u64) {
    // SAFETY: `i` is below size_of::<T>() / 8 at every call (the sizes are asserted above) and
    // `Buf` is 8-aligned.
    unsafe { buf.0.as_mut_ptr().cast::<u64>().add(i).write_volatile(w) }
}

/// Writes the 32-bit word at byte offset 16 of `buf` (the tail of a 20-byte key).
#[inline(always)]
fn tail<T>(buf: &mut Buf<T>, w: u32) {
    // SAFETY: as in `word`: 20-byte keys only, and offset 16 is 4-aligned.
    unsafe { buf.0.as_mut_ptr().cast::<u32>().add(4).write_volatile(w) }
}

/// The address's four words at 64-bit words `i` and `i + 1`.
#[inline(always)]
fn addr<T>(buf: &mut Buf<T>, i: usize, a: &Addr) {
    word(buf, i, pair(a[0], a[1]));
    word(buf, i + 1, pair(a[2], a[3]));
}

/// The value, every byte written.
#[inline(always)]
fn done<T>(buf: &Buf<T>) -> &T {
    // SAFETY: the caller wrote every byte of `T` (all its fields are integers).
    unsafe { buf.0.assume_init_ref() }
}

#[inline(always)]
pub fn service<'a>(
    buf: &'a mut Buf<ServiceKey>,
    a: &Addr,
    port_be: u16,
    proto: u8,
    family: u8,
) -> &'a ServiceKey {
    addr(buf, 0, a);
    tail(buf, u32::from(port_be) | u32::from(proto) << 16 | u32::from(family) << 24);
    done(buf)
}

#[inline(always)]
pub fn vip<'a>(buf: &'a mut Buf<VipKey>, a: &Addr, family: u8) -> &'a VipKey {
    addr(buf, 0, a);
    // Then `_pad1` and `_pad2`, zero.
    tail(buf, u32::from(family));
    done(buf)
}

/// A flow key and a fragment key share their layout: two addresses, then a 32-bit field (the
/// ports, the datagram id), the protocol, the family and zero padding.
#[inline(always)]
fn two_addrs<'a, T>(
    buf: &'a mut Buf<T>,
    src: &Addr,
    dst: &Addr,
    field: u32,
    proto: u8,
    family: u8,
) -> &'a T {
    addr(buf, 0, src);
    addr(buf, 2, dst);
    word(buf, 4, u64::from(field) | u64::from(proto) << 32 | u64::from(family) << 40);
    done(buf)
}

#[inline(always)]
pub fn flow<'a>(
    buf: &'a mut Buf<FlowKey>,
    src: &Addr,
    dst: &Addr,
    ports: u32,
    proto: u8,
    family: u8,
) -> &'a FlowKey {
    two_addrs(buf, src, dst, ports, proto, family)
}

#[inline(always)]
pub fn frag<'a>(
    buf: &'a mut Buf<FragKey>,
    src: &Addr,
    dst: &Addr,
    id: u32,
    proto: u8,
    family: u8,
) -> &'a FragKey {
    two_addrs(buf, src, dst, id, proto, family)
}

#[inline(always)]
pub fn persist<'a>(
    buf: &'a mut Buf<PersistKey>,
    service: u32,
    family: u8,
    src: &Addr,
) -> &'a PersistKey {
    // `_pad1` and `_pad2` zero.
    word(buf, 0, pair(service, u32::from(family)));
    addr(buf, 1, src);
    done(buf)
}

#[inline(always)]
pub fn binding(buf: &mut Buf<Binding>, real: u32, generation: u32, atime: u32) -> &Binding {
    word(buf, 0, pair(real, generation));
    // `flags` zero.
    word(buf, 1, u64::from(atime));
    done(buf)
}

#[inline(always)]
fn put<T>(dst: *mut T, v: T) {
    // SAFETY: `dst` points into a reserved ring-buffer record.
    unsafe { dst.write_volatile(core::hint::black_box(v)) }
}

#[inline(always)]
fn put_addr(dst: *mut Addr, a: &Addr) {
    let p = dst as *mut u32;
    // SAFETY: `dst` points to four u32s inside a reserved ring-buffer record.
    unsafe {
        put(p, a[0]);
        put(p.add(1), a[1]);
        put(p.add(2), a[2]);
        put(p.add(3), a[3]);
    }
}

/// Fills a reserved ring-buffer record in place (no copy of a stack value).
#[inline(always)]
pub fn write_report(p: *mut FlowReport, flow: &FlowKey, real: u32, generation: u32) {
    // SAFETY: `p` points to a reserved record of the size of `FlowReport`; every field is written.
    unsafe {
        let k = addr_of_mut!((*p).key);
        put_addr(addr_of_mut!((*k).src), &flow.src);
        put_addr(addr_of_mut!((*k).dst), &flow.dst);
        put(addr_of_mut!((*k).ports), flow.ports);
        put(addr_of_mut!((*k).proto), flow.proto);
        put(addr_of_mut!((*k).family), flow.family);
        put(addr_of_mut!((*k)._pad), 0);
        put(addr_of_mut!((*p).real), real);
        put(addr_of_mut!((*p).generation), generation);
    }
}
