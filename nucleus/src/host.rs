//! Host stand-ins for the bare-metal modules the safe core calls (`console`, `mm`, `cpu`,
//! `loader`), so that `thread`, `syscall`, `forward`, `lifecycle` and `bench` build and are
//! unit-tested on the host. Each stand-in keeps what the tests look at in thread-local
//! state (the test harness runs tests on several threads).
#![allow(clippy::missing_safety_doc)]

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::host::console::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {
        $crate::host::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod console {
    use std::cell::RefCell;
    use std::fmt::Write;

    thread_local! {
        static OUT: RefCell<String> = const { RefCell::new(String::new()) };
    }

    pub fn write_fmt(args: core::fmt::Arguments<'_>) {
        OUT.with(|out| {
            let _ = out.borrow_mut().write_fmt(args);
        });
    }

    /// Everything printed on this test thread since the last call.
    pub fn take() -> String {
        OUT.with(|out| core::mem::take(&mut *out.borrow_mut()))
    }
}

pub mod mm;

pub mod cpu;

pub mod loader {
    use super::mm::AddressSpace;
    use ipc::ring::{Consumer, Producer, RingStorage};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Ring capacity of the stand-in images.
    const RING: usize = 2048;

    pub use crate::image::{Image, StartParams};

    #[derive(Clone, Copy, Debug)]
    pub enum LoadError {
        NoModule,
        /// The test told the stand-in to refuse.
        Refused,
    }

    impl core::fmt::Display for LoadError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Self::NoModule => f.write_str("no boot module"),
                Self::Refused => f.write_str("refused by the test"),
            }
        }
    }

    /// The thread's side of a stand-in image's rings.
    pub struct ServerEnds {
        pub events: Consumer<'static>,
        pub replies: Producer<'static>,
    }

    thread_local! {
        static ENDS: RefCell<HashMap<&'static str, ServerEnds>> = RefCell::new(HashMap::new());
        static REFUSE: Cell<bool> = const { Cell::new(false) };
        static NEXT_ROOT: Cell<u64> = const { Cell::new(0x10_0000) };
    }

    /// Makes the next loads fail (`true`) or succeed.
    pub fn refuse(refuse: bool) {
        REFUSE.set(refuse);
    }

    /// Takes the server side of the rings of the image last loaded as `name`.
    pub fn server_ends(name: &str) -> ServerEnds {
        ENDS.with(|e| e.borrow_mut().remove(name))
            .unwrap_or_else(|| panic!("no image loaded as {name}"))
    }

    pub fn load(
        _module: &core::ops::Range<u64>,
        start: &StartParams<'_>,
    ) -> Result<Image, LoadError> {
        if REFUSE.get() {
            return Err(LoadError::Refused);
        }
        let (events, server_events) = Box::leak(Box::new(RingStorage::<RING>::new())).split();
        let (server_replies, replies) = Box::leak(Box::new(RingStorage::<RING>::new())).split();
        ENDS.with(|e| {
            e.borrow_mut().insert(
                start.name,
                ServerEnds {
                    events: server_events,
                    replies: server_replies,
                },
            )
        });
        let root = NEXT_ROOT.get();
        NEXT_ROOT.set(root + 0x1000);
        Ok(Image {
            space: AddressSpace::fake(root),
            entry: 0x40_1000,
            events,
            replies,
            bytes: 4096,
            segments: 2,
        })
    }
}

/// The hand-off: three modules (the kexec image is module 2); every request is refused
/// with the reason the bare-metal checks would give for a missing or a non-ELF module.
pub mod handoff {
    use crate::kexec::refusal::Refusal;
    use bsp_x86_64::cmdline::KexecReason;
    use bsp_x86_64::kexec::ImageError;

    const MODULES: usize = 3;

    pub struct Prepared;

    pub fn kexec_image() -> Option<u16> {
        Some(2)
    }

    pub fn prepare(
        module: u16,
        _generation: u32,
        _reason: KexecReason,
    ) -> Result<Prepared, Refusal> {
        if usize::from(module) >= MODULES {
            return Err(Refusal::NoModule {
                index: module,
                count: MODULES,
            });
        }
        Err(Refusal::Image(ImageError::NotElf))
    }

    pub fn execute(_prepared: Prepared) -> ! {
        unreachable!("the host stand-in prepares no hand-off")
    }
}

/// What the tests of the safe core share: a booted thread table and the server side of it.
#[cfg(test)]
pub mod kit {
    pub use super::console::take as output;
    pub use super::loader::{ServerEnds, server_ends};
    use crate::thread::{ThreadId, Threads};
    use bsp_x86_64::frame::{CsQword, Frame, SsQword};
    use bsp_x86_64::gdt;
    use ipc::{NucleusMessage, ServerMessage};

    /// fred-server's slot (no fault handler; handles pv-server's faults).
    pub fn fred() -> ThreadId {
        Threads::new().ids().next().unwrap()
    }

    /// pv-server's slot.
    pub fn pv() -> ThreadId {
        Threads::new().ids().nth(1).unwrap()
    }

    /// Both boot threads started from stand-in images, the boot lines taken.
    pub fn booted() -> Threads {
        super::loader::refuse(false);
        let mut t = Threads::new();
        for id in t.server_ids() {
            assert!(crate::lifecycle::start(&mut t, id, Some(0..4096)));
        }
        output();
        t
    }

    /// The next message in a thread's event ring, as the thread would decode it.
    pub fn recv(ends: &mut ServerEnds) -> Option<NucleusMessage> {
        ends.events
            .pop_with(ipc::codec::decode::<NucleusMessage>)
            .expect("event ring intact")
            .map(|decoded| decoded.expect("decodable message"))
    }

    /// Everything in a thread's event ring.
    pub fn recv_all(ends: &mut ServerEnds) -> Vec<NucleusMessage> {
        core::iter::from_fn(|| recv(ends)).collect()
    }

    /// Queues `message` on a thread's reply ring.
    pub fn send(ends: &mut ServerEnds, message: &ServerMessage) {
        ends.replies
            .try_push_message(message)
            .expect("reply ring has room");
    }

    /// A Ring3 frame at `rip`, as an event from a thread leaves it.
    pub fn user_frame(rip: u64) -> Frame {
        let mut frame = Frame::ZERO;
        frame.ret.rip = rip;
        frame.ret.cs = CsQword::from_raw(u64::from(gdt::USER_CS64.raw()));
        // As a 64-bit server's events leave it (FRED's bit 57; the IDT stubs set it too).
        frame.ret.ss = SsQword::from_raw(u64::from(gdt::USER_DS.raw())).with_64bit(true);
        frame
    }
}
