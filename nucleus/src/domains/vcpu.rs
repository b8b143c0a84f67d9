//! `vcpu_start`: a domain's vCPU 0 starts on registers `guest_return` accepts and an L4
//! the frame table validates. `vcpu_segment_base`: its FS/GS bases (`guest_segments`),
//! loaded by the scheduler each time it runs.
use super::mmu::{get_l4, put_l4};
use super::registry::domain;
use crate::thread::Threads;
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::guest_return::{self, GuestDescriptors, GuestReturn};
use bsp_x86_64::paging::PhysAddr;
use ipc::domain::VcpuStart;
use xen_abi::{Errno, Mfn};

/// Starts domain `number`'s vCPU on `regs` (it must not be running).
pub fn start(t: &mut Threads, number: u16, regs: &VcpuStart) -> Result<(), Errno> {
    let id = t.guest_id(number).ok_or(Errno::Einval)?;
    if !t.get(id).is_absent() {
        return Err(Errno::Eexist);
    }
    let checked = guest_return::check(
        GuestReturn {
            rip: regs.rip,
            cs: regs.cs,
            rflags: regs.rflags,
            rsp: regs.rsp,
            ss: regs.ss,
        },
        GuestDescriptors::default(),
    )
    .map_err(|_| Errno::Einval)?;
    if regs.cr3 & 0xfff != 0 {
        return Err(Errno::Einval);
    }
    let l4 = Mfn(regs.cr3 >> 12);
    get_l4(number, l4)?;
    if let Some(old) = domain(number).base.replace(l4) {
        let _ = put_l4(number, old);
    }
    let mut frame = Frame::ZERO;
    frame.ret.rip = checked.rip;
    frame.ret.rsp = checked.rsp;
    frame.ret.rflags = checked.rflags;
    frame.ret.cs = CsQword::from_raw(u64::from(checked.cs));
    frame.ret.ss = SsQword::from_raw(u64::from(checked.ss));
    frame.gprs.rsi = regs.rsi;
    place(t, id, number, regs.cpu);
    t.get_mut(id).start_guest(PhysAddr::new(regs.cr3), frame);

    super::descriptors::track(t, number);
    Ok(())
}

/// Places domain `number`'s vCPU `id` (`Threads::place_guest`: its `cpu=` if that CPU is
/// online, else the least loaded online CPU) and says where when there is more than one CPU.
fn place(t: &mut Threads, id: crate::thread::ThreadId, number: u16, pinned: Option<u8>) {
    use crate::thread::Placement;
    let online = crate::cpu::online_mask();
    let placement = t.place_guest(id, pinned, online);
    crate::cpu::run_threads_on(usize::from(placement.cpu()));
    let name = &domain(number).name;
    match placement {
        _ if online.count_ones() <= 1 && pinned.is_none() => {}
        Placement::Pinned(cpu) => println!("nucleus: guest {name} runs on cpu {cpu} (cpu=)"),
        Placement::Spread(cpu) => println!("nucleus: guest {name} runs on cpu {cpu}"),
        Placement::NotOnline { asked, cpu } => println!(
            "nucleus: guest {name}: cpu={asked}: cpu {asked} is not online; it runs on cpu {cpu}"
        ),
    }
}

/// `vcpu_selectors`: domain `number`'s vCPU (waiting for pv-server, so its selectors are
/// the saved ones) keeps only the DS, ES and FS selectors that still load on its tables;
/// the others become null. The mask of those made null and the four as they were.
pub fn selectors(t: &mut Threads, number: u16) -> Result<(u64, [u16; 4]), Errno> {
    use bsp_x86_64::guest_selectors::loadable;
    let id = t.guest_id(number).ok_or(Errno::Einval)?;
    if t.get(id).is_absent() {
        return Err(Errno::Esrch);
    }
    let thread = t.get_mut(id);
    if crate::cpu::selectors_owner() == Some(id.index()) && !thread.selectors_stale {
        // This CPU still holds them (only servers ran since): take them from there.
        thread.selectors = crate::cpu::data_selectors_left();
    }
    // The next switch in loads them again, the null ones included.
    thread.selectors_stale = true;
    let before = thread.selectors;
    let view = thread.tables;
    let mut mask = 0;
    let s = &mut thread.selectors;
    for (bit, sel) in [&mut s.ds, &mut s.es, &mut s.fs].into_iter().enumerate() {
        if !loadable(*sel, crate::cpu::tables::guest_descriptor(view, *sel)) {
            *sel = 0;
            mask |= 1 << bit;
        }
    }
    Ok((mask, before.words()))
}

/// `set_segment_base(which, base)` for domain `number`'s vCPU (it is waiting for the answer
/// to that hypercall, so it is not live: the scheduler loads the bases when it next runs).
pub fn segment_base(t: &mut Threads, number: u16, which: u64, base: u64) -> Result<(), Errno> {
    let id = t.guest_id(number).ok_or(Errno::Einval)?;
    let thread = t.get_mut(id);
    if thread.is_absent() {
        return Err(Errno::Esrch);
    }
    thread.bases.set(which, base)
}
