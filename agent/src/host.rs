//! Operating system name and build for deployment reports.

/// `(os_name, os_build)`, e.g. `("windows", "10.0.17763.6293")` or `("Debian GNU/Linux 13", "6.12.0")`.
pub(crate) fn os_info() -> (String, String) {
    platform()
}

#[cfg(windows)]
fn platform() -> (String, String) {
    // `ver` prints "Microsoft Windows [Version 10.0.17763.6293]".
    let build = std::process::Command::new("cmd")
        .args(["/C", "ver"])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let start = text.find("Version ")? + "Version ".len();
            let end = text[start..].find(']')? + start;
            Some(text[start..end].trim().to_owned())
        })
        .unwrap_or_default();
    ("windows".into(), build)
}

#[cfg(not(windows))]
fn platform() -> (String, String) {
    let name = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let build = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    (name, build)
}
