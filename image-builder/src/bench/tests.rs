use super::*;

#[test]
fn the_readme_table_is_found_replaced_and_read() {
    let ranges = [
        Range {
            min: 992,
            max: 1000,
        },
        Range {
            min: 14752,
            max: 7931888,
        },
        Range {
            min: 7488,
            max: 1424984,
        },
        Range {
            min: 30328,
            max: 33488,
        },
        Range {
            min: 70000,
            max: 90000,
        },
        Range {
            min: 60000,
            max: 80000,
        },
    ];
    let readme = "# x\n\n```sh\ncargo fv bench\n```\n\n```\nQEMU TCG, -icount shift=3 old\nnull-syscall 1 2\n```\n\nafter\n";
    let updated = readme_with_table(readme, &table(&ranges)).unwrap();
    assert!(updated.starts_with("# x\n\n```sh\ncargo fv bench\n```\n\n```\nQEMU TCG"));
    assert!(updated.ends_with("```\n\nafter\n"));
    assert_eq!(readme_table(&updated), Some(table(&ranges).as_str()));
    let minimums: Vec<Option<u64>> = table_minimums(&table(&ranges))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        minimums,
        [
            Some(992),
            Some(14752),
            Some(7488),
            Some(30328),
            Some(70000),
            Some(60000)
        ]
    );
    assert!(readme_with_table("no table", "t").is_err());
}

#[test]
fn the_repository_readme_has_the_table() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let table = readme_table(&readme).expect("README.md shows the bench table");
    assert!(
        table_minimums(table).iter().all(|(_, min)| min.is_some()),
        "{table}"
    );
}

const LOG: &str = "nucleus: ready\r\n\
        bench: rdtsc pair costs 24 ticks\r\n\
        pv-server: bench: 1000 samples each, rdtsc pair overhead 40 ticks subtracted\r\n\
        pv-server: bench: null-syscall min=1712 max=1720\r\n\
        bench: ring-roundtrip min=17512 max=3189048 rounds=1000\r\n\
        pv-server: bench: int3-roundtrip min=288400 max=10009048\r\n\
        guest bench: bench: hypercall-roundtrip min=30328 max=33488 samples=1000 version=0x40015\r\n\
        guest bench: bench: bounce-roundtrip min=70000 max=90000 samples=1000\r\n\
        guest bench: bench: callgate-roundtrip min=60000 max=80000 samples=1000\r\n";

#[test]
fn the_six_lines_parse() {
    let results = Results::parse(LOG);
    assert_eq!(
        results.complete(),
        Ok([
            Range {
                min: 1712,
                max: 1720
            },
            Range {
                min: 288_400,
                max: 10_009_048
            },
            Range {
                min: 17512,
                max: 3_189_048
            },
            Range {
                min: 30328,
                max: 33488
            },
            Range {
                min: 70000,
                max: 90000
            },
            Range {
                min: 60000,
                max: 80000
            },
        ])
    );
    assert!(all_lines_present(LOG));
}

#[test]
fn malformed_or_foreign_lines_do_not_count() {
    for line in [
        "bench: rdtsc pair costs 24 ticks",
        "pv-server: bench: null-syscall unavailable: nop -> bad syscall",
        "pv-server: bench: null-syscall no samples",
        "pv-server: bench: null-syscall min=12",
        "pv-server: bench: null-syscall max=12",
        "pv-server: bench: null-syscall min=-1 max=2",
        "pv-server: bench: null-syscall min=0x10 max=20",
        "pv-server: bench: null-syscall min=30 max=20",
        "pv-server: bench: null-syscall min=1 min=2 max=3",
        "pv-server: bench: null-syscall min=1 max=99999999999999999999999",
        "pv-server: bench: null-syscall min= max=2",
        "pv-server: bench: null-syscall min=1 max=2 junk",
        "bench: null-syscall min=1 max=2",
        "fred-server: bench: ring-roundtrip min=1 max=2",
        "pv-server: guest bench: bench: hypercall-roundtrip min=1 max=2",
        "guest other: bench: hypercall-roundtrip min=1 max=2",
    ] {
        assert_eq!(parse_line(line), None, "{line}");
    }
    assert_eq!(
        parse_line("bench: ring-roundtrip min=5 max=5 rounds=1000\r"),
        Some((Measurement::RingRoundtrip, Range { min: 5, max: 5 }))
    );
}

#[test]
fn missing_lines_are_named_and_the_first_line_wins() {
    let partial = "pv-server: bench: null-syscall min=8 max=16\n\
                       pv-server: bench: null-syscall min=1 max=2\n";
    let results = Results::parse(partial);
    assert_eq!(
        results.get(Measurement::NullSyscall),
        Some(Range { min: 8, max: 16 })
    );
    assert_eq!(
        results.complete(),
        Err(vec![
            Measurement::Int3Roundtrip,
            Measurement::RingRoundtrip,
            Measurement::HypercallRoundtrip,
            Measurement::BounceRoundtrip,
            Measurement::CallgateRoundtrip
        ])
    );
    assert!(!all_lines_present(partial));
    assert_eq!(Results::parse("").missing(), Measurement::ALL.to_vec());
}

#[test]
fn ticks_become_instructions() {
    assert_eq!(TICKS_PER_INSTRUCTION, 8);
    assert_eq!(instructions(1712), "214");
    assert_eq!(instructions(1716), "214.5");
    assert_eq!(instructions(0), "0");
}

#[test]
fn table_has_ticks_instructions_and_targets() {
    let ranges = Results::parse(LOG).complete().unwrap();
    let table = table(&ranges);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 8, "{table}");
    let cells =
        |row: &str| -> Vec<String> { row.split_whitespace().take(7).map(str::to_owned).collect() };
    assert_eq!(
        cells(rows[2]),
        ["null-syscall", "1712", "1720", "214", "215", "2.9x", "74"]
    );
    assert!(
        rows[2].ends_with(" 2.9x      74  L4Re/Fiasco null syscall"),
        "{table}"
    );
    assert_eq!(
        cells(rows[3]),
        [
            "int3-roundtrip",
            "288400",
            "10009048",
            "36050",
            "1251131",
            "45.1x",
            "800"
        ]
    );
    assert!(rows[3].ends_with("     800  issue 17 (aim 500)"), "{table}");
    assert_eq!(
        cells(rows[4]),
        [
            "ring-roundtrip",
            "17512",
            "3189048",
            "2189",
            "398631",
            "3.7x",
            "587"
        ]
    );
    assert!(
        rows[4].ends_with("     587  L4Re/Fiasco one-way IPC"),
        "{table}"
    );
    assert_eq!(
        cells(rows[5]),
        [
            "hypercall-roundtrip",
            "30328",
            "33488",
            "3791",
            "4186",
            "0.1x",
            "36150"
        ]
    );
    assert!(
        rows[5].ends_with(" 36150  issue 15: int3 round trip (36050) + 100"),
        "the target follows the int3 figure: {table}"
    );
    assert_eq!(
        cells(rows[6]),
        [
            "bounce-roundtrip",
            "70000",
            "90000",
            "8750",
            "11250",
            "0.1x",
            "72300"
        ]
    );
    assert!(rows[6].ends_with(" 72300  issue 16: two hypercall round trips"));
    assert_eq!(
        cells(rows[7]),
        [
            "callgate-roundtrip",
            "60000",
            "80000",
            "7500",
            "10000",
            "0.1x",
            "72300"
        ]
    );
}

#[test]
fn the_json_record_has_every_figure_and_the_boot_time() {
    let ranges = Results::parse(LOG).complete().unwrap();
    let uefi = UefiBoot {
        wall: Duration::from_millis(3456),
        cpu: Some(Duration::from_millis(2101)),
    };
    let text = json(&ranges, Some(Duration::from_millis(2412)), Some(uefi));
    assert!(text.contains("\"boot_to_ready_s\": 2.412,"), "{text}");
    assert!(
        text.contains("\"uefi_boot_to_ready_s\": 3.456,\n  \"uefi_boot_to_ready_cpu_s\": 2.101,"),
        "{text}"
    );
    assert!(
        text.contains(
            "\"null-syscall\": {\"min_ticks\": 1712, \"max_ticks\": 1720, \"min_insns\": 214, \
                 \"max_insns\": 215, \"target_insns\": 74},"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"hypercall-roundtrip\": {\"min_ticks\": 30328"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("}\n}"), "{text}");
    assert_eq!(text.matches('{').count(), text.matches('}').count());
    let none = json(&ranges, None, None);
    assert!(none.contains("\"boot_to_ready_s\": null,"), "{none}");
    assert!(none.contains("\"uefi_boot_to_ready_s\": null,"), "{none}");
    assert!(
        none.contains("\"uefi_boot_to_ready_cpu_s\": null,"),
        "{none}"
    );
    assert_eq!(
        uefi_line(&Ok(uefi)),
        "UEFI boot to \"nucleus: ready\": 3.46 s (wall clock, 2.10 s of QEMU's CPU; OVMF, TCG \
         without -icount)\n"
    );
    assert_eq!(
        uefi_line(&Err("OVMF not found".into())),
        "UEFI boot: not measured: OVMF not found\n"
    );
    assert_eq!(
        ready_line(Some(Duration::from_millis(960))),
        "boot to \"nucleus: ready\": 0.96 s (wall clock, this -icount boot)\n"
    );
}

#[test]
fn the_bochs_table_puts_fred_and_idt_side_by_side_with_the_ratio() {
    let r = |min, max| Range { min, max };
    let fred = [
        r(100, 150),
        r(900, 1000),
        r(400, 480),
        r(1000, 1100),
        r(3000, 3300),
        r(2500, 2800),
    ];
    let idt = [
        r(125, 160),
        r(1800, 2000),
        r(400, 500),
        r(2000, 2100),
        r(4000, 4400),
        r(5000, 5600),
    ];
    let table = bochs_table(&fred, &idt);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 8, "{table}");
    assert!(
        lines[0].starts_with("Bochs wildcat_lake (FRED+LKGS)"),
        "{table}"
    );
    let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        words(1),
        [
            "measurement",
            "FRED",
            "min",
            "FRED",
            "max",
            "IDT",
            "min",
            "IDT",
            "max",
            "FRED/IDT"
        ]
    );
    assert_eq!(
        words(2),
        ["null-syscall", "100", "150", "125", "160", "0.80"]
    );
    assert_eq!(
        words(3),
        ["int3-roundtrip", "900", "1000", "1800", "2000", "0.50"]
    );
    assert_eq!(
        words(4),
        ["ring-roundtrip", "400", "480", "400", "500", "1.00"]
    );
    assert_eq!(
        words(5),
        [
            "hypercall-roundtrip",
            "1000",
            "1100",
            "2000",
            "2100",
            "0.50"
        ]
    );
    assert_eq!(
        words(6),
        ["bounce-roundtrip", "3000", "3300", "4000", "4400", "0.75"]
    );
    assert_eq!(
        words(7),
        ["callgate-roundtrip", "2500", "2800", "5000", "5600", "0.50"]
    );
}

#[test]
fn qemu_gets_a_deterministic_instruction_clock_and_one_cpu() {
    assert_eq!(
        qemu_args(),
        ["-icount", "shift=3,align=off,sleep=off", "-smp", "1"]
    );
    assert_eq!(CMDLINE, "bench server-args=pv-server:bench");
}
