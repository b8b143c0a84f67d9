//! The running guests and what pv-server does with each message about them (issue 15
//! points 4 and 5): hypercalls answered (page-table ones through the nucleus' checks, the
//! rest by `guest_hypercalls`), shutdowns and crashes ended with their lifecycle line and the
//! domain destroyed, and once the last guest ended one summary line with the free-memory
//! figures, which image-builder's `run --guest` waits for.

use core::cell::RefCell;
use core::fmt::{self, Write};

use heapless::{String, Vec};
use ipc::domain::MmuOp;
use ipc::domain::{MAX_DOMAINS, owner_domain};
use ipc::dump::{RegisterDump, Text};
use ipc::dump_parts::DumpAssembler;
use ipc::message::{
    Gpr, GprWrite, GuestMode, GuestRegisters, GuestResume, Hypercall, Reply, ResumeChanges,
};
use ipc::{Event, EventKind, NucleusMessage, Token};
use xen_abi::Errno;
use xen_abi::sched::ShutdownReason;
use xen_abi::segment::SegmentBaseWhich;

use crate::domain_builder::Mfn;
use crate::emulate::{self, Emulated, GuestFault as EmulatedFault, SideEffect};
use crate::grants::FrameSource;
use crate::guest_boot::{self, Booted, Scratch};
use crate::guest_hypercalls::{DomainCalls, GuestFault, GuestMemory, Outcome};
use crate::guest_mmu;
use crate::guest_state::{self, Answer, DescriptorTables, Env, PvDomain};
use crate::guest_traps::decode::{Interrupted, Target, Trap};
use crate::guest_traps::{self, Crash, VcpuInfoAccess, VcpuTraps, bounce, decode, iret};
use crate::hypervisor::Hypervisor;
use crate::shared_page::{SharedPage, UPCALL_PENDING, vcpu_field};
use crate::timekeeping::{self, TimeBase};

/// The summary line's start (image-builder waits for it).
pub const ALL_ENDED: &str = "guests: all ended";

struct Running {
    domain: u16,
    name: String<24>,
    calls: DomainCalls,
    /// vCPU 0's virtual IDT, callbacks and mode.
    traps: VcpuTraps,
    shared_info: Mfn,
    /// Events, grants, timer, blocking and emulation state (issue 16 points 5-7).
    pv: PvDomain,
}

/// Every guest pv-server started and how the others ended.
pub struct Guests {
    running: Vec<Running, MAX_DOMAINS>,
    /// Guest modules seen at boot.
    total: u32,
    powered_off: u32,
    free_before: u64,
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
                let mut shared = OwnedShared {
                    hv: &mut *hv,
                    domain,
                    mfn: shared_info,
                };
                let written = timekeeping::write_time(&mut shared, &base, 0, ipc_tsc())
                    .and_then(|()| timekeeping::write_wallclock(&mut shared, &base));
                if written.is_err() {
                    let _ = writeln!(out, "guest {name}: no time info (shared_info refused)");
                }
            }
            let running = Running {
                domain,
                name,
                calls: DomainCalls::new(1),
                traps: VcpuTraps::new(),
                shared_info,
                pv: PvDomain::new(domain, shared_info, cr3),
            };
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
            NucleusMessage::DumpRecord(_) | NucleusMessage::ServerStarted { .. } => None,
        }
    }

    fn find(&self, domain: u16) -> Option<usize> {
        self.running.iter().position(|r| r.domain == domain)
    }

    fn hypercall(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let token = call.token;
        let Some(at) = self.find(call.domain) else {
            return Some(Reply::Return {
                token,
                rax: Errno::Esrch.rax(),
            });
        };
        let [a0, a1, a2, a3, a4, _] = call.args;
        let args = [a0, a1, a2, a3, a4];
        let number = call.number;
        if guest_state::handles(number) || guest_state::handles_sched(number, a0) {
            return self.pv_call(hv, at, call, args, out);
        }
        let outcome = if guest_mmu::handles(number) {
            let mut effects = guest_mmu::Effects::default();
            let outcome = guest_mmu::answer_with(hv, call.domain, number, args, &mut effects);
            if let Some(mfn) = effects.user_baseptr {
                self.running[at].traps.user_tables = mfn != 0;
            }
            if let Some(mfn) = effects.kernel_baseptr {
                self.running[at].pv.cpu.cr3 = mfn << 12;
            }
            outcome
        } else if number == u64::from(xen_abi::Hypercall::Iret.raw()) {
            return self.iret(hv, at, call, out);
        } else {
            let running = &mut self.running[at];
            let cell = RefCell::new(&mut *hv);
            let mut memory = Memory {
                hv: &cell,
                domain: running.domain,
            };
            if guest_traps::hypercalls::handles(number) {
                guest_traps::hypercalls::answer(&mut running.traps, number, args, &mut memory)
            } else {
                let mut console = Console {
                    hv: &cell,
                    domain: running.domain,
                    prefix_len: "guest ".len() + running.name.len() + 2,
                    line: String::new(),
                };
                running
                    .calls
                    .answer(&running.name, number, args, &mut memory, &mut console)
            }
        };
        match outcome {
            Outcome::Return(rax) => self.returning(hv, at, call, rax, out),
            Outcome::Yield => self.returning(hv, at, call, 0, out),
            // The nucleus checks the base again and loads it when the vCPU runs.
            Outcome::SetSegmentBase { which, base } => {
                let rax = match hv.segment_base(call.domain, u64::from(which.raw()), base) {
                    Ok(()) => 0,
                    Err(errno) => errno.rax(),
                };
                self.returning(hv, at, call, rax, out)
            }
            Outcome::Continue(next) => Some(continuation(call, next)),
            Outcome::Shutdown(reason) => {
                self.end(hv, at, Ending::Shutdown(reason), out);
                self.sum_up_if_done(hv, out);
                None
            }
        }
    }

    /// A hypercall that returns `rax` to the guest, or an event upcall instead when one is
    /// due (§3: every return to the guest checks for events), with `rax` kept.
    fn returning(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        call: &Hypercall,
        rax: u64,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let token = call.token;
        // After `syscall`, RCX and R11 hold the return RIP and RFLAGS.
        let interrupted = Interrupted {
            rip: call.rip,
            rsp: call.rsp,
            rflags: call.rflags,
            rcx: call.rip,
            r11: call.rflags,
        };
        match self.upcall(hv, at, &interrupted) {
            Ok(None) => Some(Reply::Return { token, rax }),
            Ok(Some(mut resume)) => {
                let _ = resume.gprs.push(GprWrite {
                    gpr: Gpr::Rax,
                    value: rax,
                });
                Some(Reply::GuestResume { token, resume })
            }
            Err(crash) => {
                self.end(hv, at, Ending::Crashed(crash), out);
                self.sum_up_if_done(hv, out);
                None
            }
        }
    }

    /// The event upcall (§6.6) if vCPU 0 has one pending and events unmasked: the bounce
    /// into its event callback, interrupting `interrupted`.
    fn upcall(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        interrupted: &Interrupted,
    ) -> Result<Option<GuestResume>, Crash> {
        let running = &mut self.running[at];
        // Only pv-server raises upcalls: none raised, none to look for (the hot path).
        if !running.pv.events.upcall_raised {
            return Ok(None);
        }
        let cell = RefCell::new(&mut *hv);
        let mut shared = SharedFrame {
            hv: &cell,
            domain: running.domain,
            mfn: running.shared_info,
        };
        // evtchn_upcall_pending and _mask are adjacent: one read.
        let mut state = [0u8; 2];
        shared
            .read(vcpu_field(0, UPCALL_PENDING), &mut state)
            .map_err(|_| Crash::VcpuInfo)?;
        let [pending, masked] = state;
        if pending == 0 {
            running.pv.events.upcall_raised = false;
        }
        if pending == 0 || masked != 0 {
            return Ok(None);
        }
        let mut memory = Memory {
            hv: &cell,
            domain: running.domain,
        };
        let mut info = SharedVcpuInfo {
            hv: &cell,
            domain: running.domain,
            shared_info: running.shared_info,
        };
        let trap = Trap {
            target: Target::Event,
            error_code: None,
            cr2: None,
            rip: interrupted.rip,
            reported_error: None,
        };
        bounce::bounce(
            &mut running.traps,
            &trap,
            interrupted,
            &mut memory,
            &mut info,
        )
        .map(Some)
    }

    /// A hypercall of issue 16 points 6 and 7 ([`guest_state`]); `None` while the vCPU
    /// sleeps in `sched_op(block/poll)` (its answer comes from [`Guests::tick`]).
    fn pv_call(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        call: &Hypercall,
        args: [u64; 5],
        out: &mut impl Write,
    ) -> Option<Reply> {
        let time = self.time;
        let running = &mut self.running[at];
        let (domain, shared_info) = (running.domain, running.shared_info);
        let answer = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = Memory { hv: &cell, domain };
            let mut shared = SharedFrame {
                hv: &cell,
                domain,
                mfn: shared_info,
            };
            let mut nucleus = NucleusTables { hv: &cell, domain };
            let mut env = Env {
                memory: &mut memory,
                shared: &mut shared,
                nucleus: &mut nucleus,
                time,
                tsc: ipc_tsc(),
            };
            running.pv.answer(call.token, call.number, args, &mut env)
        };
        let rax = match answer {
            Ok(Answer::Return(rax)) => rax,
            Ok(Answer::Parked) => {
                if let Some(parked) = running.pv.parked.as_mut() {
                    parked.context = [call.rip, call.rsp, call.rflags];
                }
                return None;
            }
            Err(errno) => {
                if errno == Errno::Enosys {
                    running.calls.unimplemented = running.calls.unimplemented.saturating_add(1);
                }
                errno.rax()
            }
        };
        self.returning(hv, at, call, rax, out)
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
            let mut shared = OwnedShared {
                hv: &mut *hv,
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

    /// Emulates the faulting instruction of a guest `#UD`/`#GP(0)` (issue 16 point 5).
    fn emulate(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        token: Token,
        event: &Event,
        regs: &GuestRegisters,
    ) -> Emulation {
        let Some(trigger) = emulate::trigger(&event.kind) else {
            return Emulation::AsFault;
        };
        let running = &mut self.running[at];
        let domain = running.domain;
        let mut bytes = [0u8; emulate::decode::MAX_LEN];
        let first = (4096 - (event.rip & 0xfff) as usize).min(bytes.len());
        let mut fetch_fault = None;
        let mut len = 0;
        if hv
            .guest_read(domain, event.rip, &mut bytes[..first])
            .is_ok()
        {
            len = first;
            if first < bytes.len() {
                let next = event.rip.wrapping_add(first as u64);
                if hv.guest_read(domain, next, &mut bytes[first..]).is_ok() {
                    len = bytes.len();
                } else {
                    fetch_fault = Some(next);
                }
            }
        } else {
            fetch_fault = Some(event.rip);
        }
        let g = |gpr| regs.get(gpr);
        let regs = [
            g(Gpr::Rax),
            g(Gpr::Rcx),
            g(Gpr::Rdx),
            g(Gpr::Rbx),
            event.rsp,
            g(Gpr::Rbp),
            g(Gpr::Rsi),
            g(Gpr::Rdi),
            g(Gpr::R8),
            g(Gpr::R9),
            g(Gpr::R10),
            g(Gpr::R11),
            g(Gpr::R12),
            g(Gpr::R13),
            g(Gpr::R14),
            g(Gpr::R15),
        ];
        // The mode, TS and CR2 are the trap state's (guest_traps); the rest emulation's.
        let mut cpu = running.pv.cpu;
        cpu.kernel_mode = running.traps.mode == GuestMode::Kernel;
        cpu.ts = running.traps.virtual_ts;
        cpu.cr2 = running.traps.virtual_cr2;
        let result = emulate::emulate(
            trigger,
            &bytes[..len],
            fetch_fault,
            &regs,
            &mut cpu,
            host_cpuid,
            ipc_tsc(),
        );
        let (len, writes, effect) = match result {
            Emulated::Done {
                len,
                writes,
                effect,
            } => (len, writes, effect),
            Emulated::Fault(EmulatedFault::PageFault { address }) => {
                return Emulation::PageFault { address };
            }
            // The fault the instruction raised: bounced as it is.
            Emulated::Fault(_) => return Emulation::AsFault,
        };
        let applied = match effect {
            None => Ok(()),
            Some(SideEffect::NewBaseptr { mfn }) => hv
                .mmu(domain, MmuOp::NewBaseptr { mfn })
                .map(|()| cpu.cr3 = mfn << 12),
            Some(SideEffect::SegmentBase { which, base }) => hv
                .segment_base(domain, u64::from(which.raw()), base)
                .map(|()| match which {
                    SegmentBaseWhich::Fs => cpu.fs_base = base,
                    SegmentBaseWhich::GsKernel => cpu.gs_base_kernel = base,
                    SegmentBaseWhich::GsUser | SegmentBaseWhich::GsUserSel => {
                        cpu.gs_base_user = base
                    }
                }),
        };
        // A refused effect is a #GP for the guest, as in Xen: the fault it raised.
        if applied.is_err() {
            return Emulation::AsFault;
        }
        running.traps.virtual_ts = cpu.ts;
        running.traps.virtual_cr2 = cpu.cr2;
        running.pv.cpu = cpu;
        let mut gprs = Vec::new();
        for (gpr, value) in writes {
            let _ = gprs.push(GprWrite { gpr, value });
        }
        Emulation::Resume(Reply::GuestResume {
            token,
            resume: GuestResume {
                rip: event.rip.wrapping_add(u64::from(len)),
                rsp: event.rsp,
                rflags: event.rflags,
                cs: event.cs,
                ss: event.ss,
                mode: running.traps.mode,
                gprs,
            },
        })
    }

    /// A `#PF` while pv-server read the instruction at the fault: the guest's `#PF` (an
    /// instruction fetch; U when it was in user mode).
    fn fetch_fault(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        event: &Event,
        regs: &GuestRegisters,
        address: u64,
    ) -> Result<GuestResume, Crash> {
        const FETCH: u64 = 1 << 4;
        const USER: u64 = 1 << 2;
        let running = &mut self.running[at];
        let user = if running.traps.mode == GuestMode::User {
            USER
        } else {
            0
        };
        let trap = Trap {
            target: Target::Vector(14),
            error_code: Some(FETCH | user),
            cr2: Some(address),
            rip: event.rip,
            reported_error: Some(FETCH | user),
        };
        let interrupted = Interrupted {
            rip: event.rip,
            rsp: event.rsp,
            rflags: event.rflags,
            rcx: regs.get(Gpr::Rcx),
            r11: regs.get(Gpr::R11),
        };
        let cell = RefCell::new(&mut *hv);
        let mut memory = Memory {
            hv: &cell,
            domain: running.domain,
        };
        let mut info = SharedVcpuInfo {
            hv: &cell,
            domain: running.domain,
            shared_info: running.shared_info,
        };
        bounce::bounce(
            &mut running.traps,
            &trap,
            &interrupted,
            &mut memory,
            &mut info,
        )
    }

    /// The `iret` hypercall: the guest's frame at its RSP becomes its context again.
    fn iret(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        call: &Hypercall,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let running = &mut self.running[at];
        let result = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = Memory {
                hv: &cell,
                domain: running.domain,
            };
            let mut info = SharedVcpuInfo {
                hv: &cell,
                domain: running.domain,
                shared_info: running.shared_info,
            };
            iret::iret(&mut running.traps, call.rsp, &mut memory, &mut info)
        };
        match result {
            Ok(resume) => {
                // iret restores the event mask from IF: an upcall may be due now.
                let at_resume = Interrupted {
                    rip: resume.rip,
                    rsp: resume.rsp,
                    rflags: resume.rflags,
                    rcx: gpr_value(&resume, Gpr::Rcx),
                    r11: gpr_value(&resume, Gpr::R11),
                };
                match self.upcall(hv, at, &at_resume) {
                    Ok(Some(mut upcall)) => {
                        // RAX came back from the frame: keep it through the upcall.
                        keep_gpr(&mut upcall, &resume, Gpr::Rax);
                        Some(Reply::GuestResume {
                            token: call.token,
                            resume: upcall,
                        })
                    }
                    Ok(None) => Some(Reply::GuestResume {
                        token: call.token,
                        resume,
                    }),
                    Err(crash) => {
                        self.end(hv, at, Ending::Crashed(crash), out);
                        self.sum_up_if_done(hv, out);
                        None
                    }
                }
            }
            Err(crash) => {
                self.end(hv, at, Ending::Crashed(crash), out);
                self.sum_up_if_done(hv, out);
                None
            }
        }
    }

    /// A guest event: bounced into the guest's handler, or the end of the guest.
    fn bounce(
        &mut self,
        hv: &mut impl Hypervisor,
        at: usize,
        event: &Event,
        regs: (u64, u64),
    ) -> Result<Reply, Crash> {
        let running = &mut self.running[at];
        let cell = RefCell::new(&mut *hv);
        let mut memory = Memory {
            hv: &cell,
            domain: running.domain,
        };
        let mut info = SharedVcpuInfo {
            hv: &cell,
            domain: running.domain,
            shared_info: running.shared_info,
        };
        let Some((trap, interrupted)) =
            decode::trap_for(&mut running.traps, event, regs, &mut memory)
        else {
            return Err(Crash::NoHandler {
                vector: event.kind.vector(),
                rip: event.rip,
                error_code: None,
                cr2: None,
                table_set: running.traps.table_set,
            });
        };
        let resume = bounce::bounce(
            &mut running.traps,
            &trap,
            &interrupted,
            &mut memory,
            &mut info,
        )?;
        Ok(Reply::GuestResume {
            token: Token(0),
            resume,
        })
    }

    /// A guest event with its registers (no dump): bounced, or — when the guest cannot go
    /// on — asked again with its dump, which [`Self::event`] prints as the guest ends.
    fn guest_event(
        &mut self,
        hv: &mut impl Hypervisor,
        token: Token,
        event: &Event,
        regs: &GuestRegisters,
        out: &mut impl Write,
    ) -> Option<Reply> {
        let Some(at) = owner_domain(event.owner).and_then(|d| self.find(d)) else {
            return self.event(hv, token, event, out);
        };
        if let EventKind::Interrupt { .. } = event.kind {
            // The watchdog's tick: no dump is printed for it.
            return self.event(hv, token, event, out);
        }
        match self.emulate(hv, at, token, event, regs) {
            Emulation::Resume(reply) => return Some(reply),
            Emulation::AsFault => {}
            Emulation::PageFault { address } => {
                return match self.fetch_fault(hv, at, event, regs, address) {
                    Ok(resume) => Some(Reply::GuestResume { token, resume }),
                    Err(_) => Some(Reply::SendDump { token }),
                };
            }
        }
        match self.bounce(hv, at, event, (regs.get(Gpr::Rcx), regs.get(Gpr::R11))) {
            Ok(Reply::GuestResume { resume, .. }) => Some(Reply::GuestResume { token, resume }),
            Ok(other) => Some(other),
            Err(_) => Some(Reply::SendDump { token }),
        }
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
        let Some(at) = owner_domain(event.owner).and_then(|d| self.find(d)) else {
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
            _ => match self.bounce(
                hv,
                at,
                event,
                dump.as_ref().map_or((0, 0), |d| (d.gprs.rcx, d.gprs.r11)),
            ) {
                Ok(Reply::GuestResume { resume, .. }) => {
                    return Some(Reply::GuestResume { token, resume });
                }
                Ok(other) => return Some(other),
                Err(crash) => Ending::Crashed(crash),
            },
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

    /// Ends guest `at`: its last console text, the lifecycle line, the domain destroyed.
    fn end(&mut self, hv: &mut impl Hypervisor, at: usize, ending: Ending, out: &mut impl Write) {
        let mut running = self.running.swap_remove(at);
        {
            let cell = RefCell::new(&mut *hv);
            let mut console = Console {
                hv: &cell,
                domain: running.domain,
                prefix_len: "guest ".len() + running.name.len() + 2,
                line: String::new(),
            };
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

/// How a guest ended: the lifecycle line after `guest NAME: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Shutdown(ShutdownReason),
    Crashed(Crash),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown(reason) => write!(f, "shut down ({reason})"),
            Self::Crashed(crash) => write!(f, "crashed: {crash}"),
        }
    }
}

/// `rip -= 2` (back onto the `syscall`) with the continued arguments.
fn continuation(call: &Hypercall, next: [u64; 5]) -> Reply {
    let mut gprs = Vec::new();
    for (gpr, value) in [Gpr::Rdi, Gpr::Rsi, Gpr::Rdx, Gpr::R10, Gpr::R8]
        .into_iter()
        .zip(next)
    {
        let _ = gprs.push(GprWrite { gpr, value });
    }
    let _ = gprs.push(GprWrite {
        gpr: Gpr::Rax,
        value: call.number,
    });
    Reply::ResumeWith {
        token: call.token,
        changes: ResumeChanges {
            rip: call.rip.wrapping_sub(2),
            rsp: call.rsp,
            rflags: call.rflags,
            gprs,
        },
    }
}

/// What emulating a guest fault came to.
// Returned once per event and matched at once; no allocator to box the reply into.
#[allow(clippy::large_enum_variant)]
enum Emulation {
    /// Emulated: resume the guest with this.
    Resume(Reply),
    /// Not emulated (or the instruction's own fault): bounce the event as it is.
    AsFault,
    /// Reading the instruction faulted at `address`.
    PageFault { address: u64 },
}

/// The value a resume writes into `gpr` (0 if it writes none).
fn gpr_value(resume: &GuestResume, gpr: Gpr) -> u64 {
    resume
        .gprs
        .iter()
        .find(|w| w.gpr == gpr)
        .map_or(0, |w| w.value)
}

/// Carries `from`'s write of `gpr` into `into`.
fn keep_gpr(into: &mut GuestResume, from: &GuestResume, gpr: Gpr) {
    if let Some(write) = from.gprs.iter().find(|w| w.gpr == gpr) {
        let _ = into.gprs.push(*write);
    }
}

/// The host's CPUID (the policy's input).
fn host_cpuid(leaf: u32, subleaf: u32) -> emulate::cpuid::Regs {
    #[cfg(target_os = "none")]
    {
        let r = ipc::rt::cpu::cpuid(leaf, subleaf);
        emulate::cpuid::Regs {
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (leaf, subleaf);
        emulate::cpuid::Regs::default()
    }
}

/// The time stamp counter (0 on the host, where no guest runs).
fn ipc_tsc() -> u64 {
    #[cfg(target_os = "none")]
    {
        ipc::rt::cpu::rdtsc()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// A domain's shared_info frame through the nucleus' frame calls.
struct SharedFrame<'c, 'h, H> {
    hv: &'c RefCell<&'h mut H>,
    domain: u16,
    mfn: Mfn,
}

impl<H: Hypervisor> SharedPage for SharedFrame<'_, '_, H> {
    fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .read_frame(self.domain, self.mfn, offset, out)
            .map_err(|_| Errno::Efault)
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .write_frame(self.domain, self.mfn, offset, bytes)
            .map_err(|_| Errno::Efault)
    }
}

/// [`SharedFrame`] outside a hypercall: it holds the hypervisor borrow itself.
struct OwnedShared<'h, H> {
    hv: &'h mut H,
    domain: u16,
    mfn: Mfn,
}

impl<H: Hypervisor> SharedPage for OwnedShared<'_, H> {
    fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        self.hv
            .read_frame(self.domain, self.mfn, offset, out)
            .map_err(|_| Errno::Efault)
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.hv
            .write_frame(self.domain, self.mfn, offset, bytes)
            .map_err(|_| Errno::Efault)
    }
}

/// Grant frames and descriptor tables: the nucleus' calls.
struct NucleusTables<'c, 'h, H> {
    hv: &'c RefCell<&'h mut H>,
    domain: u16,
}

impl<H: Hypervisor> FrameSource for NucleusTables<'_, '_, H> {
    fn share_frame(&mut self) -> Result<Mfn, Errno> {
        self.hv.borrow_mut().share_frame(self.domain)
    }
}

impl<H: Hypervisor> DescriptorTables for NucleusTables<'_, '_, H> {
    fn set_gdt(&mut self, frames: &[u64], entries: u64) -> Result<(), Errno> {
        self.hv.borrow_mut().set_gdt(self.domain, frames, entries)
    }

    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .mmu(self.domain, MmuOp::UpdateDescriptor { maddr, desc })
    }
}

/// vCPU 0's vcpu_info at the start of the domain's shared_info frame.
struct SharedVcpuInfo<'c, 'h, H> {
    hv: &'c RefCell<&'h mut H>,
    domain: u16,
    shared_info: Mfn,
}

/// Offsets in vcpu_info (pv64-abi.md §2.4).
const UPCALL_MASK_AT: usize = 1;
const CR2_AT: usize = 16;

impl<H: Hypervisor> VcpuInfoAccess for SharedVcpuInfo<'_, '_, H> {
    fn upcall_mask(&mut self) -> Result<u8, GuestFault> {
        let mut mask = [0u8];
        self.hv
            .borrow_mut()
            .read_frame(self.domain, self.shared_info, UPCALL_MASK_AT, &mut mask)
            .map_err(|_| GuestFault { va: 0 })?;
        Ok(mask[0])
    }

    fn set_upcall_mask(&mut self, mask: u8) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .write_frame(self.domain, self.shared_info, UPCALL_MASK_AT, &[mask])
            .map_err(|_| GuestFault { va: 0 })
    }

    fn set_cr2(&mut self, cr2: u64) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .write_frame(self.domain, self.shared_info, CR2_AT, &cr2.to_le_bytes())
            .map_err(|_| GuestFault { va: 0 })
    }
}

/// Guest memory through the nucleus' copy call.
struct Memory<'c, 'h, H> {
    hv: &'c RefCell<&'h mut H>,
    domain: u16,
}

impl<H: Hypervisor> GuestMemory for Memory<'_, '_, H> {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .guest_read(self.domain, va, buf)
            .map_err(|_| GuestFault { va })
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .guest_write(self.domain, va, bytes)
            .map_err(|_| GuestFault { va })
    }
}

/// Takes `guest NAME: <text>\n` lines and hands `<text>` to the nucleus, which prints it
/// under the domain's name (pv-server cannot print a line as another server or the nucleus).
struct Console<'c, 'h, H> {
    hv: &'c RefCell<&'h mut H>,
    domain: u16,
    prefix_len: usize,
    line: String<256>,
}

impl<H: Hypervisor> Write for Console<'_, '_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                let text = self.line.as_bytes().get(self.prefix_len..).unwrap_or(b"");
                self.hv.borrow_mut().console_line(self.domain, text);
                self.line.clear();
            } else {
                let _ = self.line.push(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::FakeHypervisor;

    /// The fake's frames include the shared_info frame `guests_with` names.
    fn with_shared_info(mut hv: FakeHypervisor) -> FakeHypervisor {
        hv.frames.insert(0x99, vec![0; 4096]);
        hv
    }

    fn guests_with(domain: u16, name: &str) -> Guests {
        let mut guests = Guests::new();
        let mut label = String::new();
        label.push_str(name).unwrap();
        guests.total = 1;
        guests
            .running
            .push(Running {
                domain,
                name: label,
                calls: DomainCalls::new(1),
                traps: VcpuTraps::new(),
                shared_info: Mfn(0x99),
                pv: PvDomain::new(domain, Mfn(0x99), 0x1000),
            })
            .ok()
            .unwrap();
        guests
    }

    fn hypercall(domain: u16, number: u64, args: [u64; 6]) -> NucleusMessage {
        NucleusMessage::Hypercall(Hypercall {
            token: Token(7),
            domain,
            vcpu: 0,
            number,
            args,
            rip: 0x1002,
            rsp: 0x8000,
            rflags: 0x202,
        })
    }

    fn guest_event(domain: u16, kind: EventKind, rip: u64) -> Event {
        Event {
            cpu: 0,
            kind,
            event_data: 0,
            rip,
            cs: 0xe033,
            rflags: 0x202,
            rsp: 0x8000,
            ss: 0xe02b,
            from_ring: 3,
            insn_len: 0,
            owner: ipc::domain::guest_owner(domain),
        }
    }

    #[test]
    fn a_gp_on_mov_from_cr3_is_emulated_with_the_guests_l4() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        let mut page = vec![0x90; 0x1000];
        page[..3].copy_from_slice(&[0x0f, 0x20, 0xd8]);
        hv.memory.insert(0x4000, page);
        let mut guests = guests_with(3, "emu");
        let mut out = std::string::String::new();
        let event = guest_event(
            3,
            EventKind::Exception {
                vector: 13,
                error_code: 0,
            },
            0x4000,
        );
        let reply = guests.handle(
            &mut hv,
            &NucleusMessage::GuestEvent {
                token: Token(9),
                event,
                regs: GuestRegisters::default(),
            },
            &mut out,
        );
        let Some(Reply::GuestResume { token, resume }) = reply else {
            panic!("not emulated: {reply:?} {out}");
        };
        assert_eq!(token, Token(9));
        assert_eq!(
            (resume.rip, resume.rsp, resume.cs),
            (0x4003, 0x8000, 0xe033)
        );
        assert_eq!(
            resume.gprs.as_slice(),
            [GprWrite {
                gpr: Gpr::Rax,
                value: 0x1000
            }]
        );
        assert_eq!(out, "");
    }

    #[test]
    fn a_pending_unmasked_upcall_is_delivered_as_a_hypercall_returns() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        hv.memory.insert(0x7000, vec![0; 0x1000]);
        // vCPU 0: upcall pending, events unmasked.
        hv.frames.get_mut(&0x99).unwrap()[0] = 1;
        let mut guests = guests_with(3, "ev");
        guests.running[0].traps.event.address = 0x5000;
        guests.running[0].pv.events.upcall_raised = true;
        let mut out = std::string::String::new();
        let mut call = hypercall(3, 17, [0; 6]);
        if let NucleusMessage::Hypercall(c) = &mut call {
            c.rsp = 0x7800;
        }
        let reply = guests.handle(&mut hv, &call, &mut out);
        let Some(Reply::GuestResume { resume, .. }) = reply else {
            panic!("no upcall: {reply:?} {out}");
        };
        assert_eq!(resume.rip, 0x5000, "the event callback");
        assert!(resume.gprs.contains(&GprWrite {
            gpr: Gpr::Rax,
            value: 4 << 16 | 21
        }));
        assert_eq!(hv.frames[&0x99][1], 1, "entered with events masked");
        // Masked: a plain return.
        let reply = guests.handle(&mut hv, &call, &mut out);
        assert!(matches!(reply, Some(Reply::Return { .. })), "{reply:?}");
    }

    #[test]
    fn console_lines_go_to_the_nucleus_under_the_domains_name() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        hv.memory.insert(0x4000, b"hi\nthere\n".to_vec());
        let mut guests = guests_with(3, "hello");
        let mut out = std::string::String::new();
        let reply = guests.handle(
            &mut hv,
            &hypercall(3, 18, [0, 9, 0x4000, 0, 0, 0]),
            &mut out,
        );
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: 0
            })
        );
        assert_eq!(hv.lines, vec![(3, "hi".into()), (3, "there".into())]);
        assert_eq!(out, "");
    }

    #[test]
    fn xen_version_and_unknown_domains() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        let mut guests = guests_with(3, "hello");
        let mut out = std::string::String::new();
        let reply = guests.handle(&mut hv, &hypercall(3, 17, [0; 6]), &mut out);
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: 4 << 16 | 21
            })
        );
        let reply = guests.handle(&mut hv, &hypercall(9, 17, [0; 6]), &mut out);
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: Errno::Esrch.rax()
            })
        );
    }

    #[test]
    fn set_segment_base_goes_to_the_nucleus_whose_verdict_is_the_answer() {
        let mut hv = FakeHypervisor::default();
        let mut guests = guests_with(3, "seg");
        let mut out = std::string::String::new();
        let reply = guests.handle(
            &mut hv,
            &hypercall(3, 25, [2, 0xffff_8880_0000_1000, 0, 0, 0, 0]),
            &mut out,
        );
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: 0
            })
        );
        assert_eq!(hv.segment_bases, vec![(3, 2, 0xffff_8880_0000_1000)]);
        // Refused by pv-server already: the nucleus is not asked.
        let reply = guests.handle(
            &mut hv,
            &hypercall(3, 25, [0, 0x8000_0000_0000, 0, 0, 0, 0]),
            &mut out,
        );
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: Errno::Einval.rax()
            })
        );
        assert_eq!(hv.segment_bases.len(), 1);
    }

    #[test]
    fn poweroff_ends_the_guest_destroys_it_and_sums_up() {
        let mut hv = FakeHypervisor {
            free: 500,
            ..Default::default()
        };
        hv.memory.insert(0x4000, vec![0; 4]);
        let mut guests = guests_with(3, "hello");
        guests.free_before = 500;
        let mut out = std::string::String::new();
        let reply = guests.handle(
            &mut hv,
            &hypercall(3, 29, [2, 0x4000, 0, 0, 0, 0]),
            &mut out,
        );
        assert_eq!(reply, None);
        assert_eq!(hv.destroyed, vec![3]);
        assert_eq!(
            out,
            "guest hello: shut down (poweroff)\n\
             guests: all ended (1 of 1 powered off; free memory 2000 KiB, 2000 KiB before the first)\n"
        );
        assert!(guests.running.is_empty());
    }

    #[test]
    fn a_fault_is_a_crash_with_its_dump_and_a_tick_is_the_watchdog() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        let mut guests = guests_with(2, "bad");
        let mut out = std::string::String::new();
        let event = Event {
            cpu: 0,
            kind: EventKind::Exception {
                vector: 14,
                error_code: 2,
            },
            event_data: 0xdead_0000,
            rip: 0x1234,
            cs: 0xe033,
            rflags: 0x202,
            rsp: 0x8000,
            ss: 0xe02b,
            from_ring: 3,
            insn_len: 0,
            owner: ipc::domain::guest_owner(2),
        };
        let reply = guests.handle(
            &mut hv,
            &NucleusMessage::Event {
                token: Token(1),
                event,
            },
            &mut out,
        );
        assert_eq!(reply, None);
        assert!(out.starts_with(
            "guest bad: crashed: #PF at 0x1234 (address 0xdead0000, error 0x2) with no trap table\n"
        ), "{out}");
        let mut guests = guests_with(4, "spin");
        let mut out = std::string::String::new();
        let tick = Event {
            kind: EventKind::Interrupt { vector: 32 },
            owner: ipc::domain::guest_owner(4),
            ..event
        };
        guests.handle(
            &mut hv,
            &NucleusMessage::Event {
                token: Token(2),
                event: tick,
            },
            &mut out,
        );
        assert!(
            out.starts_with("guest spin: shut down (watchdog)\n"),
            "{out}"
        );
        assert_eq!(hv.destroyed, vec![2, 4]);
    }

    #[test]
    fn a_long_console_write_continues_at_the_syscall() {
        let mut hv = with_shared_info(FakeHypervisor::default());
        hv.memory.insert(0x4000, vec![b'x'; 5000]);
        let mut guests = guests_with(3, "hello");
        let mut out = std::string::String::new();
        let reply = guests.handle(
            &mut hv,
            &hypercall(3, 18, [0, 5000, 0x4000, 0, 0, 0]),
            &mut out,
        );
        let Some(Reply::ResumeWith { changes, .. }) = reply else {
            panic!("expected a continuation, got {reply:?}");
        };
        assert_eq!(changes.rip, 0x1000);
        assert!(changes.gprs.contains(&GprWrite {
            gpr: Gpr::Rsi,
            value: 5000 - 4096
        }));
        assert!(changes.gprs.contains(&GprWrite {
            gpr: Gpr::Rax,
            value: 18
        }));
    }

    #[test]
    fn a_fault_is_bounced_with_the_dumps_registers_and_iret_comes_back() {
        use ipc::dump_parts::{DUMP_BYTES_MAX, split};
        use ipc::message::{DumpReason, GuestMode};
        let mut hv = FakeHypervisor::default();
        // shared_info (vcpu 0's mask 1, as at start of day), a trap table, a stack.
        let mut shared = vec![0u8; 4096];
        shared[1] = 1;
        hv.frames.insert(0x99, shared);
        let mut table = vec![0u8; 32];
        table[0] = 6;
        table[8..16].copy_from_slice(&0x2000u64.to_le_bytes());
        hv.memory.insert(0x5000, table);
        hv.memory.insert(0x7000, vec![0; 0x1000]);
        let mut guests = guests_with(2, "t");
        let mut out = std::string::String::new();
        let reply = guests.handle(&mut hv, &hypercall(2, 0, [0x5000, 0, 0, 0, 0, 0]), &mut out);
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(7),
                rax: 0
            })
        );
        // The nucleus sends the registers first (as a dump), then the #UD.
        let mut dump = RegisterDump::default();
        dump.gprs.rcx = 0xc0;
        dump.gprs.r11 = 0x11;
        let mut buf = [0u8; DUMP_BYTES_MAX];
        for part in split(&dump, Token(3), DumpReason::ServerCrash, 0, &mut buf).unwrap() {
            assert_eq!(
                guests.handle(&mut hv, &NucleusMessage::Dump(part), &mut out),
                None
            );
        }
        let event = Event {
            cpu: 0,
            kind: EventKind::Exception {
                vector: 6,
                error_code: 0,
            },
            event_data: 0,
            rip: 0x1234,
            cs: 0xe033,
            rflags: 0x246,
            rsp: 0x7f00,
            ss: 0xe02b,
            from_ring: 3,
            insn_len: 0,
            owner: ipc::domain::guest_owner(2),
        };
        let reply = guests.handle(
            &mut hv,
            &NucleusMessage::Event {
                token: Token(3),
                event,
            },
            &mut out,
        );
        let Some(Reply::GuestResume { token, resume }) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(
            (token, resume.rip, resume.rsp),
            (Token(3), 0x2000, 0x7f00 - 56)
        );
        let frame: std::vec::Vec<u64> = hv.memory[&0x7000][0xf00 - 56..0xf00]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            frame,
            [0xc0, 0x11, 0x1234, 0xe030 | 1 << 32, 0x46, 0x7f00, 0xe02b]
        );
        // The handler returns through iret with that frame (flags 0 and rax/r11/rcx pushed).
        let mut ctx = vec![];
        for w in [
            9u64,
            0x11,
            0xc0,
            0,
            0x1236,
            0xe030 | 1 << 32,
            0x246,
            0x7f00,
            0xe02b,
        ] {
            ctx.extend_from_slice(&w.to_le_bytes());
        }
        hv.memory.get_mut(&0x7000).unwrap()[0x800..0x800 + 72].copy_from_slice(&ctx);
        let mut call = hypercall(2, 23, [0; 6]);
        if let NucleusMessage::Hypercall(c) = &mut call {
            c.rsp = 0x7800;
        }
        let Some(Reply::GuestResume { resume, .. }) = guests.handle(&mut hv, &call, &mut out)
        else {
            panic!("iret gave no context");
        };
        assert_eq!(
            (resume.rip, resume.rsp, resume.cs, resume.mode),
            (0x1236, 0x7f00, 0xe033, GuestMode::Kernel)
        );
        assert_eq!(hv.frames[&0x99][1], 0, "IF set: events unmasked");
        assert_eq!(out, "");
    }

    #[test]
    fn a_guest_event_that_cannot_be_bounced_asks_for_the_dump_first() {
        let mut hv = FakeHypervisor::default();
        let mut guests = guests_with(2, "bad");
        let mut out = std::string::String::new();
        let event = Event {
            cpu: 0,
            kind: EventKind::Exception {
                vector: 6,
                error_code: 0,
            },
            event_data: 0,
            rip: 0x1234,
            cs: 0xe033,
            rflags: 0x202,
            rsp: 0x8000,
            ss: 0xe02b,
            from_ring: 3,
            insn_len: 0,
            owner: ipc::domain::guest_owner(2),
        };
        let reply = guests.handle(
            &mut hv,
            &NucleusMessage::GuestEvent {
                token: Token(5),
                event,
                regs: GuestRegisters::default(),
            },
            &mut out,
        );
        assert_eq!(reply, Some(Reply::SendDump { token: Token(5) }));
        assert_eq!(
            (out.as_str(), hv.destroyed.len()),
            ("", 0),
            "nothing ended yet"
        );
        // The event again, after its dump: the crash line.
        let reply = guests.handle(
            &mut hv,
            &NucleusMessage::Event {
                token: Token(5),
                event,
            },
            &mut out,
        );
        assert_eq!(reply, None);
        assert!(
            out.starts_with("guest bad: crashed: #UD at 0x1234 (error 0x0) with no trap table\n"),
            "{out}"
        );
        assert_eq!(hv.destroyed, vec![2]);
    }
}
