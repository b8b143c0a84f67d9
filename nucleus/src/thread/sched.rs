//! Who runs next: round robin over the runnable threads placed on this CPU (its run queue),
//! the watchdog tick, and the one context switch at the end of every event ([`finish`]),
//! which also wakes the other CPUs whose threads became runnable (`Threads::wake_remote`).
//!
//! A switch copies no frame: an event from ring 3 is saved straight into its thread's save
//! area (`super::areas`), so switching means pointing `cpu_info.save_area` at the next
//! thread's area and handing that area to the exit stub, which restores from it. Handlers
//! never switch; they say what should run next ([`NextTask`]) and `dispatch` calls
//! [`finish`] once, on its way out.
use super::layout::ThreadId;
use super::table::Threads;
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use ipc::message::GuestMode;

/// A thread running this many ticks without a syscall is considered hung (2 s).
pub const HUNG_TICKS: u64 = 2 * crate::timer::HZ as u64;

/// Where the exit stub resumes: the live frame, a thread's save area or the idle frame.
pub type ExitFrame = *mut Frame;

/// A handler's verdict: what runs when the event is done.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextTask {
    /// Back into the live frame as it is (the current thread goes on, or the nucleus code
    /// that was interrupted).
    Same,
    /// Whoever is next in turn; the current thread goes on if nobody else is runnable
    /// (yield, preemption).
    NextInTurn,
    /// The current thread stopped running (it waits, was killed or restarted): pick another
    /// without saving the live frame into it.
    Other,
}

/// What the timer tick found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing wrong: this is what runs next.
    Run(NextTask),
    /// The current thread ran [`HUNG_TICKS`] ticks without a syscall: its fault handler
    /// should hear of it.
    Hung(ThreadId),
}

fn from_ring3(frame: &Frame) -> bool {
    frame.ret.cs.selector().rpl() == 3
}

/// Carries out `next`: the one place the live frame is switched. Returns the frame the exit
/// stub restores.
#[inline(always)]
pub fn finish(t: &mut Threads, frame: &mut Frame, next: NextTask) -> ExitFrame {
    let exit = match next {
        NextTask::Same => frame,
        NextTask::NextInTurn => {
            let pick = pick_next(t);
            if pick != t.current() || !from_ring3(frame) {
                switch(t, frame, pick)
            } else {
                frame
            }
        }
        NextTask::Other => {
            t.set_current(None);
            let pick = pick_next(t);
            switch(t, frame, pick)
        }
    };
    t.wake_remote();
    exit
}

/// Boot: makes the first runnable thread current and returns its frame to enter (from the
/// boot context, ring 0). `None` if nobody is runnable.
pub fn start(t: &mut Threads) -> Option<ExitFrame> {
    let next = pick_next(t)?;
    let mut boot = Frame::ZERO;
    Some(switch(t, &mut boot, Some(next)))
}

/// Timer tick: preemption, and the hung-thread watchdog.
pub fn tick(t: &mut Threads, frame: &Frame) -> Tick {
    // The syscalls the fast path completed count as the table's own do.
    if let Some(cur) = t.current()
        && t.take_syscall_credit(cur)
    {
        t.get_mut(cur).made_syscall();
    }
    if let Some(cur) = t.current()
        && from_ring3(frame)
        && t.get_mut(cur).tick_exceeds(HUNG_TICKS)
    {
        println!(
            "nucleus: {} made no syscall for {} ticks: treating it as hung",
            t.get(cur).name(),
            HUNG_TICKS
        );
        return Tick::Hung(cur);
    }
    if t.current().is_none() || from_ring3(frame) {
        Tick::Run(NextTask::NextInTurn)
    } else {
        Tick::Run(NextTask::Same)
    }
}

/// The next runnable thread placed on this CPU after the current one, round robin.
#[inline]
fn pick_next(t: &Threads) -> Option<ThreadId> {
    let n = super::MAX_THREADS;
    let here = t.here();
    let start = t.current().map_or(0, |c| c.index() + 1);
    (0..n)
        .map(|k| ThreadId((start + k) % n))
        .find(|&id| t.get(id).runnable() && usize::from(t.get(id).cpu) == here)
}

/// What thread `cur` left in ring 3's segment state: a guest may have changed its bases
/// itself (a selector load): keep what the CPU holds, the GS base as the one of the mode it
/// ran in, and its data selectors.
#[inline]
fn save_segments(t: &mut Threads, cur: ThreadId) {
    let thread = t.get_mut(cur);
    let guest = thread.domain().is_some();
    let (fs, gs) = crate::cpu::user_segments_left(guest);
    if guest {
        let kernel = thread.vcpu.mode == GuestMode::Kernel;
        thread.bases.save_live(kernel, fs, gs);
        thread.selectors = crate::cpu::data_selectors_left();
    }
}

/// Guest vCPU `cur` leaves the CPU by a direct switch (the hypercall fast path,
/// `forward::hypercall::fast`): what [`switch`] keeps of a guest that leaves, its segment
/// state as ring 3 left it.
#[inline(always)]
pub fn leave_guest(t: &mut Threads, cur: ThreadId) {
    save_segments(t, cur);
}

/// Guest `id` comes in where another guest's data selectors (or none known) are live: those
/// go back to their vCPU, `id`'s are loaded.
#[cold]
#[inline(never)]
fn take_data_selectors(t: &mut Threads, id: ThreadId) {
    match crate::cpu::selectors_owner() {
        // `domains::vcpu::selectors` changed what `id` must get: nothing to keep.
        Some(owner) if owner == id.index() => {}
        Some(owner) if owner < super::MAX_THREADS => {
            t.get_mut(ThreadId(owner)).selectors = crate::cpu::data_selectors_left();
        }
        Some(_) => {}
        None => {}
    }
    let thread = t.get_mut(id);
    thread.selectors_stale = false;
    let mut selectors = thread.selectors;
    if crate::cpu::load_data_selectors(thread.tables, &mut selectors) {
        thread.selectors = selectors;
    }
    crate::cpu::set_selectors_owner(Some(id.index()));
}

/// The direct switch of the event fast path (issue 17; seL4's and Hubris' "switch to the
/// receiver"): the current thread stopped (it waits for `id`'s answer, its context where
/// the entry stub saved it) and server `id`, placed on this CPU and not current, runs next.
/// No pick, and none of [`switch`]'s guest state: what `switch` does for such a thread.
#[inline(always)]
pub fn switch_to_server(t: &mut Threads, id: ThreadId) -> ExitFrame {
    debug_assert!(t.get(id).domain().is_none() && t.current() != Some(id));
    let (cs, ss) = super::SERVER_SEGMENTS;
    let target = t.area_mut(id);
    // As in `switch`: only the selectors of the saved CS and SS qwords survive.
    target.ret.cs = CsQword::from_raw(u64::from(cs));
    target.ret.ss = SsQword::from_raw(u64::from(ss));
    let exit: ExitFrame = target;
    let thread = t.get(id);
    crate::mm::load_root(thread.root().unwrap_or_else(crate::mm::kernel_root));
    crate::cpu::load_descriptor_tables(thread.tables);
    crate::cpu::load_server_segments();
    crate::cpu::set_save_area(exit);
    t.set_current(Some(id));
    exit
}

/// What the CPU must hold for thread `id`, which was not current: its address space and
/// descriptor tables, and a guest's data selectors and segment bases.
#[inline(always)]
fn load_thread(t: &mut Threads, id: ThreadId) {
    let thread = t.get(id);
    let root = thread.root().unwrap_or_else(crate::mm::kernel_root);
    crate::mm::load_root(root);
    crate::cpu::load_descriptor_tables(thread.tables);
    // A guest's DS/ES/FS as it left them, where another guest's are live (which are kept
    // first). A descriptor it changed since loads null (`domains::vcpu::selectors` reported
    // it already). Servers run on what is there: they can name nothing but null and the flat
    // segments.
    if thread.domain().is_some()
        && (thread.selectors_stale || crate::cpu::selectors_owner() != Some(id.index()))
    {
        take_data_selectors(t, id);
    }
    let thread = t.get(id);
    // A guest's live GS is its mode's (Xen's SWAPGS on the mode toggle: the toggle happens
    // in a reply, while the vCPU is not live, so this is where the other base comes in).
    // Servers: zeros.
    let kernel = thread.vcpu.mode == GuestMode::Kernel;
    crate::cpu::load_user_segments(thread.domain().map(|_| (&thread.bases, kernel)));
}

/// The reply fast path's way into guest vCPU `id` (placed on this CPU, runnable, not
/// current; it waited for an answer, so its context is in its save area and was saved from
/// ring 3): what [`switch`] does for such a thread after the current one stopped, without
/// its generic checks.
#[inline(always)]
pub fn switch_to_guest(t: &mut Threads, id: ThreadId) -> ExitFrame {
    debug_assert!(t.get(id).domain().is_some() && t.current() != Some(id));
    let (cs, ss) = t.get(id).segments();
    let target = t.area_mut(id);
    // As in `switch`: a ring-3 frame resumes on its kind's 64-bit selectors, no event bits.
    target.ret.cs = CsQword::from_raw(u64::from(cs));
    target.ret.ss = SsQword::from_raw(u64::from(ss));
    let exit: ExitFrame = target;
    load_thread(t, id);
    crate::cpu::set_save_area(exit);
    t.set_current(Some(id));
    exit
}

/// Leaves the current thread (its context stays where the entry stub saved it) and makes
/// `next` (or idle) live: returns the frame to enter.
fn switch(t: &mut Threads, frame: &mut Frame, next: Option<ThreadId>) -> ExitFrame {
    if let Some(cur) = t.current()
        && from_ring3(frame)
    {
        // A host test's live frame may be a local one: then it is copied into the area.
        t.keep_live(cur, frame);
        save_segments(t, cur);
    }
    let exit = match next {
        Some(id) => {
            let (cs, ss) = t.get(id).segments();
            // The live frame may be `id`'s own area (it restarted itself and runs again).
            let target: &mut Frame = if t.is_area_of(id, frame) {
                t.refresh_live(id, frame);
                frame
            } else {
                t.area_mut(id)
            };
            // The saved SS qword carries the event bits of *that* event; ERETU would act on
            // its STI/SWEVENT/NMI bits (fred-facts.md §4.3), so only the selector survives.
            target.ret.ss = SsQword::from_raw(target.ret.ss.raw() & 0xffff);
            target.ret.cs = CsQword::from_raw(target.ret.cs.raw() & 0xffff);
            if from_ring3(target) {
                // Every thread runs on its own kind's 64-bit segments only. A frame that says
                // otherwise (a compat-mode SYSCALL's, issue 13) is never resumed in that mode:
                // under FRED, ERETU to STAR's compat selector would not even look at the GDT.
                target.ret.cs = CsQword::from_raw(u64::from(cs));
                target.ret.ss = SsQword::from_raw(u64::from(ss));
            }
            let exit: ExitFrame = target;
            if t.current() != Some(id) {
                load_thread(t, id);
            }
            crate::cpu::set_save_area(t.area_ptr(id));
            exit
        }
        None => {
            crate::mm::load_root(crate::mm::kernel_root());
            crate::cpu::idle_exit()
        }
    };
    t.set_current(next);
    exit
}

#[cfg(test)]
mod tests;
