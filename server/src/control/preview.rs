//! The policy preview as a service any interface can call: the last 24 hours of stored data replayed
//! minute by minute through the policy's scaling engine ([`super::replay`]: the engine the control loop
//! runs, forecasts and anomaly gating included), next to what the control loop actually decided. The
//! dashboard's preview page only draws and words what this returns.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::replay::{self, Replay, ReplayStep};
use crate::db;
use crate::db::dashboard::DecisionItem;
use crate::db::policies::StoredPolicy;

/// Bucket of the replay, seconds.
pub const BUCKET_SECS: u32 = 60;
/// How far back the preview replays.
pub const SPAN_HOURS: i64 = 24;
/// Most recorded decisions read to compare with.
const MAX_ACTUAL: i64 = 20_000;

/// Why there is no preview.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// No such policy.
    #[error("no policy {0}")]
    NotFound(Uuid),
    /// The store failed.
    #[error("preview: {0}")]
    Db(#[from] sqlx::Error),
}

/// A policy's preview over `[from, to)`.
#[derive(Debug)]
pub struct Preview {
    /// The policy previewed.
    pub policy: StoredPolicy,
    /// Start of the replay.
    pub from: DateTime<Utc>,
    /// End of the replay (now).
    pub to: DateTime<Utc>,
    /// The replayed decisions, one per bucket.
    pub replay: Replay,
    /// What the control loop decided over the same span, newest first.
    pub actual: Vec<DecisionItem>,
}

impl Preview {
    /// The replayed steps that changed the replica count.
    pub fn changes(&self) -> impl Iterator<Item = &ReplayStep> {
        self.replay.steps.iter().filter(|s| s.desired != s.current)
    }

    /// How many recorded decisions changed the replica count.
    pub fn actual_changes(&self) -> usize {
        self.actual.iter().filter(|d| d.desired_replicas != d.current_replicas).count()
    }

    /// Whether the demand signal is the engine's busy-replica estimate (capacity sizing) rather than the
    /// policy's first metric.
    pub fn sized_by_capacity(&self) -> bool {
        self.policy.spec.capacity().is_some()
    }

    /// The demand one replica carries, in the signal's unit: the capacity per replica per bucket, or the
    /// first metric's target.
    pub fn per_replica(&self) -> f64 {
        let spec = &self.policy.spec;
        let bucket = f64::from(BUCKET_SECS);
        if self.sized_by_capacity() {
            spec.engine_spec(bucket, 0).capacity.map_or(1.0, |c| c.busy_per_replica(bucket))
        } else {
            spec.targets().first().map_or(1.0, |t| t.target)
        }
    }
}

/// Replays policy `id` over the [`SPAN_HOURS`] before `now`, starting from the replicas of its oldest
/// recorded decision in the span (its minimum, at least 1, without one). `default_down_window_secs` is the
/// server's scale-down window for specs that set none.
#[tracing::instrument(name = "policy_preview", skip(pool))]
pub async fn preview(
    pool: &PgPool,
    id: Uuid,
    now: DateTime<Utc>,
    default_down_window_secs: u32,
) -> Result<Preview, PreviewError> {
    let policy = db::policies::get(pool, id).await?.ok_or(PreviewError::NotFound(id))?;
    let spec = &policy.spec;
    let from = now - Duration::hours(SPAN_HOURS);
    let actual = db::dashboard::decisions_of(pool, &[id], from, MAX_ACTUAL).await?;
    let start = actual.last().map(|d| d.current_replicas.max(0) as u32).unwrap_or(spec.min_replicas.max(1));
    let replay = replay::replay(pool, spec, from, now, BUCKET_SECS, start, default_down_window_secs).await?;
    Ok(Preview { policy, from, to: now, replay, actual })
}
