//! Privileged instructions: one small `unsafe fn` per instruction, the crate's main asm.
//!
//! Everything here assembles for every x86-64 target, the host included, on purpose: the
//! host trap-and-emulate harness (architecture.md §9) runs the very functions the nucleus
//! links, catching the `#GP` (SIGSEGV) each privileged instruction raises at CPL 3 and
//! emulating it. So nothing is `cfg(target_os = "none")`, and every asm block is one
//! instruction or a short fixed sequence the harness can recognise.
//!
//! Typed wrappers live elsewhere (`msr` for MSR values, `gdt`/`idt` for the tables); this
//! module only knows operands. Each `# Safety` section names the fault misuse raises.

use core::arch::asm;

use crate::gdt::{DescriptorTablePointer, Selector};

/// IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE (SDM vol. 4 table 2-2).
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Reads model-specific register `msr`.
///
/// # Safety
/// CPL 0 only (`#GP(0)` otherwise); `msr` must exist on this CPU (`#GP(0)` otherwise). Some
/// MSRs have read side effects; the caller knows the register it names.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees CPL 0 and an implemented MSR; rdmsr touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// CPL 0 only; `msr` must exist and accept `value` (reserved bits clear, addresses canonical),
/// else `#GP(0)`. An accepted write can change how every later instruction behaves (EFER,
/// GS base, FRED entry points, STAR): the caller guarantees the new state is consistent.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    let (low, high) = (value as u32, (value >> 32) as u32);
    // SAFETY: the caller vouches for register, value and resulting state. No `nomem`: a new
    // GS base or paging-related MSR changes what later memory accesses mean.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") low, in("edx") high, options(nostack, preserves_flags))
    };
}

/// Reads CR0.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`.
#[inline]
pub unsafe fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees CPL 0; reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR2, the linear address of the last page fault.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`.
#[inline]
pub unsafe fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees CPL 0; reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3: the physical address of the top-level page table plus PCD/PWT or PCID bits.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`.
#[inline]
pub unsafe fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees CPL 0; reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR4.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`.
#[inline]
pub unsafe fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees CPL 0; reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
/// CPL 0 only; reserved bits clear and a legal combination (clearing PG or PE in long mode,
/// or setting PG without PE, raises `#GP(0)`). Clearing WP lets the nucleus write read-only
/// pages: the caller restores it.
#[inline]
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller vouches for the new CR0. No `nomem`: paging behaviour changes.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR3: switches address space and, without PCID or with bit 63 clear, flushes the
/// non-global TLB entries.
///
/// # Safety
/// CPL 0 only; reserved bits clear (`#GP(0)`). `value` must point at a valid PML4 that maps
/// the code executing this instruction, its stack and everything the caller touches next,
/// or the next access faults (`#PF`, then `#DF`, then a triple fault).
#[inline]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new page tables map the current code and stack.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR4 (e.g. CR4.FRED, bit 32: fred-facts.md §1.2).
///
/// # Safety
/// CPL 0 only; reserved or unsupported bits raise `#GP(0)`, as does clearing PAE in long
/// mode. Setting FRED switches event delivery: the FRED MSRs must be programmed first
/// (fred-facts.md §11 point 3).
#[inline]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the new CR4 and the state it depends on.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads DR6, the debug status (the `#DB` cause under IDT delivery).
///
/// # Safety
/// CPL 0 only (`#GP(0)`); `#DB` if DR7.GD is set (general detect).
#[inline]
pub unsafe fn read_dr6() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees CPL 0 and DR7.GD clear; reading DR6 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The four registers `cpuid` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes `cpuid` for `leaf`/`subleaf`. Safe: `cpuid` is unprivileged and has no side effect
/// beyond serialising (it may cause a VM exit, which a hypervisor handles transparently).
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: cpuid only writes the four registers named here. LLVM reserves rbx (base pointer
    // of some frames), so it cannot be an operand: it is saved in a scratch register and
    // swapped back, which also hands the cpuid result in ebx out through that register.
    unsafe {
        asm!(
            "mov {rbx_save}, rbx",
            "cpuid",
            "xchg {rbx_save}, rbx",
            rbx_save = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        )
    };
    CpuidResult {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// Loads the GDT register.
///
/// # Safety
/// CPL 0 only (`#GP(0)`). `pointer` must describe a GDT that stays mapped and unchanged in the
/// parts in use for as long as it is loaded; a bad table faults at the next segment load or
/// event delivery (`#GP`/`#NP`, often escalating to `#DF`).
#[inline]
pub unsafe fn lgdt(pointer: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table outlives its use; lgdt only reads the operand.
    unsafe { asm!("lgdt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) };
}

/// Loads the IDT register.
///
/// # Safety
/// CPL 0 only (`#GP(0)`). `pointer` must describe an IDT that stays mapped for as long as it is
/// loaded, with gates to valid handlers; otherwise the next IDT-delivered event raises `#NP`
/// or `#GP`, then `#DF`, then a triple fault (reset).
#[inline]
pub unsafe fn lidt(pointer: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table outlives its use; lidt only reads the operand.
    unsafe { asm!("lidt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) };
}

/// Loads the task register and marks the TSS descriptor busy (a write to the GDT).
///
/// # Safety
/// CPL 0 only (`#GP(0)`). `selector` must name an available 64-bit TSS descriptor in the loaded
/// GDT (`#GP(sel)` for a wrong type or a busy TSS, `#NP(sel)` if not present). The TSS must stay
/// mapped for as long as the task register refers to it.
#[inline]
pub unsafe fn ltr(selector: Selector) {
    // SAFETY: the caller guarantees a valid TSS descriptor; ltr writes only its busy bit.
    unsafe { asm!("ltr {:x}", in(reg) selector.raw(), options(nostack, preserves_flags)) };
}

/// Loads LDTR. fredvisor has no LDT: the nucleus loads the null selector, so that any
/// reference to the LDT raises #GP instead of reading descriptors at the reset value of
/// LDTR's base (linear address 0, limit 0xffff: the bottom of a server's address space).
///
/// # Safety
/// `selector` must be null or name a present LDT descriptor in the GDT; CPL 0.
#[inline]
pub unsafe fn lldt(selector: Selector) {
    // SAFETY: the caller guarantees a null or valid LDT selector; lldt only loads LDTR.
    unsafe { asm!("lldt {:x}", in(reg) selector.raw(), options(nostack, preserves_flags)) };
}

/// Loads SS (with FRED, SS = kernel DS before CR4.FRED: fred-facts.md §11 point 3).
///
/// # Safety
/// `selector` must name a writable data segment with DPL = RPL = CPL, or be null at CPL 0 in
/// long mode; otherwise `#GP(sel)` (or `#SS(sel)` if not present). Blocks interrupts for one
/// instruction.
#[inline]
pub unsafe fn load_ss(selector: Selector) {
    // SAFETY: the caller guarantees a valid stack segment; the base is ignored in long mode.
    unsafe { asm!("mov ss, {:x}", in(reg) selector.raw(), options(nostack, preserves_flags)) };
}

/// Loads DS and ES with the same selector.
///
/// # Safety
/// `selector` must be null or name a readable segment accessible at the current CPL
/// (`#GP(sel)`, `#NP(sel)` otherwise).
#[inline]
pub unsafe fn load_ds_es(selector: Selector) {
    // SAFETY: the caller guarantees a valid data segment; bases are ignored in long mode.
    unsafe {
        asm!("mov ds, {0:x}", "mov es, {0:x}", in(reg) selector.raw(), options(nostack, preserves_flags))
    };
}

/// Reloads CS by a far return to the next instruction (there is no `mov cs`).
///
/// # Safety
/// `selector` must name a present 64-bit code segment with DPL = CPL in the loaded GDT
/// (`#GP(sel)`/`#NP(sel)` otherwise). Uses 16 bytes of the current stack.
#[inline]
pub unsafe fn reload_cs(selector: Selector) {
    // SAFETY: the caller guarantees a valid code segment at the current privilege level; the
    // pushed return address is the label right after `retfq`, so execution continues in place.
    unsafe {
        asm!(
            "push {selector}",
            "lea {target}, [rip + 55f]",
            "push {target}",
            "retfq",
            "55:",
            selector = in(reg) u64::from(selector.raw()),
            target = out(reg) _,
            options(preserves_flags),
        )
    };
}

/// `lkgs di`: loads GS's selector and puts the descriptor's base into IA32_KERNEL_GS_BASE,
/// leaving the current GS base alone (fred-facts.md §5). Encoded as bytes (F2 0F 00 /6 with
/// ModRM 0xF7 = register DI) because assemblers may not know the mnemonic.
///
/// # Safety
/// CPL 0 only and CPUID.(7,1):EAX\[18\] (LKGS) set, else `#UD`. `selector` must be null or name a
/// readable data segment (`#GP(sel)`, `#NP(sel)`). Replaces the kernel GS base: the caller
/// must not rely on the old one (under FRED it is the user's GS base).
#[inline]
pub unsafe fn lkgs(selector: Selector) {
    // SAFETY: the caller guarantees CPL 0, LKGS support and a loadable selector. The bytes are
    // `lkgs di`; only GS's selector and IA32_KERNEL_GS_BASE change.
    unsafe {
        asm!(".byte 0xf2, 0x0f, 0x00, 0xf7", in("edi") u32::from(selector.raw()), options(nostack, preserves_flags))
    };
}

/// Reads IA32_FS_BASE.
///
/// # Safety
/// As for [`rdmsr`]: CPL 0 only.
#[inline]
pub unsafe fn read_fs_base() -> u64 {
    // SAFETY: the caller guarantees CPL 0; IA32_FS_BASE exists on every x86-64 CPU.
    unsafe { rdmsr(IA32_FS_BASE) }
}

/// Reads IA32_GS_BASE (the active GS base).
///
/// # Safety
/// As for [`rdmsr`]: CPL 0 only.
#[inline]
pub unsafe fn read_gs_base() -> u64 {
    // SAFETY: the caller guarantees CPL 0; IA32_GS_BASE exists on every x86-64 CPU.
    unsafe { rdmsr(IA32_GS_BASE) }
}

/// Reads IA32_KERNEL_GS_BASE (the inactive GS base that SWAPGS or LKGS exchanges/writes).
///
/// # Safety
/// As for [`rdmsr`]: CPL 0 only.
#[inline]
pub unsafe fn read_kernel_gs_base() -> u64 {
    // SAFETY: the caller guarantees CPL 0; IA32_KERNEL_GS_BASE exists on every x86-64 CPU.
    unsafe { rdmsr(IA32_KERNEL_GS_BASE) }
}

/// Drops the TLB entries for the page containing `address` on this CPU.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`. Never faults for unmapped or non-canonical addresses (it is a
/// no-op then). Other CPUs keep their stale entries: shooting them down is the caller's job.
#[inline]
pub unsafe fn invlpg(address: u64) {
    // SAFETY: the caller guarantees CPL 0; invlpg does not access the memory at `address`.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}

/// Halts until the next interrupt, NMI or other wake event.
///
/// # Safety
/// CPL 0 only, else `#GP(0)`. With interrupts disabled only an NMI, SMI or INIT ends it.
#[inline]
pub unsafe fn hlt() {
    // SAFETY: the caller guarantees CPL 0. No `nomem`: handlers run meanwhile and write memory.
    unsafe { asm!("hlt", options(nostack, preserves_flags)) };
}

/// Clears RFLAGS.IF: maskable interrupts stay pending.
///
/// # Safety
/// Needs CPL ≤ IOPL (`#GP(0)` otherwise). The caller restores interrupts when done; code
/// that relies on this to make per-CPU data exclusive must not be preempted before it.
#[inline]
pub unsafe fn cli() {
    // SAFETY: the caller guarantees sufficient privilege. No `nomem`: this is also a compiler
    // barrier, so accesses of a critical section stay after it.
    unsafe { asm!("cli", options(nostack)) };
}

/// Sets RFLAGS.IF (effective after the next instruction).
///
/// # Safety
/// Needs CPL ≤ IOPL (`#GP(0)` otherwise). An IDT or FRED configuration able to deliver
/// interrupts must be in place, and the caller must not be inside a section that relies
/// on interrupts being off.
#[inline]
pub unsafe fn sti() {
    // SAFETY: the caller guarantees delivery is set up. No `nomem`: a compiler barrier too.
    unsafe { asm!("sti", options(nostack)) };
}

/// `sti; hlt`: waits for an interrupt without the race between the two, because `sti`
/// delays recognition of interrupts until after `hlt`.
///
/// # Safety
/// As for [`sti`] and [`hlt`]: CPL 0 (`#GP(0)`), delivery set up.
#[inline]
pub unsafe fn enable_and_hlt() {
    // SAFETY: the caller guarantees CPL 0 and working delivery; handlers run during the halt.
    unsafe { asm!("sti", "hlt", options(nostack)) };
}

/// A data-segment register `mov` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSegment {
    Ds,
    Es,
    Fs,
}

/// Reads the selector in `reg` (`mov r32, sreg`). Safe as [`read_gs_selector`].
#[inline]
pub fn read_selector(reg: DataSegment) -> Selector {
    let raw: u32;
    // SAFETY: only writes the output register.
    unsafe {
        match reg {
            DataSegment::Ds => {
                asm!("mov {:e}, ds", out(reg) raw, options(nomem, nostack, preserves_flags))
            }
            DataSegment::Es => {
                asm!("mov {:e}, es", out(reg) raw, options(nomem, nostack, preserves_flags))
            }
            DataSegment::Fs => {
                asm!("mov {:e}, fs", out(reg) raw, options(nomem, nostack, preserves_flags))
            }
        }
    };
    Selector::from_raw(raw as u16)
}

/// Reads DS, ES and FS in one go (the switch path's fast check).
#[inline]
pub fn read_data_selectors() -> [u16; 3] {
    let (ds, es, fs): (u32, u32, u32);
    // SAFETY: only writes the output registers.
    unsafe {
        asm!(
            "mov {:e}, ds",
            "mov {:e}, es",
            "mov {:e}, fs",
            out(reg) ds,
            out(reg) es,
            out(reg) fs,
            options(nomem, nostack, preserves_flags),
        )
    };
    [ds as u16, es as u16, fs as u16]
}

/// Loads `selector` into `reg`. For FS the base becomes the descriptor's (null: vendor
/// dependent), so the caller writes FS_BASE again if it matters.
///
/// # Safety
/// As [`load_ds_es`]: null, or a readable segment accessible at the current CPL.
#[inline]
pub unsafe fn load_selector(reg: DataSegment, selector: Selector) {
    let raw = selector.raw();
    // SAFETY: the caller guarantees the segment is loadable; bases are ignored in long mode
    // except FS's, which the caller handles.
    unsafe {
        match reg {
            DataSegment::Ds => asm!("mov ds, {:x}", in(reg) raw, options(nostack, preserves_flags)),
            DataSegment::Es => asm!("mov es, {:x}", in(reg) raw, options(nostack, preserves_flags)),
            DataSegment::Fs => asm!("mov fs, {:x}", in(reg) raw, options(nostack, preserves_flags)),
        }
    }
}

/// Reads the GS selector (`mov r32, gs`). Safe: any CPL may, and it touches no memory;
/// event delivery changes no selector, so in ring 0 it is the one ring 3 left.
#[inline]
pub fn read_gs_selector() -> Selector {
    let raw: u32;
    // SAFETY: only writes the output register.
    unsafe { asm!("mov {:e}, gs", out(reg) raw, options(nomem, nostack, preserves_flags)) };
    Selector::from_raw(raw as u16)
}

/// Reads the time-stamp counter. Not serialising: earlier instructions may still be in flight.
/// Safe: at CPL 3 with CR4.TSD set it raises `#GP(0)`, which is a fault, not undefined behaviour.
#[inline]
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdtsc only writes eax and edx.
    unsafe {
        asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Raises `#BP` (vector 3). Safe: the handler returns to the next instruction; without an IDT
/// or FRED set up it escalates to a triple fault (a reset, not memory corruption). On the host
/// it delivers SIGTRAP.
#[inline]
pub fn int3() {
    // SAFETY: int3 transfers to the breakpoint handler, which resumes after it. No `nomem`:
    // the handler may inspect and change memory.
    unsafe { asm!("int3", options(nostack)) };
}

#[cfg(test)]
mod tests;
