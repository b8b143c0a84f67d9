//! The CPUID a PV64 guest sees through forced emulation (pv64-abi.md §7.1): the host's
//! answer with everything hidden that a PV guest must not use or that fredvisor does not
//! virtualise, FRED and LKGS included, and Xen's hypervisor leaves at 0x4000_0000. A pure
//! function of the host's answers and the vCPU number, so it is the same on every boot of
//! the same CPU (nothing per-boot, such as the physical APIC ID, leaks through).

/// One CPUID answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Highest basic leaf a guest sees.
const MAX_BASIC: u32 = 0xd;
/// Highest extended leaf a guest sees.
const MAX_EXTENDED: u32 = 0x8000_0008;
/// Xen's hypervisor leaves (`XEN_CPUID_FIRST_LEAF`) and the last one we answer.
pub const HYPERVISOR_BASE: u32 = 0x4000_0000;
const HYPERVISOR_LAST: u32 = HYPERVISOR_BASE + 2;
/// "XenVMMXenVMM" as EBX, ECX, EDX.
const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x65584d4d, 0x4d4d_566e];

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// Leaf 1 ECX: DTES64 2, MONITOR 3, DS-CPL 4, VMX 5, SMX 6, EST 7, TM2 8, SDBG 11, PDCM 15,
/// PCID 17, x2APIC 21, TSC-deadline 24, XSAVE 26, OSXSAVE 27, AVX 28 (no XSAVE state is
/// switched), F16C 29 (needs AVX).
const LEAF1_ECX_HIDDEN: u32 = bits(&[2, 3, 4, 5, 6, 7, 8, 11, 15, 17, 21, 24, 26, 27, 28, 29]);
/// Leaf 1 ECX bit 31: "running on a hypervisor".
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: VME 1, MCE 7, MTRR 12, MCA 14, PSE36 17, DS 21, ACPI 22, TM 29, PBE 31.
const LEAF1_EDX_HIDDEN: u32 = bits(&[1, 7, 12, 14, 17, 21, 22, 29, 31]);
/// Leaf 7.0 EBX: FSGSBASE 0, SGX 2, AVX2 5, SMEP 7, INVPCID 10, PQM 12, MPX 14, PQE 15,
/// AVX-512 (16, 17, 21, 26, 27, 28, 30, 31), SMAP 20, PT 25.
const LEAF7_EBX_HIDDEN: u32 = bits(&[
    0, 2, 5, 7, 10, 12, 14, 15, 16, 17, 20, 21, 25, 26, 27, 28, 30, 31,
]);
/// Leaf 7.0 ECX: AVX-512 VBMI 1, UMIP 2, PKU 3, OSPKE 4, WAITPKG 5, AVX-512 (6, 11, 12, 14),
/// VAES 9, VPCLMULQDQ 10, LA57 16, SGX-LC 30, PKS 31.
const LEAF7_ECX_HIDDEN: u32 = bits(&[1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 14, 16, 30, 31]);
/// Leaf 7.0 EDX: AVX-512 (2, 3, 8, 23), UINTR 5, PCONFIG 18, AMX (22, 24, 25), CET-IBT 20.
const LEAF7_EDX_HIDDEN: u32 = bits(&[2, 3, 5, 8, 18, 20, 22, 23, 24, 25]);
/// Leaf 7.1 EAX: what survives (none of it needs state we do not switch). FRED 17, LKGS 18
/// and NMI-source 20 are hypervisor business, AVX-VNNI 4 and AVX-512-BF16 5 need XSAVE.
const LEAF7_1_EAX_HIDDEN: u32 = bits(&[4, 5, 17, 18, 20]);
/// Extended leaf 1 ECX: SVM 2, ExtApicSpace 3, SKINIT 12, WDT 13, LWP 15, TOPOEXT 22,
/// PerfCtrExtCore 23, MONITORX 29.
const EXT1_ECX_HIDDEN: u32 = bits(&[2, 3, 12, 13, 15, 22, 23, 29]);
/// Extended leaf 1 EDX: 1 GiB pages 26 (PV guests get no superpages).
const EXT1_EDX_HIDDEN: u32 = bits(&[26]);

/// The guest's answer for `(leaf, subleaf)` on vCPU `vcpu`, from the host's answers.
pub fn policy(host: impl Fn(u32, u32) -> Regs, leaf: u32, subleaf: u32, vcpu: u32) -> Regs {
    let zero = Regs::default();
    match leaf {
        0 => {
            let r = host(0, 0);
            Regs {
                eax: r.eax.min(MAX_BASIC),
                ..r
            }
        }
        1..=MAX_BASIC if leaf > host(0, 0).eax => zero,
        1 => {
            let r = host(1, 0);
            Regs {
                // The APIC ID is the vCPU's, not the physical CPU's.
                ebx: (r.ebx & 0x00ff_ffff) | vcpu << 24,
                ecx: (r.ecx & !LEAF1_ECX_HIDDEN) | LEAF1_ECX_HYPERVISOR,
                edx: r.edx & !LEAF1_EDX_HIDDEN,
                ..r
            }
        }
        // Cache descriptors and parameters are harmless and stable.
        2 | 4 => {
            let r = host(leaf, subleaf);
            if leaf == 4 {
                // EAX 31:26: cores per package; 25:14: threads sharing the cache.
                Regs {
                    eax: r.eax & 0x3fff,
                    ..r
                }
            } else {
                r
            }
        }
        7 => {
            let r = host(7, subleaf);
            match subleaf {
                0 => Regs {
                    eax: r.eax.min(1),
                    ebx: r.ebx & !LEAF7_EBX_HIDDEN,
                    ecx: r.ecx & !LEAF7_ECX_HIDDEN,
                    edx: r.edx & !LEAF7_EDX_HIDDEN,
                },
                1 => Regs {
                    eax: r.eax & !LEAF7_1_EAX_HIDDEN,
                    ..zero
                },
                _ => zero,
            }
        }
        // MONITOR, power, topology, perfmon, XSAVE state and every other basic leaf: none.
        3 | 5 | 6 | 8..=MAX_BASIC => zero,
        HYPERVISOR_BASE => Regs {
            eax: HYPERVISOR_LAST,
            ebx: XEN_SIGNATURE[0],
            ecx: XEN_SIGNATURE[1],
            edx: XEN_SIGNATURE[2],
        },
        // Xen's version leaf: major << 16 | minor.
        0x4000_0001 => Regs {
            eax: (crate::guest_hypercalls::VERSION_MAJOR << 16
                | crate::guest_hypercalls::VERSION_MINOR) as u32,
            ..zero
        },
        // One hypercall page (the loader fills it; no MSR to ask for another).
        0x4000_0002 => Regs { eax: 1, ..zero },
        0x8000_0000 => {
            let r = host(0x8000_0000, 0);
            Regs {
                eax: r.eax.min(MAX_EXTENDED),
                ..r
            }
        }
        0x8000_0001..=MAX_EXTENDED if leaf > host(0x8000_0000, 0).eax => zero,
        0x8000_0001 => {
            let r = host(leaf, 0);
            Regs {
                ecx: r.ecx & !EXT1_ECX_HIDDEN,
                edx: r.edx & !EXT1_EDX_HIDDEN,
                ..r
            }
        }
        // The brand string.
        0x8000_0002..=0x8000_0004 => host(leaf, 0),
        // Only the invariant-TSC bit.
        0x8000_0007 => Regs {
            edx: host(leaf, 0).edx & 1 << 8,
            ..zero
        },
        // Address sizes only (no core counts).
        0x8000_0008 => Regs {
            eax: host(leaf, 0).eax & 0xffff,
            ..zero
        },
        _ => zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with every feature bit set and FRED/LKGS in 7.1.
    fn host(leaf: u32, _subleaf: u32) -> Regs {
        match leaf {
            0 => Regs {
                eax: 0x20,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            0x8000_0000 => Regs {
                eax: 0x8000_0021,
                ..Regs::default()
            },
            0x8000_0008 => Regs {
                eax: 0x0000_3030,
                ecx: 0xff,
                ..Regs::default()
            },
            _ => Regs {
                eax: !0,
                ebx: 0x1234_5678,
                ecx: !0,
                edx: !0,
            },
        }
    }

    #[test]
    fn fred_lkgs_and_virtualisation_features_are_hidden() {
        let leaf7_1 = policy(host, 7, 1, 0);
        assert_eq!(leaf7_1.eax & (1 << 17 | 1 << 18), 0, "FRED, LKGS");
        let leaf1 = policy(host, 1, 0, 0);
        assert_eq!(leaf1.ecx & (1 << 5), 0, "VMX");
        assert_eq!(leaf1.ecx & (1 << 21), 0, "x2APIC");
        assert_eq!(leaf1.ecx & (1 << 3), 0, "MONITOR");
        assert_eq!(leaf1.ecx & (1 << 24), 0, "TSC deadline");
        assert_eq!(leaf1.ecx & (1 << 26), 0, "XSAVE");
        assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(leaf1.ebx >> 24, 0, "APIC ID of vCPU 0");
        assert_eq!(policy(host, 1, 0, 2).ebx >> 24, 2);
        assert_eq!(policy(host, 7, 0, 0).ebx & (1 << 0 | 1 << 7 | 1 << 20), 0);
        assert_eq!(policy(host, 0xb, 0, 0), Regs::default(), "topology");
        assert_eq!(policy(host, 0xd, 0, 0), Regs::default(), "XSAVE state");
        assert_eq!(policy(host, 0, 0, 0).eax, MAX_BASIC);
        assert_eq!(policy(host, 0x8000_0000, 0, 0).eax, MAX_EXTENDED);
        assert_eq!(policy(host, 0x8000_0008, 0, 0).ecx, 0, "core count");
    }

    #[test]
    fn xen_leaves() {
        let base = policy(host, HYPERVISOR_BASE, 0, 0);
        let mut name = [0u8; 12];
        for (i, word) in [base.ebx, base.ecx, base.edx].into_iter().enumerate() {
            name[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        assert_eq!(&name, b"XenVMMXenVMM");
        assert_eq!(base.eax, 0x4000_0002);
        assert_eq!(policy(host, 0x4000_0001, 0, 0).eax, 4 << 16 | 21);
        assert_eq!(policy(host, 0x4000_0003, 0, 0), Regs::default());
    }

    #[test]
    fn leaves_past_the_hosts_maximum_are_zero_and_the_answer_is_stable() {
        let small = |leaf: u32, sub: u32| {
            if leaf == 0 {
                Regs {
                    eax: 1,
                    ..host(0, 0)
                }
            } else {
                host(leaf, sub)
            }
        };
        assert_eq!(policy(small, 7, 0, 0), Regs::default());
        for leaf in [0, 1, 4, 7, 0x8000_0001, 0x8000_0004] {
            assert_eq!(policy(host, leaf, 0, 0), policy(host, leaf, 0, 0));
        }
    }
}
