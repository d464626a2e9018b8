//! Agent footprint (issue 7, part 4): release binary sizes (Linux, `x86_64-pc-windows-gnu`),
//! peak resident memory of a sync that installs 50 certificates, resident memory while idle in
//! `run` mode, and the time of a no-change sync (a 304), all with the real `certkeep-agent`
//! binary against a certkeep server running in this process on loopback.
//!
//! `cargo run --release -p certkeep-bench --bin agent_footprint`
//!
//! Builds the agent first (`cargo build --release -p certkeep-agent`, and for the Windows target
//! unless `--no-windows`); needs `/usr/bin/time` (Debian `time`) and uses `hyperfine` when present.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use certkeep_api_types::target::TargetSettings;
use certkeep_bench::build::{cargo_build, target_dir};
use certkeep_bench::fleet::Fleet;
use certkeep_bench::{now, procfs, stats};
use clap::Parser;

/// Agent footprint: sizes, memory, no-change sync time.
#[derive(Parser)]
struct Args {
    /// Certificates assigned to the agent.
    #[arg(long, default_value_t = 50)]
    certificates: usize,
    /// Full syncs measured (each into an emptied CCS folder).
    #[arg(long, default_value_t = 5)]
    full_runs: usize,
    /// No-change syncs measured.
    #[arg(long, default_value_t = 30)]
    nochange_runs: usize,
    /// Seconds to sample the idle `run` process.
    #[arg(long, default_value_t = 15)]
    idle_seconds: u64,
    /// Do not run cargo build; use the binaries already in the target directory.
    #[arg(long)]
    no_build: bool,
    /// Skip the Windows cross-build and size.
    #[arg(long)]
    no_windows: bool,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    println!("machine: {}", procfs::machine());
    let target_dir = target_dir();
    let linux = target_dir.join("release/certkeep-agent");
    let windows = target_dir.join("x86_64-pc-windows-gnu/release/certkeep-agent.exe");
    if !args.no_build {
        cargo_build("certkeep-agent", &[])?;
        if !args.no_windows {
            cargo_build("certkeep-agent", &["--target", "x86_64-pc-windows-gnu"])?;
        }
    }
    println!("\n## binary size (release: lto thin, strip symbols)");
    let mut sizes = vec![("x86_64-unknown-linux-gnu", &linux)];
    if !args.no_windows {
        sizes.push(("x86_64-pc-windows-gnu", &windows));
    }
    for (name, path) in sizes {
        let bytes = std::fs::metadata(path)
            .with_context(|| format!("{} (build it first)", path.display()))?
            .len();
        println!(
            "{name}: {bytes} bytes = {:.2} MiB ({})",
            bytes as f64 / 1024.0 / 1024.0,
            path.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(&args, &linux))
}

/// Output of `/usr/bin/time -v`.
struct Timed {
    max_rss_kb: u64,
    wall: f64,
    cpu: f64,
    success: bool,
}

fn time_v(agent: &Path, config: &Path, command: &str) -> anyhow::Result<Timed> {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(agent)
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .context("run /usr/bin/time (apt-get install -y time)")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let secs = |v: Option<String>| v.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .map(|v| {
            v.split(':').fold(0.0, |acc, part| {
                acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0);
    Ok(Timed {
        max_rss_kb: field("Maximum resident set size (kbytes):")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        wall,
        cpu: secs(field("User time (seconds):")) + secs(field("System time (seconds):")),
        success: out.status.success() && field("Exit status:").as_deref() == Some("0"),
    })
}

fn write_config(
    path: &Path,
    server: &str,
    ca: &Path,
    state: &Path,
    interval: u64,
) -> anyhow::Result<()> {
    let text = format!(
        "server = \"{server}\"\nca_file = \"{}\"\nstate_dir = \"{}\"\ninterval_secs = {interval}\n",
        ca.display(),
        state.display(),
    );
    std::fs::write(path, text)?;
    Ok(())
}

fn pfx_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pfx"))
            .count()
    })
}

fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

async fn measure(args: &Args, agent: &Path) -> anyhow::Result<()> {
    let fleet = Fleet::start(None).await?;
    let certificates = fleet.certificates(args.certificates).await?;
    let (agent_id, token) = fleet.pending_agent("footprint").await?;
    for cert in &certificates {
        fleet
            .server
            .state
            .db
            .assign_certificate(agent_id, cert.id, now())
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let state = root.join("state");
    let ccs = root.join("ccs");
    std::fs::create_dir_all(&ccs)?;
    let token_file = root.join("token");
    std::fs::write(&token_file, token.as_str())?;
    fleet
        .seeded
        .target(
            agent_id,
            "ccs",
            TargetSettings::Ccs {
                path: ccs.to_string_lossy().into_owned(),
            },
        )
        .await?;
    let config = root.join("agent.toml");
    let ca = fleet.server.ca_file();
    let enroll = Command::new(agent)
        .arg("--config")
        .arg(&config)
        .args(["enroll", "--server", &fleet.server.agent_url, "--ca-file"])
        .arg(&ca)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()?;
    ensure!(enroll.success(), "certkeep-agent enroll failed");
    write_config(&config, &fleet.server.agent_url, &ca, &state, 300)?;
    let expected_files = certificates.len() * 2;

    println!(
        "\n## full sync: {} certificates (2 DNS names each, {expected_files} PFX files), legacy 3DES PFX, into an empty CCS folder",
        certificates.len()
    );
    let mut peaks = Vec::new();
    let mut walls = Vec::new();
    for run in 1..=args.full_runs {
        clear_dir(&ccs)?;
        let t = time_v(agent, &config, "sync")?;
        ensure!(t.success, "full sync failed");
        let files = pfx_count(&ccs);
        ensure!(
            files == expected_files,
            "full sync wrote {files} PFX files, expected {expected_files}"
        );
        println!(
            "run {run}: peak RSS {} kB, wall {:.3} s, CPU {:.2} s",
            t.max_rss_kb, t.wall, t.cpu
        );
        peaks.push(t.max_rss_kb as f64);
        walls.push(t.wall);
    }
    println!(
        "median peak RSS {:.0} kB = {:.1} MiB (max {:.0} kB); median wall {:.3} s",
        stats::median(&peaks),
        stats::median(&peaks) / 1024.0,
        peaks.iter().copied().fold(0.0, f64::max),
        stats::median(&walls)
    );

    println!("\n## no-change sync (manifest answered 304, nothing written)");
    let t = time_v(agent, &config, "sync")?;
    ensure!(t.success, "no-change sync failed");
    let state_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("state.json"))?)?;
    ensure!(
        state_json["last_sync"]["unchanged"] == serde_json::Value::Bool(true),
        "the sync was not a 304: {state_json}"
    );
    println!(
        "peak RSS {} kB, wall {:.3} s, CPU {:.3} s (one run under /usr/bin/time -v)",
        t.max_rss_kb, t.wall, t.cpu
    );
    let mut own = Vec::with_capacity(args.nochange_runs);
    for _ in 0..args.nochange_runs {
        let t0 = Instant::now();
        let status = Command::new(agent)
            .arg("--config")
            .arg(&config)
            .arg("sync")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "no-change sync failed");
        own.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut sorted = own.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "harness: {} runs, median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms (process start to exit)",
        own.len(),
        stats::median(&own),
        stats::quantile(&sorted, 0.9),
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0)
    );
    hyperfine(agent, &config, args.nochange_runs, root)?;

    println!("\n## idle in `run` mode (interval 600 s, after its first sync)");
    let run_config = root.join("agent-run.toml");
    write_config(&run_config, &fleet.server.agent_url, &ca, &state, 600)?;
    let before = std::fs::metadata(state.join("state.json"))?.modified()?;
    let mut child = Command::new(agent)
        .arg("--config")
        .arg(&run_config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let synced = async {
        for _ in 0..200 {
            let modified = std::fs::metadata(state.join("state.json"))?.modified()?;
            if modified != before {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("run mode did not sync within 10 s")
    }
    .await;
    let mut rss = Vec::new();
    if synced.is_ok() {
        let samples = args.idle_seconds * 2;
        for _ in 0..samples {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss.push(procfs::status_kb(pid, "VmRSS").unwrap_or(0) as f64);
        }
    }
    let hwm = procfs::status_kb(pid, "VmHWM").unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    synced?;
    println!(
        "VmRSS over {} s: median {:.0} kB = {:.1} MiB, max {:.0} kB; VmHWM (peak incl. its first no-change sync) {hwm} kB",
        args.idle_seconds,
        stats::median(&rss),
        stats::median(&rss) / 1024.0,
        rss.iter().copied().fold(0.0, f64::max)
    );
    fleet.server.stop().await;
    Ok(())
}

fn hyperfine(agent: &Path, config: &Path, runs: usize, dir: &Path) -> anyhow::Result<()> {
    let json = dir.join("hyperfine.json");
    let command = format!("{} --config {} sync", agent.display(), config.display());
    let status = Command::new("hyperfine")
        .args([
            "-N",
            "--warmup",
            "3",
            "--runs",
            &runs.to_string(),
            "--export-json",
        ])
        .arg(&json)
        .arg(&command)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => {
            println!("hyperfine: not available (apt-get install -y hyperfine)");
            return Ok(());
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let r = &value["results"][0];
    let ms = |k: &str| r[k].as_f64().unwrap_or(0.0) * 1000.0;
    println!(
        "hyperfine -N --warmup 3 --runs {runs}: median {:.1} ms, mean {:.1} ± {:.1} ms, min {:.1} ms, max {:.1} ms, user {:.1} ms, system {:.1} ms",
        ms("median"),
        ms("mean"),
        ms("stddev"),
        ms("min"),
        ms("max"),
        ms("user"),
        ms("system")
    );
    Ok(())
}
