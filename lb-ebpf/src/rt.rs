//! What every program object of this crate needs besides its programs: a panic handler (there is
//! no std to unwind into; the verifier rejects any path that could reach it anyway) and the
//! license section (the kernel only lets GPL-compatible programs use some helpers). The entry
//! point includes it as a module, the benchmark programs in `bin/` by path.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
