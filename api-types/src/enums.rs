//! Closed vocabularies of the wire and the database: states, key types, scopes, PFX encryption.
//!
//! Each is one enum used by the server's model, its storage (as the text `as_str` returns), the
//! REST API and the CLI, so `/openapi.json` lists its values and no layer keeps a copy. The JSON
//! strings are the stored texts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Declares a string-backed enum with `as_str`/`FromStr` matching the stored and JSON text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        // The texts are the kebab-case variant names (a test checks), so serde, utoipa and clap
        // derive them alike; a `rename = $text` per variant would reach utoipa as a token group
        // it does not read.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        #[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
        pub enum $name {
            $(
                $(#[$vdoc])*
                $variant
            ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and JSON) text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(/// State of an ACME account.
    AccountState {
    /// Created, not registered at the CA yet.
    Pending => "pending",
    /// Registered at the CA.
    Valid => "valid",
    /// Deactivated at the CA; it orders nothing more.
    Deactivated => "deactivated",
    /// The CA refused the registration (see `last_error`).
    Failed => "failed",
});

text_enum!(/// Private key type of a certificate. P-521 and RSA under 2048 are refused on purpose.
    KeyType {
    Rsa2048 => "rsa2048",
    Rsa3072 => "rsa3072",
    Rsa4096 => "rsa4096",
    /// The default.
    EcdsaP256 => "ecdsa-p256",
    EcdsaP384 => "ecdsa-p384",
});

text_enum!(/// Lifecycle state of a certificate.
    CertificateState {
    /// Defined; the first order has not succeeded yet.
    Pending => "pending",
    /// The first order is running.
    Issuing => "issuing",
    /// A current version is issued.
    Valid => "valid",
    /// A renewal order is running.
    Renewing => "renewing",
    /// Orders fail, but are retried.
    Failing => "failing",
    /// Orders failed for good.
    Failed => "failed",
    /// The current version is revoked.
    Revoked => "revoked",
    /// No longer renewed.
    Retired => "retired",
});

text_enum!(/// State of an order job, in RFC 8555 order plus certkeep's own bookkeeping states.
    OrderState {
    Queued => "queued",
    Pending => "pending",
    Ready => "ready",
    Processing => "processing",
    Valid => "valid",
    Done => "done",
    Failed => "failed",
});

text_enum!(/// Why an order was placed.
    OrderReason {
    /// The first order of a certificate.
    New => "new",
    /// Renewal before expiry.
    Renewal => "renewal",
    /// A re-issue (e.g. after revocation).
    Reissue => "reissue",
    /// Renewal asked for through the API.
    Manual => "manual",
});

text_enum!(/// State of an agent.
    AgentState {
    /// Created, not enrolled yet.
    Pending => "pending",
    /// Enrolled.
    Active => "active",
    /// Revoked; its client certificate is refused.
    Revoked => "revoked",
});

text_enum!(/// PKCS#12 encryption of the PFX files for one agent, chosen by the oldest Windows reading
    /// them.
    PfxEncryption {
    /// 3DES with a SHA-1 MAC, 2048 iterations: readable by every IIS 8+.
    Legacy => "legacy",
    /// PBES2 AES-256 with a SHA-256 MAC: Windows Server 2019 (build 17763) and later only.
    Aes256 => "aes256",
});

text_enum!(/// API token scope.
    Scope {
    /// Everything, including tokens and the audit log.
    Admin => "admin",
    /// Accounts, certificates and agents.
    Operator => "operator",
    /// Orders certificates within the token's domain patterns.
    Issuer => "issuer",
    /// Reads certificates, accounts and agents.
    Reader => "reader",
    /// Releases private keys (with another scope).
    Export => "export",
});

text_enum!(/// What an agent reported for one file.
    DeploymentStatus {
    /// The file holds the manifest's thumbprint.
    Installed => "installed",
    /// The file could not be written; any previous file was left in place.
    Failed => "failed",
    /// A file no longer in the manifest was left in place (not ours any more, or still in use).
    Kept => "kept",
});

text_enum!(/// Progress of moving one certificate to another ACME account.
    MoveState {
    /// Waiting for its turn (moves start at `lifecycle.move_orders_per_minute`).
    Queued => "queued",
    /// Ordered under the target account; the old version stays current until it is issued.
    Ordering => "ordering",
    /// Issued and current; waiting for every assigned agent to report it before the old
    /// version is revoked (`superseded`).
    Issued => "issued",
    /// Finished.
    Done => "done",
    /// The order under the target account failed; the old version stays current.
    Failed => "failed",
});

text_enum!(/// Whether an agent has a certificate's current version.
    DeploymentState {
    /// Nothing reported yet, or the certificate has no version yet.
    Pending => "pending",
    /// Every file holds the current version.
    Deployed => "deployed",
    /// Some file holds an older version.
    Stale => "stale",
    /// The agent could not write a file.
    Failed => "failed",
});

#[expect(
    clippy::derivable_impls,
    reason = "declared by text_enum!, which takes no per-enum derives"
)]
impl Default for PfxEncryption {
    fn default() -> Self {
        PfxEncryption::Legacy
    }
}

impl OrderState {
    /// Whether the job has ended (successfully or not).
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Done | OrderState::Failed)
    }
}

impl KeyType {
    /// Whether this is an RSA key type.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// Parses a requested key type in any case, explaining why P-521 and short RSA keys are
    /// refused.
    pub fn parse_requested(text: &str) -> Result<KeyType, String> {
        let text = text.to_ascii_lowercase();
        if text.contains("521") {
            return Err("P-521 keys are refused: many TLS clients and Windows schannel configurations reject them; use ecdsa-p256 or ecdsa-p384".into());
        }
        if let Some(bits) = text.strip_prefix("rsa").and_then(|b| b.parse::<u32>().ok())
            && bits < 2048
        {
            return Err(format!("RSA keys under 2048 bits are refused (got {bits})"));
        }
        KeyType::from_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value's JSON (and CLI) text is its stored text, and parses back.
    macro_rules! same_texts {
        ($($t:ty),+) => {$(
            for v in <$t>::ALL {
                let text = v.to_string();
                assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{text}\""));
                assert_eq!(text.parse::<$t>().unwrap(), *v);
                #[cfg(feature = "clap")]
                assert_eq!(
                    clap::ValueEnum::to_possible_value(v).unwrap().get_name(),
                    text
                );
            }
        )+};
    }

    #[test]
    fn text_enums_round_trip() {
        same_texts!(
            AccountState,
            KeyType,
            CertificateState,
            OrderState,
            OrderReason,
            AgentState,
            PfxEncryption,
            Scope,
            DeploymentStatus,
            DeploymentState,
            MoveState
        );
        let err = "ecdsa-p521".parse::<KeyType>().unwrap_err();
        assert!(err.contains("ecdsa-p384"), "{err}");
        assert!(
            KeyType::parse_requested("ECDSA-P521")
                .unwrap_err()
                .contains("P-521")
        );
        assert_eq!(KeyType::parse_requested("RSA3072"), Ok(KeyType::Rsa3072));
        assert_eq!(
            serde_json::to_string(&PfxEncryption::Aes256).unwrap(),
            r#""aes256""#
        );
    }
}
