//! The last code of a generation: an identity-mapped page at `layout::KEXEC_PHYS` that
//! leaves long mode, copies the next image to its load address and jumps to it with the
//! multiboot2 register contract (EAX = magic, EBX = the information, 32-bit protected mode,
//! paging off, flat segments, interrupts off).
//!
//! [`install`] copies the code, its parameters ([`Params`]) and the tables it runs on into the
//! hand-off's low pages (which no generation hands out); [`jump`] switches to those tables
//! (the low 2 MiB 1:1 plus the nucleus' upper half, so the jump itself is still mapped) and
//! enters the page. The trampoline loads its own GDT and an empty IDT (nothing may interrupt
//! it now: interrupts are off and every other CPU is parked with NMIs blocked), drops to
//! compatibility mode, turns paging and then EFER.LME off, clears CR4, and copies. It needs
//! no stack after the far return.
use core::arch::global_asm;

use crate::layout::KEXEC_PHYS;
use bsp_x86_64::kexec::{ImagePlan, LOADER_MAGIC, MAX_SEGMENTS};

/// Offset of [`Params`] in the trampoline page (the code must end before it).
const PARAMS_OFFSET: u64 = 0x800;
/// The identity tables: PML4, the low PDPT and the low PD, the three pages after the code.
const PML4: u64 = KEXEC_PHYS + 0x1000;
const PDPT: u64 = KEXEC_PHYS + 0x2000;
const PD: u64 = KEXEC_PHYS + 0x3000;

/// One copy, as the 32-bit code reads it (low halves only: everything is below 4 GiB).
#[repr(C)]
#[derive(Clone, Copy)]
struct Copy {
    dest: u64,
    src: u64,
    file_size: u64,
    mem_size: u64,
}

/// What the trampoline reads, at `KEXEC_PHYS + PARAMS_OFFSET`.
#[repr(C)]
struct Params {
    count: u64,
    mbi: u64,
    entry: u64,
    copies: [Copy; MAX_SEGMENTS],
}

const _: () = assert!(core::mem::offset_of!(Params, count) == 0);
const _: () = assert!(core::mem::offset_of!(Params, mbi) == 8);
const _: () = assert!(core::mem::offset_of!(Params, entry) == 16);
const _: () = assert!(core::mem::offset_of!(Params, copies) == 24);
const _: () = assert!(core::mem::size_of::<Copy>() == 32);
const _: () = assert!(PARAMS_OFFSET + core::mem::size_of::<Params>() as u64 <= 0x1000);

global_asm!(
    r#"
    .pushsection .rodata.kexec_trampoline, "a"
    .balign 16
    .global kexec_trampoline_start, kexec_trampoline_end
kexec_trampoline_start:
    .code64
    /* RDI = the parameters (physical = virtual here). RIP-relative operands name the copy
       this runs from. */
    lgdt [rip + kx_gdtr]
    lidt [rip + kx_idtr]
    lea rax, [rip + kx_pm32]
    push 0x08
    push rax
    retfq

    .code32
kx_pm32:
    /* Compatibility mode on the trampoline's 32-bit code segment: paging off leaves long
       mode (EFER.LMA clears), then LME off and CR4 back to nothing (PAE, PGE, SMEP...). */
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    jmp 1f
1:  mov ecx, 0xc0000080
    rdmsr
    and eax, 0xfffffeff
    wrmsr
    xor eax, eax
    mov cr4, eax
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    cld
    mov ebp, edi
    mov ebx, [ebp]                                /* count */
    lea edx, [ebp + 24]                           /* first copy */
2:  test ebx, ebx
    jz 3f
    mov edi, [edx]                                /* dest */
    mov esi, [edx + 8]                            /* src */
    mov ecx, [edx + 16]                           /* file_size */
    rep movsb
    mov ecx, [edx + 24]                           /* mem_size */
    sub ecx, [edx + 16]
    xor eax, eax
    rep stosb                                     /* .bss */
    add edx, 32
    dec ebx
    jmp 2b
3:  mov ebx, [ebp + 8]                            /* the multiboot2 information */
    mov ecx, [ebp + 16]                           /* entry */
    mov eax, {magic}
    jmp ecx

    .balign 8
kx_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                      /* 0x08: 32-bit ring-0 code, flat */
    .quad 0x00cf92000000ffff                      /* 0x10: ring-0 data, flat */
kx_gdt_end:
kx_gdtr:
    .word kx_gdt_end - kx_gdt - 1
    .quad {base} + (kx_gdt - kexec_trampoline_start)
kx_idtr:
    .word 0
    .quad 0
kexec_trampoline_end:
    /* Back to 64-bit code for whatever asm the assembler sees next (global_asm! blocks
       share one assembler state; their order is the compiler's). */
    .code64
    .popsection
    /* Back to 64-bit for whatever asm the compiler puts after this block. */
    .code64
"#,
    base = const KEXEC_PHYS,
    magic = const LOADER_MAGIC,
);

unsafe extern "C" {
    static kexec_trampoline_start: u8;
    static kexec_trampoline_end: u8;
}

fn low(phys: u64) -> *mut u8 {
    crate::mm::phys_to_virt(phys) as *mut u8
}

/// Writes the trampoline, its parameters (the copies of `plan` from the module at physical
/// `src`, the information at `mbi`) and its identity tables into the hand-off's low pages.
pub fn install(plan: &ImagePlan, src: u64, mbi: u64) {
    let start = core::ptr::addr_of!(kexec_trampoline_start);
    let len = core::ptr::addr_of!(kexec_trampoline_end) as usize - start as usize;
    assert!(
        len as u64 <= PARAMS_OFFSET,
        "kexec trampoline overlaps its parameters"
    );
    let mut params = Params {
        count: plan.segments.len() as u64,
        mbi,
        entry: plan.entry,
        copies: [Copy {
            dest: 0,
            src: 0,
            file_size: 0,
            mem_size: 0,
        }; MAX_SEGMENTS],
    };
    for (copy, segment) in params.copies.iter_mut().zip(&plan.segments) {
        *copy = Copy {
            dest: segment.dest,
            src: src + segment.src_offset,
            file_size: segment.file_size,
            mem_size: segment.mem_size,
        };
    }
    let kernel = crate::mm::phys_to_virt(crate::mm::kernel_root().as_u64()) as *const u64;
    // SAFETY: the hand-off's first four low pages (`layout::KEXEC_RESERVED`), which no
    // generation's frame allocator hands out, mapped by the direct map; nothing else reads
    // or runs them until `jump`. The source is the assembled trampoline in .rodata; the
    // kernel PML4 is mapped nucleus memory.
    unsafe {
        core::ptr::write_bytes(low(KEXEC_PHYS), 0, 0x4000);
        core::ptr::copy_nonoverlapping(start, low(KEXEC_PHYS), len);
        low(KEXEC_PHYS + PARAMS_OFFSET)
            .cast::<Params>()
            .write_volatile(params);
        let pml4 = low(PML4).cast::<u64>();
        for slot in 256..512 {
            pml4.add(slot).write(kernel.add(slot).read());
        }
        pml4.write(PDPT | 0x3);
        low(PDPT).cast::<u64>().write(PD | 0x3);
        // One 2 MiB page at physical 0: present, writable, large (the trampoline page).
        low(PD).cast::<u64>().write(0x83);
    }
}

/// Enters the installed trampoline; never returns.
///
/// # Safety
/// [`install`] ran; interrupts are off, FRED is off on this CPU and every other CPU is
/// parked: after this nothing of the old nucleus runs again.
pub unsafe fn jump() -> ! {
    // SAFETY: the caller's contract. The new CR3 maps the low 2 MiB 1:1 (the trampoline)
    // and the nucleus' upper half (the `jmp` after the CR3 write, and the stack the far
    // return pushes to).
    unsafe {
        core::arch::asm!(
            "mov cr3, {root}",
            "jmp {entry}",
            root = in(reg) PML4,
            entry = in(reg) KEXEC_PHYS,
            in("rdi") KEXEC_PHYS + PARAMS_OFFSET,
            options(noreturn)
        )
    }
}
