//! The running guests and what pv-server does with each message about them (issue 15
//! points 4 and 5): hypercalls answered (page-table ones through the nucleus' checks, the
//! rest by `guest_hypercalls`), shutdowns and crashes ended with their lifecycle line and the
//! domain destroyed, and once the last guest ended one summary line with the free-memory
//! figures, which image-builder's `run --guest` waits for.

use core::cell::RefCell;
use core::fmt::{self, Write};

use heapless::{String, Vec};
use ipc::domain::{MAX_DOMAINS, owner_domain};
use ipc::dump::{RegisterDump, Text};
use ipc::dump_parts::DumpAssembler;
use ipc::message::{Gpr, GprWrite, GuestRegisters, Hypercall, Reply, ResumeChanges};
use ipc::{Event, EventKind, NucleusMessage, Token};
use xen_abi::Errno;
use xen_abi::sched::ShutdownReason;

use crate::domain_builder::Mfn;
use crate::guest_boot::{self, Booted, Scratch};
use crate::guest_hypercalls::{DomainCalls, GuestFault, GuestMemory, Outcome};
use crate::guest_mmu;
use crate::guest_traps::{self, Crash, VcpuInfoAccess, VcpuTraps, bounce, decode, iret};
use crate::hypervisor::Hypervisor;

/// The summary line's start (image-builder waits for it).
pub const ALL_ENDED: &str = "guests: all ended";

struct Running {
    domain: u16,
    name: String<24>,
    calls: DomainCalls,
    /// vCPU 0's virtual IDT, callbacks and mode.
    traps: VcpuTraps,
    shared_info: Mfn,
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
        let mut index = 0;
        while let Some(result) = guest_boot::boot(hv, index, scratch, out) {
            self.total += 1;
            index += 1;
            let Ok(Booted {
                domain,
                name,
                shared_info,
            }) = result
            else {
                continue;
            };
            let running = Running {
                domain,
                name,
                calls: DomainCalls::new(1),
                traps: VcpuTraps::new(),
                shared_info,
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
        let outcome = if guest_mmu::handles(number) {
            let mut effects = guest_mmu::Effects::default();
            let outcome = guest_mmu::answer_with(hv, call.domain, number, args, &mut effects);
            if let Some(mfn) = effects.user_baseptr {
                self.running[at].traps.user_tables = mfn != 0;
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
            Outcome::Return(rax) => Some(Reply::Return { token, rax }),
            Outcome::Yield => Some(Reply::Return { token, rax: 0 }),
            // The nucleus checks the base again and loads it when the vCPU runs.
            Outcome::SetSegmentBase { which, base } => {
                let rax = match hv.segment_base(call.domain, u64::from(which.raw()), base) {
                    Ok(()) => 0,
                    Err(errno) => errno.rax(),
                };
                Some(Reply::Return { token, rax })
            }
            Outcome::Continue(next) => Some(continuation(call, next)),
            Outcome::Shutdown(reason) => {
                self.end(hv, at, Ending::Shutdown(reason), out);
                self.sum_up_if_done(hv, out);
                None
            }
        }
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
            Ok(resume) => Some(Reply::GuestResume {
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

    #[test]
    fn console_lines_go_to_the_nucleus_under_the_domains_name() {
        let mut hv = FakeHypervisor::default();
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
        let mut hv = FakeHypervisor::default();
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
        let mut hv = FakeHypervisor::default();
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
        let mut hv = FakeHypervisor::default();
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
