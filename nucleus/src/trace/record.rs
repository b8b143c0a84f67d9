//! The records as the host decodes them; the format strings are the trace's text.
/// What kind of event a record is about (the decoder prints the variant's name).
#[derive(Clone, Copy, defmt::Format)]
enum Kind {
    Exception,
    Interrupt,
    Nmi,
    SoftwareException,
    SoftwareInterrupt,
    PrivilegedSoftwareException,
    Syscall,
    Sysenter,
}

/// Which delivery brought an event.
#[derive(Clone, Copy, defmt::Format)]
enum Via {
    Idt,
    Fred,
}

/// The kind and the vector (fixed ones for the kinds without a vector field).
fn kind(kind: &ipc::EventKind) -> (Kind, u8) {
    use ipc::EventKind as K;
    match *kind {
        K::Exception { vector, .. } => (Kind::Exception, vector),
        K::Interrupt { vector } => (Kind::Interrupt, vector),
        K::Nmi { .. } => (Kind::Nmi, 2),
        K::SoftwareException { vector } => (Kind::SoftwareException, vector),
        K::SoftwareInterrupt { vector } => (Kind::SoftwareInterrupt, vector),
        K::PrivilegedSoftwareException => (Kind::PrivilegedSoftwareException, 1),
        K::Syscall => (Kind::Syscall, 1),
        K::Sysenter => (Kind::Sysenter, 2),
    }
}

/// A slot as a record byte: 255 is the idle loop (or the nucleus).
fn slot(slot: Option<usize>) -> u8 {
    slot.map_or(u8::MAX, |s| s as u8)
}

pub fn delivered(event: &ipc::Event, fred: bool) {
    let (kind, vector) = kind(&event.kind);
    let via = if fred { Via::Fred } else { Via::Idt };
    defmt::info!(
        "event delivered: {} vector {=u8} via {} rip {=u64:#x} ring {=u8} cpu {=u16}",
        kind,
        vector,
        via,
        event.rip,
        event.from_ring,
        event.cpu
    );
}

pub fn forwarded(from: usize, to: Option<usize>, name: &str, token: u64) {
    defmt::info!(
        "event forwarded: of thread {=u8} to server {=u8} {=str} token {=u64}",
        from as u8,
        slot(to),
        name,
        token
    );
}

pub fn reply(to: usize, token: u64) {
    defmt::info!(
        "reply taken: for thread {=u8} token {=u64}",
        to as u8,
        token
    );
}

// The host decoder learns which ELF decodes a slot's records from this wording
// (`image_builder::trace::SERVER_STARTED`).
pub fn started(slot: usize, name: &str, generation: u32) {
    defmt::info!(
        "server {=u8} {=str}: started (generation {=u32})",
        slot as u8,
        name,
        generation
    );
}

pub fn stopped(slot: usize, name: &str) {
    defmt::info!("server {=u8} {=str}: stopped", slot as u8, name);
}

pub fn restarting(slot: usize, name: &str, restart: u32) {
    defmt::warn!(
        "server {=u8} {=str}: restarting (restart {=u32})",
        slot as u8,
        name,
        restart
    );
}

pub fn switch(from: Option<usize>, to: Option<usize>) {
    defmt::debug!("switch: {=u8} -> {=u8}", slot(from), slot(to));
}

pub fn syscall(slot: usize, number: u64) {
    defmt::debug!("syscall {=u64} from thread {=u8}", number, slot as u8);
}

pub fn guest_started(domain: u16, slot: usize, rip: u64) {
    defmt::info!(
        "guest {=u16}: started (thread {=u8}, rip {=u64:#x})",
        domain,
        slot as u8,
        rip
    );
}

pub fn hypercall(
    domain: u16,
    number: u64,
    args: [u64; 3],
    to: Option<usize>,
    name: &str,
    token: u64,
) {
    let call = xen_abi::hypercall::Hypercall::from_raw(number)
        .map_or("unknown", xen_abi::hypercall::Hypercall::label);
    defmt::info!(
        "guest {=u16}: hypercall {=u64} {=str} ({=u64:#x}, {=u64:#x}, {=u64:#x}) to server {=u8} {=str} token {=u64}",
        domain,
        number,
        call,
        args[0],
        args[1],
        args[2],
        slot(to),
        name,
        token
    );
}

pub fn guest_stopped(domain: u16, slot: usize) {
    defmt::info!(
        "guest {=u16}: shut down (thread {=u8} stopped)",
        domain,
        slot as u8
    );
}

pub fn bounced(domain: u16, slot: usize, rip: u64, token: u64) {
    defmt::info!(
        "guest {=u16}: event bounced to the guest at rip {=u64:#x} (thread {=u8}, token {=u64})",
        domain,
        rip,
        slot as u8,
        token
    );
}
