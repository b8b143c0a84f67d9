//! The per-domain state of issue 16 points 5-7 and the hypercalls answered over it: event
//! channels ([`crate::events`]), the grant table ([`crate::grants`]), the single-shot timer
//! and `vcpu_time_info` ([`crate::timekeeping`]), a vCPU blocked in `sched_op(block/poll)`,
//! the virtual CPU state emulation uses ([`crate::emulate`]), and the descriptor-table
//! hypercalls whose checks are the nucleus' (`bsp_x86_64::guest_descriptor`).

use heapless::Vec;
use ipc::Token;
use xen_abi::evtchn::Virq;
use xen_abi::memory::PhysdevOpCmd;
use xen_abi::sched::{SchedOpCmd, SchedPoll};
use xen_abi::{Errno, Hypercall, Mfn};

use crate::callgate::descriptor::DescriptorRecord;
use crate::emulate::VirtualCpu;
use crate::events::{self, EventChannels};
use crate::grants::{FrameSource, GrantTable};
use crate::guest_hypercalls::{GuestMemory, read};
use crate::shared_page::{SharedPage, UPCALL_MASK, UPCALL_PENDING, vcpu_field};
use crate::timekeeping::{self, TimeBase};

/// Most ports one `sched_op(poll)` may name (Xen: 128).
pub const MAX_POLL_PORTS: usize = 128;
/// Most frames `set_gdt` takes (the guest's array is 16 u64, 14 usable).
const GDT_FRAME_LIST: usize = 16;

/// What a blocked vCPU waits for.
// One per domain, and no allocator to box the port list into: the size is the point.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `SCHEDOP_block`: any event upcall.
    Block,
    /// `SCHEDOP_poll`: one of `ports` pending, or an upcall, or system time `timeout`.
    Poll {
        ports: Vec<u32, MAX_POLL_PORTS>,
        timeout: Option<u64>,
    },
}

/// A vCPU that made a blocking hypercall: its reply waits until it wakes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub token: Token,
    pub wait: Wait,
    /// RIP, RSP and RFLAGS at the hypercall (for an upcall taken as it returns).
    pub context: [u64; 3],
}

/// What the nucleus does for the descriptor hypercalls (its checks, its frame types).
pub trait DescriptorTables {
    /// `set_gdt`: the frames (MFNs) and entry count, all or nothing.
    fn set_gdt(&mut self, frames: &[u64], entries: u64) -> Result<(), Errno>;
    /// `update_descriptor`.
    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno>;
}

/// The answer to one of this module's hypercalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Resume with `rax`.
    Return(u64),
    /// The vCPU sleeps; the reply comes when it wakes ([`PvDomain::wake`]).
    Parked,
}

/// One domain's state.
#[derive(Clone, Debug)]
pub struct PvDomain {
    pub events: EventChannels,
    pub grants: GrantTable,
    pub cpu: VirtualCpu,
    pub shared_info: Mfn,
    /// The single-shot timer's deadline (system ns).
    pub timer: Option<u64>,
    pub parked: Option<Parked>,
    /// The GDT and LDT the nucleus accepted (call gates are read from them).
    pub descriptors: DescriptorRecord,
}

/// True for the hypercalls [`PvDomain::answer`] takes.
pub fn handles(number: u64) -> bool {
    matches!(
        Hypercall::from_raw(number),
        Some(
            Hypercall::GrantTableOp
                | Hypercall::EventChannelOp
                | Hypercall::SetTimerOp
                | Hypercall::PhysdevOp
                | Hypercall::SetGdt
                | Hypercall::UpdateDescriptor
        )
    )
}

fn is_blocking_sched_op(number: u64, cmd: u64) -> bool {
    Hypercall::from_raw(number) == Some(Hypercall::SchedOp)
        && matches!(
            SchedOpCmd::from_raw(cmd),
            Some(SchedOpCmd::Block | SchedOpCmd::Poll)
        )
}

/// True for a `sched_op` this module answers (block, poll).
pub fn handles_sched(number: u64, cmd: u64) -> bool {
    is_blocking_sched_op(number, cmd)
}

/// The environment a hypercall runs in.
pub struct Env<'a, M, S, N> {
    pub memory: &'a mut M,
    pub shared: &'a mut S,
    /// Grant frames and descriptor tables.
    pub nucleus: &'a mut N,
    pub time: Option<TimeBase>,
    pub tsc: u64,
}

impl PvDomain {
    pub fn new(domain: u16, shared_info: Mfn, cr3: u64) -> Self {
        Self {
            events: EventChannels::new(domain, 1),
            grants: GrantTable::new(domain),
            cpu: VirtualCpu::new(0, cr3),
            shared_info,
            timer: None,
            parked: None,
            descriptors: DescriptorRecord::default(),
        }
    }

    /// Hypercall `number` with `args` of the vCPU waiting with `token`.
    pub fn answer<M, S, N>(
        &mut self,
        token: Token,
        number: u64,
        [a0, a1, a2, ..]: [u64; 5],
        env: &mut Env<'_, M, S, N>,
    ) -> Result<Answer, Errno>
    where
        M: GuestMemory,
        S: SharedPage,
        N: FrameSource + DescriptorTables,
    {
        let now = env.time.map(|t| t.ns(env.tsc));
        let ret = |value: u64| Ok(Answer::Return(value));
        match Hypercall::from_raw(number) {
            Some(Hypercall::GrantTableOp) => {
                ret(self.grants.op(a0, a1, a2, env.memory, env.nucleus)?)
            }
            Some(Hypercall::EventChannelOp) => {
                ret(self.events.op(a0, a1, env.memory, env.shared)?)
            }
            Some(Hypercall::SetTimerOp) => {
                let now = now.ok_or(Errno::Enosys)?;
                self.timer = TimeBase::timer_deadline(a0, now);
                ret(0)
            }
            Some(Hypercall::PhysdevOp) => match PhysdevOpCmd::from_raw(a0) {
                Some(PhysdevOpCmd::SetIopl) => {
                    let mut word = [0; 4];
                    read(env.memory, a1, &mut word)?;
                    let iopl = u32::from_le_bytes(word);
                    if iopl > 3 {
                        return Err(Errno::Einval);
                    }
                    self.cpu.iopl = iopl as u8;
                    ret(0)
                }
                _ => Err(Errno::Enosys),
            },
            Some(Hypercall::SetGdt) => {
                // Entries from 7168 on are the hypervisor's (FIRST_RESERVED_GDT_ENTRY).
                if a1 > u64::from(xen_abi::layout::selector::FIRST_RESERVED_GDT_ENTRY) {
                    return Err(Errno::Einval);
                }
                let count = a1.div_ceil(512) as usize;
                let mut bytes = [0u8; GDT_FRAME_LIST * 8];
                read(env.memory, a0, &mut bytes[..count * 8])?;
                let mut frames = [0u64; GDT_FRAME_LIST];
                for (frame, word) in frames.iter_mut().zip(bytes.chunks_exact(8)) {
                    *frame = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                }
                env.nucleus.set_gdt(&frames[..count], a1)?;
                self.descriptors.set_gdt(&frames[..count], a1);
                ret(0)
            }
            Some(Hypercall::UpdateDescriptor) => {
                env.nucleus.update_descriptor(a0, a1)?;
                ret(0)
            }
            Some(Hypercall::SchedOp) => self.sched(token, a0, a1, now, env),
            _ => Err(Errno::Enosys),
        }
    }

    fn sched<M: GuestMemory, S: SharedPage, N>(
        &mut self,
        token: Token,
        cmd: u64,
        arg: u64,
        now: Option<u64>,
        env: &mut Env<'_, M, S, N>,
    ) -> Result<Answer, Errno> {
        let wait = match SchedOpCmd::from_raw(cmd) {
            Some(SchedOpCmd::Block) => {
                // Events are unmasked first: that is how a blocked vCPU wakes with the upcall.
                env.shared.write_u8(vcpu_field(0, UPCALL_MASK), 0)?;
                Wait::Block
            }
            Some(SchedOpCmd::Poll) => {
                let mut bytes = [0; SchedPoll::SIZE];
                read(env.memory, arg, &mut bytes)?;
                let poll = SchedPoll::from_bytes(&bytes);
                if poll.nr_ports as usize > MAX_POLL_PORTS {
                    return Err(Errno::Einval);
                }
                let mut ports = Vec::new();
                let mut raw = [0u8; MAX_POLL_PORTS * 4];
                let raw = &mut raw[..poll.nr_ports as usize * 4];
                if !raw.is_empty() {
                    read(env.memory, poll.ports, raw)?;
                }
                for word in raw.chunks_exact(4) {
                    let _ = ports.push(u32::from_le_bytes(word.try_into().unwrap_or([0; 4])));
                }
                let timeout = (poll.timeout != 0).then_some(poll.timeout);
                if timeout.is_some() && now.is_none() {
                    return Err(Errno::Enosys);
                }
                Wait::Poll { ports, timeout }
            }
            _ => return Err(Errno::Enosys),
        };
        if self.woken(&wait, now, env.shared)? {
            return Ok(Answer::Return(0));
        }
        self.parked = Some(Parked {
            token,
            wait,
            context: [0; 3],
        });
        Ok(Answer::Parked)
    }

    /// Whether a vCPU waiting for `wait` may run again.
    fn woken(
        &self,
        wait: &Wait,
        now: Option<u64>,
        shared: &mut impl SharedPage,
    ) -> Result<bool, Errno> {
        let pending = shared.read_u8(vcpu_field(0, UPCALL_PENDING))? != 0;
        let masked = shared.read_u8(vcpu_field(0, UPCALL_MASK))? != 0;
        if pending && !masked {
            return Ok(true);
        }
        match wait {
            Wait::Block => Ok(false),
            Wait::Poll { ports, timeout } => {
                for &port in ports {
                    if events::is_pending(shared, port)? {
                        return Ok(true);
                    }
                }
                Ok(matches!((timeout, now), (Some(t), Some(now)) if now >= *t))
            }
        }
    }

    /// Runs the timer at `tsc` and wakes the parked vCPU if it may run: the hypercall to
    /// answer (`rax = 0`).
    pub fn wake(
        &mut self,
        time: Option<TimeBase>,
        tsc: u64,
        shared: &mut impl SharedPage,
    ) -> Result<Option<Parked>, Errno> {
        let now = time.map(|t| t.ns(tsc));
        if let (Some(deadline), Some(now), Some(base)) = (self.timer, now, time)
            && now >= deadline
        {
            self.timer = None;
            // The guest reads the time the timer fired at (§6.6: time first, then the VIRQ).
            timekeeping::write_time(shared, &base, 0, tsc)?;
            if let Some(port) = self.events.virq_port(Virq::Timer, 0) {
                self.events.raise(port, shared)?;
            }
        }
        let Some(parked) = &self.parked else {
            return Ok(None);
        };
        if !self.woken(&parked.wait, now, shared)? {
            return Ok(None);
        }
        Ok(self.parked.take())
    }

    /// Whether time alone can change something: an armed timer or a poll with a timeout.
    pub fn waits_for_time(&self) -> bool {
        self.timer.is_some()
            || matches!(
                self.parked,
                Some(Parked {
                    wait: Wait::Poll {
                        timeout: Some(_),
                        ..
                    },
                    ..
                })
            )
    }
}

#[cfg(test)]
mod tests;
