//! The guest table: every guest pv-server started, each message about them handed to the
//! guest it is about, the guests that end taken out with their lifecycle line and the domain
//! destroyed, and once the last one ended the summary line.

use core::cell::RefCell;
use core::fmt::Write;

use heapless::{String, Vec};
use ipc::domain::{MAX_DOMAINS, owner_domain};
use ipc::dump::{RegisterDump, Text};
use ipc::dump_parts::DumpAssembler;
use ipc::message::{Gpr, GprWrite, GuestRegisters, Hypercall, Reply};
use ipc::{Event, EventKind, NucleusMessage, Token};
use xen_abi::Errno;
use xen_abi::sched::ShutdownReason;

use super::access::{Console, SharedFrame};
use super::emulation::Emulation;
use super::ending::Ending;
use super::host_cpu;
use super::hypercalls::{Answered, continuation};
use super::running::Running;
use crate::guest_boot::{self, Booted, Scratch};
use crate::guest_state;
use crate::guest_traps::decode::{Interrupted, Target, Trap};
use crate::hypervisor::Hypervisor;
use crate::timekeeping::{self, TimeBase};

/// The summary line's start (image-builder waits for it).
pub const ALL_ENDED: &str = "guests: all ended";

/// Every guest pv-server started and how the others ended.
pub struct Guests {
    pub(super) running: Vec<Running, MAX_DOMAINS>,
    /// Guest modules seen at boot.
    pub(super) total: u32,
    powered_off: u32,
    pub(super) free_before: u64,
    dump: DumpAssembler,
    pending_dump: Option<(Token, RegisterDump)>,
    /// The nucleus' time base (`None` if it measured no TSC rate).
    time: Option<TimeBase>,
}

impl Default for Guests {
    fn default() -> Self {
        Self::new()
    }
}

impl Guests {
    pub const fn new() -> Self {
        Self {
            running: Vec::new(),
            total: 0,
            powered_off: 0,
            free_before: 0,
            dump: DumpAssembler::new(),
            pending_dump: None,
            time: None,
        }
    }

    /// Boots every guest module; lines go to `out`.
    pub fn boot_all(
        &mut self,
        hv: &mut impl Hypervisor,
        scratch: &mut Scratch<'_>,
        out: &mut impl Write,
    ) {
        self.free_before = hv.free_frames();
        use ipc::domain::Clock;
        self.time = TimeBase::new(
            hv.clock(Clock::TscKhz),
            hv.clock(Clock::RtcSeconds),
            hv.clock(Clock::RtcTsc),
        );
        let mut index = 0;
        while let Some(result) = guest_boot::boot(hv, index, scratch, out) {
            self.total += 1;
            index += 1;
            let Ok(Booted {
                domain,
                name,
                shared_info,
                cr3,
            }) = result
            else {
                continue;
            };
            if let Some(base) = self.time {
                // The vCPU has not run yet: its first look at shared_info finds the time.
                let cell = RefCell::new(&mut *hv);
                let mut shared = SharedFrame {
                    hv: &cell,
                    domain,
                    mfn: shared_info,
                };
                let written = timekeeping::write_time(&mut shared, &base, 0, host_cpu::tsc())
                    .and_then(|()| timekeeping::write_wallclock(&mut shared, &base));
                if written.is_err() {
                    let _ = writeln!(out, "guest {name}: no time info (shared_info refused)");
                }
            }
            let running = Running::new(domain, name, shared_info, cr3);
            if let Err(running) = self.running.push(running) {
                let _ = writeln!(out, "guest {}: rejected: no guest slot left", running.name);
                hv.destroy(running.domain);
            }
        }
        if self.total > 0 && self.running.is_empty() {
            self.summary(hv, out);
        }
    }

    /// Handles one message; the reply to send, if any.
    pub fn handle(
        &mut self,
        hv: &mut impl Hypervisor,
        message: &NucleusMessage,
        out: &mut impl Write,
    ) -> Option<Reply> {
        match message {
            NucleusMessage::Hypercall(call) => self.hypercall(hv, call, out),
            NucleusMessage::Event { token, event } => self.event(hv, *token, event, out),
            NucleusMessage::Dump(part) => {
                if let Ok(Some(done)) = self.dump.push(part) {
                    self.pending_dump = Some((done.token, done.dump));
                }
                None
            }
            NucleusMessage::Ping { token } => Some(Reply::Resume { token: *token }),
            NucleusMessage::GuestEvent { token, event, regs } => {
                self.guest_event(hv, *token, event, regs, out)
            }
            NucleusMessage::DumpRecord(_)
            | NucleusMessage::ServerStarted { .. }
            | NucleusMessage::Ready(_)
            | NucleusMessage::KexecRefused(_) => None,
        }
    }

    fn find(&self, domain: u16) -> Option<usize> {
        self.running.iter().position(|r| r.domain == domain)
    }

    /// The guest an event is about.
    fn owner(&self, event: &Event) -> Option<usize> {
        owner_domain(event.owner).and_then(|d| self.find(d))
    }

    fn hypercall(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let Some(at) = self.find(call.domain) else {
            return Some(Reply::Return {
                token: call.token,
                rax: Errno::Esrch.rax(),
            });
        };
        let [cmd, arg, ..] = call.args;
        if let Some(rax) = crate::guest_hypercalls::constant_answer(call.number, cmd, arg) {
            return self.returning(hv, at, call, rax, out);
        }
        let running = &mut self.running[at];
        if call.number == u64::from(xen_abi::Hypercall::Iret.raw()) {
            return match running.iret(hv, call) {
                Ok(resume) => Some(Reply::GuestResume {
                    token: call.token,
                    resume,
                }),
                Err(crash) => self.end_and_sum_up(hv, at, Ending::Crashed(crash), out),
            };
        }
        match running.hypercall(hv, call, self.time) {
            Answered::Return(rax) if changes_descriptors(call.number) => {
                self.after_descriptors(hv, at, call, rax, out)
            }
            Answered::Return(rax) => self.returning(hv, at, call, rax, out),
            Answered::Continue(next) => Some(continuation(call, next)),
            Answered::Parked => None,
            Answered::Shutdown(reason) => {
                self.end_and_sum_up(hv, at, Ending::Shutdown(reason), out)
            }
        }
    }

    /// A hypercall that may have changed guest `at`'s descriptor tables returns `rax`: if a
    /// data selector the vCPU holds no longer loads, the nucleus loads null for it and the
    /// guest enters its failsafe callback with the selectors as they were (Xen's
    /// `load_segments` on the way back to the guest, pv64-abi.md §6.8); else as any return.
    #[cold]
    fn after_descriptors(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        call: &Hypercall,
        rax: u64,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let selectors = match hv.vcpu_selectors(call.domain) {
            Ok((mask, before)) if mask != 0 => before,
            _ => return self.returning(hv, at, call, rax, out),
        };
        // After `syscall`, RCX and R11 hold the return RIP and RFLAGS.
        let interrupted = Interrupted {
            rip: call.rip,
            rsp: call.rsp,
            rflags: call.rflags,
            rcx: call.rip,
            r11: call.rflags,
        };
        let trap = Trap {
            target: Target::Failsafe(selectors),
            error_code: None,
            cr2: None,
            rip: call.rip,
            reported_error: None,
        };
        match self.running[at].bounce_trap(hv, &trap, &interrupted) {
            Ok(mut resume) => {
                let _ = resume.gprs.push(GprWrite {
                    gpr: Gpr::Rax,
                    value: rax,
                });
                Some(Reply::GuestResume {
                    token: call.token,
                    resume,
                })
            }
            Err(crash) => self.end_and_sum_up(hv, at, Ending::Crashed(crash), out),
        }
    }

    /// A hypercall of guest `at` that returns `rax` to the guest, or an event upcall instead
    /// when one is due, with `rax` kept. (The reply is built here, where it is returned: it
    /// is large enough that every move shows in the hypercall round trip.) Inlined: the
    /// failsafe path calls it too, and an out-of-line copy costs the hot path ~30.
    #[inline(always)]
    fn returning(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        call: &Hypercall,
        rax: u64,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let token = call.token;
        // The hot path: pv-server raised no upcall, so none can be due (tested before an
        // `Interrupted` is built; `Running::upcall` reads pending and mask otherwise).
        if !self.running[at].pv.events.upcall_raised {
            return Some(Reply::Return { token, rax });
        }
        // After `syscall`, RCX and R11 hold the return RIP and RFLAGS.
        let interrupted = Interrupted {
            rip: call.rip,
            rsp: call.rsp,
            rflags: call.rflags,
            rcx: call.rip,
            r11: call.rflags,
        };
        match self.running[at].upcall(hv, &interrupted) {
            Ok(None) => Some(Reply::Return { token, rax }),
            Ok(Some(mut resume)) => {
                let _ = resume.gprs.push(GprWrite {
                    gpr: Gpr::Rax,
                    value: rax,
                });
                Some(Reply::GuestResume { token, resume })
            }
            Err(crash) => self.end_and_sum_up(hv, at, Ending::Crashed(crash), out),
        }
    }

    /// The answer of a hypercall of `domain` that needs nothing but its numbers
    /// (`constant_answer`) and no upcall, for the quick path; `None` sends it the long way.
    #[inline(always)]
    pub fn quick_return(&self, domain: u16, number: u64, cmd: u64, arg: u64) -> Option<u64> {
        let rax = crate::guest_hypercalls::constant_answer(number, cmd, arg)?;
        let running = self.running.iter().find(|r| r.domain == domain)?;
        (!running.pv.events.upcall_raised).then_some(rax)
    }

    /// Runs every domain's timer at TSC `tsc` and answers the vCPUs that wake (with their
    /// event upcall when one is due).
    pub fn tick(
        &mut self,
        hv: &mut impl Hypervisor,
        tsc: u64,
        out: &mut impl Write,
    ) -> Vec<Reply, MAX_DOMAINS> {
        let mut replies = Vec::new();
        let time = self.time;
        let mut woken: Vec<(u16, guest_state::Parked), MAX_DOMAINS> = Vec::new();
        for running in &mut self.running {
            let cell = RefCell::new(&mut *hv);
            let mut shared = SharedFrame {
                hv: &cell,
                domain: running.domain,
                mfn: running.shared_info,
            };
            if let Ok(Some(parked)) = running.pv.wake(time, tsc, &mut shared) {
                let _ = woken.push((running.domain, parked));
            }
        }
        for (domain, parked) in woken {
            let Some(at) = self.find(domain) else {
                continue;
            };
            let [rip, rsp, rflags] = parked.context;
            let call = Hypercall {
                token: parked.token,
                domain,
                vcpu: 0,
                number: u64::from(xen_abi::Hypercall::SchedOp.raw()),
                args: [0; 6],
                rip,
                rsp,
                rflags,
            };
            if let Some(reply) = self.returning(hv, at, &call, 0, out) {
                let _ = replies.push(reply);
            }
        }
        replies
    }

    /// Whether only time can wake a guest now (pv-server then polls instead of sleeping).
    pub fn waits_for_time(&self) -> bool {
        self.running.iter().any(|r| r.pv.waits_for_time())
    }

    /// A guest event with its registers (no dump): emulated, bounced, or — when the guest
    /// cannot go on — asked again with its dump, which [`Self::event`] prints as the guest
    /// ends.
    fn guest_event(
        &mut self,
        hv: &mut impl Hypervisor,
        token: Token,
        event: &Event,
        regs: &GuestRegisters,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let Some(at) = self.owner(event) else {
            return self.event(hv, token, event, out);
        };
        if let EventKind::Interrupt { .. } = event.kind {
            // The watchdog's tick: no dump is printed for it.
            return self.event(hv, token, event, out);
        }
        let running = &mut self.running[at];
        let resumed = match running.call_gate(hv, event, regs) {
            Some(resumed) => resumed,
            None => match running.emulate(hv, token, event, regs) {
                Emulation::Resume(reply) => return Some(reply),
                Emulation::AsFault => {
                    running.bounce_event(hv, event, (regs.get(Gpr::Rcx), regs.get(Gpr::R11)))
                }
                Emulation::PageFault { address } => running.fetch_fault(hv, event, regs, address),
            },
        };
        Some(match resumed {
            Ok(resume) => Reply::GuestResume { token, resume },
            Err(_) => Reply::SendDump { token },
        })
    }

    fn event(
        &mut self,
        hv: &mut impl Hypervisor,
        token: Token,
        event: &Event,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let dump = match self.pending_dump.take() {
            Some((t, dump)) if t == token => Some(dump),
            _ => None,
        };
        let Some(at) = self.owner(event) else {
            let _ = writeln!(
                out,
                "event {:?} for owner {} is not ours, killing it",
                event.kind, event.owner
            );
            return Some(Reply::Kill { token });
        };
        let ending = match event.kind {
            // The watchdog's tick: the vCPU ran without a hypercall for too long.
            EventKind::Interrupt { .. } => Ending::Shutdown(ShutdownReason::Watchdog),
            _ => {
                let regs = dump.as_ref().map_or((0, 0), |d| (d.gprs.rcx, d.gprs.r11));
                match self.running[at].bounce_event(hv, event, regs) {
                    Ok(resume) => return Some(Reply::GuestResume { token, resume }),
                    Err(crash) => Ending::Crashed(crash),
                }
            }
        };
        let name = self.running[at].name.clone();
        self.end(hv, at, ending, out);
        if let (Some(mut dump), Ending::Crashed(_)) = (dump, ending) {
            let mut label: String<16> = String::new();
            let _ = write!(label, "guest {}", name);
            dump.prefix = Text(label);
            let _ = write!(out, "{dump}");
        }
        self.sum_up_if_done(hv, out);
        None
    }

    /// Ends guest `at` ([`Self::end`]) and sums up if it was the last: no reply.
    fn end_and_sum_up(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        ending: Ending,
        out: &mut impl Write,
    ) -> Option<Reply> {
        self.end(hv, at, ending, out);
        self.sum_up_if_done(hv, out);
        None
    }

    /// Ends guest `at`: its last console text, the lifecycle line, the domain destroyed.
    fn end(&mut self, hv: &mut impl Hypervisor, at: usize, ending: Ending, out: &mut impl Write) {
        let mut running = self.running.swap_remove(at);
        {
            let cell = RefCell::new(&mut *hv);
            let mut console = Console::new(&cell, running.domain, &running.name);
            running.calls.console.flush(&running.name, &mut console);
        }
        let _ = writeln!(out, "guest {}: {ending}", running.name);
        if ending == Ending::Shutdown(ShutdownReason::Poweroff) {
            self.powered_off += 1;
        }
        hv.destroy(running.domain);
    }

    fn sum_up_if_done(&self, hv: &mut impl Hypervisor, out: &mut impl Write) {
        if self.running.is_empty() {
            self.summary(hv, out);
        }
    }

    fn summary(&self, hv: &mut impl Hypervisor, out: &mut impl Write) {
        let _ = writeln!(
            out,
            "{ALL_ENDED} ({} of {} powered off; free memory {} KiB, {} KiB before the first)",
            self.powered_off,
            self.total,
            hv.free_frames() * 4,
            self.free_before * 4
        );
    }
}

/// `set_gdt`, `update_descriptor` and `mmuext_op` (`SET_LDT`): the hypercalls after which a
/// data selector the vCPU holds may no longer load.
#[inline(always)]
fn changes_descriptors(number: u64) -> bool {
    use xen_abi::Hypercall as H;
    const SET_GDT: u64 = H::SetGdt.raw() as u64;
    const UPDATE_DESCRIPTOR: u64 = H::UpdateDescriptor.raw() as u64;
    const MMUEXT_OP: u64 = H::MmuextOp.raw() as u64;
    matches!(number, SET_GDT | UPDATE_DESCRIPTOR | MMUEXT_OP)
}
