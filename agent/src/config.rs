//! Agent configuration: the server to talk to and where the identity lives. Targets come from
//! the server's manifest, the PFX password from the server; nothing here needs a hand edit.
//!
//! Unknown keys are refused by name (an old `[target]` section too, with a pointer to
//! `certkeep agent target add`). Relative paths are resolved against the file's directory.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use reqwest::Url;
use serde::Deserialize;

/// Default time between two syncs.
const DEFAULT_INTERVAL_SECS: u64 = 300;

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of certkeep's agent listener, e.g. `https://certkeep.example.net:8444`.
    pub server: Url,
    /// PEM of certkeep's internal CA (the server's `<data_dir>/ca.pem`); the only trusted root.
    pub ca_file: PathBuf,
    /// Holds `agent-key.pem`, `agent-cert.pem` and `state.json`; readable by the agent only.
    pub state_dir: PathBuf,
    /// Time between two syncs in `run` (±10 % jitter).
    pub interval: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: String,
    ca_file: PathBuf,
    state_dir: PathBuf,
    #[serde(default = "default_interval_secs")]
    interval_secs: u64,
}

fn default_interval_secs() -> u64 {
    DEFAULT_INTERVAL_SECS
}

impl Config {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let table: toml::Table = toml::from_str(text)?;
        ensure!(
            !table.contains_key("target"),
            "targets are defined on the server now: remove the [target] section and add it \
             with `certkeep agent target add <agent> <name> --kind ...`"
        );
        let file: ConfigFile = table.try_into()?;
        let server = parse_server(&file.server)?;
        ensure!(
            (10..=86_400).contains(&file.interval_secs),
            "interval_secs must be between 10 and 86400"
        );
        Ok(Self {
            server,
            ca_file: base.join(file.ca_file),
            state_dir: base.join(file.state_dir),
            interval: Duration::from_secs(file.interval_secs),
        })
    }
}

/// What `enroll` reads from an existing config; the `[target]` may still be missing.
#[derive(Debug)]
pub struct EnrollSettings {
    /// `server`, if set.
    pub server: Option<Url>,
    /// `state_dir`, resolved against the file's directory.
    pub state_dir: PathBuf,
}

/// Reads `server` and `state_dir` from the config at `path`; `None` if there is no file.
pub fn enroll_settings(path: &Path) -> anyhow::Result<Option<EnrollSettings>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    let server = table
        .get("server")
        .and_then(toml::Value::as_str)
        .map(parse_server)
        .transpose()?;
    let state_dir = table
        .get("state_dir")
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{} has no state_dir", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Some(EnrollSettings {
        server,
        state_dir: base.join(state_dir),
    }))
}

/// Parses and checks the agent listener's URL: `https` only.
pub fn parse_server(server: &str) -> anyhow::Result<Url> {
    let url = Url::parse(server).with_context(|| format!("server `{server}` is not a URL"))?;
    if url.scheme() != "https" {
        bail!("server `{server}` must be an https:// URL");
    }
    Ok(url)
}

/// `%ProgramData%\certkeep\agent.toml` on Windows, `/etc/certkeep/agent.toml` elsewhere.
pub fn default_config_path() -> PathBuf {
    if cfg!(windows) {
        program_data().join("agent.toml")
    } else {
        PathBuf::from("/etc/certkeep/agent.toml")
    }
}

/// `%ProgramData%\certkeep\state` on Windows, `/var/lib/certkeep-agent` elsewhere.
pub fn default_state_dir() -> PathBuf {
    if cfg!(windows) {
        program_data().join("state")
    } else {
        PathBuf::from("/var/lib/certkeep-agent")
    }
}

/// `%ProgramData%\certkeep`, home of the config, state and logs on Windows.
pub fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
        .join("certkeep")
}

/// The config `enroll` writes when none exists: complete, nothing to add by hand.
pub fn config_toml(server: &Url, ca_file: &Path, state_dir: &Path) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        "# certkeep-agent configuration, written by `certkeep-agent enroll`.\n\
         # Targets (CCS folder, PEM directory, Windows store) are defined on the server:\n\
         #   certkeep agent target add <agent> <name> --kind ccs --path '\\\\fs\\ccs$'\n\
         server = {server}\n\
         ca_file = {ca}\n\
         state_dir = {state}\n\
         interval_secs = {DEFAULT_INTERVAL_SECS}\n",
        server = quote(server.as_str()),
        ca = quote(&ca_file.to_string_lossy()),
        state = quote(&state_dir.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let base = Path::new("/etc/certkeep");
        let config = Config::parse(
            r#"
            server = "https://certkeep.example.net:8444"
            ca_file = "ca.pem"
            state_dir = "/var/lib/certkeep-agent"
            "#,
            base,
        )
        .unwrap();
        assert_eq!(config.interval, Duration::from_secs(300));
        assert_eq!(config.ca_file, base.join("ca.pem"));
        assert_eq!(config.state_dir, Path::new("/var/lib/certkeep-agent"));
    }

    #[test]
    fn unknown_keys_http_and_old_targets_are_refused() {
        let base = Path::new("/x");
        let err = format!(
            "{:#}",
            Config::parse(
                "server='https://a'\nca_file='c'\nstate_dir='s'\ncolour=1",
                base
            )
            .unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
        let err = format!(
            "{:#}",
            Config::parse(
                "server='https://a'\nca_file='c'\nstate_dir='s'\n[target]\nkind='ccs'\npath='p'",
                base
            )
            .unwrap_err()
        );
        assert!(err.contains("certkeep agent target add"), "{err}");
        for text in [
            "server='http://a'\nca_file='c'\nstate_dir='s'",
            "server='https://a'\nca_file='c'\nstate_dir='s'\ninterval_secs=1",
        ] {
            assert!(Config::parse(text, base).is_err(), "{text}");
        }
    }

    #[test]
    fn windows_example_config_parses() {
        let text = include_str!("../../deploy/windows/agent.example.toml");
        let config = Config::parse(text, Path::new(r"C:\ProgramData\certkeep")).unwrap();
        assert_eq!(config.server.as_str(), "https://certkeep.example.net:8444/");
    }

    #[test]
    fn the_config_enroll_writes_is_complete() {
        let server = parse_server("https://certkeep.example.net:8444").unwrap();
        let text = config_toml(
            &server,
            Path::new("/etc/ck/ca.pem"),
            Path::new("/var/lib/x"),
        );
        let config = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(config.state_dir, Path::new("/var/lib/x"));
        assert_eq!(config.ca_file, Path::new("/etc/ck/ca.pem"));
    }
}
