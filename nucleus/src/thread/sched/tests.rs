use super::*;
use crate::host::kit::{self, fred, pv};
use bsp_x86_64::gdt;

/// Boots the table and enters its first thread (fred-server), as `startup` does.
fn started() -> Threads {
    let mut t = kit::booted();
    let exit = start(&mut t).expect("a runnable thread");
    assert_eq!(exit, t.area_ptr(fred()));
    t
}

/// What the dispatcher does after an event from the current thread: its save area is the
/// live frame (the stub saved it there), `event` is what the handler did to it, then
/// `finish` carries out `next`.
fn after_event(t: &mut Threads, next: NextTask, event: impl FnOnce(&mut Frame)) -> ExitFrame {
    let mut live = t.live_area(t.current().expect("a current thread"));
    t.with_live(&mut live, |t, frame| {
        event(frame);
        finish(t, frame, next)
    })
}

/// `switch` from the current thread's live area to `next`.
fn switch_from_current(t: &mut Threads, next: Option<ThreadId>) -> ExitFrame {
    let mut live = t.live_area(t.current().expect("a current thread"));
    t.with_live(&mut live, |t, frame| switch(t, frame, next))
}

#[test]
fn start_enters_the_first_runnable_thread_with_its_space() {
    let t = started();
    assert_eq!(t.current(), Some(fred()));
    assert_eq!(t.frame(fred()).ret.rip, 0x40_1000);
    let root = t.get(fred()).space.as_ref().unwrap().root().as_u64();
    assert_eq!(crate::host::mm::loaded_root(), root);
    // Its next event from ring 3 is saved straight into its area.
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(fred()) as u64);
}

#[test]
fn next_in_turn_leaves_the_context_in_its_area_and_rotates() {
    let mut t = started();
    let exit = after_event(&mut t, NextTask::NextInTurn, |f| f.gprs.rbx = 0xb0b);
    assert_eq!(t.current(), Some(pv()));
    assert_eq!(exit, t.area_ptr(pv()));
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(pv()) as u64);
    // No copy anywhere: what the event left in fred-server's area is its context.
    assert_eq!(t.frame(fred()).gprs.rbx, 0xb0b);
    let exit = after_event(&mut t, NextTask::NextInTurn, |_| {});
    assert_eq!(t.current(), Some(fred()));
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(t.frame(fred()).gprs.rbx, 0xb0b);
}

#[test]
fn next_in_turn_keeps_the_only_runnable_thread_untouched() {
    let mut t = started();
    t.get_mut(pv()).block_on_events();
    let exit = after_event(&mut t, NextTask::NextInTurn, |f| f.gprs.rcx = 0xc);
    assert_eq!(t.current(), Some(fred()));
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(t.frame(fred()).gprs.rcx, 0xc);
}

#[test]
fn other_idles_when_nobody_runs_and_keeps_the_context() {
    let mut t = started();
    t.get_mut(pv()).block_on_events();
    t.get_mut(fred()).block_on_events();
    let exit = after_event(&mut t, NextTask::Other, |f| f.gprs.rdx = 0xdead);
    assert_eq!(t.current(), None);
    assert_eq!(exit, crate::host::cpu::idle_exit());
    assert_eq!(t.frame(fred()).gprs.rdx, 0xdead);
    assert_eq!(
        crate::host::mm::loaded_root(),
        crate::mm::kernel_root().as_u64()
    );
}

#[test]
fn each_cpu_runs_only_the_threads_placed_on_it_and_wakes_the_others() {
    let mut t = kit::booted();
    t.place(pv(), 1);
    assert_eq!(start(&mut t), Some(t.area_ptr(fred())));
    assert_eq!(t.current(), Some(fred()));
    // CPU 0 never picks pv-server, and tells CPU 1 it has a runnable thread.
    let _ = after_event(&mut t, NextTask::NextInTurn, |_| {});
    assert_eq!(t.current(), Some(fred()));
    assert_eq!(t.take_wakes(), 1 << 1);
    // CPU 1, idle, takes pv-server; CPU 0's current is untouched.
    t.set_here(1);
    let mut idle1 = crate::host::cpu::idle_frame();
    let exit = finish(&mut t, &mut idle1, NextTask::NextInTurn);
    assert_eq!(t.current(), Some(pv()));
    assert_eq!(exit, t.area_ptr(pv()));
    assert_eq!(t.frame(pv()).ret.rip, 0x40_1000);
    // Once CPU 1 runs it, nobody is woken for it; fred-server blocked on CPU 0 and then
    // woken from CPU 1 gets CPU 0 an IPI.
    let _ = after_event(&mut t, NextTask::Same, |_| {});
    assert_eq!(t.take_wakes(), 0);
    t.set_here(0);
    t.get_mut(fred()).block_on_events();
    let _ = after_event(&mut t, NextTask::Other, |_| {});
    assert_eq!(t.current(), None);
    t.set_here(1);
    t.get_mut(fred()).wake();
    let _ = after_event(&mut t, NextTask::Same, |_| {});
    assert_eq!(t.take_wakes(), 1 << 0);
}

#[test]
fn same_leaves_everything_as_it_is() {
    let mut t = started();
    let before = *t.frame(fred());
    let exit = after_event(&mut t, NextTask::Same, |_| {});
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(*t.frame(fred()), before);
    assert_eq!(t.current(), Some(fred()));
}

#[test]
fn a_thread_that_restarted_itself_runs_from_its_fresh_frame() {
    let mut t = started();
    t.get_mut(pv()).block_on_events();
    // fred-server is the only runnable thread: Other enters it again from its area.
    let exit = after_event(&mut t, NextTask::Other, |f| f.gprs.rbx = 0xbad);
    assert_eq!(t.current(), Some(fred()));
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(t.frame(fred()).gprs.rbx, 0xbad);
    // In its next event it restarts itself: the new image's frame is staged while its
    // area is the live frame, and is what it is entered with.
    let mut live = t.live_area(fred());
    let exit = t.with_live(&mut live, |t, frame| {
        t.get_mut(fred()).start(
            crate::mm::AddressSpace::fake(0x9_9000),
            kit::user_frame(0x40_2000),
        );
        finish(t, frame, NextTask::Other)
    });
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(t.frame(fred()).ret.rip, 0x40_2000);
    assert_eq!(t.frame(fred()).gprs.rbx, 0);
}

#[test]
#[should_panic(expected = "is the live frame")]
fn the_live_area_is_not_lent_twice() {
    let mut t = started();
    let mut live = t.live_area(fred());
    t.with_live(&mut live, |t, _| t.frame(fred()).gprs.rax);
}

#[test]
fn switching_in_drops_the_saved_event_bits() {
    let mut t = kit::booted();
    t.frame_mut(fred()).ret.ss = SsQword::from_raw(0x1_0000_e02b);
    let _ = start(&mut t).unwrap();
    assert_eq!(t.frame(fred()).ret.ss.raw(), 0xe02b);
}

#[test]
fn a_guest_runs_on_its_descriptor_tables_and_a_server_on_the_cpus() {
    use crate::host::cpu::loaded_descriptor_tables;
    use bsp_x86_64::gdt::DescriptorView;
    let mut t = started();
    assert_eq!(loaded_descriptor_tables(), DescriptorView::default());
    let guest = t.guest_id(1).unwrap();
    let thread = t.get_mut(guest);
    thread.start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x50_0000),
        kit::user_frame(0x1000),
    );
    let view = DescriptorView {
        gdt_base: 0xffff_8200_0000_0000,
        ldt: true,
    };
    thread.tables = view;
    let _ = switch_from_current(&mut t, Some(guest));
    assert_eq!(loaded_descriptor_tables(), view);
    let _ = switch_from_current(&mut t, Some(pv()));
    assert_eq!(loaded_descriptor_tables(), DescriptorView::default());
}

#[test]
fn a_thread_is_only_ever_entered_on_the_64_bit_user_segments() {
    let mut t = kit::booted();
    // A compat-mode SYSCALL's frame (syscall_compat_entry) names the compat slot.
    t.frame_mut(fred()).ret.cs = CsQword::from_raw(0x1b);
    t.frame_mut(fred()).ret.ss = SsQword::from_raw(0x1b);
    let _ = start(&mut t).unwrap();
    assert_eq!(
        t.frame(fred()).ret.cs.raw(),
        u64::from(gdt::USER_CS64.raw())
    );
    assert_eq!(t.frame(fred()).ret.ss.raw(), u64::from(gdt::USER_DS.raw()));
}

#[test]
fn a_guest_runs_with_its_segment_bases_and_keeps_what_it_changed() {
    use crate::host::cpu::{loaded_segments, set_live_bases};
    use bsp_x86_64::guest_segments::SegmentBases;
    let mut t = started();
    assert_eq!(loaded_segments(), (SegmentBases::ZERO, true));
    let guest = t.guest_id(1).unwrap();
    let thread = t.get_mut(guest);
    thread.start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x50_0000),
        kit::user_frame(0x1000),
    );
    thread.bases.set(0, 0x7000).unwrap();
    thread.bases.set(2, 0x8000).unwrap();
    thread.bases.set(1, 0x9000).unwrap();
    let bases = thread.bases;
    let exit = switch_from_current(&mut t, Some(guest));
    assert_eq!(exit, t.area_ptr(guest));
    assert_eq!(t.frame(guest).ret.rip, 0x1000);
    assert_eq!(loaded_segments(), (bases, true));
    assert_eq!(crate::host::cpu::user_bases(), (0x7000, 0x8000));
    // The guest loads a selector: its FS base is the descriptor's (0) now.
    set_live_bases(0, 0x8000);
    let _ = switch_from_current(&mut t, Some(pv()));
    // A server runs with zeros; the guest's own change is kept, the user GS untouched.
    assert_eq!(loaded_segments(), (SegmentBases::ZERO, true));
    let kept = t.get(guest).bases;
    assert_eq!((kept.fs, kept.gs_kernel, kept.gs_user), (0, 0x8000, 0x9000));
    // A server's bases are never saved into it.
    set_live_bases(0x1234, 0x5678);
    let _ = switch_from_current(&mut t, Some(guest));
    assert_eq!(t.get(pv()).bases, SegmentBases::ZERO);
    assert_eq!(loaded_segments().0, kept);
}

#[test]
fn a_guest_in_user_mode_runs_with_its_user_gs() {
    use crate::host::cpu::{loaded_segments, set_live_bases};
    let mut t = started();
    let guest = t.guest_id(1).unwrap();
    let thread = t.get_mut(guest);
    thread.start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x50_0000),
        kit::user_frame(0x1000),
    );
    thread.bases.set(2, 0x8000).unwrap();
    thread.bases.set(1, 0x9000).unwrap();
    thread.vcpu.user_root = Some(bsp_x86_64::paging::PhysAddr::new(0x60_0000));
    thread.vcpu.enter(GuestMode::User).unwrap();
    let _ = switch_from_current(&mut t, Some(guest));
    assert!(!loaded_segments().1);
    assert_eq!(crate::host::cpu::user_bases(), (0, 0x9000));
    // User mode changed its GS base (a selector load): kept as the user one.
    set_live_bases(0, 0);
    let _ = switch_from_current(&mut t, Some(pv()));
    let kept = t.get(guest).bases;
    assert_eq!((kept.gs_kernel, kept.gs_user), (0x8000, 0));
    // Back in kernel mode (a reply toggled it): the kernel base is live again.
    t.get_mut(guest).vcpu.enter(GuestMode::Kernel).unwrap();
    let _ = switch_from_current(&mut t, Some(guest));
    assert_eq!(crate::host::cpu::user_bases(), (0, 0x8000));
}

#[test]
fn a_guest_gets_back_the_data_selectors_it_left() {
    use crate::host::cpu::{data_selectors_left, set_live_selectors};
    use bsp_x86_64::guest_selectors::DataSelectors;
    let mut t = started();
    let guest = t.guest_id(1).unwrap();
    t.get_mut(guest).start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x50_0000),
        kit::user_frame(0x1000),
    );
    let _ = switch_from_current(&mut t, Some(guest));
    let mine = DataSelectors {
        ds: 0x0b,
        es: 0x0f,
        fs: 0x13,
        gs: 0,
    };
    set_live_selectors(mine);
    let _ = switch_from_current(&mut t, Some(pv()));
    assert_eq!(t.get(guest).selectors, mine);
    // Another guest runs in between and loads its own.
    let other = t.guest_id(2).unwrap();
    t.get_mut(other).start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x60_0000),
        kit::user_frame(0x1000),
    );
    let _ = switch_from_current(&mut t, Some(other));
    assert_eq!(data_selectors_left(), DataSelectors::NULL);
    let _ = switch_from_current(&mut t, Some(pv()));
    let _ = switch_from_current(&mut t, Some(guest));
    assert_eq!(data_selectors_left(), mine);
    assert_eq!(crate::host::cpu::selectors_owner(), Some(guest.index()));
}

#[test]
fn tick_reports_a_thread_hung_after_the_limit_once() {
    let mut t = started();
    let frame = *t.frame(fred());
    for _ in 0..HUNG_TICKS {
        assert_eq!(tick(&mut t, &frame), Tick::Run(NextTask::NextInTurn));
    }
    assert_eq!(tick(&mut t, &frame), Tick::Hung(fred()));
    assert_eq!(
        kit::output(),
        "nucleus: fred-server made no syscall for 200 ticks: treating it as hung\n"
    );
    assert_eq!(tick(&mut t, &frame), Tick::Run(NextTask::NextInTurn));
}

#[test]
fn tick_in_the_nucleus_does_not_preempt() {
    let mut t = started();
    let ring0 = crate::host::cpu::idle_frame();
    assert_eq!(tick(&mut t, &ring0), Tick::Run(NextTask::Same));
    t.set_current(None);
    assert_eq!(tick(&mut t, &ring0), Tick::Run(NextTask::NextInTurn));
}
