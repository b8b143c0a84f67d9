//! The hypercalls that set up a vCPU's virtual IDT (pv64-abi.md §4.1, §4.4-4.6):
//! `set_trap_table`, `stack_switch`, `set_callbacks`, `callback_op` and `fpu_taskswitch`.
//! (`iret` is [`super::iret`]: it answers with a new context, not a value.)

use xen_abi::traps::{
    CALLBACKF_MASK_EVENTS, CallbackOpCmd, CallbackRegister, CallbackType, TrapInfo,
};
use xen_abi::{Errno, Hypercall};

use super::{Callback, TrapEntry, VcpuTraps, canonical};
use crate::guest_hypercalls::{GuestMemory, Outcome};

/// Entries one `set_trap_table` call copies before it continues (`rip -= 2`).
pub const TRAP_TABLE_BATCH: u64 = 64;

/// True for the hypercalls this module answers.
pub fn handles(number: u64) -> bool {
    matches!(
        Hypercall::from_raw(number),
        Some(
            Hypercall::SetTrapTable
                | Hypercall::StackSwitch
                | Hypercall::SetCallbacks
                | Hypercall::CallbackOp
                | Hypercall::FpuTaskswitch
        )
    )
}

/// Answers hypercall `number` (see [`handles`]).
pub fn answer(
    traps: &mut VcpuTraps,
    number: u64,
    args: [u64; 5],
    memory: &mut impl GuestMemory,
) -> Outcome {
    let result = match Hypercall::from_raw(number) {
        Some(Hypercall::SetTrapTable) => set_trap_table(traps, args[0], memory),
        Some(Hypercall::StackSwitch) => {
            // The selector gets RPL 3; Xen takes any value and so does this.
            traps.kernel_ss = (args[0] as u16) | 3;
            traps.kernel_sp = args[1];
            Ok(Outcome::Return(0))
        }
        Some(Hypercall::SetCallbacks) => {
            // Registered with flags 0, errors ignored, always 0 (Xen's `do_set_callbacks`).
            for (kind, address) in [
                (CallbackType::Event, args[0]),
                (CallbackType::Failsafe, args[1]),
                (CallbackType::Syscall, args[2]),
            ] {
                let _ = register(traps, kind, 0, address);
            }
            Ok(Outcome::Return(0))
        }
        Some(Hypercall::CallbackOp) => callback_op(traps, args, memory),
        Some(Hypercall::FpuTaskswitch) => {
            traps.virtual_ts = args[0] != 0;
            Ok(Outcome::Return(0))
        }
        _ => Err(Errno::Enosys),
    };
    result.unwrap_or_else(Outcome::from)
}

fn guest_read(memory: &mut impl GuestMemory, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let last = va.checked_add(buf.len() as u64 - 1).ok_or(Errno::Efault)?;
    if !canonical(va)
        || !canonical(last)
        || xen_abi::layout::in_hypervisor_window(va)
        || xen_abi::layout::in_hypervisor_window(last)
    {
        return Err(Errno::Efault);
    }
    memory.read(va, buf).map_err(|_| Errno::Efault)
}

/// `set_trap_table(table)`: NULL clears every entry; otherwise entries are copied until one
/// with address 0, each overwriting its vector's (a non-canonical address stops with
/// `-EINVAL`, what came before stays).
fn set_trap_table(
    traps: &mut VcpuTraps,
    table: u64,
    memory: &mut impl GuestMemory,
) -> Result<Outcome, Errno> {
    if table == 0 {
        traps.table = [TrapEntry::default(); 256];
        traps.table_set = false;
        return Ok(Outcome::Return(0));
    }
    for i in 0..TRAP_TABLE_BATCH {
        let mut bytes = [0u8; TrapInfo::SIZE];
        let at = table
            .checked_add(i * TrapInfo::SIZE as u64)
            .ok_or(Errno::Efault)?;
        guest_read(memory, at, &mut bytes)?;
        let info = TrapInfo::from_bytes(&bytes);
        if info.address == 0 {
            return Ok(Outcome::Return(0));
        }
        if !canonical(info.address) {
            return Err(Errno::Einval);
        }
        traps.table[usize::from(info.vector)] = TrapEntry {
            flags: info.flags,
            address: info.address,
        };
        traps.table_set = true;
    }
    let next = table + TRAP_TABLE_BATCH * TrapInfo::SIZE as u64;
    Ok(Outcome::Continue([next, 0, 0, 0, 0]))
}

fn callback_op(
    traps: &mut VcpuTraps,
    [cmd, arg, ..]: [u64; 5],
    memory: &mut impl GuestMemory,
) -> Result<Outcome, Errno> {
    match CallbackOpCmd::from_raw(cmd) {
        Some(CallbackOpCmd::Register) => {
            let mut bytes = [0u8; CallbackRegister::SIZE];
            guest_read(memory, arg, &mut bytes)?;
            let reg = CallbackRegister::from_bytes(&bytes);
            let kind = CallbackType::from_raw(u64::from(reg.kind)).ok_or(Errno::Enosys)?;
            register(traps, kind, reg.flags, reg.address)?;
            Ok(Outcome::Return(0))
        }
        Some(CallbackOpCmd::Unregister) => {
            let mut bytes = [0u8; 4];
            guest_read(memory, arg, &mut bytes)?;
            match CallbackType::from_raw(u64::from(u16::from_le_bytes([bytes[0], bytes[1]]))) {
                Some(CallbackType::Nmi) => {
                    traps.table[2] = TrapEntry::default();
                    Ok(Outcome::Return(0))
                }
                // Xen never lets these go once registered.
                Some(_) => Err(Errno::Einval),
                None => Err(Errno::Enosys),
            }
        }
        None => Err(Errno::Enosys),
    }
}

/// Registers one callback (`register_guest_callback`).
fn register(
    traps: &mut VcpuTraps,
    kind: CallbackType,
    flags: u16,
    address: u64,
) -> Result<(), Errno> {
    if !canonical(address) {
        return Err(Errno::Einval);
    }
    let callback = Callback {
        address,
        mask_events: flags & CALLBACKF_MASK_EVENTS != 0,
    };
    match kind {
        CallbackType::Event => traps.event = callback,
        CallbackType::Failsafe => traps.failsafe = callback,
        CallbackType::Syscall => traps.syscall = callback,
        // Xen stores these for a 64-bit guest's 32-bit user code and answers 0; fredvisor
        // never runs guest code in compatibility mode, so they are kept and never entered.
        CallbackType::Syscall32 => traps.syscall32 = callback,
        CallbackType::Sysenter => traps.sysenter = callback,
        // The NMI callback is trap 2 with events masked.
        CallbackType::Nmi => {
            traps.table[2] = TrapEntry {
                flags: xen_abi::traps::TRAP_FLAG_MASK_EVENTS,
                address,
            }
        }
    }
    Ok(())
}
