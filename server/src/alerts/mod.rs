//! Alert rules and their lifecycle. Each evaluation computes the set of conditions that hold now, opens
//! alerts for new ones and resolves those that stopped holding; each change writes its PagerDuty delivery
//! into the outbox in the same transaction (see [`outbox`]).

pub mod outbox;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::AlertSettings;
use crate::db;
use crate::db::alerts::Firing;

/// Rules this engine owns (alerts of other rules are left alone).
pub const RULES: [&str; 2] = ["gpu-temperature", "node-silent"];

/// What one evaluation changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOutcome {
    /// Dedup keys opened.
    pub fired: Vec<String>,
    /// Dedup keys resolved.
    pub resolved: Vec<String>,
}

/// Evaluates the built-in rules.
pub struct AlertEngine {
    pool: PgPool,
    settings: AlertSettings,
    deliver: bool,
    public_url: String,
}

impl AlertEngine {
    /// An engine; `deliver` says whether a PagerDuty routing key is configured (no key, no outbox rows).
    pub fn new(pool: PgPool, settings: AlertSettings, deliver: bool, public_url: String) -> Self {
        Self { pool, settings, deliver, public_url }
    }

    /// The conditions that hold at `now`. A silent node inhibits its GPUs' alerts (their data is stale).
    pub async fn conditions(&self, now: DateTime<Utc>) -> Result<Vec<Firing>, sqlx::Error> {
        let silent_after = chrono::Duration::seconds(i64::from(self.settings.node_silent_secs));
        let silent = db::alerts::silent_nodes(&self.pool, now - silent_after).await?;
        let silent_ids: HashSet<&str> = silent.iter().map(|(n, _)| n.as_str()).collect();
        let mut out = Vec::new();
        for (node, last_seen) in &silent {
            out.push(Firing {
                dedup_key: format!("fleetpilot/node-silent/{node}"),
                rule: "node-silent".into(),
                severity: "critical".into(),
                source: node.clone(),
                component: "gpu-agent".into(),
                group: node.clone(),
                summary: format!("Node {node} has sent no data for over {}s", self.settings.node_silent_secs),
                details: json!({ "node": node, "last_seen": last_seen, "silent_after_secs": self.settings.node_silent_secs }),
            });
        }
        for (node, gpu, uuid, temp) in
            db::alerts::hot_gpus(&self.pool, self.settings.gpu_temp_c, now - silent_after).await?
        {
            if silent_ids.contains(node.as_str()) {
                continue;
            }
            out.push(Firing {
                dedup_key: format!("fleetpilot/gpu-temperature/{node}/{gpu}"),
                rule: "gpu-temperature".into(),
                severity: "error".into(),
                source: node.clone(),
                component: format!("gpu {gpu}"),
                group: node.clone(),
                summary: format!("GPU {gpu} on {node} is at {temp:.0} °C (threshold {:.0} °C)", self.settings.gpu_temp_c),
                details: json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "temp_c": temp, "threshold_c": self.settings.gpu_temp_c }),
            });
        }
        Ok(out)
    }

    /// One evaluation at `now`.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> Result<EvalOutcome, sqlx::Error> {
        let conditions = self.conditions(now).await?;
        let open = db::alerts::open(&self.pool).await?;
        let mut out = EvalOutcome::default();
        let holding: HashSet<&str> = conditions.iter().map(|c| c.dedup_key.as_str()).collect();
        for c in &conditions {
            if open.contains_key(&c.dedup_key) {
                continue;
            }
            let payload = self.deliver.then(|| outbox::trigger_payload(c, &self.public_url));
            if db::alerts::fire(&self.pool, c, payload).await? {
                tracing::warn!(key = %c.dedup_key, summary = %c.summary, "alert firing");
                out.fired.push(c.dedup_key.clone());
            }
        }
        for (key, a) in &open {
            if RULES.contains(&a.rule.as_str()) && !holding.contains(key.as_str()) {
                let payload = self.deliver.then(|| outbox::resolve_payload(key));
                if db::alerts::resolve(&self.pool, a.id, key, payload).await? {
                    tracing::info!(key = %key, "alert resolved");
                    out.resolved.push(key.clone());
                }
            }
        }
        Ok(out)
    }

    /// Evaluates every `eval_secs` while `leading` is set, until `shutdown` flips.
    pub async fn run_until_stopped(self, leading: Arc<AtomicBool>, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_secs_f64(self.settings.eval_secs);
        while !*shutdown.borrow() {
            if leading.load(Ordering::Relaxed)
                && let Err(e) = self.evaluate(Utc::now()).await
            {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
