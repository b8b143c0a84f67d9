//! The page-table hypercalls (issue 15 point 4): `mmu_update`, `update_va_mapping` and
//! `mmuext_op` read their argument blocks from the guest and hand each entry to the nucleus
//! as one [`MmuOp`]; the nucleus validates it (`bsp_x86_64::guest_tables`). Policy here is
//! only the ABI: which commands exist, batch progress (`pdone`), continuations for long
//! batches, and which flushes are no-ops (the nucleus reloads CR3 whenever it enters a guest,
//! and guest entries are never global).

use ipc::domain::MmuOp;
use xen_abi::layout::DOMID_SELF;
use xen_abi::mm::{MmuUpdate, MmuUpdateCmd, MmuextCmd, MmuextOp, decode_uvmf};
use xen_abi::{Errno, Hypercall};

use crate::guest_hypercalls::Outcome;
use crate::hypervisor::Hypervisor;

/// Entries one call handles before it continues (`rip -= 2`), so no batch holds pv-server.
pub const BATCH: u64 = 128;
/// Set in a continued batch's count: bits 32-62 carry how many entries were done before.
const PREEMPTED: u64 = 1 << 63;

/// True for the hypercalls this module answers.
pub fn handles(number: u64) -> bool {
    matches!(
        Hypercall::from_raw(number),
        Some(Hypercall::MmuUpdate | Hypercall::UpdateVaMapping | Hypercall::MmuextOp)
    )
}

/// What the nucleus accepted that pv-server's own policy needs to know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The last `NEW_USER_BASEPTR` the nucleus took (0: user tables removed).
    pub user_baseptr: Option<u64>,
    /// The last `NEW_BASEPTR` the nucleus took: the kernel tables (the virtual CR3).
    pub kernel_baseptr: Option<u64>,
    /// The last `SET_LDT` the nucleus took: linear address and entries (call gates read it).
    pub ldt: Option<(u64, u64)>,
}

/// Answers one page-table hypercall of `domain` (see [`handles`]).
pub fn answer(hv: &mut impl Hypervisor, domain: u16, number: u64, args: [u64; 5]) -> Outcome {
    answer_with(hv, domain, number, args, &mut Effects::default())
}

/// [`answer`], noting in `effects` what was accepted.
pub fn answer_with(
    hv: &mut impl Hypervisor,
    domain: u16,
    number: u64,
    args: [u64; 5],
    effects: &mut Effects,
) -> Outcome {
    let result = match Hypercall::from_raw(number) {
        Some(Hypercall::MmuUpdate) => {
            batch(hv, domain, args, MmuUpdate::SIZE, mmu_update_entry, effects)
        }
        Some(Hypercall::MmuextOp) => batch(hv, domain, args, MmuextOp::SIZE, mmuext_entry, effects),
        Some(Hypercall::UpdateVaMapping) => update_va_mapping(hv, domain, args),
        _ => Err(Errno::Enosys),
    };
    result.unwrap_or_else(Outcome::from)
}

fn update_va_mapping(
    hv: &mut impl Hypervisor,
    domain: u16,
    [va, val, flags, ..]: [u64; 5],
) -> Result<Outcome, Errno> {
    decode_uvmf(flags).ok_or(Errno::Einval)?;
    hv.mmu(domain, MmuOp::UpdateVa { va, val })?;
    Ok(Outcome::Return(0))
}

/// One entry of a batch: what it asks of the nucleus (`None`: nothing to do).
type Entry<H> = fn(&mut H, u16, &[u8], &mut Effects) -> Result<(), Errno>;

fn mmu_update_entry<H: Hypervisor>(
    hv: &mut H,
    domain: u16,
    bytes: &[u8],
    _: &mut Effects,
) -> Result<(), Errno> {
    let mut block = [0u8; MmuUpdate::SIZE];
    block.copy_from_slice(bytes);
    let request = MmuUpdate::from_bytes(&block);
    match request.cmd() {
        MmuUpdateCmd::NormalPtUpdate | MmuUpdateCmd::PtUpdatePreserveAd => hv.mmu(
            domain,
            MmuOp::Update {
                ptr: request.target(),
                val: request.val,
            },
        ),
        // The nucleus checks the frame is the guest's and writes the M2P it keeps.
        MmuUpdateCmd::MachphysUpdate => hv.mmu(
            domain,
            MmuOp::MachphysUpdate {
                mfn: request.target() >> 12,
                pfn: request.val,
            },
        ),
        // No foreign translation.
        MmuUpdateCmd::PtUpdateNoTranslate => Err(Errno::Enosys),
    }
}

fn mmuext_entry<H: Hypervisor>(
    hv: &mut H,
    domain: u16,
    bytes: &[u8],
    effects: &mut Effects,
) -> Result<(), Errno> {
    let mut block = [0u8; MmuextOp::SIZE];
    block.copy_from_slice(bytes);
    let op = MmuextOp::from_bytes(&block);
    let mfn = op.arg1;
    let pin = |level| MmuOp::Pin { level, mfn };
    match MmuextCmd::from_raw(u64::from(op.cmd)) {
        Some(MmuextCmd::PinL1Table) => hv.mmu(domain, pin(1)),
        Some(MmuextCmd::PinL2Table) => hv.mmu(domain, pin(2)),
        Some(MmuextCmd::PinL3Table) => hv.mmu(domain, pin(3)),
        Some(MmuextCmd::PinL4Table) => hv.mmu(domain, pin(4)),
        Some(MmuextCmd::UnpinTable) => hv.mmu(domain, MmuOp::Unpin { mfn }),
        Some(MmuextCmd::NewBaseptr) => {
            hv.mmu(domain, MmuOp::NewBaseptr { mfn })?;
            effects.kernel_baseptr = Some(mfn);
            Ok(())
        }
        // The LDT's frames become descriptor pages in the nucleus (arg2: the entry count).
        Some(MmuextCmd::SetLdt) => {
            let (va, entries) = (op.arg1, op.arg2 & 0xffff_ffff);
            hv.mmu(domain, MmuOp::SetLdt { va, entries })?;
            effects.ldt = Some((va, entries));
            Ok(())
        }
        // The L4 the guest's user mode runs on (0: none); the nucleus validates it.
        Some(MmuextCmd::NewUserBaseptr) => {
            hv.mmu(domain, MmuOp::NewUserBaseptr { mfn })?;
            effects.user_baseptr = Some(mfn);
            Ok(())
        }
        // Every entry into a guest reloads CR3 and guest entries are never global, so a
        // local flush has already happened by the time the guest runs again.
        Some(MmuextCmd::TlbFlushLocal | MmuextCmd::InvlpgLocal) => Ok(()),
        _ => Err(Errno::Enosys),
    }
}

/// A batch `(blocks, count, pdone, foreigndom)` of `size`-byte entries.
fn batch<H: Hypervisor>(
    hv: &mut H,
    domain: u16,
    [blocks, raw_count, pdone, foreigndom, _]: [u64; 5],
    size: usize,
    entry: Entry<H>,
    effects: &mut Effects,
) -> Result<Outcome, Errno> {
    if foreigndom != u64::from(DOMID_SELF) && foreigndom != u64::from(domain) {
        return Err(Errno::Esrch);
    }
    let (count, done_before) = if raw_count & PREEMPTED != 0 {
        (raw_count & 0xffff_ffff, (raw_count >> 32) & 0x7fff_ffff)
    } else {
        (raw_count, 0)
    };
    if count > u64::from(u32::MAX) {
        return Err(Errno::Einval);
    }
    let now = count.min(BATCH);
    let mut done = 0;
    let mut failed = None;
    let mut bytes = [0u8; MmuextOp::SIZE];
    while done < now {
        let Some(va) = (size as u64)
            .checked_mul(done)
            .and_then(|offset| blocks.checked_add(offset))
        else {
            failed = Some(Errno::Efault);
            break;
        };
        if let Err(errno) = hv.guest_read(domain, va, &mut bytes[..size]) {
            failed = Some(errno);
            break;
        }
        if let Err(errno) = entry(hv, domain, &bytes[..size], effects) {
            failed = Some(errno);
            break;
        }
        done += 1;
    }
    let total = done_before + done;
    if failed.is_none() && now < count {
        let next = blocks + size as u64 * now;
        let rest = PREEMPTED | total << 32 | (count - now);
        return Ok(Outcome::Continue([next, rest, pdone, foreigndom, 0]));
    }
    if pdone != 0 {
        hv.guest_write(domain, pdone, &(total as u32).to_le_bytes())?;
    }
    match failed {
        Some(errno) => Err(errno),
        None => Ok(Outcome::Return(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::FakeHypervisor;

    fn mmu_update_block(entries: &[(u64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(ptr, val)| MmuUpdate { ptr, val }.to_bytes())
            .collect()
    }

    #[test]
    fn mmu_update_hands_each_entry_to_the_nucleus_and_reports_done() {
        let mut hv = FakeHypervisor::default();
        hv.memory.insert(
            0x5000,
            mmu_update_block(&[(0x10_0008, 0x20_0067), (0x10_0010, 0)]),
        );
        hv.memory.insert(0x6000, vec![0xff; 4]);
        let outcome = answer(
            &mut hv,
            1,
            Hypercall::MmuUpdate.raw().into(),
            [0x5000, 2, 0x6000, DOMID_SELF.into(), 0],
        );
        assert_eq!(outcome, Outcome::Return(0));
        assert_eq!(
            hv.mmu_ops,
            vec![
                MmuOp::Update {
                    ptr: 0x10_0008,
                    val: 0x20_0067
                },
                MmuOp::Update {
                    ptr: 0x10_0010,
                    val: 0
                }
            ]
        );
        assert_eq!(hv.memory[&0x6000], 2u32.to_le_bytes());
    }

    #[test]
    fn machphys_update_names_the_frame_and_no_translate_is_enosys() {
        let mut hv = FakeHypervisor::default();
        // MMU_MACHPHYS_UPDATE (command 1) on frame 0x123, then PT_UPDATE_NO_TRANSLATE (3).
        hv.memory.insert(
            0x5000,
            mmu_update_block(&[(0x12_3000 | 1, 0x42), (0x10_0008 | 3, 0)]),
        );
        let outcome = answer(&mut hv, 1, 1, [0x5000, 2, 0, DOMID_SELF.into(), 0]);
        assert_eq!(outcome, Outcome::Return(Errno::Enosys.rax()));
        assert_eq!(
            hv.mmu_ops,
            vec![MmuOp::MachphysUpdate {
                mfn: 0x123,
                pfn: 0x42
            }]
        );
    }

    #[test]
    fn a_refused_entry_stops_the_batch_with_its_errno() {
        let mut hv = FakeHypervisor {
            refuse_after: Some(1),
            ..Default::default()
        };
        hv.memory.insert(
            0x5000,
            mmu_update_block(&[(0x10_0008, 1), (0x10_0010, 2), (0x10_0018, 3)]),
        );
        hv.memory.insert(0x6000, vec![0; 4]);
        let outcome = answer(&mut hv, 1, 1, [0x5000, 3, 0x6000, DOMID_SELF.into(), 0]);
        assert_eq!(outcome, Outcome::Return(Errno::Einval.rax()));
        assert_eq!(hv.memory[&0x6000], 1u32.to_le_bytes());
    }

    #[test]
    fn unreadable_blocks_are_efault_and_foreign_domains_esrch() {
        let mut hv = FakeHypervisor::default();
        let outcome = answer(&mut hv, 1, 1, [0xdead_0000, 1, 0, DOMID_SELF.into(), 0]);
        assert_eq!(outcome, Outcome::Return(Errno::Efault.rax()));
        let outcome = answer(&mut hv, 1, 1, [0x5000, 1, 0, 7, 0]);
        assert_eq!(outcome, Outcome::Return(Errno::Esrch.rax()));
        assert!(hv.mmu_ops.is_empty());
    }

    #[test]
    fn long_batches_continue_and_count_on() {
        let mut hv = FakeHypervisor::default();
        let entries: Vec<(u64, u64)> = (0..BATCH + 3).map(|i| (0x10_0000 + 8 * i, 0)).collect();
        hv.memory.insert(0x5000, mmu_update_block(&entries));
        hv.memory.insert(0x9000, vec![0; 4]);
        let Outcome::Continue(next) = answer(
            &mut hv,
            1,
            1,
            [0x5000, BATCH + 3, 0x9000, DOMID_SELF.into(), 0],
        ) else {
            panic!("expected a continuation");
        };
        assert_eq!(next[0], 0x5000 + 16 * BATCH);
        let outcome = answer(&mut hv, 1, 1, next);
        assert_eq!(outcome, Outcome::Return(0));
        assert_eq!(hv.mmu_ops.len() as u64, BATCH + 3);
        assert_eq!(hv.memory[&0x9000], ((BATCH + 3) as u32).to_le_bytes());
    }

    #[test]
    fn mmuext_pins_unpins_and_switches_base() {
        let mut hv = FakeHypervisor::default();
        let ops: Vec<u8> = [(3u32, 0x42u64), (4, 0x42), (5, 0x43), (6, 0), (7, 0x1000)]
            .iter()
            .flat_map(|&(cmd, arg1)| {
                MmuextOp {
                    cmd,
                    arg1,
                    ..Default::default()
                }
                .to_bytes()
            })
            .collect();
        hv.memory.insert(0x5000, ops);
        let outcome = answer(&mut hv, 2, 26, [0x5000, 5, 0, DOMID_SELF.into(), 0]);
        assert_eq!(outcome, Outcome::Return(0));
        assert_eq!(
            hv.mmu_ops,
            vec![
                MmuOp::Pin {
                    level: 4,
                    mfn: 0x42
                },
                MmuOp::Unpin { mfn: 0x42 },
                MmuOp::NewBaseptr { mfn: 0x43 }
            ]
        );
        let unknown = MmuextOp {
            cmd: 17,
            ..Default::default()
        };
        hv.memory.insert(0x7000, unknown.to_bytes().to_vec());
        let outcome = answer(&mut hv, 2, 26, [0x7000, 1, 0, DOMID_SELF.into(), 0]);
        assert_eq!(outcome, Outcome::Return(Errno::Enosys.rax()));
    }

    #[test]
    fn update_va_mapping_checks_its_flags() {
        let mut hv = FakeHypervisor::default();
        assert_eq!(
            answer(&mut hv, 1, 14, [0x4000, 0x67, 2, 0, 0]),
            Outcome::Return(0)
        );
        assert_eq!(
            hv.mmu_ops,
            vec![MmuOp::UpdateVa {
                va: 0x4000,
                val: 0x67
            }]
        );
        assert_eq!(
            answer(&mut hv, 1, 14, [0x4000, 0x67, 3, 0, 0]),
            Outcome::Return(Errno::Einval.rax())
        );
    }
}
