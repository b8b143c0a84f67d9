//! rt: the Ring3 server runtime — entry, syscalls, console, rings, panics (architecture.md §6).
//!
//! A server is a static `ET_EXEC` linked at `layout::SERVER_LINK_BASE` (see `server.ld`
//! beside this file). The nucleus enters it at `_start` with `rdi = layout::START_INFO` and
//! `rsp = layout::STACK_TOP`; [`declare_server!`](crate::declare_server) emits that `_start`
//! and the panic handler *in the server crate*, so nothing here defines a global symbol or a
//! lang item: a build that links `ipc` with this feature into the nucleus by accident gets
//! unused code, not a second panic handler.
//!
//! [`start`] checks the StartInfo page, attaches the two rings (a [`Consumer`] on the event
//! ring, a [`Producer`] on the reply ring) and hands the server a [`Server`]: the only way to
//! reach the rings, created at most once per process, so each ring has exactly one attached
//! side in this address space, as `ring::attach` requires.
//!
//! This is the one place servers' `unsafe` lives: the `syscall` instruction ([`sys`]), the
//! instructions of [`cpu`], and the two fixed pages (StartInfo, rings) the nucleus maps.

pub mod console;
pub mod cpu;
pub mod hostile;
pub mod sys;
pub mod testopts;
pub mod trace;

use core::fmt;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::PROTOCOL_VERSION;
pub use crate::answer::Answer;
use crate::codec::{DecodeError, HotRecord, SendError};
use crate::layout::{
    self, EVENT_RING, REPLY_RING, RING_BYTES, START_INFO, START_INFO_MAGIC, START_INFO_VERSION,
    StartInfo,
};
use crate::message::{Hello, NucleusMessage, SERVER_NAME_MAX, ServerMessage, ServerName};
use crate::ring::{AttachError, Consumer, Producer, PushError};
use crate::syscall::RegisterReply;
use console::Console;

pub use sys::{RingId, SysError};

/// What [`Server::serve_with`] hands the messages to ([`Server::serve`] takes a closure
/// `FnMut(&NucleusMessage, &mut Console) -> impl Answer` instead: no quick path).
pub trait Handler {
    type Answer: Answer;

    /// The answer to one of the event path's messages, read in place from its ring record
    /// (its fields at fixed offsets, nothing decoded), if a few fields are enough; `None`
    /// hands the message to [`Handler::handle`], decoded. A quick answer prints nothing.
    /// The default: `None`.
    #[inline(always)]
    fn quick(&mut self, _record: &HotRecord<'_>) -> Option<Self::Answer> {
        None
    }

    /// The answer to `message`; lines go to `console`.
    fn handle(&mut self, message: &NucleusMessage, console: &mut Console) -> Self::Answer;
}

/// A closure as a [`Handler`] (a struct, not a blanket impl: closures passed straight to
/// [`Server::serve`] get their signature from its bound).
struct Plain<F>(F);

impl<F, A> Handler for Plain<F>
where
    F: FnMut(&NucleusMessage, &mut Console) -> A,
    A: Answer,
{
    type Answer = A;

    #[inline(always)]
    fn handle(&mut self, message: &NucleusMessage, console: &mut Console) -> A {
        (self.0)(message, console)
    }
}

/// Exit codes a server reports through `exit` (the nucleus prints them).
pub mod exit_code {
    /// The server finished on purpose.
    pub const SUCCESS: u64 = 0;
    /// The StartInfo page is missing, of another layout version, or inconsistent.
    pub const BAD_START_INFO: u64 = 1;
    /// A ring region could not be attached (misaligned, too small, corrupt indices).
    pub const BAD_RING: u64 = 2;
    /// `Hello` could not be sent.
    pub const NO_HELLO: u64 = 3;
    /// The server panicked.
    pub const PANIC: u64 = 101;
}

/// Set once [`start`] has validated the StartInfo page; read by [`name`] for console lines.
static START_INFO_PAGE: AtomicPtr<StartInfo> = AtomicPtr::new(core::ptr::null_mut());
/// [`start`] ran: the rings are attached (at most once per process).
static STARTED: AtomicBool = AtomicBool::new(false);

/// The validated StartInfo page, once [`start`] has checked it.
pub fn start_info() -> Option<&'static StartInfo> {
    let page = START_INFO_PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return None;
    }
    // SAFETY: only `start` stores a non-null value: `layout::START_INFO`, after checking the
    // magic and version there. The nucleus maps that page read-only for the whole life of the
    // server and never changes it, so a shared `'static` reference is valid.
    Some(unsafe { &*page })
}

/// The server's name from StartInfo (`server` before [`start`] or if it is not UTF-8).
pub fn name() -> &'static str {
    start_info()
        .and_then(|info| core::str::from_utf8(info.name()).ok())
        .unwrap_or("server")
}

/// Why the StartInfo page or the rings cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// `_start` was not given `layout::START_INFO` in `rdi`.
    EntryArgument {
        rdi: u64,
    },
    BadMagic {
        found: u64,
    },
    BadVersion {
        found: u32,
    },
    /// The ring addresses or size in StartInfo differ from the fixed layout.
    RingLayout {
        event_ring: u64,
        reply_ring: u64,
        ring_bytes: u64,
    },
    EventRing(AttachError),
    ReplyRing(AttachError),
    /// [`start`] was called a second time.
    AlreadyStarted,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EntryArgument { rdi } => {
                write!(
                    f,
                    "entered with rdi {rdi:#x}, expected StartInfo at {START_INFO:#x}"
                )
            }
            Self::BadMagic { found } => write!(f, "StartInfo magic {found:#x} is wrong"),
            Self::BadVersion { found } => {
                write!(
                    f,
                    "StartInfo version {found}, expected {START_INFO_VERSION}"
                )
            }
            Self::RingLayout {
                event_ring,
                reply_ring,
                ring_bytes,
            } => write!(
                f,
                "StartInfo rings at {event_ring:#x}/{reply_ring:#x} ({ring_bytes} bytes) \
                 differ from the layout"
            ),
            Self::EventRing(e) => write!(f, "event ring: {e}"),
            Self::ReplyRing(e) => write!(f, "reply ring: {e}"),
            Self::AlreadyStarted => f.write_str("the runtime was started twice"),
        }
    }
}

/// The running server: its StartInfo and both ends of its rings.
pub struct Server {
    info: &'static StartInfo,
    events: Consumer<'static>,
    replies: Producer<'static>,
    /// The newest answer of the serve loop, if it fits in registers: handed over with the
    /// next wait (`Syscall::ReplyWait`), or pushed before anything sent after it.
    held: Option<RegisterReply>,
    bad_messages: u32,
}

/// How often [`Server::send`] notifies, yields and retries while the reply ring is full.
const SEND_RETRIES: u32 = 64;

impl Server {
    pub fn info(&self) -> &'static StartInfo {
        self.info
    }

    /// The name this server was started as (its module string).
    pub fn name(&self) -> &'static str {
        core::str::from_utf8(self.info.name()).unwrap_or("server")
    }

    /// How many times the nucleus restarted this server (0 on the first start).
    pub fn generation(&self) -> u32 {
        self.info.generation
    }

    /// Sends `Hello` with this server's name and protocol version.
    pub fn hello(&mut self) -> Result<(), SendError> {
        // Names longer than the protocol allows are cut (at a character boundary).
        let full = self.name();
        let mut end = full.len().min(SERVER_NAME_MAX);
        while !full.is_char_boundary(end) {
            end -= 1;
        }
        let Ok(name) = ServerName::new(&full[..end]) else {
            return Err(SendError::Encode(crate::EncodeError::TooLarge {
                limit: SERVER_NAME_MAX,
            }));
        };
        self.send(&ServerMessage::Hello(Hello {
            name,
            protocol: PROTOCOL_VERSION,
        }))
    }

    /// Pushes `message` on the reply ring and notifies the nucleus. A full ring is retried
    /// (notify, yield) a bounded number of times before the error is returned.
    pub fn send(&mut self, message: &ServerMessage) -> Result<(), SendError> {
        self.push_held();
        queue_on(&mut self.replies, message)?;
        // A failed notify leaves the message in the ring; the nucleus finds it on its next
        // look, so there is nothing better to do than carry on.
        let _ = sys::ring_notify(RingId::Reply);
        Ok(())
    }

    /// Queues `message` without notifying: the nucleus takes it at this server's next
    /// [`Server::wait`] (or notify). Cheaper than [`Server::send`] for answers given just
    /// before sleeping; a full ring is flushed with a notify and retried like `send`.
    pub fn queue(&mut self, message: &ServerMessage) -> Result<(), SendError> {
        self.push_held();
        queue_on(&mut self.replies, message)
    }

    /// The held answer goes on the ring after all (something else is sent after it, or the
    /// loop notifies instead of waiting).
    #[inline]
    fn push_held(&mut self) {
        if let Some(held) = self.held.take() {
            queue_answer(&mut self.replies, &held);
        }
    }

    /// The next decodable message from the nucleus, `None` when the ring is empty. Records
    /// that do not decode are consumed, counted and reported; a corrupt ring is reported
    /// and reads as empty (it stays corrupt until the nucleus re-initialises it).
    pub fn recv(&mut self) -> Option<NucleusMessage> {
        self.recv_with(|message| message.clone())
    }

    /// [`Server::recv`] handing the message to `f` by reference, where it was decoded: a
    /// `NucleusMessage` is ~180 bytes, and moving it out by value cost copies of it on every
    /// event. `None` when the ring is empty.
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnMut(&NucleusMessage) -> R) -> Option<R> {
        recv_from(&mut self.events, &mut self.bad_messages, f)
    }

    /// Hands the nucleus everything [`Server::queue`]d (and the serve loop's last answer,
    /// in registers), then sleeps until it published events since the last wait.
    #[inline(always)]
    pub fn wait(&mut self) {
        let waited = match self.held.take() {
            Some(reply) => sys::reply_wait(reply).map_err(|error| (error, Some(reply))),
            None => sys::ring_wait(RingId::Event).map_err(|error| (error, None)),
        };
        if let Err((error, reply)) = waited {
            self.wait_failed(error, reply);
        }
    }

    /// A wait the nucleus refused: said once per failure; an answer it did not take in
    /// registers goes on the ring (a refused `ReplyWait` takes nothing).
    #[cold]
    #[inline(never)]
    fn wait_failed(&mut self, error: SysError, reply: Option<RegisterReply>) {
        crate::println!("ring_wait failed: {error}");
        if let Some(reply) = reply {
            queue_answer(&mut self.replies, &reply);
            let _ = sys::ring_notify(RingId::Reply);
        }
        sys::yield_now();
    }

    /// Records received that did not decode, or reads of a corrupt ring.
    pub fn bad_messages(&self) -> u32 {
        self.bad_messages
    }

    /// The server main loop: sleeps until the nucleus publishes events, hands each message
    /// to `handle` (by reference, where it was decoded) with a console for the lines it
    /// prints, and queues the [`Answer`] it gives ([`Server::serve_with`] of a closure).
    pub fn serve<A: Answer>(self, handle: impl FnMut(&NucleusMessage, &mut Console) -> A) -> ! {
        self.serve_with(Plain(handle))
    }

    /// The server main loop: sleeps until the nucleus publishes events, hands each message
    /// to `handler` ([`Handler::quick`] on the record in place if it is an event, else
    /// [`Handler::handle`] by reference where it was decoded, with a console for the lines
    /// it prints), and queues the [`Answer`] it gives, read where it was built (the next
    /// [`Server::wait`] hands the answers over: one syscall to answer and sleep). A line
    /// left unfinished is flushed before the answer is queued, so a report's lines come out
    /// before the nucleus acts on the answer.
    pub fn serve_with(mut self, mut handler: impl Handler) -> ! {
        let mut console = Console::new();
        loop {
            self.wait();
            while self.answer_next(&mut handler, &mut console).is_some() {}
        }
    }

    /// Hands the next message received to `handler` and queues its answer: `None` when the
    /// ring is empty, else whether an answer was queued. Answered inside the receive, where
    /// the record was copied out (and the message decoded, if it is).
    #[inline(always)]
    fn answer_next(&mut self, handler: &mut impl Handler, console: &mut Console) -> Option<bool> {
        let (replies, held) = (&mut self.replies, &mut self.held);
        let record = |record: &[u8]| {
            if let Some(hot) = HotRecord::new(record)
                && let Some(answer) = handler.quick(&hot)
            {
                return Ok(hold_or_queue(replies, held, &answer));
            }
            crate::codec::decode_with(record, |message| {
                let answer = handler.handle(message, console);
                console.finish();
                hold_or_queue(replies, held, &answer)
            })
        };
        recv_record(&mut self.events, &mut self.bad_messages, record)
    }

    /// [`Server::serve`] for a server with deadlines of its own (pv-server's guest timers):
    /// before each sleep `tick` runs and may queue answers through the sender it gets; while
    /// it returns true (a deadline is pending) the loop yields instead of sleeping, so it
    /// runs again soon without any message arriving (queued answers are handed over with a
    /// notify first, as a wait would).
    pub fn serve_ticking<A: Answer>(
        self,
        handle: impl FnMut(&NucleusMessage, &mut Console) -> A,
        tick: impl FnMut(&mut dyn FnMut(ServerMessage)) -> bool,
    ) -> ! {
        self.serve_ticking_with(Plain(handle), tick)
    }

    /// [`Server::serve_ticking`] with a [`Handler`] (as [`Server::serve_with`]).
    pub fn serve_ticking_with(
        mut self,
        mut handler: impl Handler,
        mut tick: impl FnMut(&mut dyn FnMut(ServerMessage)) -> bool,
    ) -> ! {
        let mut console = Console::new();
        // Answers queued since the nucleus last took them (a wait or a notify hands them over).
        let mut queued = false;
        loop {
            let waiting = tick(&mut |answer| {
                queued = true;
                if let Err(error) = self.queue(&answer) {
                    crate::println!("reply not sent: {error}");
                }
            });
            if waiting {
                self.push_held();
                if core::mem::take(&mut queued) {
                    let _ = sys::ring_notify(RingId::Reply);
                }
                sys::yield_now();
            } else {
                queued = false;
                self.wait();
            }
            while let Some(answered) = self.answer_next(&mut handler, &mut console) {
                queued |= answered;
            }
        }
    }
}

/// `answer` held for the next wait if it fits in registers (the one held before goes on
/// the ring first: answers reach the nucleus in the order given), else queued after the
/// held one; whether it was an answer at all.
#[inline(always)]
fn hold_or_queue(
    replies: &mut Producer<'static>,
    held: &mut Option<RegisterReply>,
    answer: &impl Answer,
) -> bool {
    if let Some(reply) = answer.in_registers() {
        if let Some(earlier) = held.replace(reply) {
            queue_answer(replies, &earlier);
        }
        return true;
    }
    if let Some(earlier) = held.take() {
        queue_answer(replies, &earlier);
    }
    queue_answer(replies, answer)
}

/// Pushes `answer` on `replies`; whether it was an answer at all. The push that fits is
/// inline; a full ring or a failure goes to [`queue_retrying`].
#[inline(always)]
fn queue_answer(replies: &mut Producer<'static>, answer: &impl Answer) -> bool {
    match answer.try_push_on(replies) {
        None => false,
        Some(Ok(())) => true,
        Some(Err(error)) => {
            if let Err(error) = queue_retrying(replies, answer, error) {
                crate::println!("reply not sent: {error}");
            }
            true
        }
    }
}

/// Pushes `message` on `replies`; a full ring is flushed with a notify (and a yield) and
/// retried a bounded number of times before the error is returned.
fn queue_on(replies: &mut Producer<'static>, message: &ServerMessage) -> Result<(), SendError> {
    match message.try_push_on(replies) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(error)) => queue_retrying(replies, message, error),
    }
}

/// The retries of a push that failed with `error` (see [`queue_on`]).
#[cold]
#[inline(never)]
fn queue_retrying(
    replies: &mut Producer<'static>,
    answer: &impl Answer,
    mut error: SendError,
) -> Result<(), SendError> {
    let mut attempt = 0;
    while let SendError::Push(PushError::Full { .. }) = error
        && attempt < SEND_RETRIES
    {
        attempt += 1;
        let _ = sys::ring_notify(RingId::Reply);
        sys::yield_now();
        match answer.try_push_on(replies) {
            None | Some(Ok(())) => return Ok(()),
            Some(Err(again)) => error = again,
        }
    }
    Err(error)
}

/// The next decodable message on `events`, handed to `f` (see [`Server::recv`]); bad records
/// are counted in `bad_messages` and reported.
#[inline(always)]
fn recv_from<R>(
    events: &mut Consumer<'static>,
    bad_messages: &mut u32,
    mut f: impl FnMut(&NucleusMessage) -> R,
) -> Option<R> {
    recv_record(events, bad_messages, |record| {
        crate::codec::decode_with(record, &mut f)
    })
}

/// The next record on `events` that `f` accepts (its decoding is `f`'s), handed to `f`
/// where it was copied out; records `f` refuses are counted in `bad_messages` and reported.
#[inline(always)]
fn recv_record<R>(
    events: &mut Consumer<'static>,
    bad_messages: &mut u32,
    mut f: impl FnMut(&[u8]) -> Result<R, DecodeError>,
) -> Option<R> {
    loop {
        match events.pop_with(&mut f) {
            Ok(Some(Ok(result))) => return Some(result),
            Ok(Some(Err(error))) => bad_message(
                bad_messages,
                format_args!("dropped a bad message from the nucleus: {error}"),
            ),
            Ok(None) => return None,
            Err(error) => {
                bad_message(bad_messages, format_args!("event ring unusable: {error}"));
                return None;
            }
        }
    }
}

#[cold]
#[inline(never)]
fn bad_message(count: &mut u32, line: fmt::Arguments<'_>) {
    *count = count.wrapping_add(1);
    crate::println!("{line}");
}

/// Checks the StartInfo page at `rdi` and attaches the rings (at most once).
fn attach(rdi: u64) -> Result<Server, StartError> {
    if STARTED.swap(true, Ordering::AcqRel) {
        return Err(StartError::AlreadyStarted);
    }
    if rdi != START_INFO {
        return Err(StartError::EntryArgument { rdi });
    }
    let page = START_INFO as *mut StartInfo;
    // SAFETY: the nucleus maps the StartInfo page read-only at `layout::START_INFO` before it
    // enters `_start` and keeps it for the life of the server (the layout ABI); it is
    // 4 KiB-aligned and `StartInfo` fits in it (const-asserted in `layout`).
    let info: &'static StartInfo = unsafe { &*page };
    if info.magic != START_INFO_MAGIC {
        return Err(StartError::BadMagic { found: info.magic });
    }
    if info.version != START_INFO_VERSION {
        return Err(StartError::BadVersion {
            found: info.version,
        });
    }
    START_INFO_PAGE.store(page, Ordering::Release);
    if info.event_ring != EVENT_RING
        || info.reply_ring != REPLY_RING
        || info.ring_bytes != RING_BYTES
    {
        return Err(StartError::RingLayout {
            event_ring: info.event_ring,
            reply_ring: info.reply_ring,
            ring_bytes: info.ring_bytes,
        });
    }
    let len = layout::RING_BYTES as usize;
    // SAFETY: the nucleus maps `EVENT_RING` (one page, read-write, shared with it only) for
    // the life of the server; `STARTED` makes this the only `Consumer` in this address space;
    // both sides use `RING_BYTES` as the region length (the layout ABI).
    let events =
        unsafe { Consumer::attach(EVENT_RING as *mut u8, len) }.map_err(StartError::EventRing)?;
    // SAFETY: as above for `REPLY_RING`, and the only `Producer`.
    let replies =
        unsafe { Producer::attach(REPLY_RING as *mut u8, len) }.map_err(StartError::ReplyRing)?;
    Ok(Server {
        info,
        events,
        replies,
        held: None,
        bad_messages: 0,
    })
}

/// The Rust side of `_start` (see [`declare_server!`](crate::declare_server)): checks the
/// start state, then runs `main`. Never returns; a second call exits the server.
pub fn start(rdi: u64, main: fn(Server) -> !) -> ! {
    match attach(rdi) {
        Ok(server) => {
            trace::started(server.name(), server.generation());
            main(server)
        }
        Err(error) => {
            crate::println!("cannot start: {error}");
            let code = match error {
                StartError::EventRing(_) | StartError::ReplyRing(_) => exit_code::BAD_RING,
                _ => exit_code::BAD_START_INFO,
            };
            sys::exit(code)
        }
    }
}

/// The body of the server's `#[panic_handler]`: prints the message and exits.
pub fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => crate::println!(
            "panic at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        ),
        None => crate::println!("panic: {}", info.message()),
    }
    sys::exit(exit_code::PANIC)
}

/// Declares `$main: fn(ipc::rt::Server) -> !` as the server's entry: emits `_start` and the
/// panic handler in the calling crate.
///
/// `_start` contract: `rdi = layout::START_INFO`, `rsp = layout::STACK_TOP` (16-byte
/// aligned; realigned anyway), no return address. It clears `rbp` (end of the frame chain)
/// and calls [`start`] with the SysV alignment (`rsp + 8` a multiple of 16 in the callee).
#[macro_export]
macro_rules! declare_server {
    ($main:path) => {
        ::core::arch::global_asm!(
            ".pushsection .text._start, \"ax\"",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            "and rsp, -16",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            ".size _start, . - _start",
            ".popsection",
            entry = sym __fredvisor_server_entry,
        );

        extern "C" fn __fredvisor_server_entry(start_info: u64) -> ! {
            $crate::rt::start(start_info, $main)
        }

        #[panic_handler]
        fn __fredvisor_panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::rt::panic(info)
        }
    };
}
