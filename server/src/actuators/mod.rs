//! What the control loop acts through: Kubernetes' scale subresource and agent commands.
//!
//! Build with [`Actuators::new`]: it gives the Kubernetes scaler the pool it reads replica loads from for
//! drain-safe scale-downs (see [`kube`]).

pub mod agents;
pub mod kube;

use sqlx::PgPool;

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
    /// Actuators over `pool`; the Kubernetes scaler, when there is one, reads replica loads from it.
    pub fn new(kube: Option<kube::KubeScaler>, pool: PgPool) -> Self {
        Self { kube: kube.map(|k| k.with_replica_loads(pool.clone())), agents: agents::AgentActuator::new(pool) }
    }

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

    /// Sets the target's replicas (idempotent); a Deployment's scale-down first ranks its pods for deletion
    /// by load (a failure there is logged and counted, never an error: see [`Actuators::scale_reported`]).
    pub async fn scale(&self, spec: &PolicySpec, replicas: u32, decision_id: i64) -> Result<(), ActuateError> {
        self.scale_reported(spec, replicas, decision_id).await.map(|_| ())
    }

    /// [`Actuators::scale`], with what happened besides the scale itself (the drain annotations of a
    /// Deployment's scale-down), for a caller that records it.
    pub async fn scale_reported(
        &self,
        spec: &PolicySpec,
        replicas: u32,
        decision_id: i64,
    ) -> Result<kube::ScaleReport, ActuateError> {
        match spec.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => {
                self.kube.as_ref().ok_or(ActuateError::NoKube)?.scale(spec, replicas).await
            }
            TargetKind::AgentGroup => {
                self.agents.set_replicas(&spec.target.name, replicas, decision_id).await?;
                Ok(kube::ScaleReport::default())
            }
        }
    }
}
