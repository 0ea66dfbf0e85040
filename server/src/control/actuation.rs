//! Acting on a policy's decision: scaling its target through the actuators (fenced by the leader's term),
//! backing off a failing target, re-sending agent-group counts, and the rebatch heuristic.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::Backoff;
use super::{ControlError, ControlLoop, MAX_BACKOFF_SECS, Plan};
use crate::db::policies::StoredPolicy;
use crate::domain::policy::{PolicySpec, TargetKind};

impl ControlLoop {
    /// Scales the target; returns (applied, error).
    pub(super) async fn act(&self, pl: &Plan, decision_id: i64, now: DateTime<Utc>) -> (bool, Option<String>) {
        let (p, current, desired) = (&pl.policy, pl.current, pl.decision.desired);
        let target = p.spec.target_label();
        // Every actuation carries this term's fencing token; without one (a tick run by hand without taking the
        // lock, or a term that just ended) nothing is sent.
        let Some(fence) = self.leadership.fence() else {
            return (false, Some("not sent: this replica does not lead the control loop".into()));
        };
        match self.actuators.scale(&p.spec, desired, decision_id, Some(fence)).await {
            Ok(()) => {
                self.metrics.decisions.with_label_values(&["applied"]).inc();
                if desired != current {
                    tracing::info!(target = %target, from = current, to = desired, reason = %pl.decision.reason, "scaled");
                }
                self.policies.with(p.id, |st| {
                    st.backoff = None;
                    st.applied = Some(desired);
                    if desired != current
                        && let Some(slot) = st.engine.as_mut()
                    {
                        slot.engine.applied(now.timestamp(), current, desired);
                    }
                });
                (true, None)
            }
            Err(e) => {
                self.metrics.decisions.with_label_values(&["failed"]).inc();
                let b = self.failed(p.id, now);
                tracing::warn!(target = %target, error = %e, failures = b.failures, retry_at = %b.next_attempt, "scaling failed");
                (false, Some(e.to_string()))
            }
        }
    }

    /// The policy's backoff when an attempt now would be too early.
    pub(super) fn backing_off(&self, policy: Uuid, now: DateTime<Utc>) -> Option<Backoff> {
        self.policies.with(policy, |st| st.backoff.filter(|b| now < b.next_attempt))
    }

    /// Records a failed attempt: the next waits 5 s, 10 s, 20 s, ... up to [`MAX_BACKOFF_SECS`].
    pub(super) fn failed(&self, policy: Uuid, now: DateTime<Utc>) -> Backoff {
        self.policies.with(policy, |st| {
            let failures = st.backoff.map_or(0, |b| b.failures) + 1;
            let wait = (5_i64 << (failures - 1).min(10)).min(MAX_BACKOFF_SECS);
            let b = Backoff { failures, next_attempt: now + chrono::Duration::seconds(wait) };
            st.backoff = Some(b);
            b
        })
    }

    /// Agents do not report the group's replica count, so an unchanged agent-group decision is re-sent now and
    /// then (a restarted simulator converges); everything else acts only on change.
    pub(super) fn resend_due(&self, policy: Uuid, spec: &PolicySpec, now: DateTime<Utc>) -> bool {
        if spec.target.kind != TargetKind::AgentGroup {
            return false;
        }
        self.policies.with(policy, |st| {
            let due = st.last_resend.is_none_or(|t| now - t >= chrono::Duration::seconds(60));
            if due {
                st.last_resend = Some(now);
            }
            due
        })
    }

    /// Picks the deployment's batch size: with a trusted latency model (linfa least squares of ITL p95 on
    /// batch size over the lookback's buckets, `forecasting::latency_model`), the largest batch whose
    /// predicted p95 plus a safety margin keeps the SLO, moved only by at least 10 % (hysteresis); until the
    /// model is trusted (too few distinct batch sizes), a step: a quarter down above the SLO, a quarter up
    /// below 60 % of it while requests queue, which also produces the distinct batch sizes the model needs.
    /// A command goes out only on change.
    pub(super) async fn rebatch(
        &self,
        p: &StoredPolicy,
        nodes: &[String],
        now: DateTime<Utc>,
        decision_id: Option<i64>,
    ) -> Result<(), ControlError> {
        let Some(r) = &p.spec.rebatch else { return Ok(()) };
        if nodes.is_empty() {
            return Ok(());
        }
        let deployment = p.spec.deployment();
        let bucket = i64::from(self.settings.bucket_secs);
        let (lat, observations) = {
            let snap = self.snapshot.read().await;
            (snap.latency(&deployment, now.timestamp() - bucket * 3), snap.batch_observations(&deployment))
        };
        let current = self.policies.with(p.id, |st| st.batch_size);
        let start = current.unwrap_or(r.min_batch_size.max(r.max_batch_size / 2));
        let slo_s = r.itl_slo_ms / 1000.0;
        let model = forecasting::latency_model::LatencyModel::fit(&observations).ok().filter(|m| m.trusted);
        let (next, how) = match &model {
            Some(m) => {
                let rec = m.recommend(slo_s, (r.min_batch_size, r.max_batch_size), start, 0.1);
                (rec.batch_size, format!("latency model: {}", rec.reason))
            }
            None => {
                let next = match lat.itl_p95_s {
                    Some(l) if l > slo_s => ((f64::from(start) * 0.75).floor() as u32).max(r.min_batch_size),
                    Some(l) if l < 0.6 * slo_s && lat.queue_depth > 0.5 => {
                        ((f64::from(start) * 1.25).ceil() as u32).min(r.max_batch_size)
                    }
                    _ => start,
                };
                (next, format!("step ({} observations, model not trusted yet)", observations.len()))
            }
        };
        let next = next.clamp(r.min_batch_size, r.max_batch_size);
        if current == Some(next) {
            return Ok(());
        }
        let Some(fence) = self.leadership.fence() else {
            tracing::warn!(deployment = %deployment, "rebatch not sent: this replica does not lead the control loop");
            return Ok(());
        };
        match self
            .actuators
            .agents
            .rebatch(nodes, &deployment, next, r.max_queue_delay_us, decision_id, Some(fence))
            .await
        {
            Ok(n) => {
                tracing::info!(deployment = %deployment, batch = next, nodes = n, how = %how, "rebatch queued");
                self.policies.with(p.id, |st| st.batch_size = Some(next));
            }
            Err(e) => tracing::warn!(error = %e, "rebatch failed"),
        }
        Ok(())
    }
}
