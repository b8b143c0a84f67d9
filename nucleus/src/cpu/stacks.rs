//! Where this CPU's stack block is (its `PerCpu`), and which of its pages an address falls in.
use bsp_x86_64::stack_block::{StackBlock, StackPage};

/// This CPU's stack block, once mapped.
pub fn block() -> Option<StackBlock> {
    super::percpu::current().block()
}

/// The stack page `addr` lies in, if it is in this CPU's block.
pub fn classify(addr: u64) -> Option<StackPage> {
    block()?.classify(addr)
}

/// True if `[addr, addr + len)` lies within one mapped, ordinary stack page of the block.
pub fn is_mapped_stack(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    match (classify(addr), classify(end - 1)) {
        (Some(a), Some(b)) => a == b && !a.is_shadow_stack(),
        _ => false,
    }
}

/// Fills `out` with qwords of a nucleus stack for a ring-0 RSP and returns where they were
/// read: at RSP itself, or — when RSP points into the unmapped guard page under a stack, as
/// in a stack overflow's `#DF` — at the start of the stack page right above it (the
/// overflowing code's last frames). `None` (and nothing read) if neither is readable.
pub fn read_words(rsp: u64, out: &mut [u64]) -> Option<u64> {
    let span = out.len() as u64 * 8;
    let readable = |at: u64| is_mapped_stack(at, span) || on_boot_stack(at, span);
    let from = if readable(rsp) {
        rsp
    } else {
        let above = rsp.checked_add(0xfff)? & !0xfff;
        let in_block_guard = classify(rsp).is_some_and(|p| p.is_shadow_stack());
        (in_block_guard && readable(above)).then_some(above)?
    };
    for (i, word) in out.iter_mut().enumerate() {
        // SAFETY: `[from, from + span)` lies in one mapped page of the stack block or in the
        // boot stack (checked above); stacks hold plain qwords.
        *word = unsafe { core::ptr::read_volatile((from + i as u64 * 8) as *const u64) };
    }
    Some(from)
}

/// Size of the stack the nucleus boots on, before the per-CPU stack block exists.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
pub struct BootStack(pub [u8; BOOT_STACK_SIZE]);

/// The boot stack; `entry64` points RSP at its end.
#[unsafe(no_mangle)]
pub static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

/// True if `[addr, addr + len)` lies inside the boot stack.
pub fn on_boot_stack(addr: u64, len: u64) -> bool {
    let base = core::ptr::addr_of!(BOOT_STACK) as u64;
    addr >= base
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= base + BOOT_STACK_SIZE as u64)
}
