//! API intake (issue 17, item 4): how many `POST /api/v1/certificates` per second one server
//! accepts, with latency and server CPU per create.
//!
//! `cargo run --release -p certkeep-bench --bin intake` (`--backend postgres` for PostgreSQL)
//!
//! The release `certkeep serve` binary runs in a child process on a fresh data directory with
//! its engine off (`engine.enabled = false`): orders are queued and stay queued, so only the
//! intake is measured, not the CA traffic behind it. The ACME account is registered once at a
//! Pebble before the clock (an account must be usable for a create to be accepted). The clock
//! runs from the first create to the last answer, `--concurrency` requests in flight.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use certkeep_bench::build::certkeep_binary;
use certkeep_bench::server::Server;
use certkeep_bench::{procfs, stats};
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use clap::Parser;
use serde_json::json;

/// API intake: certificate creates per second on one server.
#[derive(Parser)]
struct Args {
    /// Certificates created per run.
    #[arg(long, default_value_t = 2000)]
    certificates: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured runs (the report shows medians), each on a fresh server.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Database of the server: sqlite (embedded) or postgres (throwaway cluster).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Do not run cargo build; use the `certkeep` binary already in the target directory.
    #[arg(long)]
    no_build: bool,
}

/// What one run measured.
struct Measured {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU milliseconds per create.
    cpu_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.backend == "sqlite" || args.backend == "postgres",
        "--backend must be sqlite or postgres"
    );
    let binary = certkeep_binary(args.no_build)?;
    println!("machine: {}", procfs::machine());
    println!(
        "{} creates per run, {} in flight, {} backend, engine off",
        args.certificates, args.concurrency, args.backend
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let pebble = Pebble::start(PebbleOptions::default())
            .await
            .context("pebble is not installed (apt-get install -y pebble)")?;
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let m = intake_run(&args, &binary, &pebble).await?;
            println!(
                "run {}: {:.0} creates/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.2} ms/create",
                run + 1,
                m.per_sec,
                ms(m.p50),
                ms(m.p99),
                m.cpu_ms
            );
            runs.push(m);
        }
        let pick = |f: fn(&Measured) -> f64| stats::median(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "\nmedian: {:.0} creates/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.2} ms/create (runs: {} creates/s)",
            pick(|m| m.per_sec),
            pick(|m| ms(m.p50)),
            pick(|m| ms(m.p99)),
            pick(|m| m.cpu_ms),
            stats::list(&runs.iter().map(|m| m.per_sec).collect::<Vec<_>>())
        );
        Ok(())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One run on a fresh server: register the account, then create every certificate.
async fn intake_run(args: &Args, binary: &Path, pebble: &Pebble) -> anyhow::Result<Measured> {
    let server =
        Arc::new(Server::start(binary, &args.backend, "[engine]\nenabled = false\n").await?);
    server
        .register_pebble_account(pebble, &pebble.directory_url)
        .await?;
    // One create before the clock: connections and the token's last-use write are warm.
    create(&server, usize::MAX).await?;
    let queue = Arc::new(Mutex::new((0..args.certificates).collect::<VecDeque<_>>()));
    let cpu_before = procfs::cpu_ticks(server.child.id()).unwrap_or(0);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (queue, server) = (queue.clone(), server.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(i) = next else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let sent = Instant::now();
                create(&server, i).await?;
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(args.certificates);
    while let Some(done) = clients.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = procfs::cpu_ticks(server.child.id()).unwrap_or(0) - cpu_before;
    latencies.sort();
    Ok(Measured {
        per_sec: latencies.len() as f64 / seconds,
        p50: stats::quantile(&latencies, 0.5),
        p99: stats::quantile(&latencies, 0.99),
        cpu_ms: cpu as f64 / procfs::ticks_per_second() * 1000.0 / latencies.len().max(1) as f64,
    })
}

/// Creates certificate `i`, which must be accepted.
async fn create(server: &Server, i: usize) -> anyhow::Result<()> {
    let created = server
        .post(
            "/certificates",
            &json!({
                "name": format!("intake-{i}"),
                "dns_names": [format!("i{i}.certkeep.bench.test")],
                "account": "pebble",
            }),
        )
        .await?;
    ensure!(
        created["state"] == "pending",
        "unexpected answer: {created}"
    );
    Ok(())
}
