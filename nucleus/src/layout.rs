//! The nucleus' virtual layout: everything it maps lives in L4 slots 256-271, Xen's
//! hypervisor window (pv64-abi.md §5.4), so a PV64 guest owns every other slot of the
//! canonical address space, as on Xen (a Linux PV kernel links at 0xffffffff80000000, slot
//! 511, and puts its direct map in slot 273).
//!
//! | slot | from | what |
//! | --- | --- | --- |
//! | 256 | [`M2P_BASE`] | the read-only machine-to-physical table guests read (U, RO, NX) |
//! | 257 | [`IMAGE_BASE`] | the nucleus image: `VMA = IMAGE_BASE + physical address` |
//! | 258 | [`STACKS_BASE`] | per-CPU stack blocks, one [`STACK_SLOT`] each; device pages (the local APIC's) at [`MMIO_BASE`] |
//! | 259 | [`DIRECT_MAP_BASE`] | all RAM, 1:1 (RW, NX), at most [`DIRECT_MAP_MAX`] |
//! | 260 | [`DESCRIPTORS_BASE`] | each domain's GDT and LDT windows ([`DESCRIPTOR_WINDOW`] each) |
//! | 261-271 | | unused, never the guest's |
//!
//! Plain constants only: `build.rs` compiles this file as a module of its own (`#[path]`)
//! for the link script, so the image is linked where the nucleus maps it.

/// Physical page the AP trampoline is copied to, below 1 MiB (the SIPI vector is its page
/// number).
pub const TRAMPOLINE_PHYS: u64 = 0x8000;
/// Low RAM the trampoline owns: its page and the three AP boot-table pages after it. The
/// frame allocator never hands it out.
pub const TRAMPOLINE_RESERVED: core::ops::Range<u64> = TRAMPOLINE_PHYS..TRAMPOLINE_PHYS + 0x4000;

/// Low RAM the kexec hand-off owns (issue 21): the trampoline page at [`KEXEC_PHYS`], its
/// three identity-table pages, then the next generation's multiboot2 information up to the
/// end. Every generation keeps it from the frame allocator, so a hand-off can write it while
/// the old nucleus still runs, and the new one finds its boot information intact.
pub const KEXEC_PHYS: u64 = 0x1_0000;
pub const KEXEC_RESERVED: core::ops::Range<u64> = KEXEC_PHYS..KEXEC_PHYS + 0x1_0000;
/// Where in [`KEXEC_RESERVED`] the multiboot2 information starts (after four pages).
pub const KEXEC_MBI_PHYS: u64 = KEXEC_PHYS + 0x4000;

/// The first L4 slot of the nucleus' window (Xen's `HYPERVISOR_VIRT_START`).
pub const FIRST_SLOT: usize = 256;
/// One past its last slot (Xen's `HYPERVISOR_VIRT_END`).
pub const END_SLOT: usize = 272;

/// The virtual address where L4 slot `slot` (256-511) begins.
pub const fn slot_base(slot: usize) -> u64 {
    0xffff_0000_0000_0000 | (slot as u64) << 39
}

/// The L4 slot `va` lies in.
pub const fn slot_of(va: u64) -> usize {
    ((va >> 39) & 511) as usize
}

/// Slot 256: the read-only M2P at Xen's `MACH2PHYS_VIRT_START`.
pub const M2P_SLOT: usize = 256;
pub const M2P_BASE: u64 = slot_base(M2P_SLOT);
/// Slot 257: the image, linked at `IMAGE_BASE + LMA` (a 2 MiB load address gives text at
/// `0xffff_8080_0020_0000`). Position-independent code (`-C relocation-model=pie`) reaches
/// it outside the top 2 GiB the kernel code model needs.
pub const IMAGE_SLOT: usize = 257;
pub const IMAGE_BASE: u64 = slot_base(IMAGE_SLOT);
/// Slot 258: stack blocks.
pub const STACKS_SLOT: usize = 258;
pub const STACKS_BASE: u64 = slot_base(STACKS_SLOT);
/// Each CPU's share of the stacks slot: 64 KiB, the 32 KiB block in its upper half, so the
/// page below every block is an unmapped guard.
pub const STACK_SLOT: u64 = 64 << 10;
/// Device pages in the stacks slot, 1 GiB above the blocks: `MMIO_BASE + phys` (below 4 GiB),
/// uncached.
pub const MMIO_BASE: u64 = STACKS_BASE + (1 << 30);
/// Slot 259: the direct map of physical memory.
pub const DIRECT_MAP_SLOT: usize = 259;
pub const DIRECT_MAP_BASE: u64 = slot_base(DIRECT_MAP_SLOT);
/// Direct-map ceiling: one slot, 512 GiB.
pub const DIRECT_MAP_MAX: u64 = 512 << 30;
/// Slot 260: a window per domain onto its descriptor tables: the GDT (its `set_gdt`
/// frames in pages 0-13, the domain's reserved page 14 at 0xe000) and, 64 KiB above, the
/// LDT (its `SET_LDT` frames, up to 16 pages).
pub const DESCRIPTORS_SLOT: usize = 260;
pub const DESCRIPTORS_BASE: u64 = slot_base(DESCRIPTORS_SLOT);
/// One domain's share of the slot: the GDT window, then the LDT window.
pub const DESCRIPTOR_WINDOW: u64 = 128 << 10;
/// Where the LDT window starts inside a domain's share.
pub const LDT_WINDOW_OFFSET: u64 = 64 << 10;

const _: () = {
    assert!(M2P_BASE == 0xffff_8000_0000_0000);
    assert!(IMAGE_BASE == 0xffff_8080_0000_0000);
    assert!(STACKS_BASE == 0xffff_8100_0000_0000);
    assert!(DIRECT_MAP_BASE == 0xffff_8180_0000_0000);
    assert!(slot_of(slot_base(END_SLOT) - 1) == END_SLOT - 1);
    assert!(FIRST_SLOT <= M2P_SLOT && M2P_SLOT < IMAGE_SLOT);
    assert!(IMAGE_SLOT < STACKS_SLOT && STACKS_SLOT < DIRECT_MAP_SLOT);
    assert!(DIRECT_MAP_SLOT < DESCRIPTORS_SLOT && DESCRIPTORS_SLOT < END_SLOT);
    assert!(DIRECT_MAP_MAX == 1 << 39);
    assert!(KEXEC_RESERVED.start >= TRAMPOLINE_RESERVED.end);
    assert!(KEXEC_MBI_PHYS < KEXEC_RESERVED.end);
};

/// How many CPUs the nucleus brings up at most (the `PerCpu` pool, the thread table's
/// per-CPU `current`).
pub const MAX_CPUS: usize = 8;
