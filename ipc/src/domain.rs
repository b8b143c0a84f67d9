//! The guest-manager ABI (issue 15): what pv-server passes the nucleus' domain calls
//! ([`crate::syscall::Syscall::DomainMmu`], [`crate::syscall::Syscall::VcpuStart`],
//! [`crate::syscall::Syscall::GuestCopy`]) and how a guest vCPU is named in the events the
//! nucleus forwards to pv-server.
//!
//! Every value here is an allegation on the nucleus side: it decodes with the `from_*`
//! functions and checks what it decoded.

/// Most domains the nucleus runs at once.
pub const MAX_DOMAINS: usize = 4;

/// Free frames `domain_create` and `domain_share` never hand to a domain: the nucleus' own
/// (4 MiB: restarting both servers, images, stacks, rings and tables, several times over).
/// pv-server subtracts it too, so its `rejected:` line names the memory guests can have.
pub const NUCLEUS_RESERVE_FRAMES: u64 = 1024;

/// `Event::owner` of a guest vCPU's events: `GUEST_OWNER_BASE + domain` (server threads use
/// their small thread numbers, so the two never meet).
pub const GUEST_OWNER_BASE: u32 = 0x1_0000;

/// The owner number of domain `domain`'s vCPU 0.
pub const fn guest_owner(domain: u16) -> u32 {
    GUEST_OWNER_BASE + domain as u32
}

/// The domain behind an owner number, if it names a guest.
pub const fn owner_domain(owner: u32) -> Option<u16> {
    if owner >= GUEST_OWNER_BASE && owner - GUEST_OWNER_BASE <= u16::MAX as u32 {
        Some((owner - GUEST_OWNER_BASE) as u16)
    } else {
        None
    }
}

/// Bit 63 of `guest_copy`'s last argument: copy from the caller *to* the guest.
pub const COPY_TO_GUEST: u64 = 1 << 63;
/// Most bytes one `guest_copy` or `domain_write` moves.
pub const COPY_MAX: u64 = 4096;
/// Most frames `domain_share` gives one domain (its grant table's `max_nr_frames`).
pub const MAX_SHARED_FRAMES: usize = 4;
/// Most frames of a guest GDT (`set_gdt`: entries below Xen's reserved page 14).
pub const MAX_GDT_FRAMES: usize = 14;
/// Most frames of a guest LDT (8192 descriptors).
pub const MAX_LDT_FRAMES: usize = 16;

/// What `clock(which)` answers.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// TSC ticks per millisecond (kHz), measured at boot; 0 if it could not be.
    TscKhz = 0,
    /// Seconds since 1970 the RTC said at boot.
    RtcSeconds = 1,
    /// The TSC value when the RTC was read.
    RtcTsc = 2,
}

impl Clock {
    /// The value `which` names, if any.
    pub const fn from_raw(which: u64) -> Option<Self> {
        Some(match which {
            0 => Self::TscKhz,
            1 => Self::RtcSeconds,
            2 => Self::RtcTsc,
            _ => return None,
        })
    }
}

/// One page-table operation of `domain_mmu(domain, op, a, b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuOp {
    /// Validate and pin frame `mfn` as a table of `level` (1-4): Xen's `MMUEXT_PIN_Ln_TABLE`.
    Pin { level: u8, mfn: u64 },
    /// `MMUEXT_UNPIN_TABLE`.
    Unpin { mfn: u64 },
    /// `MMUEXT_NEW_BASEPTR`: the vCPU's tables become the validated L4 `mfn`.
    NewBaseptr { mfn: u64 },
    /// `MMUEXT_NEW_USER_BASEPTR`: the vCPU's user-mode tables become the validated L4 `mfn`
    /// (0: none, so the guest cannot enter user mode).
    NewUserBaseptr { mfn: u64 },
    /// `MMU_NORMAL_PT_UPDATE`: entry at machine address `ptr` (8-aligned, in a validated
    /// table of the domain) becomes `val`.
    Update { ptr: u64, val: u64 },
    /// `update_va_mapping`: the L1 entry behind guest `va` (in the current tables) becomes
    /// `val`; the caller's flush flags are honoured by the nucleus' own CR3 discipline.
    UpdateVa { va: u64, val: u64 },
    /// `MMU_MACHPHYS_UPDATE`: the M2P entry of frame `mfn` (the domain's own) becomes `pfn`.
    MachphysUpdate { mfn: u64, pfn: u64 },
    /// `set_gdt`: the vCPU's GDT becomes the `entries` descriptors (at most 7168) in the
    /// frames whose u64 MFNs are at `list` in the caller's memory; each frame becomes a
    /// validated descriptor page, the old GDT's frames are released. All or nothing.
    SetGdt { list: u64, entries: u64 },
    /// `mmuext_op(SET_LDT)`: the LDT becomes the `entries` descriptors at page-aligned
    /// guest `va` (walked in the current tables; each frame a descriptor page); 0 clears.
    SetLdt { va: u64, entries: u64 },
    /// `update_descriptor`: the 8 bytes at machine address `maddr` become `desc`, checked.
    UpdateDescriptor { maddr: u64, desc: u64 },
}

impl MmuOp {
    const PIN: u64 = 0;
    const UNPIN: u64 = 1;
    const NEW_BASEPTR: u64 = 2;
    const UPDATE: u64 = 3;
    const UPDATE_VA: u64 = 4;
    const NEW_USER_BASEPTR: u64 = 5;
    const MACHPHYS_UPDATE: u64 = 9;
    const SET_GDT: u64 = 6;
    const SET_LDT: u64 = 7;
    const UPDATE_DESCRIPTOR: u64 = 8;

    /// `(op, a, b)` as the syscall carries them.
    pub const fn encode(self) -> (u64, u64, u64) {
        match self {
            Self::Pin { level, mfn } => (Self::PIN | (level as u64) << 8, mfn, 0),
            Self::Unpin { mfn } => (Self::UNPIN, mfn, 0),
            Self::NewBaseptr { mfn } => (Self::NEW_BASEPTR, mfn, 0),
            Self::Update { ptr, val } => (Self::UPDATE, ptr, val),
            Self::UpdateVa { va, val } => (Self::UPDATE_VA, va, val),
            Self::NewUserBaseptr { mfn } => (Self::NEW_USER_BASEPTR, mfn, 0),
            Self::MachphysUpdate { mfn, pfn } => (Self::MACHPHYS_UPDATE, mfn, pfn),
            Self::SetGdt { list, entries } => (Self::SET_GDT, list, entries),
            Self::SetLdt { va, entries } => (Self::SET_LDT, va, entries),
            Self::UpdateDescriptor { maddr, desc } => (Self::UPDATE_DESCRIPTOR, maddr, desc),
        }
    }

    /// The operation `(op, a, b)` names, if any.
    pub const fn decode(op: u64, a: u64, b: u64) -> Option<Self> {
        Some(match (op & 0xff, op >> 8) {
            (Self::PIN, level @ 1..=4) => Self::Pin {
                level: level as u8,
                mfn: a,
            },
            (Self::UNPIN, 0) => Self::Unpin { mfn: a },
            (Self::NEW_BASEPTR, 0) => Self::NewBaseptr { mfn: a },
            (Self::UPDATE, 0) => Self::Update { ptr: a, val: b },
            (Self::UPDATE_VA, 0) => Self::UpdateVa { va: a, val: b },
            (Self::NEW_USER_BASEPTR, 0) => Self::NewUserBaseptr { mfn: a },
            (Self::MACHPHYS_UPDATE, 0) => Self::MachphysUpdate { mfn: a, pfn: b },
            (Self::SET_GDT, 0) => Self::SetGdt {
                list: a,
                entries: b,
            },
            (Self::SET_LDT, 0) => Self::SetLdt { va: a, entries: b },
            (Self::UPDATE_DESCRIPTOR, 0) => Self::UpdateDescriptor { maddr: a, desc: b },
            _ => return None,
        })
    }
}

/// The registers `vcpu_start` starts vCPU 0 with (pv64-abi.md §2.3); the nucleus checks them
/// as it checks every reply (`bsp_x86_64::guest_return`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuStart {
    pub rip: u64,
    pub rsp: u64,
    pub rsi: u64,
    pub rflags: u64,
    /// Machine address of the pinned L4 the vCPU starts on.
    pub cr3: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    /// The CPU (bring-up number) the guest's `cpu=` pins the vCPU to; `None`: the nucleus'
    /// placement policy picks (architecture-notes.md, "CPUs"). An allegation like the rest:
    /// a CPU that is not online gets one line and the policy's pick.
    pub cpu: Option<u8>,
}

impl VcpuStart {
    /// Bytes of the block.
    pub const SIZE: usize = 48;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        for (i, word) in [self.rip, self.rsp, self.rsi, self.rflags, self.cr3]
            .into_iter()
            .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        out[40..42].copy_from_slice(&self.cs.to_le_bytes());
        out[42..44].copy_from_slice(&self.ss.to_le_bytes());
        out[44..46].copy_from_slice(&self.ds.to_le_bytes());
        if let Some(cpu) = self.cpu {
            out[46] = 1;
            out[47] = cpu;
        }
        out
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let half = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Self {
            rip: word(0),
            rsp: word(1),
            rsi: word(2),
            rflags: word(3),
            cr3: word(4),
            cs: half(40),
            ss: half(42),
            ds: half(44),
            // Any other byte than 1 at 46 means "not pinned".
            cpu: (bytes[46] == 1).then_some(bytes[47]),
        }
    }
}

/// A domain name as `domain_create` accepts it: 1-24 bytes of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &[u8]) -> bool {
    (1..=24).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmu_ops_round_trip_and_junk_is_refused() {
        for op in [
            MmuOp::Pin { level: 4, mfn: 7 },
            MmuOp::Pin { level: 1, mfn: 9 },
            MmuOp::Unpin { mfn: 3 },
            MmuOp::NewBaseptr { mfn: 5 },
            MmuOp::NewUserBaseptr { mfn: 0 },
            MmuOp::Update {
                ptr: 0x1008,
                val: 0x2067,
            },
            MmuOp::UpdateVa { va: 0x4000, val: 0 },
            MmuOp::MachphysUpdate { mfn: 0x123, pfn: 4 },
            MmuOp::SetGdt {
                list: 0x5000,
                entries: 513,
            },
            MmuOp::SetLdt {
                va: 0x6000,
                entries: 0,
            },
            MmuOp::UpdateDescriptor {
                maddr: 0x7008,
                desc: 0x00cf_f200_0000_ffff,
            },
        ] {
            let (o, a, b) = op.encode();
            assert_eq!(MmuOp::decode(o, a, b), Some(op));
        }
        assert_eq!(MmuOp::decode(0, 1, 0), None, "pin level 0");
        assert_eq!(MmuOp::decode(5 << 8, 1, 0), None, "pin level 5");
        assert_eq!(MmuOp::decode(99, 0, 0), None);
        assert_eq!(MmuOp::decode(1 | 1 << 8, 0, 0), None);
    }

    #[test]
    fn start_block_round_trips() {
        let regs = VcpuStart {
            rip: 0x1000,
            rsp: 0x9000,
            rsi: 0x5000,
            rflags: 0x200,
            cr3: 0x12_3000,
            cs: 0xe033,
            ss: 0xe02b,
            ds: 0xe02b,
            cpu: None,
        };
        assert_eq!(VcpuStart::from_bytes(&regs.to_bytes()), regs);
        let pinned = VcpuStart {
            cpu: Some(3),
            ..regs
        };
        assert_eq!(VcpuStart::from_bytes(&pinned.to_bytes()), pinned);
        assert_eq!(pinned.to_bytes()[46..], [1, 3]);
    }

    #[test]
    fn owners_and_names() {
        assert_eq!(owner_domain(guest_owner(3)), Some(3));
        assert_eq!(owner_domain(1), None);
        assert!(valid_name(b"hello"));
        assert!(valid_name(b"a-b_c.1"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"a b"));
        assert!(!valid_name(b"nucleus:"));
        assert!(!valid_name(&[b'a'; 25]));
    }
}
