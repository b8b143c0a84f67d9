//! Port I/O: the `in`/`out` instructions, the only way to reach the UART and the test exits.

/// Writes one byte to an I/O port.
///
/// # Safety
/// The caller owns the device behind `port`; a write to an arbitrary port can reprogram
/// hardware (interrupt controllers, the PIT, reset registers).
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port write is meaningful; `out` touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads one byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: some device registers change state when read.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the device; `in` touches no memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes one 32-bit value to an I/O port.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller owns the device; `out` touches no memory.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}
