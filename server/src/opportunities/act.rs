//! One-click actions on opportunities, for every interface that offers them: what a click will do (worked out
//! against the store) and doing it. A scale becomes an override the control loop's leader applies and holds
//! ([`crate::db::overrides`]); rebatch and probe become agent commands. Views only render the words.

use chrono::{DateTime, Utc};
use forecasting::opportunities::{ActionPlan, Command};
use gpu_agent::protocol::CommandAction;
use sqlx::PgPool;

use crate::db;
use crate::db::opportunities::{self as store, StoredOpportunity};
use crate::db::policies::StoredPolicy;

/// How long a one-click scale is held by default: long enough that the policy's next scale-down window does not
/// undo it before anyone looks again.
pub const DEFAULT_HOLD_MINUTES: u32 = 30;
/// Longest hold a one-click scale may ask for.
pub const MAX_HOLD_MINUTES: u32 = 1440;
/// Batching delay when neither the opportunity nor a policy names one (the policy's `rebatch` default).
pub const DEFAULT_MAX_QUEUE_DELAY_US: u64 = 2_000;

/// What came of an action.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether it was done.
    pub ok: bool,
    /// What happened, in words.
    pub result: String,
    /// The decision recorded with it, if any.
    pub decision_id: Option<i64>,
    /// Agent commands queued.
    pub command_ids: Vec<uuid::Uuid>,
}

/// The action plan stored with the opportunity (`None` if it cannot be read, which our writer never causes).
pub fn action_plan(o: &StoredOpportunity) -> Option<ActionPlan> {
    serde_json::from_value(o.action.clone()).ok()
}

/// The policy that scales `deployment`, if any (never a shadow).
fn policy_for<'a>(policies: &'a [StoredPolicy], deployment: &str) -> Option<&'a StoredPolicy> {
    crate::db::policies::active_for(policies, deployment)
}

/// Why there is no one-click button, or `None` when there is one (before the checks that need the database).
pub fn advisory_reason(o: &StoredOpportunity, plan: Option<&ActionPlan>, policies: &[StoredPolicy]) -> Option<String> {
    let Some(plan) = plan else { return Some("advisory: the stored action cannot be read".into()) };
    let Some(cmd) = plan.command.as_ref().filter(|_| plan.one_click) else {
        return Some("advisory only: fleetpilot cannot do this itself".into());
    };
    if o.status != "open" {
        return Some(format!("no action: the opportunity is {}", o.status));
    }
    match cmd {
        Command::Scale { deployment, .. } if policy_for(policies, deployment).is_none() => Some(format!(
            "advisory: no policy scales {deployment}, so fleetpilot does not know which object to scale (create a policy)"
        )),
        _ => None,
    }
}

/// What a click will do, worked out against the database.
pub enum Plan {
    /// Record an override of `policy` for its control loop to apply and hold.
    Scale { policy: Box<StoredPolicy>, current: u32, replicas: u32, asked: u32 },
    /// Queue a rebatch command on every node serving the deployment.
    Rebatch { deployment: String, nodes: Vec<String>, max_batch_size: u32, max_queue_delay_us: u64 },
    /// Queue the bandwidth probe on a node.
    Probe { node: String },
}

/// Works out the plan, or says why there is none.
pub async fn plan(pool: &PgPool, o: &StoredOpportunity) -> Result<Result<Plan, String>, sqlx::Error> {
    let policies = db::policies::list(pool).await?;
    let action = action_plan(o);
    if let Some(why) = advisory_reason(o, action.as_ref(), &policies) {
        return Ok(Err(why));
    }
    let Some(cmd) = action.and_then(|a| a.command) else {
        return Ok(Err("advisory only: fleetpilot cannot do this itself".into()));
    };
    Ok(match cmd {
        Command::Scale { deployment, replicas } => match policy_for(&policies, &deployment) {
            None => Err(format!("no policy scales {deployment}")),
            Some(p) => {
                let from_evidence = o
                    .evidence
                    .get("numbers")
                    .and_then(|n| n.get("replicas"))
                    .and_then(|v| v.as_f64())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| v as u32);
                let current = match from_evidence {
                    Some(c) => c,
                    None => db::control::last_applied_replicas(pool, p.id).await?.unwrap_or(0),
                };
                let lo = p.spec.min_replicas;
                let hi = p.spec.max_replicas.max(lo);
                Ok(Plan::Scale {
                    policy: Box::new(p.clone()),
                    current,
                    replicas: replicas.clamp(lo, hi),
                    asked: replicas,
                })
            }
        },
        Command::Rebatch { deployment, max_batch_size, max_queue_delay_us } => {
            let nodes = store::nodes_serving(pool, &deployment).await?;
            if nodes.is_empty() {
                Err(format!("no node declares that it serves {deployment}"))
            } else {
                // The delay the opportunity names, else the one the deployment's policy uses, else the default.
                let delay = max_queue_delay_us
                    .or_else(|| {
                        policy_for(&policies, &deployment)
                            .and_then(|p| p.spec.rebatch.as_ref())
                            .map(|r| r.max_queue_delay_us)
                    })
                    .unwrap_or(DEFAULT_MAX_QUEUE_DELAY_US);
                Ok(Plan::Rebatch { deployment, nodes, max_batch_size, max_queue_delay_us: delay })
            }
        }
        Command::Probe { node } => {
            if db::commands::node_exists(pool, &node).await? {
                Ok(Plan::Probe { node })
            } else {
                Err(format!("no node {node} has reported"))
            }
        }
    })
}

/// Carries out a plan for `actor` (recording an override, or queueing agent commands) and records on the
/// opportunity who acted, when, and what came of it.
#[allow(clippy::too_many_arguments)]
pub async fn perform(
    pool: &PgPool,
    control_enabled: bool,
    actor: &str,
    o: &StoredOpportunity,
    plan: Plan,
    hold_minutes: u32,
    now: DateTime<Utc>,
) -> Result<Outcome, sqlx::Error> {
    let outcome = match plan {
        Plan::Scale { policy, current, replicas, .. } => {
            // Recorded for the leader, never actuated here: the control loop applies it on its next tick (fenced
            // by its term) and holds it, so its next decision cannot silently undo it.
            let spec = &policy.spec;
            let target = spec.target_label();
            let hold_until = now + chrono::Duration::minutes(i64::from(hold_minutes));
            let reason = format!("one click on opportunity {}: {}", o.id, o.title);
            let id = db::overrides::create(pool, policy.id, replicas, hold_until, actor, &reason).await?;
            let when = if control_enabled {
                "on the control loop's next tick"
            } else {
                "when a control loop leads (it is disabled on this server)"
            };
            let hold = if hold_minutes == 0 {
                "no hold".to_string()
            } else {
                format!("held until {}", hold_until.format("%H:%M UTC"))
            };
            let dry = if spec.dry_run { "; the policy is in dry-run mode, so it is recorded, not applied" } else { "" };
            let result = format!(
                "override {id} recorded: {target} goes from {current} to {replicas} replicas {when} ({hold}){dry}"
            );
            Outcome { ok: true, result, decision_id: None, command_ids: Vec::new() }
        }
        Plan::Rebatch { deployment, nodes, max_batch_size, max_queue_delay_us } => {
            let action = CommandAction::Rebatch { deployment: deployment.clone(), max_batch_size, max_queue_delay_us };
            let mut ids = Vec::with_capacity(nodes.len());
            for n in &nodes {
                ids.push(db::commands::enqueue(pool, n, &action, None).await?);
            }
            let result = format!(
                "rebatch to max batch {max_batch_size} (delay {max_queue_delay_us} µs) queued for {deployment} on {} node{}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            );
            Outcome { ok: true, result, decision_id: None, command_ids: ids }
        }
        Plan::Probe { node } => {
            let id = db::commands::enqueue(pool, &node, &CommandAction::Probe {}, None).await?;
            Outcome {
                ok: true,
                result: format!("bandwidth probe queued on {node}"),
                decision_id: None,
                command_ids: vec![id],
            }
        }
    };
    let command = o.action.get("command").cloned().unwrap_or_default();
    db::opportunities::record_action(
        pool,
        &db::opportunities::NewAction {
            opportunity_id: o.id,
            acted_at: now,
            acted_by: actor,
            command: &command,
            ok: outcome.ok,
            result: &outcome.result,
            decision_id: outcome.decision_id,
            command_ids: &outcome.command_ids,
        },
    )
    .await?;
    Ok(outcome)
}
