//! pv-server: the Ring3 owner of PV64 guest state (architecture.md §6, issue 7 item 6).
//!
//! Says `Hello`, owns the (for now empty) [`guests::GuestTable`], answers hypercalls against
//! it and pings for the ring benchmark. Options (StartInfo `args`): `bench` runs the Ring3
//! side of the syscall/`int3` measurements ([`bench`](mod@bench)); `selfcheck` and `fault=` are the
//! runtime's test options (`ipc::rt::testopts`).
//!
//! No `unsafe` here: the syscalls, `_start` and the ring pages are `ipc::rt`'s. On the host
//! this is a stub `main`, so `cargo test --workspace` runs the modules' tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![forbid(unsafe_code)]

mod bench;
// The builder is host-tested now and wired to the nucleus' guest-memory calls next.
#[allow(dead_code, unused_imports)]
mod domain_builder;
// The per-vCPU conversions and GS logic are host-tested now and used once guests exist.
#[allow(dead_code)]
mod guests;
mod hypercall;
// The hypercalls pv-server answers itself, host-tested; called once guests run.
#[allow(dead_code, unused_imports)]
mod guest_hypercalls;

#[cfg(target_os = "none")]
mod server {
    use ipc::ServerMessage;
    use ipc::println;
    use ipc::rt::{Server, exit_code, sys, testopts};

    use crate::{bench, guests::GuestTable, hypercall};

    fn main(mut server: Server) -> ! {
        if let Err(error) = server.hello() {
            println!("cannot say Hello: {error}");
            sys::exit(exit_code::NO_HELLO);
        }
        let table = GuestTable::new();
        println!(
            "started (generation {}), {} of {} PV guest slots in use",
            server.generation(),
            table.len(),
            table.capacity()
        );
        testopts::run(&server);
        if server.info().has_arg(b"bench") {
            bench::run();
        }
        let name = server.name();
        server.serve(|message, console| {
            hypercall::handle(&table, name, message, console).map(ServerMessage::Reply)
        })
    }

    ipc::declare_server!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
