//! Challenge solvers built from `[solvers]`: dns-01 through RFC 2136 dynamic updates with TSIG
//! (`dns01.rs`) and http-01 through the central responder (`http01.rs`). They plug into the
//! engine's [`Solvers`] by domain pattern; the engine records every published response in the
//! database first, so a resumed job removes what a crashed run left behind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::config::SolversConfig;
use crate::db::Db;
use crate::engine::Solvers;
use crate::secrets::Secrets;

pub mod dns01;
pub mod http01;

/// The TSIG secret text of one entry: its `secret_file`, or the key stored sealed in the
/// database under its key name.
async fn tsig_secret(
    entry: &crate::config::Dns01Config,
    db: &Db,
    secrets: &Secrets,
) -> anyhow::Result<Zeroizing<String>> {
    if let Some(file) = &entry.secret_file {
        return Ok(Zeroizing::new(std::fs::read_to_string(file).with_context(
            || {
                format!(
                    "read the TSIG secret file {} of key {}",
                    file.display(),
                    entry.key_name
                )
            },
        )?));
    }
    let stored = db
        .tsig_key(secrets, &entry.key_name)
        .await
        .with_context(|| format!("load the stored TSIG secret of key {}", entry.key_name))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no TSIG secret for key {key} (solvers.dns01 for {suffix}): set secret_file or store it with `certkeep dns-key import --key-name {key} --secret-file FILE`",
                key = entry.key_name,
                suffix = entry.suffix
            )
        })?;
    Ok(Zeroizing::new(
        String::from_utf8_lossy(&stored).into_owned(),
    ))
}

/// Builds the configured solvers, reading each TSIG secret once (file or sealed in `db`).
pub async fn build(config: &SolversConfig, db: &Db, secrets: &Secrets) -> anyhow::Result<Solvers> {
    let timeouts = dns01::DnsTimeouts {
        request: Duration::from_secs(config.dns_timeout_secs),
        propagation: Duration::from_secs(config.dns_propagation_timeout_secs),
    };
    let mut solvers = Solvers::default();
    for entry in &config.dns01 {
        let text = tsig_secret(entry, db, secrets).await?;
        let secret = dns01::decode_secret(&text).map_err(|e| {
            let source = entry
                .secret_file
                .as_ref()
                .map_or_else(|| "stored secret".to_owned(), |f| f.display().to_string());
            anyhow::anyhow!("{e} ({source} for key {})", entry.key_name)
        })?;
        let solver: Arc<dyn crate::engine::ChallengeSolver> = Arc::new(
            dns01::Dns01Solver::new(entry, &secret, timeouts)
                .map_err(|e| anyhow::anyhow!("solvers.dns01 for {}: {e}", entry.suffix))?,
        );
        for pattern in [entry.suffix.clone(), format!("*.{}", entry.suffix)] {
            solvers
                .add(&pattern, solver.clone())
                .with_context(|| format!("solvers.dns01 suffix {}", entry.suffix))?;
        }
    }
    if let Some(http) = &config.http01 {
        let solver: Arc<dyn crate::engine::ChallengeSolver> =
            Arc::new(http01::Http01Solver::new(http.addr));
        for pattern in &http.patterns {
            solvers
                .add(pattern, solver.clone())
                .with_context(|| format!("solvers.http01 pattern {pattern}"))?;
        }
    }
    Ok(solvers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dns01Config, Http01Config, TsigAlgorithm};
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn a_stored_secret_serves_an_entry_without_secret_file() {
        let (t, secrets) = (TestDb::sqlite().await, Secrets::generate());
        let config = SolversConfig {
            dns01: vec![dns01("example.edu", None)],
            ..SolversConfig::default()
        };
        let err = format!("{:#}", build(&config, &t.db, &secrets).await.err().unwrap());
        assert!(
            err.contains("no TSIG secret for key certkeep.") && err.contains("dns-key import"),
            "{err}"
        );
        t.db.store_tsig_key(
            &secrets,
            "certkeep.",
            b"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
            crate::now(),
        )
        .await
        .unwrap();
        let solvers = build(&config, &t.db, &secrets).await.unwrap();
        assert!(solvers.for_cleanup("www.example.edu", "dns-01").is_some());
    }

    fn dns01(suffix: &str, secret_file: Option<std::path::PathBuf>) -> Dns01Config {
        Dns01Config {
            suffix: suffix.into(),
            server: "192.0.2.53:53".parse().unwrap(),
            key_name: "certkeep.".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret_file,
            zone: None,
            nameserver_port: 53,
        }
    }

    #[tokio::test]
    async fn entries_cover_their_suffix_and_patterns() {
        let (t, secrets) = (TestDb::sqlite().await, Secrets::generate());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tsig.key");
        std::fs::write(&key, "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n").unwrap();
        let config = SolversConfig {
            dns01: vec![dns01("example.edu", Some(key))],
            http01: Some(Http01Config {
                addr: None,
                patterns: vec!["www.example.edu".into()],
            }),
            ..SolversConfig::default()
        };
        let solvers = build(&config, &t.db, &secrets).await.unwrap();
        for name in ["example.edu", "*.example.edu", "a.b.example.edu"] {
            assert!(solvers.for_cleanup(name, "dns-01").is_some(), "{name}");
        }
        assert!(solvers.for_cleanup("www.example.edu", "http-01").is_some());
        assert!(solvers.for_cleanup("api.example.edu", "http-01").is_none());
        assert!(solvers.for_cleanup("example.org", "dns-01").is_none());
    }

    #[tokio::test]
    async fn secret_file_errors_name_the_file_and_key_only() {
        let (t, secrets) = (TestDb::sqlite().await, Secrets::generate());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let config = SolversConfig {
            dns01: vec![dns01("example.edu", Some(missing.clone()))],
            ..SolversConfig::default()
        };
        let err = format!("{:#}", build(&config, &t.db, &secrets).await.err().unwrap());
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("certkeep."),
            "{err}"
        );
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "hunter2 is not base64!").unwrap();
        let config = SolversConfig {
            dns01: vec![dns01("example.edu", Some(garbage))],
            ..SolversConfig::default()
        };
        let err = format!("{:#}", build(&config, &t.db, &secrets).await.err().unwrap());
        assert!(
            err.contains("not base64") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
