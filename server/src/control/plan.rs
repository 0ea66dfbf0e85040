//! Planning one policy's step: read its series from the snapshot, run its [`ScalingEngine`], and say what the
//! decision needs (record, act, back off). No side effect but the forecast stored when the engine refits.

use chrono::{DateTime, Utc};
use forecasting::engine::{Load, Observation, ScalingEngine};
use serde_json::json;

use super::snapshot::Snapshot;
use super::state::Slot;
use super::{ControlError, ControlLoop, RECORD_HOLD_SECS};
use crate::db;
use crate::db::policies::StoredPolicy;
use crate::db::series::Point;
use crate::domain::policy::{Metric, TargetKind};

/// Replicas of `deployment` (in `group`) that reported serving metrics in the latest fresh bucket.
fn serving_replicas(
    snapshot: &Snapshot,
    deployment: &str,
    group: Option<&str>,
    now: DateTime<Utc>,
    bucket: i64,
) -> Option<u32> {
    let (points, _) = snapshot.metric(deployment, group, Metric::QueueDepthPerReplica);
    points
        .last()
        .filter(|l| now.timestamp() - l.bucket_secs <= 3 * bucket && l.members > 0)
        .map(|l| u32::try_from(l.members).unwrap_or(u32::MAX))
}

/// One policy's decision before it is recorded and acted on.
pub(super) struct Plan {
    pub(super) policy: StoredPolicy,
    pub(super) current: u32,
    pub(super) decision: forecasting::decision::Decision,
    pub(super) inputs: serde_json::Value,
    pub(super) forecast_id: Option<i64>,
    pub(super) forecast_upper: Option<f64>,
    pub(super) nodes: Vec<String>,
    /// An operator override this decision applies for the first time.
    pub(super) applies_override: Option<i64>,
}

/// What a decision needs.
pub(super) enum Action {
    /// Nothing: the target already runs the desired count.
    Nothing,
    /// Recorded only.
    DryRun,
    /// Recorded only: a shadow policy, which never acts.
    Shadow,
    /// Not now: the target failed recently.
    BackingOff(String),
    /// Scale the target.
    Scale,
}

impl ControlLoop {
    /// Whether a planned decision goes into the record (see [`RECORD_HOLD_SECS`]).
    pub(super) fn should_record(&self, pl: &Plan, a: &Action, now: DateTime<Utc>) -> bool {
        if matches!(a, Action::Scale | Action::BackingOff(_)) {
            return true;
        }
        self.policies.with(pl.policy.id, |st| match &st.last_recorded {
            Some((at, desired, winner)) => {
                *desired != pl.decision.desired
                    || *winner != pl.decision.winner
                    || (now - *at).num_seconds() >= RECORD_HOLD_SECS
            }
            None => true,
        })
    }

    /// Reads (from the snapshot) and decides for one policy through its [`ScalingEngine`]; no side effect but
    /// the forecast it stores when the engine refits.
    pub(super) async fn plan(
        &self,
        p: StoredPolicy,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
        ov: Option<db::overrides::Override>,
    ) -> Result<Plan, ControlError> {
        let spec = &p.spec;
        let bucket = i64::from(self.settings.bucket_secs);
        let targets = spec.targets();
        let deployment = spec.deployment();
        let group = (spec.target.kind == TargetKind::AgentGroup).then_some(spec.target.name.as_str());
        let fresh_of =
            |points: &[Point]| points.last().copied().filter(|l| now.timestamp() - l.bucket_secs <= 3 * bucket);
        let (util_points, nodes) = snapshot.metric(&deployment, group, Metric::GpuUtilization);
        let mut observed = Vec::with_capacity(targets.len());
        let mut metric_totals = Vec::with_capacity(targets.len());
        let mut first_points = None;
        for t in &targets {
            let (pts, _) = snapshot.metric(&deployment, group, t.metric);
            let f = fresh_of(&pts);
            metric_totals.push(f.map(|l| l.total));
            observed.push(json!({ "metric": t.metric, "target": t.target, "total": f.map(|l| l.total), "members": f.map(|l| l.members) }));
            first_points.get_or_insert(pts);
        }
        let engine_spec =
            spec.engine_spec(f64::from(self.settings.bucket_secs), self.settings.scale_down_stabilization_secs);
        let capacity = engine_spec.capacity.clone();
        let gpus_per_replica = capacity.as_ref().map_or(1.0, |c| c.gpus_per_replica);
        let load = snapshot.load(&deployment, now.timestamp() - 3 * bucket);
        let fresh_util = fresh_of(&util_points);
        let load = Load {
            busy_replicas: fresh_util.map(|l| l.total / 100.0 / gpus_per_replica),
            queue_depth: load.map(|l| l.queue_sum),
            requests_per_s: load.map(|l| l.requests_sum),
        };

        // Current replicas: what the target says, else what this leader last applied, else the last applied
        // decision, else the policy's floor.
        let serving = serving_replicas(snapshot, &deployment, group, now, bucket);
        let (current, current_source) = match self.actuators.current(spec).await {
            Ok(Some(n)) => (n, "target"),
            Ok(None) | Err(_) => {
                let known = self.policies.with(p.id, |st| st.applied);
                match known {
                    Some(n) => (n, "last decision"),
                    None => match db::control::last_applied_replicas(&self.pool, p.id).await? {
                        Some(n) => (n, "last decision"),
                        // Nothing applied yet (an agent group has no scale subresource to read): the
                        // replicas seen serving, so a warm fleet is not mistaken for its floor.
                        None => match serving {
                            Some(n) => (n, "replicas serving"),
                            None => (spec.min_replicas.max(1), "policy minimum"),
                        },
                    },
                }
            }
        };
        // Replicas asked for but not serving yet are pending (cold start).
        let mut ready = serving.map_or(current, |s| s.min(current));
        // A shadow sees the fleet it would run (its own last decision, from the real count at its start), all
        // ready: it has no cold start to watch because nothing it decides happens.
        let (current, current_source) = if spec.is_shadow() {
            let own = self.policies.with(p.id, |st| *st.shadow_fleet.get_or_insert(current));
            ready = own;
            (own, "shadow fleet")
        } else {
            (current, current_source)
        };

        // Latency SLOs, worst replica over the last few buckets.
        let lat = snapshot.latency(&deployment, now.timestamp() - bucket * 3);
        let slo_values: Vec<Option<f64>> = engine_spec
            .slos
            .iter()
            .map(|s| match s.name.as_str() {
                "ttft_p95_ms" => lat.ttft_p95_s.map(|v| v * 1000.0),
                _ => lat.itl_p95_s.map(|v| v * 1000.0),
            })
            .collect();
        let lead_metric = targets.first().map(|t| t.metric);
        let single_node_fault =
            if (capacity.is_some() || lead_metric == Some(Metric::GpuUtilization)) && !nodes.is_empty() {
                let target = targets.first().filter(|t| t.metric == Metric::GpuUtilization).map_or(85.0, |t| t.target);
                single_node_fault(&snapshot.node_utilization(&nodes, now.timestamp() - bucket * 3), target)
            } else {
                None
            };

        let obs = Observation {
            now_secs: now.timestamp(),
            ready,
            pending: current - ready,
            metrics: metric_totals,
            slos: slo_values,
            load,
            single_node_fault,
            bucket_complete: false,
        };
        // The engine steps outside the map's lock (a refit is CPU work).
        let taken = self.policies.with(p.id, |st| st.engine.take());
        let mut slot = match taken {
            Some(mut s) => {
                if s.version != p.version {
                    s.engine.set_spec(engine_spec);
                    s.version = p.version;
                }
                s
            }
            None => {
                let mut engine = ScalingEngine::new(engine_spec);
                // A new leader starts from the snapshot's history, not from nothing.
                let history: Vec<f64> = if capacity.is_some() {
                    fill_gaps(&util_points, bucket).into_iter().map(|v| v / 100.0 / gpus_per_replica).collect()
                } else {
                    first_points.as_deref().map(|pts| fill_gaps(pts, bucket)).unwrap_or_default()
                };
                let last =
                    if capacity.is_some() { util_points.last() } else { first_points.as_ref().and_then(|p| p.last()) };
                if let Some(l) = last {
                    // The newest bucket is observed again by this step.
                    let n = history.len().saturating_sub(1);
                    engine.seed(l.bucket_secs - bucket, &history[..n]);
                }
                Slot { version: p.version, engine }
            }
        };
        let step = slot.engine.step(&obs);
        if spec.is_shadow() && step.decision.desired != current {
            // Nothing acts on a shadow's decision; it runs on as if it had.
            slot.engine.applied(now.timestamp(), current, step.decision.desired);
            self.policies.with(p.id, |st| st.shadow_fleet = Some(step.decision.desired));
        }
        self.policies.with(p.id, |st| st.engine = Some(slot));

        let forecast_id = match &step.refit {
            Some(r) => {
                let f = forecasting::forecast::DemandForecast {
                    point: r.point.clone(),
                    lower: r.lower.clone(),
                    upper: r.upper.clone(),
                    level: r.level,
                    model: r.kind,
                    period: r.period,
                };
                let id = db::control::insert_forecast(
                    &self.pool,
                    p.id,
                    now,
                    self.settings.bucket_secs,
                    &r.model,
                    &r.history,
                    &f,
                )
                .await?;
                self.policies.with(p.id, |st| st.forecast_id = Some(id));
                Some(id)
            }
            None => self.policies.with(p.id, |st| st.forecast_id),
        };
        let mut inputs = step.inputs;
        if let Some(o) = inputs.as_object_mut() {
            o.insert("observed".into(), json!(observed));
            o.insert("current_source".into(), json!(current_source));
            o.insert(
                "forecast".into(),
                json!({ "upper_max": step.forecast_upper, "quantile": spec.predictive.quantile, "mode": spec.predictive.mode, "refitted": step.refit.is_some() }),
            );
        }
        // An operator's override replaces the engine's count (which is still recorded, with its proposals): applied
        // on this tick, then held until its hold ends. The engine keeps learning meanwhile and is told the count
        // was applied, so it resumes from the fleet as it is.
        let mut decision = step.decision;
        let mut applies_override = None;
        if let Some(o) = ov.filter(|_| !spec.is_shadow()) {
            let (lo, hi) = (spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
            let replicas = u32::try_from(o.replicas).unwrap_or(0).clamp(lo, hi);
            let engine = format!("the engine wanted {} ({})", decision.desired, decision.winner);
            decision.reason = if o.applied_at.is_none() {
                applies_override = Some(o.id);
                format!(
                    "override {} by {}: {}; {replicas} replicas, held until {}; {engine}",
                    o.id,
                    o.created_by,
                    o.reason,
                    o.hold_until.format("%Y-%m-%d %H:%M:%S UTC")
                )
            } else {
                format!(
                    "held at {replicas} by override {} ({}) until {}; {engine}",
                    o.id,
                    o.created_by,
                    o.hold_until.format("%Y-%m-%d %H:%M:%S UTC")
                )
            };
            decision.desired = replicas;
            decision.winner = "override".into();
            decision.panic = false;
        }
        Ok(Plan {
            policy: p,
            current,
            decision,
            inputs,
            forecast_id,
            forecast_upper: step.forecast_upper,
            nodes,
            applies_override,
        })
    }

    /// What a planned decision needs.
    pub(super) fn action(&self, pl: &Plan, now: DateTime<Utc>) -> Action {
        let spec = &pl.policy.spec;
        if spec.is_shadow() {
            Action::Shadow
        } else if spec.dry_run {
            Action::DryRun
        } else if pl.decision.desired == pl.current && !self.resend_due(pl.policy.id, spec, now) {
            Action::Nothing
        } else if let Some(b) = self.backing_off(pl.policy.id, now) {
            Action::BackingOff(format!(
                "not sent: backing off after {} failed attempts; next try at {}",
                b.failures,
                b.next_attempt.format("%H:%M:%S")
            ))
        } else {
            Action::Scale
        }
    }
}

/// One node whose GPUs run far above their peers' (a hot spot or a fault, e.g. a stuck kernel) while the rest of
/// the fleet is near the target: the peer detector's evidence, in words; `None` otherwise.
pub fn single_node_fault(per_node: &[(String, f64)], target: f64) -> Option<String> {
    if per_node.len() < 3 {
        return None;
    }
    let series: Vec<[f64; 1]> = per_node.iter().map(|(_, v)| [*v]).collect();
    let refs: Vec<&[f64]> = series.iter().map(|s| s.as_slice()).collect();
    let report = forecasting::peers::score_peers(&refs, &forecasting::peers::PeerConfig::default()).ok()?;
    let outliers = report.outliers();
    let [i] = outliers.as_slice() else { return None };
    let ev = report.members.get(*i)?.evidence.as_ref()?;
    let others: Vec<f64> = per_node.iter().enumerate().filter(|(j, _)| j != i).map(|(_, (_, v))| *v).collect();
    let mean_others = others.iter().sum::<f64>() / others.len() as f64;
    (ev.offset > 0.0 && mean_others <= target * 1.1).then(|| {
        format!(
            "node {} runs at {:.0}% while its {} peers are at a median {:.0}%: a single-node fault, not fleet demand",
            per_node[*i].0,
            ev.value,
            others.len(),
            ev.peer_median
        )
    })
}

/// Expands points to one value per bucket from the first to the last, carrying the last value over gaps
/// (a silent agent is missing data, not zero demand).
pub fn fill_gaps(points: &[Point], bucket_secs: i64) -> Vec<f64> {
    let mut out = Vec::with_capacity(points.len());
    let mut prev: Option<Point> = None;
    for p in points {
        if let Some(q) = prev {
            let missing = ((p.bucket_secs - q.bucket_secs) / bucket_secs.max(1) - 1).clamp(0, 10_000);
            out.extend(std::iter::repeat_n(q.total, missing as usize));
        }
        out.push(p.total);
        prev = Some(*p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_node_among_calm_peers_is_a_fault_and_a_busy_fleet_is_not() {
        let nodes = |v: &[f64]| v.iter().enumerate().map(|(i, v)| (format!("n{i}"), *v)).collect::<Vec<_>>();
        let f = single_node_fault(&nodes(&[55.0, 58.0, 60.0, 57.0, 99.0]), 60.0);
        assert!(f.as_deref().is_some_and(|f| f.contains("node n4")), "{f:?}");
        assert_eq!(single_node_fault(&nodes(&[95.0, 96.0, 97.0, 94.0, 99.0]), 60.0), None);
        assert_eq!(single_node_fault(&nodes(&[55.0, 99.0]), 60.0), None);
    }

    #[test]
    fn gaps_carry_the_last_value() {
        let p = |b, t| Point { bucket_secs: b, total: t, members: 1 };
        assert_eq!(fill_gaps(&[p(0, 1.0), p(10, 2.0), p(40, 5.0)], 10), vec![1.0, 2.0, 2.0, 2.0, 5.0]);
        assert!(fill_gaps(&[], 10).is_empty());
    }
}
