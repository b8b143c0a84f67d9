use super::*;
use proptest::prelude::*;

fn parse_all(line: &[u8]) -> (Options, Vec<String>) {
    let mut warnings = Vec::new();
    let options = parse(line, |w| warnings.push(w.to_string()));
    (options, warnings)
}

#[test]
fn empty_is_default() {
    let (options, warnings) = parse_all(b"");
    assert_eq!(options, Options::default());
    assert_eq!(options.fred, FredMode::Auto);
    assert_eq!(options.loglvl, LogLevel::Info);
    assert!(warnings.is_empty());
}

#[test]
fn every_option() {
    let (options, warnings) = parse_all(
        b"/boot/nucleus fred=on  pv-shim\tloglvl=debug exit=bochs selftest=int3,pf-nx\0garbage",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        options,
        Options {
            fred: FredMode::On,
            pv_shim: true,
            loglvl: LogLevel::Debug,
            exit: Some(TestExit::Bochs),
            selftests: SelfTests::INT3 | SelfTests::PF_NX,
            bench: false,
            server_args: ServerArgsTable::default(),
            trace: TraceLevel::Off,
            cpus: None,
            server_cpu: ServerArgsTable::default(),
            kexec: KexecWhen::OnRequest,
            crashkernel: false,
            generation: Generation(1),
            kexec_reason: None,
        }
    );
    assert_eq!(
        parse_all(b"fred=off exit=qemu").0.exit,
        Some(TestExit::Qemu)
    );
    assert_eq!(parse_all(b"fred=on fred=off").0.fred, FredMode::Off);
}

#[test]
fn selftest_all_is_the_resumable_set() {
    let (options, warnings) = parse_all(b"selftest=all,panic");
    assert!(warnings.is_empty());
    assert_eq!(options.selftests.bits(), 0b1001_1111);
    assert!(!SelfTests::ALL_RESUMABLE.contains(SelfTests::DF_RECURSION));
    assert!(!SelfTests::ALL_RESUMABLE.contains(SelfTests::EARLY_FAULT));
}

#[test]
fn warnings_are_typed_lines() {
    let (options, warnings) = parse_all(
        b"foo fred=banana loglvl pv-shim=yes exit=xen selftest=int3,nope,ud2 selftest fred",
    );
    assert_eq!(options.fred, FredMode::Auto);
    assert!(!options.pv_shim);
    assert_eq!(options.selftests, SelfTests::INT3 | SelfTests::UD2);
    assert_eq!(
        warnings,
        [
            "cmdline: unknown option 'foo' ignored",
            "cmdline: fred=banana: expected on|off|auto, using auto",
            "cmdline: loglvl: expected loglvl=error|warn|info|debug, using info",
            "cmdline: pv-shim=yes: pv-shim takes no value, ignored",
            "cmdline: exit=xen: expected qemu|bochs, using none",
            "cmdline: selftest: unknown test 'nope' ignored (known: all, int3, ud2, pf-unmapped, \
                 pf-nx, gp-selector, nested-tick, console-nested, fred-nested, fred-event-data, \
                 fred-erets, fred-ring3, fred-sl1-df, fred-sl2-df, df-recursion, cpu-df, cpu-ipi, \
                 early-fault, panic)",
            "cmdline: selftest: expected selftest=name[,name...], using none",
            "cmdline: fred: expected fred=on|off|auto, using auto",
        ]
    );
}

#[test]
fn xen_log_levels_are_aliases() {
    assert_eq!(
        parse_all(b"loglvl=warning"),
        (
            Options {
                loglvl: LogLevel::Warn,
                ..Options::default()
            },
            vec![]
        )
    );
    assert_eq!(parse_all(b"loglvl=all").0.loglvl, LogLevel::Debug);
    // Xen's words that have no meaning here stay warnings.
    assert_eq!(parse_all(b"loglvl=none").1.len(), 1);
    assert_eq!(
        parse_all(b"console=com1").1,
        ["cmdline: unknown option 'console=com1' ignored"]
    );
}

#[test]
fn every_listed_option_is_known_and_every_option_is_listed() {
    for option in OPTIONS {
        let (options, warnings) = parse_all(option.example.as_bytes());
        assert!(warnings.is_empty(), "{option:?}: {warnings:?}");
        assert_ne!(options, Options::default(), "{option:?} changes nothing");
        let key = option.syntax.split(['=', ' ']).next().unwrap_or_default();
        assert!(option.example.starts_with(key), "{option:?}");
        assert!(!option.help.contains('\n'), "{option:?}");
    }
    // Every key a rendered command line uses is in the list.
    let all = Options {
        pv_shim: true,
        exit: Some(TestExit::Qemu),
        selftests: SelfTests::INT3,
        bench: true,
        server_args: parse_all(b"server-args=a:b").0.server_args,
        trace: TraceLevel::All,
        cpus: Some(2),
        kexec: KexecWhen::RebootInto,
        crashkernel: true,
        generation: Generation(3),
        kexec_reason: Some(KexecReason::DoubleFault),
        ..Options::default()
    }
    .to_string();
    for word in all.split(' ') {
        let key = word.split('=').next().unwrap_or_default();
        assert!(
            OPTIONS
                .iter()
                .any(|o| o.syntax.split('=').next() == Some(key)),
            "{key} is not in OPTIONS"
        );
    }
}

#[test]
fn kexec_options_parse_and_render_back() {
    let (options, warnings) =
        parse_all(b"kexec=reboot-into crashkernel kexec-generation=2 kexec-reason=panic");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.kexec, KexecWhen::RebootInto);
    assert!(options.crashkernel);
    assert_eq!(options.generation, Generation(2));
    assert_eq!(options.kexec_reason, Some(KexecReason::Panic));
    assert_eq!(parse_all(options.to_string().as_bytes()).0, options);
    assert_eq!(parse_all(b"").0.generation, Generation(1));
    for bad in [
        &b"kexec=now"[..],
        b"kexec",
        b"crashkernel=64M",
        b"kexec-generation=0",
        b"kexec-generation=x",
        b"kexec-reason=boredom",
    ] {
        let (options, warnings) = parse_all(bad);
        assert_eq!(warnings.len(), 1, "{bad:?}");
        assert_eq!(options, Options::default(), "{bad:?}");
    }
}

#[test]
fn cpus_takes_a_positive_count() {
    assert_eq!(parse_all(b"cpus=4").0.cpus, Some(4));
    assert_eq!(parse_all(b"cpus=1 cpus=2").0.cpus, Some(2));
    for bad in [&b"cpus=0"[..], b"cpus=x", b"cpus=-1", b"cpus=70000"] {
        let (options, warnings) = parse_all(bad);
        assert_eq!(options.cpus, None, "{bad:?}");
        assert_eq!(warnings.len(), 1, "{bad:?}");
    }
    assert_eq!(parse_all(b"cpus").1.len(), 1);
    assert_eq!(
        parse_all(b"cpus=3").0.to_string(),
        "fred=auto loglvl=info cpus=3"
    );
}

#[test]
fn bad_value_keeps_earlier_setting() {
    let (options, warnings) = parse_all(b"fred=off fred=maybe");
    assert_eq!(options.fred, FredMode::Off);
    assert_eq!(
        warnings,
        ["cmdline: fred=maybe: expected on|off|auto, using off"]
    );
}

#[test]
fn non_utf8_is_escaped() {
    let (_, warnings) = parse_all(b"fr\xffed=on caf\xc3\xa9 it's\\");
    assert_eq!(
        warnings,
        [
            "cmdline: option 'fr\\xffed=on' is not UTF-8, ignored",
            "cmdline: unknown option 'caf\\xc3\\xa9' ignored",
            "cmdline: unknown option 'it\\x27s\\x5c' ignored",
        ]
    );
    let long = [b'x'; 100];
    let (_, warnings) = parse_all(&long);
    assert_eq!(
        warnings,
        [format!(
            "cmdline: unknown option '{}...' ignored",
            "x".repeat(48)
        )]
    );
}

#[test]
fn server_args_and_bench() {
    let (options, warnings) = parse_all(
        b"bench server-args=pv-server:fault=null,selfcheck server-args=x server-args=fred-server:",
    );
    assert_eq!(
        warnings,
        [
            "cmdline: server-args=x: expected NAME:ARG[,ARG...] (name <= 31, args <= 127 bytes), using none"
        ]
    );
    assert!(options.bench);
    let pv = options
        .server_args
        .get(b"pv-server")
        .expect("pv-server args");
    assert_eq!(pv.args(), b"fault=null selfcheck");
    assert_eq!(
        options
            .server_args
            .get(b"fred-server")
            .map(ServerArgs::args),
        Some(&b""[..])
    );
    assert!(options.server_args.get(b"x").is_none());
    let (later, _) = parse_all(b"server-args=a:1 server-args=a:2");
    assert_eq!(
        later.server_args.get(b"a").map(ServerArgs::args),
        Some(&b"2"[..])
    );
    let (full, warnings) = parse_all(
        b"server-args=a:1 server-args=b:1 server-args=c:1 server-args=d:1 server-args=e:1",
    );
    assert_eq!(full.server_args.iter().count(), 4);
    assert_eq!(warnings.len(), 1);
}

#[test]
fn trace_levels() {
    assert_eq!(parse_all(b"").0.trace, TraceLevel::Off);
    assert_eq!(parse_all(b"trace=events").0.trace, TraceLevel::Events);
    assert_eq!(parse_all(b"trace=all trace=off").0.trace, TraceLevel::Off);
    let (options, warnings) = parse_all(b"trace=all trace=verbose trace");
    assert_eq!(options.trace, TraceLevel::All);
    assert_eq!(
        warnings,
        [
            "cmdline: trace=verbose: expected off|events|all, using all",
            "cmdline: trace: expected trace=off|events|all, using all",
        ]
    );
}

#[test]
fn warnings_are_capped() {
    let line = "a ".repeat(20);
    let (_, warnings) = parse_all(line.as_bytes());
    assert_eq!(warnings.len(), MAX_WARNINGS + 1);
    assert_eq!(
        warnings[MAX_WARNINGS],
        "cmdline: 12 more warnings suppressed"
    );
}

#[test]
fn server_cpu_names_a_cpu_per_server() {
    let (options, warnings) =
        parse_all(b"server-cpu=pv-server:1 server-cpu=fred-server:x server-cpu=a:256");
    assert_eq!(options.server_cpu(b"pv-server"), Some(1));
    assert_eq!(options.server_cpu(b"fred-server"), None);
    assert_eq!(
        warnings,
        [
            "cmdline: server-cpu=fred-server:x: expected NAME:N (N a CPU number 0-255), using the boot CPU",
            "cmdline: server-cpu=a:256: expected NAME:N (N a CPU number 0-255), using the boot CPU",
        ]
    );
    let (again, _) = parse_all(options.to_string().as_bytes());
    assert_eq!(again.server_cpu(b"pv-server"), Some(1));
}

#[test]
fn path_only_skipped_as_first_word() {
    let (_, warnings) = parse_all(b"fred=on /boot/x");
    assert_eq!(warnings, ["cmdline: unknown option '/boot/x' ignored"]);
}

fn arbitrary_options() -> impl Strategy<Value = Options> {
    (
        prop_oneof![
            Just(FredMode::On),
            Just(FredMode::Off),
            Just(FredMode::Auto)
        ],
        any::<bool>(),
        prop_oneof![
            Just(LogLevel::Error),
            Just(LogLevel::Warn),
            Just(LogLevel::Info),
            Just(LogLevel::Debug)
        ],
        prop_oneof![
            Just(None),
            Just(Some(TestExit::Qemu)),
            Just(Some(TestExit::Bochs))
        ],
        any::<u32>(),
        any::<bool>(),
        prop_oneof![
            Just(TraceLevel::Off),
            Just(TraceLevel::Events),
            Just(TraceLevel::All)
        ],
        proptest::collection::vec(
            (
                "[a-z][a-z-]{0,30}",
                "[a-z0-9=]{0,20}(,[a-z0-9=]{1,20}){0,3}",
            ),
            0..3,
        ),
    )
        .prop_map(
            |(fred, pv_shim, loglvl, exit, tests, bench, trace, servers)| {
                let mut server_args = ServerArgsTable::default();
                for (name, args) in servers {
                    let value = format!("{name}:{args}");
                    server_args.insert(
                        ServerArgs::parse(value.as_bytes()).expect("valid by construction"),
                    );
                }
                Options {
                    fred,
                    pv_shim,
                    loglvl,
                    exit,
                    selftests: SelfTests::from_bits_truncate(tests),
                    bench,
                    server_args,
                    trace,
                    cpus: None,
                    ..Options::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut count = 0;
        let _ = parse(&line, |warning| { count += 1; let _ = warning.to_string(); });
        prop_assert!(count <= MAX_WARNINGS + 1);
    }

    #[test]
    fn rendered_options_round_trip(options in arbitrary_options()) {
        let line = options.to_string();
        let (parsed, warnings) = parse_all(line.as_bytes());
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        prop_assert_eq!(parsed, options);
    }
}
