//! Map keys and values built field by field with volatile stores. LLVM otherwise merges the
//! zero fields of a key (IPv4's unused address words, padding, port 0) into a `memset` call whose
//! loop the verifier rejects for agents without CAP_PERFMON; volatile stores stay single stores.

use core::{mem::MaybeUninit, ptr::addr_of_mut};

use lb_common::{Addr, Binding, FlowKey, FlowReport, FragKey, PersistKey, ServiceKey, VipKey};

#[inline(always)]
fn put<T>(dst: *mut T, v: T) {
    // SAFETY: `dst` points into a live MaybeUninit of the caller.
    unsafe { dst.write_volatile(core::hint::black_box(v)) }
}

#[inline(always)]
fn put_addr(dst: *mut Addr, a: &Addr) {
    let p = dst as *mut u32;
    // SAFETY: `dst` points to four u32s inside a live MaybeUninit of the caller.
    unsafe {
        put(p, a[0]);
        put(p.add(1), a[1]);
        put(p.add(2), a[2]);
        put(p.add(3), a[3]);
    }
}

#[inline(always)]
pub fn service(addr: &Addr, port_be: u16, proto: u8, family: u8) -> ServiceKey {
    let mut k = MaybeUninit::<ServiceKey>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: every field is written before `assume_init`; the struct has no padding.
    unsafe {
        put_addr(addr_of_mut!((*p).addr), addr);
        put(addr_of_mut!((*p).port_be), port_be);
        put(addr_of_mut!((*p).proto), proto);
        put(addr_of_mut!((*p).family), family);
        k.assume_init()
    }
}

#[inline(always)]
pub fn vip(addr: &Addr, family: u8) -> VipKey {
    let mut k = MaybeUninit::<VipKey>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        put_addr(addr_of_mut!((*p).addr), addr);
        put(addr_of_mut!((*p).family), family);
        put(addr_of_mut!((*p)._pad1), 0);
        put(addr_of_mut!((*p)._pad2), 0);
        k.assume_init()
    }
}

#[inline(always)]
pub fn flow(src: &Addr, dst: &Addr, ports: u32, proto: u8, family: u8) -> FlowKey {
    let mut k = MaybeUninit::<FlowKey>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        put_addr(addr_of_mut!((*p).src), src);
        put_addr(addr_of_mut!((*p).dst), dst);
        put(addr_of_mut!((*p).ports), ports);
        put(addr_of_mut!((*p).proto), proto);
        put(addr_of_mut!((*p).family), family);
        put(addr_of_mut!((*p)._pad), 0);
        k.assume_init()
    }
}

#[inline(always)]
pub fn frag(src: &Addr, dst: &Addr, id: u32, proto: u8, family: u8) -> FragKey {
    let mut k = MaybeUninit::<FragKey>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        put_addr(addr_of_mut!((*p).src), src);
        put_addr(addr_of_mut!((*p).dst), dst);
        put(addr_of_mut!((*p).id), id);
        put(addr_of_mut!((*p).proto), proto);
        put(addr_of_mut!((*p).family), family);
        put(addr_of_mut!((*p)._pad), 0);
        k.assume_init()
    }
}

#[inline(always)]
pub fn persist(service: u32, family: u8, src: &Addr) -> PersistKey {
    let mut k = MaybeUninit::<PersistKey>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        put(addr_of_mut!((*p).service), service);
        put(addr_of_mut!((*p).family), family);
        put(addr_of_mut!((*p)._pad1), 0);
        put(addr_of_mut!((*p)._pad2), 0);
        put_addr(addr_of_mut!((*p).src), src);
        k.assume_init()
    }
}

#[inline(always)]
pub fn binding(real: u32, generation: u32, atime: u32) -> Binding {
    let mut k = MaybeUninit::<Binding>::uninit();
    let p = k.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        put(addr_of_mut!((*p).real), real);
        put(addr_of_mut!((*p).generation), generation);
        put(addr_of_mut!((*p).atime), atime);
        put(addr_of_mut!((*p).flags), 0);
        k.assume_init()
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
