//! The control loop: read -> decide (with `forecasting`) -> act -> record.
//!
//! One testable step, [`ControlLoop::tick`], driven by an injected `now`; [`ControlLoop::run_until_stopped`]
//! wraps it with leader election (a Postgres advisory lock held on a dedicated connection), so with several
//! server replicas exactly one acts, and leadership moves as soon as the leader's connection drops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use forecasting::engine::{Load, Observation, ScalingEngine};
use futures_util::StreamExt as _;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::actuators::Actuators;
use crate::config::ControlSettings;
use crate::db;
use crate::db::control::NewDecision;
use crate::db::policies::StoredPolicy;
use crate::db::series::Point;
use crate::domain::policy::{Metric, TargetKind};
use crate::telemetry::Metrics;

mod actuation;
pub mod crd;
mod error;
pub mod leadership;
pub mod preview;
pub mod replay;
pub mod shadow;
pub mod snapshot;
mod state;

pub use error::ControlError;
use leadership::Leadership;
use snapshot::Snapshot;
use state::{PolicyStates, Slot};

/// An unchanged hold (same replicas, same winner) is recorded again at most this often.
pub const RECORD_HOLD_SECS: i64 = 30;
/// Longest wait between two attempts to act on a failing target.
pub const MAX_BACKOFF_SECS: i64 = 300;

/// What one policy's step did.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    /// Policy.
    pub policy_id: Uuid,
    /// Recorded decision (`None`: an unchanged hold not recorded again, see [`RECORD_HOLD_SECS`]).
    pub decision_id: Option<i64>,
    /// Replicas before.
    pub current: u32,
    /// Replicas decided.
    pub desired: u32,
    /// Whether the target now runs `desired` (acted, or nothing to do).
    pub applied: bool,
    /// Why acting failed.
    pub error: Option<String>,
}

/// What a tick did.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    /// One entry per policy that could be evaluated.
    pub policies: Vec<PolicyOutcome>,
    /// Policies whose step failed, with the error.
    pub failures: Vec<(Uuid, String)>,
}

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
struct Plan {
    policy: StoredPolicy,
    current: u32,
    decision: forecasting::decision::Decision,
    inputs: serde_json::Value,
    forecast_id: Option<i64>,
    forecast_upper: Option<f64>,
    nodes: Vec<String>,
    /// An operator override this decision applies for the first time.
    applies_override: Option<i64>,
}

/// What a decision needs.
enum Action {
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

/// The control loop.
pub struct ControlLoop {
    pool: PgPool,
    settings: ControlSettings,
    actuators: Actuators,
    metrics: Metrics,
    /// Everything the leader keeps per policy between ticks (engine, backoff, what it applied, ...).
    policies: PolicyStates,
    /// The fleet's recent buckets.
    snapshot: tokio::sync::RwLock<Snapshot>,
    /// Signalled when samples are committed (by any replica).
    wake: Option<Arc<tokio::sync::Notify>>,
    leadership: Arc<Leadership>,
}

impl ControlLoop {
    /// A loop over `pool` acting through `actuators`.
    pub fn new(pool: PgPool, settings: ControlSettings, actuators: Actuators, metrics: Metrics) -> Self {
        let pool_for_leadership = pool.clone();
        Self {
            pool,
            settings,
            actuators,
            metrics,
            policies: PolicyStates::default(),
            snapshot: tokio::sync::RwLock::new(Snapshot::default()),
            wake: None,
            leadership: Leadership::new(pool_for_leadership),
        }
    }

    /// Ticks as soon as `wake` is signalled (new samples), at most every `min_tick_gap_secs`, and at least
    /// every `tick_secs`.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// This replica's leadership (shared with the leader-only tasks).
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership.clone()
    }

    /// Takes the leader lock and starts a term (see [`Leadership::take`]); for callers that tick by hand, such
    /// as `bench tick`. Keep the returned connection for as long as ticks should act.
    pub async fn take_leadership(&self) -> Option<sqlx::PgConnection> {
        let conn = self.leadership.take(&leadership::holder_name()).await;
        if conn.is_some() {
            self.metrics.leader.set(1);
        }
        conn
    }

    /// Evaluates every live policy once, as of `now`: refresh the fleet snapshot (two queries for the
    /// buckets that changed), plan every policy (decide with `forecasting`), record every decision in one
    /// statement, act on those that need it (concurrently), record how acting went, rebatch.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<TickOutcome, ControlError> {
        let started = Instant::now();
        let mut out = TickOutcome::default();
        let policies = db::policies::list(&self.pool).await?;
        // Operator overrides (one-click actions) in force: applied and held here, by the leader.
        let overrides: HashMap<Uuid, db::overrides::Override> =
            db::overrides::active(&self.pool, now).await?.into_iter().map(|o| (o.policy_id, o)).collect();
        {
            // Deleted policies leave no engine behind.
            let live: std::collections::HashSet<Uuid> = policies.iter().map(|p| p.id).collect();
            self.policies.retain(|id| live.contains(id));
        }
        self.snapshot
            .write()
            .await
            .refresh(&self.pool, now, self.settings.bucket_secs, self.settings.lookback_secs)
            .await?;
        let plans: Vec<(Uuid, Result<Plan, ControlError>)> = {
            let snapshot = self.snapshot.read().await;
            futures_util::stream::iter(policies)
                .map(|p| {
                    let snapshot = &*snapshot;
                    let ov = overrides.get(&p.id).cloned();
                    async move {
                        let span = tracing::info_span!("policy", name = %p.spec.name, version = p.version);
                        let id = p.id;
                        (id, self.plan(p, snapshot, now, ov).instrument(span).await)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await
        };
        let mut planned = Vec::with_capacity(plans.len());
        for (id, r) in plans {
            match r {
                Ok(plan) => planned.push(plan),
                Err(e) => {
                    tracing::warn!(policy = %id, error = %e, "policy step failed");
                    out.failures.push((id, e.to_string()));
                }
            }
        }
        // What each decision needs: nothing (recorded as applied), dry run, a backoff, or an actuation.
        let actions: Vec<Action> = planned.iter().map(|pl| self.action(pl, now)).collect();
        let targets: Vec<String> = planned.iter().map(|pl| pl.policy.spec.target_label()).collect();
        // Every change and every attempt is recorded; an unchanged hold only when its reason changes or once
        // per [`RECORD_HOLD_SECS`], so a loop woken every half second does not bury the timeline in repeats.
        let record: Vec<bool> = planned.iter().zip(&actions).map(|(pl, a)| self.should_record(pl, a, now)).collect();
        let rows: Vec<(NewDecision<'_>, bool)> = planned
            .iter()
            .zip(&actions)
            .zip(&targets)
            .zip(&record)
            .filter(|(_, r)| **r)
            .map(|(((pl, a), target), _)| {
                let d = NewDecision {
                    policy_id: pl.policy.id,
                    policy_version: pl.policy.version,
                    decided_at: now,
                    target,
                    current: pl.current,
                    decision: &pl.decision,
                    inputs: pl.inputs.clone(),
                    forecast_id: pl.forecast_id,
                    dry_run: pl.policy.spec.dry_run || pl.policy.spec.is_shadow(),
                };
                (d, matches!(a, Action::Nothing))
            })
            .collect();
        let inserted = db::control::insert_decisions(&self.pool, &rows).await?;
        drop(rows);
        let mut inserted = inserted.into_iter();
        let ids: Vec<Option<i64>> = record.iter().map(|r| if *r { inserted.next() } else { None }).collect();
        for (pl, _) in planned.iter().zip(&record).filter(|(_, r)| **r) {
            self.policies.with(pl.policy.id, |st| {
                st.last_recorded = Some((now, pl.decision.desired, pl.decision.winner.clone()));
            });
        }
        // Owned work items: a stream over borrowed items does not satisfy `tokio::spawn`'s lifetime bounds.
        let work: Vec<(usize, Option<String>)> = actions
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Action::Scale => Some((i, None)),
                Action::BackingOff(msg) => Some((i, Some(msg.clone()))),
                Action::Nothing | Action::DryRun | Action::Shadow => None,
            })
            .collect();
        let planned_ref = &planned;
        let ids_ref = &ids;
        let acted: Vec<(usize, bool, Option<String>)> = futures_util::stream::iter(work)
            .map(|(i, backoff)| async move {
                match backoff {
                    Some(msg) => (i, false, Some(msg)),
                    None => match ids_ref[i] {
                        Some(id) => {
                            let (ok, err) = self.act(&planned_ref[i], id, now).await;
                            (i, ok, err)
                        }
                        None => (i, false, Some("the decision could not be recorded".into())),
                    },
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let marks: Vec<(i64, bool, Option<String>)> =
            acted.iter().filter_map(|(i, ok, e)| ids[*i].map(|id| (id, *ok, e.clone()))).collect();
        db::control::mark_decisions(&self.pool, &marks).await?;
        let mut result: HashMap<usize, (bool, Option<String>)> =
            acted.into_iter().map(|(i, ok, e)| (i, (ok, e))).collect();
        for (i, (pl, a)) in planned.iter().zip(&actions).enumerate() {
            let (applied, error) = match a {
                Action::Nothing => {
                    self.metrics.decisions.with_label_values(&["unchanged"]).inc();
                    (true, None)
                }
                Action::DryRun => {
                    self.metrics.decisions.with_label_values(&["dry_run"]).inc();
                    (false, None)
                }
                Action::Shadow => {
                    self.metrics.decisions.with_label_values(&["shadow"]).inc();
                    (false, None)
                }
                _ => result.remove(&i).unwrap_or((false, None)),
            };
            // An override is applied once its count is in place (or recorded, for a dry-run policy); until then
            // every tick tries again.
            if let Some(oid) = pl.applies_override
                && (applied || matches!(a, Action::DryRun))
                && let Err(e) = db::overrides::mark_applied(&self.pool, oid, ids[i], now).await
            {
                tracing::warn!(policy = %pl.policy.spec.name, error = %e, "recording an applied override failed");
            }
            if !pl.policy.spec.dry_run
                && !pl.policy.spec.is_shadow()
                && let Err(e) = self.rebatch(&pl.policy, &pl.nodes, now, ids[i]).await
            {
                tracing::warn!(policy = %pl.policy.spec.name, error = %e, "rebatch failed");
            }
            out.policies.push(PolicyOutcome {
                policy_id: pl.policy.id,
                decision_id: ids[i],
                current: pl.current,
                desired: pl.decision.desired,
                applied,
                error,
            });
        }
        // Per-policy gauges for Grafana: this tick's decisions, and no series left for deleted policies.
        let names: std::collections::HashSet<&str> = planned.iter().map(|pl| pl.policy.spec.name.as_str()).collect();
        for gone in self.metrics.recorded_policies().into_iter().filter(|n| !names.contains(n.as_str())) {
            self.metrics.forget_policy(&gone);
        }
        // A shadow's desired replicas are published beside the active policy of its deployment (its own name
        // when there is none); pairs that no longer exist lose their series.
        let active: HashMap<String, &str> = planned
            .iter()
            .filter(|pl| !pl.policy.spec.is_shadow())
            .map(|pl| (pl.policy.spec.deployment(), pl.policy.spec.name.as_str()))
            .collect();
        let mut shadows: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for pl in planned.iter().filter(|pl| pl.policy.spec.is_shadow()) {
            let shadow = pl.policy.spec.name.as_str();
            let of = active.get(&pl.policy.spec.deployment()).copied().unwrap_or(shadow);
            self.metrics.record_shadow(of, shadow, pl.decision.desired);
            shadows.entry(of).or_default().insert(shadow);
        }
        for policy in self.metrics.recorded_policies() {
            for s in self.metrics.recorded_shadows(&policy) {
                if !shadows.get(policy.as_str()).is_some_and(|set| set.contains(s.as_str())) {
                    self.metrics.forget_shadow(&policy, &s);
                }
            }
        }
        for pl in planned.iter().filter(|pl| !pl.policy.spec.is_shadow()) {
            self.metrics.record_policy(&crate::telemetry::PolicyGauges {
                policy: &pl.policy.spec.name,
                current: pl.current,
                desired: pl.decision.desired,
                forecast_upper: pl.forecast_upper,
                winner: &pl.decision.winner,
            });
        }
        self.metrics.control_ticks.inc();
        self.metrics.control_tick_seconds.observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Whether a planned decision goes into the record (see [`RECORD_HOLD_SECS`]).
    fn should_record(&self, pl: &Plan, a: &Action, now: DateTime<Utc>) -> bool {
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
    async fn plan(
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
    fn action(&self, pl: &Plan, now: DateTime<Utc>) -> Action {
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

    /// Runs ticks every `tick_secs` while this replica holds the leader lock, until `shutdown` flips.
    pub async fn run_until_stopped(self, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_secs_f64(self.settings.tick_secs);
        let mut leader: Option<sqlx::PgConnection> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if leader.is_none() {
                leader = self.take_leadership().await;
                if leader.is_some() {
                    tracing::info!("this replica now leads the control loop");
                }
            } else if let Some(conn) = leader.as_mut() {
                // A broken leader connection means the lock is gone too.
                if db::ping(&mut *conn).await.is_err() {
                    tracing::warn!("lost the leader connection; stepping down");
                    leader = None;
                    self.metrics.leader.set(0);
                    self.leadership.end();
                }
            }
            let tick_started = Instant::now();
            if leader.is_some()
                && let Err(e) = self.tick(Utc::now()).await
            {
                tracing::warn!(error = %e, "control tick failed");
            }
            if leader.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(period.min(Duration::from_secs(2))) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // New samples wake the leader early, but never sooner than the gap after the last tick began.
            let woken = async {
                match &self.wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until((tick_started + period).into()) => {}
                _ = woken => {
                    let gap = Duration::from_secs_f64(self.settings.min_tick_gap_secs.max(0.0));
                    tokio::select! {
                        _ = tokio::time::sleep_until((tick_started + gap).into()) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
        if let Some(conn) = leader {
            self.leadership.end();
            let _ = sqlx::Connection::close(conn).await;
            self.metrics.leader.set(0);
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
