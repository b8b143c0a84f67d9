//! `shared_info` and `vcpu_info` (pv64-abi.md §2.4): the page the hypervisor and a guest
//! share for event channels, time and the per-vCPU upcall state.

use crate::layout::LEGACY_MAX_VCPUS;
use crate::wire;

/// `struct vcpu_time_info` (32 bytes). Written with the version protocol of §2.4: odd
/// while the writer is inside, even when consistent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub _pad0: u32,
    pub tsc_timestamp: u64,
    /// ns of system time at `tsc_timestamp`.
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    /// Shift applied to a TSC delta before the multiply; negative means right.
    pub tsc_shift: i8,
    /// bit 0 TSC_STABLE, bit 1 GUEST_STOPPED.
    pub flags: u8,
    pub _pad1: [u8; 2],
}

/// `vcpu_time_info.flags`: the TSC is stable across vCPUs.
pub const TIME_FLAG_TSC_STABLE: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the guest was stopped.
pub const TIME_FLAG_GUEST_STOPPED: u8 = 1 << 1;

impl VcpuTimeInfo {
    pub const SIZE: usize = 32;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut b = [0; Self::SIZE];
        wire::put_u32(&mut b, offset_of!(Self, version), self.version);
        wire::put_u64(&mut b, offset_of!(Self, tsc_timestamp), self.tsc_timestamp);
        wire::put_u64(&mut b, offset_of!(Self, system_time), self.system_time);
        wire::put_u32(
            &mut b,
            offset_of!(Self, tsc_to_system_mul),
            self.tsc_to_system_mul,
        );
        b[offset_of!(Self, tsc_shift)] = self.tsc_shift as u8;
        b[offset_of!(Self, flags)] = self.flags;
        b
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            version: wire::get_u32(bytes, offset_of!(Self, version)),
            _pad0: 0,
            tsc_timestamp: wire::get_u64(bytes, offset_of!(Self, tsc_timestamp)),
            system_time: wire::get_u64(bytes, offset_of!(Self, system_time)),
            tsc_to_system_mul: wire::get_u32(bytes, offset_of!(Self, tsc_to_system_mul)),
            tsc_shift: bytes[offset_of!(Self, tsc_shift)] as i8,
            flags: bytes[offset_of!(Self, flags)],
            _pad1: [0; 2],
        }
    }

    /// System time in ns at `tsc`, by the §2.4 formula (wrapping, as the guest computes it).
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let shifted = if self.tsc_shift >= 0 {
            delta << self.tsc_shift
        } else {
            delta >> -(self.tsc_shift as i32)
        };
        let scaled = ((shifted as u128 * self.tsc_to_system_mul as u128) >> 32) as u64;
        self.system_time.wrapping_add(scaled)
    }
}

/// `struct arch_vcpu_info` (x86-64, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchVcpuInfo {
    /// Written on #PF delivery.
    pub cr2: u64,
    pub pad: u64,
}

/// `struct vcpu_info` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Set by the hypervisor, cleared by the guest.
    pub evtchn_upcall_pending: u8,
    /// The guest's "interrupt flag": 1 = events masked.
    pub evtchn_upcall_mask: u8,
    pub _pad0: [u8; 6],
    /// Bit w: word w of `evtchn_pending` has news.
    pub evtchn_pending_sel: u64,
    pub arch: ArchVcpuInfo,
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` (x86-64, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchSharedInfo {
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}

/// Event-channel words: 64 × 64 = 4096 ports (2-level ABI).
pub const EVTCHN_WORDS: usize = 64;

/// `struct shared_info` (x86-64, 3136 bytes used of its page).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    pub evtchn_pending: [u64; EVTCHN_WORDS],
    pub evtchn_mask: [u64; EVTCHN_WORDS],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    pub arch: ArchSharedInfo,
}

// pv64-abi.md §2.4.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(size_of::<ArchVcpuInfo>() == 16);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_pending) == 0);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, cr2) == 16);
    assert!(offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, pad) == 24);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, version) == 32);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_timestamp) == 40);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, system_time) == 48);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 56);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_shift) == 60);
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, flags) == 61);
    assert!(size_of::<ArchSharedInfo>() == 48);
    assert!(size_of::<SharedInfo>() == 3136);
    assert!(offset_of!(SharedInfo, vcpu_info) == 0);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, wc_sec) == 3076);
    assert!(offset_of!(SharedInfo, wc_nsec) == 3080);
    assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
    assert!(offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, max_pfn) == 3088);
    assert!(
        offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, pfn_to_mfn_frame_list_list)
            == 3096
    );
    assert!(offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, nmi_reason) == 3104);
    assert!(offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, p2m_cr3) == 3112);
    assert!(offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, p2m_vaddr) == 3120);
    assert!(offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, p2m_generation) == 3128);
};

impl VcpuInfo {
    pub const SIZE: usize = 64;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        let b = &mut out;
        out_u8(
            b,
            offset_of!(Self, evtchn_upcall_pending),
            self.evtchn_upcall_pending,
        );
        out_u8(
            b,
            offset_of!(Self, evtchn_upcall_mask),
            self.evtchn_upcall_mask,
        );
        wire::put_u64(
            b,
            offset_of!(Self, evtchn_pending_sel),
            self.evtchn_pending_sel,
        );
        let arch = offset_of!(Self, arch);
        wire::put_u64(b, arch + offset_of!(ArchVcpuInfo, cr2), self.arch.cr2);
        wire::put_u64(b, arch + offset_of!(ArchVcpuInfo, pad), self.arch.pad);
        let t = offset_of!(Self, time);
        b[t..t + VcpuTimeInfo::SIZE].copy_from_slice(&self.time.to_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        let arch = offset_of!(Self, arch);
        let t = offset_of!(Self, time);
        Self {
            evtchn_upcall_pending: bytes[offset_of!(Self, evtchn_upcall_pending)],
            evtchn_upcall_mask: bytes[offset_of!(Self, evtchn_upcall_mask)],
            _pad0: [0; 6],
            evtchn_pending_sel: wire::get_u64(bytes, offset_of!(Self, evtchn_pending_sel)),
            arch: ArchVcpuInfo {
                cr2: wire::get_u64(bytes, arch + offset_of!(ArchVcpuInfo, cr2)),
                pad: wire::get_u64(bytes, arch + offset_of!(ArchVcpuInfo, pad)),
            },
            time: VcpuTimeInfo::from_bytes(
                bytes[t..t + VcpuTimeInfo::SIZE]
                    .try_into()
                    .unwrap_or(&[0; VcpuTimeInfo::SIZE]),
            ),
        }
    }
}

fn out_u8(buf: &mut [u8], offset: usize, value: u8) {
    buf[offset] = value;
}

impl SharedInfo {
    /// Bytes of the page the structure uses.
    pub const SIZE: usize = 3136;

    /// Byte offset of vCPU `vcpu`'s vcpu_info inside shared_info (`None` past the 32 slots).
    pub const fn vcpu_info_offset(vcpu: usize) -> Option<usize> {
        if vcpu < LEGACY_MAX_VCPUS {
            Some(core::mem::offset_of!(Self, vcpu_info) + vcpu * VcpuInfo::SIZE)
        } else {
            None
        }
    }

    /// The start-of-day image (§2.3): zero, except that every legacy vCPU has events masked.
    pub fn start_of_day_bytes() -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let masked = VcpuInfo {
            evtchn_upcall_mask: 1,
            ..VcpuInfo::default()
        }
        .to_bytes();
        for slot in out[..LEGACY_MAX_VCPUS * VcpuInfo::SIZE].chunks_exact_mut(VcpuInfo::SIZE) {
            slot.copy_from_slice(&masked);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn start_of_day_masks_every_vcpu() {
        let bytes = SharedInfo::start_of_day_bytes();
        for vcpu in 0..LEGACY_MAX_VCPUS {
            let at = SharedInfo::vcpu_info_offset(vcpu).unwrap();
            assert_eq!(at, vcpu * 64);
            assert_eq!(bytes[at], 0, "nothing pending");
            assert_eq!(bytes[at + 1], 1, "vcpu {vcpu} masked");
        }
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), LEGACY_MAX_VCPUS);
        assert_eq!(SharedInfo::vcpu_info_offset(32), None);
    }

    #[test]
    fn time_formula() {
        let time = VcpuTimeInfo {
            tsc_timestamp: 1000,
            system_time: 5_000,
            // 0.5 ns per shifted tick.
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            ..Default::default()
        };
        // delta 200, << 1 = 400, * 0.5 = 200.
        assert_eq!(time.system_time_at(1200), 5_200);
        let right = VcpuTimeInfo {
            tsc_shift: -2,
            tsc_to_system_mul: u32::MAX,
            ..time
        };
        // delta 4000 >> 2 = 1000, * (2^32-1)/2^32 = 999.
        assert_eq!(right.system_time_at(5000), 5_999);
    }

    proptest! {
        #[test]
        fn vcpu_info_round_trips(bytes in prop::collection::vec(any::<u8>(), VcpuInfo::SIZE)) {
            let mut image: [u8; VcpuInfo::SIZE] = bytes.try_into().unwrap();
            image[2..8].fill(0);
            image[36..40].fill(0);
            image[62..64].fill(0);
            prop_assert_eq!(VcpuInfo::from_bytes(&image).to_bytes(), image);
        }
    }
}
