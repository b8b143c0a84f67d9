//! External interrupts and events from Ring3: the hand-off from the dispatcher to the timer
//! and the servers.
use crate::timer;
use bsp_x86_64::frame::Frame;
use ipc::Event;
use ipc::dump::Delivery;

/// An external interrupt.
pub fn handle(frame: &mut Frame, vector: u8, delivery: Delivery) {
    if timer::PIC_VECTORS.contains(&vector) {
        if !timer::acknowledge(vector) {
            return; // spurious IRQ 7/15
        }
        if vector == timer::TIMER_VECTOR {
            timer::tick();
            crate::dispatch::report_nmis();
            crate::servers::on_tick(frame, delivery);
            return;
        }
    }
    println!("nucleus: unexpected interrupt, vector {vector}");
}

/// An event from Ring3 that is not an interrupt: a syscall, or something for fred-server.
pub fn user_event(frame: &mut Frame, event: &Event, delivery: Delivery) {
    match event.kind {
        ipc::EventKind::Syscall => crate::servers::on_syscall(frame),
        _ => crate::servers::on_user_event(frame, event, delivery),
    }
}
