//! Agent poll capacity (issue 7, part 2): simulated agents with real client certificates
//! against certkeep's agent listener and, in the same run with the same generator, Debian's
//! nginx requiring client certificates from the same CA.
//!
//! `cargo run --release -p certkeep-bench --bin agent_poll`
//!
//! The certkeep server runs in a child process (this binary with `--serve`), so its CPU time and
//! memory can be read from `/proc` like nginx's, and it has its own runtime as in production.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use certkeep_bench::fleet::{AgentKeys, Fleet};
use certkeep_bench::loadgen::{self, MANIFEST_PATH, Mode, Sample, Target};
use certkeep_bench::nginx::{Nginx, NginxFiles};
use certkeep_bench::{now, procfs, stats};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Agent poll capacity: certkeep vs nginx, same load generator, same CA, loopback only.
#[derive(Parser, Clone)]
struct Args {
    /// Simulated agents (one client certificate each).
    #[arg(long, default_value_t = 500)]
    agents: usize,
    /// Certificates defined on the server.
    #[arg(long, default_value_t = 100)]
    certificates: usize,
    /// Certificates assigned to each agent (e.g. `--agents 10000 --certs-per-agent 20` for a
    /// large fleet).
    #[arg(long, alias = "certs-per-agent", default_value_t = 5)]
    per_agent: usize,
    /// Measured runs per mode and target (the report shows medians).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent connection attempts in mode (a).
    #[arg(long, default_value_t = 32)]
    handshake_concurrency: usize,
    /// Keep-alive connections in modes (b) and (c).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Modes to run: any of a, b, c.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    modes: Vec<String>,
    /// Database of the certkeep server: sqlite (embedded) or postgres (throwaway cluster).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// nginx worker processes (default: one per core, like `worker_processes auto`).
    #[arg(long)]
    nginx_workers: Option<usize>,
    /// `pfx_cache.max_entries` of the certkeep server (0: every download builds its PFX, as
    /// before the cache). Unset: the server's default.
    #[arg(long)]
    pfx_cache_entries: Option<usize>,
    /// Write every sample as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run the certkeep server with its fixture in `DIR` until stdin closes.
    #[arg(long, hide = true, value_name = "DIR")]
    serve: Option<PathBuf>,
}

/// What the server child hands to the load generator.
#[derive(Serialize, Deserialize)]
struct Fixture {
    agent_url: String,
    ca_pem: String,
    nginx_cert_pem: String,
    nginx_key_pem: String,
    agents: Vec<AgentKeys>,
    setup_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if let Some(dir) = &args.serve {
        return serve(dir, &args);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(generate(args))
}

/// Child: the certkeep server with `agents` enrolled agents, on the production runtime shape
/// (`tokio::runtime::Runtime::new()`, one worker per core), until stdin closes.
fn serve(dir: &Path, args: &Args) -> anyhow::Result<()> {
    // Logs as `certkeep serve` does, into `server.log` (the parent's stderr for this child).
    certkeep_server::init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let database_url = match args.backend.as_str() {
            "sqlite" => None,
            "postgres" => {
                let cluster = certkeep_testsupport::postgres::PgCluster::shared()
                    .context("PostgreSQL binaries (initdb, postgres) are not on PATH")?;
                Some(cluster.url(&cluster.create_database().await))
            }
            other => bail!("unknown backend {other}"),
        };
        let fleet = Fleet::start_with(database_url, |config| {
            if let Some(entries) = args.pfx_cache_entries {
                config.pfx_cache.max_entries = entries;
            }
        })
        .await?;
        let certificates = fleet.certificates(args.certificates.max(1)).await?;
        let mut agents = Vec::with_capacity(args.agents);
        for i in 0..args.agents {
            let assigned: Vec<_> = (0..args.per_agent)
                .map(|j| &certificates[(i * args.per_agent + j) % certificates.len()])
                .collect();
            agents.push(
                fleet
                    .enrolled_agent(&format!("agent-{i:06}"), &assigned)
                    .await?,
            );
        }
        let nginx = fleet.server.state.ca.issue_server_cert(
            &["127.0.0.1".into(), "localhost".into()],
            now(),
            time::Duration::days(365),
        )?;
        let fixture = Fixture {
            agent_url: fleet.server.agent_url.clone(),
            ca_pem: fleet.server.state.ca.cert_pem().to_owned(),
            nginx_cert_pem: nginx.cert_pem,
            nginx_key_pem: nginx.key_pem.to_string(),
            agents,
            setup_seconds: started.elapsed().as_secs_f64(),
        };
        std::fs::write(dir.join("fixture.json"), serde_json::to_vec(&fixture)?)?;
        println!("READY");
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        let cache = fleet.server.state.agent_cache.size();
        eprintln!(
            "certkeep agent cache: {} entries, about {} kB",
            cache.entries,
            cache.bytes / 1024
        );
        fleet.server.stop().await;
        Ok(())
    })
}

/// The server child; stopped (stdin closed, then killed) on drop.
struct ServerChild(Child);

impl ServerChild {
    fn start(dir: &Path, args: &Args) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(dir)
            .args(["--agents", &args.agents.to_string()])
            .args(["--certificates", &args.certificates.to_string()])
            .args(["--per-agent", &args.per_agent.to_string()])
            .args(["--backend", &args.backend])
            .args(
                args.pfx_cache_entries
                    .map(|n| format!("--pfx-cache-entries={n}")),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut child = Self(child);
        // The server prints a notice about its first admin token before we say READY.
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                let status = child.0.try_wait()?;
                bail!("the certkeep server child did not start ({status:?})");
            }
            if line.trim() == "READY" {
                return Ok(child);
            }
        }
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl ServerChild {
    /// Closes the child's stdin (it drains and exits) and waits up to 10 s before killing it.
    async fn stop(mut self) {
        drop(self.0.stdin.take());
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

async fn generate(args: Args) -> anyhow::Result<()> {
    let modes: Vec<Mode> = args
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "a" => Ok(Mode::Handshake),
            "b" => Ok(Mode::KeepAlive),
            "c" => Ok(Mode::Pfx),
            other => Err(anyhow::anyhow!("unknown mode {other}; use a, b, c")),
        })
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let setup = std::time::Instant::now();
    let server = ServerChild::start(dir.path(), &args)?;
    let fixture: Fixture =
        serde_json::from_slice(&std::fs::read(dir.path().join("fixture.json"))?)?;
    println!(
        "machine: {}\nserver: certkeep agent listener ({}), {} agents x {} certificates ({} defined), setup {:.1} s",
        procfs::machine(),
        args.backend,
        fixture.agents.len(),
        args.per_agent,
        args.certificates,
        fixture.setup_seconds,
    );
    let clients = Arc::new(loadgen::client_configs(&fixture.ca_pem, &fixture.agents)?);
    let certkeep_addr: SocketAddr = fixture
        .agent_url
        .trim_start_matches("https://")
        .parse()
        .context("agent URL")?;

    // Each agent's current manifest ETag (what a polling agent sends back).
    let mut etags = Vec::with_capacity(clients.len());
    let mut manifest_body = None;
    for (i, client) in clients.iter().enumerate() {
        let mut sender = loadgen::connect(certkeep_addr, client.clone()).await?;
        let answer = loadgen::get(&mut sender, MANIFEST_PATH, None).await?;
        if answer.status != http::StatusCode::OK {
            bail!("manifest of agent {i}: {}", answer.status);
        }
        etags.push(answer.etag.context("manifest without ETag")?);
        manifest_body.get_or_insert(answer.body);
    }
    let manifest_body = manifest_body.context("no agents")?;
    let pfx_paths: Vec<Vec<String>> = fixture
        .agents
        .iter()
        .map(|a| {
            a.certificate_ids
                .iter()
                .map(|id| format!("/agent/v1/certificates/{id}/pfx"))
                .collect()
        })
        .collect();
    let pfx = {
        let mut sender = loadgen::connect(certkeep_addr, clients[0].clone()).await?;
        let answer = loadgen::get(&mut sender, &pfx_paths[0][0], None).await?;
        if answer.status != http::StatusCode::OK {
            bail!("PFX download: {}", answer.status);
        }
        answer.body
    };

    let workers = args
        .nginx_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let nginx = Nginx::start(
        &dir.path().join("nginx"),
        workers,
        &NginxFiles {
            cert_pem: &fixture.nginx_cert_pem,
            key_pem: &fixture.nginx_key_pem,
            client_ca_pem: &fixture.ca_pem,
            manifest: &manifest_body,
            pfx: &pfx,
        },
    )
    .await?;
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let nginx_etag = {
        let mut sender = loadgen::connect(nginx_addr, clients[0].clone()).await?;
        let answer = loadgen::get(&mut sender, MANIFEST_PATH, None).await?;
        answer.etag.context("nginx sent no ETag")?
    };
    println!(
        "reference: nginx {} worker(s) on {nginx_addr}; manifest {} bytes, PFX {} bytes; prepared in {:.1} s",
        workers,
        manifest_body.len(),
        pfx.len(),
        setup.elapsed().as_secs_f64()
    );

    let certkeep = Arc::new(Target {
        name: "certkeep".into(),
        addr: certkeep_addr,
        etags,
        pfx_paths: pfx_paths.clone(),
        pids: vec![server.pid()],
    });
    let reference = Arc::new(Target {
        name: "nginx".into(),
        addr: nginx_addr,
        etags: vec![nginx_etag; clients.len()],
        pfx_paths,
        pids: nginx.pids(),
    });

    let measure = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mut samples: Vec<Sample> = Vec::new();
    for run in 0..args.runs {
        for &mode in &modes {
            let concurrency = match mode {
                Mode::Handshake => args.handshake_concurrency,
                _ => args.connections,
            };
            // Alternate which side goes first, so drift in the machine's load hits both.
            let order = if run % 2 == 0 {
                [&certkeep, &reference]
            } else {
                [&reference, &certkeep]
            };
            for target in order {
                if !warmup.is_zero() {
                    loadgen::measure(target.clone(), clients.clone(), mode, concurrency, warmup)
                        .await;
                }
                let sample =
                    loadgen::measure(target.clone(), clients.clone(), mode, concurrency, measure)
                        .await;
                println!(
                    "run {} {:<30} {:<8} {:>9.1}/s p50 {:>7.2} ms p99 {:>7.2} ms cpu {:>7.1} us/req errors {}{}",
                    run + 1,
                    sample.mode,
                    sample.target,
                    sample.per_second,
                    sample.p50_ms,
                    sample.p99_ms,
                    sample.server_cpu_us_per_request,
                    sample.errors,
                    sample
                        .first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default(),
                );
                samples.push(sample);
            }
        }
    }
    println!(
        "certkeep server RSS: {} kB now, {} kB peak (VmHWM)",
        procfs::status_kb(server.pid(), "VmRSS").unwrap_or(0),
        procfs::status_kb(server.pid(), "VmHWM").unwrap_or(0)
    );
    summary(&modes, &samples);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&samples)?)?;
    }
    drop(nginx);
    server.stop().await;
    // The child's last words (into its log): the size of its agent cache.
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    if let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.starts_with("certkeep agent cache:"))
    {
        println!("{line}");
    }
    Ok(())
}

fn summary(modes: &[Mode], samples: &[Sample]) {
    println!("\nsummary (median of runs)");
    println!(
        "| mode | certkeep req/s | nginx req/s | ratio | certkeep p99 ms | nginx p99 ms | certkeep CPU us/req | nginx CPU us/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for mode in modes {
        let pick = |target: &str| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.mode == mode.name() && s.target == target)
                .collect()
        };
        let (c, n) = (pick("certkeep"), pick("nginx"));
        let field = |v: &[&Sample], f: fn(&Sample) -> f64| {
            stats::median(&v.iter().map(|&s| f(s)).collect::<Vec<_>>())
        };
        let ratios: Vec<f64> = c
            .iter()
            .zip(&n)
            .map(|(c, n)| c.per_second / n.per_second.max(f64::MIN_POSITIVE))
            .collect();
        let errors: u64 = c.iter().chain(&n).map(|s| s.errors).sum();
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            mode.name(),
            field(&c, |s| s.per_second),
            field(&n, |s| s.per_second),
            stats::median(&ratios),
            field(&c, |s| s.p99_ms),
            field(&n, |s| s.p99_ms),
            field(&c, |s| s.server_cpu_us_per_request),
            field(&n, |s| s.server_cpu_us_per_request),
            errors,
        );
        println!(
            "  raw req/s certkeep [{}] nginx [{}] ratios [{}]",
            stats::list(&c.iter().map(|s| s.per_second).collect::<Vec<_>>()),
            stats::list(&n.iter().map(|s| s.per_second).collect::<Vec<_>>()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}
