//! A hostile server: every kind of bad message it can send gets one clear line from the
//! nucleus, and the nucleus keeps running it and everyone else; and an event fred-server
//! died holding goes to its successor. On QEMU; the scenarios are
//! `tests::scenarios::hostile`, shared with `fred_cpu.rs`.
use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::hostile;

#[test]
fn hostile_server_messages_get_one_line_each_and_the_nucleus_keeps_running() -> Result<()> {
    hostile::hostile_server_messages_get_one_line_each_and_the_nucleus_keeps_running(
        Machine::QEMU_BIOS,
    )
}

/// fred-server dies holding an event it has not answered: the nucleus restarts it and hands
/// the event to the new one, which then deals with the faulting server as usual.
#[test]
fn an_event_fred_server_died_holding_goes_to_its_successor() -> Result<()> {
    hostile::an_event_fred_server_died_holding_goes_to_its_successor(Machine::QEMU_BIOS)
}
