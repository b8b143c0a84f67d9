//! guest-events (issue 16 points 7 and 8): event channels and time with exact expected
//! values: the time records in shared_info, VIRQ_TIMER bound and raised by `set_timer_op`,
//! `sched_op(poll)` woken by a masked port and by its timeout, `unmask` raising the upcall,
//! `alloc_unbound`/`status`/`send`/`close` and their refusals.
//!
//! Last, with an event callback: `set_timer_op` and `sched_op(block)`; the timer's upcall
//! enters the callback (events masked), which clears the pending bits and returns through
//! `iret`; block then returns 0.
//!
//! Prints `events: N checks passed` and powers off; the first wrong value prints
//! `events: WRONG …` and crashes.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::addr_of;
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::shared::{
        Checks, clear_upcall, event_word, map_shared_info, now_ns, set_event_word, time_info,
        upcall_state,
    };
    use guest_rt::traps::{self, TrapFrame};
    use guest_rt::{Boot, guest_main, hypercall, println, xen_guest_notes};
    use xen_abi::evtchn::{EvtchnAllocUnbound, EvtchnBindVirq, EvtchnStatusArg};
    use xen_abi::layout::DOMID_SELF;
    use xen_abi::sched::SchedPoll;
    use xen_abi::{Errno, Hypercall};

    xen_guest_notes!("fredvisor-events");

    const MS: u64 = 1_000_000;

    fn evtchn<T>(cmd: u32, arg: &mut T) -> u64 {
        // SAFETY: `arg` is ours, of the struct the command takes, and lives for the call.
        unsafe {
            hypercall(
                Hypercall::EventChannelOp,
                [u64::from(cmd), arg as *mut T as u64, 0, 0, 0],
            )
        }
    }

    fn port_op(cmd: u32, port: u32) -> u64 {
        let mut port = port;
        evtchn(cmd, &mut port)
    }

    fn set_timer(deadline: u64) -> u64 {
        // SAFETY: no pointer arguments.
        unsafe { hypercall(Hypercall::SetTimerOp, [deadline, 0, 0, 0, 0]) }
    }

    fn poll(ports: &[u32], timeout: u64) -> u64 {
        let arg = SchedPoll {
            ports: ports.as_ptr() as u64,
            nr_ports: ports.len() as u32,
            _pad: 0,
            timeout,
        };
        // SAFETY: `arg` and `ports` are ours for the call.
        unsafe {
            hypercall(
                Hypercall::SchedOp,
                [3, &arg as *const SchedPoll as u64, 0, 0, 0],
            )
        }
    }

    fn status(port: u32) -> (u64, EvtchnStatusArg) {
        let mut arg = EvtchnStatusArg {
            dom: DOMID_SELF,
            port,
            ..Default::default()
        };
        (evtchn(5, &mut arg), arg)
    }

    /// The upcall handler's view: how many upcalls, the vector its entry reported, the
    /// pending word it found, the saved event mask (CS bits 32-39) and the live mask.
    static UPCALLS: AtomicU64 = AtomicU64::new(0);
    static UPCALL_VECTOR: AtomicU64 = AtomicU64::new(0);
    static SEEN_PENDING: AtomicU64 = AtomicU64::new(0);
    static SAVED_MASK: AtomicU64 = AtomicU64::new(0);
    static MASK_INSIDE: AtomicU64 = AtomicU64::new(0);
    static SHARED: AtomicU64 = AtomicU64::new(0);
    /// The stub the event callback enters through (it reports this vector).
    const CALLBACK_STUB: u8 = 0x81;

    fn upcall(frame: &mut TrapFrame) {
        let shared = SHARED.load(Ordering::SeqCst) as *mut xen_abi::shared_info::SharedInfo;
        UPCALLS.fetch_add(1, Ordering::SeqCst);
        UPCALL_VECTOR.store(frame.vector, Ordering::SeqCst);
        SAVED_MASK.store(frame.cs >> 32 & 0xff, Ordering::SeqCst);
        MASK_INSIDE.store(upcall_state(shared).1.into(), Ordering::SeqCst);
        // As a guest kernel does: clear the upcall and selector, then take the pending bits.
        clear_upcall(shared);
        SEEN_PENDING.store(event_word(shared, 0, false), Ordering::SeqCst);
        set_event_word(shared, 0, false, 0);
    }

    fn block() -> u64 {
        // SAFETY: no pointer arguments.
        unsafe { hypercall(Hypercall::SchedOp, [1, 0, 0, 0, 0]) }
    }

    fn main(boot: Boot) -> ! {
        let shared = map_shared_info(boot.start_info);
        SHARED.store(shared as u64, Ordering::SeqCst);
        let mut c = Checks::new("events");
        // Time: the record is consistent and advances; the wall clock is set.
        let time = time_info(shared);
        c.yes(
            "time version even and written",
            time.version >= 2 && time.version % 2 == 0,
        );
        c.yes("tsc_to_system_mul set", time.tsc_to_system_mul >= 1 << 31);
        c.eq("time flags (TSC stable)", time.flags.into(), 1);
        // SAFETY: our mapping of shared_info; the wall clock's fields are plain u32s.
        let (wc_version, wc_sec) = unsafe {
            (
                addr_of!((*shared).wc_version).read_volatile(),
                addr_of!((*shared).wc_sec).read_volatile(),
            )
        };
        c.yes("wall clock written", wc_version >= 2 && wc_version % 2 == 0);
        c.yes("wall clock after 2001", wc_sec > 1_000_000_000);
        let t0 = now_ns(shared);
        c.yes("system time advances", now_ns(shared) > t0);

        // VIRQ_TIMER on port 1.
        let mut bind = EvtchnBindVirq::default();
        c.eq("bind_virq timer", evtchn(1, &mut bind), 0);
        c.eq("timer port", bind.port.into(), 1);
        let port = bind.port;
        let (rc, st) = status(port);
        c.eq("status", rc, 0);
        c.eq("status: virq", st.status.into(), 4);
        c.eq("status: virq number", st.detail[0].into(), 0);
        c.eq(
            "bind it again",
            evtchn(1, &mut EvtchnBindVirq::default()),
            Errno::Eexist.rax(),
        );
        let mut bad = EvtchnBindVirq {
            virq: 24,
            ..Default::default()
        };
        c.eq("bind virq 24", evtchn(1, &mut bad), Errno::Einval.rax());
        let mut bad = EvtchnBindVirq {
            vcpu: 1,
            ..Default::default()
        };
        c.eq("bind on vcpu 1", evtchn(1, &mut bad), Errno::Enoent.rax());

        // poll with no ports: its timeout.
        let deadline = now_ns(shared) + 5 * MS;
        c.eq("poll, 5 ms timeout", poll(&[], deadline), 0);
        c.yes("woke after the timeout", now_ns(shared) >= deadline);

        // The timer, masked: poll wakes on the port, no upcall is raised.
        set_event_word(shared, 0, true, 1 << port);
        let deadline = now_ns(shared) + 10 * MS;
        c.eq("set_timer_op +10 ms", set_timer(deadline), 0);
        c.eq("poll on the timer port", poll(&[port], 0), 0);
        c.yes("woke after the deadline", now_ns(shared) >= deadline);
        c.eq(
            "timer port pending",
            event_word(shared, 0, false),
            1 << port,
        );
        c.eq("masked: no upcall", upcall_state(shared).0.into(), 0);
        // A pending port: poll returns at once.
        c.eq("poll, already pending", poll(&[port], 0), 0);
        // Unmask: pending, so the upcall is raised now (events stay masked: start of day).
        c.eq("unmask", port_op(9, port), 0);
        c.eq("mask cleared", event_word(shared, 0, true), 0);
        c.eq(
            "upcall pending after unmask",
            upcall_state(shared).0.into(),
            1,
        );
        c.eq(
            "upcall mask (start of day)",
            upcall_state(shared).1.into(),
            1,
        );
        set_event_word(shared, 0, false, 0);
        clear_upcall(shared);
        // A cancelled timer never fires.
        // (The cancel comes long before the deadline, however slow the machine.)
        let deadline = now_ns(shared) + 50 * MS;
        c.eq("set_timer_op +50 ms", set_timer(deadline), 0);
        c.eq("set_timer_op 0 (cancel)", set_timer(0), 0);
        c.eq(
            "poll past the cancelled deadline",
            poll(&[port], deadline + 10 * MS),
            0,
        );
        c.eq("cancelled: not pending", event_word(shared, 0, false), 0);

        // An unbound port: sends are dropped; closing twice is refused.
        let mut alloc = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: DOMID_SELF,
            port: 0,
        };
        c.eq("alloc_unbound", evtchn(6, &mut alloc), 0);
        c.eq("unbound port", alloc.port.into(), 2);
        c.eq("status: unbound", status(2).1.status.into(), 1);
        c.eq("send to unbound", port_op(4, 2), 0);
        c.eq("dropped", event_word(shared, 0, false), 0);
        c.eq("send to the virq", port_op(4, port), Errno::Einval.rax());
        c.eq("close", port_op(3, 2), 0);
        c.eq("status: closed", status(2).1.status.into(), 0);
        c.eq("close again", port_op(3, 2), Errno::Einval.rax());
        c.eq("send to closed", port_op(4, 9), Errno::Einval.rax());
        c.eq("FIFO init_control", port_op(11, 0), Errno::Enosys.rax());
        // The upcall: an event callback, the timer, block.
        traps::set_handler(upcall);
        c.eq(
            "register the event callback",
            traps::register_callback(0, 0, traps::entry(CALLBACK_STUB)),
            0,
        );
        let deadline = now_ns(shared) + 10 * MS;
        c.eq("set_timer_op +10 ms", set_timer(deadline), 0);
        c.eq("block", block(), 0);
        c.yes("woke after the deadline", now_ns(shared) >= deadline);
        c.eq("one upcall", UPCALLS.load(Ordering::SeqCst), 1);
        c.eq(
            "through the event callback",
            UPCALL_VECTOR.load(Ordering::SeqCst),
            CALLBACK_STUB.into(),
        );
        c.eq(
            "the handler saw the timer port",
            SEEN_PENDING.load(Ordering::SeqCst),
            1 << port,
        );
        c.eq(
            "saved mask: block had unmasked",
            SAVED_MASK.load(Ordering::SeqCst),
            0,
        );
        c.eq(
            "masked inside the callback",
            MASK_INSIDE.load(Ordering::SeqCst),
            1,
        );
        c.eq("iret unmasked again", upcall_state(shared).1.into(), 0);
        c.eq("no upcall left", upcall_state(shared).0.into(), 0);
        println!("events: VIRQ_TIMER on port {port}, poll woke on it and on its timeout");
        println!("events: block woke with the timer's upcall through the event callback");
        c.done()
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
