//! The messages on the rings: what the nucleus tells a server and what a server answers.
//!
//! Each server has two rings (architecture.md §5): [`NucleusMessage`]s flow nucleus → server,
//! [`ServerMessage`]s flow server → nucleus. Both are closed enums, so adding a protocol (a
//! new server, the kexec hand-off, PV hypercalls) is adding a variant, and every `match` on the
//! other side has to decide what to do with it. Anything that asks the nucleus to *act* on a
//! thread carries the [`Token`] of the event it answers: the nucleus acts on a reply only if
//! the token is the one it is waiting for (style.md §2 item 11).
//!
//! Every field is a fixed-size value or a bounded `heapless` container, so every message fits
//! in [`crate::codec::MAX_MESSAGE`] bytes (checked by the tests with the largest values) and
//! decoding never allocates. Encoding and versioning are in [`crate::codec`].

use core::fmt;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

pub use crate::dump_parts::DumpPart;
use crate::event::Event;

/// Names the event a reply answers. The nucleus hands out a fresh token per forwarded event
/// (per server), so a late or duplicated reply cannot resume the wrong context.
///
/// On the wire (protocol 3) it is eight little-endian bytes, not a varint: the event path's
/// records then have one length each and are written and read at fixed offsets
/// (`ipc::hot_path`, through [`crate::codec::Message`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A tuple of eight `u8`s: postcard writes each as one raw byte, with no length.
        self.0.to_le_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(deserializer).map(|bytes| Self(u64::from_le_bytes(bytes)))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Nucleus → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NucleusMessage {
    /// An event the server owns; the thread or guest that caused it waits for a [`Reply`]
    /// carrying `token`.
    Event { token: Token, event: Event },
    /// One piece of a diagnostic dump the nucleus captured (for `fred-server` to render).
    DumpRecord(DumpRecord),
    /// A PV guest's hypercall (for `pv-server`); answered with a [`Reply`] whose `token`
    /// matches, usually `Return` setting `rax`.
    Hypercall(Hypercall),
    /// One part of a full [`crate::dump::RegisterDump`] (for `fred-server`): a faulting
    /// server's frame, sent just before the `Event` whose token it carries, or the nucleus'
    /// own `#DF` capture. Reassembled with [`crate::dump_parts::DumpAssembler`].
    Dump(DumpPart),
    /// A server (re)started (for `fred-server`, which names owners in its reports). `owner`
    /// is the value `Event::owner` carries for this server; it stays the same across restarts.
    ServerStarted {
        owner: u32,
        name: ServerName,
        generation: u32,
    },
    /// Ring round-trip probe (benchmarks, liveness): answered with `Reply::Resume { token }`.
    Ping { token: Token },
    /// A PV guest vCPU's event (for `pv-server`) with its general-purpose registers: what a
    /// bounce frame saves (rcx, r11) and emulation reads, without the register dump that
    /// would cost more than the bounce. Answered like an `Event`, or with
    /// [`Reply::SendDump`] when pv-server ends the guest and prints its dump.
    GuestEvent {
        token: Token,
        event: Event,
        regs: GuestRegisters,
    },
    /// Every server said hello (`nucleus: ready`; for `fred-server`, whose kexec policy
    /// decides from it whether to ask for a hand-off).
    Ready(SystemReady),
    /// The nucleus refused a [`ServerMessage::Kexec`] and printed why; the system goes on.
    KexecRefused(KexecRequest),
}

/// What fred-server's kexec policy needs to know once the system is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemReady {
    /// This nucleus' kexec generation (1 when the boot loader started it).
    pub generation: u32,
    /// The boot module holding the kexec image (`kexec-image`), if there is one.
    pub kexec_image: Option<u16>,
    /// `kexec=reboot-into`: hand over once ready (tests).
    pub reboot_into: bool,
}

/// A guest vCPU's general-purpose registers at an event, in [`Gpr`] order (rax, rbx, rcx,
/// rdx, rsi, rdi, rbp, r8-r15). On the wire one fixed-layout byte string (little-endian
/// words), as [`Event`] is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters(pub [u64; GPR_COUNT]);

impl GuestRegisters {
    /// Bytes of the wire form.
    pub const WIRE_BYTES: usize = GPR_COUNT * 8;

    pub const fn get(&self, gpr: Gpr) -> u64 {
        self.0[gpr as usize]
    }
}

impl Serialize for GuestRegisters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut w = [0u8; Self::WIRE_BYTES];
        for (slot, word) in w.chunks_exact_mut(8).zip(self.0) {
            slot.copy_from_slice(&word.to_le_bytes());
        }
        serializer.serialize_bytes(&w)
    }
}

impl<'de> Deserialize<'de> for GuestRegisters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WireVisitor;
        impl<'de> serde::de::Visitor<'de> for WireVisitor {
            type Value = GuestRegisters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} register bytes", GuestRegisters::WIRE_BYTES)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                if bytes.len() != GuestRegisters::WIRE_BYTES {
                    return Err(E::invalid_length(bytes.len(), &self));
                }
                let mut regs = [0u64; GPR_COUNT];
                for (word, chunk) in regs.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *word = u64::from_le_bytes(b);
                }
                Ok(GuestRegisters(regs))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<Self::Value, E> {
                self.visit_bytes(bytes)
            }
        }
        deserializer.deserialize_bytes(WireVisitor)
    }
}

/// Server → nucleus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The first message a server sends; the nucleus prints `nucleus: ready` once every
    /// server said it.
    Hello(Hello),
    /// The decision about an event or hypercall.
    Reply(Reply),
    /// A line for the console (the server has no console of its own).
    Log(LogLine),
    /// Ask the nucleus to hand the machine to a new image (architecture.md §7).
    Kexec(KexecRequest),
}

/// A server introduces itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The server's name, as in its boot module string (`fred-server`).
    pub name: ServerName,
    /// The [`crate::PROTOCOL_VERSION`] the server was built with.
    pub protocol: u8,
}

/// Longest server name, in bytes.
pub const SERVER_NAME_MAX: usize = 24;

/// A server's name: at most [`SERVER_NAME_MAX`] bytes of UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerName(String<SERVER_NAME_MAX>);

/// A name longer than [`SERVER_NAME_MAX`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameTooLong {
    pub len: usize,
}

impl fmt::Display for NameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server name of {} bytes exceeds {SERVER_NAME_MAX}",
            self.len
        )
    }
}

impl ServerName {
    pub fn new(name: &str) -> Result<Self, NameTooLong> {
        let mut text = String::new();
        text.push_str(name)
            .map_err(|_| NameTooLong { len: name.len() })?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do with the context that is waiting for `token`.
// `ResumeWith` is ~270 bytes and the rest are 16; boxing needs an allocator, which neither the
// nucleus nor the servers have, and a reply lives on the stack only while it is handled.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Return to the interrupted context unchanged.
    Resume { token: Token },
    /// Return with new register values (emulated instruction, bounced trap, hypercall result).
    ResumeWith {
        token: Token,
        changes: ResumeChanges,
    },
    /// Kill the thread or guest that caused the event.
    Kill { token: Token },
    /// Kill it and start it again from its image (a crashed server).
    Restart { token: Token },
    /// Resume after the trapping instruction with `rax = rax` and nothing else changed (a
    /// hypercall's result; the server does not know the guest's `rip`, so `ResumeWith` cannot
    /// express this). Both fields travel as 8 fixed bytes ([`fixed`]): the PV path's hot reply.
    Return {
        #[serde(with = "fixed::token")]
        token: Token,
        #[serde(with = "fixed::word")]
        rax: u64,
    },
    /// Resume a PV guest vCPU in a new context (a bounced trap, the `iret` hypercall): the
    /// nucleus checks it with the guest rules (`bsp_x86_64::guest_return`) and, when `mode`
    /// differs, toggles the vCPU between its kernel and user page tables and GS bases.
    /// Refused for anything that is not a guest vCPU.
    GuestResume { token: Token, resume: GuestResume },
    /// Send the event of `token` again, as an `Event` after its register dump: pv-server
    /// ends a guest whose `GuestEvent` it cannot resume and prints the dump with the reason.
    /// The guest keeps waiting.
    SendDump { token: Token },
}

/// Fields that travel as 8 little-endian bytes instead of a varint (postcard writes a
/// `[u8; 8]` as it is): on the hot hypercall reply, where values are large (a version, an
/// errno's two's complement) and a varint costs a loop each way.
pub mod fixed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A `u64` field.
    pub mod word {
        use super::*;

        pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
            value.to_le_bytes().serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            <[u8; 8]>::deserialize(d).map(u64::from_le_bytes)
        }
    }

    /// A [`Token`](super::Token) field.
    pub mod token {
        use super::*;
        use crate::message::Token;

        pub fn serialize<S: Serializer>(token: &Token, s: S) -> Result<S::Ok, S::Error> {
            super::word::serialize(&token.0, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
            super::word::deserialize(d).map(Token)
        }
    }
}

impl Reply {
    /// The event this reply answers.
    pub const fn token(&self) -> Token {
        match *self {
            Self::Resume { token }
            | Self::ResumeWith { token, .. }
            | Self::Kill { token }
            | Self::Restart { token }
            | Self::Return { token, .. }
            | Self::GuestResume { token, .. }
            | Self::SendDump { token } => token,
        }
    }

    /// Whether this reply answers the event the nucleus is waiting on.
    pub fn answers(&self, waiting: Token) -> bool {
        self.token() == waiting
    }
}

/// The return state a [`Reply::ResumeWith`] installs. The nucleus still checks it before
/// use (canonical `rip`/`rsp`, only the user-changeable RFLAGS bits): it is an allegation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeChanges {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    /// General-purpose registers to overwrite; the rest keep their values.
    pub gprs: Vec<GprWrite, GPR_COUNT>,
}

/// Which half of a PV64 guest a vCPU runs; both run at CPL 3 (Xen's `TF_kernel_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestMode {
    #[default]
    Kernel,
    User,
}

/// The context a [`Reply::GuestResume`] proposes for a guest vCPU: an allegation the nucleus
/// checks (selectors RPL 3 and the guest's, canonical `rip`, RFLAGS corrected; a switch to
/// user mode needs a user page table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestResume {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    pub mode: GuestMode,
    /// General-purpose registers to overwrite; the rest keep their values.
    pub gprs: Vec<GprWrite, GPR_COUNT>,
}

/// The general-purpose registers a reply may change (RSP is part of the return state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Gpr {
    Rax,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rbp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

/// Number of [`Gpr`]s.
pub const GPR_COUNT: usize = 15;

/// One register write of a [`ResumeChanges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GprWrite {
    pub gpr: Gpr,
    pub value: u64,
}

/// Why the nucleus captured a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DumpReason {
    DoubleFault,
    MachineCheck,
    Nmi,
    /// A server faulted; the dump is its frame.
    ServerCrash,
}

/// Most 64-bit words in one [`DumpRecord`].
pub const DUMP_WORDS_MAX: usize = 16;

/// One piece of a dump: `part` of `parts`, each a run of raw words from the capture area
/// (registers in frame order first). The server reassembles and renders them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRecord {
    pub cpu: u16,
    pub reason: DumpReason,
    pub part: u8,
    pub parts: u8,
    pub words: Vec<u64, DUMP_WORDS_MAX>,
}

/// A PV64 guest's hypercall, as trapped by the nucleus.
///
/// On the wire one fixed-layout byte string ([`Hypercall::WIRE_BYTES`] bytes, little endian,
/// see [`Hypercall::to_wire`]) inside the postcard record, as [`Event`] is: it is the PV
/// path's hottest message, and a dozen varints cost ~270 instructions to write and ~330 to
/// read, the copy of 96 bytes a tenth of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypercall {
    pub token: Token,
    /// The calling domain (`domain_create`'s number).
    pub domain: u16,
    /// Guest-relative vCPU number.
    pub vcpu: u16,
    /// Hypercall number (guest `rax`).
    pub number: u64,
    /// Arguments in ABI order (guest `rdi, rsi, rdx, r10, r8, r9`).
    pub args: [u64; 6],
    /// Where the guest made it (after its `syscall`), for a continuation's `rip -= 2`.
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
}

impl Hypercall {
    /// Bytes of the wire form.
    pub const WIRE_BYTES: usize = 96;

    /// The fixed little-endian layout: token u64, domain u16, vcpu u16, four zero bytes,
    /// number, the six arguments, rip, rsp, rflags (u64 each).
    pub fn to_wire(&self) -> [u8; Self::WIRE_BYTES] {
        let mut w = [0u8; Self::WIRE_BYTES];
        self.write_wire(|at, bytes| w[at..at + bytes.len()].copy_from_slice(bytes));
        w
    }

    /// The wire form as `put(offset, bytes)` calls of whole words that cover every one of
    /// its bytes once, in place wherever `put` writes (a ring slot: the nucleus' hypercall
    /// fast path, `ipc::codec::push_hypercall_record`).
    #[inline(always)]
    pub fn write_wire(&self, mut put: impl FnMut(usize, &[u8])) {
        put(0, &self.token.0.to_le_bytes());
        // domain, vcpu and the four zero bytes of padding as one word.
        let ids = u64::from(self.domain) | u64::from(self.vcpu) << 16;
        put(8, &ids.to_le_bytes());
        put(16, &self.number.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            put(24 + 8 * i, &arg.to_le_bytes());
        }
        put(72, &self.rip.to_le_bytes());
        put(80, &self.rsp.to_le_bytes());
        put(88, &self.rflags.to_le_bytes());
    }

    /// Parses the wire form: every byte string of the right length is a hypercall (its
    /// values are allegations the receiver judges; the padding is not looked at).
    #[inline(always)]
    pub fn from_wire(w: &[u8]) -> Option<Self> {
        Some(HypercallWire(w.try_into().ok()?).call())
    }
}

/// A hypercall's wire form read in place ([`Hypercall::to_wire`] has the layout): each
/// accessor reads its word at its fixed offset, so a server that needs the number and two
/// arguments reads those, not the twelve fields of a [`Hypercall`]. Every 96-byte string is
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallWire<'a>(pub &'a [u8; Hypercall::WIRE_BYTES]);

impl HypercallWire<'_> {
    #[inline(always)]
    fn u64_at(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[i..i + 8]);
        u64::from_le_bytes(b)
    }

    #[inline(always)]
    pub fn token(&self) -> Token {
        Token(self.u64_at(0))
    }

    #[inline(always)]
    pub fn domain(&self) -> u16 {
        u16::from_le_bytes([self.0[8], self.0[9]])
    }

    #[inline(always)]
    pub fn vcpu(&self) -> u16 {
        u16::from_le_bytes([self.0[10], self.0[11]])
    }

    #[inline(always)]
    pub fn number(&self) -> u64 {
        self.u64_at(16)
    }

    /// Argument `i` (0..6, ABI order; [`Hypercall::args`]); 0 for any other `i`.
    #[inline(always)]
    pub fn arg(&self, i: usize) -> u64 {
        if i < 6 { self.u64_at(24 + 8 * i) } else { 0 }
    }

    #[inline(always)]
    pub fn rip(&self) -> u64 {
        self.u64_at(72)
    }

    #[inline(always)]
    pub fn rsp(&self) -> u64 {
        self.u64_at(80)
    }

    #[inline(always)]
    pub fn rflags(&self) -> u64 {
        self.u64_at(88)
    }

    /// The whole hypercall.
    #[inline(always)]
    pub fn call(&self) -> Hypercall {
        Hypercall {
            token: self.token(),
            domain: self.domain(),
            vcpu: self.vcpu(),
            number: self.number(),
            args: [
                self.u64_at(24),
                self.u64_at(32),
                self.u64_at(40),
                self.u64_at(48),
                self.u64_at(56),
                self.u64_at(64),
            ],
            rip: self.rip(),
            rsp: self.rsp(),
            rflags: self.rflags(),
        }
    }
}

impl Serialize for Hypercall {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for Hypercall {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WireVisitor;
        impl<'de> serde::de::Visitor<'de> for WireVisitor {
            type Value = Hypercall;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} hypercall bytes", Hypercall::WIRE_BYTES)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Hypercall, E> {
                Hypercall::from_wire(bytes).ok_or_else(|| E::invalid_length(bytes.len(), &self))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<Hypercall, E> {
                self.visit_bytes(bytes)
            }
        }
        deserializer.deserialize_bytes(WireVisitor)
    }
}

/// How loud a [`LogLine`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// Longest log line, in bytes.
pub const LOG_TEXT_MAX: usize = 160;

/// A console line from a server; the nucleus prefixes the server's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String<LOG_TEXT_MAX>,
}

/// Ask for a kexec into the boot module `module` (another nucleus build, or this one again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KexecRequest {
    /// Index of the boot module holding the new image.
    pub module: u16,
    /// Generation the new image should report (the test boots "generation 2").
    pub generation: u32,
}
