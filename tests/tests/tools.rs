//! A missing host tool is reported as one clear line before anything is built.

use std::path::Path;

use anyhow::{Result, ensure};
use tests::{Image, MissingTool, Toolbox};

/// A search path with every tool the pipeline uses except `hidden`.
fn path_without(hidden: &str, dir: &Path) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "xorriso",
        "mformat",
        "qemu-system-x86_64",
        "cargo",
        "rustc",
        "grub-mkrescue",
    ] {
        if tool == hidden {
            continue;
        }
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, dir.join(tool))?;
        }
    }
    Ok(())
}

#[test]
fn missing_grub_mkrescue_is_one_line_naming_the_package() -> Result<()> {
    let dir = tempfile::tempdir()?;
    path_without("grub-mkrescue", dir.path())?;
    let Err(err) = Image::new()
        .tools(Toolbox::with_search_path(dir.path()))
        .build()
    else {
        anyhow::bail!("the build succeeded without grub-mkrescue");
    };
    let missing = err.downcast_ref::<MissingTool>();
    ensure!(
        missing.is_some_and(|m| m.tool == "grub-mkrescue"),
        "wrong error: {err:#}"
    );
    let line = format!("{err:#}");
    ensure!(
        line == "grub-mkrescue not found on PATH: install it with 'apt-get install grub-pc-bin grub-efi-amd64-bin'",
        "unexpected message: {line:?}"
    );
    Ok(())
}

#[test]
fn missing_xorriso_is_named_too() -> Result<()> {
    let dir = tempfile::tempdir()?;
    path_without("xorriso", dir.path())?;
    let Err(err) = Image::new()
        .tools(Toolbox::with_search_path(dir.path()))
        .build()
    else {
        anyhow::bail!("the build succeeded without xorriso");
    };
    let line = format!("{err:#}");
    ensure!(
        line == "xorriso not found on PATH: install it with 'apt-get install xorriso'",
        "{line:?}"
    );
    Ok(())
}
