//! The build script of every Ring3 server (`build = ".../ipc/src/rt/link.rs"` in its
//! manifest): links it with the shared linker script beside this file (`server.ld`) when
//! building for the bare-metal target; host builds (a stub `main`) need nothing.
//!
//! The script is included at compile time and written to `OUT_DIR`, so the path is right
//! for every server crate wherever its manifest lives, and editing `server.ld` rebuilds
//! this script and so relinks the servers.
use std::{env, fs, path::PathBuf};

const SCRIPT: &str = include_str!("server.ld");

fn main() {
    println!("cargo:rerun-if-env-changed=TARGET");
    if !env::var("TARGET").unwrap_or_default().ends_with("-none") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("server.ld");
    fs::write(&script, SCRIPT).expect("write the server linker script");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    // defmt's script keeps the `.defmt` table the host decoder reads (ipc::rt::trace).
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bins=--gc-sections");
}
