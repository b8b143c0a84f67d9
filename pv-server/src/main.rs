//! pv-server: the Ring3 owner of PV64 guest state (architecture.md §6, issue 15).
//!
//! Says `Hello`, boots every guest shipped as a boot module ([`guest_boot`]), then answers
//! the guests' hypercalls and events ([`domains`]) and pings for the ring benchmark. Options
//! (StartInfo `args`): `bench` runs the Ring3 side of the syscall/`int3` measurements
//! ([`bench`](mod@bench)); `selfcheck` and `fault=` are the runtime's test options (`ipc::rt::testopts`).
//!
//! No `unsafe` here: the syscalls, `_start` and the ring pages are `ipc::rt`'s. On the host
//! this is a stub `main`, so `cargo test --workspace` runs the modules' tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![forbid(unsafe_code)]

mod bench;
mod callgate;
// Some of the builder's layout figures and pv-server's vCPU view are for part 2 and tests.
#[allow(dead_code, unused_imports)]
mod domain_builder;
mod domains;
mod emulate;
mod events;
mod grants;
mod guest_boot;
mod shared_page;
mod timekeeping;
// The public register block and per-vCPU GS logic, used once part 2 saves vCPU contexts.
#[allow(dead_code)]
mod guest_hypercalls;
mod guest_mmu;
mod guest_state;
mod guest_traps;
#[allow(dead_code)]
mod guests;
mod hypervisor;
mod prefixed;

#[cfg(target_os = "none")]
mod server {
    use ipc::message::Reply;
    use ipc::println;
    use ipc::rt::console::Console;
    use ipc::rt::{Server, exit_code, sys, testopts};
    use ipc::{NucleusMessage, ServerMessage};

    use crate::bench;
    use crate::domain_builder::Mfn;
    use crate::domains::Guests;
    use crate::guest_boot::{IMAGE_MAX, Scratch};
    use crate::hypervisor::{MAX_GUEST_FRAMES, Nucleus};
    use crate::prefixed::Prefixed;

    /// The guest image being booted and its frame list (one boot at a time).
    static IMAGE: spin::Mutex<[u8; IMAGE_MAX]> = spin::Mutex::new([0; IMAGE_MAX]);
    static MFNS: spin::Mutex<[Mfn; MAX_GUEST_FRAMES + 1]> =
        spin::Mutex::new([Mfn(0); MAX_GUEST_FRAMES + 1]);
    /// The running guests: tens of KiB (each vCPU's virtual IDT, event channels), so not on
    /// the 64 KiB stack.
    static GUESTS: spin::Mutex<Guests> = spin::Mutex::new(Guests::new());

    fn main(mut server: Server) -> ! {
        if let Err(error) = server.hello() {
            println!("cannot say Hello: {error}");
            sys::exit(exit_code::NO_HELLO);
        }
        println!(
            "started (generation {}), {} PV guest slots",
            server.generation(),
            ipc::domain::MAX_DOMAINS
        );
        testopts::run(&server);
        if server.info().has_arg(b"bench") {
            bench::run();
        }
        // A restarted pv-server does not boot the guests again: their domains died with it.
        if server.generation() == 0 {
            let mut image = IMAGE.lock();
            let mut mfns = MFNS.lock();
            let mut scratch = Scratch {
                image: &mut image[..],
                mfns: &mut mfns[..],
            };
            let mut out = Prefixed::new(server.name(), Console::new());
            GUESTS.lock().boot_all(&mut Nucleus, &mut scratch, &mut out);
        }
        let name = server.name();
        server.serve_ticking_with(Serving { name }, |send| {
            let mut guests = GUESTS.lock();
            // Only time wakes a sleeping vCPU: nothing to do on the hypercall path.
            if !guests.waits_for_time() {
                return false;
            }
            let mut out = Prefixed::new(name, Console::new());
            for reply in guests.tick(&mut Nucleus, ipc::rt::cpu::rdtsc(), &mut out) {
                send(ServerMessage::Reply(reply));
            }
            guests.waits_for_time()
        })
    }

    /// pv-server's handler: a hypercall with a constant answer (`constant_answer`) read in
    /// place from its record; everything else decoded, to the guest table.
    struct Serving {
        name: &'static str,
    }

    impl ipc::rt::Handler for Serving {
        type Answer = Option<Reply>;

        #[inline(always)]
        fn quick(&mut self, record: &ipc::codec::HotRecord<'_>) -> Option<Self::Answer> {
            let ipc::codec::HotRecord::Hypercall(call) = record else {
                return None;
            };
            GUESTS
                .lock()
                .quick_return(call.domain(), call.number(), call.arg(0), call.arg(1))
                .map(|rax| {
                    Some(Reply::Return {
                        token: call.token(),
                        rax,
                    })
                })
        }

        #[inline(always)]
        fn handle(&mut self, message: &NucleusMessage, console: &mut Console) -> Self::Answer {
            let mut out = Prefixed::new(self.name, console);
            GUESTS.lock().handle(&mut Nucleus, message, &mut out)
        }
    }

    ipc::declare_server!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
