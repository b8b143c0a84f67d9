//! The domain table and the domains' lifetime: who may call, create, share, destroy.
use super::*;

#[test]
fn calls_about_a_domain_that_does_not_live_are_refused() {
    let mut t = booted();
    let (_, _, f) = create(&mut t, 4);
    for d in [0, 2, MAX_DOMAINS as u64 + 1, 1 << 16 | 1, u64::MAX] {
        for (c, args) in [
            (Syscall::DomainWrite, [d, f[0].0, 0, BUF, 8]),
            (Syscall::DomainRead, [d, f[0].0, 0, BUF, 8]),
            (Syscall::GuestCopy, [d, 0, BUF, 8, 0]),
            (Syscall::DomainMmu, [d, 1, f[0].0, 0, 0]),
            (Syscall::VcpuStart, [d, BUF, 0, 0, 0]),
            (Syscall::VcpuSegmentBase, [d, 0, 0, 0, 0]),
            (Syscall::DomainDestroy, [d, 0, 0, 0, 0]),
            (Syscall::GuestConsoleWrite, [d, NAME, 3, 0, 0]),
            (Syscall::DomainShare, [d, 0, 0, 0, 0]),
        ] {
            assert_eq!(
                call(&mut t, c, args),
                Err(SyscallError::NotPermitted),
                "{c:?} for domain {d:#x}"
            );
        }
    }
    assert_eq!(owner(f[0]), Some(Owner::Domain(DomainId(1))));
}

#[test]
fn only_the_guest_manager_may_make_guest_manager_calls() {
    let mut t = booted();
    let free = ram::free_count();
    t.set_current(Some(kit::fred()));
    let mut frame = kit::user_frame(0x40_1000);
    frame.gprs.rax = Syscall::DomainCreate as u64;
    (
        frame.gprs.rdi,
        frame.gprs.rsi,
        frame.gprs.rdx,
        frame.gprs.r10,
    ) = (4, NAME, 3, MFNS);
    let next = crate::syscall::handle(&mut t, &mut frame).expect("an error code, no fault");
    assert_eq!(next, crate::thread::sched::NextTask::Same);
    assert_eq!(
        frame.gprs.rax,
        ipc::syscall::to_rax(Err(SyscallError::NotPermitted))
    );
    assert_eq!(ram::free_count(), free, "nothing taken");
}

// --- domain_create, domain_share, domain_destroy ---

#[test]
fn create_hands_out_zeroed_owned_frames_with_the_m2p_and_a_shared_shared_info() {
    let mut t = booted();
    let free = ram::free_count();
    let (d, shared_info, f) = create(&mut t, 8);
    assert_eq!(d, 1);
    assert_eq!(ram::free_count(), free - 9);
    assert_eq!(owner(shared_info), Some(Owner::SharedWith(DomainId(1))));
    assert_eq!(m2p::get(shared_info), m2p::INVALID_M2P_ENTRY);
    for (pfn, &mfn) in f.iter().enumerate() {
        assert_eq!(owner(mfn), Some(Owner::Domain(DomainId(1))));
        assert_eq!(m2p::get(mfn), pfn as u64);
        // SAFETY: a frame of the stand-in RAM, just handed out.
        assert!(unsafe { memory::frame_bytes(mfn) }.iter().all(|&b| b == 0));
        assert!(mfn.0 >= ram::NUCLEUS_FRAMES, "a nucleus frame handed out");
    }
}

#[test]
fn create_refuses_more_than_is_free_above_the_reserve_and_takes_nothing() {
    let mut t = booted();
    let free = ram::free_count();
    // The domain needs its frames and shared_info out of what is above the reserve.
    let most = free - NUCLEUS_RESERVE_FRAMES - 1;
    assert_eq!(
        call(&mut t, Syscall::DomainCreate, [most + 1, NAME, 3, MFNS, 0]),
        Err(SyscallError::BadArgument)
    );
    assert_eq!(ram::free_count(), free, "a refused domain took frames");
    assert_eq!(memory::table().unwrap().count_owned(DomainId(1)), 0);
    assert_eq!(
        call(&mut t, Syscall::DomainDestroy, [1, 0, 0, 0, 0]),
        Err(SyscallError::NotPermitted)
    );
    // Exactly what is available is granted, and the reserve is left.
    let (d, _, _) = create(&mut t, most);
    assert_eq!(ram::free_count(), NUCLEUS_RESERVE_FRAMES);
    assert_eq!(
        call(&mut t, Syscall::DomainShare, [d, 0, 0, 0, 0]),
        Err(SyscallError::BadArgument)
    );
    assert_eq!(
        ram::free_count(),
        NUCLEUS_RESERVE_FRAMES,
        "a grant frame out of the reserve"
    );
}

#[test]
fn create_refuses_bad_sizes_names_and_pointers_before_taking_anything() {
    let mut t = booted();
    let free = ram::free_count();
    let too_many = lifecycle::MAX_DOMAIN_FRAMES + 1;
    t.get_mut(GUEST_MANAGER).space = Some(
        AddressSpace::fake(0x9000)
            .with_bytes(NAME, b"one")
            .with_bytes(NAME + 0x100, b"a b")
            .with_writable(MFNS, 8 * 2048)
            .with_bytes(READ_ONLY, &[0; 4096]),
    );
    for (args, want) in [
        ([0, NAME, 3, MFNS, 0], SyscallError::BadArgument),
        ([too_many, NAME, 3, MFNS, 0], SyscallError::BadArgument),
        ([4, NAME, 25, MFNS, 0], SyscallError::BadArgument),
        ([4, NAME, 0, MFNS, 0], SyscallError::BadArgument),
        ([4, NAME + 0x100, 3, MFNS, 0], SyscallError::BadArgument),
        ([4, 0xdead_0000, 3, MFNS, 0], SyscallError::BadPointer),
        // The MFN list must be writable whole before a frame is taken.
        ([4, NAME, 3, READ_ONLY, 0], SyscallError::BadPointer),
        ([2047, NAME, 3, MFNS + 8, 0], SyscallError::BadPointer),
    ] {
        assert_eq!(
            call(&mut t, Syscall::DomainCreate, args),
            Err(want),
            "{args:x?}"
        );
        assert_eq!(ram::free_count(), free, "{args:x?} took frames");
    }
}

#[test]
fn at_most_max_domains_live_at_once() {
    let mut t = booted();
    for n in 1..=MAX_DOMAINS as u64 {
        assert_eq!(create(&mut t, 2).0, n);
    }
    let free = ram::free_count();
    assert_eq!(
        call(&mut t, Syscall::DomainCreate, [2, NAME, 3, MFNS, 0]),
        Err(SyscallError::BadArgument)
    );
    assert_eq!(ram::free_count(), free);
    // A number freed is given again.
    assert!(call(&mut t, Syscall::DomainDestroy, [2, 0, 0, 0, 0]).is_ok());
    assert_eq!(create(&mut t, 2).0, 2);
}

#[test]
fn destroy_gives_every_frame_back_clears_the_m2p_and_ends_the_number() {
    let mut t = booted();
    let free = ram::free_count();
    let (d, shared_info, f) = with_pinned_base(&mut t);
    let grant = Mfn(call(&mut t, Syscall::DomainShare, [d, 0, 0, 0, 0]).unwrap());
    assert_eq!(owner(grant), Some(Owner::SharedWith(DomainId(1))));
    assert!(call(&mut t, Syscall::DomainDestroy, [d, 0, 0, 0, 0]).is_ok());
    assert_eq!(ram::free_count(), free, "frames leaked");
    for &mfn in f.iter().chain([&shared_info, &grant]) {
        assert_eq!(owner(mfn), Some(Owner::Nobody), "{mfn:?}");
        assert_eq!(m2p::get(mfn), m2p::INVALID_M2P_ENTRY);
    }
    assert_eq!(
        call(&mut t, Syscall::DomainDestroy, [d, 0, 0, 0, 0]),
        Err(SyscallError::NotPermitted)
    );
    assert_eq!(
        call(&mut t, Syscall::DomainWrite, [d, f[5].0, 0, BUF, 8]),
        Err(SyscallError::NotPermitted)
    );
}

#[test]
fn the_guest_managers_end_gives_every_domains_frames_back() {
    let mut t = booted();
    let free = ram::free_count();
    create(&mut t, 4);
    with_pinned_base(&mut t);
    destroy_all();
    assert_eq!(ram::free_count(), free);
    assert_eq!(
        call(&mut t, Syscall::DomainDestroy, [1, 0, 0, 0, 0]),
        Err(SyscallError::NotPermitted)
    );
}
