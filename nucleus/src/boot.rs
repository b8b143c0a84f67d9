//! Multiboot2 header and the 32→64-bit trampoline (architecture.md §2 steps 1–2).
//!
//! GRUB enters `_start32` in 32-bit protected mode with paging off, EAX = the multiboot2
//! magic and EBX = the physical address of the boot information. The trampoline lives in
//! `.boot` (linked at its physical address), builds throw-away page tables that identity-map
//! the first 4 GiB and alias them at the image's slot (L4 slot 257, `layout::IMAGE_BASE`),
//! enters long mode and jumps to [`kernel_entry`] on the boot stack in the image
//! (`cpu::stacks::BOOT_STACK`), which hands the loader's registers to `startup`. Nothing here is used after `memory::init` replaces
//! these tables with the nucleus' own W^X mappings.
use core::arch::global_asm;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6                              /* multiboot2 magic */
    .long 0                                       /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 6, 0                                    /* module alignment tag: page-align modules */
    .long 8
    .balign 8
    .word 0, 0                                    /* end tag */
    .long 8
mb2_header_end:

    /* A multiboot (v1) header too, so that a v1 loader (QEMU's -kernel) starts the nucleus
       and the nucleus can say in one line that it needs multiboot2 instead of faulting on a
       structure it does not understand. The address fields let a v1 loader take the ELF64
       file as a flat image: file offsets map linearly onto physical addresses. */
    .balign 4
mb1_header:
    .long 0x1badb002
    .long 0x00010000                              /* flags: the address fields are valid */
    .long 0x100000000 - (0x1badb002 + 0x00010000)
    .long mb1_header                              /* header_addr */
    .long __image_phys_start                      /* load_addr */
    .long __mb1_load_end                          /* load_end_addr: end of file data */
    .long __image_phys_end                        /* bss_end_addr */
    .long _start32                                /* entry_addr */

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pd:        .skip 4 * 4096                    /* 4 GiB of 2 MiB pages */
boot_stack32:   .skip 4096
boot_stack32_top:

    .section .boot.data, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff                      /* 0x08: 64-bit ring-0 code */
    .quad 0x00cf93000000ffff                      /* 0x10: ring-0 data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
no_long_mode_msg:
    .ascii "fredvisor: this CPU has no long mode; halting\r\n"
no_long_mode_msg_end:

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov edi, eax                                  /* multiboot2 magic → 1st argument */
    mov esi, ebx                                  /* boot information → 2nd argument */
    mov esp, offset boot_stack32_top

    /* Long mode available? CPUID 0x80000001 EDX bit 29. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 90f
    mov eax, 0x80000001
    cpuid
    bt edx, 29
    jnc 90f

    /* Zero the boot tables (GRUB zero-fills NOLOAD memory, but do not rely on it). */
    push edi
    mov edi, offset boot_pml4
    mov ecx, (6 * 4096) / 4
    xor eax, eax
    rep stosd
    pop edi

    /* PML4[0] (identity) and PML4[image slot] (the image's VMA = IMAGE_BASE + physical)
       → the same PDPT: the first 4 GiB appear at both. */
    mov eax, offset boot_pdpt_low
    or eax, 3
    mov [boot_pml4], eax
    mov [boot_pml4 + {image_slot} * 8], eax

    /* PDPT[0..4] → the four page directories. */
    mov ecx, 0
1:  mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt_low + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b

    /* 2048 large pages of 2 MiB: physical 0 .. 4 GiB, present + writable + PS. */
    mov ecx, 0
3:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [boot_pd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov [boot_pd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb 3b

    /* CR4.PAE, CR3, EFER.LME|NXE, then CR0.PG|WP enters long mode. */
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, offset long_mode_low
    push 0x08
    push eax
    retf

90: /* No long mode: say so on COM1 and stop. */
    mov esi, offset no_long_mode_msg
91: mov dx, 0x3fd
92: in al, dx
    test al, 0x20
    jz 92b
    mov dx, 0x3f8
    mov al, [esi]
    out dx, al
    inc esi
    cmp esi, offset no_long_mode_msg_end
    jb 91b
93: hlt
    jmp 93b

    .code64
long_mode_low:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    movabs rax, offset entry64
    jmp rax

    .text
entry64:
    lea rsp, [rip + BOOT_STACK + {stack_size}]
    xor ebp, ebp
    call {kernel_entry}
    ud2
"#,
    stack_size = const crate::cpu::stacks::BOOT_STACK_SIZE,
    image_slot = const crate::layout::IMAGE_SLOT,
    kernel_entry = sym kernel_entry,
);

/// Rust entry from the trampoline: EDI = multiboot2 magic, ESI = boot information.
extern "C" fn kernel_entry(magic: u32, info: u32) -> ! {
    // SAFETY: these are the loader's registers as the trampoline received them, and the boot
    // tables that map its structure are still live (startup reads it first thing).
    crate::startup::start_nucleus(unsafe { crate::bootinfo::LoaderHandoff::new(magic, info) })
}
