//! guest-bench (issue 15 point 8): times 1000 `xen_version(0)` hypercalls, each between two
//! `rdtsc`, minus the cost of an empty pair, and prints
//! `bench: hypercall-roundtrip min=A max=B` (TSC ticks; `image-builder bench` converts under
//! `-icount`), then powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_note_int, xen_note_str};
    use xen_abi::Hypercall;
    use xen_abi::elfnote::XenNote;
    use xen_abi::sched::ShutdownReason;

    xen_note_str!(XenNote::GuestOs, "fredvisor-bench");
    xen_note_str!(XenNote::GuestVersion, "0.1");
    xen_note_str!(XenNote::XenVersion, "xen-3.0");
    xen_note_str!(XenNote::Loader, "generic");
    xen_note_int!(XenNote::VirtBase, 0);
    xen_note_int!(XenNote::PaddrOffset, 0);
    xen_note_int!(XenNote::HypercallPage, sym hypercall_page);

    const SAMPLES: u32 = 1000;

    fn rdtsc() -> u64 {
        // SAFETY: `rdtsc` reads the time-stamp counter; CR4.TSD is clear, so CPL3 may.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn main(_boot: Boot) -> ! {
        let overhead = (0..64)
            .map(|_| {
                let start = rdtsc();
                rdtsc().saturating_sub(start)
            })
            .min()
            .unwrap_or(0);
        let (mut min, mut max) = (u64::MAX, 0);
        let mut version = 0;
        for _ in 0..SAMPLES {
            let start = rdtsc();
            // SAFETY: xen_version(0) takes no pointer.
            version = unsafe { hypercall(Hypercall::XenVersion, [0; 5]) };
            let ticks = rdtsc().saturating_sub(start).saturating_sub(overhead);
            min = min.min(ticks);
            max = max.max(ticks);
        }
        println!(
            "bench: hypercall-roundtrip min={min} max={max} samples={SAMPLES} version={version:#x}"
        );
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
