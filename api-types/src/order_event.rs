//! The kinds of step recorded in an order's history (`order_events.kind`). The text of each kind
//! is what the database stores and what the API returns; it never changes for an existing kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of step in an order's history, in roughly the order a job records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum OrderEventKind {
    /// The order was queued (detail: the reason: new, renewal, reissue, manual).
    Queued,
    /// The current version was revoked and this order re-issues it.
    Revoked,
    /// The order was placed at the CA.
    Created,
    /// A run resumed an order already placed at the CA.
    Resumed,
    /// Authorizations the CA already holds as valid (nothing to solve for them).
    PreValidated,
    /// The solver chosen for a pending authorization.
    ChallengeSolver,
    /// A challenge response was published.
    ChallengePresented,
    /// The CA was told to validate a challenge.
    ChallengeAnswered,
    /// The CA validated every presented challenge.
    ChallengesValid,
    /// The CA marked a challenge invalid (detail: its problem document).
    ChallengeInvalid,
    /// A published challenge response was removed.
    ChallengeCleaned,
    /// A challenge response could not be removed.
    ChallengeCleanupFailed,
    /// The order's key and CSR were stored (before finalize).
    KeyStored,
    /// The CSR was sent.
    Finalizing,
    /// Finalize failed (the order is re-read before anything else).
    FinalizeFailed,
    /// The CA is processing the order.
    Processing,
    /// The job was released until a later time without holding a worker.
    Parked,
    /// A transient error; the job is retried later.
    Retry,
    /// The order failed for good.
    Failed,
    /// The certificate was downloaded and stored as the current version.
    Issued,
}

impl OrderEventKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [OrderEventKind] = &[
        Self::Queued,
        Self::Revoked,
        Self::Created,
        Self::Resumed,
        Self::PreValidated,
        Self::ChallengeSolver,
        Self::ChallengePresented,
        Self::ChallengeAnswered,
        Self::ChallengesValid,
        Self::ChallengeInvalid,
        Self::ChallengeCleaned,
        Self::ChallengeCleanupFailed,
        Self::KeyStored,
        Self::Finalizing,
        Self::FinalizeFailed,
        Self::Processing,
        Self::Parked,
        Self::Retry,
        Self::Failed,
        Self::Issued,
    ];

    /// The stored (and serialized) text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Revoked => "revoked",
            Self::Created => "created",
            Self::Resumed => "resumed",
            Self::PreValidated => "pre-validated",
            Self::ChallengeSolver => "challenge-solver",
            Self::ChallengePresented => "challenge-presented",
            Self::ChallengeAnswered => "challenge-answered",
            Self::ChallengesValid => "challenges-valid",
            Self::ChallengeInvalid => "challenge-invalid",
            Self::ChallengeCleaned => "challenge-cleaned",
            Self::ChallengeCleanupFailed => "challenge-cleanup-failed",
            Self::KeyStored => "key-stored",
            Self::Finalizing => "finalizing",
            Self::FinalizeFailed => "finalize-failed",
            Self::Processing => "processing",
            Self::Parked => "parked",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Issued => "issued",
        }
    }
}

impl FromStr for OrderEventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown order event kind `{s}`"))
    }
}

impl fmt::Display for OrderEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_serde_and_parsing_agree_for_every_kind() {
        for kind in OrderEventKind::ALL {
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<OrderEventKind>(&json).unwrap(),
                *kind
            );
            assert_eq!(kind.as_str().parse::<OrderEventKind>().unwrap(), *kind);
        }
        assert!("downloaded".parse::<OrderEventKind>().is_err());
    }

    #[test]
    fn stored_texts_never_change() {
        let texts: Vec<&str> = OrderEventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            texts,
            [
                "queued",
                "revoked",
                "created",
                "resumed",
                "pre-validated",
                "challenge-solver",
                "challenge-presented",
                "challenge-answered",
                "challenges-valid",
                "challenge-invalid",
                "challenge-cleaned",
                "challenge-cleanup-failed",
                "key-stored",
                "finalizing",
                "finalize-failed",
                "processing",
                "parked",
                "retry",
                "failed",
                "issued",
            ]
        );
    }
}
