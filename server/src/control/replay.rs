//! Replays stored history through a policy's [`ScalingEngine`]: the policy preview ("the last 24 h replayed
//! through the real engine, forecasts included"). Same engine, same spec as the live loop; only the clock and
//! the fleet are simulated: the replayed fleet runs what the engine asks for at once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use forecasting::engine::{Load, Observation, ScalingEngine};
use sqlx::PgPool;

use crate::db;
use crate::db::series::Point;
use crate::domain::policy::{Metric, PolicySpec, TargetKind};

/// One replayed bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayStep {
    /// Bucket start, Unix seconds.
    pub at_secs: i64,
    /// The engine's demand estimate (capacity sizing) or the first metric's total.
    pub signal: Option<f64>,
    /// Replicas before the decision.
    pub current: u32,
    /// Replicas decided.
    pub desired: u32,
    /// What decided.
    pub winner: String,
    /// Why, in words.
    pub reason: String,
    /// The forecast's upper bound over the horizon, if one was made.
    pub forecast_upper: Option<f64>,
}

/// A replay: one step per bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// Steps, oldest first.
    pub steps: Vec<ReplayStep>,
    /// Bucket length, seconds.
    pub bucket_secs: u32,
    /// Replica-hours the replayed fleet ran.
    pub replica_hours: f64,
}

/// Replays `spec` over `[from, to)` of stored data at `bucket_secs`, starting from `start_replicas`.
/// `default_down_window_secs` is the server's scale-down window for specs that set none.
pub async fn replay(
    pool: &PgPool,
    spec: &PolicySpec,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: u32,
    start_replicas: u32,
    default_down_window_secs: u32,
) -> Result<Replay, sqlx::Error> {
    let group = (spec.target.kind == TargetKind::AgentGroup).then_some(spec.target.name.as_str());
    let deployment = spec.deployment();
    let read = |m: Metric| db::series::deployment_metric(pool, &deployment, group, m, from, to, bucket_secs);
    let by_bucket =
        |pts: Vec<Point>| -> HashMap<i64, f64> { pts.into_iter().map(|p| (p.bucket_secs, p.total)).collect() };
    let targets = spec.targets();
    let mut metric_series = Vec::with_capacity(targets.len());
    for t in &targets {
        metric_series.push(by_bucket(read(t.metric).await?.0));
    }
    let engine_spec = spec.engine_spec(f64::from(bucket_secs), default_down_window_secs);
    let (busy, queue) = if engine_spec.capacity.is_some() {
        (by_bucket(read(Metric::GpuUtilization).await?.0), by_bucket(read(Metric::QueueDepthPerReplica).await?.0))
    } else {
        (HashMap::new(), HashMap::new())
    };
    let gpus = engine_spec.capacity.as_ref().map_or(1.0, |c| c.gpus_per_replica);
    // The replay covers the buckets from the first with data to `to`.
    let first = busy.keys().chain(metric_series.iter().flat_map(|m| m.keys())).min().copied();
    let Some(first) = first else { return Ok(Replay { bucket_secs, ..Replay::default() }) };
    let b = i64::from(bucket_secs.max(1));
    let mut engine = ScalingEngine::new(engine_spec);
    let mut current = start_replicas.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
    let mut out = Replay { bucket_secs, ..Replay::default() };
    let mut t = first;
    while t < to.timestamp() {
        let obs = Observation {
            // The end of the bucket: its data is complete.
            now_secs: t + b,
            ready: current,
            pending: 0,
            metrics: metric_series.iter().map(|m| m.get(&t).copied()).collect(),
            slos: vec![],
            load: Load {
                busy_replicas: busy.get(&t).map(|u| u / 100.0 / gpus),
                queue_depth: queue.get(&t).copied(),
                // Not kept in the rollups: the queue's work is not estimated in a replay.
                requests_per_s: None,
            },
            single_node_fault: None,
            bucket_complete: true,
        };
        let step = engine.step(&obs);
        let desired = step.decision.desired;
        engine.applied(obs.now_secs, current, desired);
        out.steps.push(ReplayStep {
            at_secs: t,
            signal: step.demand.or(obs.metrics.first().copied().flatten()),
            current,
            desired,
            winner: step.decision.winner,
            reason: step.decision.reason,
            forecast_upper: step.forecast_upper,
        });
        current = desired;
        out.replica_hours += f64::from(current) * b as f64 / 3600.0;
        t += b;
    }
    Ok(out)
}
