use super::*;

#[test]
fn named_file_parses_name_equals_path() {
    let parsed: NamedFile = "hello-module=/tmp/a=b".parse().unwrap();
    assert_eq!(
        parsed,
        NamedFile {
            name: "hello-module".into(),
            path: "/tmp/a=b".into()
        }
    );
    for bad in ["nopath", "=x", "a b=x", "name="] {
        assert!(bad.parse::<NamedFile>().is_err(), "{bad}");
    }
}

#[test]
fn cmdline_accumulates() {
    let image = Image::new().cmdline("exit=qemu").cmdline(" fred=off ");
    assert_eq!(image.get_cmdline(), "exit=qemu fred=off");
}

#[test]
fn bad_inputs_fail_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("server");
    fs::write(&not_elf, "text").unwrap();
    let cases = [
        (
            Image::new().server("fred-server", &not_elf),
            "is not an ELF file",
        ),
        (
            Image::new().server("fred-server", dir.path().join("none")),
            "cannot read",
        ),
        (
            Image::new().server("nosuch", &not_elf),
            "unknown server \"nosuch\"",
        ),
        (
            Image::new().module("m", dir.path().join("none")),
            "module m: cannot read",
        ),
        (
            Image::new().server_unchecked("pv-server", dir.path().join("none")),
            "server pv-server: cannot read",
        ),
        (
            Image::new().server_unchecked("pv-server", dir.path()),
            "is not a file",
        ),
        (Image::new().module("m", dir.path()), "is not a file"),
        (
            Image::new().module("m", &not_elf).module("m", &not_elf),
            "given twice",
        ),
        (
            Image::new().module("fred-server", &not_elf),
            "module name \"fred-server\" is a server's: ship a server with --server fred-server=PATH",
        ),
        (Image::new().cmdline("a;b"), "GRUB would interpret"),
        (Image::new().nucleus(&not_elf), "nucleus: "),
    ];
    for (image, expected) in cases {
        let err = format!("{:#}", image.build().unwrap_err());
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}
