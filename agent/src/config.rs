//! Agent configuration: one TOML file naming one server and one target, parsed into typed values.
//!
//! Unknown keys are refused by name. Relative paths are resolved against the file's directory.
//! Secrets never live in this file: the CCS password sits in its own file (`password_file`).

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use reqwest::Url;
use serde::Deserialize;
use zeroize::Zeroizing;

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
    /// Where certificates go.
    pub target: Target,
}

/// Where certificates are installed. One agent has exactly one target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// IIS Centralized Certificate Store folder: one `<host>.pfx` per DNS name (docs/CCS.md).
    Ccs {
        /// The CCS folder (local path or UNC share); must exist.
        path: PathBuf,
        /// File holding the CCS private-key password, the one configured in IIS.
        password_file: PathBuf,
    },
    /// PEM directory for nginx/Apache: `<path>/<certificate_name>/{fullchain,privkey}.pem`,
    /// `<certificate_name>` being a symlink into `<path>/.versions/` switched atomically.
    Directory {
        /// Parent directory; must exist.
        path: PathBuf,
        /// File holding the password the server encrypts this agent's PFX downloads with.
        password_file: PathBuf,
        /// Run once after any change, e.g. `["systemctl", "reload", "nginx"]`.
        reload_command: Option<Vec<String>>,
    },
}

impl Target {
    /// The folder certificates are written to.
    pub fn path(&self) -> &Path {
        match self {
            Target::Ccs { path, .. } | Target::Directory { path, .. } => path,
        }
    }

    /// The file holding the PFX password.
    pub fn password_file(&self) -> &Path {
        match self {
            Target::Ccs { password_file, .. } | Target::Directory { password_file, .. } => {
                password_file
            }
        }
    }

    fn resolve(&mut self, base: &Path) {
        match self {
            Target::Ccs {
                path,
                password_file,
            }
            | Target::Directory {
                path,
                password_file,
                ..
            } => {
                *path = base.join(&*path);
                *password_file = base.join(&*password_file);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: String,
    ca_file: PathBuf,
    state_dir: PathBuf,
    #[serde(default = "default_interval_secs")]
    interval_secs: u64,
    target: Target,
}

fn default_interval_secs() -> u64 {
    DEFAULT_INTERVAL_SECS
}

impl Config {
    /// Reads, parses and checks the file at `path`, including that the password file is usable.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let file: ConfigFile = toml::from_str(text)?;
        let server = parse_server(&file.server)?;
        ensure!(
            (10..=86_400).contains(&file.interval_secs),
            "interval_secs must be between 10 and 86400"
        );
        if let Target::Directory {
            reload_command: Some(cmd),
            ..
        } = &file.target
        {
            ensure!(
                !cmd.is_empty(),
                "reload_command must name a program; leave it out for none"
            );
        }
        let mut target = file.target;
        target.resolve(base);
        let config = Self {
            server,
            ca_file: base.join(file.ca_file),
            state_dir: base.join(file.state_dir),
            interval: Duration::from_secs(file.interval_secs),
            target,
        };
        read_password(config.target.password_file())?;
        Ok(config)
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

/// Reads the PFX password: the file's UTF-8 content without a byte-order mark or trailing line
/// breaks (as Notepad and PowerShell leave them); never empty.
pub fn read_password(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?,
    );
    let password = Zeroizing::new(
        raw.trim_start_matches('\u{feff}')
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    );
    ensure!(
        !password.is_empty(),
        "password file {} is empty",
        path.display()
    );
    Ok(password)
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

/// A first config written by `enroll` when none exists; `[target]` is left for the admin.
pub fn starter_toml(server: &Url, ca_file: &Path, state_dir: &Path) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        "# certkeep-agent configuration, written by `certkeep-agent enroll`.\n\
         server = {server}\n\
         ca_file = {ca}\n\
         state_dir = {state}\n\
         interval_secs = {DEFAULT_INTERVAL_SECS}\n\
         \n\
         # Uncomment ONE target.\n\
         # IIS Centralized Certificate Store (the password is the one set with\n\
         # Enable-WebCentralCertProvider -PrivateKeyPassword):\n\
         # [target]\n\
         # kind = \"ccs\"\n\
         # path = '\\\\fileserver\\ccs$'\n\
         # password_file = 'C:\\ProgramData\\certkeep\\ccs-password.txt'\n\
         #\n\
         # PEM files for nginx or Apache:\n\
         # [target]\n\
         # kind = \"directory\"\n\
         # path = \"/etc/certkeep/certs\"\n\
         # password_file = \"/etc/certkeep/pfx-password\"\n\
         # reload_command = [\"systemctl\", \"reload\", \"nginx\"]\n",
        server = quote(server.as_str()),
        ca = quote(&ca_file.to_string_lossy()),
        state = quote(&state_dir.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_password() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pw"), "\u{feff}s3cret\r\n").unwrap();
        dir
    }

    #[test]
    fn parses_ccs_and_resolves_relative_paths() {
        let dir = with_password();
        let config = Config::parse(
            r#"
            server = "https://certkeep.example.net:8444"
            ca_file = "ca.pem"
            state_dir = "state"
            [target]
            kind = "ccs"
            path = "ccs"
            password_file = "pw"
            "#,
            dir.path(),
        )
        .unwrap();
        assert_eq!(config.interval, Duration::from_secs(300));
        assert_eq!(config.ca_file, dir.path().join("ca.pem"));
        assert_eq!(config.target.path(), dir.path().join("ccs"));
        assert_eq!(
            *read_password(config.target.password_file()).unwrap(),
            "s3cret"
        );
    }

    #[test]
    fn parses_directory_with_reload() {
        let dir = with_password();
        let config = Config::parse(
            r#"
            server = "https://127.0.0.1:8444"
            ca_file = "/etc/certkeep/ca.pem"
            state_dir = "/var/lib/certkeep-agent"
            interval_secs = 60
            [target]
            kind = "directory"
            path = "/etc/certkeep/certs"
            password_file = "pw"
            reload_command = ["systemctl", "reload", "nginx"]
            "#,
            dir.path(),
        )
        .unwrap();
        let Target::Directory { reload_command, .. } = config.target else {
            panic!("directory target expected");
        };
        assert_eq!(reload_command.unwrap(), ["systemctl", "reload", "nginx"]);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = with_password();
        for (text, key) in [
            (
                "server='https://a'\nca_file='c'\nstate_dir='s'\ncolour=1\n[target]\nkind='ccs'\npath='p'\npassword_file='pw'",
                "colour",
            ),
            (
                "server='https://a'\nca_file='c'\nstate_dir='s'\n[target]\nkind='ccs'\npath='p'\npassword_file='pw'\nreload_command=['x']",
                "reload_command",
            ),
        ] {
            let err = format!("{:#}", Config::parse(text, dir.path()).unwrap_err());
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn refuses_http_empty_password_and_empty_reload() {
        let dir = with_password();
        fs::write(dir.path().join("empty"), "\n").unwrap();
        for text in [
            "server='http://a'\nca_file='c'\nstate_dir='s'\n[target]\nkind='ccs'\npath='p'\npassword_file='pw'",
            "server='https://a'\nca_file='c'\nstate_dir='s'\n[target]\nkind='ccs'\npath='p'\npassword_file='empty'",
            "server='https://a'\nca_file='c'\nstate_dir='s'\n[target]\nkind='directory'\npath='p'\npassword_file='pw'\nreload_command=[]",
        ] {
            assert!(Config::parse(text, dir.path()).is_err(), "{text}");
        }
    }

    #[test]
    fn windows_example_config_parses() {
        let text = include_str!("../../deploy/windows/agent.example.toml");
        let file: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(file.target.path(), Path::new(r"\\files01\ccs$"));
        let head = &text[..text.find("[target]").unwrap()];
        let tail = &text[text.find("# [target]").unwrap()..];
        let linux_target: Vec<&str> = tail.lines().map(|l| l.trim_start_matches("# ")).collect();
        let linux: ConfigFile =
            toml::from_str(&format!("{head}{}", linux_target.join("\n"))).unwrap();
        assert!(matches!(linux.target, Target::Directory { .. }));
    }

    #[test]
    fn starter_config_parses_once_a_target_is_added() {
        let dir = with_password();
        let server = parse_server("https://certkeep.example.net:8444").unwrap();
        let mut text = starter_toml(&server, Path::new(r"C:\ca.pem"), Path::new("/var/lib/x"));
        assert!(Config::parse(&text, dir.path()).is_err());
        text.push_str("[target]\nkind = \"ccs\"\npath = \"ccs\"\npassword_file = \"pw\"\n");
        let config = Config::parse(&text, dir.path()).unwrap();
        assert_eq!(config.state_dir, Path::new("/var/lib/x"));
    }
}
