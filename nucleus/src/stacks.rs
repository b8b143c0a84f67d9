//! Where this CPU's stack block is, and which of its pages an address falls in.
use bsp_x86_64::stack_block::{StackBlock, StackPage};
use core::sync::atomic::{AtomicU64, Ordering};

/// Base of CPU 0's stack block; 0 until `memory::init` mapped it.
static BLOCK_BASE: AtomicU64 = AtomicU64::new(0);

pub fn set_block(block: &StackBlock) {
    BLOCK_BASE.store(block.base(), Ordering::Relaxed);
}

pub fn block() -> Option<StackBlock> {
    StackBlock::new(BLOCK_BASE.load(Ordering::Relaxed))
        .ok()
        .filter(|b| b.base() != 0)
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
