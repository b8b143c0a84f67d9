//! One guest's hypercall, answered: page-table ones through the nucleus' checks
//! ([`guest_mmu`]), trap-table ones by [`guest_traps`], those of issue 16 points 6 and 7 by
//! [`guest_state`], the rest by [`guest_hypercalls`]; then back into the guest (or parked,
//! or the guest's end).

use core::cell::RefCell;

use heapless::Vec;
use ipc::message::{Gpr, GprWrite, Hypercall, Reply, ResumeChanges};
use xen_abi::Errno;

use super::access::{Console, NucleusTables, SharedFrame};
use super::ending::Ending;
use super::host_cpu;
use super::running::Running;
use crate::guest_hypercalls::Outcome;
use crate::guest_mmu;
use crate::guest_state::{self, Answer, Env};
use crate::guest_traps;
use crate::hypervisor::Hypervisor;
use crate::timekeeping::TimeBase;

impl Running {
    /// Answers `call`: the reply, `None` while the vCPU sleeps or waits for its
    /// continuation, or how the guest ended. `time`: the nucleus' time base.
    pub fn hypercall(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        time: Option<TimeBase>,
    ) -> Result<Option<Reply>, Ending> {
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
            outcome
        } else if number == u64::from(xen_abi::Hypercall::Iret.raw()) {
            return Ok(Some(self.iret(hv, call)?));
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
        let rax = match outcome {
            Outcome::Return(rax) => rax,
            Outcome::Yield => 0,
            // The nucleus checks the base again and loads it when the vCPU runs.
            Outcome::SetSegmentBase { which, base } => {
                match hv.segment_base(call.domain, u64::from(which.raw()), base) {
                    Ok(()) => 0,
                    Err(errno) => errno.rax(),
                }
            }
            Outcome::Continue(next) => return Ok(Some(continuation(call, next))),
            Outcome::Shutdown(reason) => return Err(Ending::Shutdown(reason)),
        };
        Ok(Some(self.returning(hv, call, rax)?))
    }

    /// A hypercall of [`guest_state`]; `None` while the vCPU sleeps in
    /// `sched_op(block/poll)` (its answer comes when the guest table's tick wakes it).
    fn pv_call(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
        args: [u64; 5],
        time: Option<TimeBase>,
    ) -> Result<Option<Reply>, Ending> {
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
        let rax = match answer {
            Ok(Answer::Return(rax)) => rax,
            Ok(Answer::Parked) => {
                if let Some(parked) = self.pv.parked.as_mut() {
                    parked.context = [call.rip, call.rsp, call.rflags];
                }
                return Ok(None);
            }
            Err(errno) => {
                if errno == Errno::Enosys {
                    self.calls.unimplemented = self.calls.unimplemented.saturating_add(1);
                }
                errno.rax()
            }
        };
        Ok(Some(self.returning(hv, call, rax)?))
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
