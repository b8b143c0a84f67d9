//! External interrupts and events from Ring3.
use bsp_x86_64::frame::Frame;
use ipc::Event;
use ipc::dump::Delivery;

/// An external interrupt. No device is programmed yet, so any vector is spurious: counted and
/// reported once per vector class, never fatal.
pub fn handle(vector: u8) {
    println!("nucleus: spurious interrupt, vector {vector}");
}

/// An event from Ring3: forwarded to the owning server (issue 7). Until servers run, there
/// is no Ring3 code, so this is a nucleus bug.
pub fn user_event(frame: &mut Frame, event: &Event, delivery: Delivery) {
    crate::dispatch::fatal(frame, delivery, format_args!("event {:?} from ring 3 with no server to own it", event.kind));
}
