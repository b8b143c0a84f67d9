use super::*;
use crate::guest_hypercalls::tests::Fake;
use crate::shared_page::tests::Page;
use crate::shared_page::{UPCALL_MASK, vcpu_field};

const ARG: u64 = 0x5000;

fn world() -> (EventChannels, Fake, Page) {
    (
        EventChannels::new(3, 1),
        Fake::with_pages(&[ARG]),
        Page::default(),
    )
}

fn bind_timer(ch: &mut EventChannels, mem: &mut Fake, page: &mut Page) -> Result<u32, Errno> {
    mem.put(
        ARG,
        &EvtchnBindVirq {
            virq: 0,
            vcpu: 0,
            port: 0,
        }
        .to_bytes(),
    );
    ch.op(EvtchnOpCmd::BindVirq.raw().into(), ARG, mem, page)?;
    Ok(u32::from_le_bytes(mem.get(ARG + 8, 4).try_into().unwrap()))
}

fn port_op(
    ch: &mut EventChannels,
    cmd: EvtchnOpCmd,
    port: u32,
    mem: &mut Fake,
    page: &mut Page,
) -> Result<u64, Errno> {
    mem.put(ARG, &port.to_le_bytes());
    ch.op(cmd.raw().into(), ARG, mem, page)
}

#[test]
fn bind_virq_timer_and_its_refusals() {
    let (mut ch, mut mem, mut page) = world();
    assert_eq!(bind_timer(&mut ch, &mut mem, &mut page), Ok(1));
    assert_eq!(bind_timer(&mut ch, &mut mem, &mut page), Err(Errno::Eexist));
    assert_eq!(ch.virq_port(Virq::Timer, 0), Some(1));
    for (virq, vcpu, errno) in [
        (24, 0, Errno::Einval),
        (0, 1, Errno::Enoent),
        (2, 1, Errno::Einval),
    ] {
        mem.put(
            ARG,
            &EvtchnBindVirq {
                virq,
                vcpu,
                port: 0,
            }
            .to_bytes(),
        );
        assert_eq!(
            ch.op(1, ARG, &mut mem, &mut page),
            Err(errno),
            "virq {virq} vcpu {vcpu}"
        );
    }
    assert_eq!(
        ch.op(1, 0xffff_8000_0000_0000, &mut mem, &mut page),
        Err(Errno::Efault)
    );
    assert_eq!(ch.op(1, 0x9000, &mut mem, &mut page), Err(Errno::Efault));
    assert_eq!(
        ch.op(11, ARG, &mut mem, &mut page),
        Err(Errno::Enosys),
        "init_control"
    );
}

#[test]
fn alloc_unbound_status_send_close() {
    let (mut ch, mut mem, mut page) = world();
    mem.put(
        ARG,
        &EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: DOMID_SELF,
            port: 0,
        }
        .to_bytes(),
    );
    assert_eq!(ch.op(6, ARG, &mut mem, &mut page), Ok(0));
    assert_eq!(mem.get(ARG + 4, 4), 1u32.to_le_bytes());
    mem.put(
        ARG,
        &EvtchnAllocUnbound {
            dom: 9,
            remote_dom: 0,
            port: 0,
        }
        .to_bytes(),
    );
    assert_eq!(
        ch.op(6, ARG, &mut mem, &mut page),
        Err(Errno::Eperm),
        "for another domain"
    );
    // status of port 1: unbound, remote = ourselves.
    mem.put(
        ARG,
        &EvtchnStatusArg {
            dom: DOMID_SELF,
            port: 1,
            ..Default::default()
        }
        .to_bytes(),
    );
    assert_eq!(ch.op(5, ARG, &mut mem, &mut page), Ok(0));
    let status = EvtchnStatusArg::from_bytes(&mem.get(ARG, 24).try_into().unwrap());
    assert_eq!((status.status, status.detail[0]), (1, 3));
    // A send to an unbound port is dropped; to a closed one -EINVAL.
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Send, 1, &mut mem, &mut page),
        Ok(0)
    );
    assert_eq!(page.0[PENDING], 0);
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Send, 2, &mut mem, &mut page),
        Err(Errno::Einval)
    );
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Close, 1, &mut mem, &mut page),
        Ok(0)
    );
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Close, 1, &mut mem, &mut page),
        Err(Errno::Einval)
    );
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Close, 0, &mut mem, &mut page),
        Err(Errno::Einval)
    );
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Close, 5000, &mut mem, &mut page),
        Err(Errno::Einval)
    );
    mem.put(
        ARG,
        &EvtchnStatusArg {
            dom: DOMID_SELF,
            port: 1,
            ..Default::default()
        }
        .to_bytes(),
    );
    ch.op(5, ARG, &mut mem, &mut page).unwrap();
    assert_eq!(mem.get(ARG + 8, 4), 0u32.to_le_bytes(), "closed");
}

#[test]
fn raising_sets_pending_selector_and_upcall_unless_masked() {
    let (mut ch, mut mem, mut page) = world();
    let port = bind_timer(&mut ch, &mut mem, &mut page).unwrap();
    assert_eq!(ch.raise(port, &mut page), Ok(true));
    assert_eq!(page.0[PENDING], 1 << port);
    assert_eq!(page.0[vcpu_field(0, PENDING_SEL)], 1);
    assert_eq!(page.0[vcpu_field(0, UPCALL_PENDING)], 1);
    assert!(ch.upcall_raised);
    assert_eq!(ch.raise(port, &mut page), Ok(false), "already pending");
    // Masked: pending only; unmask then raises the upcall.
    let mut page = Page::default();
    page.0[MASK] = 1 << port;
    assert_eq!(ch.raise(port, &mut page), Ok(true));
    assert_eq!(page.0[vcpu_field(0, UPCALL_PENDING)], 0);
    assert!(is_pending(&mut page, port).unwrap());
    assert_eq!(
        port_op(&mut ch, EvtchnOpCmd::Unmask, port, &mut mem, &mut page),
        Ok(0)
    );
    assert_eq!(page.0[MASK], 0);
    assert_eq!(page.0[vcpu_field(0, UPCALL_PENDING)], 1);
    assert_eq!(
        page.0[vcpu_field(0, UPCALL_MASK)],
        0,
        "the guest's mask is the guest's"
    );
    // Closing clears pending.
    port_op(&mut ch, EvtchnOpCmd::Close, port, &mut mem, &mut page).unwrap();
    assert!(!is_pending(&mut page, port).unwrap());
    assert_eq!(ch.raise(port, &mut page), Err(Errno::Einval));
}
