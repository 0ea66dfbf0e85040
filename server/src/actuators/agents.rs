//! Commands to agents: replica counts for agent groups, batching for deployments.

use gpu_agent::protocol::CommandAction;
use sqlx::PgPool;

use super::ActuateError;
use crate::db;
use crate::db::control::Fence;

/// Queues commands; agents pick them up with their next upload.
#[derive(Clone)]
pub struct AgentActuator {
    pool: PgPool,
}

impl AgentActuator {
    /// An actuator over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Refuses when `fence` is no longer the current leadership term (`None`: an operator's action, not fenced).
    pub async fn check_fence(&self, fence: Option<Fence>) -> Result<(), ActuateError> {
        match fence {
            Some(f) if !db::control::fence_holds(&self.pool, f).await? => Err(ActuateError::Fenced(f.epoch)),
            _ => Ok(()),
        }
    }

    /// Queues `action` for `nodes`, fenced by the leadership term when there is one.
    async fn enqueue_all(
        &self,
        nodes: &[String],
        action: &CommandAction,
        decision_id: Option<i64>,
        fence: Option<Fence>,
    ) -> Result<(), ActuateError> {
        match fence {
            Some(f) => match db::commands::enqueue_fenced(&self.pool, f, nodes, action, decision_id).await? {
                Some(_) => Ok(()),
                None => Err(ActuateError::Fenced(f.epoch)),
            },
            None => {
                for n in nodes {
                    db::commands::enqueue(&self.pool, n, action, decision_id).await?;
                }
                Ok(())
            }
        }
    }

    /// Tells every node of `group` the group's desired replica count.
    pub async fn set_replicas(
        &self,
        group: &str,
        replicas: u32,
        decision_id: i64,
        fence: Option<Fence>,
    ) -> Result<(), ActuateError> {
        let nodes = db::commands::nodes_of_group(&self.pool, group).await?;
        if nodes.is_empty() {
            return Err(ActuateError::EmptyGroup(group.to_string()));
        }
        let action = CommandAction::SetReplicas { group: group.to_string(), replicas };
        self.enqueue_all(&nodes, &action, Some(decision_id), fence).await
    }

    /// Sends a rebatch command to every node serving `deployment`; returns how many nodes got it.
    pub async fn rebatch(
        &self,
        nodes: &[String],
        deployment: &str,
        max_batch_size: u32,
        max_queue_delay_us: u64,
        decision_id: Option<i64>,
        fence: Option<Fence>,
    ) -> Result<usize, ActuateError> {
        let action = CommandAction::Rebatch { deployment: deployment.to_string(), max_batch_size, max_queue_delay_us };
        self.enqueue_all(nodes, &action, decision_id, fence).await?;
        Ok(nodes.len())
    }
}
