//! IIS Centralized Certificate Store folder: one `<host>.pfx` per DNS SAN, per docs/CCS.md.
//!
//! Replaces files by temp-and-rename only, reads existing files with the location's password,
//! and never overwrites or deletes a `.pfx` it did not write.

use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
};

use certkeep_api_types::{
    agent::{DeploymentStatus, FileReport, ManifestEntry},
    pfx::{ccs_file_names, open_pfx},
};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{
    Bundle, Finish, InstallError, Installer, LocalManifest, Record, clean_temp_files,
    failed_reports, file_report, foreign_notes, is_plain_name,
};
use crate::fsio::{self, Access};

/// Writes PFX files into a CCS folder.
pub struct CcsInstaller {
    dir: PathBuf,
    password: Zeroizing<String>,
    manifest: LocalManifest,
}

/// What a CCS file holds now.
#[derive(Debug, PartialEq, Eq)]
enum OnDisk {
    Missing,
    /// Exists but does not open with the location's password (or cannot be read).
    Unreadable,
    Holds(String),
}

impl CcsInstaller {
    /// An installer for the CCS folder `dir`, whose files are protected by `password`.
    pub fn new(dir: PathBuf, password: Zeroizing<String>) -> Self {
        Self {
            dir,
            password,
            manifest: LocalManifest::default(),
        }
    }

    fn on_disk(&self, path: &Path) -> OnDisk {
        match fs::read(path) {
            Ok(bytes) => match open_pfx(&bytes, &self.password) {
                Ok(opened) => OnDisk::Holds(opened.thumbprint),
                Err(_) => OnDisk::Unreadable,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => OnDisk::Missing,
            Err(_) => OnDisk::Unreadable,
        }
    }

    fn install_file(&mut self, entry: &ManifestEntry, name: &str, bundle: &Bundle) -> FileReport {
        let thumbprint = bundle.opened.thumbprint.as_str();
        let path = self.dir.join(name);
        let previous = match self.on_disk(&path) {
            OnDisk::Holds(t) if t == thumbprint => {
                self.manifest
                    .files
                    .insert(name.to_owned(), Record::new(entry));
                return file_report(
                    entry,
                    name,
                    Some(thumbprint),
                    DeploymentStatus::Installed,
                    None,
                );
            }
            OnDisk::Holds(t) => Some(t),
            OnDisk::Missing | OnDisk::Unreadable => None,
        };
        if path.symlink_metadata().is_ok() && !self.manifest.files.contains_key(name) {
            let error = format!(
                "{name} exists but was not written by certkeep; move it out of the folder to let \
                 certkeep manage it"
            );
            return file_report(
                entry,
                name,
                previous.as_deref(),
                DeploymentStatus::Failed,
                Some(error),
            );
        }
        match fsio::replace(&path, &bundle.pfx, Access::Shared) {
            Ok(()) => {
                tracing::info!(file = %path.display(), certificate.thumbprint = thumbprint, "installed");
                self.manifest
                    .files
                    .insert(name.to_owned(), Record::new(entry));
                file_report(
                    entry,
                    name,
                    Some(thumbprint),
                    DeploymentStatus::Installed,
                    None,
                )
            }
            Err(e) => {
                let error = format!("cannot replace {name} (old file kept): {e}");
                file_report(
                    entry,
                    name,
                    previous.as_deref(),
                    DeploymentStatus::Failed,
                    Some(error),
                )
            }
        }
    }

    /// Deletes a dropped name if it still holds what we wrote; otherwise keeps it and says why.
    fn drop_name(&mut self, name: &str, record: &Record) -> Option<FileReport> {
        let path = self.dir.join(name);
        let kept = |thumbprint: Option<&str>, error: String| FileReport {
            certificate_id: record.certificate_id,
            target: None,
            file_name: name.to_owned(),
            thumbprint: thumbprint.map(str::to_owned),
            status: DeploymentStatus::Kept,
            error: Some(error),
        };
        let outcome = match self.on_disk(&path) {
            OnDisk::Missing => None,
            OnDisk::Holds(t) if t == record.thumbprint => match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed file of a dropped name");
                    None
                }
                Err(e) => {
                    let error = format!("no longer in the manifest but cannot be deleted: {e}");
                    return Some(kept(Some(&t), error));
                }
            },
            OnDisk::Holds(t) => Some(kept(
                Some(&t),
                "no longer in the manifest; left in place because it now holds a certificate \
                 certkeep did not write"
                    .into(),
            )),
            OnDisk::Unreadable => Some(kept(
                None,
                "no longer in the manifest; left in place because it does not open with the \
                 location's password"
                    .into(),
            )),
        };
        self.manifest.files.remove(name);
        outcome
    }
}

impl Installer for CcsInstaller {
    fn recover(&mut self) -> Result<(), InstallError> {
        clean_temp_files(&self.dir, false)?;
        self.manifest = LocalManifest::load(&self.dir)?;
        Ok(())
    }

    fn is_current(&self, entry: &ManifestEntry) -> bool {
        entry.file_names.iter().all(|name| {
            is_plain_name(name)
                && self.on_disk(&self.dir.join(name)) == OnDisk::Holds(entry.thumbprint.clone())
        })
    }

    fn report_names(&self, entry: &ManifestEntry) -> Vec<String> {
        entry.file_names.clone()
    }

    fn install(&mut self, entry: &ManifestEntry, bundle: &Bundle) -> Vec<FileReport> {
        let expected: HashSet<&str> = entry.file_names.iter().map(String::as_str).collect();
        let mismatch = match ccs_file_names(&bundle.opened.leaf_der) {
            Ok(names) if names.iter().map(String::as_str).collect::<HashSet<_>>() == expected => {
                None
            }
            Ok(names) => Some(format!(
                "manifest file names {:?} differ from the certificate's DNS names {names:?}",
                entry.file_names
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = mismatch {
            return failed_reports(entry, &entry.file_names, &error);
        }
        entry
            .file_names
            .iter()
            .map(|name| self.install_file(entry, name, bundle))
            .collect()
    }

    fn finish(&mut self, entries: &[ManifestEntry], incomplete: &HashSet<Uuid>) -> Finish {
        let wanted: HashSet<&str> = entries
            .iter()
            .flat_map(|e| e.file_names.iter().map(String::as_str))
            .collect();
        let dropped: Vec<(String, Record)> = self
            .manifest
            .files
            .iter()
            .filter(|(name, record)| {
                !wanted.contains(name.as_str()) && !incomplete.contains(&record.certificate_id)
            })
            .map(|(name, record)| (name.clone(), record.clone()))
            .collect();
        let mut finish = Finish::default();
        for (name, record) in dropped {
            finish.files.extend(self.drop_name(&name, &record));
        }
        finish.errors.extend(self.manifest.save(&self.dir).err());
        finish.notes = foreign_notes(&self.dir, |name| self.manifest.files.contains_key(name));
        finish
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use certkeep_api_types::{agent::DeploymentStatus, pfx::testing::TestCa};

    use super::*;
    use crate::install::{
        MANIFEST_FILE,
        test_support::{
            PASSWORD, Run, Version, snapshot, sync, thumbprint_of, version, version_with,
        },
    };

    fn ccs(dir: &Path) -> Box<dyn Installer> {
        Box::new(CcsInstaller::new(
            dir.to_owned(),
            Zeroizing::new(PASSWORD.to_owned()),
        ))
    }

    fn run(dir: &Path, versions: &[&Version]) -> Run {
        sync(ccs(dir), versions)
    }

    fn pfx_files(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pfx"))
            .collect()
    }

    fn status_of(run: &Run, name: &str) -> DeploymentStatus {
        run.files
            .iter()
            .find(|f| f.file_name == name)
            .unwrap_or_else(|| panic!("no report for {name}: {:?}", run.files))
            .status
    }

    fn all_installed(run: &Run) {
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert!(
            run.files
                .iter()
                .all(|f| f.status == DeploymentStatus::Installed),
            "{:?}",
            run.files
        );
    }

    #[test]
    fn multi_san_gives_one_identical_file_per_dns_name_and_a_rerun_writes_nothing() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["www.contoso.com", "contoso.com", "192.0.2.7"]);

        let first = run(dir.path(), &[&v1]);
        all_installed(&first);
        assert_eq!(first.downloaded, 1);
        assert_eq!(
            pfx_files(dir.path()),
            BTreeSet::from(["contoso.com.pfx".into(), "www.contoso.com.pfx".into()])
        );
        for name in ["contoso.com.pfx", "www.contoso.com.pfx"] {
            assert_eq!(fs::read(dir.path().join(name)).unwrap(), v1.pfx);
        }
        assert!(dir.path().join(MANIFEST_FILE).is_file());

        let before = snapshot(dir.path());
        let second = run(dir.path(), &[&v1]);
        all_installed(&second);
        assert_eq!(second.downloaded, 0);
        assert_eq!(second.files.len(), 2);
        assert_eq!(snapshot(dir.path()), before, "a re-run must not write");
    }

    #[test]
    fn wildcard_and_idn_names() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["*.contoso.com", "XN--E1AABXHDADN.XN--P1AI"]);
        all_installed(&run(dir.path(), &[&v1]));
        assert_eq!(
            pfx_files(dir.path()),
            BTreeSet::from(["_.contoso.com.pfx".into(), "мороженое.рф.pfx".into()])
        );
        assert_eq!(
            thumbprint_of(&dir.path().join("мороженое.рф.pfx")),
            v1.entry.thumbprint
        );
    }

    #[test]
    fn renewal_replaces_files_and_deletes_a_dropped_name_that_still_holds_our_certificate() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["a.example", "b.example", "c.example"]);
        all_installed(&run(dir.path(), &[&v1]));

        let v2 = version(&ca, 1, &["a.example", "b.example"]);
        let renewed = run(dir.path(), &[&v2]);
        all_installed(&renewed);
        assert_eq!(
            pfx_files(dir.path()),
            BTreeSet::from(["a.example.pfx".into(), "b.example.pfx".into()])
        );
        assert_eq!(
            thumbprint_of(&dir.path().join("a.example.pfx")),
            v2.entry.thumbprint
        );

        // Unassigning the certificate removes its files the same way.
        let unassigned = run(dir.path(), &[]);
        assert!(unassigned.files.is_empty() && unassigned.errors.is_empty());
        assert!(pfx_files(dir.path()).is_empty());
    }

    #[test]
    fn dropped_name_that_now_holds_another_certificate_is_kept_and_reported() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["a.example", "c.example"]);
        all_installed(&run(dir.path(), &[&v1]));
        let someone_else = version(&ca, 9, &["c.example"]);
        fs::write(dir.path().join("c.example.pfx"), &someone_else.pfx).unwrap();

        let v2 = version(&ca, 1, &["a.example"]);
        let renewed = run(dir.path(), &[&v2]);
        assert_eq!(
            status_of(&renewed, "a.example.pfx"),
            DeploymentStatus::Installed
        );
        assert_eq!(status_of(&renewed, "c.example.pfx"), DeploymentStatus::Kept);
        assert_eq!(
            fs::read(dir.path().join("c.example.pfx")).unwrap(),
            someone_else.pfx
        );

        // No longer ours: next time it is a foreign file, reported as a note only.
        let next = run(dir.path(), &[&v2]);
        all_installed(&next);
        assert!(
            next.notes.iter().any(|n| n.starts_with("c.example.pfx")),
            "{:?}",
            next.notes
        );
        assert!(dir.path().join("c.example.pfx").exists());
    }

    #[test]
    fn junk_and_foreign_pfx_files_are_left_alone_and_reported() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let foreign = version(&ca, 9, &["other.example"]);
        let squatter = version(&ca, 8, &["www.contoso.com"]);
        fs::write(dir.path().join("readme.txt"), "hello").unwrap();
        fs::write(dir.path().join("backup.pfx"), "not a pfx").unwrap();
        fs::write(dir.path().join(".notes.tmp-abc"), "not ours").unwrap();
        fs::write(dir.path().join("other.example.pfx"), &foreign.pfx).unwrap();
        fs::write(dir.path().join("www.contoso.com.pfx"), &squatter.pfx).unwrap();
        let before = snapshot(dir.path());

        let v1 = version(&ca, 1, &["www.contoso.com", "api.contoso.com"]);
        let result = run(dir.path(), &[&v1]);
        assert_eq!(
            status_of(&result, "api.contoso.com.pfx"),
            DeploymentStatus::Installed
        );
        assert_eq!(
            status_of(&result, "www.contoso.com.pfx"),
            DeploymentStatus::Failed
        );
        let after = snapshot(dir.path());
        for (name, state) in &before {
            assert_eq!(after.get(name), Some(state), "{name} was touched");
        }
        for name in [
            "readme.txt",
            "backup.pfx",
            "other.example.pfx",
            "www.contoso.com.pfx",
            ".notes.tmp-abc",
        ] {
            assert!(
                result.notes.iter().any(|n| n.starts_with(name)),
                "{name} not reported: {:?}",
                result.notes
            );
        }
    }

    #[test]
    fn a_kill_mid_write_leaves_only_a_temp_file_which_the_next_run_removes() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["www.contoso.com"]);
        all_installed(&run(dir.path(), &[&v1]));

        // The process died after writing half of v2's temp file, and during a manifest write.
        let v2 = version(&ca, 1, &["www.contoso.com"]);
        let temp = dir
            .path()
            .join(format!(".www.contoso.com.pfx.tmp-{}", Uuid::new_v4()));
        fs::write(&temp, &v2.pfx[..v2.pfx.len() / 2]).unwrap();
        let manifest_temp = dir
            .path()
            .join(format!(".{MANIFEST_FILE}.tmp-{}", Uuid::new_v4()));
        fs::write(&manifest_temp, "{").unwrap();
        assert_eq!(
            pfx_files(dir.path()),
            BTreeSet::from(["www.contoso.com.pfx".into()])
        );
        assert_eq!(
            thumbprint_of(&dir.path().join("www.contoso.com.pfx")),
            v1.entry.thumbprint,
            "target intact"
        );

        let next = run(dir.path(), &[&v2]);
        all_installed(&next);
        assert!(!temp.exists() && !manifest_temp.exists());
        assert_eq!(
            thumbprint_of(&dir.path().join("www.contoso.com.pfx")),
            v2.entry.thumbprint
        );
        assert!(next.notes.is_empty(), "{:?}", next.notes);
    }

    #[test]
    fn a_bundle_that_does_not_open_with_the_local_password_is_never_written() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(&ca, 1, &["www.contoso.com"]);
        all_installed(&run(dir.path(), &[&v1]));

        let wrong = version_with(
            &ca,
            1,
            &["www.contoso.com", "new.contoso.com"],
            "server-side-typo",
        );
        let before = snapshot(dir.path());
        let result = run(dir.path(), &[&wrong]);
        assert_eq!(snapshot(dir.path()), before, "nothing may be written");
        for name in ["www.contoso.com.pfx", "new.contoso.com.pfx"] {
            let report = result.files.iter().find(|f| f.file_name == name).unwrap();
            assert_eq!(report.status, DeploymentStatus::Failed);
            assert!(
                report.error.as_ref().unwrap().contains("password"),
                "{report:?}"
            );
        }
    }

    /// Asserts that installing `v` into an empty folder fails `name` and writes no PFX file.
    fn assert_refused(v: &Version, name: &str) {
        let dir = tempfile::tempdir().unwrap();
        let result = run(dir.path(), &[v]);
        assert_eq!(status_of(&result, name), DeploymentStatus::Failed);
        assert!(pfx_files(dir.path()).is_empty());
    }

    #[test]
    fn a_bundle_for_another_certificate_than_the_manifest_says_is_refused() {
        let ca = TestCa::new();
        let mut v1 = version(&ca, 1, &["www.contoso.com"]);
        v1.pfx = version(&ca, 1, &["www.contoso.com"]).pfx;
        assert_refused(&v1, "www.contoso.com.pfx");
    }

    #[test]
    fn manifest_names_must_match_the_certificate() {
        let ca = TestCa::new();
        let mut v1 = version(&ca, 1, &["www.contoso.com"]);
        v1.entry.file_names = vec!["evil.example.pfx".into()];
        assert_refused(&v1, "evil.example.pfx");
    }

    #[test]
    fn an_unusable_folder_fails_every_file_and_touches_nothing() {
        let ca = TestCa::new();
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("share-down");
        let v1 = version(&ca, 1, &["a.example", "b.example"]);
        let result = run(&missing, &[&v1]);
        assert_eq!(result.files.len(), 2);
        assert!(
            result
                .files
                .iter()
                .all(|f| f.status == DeploymentStatus::Failed)
        );
        assert_eq!(result.errors.len(), 1);
        assert!(!missing.exists());

        let dir = tempfile::tempdir().unwrap();
        all_installed(&run(dir.path(), &[&v1]));
        fs::write(dir.path().join(MANIFEST_FILE), "garbage").unwrap();
        let before = snapshot(dir.path());
        let result = run(dir.path(), &[&version(&ca, 1, &["a.example"])]);
        assert!(
            result.errors[0].contains("corrupt manifest"),
            "{:?}",
            result.errors
        );
        assert_eq!(snapshot(dir.path()), before);
    }
}
