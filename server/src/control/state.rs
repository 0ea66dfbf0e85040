//! What the leader keeps per policy between ticks, in one place: the scaling engine, the actuation backoff,
//! what it last applied, the recording and re-send clocks, a shadow's fleet and the current batch size.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use forecasting::engine::ScalingEngine;
use uuid::Uuid;

/// Consecutive actuation failures of a policy and when the next attempt may happen.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    pub(super) next_attempt: DateTime<Utc>,
}

/// A policy's scaling engine and the policy version it was built for.
pub(super) struct Slot {
    pub(super) version: i32,
    pub(super) engine: ScalingEngine,
}

/// When a policy's last decision was recorded, with its replicas and winner.
pub(super) type Recorded = (DateTime<Utc>, u32, String);

/// One policy's state.
#[derive(Default)]
pub(super) struct PolicyState {
    /// The scaling engine (demand history, forecaster, anomaly detector, decision state). Taken out while the
    /// policy steps, so one policy's refit never holds the map.
    pub(super) engine: Option<Slot>,
    /// Actuation backoff after failures.
    pub(super) backoff: Option<Backoff>,
    /// Replicas this leader last applied.
    pub(super) applied: Option<u32>,
    /// The fleet a shadow policy would run: its last decision (it never acts, so its engine is told its own
    /// decisions were applied and sees this count, not the active policy's, as its replicas).
    pub(super) shadow_fleet: Option<u32>,
    /// The latest stored forecast.
    pub(super) forecast_id: Option<i64>,
    /// When the last decision was recorded.
    pub(super) last_recorded: Option<Recorded>,
    /// When an unchanged agent-group count was last re-sent.
    pub(super) last_resend: Option<DateTime<Utc>>,
    /// Batch size last sent to the deployment's agents.
    pub(super) batch_size: Option<u32>,
}

/// Every policy's state, behind one lock held only for field updates (never across an await or a refit).
#[derive(Default)]
pub(super) struct PolicyStates(Mutex<HashMap<Uuid, PolicyState>>);

impl PolicyStates {
    /// Runs `f` on `policy`'s state (created empty when new).
    pub(super) fn with<R>(&self, policy: Uuid, f: impl FnOnce(&mut PolicyState) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(policy).or_default())
    }

    /// Drops the state of policies for which `live` is false (deleted policies leave nothing behind).
    pub(super) fn retain(&self, live: impl Fn(&Uuid) -> bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| live(id));
    }
}
