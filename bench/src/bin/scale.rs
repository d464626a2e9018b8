//! Scale (issue 7, part 3): PostgreSQL with 1,000,000 certificates, 2,000,000 versions and
//! 100,000 agents with 20 assignments each, generated with SQL (`generate_series`) into the
//! schema of `migrations/postgres/`; then the query plans and p99 latency of the due-renewals
//! query, an agent's manifest and the certificate list filtered by `expiring_within`, measured
//! through the server's own `Db` methods while simulated agents poll the agent listener; the
//! server's memory and its start-to-ready time on that database.
//!
//! `cargo run --release -p certkeep-bench --bin scale`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_bench::fleet::Fleet;
use certkeep_bench::loadgen::{self, Mode, Target};
use certkeep_bench::{now, pem, procfs, stats};
use certkeep_server::db::certificates::CertificateFilter;
use certkeep_server::model::AgentId;
use certkeep_server::testkit::TestServer;
use certkeep_testsupport::postgres::PgCluster;
use clap::Parser;
use sqlx::{Connection as _, Executor as _, PgConnection, Row as _};

/// Scale: a million certificates on PostgreSQL.
#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    certificates: i64,
    /// Versions per certificate (the last one is current).
    #[arg(long, default_value_t = 2)]
    versions: i64,
    #[arg(long, default_value_t = 100_000)]
    agents: i64,
    /// Assignments per agent.
    #[arg(long, default_value_t = 20)]
    per_agent: i64,
    /// Timed executions of each query.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Enrolled agents polling the listener (keep-alive, 304) while queries are timed; 0: none.
    #[arg(long, default_value_t = 100)]
    poll_agents: usize,
    /// Keep-alive connections of the poll load.
    #[arg(long, default_value_t = 32)]
    poll_connections: usize,
    /// `expiring_within` of the list query, in days.
    #[arg(long, default_value_t = 7)]
    expiring_days: i64,
    /// Server starts timed.
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// SQL file run after loading (e.g. proposed indexes), before plans and timings.
    #[arg(long, value_name = "FILE")]
    sql_after_load: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

/// The data, generated in the database. Ids are md5-derived UUIDs so rows can refer to each
/// other without lookups. Renewal times spread over 60 days from yesterday (about 1/60 due);
/// current versions end 1..90 days from now; 1 % of certificates failed, 1 % retired.
const LOAD: &[&str] = &[
    "INSERT INTO acme_accounts (id, name, directory_url, state, created_at, updated_at) VALUES ('00000000-0000-7000-8000-000000000001', 'scale', 'https://ca.invalid/dir', 'valid', now(), now())",
    "INSERT INTO certificates (id, name, dns_names, key_type, account_id, state, current_version_id, current_not_after, renew_after, created_at, updated_at)
     SELECT md5('c' || i)::uuid, 'cert-' || i, '[\"host-' || i || '.example.com\",\"www.host-' || i || '.example.com\"]', 'ecdsa-p256', '00000000-0000-7000-8000-000000000001',
            CASE WHEN i % 100 = 7 THEN 'failed' WHEN i % 100 = 13 THEN 'retired' ELSE 'valid' END,
            md5('v' || $V || '-' || i)::uuid,
            now() + interval '1 day' + ((i::bigint * 7919) % 7776000) * interval '1 second',
            now() - interval '1 day' + ((i::bigint * 7919) % 5184000) * interval '1 second',
            now() - interval '60 days', now()
     FROM generate_series(1, $N) i",
    "INSERT INTO certificate_versions (id, certificate_id, chain_pem, key_enc, serial, thumbprint, dns_names, not_before, not_after, created_at)
     SELECT md5('v' || g || '-' || i)::uuid, md5('c' || i)::uuid, $CHAIN, '\\x00'::bytea, md5('s' || g || '-' || i), md5('t' || g || '-' || i) || md5('u' || g || '-' || i),
            '[\"host-' || i || '.example.com\",\"www.host-' || i || '.example.com\"]',
            now() - ($V - g) * interval '60 days' - interval '1 day',
            now() - ($V - g) * interval '60 days' + interval '1 day' + ((i::bigint * 7919) % 7776000) * interval '1 second',
            now() - ($V - g) * interval '60 days'
     FROM generate_series(1, $V) g, generate_series(1, $N) i",
    "INSERT INTO agents (id, name, state, cert_serial, ccs_password_enc, pfx_encryption, created_at, updated_at)
     SELECT md5('a' || i)::uuid, 'scale-agent-' || i, 'active', md5('as' || i), '\\x00'::bytea, 'legacy', now(), now()
     FROM generate_series(1, $A) i",
    "INSERT INTO agent_assignments (agent_id, certificate_id, created_at)
     SELECT md5('a' || a)::uuid, md5('c' || (((a - 1) * $K + k - 1) % $N + 1))::uuid, now()
     FROM generate_series(1, $A) a, generate_series(1, $K) k",
];

async fn run(args: Args) -> anyhow::Result<()> {
    println!("machine: {}", procfs::machine());
    let cluster =
        PgCluster::shared().context("PostgreSQL binaries (initdb, postgres) are not on PATH")?;
    let name = cluster.create_database().await;
    let url = cluster.url(&name);
    let mut conn = PgConnection::connect(&url).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await?;
    println!("database: {version}");
    {
        let db =
            certkeep_server::db::Db::connect_postgres(&secrecy::SecretString::from(url.clone()))
                .await?;
        db.migrate().await?;
        db.close().await;
    }

    // A realistic chain (leaf + intermediate, ~1.3 kB) for every version row.
    let test_ca = TestCa::new();
    let leaf = test_ca.leaf(
        &["host.example.com", "www.host.example.com"],
        KeyKind::Ecdsa,
    );
    let chain: String = leaf
        .chain_der
        .iter()
        .map(|d| pem("CERTIFICATE", d))
        .collect();
    let t0 = Instant::now();
    for statement in LOAD {
        let sql = statement
            .replace("$N", &args.certificates.to_string())
            .replace("$V", &args.versions.to_string())
            .replace("$A", &args.agents.to_string())
            .replace("$K", &args.per_agent.to_string())
            .replace("$CHAIN", &format!("'{chain}'"));
        let step = Instant::now();
        let done = conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        println!(
            "  loaded {:>9} rows in {:>6.1} s",
            done.rows_affected(),
            step.elapsed().as_secs_f64()
        );
    }
    conn.execute("VACUUM ANALYZE").await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&mut conn)
            .await?;
    println!(
        "data loaded and analyzed in {:.1} s; database size {size}",
        t0.elapsed().as_secs_f64()
    );

    // Server start to ready on this database (migrations already applied: a no-op check).
    // One data directory for every start: it holds the age identity that seals the CA key.
    // The first start creates the CA and the first admin token; the others are restarts.
    let data = tempfile::tempdir()?;
    let mut starts = Vec::new();
    for _ in 0..args.starts {
        let t = Instant::now();
        let server = TestServer::start_with(|c| {
            c.database_url = Some(secrecy::SecretString::from(url.clone()));
            c.data_dir = data.path().to_path_buf();
        })
        .await;
        let addr = server.agent_url.trim_start_matches("https://").to_owned();
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        server.stop().await;
    }
    println!(
        "server start to ready (prepare: config, secrets, pool, migrations check, CA, listeners): [{}] ms (the first start creates the CA and admin token), median {:.0} ms",
        stats::list(&starts),
        stats::median(&starts)
    );

    // The server under test, with enrolled agents that poll it.
    let fleet = Fleet::start_in(Some(url.clone()), Some(data.path())).await?;
    let mut agents = Vec::new();
    if args.poll_agents > 0 {
        let certs = fleet.certificates(args.per_agent as usize).await?;
        let refs: Vec<_> = certs.iter().collect();
        for i in 0..args.poll_agents {
            agents.push(fleet.enrolled_agent(&format!("poller-{i}"), &refs).await?);
        }
    }
    conn.execute("ANALYZE").await?;

    if let Some(path) = &args.sql_after_load {
        let sql = std::fs::read_to_string(path)?;
        let t = Instant::now();
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        conn.execute("VACUUM ANALYZE").await?;
        println!(
            "ran {} and VACUUM ANALYZE in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    explain(&mut conn, &args).await?;

    // Poll load in the background until `stop`.
    let load = if agents.is_empty() {
        None
    } else {
        let clients = Arc::new(loadgen::client_configs(
            fleet.server.state.ca.cert_pem(),
            &agents,
        )?);
        let addr = fleet
            .server
            .agent_url
            .trim_start_matches("https://")
            .parse()?;
        let mut etags = Vec::new();
        for client in clients.iter() {
            let mut s = loadgen::connect(addr, client.clone()).await?;
            etags.push(
                loadgen::get(&mut s, loadgen::MANIFEST_PATH, None)
                    .await?
                    .etag
                    .context("ETag")?,
            );
        }
        let target = Arc::new(Target {
            name: "certkeep".into(),
            addr,
            etags,
            pfx_paths: vec![Vec::new(); clients.len()],
            pids: vec![std::process::id()],
        });
        let stop = Arc::new(AtomicBool::new(false));
        Some((
            stop.clone(),
            tokio::spawn(loadgen::measure_until(
                target,
                clients,
                Mode::KeepAlive,
                args.poll_connections,
                Duration::from_secs(3600),
                stop,
            )),
        ))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let db = &fleet.server.state.db;
    let sample_agents: Vec<AgentId> = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT id FROM agents WHERE name LIKE 'scale-agent-%' ORDER BY random() LIMIT $1",
    )
    .bind(args.iterations as i64)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(AgentId)
    .collect();
    anyhow::ensure!(
        sample_agents.len() == args.iterations,
        "fewer agents than iterations"
    );
    let mut due = Vec::new();
    let mut manifest = Vec::new();
    let mut manifest_rows = 0;
    let mut list = Vec::new();
    let mut listed = 0;
    for agent in &sample_agents {
        let t = Instant::now();
        let rows = db.renewals_due(now(), 100).await?;
        due.push(ms(t));
        anyhow::ensure!(
            rows.len() == 100,
            "expected 100 due renewals, got {}",
            rows.len()
        );

        // What the manifest handler reads: the assignments with their current versions.
        let t = Instant::now();
        let rows = db.manifest_sources(*agent).await?;
        manifest.push(ms(t));
        anyhow::ensure!(
            rows.len() == args.per_agent as usize,
            "manifest listed {}",
            rows.len()
        );
        manifest_rows += rows.len();

        let t = Instant::now();
        let page = db
            .list_certificates(&CertificateFilter {
                state: None,
                account: None,
                expiring_before: Some(now() + time::Duration::days(args.expiring_days)),
                dns_name: None,
                search: None,
                after: None,
                limit: 100,
            })
            .await?;
        list.push(ms(t));
        listed += page.len();
    }
    let poll = match load {
        Some((stop, handle)) => {
            stop.store(true, Ordering::Relaxed);
            Some(handle.await?)
        }
        None => None,
    };
    println!(
        "\n## query latency over {} executions each, under poll load ({} agents, {} keep-alive connections)",
        args.iterations,
        agents.len(),
        args.poll_connections
    );
    for (name, v) in [
        ("due renewals (renewals_due, LIMIT 100)", &due),
        ("agent manifest (manifest_sources, one join)", &manifest),
        ("list expiring_within (list_certificates, limit 100)", &list),
    ] {
        let mut s = v.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            stats::quantile(&s, 0.5),
            stats::quantile(&s, 0.99),
            s.last().copied().unwrap_or(0.0)
        );
    }
    if let Some(p) = &poll {
        println!(
            "poll load meanwhile: {:.0} manifest 304/s, p99 {:.2} ms, {} errors",
            p.per_second, p.p99_ms, p.errors
        );
    }
    println!("(manifest versions read: {manifest_rows}; list rows returned: {listed})");
    println!(
        "process RSS (server + load generator, one process): {} kB now, {} kB peak",
        procfs::status_kb(std::process::id(), "VmRSS").unwrap_or(0),
        procfs::status_kb(std::process::id(), "VmHWM").unwrap_or(0)
    );
    fleet.server.stop().await;
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Plans of the three queries, as the server's statements with sample parameters, each both
/// with the custom plan for these values and the generic plan a prepared statement may switch to.
async fn explain(conn: &mut PgConnection, args: &Args) -> anyhow::Result<()> {
    let agent: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM agents WHERE name = 'scale-agent-4242'")
            .fetch_one(&mut *conn)
            .await?;
    let agent = format!("'{agent}'");
    let queries = [
        (
            "due renewals (db/orders.rs renewals_due)",
            "SELECT c.id, c.account_id, c.state FROM certificates c WHERE c.state IN ('valid', 'failing', 'revoked') AND c.renew_after IS NOT NULL AND c.renew_after <= now() AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.certificate_id = c.id AND o.state NOT IN ('done', 'failed')) ORDER BY c.renew_after LIMIT 100".to_owned(),
        ),
        (
            "agent manifest (db/agents.rs manifest_sources)",
            format!("SELECT c.id AS certificate_id, c.name AS certificate_name, v.id AS version_id, v.thumbprint, v.serial, v.not_after, v.dns_names FROM agent_assignments a JOIN certificates c ON c.id = a.certificate_id JOIN certificate_versions v ON v.id = c.current_version_id WHERE a.agent_id = {agent} ORDER BY c.name"),
        ),
        (
            "certificate list, expiring_within (db/certificates.rs list_certificates)",
            format!("SELECT id, name, dns_names, key_type, account_id, renew_fraction, renew_days, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at FROM certificates c WHERE (NULL::text IS NULL OR c.state = NULL::text) AND (NULL::uuid IS NULL OR c.account_id = NULL::uuid) AND (NULL::text IS NULL OR c.dns_names LIKE NULL::text) AND (NULL::uuid IS NULL OR (c.current_not_after, c.id) > (SELECT x.current_not_after, x.id FROM certificates x WHERE x.id = NULL::uuid)) AND c.current_not_after <= now() + interval '{} days' ORDER BY c.current_not_after, c.id LIMIT 100", args.expiring_days),
        ),
    ];
    for (name, sql) in queries {
        println!("\n## EXPLAIN (ANALYZE, BUFFERS): {name}\n```");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS) {sql}"
        )))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let line: String = row.try_get(0)?;
            println!("{line}");
        }
        println!("```");
    }
    Ok(())
}
