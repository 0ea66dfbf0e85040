//! What the control loop acts through: Kubernetes' scale subresource and agent commands.

pub mod agents;
pub mod kube;

use crate::domain::policy::{PolicySpec, TargetKind};

/// Why an actuation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// No Kubernetes access is configured.
    #[error("no Kubernetes API configured (set kube.api_url or kube.discover)")]
    NoKube,
    /// The API server refused or failed.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// Database trouble while queueing commands.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The agent group has no nodes.
    #[error("agent group {0:?} has no nodes")]
    EmptyGroup(String),
}

/// All actuators, chosen per policy target.
#[derive(Clone)]
pub struct Actuators {
    /// Kubernetes, when configured.
    pub kube: Option<kube::KubeScaler>,
    /// Agent commands.
    pub agents: agents::AgentActuator,
}

impl Actuators {
    /// Current replicas as the target reports them (`None` when it cannot say).
    pub async fn current(&self, spec: &PolicySpec) -> Result<Option<u32>, ActuateError> {
        match spec.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => {
                let k = self.kube.as_ref().ok_or(ActuateError::NoKube)?;
                k.current(spec).await.map(Some)
            }
            TargetKind::AgentGroup => Ok(None),
        }
    }

    /// Sets the target's replicas (idempotent).
    pub async fn scale(&self, spec: &PolicySpec, replicas: u32, decision_id: i64) -> Result<(), ActuateError> {
        match spec.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => {
                self.kube.as_ref().ok_or(ActuateError::NoKube)?.scale(spec, replicas).await
            }
            TargetKind::AgentGroup => self.agents.set_replicas(&spec.target.name, replicas, decision_id).await,
        }
    }
}
