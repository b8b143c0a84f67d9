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

mod access;
mod mmu;
mod table;
mod vcpu;
