//! Statics owned by one CPU: [`RacyCell`] (the owner states its argument at each access)
//! and [`Exclusive`] (the borrow is checked, so uniqueness rests on no convention); and the
//! one static every CPU borrows, [`CpuLock`] (the thread table).
//!
//! The descriptor tables and the `PerCpu` blocks are written during a CPU's bring-up
//! (before interrupts are enabled) and afterwards by the CPU that owns them with interrupts
//! off, so "owned by this CPU" is the whole synchronisation argument for `RacyCell`; each
//! access site states it in its SAFETY comment. The thread table is a [`CpuLock`]; the
//! statics only its borrowers touch (the domains, memory after boot) are covered by it; the
//! other `Exclusive` statics are the boot CPU's (docs/architecture-notes.md, "CPUs").
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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

/// A static lent out as `&mut T` to one closure at a time across CPUs (the thread table):
/// a CPU that finds it lent to another spins until it is free, one that finds it lent to
/// itself (a handler re-entering it) panics instead of aliasing or deadlocking.
pub struct CpuLock<T> {
    /// 0 when free, else the holder's CPU number + 1.
    holder: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: `with` hands out the `&mut T` only to the CPU whose number it swapped into
// `holder` (an acquire compare-exchange from 0), and frees it with a release store after the
// closure, so the accesses of two CPUs are ordered and never overlap; on one CPU a nested
// borrow panics before it could alias.
unsafe impl<T: Send> Sync for CpuLock<T> {}

impl<T> CpuLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            holder: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the only reference to the value on CPU `cpu`; while another CPU holds
    /// it, calls `waiting` between tries (the TLB shootdown answer: a holder may be waiting
    /// for this CPU).
    #[inline(always)]
    pub fn with<R>(&self, cpu: u32, waiting: impl Fn(), f: impl FnOnce(&mut T) -> R) -> R {
        let me = cpu + 1;
        while let Err(holder) =
            self.holder
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            if holder == me {
                panic!("nested borrow of a CPU-locked static");
            }
            waiting();
            core::hint::spin_loop();
        }
        // SAFETY: `holder` went from 0 to `me`, so no other reference exists until the
        // release store below (see the `Sync` impl).
        let result = f(unsafe { &mut *self.value.get() });
        self.holder.store(0, Ordering::Release);
        result
    }

    /// Runs `f` unless the value is lent (to any CPU): for an observer that may run inside
    /// a borrower.
    pub fn try_with<R>(&self, cpu: u32, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.holder
            .compare_exchange(0, cpu + 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: as in `with`.
        let result = f(unsafe { &mut *self.value.get() });
        self.holder.store(0, Ordering::Release);
        Some(result)
    }
}

/// `fn $name() -> &'static RacyCell<$ty>`: a [`RacyCell`] static starting as `$init`. On
/// the host the test harness runs tests on several threads, so each thread gets its own
/// (leaked) cell there: the safe core's tests of a module with statics (`domains`) do not
/// see each other's state. On bare metal it is one plain static.
macro_rules! racy_static {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> $ty:ty = $init:expr;) => {
        $(#[$attr])*
        $vis fn $name() -> &'static $crate::racy::RacyCell<$ty> {
            #[cfg(target_os = "none")]
            {
                static CELL: $crate::racy::RacyCell<$ty> = $crate::racy::RacyCell::new($init);
                &CELL
            }
            #[cfg(not(target_os = "none"))]
            {
                std::thread_local! {
                    static CELL: &'static $crate::racy::RacyCell<$ty> =
                        Box::leak(Box::new($crate::racy::RacyCell::new($init)));
                }
                CELL.with(|cell| *cell)
            }
        }
    };
}
pub(crate) use racy_static;
