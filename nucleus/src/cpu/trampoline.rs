//! The real-mode trampoline an AP starts in (STARTUP IPI vector [`SIPI_VECTOR`]), and the
//! page tables it enables paging with.
//!
//! The code is assembled here but runs from its copy at physical [`TRAMPOLINE_PHYS`]
//! (below 1 MiB, a page the frame allocator never hands out): 16-bit real mode → 32-bit
//! protected mode (its own GDT) → PAE, EFER.LME|NXE, paging on the AP boot PML4 → 64-bit
//! mode → `jmp` to the AP's Rust entry on its own primary stack, with its `PerCpu` in RDI.
//! The AP boot PML4 maps the low 2 MiB 1:1 (the trampoline's next instruction after CR0.PG)
//! and shares the nucleus' upper half, so the entry and the stack block are reachable; the
//! entry then loads the nucleus' own CR3.
//!
//! One AP starts at a time: the BSP fills the parameter block, sends INIT-SIPI-SIPI and
//! waits for the AP's `online` flag (or gives up) before the next.
use core::arch::global_asm;

use crate::layout::{TRAMPOLINE_PHYS, TRAMPOLINE_RESERVED as RESERVED};

pub const SIPI_VECTOR: u8 = (TRAMPOLINE_PHYS >> 12) as u8;
/// The AP boot tables: PML4, the low PDPT and the low PD, the three pages after it.
const BOOT_PML4: u64 = TRAMPOLINE_PHYS + 0x1000;
const BOOT_PDPT: u64 = TRAMPOLINE_PHYS + 0x2000;
const BOOT_PD: u64 = TRAMPOLINE_PHYS + 0x3000;

/// Offset of [`Params`] in the trampoline page.
const PARAMS_OFFSET: u64 = 0xf00;

/// What the BSP hands one AP (read by the trampoline's 32- and 64-bit code).
#[repr(C)]
struct Params {
    /// The AP boot PML4 (physical, below 4 GiB).
    boot_cr3: u64,
    /// The AP's primary stack top.
    stack_top: u64,
    /// Its `PerCpu` (first argument of `entry`).
    percpu: u64,
    /// `extern "C" fn(&'static PerCpu) -> !`.
    entry: u64,
}

const _: () = assert!(core::mem::offset_of!(Params, boot_cr3) == 0);
const _: () = assert!(core::mem::offset_of!(Params, stack_top) == 8);
const _: () = assert!(core::mem::offset_of!(Params, percpu) == 16);
const _: () = assert!(core::mem::offset_of!(Params, entry) == 24);

global_asm!(
    r#"
    .pushsection .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    .code16
    cli
    cld
    xor ax, ax
    mov ds, ax
    /* lgdt [ap_gdtr] (0f 01 /2, 16-bit absolute address; a 24-bit base suffices) */
    .byte 0x0f, 0x01, 0x16
    .word {base} + (ap_gdtr - ap_trampoline_start)
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* ljmp 0x08:ap_pm32 with a 32-bit offset */
    .byte 0x66, 0xea
    .long {base} + (ap_pm32 - ap_trampoline_start)
    .word 0x08

    .code32
ap_pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 1 << 5                                /* PAE */
    mov cr4, eax
    mov eax, [{base} + {params}]                  /* boot_cr3 */
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)                  /* LME, NXE */
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16)                 /* PG, WP */
    mov cr0, eax
    /* ljmp 0x18:ap_lm64 (compatibility mode → 64-bit mode) */
    .byte 0xea
    .long {base} + (ap_lm64 - ap_trampoline_start)
    .word 0x18

    .code64
ap_lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, [{base} + {params} + 8]
    mov rdi, [{base} + {params} + 16]
    mov rax, [{base} + {params} + 24]
    xor ebp, ebp
    jmp rax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                      /* 0x08: 32-bit ring-0 code */
    .quad 0x00cf92000000ffff                      /* 0x10: ring-0 data */
    .quad 0x00af9a000000ffff                      /* 0x18: 64-bit ring-0 code */
ap_gdtr:
    .word ap_gdtr - ap_gdt - 1
    .long {base} + (ap_gdt - ap_trampoline_start)
ap_trampoline_end:
    .popsection
"#,
    base = const TRAMPOLINE_PHYS,
    params = const PARAMS_OFFSET,
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

fn low(phys: u64) -> *mut u8 {
    crate::mm::phys_to_virt(phys) as *mut u8
}

/// Copies the trampoline to its page and builds the AP boot tables (once, before the first
/// AP is started). `kernel_root` is the nucleus PML4, whose upper half the tables share.
pub fn install(kernel_root: u64) {
    let start = core::ptr::addr_of!(ap_trampoline_start);
    // SAFETY: linker symbols; only their addresses are used.
    let len = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
    assert!(
        len as u64 <= PARAMS_OFFSET,
        "AP trampoline overlaps its parameters"
    );
    // SAFETY: RESERVED is low RAM the frame allocator never hands out (`mm::memory`),
    // mapped by the direct map; no AP runs yet, so nothing executes or reads it. The
    // source is the assembled trampoline in .rodata.
    unsafe {
        core::ptr::write_bytes(
            low(RESERVED.start),
            0,
            (RESERVED.end - RESERVED.start) as usize,
        );
        core::ptr::copy_nonoverlapping(start, low(TRAMPOLINE_PHYS), len);
        let pml4 = low(BOOT_PML4).cast::<u64>();
        let kernel = crate::mm::phys_to_virt(kernel_root) as *const u64;
        for slot in 256..512 {
            pml4.add(slot).write(kernel.add(slot).read());
        }
        pml4.write(BOOT_PDPT | 0x3);
        low(BOOT_PDPT).cast::<u64>().write(BOOT_PD | 0x3);
        // One 2 MiB page, physical 0: present, writable, large.
        low(BOOT_PD).cast::<u64>().write(0x83);
    }
}

/// Fills the parameter block for the next AP.
pub fn prepare(stack_top: u64, percpu: u64, entry: extern "C" fn(u64) -> !) {
    let params = Params {
        boot_cr3: BOOT_PML4,
        stack_top,
        percpu,
        entry: entry as usize as u64,
    };
    // SAFETY: the parameter block in the reserved trampoline page; no AP is between its SIPI
    // and its Rust entry now (one at a time, module comment).
    unsafe {
        core::ptr::write_volatile(
            low(TRAMPOLINE_PHYS + PARAMS_OFFSET).cast::<Params>(),
            params,
        )
    };
}
