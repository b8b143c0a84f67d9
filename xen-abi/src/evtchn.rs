//! `event_channel_op` (hypercall 32, pv64-abi.md §4.17): the 2-level event channels.

abi_enum! {
    /// `event_channel_op` commands.
    pub enum EvtchnOpCmd: u32 {
        BindInterdomain = 0,
        BindVirq = 1,
        BindPirq = 2,
        Close = 3,
        Send = 4,
        Status = 5,
        AllocUnbound = 6,
        BindIpi = 7,
        BindVcpu = 8,
        Unmask = 9,
        Reset = 10,
        /// FIFO ABI setup: answered `-ENOSYS` so guests stay on 2-level.
        InitControl = 11,
        ExpandArray = 12,
        SetPriority = 13,
    }
}

abi_enum! {
    /// Virtual interrupts a port may be bound to (`VIRQ_*`); below 24.
    pub enum Virq: u32 {
        /// Per vCPU: the single-shot or periodic timer.
        Timer = 0,
        Debug = 1,
        /// Global (vCPU 0): console input.
        Console = 2,
    }
}

/// Virtual interrupt numbers are below this.
pub const NR_VIRQS: u32 = 24;
/// Ports of the 2-level ABI (64 words of 64 bits).
pub const NR_EVENT_CHANNELS: u32 = 4096;

abi_enum! {
    /// `evtchn_status.status`.
    pub enum EvtchnStatus: u32 {
        Closed = 0,
        Unbound = 1,
        Interdomain = 2,
        Pirq = 3,
        Virq = 4,
        Ipi = 5,
    }
}

/// `struct evtchn_alloc_unbound` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    /// Out.
    pub port: u32,
}

/// `struct evtchn_bind_virq` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    /// Out.
    pub port: u32,
}

/// `struct evtchn_bind_ipi` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    /// Out.
    pub port: u32,
}

/// `struct evtchn_close`, `evtchn_send`, `evtchn_unmask` (4 bytes): one port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnPort {
    pub port: u32,
}

/// `struct evtchn_bind_vcpu` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVcpu {
    pub port: u32,
    pub vcpu: u32,
}

/// `struct evtchn_status` (24 bytes); `detail` is the union (unbound `{u16 dom}`,
/// interdomain `{u16 dom, u32 port @4}`, virq `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusArg {
    pub dom: u16,
    pub _pad0: u16,
    pub port: u32,
    /// Out: an [`EvtchnStatus`].
    pub status: u32,
    /// Out.
    pub vcpu: u32,
    /// Out.
    pub detail: [u32; 2],
}

// pv64-abi.md §4.17.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<EvtchnAllocUnbound>() == 8);
    assert!(offset_of!(EvtchnAllocUnbound, remote_dom) == 2);
    assert!(offset_of!(EvtchnAllocUnbound, port) == 4);
    assert!(size_of::<EvtchnBindVirq>() == 12);
    assert!(offset_of!(EvtchnBindVirq, vcpu) == 4);
    assert!(offset_of!(EvtchnBindVirq, port) == 8);
    assert!(size_of::<EvtchnBindIpi>() == 8);
    assert!(size_of::<EvtchnPort>() == 4);
    assert!(size_of::<EvtchnBindVcpu>() == 8);
    assert!(size_of::<EvtchnStatusArg>() == 24);
    assert!(offset_of!(EvtchnStatusArg, port) == 4);
    assert!(offset_of!(EvtchnStatusArg, status) == 8);
    assert!(offset_of!(EvtchnStatusArg, vcpu) == 12);
    assert!(offset_of!(EvtchnStatusArg, detail) == 16);
    assert!(NR_EVENT_CHANNELS as usize == crate::shared_info::EVTCHN_WORDS * 64);
};

use crate::wire;

impl EvtchnAllocUnbound {
    pub const SIZE: usize = 8;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            dom: wire::get_u16(bytes, offset_of!(Self, dom)),
            remote_dom: wire::get_u16(bytes, offset_of!(Self, remote_dom)),
            port: wire::get_u32(bytes, offset_of!(Self, port)),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        wire::put_u16(&mut out, offset_of!(Self, dom), self.dom);
        wire::put_u16(&mut out, offset_of!(Self, remote_dom), self.remote_dom);
        wire::put_u32(&mut out, offset_of!(Self, port), self.port);
        out
    }
}

impl EvtchnBindVirq {
    pub const SIZE: usize = 12;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            virq: wire::get_u32(bytes, offset_of!(Self, virq)),
            vcpu: wire::get_u32(bytes, offset_of!(Self, vcpu)),
            port: wire::get_u32(bytes, offset_of!(Self, port)),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        wire::put_u32(&mut out, offset_of!(Self, virq), self.virq);
        wire::put_u32(&mut out, offset_of!(Self, vcpu), self.vcpu);
        wire::put_u32(&mut out, offset_of!(Self, port), self.port);
        out
    }
}

impl EvtchnPort {
    pub const SIZE: usize = 4;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            port: u32::from_le_bytes(*bytes),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.port.to_le_bytes()
    }
}

impl EvtchnStatusArg {
    pub const SIZE: usize = 24;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        let detail = offset_of!(Self, detail);
        Self {
            dom: wire::get_u16(bytes, offset_of!(Self, dom)),
            _pad0: 0,
            port: wire::get_u32(bytes, offset_of!(Self, port)),
            status: wire::get_u32(bytes, offset_of!(Self, status)),
            vcpu: wire::get_u32(bytes, offset_of!(Self, vcpu)),
            detail: [
                wire::get_u32(bytes, detail),
                wire::get_u32(bytes, detail + 4),
            ],
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        let detail = offset_of!(Self, detail);
        wire::put_u16(&mut out, offset_of!(Self, dom), self.dom);
        wire::put_u32(&mut out, offset_of!(Self, port), self.port);
        wire::put_u32(&mut out, offset_of!(Self, status), self.status);
        wire::put_u32(&mut out, offset_of!(Self, vcpu), self.vcpu);
        wire::put_u32(&mut out, detail, self.detail[0]);
        wire::put_u32(&mut out, detail + 4, self.detail[1]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (index, cmd) in EvtchnOpCmd::ALL.iter().enumerate() {
            assert_eq!(cmd.raw() as usize, index);
        }
        assert_eq!(Virq::Console.raw(), 2);
        assert_eq!(EvtchnStatus::Ipi.raw(), 5);
    }

    #[test]
    fn codecs_round_trip() {
        let alloc = EvtchnAllocUnbound {
            dom: 0x7ff0,
            remote_dom: 3,
            port: 9,
        };
        assert_eq!(EvtchnAllocUnbound::from_bytes(&alloc.to_bytes()), alloc);
        let bind = EvtchnBindVirq {
            virq: 0,
            vcpu: 1,
            port: 5,
        };
        assert_eq!(bind.to_bytes()[8], 5);
        assert_eq!(EvtchnBindVirq::from_bytes(&bind.to_bytes()), bind);
        let status = EvtchnStatusArg {
            dom: 0x7ff0,
            port: 4,
            status: 4,
            vcpu: 0,
            detail: [0, 7],
            ..Default::default()
        };
        assert_eq!(status.to_bytes()[20], 7);
        assert_eq!(EvtchnStatusArg::from_bytes(&status.to_bytes()), status);
    }
}
