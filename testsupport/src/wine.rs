//! Wine harness: runs a mingw-built Windows program (the agent) under Debian's 64-bit Wine loader
//! with a throwaway `WINEPREFIX` and `WINEDEBUG=-all`. Wine 8 lacks `bcryptprimitives.dll`,
//! whose `ProcessPrng` Rust's std imports, so a test-only stand-in (`wine/bcryptprimitives.c`,
//! filled from `RtlGenRandom`) is built with mingw and placed beside the program; it is never
//! shipped. Tests skip with a loud notice when Wine or mingw is missing, unless
//! `CERTKEEP_TEST_REQUIRE_WINE=1` (then they fail).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::Tool;

/// Debian's 64-bit loader (plain `wine` wants a 32-bit prefix) and the mingw compiler.
const WINE: Tool = Tool {
    binaries: &["wine64", "x86_64-w64-mingw32-gcc"],
    fallback_dir: Some("/usr/lib/wine"),
    require_var: "CERTKEEP_TEST_REQUIRE_WINE",
    skipped: "the Windows agent tests under Wine",
    install: "the Debian packages `wine` and `gcc-mingw-w64-x86-64`",
};

/// A Wine prefix with one Windows program and the `bcryptprimitives.dll` stand-in beside it.
pub struct Wine {
    loader: PathBuf,
    prefix: tempfile::TempDir,
    bin: tempfile::TempDir,
    exe: PathBuf,
}

impl Wine {
    /// Copies `exe` into a fresh directory with the stand-in DLL, or `None` (after a notice)
    /// when Wine or mingw is missing. A missing `exe` is skipped the same way: CI builds it
    /// (`cargo build -p certkeep-agent --target x86_64-pc-windows-gnu`) before the tests.
    pub fn with_program(exe: &Path) -> Option<Self> {
        let loader = WINE.find_or_skip()?;
        if !exe.is_file() {
            let required = std::env::var(WINE.require_var).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{}=1 but {} is missing",
                WINE.require_var,
                exe.display()
            );
            eprintln!(
                "\n!!! NOTICE: {} not built: the Windows agent tests under Wine are SKIPPED.\n!!! Run `cargo build -p certkeep-agent --target x86_64-pc-windows-gnu` first.\n",
                exe.display()
            );
            return None;
        }
        let bin = tempfile::tempdir().expect("wine bin dir");
        let name = exe.file_name().expect("exe name");
        let copy = bin.path().join(name);
        std::fs::copy(exe, &copy).expect("copy the program");
        let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine");
        let built = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-o"])
            .arg(bin.path().join("bcryptprimitives.dll"))
            .arg(shim.join("bcryptprimitives.c"))
            .arg(shim.join("bcryptprimitives.def"))
            .arg("-ladvapi32")
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(
            built.status.success(),
            "building bcryptprimitives.dll: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        Some(Self {
            loader,
            prefix: tempfile::tempdir().expect("wine prefix"),
            bin,
            exe: copy,
        })
    }

    /// A Linux path as the program sees it (Wine maps `Z:` to `/`).
    pub fn windows_path(path: &Path) -> String {
        format!("Z:{}", path.display()).replace('/', "\\")
    }

    /// Runs the program with `args`, killed after `timeout` (the first call also boots the
    /// prefix, which takes a while).
    pub async fn run(&self, args: &[String], timeout: Duration) -> Output {
        let child = tokio::process::Command::new(&self.loader)
            .arg(&self.exe)
            .args(args)
            .current_dir(self.bin.path())
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start wine64");
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(output) => output.expect("wait for wine64"),
            Err(_) => panic!(
                "wine64 {} {args:?} did not finish within {} s",
                self.exe.display(),
                timeout.as_secs()
            ),
        }
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // The prefix's wineserver outlives the program for a few seconds; end it now.
        let _ = Command::new(self.loader.with_file_name("wineserver"))
            .arg("-k")
            .env("WINEPREFIX", self.prefix.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
