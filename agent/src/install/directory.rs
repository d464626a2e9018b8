//! PEM directory for nginx/Apache: `<path>/<certificate_name>/{fullchain,privkey}.pem`.
//!
//! Each version is written into its own directory, `<path>/.versions/<certificate_name>/<id>/`
//! (the key with mode 0600), and `<path>/<certificate_name>` is a symlink to it. Installing a
//! version renames a new symlink over the old one, so a reader, or a crash at any point, sees
//! the old pair or the new pair, never a key from one and a chain from the other. Older version
//! directories are removed after the switch. A real `<certificate_name>/` directory written by
//! an older agent is swapped with the symlink in one `renameat2(RENAME_EXCHANGE)` call; only
//! where the filesystem lacks it is the directory renamed away first, leaving a moment without
//! `<certificate_name>` (a crash there is repaired by the next sync). On Windows, which has no
//! unprivileged symlinks, `<certificate_name>` is a real directory, renamed aside and replaced by
//! the new version directory in two renames.
//!
//! After any change `finish` asks for the reload command to be run (once, by the sync). Directories of dropped certificates are kept,
//! since a web server configuration may still point at them.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
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
/// Hidden directory of `<certificate_name>/<version id>/` directories; never a certificate name.
const VERSIONS: &str = ".versions";
/// Name prefix, inside `.versions/<certificate_name>/`, of symlinks and old directories on
/// their way in or out; removed with the old versions.
const SWAP_PREFIX: &str = "swap-";

/// Writes PEM files for web servers that read them from disk.
pub struct DirectoryInstaller {
    dir: PathBuf,
    reload_command: Vec<String>,
    manifest: LocalManifest,
    changed: bool,
    /// Test hook: fail right after a version's private key is written, as a crash would.
    #[cfg(test)]
    fail_after_key: bool,
}

impl DirectoryInstaller {
    /// An installer under `dir`; `reload_command` (may be empty) runs after any change.
    pub fn new(dir: PathBuf, reload_command: Vec<String>) -> Self {
        Self {
            dir,
            reload_command,
            manifest: LocalManifest::default(),
            changed: false,
            #[cfg(test)]
            fail_after_key: false,
        }
    }

    /// Writes `bundle` as a new version of `name` and switches `<dir>/<name>` to it; on failure
    /// `<dir>/<name>` still holds the previous pair.
    fn write_pair(&self, name: &str, bundle: &Bundle) -> io::Result<()> {
        let versions = self.dir.join(VERSIONS).join(name);
        fs::create_dir_all(&versions)?;
        let id = format!(
            "{}-{}",
            bundle.opened.thumbprint.get(..16).unwrap_or_default(),
            Uuid::new_v4().simple()
        );
        let version = versions.join(&id);
        fs::create_dir(&version)?;
        let link = self.dir.join(name);
        let result = self
            .write_version(&version, bundle)
            .and_then(|()| switch(&link, &versions, &id));
        match &result {
            Ok(()) => prune(&versions, current_version(&link).as_ref()),
            Err(_) => {
                let _ = fs::remove_dir_all(&version);
            }
        }
        result
    }

    /// The key (owner-only), then the full chain, into the fresh directory `version`.
    fn write_version(&self, version: &Path, bundle: &Bundle) -> io::Result<()> {
        let opened = &bundle.opened;
        let fullchain: String = std::iter::once(&opened.leaf_der)
            .chain(&opened.chain_der)
            .map(|der| pem::encode("CERTIFICATE", der))
            .collect();
        let privkey = Zeroizing::new(pem::encode("PRIVATE KEY", &opened.key_pkcs8_der));
        fsio::replace(&version.join(PRIVKEY), privkey.as_bytes(), Access::Private)?;
        #[cfg(test)]
        if self.fail_after_key {
            return Err(io::Error::other("injected failure after privkey.pem"));
        }
        fsio::replace(
            &version.join(FULLCHAIN),
            fullchain.as_bytes(),
            Access::Shared,
        )
    }

    /// Removes what interrupted runs left in `.versions`: every version directory but the one
    /// a certificate's symlink points to. Names whose `<name>` is missing are left for the next
    /// install, since they may hold the only copy of an interrupted switch.
    fn prune_all(&self) -> Result<(), InstallError> {
        let root = self.dir.join(VERSIONS);
        let items = match fs::read_dir(&root) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(InstallError::io(&root, &e)),
        };
        for item in items {
            let item = item.map_err(|e| InstallError::io(&root, &e))?;
            let link = self.dir.join(item.file_name());
            if link.symlink_metadata().is_ok() {
                prune(&item.path(), current_version(&link).as_ref());
            }
        }
        Ok(())
    }
}

impl Installer for DirectoryInstaller {
    fn recover(&mut self) -> Result<(), InstallError> {
        clean_temp_files(&self.dir, true)?;
        self.prune_all()?;
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
        if let Err(e) = self.write_pair(name, bundle) {
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
                target: None,
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
        if std::mem::take(&mut self.changed) && !self.reload_command.is_empty() {
            finish.reload = Some(self.reload_command.clone());
        }
        finish.notes = foreign_notes(&self.dir, |name| {
            name == VERSIONS || self.manifest.files.contains_key(name)
        });
        finish
    }
}

/// Points the symlink `link` at `versions/<id>` with one rename over the previous symlink.
///
/// A real directory at `link` (written by an older agent) is exchanged with the new symlink in
/// one step and then lies in `versions`, where [`prune`] removes it.
#[cfg(unix)]
fn switch(link: &Path, versions: &Path, id: &str) -> io::Result<()> {
    let name = link
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no certificate name"))?;
    let temp = versions.join(format!("{SWAP_PREFIX}{}", Uuid::new_v4().simple()));
    std::os::unix::fs::symlink(Path::new(VERSIONS).join(name).join(id), &temp)?;
    if !link.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return fsio::commit(&temp, link);
    }
    match exchange(&temp, link) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            tracing::warn!(dir = %link.display(), error = %e, "the filesystem cannot exchange two names; moving the old directory away first");
            let aside = versions.join(format!("{SWAP_PREFIX}{}", Uuid::new_v4().simple()));
            fs::rename(link, &aside)?;
            fsio::commit(&temp, link).inspect_err(|_| {
                let _ = fs::rename(&aside, link);
            })
        }
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Swaps the names `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?;
    Ok(())
}

/// No atomic exchange outside Linux: the caller falls back to two renames.
#[cfg(all(unix, not(target_os = "linux")))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Without symlinks: renames the current directory `link` aside into `versions`, then the new
/// version directory to `link`, putting the old one back if that fails.
#[cfg(not(unix))]
fn switch(link: &Path, versions: &Path, id: &str) -> io::Result<()> {
    let aside = versions.join(format!("{SWAP_PREFIX}{}", Uuid::new_v4().simple()));
    let had_old = match fs::rename(link, &aside) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let result = fs::rename(versions.join(id), link);
    if result.is_err() && had_old {
        let _ = fs::rename(&aside, link);
    }
    result
}

/// The name of the version directory the symlink `link` points to.
#[cfg(unix)]
fn current_version(link: &Path) -> Option<OsString> {
    fs::read_link(link).ok()?.file_name().map(OsString::from)
}

/// Without symlinks the current version is `link` itself: nothing in `.versions` is current.
#[cfg(not(unix))]
fn current_version(_: &Path) -> Option<OsString> {
    None
}

/// Removes everything in `versions` except `keep`; failures are logged and retried next run.
fn prune(versions: &Path, keep: Option<&OsString>) {
    let Ok(items) = fs::read_dir(versions) else {
        return;
    };
    for item in items.filter_map(Result::ok) {
        if Some(&item.file_name()) == keep {
            continue;
        }
        let path = item.path();
        let removed = match item.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match removed {
            Ok(()) => tracing::debug!(dir = %path.display(), "removed old version"),
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove old version")
            }
        }
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

    /// A test CA, an empty install directory and a reload log kept outside it (removed on drop).
    fn setup() -> (TestCa, tempfile::TempDir, tempfile::TempPath) {
        let log = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        (TestCa::new(), tempfile::tempdir().unwrap(), log)
    }

    /// A directory installer whose reload command appends a line to `log`.
    fn reloading(dir: &Path, log: &Path) -> DirectoryInstaller {
        let script = format!("echo reload >> '{}'", log.display());
        DirectoryInstaller::new(dir.to_owned(), vec!["sh".into(), "-c".into(), script])
    }

    fn installer(dir: &Path, log: &Path) -> Box<dyn Installer> {
        Box::new(reloading(dir, log))
    }

    /// Thumbprint of the leaf in `<sub>/fullchain.pem`, after checking that `<sub>/privkey.pem`
    /// is its key.
    fn installed_pair(sub: &Path) -> String {
        let key =
            rcgen::KeyPair::from_pem(&fs::read_to_string(sub.join(PRIVKEY)).unwrap()).unwrap();
        let chain = fs::read(sub.join(FULLCHAIN)).unwrap();
        let leaf = Pem::iter_from_buffer(&chain).next().unwrap().unwrap();
        let cert = leaf.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw(),
            "privkey.pem does not belong to fullchain.pem in {}",
            sub.display()
        );
        thumbprint(&leaf.contents)
    }

    /// Entries of `<dir>/.versions/<name>/`.
    fn versions_of(dir: &Path, name: &str) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir.join(VERSIONS).join(name))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    /// Asserts `<dir>/<name>` is a symlink to the only entry of `.versions/<name>/`.
    #[cfg(unix)]
    fn assert_switched(dir: &Path, name: &str) {
        let link = dir.join(name);
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{} is not a symlink",
            link.display()
        );
        assert_eq!(
            versions_of(dir, name),
            vec![current_version(&link).unwrap()],
            "old versions must be removed"
        );
    }

    /// Asserts `run` installed `version` without errors as `<dir>/cert-1`, switched in by symlink.
    #[cfg(unix)]
    fn assert_installed(dir: &Path, run: &Run, version: &Version) {
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert_eq!(run.files[0].status, DeploymentStatus::Installed);
        assert_eq!(
            installed_pair(&dir.join("cert-1")),
            version.entry.thumbprint
        );
        assert_switched(dir, "cert-1");
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
        let (ca, dir, log) = setup();
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
        let (ca, dir, log) = setup();
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

    #[cfg(unix)]
    #[test]
    fn a_failure_between_key_and_chain_keeps_the_installed_pair() {
        let (ca, dir, log) = setup();
        let sub = dir.path().join("cert-1");
        let first = version(&ca, 1, &["www.contoso.com"]);
        let installed = run(dir.path(), &log, &[&first]);
        assert!(installed.errors.is_empty(), "{:?}", installed.errors);
        assert_switched(dir.path(), "cert-1");
        assert_eq!(installed_pair(&sub), first.entry.thumbprint);

        let renewed = version(&ca, 1, &["www.contoso.com"]);
        let mut failing = reloading(dir.path(), &log);
        failing.fail_after_key = true;
        let failed = sync(Box::new(failing), &[&renewed]);
        assert_eq!(failed.files.len(), 1);
        assert_eq!(failed.files[0].status, DeploymentStatus::Failed);
        assert_eq!(
            installed_pair(&sub),
            first.entry.thumbprint,
            "the installed pair must survive"
        );
        assert_switched(dir.path(), "cert-1");
        assert_eq!(reloads(&log), 1, "nothing changed, no reload");

        // A crash leaves a half-written version and a symlink on its way in: the next run
        // removes both and installs the new pair.
        let half = dir.path().join(VERSIONS).join("cert-1").join("half");
        fs::create_dir(&half).unwrap();
        fs::write(half.join(PRIVKEY), "half").unwrap();
        std::os::unix::fs::symlink(
            "half",
            dir.path()
                .join(VERSIONS)
                .join("cert-1")
                .join(format!("{SWAP_PREFIX}stray")),
        )
        .unwrap();
        let done = run(dir.path(), &log, &[&renewed]);
        assert_installed(dir.path(), &done, &renewed);
        assert_eq!(reloads(&log), 2, "one reload for the switch");
        assert!(done.notes.is_empty(), "{:?}", done.notes);
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_written_by_an_older_agent_is_swapped_for_the_symlink() {
        let (ca, dir, log) = setup();
        let sub = dir.path().join("cert-1");
        let first = version(&ca, 1, &["www.contoso.com"]);
        run(dir.path(), &log, &[&first]);
        // What older agents left: a real directory holding the pair, and no `.versions`.
        let target = dir.path().join(fs::read_link(&sub).unwrap());
        fs::remove_file(&sub).unwrap();
        fs::rename(&target, &sub).unwrap();
        fs::remove_dir_all(dir.path().join(VERSIONS)).unwrap();
        assert_eq!(installed_pair(&sub), first.entry.thumbprint);

        let renewed = version(&ca, 1, &["www.contoso.com"]);
        let done = run(dir.path(), &log, &[&renewed]);
        assert_installed(dir.path(), &done, &renewed);
        assert_eq!(reloads(&log), 2);
    }
}
