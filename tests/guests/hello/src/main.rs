//! guest-hello: the first PV64 test guest (issue 15 point 6). It prints what its
//! start_info says, one field group per line, and shuts down with `poweroff`.
//!
//! Its Xen ELF notes are declared here, in the guest's own source: a generic-loader guest
//! for `xen-3.0` with VIRT_BASE 0 and a hypercall page. On the host it is an empty stub.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::{Boot, guest_main, println, shutdown, xen_note_int, xen_note_str};
    use xen_abi::elfnote::XenNote;
    use xen_abi::sched::ShutdownReason;

    xen_note_str!(XenNote::GuestOs, "fredvisor-hello");
    xen_note_str!(XenNote::GuestVersion, "0.1");
    xen_note_str!(XenNote::XenVersion, "xen-3.0");
    xen_note_str!(XenNote::Loader, "generic");
    xen_note_int!(XenNote::VirtBase, 0);
    xen_note_int!(XenNote::PaddrOffset, 0);
    xen_note_int!(XenNote::HypercallPage, sym hypercall_page);

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
        println!("hello: powering off");
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
