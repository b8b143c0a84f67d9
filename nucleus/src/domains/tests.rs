//! The guest-manager calls over the host stand-ins (`host::mm`: RAM, the frame allocator,
//! the M2P): each check that protects the nucleus, another domain or a page table, called
//! the way pv-server calls it (registers in, RAX out), with the state it must leave alone.
use super::memory::DirectTables;
use super::*;
use crate::host::kit;
use crate::host::mm::{m2p, memory as ram};
use crate::mm::AddressSpace;
use crate::thread::GUEST_MANAGER;
use bsp_x86_64::frame_owner::{DomainId, Owner};
use bsp_x86_64::guest_tables::TableMemory;
use ipc::domain::{COPY_MAX, COPY_TO_GUEST, MAX_DOMAINS, NUCLEUS_RESERVE_FRAMES};
use xen_abi::Mfn;
use xen_abi::layout::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

/// pv-server's stand-in memory: a name, the MFN list, scratch, read-only bytes.
const NAME: u64 = 0x1000;
const MFNS: u64 = 0x10_0000;
const BUF: u64 = 0x20_0000;
const READ_ONLY: u64 = 0x30_0000;
/// A frame of the nucleus (below the stand-in allocator's first).
const NUCLEUS_FRAME: u64 = 3;

const P: u64 = 1;
const RW: u64 = 2;
const U: u64 = 4;

/// The thread table booted, the frame table built, pv-server's memory mapped.
fn booted() -> Threads {
    let mut t = kit::booted();
    assert!(memory::init() && window::init());
    let space = AddressSpace::fake(0x9000)
        .with_bytes(NAME, b"one")
        .with_writable(MFNS, 8 * 2048)
        .with_writable(BUF, 8192)
        .with_bytes(READ_ONLY, &[0xaa; 4096]);
    t.get_mut(GUEST_MANAGER).space = Some(space);
    t
}

fn space(t: &Threads) -> &AddressSpace {
    t.get(GUEST_MANAGER).space.as_ref().unwrap()
}

/// Guest-manager call `call` with `args` in RDI, RSI, RDX, R10, R8.
fn call(t: &mut Threads, call: Syscall, args: [u64; 5]) -> Result<u64, SyscallError> {
    let mut frame = Frame::ZERO;
    let g = &mut frame.gprs;
    (g.rdi, g.rsi, g.rdx, g.r10, g.r8) = (args[0], args[1], args[2], args[3], args[4]);
    syscall(t, GUEST_MANAGER, call, &frame)
}

fn errno(e: Errno) -> Result<u64, SyscallError> {
    Ok(u64::from(e.raw()))
}

/// A domain of `frames` frames: its number, shared_info and frames in pfn order.
fn create(t: &mut Threads, frames: u64) -> (u64, Mfn, Vec<Mfn>) {
    let number = call(t, Syscall::DomainCreate, [frames, NAME, 3, MFNS, 0]).expect("created");
    let list = space(t).bytes(MFNS, 8 * (frames as usize + 1));
    let mut mfns: Vec<Mfn> = list
        .chunks_exact(8)
        .map(|w| Mfn(u64::from_le_bytes(w.try_into().unwrap())))
        .collect();
    let shared_info = mfns.remove(0);
    (number, shared_info, mfns)
}

fn write(
    t: &mut Threads,
    d: u64,
    mfn: Mfn,
    offset: u64,
    bytes: &[u8],
) -> Result<u64, SyscallError> {
    space(t).write(BUF, bytes).unwrap();
    call(
        t,
        Syscall::DomainWrite,
        [d, mfn.0, offset, BUF, bytes.len() as u64],
    )
}

fn put_entry(t: &mut Threads, d: u64, table: Mfn, index: u64, entry: u64) {
    assert_eq!(write(t, d, table, index * 8, &entry.to_le_bytes()), Ok(0));
}

/// Frame `mfn`'s word `index` as the hardware would read it.
fn word(mfn: Mfn, index: usize) -> u64 {
    DirectTables.read(mfn, index)
}

fn mmu(t: &mut Threads, d: u64, op: MmuOp) -> Result<u64, SyscallError> {
    let (a, b, c) = op.encode();
    call(t, Syscall::DomainMmu, [d, a, b, c, 0])
}

fn entry(mfn: Mfn, flags: u64) -> u64 {
    (mfn.0 << 12) | flags
}

/// Tables mapping VA 0 on: frames 0-3 are L4, L3, L2, L1; L1 entry `i` maps frame `4 + i`
/// (read-write) for the data pages and, at index 8, the L1 itself read-only. Not pinned.
fn with_tables(t: &mut Threads, d: u64, f: &[Mfn]) {
    put_entry(t, d, f[0], 0, entry(f[1], P | RW | U));
    put_entry(t, d, f[1], 0, entry(f[2], P | RW | U));
    put_entry(t, d, f[2], 0, entry(f[3], P | RW | U));
    for i in 0..4 {
        put_entry(t, d, f[3], i, entry(f[4 + i as usize], P | RW | U));
    }
    put_entry(t, d, f[3], 8, entry(f[3], P | U));
}

/// A domain of 16 frames with [`with_tables`] pinned and made its base.
fn with_pinned_base(t: &mut Threads) -> (u64, Mfn, Vec<Mfn>) {
    let (d, shared_info, f) = create(t, 16);
    with_tables(t, d, &f);
    assert_eq!(
        mmu(
            t,
            d,
            MmuOp::Pin {
                level: 4,
                mfn: f[0].0
            }
        ),
        Ok(0)
    );
    assert_eq!(mmu(t, d, MmuOp::NewBaseptr { mfn: f[0].0 }), Ok(0));
    (d, shared_info, f)
}

fn owner(mfn: Mfn) -> Option<Owner> {
    memory::table().unwrap().owner(mfn)
}

// --- the domain table ---

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

// --- domain_write, domain_read, guest_copy ---

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

// --- domain_mmu ---

#[test]
fn a_validated_l4_gets_the_nucleus_slots_and_no_guest_entry_may_go_there() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let window = ram::nucleus_root_entry(0).raw();
    for slot in 256..272 {
        assert_eq!(word(f[0], slot), window, "slot {slot}");
        let ptr = (f[0].0 << 12) | (slot as u64 * 8);
        assert_ne!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr,
                    val: entry(f[9], P | RW | U)
                }
            ),
            Ok(0)
        );
        assert_eq!(word(f[0], slot), window, "slot {slot} changed");
    }
    assert_eq!(word(f[0], 255), 0);
    assert_eq!(word(f[0], 272), 0);
    // The guest's own slots it may use (a fresh L3 at slot 272).
    let ptr = (f[0].0 << 12) | (272 * 8);
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr,
                val: entry(f[9], P | RW | U)
            }
        ),
        Ok(0)
    );
}

#[test]
fn an_entry_may_map_only_frames_the_domain_owns_or_shares() {
    let mut t = booted();
    let (d, shared_info, f) = with_pinned_base(&mut t);
    let (_, _, other) = create(&mut t, 4);
    let slot = |i: u64| (f[3].0 << 12) | (i * 8);
    for target in [other[0], Mfn(NUCLEUS_FRAME)] {
        assert_ne!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr: slot(20),
                    val: entry(target, P | U)
                }
            ),
            Ok(0)
        );
        assert_eq!(word(f[3], 20), 0, "{target:?} mapped");
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(20),
                val: entry(shared_info, P | RW | U)
            }
        ),
        Ok(0)
    );
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(21),
                val: entry(f[10], P | RW | U)
            }
        ),
        Ok(0)
    );
    // A table's entry must name a table of that table's own domain.
    let (_, _, g) = with_pinned_base(&mut t);
    assert_ne!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: (f[2].0 << 12) | 8,
                val: entry(g[3], P | RW | U)
            }
        ),
        Ok(0)
    );
}

#[test]
fn a_page_table_is_never_mapped_writable() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let slot = |i: u64| (f[3].0 << 12) | (i * 8);
    for table in &f[..4] {
        assert_eq!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr: slot(30),
                    val: entry(*table, P | RW | U)
                }
            ),
            errno(Errno::Ebusy)
        );
        assert_eq!(word(f[3], 30), 0, "{table:?} mapped writable");
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(30),
                val: entry(f[2], P | U)
            }
        ),
        Ok(0)
    );
    // A frame mapped writable cannot become a table either.
    let (e, _, g) = create(&mut t, 16);
    with_tables(&mut t, e, &g);
    put_entry(&mut t, e, g[3], 9, entry(g[2], P | RW | U));
    assert_ne!(
        mmu(
            &mut t,
            e,
            MmuOp::Pin {
                level: 4,
                mfn: g[0].0
            }
        ),
        Ok(0)
    );
    // All or nothing: no frame of the refused tree kept a table type.
    for table in &g[..4] {
        assert_eq!(
            memory::table().unwrap().info(*table).unwrap().type_count(),
            0
        );
    }
    assert_eq!(write(&mut t, e, g[3], 9 * 8, &[0; 8]), Ok(0));
}

#[test]
fn update_va_mapping_refuses_the_hypervisor_window_and_non_canonical_addresses() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    // The window's tables are present (as on bare metal): only the check keeps a guest
    // entry out of the nucleus' L1.
    let l1 = Mfn(ram::WINDOW_TABLES[2]);
    for va in [
        0xffff_8000_0000_0000,
        0xffff_87ff_ffff_f000,
        0x0000_8000_0000_0000,
    ] {
        let before = word(l1, ((va >> 12) & 511) as usize);
        assert_eq!(
            mmu(
                &mut t,
                d,
                MmuOp::UpdateVa {
                    va,
                    val: entry(f[9], P | RW | U)
                }
            ),
            errno(Errno::Einval),
            "{va:#x}"
        );
        assert_eq!(
            word(l1, ((va >> 12) & 511) as usize),
            before,
            "{va:#x}: the nucleus' L1 changed"
        );
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::UpdateVa {
                va: 0x5000,
                val: entry(f[9], P | RW | U)
            }
        ),
        Ok(0)
    );
    assert_eq!(word(f[3], 5) & 0x000f_ffff_ffff_f000, f[9].0 << 12);
}

#[test]
fn machphys_update_changes_only_the_domains_own_frames() {
    let mut t = booted();
    let (d, shared_info, f) = create(&mut t, 4);
    let (_, _, other) = create(&mut t, 4);
    for mfn in [shared_info, other[0], Mfn(NUCLEUS_FRAME)] {
        assert_eq!(
            mmu(&mut t, d, MmuOp::MachphysUpdate { mfn: mfn.0, pfn: 7 }),
            errno(Errno::Eperm)
        );
        assert_ne!(m2p::get(mfn), 7);
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::MachphysUpdate {
                mfn: f[0].0,
                pfn: 7
            }
        ),
        Ok(0)
    );
    assert_eq!(m2p::get(f[0]), 7);
}

#[test]
fn pins_unpins_and_baseptrs_name_only_the_domains_own_tables() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let (e, _, g) = with_pinned_base(&mut t);
    assert_ne!(mmu(&mut t, d, MmuOp::Unpin { mfn: g[0].0 }), Ok(0));
    assert_ne!(mmu(&mut t, d, MmuOp::NewBaseptr { mfn: g[0].0 }), Ok(0));
    assert_ne!(
        mmu(
            &mut t,
            d,
            MmuOp::Pin {
                level: 4,
                mfn: g[0].0
            }
        ),
        Ok(0)
    );
    assert_ne!(
        mmu(&mut t, d, MmuOp::NewBaseptr { mfn: NUCLEUS_FRAME }),
        Ok(0)
    );
    assert_eq!(registry::domain(d as u16).base, Some(f[0]));
    assert_eq!(registry::domain(e as u16).base, Some(g[0]));
    assert!(memory::table().unwrap().info(g[0]).unwrap().is_pinned());
}

// --- vcpu_start, vcpu_segment_base ---

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
