//! Installers: put verified bundles where a web server reads them, behind the `Installer` trait.
//!
//! Installers do file I/O only, synchronously; they never talk to the server and never see a PFX
//! that has not been opened with the local password and checked against the manifest.

mod ccs;
mod directory;
pub mod store;
#[cfg(windows)]
mod winstore;

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
};

use certkeep_api_types::{
    agent::{DeploymentStatus, FileReport, ManifestEntry, TargetSettings, TargetSpec},
    pfx::OpenedPfx,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use self::{ccs::CcsInstaller, directory::DirectoryInstaller};
use crate::fsio::{self, Access};

/// Name of the installer's own record of the files it wrote; never ends in `.pfx`.
pub const MANIFEST_FILE: &str = ".certkeep-manifest.json";

/// A downloaded PFX, opened with the local password and matched against its manifest entry.
pub struct Bundle {
    /// The PFX exactly as the server built it.
    pub pfx: Vec<u8>,
    /// Its checked contents.
    pub opened: OpenedPfx,
}

/// Reports and errors of [`Installer::finish`].
#[derive(Debug, Default)]
pub struct Finish {
    /// Files no longer in the manifest that were left in place.
    pub files: Vec<FileReport>,
    /// Failures not tied to one file (manifest write, reload command).
    pub errors: Vec<String>,
    /// Files in the target the installer did not write and left alone.
    pub notes: Vec<String>,
    /// Files changed and the target has a reload command: run it now, once.
    pub reload: Option<Vec<String>>,
}

/// The folder is unusable: missing, unreadable, or our manifest in it is corrupt.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct InstallError {
    path: PathBuf,
    message: String,
}

impl InstallError {
    fn io(path: &Path, err: &io::Error) -> Self {
        Self {
            path: path.to_owned(),
            message: err.to_string(),
        }
    }
}

/// Writes certificates into one target. Called as: `recover`, `is_current`/`install` per
/// manifest entry, then `finish` once.
pub trait Installer: Send {
    /// Removes leftover temp files of an interrupted run and loads the local manifest.
    fn recover(&mut self) -> Result<(), InstallError>;

    /// True when every file of `entry` already holds its thumbprint, so nothing is downloaded.
    fn is_current(&self, entry: &ManifestEntry) -> bool;

    /// The names reported for `entry` (CCS file names, or the certificate's directory).
    fn report_names(&self, entry: &ManifestEntry) -> Vec<String>;

    /// Installs one verified bundle; one report per file name.
    fn install(&mut self, entry: &ManifestEntry, bundle: &Bundle) -> Vec<FileReport>;

    /// Handles names the manifest dropped, saves the local manifest and reloads if needed.
    ///
    /// Files of certificates in `incomplete` (not fully installed this run) are kept as they are.
    fn finish(&mut self, entries: &[ManifestEntry], incomplete: &HashSet<Uuid>) -> Finish;
}

/// The installer for a target of the manifest; `Err` says why this agent cannot serve it.
pub fn for_target(
    target: &TargetSpec,
    password: Zeroizing<String>,
) -> Result<Box<dyn Installer>, String> {
    match &target.settings {
        TargetSettings::Ccs { path } => Ok(Box::new(CcsInstaller::new(path.into(), password))),
        TargetSettings::Directory {
            path,
            reload_command,
        } => Ok(Box::new(DirectoryInstaller::new(
            path.into(),
            reload_command.clone().unwrap_or_default(),
        ))),
        #[cfg(windows)]
        TargetSettings::WindowsStore {
            store, bindings, ..
        } => Ok(Box::new(store::StoreInstaller::new(
            winstore::SystemStore::new(*store),
            bindings.clone(),
            password,
        ))),
        #[cfg(not(windows))]
        TargetSettings::WindowsStore { .. } => Err(format!(
            "target {}: windows-store targets need the Windows agent",
            target.name
        )),
    }
}

/// What the installer wrote, keyed by file (CCS) or directory (PEM) name.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalManifest {
    files: BTreeMap<String, Record>,
}

/// One file we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    certificate_id: Uuid,
    thumbprint: String,
    serial: String,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
}

impl Record {
    fn new(entry: &ManifestEntry) -> Self {
        Self {
            certificate_id: entry.certificate_id,
            thumbprint: entry.thumbprint.clone(),
            serial: entry.serial.clone(),
            not_after: entry.not_after,
        }
    }
}

impl LocalManifest {
    /// Reads `<dir>/.certkeep-manifest.json`; missing means empty, corrupt is an error.
    fn load(dir: &Path) -> Result<Self, InstallError> {
        let path = dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| InstallError {
                message: format!("corrupt manifest ({e}); fix or remove it"),
                path,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(InstallError::io(&path, &e)),
        }
    }

    /// Writes the manifest atomically, unless the file already says the same.
    fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        if fs::read(&path).is_ok_and(|old| old == json) {
            return Ok(());
        }
        fsio::replace(&path, &json, Access::Shared)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Removes our leftover temp files from `dir`, and one level down when `nested`.
fn clean_temp_files(dir: &Path, nested: bool) -> Result<(), InstallError> {
    for item in fs::read_dir(dir).map_err(|e| InstallError::io(dir, &e))? {
        let item = item.map_err(|e| InstallError::io(dir, &e))?;
        let path = item.path();
        let is_dir = item
            .file_type()
            .map_err(|e| InstallError::io(&path, &e))?
            .is_dir();
        if is_dir {
            if nested {
                clean_temp_files(&path, false)?;
            }
        } else if fsio::is_temp_name(&item.file_name().to_string_lossy()) {
            fs::remove_file(&path).map_err(|e| InstallError::io(&path, &e))?;
            tracing::info!(file = %path.display(), "removed leftover temp file");
        }
    }
    Ok(())
}

/// One note per entry of `dir` that is neither ours nor our manifest; such files are left alone.
fn foreign_notes(dir: &Path, is_ours: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(items) = fs::read_dir(dir) else {
        return Vec::new();
    };
    items
        .filter_map(Result::ok)
        .map(|item| item.file_name().to_string_lossy().into_owned())
        .filter(|name| name != MANIFEST_FILE && !is_ours(name))
        .map(|name| {
            if name.to_lowercase().ends_with(".pfx") {
                format!(
                    "{name}: PFX not written by certkeep, left alone (CCS serves it as a host name)"
                )
            } else {
                format!("{name}: not written by certkeep, left alone")
            }
        })
        .collect()
}

/// A single path component we may create: no separators, drive colons, `..` or leading dot.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && !name.chars().any(|c| {
            c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
        })
}

/// A report for one of `entry`'s files.
pub(crate) fn file_report(
    entry: &ManifestEntry,
    file_name: &str,
    thumbprint: Option<&str>,
    status: DeploymentStatus,
    error: Option<String>,
) -> FileReport {
    FileReport {
        certificate_id: entry.certificate_id,
        target: None,
        file_name: file_name.to_owned(),
        thumbprint: thumbprint.map(str::to_owned),
        status,
        error,
    }
}

/// A failed report for each of `names` (files of `entry`), all with `error`.
pub(crate) fn failed_reports(
    entry: &ManifestEntry,
    names: &[String],
    error: &str,
) -> Vec<FileReport> {
    names
        .iter()
        .map(|name| {
            file_report(
                entry,
                name,
                None,
                DeploymentStatus::Failed,
                Some(error.to_owned()),
            )
        })
        .collect()
}

/// Fixtures for installer tests: PFX versions from a test PKI and a sync without the network.
#[cfg(test)]
pub(crate) mod test_support {
    use std::{collections::BTreeMap, path::Path, time::SystemTime};

    use certkeep_api_types::{
        agent::{FileReport, ManifestEntry, PfxEncryption},
        pfx::{
            build_pfx, ccs_file_names, open_pfx,
            testing::{KeyKind, TestCa},
            thumbprint,
        },
    };
    use time::macros::datetime;
    use uuid::Uuid;

    use super::Installer;
    use crate::sync::Pass;

    /// The location's password in tests.
    pub(crate) const PASSWORD: &str = "ccs-location-password";

    /// One issued version of a certificate: its manifest entry and PFX.
    pub(crate) struct Version {
        pub(crate) entry: ManifestEntry,
        pub(crate) pfx: Vec<u8>,
    }

    /// A new version of certificate `id` for `sans`, encrypted with `password`.
    pub(crate) fn version_with(ca: &TestCa, id: u128, sans: &[&str], password: &str) -> Version {
        let leaf = ca.leaf(sans, KeyKind::Ecdsa);
        let pfx = build_pfx(
            &leaf.key_pkcs8_der,
            &leaf.chain_der,
            password,
            PfxEncryption::Legacy,
        )
        .unwrap();
        let leaf_der = &leaf.chain_der[0];
        let certificate_id = Uuid::from_u128(id);
        Version {
            entry: ManifestEntry {
                certificate_id,
                certificate_name: format!("cert-{id}"),
                version_id: Uuid::new_v4(),
                thumbprint: thumbprint(leaf_der),
                serial: "01".into(),
                not_after: datetime!(2030-01-01 0:00 UTC),
                file_names: ccs_file_names(leaf_der).unwrap(),
                download_path: format!("/agent/v1/certificates/{certificate_id}/pfx"),
                targets: vec!["t".into()],
                dns_names: sans.iter().map(|s| (*s).to_owned()).collect(),
                hold: None,
            },
            pfx,
        }
    }

    /// [`version_with`] the test password.
    pub(crate) fn version(ca: &TestCa, id: u128, sans: &[&str]) -> Version {
        version_with(ca, id, sans, PASSWORD)
    }

    /// What a sync without the network did.
    pub(crate) struct Run {
        pub(crate) downloaded: usize,
        pub(crate) files: Vec<FileReport>,
        pub(crate) errors: Vec<String>,
        pub(crate) notes: Vec<String>,
    }

    /// One sync of `versions` (the manifest) through the same code as the real one, with
    /// downloads served from memory, then the reload command if the installer asks for it.
    pub(crate) fn sync(installer: Box<dyn Installer>, versions: &[&Version]) -> Run {
        let entries = versions.iter().map(|v| v.entry.clone()).collect();
        let (pass, wanted) = Pass::prepare(installer, entries);
        let downloads: Vec<_> = wanted
            .into_iter()
            .map(|entry| {
                let pfx = versions
                    .iter()
                    .find(|v| v.entry == entry)
                    .map(|v| v.pfx.clone())
                    .ok_or_else(|| "not found".to_owned());
                (entry, pfx)
            })
            .collect();
        let downloaded = downloads.len();
        let done = pass.complete(downloads, PASSWORD);
        let mut errors = done.errors;
        if let Some(argv) = done.reload {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            errors.extend(
                runtime
                    .block_on(crate::reload::run(&argv, crate::reload::RELOAD_TIMEOUT))
                    .err(),
            );
        }
        Run {
            downloaded,
            files: done.files,
            errors,
            notes: done.notes,
        }
    }

    /// Inode, mtime and bytes of every entry in `dir`, to prove a run wrote nothing.
    pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime, Vec<u8>)> {
        walk(dir)
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).unwrap();
                #[cfg(unix)]
                let ino = std::os::unix::fs::MetadataExt::ino(&meta);
                #[cfg(not(unix))]
                let ino = 0;
                let bytes = std::fs::read(&path).unwrap();
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, (ino, meta.modified().unwrap(), bytes))
            })
            .collect()
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    /// Thumbprint of the certificate in a PFX file, opened with the test password.
    pub(crate) fn thumbprint_of(path: &Path) -> String {
        open_pfx(&std::fs::read(path).unwrap(), PASSWORD)
            .unwrap()
            .thumbprint
    }
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::pfx::testing::TestCa;

    use super::test_support::{PASSWORD, sync, thumbprint_of, version};
    use super::*;

    #[test]
    fn a_held_version_is_not_installed_and_the_files_stay() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let installer = || -> Box<dyn Installer> {
            Box::new(CcsInstaller::new(
                dir.path().to_owned(),
                Zeroizing::new(PASSWORD.into()),
            ))
        };
        let v1 = version(&ca, 1, &["www.contoso.com"]);
        assert!(sync(installer(), &[&v1]).errors.is_empty());
        let mut v2 = version(&ca, 1, &["www.contoso.com"]);
        v2.entry.hold = Some("held until the change window Sat 02:00-04:00 +00:00".into());
        let held = sync(installer(), &[&v2]);
        assert_eq!(held.downloaded, 0);
        assert!(held.errors.is_empty(), "{:?}", held.errors);
        assert_eq!(held.files.len(), 1);
        assert_eq!(held.files[0].status, DeploymentStatus::Kept);
        assert!(
            held.files[0]
                .error
                .as_deref()
                .unwrap()
                .contains("change window")
        );
        let file = dir.path().join("www.contoso.com.pfx");
        assert_eq!(thumbprint_of(&file), v1.entry.thumbprint, "the file stays");
    }

    #[test]
    fn plain_names() {
        for ok in [
            "www.contoso.com.pfx",
            "_.contoso.com.pfx",
            "мороженое.рф.pfx",
            "web-prod",
        ] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a\\b", "c:x", "a..b", "x\n"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
