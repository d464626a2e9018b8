//! Whether an agent holds a certificate's current version, judged from its last report.

use certkeep_api_types::api::DeploymentState;

use crate::model::{Deployment, DeploymentStatus};

/// The deployment state of one agent × certificate pair. `files` are the agent's reported files
/// for that certificate; files it kept but no longer manages (`kept`) do not count.
pub fn deployment_state(
    current_thumbprint: Option<&str>,
    files: &[&Deployment],
) -> DeploymentState {
    let Some(current) = current_thumbprint else {
        return DeploymentState::Pending;
    };
    let managed: Vec<&&Deployment> = files
        .iter()
        .filter(|f| f.status != DeploymentStatus::Kept)
        .collect();
    if managed.iter().any(|f| f.status == DeploymentStatus::Failed) {
        DeploymentState::Failed
    } else if managed.is_empty() {
        DeploymentState::Pending
    } else if managed
        .iter()
        .all(|f| f.thumbprint.as_deref() == Some(current))
    {
        DeploymentState::Deployed
    } else {
        DeploymentState::Stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, CertificateId};

    fn file(thumbprint: &str, status: &str) -> Deployment {
        Deployment {
            agent_id: AgentId::new(),
            certificate_id: CertificateId::new(),
            target: String::new(),
            file_name: "www.example.com.pfx".into(),
            thumbprint: Some(thumbprint.into()),
            status: status.parse().unwrap(),
            error: None,
            reported_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn states() {
        let (new, old) = (file("new", "installed"), file("old", "installed"));
        let (failed, kept) = (file("old", "failed"), file("old", "kept"));
        assert_eq!(deployment_state(None, &[&new]), DeploymentState::Pending);
        assert_eq!(deployment_state(Some("new"), &[]), DeploymentState::Pending);
        assert_eq!(
            deployment_state(Some("new"), &[&new, &kept]),
            DeploymentState::Deployed
        );
        assert_eq!(
            deployment_state(Some("new"), &[&new, &old]),
            DeploymentState::Stale
        );
        assert_eq!(
            deployment_state(Some("new"), &[&new, &failed]),
            DeploymentState::Failed
        );
    }
}
