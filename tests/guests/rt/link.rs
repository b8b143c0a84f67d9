//! Links a test guest with the test guests' linker script (`tests/guests/rt/guest.ld`) when
//! building for the bare-metal target; host builds (a stub `main`) need nothing. Every guest
//! crate names this one script as its `build` (beside `rt/`, so `../rt/guest.ld` is the same).
use std::{env, path::PathBuf};

fn main() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rt/guest.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if !env::var("TARGET").unwrap_or_default().ends_with("-none") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bins=--gc-sections");
}
