//! Secrets at rest: age (x25519) encryption of every secret column, bound to its row.
//!
//! Knows files and age; knows nothing about SQL or HTTP. The plaintext of every ciphertext starts
//! with a binding header naming table, column and row id, so a ciphertext copied into another row
//! or column fails to open. Plaintexts are returned as [`SecretBytes`], zeroized on drop.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Secret plaintext bytes, wiped from memory when dropped.
pub type SecretBytes = Zeroizing<Vec<u8>>;

const MAGIC: &[u8] = b"certkeep-secret/v1\n";

/// Where a secret lives: the binding that is encrypted together with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub table: &'static str,
    pub column: &'static str,
    pub row: Uuid,
}

impl Binding {
    /// A secret stored at `table.column` in row `row`.
    pub fn new(table: &'static str, column: &'static str, row: Uuid) -> Self {
        Self { table, column, row }
    }

    fn header(&self) -> Vec<u8> {
        let mut header = MAGIC.to_vec();
        header
            .extend_from_slice(format!("{}.{}:{}\n", self.table, self.column, self.row).as_bytes());
        header
    }
}

/// Errors opening or sealing secrets. Never carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot decrypt secret {table}.{column} of row {row}: {reason}")]
    Open {
        table: &'static str,
        column: &'static str,
        row: Uuid,
        reason: String,
    },
    #[error("cannot encrypt secret: {0}")]
    Seal(String),
    #[error(
        "cannot decrypt {what}: not an age ciphertext to this server's recipient, or corrupted"
    )]
    OpenSealedValue { what: &'static str },
    #[error("age identity {path}: {reason}")]
    Identity { path: String, reason: String },
}

/// The age key pair that seals and opens every secret column. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Keys>,
}

struct Keys {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("recipient", &self.inner.recipient.to_string())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Generates a fresh identity (used by tests and by first start).
    pub fn generate() -> Self {
        Self::from_identity(age::x25519::Identity::generate())
    }

    fn from_identity(identity: age::x25519::Identity) -> Self {
        let recipient = identity.to_public();
        Self {
            inner: Arc::new(Keys {
                identity,
                recipient,
            }),
        }
    }

    /// Reads an identity file (`AGE-SECRET-KEY-1...` line, `#` comments allowed).
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let err = |reason: String| SecretsError::Identity {
            path: path.display().to_string(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| err("no AGE-SECRET-KEY line found".into()))?;
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|_| err("the AGE-SECRET-KEY line does not parse".into()))?;
        Ok(Self::from_identity(identity))
    }

    /// Loads the identity at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SecretsError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let secrets = Self::generate();
        secrets.write_identity(path)?;
        Ok((secrets, true))
    }

    /// Writes this identity to a new file readable only by the owner.
    pub fn write_identity(&self, path: &Path) -> Result<(), SecretsError> {
        let err = |e: std::io::Error| SecretsError::Identity {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let key = self.inner.identity.to_string();
        let body = Zeroizing::new(format!(
            "# certkeep age identity. Back it up together with the database: one without the other is useless.\n# public key: {}\n{}\n",
            self.inner.recipient,
            key.expose_secret()
        ));
        crate::fsutil::write_private_new(path, body.as_bytes()).map_err(err)
    }

    /// The public recipient string (`age1...`).
    pub fn recipient(&self) -> String {
        self.inner.recipient.to_string()
    }

    /// Encrypts `plaintext` for storage at `binding`.
    pub fn seal(&self, binding: Binding, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let mut framed = Zeroizing::new(binding.header());
        framed.extend_from_slice(plaintext);
        let mut out = Vec::with_capacity(framed.len() + 200);
        let recipients = [&self.inner.recipient as &dyn age::Recipient];
        let encryptor = age::Encryptor::with_recipients(recipients.into_iter())
            .map_err(|e| SecretsError::Seal(e.to_string()))?;
        let mut writer = encryptor
            .wrap_output(&mut out)
            .map_err(|e| SecretsError::Seal(e.to_string()))?;
        writer
            .write_all(&framed)
            .and_then(|()| writer.finish().map(drop))
            .map_err(|e| SecretsError::Seal(e.to_string()))?;
        Ok(out)
    }

    /// Decrypts a ciphertext stored at `binding`; fails if it was sealed for another place.
    pub fn open(&self, binding: Binding, ciphertext: &[u8]) -> Result<SecretBytes, SecretsError> {
        let fail = |reason: &str| SecretsError::Open {
            table: binding.table,
            column: binding.column,
            row: binding.row,
            reason: reason.to_owned(),
        };
        let plain = Zeroizing::new(
            age::decrypt(&self.inner.identity, ciphertext)
                .map_err(|_| fail("not encrypted to this server's age identity, or corrupted"))?,
        );
        let header = binding.header();
        if !plain.starts_with(&header) {
            return Err(fail("the ciphertext belongs to another row or column"));
        }
        Ok(Zeroizing::new(plain[header.len()..].to_vec()))
    }

    /// Decrypts a configuration value `what` that the operator sealed to [`Self::recipient`]
    /// with the age CLI (ASCII armor or binary). Unlike a column secret it carries no binding
    /// header: a configuration key is its only place.
    pub fn open_sealed_value(
        &self,
        what: &'static str,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, SecretsError> {
        age::decrypt(&self.inner.identity, ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::OpenSealedValue { what })
    }

    /// Opens a secret that is UTF-8 text.
    pub fn open_string(
        &self,
        binding: Binding,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<String>, SecretsError> {
        let bytes = self.open(binding, ciphertext)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Open {
                table: binding.table,
                column: binding.column,
                row: binding.row,
                reason: "not UTF-8".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Secrets::generate();
        let row = Uuid::now_v7();
        let b = Binding::new("acme_accounts", "eab_hmac_enc", row);
        let ct = s.seal(b, b"top secret").unwrap();
        assert!(!ct.windows(10).any(|w| w == b"top secret"));
        assert_eq!(&s.open(b, &ct).unwrap()[..], b"top secret");
        let other_row = Binding::new("acme_accounts", "eab_hmac_enc", Uuid::now_v7());
        let err = s.open(other_row, &ct).unwrap_err().to_string();
        assert!(err.contains("another row"), "{err}");
        let other_col = Binding::new("acme_accounts", "credentials_enc", row);
        assert!(s.open(other_col, &ct).is_err());
        assert!(Secrets::generate().open(b, &ct).is_err());
    }

    #[test]
    fn identity_file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        let (s, created) = Secrets::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = Secrets::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(s.recipient(), again.recipient());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(!format!("{s:?}").contains("AGE-SECRET-KEY"));
    }
}
