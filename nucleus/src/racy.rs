//! Statics owned by one CPU: [`RacyCell`] (the owner states its argument at each access)
//! and [`Exclusive`] (the borrow is checked, so uniqueness rests on no convention).
//!
//! The descriptor tables and the `PerCpu` blocks are written during a CPU's bring-up
//! (before interrupts are enabled) and afterwards by the CPU that owns them with interrupts
//! off, so "owned by this CPU" is the whole synchronisation argument for `RacyCell`; each
//! access site states it in its SAFETY comment. The other statics (the thread table, the
//! domains, memory) are used by the boot CPU only: once online, the APs take only their own
//! APIC's interrupts (`cpu::ipi`) and touch none of them (docs/architecture-notes.md, "CPUs").
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub struct RacyCell<T>(UnsafeCell<T>);

// SAFETY: see the module comment: one owning CPU, accesses with interrupts off or during boot.
unsafe impl<T> Sync for RacyCell<T> {}

impl<T> RacyCell<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A static lent out as `&mut T` to one closure at a time: a second borrow while the first
/// lives (a handler re-entering the table) panics instead of aliasing.
pub struct Exclusive<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `with` hands out the `&mut T` only while `taken` is set, and sets it first. The
// table's borrowers run on the boot CPU only, with interrupts off, so the flag needs no atomic
// read-modify-write (a relaxed load and store: no `lock` prefix on the hot path).
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    pub const fn new(value: T) -> Self {
        Self {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the only reference to the value.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self.taken.load(Ordering::Relaxed) {
            panic!("nested borrow of an exclusive static");
        }
        self.taken.store(true, Ordering::Relaxed);
        // SAFETY: `taken` was clear and is now set, so no other reference exists until it is
        // cleared again below (single CPU, see the `Sync` impl).
        let result = f(unsafe { &mut *self.value.get() });
        self.taken.store(false, Ordering::Relaxed);
        result
    }

    /// Runs `f` with the only reference to the value, or returns `None` if it is lent
    /// already (for an observer that may run inside a borrower, e.g. an NMI's trace).
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.taken.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.with(f))
    }
}
