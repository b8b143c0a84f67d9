//! `guest_console_write`: a domain's text printed by the nucleus under the guest's name.
use super::registry::{domain, domain_number};
use crate::thread::{ThreadId, Threads};
use heapless::String;
use ipc::syscall::SyscallError;

/// Longest guest console write.
const CONSOLE_MAX: usize = 512;

/// The domain's text as lines `guest NAME: <escaped text>`, charged to the guest manager's
/// console budget (a guest that floods the console slows only its own manager). Returns the
/// bytes taken; the caller writes the rest later.
pub fn write(
    t: &mut Threads,
    cur: ThreadId,
    raw_domain: u64,
    ptr: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let number = domain_number(raw_domain)?;
    if len > CONSOLE_MAX as u64 {
        return Err(SyscallError::BadArgument);
    }
    let mut buf = [0u8; CONSOLE_MAX];
    let buf = &mut buf[..len as usize];
    let thread = t.get_mut(cur);
    let space = thread.space.as_ref().ok_or(SyscallError::BadPointer)?;
    space.read(ptr, buf).map_err(|_| SyscallError::BadPointer)?;
    // As for `console_write`: ticks that only counted (they landed in the nucleus) refill
    // the budget too, or pv-server's retry loop could wait for a refill forever (seen under
    // Bochs, whose ticks arrive with IF = 0: a guest's console line never came).
    if !thread.console.available() {
        thread.console_catch_up();
    }
    let mut label: String<32> = String::new();
    let _ = label.push_str("guest ");
    let _ = label.push_str(&domain(number).name);
    // Each line under the domain's name, escaped: a guest never prints as the nucleus or a
    // server (a newline in its text ends its line, the next one gets the prefix again).
    let taken = ipc::console::write(&label, buf, &mut thread.console, |line| {
        crate::text::print_server_line(&label, line)
    });
    Ok(taken as u64)
}
