//! The shadow report: what each policy of a deployment, the active one and its shadows, would have cost over
//! the last 24 h.
//!
//! A shadow policy (`mode: shadow`) is run by the leader through its own [`forecasting::engine::ScalingEngine`]
//! every tick on live data and its decisions are recorded, but nothing acts on them, so their cost cannot be
//! observed. It is estimated instead: each policy's recorded replica path (the count in force at the end of
//! every step) is replayed against the demand the fleet actually saw through the EVAL fluid model
//! ([`fleetpilot_eval::backtest::price_path`]), giving GPU-hours, money at the configured prices, an SLO attainment
//! estimate (the share of work that waited no longer than the delay budget) and actions per hour. The active
//! policy goes through the same model with the same demand, so the rows compare like with like.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use fleetpilot_eval::backtest::{Profile, ReplicaPath, price_path};
use forecasting::pricing::PriceTable;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::db::policies::StoredPolicy;
use crate::domain::policy::{Metric, PolicyMode, TargetKind};

/// How far back the report looks.
pub const REPORT_SECS: i64 = 24 * 3600;
/// The report's step: one minute, the resolution of the stored rollups.
pub const STEP_SECS: i64 = 60;

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// Reading the store failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The fluid model refused its input (never expected: every input is built here).
    #[error("counterfactual model: {0}")]
    Model(#[from] fleetpilot_eval::backtest::BacktestError),
}

/// What one policy's recorded decisions would have cost.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCost {
    /// Policy.
    pub policy_id: Uuid,
    /// Its name.
    pub name: String,
    /// `active` or `shadow`.
    pub mode: PolicyMode,
    /// Decisions recorded in the window.
    pub decisions: usize,
    /// GPU-hours its replicas would have run (started replicas count from the moment they were asked for).
    pub gpu_hours: f64,
    /// `gpu_hours` at the deployment's price per GPU-hour.
    pub cost: f64,
    /// Estimated share of the work served within the delay budget, 0..=1.
    pub slo_attainment: f64,
    /// Changes of its replica count per hour.
    pub actions_per_hour: f64,
    /// Most replicas it asked for.
    pub peak_replicas: u32,
    /// `gpu_hours` over the active policy's (absent for the active policy itself, or without one).
    pub gpu_hours_vs_active: Option<f64>,
    /// Its replica path: (step start, Unix ms; replicas in force at the step's end), for charts.
    #[serde(skip)]
    pub path: Vec<(i64, u32)>,
}

/// The report for one deployment.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The policy the report was asked for.
    pub policy_id: Uuid,
    /// The serving deployment its policies scale.
    pub deployment: String,
    /// Window start (the first step with data).
    pub from: DateTime<Utc>,
    /// Window end (the end of the step in progress).
    pub to: DateTime<Utc>,
    /// Step of the replay, seconds.
    pub step_secs: i64,
    /// Steps replayed.
    pub steps: usize,
    /// Steps whose demand is the engine's estimate (served work plus queue growth, recorded with decisions).
    pub demand_steps_estimated: usize,
    /// Steps whose demand is the GPUs' busy fraction only (no recorded estimate; queued work not counted).
    pub demand_steps_from_utilization: usize,
    /// GPU model the deployment's replicas run on, if known.
    pub gpu_model: Option<String>,
    /// Price of one GPU-hour used.
    pub price_per_gpu_hour: f64,
    /// Currency of `cost`.
    pub currency: String,
    /// Model settings: cold start, seconds.
    pub cold_start_secs: f64,
    /// Model settings: delay budget, seconds.
    pub queue_delay_slo_secs: f64,
    /// The active policy first (if any), then the shadows by name.
    pub policies: Vec<PolicyCost>,
    /// Policies of the deployment with no decision recorded yet (nothing to price).
    pub without_decisions: Vec<String>,
}

/// The deployment's policies to report on: the active one first, then the shadows by name, and `asked` itself
/// wherever it falls (a second active policy or a dry run is reported too when asked about).
fn members<'a>(all: &'a [StoredPolicy], asked: &'a StoredPolicy) -> Vec<&'a StoredPolicy> {
    let deployment = asked.spec.deployment();
    let mut out: Vec<&StoredPolicy> = db::policies::active_for(all, &deployment).into_iter().collect();
    let mut shadows: Vec<&StoredPolicy> =
        all.iter().filter(|p| p.spec.is_shadow() && p.spec.deployment() == deployment).collect();
    shadows.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    out.extend(shadows);
    if !out.iter().any(|p| p.id == asked.id) {
        out.push(asked);
    }
    out
}

/// The report for `asked`'s deployment over the 24 h before `now`.
pub async fn report(
    pool: &PgPool,
    all: &[StoredPolicy],
    asked: &StoredPolicy,
    now: DateTime<Utc>,
    pricing: &PriceTable,
) -> Result<ShadowReport, ShadowError> {
    let members = members(all, asked);
    // The model's settings come from the policy that acts (the fleet's cold start and budget are the
    // deployment's, whichever policy looks at them), else from the asked one.
    let lead = members.first().copied().unwrap_or(asked);
    let capacity = lead.spec.capacity();
    let gpus = capacity.as_ref().map_or(1.0, |c| c.gpus_per_replica).max(0.01);
    let deployment = asked.spec.deployment();
    // The step in progress is included (a new shadow is priced from its first decisions on); its end is the
    // next step boundary, and what is in force now holds until then.
    let to_secs = (now.timestamp().div_euclid(STEP_SECS) + 1) * STEP_SECS;
    let from_secs = to_secs - REPORT_SECS;
    let (from, to) =
        (DateTime::from_timestamp(from_secs, 0).unwrap_or(now), DateTime::from_timestamp(to_secs, 0).unwrap_or(now));
    let ids: Vec<Uuid> = members.iter().map(|p| p.id).collect();
    let group = (lead.spec.target.kind == TargetKind::AgentGroup).then_some(lead.spec.target.name.as_str());
    let (points, (util, _), gpu_model) = tokio::try_join!(
        db::control::decision_paths(pool, &ids, from, to),
        db::series::deployment_metric(pool, &deployment, group, Metric::GpuUtilization, from, to, STEP_SECS as u32),
        db::control::deployment_gpu_model(pool, &deployment),
    )?;
    let n = usize::try_from((to_secs - from_secs) / STEP_SECS).unwrap_or(0);
    let step_of = |t: i64| -> Option<usize> {
        (t >= from_secs && t < to_secs).then(|| usize::try_from((t - from_secs) / STEP_SECS).ok()).flatten()
    };

    // Demand per step: the engines' own estimates where recorded, else the GPUs' busy replicas.
    let mut estimate = vec![(0.0_f64, 0u32); n];
    for p in &points {
        if let (Some(i), Some(d)) = (step_of(p.decided_at.timestamp()), p.demand.filter(|d| d.is_finite())) {
            estimate[i].0 += d.max(0.0);
            estimate[i].1 += 1;
        }
    }
    let mut busy: Vec<Option<f64>> = vec![None; n];
    for u in &util {
        if let Some(i) = step_of(u.bucket_secs) {
            busy[i] = Some((u.total / 100.0 / gpus).max(0.0));
        }
    }
    let seen = |i: usize| estimate[i].1 > 0 || busy[i].is_some();
    let first_decision = points.iter().filter_map(|p| step_of(p.decided_at.timestamp())).min();
    let first = (0..n).find(|&i| seen(i)).into_iter().chain(first_decision).min();
    let price = pricing.price(gpu_model.as_deref().unwrap_or(""));
    let profile = Profile {
        cold_start_s: f64::from(lead.spec.cold_start_secs),
        gpus_per_replica: gpus,
        slo_s: capacity.as_ref().map_or(Profile::STANDARD.slo_s, |c| c.queue_delay_slo_secs),
        step_s: STEP_SECS as f64,
        ..Profile::STANDARD
    };
    let mut out = ShadowReport {
        policy_id: asked.id,
        deployment,
        from,
        to,
        step_secs: STEP_SECS,
        steps: 0,
        demand_steps_estimated: 0,
        demand_steps_from_utilization: 0,
        gpu_model,
        price_per_gpu_hour: price,
        currency: pricing.currency.clone(),
        cold_start_secs: profile.cold_start_s,
        queue_delay_slo_secs: profile.slo_s,
        policies: Vec::new(),
        without_decisions: Vec::new(),
    };
    let Some(first) = first else {
        out.without_decisions = members.iter().map(|p| p.spec.name.clone()).collect();
        return Ok(out);
    };
    out.from = from + Duration::seconds(first as i64 * STEP_SECS);
    let mut demand = Vec::with_capacity(n - first);
    let mut last = 0.0;
    for i in first..n {
        let d = if estimate[i].1 > 0 {
            out.demand_steps_estimated += 1;
            estimate[i].0 / f64::from(estimate[i].1)
        } else if let Some(b) = busy[i] {
            out.demand_steps_from_utilization += 1;
            b
        } else {
            last
        };
        demand.push(d);
        last = d;
    }
    out.steps = demand.len();
    let start_secs = from_secs + first as i64 * STEP_SECS;

    let mut by_policy: HashMap<Uuid, Vec<&db::control::PathPoint>> = HashMap::new();
    for p in &points {
        by_policy.entry(p.policy_id).or_default().push(p);
    }
    let active_id = db::policies::active_for(all, &out.deployment).map(|p| p.id);
    let mut active_gpu_hours = None;
    for m in members {
        let Some(pts) = by_policy.get(&m.id).filter(|v| !v.is_empty()) else {
            out.without_decisions.push(m.spec.name.clone());
            continue;
        };
        let (path, initial) = replica_path(pts, start_secs, demand.len());
        let r = price_path(&demand, &profile, &ReplicaPath { name: m.spec.name.clone(), initial, desired: path })?;
        let s = r.summary;
        let decisions = pts.iter().filter(|p| p.decided_at.timestamp() >= start_secs).count();
        let is_active = Some(m.id) == active_id;
        if is_active {
            active_gpu_hours = Some(s.gpu_hours);
        }
        out.policies.push(PolicyCost {
            policy_id: m.id,
            name: m.spec.name.clone(),
            mode: m.spec.mode,
            decisions,
            gpu_hours: s.gpu_hours,
            cost: s.gpu_hours * price,
            slo_attainment: s.slo_attainment,
            actions_per_hour: s.actions_per_hour,
            peak_replicas: s.peak_replicas,
            gpu_hours_vs_active: active_gpu_hours.filter(|a| !is_active && *a > 0.0).map(|a| s.gpu_hours / a),
            path: r.rows.iter().map(|row| ((start_secs + row.step as i64 * STEP_SECS) * 1000, row.desired)).collect(),
        });
    }
    Ok(out)
}

/// A policy's replica path over `steps` steps from `start_secs`: the count in force at the end of each step
/// (its last decision by then), and the count in force at the start (its last decision before; else what its
/// first decision found running).
fn replica_path(points: &[&db::control::PathPoint], start_secs: i64, steps: usize) -> (Vec<u32>, u32) {
    let count = |v: i32| u32::try_from(v.max(0)).unwrap_or(0);
    let mut it = points.iter().peekable();
    let mut in_force = None;
    while let Some(p) = it.next_if(|p| p.decided_at.timestamp() < start_secs) {
        in_force = Some(count(p.desired_replicas));
    }
    let initial = in_force.or_else(|| it.peek().map(|p| count(p.current_replicas))).unwrap_or(0);
    let mut current = initial;
    let mut path = Vec::with_capacity(steps);
    for i in 0..steps {
        let end = start_secs + (i as i64 + 1) * STEP_SECS;
        while let Some(p) = it.next_if(|p| p.decided_at.timestamp() < end) {
            current = count(p.desired_replicas);
        }
        path.push(current);
    }
    (path, initial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, current: i32, desired: i32) -> db::control::PathPoint {
        db::control::PathPoint {
            policy_id: Uuid::nil(),
            decided_at: DateTime::from_timestamp(at, 0).unwrap(),
            current_replicas: current,
            desired_replicas: desired,
            demand: None,
        }
    }

    #[test]
    fn a_path_holds_each_decision_until_the_next_and_starts_from_the_one_in_force() {
        let pts = [point(50, 2, 3), point(130, 3, 5), point(150, 5, 4), point(300, 4, 6)];
        let refs: Vec<_> = pts.iter().collect();
        // Steps start at 60, 120, 180, 240: the decision at 50 is in force at the start.
        let (path, initial) = replica_path(&refs, 60, 4);
        assert_eq!(initial, 3);
        assert_eq!(path, vec![3, 4, 4, 4]);
    }

    #[test]
    fn without_an_earlier_decision_the_path_starts_from_what_the_first_found() {
        let pts = [point(130, 2, 5)];
        let refs: Vec<_> = pts.iter().collect();
        let (path, initial) = replica_path(&refs, 60, 3);
        assert_eq!(initial, 2);
        assert_eq!(path, vec![2, 5, 5]);
    }
}
