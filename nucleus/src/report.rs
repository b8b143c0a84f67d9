//! Captures a frame and the CPU state around it into an `ipc::dump::RegisterDump`.
//!
//! The rendering (`show_registers`) lives in `ipc::dump`, so the nucleus' fatal path and
//! `fred-server` print the very same layout. This module only reads registers: control
//! registers, EFER and the segment bases, plus a few qwords of the interrupted stack when
//! that stack is the nucleus' own (a Ring3 stack is never read here).
use bsp_x86_64::frame::Frame;
use bsp_x86_64::insn;
use bsp_x86_64::stack_block::StackPage;
use ipc::dump::{Delivery, RegisterDump, StackName, Text};

const STACK_WORDS: usize = 16;

/// The stack level an event arrived on, from where its frame lies (delivery-blind): the
/// `#DF` page is SL3/IST1, the other IST pages their IST index, the primary stack SL0.
fn stack_level(delivery: Delivery, page: Option<StackPage>) -> u8 {
    match (delivery, page) {
        (Delivery::Fred, Some(StackPage::Df)) => 3,
        (Delivery::Fred, _) => 0,
        (Delivery::Idt, Some(StackPage::Df)) => crate::cpu::IST_DF.get(),
        (Delivery::Idt, Some(StackPage::Db)) => crate::cpu::IST_DB.get(),
        (Delivery::Idt, Some(StackPage::Nmi)) => crate::cpu::IST_NMI.get(),
        (Delivery::Idt, Some(StackPage::Mc)) => crate::cpu::IST_MC.get(),
        (Delivery::Idt, _) => 0,
    }
}

/// Captures everything `show_registers` shows. Allocation-free and lock-free: safe on `#DF`.
pub fn capture(prefix: &str, frame: &Frame, delivery: Delivery) -> RegisterDump {
    let frame_addr = core::ptr::from_ref(frame) as u64;
    let page = crate::stacks::classify(frame_addr);
    // Which stack the *frame* is on: the one the event was delivered to.
    let stack = crate::stacks::block().map_or(StackName::Unknown, |b| b.stack_name(frame_addr));
    let ret = &frame.ret;
    let mut dump = RegisterDump {
        prefix: Text::truncated(prefix),
        cpu: 0,
        delivery,
        stack,
        stack_level: stack_level(delivery, page),
        // SAFETY: CPL 0 (this runs in the dispatcher); reading CR0 has no side effects.
        cr0: unsafe { insn::read_cr0() },
        // SAFETY: as above, CR2.
        cr2: unsafe { insn::read_cr2() },
        // SAFETY: as above, CR3.
        cr3: unsafe { insn::read_cr3() },
        // SAFETY: as above, CR4.
        cr4: unsafe { insn::read_cr4() },
        efer: bsp_x86_64::msr::read::<bsp_x86_64::regs::Efer>().bits(),
        // SAFETY: CPL 0; IA32_FS_BASE exists on every 64-bit CPU and reading it is harmless.
        fs_base: unsafe { insn::read_fs_base() },
        // SAFETY: as above, IA32_GS_BASE.
        gs_base: unsafe { insn::read_gs_base() },
        // SAFETY: as above, IA32_KERNEL_GS_BASE.
        kernel_gs_base: unsafe { insn::read_kernel_gs_base() },
        ..RegisterDump::default()
    };
    frame.fill_dump(&mut dump);
    if ret.cs.selector().rpl() == 0 {
        dump.symbol = crate::symbols::lookup(ret.rip);
    }
    if ret.cs.selector().rpl() == 0
        && let Some(from) = readable_stack(ret.rsp)
    {
        for i in 0..STACK_WORDS as u64 {
            // SAFETY: `readable_stack` checked that [from, from + 128) lies in one mapped page
            // of the nucleus' stack block or in the boot stack; stacks hold plain qwords.
            let word = unsafe { core::ptr::read_volatile((from + i * 8) as *const u64) };
            let _ = dump.stack_words.0.push(word);
        }
        dump.stack_skipped = (from - ret.rsp) as u16;
    }
    dump
}

/// Where the dump's stack words can be read for a ring-0 RSP: at RSP itself, or — when RSP
/// points into the unmapped guard page under a stack, as in a stack overflow's `#DF` — at
/// the start of the stack page right above it (the overflowing code's last frames).
fn readable_stack(rsp: u64) -> Option<u64> {
    let span = STACK_WORDS as u64 * 8;
    let readable =
        |at: u64| crate::stacks::is_mapped_stack(at, span) || crate::boot::on_boot_stack(at, span);
    if readable(rsp) {
        return Some(rsp);
    }
    let above = rsp.checked_add(0xfff)? & !0xfff;
    let in_block_guard = crate::stacks::classify(rsp).is_some_and(|p| p.is_shadow_stack());
    (in_block_guard && readable(above)).then_some(above)
}
