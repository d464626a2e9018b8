//! Issuance throughput (issue 7, part 1): certkeep against Debian's `lego`, each ordering the
//! same certificates from its own fresh Pebble (EAB required, `PEBBLE_VA_ALWAYS_VALID=1`,
//! `PEBBLE_VA_NOSLEEP=1`), in the same run, alternating which side goes first.
//!
//! `cargo run --release -p certkeep-bench --bin issuance`
//!
//! certkeep: the release `certkeep serve` binary in a child process on a fresh data directory
//! (embedded SQLite, or `--backend postgres`), one ACME account registered with EAB through the
//! API and an http-01 solver pattern covering the benchmark's names (Pebble accepts every answer,
//! so nothing has to be reachable). Every certificate is then requested at once with
//! `POST /api/v1/certificates`; the clock runs from the first request until `/metrics` counts
//! every certificate `valid` (polled every 200 ms).
//!
//! lego: `lego run` once per certificate, `--lego-processes` at a time, each slot with its own
//! account directory, registered with the same EAB by a warm-up certificate before the clock
//! starts. The clock runs from the first process start to the last exit (lego has written the
//! certificate when it exits).
//!
//! Both sides reach their Pebble through the test proxy (`testsupport/src/proxy.rs`), which
//! counts the requests of each ACME order by kind: the report gives the CA requests per
//! certificate by kind and their distribution, and the ratio to lego (`--uncounted` talks to
//! Pebble directly and counts nothing).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use certkeep_bench::build::certkeep_binary;
use certkeep_bench::server::Server;
use certkeep_bench::{procfs, stats};
use certkeep_testsupport::free_port;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::proxy::{Kind, Proxy};
use clap::Parser;
use serde_json::json;

/// Issuance throughput: certkeep vs lego, same Pebble set-up, loopback only.
#[derive(Parser)]
struct Args {
    /// ECDSA P-256 certificates per side.
    #[arg(long, default_value_t = 500)]
    ecdsa: usize,
    /// RSA 2048 certificates per side.
    #[arg(long, default_value_t = 100)]
    rsa: usize,
    /// Measured runs per side (the report shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// lego processes running at once.
    #[arg(long, default_value_t = 16)]
    lego_processes: usize,
    /// certkeep's `engine.workers` (orders in flight at once; the server's default is 8).
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// certkeep's `engine.directory_requests_per_sec` (its politeness limit towards the CA; the
    /// server's default is 20).
    #[arg(long, default_value_t = 1000)]
    requests_per_sec: u32,
    /// API requests in flight at once while submitting the certificates.
    #[arg(long, default_value_t = 16)]
    api_concurrency: usize,
    /// Database of the certkeep server: sqlite (embedded) or postgres (throwaway cluster).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Sides to run: certkeep, lego.
    #[arg(long, value_delimiter = ',', default_value = "certkeep,lego")]
    sides: Vec<String>,
    /// Do not run cargo build; use the `certkeep` binary already in the target directory.
    #[arg(long)]
    no_build: bool,
    /// Talk to Pebble directly, without the counting proxy (no request counts).
    #[arg(long)]
    uncounted: bool,
}

impl Args {
    /// The certificates of one run: `(index, lego key type, certkeep key type)`.
    fn certificates(&self) -> Vec<(usize, &'static str, &'static str)> {
        (0..self.ecdsa + self.rsa)
            .map(|i| {
                if i < self.ecdsa {
                    (i, "ec256", "ecdsa-p256")
                } else {
                    (i, "rsa2048", "rsa2048")
                }
            })
            .collect()
    }
}

/// What one side measured in one run.
#[derive(Default)]
struct Measured {
    seconds: f64,
    certificates: usize,
    /// CPU seconds of the client side (certkeep server, or every lego process).
    client_cpu: f64,
    /// CPU seconds of Pebble.
    pebble_cpu: f64,
    /// Where certkeep's time went (from its `/metrics`), empty for lego.
    breakdown: Vec<String>,
    /// CA requests of the measured certificates, when counted.
    requests: Option<Requests>,
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.certificates as f64 / self.seconds
    }
}

/// The kinds of CA request reported per certificate, with their names in the report.
const KINDS: [(Kind, &str); 6] = [
    (Kind::NewOrder, "newOrder"),
    (Kind::Authz, "authz"),
    (Kind::Challenge, "challenge"),
    (Kind::Order, "order"),
    (Kind::Finalize, "finalize"),
    (Kind::Certificate, "certificate"),
];

/// What the counting proxy saw for the measured certificates of one run.
struct Requests {
    /// Requests of each measured order (one order per certificate), all kinds.
    per_order: Vec<usize>,
    /// Requests of each kind over the measured orders.
    by_kind: HashMap<Kind, usize>,
    /// Nonce, directory and account requests while measuring (they belong to no order).
    unattributed: HashMap<Kind, usize>,
}

impl Requests {
    /// Counts `proxy` saw since `orders_before` orders and `seen_before` requests by kind.
    fn since(proxy: &Proxy, orders_before: usize, seen_before: &HashMap<Kind, usize>) -> Self {
        let orders: Vec<HashMap<Kind, usize>> =
            proxy.per_order().into_iter().skip(orders_before).collect();
        let mut by_kind = HashMap::new();
        for (kind, n) in orders.iter().flatten() {
            *by_kind.entry(*kind).or_default() += n;
        }
        let unattributed = [Kind::Nonce, Kind::Directory, Kind::NewAccount]
            .into_iter()
            .map(|k| (k, proxy.seen(k) - seen_before.get(&k).copied().unwrap_or(0)))
            .collect();
        Self {
            per_order: orders.iter().map(|o| o.values().sum()).collect(),
            by_kind,
            unattributed,
        }
    }

    /// Requests per certificate, all kinds, the unattributed ones spread evenly.
    fn mean(&self) -> f64 {
        let n = self.per_order.len().max(1) as f64;
        (self.per_order.iter().sum::<usize>() + self.unattributed.values().sum::<usize>()) as f64
            / n
    }

    /// The report lines.
    fn lines(&self) -> Vec<String> {
        let n = self.per_order.len().max(1) as f64;
        let mut sorted = self.per_order.clone();
        sorted.sort_unstable();
        let q = |p| stats::quantile(&sorted, p);
        let kinds: Vec<String> = KINDS
            .iter()
            .map(|(k, name)| {
                let count = self.by_kind.get(k).copied().unwrap_or(0);
                format!("{name} {:.2}", count as f64 / n)
            })
            .collect();
        let others: Vec<String> = [
            (Kind::Nonce, "newNonce"),
            (Kind::Directory, "directory"),
            (Kind::NewAccount, "newAccount"),
        ]
        .iter()
        .map(|(k, name)| format!("{name} {}", self.unattributed.get(k).copied().unwrap_or(0)))
        .collect();
        vec![
            format!(
                "CA requests per certificate: {:.2} in all; per order min/p50/p90/max {}/{}/{}/{} ({} orders)",
                self.mean(),
                q(0.0),
                q(0.5),
                q(0.9),
                q(1.0),
                self.per_order.len()
            ),
            format!("  by kind, per certificate: {}", kinds.join(", ")),
            format!("  outside orders, in all: {}", others.join(", ")),
        ]
    }
}

/// A counting proxy in front of `pebble` (unless `--uncounted`) and the directory URL to use.
async fn front(args: &Args, pebble: &Pebble) -> (Option<Proxy>, String) {
    if args.uncounted {
        return (None, pebble.directory_url.clone());
    }
    let proxy = Proxy::start(&pebble.pki, pebble.port).await;
    let url = proxy.directory_url.clone();
    (Some(proxy), url)
}

/// What `proxy` has counted so far: orders and requests by kind.
fn counted(proxy: Option<&Proxy>) -> (usize, HashMap<Kind, usize>) {
    proxy.map_or_else(Default::default, |p| {
        (p.per_order().len(), p.seen_by_kind())
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.backend == "sqlite" || args.backend == "postgres",
        "--backend must be sqlite or postgres"
    );
    for side in &args.sides {
        ensure!(
            side == "certkeep" || side == "lego",
            "unknown side `{side}`: certkeep or lego"
        );
    }
    let run_lego = args.sides.iter().any(|s| s == "lego");
    if run_lego {
        Command::new("lego")
            .arg("--version")
            .output()
            .context("lego is not installed (apt-get install -y lego)")?;
    }
    let binary = certkeep_binary(args.no_build)?;
    println!("machine: {}", procfs::machine());
    println!(
        "certificates per side: {} ECDSA P-256 + {} RSA 2048; lego processes: {}; certkeep workers: {}, {} requests/s towards the CA, {} backend",
        args.ecdsa,
        args.rsa,
        args.lego_processes,
        args.workers,
        args.requests_per_sec,
        args.backend
    );
    key_generation_cost()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut certkeep = Vec::new();
        let mut lego = Vec::new();
        let mut requests: HashMap<&str, Vec<f64>> = HashMap::new();
        for run in 0..args.runs {
            let mut order: Vec<&str> = args.sides.iter().map(String::as_str).collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for side in order {
                println!("\n## run {} of {}: {side}", run + 1, args.runs);
                let mut attempt = 1;
                let m = loop {
                    let result = if side == "certkeep" {
                        certkeep_run(&args, &binary).await
                    } else {
                        lego_run(&args).await
                    };
                    match result {
                        Err(e) if e.to_string().starts_with(STALLED) && attempt < ATTEMPTS => {
                            println!("attempt {attempt} {e} (Pebble deadlock); repeating the run");
                            attempt += 1;
                        }
                        other => break other?,
                    }
                };
                if side == "certkeep" {
                    certkeep.push(m.per_sec());
                } else {
                    lego.push(m.per_sec());
                }
                println!(
                    "{side}: {} certificates in {:.2} s = {:.2}/s; client CPU {:.1} s ({:.1} ms/certificate), Pebble CPU {:.1} s",
                    m.certificates,
                    m.seconds,
                    m.per_sec(),
                    m.client_cpu,
                    m.client_cpu * 1000.0 / m.certificates as f64,
                    m.pebble_cpu
                );
                for line in &m.breakdown {
                    println!("  {line}");
                }
                if let Some(r) = &m.requests {
                    for line in r.lines() {
                        println!("  {line}");
                    }
                    requests.entry(side).or_default().push(r.mean());
                }
            }
        }
        println!("\n## summary (certificates per second)");
        if !certkeep.is_empty() {
            println!(
                "certkeep: median {:.2} (runs {})",
                stats::median(&certkeep),
                stats::list(&certkeep)
            );
        }
        if !lego.is_empty() {
            println!(
                "lego:     median {:.2} (runs {})",
                stats::median(&lego),
                stats::list(&lego)
            );
        }
        if let (Some(c), Some(l)) = (requests.get("certkeep"), requests.get("lego")) {
            let (c, l) = (stats::median(c), stats::median(l));
            println!(
                "CA requests per certificate: certkeep {c:.2}, lego {l:.2} (medians of the runs), ratio certkeep/lego {:.2}",
                c / l
            );
        }
        if certkeep.len() == lego.len() && !lego.is_empty() {
            let ratios: Vec<f64> = certkeep.iter().zip(&lego).map(|(c, l)| c / l).collect();
            println!(
                "ratio certkeep/lego: median {:.2} (runs {})",
                stats::median(&ratios),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    })
}

/// A run without a new certificate for this long has stalled.
const STALL: Duration = Duration::from_secs(60);
/// Start of the error of a stalled run, which is repeated (see [`start_pebble`]).
const STALLED: &str = "stalled";
/// Attempts per run when runs stall.
const ATTEMPTS: usize = 5;

/// CPU cost of one key of each type on one core, with the server's code path (rcgen on
/// aws-lc-rs), to attribute certkeep's CPU time.
fn key_generation_cost() -> anyhow::Result<()> {
    let time = |n: u32, f: &dyn Fn() -> Result<rcgen::KeyPair, rcgen::Error>| {
        let t = Instant::now();
        for _ in 0..n {
            f()?;
        }
        Ok::<f64, rcgen::Error>(t.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
    };
    let rsa = time(20, &|| {
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
    })?;
    let ec = time(200, &|| {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
    })?;
    println!("key generation on one core (mean): RSA 2048 {rsa:.1} ms, ECDSA P-256 {ec:.3} ms");
    Ok(())
}

async fn start_pebble() -> anyhow::Result<Pebble> {
    // No authorization reuse (every name is new anyway). Pebble 2.4 still takes its store's
    // read lock twice in `FindValidAuthorization` on every new-order, which deadlocks the whole
    // store when a writer queues in between (seen here with 64 orders in flight: goroutine
    // dump, every request hangs). Such a run stalls; it is reported and repeated.
    Pebble::start(PebbleOptions::fresh_authorizations())
        .await
        .context("pebble is not installed (apt-get install -y pebble)")
}

fn cpu_seconds(ticks: u64) -> f64 {
    ticks as f64 / procfs::ticks_per_second()
}

/// Sum of the samples of `name` (exactly that metric) whose labels contain `label`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            (labels.is_empty() || labels.starts_with('{'))
                .then_some(())
                .filter(|()| labels.contains(label))?;
            value.parse::<f64>().ok()
        })
        .sum()
}

async fn certkeep_run(args: &Args, binary: &Path) -> anyhow::Result<Measured> {
    let pebble = start_pebble().await?;
    let (proxy, directory_url) = front(args, &pebble).await;
    let config = format!(
        "[engine]\nworkers = {}\ndirectory_requests_per_sec = {}\n\
         [solvers.http01]\naddr = \"127.0.0.1:{}\"\npatterns = [\"*.certkeep.bench.test\"]\n",
        args.workers,
        args.requests_per_sec,
        free_port(),
    );
    let server = Arc::new(Server::start(binary, &args.backend, &config).await?);
    server
        .register_pebble_account(&pebble, &directory_url)
        .await?;
    let certificates = args.certificates();
    let total = certificates.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(certificates)));
    let server_cpu = procfs::cpu_ticks(server.child.id()).unwrap_or(0);
    let pebble_cpu = procfs::cpu_ticks(pebble.pid()).unwrap_or(0);
    let (orders_before, seen_before) = counted(proxy.as_ref());
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..args.api_concurrency.max(1) {
        let queue = queue.clone();
        let server = server.clone();
        submitters.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((i, _, key_type)) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                server
                    .post(
                        "/certificates",
                        &json!({
                            "name": format!("bench-{i}"),
                            "dns_names": [format!("c{i}.certkeep.bench.test")],
                            "key_type": key_type,
                            "account": "pebble",
                        }),
                    )
                    .await?;
            }
        });
    }
    while let Some(done) = submitters.join_next().await {
        done??;
    }
    let submitted = started.elapsed().as_secs_f64();
    let (mut progress, mut progressed) = (0.0, Instant::now());
    let text = loop {
        let text = server.get("/metrics").await?;
        let valid = metric(&text, "certkeep_certificates", "state=\"valid\"");
        if valid > progress {
            (progress, progressed) = (valid, Instant::now());
        }
        ensure!(
            progressed.elapsed() < STALL,
            "{STALLED}: {valid} of {total} valid, none for {} s",
            STALL.as_secs()
        );
        let failed = metric(&text, "certkeep_certificates", "state=\"failed\"")
            + metric(&text, "certkeep_certificates", "state=\"failing\"");
        ensure!(
            failed == 0.0,
            "{failed} certificates failed; see GET /api/v1/certificates?state=failed"
        );
        if valid as usize >= total {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = cpu_seconds(procfs::cpu_ticks(server.child.id()).unwrap_or(0) - server_cpu);
    let pebble_cpu = cpu_seconds(procfs::cpu_ticks(pebble.pid()).unwrap_or(0) - pebble_cpu);
    let m = |name: &str, label: &str| metric(&text, name, label);
    let requests = m("certkeep_acme_requests_total", "");
    let request_s = m("certkeep_acme_request_duration_seconds_sum", "");
    let poll_s = m("certkeep_acme_poll_wait_seconds_sum", "");
    let polls = m("certkeep_acme_poll_wait_seconds_count", "");
    let gate_s = m("certkeep_acme_rate_limit_wait_seconds_sum", "");
    let order_s = m("certkeep_order_duration_seconds_sum", "");
    let orders = m("certkeep_order_duration_seconds_count", "");
    let mut breakdown = vec![
        format!("all {total} accepted by the API after {submitted:.2} s"),
        format!(
            "ACME requests: {requests:.0} ({:.1} per certificate), {request_s:.1} s in flight in all, mean {:.1} ms",
            requests / total as f64,
            request_s * 1000.0 / requests.max(1.0)
        ),
        format!(
            "waits between polls of the CA: {polls:.0} ({:.2} per certificate), {poll_s:.1} s in all; waits for the request budget {gate_s:.1} s",
            polls / total as f64
        ),
        format!(
            "orders: {orders:.0}, mean {:.2} s from queued to stored (includes waiting for a worker)",
            order_s / orders.max(1.0)
        ),
    ];
    for key_type in ["ecdsa-p256", "rsa2048"] {
        let label = format!("key_type=\"{key_type}\"");
        let n = m("certkeep_key_generation_seconds_count", &label);
        if n > 0.0 {
            let s = m("certkeep_key_generation_seconds_sum", &label);
            breakdown.push(format!(
                "key + CSR generation {key_type}: {n:.0}, {s:.2} s in all, mean {:.2} ms",
                s * 1000.0 / n
            ));
        }
    }
    let worker_s = args.workers as f64 * seconds;
    breakdown.push(format!(
        "worker time {worker_s:.0} s ({} workers × {seconds:.1} s): CA requests {:.0} %, poll waits {:.0} %, key generation {:.0} %, the rest (database, sealing, scheduling, idle) {:.0} %",
        args.workers,
        100.0 * request_s / worker_s,
        100.0 * poll_s / worker_s,
        100.0 * m("certkeep_key_generation_seconds_sum", "") / worker_s,
        100.0
            * (worker_s - request_s - poll_s - m("certkeep_key_generation_seconds_sum", ""))
            / worker_s
    ));
    Ok(Measured {
        seconds,
        certificates: total,
        client_cpu,
        pebble_cpu,
        breakdown,
        requests: proxy
            .as_ref()
            .map(|p| Requests::since(p, orders_before, &seen_before)),
    })
}

/// One `lego run` for one name in the account directory `path`.
async fn lego(
    pebble: &Pebble,
    directory_url: &str,
    work: &Path,
    slot: usize,
    name: &str,
    key_type: &str,
) -> anyhow::Result<()> {
    let eab = &pebble.eab[0];
    let out = tokio::process::Command::new("lego")
        .arg("--accept-tos")
        .args(["--server", directory_url])
        .args(["--email", &format!("slot{slot}@lego.bench.test")])
        .arg("--eab")
        .args(["--kid", &eab.kid, "--hmac", &eab.b64url()])
        .args(["--key-type", key_type])
        .arg("--http")
        .arg("--http.webroot")
        .arg(work.join("webroot"))
        .arg("--path")
        .arg(work.join(format!("slot{slot}")))
        .args(["--domains", name])
        .arg("run")
        .env("LEGO_CA_CERTIFICATES", work.join("pebble-ca.pem"))
        .stdin(Stdio::null())
        .output()
        .await
        .context("run lego")?;
    ensure!(
        out.status.success(),
        "lego for {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = work.join(format!("slot{slot}/certificates/{name}.crt"));
    ensure!(cert.is_file(), "lego wrote no {}", cert.display());
    Ok(())
}

async fn lego_run(args: &Args) -> anyhow::Result<Measured> {
    let pebble = Arc::new(start_pebble().await?);
    let (proxy, directory_url) = front(args, &pebble).await;
    let directory_url = Arc::new(directory_url);
    let dir = tempfile::tempdir()?;
    let work: Arc<PathBuf> = Arc::new(dir.path().to_path_buf());
    std::fs::create_dir_all(work.join("webroot"))?;
    std::fs::write(work.join("pebble-ca.pem"), &pebble.pki.ca_pem)?;
    // Warm-up: one certificate per slot registers the slot's account before the clock starts.
    let mut warmups = tokio::task::JoinSet::new();
    for slot in 0..args.lego_processes {
        let (pebble, work, url) = (pebble.clone(), work.clone(), directory_url.clone());
        warmups.spawn(async move {
            lego(
                &pebble,
                &url,
                &work,
                slot,
                &format!("warm{slot}.lego.bench.test"),
                "ec256",
            )
            .await
        });
    }
    while let Some(done) = warmups.join_next().await {
        done??;
    }
    let certificates = args.certificates();
    let total = certificates.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(certificates)));
    let self_pid = std::process::id();
    let children_cpu = procfs::children_cpu_ticks(self_pid).unwrap_or(0);
    let pebble_cpu = procfs::cpu_ticks(pebble.pid()).unwrap_or(0);
    let (orders_before, seen_before) = counted(proxy.as_ref());
    let started = Instant::now();
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..args.lego_processes {
        let (pebble, work, queue) = (pebble.clone(), work.clone(), queue.clone());
        let url = directory_url.clone();
        slots.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((i, key_type, _)) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                lego(
                    &pebble,
                    &url,
                    &work,
                    slot,
                    &format!("c{i}.lego.bench.test"),
                    key_type,
                )
                .await?;
            }
        });
    }
    while let Some(done) = slots.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Measured {
        seconds,
        certificates: total,
        client_cpu: cpu_seconds(procfs::children_cpu_ticks(self_pid).unwrap_or(0) - children_cpu),
        pebble_cpu: cpu_seconds(procfs::cpu_ticks(pebble.pid()).unwrap_or(0) - pebble_cpu),
        breakdown: Vec::new(),
        requests: proxy
            .as_ref()
            .map(|p| Requests::since(p, orders_before, &seen_before)),
    })
}
