//! vcpu_start, the segment bases, set_gdt and the guests' console.
use super::*;

fn start_block(t: &mut Threads, regs: &VcpuStart) {
    space(t).write(BUF, &regs.to_bytes()).unwrap();
}

#[test]
fn a_vcpu_starts_only_on_guest_selectors_a_canonical_rip_and_a_validated_l4() {
    let mut t = booted();
    let (d, _, f) = create(&mut t, 16);
    with_tables(&mut t, d, &f);
    let (_, _, other) = with_pinned_base(&mut t);
    let good = VcpuStart {
        rip: 0x1000,
        rsp: 0x4000,
        rsi: 0x2000,
        rflags: 0x202,
        cr3: f[0].0 << 12,
        cs: FLAT_KERNEL_CS,
        ss: FLAT_KERNEL_SS,
        ds: FLAT_KERNEL_SS,
        cpu: None,
    };
    for bad in [
        VcpuStart { cs: 0x08, ..good },
        VcpuStart { ss: 0, ..good },
        VcpuStart {
            rip: 0x0000_8000_0000_0000,
            ..good
        },
        VcpuStart {
            cr3: good.cr3 | 0x10,
            ..good
        },
        VcpuStart {
            cr3: other[0].0 << 12,
            ..good
        },
        VcpuStart {
            cr3: NUCLEUS_FRAME << 12,
            ..good
        },
    ] {
        start_block(&mut t, &bad);
        assert_ne!(
            call(&mut t, Syscall::VcpuStart, [d, BUF, 0, 0, 0]),
            Ok(0),
            "{bad:x?}"
        );
        assert!(
            t.get(t.guest_id(d as u16).unwrap()).is_absent(),
            "started on {bad:x?}"
        );
    }
    start_block(&mut t, &good);
    assert_eq!(call(&mut t, Syscall::VcpuStart, [d, BUF, 0, 0, 0]), Ok(0));
    let vcpu = t.get(t.guest_id(d as u16).unwrap());
    assert_eq!(vcpu.guest_root.map(|r| r.as_u64()), Some(good.cr3));
    assert_eq!(
        t.frame(t.guest_id(d as u16).unwrap()).ret.cs.raw() & 0xffff,
        u64::from(FLAT_KERNEL_CS)
    );
    assert_eq!(t.frame(t.guest_id(d as u16).unwrap()).gprs.rsi, good.rsi);
    assert_eq!(
        call(&mut t, Syscall::VcpuStart, [d, BUF, 0, 0, 0]),
        errno(Errno::Eexist)
    );
    // The L4 it runs on is a validated table now.
    assert_eq!(
        write(&mut t, d, f[0], 0, &[0; 8]),
        Err(SyscallError::NotPermitted)
    );
}

#[test]
fn segment_bases_need_a_live_vcpu_and_a_canonical_base() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    assert_eq!(
        call(&mut t, Syscall::VcpuSegmentBase, [d, 0, 0x1000, 0, 0]),
        errno(Errno::Esrch)
    );
    start_block(
        &mut t,
        &VcpuStart {
            rip: 0x1000,
            rsp: 0x4000,
            rsi: 0,
            rflags: 0x202,
            cr3: f[0].0 << 12,
            cs: FLAT_KERNEL_CS,
            ss: FLAT_KERNEL_SS,
            ds: FLAT_KERNEL_SS,
            cpu: None,
        },
    );
    assert_eq!(call(&mut t, Syscall::VcpuStart, [d, BUF, 0, 0, 0]), Ok(0));
    let id = t.guest_id(d as u16).unwrap();
    assert_eq!(
        call(
            &mut t,
            Syscall::VcpuSegmentBase,
            [d, 0, 0x0000_8000_0000_0000, 0, 0]
        ),
        errno(Errno::Einval)
    );
    assert_eq!(t.get(id).bases.fs, 0);
    assert_eq!(
        call(&mut t, Syscall::VcpuSegmentBase, [d, 0, 0x7000, 0, 0]),
        Ok(0)
    );
    assert_eq!(t.get(id).bases.fs, 0x7000);
}

// --- set_gdt, guest_console_write ---

#[test]
fn set_gdt_takes_only_the_domains_frames_and_never_the_reserved_entries() {
    let mut t = booted();
    let (d, _, f) = create(&mut t, 8);
    let (_, _, other) = create(&mut t, 4);
    let gdt = |t: &mut Threads, frames: &[Mfn], entries: u64| {
        let list: Vec<u8> = frames.iter().flat_map(|m| m.0.to_le_bytes()).collect();
        space(t).write(BUF, &list).unwrap();
        mmu(t, d, MmuOp::SetGdt { list: BUF, entries })
    };
    let reserved = u64::from(xen_abi::layout::selector::FIRST_RESERVED_GDT_ENTRY);
    assert_eq!(gdt(&mut t, &f[..1], reserved + 1), errno(Errno::Einval));
    assert_eq!(gdt(&mut t, &[other[0]], 16), errno(Errno::Einval));
    assert_eq!(gdt(&mut t, &[Mfn(NUCLEUS_FRAME)], 16), errno(Errno::Einval));
    assert!(registry::domain(d as u16).gdt.is_empty());
    assert_eq!(gdt(&mut t, &f[..1], 16), Ok(0));
    // The vCPU's GDT window shows the frame from entry 0 on.
    let base = window::gdt_base(d as u16);
    assert_eq!(crate::mm::window::mapped(base), Some((f[0].0, true)));
    // A descriptor page is never written behind the descriptor checks.
    assert_eq!(
        write(&mut t, d, f[0], 0, &[0xff; 8]),
        Err(SyscallError::NotPermitted)
    );
}

#[test]
fn guest_console_lines_carry_the_domains_name_and_a_length_cap() {
    let mut t = booted();
    let (d, _, _) = create(&mut t, 2);
    kit::output();
    space(&t).write(BUF, b"hi\nthere\x07").unwrap();
    assert_eq!(
        call(&mut t, Syscall::GuestConsoleWrite, [d, BUF, 9, 0, 0]),
        Ok(9)
    );
    assert_eq!(
        call(&mut t, Syscall::GuestConsoleWrite, [d, BUF, 1, 0, 0]),
        Ok(1)
    );
    assert_eq!(
        call(&mut t, Syscall::GuestConsoleWrite, [d, BUF, 513, 0, 0]),
        Err(SyscallError::BadArgument)
    );
    assert!(kit::output().starts_with("guest one: hi\n"));
}

#[test]
fn a_spent_guest_console_budget_is_refilled_by_ticks_that_only_counted() {
    let mut t = booted();
    let (d, _, _) = create(&mut t, 2);
    space(&t).write(BUF, &[b'x'; 512]).unwrap();
    while call(&mut t, Syscall::GuestConsoleWrite, [d, BUF, 512, 0, 0]) != Ok(0) {}
    kit::output();
    // Ticks that landed inside the nucleus (no `lifecycle::tick`) refill it all the same.
    let mut ticks = 0;
    let mut taken = Ok(0);
    while taken == Ok(0) && ticks < 4 {
        crate::timer::tick();
        ticks += 1;
        taken = call(&mut t, Syscall::GuestConsoleWrite, [d, BUF, 512, 0, 0]);
    }
    assert!(
        matches!(taken, Ok(n) if n > 0),
        "nothing taken after {ticks} ticks"
    );
    assert!(kit::output().starts_with("guest one: x"));
}

/// A started vCPU of a fresh domain: its number and the free count after the create.
fn started_vcpu(t: &mut Threads, cpu: Option<u8>) -> (u64, u64) {
    let (d, _, f) = with_pinned_base(t);
    start_block(
        t,
        &VcpuStart {
            rip: 0x1000,
            rsp: 0x4000,
            rsi: 0,
            rflags: 0x202,
            cr3: f[0].0 << 12,
            cs: FLAT_KERNEL_CS,
            ss: FLAT_KERNEL_SS,
            ds: FLAT_KERNEL_SS,
            cpu,
        },
    );
    assert_eq!(call(t, Syscall::VcpuStart, [d, BUF, 0, 0, 0]), Ok(0));
    (d, crate::mm::memory::free_count())
}

#[test]
fn a_vcpu_runs_on_its_cpu_or_the_least_loaded_online_one() {
    use crate::thread::Placement;
    let mut t = booted();
    crate::host::cpu::set_online_mask(0b1111);
    let (d, _) = started_vcpu(&mut t, Some(3));
    assert_eq!(t.get(t.guest_id(d as u16).unwrap()).cpu(), 3);
    let (d, _) = started_vcpu(&mut t, None);
    // CPU 0 runs both servers, CPU 3 the first guest: CPU 1 is the least loaded.
    assert_eq!(t.get(t.guest_id(d as u16).unwrap()).cpu(), 1);
    let (d, _) = started_vcpu(&mut t, Some(9));
    assert_eq!(
        t.get(t.guest_id(d as u16).unwrap()).cpu(),
        2,
        "cpu 9 is not online"
    );
    // The policy itself: a pinned CPU that is online wins; the boot CPU only, all on 0.
    let g = t.guest_id(4).unwrap();
    assert_eq!(t.place_guest(g, Some(2), 0b1111), Placement::Pinned(2));
    assert_eq!(t.place_guest(g, None, 0b1111), Placement::Spread(1));
    assert_eq!(
        t.place_guest(g, Some(40), 0b1111),
        Placement::NotOnline { asked: 40, cpu: 1 }
    );
    assert_eq!(
        t.place_guest(g, Some(1), 0),
        Placement::NotOnline { asked: 1, cpu: 0 }
    );
    assert_eq!(t.place_guest(g, None, 1), Placement::Spread(0));
    crate::host::cpu::set_online_mask(1);
}

#[test]
fn a_domain_whose_vcpu_is_live_on_another_cpu_ends_only_once_that_cpu_let_go() {
    let mut t = booted();
    crate::host::cpu::set_online_mask(0b11);
    let before = crate::mm::memory::free_count();
    let (d, _) = started_vcpu(&mut t, Some(1));
    let vcpu = t.guest_id(d as u16).unwrap();
    // CPU 1 runs the vCPU; pv-server on CPU 0 asks for the domain's end.
    t.set_here(1);
    let mut idle = crate::host::cpu::idle_frame();
    let _ = crate::thread::sched::finish(
        &mut t,
        &mut idle,
        crate::thread::sched::NextTask::NextInTurn,
    );
    assert_eq!(t.current(), Some(vcpu));
    t.set_here(0);
    let _ = t.take_wakes();
    assert_eq!(
        call(&mut t, Syscall::DomainDestroy, [d, 0, 0, 0, 0]),
        Err(SyscallError::Busy)
    );
    // Nothing went back, nobody will pick the vCPU again, and CPU 1 is told to look.
    assert!(crate::mm::memory::free_count() < before);
    assert!(!t.get(vcpu).is_absent());
    assert_eq!(t.get(vcpu).cpu(), u8::MAX, "placed nowhere");
    assert_eq!(t.take_wakes(), 1 << 1);
    // CPU 1's reschedule switches away from it (to idle): then the domain ends in full.
    t.set_here(1);
    let mut live = t.live_area(vcpu);
    let _ = t.with_live(&mut live, |t, frame| {
        crate::thread::sched::finish(t, frame, crate::thread::sched::NextTask::NextInTurn)
    });
    assert_eq!(t.current(), None);
    t.set_here(0);
    assert!(call(&mut t, Syscall::DomainDestroy, [d, 0, 0, 0, 0]).is_ok());
    assert_eq!(crate::mm::memory::free_count(), before);
    crate::host::cpu::set_online_mask(1);
}
