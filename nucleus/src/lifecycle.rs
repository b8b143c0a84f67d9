//! Starting and stopping threads: start from a boot module, kill, restart, and telling the
//! fault handler who is running ("announce"); `nucleus: ready` once all said hello.
//!
//! Every restart, whoever asks for it (a fault handler's reply, a fault nobody could be told
//! about, a fault handler's own crash), comes out of the thread's restart budget: the first
//! at once, each later one after a doubling backoff, and once the budget is spent the
//! nucleus gives up on the thread and it stays down (issue 13).
use crate::loader::{self, LoadError, StartParams};
use crate::thread::{AfterReady, ThreadId, Threads};
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::gdt;
use bsp_x86_64::regs::Rflags;
use core::sync::atomic::Ordering;
use ipc::NucleusMessage;
use ipc::layout;

/// Starts thread `id` from its boot module (`None`: the module is missing). True if it runs.
pub fn start(t: &mut Threads, id: ThreadId, module: Option<core::ops::Range<u64>>) -> bool {
    let name = t.get(id).name();
    let Some(module) = module else {
        println!("server {name}: rejected: no boot module named {name}");
        return false;
    };
    t.get_mut(id).set_module(module);
    match load(t, id) {
        Ok(()) => true,
        Err(e) => {
            println!("server {name}: rejected: {e}");
            false
        }
    }
}

/// Stops thread `id` and frees its address space.
pub fn kill(t: &mut Threads, id: ThreadId) {
    let thread = t.get_mut(id);
    if let Some(space) = thread.space.take() {
        space.destroy();
    }
    thread.stop();
    println!("nucleus: {} stopped", thread.name());
    crate::trace::stopped(id.index(), thread.name());
    if id == crate::thread::GUEST_MANAGER {
        end_guests(t);
    }
    check_ready(t);
}

/// The guest manager is gone: nobody can answer its guests, and a new one would not know
/// their domains. Every vCPU stops and every domain frame goes back to the allocator.
/// A vCPU live on another CPU is taken off its run queue first and that CPU asked to switch
/// away (it is never stopped under another CPU's feet); the domains end at a later tick, once
/// no CPU holds one (meanwhile `domain_create` answers Busy).
pub fn end_guests(t: &mut Threads) {
    let mut waiting = false;
    for number in 1..=ipc::domain::MAX_DOMAINS as u16 {
        if let Some(id) = t.guest_id(number)
            && t.live_elsewhere(id)
        {
            t.unplace(id);
            waiting = true;
        }
    }
    crate::domains::GUESTS_ENDING.store(waiting, Ordering::Relaxed);
    if waiting {
        return;
    }
    let stopped = t.stop_guests();
    crate::domains::destroy_all();
    if stopped > 0 {
        println!("nucleus: {stopped} guest domain(s) ended with their manager");
    }
}

/// Restarts the nucleus grants one thread within [`RESTART_WINDOW_TICKS`], whoever asked.
/// More than fred-server's policy grants, so that policy speaks first.
pub const RESTART_BUDGET: u32 = 5;
/// A thread that ran this long after its last restart starts with a fresh budget (60 s).
pub const RESTART_WINDOW_TICKS: u64 = 60 * crate::timer::HZ as u64;
/// The backoff before the second restart of a run; it doubles for each one after (50 ms).
pub const RESTART_BACKOFF_TICKS: u64 = 5;

/// Kills thread `id` and loads it again from its module, as the next generation: at once
/// the first time, after a backoff later, and not at all once its budget is spent.
pub fn restart(t: &mut Threads, id: ThreadId) {
    kill(t, id);
    let now = crate::timer::ticks();
    let thread = t.get_mut(id);
    let name = thread.name();
    match thread.count_restart(now, RESTART_BUDGET, RESTART_WINDOW_TICKS) {
        Err(restarts) => println!(
            "nucleus: gave up on {name} ({restarts} restarts in {} s did not help); it stays down",
            RESTART_WINDOW_TICKS / u64::from(crate::timer::HZ)
        ),
        Ok(n) => {
            println!("nucleus: restarting {name} (restart {})", thread.restarts());
            crate::trace::restarting(id.index(), name, thread.restarts());
            match n {
                1 => reload(t, id),
                n => thread.restart_at(now + (RESTART_BACKOFF_TICKS << (n - 2))),
            }
        }
    }
}

/// Loads a restarted thread again.
fn reload(t: &mut Threads, id: ThreadId) {
    if let Err(e) = load(t, id) {
        println!("server {}: rejected on restart: {e}", t.get(id).name());
    }
}

/// The timer tick's share: console allowances refilled (and what they withheld reported),
/// and the threads whose restart backoff is over loaded again. Returns the fault handlers
/// among them: the caller hands each the events its predecessor left unanswered
/// (`forward::rehome_pending`; this module does not reach up into `forward`).
pub fn tick(t: &mut Threads) -> Reloaded {
    if crate::domains::GUESTS_ENDING.load(Ordering::Relaxed) {
        end_guests(t);
    }
    let now = crate::timer::ticks();
    let mut handlers = Reloaded::new();
    for id in t.ids() {
        let thread = t.get_mut(id);
        let name = thread.name();
        let (logs, complaints) = thread.console_tick();
        if complaints > 0 {
            println!(
                "nucleus: {name}: {complaints} more complaint(s) about its messages not shown"
            );
        }
        if logs > 0 {
            println!("nucleus: {name}: {logs} log line(s) dropped (console budget)");
        }
        if thread.restart_due(now) {
            reload(t, id);
            if t.is_fault_handler(id) {
                // At most one entry per thread: the capacity is the table's.
                let _ = handlers.push(id);
            }
        }
    }
    handlers
}

/// Fault handlers a tick loaded again.
pub type Reloaded = heapless::Vec<ThreadId, { crate::thread::MAX_THREADS }>;

/// Prints `nucleus: ready` once every started thread has said hello, and starts the ring
/// benchmark if the command line asked for it.
pub fn check_ready(t: &mut Threads) {
    match t.check_ready() {
        Some(AfterReady::Bench) => crate::bench::start(t),
        Some(AfterReady::Run) => crate::kexec::tell_ready(t),
        None => {}
    }
}

/// The frame a freshly loaded thread starts from: its entry point, on its stack, with the
/// start page in RDI.
fn entry_frame(entry: u64) -> Frame {
    let mut frame = Frame::ZERO;
    frame.ret.rip = entry;
    frame.ret.cs = CsQword::from_raw(u64::from(gdt::USER_CS64.raw()));
    frame.ret.ss = SsQword::from_raw(u64::from(gdt::USER_DS.raw()));
    frame.ret.rsp = layout::STACK_TOP;
    // IF on, IOPL 0 (FRED's ERETU insists, and threads get no ports).
    frame.ret.rflags = Rflags::INTERRUPTS_ON.bits();
    frame.gprs.rdi = layout::START_INFO;
    frame
}

/// Loads thread `id`'s module into a fresh address space, makes it runnable and announces it.
fn load(t: &mut Threads, id: ThreadId) -> Result<(), LoadError> {
    let thread = t.get(id);
    let module = thread.module().ok_or(LoadError::NoModule)?;
    let name = thread.name();
    let args = t
        .options
        .as_ref()
        .and_then(|o| o.server_args.get(name.as_bytes()))
        .map_or(&[][..], |a| a.args());
    let params = StartParams {
        name,
        generation: thread.generation(),
        args,
    };
    let image = loader::load(&module, &params)?;
    let thread = t.get_mut(id);
    thread.events = Some(image.events);
    thread.replies = Some(image.replies);
    thread.start(image.space, entry_frame(image.entry));
    println!(
        "server {name}: loaded (slot {}, entry {:#x}, {} bytes, {} segments, generation {})",
        id.index(),
        image.entry,
        image.bytes,
        image.segments,
        thread.generation()
    );
    crate::trace::started(id.index(), name, thread.generation());
    announce(t, id);
    Ok(())
}

/// Tells the fault handlers which owner number a (re)started thread has, so their reports
/// name it. A (re)started fault handler learns about itself and every thread it answers for.
fn announce(t: &mut Threads, id: ThreadId) {
    if t.is_fault_handler(id) {
        for target in t.ids() {
            let other = t.get(target);
            if target == id || (other.fault_handler() == Some(id) && !other.is_absent()) {
                tell(t, id, target);
            }
        }
    } else if let Some(handler) = t.live_fault_handler(id) {
        tell(t, handler, id);
    }
}

/// Sends `handler` the `ServerStarted` of thread `about`.
fn tell(t: &mut Threads, handler: ThreadId, about: ThreadId) {
    let thread = t.get(about);
    let Ok(name) = ipc::message::ServerName::new(thread.name()) else {
        return;
    };
    let message = NucleusMessage::ServerStarted {
        owner: about.owner(),
        name,
        generation: thread.generation(),
    };
    if let Err(e) = t.send(handler, &message) {
        println!(
            "nucleus: cannot tell {} about {}: {e}",
            t.get(handler).name(),
            t.get(about).name()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::kit::{self, fred, pv};

    #[test]
    fn a_missing_or_refused_module_is_one_line_and_the_thread_stays_absent() {
        let mut t = Threads::new();
        assert!(!start(&mut t, pv(), None));
        assert_eq!(
            kit::output(),
            "server pv-server: rejected: no boot module named pv-server\n"
        );
        crate::host::loader::refuse(true);
        assert!(!start(&mut t, pv(), Some(0..10)));
        crate::host::loader::refuse(false);
        assert_eq!(
            kit::output(),
            "server pv-server: rejected: refused by the test\n"
        );
        assert!(t.get(pv()).is_absent());
    }

    #[test]
    fn a_started_thread_runs_from_its_entry_and_is_announced() {
        let mut t = Threads::new();
        assert!(start(&mut t, fred(), Some(0..10)));
        assert!(start(&mut t, pv(), Some(0..10)));
        assert_eq!(
            kit::output(),
            "server fred-server: loaded (slot 0, entry 0x401000, 4096 bytes, 2 segments, generation 0)\n\
             server pv-server: loaded (slot 1, entry 0x401000, 4096 bytes, 2 segments, generation 0)\n"
        );
        let frame = &t.frame(pv());
        assert_eq!(frame.ret.rip, 0x40_1000);
        assert_eq!(frame.ret.rsp, layout::STACK_TOP);
        assert_eq!(frame.gprs.rdi, layout::START_INFO);
        assert_eq!(frame.ret.cs.selector().rpl(), 3);
        let owners: Vec<u32> = kit::recv_all(&mut kit::server_ends("fred-server"))
            .into_iter()
            .filter_map(|m| match m {
                NucleusMessage::ServerStarted { owner, .. } => Some(owner),
                _ => None,
            })
            .collect();
        assert_eq!(owners, [0, 1]);
    }

    #[test]
    fn a_restarted_fault_handler_learns_about_every_thread_it_answers_for() {
        let mut t = kit::booted();
        restart(&mut t, fred());
        let owners: Vec<(u32, u32)> = kit::recv_all(&mut kit::server_ends("fred-server"))
            .into_iter()
            .filter_map(|m| match m {
                NucleusMessage::ServerStarted {
                    owner, generation, ..
                } => Some((owner, generation)),
                _ => None,
            })
            .collect();
        assert_eq!(owners, [(0, 1), (1, 0)]);
    }

    #[test]
    fn kill_frees_the_space_after_leaving_it() {
        let mut t = kit::booted();
        let root = t.get(pv()).space.as_ref().unwrap().root();
        crate::mm::load_root(root);
        kill(&mut t, pv());
        assert_eq!(crate::host::mm::destroyed().last(), Some(&root.as_u64()));
        assert_eq!(
            crate::host::mm::loaded_root(),
            crate::mm::kernel_root().as_u64()
        );
        assert_eq!(kit::output(), "nucleus: pv-server stopped\n");
    }

    #[test]
    fn a_failed_restart_leaves_the_thread_absent_with_one_line() {
        let mut t = kit::booted();
        crate::host::loader::refuse(true);
        restart(&mut t, pv());
        crate::host::loader::refuse(false);
        assert!(
            kit::output().ends_with("server pv-server: rejected on restart: refused by the test\n")
        );
        assert!(t.get(pv()).is_absent());
    }
}
