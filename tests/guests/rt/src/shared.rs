//! shared_info for the test guests: mapped read-write at a fixed VA in the bootstrap
//! region's padding, the time as the guest computes it from `vcpu_time_info` and the TSC
//! (pv64-abi.md §2.4), and exact-value checks that end the guest on the first wrong answer.

use core::ptr::{addr_of, addr_of_mut};

use xen_abi::StartInfo;
use xen_abi::sched::ShutdownReason;
use xen_abi::shared_info::{SharedInfo, VcpuTimeInfo};

use crate::tables::{PAGE_RW, region_end, update_va_mapping};
use crate::{println, shutdown};

/// Maps shared_info at the last page of the bootstrap region; its VA.
pub fn map_shared_info(info: &StartInfo) -> *mut SharedInfo {
    let va = region_end(info) - 4096;
    let rax = update_va_mapping(va, info.shared_info | PAGE_RW);
    if rax != 0 {
        println!("shared_info: mapping refused ({:#x})", rax);
        shutdown(ShutdownReason::Crash);
    }
    va as *mut SharedInfo
}

/// `lfence; rdtsc`.
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reads the TSC only.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nomem, nostack))
    };
    u64::from(high) << 32 | u64::from(low)
}

/// vCPU 0's time record, read consistently (even version, unchanged across the read).
pub fn time_info(shared: *mut SharedInfo) -> VcpuTimeInfo {
    loop {
        // SAFETY: `shared` is the mapping `map_shared_info` made; the hypervisor writes the
        // record with the version protocol, which the loop honours.
        let (before, record, after) = unsafe {
            let time = addr_of!((*shared).vcpu_info[0].time);
            let before = addr_of!((*time).version).read_volatile();
            let record = time.read_volatile();
            let after = addr_of!((*time).version).read_volatile();
            (before, record, after)
        };
        if before % 2 == 0 && before == after {
            return record;
        }
    }
}

/// System time now, in ns.
pub fn now_ns(shared: *mut SharedInfo) -> u64 {
    time_info(shared).system_time_at(rdtsc())
}

/// vCPU 0's `evtchn_upcall_pending` and `evtchn_upcall_mask`.
pub fn upcall_state(shared: *mut SharedInfo) -> (u8, u8) {
    // SAFETY: as in `time_info`; single bytes.
    unsafe {
        (
            addr_of!((*shared).vcpu_info[0].evtchn_upcall_pending).read_volatile(),
            addr_of!((*shared).vcpu_info[0].evtchn_upcall_mask).read_volatile(),
        )
    }
}

/// Word `word` of `evtchn_pending` (`mask = false`) or `evtchn_mask`.
pub fn event_word(shared: *mut SharedInfo, word: usize, mask: bool) -> u64 {
    // SAFETY: as in `time_info`; word < 64 by the indexing.
    unsafe {
        if mask {
            addr_of!((*shared).evtchn_mask[word % 64]).read_volatile()
        } else {
            addr_of!((*shared).evtchn_pending[word % 64]).read_volatile()
        }
    }
}

/// Sets word `word` of `evtchn_pending` (`mask = false`) or `evtchn_mask`.
pub fn set_event_word(shared: *mut SharedInfo, word: usize, mask: bool, value: u64) {
    // SAFETY: as in `event_word`.
    unsafe {
        if mask {
            addr_of_mut!((*shared).evtchn_mask[word % 64]).write_volatile(value)
        } else {
            addr_of_mut!((*shared).evtchn_pending[word % 64]).write_volatile(value)
        }
    }
}

/// Sets vCPU 0's `evtchn_upcall_pending` and clears its selector.
pub fn clear_upcall(shared: *mut SharedInfo) {
    // SAFETY: as in `time_info`.
    unsafe {
        addr_of_mut!((*shared).vcpu_info[0].evtchn_upcall_pending).write_volatile(0);
        addr_of_mut!((*shared).vcpu_info[0].evtchn_pending_sel).write_volatile(0);
    }
}

/// Exact-value checks: the first wrong answer prints `NAME: WRONG …` and crashes the guest.
pub struct Checks {
    pub name: &'static str,
    pub passed: u32,
}

impl Checks {
    pub const fn new(name: &'static str) -> Self {
        Self { name, passed: 0 }
    }

    pub fn eq(&mut self, what: &str, got: u64, want: u64) {
        if got != want {
            println!("{}: WRONG {what}: got {got:#x}, want {want:#x}", self.name);
            shutdown(ShutdownReason::Crash);
        }
        self.passed += 1;
    }

    pub fn yes(&mut self, what: &str, ok: bool) {
        self.eq(what, u64::from(ok), 1);
    }

    /// `NAME: N checks passed`, then poweroff.
    pub fn done(self) -> ! {
        println!("{}: {} checks passed", self.name, self.passed);
        shutdown(ShutdownReason::Poweroff)
    }
}
