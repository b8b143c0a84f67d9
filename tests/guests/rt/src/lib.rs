//! guest-rt: what every project PV64 test guest (`tests/guests/`) shares.
//!
//! * `_start`: takes start_info from `rsi` (pv64-abi.md §2.3), moves to a 16 KiB stack of
//!   its own and calls the guest's `main(Boot)` (declared with `guest_main!`).
//! * The hypercall page (§3): one page the guest's HYPERCALL_PAGE note names, filled by the
//!   domain builder; `hypercall` calls stub `n` in it.
//! * `Console`: `console_io(write)` by lines; `shutdown`: `sched_op(shutdown)`; a panic
//!   prints its message and shuts down with `crash`.
//! * [`xen_note_str!`] / [`xen_note_int!`]: Xen ELF notes, emitted from the guest's own
//!   source (the guest names its OS, version and loader; the runtime adds nothing);
//!   [`xen_guest_notes!`]: the set every project test guest declares.
//!
//! Only for `x86_64-unknown-none`; on the host the crate is empty so that the workspace
//! builds and tests there.
#![no_std]

#[cfg(target_os = "none")]
mod target;

#[cfg(target_os = "none")]
pub use target::*;

/// Page-table hypercalls and a walk of the bootstrap tables.
#[cfg(target_os = "none")]
pub mod tables;

/// shared_info mapped, the guest's clock, event bits, exact-value checks.
#[cfg(target_os = "none")]
pub mod shared;
/// Trap entry stubs, the trap-table hypercalls and `iret`.
#[cfg(target_os = "none")]
pub mod traps;
/// Entering guest user mode and coming back.
#[cfg(target_os = "none")]
pub mod user;

/// One Xen ELF note with a NUL-terminated string descriptor (pv64-abi.md §1.1), in the
/// `.note.Xen` section the guest linker script keeps in its PT_NOTE.
#[macro_export]
macro_rules! xen_note_str {
    ($kind:expr, $text:literal) => {
        core::arch::global_asm!(
            ".pushsection .note.Xen, \"a\", @note",
            ".balign 4",
            ".long 4, 2f - 1f, {kind}",
            ".asciz \"Xen\"",
            ".balign 4",
            concat!("1: .asciz \"", $text, "\""),
            "2: .balign 4",
            ".popsection",
            kind = const $kind.raw(),
        );
    };
}

/// One Xen ELF note with an 8-byte integer descriptor: a constant or, with `sym`, the
/// address of a symbol.
#[macro_export]
macro_rules! xen_note_int {
    ($kind:expr, $value:expr) => {
        core::arch::global_asm!(
            ".pushsection .note.Xen, \"a\", @note",
            ".balign 4",
            ".long 4, 8, {kind}",
            ".asciz \"Xen\"",
            ".balign 4",
            ".quad {value}",
            ".popsection",
            kind = const $kind.raw(),
            value = const $value,
        );
    };
    ($kind:expr, sym $symbol:ident) => {
        core::arch::global_asm!(
            ".pushsection .note.Xen, \"a\", @note",
            ".balign 4",
            ".long 4, 8, {kind}",
            ".asciz \"Xen\"",
            ".balign 4",
            concat!(".quad ", stringify!($symbol)),
            ".popsection",
            kind = const $kind.raw(),
        );
    };
}

/// The Xen ELF notes every project test guest declares, in this order: GUEST_OS `$os`,
/// GUEST_VERSION 0.1, XEN_VERSION xen-3.0, LOADER generic, VIRT_BASE and PADDR_OFFSET 0
/// (linked where it runs), and HYPERCALL_PAGE at the runtime's `hypercall_page`.
#[macro_export]
macro_rules! xen_guest_notes {
    ($os:literal) => {
        $crate::xen_note_str!($crate::XenNote::GuestOs, $os);
        $crate::xen_note_str!($crate::XenNote::GuestVersion, "0.1");
        $crate::xen_note_str!($crate::XenNote::XenVersion, "xen-3.0");
        $crate::xen_note_str!($crate::XenNote::Loader, "generic");
        $crate::xen_note_int!($crate::XenNote::VirtBase, 0);
        $crate::xen_note_int!($crate::XenNote::PaddrOffset, 0);
        $crate::xen_note_int!($crate::XenNote::HypercallPage, sym hypercall_page);
    };
}

/// The note kinds the macros take (so that [`xen_guest_notes!`] needs no import).
pub use xen_abi::elfnote::XenNote;
