//! Ring3 servers: loading, the scheduler, syscalls and event forwarding (issue 7).
//!
//! Each server is one thread in its own address space, started from the boot module whose
//! string names it. The nucleus keeps mechanism only: it validates and maps the ELF, hands
//! the server two `ipc` rings, switches between servers on the timer tick and on blocking
//! syscalls, and forwards every event of a Ring3 thread — faults, `int3`, a hung thread
//! caught by the tick — to `fred-server`, whose `Reply` decides (resume, kill, restart).
//! Only when `fred-server` itself is the one in trouble does the nucleus decide: it prints
//! the dump and restarts it, a bounded number of times.
//!
//! Context switches copy frames: one kernel stack per CPU, so a server's whole kernel-side
//! state is the `Frame` of its last event, and switching means saving the live frame into
//! the old server and loading the new server's frame in its place before the stub returns.
use crate::addrspace::{AddressSpace, BadPointer};
use crate::bootinfo::{BootSummary, Escaped};
use crate::memory::{self, MemoryError};
use crate::racy::RacyCell;
use bsp_x86_64::cmdline::Options;
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::gdt;
use bsp_x86_64::paging::PageTableFlags as F;
use bsp_x86_64::server_image::{self, ServerImage};
use core::fmt;
use ipc::dump::Delivery;
use ipc::layout::{self, StartInfo};
use ipc::message::{Reply, ServerMessage};
use ipc::ring::{Consumer, Producer};
use ipc::syscall::{Syscall, SyscallError, to_rax};
use ipc::{Event, EventKind, NucleusMessage, Token};

/// Module strings that name servers, in start order.
pub const SERVER_NAMES: [&str; 2] = ["fred-server", "pv-server"];
const FRED_SERVER: usize = 0;
/// How often the nucleus restarts a crashed fred-server before giving up on it.
const FRED_SERVER_RESTARTS: u32 = 3;
/// A server running this many ticks without a syscall is considered hung (2 s).
const HUNG_TICKS: u64 = 2 * crate::timer::HZ as u64;
/// Longest console write.
const CONSOLE_WRITE_MAX: u64 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started: missing module, rejected image, or killed.
    Absent,
    Ready,
    /// Waiting in `RingWait` for the nucleus to push to its event ring.
    WaitingForEvents,
    /// Waiting for fred-server's reply about its event `Token`.
    WaitingForReply(Token),
}

struct Server {
    name: &'static str,
    module: Option<core::ops::Range<u64>>,
    state: State,
    space: Option<AddressSpace>,
    frame: Frame,
    events: Option<Producer<'static>>,
    replies: Option<Consumer<'static>>,
    hello: bool,
    generation: u32,
    restarts: u32,
    /// Timer ticks that found this server running in Ring3 since its last syscall: the
    /// watchdog counts CPU time, not wall time, so a server that slept long is not hung.
    ticks_without_syscall: u64,
    /// The event fred-server has not answered yet (with its dump, if it has one): kept so a
    /// fred-server that dies before answering does not strand this server.
    pending: Option<(Token, Event)>,
    /// The register dump that went with `pending` (faults and hangs; not `int3`). Kept apart
    /// so the hot `int3` path never moves a dump-sized value.
    pending_dump: Option<ipc::dump::RegisterDump>,
}

impl Server {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            module: None,
            state: State::Absent,
            space: None,
            frame: zero_frame(),
            events: None,
            replies: None,
            hello: false,
            generation: 0,
            restarts: 0,
            ticks_without_syscall: 0,
            pending: None,
            pending_dump: None,
        }
    }

    fn runnable(&self) -> bool {
        self.state == State::Ready
    }
}

const fn zero_frame() -> Frame {
    // SAFETY: `Frame` is plain integers (repr(C) u64 newtypes); all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

struct Scheduler {
    servers: [Server; SERVER_NAMES.len()],
    /// The server whose context is live, `None` while the nucleus idles.
    current: Option<usize>,
    next_token: u64,
    ready_printed: bool,
    options: Option<Options>,
    /// CR3 currently loaded.
    loaded_root: u64,
}

static SCHED: RacyCell<Scheduler> = RacyCell::new(Scheduler {
    servers: [Server::new(SERVER_NAMES[0]), Server::new(SERVER_NAMES[1])],
    current: None,
    next_token: 1,
    ready_printed: false,
    options: None,
    loaded_root: 0,
});

/// The scheduler, for the module's entry points only: each takes it once and hands the one
/// `&mut Scheduler` down, so no two references to it are ever live together.
fn sched() -> &'static mut Scheduler {
    // SAFETY: only the `pub fn` entry points below call this, once each; they run on the
    // single CPU with interrupts off (dispatcher, or boot before interrupts are enabled) and
    // never nest (no entry point calls another), so the reference is unique while it lives.
    unsafe { &mut *SCHED.get() }
}

/// Why a server module was not started.
#[derive(Clone, Copy, Debug)]
enum LoadError {
    Image(server_image::ImageError),
    Memory(MemoryError),
    Ring,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(e) => write!(f, "{e}"),
            Self::Memory(e) => write!(f, "{e}"),
            Self::Ring => f.write_str("ring setup failed"),
        }
    }
}

impl From<MemoryError> for LoadError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

// ---- boot --------------------------------------------------------------------------------

/// Finds, validates and starts every server module. Returns how many were started.
pub fn start_all(boot: &BootSummary, options: &Options) -> usize {
    let s = sched();
    s.options = Some(*options);
    let mut started = 0;
    for (index, name) in SERVER_NAMES.into_iter().enumerate() {
        let Some(module) = boot
            .modules
            .iter()
            .find(|m| m.name.as_slice() == name.as_bytes())
        else {
            println!("server {name}: rejected: no boot module named {name}");
            continue;
        };
        s.servers[index].module = Some(module.range.clone());
        match load(s, index) {
            Ok(()) => started += 1,
            Err(e) => println!("server {name}: rejected: {e}"),
        }
    }
    started
}

/// The module's bytes, through the direct map (modules are reserved from the allocator).
fn module_bytes(range: &core::ops::Range<u64>) -> &'static [u8] {
    let len = (range.end - range.start) as usize;
    // SAFETY: GRUB placed the module there, the frame allocator never hands those frames
    // out, and the direct map covers all RAM; nobody writes module memory.
    unsafe { core::slice::from_raw_parts(memory::phys_to_virt(range.start) as *const u8, len) }
}

/// Builds a fresh address space for server `index` from its module and makes it runnable.
fn load(s: &mut Scheduler, index: usize) -> Result<(), LoadError> {
    let Some(range) = s.servers[index].module.clone() else {
        return Err(LoadError::Ring);
    };
    let bytes = module_bytes(&range);
    let image = server_image::validate(bytes).map_err(LoadError::Image)?;
    let mut space = AddressSpace::new()?;
    if let Err(e) = populate(s, &mut space, index, bytes, &image) {
        space.destroy();
        return Err(e);
    }
    let mut frame = zero_frame();
    frame.ret.rip = image.entry;
    frame.ret.cs = CsQword::from_raw(u64::from(gdt::USER_CS64.raw()));
    frame.ret.ss = SsQword::from_raw(u64::from(gdt::USER_DS.raw()));
    frame.ret.rsp = layout::STACK_TOP;
    frame.ret.rflags = RFLAGS_USER;
    frame.gprs.rdi = layout::START_INFO;
    let server = &mut s.servers[index];
    server.frame = frame;
    server.space = Some(space);
    server.state = State::Ready;
    server.hello = false;
    server.ticks_without_syscall = 0;
    println!(
        "server {}: loaded (slot {index}, entry {:#x}, {} bytes, {} segments, generation {})",
        server.name,
        image.entry,
        bytes.len(),
        image.segments.len(),
        server.generation
    );
    announce(s, index);
    Ok(())
}

/// IF set, everything else clear (IOPL 0: FRED's ERETU insists, and servers get no ports).
const RFLAGS_USER: u64 = 0x202;

fn populate(
    s: &mut Scheduler,
    space: &mut AddressSpace,
    index: usize,
    bytes: &[u8],
    image: &ServerImage,
) -> Result<(), LoadError> {
    for segment in image.segments.iter() {
        let mut flags = F::empty();
        if segment.flags.write {
            flags |= F::WRITABLE;
        }
        if !segment.flags.execute {
            flags |= F::NO_EXECUTE;
        }
        let start = segment.vaddr & !0xfff;
        let end = (segment.vaddr + segment.memsz + 0xfff) & !0xfff;
        let file =
            &bytes[segment.file_offset as usize..(segment.file_offset + segment.filesz) as usize];
        let mut page = start;
        while page < end {
            let frame = space.map_new(page, flags)?;
            // Bytes of the file image that fall into this page.
            let lo = page.max(segment.vaddr);
            let hi = (page + 4096).min(segment.vaddr + segment.filesz);
            if lo < hi {
                let src = &file[(lo - segment.vaddr) as usize..(hi - segment.vaddr) as usize];
                let dst = memory::phys_to_virt(frame.as_u64()) + (lo - page);
                // SAFETY: `dst..dst+len` lies inside the fresh frame (lo and hi are within
                // one page); the source is the validated module slice.
                unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
            }
            page += 4096;
        }
    }
    // Stack with an unmapped guard page below it.
    let mut page = layout::STACK_TOP - layout::STACK_BYTES;
    while page < layout::STACK_TOP {
        space.map_new(page, F::WRITABLE | F::NO_EXECUTE)?;
        page += 4096;
    }
    // Rings: zero-filled pages are empty rings; the nucleus attaches its ends.
    let event = space.map_new(layout::EVENT_RING, F::WRITABLE | F::NO_EXECUTE)?;
    let reply = space.map_new(layout::REPLY_RING, F::WRITABLE | F::NO_EXECUTE)?;
    let event_va = memory::phys_to_virt(event.as_u64()) as *mut u8;
    let reply_va = memory::phys_to_virt(reply.as_u64()) as *mut u8;
    // SAFETY: both pages were just allocated for this server and mapped once in its space;
    // the nucleus holds the only producer of `event` and the only consumer of `reply`. The
    // server may scribble on them: the ring checks every index it reads.
    unsafe {
        ipc::ring::init(event_va, layout::RING_BYTES as usize).map_err(|_| LoadError::Ring)?;
        ipc::ring::init(reply_va, layout::RING_BYTES as usize).map_err(|_| LoadError::Ring)?;
        let server = &mut s.servers[index];
        server.events = Some(
            Producer::attach(event_va, layout::RING_BYTES as usize).map_err(|_| LoadError::Ring)?,
        );
        server.replies = Some(
            Consumer::attach(reply_va, layout::RING_BYTES as usize).map_err(|_| LoadError::Ring)?,
        );
    }
    // Start page, read-only for the server.
    let start = space.map_new(layout::START_INFO, F::NO_EXECUTE)?;
    let server = &s.servers[index];
    let mut info = StartInfo {
        magic: layout::START_INFO_MAGIC,
        version: layout::START_INFO_VERSION,
        generation: server.generation,
        name: [0; 32],
        args: [0; 128],
        event_ring: layout::EVENT_RING,
        reply_ring: layout::REPLY_RING,
        ring_bytes: layout::RING_BYTES,
    };
    info.name[..server.name.len()].copy_from_slice(server.name.as_bytes());
    if let Some(args) = s
        .options
        .as_ref()
        .and_then(|o| o.server_args.get(server.name.as_bytes()))
    {
        let n = args.args().len().min(info.args.len());
        info.args[..n].copy_from_slice(&args.args()[..n]);
    }
    // SAFETY: the start page is a fresh frame of this space; StartInfo fits in a page.
    unsafe { core::ptr::write(memory::phys_to_virt(start.as_u64()) as *mut StartInfo, info) };
    Ok(())
}

/// Tells fred-server which owner number a (re)started server has, so its reports name it.
fn announce(s: &mut Scheduler, index: usize) {
    if s.servers[FRED_SERVER].state == State::Absent {
        return;
    }
    let targets: &[usize] = if index == FRED_SERVER {
        &[0, 1]
    } else {
        core::slice::from_ref(&index)
    };
    for &target in targets {
        let (state, server_name, generation) = {
            let server = &s.servers[target];
            (server.state, server.name, server.generation)
        };
        if state == State::Absent && target != index {
            continue;
        }
        let Ok(name) = ipc::message::ServerName::new(server_name) else {
            continue;
        };
        let message = NucleusMessage::ServerStarted {
            owner: target as u32,
            name,
            generation,
        };
        if let Err(e) = send(s, FRED_SERVER, &message) {
            println!("nucleus: cannot tell fred-server about {server_name}: {e}");
        }
    }
}

// ---- context switching --------------------------------------------------------------------

unsafe extern "C" {
    /// The exits of `bsp_x86_64::entry_stubs!`: in: RSP = &Frame; restore and return
    /// (IRETQ with SWAPGS for ring 3 / ERETU or ERETS).
    static idt_exit: u8;
    static fred_exit: u8;
}

core::arch::global_asm!(
    ".global nucleus_enter_frame",
    // In: RDI = &Frame, RSI = exit stub. Never returns here.
    "nucleus_enter_frame:",
    "mov rsp, rdi",
    "jmp rsi",
);

unsafe extern "C" {
    /// Leaves the nucleus into `frame` through the exit stub `exit`.
    ///
    /// # Safety
    /// `frame` must describe a context that is safe to run (a loaded server's, with its
    /// address space in CR3), and `exit` must be the exit stub of the active delivery.
    fn nucleus_enter_frame(frame: *const Frame, exit: u64) -> !;
}

/// Where the first server's frame waits for its first return to Ring3.
static FIRST_FRAME: RacyCell<Frame> = RacyCell::new(zero_frame());

/// Starts the first runnable server directly (no timer tick needed); returns only when no
/// server is runnable.
pub fn run_first() {
    let s = sched();
    let Some(next) = pick_next(s) else { return };
    // SAFETY: boot, single CPU, interrupts off: nothing else uses FIRST_FRAME.
    let frame = unsafe { &mut *FIRST_FRAME.get() };
    *frame = idle_frame();
    switch(s, frame, Some(next));
    let exit = if crate::fred::enabled() {
        core::ptr::addr_of!(fred_exit) as u64
    } else {
        core::ptr::addr_of!(idt_exit) as u64
    };
    // SAFETY: `switch` loaded the server's frame and CR3 and its user GS; the exit stub of
    // the active delivery restores the frame and enters Ring3 (SWAPGS+IRETQ or ERETU).
    unsafe { nucleus_enter_frame(frame, exit) }
}

unsafe extern "C" {
    /// `hlt` loop with interrupts on (`boot.rs`), where the CPU waits when no server runs.
    fn nucleus_idle() -> !;
}

static IDLE_STACK: RacyCell<[u64; 512]> = RacyCell::new([0; 512]);

fn idle_frame() -> Frame {
    let mut frame = zero_frame();
    frame.ret.rip = nucleus_idle as *const () as u64;
    frame.ret.cs = CsQword::from_raw(u64::from(gdt::KERNEL_CS.raw()));
    frame.ret.ss = SsQword::from_raw(u64::from(gdt::KERNEL_DS.raw()));
    frame.ret.rflags = RFLAGS_USER;
    frame.ret.rsp = (IDLE_STACK.get() as u64 + 512 * 8) & !0xf;
    frame
}

fn load_cr3(s: &mut Scheduler, root: u64) {
    if s.loaded_root != root {
        // SAFETY: `root` is the nucleus PML4 or a server PML4 sharing its upper half, so the
        // running code, stacks and data stay mapped.
        unsafe { bsp_x86_64::insn::write_cr3(root) };
        s.loaded_root = root;
    }
}

/// Saves the live frame into the current server and makes `next` (or idle) live.
fn switch(s: &mut Scheduler, frame: &mut Frame, next: Option<usize>) {
    if let Some(cur) = s.current
        && frame.ret.cs.selector().rpl() == 3
    {
        s.servers[cur].frame = *frame;
    }
    match next {
        Some(i) => {
            let server = &s.servers[i];
            // Straight into the live frame: one copy of the 192 bytes, not two.
            *frame = server.frame;
            // The saved SS qword carries the event bits of *that* event; ERETU would act on
            // its STI/SWEVENT/NMI bits (fred-facts.md §4.3), so only the selector survives.
            frame.ret.ss = SsQword::from_raw(frame.ret.ss.raw() & 0xffff);
            frame.ret.cs = CsQword::from_raw(frame.ret.cs.raw() & 0xffff);
            let root = server
                .space
                .as_ref()
                .map(|sp| sp.root().as_u64())
                .unwrap_or(memory::kernel_root().as_u64());
            if s.current != Some(i) {
                load_cr3(s, root);
                load_user_gs();
            }
        }
        None => {
            *frame = idle_frame();
            load_cr3(s, memory::kernel_root().as_u64());
        }
    }
    s.current = next;
}

/// Gives the next server a clean user GS: null selector, base 0 (servers have no TLS yet).
/// Under FRED this is LKGS plus IA32_KERNEL_GS_BASE, never SWAPGS (design note, "GS
/// handling"); ERETU swaps the base in.
fn load_user_gs() {
    let base = bsp_x86_64::msr::KernelGsBase::new(0).unwrap_or_else(|_| panic!("0 is canonical"));
    // SAFETY: ring 0 with interrupts off; LKGS is only used when FRED (and so LKGS, which the
    // policy requires) is enabled; the null selector is always loadable.
    unsafe { bsp_x86_64::fred::load_user_gs(crate::fred::enabled(), gdt::Selector::NULL, base) };
}

/// The next runnable server after the current one, round robin.
fn pick_next(s: &Scheduler) -> Option<usize> {
    let n = s.servers.len();
    let start = s.current.map_or(0, |c| c + 1);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| s.servers[i].runnable())
}

/// Switches to whatever should run now (the current server if it is still runnable and
/// nothing else is).
fn reschedule(s: &mut Scheduler, frame: &mut Frame) {
    let next = pick_next(s);
    if next != s.current || frame.ret.cs.selector().rpl() != 3 {
        switch(s, frame, next);
    }
}

/// Timer tick: preemption, and the hung-server watchdog.
pub fn on_tick(frame: &mut Frame, delivery: Delivery) {
    let s = sched();
    if let Some(cur) = s.current
        && frame.ret.cs.selector().rpl() == 3
    {
        let running = &mut s.servers[cur].ticks_without_syscall;
        *running += 1;
        if *running > HUNG_TICKS {
            *running = 0;
            println!(
                "nucleus: {} made no syscall for {} ticks: treating it as hung",
                s.servers[cur].name, HUNG_TICKS
            );
            let event = match frame.event(0, cur as u32) {
                Ok(event) => event,
                Err(_) => return,
            };
            return forward_fault(s, frame, cur, &event, delivery);
        }
    }
    if s.current.is_none() || frame.ret.cs.selector().rpl() == 3 {
        reschedule(s, frame);
    }
}

// ---- faults -------------------------------------------------------------------------------

/// An event from a server thread that is not a syscall or an interrupt.
pub fn on_user_event(frame: &mut Frame, event: &Event, delivery: Delivery) {
    let s = sched();
    let Some(cur) = s.current else {
        crate::dispatch::fatal(
            frame,
            delivery,
            format_args!("ring-3 event with no current server"),
        );
    };
    forward_fault(s, frame, cur, event, delivery);
}

fn forward_fault(
    s: &mut Scheduler,
    frame: &mut Frame,
    cur: usize,
    event: &Event,
    delivery: Delivery,
) {
    s.servers[cur].frame = *frame;
    let fred_alive = s.servers[FRED_SERVER].state != State::Absent && cur != FRED_SERVER;
    if fred_alive {
        let token = Token(s.next_token);
        s.next_token += 1;
        let event = Event {
            owner: cur as u32,
            ..*event
        };
        // A breakpoint is a debugging aid fred-server resumes at once: no dump, so `int3`
        // costs one message each way. Faults and hangs get the full register dump first.
        s.servers[cur].pending = Some((token, event));
        if matches!(event.kind, EventKind::SoftwareException { .. }) {
            s.servers[cur].pending_dump = None;
        } else {
            let mut dump = crate::report::capture("fred-server", frame, delivery);
            user_stack_words(s, cur, frame.ret.rsp, &mut dump);
            s.servers[cur].pending_dump = Some(dump);
        }
        match send_pending(s, cur) {
            Ok(()) => {
                s.servers[cur].state = State::WaitingForReply(token);
                s.current = None;
                reschedule_from(s, frame);
                return;
            }
            Err(e) => {
                s.servers[cur].pending = None;
                println!(
                    "nucleus: cannot forward {}'s fault to fred-server ({e}); restarting it",
                    s.servers[cur].name
                )
            }
        }
    } else {
        let mut dump = crate::report::capture("nucleus", frame, delivery);
        user_stack_words(s, cur, frame.ret.rsp, &mut dump);
        let who = if cur == FRED_SERVER {
            "fred-server faulted itself"
        } else {
            "fred-server is not running"
        };
        println!(
            "nucleus: {} faulted and {who}: the nucleus reports it",
            s.servers[cur].name
        );
        println!("{dump}");
    }
    s.current = None;
    if cur == FRED_SERVER && s.servers[cur].restarts >= FRED_SERVER_RESTARTS {
        println!(
            "nucleus: fred-server crashed {} times, giving up on it",
            s.servers[cur].restarts + 1
        );
        kill(s, cur);
    } else {
        restart(s, cur);
    }
    if cur == FRED_SERVER {
        rehome_pending(s);
    }
    reschedule_from(s, frame);
}

/// Fills the dump's raw stack words from the server's own stack, read through its address
/// space (checked: a wild RSP yields no words, never a nucleus fault).
fn user_stack_words(s: &Scheduler, index: usize, rsp: u64, dump: &mut ipc::dump::RegisterDump) {
    let Some(space) = s.servers[index].space.as_ref() else {
        return;
    };
    dump.stack_words.0.clear();
    for i in 0..16u64 {
        let mut word = [0u8; 8];
        if space.read(rsp.wrapping_add(i * 8), &mut word).is_err() {
            break;
        }
        let _ = dump.stack_words.0.push(u64::from_le_bytes(word));
    }
}

/// Sends server `index`'s forwarded event (dump first, then the event) to fred-server.
fn send_pending(s: &mut Scheduler, index: usize) -> Result<(), SendFailure> {
    let Some((token, event)) = s.servers[index].pending else {
        return Ok(());
    };
    // A copy: the dump lives in the sender's slot while fred-server's ring is written. Only
    // faults and re-sends pay for it, never `int3`.
    if let Some(dump) = s.servers[index].pending_dump.clone() {
        send_dump(s, &dump, token)?;
    }
    send(s, FRED_SERVER, &NucleusMessage::Event { token, event })
}

/// After fred-server (re)started, or gave up for good: the events its predecessor never
/// answered go to the new one, or — with no fred-server left — the nucleus restarts those
/// servers itself rather than leave them waiting forever.
fn rehome_pending(s: &mut Scheduler) {
    for index in 0..SERVER_NAMES.len() {
        if index == FRED_SERVER || s.servers[index].pending.is_none() {
            continue;
        }
        let fred_running = s.servers[FRED_SERVER].state != State::Absent;
        let resent = fred_running && send_pending(s, index).is_ok();
        let name = s.servers[index].name;
        if resent {
            println!("nucleus: {name}'s unanswered event handed to the new fred-server");
        } else {
            println!("nucleus: {name}'s event has no fred-server to answer it; restarting {name}");
            restart(s, index);
        }
    }
}

/// Sends a faulting server's register dump to fred-server, in ring-sized parts.
fn send_dump(
    s: &mut Scheduler,
    dump: &ipc::dump::RegisterDump,
    token: Token,
) -> Result<(), SendFailure> {
    let mut buf = [0u8; ipc::dump_parts::DUMP_BYTES_MAX];
    let parts = ipc::dump_parts::split(
        dump,
        token,
        ipc::message::DumpReason::ServerCrash,
        0,
        &mut buf,
    )
    .map_err(|_| SendFailure::DumpTooLarge)?;
    for part in parts {
        send(s, FRED_SERVER, &NucleusMessage::Dump(part))?;
    }
    Ok(())
}

/// After the current server stopped running: pick the next context without saving the
/// live frame into anyone.
fn reschedule_from(s: &mut Scheduler, frame: &mut Frame) {
    s.current = None;
    let next = pick_next(s);
    switch(s, frame, next);
}

fn kill(s: &mut Scheduler, index: usize) {
    if let Some(space) = s.servers[index].space.take() {
        // Never free the tables the CPU is walking: leave them for the nucleus' own first.
        if s.loaded_root == space.root().as_u64() {
            load_cr3(s, memory::kernel_root().as_u64());
        }
        space.destroy();
    }
    let server = &mut s.servers[index];
    server.events = None;
    server.replies = None;
    server.pending = None;
    server.state = State::Absent;
    server.hello = false;
    println!("nucleus: {} stopped", server.name);
    check_ready(s);
}

fn restart(s: &mut Scheduler, index: usize) {
    kill(s, index);
    let server = &mut s.servers[index];
    server.restarts += 1;
    server.generation += 1;
    let name = server.name;
    println!("nucleus: restarting {name} (restart {})", server.restarts);
    if let Err(e) = load(s, index) {
        println!("server {name}: rejected on restart: {e}");
    }
}

// ---- rings --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum SendFailure {
    NoRing,
    DumpTooLarge,
    Ring(ipc::SendError),
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRing => f.write_str("server has no ring"),
            Self::DumpTooLarge => f.write_str("register dump too large"),
            Self::Ring(e) => write!(f, "{e}"),
        }
    }
}

/// Pushes a message into a server's event ring and wakes it if it waits for one.
fn send(s: &mut Scheduler, index: usize, message: &NucleusMessage) -> Result<(), SendFailure> {
    let server = &mut s.servers[index];
    let ring = server.events.as_mut().ok_or(SendFailure::NoRing)?;
    ring.try_push_message(message).map_err(SendFailure::Ring)?;
    if server.state == State::WaitingForEvents {
        server.state = State::Ready;
    }
    Ok(())
}

/// Drains a server's reply ring: every message is an allegation, checked and counted.
fn drain_replies(s: &mut Scheduler, from: usize) {
    loop {
        let server = &mut s.servers[from];
        let Some(ring) = server.replies.as_mut() else {
            return;
        };
        // A plain `Resume`, the reply to almost every event, is read by hand as just its token;
        // anything else is decoded into `other` (a `ServerMessage` is hundreds of bytes, not
        // worth building and moving for a token).
        let mut other = None;
        let popped = ring.pop_with(|record| {
            let token = ipc::codec::resume_token(record);
            if token.is_none() {
                other = Some(ipc::codec::decode::<ServerMessage>(record));
            }
            token
        });
        let message = match (popped, other) {
            (Ok(None), _) => return,
            (Ok(Some(Some(token))), _) => {
                on_reply(s, from, &Reply::Resume { token });
                continue;
            }
            (Ok(Some(None)), Some(Ok(message))) => message,
            (Ok(Some(None)), Some(Err(e))) => {
                // The record was consumed: report it and go on with the next.
                println!("nucleus: {}: dropped a message: {e}", server.name);
                continue;
            }
            (Ok(Some(None)), None) => continue, // not reached: no token means `other` is set
            (Err(e), _) => {
                // Nothing can be consumed from a ring whose indices are garbage; the server
                // only hurt itself. Say so and stop draining (no loop on a broken ring).
                println!(
                    "nucleus: {}: reply ring corrupt ({e}); ignoring it until the server restarts",
                    server.name
                );
                server.replies = None;
                return;
            }
        };
        match message {
            ServerMessage::Hello(hello) => {
                server.hello = true;
                println!(
                    "nucleus: {} says hello (protocol {}, generation {})",
                    server.name, hello.protocol, server.generation
                );
                check_ready(s);
            }
            ServerMessage::Log(line) => println!("{}: {}", server.name, line.text),
            ServerMessage::Reply(reply) => on_reply(s, from, &reply),
            other => println!("nucleus: {}: unexpected message {other:?}", server.name),
        }
    }
}

/// A reply from server `from`: only fred-server decides about events.
fn on_reply(s: &mut Scheduler, from: usize, reply: &Reply) {
    if from != FRED_SERVER {
        println!(
            "nucleus: {}: unexpected message Reply({reply:?})",
            s.servers[from].name
        );
    } else if bench_owns(reply.token()) {
        bench_reply(s)
    } else {
        apply_reply(s, reply)
    }
}

fn apply_reply(s: &mut Scheduler, reply: &Reply) {
    let token = reply.token();
    let Some(index) = s
        .servers
        .iter()
        .position(|sv| sv.state == State::WaitingForReply(token))
    else {
        println!("nucleus: fred-server: reply for unknown event {token}, ignored");
        return;
    };
    let server = &mut s.servers[index];
    server.pending = None;
    server.ticks_without_syscall = 0;
    match reply {
        Reply::Resume { .. } => server.state = State::Ready,
        Reply::ResumeWith { changes, .. } => {
            if let Err(e) = apply_changes(&mut server.frame, changes) {
                println!(
                    "nucleus: fred-server: refused changes for {}: {e}; killing it",
                    server.name
                );
                return kill(s, index);
            }
            server.state = State::Ready;
        }
        Reply::Return { rax, .. } => {
            server.frame.gprs.rax = *rax;
            server.state = State::Ready;
        }
        Reply::Kill { .. } => kill(s, index),
        Reply::Restart { .. } => restart(s, index),
    }
}

#[derive(Clone, Copy, Debug)]
enum ChangeError {
    RipNotUser(u64),
    RspNotUser(u64),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RipNotUser(v) => write!(f, "rip {v:#x} outside user space"),
            Self::RspNotUser(v) => write!(f, "rsp {v:#x} outside user space"),
        }
    }
}

fn apply_changes(
    frame: &mut Frame,
    changes: &ipc::message::ResumeChanges,
) -> Result<(), ChangeError> {
    if changes.rip >= layout::USER_END {
        return Err(ChangeError::RipNotUser(changes.rip));
    }
    if changes.rsp >= layout::USER_END {
        return Err(ChangeError::RspNotUser(changes.rsp));
    }
    frame.ret.rip = changes.rip;
    frame.ret.rsp = changes.rsp;
    // Arithmetic flags, TF, DF, AC only; IF stays on and IOPL 0 (ERETU demands it).
    const ALLOWED: u64 = 0x0000_0000_0004_0dd5;
    frame.ret.rflags = (changes.rflags & ALLOWED) | RFLAGS_USER;
    for write in changes.gprs.iter() {
        use ipc::message::Gpr;
        let g = &mut frame.gprs;
        let slot = match write.gpr {
            Gpr::Rax => &mut g.rax,
            Gpr::Rbx => &mut g.rbx,
            Gpr::Rcx => &mut g.rcx,
            Gpr::Rdx => &mut g.rdx,
            Gpr::Rsi => &mut g.rsi,
            Gpr::Rdi => &mut g.rdi,
            Gpr::Rbp => &mut g.rbp,
            Gpr::R8 => &mut g.r8,
            Gpr::R9 => &mut g.r9,
            Gpr::R10 => &mut g.r10,
            Gpr::R11 => &mut g.r11,
            Gpr::R12 => &mut g.r12,
            Gpr::R13 => &mut g.r13,
            Gpr::R14 => &mut g.r14,
            Gpr::R15 => &mut g.r15,
        };
        *slot = write.value;
    }
    Ok(())
}

/// Prints `nucleus: ready` once every started server has said hello.
fn check_ready(s: &mut Scheduler) {
    if s.ready_printed {
        return;
    }
    let waiting = s
        .servers
        .iter()
        .any(|sv| sv.state != State::Absent && !sv.hello);
    if !waiting {
        s.ready_printed = true;
        if crate::kernel::ready() {
            start_ring_bench(s);
        }
    }
}

/// Called once servers are started: prints ready at once if none was.
pub fn boot_done() {
    let s = sched();
    check_ready(s);
}

// ---- syscalls -----------------------------------------------------------------------------

/// A `syscall` from the current server (type 7 vector 1 under FRED, LSTAR under IDT).
pub fn on_syscall(frame: &mut Frame) {
    let s = sched();
    let Some(cur) = s.current else { return };
    s.servers[cur].ticks_without_syscall = 0;
    let (number, arg0, arg1) = (frame.gprs.rax, frame.gprs.rdi, frame.gprs.rsi);
    let result = match Syscall::try_from(number) {
        Ok(Syscall::ConsoleWrite) => console_write(s, cur, arg0, arg1),
        Ok(Syscall::Nop) => Ok(0),
        Ok(Syscall::Yield) => {
            frame.gprs.rax = 0;
            return reschedule(s, frame);
        }
        Ok(Syscall::RingNotify) => match arg0 {
            layout::REPLY_RING_ID => {
                // Replies only act on *other* servers (those waiting for fred-server), so the
                // caller's live frame and CR3 stay as they are.
                frame.gprs.rax = 0;
                drain_replies(s, cur);
                return;
            }
            layout::EVENT_RING_ID => Ok(0),
            _ => Err(SyscallError::NoSuchRing),
        },
        Ok(Syscall::RingWait) => match arg0 {
            layout::EVENT_RING_ID => {
                frame.gprs.rax = 0;
                // Answer and sleep in one syscall: first take what the caller queued on its
                // reply ring (as RingNotify would), then wait for events.
                drain_replies(s, cur);
                let pending = s.servers[cur]
                    .events
                    .as_ref()
                    .is_some_and(|r| !r.is_empty().unwrap_or(true));
                if pending {
                    return;
                }
                s.servers[cur].state = State::WaitingForEvents;
                s.servers[cur].frame = *frame;
                return reschedule_from(s, frame);
            }
            layout::REPLY_RING_ID => Err(SyscallError::BadArgument),
            _ => Err(SyscallError::NoSuchRing),
        },
        Ok(Syscall::Exit) => {
            println!(
                "nucleus: {} exited with code {}",
                s.servers[cur].name, arg0 as i64
            );
            s.current = None;
            kill(s, cur);
            if cur == FRED_SERVER {
                rehome_pending(s);
            }
            return reschedule_from(s, frame);
        }
        Err(_) => Err(SyscallError::NoSuchSyscall),
    };
    frame.gprs.rax = to_rax(result);
}

fn console_write(s: &mut Scheduler, cur: usize, ptr: u64, len: u64) -> Result<u64, SyscallError> {
    if len > CONSOLE_WRITE_MAX {
        return Err(SyscallError::BadArgument);
    }
    let mut buf = [0u8; CONSOLE_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    let space = s.servers[cur]
        .space
        .as_ref()
        .ok_or(SyscallError::BadPointer)?;
    space
        .read(ptr, buf)
        .map_err(|BadPointer| SyscallError::BadPointer)?;
    // Printable ASCII and newlines pass; anything else is escaped so a server cannot drive
    // the terminal.
    for line in buf.split_inclusive(|&b| b == b'\n') {
        let (text, newline) = match line.split_last() {
            Some((b'\n', text)) => (text, true),
            _ => (line, false),
        };
        print!("{}", Escaped(text));
        if newline {
            println!();
        }
    }
    Ok(len)
}

// ---- ring benchmark -----------------------------------------------------------------------

/// Round trips the `bench` option measures.
const BENCH_ROUNDS: u32 = 1000;

struct RingBench {
    token: Option<Token>,
    started_at: u64,
    rounds: u32,
    min: u64,
    max: u64,
    rdtsc_cost: u64,
}

static BENCH: RacyCell<RingBench> = RacyCell::new(RingBench {
    token: None,
    started_at: 0,
    rounds: 0,
    min: u64::MAX,
    max: 0,
    rdtsc_cost: 0,
});

fn bench() -> &'static mut RingBench {
    // SAFETY: as for `s`: nucleus-only, single CPU, interrupts off.
    unsafe { &mut *BENCH.get() }
}

fn bench_owns(token: Token) -> bool {
    bench().token == Some(token)
}

/// Cost of an empty `rdtsc` pair, subtracted from every sample.
fn rdtsc_pair_cost() -> u64 {
    (0..64)
        .map(|_| {
            let a = bsp_x86_64::insn::rdtsc();
            let b = bsp_x86_64::insn::rdtsc();
            b.wrapping_sub(a)
        })
        .min()
        .unwrap_or(0)
}

/// `bench`: measures nucleus → fred-server → reply round trips over the rings.
fn start_ring_bench(s: &mut Scheduler) {
    let b = bench();
    b.rdtsc_cost = rdtsc_pair_cost();
    println!("bench: rdtsc pair costs {} ticks", b.rdtsc_cost);
    send_ping(s);
}

fn send_ping(s: &mut Scheduler) {
    let token = Token(s.next_token);
    s.next_token += 1;
    let b = bench();
    b.token = Some(token);
    b.started_at = bsp_x86_64::insn::rdtsc();
    if let Err(e) = send(s, FRED_SERVER, &NucleusMessage::Ping { token }) {
        println!("bench: ring-roundtrip: cannot reach fred-server ({e})");
        b.token = None;
    }
}

fn bench_reply(s: &mut Scheduler) {
    let now = bsp_x86_64::insn::rdtsc();
    let b = bench();
    let sample = now.wrapping_sub(b.started_at).saturating_sub(b.rdtsc_cost);
    b.min = b.min.min(sample);
    b.max = b.max.max(sample);
    b.rounds += 1;
    if b.rounds < BENCH_ROUNDS {
        return send_ping(s);
    }
    b.token = None;
    println!(
        "bench: ring-roundtrip min={} max={} rounds={}",
        b.min, b.max, b.rounds
    );
}
