//! The thread table's verbs and lookups.
use super::*;
use crate::host::kit::{self, fred, pv};
use ipc::{NucleusMessage, Token};

#[test]
fn boot_table_names_fred_server_as_pv_servers_fault_handler() {
    let t = Threads::new();
    assert_eq!(t.get(pv()).fault_handler(), Some(fred()));
    assert_eq!(t.get(fred()).fault_handler(), None);
    assert!(t.is_fault_handler(fred()));
    assert!(!t.is_fault_handler(pv()));
    assert_eq!(t.first_fault_handler(), Some(fred()));
}

#[test]
fn state_changes_through_verbs() {
    let mut t = kit::booted();
    let thread = t.get_mut(pv());
    assert_eq!(thread.state(), State::Ready);
    thread.block_on_events();
    assert!(!thread.runnable());
    thread.wake();
    assert_eq!(thread.state(), State::Ready);
    thread.block_on_reply(Token(7));
    assert!(thread.waits_for(Token(7)));
    thread.wake(); // an event does not end a wait for a reply
    assert!(thread.waits_for(Token(7)));
    thread.resume();
    assert!(thread.runnable());
    thread.stop();
    assert!(thread.is_absent());
    assert!(thread.events.is_none() && thread.replies.is_none());
}

#[test]
fn live_fault_handler_is_none_once_the_handler_is_gone() {
    let mut t = kit::booted();
    assert_eq!(t.live_fault_handler(pv()), Some(fred()));
    assert_eq!(t.live_fault_handler(fred()), None);
    crate::lifecycle::kill(&mut t, fred());
    assert_eq!(t.live_fault_handler(pv()), None);
}

#[test]
fn watchdog_fires_after_the_limit_and_starts_over() {
    let mut t = kit::booted();
    let thread = t.get_mut(pv());
    assert!(!(0..3).any(|_| thread.tick_exceeds(3)));
    assert!(thread.tick_exceeds(3));
    assert!(!thread.tick_exceeds(3));
    thread.made_syscall();
    assert!(!(0..3).any(|_| thread.tick_exceeds(3)));
}

#[test]
fn send_wakes_a_thread_waiting_for_events() {
    let mut t = kit::booted();
    t.get_mut(fred()).block_on_events();
    t.send(fred(), &NucleusMessage::Ping { token: Token(3) })
        .unwrap();
    assert!(t.get(fred()).runnable());
    let mut ends = kit::server_ends("fred-server");
    let messages = kit::recv_all(&mut ends);
    assert!(matches!(
        messages.last(),
        Some(NucleusMessage::Ping { token: Token(3) })
    ));
}

#[test]
fn ready_is_reported_once_when_every_started_thread_said_hello() {
    fn on_ready() -> AfterReady {
        println!("READY");
        AfterReady::Run
    }
    let mut t = kit::booted();
    t.set_on_ready(on_ready);
    assert_eq!(t.check_ready(), None);
    t.get_mut(fred()).greet();
    assert_eq!(t.check_ready(), None);
    t.get_mut(pv()).greet();
    assert_eq!(t.check_ready(), Some(AfterReady::Run));
    assert_eq!(t.check_ready(), None);
    assert_eq!(kit::output(), "READY\n");
}

#[test]
fn an_answered_event_does_not_reset_the_watchdog() {
    let mut t = kit::booted();
    let thread = t.get_mut(pv());
    assert!(!(0..3).any(|_| thread.tick_exceeds(3)));
    // An int3 loop: every event answered, never a syscall.
    thread.settle();
    assert!(thread.tick_exceeds(3));
}

#[test]
fn the_restart_budget_refills_after_the_window_only() {
    let mut t = kit::booted();
    let thread = t.get_mut(pv());
    assert_eq!(thread.count_restart(10, 2, 100), Ok(1));
    assert_eq!(thread.count_restart(20, 2, 100), Ok(2));
    assert_eq!(thread.count_restart(30, 2, 100), Err(2));
    // A long quiet run since the last restart: a fresh budget.
    assert_eq!(thread.count_restart(200, 2, 100), Ok(1));
    assert_eq!(thread.generation(), 3);
}

#[test]
fn servers_and_guest_vcpus_are_told_apart_by_their_kind_only() {
    let t = Threads::new();
    for id in t.server_ids() {
        assert_eq!(t.get(id).kind(), Kind::Server);
        assert_eq!(t.get(id).owner(id), id.owner());
    }
    for domain in 1..=ipc::domain::MAX_DOMAINS as u16 {
        let id = t.guest_id(domain).expect("a guest slot");
        let guest = t.get(id);
        assert_eq!(guest.kind(), Kind::GuestVcpu { domain });
        assert_eq!(guest.domain(), Some(domain));
        assert_eq!(guest.owner(id), ipc::domain::guest_owner(domain));
        assert_eq!(guest.fault_handler(), Some(GUEST_MANAGER));
    }
    // What differs when a thread is entered is the thread's to say.
    let server = t.get(pv()).segments();
    let guest = t.get(t.guest_id(1).unwrap()).segments();
    assert_eq!(
        server,
        (
            bsp_x86_64::gdt::USER_CS64.raw(),
            bsp_x86_64::gdt::USER_DS.raw()
        )
    );
    assert_eq!(
        guest,
        (
            xen_abi::layout::selector::FLAT_RING3_CS64,
            xen_abi::layout::selector::FLAT_RING3_SS64
        )
    );
}
