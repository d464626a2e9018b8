//! PEM directory for nginx/Apache: `<path>/<certificate_name>/{fullchain,privkey}.pem`.
//!
//! Each file is replaced by temp-and-rename (the key with mode 0600); the reload command runs
//! once after any change. Directories of dropped certificates are kept, since a web server
//! configuration may still point at them.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use certkeep_api_types::{
    agent::{DeploymentStatus, FileReport, ManifestEntry},
    pfx::thumbprint,
};
use uuid::Uuid;
use x509_parser::pem::Pem;
use zeroize::Zeroizing;

use super::{
    Bundle, Finish, InstallError, Installer, LocalManifest, Record, clean_temp_files, file_report,
    foreign_notes, is_plain_name,
};
use certkeep_api_types::pem;

use crate::fsio::{self, Access};

/// Leaf and intermediates, leaf first.
const FULLCHAIN: &str = "fullchain.pem";
/// PKCS#8 private key, owner-only.
const PRIVKEY: &str = "privkey.pem";
/// Longest reload-command output kept in an error.
const MAX_OUTPUT: usize = 500;

/// Writes PEM files for web servers that read them from disk.
pub struct DirectoryInstaller {
    dir: PathBuf,
    reload_command: Vec<String>,
    manifest: LocalManifest,
    changed: bool,
}

impl DirectoryInstaller {
    /// An installer under `dir`; `reload_command` (may be empty) runs after any change.
    pub fn new(dir: PathBuf, reload_command: Vec<String>) -> Self {
        Self {
            dir,
            reload_command,
            manifest: LocalManifest::default(),
            changed: false,
        }
    }

    fn write_pair(&self, sub: &Path, bundle: &Bundle) -> std::io::Result<()> {
        let opened = &bundle.opened;
        let fullchain: String = std::iter::once(&opened.leaf_der)
            .chain(&opened.chain_der)
            .map(|der| pem::encode("CERTIFICATE", der))
            .collect();
        let privkey = Zeroizing::new(pem::encode("PRIVATE KEY", &opened.key_pkcs8_der));
        fs::create_dir_all(sub)?;
        let key_target = sub.join(PRIVKEY);
        let chain_target = sub.join(FULLCHAIN);
        let key_temp = fsio::write_temp(&key_target, privkey.as_bytes(), Access::Private)?;
        let chain_temp = match fsio::write_temp(&chain_target, fullchain.as_bytes(), Access::Shared)
        {
            Ok(temp) => temp,
            Err(e) => {
                let _ = fs::remove_file(&key_temp);
                return Err(e);
            }
        };
        if let Err(e) = fsio::commit(&key_temp, &key_target) {
            let _ = fs::remove_file(&chain_temp);
            return Err(e);
        }
        fsio::commit(&chain_temp, &chain_target)
    }

    fn reload(&self) -> Option<String> {
        let (program, args) = self.reload_command.split_first()?;
        tracing::info!(command = ?self.reload_command, "running reload command");
        match Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => {
                let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                stderr.truncate(stderr.floor_char_boundary(MAX_OUTPUT));
                Some(format!(
                    "reload command {:?} failed ({}): {}",
                    self.reload_command,
                    out.status,
                    stderr.trim()
                ))
            }
            Err(e) => Some(format!(
                "reload command {:?} could not start: {e}",
                self.reload_command
            )),
        }
    }
}

impl Installer for DirectoryInstaller {
    fn recover(&mut self) -> Result<(), InstallError> {
        clean_temp_files(&self.dir, true)?;
        self.manifest = LocalManifest::load(&self.dir)?;
        Ok(())
    }

    fn is_current(&self, entry: &ManifestEntry) -> bool {
        let name = &entry.certificate_name;
        let sub = self.dir.join(name);
        is_plain_name(name)
            && self
                .manifest
                .files
                .get(name)
                .is_some_and(|r| r.thumbprint == entry.thumbprint)
            && sub.join(PRIVKEY).is_file()
            && first_cert_thumbprint(&sub.join(FULLCHAIN)).as_ref() == Some(&entry.thumbprint)
    }

    fn report_names(&self, entry: &ManifestEntry) -> Vec<String> {
        vec![entry.certificate_name.clone()]
    }

    fn install(&mut self, entry: &ManifestEntry, bundle: &Bundle) -> Vec<FileReport> {
        let name = entry.certificate_name.as_str();
        let thumbprint = bundle.opened.thumbprint.as_str();
        let fail = |error: String| {
            vec![file_report(
                entry,
                name,
                None,
                DeploymentStatus::Failed,
                Some(error),
            )]
        };
        if !is_plain_name(name) {
            return fail(format!(
                "certificate name {name:?} cannot be a directory name"
            ));
        }
        let sub = self.dir.join(name);
        if sub.symlink_metadata().is_ok() && !self.manifest.files.contains_key(name) {
            return fail(format!(
                "{} exists but was not written by certkeep; move it away to let certkeep manage it",
                sub.display()
            ));
        }
        if let Err(e) = self.write_pair(&sub, bundle) {
            return fail(format!(
                "cannot write {} (old files kept): {e}",
                sub.display()
            ));
        }
        tracing::info!(dir = %sub.display(), certificate.thumbprint = thumbprint, "installed");
        self.changed = true;
        self.manifest
            .files
            .insert(name.to_owned(), Record::new(entry));
        vec![file_report(
            entry,
            name,
            Some(thumbprint),
            DeploymentStatus::Installed,
            None,
        )]
    }

    fn finish(&mut self, entries: &[ManifestEntry], incomplete: &HashSet<Uuid>) -> Finish {
        let wanted: HashSet<&str> = entries
            .iter()
            .map(|e| e.certificate_name.as_str())
            .collect();
        let dropped: Vec<(String, Record)> = self
            .manifest
            .files
            .iter()
            .filter(|(name, r)| {
                !wanted.contains(name.as_str()) && !incomplete.contains(&r.certificate_id)
            })
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        let mut finish = Finish::default();
        for (name, record) in dropped {
            let path = self.dir.join(&name);
            finish.files.push(FileReport {
                certificate_id: record.certificate_id,
                file_name: name.clone(),
                thumbprint: Some(record.thumbprint),
                status: DeploymentStatus::Kept,
                error: Some(format!(
                    "no longer assigned; {} left in place because a web server may still use it",
                    path.display()
                )),
            });
            self.manifest.files.remove(&name);
        }
        finish.errors.extend(self.manifest.save(&self.dir).err());
        if std::mem::take(&mut self.changed) {
            finish.errors.extend(self.reload());
        }
        finish.notes = foreign_notes(&self.dir, |name| self.manifest.files.contains_key(name));
        finish
    }
}

fn first_cert_thumbprint(path: &Path) -> Option<String> {
    let text = fs::read(path).ok()?;
    let block = Pem::iter_from_buffer(&text).next()?.ok()?;
    Some(thumbprint(&block.contents))
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::pfx::testing::TestCa;

    use super::*;
    use crate::install::test_support::{Run, Version, snapshot, sync, version};

    /// A directory installer whose reload command appends a line to `log`.
    fn installer(dir: &Path, log: &Path) -> Box<dyn Installer> {
        let script = format!("echo reload >> '{}'", log.display());
        Box::new(DirectoryInstaller::new(
            dir.to_owned(),
            vec!["sh".into(), "-c".into(), script],
        ))
    }

    fn reloads(log: &Path) -> usize {
        fs::read_to_string(log).map_or(0, |s| s.lines().count())
    }

    fn run(dir: &Path, log: &Path, versions: &[&Version]) -> Run {
        sync(installer(dir, log), versions)
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_fullchain_and_private_key_and_reloads_once_per_change() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("reload.log");
        let web = version(&ca, 1, &["www.contoso.com", "contoso.com"]);
        let api = version(&ca, 2, &["api.contoso.com"]);

        let first = run(dir.path(), &log, &[&web, &api]);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(
            first
                .files
                .iter()
                .all(|f| f.status == DeploymentStatus::Installed)
        );
        assert_eq!(reloads(&log), 1, "one reload for two certificates");

        let sub = dir.path().join("cert-1");
        let chain = fs::read(sub.join(FULLCHAIN)).unwrap();
        let certs: Vec<_> = Pem::iter_from_buffer(&chain).map(|p| p.unwrap()).collect();
        assert_eq!(certs.len(), 2, "leaf and intermediate");
        assert_eq!(thumbprint(&certs[0].contents), web.entry.thumbprint);
        let key = fs::read_to_string(sub.join(PRIVKEY)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&sub.join(PRIVKEY)), 0o600);
            assert_eq!(mode(&sub.join(FULLCHAIN)), 0o644);
        }

        let before = snapshot(dir.path());
        let again = run(dir.path(), &log, &[&web, &api]);
        assert_eq!(again.downloaded, 0);
        assert_eq!(snapshot(dir.path()), before, "a re-run must not write");
        assert_eq!(reloads(&log), 1, "no change, no reload");

        let renewed = version(&ca, 1, &["www.contoso.com"]);
        let third = run(dir.path(), &log, &[&renewed, &api]);
        assert_eq!(third.downloaded, 1);
        assert_eq!(reloads(&log), 2);
        assert_eq!(
            first_cert_thumbprint(&sub.join(FULLCHAIN)).unwrap(),
            renewed.entry.thumbprint
        );
    }

    #[test]
    fn a_failing_reload_command_is_reported() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let failing = DirectoryInstaller::new(
            dir.path().to_owned(),
            vec![
                "sh".into(),
                "-c".into(),
                "echo broken config >&2; exit 3".into(),
            ],
        );
        let result = sync(Box::new(failing), &[&version(&ca, 1, &["a.example"])]);
        assert_eq!(result.errors.len(), 1);
        assert!(
            result.errors[0].contains("broken config"),
            "{:?}",
            result.errors
        );
    }

    #[test]
    fn dropped_certificates_and_foreign_directories_are_left_in_place() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("reload.log");
        fs::create_dir(dir.path().join("cert-2")).unwrap();
        fs::write(dir.path().join("cert-2").join(FULLCHAIN), "hand made").unwrap();
        let one = version(&ca, 1, &["a.example"]);
        let two = version(&ca, 2, &["b.example"]);

        let result = run(dir.path(), &log, &[&one, &two]);
        let status = |run: &Run, name: &str| {
            run.files
                .iter()
                .find(|f| f.file_name == name)
                .unwrap()
                .status
        };
        assert_eq!(status(&result, "cert-1"), DeploymentStatus::Installed);
        assert_eq!(status(&result, "cert-2"), DeploymentStatus::Failed);
        assert_eq!(
            fs::read_to_string(dir.path().join("cert-2").join(FULLCHAIN)).unwrap(),
            "hand made"
        );

        let dropped = run(dir.path(), &log, &[]);
        assert_eq!(status(&dropped, "cert-1"), DeploymentStatus::Kept);
        assert!(dir.path().join("cert-1").join(PRIVKEY).exists());
    }
}
