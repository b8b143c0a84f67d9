//! One guest's hypercall, answered: page-table ones through the nucleus' checks
//! ([`guest_mmu`]), trap-table ones by [`guest_traps`], those of issue 16 points 6 and 7 by
//! [`guest_state`], the rest by [`guest_hypercalls`](crate::guest_hypercalls). What comes of it ([`Answered`]) is
//! small: the guest table builds the reply (or ends the guest) from it.

use core::cell::RefCell;

use heapless::Vec;
use ipc::message::{Gpr, GprWrite, Hypercall, Reply, ResumeChanges};
use xen_abi::Errno;
use xen_abi::sched::ShutdownReason;

use super::access::{Console, NucleusTables, SharedFrame};
use super::host_cpu;
use super::running::Running;
use crate::guest_hypercalls::Outcome;
use crate::guest_mmu;
use crate::guest_state::{self, Answer, Env};
use crate::guest_traps;
use crate::hypervisor::Hypervisor;
use crate::timekeeping::TimeBase;

/// What a hypercall (other than `iret`) came to. Small on purpose: the reply, which is not,
/// is built once, where it is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// `rax` goes back to the guest (after its event upcall, if one is due).
    Return(u64),
    /// The guest runs the hypercall again with these arguments ([`continuation`]).
    Continue([u64; 5]),
    /// The vCPU sleeps in `sched_op(block/poll)`: its answer comes when a tick wakes it.
    Parked,
    /// The guest shut down.
    Shutdown(ShutdownReason),
}

impl Running {
    /// Answers `call`, any hypercall but `iret` ([`Running::iret`]). `time`: the nucleus'
    /// time base.
    pub fn hypercall(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        time: Option<TimeBase>,
    ) -> Answered {
        let [a0, a1, a2, a3, a4, _] = call.args;
        let args = [a0, a1, a2, a3, a4];
        let number = call.number;
        if guest_state::handles(number) || guest_state::handles_sched(number, a0) {
            return self.pv_call(hv, call, args, time);
        }
        let outcome = if guest_mmu::handles(number) {
            let mut effects = guest_mmu::Effects::default();
            let outcome = guest_mmu::answer_with(hv, call.domain, number, args, &mut effects);
            if let Some(mfn) = effects.user_baseptr {
                self.traps.user_tables = mfn != 0;
            }
            if let Some(mfn) = effects.kernel_baseptr {
                self.pv.cpu.cr3 = mfn << 12;
            }
            if let Some((va, entries)) = effects.ldt {
                self.pv.descriptors.set_ldt(va, entries);
            }
            outcome
        } else {
            let cell = RefCell::new(&mut *hv);
            let mut memory = self.memory(&cell);
            if guest_traps::hypercalls::handles(number) {
                guest_traps::hypercalls::answer(&mut self.traps, number, args, &mut memory)
            } else {
                let mut console = Console::new(&cell, self.domain, &self.name);
                self.calls
                    .answer(&self.name, number, args, &mut memory, &mut console)
            }
        };
        match outcome {
            Outcome::Return(rax) => Answered::Return(rax),
            Outcome::Yield => Answered::Return(0),
            // The nucleus checks the base again and loads it when the vCPU runs.
            Outcome::SetSegmentBase { which, base } => Answered::Return(
                match hv.segment_base(call.domain, u64::from(which.raw()), base) {
                    Ok(()) => 0,
                    Err(errno) => errno.rax(),
                },
            ),
            Outcome::Continue(next) => Answered::Continue(next),
            Outcome::Shutdown(reason) => Answered::Shutdown(reason),
        }
    }

    /// A hypercall of [`guest_state`].
    fn pv_call(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        args: [u64; 5],
        time: Option<TimeBase>,
    ) -> Answered {
        let (domain, shared_info) = (self.domain, self.shared_info);
        let answer = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = self.memory(&cell);
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
                tsc: host_cpu::tsc(),
            };
            self.pv.answer(call.token, call.number, args, &mut env)
        };
        match answer {
            Ok(Answer::Return(rax)) => Answered::Return(rax),
            Ok(Answer::Parked) => {
                if let Some(parked) = self.pv.parked.as_mut() {
                    parked.context = [call.rip, call.rsp, call.rflags];
                }
                Answered::Parked
            }
            Err(errno) => {
                if errno == Errno::Enosys {
                    self.calls.unimplemented = self.calls.unimplemented.saturating_add(1);
                }
                Answered::Return(errno.rax())
            }
        }
    }
}

/// `rip -= 2` (back onto the `syscall`) with the continued arguments.
pub fn continuation(call: &Hypercall, next: [u64; 5]) -> Reply {
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
