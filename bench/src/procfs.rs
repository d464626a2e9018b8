//! Resident memory and CPU time of processes, from `/proc` (Linux only).

use std::fs;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in kB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Two adjacent counters of `/proc/<pid>/stat`, summed; `first` is the field number of
/// `proc(5)` (14 for utime).
fn stat_pair(pid: u32, first: usize) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state).
    let a: u64 = fields.get(first - 3)?.parse().ok()?;
    let b: u64 = fields.get(first - 2)?.parse().ok()?;
    Some(a + b)
}

/// User + system CPU time of one process in clock ticks (`utime + stime` of `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_pair(pid, 14)
}

/// User + system CPU time of the children `pid` has waited for (`cutime + cstime`), in ticks.
pub fn children_cpu_ticks(pid: u32) -> Option<u64> {
    stat_pair(pid, 16)
}

/// Sum of [`cpu_ticks`] over `pids` (missing processes count 0).
pub fn total_cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux x86_64).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Direct children of `parent` (by the ppid field of `/proc/*/stat`).
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| {
                    let rest = t[t.rfind(')')? + 2..].to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Machine description for reports: cores, CPU model, memory.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, {model}, {:.1} GiB RAM",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}
