//! The control loop: read -> decide (with `forecasting`) -> act -> record.
//!
//! One testable step, [`ControlLoop::tick`], driven by an injected `now`; [`ControlLoop::run_until_stopped`]
//! wraps it with leader election (a Postgres advisory lock held on a dedicated connection), so with several
//! server replicas exactly one acts, and leadership moves as soon as the leader's connection drops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::actuators::Actuators;
use crate::config::ControlSettings;
use crate::db;
use crate::db::control::NewDecision;
use crate::telemetry::Metrics;

mod actuation;
pub mod crd;
mod error;
pub mod leadership;
mod plan;
pub mod preview;
pub mod replay;
pub mod shadow;
pub mod snapshot;
mod state;

pub use error::ControlError;
use leadership::Leadership;
use plan::{Action, Plan};
pub use plan::{fill_gaps, single_node_fault};
use snapshot::Snapshot;
use state::PolicyStates;

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
