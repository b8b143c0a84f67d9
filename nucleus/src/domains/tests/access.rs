//! Copies into and out of a domain's memory: domain_write, domain_read, guest_copy.
use super::*;

#[test]
fn domain_write_reaches_only_the_domains_frames_and_only_inside_one() {
    let mut t = booted();
    let (d, shared_info, f) = create(&mut t, 4);
    let (_, _, other) = create(&mut t, 4);
    assert_eq!(write(&mut t, d, f[1], 4088, &[7; 8]), Ok(0));
    assert_eq!(word(f[1], 511), u64::from_le_bytes([7; 8]));
    // shared_info is the domain's too (events are raised in it).
    assert_eq!(write(&mut t, d, shared_info, 0, &[1]), Ok(0));
    for (mfn, offset, len, want) in [
        (other[1].0, 0, 8, SyscallError::NotPermitted),
        (NUCLEUS_FRAME, 0, 8, SyscallError::NotPermitted),
        (ram::RAM_FRAMES + 5, 0, 8, SyscallError::NotPermitted),
        (f[1].0, 4089, 8, SyscallError::BadArgument),
        (f[1].0, u64::MAX, 2, SyscallError::BadArgument),
        (f[1].0, 0, 4097, SyscallError::BadArgument),
        (f[1].0, 0, 8192, SyscallError::BadArgument),
    ] {
        assert_eq!(
            call(&mut t, Syscall::DomainWrite, [d, mfn, offset, BUF, len]),
            Err(want),
            "frame {mfn:#x} offset {offset:#x} len {len}"
        );
    }
    assert_eq!(word(other[1], 0), 0);
    assert_eq!(word(Mfn(NUCLEUS_FRAME), 0), 0);
    // A bad source pointer copies nothing.
    assert_eq!(
        call(&mut t, Syscall::DomainWrite, [d, f[2].0, 0, 0xdead_0000, 8]),
        Err(SyscallError::BadPointer)
    );
    assert_eq!(word(f[2], 0), 0);
}

#[test]
fn domain_write_refuses_a_frame_in_use_as_a_page_table() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    for table in &f[..4] {
        let before = word(*table, 0);
        assert_eq!(
            write(&mut t, d, *table, 0, &[0xff; 8]),
            Err(SyscallError::NotPermitted)
        );
        assert_eq!(
            word(*table, 0),
            before,
            "a live table changed behind the checks"
        );
    }
    // A data page is written as asked.
    assert_eq!(write(&mut t, d, f[4], 0, &[0xff; 8]), Ok(0));
}

#[test]
fn domain_read_reads_the_domains_frames_into_writable_memory_only() {
    let mut t = booted();
    let (d, shared_info, f) = create(&mut t, 4);
    let (_, _, other) = create(&mut t, 4);
    assert_eq!(write(&mut t, d, shared_info, 0, &[5, 6]), Ok(0));
    space(&t).write(BUF, &[0, 0]).unwrap();
    assert_eq!(
        call(&mut t, Syscall::DomainRead, [d, shared_info.0, 0, BUF, 2]),
        Ok(0)
    );
    assert_eq!(space(&t).bytes(BUF, 2), [5, 6]);
    for (mfn, ptr, len, want) in [
        (other[0].0, BUF, 8, SyscallError::NotPermitted),
        (NUCLEUS_FRAME, BUF, 8, SyscallError::NotPermitted),
        (f[0].0, BUF, 4097, SyscallError::BadArgument),
        (f[0].0, READ_ONLY, 8, SyscallError::BadPointer),
    ] {
        assert_eq!(
            call(&mut t, Syscall::DomainRead, [d, mfn, 0, ptr, len]),
            Err(want)
        );
    }
}

#[test]
fn guest_copy_walks_the_guests_tables_with_the_guests_rights() {
    let mut t = booted();
    let (d, _, f) = create(&mut t, 16);
    with_tables(&mut t, d, &f);
    // No tables yet: nothing is mapped.
    assert_eq!(
        call(&mut t, Syscall::GuestCopy, [d, 0, BUF, 8, 0]),
        errno(Errno::Efault)
    );
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Pin {
                level: 4,
                mfn: f[0].0
            }
        ),
        Ok(0)
    );
    assert_eq!(mmu(&mut t, d, MmuOp::NewBaseptr { mfn: f[0].0 }), Ok(0));
    // Into the guest at VA 0x1ffc, across pages 1 and 2 (frames 5 and 6).
    space(&t).write(BUF, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(
        call(
            &mut t,
            Syscall::GuestCopy,
            [d, 0x1ffc, BUF, 8 | COPY_TO_GUEST, 0]
        ),
        Ok(0)
    );
    assert_eq!(
        word(f[5], 511) >> 32,
        u64::from(u32::from_le_bytes([1, 2, 3, 4]))
    );
    assert_eq!(word(f[6], 0) as u32, u32::from_le_bytes([5, 6, 7, 8]));
    // And back out.
    assert_eq!(
        call(&mut t, Syscall::GuestCopy, [d, 0x1ffc, BUF + 16, 8, 0]),
        Ok(0)
    );
    assert_eq!(space(&t).bytes(BUF + 16, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    // The L1 is mapped read-only at 0x8000: readable, never written through a copy.
    assert_eq!(
        call(&mut t, Syscall::GuestCopy, [d, 0x8000, BUF, 8, 0]),
        Ok(0)
    );
    let l1 = word(f[3], 0);
    assert_eq!(
        call(
            &mut t,
            Syscall::GuestCopy,
            [d, 0x8000, BUF, 8 | COPY_TO_GUEST, 0]
        ),
        errno(Errno::Efault)
    );
    assert_eq!(word(f[3], 0), l1);
    // Unmapped, in the hypervisor's window, non-canonical: -EFAULT.
    for va in [
        0x5000,
        0xffff_8000_0000_0000,
        0xffff_8400_0000_0000,
        0x0000_8000_0000_0000,
    ] {
        assert_eq!(
            call(&mut t, Syscall::GuestCopy, [d, va, BUF, 8, 0]),
            errno(Errno::Efault),
            "{va:#x}"
        );
    }
    // A copy that runs into an unmapped page writes nothing, not even its mapped part.
    space(&t).write(BUF, &[9; 16]).unwrap();
    assert_eq!(
        call(
            &mut t,
            Syscall::GuestCopy,
            [d, 0x3ff8, BUF, 16 | COPY_TO_GUEST, 0]
        ),
        errno(Errno::Efault)
    );
    assert_eq!(word(f[7], 511), 0);
    // pv-server's side is checked whole first, and copies are at most COPY_MAX.
    assert_eq!(
        call(&mut t, Syscall::GuestCopy, [d, 0x1000, READ_ONLY, 8, 0]),
        Err(SyscallError::BadPointer)
    );
    assert_eq!(
        call(
            &mut t,
            Syscall::GuestCopy,
            [d, 0x1000, BUF, COPY_MAX + 1, 0]
        ),
        Err(SyscallError::BadArgument)
    );
}
