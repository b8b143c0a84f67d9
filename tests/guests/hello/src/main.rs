//! guest-hello: the first PV64 test guest (issue 15 point 6). It prints what its
//! start_info says, one field group per line, checks the hypervisor's read-only M2P against
//! its p2m, and shuts down with `poweroff` — or, with the command line `shutdown=REASON`,
//! with that reason (`run`'s exit status follows the reasons, issue 15 point 1).
//!
//! Its Xen ELF notes are declared here, in the guest's own source: a generic-loader guest
//! for `xen-3.0` with VIRT_BASE 0 and a hypercall page. On the host it is an empty stub.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::tables::{m2p, p2m};
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_guest_notes};
    use xen_abi::Hypercall;
    use xen_abi::layout::{INVALID_M2P_ENTRY, MACH2PHYS_VIRT_START};
    use xen_abi::sched::ShutdownReason;

    xen_guest_notes!("fredvisor-hello");

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let magic = core::str::from_utf8(info.magic_str()).unwrap_or("<not UTF-8>");
        println!(
            "hello: start_info at {:#x}, magic {magic:?}",
            boot.start_info_va
        );
        println!(
            "hello: nr_pages {} shared_info {:#x} flags {:#x}",
            info.nr_pages, info.shared_info, info.flags
        );
        println!(
            "hello: pt_base {:#x} nr_pt_frames {} mfn_list {:#x}",
            info.pt_base, info.nr_pt_frames, info.mfn_list
        );
        println!(
            "hello: store_mfn {:#x} console_mfn {:#x} boot rsp {:#x}",
            info.store_mfn, info.console.mfn, boot.boot_rsp
        );
        let cmdline = core::str::from_utf8(info.cmdline()).unwrap_or("<not UTF-8>");
        println!("hello: cmd_line {cmdline:?}");
        check_m2p(&boot);
        match shutdown_reason(info.cmdline()) {
            ShutdownReason::Poweroff => println!("hello: powering off"),
            reason => println!("hello: shutting down ({reason})"),
        }
        shutdown(shutdown_reason(info.cmdline()))
    }

    /// The reason the command line asks for (`shutdown=reboot`, ...); poweroff otherwise.
    fn shutdown_reason(cmdline: &[u8]) -> ShutdownReason {
        let Some(word) = cmdline.strip_prefix(b"shutdown=") else {
            return ShutdownReason::Poweroff;
        };
        [
            ShutdownReason::Reboot,
            ShutdownReason::Suspend,
            ShutdownReason::Crash,
            ShutdownReason::Watchdog,
        ]
        .into_iter()
        .find(|reason| reason.name().as_bytes() == word)
        .unwrap_or(ShutdownReason::Poweroff)
    }

    /// The M2P the hypervisor maps at Xen's address agrees with our p2m: for start_info,
    /// every bootstrap page-table frame and every other frame we own; shared_info (not ours)
    /// has no pfn.
    fn check_m2p(boot: &Boot) {
        let info = boot.start_info;
        // Where the hypervisor says the M2P is (memory_op machphys_mapping: v_start, v_end,
        // max_mfn); guest_rt reads it at Xen's fixed address, so the two must agree.
        let mut mapping = [0u64; 3];
        // SAFETY: the hypervisor writes 24 bytes into our own stack array.
        let rax = unsafe {
            hypercall(
                Hypercall::MemoryOp,
                [12, mapping.as_mut_ptr() as u64, 0, 0, 0],
            )
        };
        if rax != 0 || mapping[0] != MACH2PHYS_VIRT_START {
            println!(
                "hello: m2p: WRONG machphys_mapping {rax:#x}, v_start {:#x}",
                mapping[0]
            );
            return;
        }
        let p2m = p2m(info);
        let agrees = |pfn: u64| m2p(p2m[pfn as usize]) == pfn;
        let start_info = boot.start_info_va >> 12;
        let tables = info.pt_base >> 12..(info.pt_base >> 12) + info.nr_pt_frames;
        if let Some(pfn) = core::iter::once(start_info)
            .chain(tables.clone())
            .chain(0..info.nr_pages)
            .find(|&pfn| !agrees(pfn))
        {
            println!(
                "hello: m2p: WRONG pfn {pfn:#x} is mfn {:#x}, whose M2P entry is {:#x}",
                p2m[pfn as usize],
                m2p(p2m[pfn as usize])
            );
            return;
        }
        let shared = m2p(info.shared_info >> 12);
        let shared = if shared == INVALID_M2P_ENTRY {
            "none"
        } else {
            "WRONG"
        };
        println!(
            "hello: m2p at {:#x}: start_info pfn {start_info:#x} and page tables pfn {:#x}+{} agree with the p2m, as do all {} frames; shared_info: {shared}",
            mapping[0], tables.start, info.nr_pt_frames, info.nr_pages
        );
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
