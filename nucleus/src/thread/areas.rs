//! The threads' register save areas (issue 17): one `Frame` per thread slot, where the entry
//! stubs save a ring-3 context and the exit stubs restore one from, so a context switch moves
//! a pointer (`cpu_info.save_area`, the exit frame) and never copies a frame.
//!
//! An area belongs to its thread, not to a CPU: a CPU only points at the area of the thread it
//! runs. The areas live outside [`super::Threads`] because the dispatcher holds the live
//! one as `&mut Frame` ([`LiveFrame`]) while it holds `&mut Threads`; the table reaches the
//! others through [`SaveAreas`], which refuses the one lent as the live frame (a panic, never
//! an alias).
use super::layout::MAX_THREADS;
use bsp_x86_64::frame::Frame;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

/// One save area: 64-byte aligned like a FRED return state. `repr(C)`: the frame first, at
/// the address the stubs get (`cpu_info.save_area`).
#[repr(C, align(64))]
struct Area {
    frame: UnsafeCell<Frame>,
    /// The thread made a syscall the fast path completed (`syscall::fast`, which borrows no
    /// table) since the scheduler last looked: its tick credits it like one the table saw.
    /// Only the CPU that runs the thread touches it.
    syscall_credit: AtomicBool,
}

/// The storage of one table's areas.
pub struct Storage([Area; MAX_THREADS]);

// SAFETY: an area is reached through the one `SaveAreas` handle of its storage (which the
// `&mut Threads` that owns it makes exclusive) or as the live frame of the event its stub
// saved (one CPU at a time: the thread runs on one CPU), never both at once (`lent`, a raw
// pointer `SaveAreas` only ever compares).
unsafe impl Sync for Storage {}

impl Storage {
    pub const fn new() -> Self {
        Self(
            [const {
                Area {
                    frame: UnsafeCell::new(Frame::ZERO),
                    syscall_credit: AtomicBool::new(false),
                }
            }; MAX_THREADS],
        )
    }
}

/// The table's handle on its areas: the only way to them but the live frame.
pub struct SaveAreas {
    storage: &'static Storage,
    /// The live frame the dispatcher holds while it handles an event (null: none): an area
    /// equal to it is refused.
    lent: *const Frame,
}

// SAFETY: `lent` is only compared, never dereferenced; the rest is a shared reference to
// `Sync` storage.
unsafe impl Send for SaveAreas {}

impl SaveAreas {
    /// The handle on `storage`.
    ///
    /// # Safety
    /// At most one handle exists per storage (the nucleus' table has the static one; each
    /// host test table its own leaked storage).
    pub const unsafe fn new(storage: &'static Storage) -> Self {
        Self {
            storage,
            lent: core::ptr::null(),
        }
    }

    /// Where slot `index`'s area is: for `cpu_info.save_area` and the exit stubs.
    #[inline(always)]
    pub fn ptr(&self, index: usize) -> *mut Frame {
        self.storage.0[index].frame.get()
    }

    /// Takes slot `index`'s syscall credit: whether the fast path completed a syscall of
    /// the thread since the last call.
    #[inline(always)]
    pub fn take_syscall_credit(&self, index: usize) -> bool {
        self.storage.0[index]
            .syscall_credit
            .swap(false, Ordering::Relaxed)
    }

    /// Host tests: slot `index`'s syscall credit, as the fast path sets it.
    #[cfg(test)]
    pub fn syscall_credit(&self, index: usize) -> &AtomicBool {
        &self.storage.0[index].syscall_credit
    }

    /// Marks the live frame (an area or a frame on a stack) as lent to the dispatcher, or
    /// none (null).
    #[inline(always)]
    pub fn set_lent(&mut self, live: *const Frame) {
        self.lent = live;
    }

    #[inline(always)]
    fn check(&self, index: usize) {
        assert!(
            !core::ptr::eq(self.ptr(index), self.lent),
            "save area {index} is the live frame: reach it through the dispatcher's frame"
        );
    }

    #[inline(always)]
    pub fn get(&self, index: usize) -> &Frame {
        self.check(index);
        // SAFETY: not the lent area (checked), so the only other way to it is this handle,
        // which `&self` borrows for the reference's life (no `&mut` through it meanwhile).
        unsafe { &*self.ptr(index) }
    }

    #[inline(always)]
    pub fn get_mut(&mut self, index: usize) -> &mut Frame {
        self.check(index);
        // SAFETY: as in `get`, and `&mut self` makes this the only reference through it.
        unsafe { &mut *self.ptr(index) }
    }
}

/// The frame an entry stub saved and hands to the dispatcher: the interrupted thread's save
/// area (ring 3) or a frame on the stack (ring 0). `#[repr(transparent)]` over the pointer the
/// stub passes in RDI.
#[repr(transparent)]
pub struct LiveFrame<'a>(NonNull<Frame>, PhantomData<&'a mut Frame>);

impl<'a> LiveFrame<'a> {
    /// A frame nothing else refers to (host tests).
    #[cfg(not(target_os = "none"))]
    pub fn local(frame: &'a mut Frame) -> Self {
        Self(NonNull::from(frame), PhantomData)
    }

    /// Host tests: thread `index`'s area as the stub would pass it after an event from it.
    #[cfg(test)]
    pub fn of_area(areas: &SaveAreas, index: usize) -> LiveFrame<'static> {
        LiveFrame(
            NonNull::new(areas.ptr(index)).expect("an area"),
            PhantomData,
        )
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *mut Frame {
        self.0.as_ptr()
    }

    /// The frame. Made only by the entry stubs (or [`LiveFrame::local`]), so the pointer is a
    /// frame the stub just saved; while the dispatcher holds the reference inside a borrow of
    /// the table, the table has the area marked lent (`Threads::with_live`), and outside one
    /// nothing else refers to it.
    #[inline(always)]
    pub fn frame(&mut self) -> &mut Frame {
        // SAFETY: see above: valid, aligned, initialised by the stub, and not aliased.
        unsafe { self.0.as_mut() }
    }
}

/// The nucleus' table's areas (reached only through [`table_areas`]' handle).
static AREAS: Storage = Storage::new();

/// The nucleus' table's areas: called once, by the thread table's static.
pub(super) const fn table_areas() -> SaveAreas {
    // SAFETY: the only call is the initialiser of the one `THREADS` static, so this is the
    // storage's only handle.
    unsafe { SaveAreas::new(&AREAS) }
}

/// Whether `area` is a guest vCPU slot's area of the nucleus' table (the guest slots follow
/// the servers', `layout`): one unsigned compare of addresses, no table borrow, so a
/// server's `syscall` pays only that for the hypercall fast path (`dispatch`). Any other
/// address (a host test table's own areas) is not.
#[inline(always)]
pub fn is_guest_area(area: *const Frame) -> bool {
    const SERVERS: usize = super::layout::BOOT_THREADS.len();
    let first = AREAS.0[SERVERS].frame.get() as usize;
    let last = AREAS.0[MAX_THREADS - 1].frame.get() as usize;
    (area as usize).wrapping_sub(first) <= last - first
}

/// Host tests: where slot `index`'s area of the nucleus' table is.
#[cfg(test)]
pub fn static_area_ptr(index: usize) -> *const Frame {
    AREAS.0[index].frame.get()
}

/// The syscall credit of `area` if it is a server slot's area of the nucleus' table (the
/// server slots come first, `layout`), `None` for a guest vCPU's (whose `syscall` is a
/// hypercall) or any other address. Compares addresses only: for the syscall fast path,
/// which borrows no table; the credit is an atomic, never part of the lent frame.
#[inline(always)]
pub fn server_syscall_credit(area: *const Frame) -> Option<&'static AtomicBool> {
    const SERVER_BYTES: usize = super::layout::BOOT_THREADS.len() * size_of::<Area>();
    let first = AREAS.0.as_ptr();
    // One unsigned compare for both ends; the rest must be a whole number of areas.
    let offset = (area as usize).wrapping_sub(first as usize);
    if offset >= SERVER_BYTES || !offset.is_multiple_of(size_of::<Area>()) {
        return None;
    }
    // SAFETY: `offset` is the start of a server slot's area inside `AREAS` (checked above):
    // the pointer is derived from `AREAS`, in bounds and aligned. Only the credit is
    // referenced: the frame stays the dispatcher's alone.
    Some(unsafe { &(*first.byte_add(offset)).syscall_credit })
}

/// Fresh areas for a host test's table.
#[cfg(not(target_os = "none"))]
pub(super) fn fresh_areas() -> SaveAreas {
    let storage: &'static Storage = Box::leak(Box::new(Storage::new()));
    // SAFETY: just leaked, so nothing else has a handle on it.
    unsafe { SaveAreas::new(storage) }
}
