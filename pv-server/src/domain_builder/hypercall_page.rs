//! The hypercall page a guest asks for with its HYPERCALL_PAGE note (pv64-abi.md §3).
//!
//! 128 stubs of 32 bytes; the rest of each stub, and every byte not written, is `int3`.
//! Stub `n` keeps rcx and r11 (which `syscall` overwrites) around the call:
//! `push %rcx; push %r11; mov $n, %eax; syscall; pop %r11; pop %rcx; ret`. The `iret` stub
//! also pushes rax and never returns.

use xen_abi::Hypercall;
use xen_abi::hypercall::{HYPERCALL_PAGE_STUBS, HYPERCALL_STUB_BYTES};

/// `int3`: what a jump to an unused byte of the page hits.
const INT3: u8 = 0xcc;
const PUSH_RCX: u8 = 0x51;
const PUSH_R11: [u8; 2] = [0x41, 0x53];
const PUSH_RAX: u8 = 0x50;
const MOV_EAX_IMM32: u8 = 0xb8;
const SYSCALL: [u8; 2] = [0x0f, 0x05];
const POP_R11: [u8; 2] = [0x41, 0x5b];
const POP_RCX: u8 = 0x59;
const RET: u8 = 0xc3;

/// The page's bytes.
pub fn contents() -> [u8; 4096] {
    let mut page = [INT3; 4096];
    for number in 0..HYPERCALL_PAGE_STUBS {
        let at = (number * HYPERCALL_STUB_BYTES) as usize;
        let stub = &mut page[at..at + HYPERCALL_STUB_BYTES as usize];
        let iret = number == u64::from(Hypercall::Iret.raw());
        let mut code = heapless::Vec::<u8, 16>::new();
        let mut emit = |bytes: &[u8]| {
            let _ = code.extend_from_slice(bytes);
        };
        emit(&[PUSH_RCX]);
        emit(&PUSH_R11);
        if iret {
            emit(&[PUSH_RAX]);
        }
        emit(&[MOV_EAX_IMM32]);
        emit(&(number as u32).to_le_bytes());
        emit(&SYSCALL);
        if !iret {
            emit(&POP_R11);
            emit(&[POP_RCX, RET]);
        }
        stub[..code.len()].copy_from_slice(&code);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_are_byte_exact() {
        let page = contents();
        // xen_version (17).
        assert_eq!(
            &page[17 * 32..17 * 32 + 14],
            &[
                0x51, 0x41, 0x53, 0xb8, 17, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3
            ]
        );
        assert!(page[17 * 32 + 14..18 * 32].iter().all(|&b| b == 0xcc));
        // iret (23): pushes rax and does not return.
        assert_eq!(
            &page[23 * 32..23 * 32 + 11],
            &[0x51, 0x41, 0x53, 0x50, 0xb8, 0x17, 0, 0, 0, 0x0f, 0x05]
        );
        assert!(page[23 * 32 + 11..24 * 32].iter().all(|&b| b == 0xcc));
        // The last stub carries its number too.
        assert_eq!(&page[127 * 32 + 3..127 * 32 + 8], &[0xb8, 127, 0, 0, 0]);
        let code_bytes = page.iter().filter(|&&b| b != 0xcc).count();
        // 127 normal stubs of 14 bytes and one iret stub of 11; no stub byte is 0xcc.
        assert_eq!(code_bytes, 127 * 14 + 11);
    }
}
