//! Event channels, 2-level (issue 16 point 7, pv64-abi.md §4.17, §6.6): the ports of one
//! domain and `event_channel_op`'s answers, and raising a port into shared_info's pending,
//! mask and selector bits and `evtchn_upcall_pending`. Delivering the upcall itself (the
//! bounce into the event callback) is the caller's, once the vCPU returns with
//! `upcall_pending && !upcall_mask`.

use xen_abi::Errno;
use xen_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindVirq, EvtchnOpCmd, EvtchnPort, EvtchnStatus, EvtchnStatusArg,
    NR_VIRQS, Virq,
};
use xen_abi::layout::DOMID_SELF;

use crate::guest_hypercalls::{GuestMemory, read, write};
use crate::shared_page::{MASK, PENDING, PENDING_SEL, SharedPage, UPCALL_PENDING, vcpu_field};

/// Ports a domain may have (port 0 is never allocated). Xen's 2-level ABI has 4096; ours
/// are fewer, and allocation beyond them is `-ENOSPC`.
pub const MAX_PORTS: usize = 128;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Port {
    #[default]
    Closed,
    /// Waiting for `remote` to bind it (no interdomain binding exists yet).
    Unbound { remote: u16 },
    /// A virtual interrupt of vCPU `vcpu`.
    Virq { virq: u32, vcpu: u32 },
}

/// One domain's event channels.
#[derive(Clone, Debug)]
pub struct EventChannels {
    domain: u16,
    vcpus: u32,
    ports: [Port; MAX_PORTS],
    /// Set when this set `evtchn_upcall_pending`; the caller clears it once it has seen the
    /// guest clear the byte. Only pv-server raises upcalls, so while this is false no return
    /// to the guest needs to look at shared_info (the hypercall path stays one syscall).
    pub upcall_raised: bool,
}

/// VIRQs that are per vCPU (Xen's `virq_is_global` is false for these); all others are
/// global and bound on vCPU 0.
const fn per_vcpu(virq: u32) -> bool {
    matches!(virq, 0 | 1 | 7 | 13)
}

impl EventChannels {
    pub const fn new(domain: u16, vcpus: u32) -> Self {
        Self {
            domain,
            vcpus,
            ports: [Port::Closed; MAX_PORTS],
            upcall_raised: false,
        }
    }

    /// The port's binding (`Closed` out of range).
    pub fn port(&self, port: u32) -> Port {
        self.ports.get(port as usize).copied().unwrap_or_default()
    }

    /// The port bound to `virq` on `vcpu`, if any.
    pub fn virq_port(&self, virq: Virq, vcpu: u32) -> Option<u32> {
        let wanted = Port::Virq {
            virq: virq.raw(),
            vcpu,
        };
        self.ports
            .iter()
            .position(|p| *p == wanted)
            .map(|i| i as u32)
    }

    fn self_domain(&self, dom: u16) -> bool {
        dom == DOMID_SELF || dom == self.domain
    }

    fn open_port(&self, port: u32) -> Result<usize, Errno> {
        match self.ports.get(port as usize) {
            Some(Port::Closed) | None => Err(Errno::Einval),
            Some(_) if port == 0 => Err(Errno::Einval),
            Some(_) => Ok(port as usize),
        }
    }

    fn free_port(&self) -> Result<usize, Errno> {
        (1..MAX_PORTS)
            .find(|&i| self.ports[i] == Port::Closed)
            .ok_or(Errno::Enospc)
    }

    /// `event_channel_op(cmd, arg)`.
    pub fn op(
        &mut self,
        cmd: u64,
        arg: u64,
        memory: &mut impl GuestMemory,
        shared: &mut impl SharedPage,
    ) -> Result<u64, Errno> {
        match EvtchnOpCmd::from_raw(cmd) {
            Some(EvtchnOpCmd::AllocUnbound) => {
                let mut bytes = [0; EvtchnAllocUnbound::SIZE];
                read(memory, arg, &mut bytes)?;
                let mut alloc = EvtchnAllocUnbound::from_bytes(&bytes);
                if !self.self_domain(alloc.dom) {
                    return Err(Errno::Eperm);
                }
                let port = self.free_port()?;
                let remote = if alloc.remote_dom == DOMID_SELF {
                    self.domain
                } else {
                    alloc.remote_dom
                };
                alloc.port = port as u32;
                write(memory, arg, &alloc.to_bytes())?;
                self.ports[port] = Port::Unbound { remote };
                Ok(0)
            }
            Some(EvtchnOpCmd::BindVirq) => {
                let mut bytes = [0; EvtchnBindVirq::SIZE];
                read(memory, arg, &mut bytes)?;
                let mut bind = EvtchnBindVirq::from_bytes(&bytes);
                if bind.virq >= NR_VIRQS || (!per_vcpu(bind.virq) && bind.vcpu != 0) {
                    return Err(Errno::Einval);
                }
                if bind.vcpu >= self.vcpus {
                    return Err(Errno::Enoent);
                }
                let binding = Port::Virq {
                    virq: bind.virq,
                    vcpu: bind.vcpu,
                };
                if self.ports.contains(&binding) {
                    return Err(Errno::Eexist);
                }
                let port = self.free_port()?;
                bind.port = port as u32;
                write(memory, arg, &bind.to_bytes())?;
                self.ports[port] = binding;
                Ok(0)
            }
            Some(EvtchnOpCmd::Close) => {
                let port = self.port_arg(arg, memory)?;
                self.ports[port] = Port::Closed;
                // A closed port's pending bit goes with it.
                let (word, bit) = (port / 64, port % 64);
                let pending = shared.read_u64(PENDING + word * 8)?;
                shared.write_u64(PENDING + word * 8, pending & !(1 << bit))?;
                Ok(0)
            }
            Some(EvtchnOpCmd::Send) => {
                let port = self.port_arg(arg, memory)?;
                match self.ports[port] {
                    // Nobody bound the other end: the event is dropped, as on Xen.
                    Port::Unbound { .. } => Ok(0),
                    _ => Err(Errno::Einval),
                }
            }
            Some(EvtchnOpCmd::Status) => {
                let mut bytes = [0; EvtchnStatusArg::SIZE];
                read(memory, arg, &mut bytes)?;
                let mut status = EvtchnStatusArg::from_bytes(&bytes);
                if !self.self_domain(status.dom) {
                    return Err(Errno::Esrch);
                }
                if status.port as usize >= MAX_PORTS {
                    return Err(Errno::Einval);
                }
                let (kind, vcpu, detail) = match self.ports[status.port as usize] {
                    Port::Closed => (EvtchnStatus::Closed, 0, [0, 0]),
                    Port::Unbound { remote } => (EvtchnStatus::Unbound, 0, [u32::from(remote), 0]),
                    Port::Virq { virq, vcpu } => (EvtchnStatus::Virq, vcpu, [virq, 0]),
                };
                status.status = kind.raw();
                status.vcpu = vcpu;
                status.detail = detail;
                write(memory, arg, &status.to_bytes())?;
                Ok(0)
            }
            Some(EvtchnOpCmd::Unmask) => {
                let port = self.port_arg(arg, memory)?;
                let vcpu = self.notify_vcpu(port);
                let (word, bit) = (port / 64, port % 64);
                let mask = shared.read_u64(MASK + word * 8)?;
                if mask & (1 << bit) == 0 {
                    return Ok(0);
                }
                shared.write_u64(MASK + word * 8, mask & !(1 << bit))?;
                if shared.read_u64(PENDING + word * 8)? & (1 << bit) != 0 {
                    self.upcall_raised |= mark_pending(shared, vcpu, word)?;
                }
                Ok(0)
            }
            // FIFO setup: -ENOSYS keeps guests on 2-level; the rest is not built.
            _ => Err(Errno::Enosys),
        }
    }

    fn port_arg(&self, arg: u64, memory: &mut impl GuestMemory) -> Result<usize, Errno> {
        let mut bytes = [0; EvtchnPort::SIZE];
        read(memory, arg, &mut bytes)?;
        self.open_port(EvtchnPort::from_bytes(&bytes).port)
    }

    /// The vCPU a port notifies.
    fn notify_vcpu(&self, port: usize) -> u32 {
        match self.ports[port] {
            Port::Virq { vcpu, .. } => vcpu,
            _ => 0,
        }
    }

    /// Raises `port` (§6.6): sets its pending bit; if it was clear and the port is
    /// unmasked, the selector bit and `evtchn_upcall_pending` of its vCPU. True when the
    /// port was newly made pending.
    pub fn raise(&mut self, port: u32, shared: &mut impl SharedPage) -> Result<bool, Errno> {
        let port = self.open_port(port)?;
        let vcpu = self.notify_vcpu(port);
        let (word, bit) = (port / 64, port % 64);
        let pending = shared.read_u64(PENDING + word * 8)?;
        if pending & (1 << bit) != 0 {
            return Ok(false);
        }
        shared.write_u64(PENDING + word * 8, pending | 1 << bit)?;
        if shared.read_u64(MASK + word * 8)? & (1 << bit) == 0 {
            self.upcall_raised |= mark_pending(shared, vcpu, word)?;
        }
        Ok(true)
    }
}

/// Sets selector bit `word` of `vcpu` and, if it was clear, `evtchn_upcall_pending`
/// (then true).
fn mark_pending(shared: &mut impl SharedPage, vcpu: u32, word: usize) -> Result<bool, Errno> {
    let sel = shared.read_u64(vcpu_field(vcpu, PENDING_SEL))?;
    if sel & (1 << word) == 0 {
        shared.write_u64(vcpu_field(vcpu, PENDING_SEL), sel | 1 << word)?;
        shared.write_u8(vcpu_field(vcpu, UPCALL_PENDING), 1)?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether port `port` is pending.
pub fn is_pending(shared: &mut impl SharedPage, port: u32) -> Result<bool, Errno> {
    let port = port as usize;
    if port >= xen_abi::evtchn::NR_EVENT_CHANNELS as usize {
        return Ok(false);
    }
    Ok(shared.read_u64(PENDING + port / 64 * 8)? & (1 << (port % 64)) != 0)
}

#[cfg(test)]
mod tests;
