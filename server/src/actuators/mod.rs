//! What the control loop acts through: Kubernetes' scale subresource and agent commands.
//!
//! Build with [`Actuators::new`]: it gives the Kubernetes scaler the pool it reads replica loads from for
//! drain-safe scale-downs (see [`kube`]).

pub mod agents;
pub mod kube;

use sqlx::PgPool;

use crate::db::control::Fence;
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
    /// The leadership term this actuation belongs to is over: another replica leads now, or this one lost its
    /// lock. Nothing was sent.
    #[error("fenced: leadership term {0} is over (another replica leads, or this one lost its lock); nothing sent")]
    Fenced(i64),
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
    ///
    /// `fence` is the control loop's leadership term; the actuation is refused ([`ActuateError::Fenced`]) unless
    /// it is still current. `None` only for an operator's own action (a one-click), attributed to the user.
    pub async fn scale(
        &self,
        spec: &PolicySpec,
        replicas: u32,
        decision_id: i64,
        fence: Option<Fence>,
    ) -> Result<(), ActuateError> {
        self.scale_reported(spec, replicas, decision_id, fence).await.map(|_| ())
    }

    /// [`Actuators::scale`], with what happened besides the scale itself (the drain annotations of a
    /// Deployment's scale-down), for a caller that records it.
    pub async fn scale_reported(
        &self,
        spec: &PolicySpec,
        replicas: u32,
        decision_id: i64,
        fence: Option<Fence>,
    ) -> Result<kube::ScaleReport, ActuateError> {
        match spec.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => {
                let k = self.kube.as_ref().ok_or(ActuateError::NoKube)?;
                // Checked right before the PATCH: the API server cannot check our token itself, so the window
                // left is this one round trip to PostgreSQL (agent commands are fenced inside their transaction).
                self.agents.check_fence(fence).await?;
                k.scale(spec, replicas).await
            }
            TargetKind::AgentGroup => {
                self.agents.set_replicas(&spec.target.name, replicas, decision_id, fence).await?;
                Ok(kube::ScaleReport::default())
            }
        }
    }
}
