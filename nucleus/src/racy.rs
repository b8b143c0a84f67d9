//! `RacyCell`: a static the single boot CPU initialises and then only it touches.
//!
//! The descriptor tables and the per-CPU block are written during boot (before interrupts
//! are enabled) and afterwards by the CPU that owns them with interrupts off. There is one
//! CPU, so "owned by this CPU" is the whole synchronisation argument; each access site
//! states it in its SAFETY comment.
use core::cell::UnsafeCell;

pub struct RacyCell<T>(UnsafeCell<T>);

// SAFETY: see the module comment: one CPU, accesses with interrupts off or during boot.
unsafe impl<T> Sync for RacyCell<T> {}

impl<T> RacyCell<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
