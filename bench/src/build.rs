//! Release binaries of the workspace for the benchmarks that run them as child processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, ensure};

/// The workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, relative to the workspace root, or `target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || workspace_root().join("target"),
            |p| workspace_root().join(p),
        )
}

/// `cargo build --release -p <package>` plus `extra` arguments, in the workspace root.
pub fn cargo_build(package: &str, extra: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", package])
        .args(extra)
        .status()
        .context("run cargo build")?;
    ensure!(
        status.success(),
        "cargo build -p {package} {extra:?} failed"
    );
    Ok(())
}

/// The release `certkeep` binary, built first unless `no_build` (then it must exist already).
pub fn certkeep_binary(no_build: bool) -> anyhow::Result<PathBuf> {
    let binary = target_dir().join("release/certkeep");
    if !no_build {
        cargo_build("certkeep-server", &["--bin", "certkeep"])?;
    }
    ensure!(
        binary.is_file(),
        "{} is missing (build it first)",
        binary.display()
    );
    Ok(binary)
}
