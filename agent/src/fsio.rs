//! Atomic file replacement: temp file in the same directory, `sync_all`, one renaming call.
//!
//! Never deletes then creates a target, so readers (IIS, nginx) see the old file or the new one.
//! Temp names start with `.` and end in `.tmp-<uuid>`, so they never end in `.pfx`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use uuid::Uuid;

/// Marker between a target's name and the uuid of its temp file.
const TEMP_MARKER: &str = ".tmp-";
/// Waits between rename attempts while a reader holds the target (sharing violation on Windows);
/// about four seconds in all, a millisecond each in unit tests.
const RENAME_BACKOFF: [Duration; 5] = if cfg!(test) {
    [Duration::from_millis(1); 5]
} else {
    [
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_secs(1),
        Duration::from_secs(2),
    ]
};

/// Who may read a file we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Default permissions (PFX files, certificates, manifests).
    Shared,
    /// Owner only: mode 0600 on Unix; on Windows the directory ACL applies.
    Private,
}

/// Replaces `target` with `bytes` atomically; on failure the previous file is left untouched.
pub(crate) fn replace(target: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    let temp = write_temp(target, bytes, access)?;
    commit(&temp, target)
}

/// Writes `bytes` to a fresh temp file beside `target` and flushes it to disk.
pub(crate) fn write_temp(target: &Path, bytes: &[u8], access: Access) -> io::Result<PathBuf> {
    let temp = temp_path(target)?;
    let result = create_new(&temp, access).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Renames `temp` over `target`, retrying with backoff; removes `temp` if it never succeeds.
pub(crate) fn commit(temp: &Path, target: &Path) -> io::Result<()> {
    let mut waits = RENAME_BACKOFF.iter();
    loop {
        match fs::rename(temp, target) {
            Ok(()) => {
                sync_parent(target);
                return Ok(());
            }
            Err(e) => match waits.next() {
                Some(wait) => {
                    tracing::debug!(file = %target.display(), error = %e, "rename failed, retrying");
                    pause(*wait);
                }
                None => {
                    let _ = fs::remove_file(temp);
                    return Err(e);
                }
            },
        }
    }
}

/// True for names of temp files this module creates (`.<name>.tmp-<uuid>`).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(TEMP_MARKER)
            .is_some_and(|(base, id)| base.len() > 1 && Uuid::try_parse(id).is_ok())
}

fn temp_path(target: &Path) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target has no file name"))?;
    Ok(target.with_file_name(format!(".{name}{TEMP_MARKER}{}", Uuid::new_v4())))
}

fn create_new(path: &Path, access: Access) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match access {
            Access::Private => 0o600,
            Access::Shared => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = access;
    options.open(path)
}

/// Makes the rename durable on Unix; Windows has no directory handle to flush.
fn sync_parent(target: &Path) {
    #[cfg(unix)]
    if let Some(dir) = target.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = target;
}

#[expect(
    clippy::disallowed_methods,
    reason = "installers are synchronous and run on a blocking thread, never on the async runtime"
)]
fn pause(wait: Duration) {
    std::thread::sleep(wait);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_never_pfx() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_path(&dir.path().join("www.contoso.com.pfx")).unwrap();
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".www.contoso.com.pfx.tmp-"), "{name}");
        assert!(!name.ends_with(".pfx"));
        assert!(is_temp_name(name));
        for other in [
            "www.contoso.com.pfx",
            ".certkeep-manifest.json",
            ".x.tmp-notauuid",
            "x.tmp-",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        replace(&path, b"k", Access::Private).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn failed_rename_keeps_the_target_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file: every attempt fails.
        let target = dir.path().join("busy.pfx");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        let temp = write_temp(&target, b"new", Access::Shared).unwrap();
        assert!(commit(&temp, &target).is_err());
        assert!(!temp.exists());
        assert!(target.join("inside").exists());
    }
}
