//! Reads and writes of the control loop: metric series, decisions, forecasts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Latency and queue of a deployment over a recent window (worst replica for latencies).
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct LatestLatency {
    /// Time-to-first-token p95, seconds, max over replicas.
    pub ttft_p95_s: Option<f64>,
    /// Inter-token latency p95, seconds, max over replicas.
    pub itl_p95_s: Option<f64>,
    /// Mean batch size over replicas.
    pub batch_size_mean: Option<f64>,
    /// Mean queue depth per replica.
    pub queue_depth: f64,
}

/// `LISTEN`/`NOTIFY` channel announcing committed samples (empty payload).
pub const INGESTED_CHANNEL: &str = "fleetpilot_ingested";

/// Every node with its agent group and deployment.
pub async fn all_nodes(pool: &PgPool) -> Result<Vec<(String, Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT node_id, agent_group, deployment FROM nodes").fetch_all(pool).await
}

/// Per node and bucket in `[from, to)`: the sum over its GPUs of each GPU's mean utilisation, and the GPUs
/// (those whose utilisation is known in the bucket: an unknown one is neither busy nor idle).
pub async fn gpu_buckets(
    pool: &PgPool,
    bucket_secs: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64, f64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, b, sum(u)::float8, count(*) FROM ( \
           SELECT node_id, gpu_index, floor(date_part('epoch', ts) / $1)::bigint * $1 AS b, avg(util_pct) AS u \
           FROM gpu_samples_between($2, $3) WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3) t WHERE u IS NOT NULL GROUP BY 1, 2",
    )
    .bind(bucket_secs)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// One deployment's serving metrics in one bucket: per-replica means summed, worst latencies.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServingBucket {
    /// Sum over replicas of the mean queue depth.
    pub queue_sum: f64,
    /// Sum over replicas of the mean KV-cache use, percent.
    pub kv_sum: f64,
    /// Sum over replicas of the mean generated tokens/s.
    pub generation_tps_sum: f64,
    /// Worst replica TTFT p95, seconds.
    pub ttft_p95_max: Option<f64>,
    /// Worst replica inter-token latency p95, seconds.
    pub itl_p95_max: Option<f64>,
    /// Mean batch size over replicas.
    pub batch_mean: Option<f64>,
    /// Replicas reporting.
    pub replicas: i64,
    /// Sum over replicas of the mean completed requests per second.
    pub requests_sum: f64,
}

type ServingRow = (String, i64, f64, f64, f64, Option<f64>, Option<f64>, Option<f64>, i64, f64);

/// Per deployment and bucket in `[from, to)`: serving aggregates over replicas.
pub async fn serving_buckets(
    pool: &PgPool,
    bucket_secs: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64, ServingBucket)>, sqlx::Error> {
    let rows: Vec<ServingRow> = sqlx::query_as(
        "SELECT deployment, b, sum(q)::float8, sum(kv)::float8, sum(tps)::float8, max(ttft)::float8, \
           max(itl)::float8, avg(batch)::float8, count(*), sum(rps)::float8 FROM ( \
           SELECT deployment, replica, floor(date_part('epoch', ts) / $1)::bigint * $1 AS b, \
             avg(queue_depth) AS q, avg(coalesce(kv_cache_pct, 0)) AS kv, avg(generation_tokens_per_s) AS tps, \
             max(ttft_p95_s) AS ttft, max(itl_p95_s) AS itl, avg(batch_size_mean) AS batch, \
             avg(requests_per_s) AS rps \
           FROM serving_samples_between($2, $3) WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3) t GROUP BY 1, 2",
    )
    .bind(bucket_secs)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(d, b, q, kv, tps, ttft, itl, batch, n, rps)| {
            let agg = ServingBucket {
                queue_sum: q,
                kv_sum: kv,
                generation_tps_sum: tps,
                ttft_p95_max: ttft,
                itl_p95_max: itl,
                batch_mean: batch,
                replicas: n,
                requests_sum: rps,
            };
            (d, b, agg)
        })
        .collect())
}

/// Stores many decisions in one statement; returns their ids in order. `applied` is final for decisions
/// that need no action; the others are marked after acting ([`mark_decisions`]).
pub async fn insert_decisions(pool: &PgPool, ds: &[(NewDecision<'_>, bool)]) -> Result<Vec<i64>, sqlx::Error> {
    if ds.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO decisions (policy_id, policy_version, decided_at, target, current_replicas, desired_replicas, \
         winner, reason, proposals, inputs, forecast_id, dry_run, applied) \
         SELECT p, v, t, tg, c, d, w, r, pr, i, f, dr, a FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], \
           $4::text[], $5::int[], $6::int[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], $11::bigint[], \
           $12::bool[], $13::bool[], $14::int[]) AS u(p, v, t, tg, c, d, w, r, pr, i, f, dr, a, ord) \
         ORDER BY ord RETURNING id",
    )
    .bind(ds.iter().map(|(d, _)| d.policy_id).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.policy_version).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.decided_at).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.target).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.current as i32).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.decision.desired as i32).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.decision.winner.as_str()).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.decision.reason.as_str()).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| serde_json::to_value(&d.decision.proposals).unwrap_or_default()).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.inputs.clone()).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.forecast_id).collect::<Vec<_>>())
    .bind(ds.iter().map(|(d, _)| d.dry_run).collect::<Vec<_>>())
    .bind(ds.iter().map(|(_, a)| *a).collect::<Vec<_>>())
    .bind((0..ds.len() as i32).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    // Ids are drawn in the order the rows are inserted (ORDER BY ord); RETURNING itself has no order.
    ids.sort_unstable();
    Ok(ids)
}

/// Marks decisions applied, or records why they could not be, in one statement.
pub async fn mark_decisions(pool: &PgPool, marks: &[(i64, bool, Option<String>)]) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE decisions d SET applied = m.a, error = m.e \
         FROM UNNEST($1::bigint[], $2::bool[], $3::text[]) AS m(id, a, e) WHERE d.id = m.id",
    )
    .bind(marks.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.2.as_deref()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores a forecast; returns its id.
#[allow(clippy::too_many_arguments)]
pub async fn insert_forecast(
    pool: &PgPool,
    policy: Uuid,
    made_at: DateTime<Utc>,
    step_secs: u32,
    model: &str,
    history: &[f64],
    f: &forecasting::forecast::DemandForecast,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO forecasts (policy_id, made_at, step_secs, model, history, point, lower, upper, level) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(policy)
    .bind(made_at)
    .bind(step_secs as i32)
    .bind(model)
    .bind(history)
    .bind(&f.point)
    .bind(&f.lower)
    .bind(&f.upper)
    .bind(f.level)
    .fetch_one(pool)
    .await
}

/// A decision about to be recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NewDecision<'a> {
    /// Policy.
    pub policy_id: Uuid,
    /// Its version at decision time.
    pub policy_version: i32,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Target label.
    pub target: &'a str,
    /// Replicas before.
    pub current: u32,
    /// The decision.
    pub decision: &'a forecasting::decision::Decision,
    /// Every input, for the record.
    pub inputs: serde_json::Value,
    /// Forecast used.
    pub forecast_id: Option<i64>,
    /// Whether it is recorded only.
    pub dry_run: bool,
}

/// The replicas the last applied decision of a policy asked for.
pub async fn last_applied_replicas(pool: &PgPool, policy: Uuid) -> Result<Option<u32>, sqlx::Error> {
    let v: Option<i32> = sqlx::query_scalar(
        "SELECT desired_replicas FROM decisions WHERE policy_id = $1 AND applied ORDER BY decided_at DESC LIMIT 1",
    )
    .bind(policy)
    .fetch_optional(pool)
    .await?;
    Ok(v.map(|v| v.max(0) as u32))
}

/// Leader election: a session-level advisory lock held on one dedicated connection.
pub const LEADER_LOCK_KEY: i64 = 0x666c_6565_7470_696c; // "fleetpil"

/// Tries to take the leader lock on `conn`.
pub async fn try_lead(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK_KEY).fetch_one(conn).await
}

/// The fencing token of one leadership term: the epoch it took and the database backend holding the lock.
///
/// A replica that takes the leader lock bumps the epoch ([`begin_epoch`]); every actuation carries its [`Fence`]
/// and is refused once a newer term began or the lock-holding connection is gone ([`fence_holds`]), so a leader
/// that lost its lock without noticing (a partitioned connection, a long pause) cannot act after its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// Leadership term, increasing.
    pub epoch: i64,
    /// `pg_backend_pid()` of the connection holding the leader lock.
    pub holder_pid: i32,
}

/// The two halves of [`LEADER_LOCK_KEY`] as `pg_locks` shows a bigint advisory lock (`classid`, `objid`).
const LEADER_LOCK_CLASSID: i64 = LEADER_LOCK_KEY >> 32;
const LEADER_LOCK_OBJID: i64 = LEADER_LOCK_KEY & 0xffff_ffff;

/// Starts a leadership term on `conn`, which must hold the leader lock: bumps the epoch and records this backend
/// as its holder.
pub async fn begin_epoch(conn: &mut sqlx::PgConnection, holder: &str) -> Result<Fence, sqlx::Error> {
    let (epoch, holder_pid): (i64, i32) = sqlx::query_as(
        "INSERT INTO leader_epoch (id, epoch, holder_pid, holder) VALUES (true, 1, pg_backend_pid(), $1) \
         ON CONFLICT (id) DO UPDATE SET epoch = leader_epoch.epoch + 1, holder_pid = EXCLUDED.holder_pid, \
           holder = EXCLUDED.holder, since = now() \
         RETURNING epoch, holder_pid",
    )
    .bind(holder)
    .fetch_one(conn)
    .await?;
    Ok(Fence { epoch, holder_pid })
}

/// True while `$1` is the current epoch and backend `$2` still holds the leader lock.
const FENCE_HOLDS: &str = "SELECT EXISTS (SELECT 1 FROM leader_epoch e WHERE e.epoch = $1 AND e.holder_pid = $2) \
     AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $2 \
                 AND l.classid::bigint = $3 AND l.objid::bigint = $4 AND l.objsubid = 1)";

/// Whether `fence` is still the current leadership term (see [`Fence`]).
pub async fn fence_holds<'e>(db: impl sqlx::PgExecutor<'e>, fence: Fence) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(FENCE_HOLDS)
        .bind(fence.epoch)
        .bind(fence.holder_pid)
        .bind(LEADER_LOCK_CLASSID)
        .bind(LEADER_LOCK_OBJID)
        .fetch_one(db)
        .await
}

/// The current leadership term (`None` before any replica led), for operators and tests.
pub async fn current_epoch(pool: &PgPool) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT epoch, holder FROM leader_epoch").fetch_optional(pool).await
}

/// One recorded decision as a point of its policy's replica path.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PathPoint {
    /// Policy.
    pub policy_id: Uuid,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Replicas before.
    pub current_replicas: i32,
    /// Replicas decided.
    pub desired_replicas: i32,
    /// The engine's demand estimate then (busy replicas), if it made one.
    pub demand: Option<f64>,
}

/// Most decisions [`decision_paths`] reads (a day of one policy recorded every tick is far fewer).
pub const MAX_PATH_POINTS: i64 = 500_000;

/// The decisions of `policies` in `[from, to)`, plus each policy's last decision before `from` (the count in
/// force at the start), oldest first, at most [`MAX_PATH_POINTS`].
pub async fn decision_paths(
    pool: &PgPool,
    policies: &[Uuid],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PathPoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT policy_id, decided_at, current_replicas, desired_replicas, demand FROM ( \
           SELECT b.* FROM UNNEST($1::uuid[]) AS p(id) CROSS JOIN LATERAL ( \
             SELECT policy_id, decided_at, current_replicas, desired_replicas, \
               CASE WHEN jsonb_typeof(inputs->'demand') = 'number' THEN (inputs->>'demand')::float8 END AS demand \
             FROM decisions WHERE policy_id = p.id AND decided_at < $2 ORDER BY decided_at DESC LIMIT 1) b \
           UNION ALL \
           SELECT policy_id, decided_at, current_replicas, desired_replicas, \
             CASE WHEN jsonb_typeof(inputs->'demand') = 'number' THEN (inputs->>'demand')::float8 END \
           FROM decisions WHERE policy_id = ANY($1) AND decided_at >= $2 AND decided_at < $3 \
         ) d ORDER BY decided_at, policy_id LIMIT $4",
    )
    .bind(policies)
    .bind(from)
    .bind(to)
    .bind(MAX_PATH_POINTS)
    .fetch_all(pool)
    .await
}

/// The GPU model most of `deployment`'s serving nodes have (what its replicas are priced at), if known.
pub async fn deployment_gpu_model(pool: &PgPool, deployment: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT g.model FROM gpu_latest g WHERE g.node_id IN \
           (SELECT node_id FROM serving_latest WHERE deployment = $1) \
         GROUP BY g.model ORDER BY count(*) DESC, g.model LIMIT 1",
    )
    .bind(deployment)
    .fetch_optional(pool)
    .await
}

/// A policy's latest decision: when, replicas before and decided, and why.
pub async fn latest_decision(
    pool: &PgPool,
    policy: Uuid,
) -> Result<Option<(DateTime<Utc>, i32, i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT decided_at, current_replicas, desired_replicas, reason FROM decisions WHERE policy_id = $1 \
         ORDER BY decided_at DESC LIMIT 1",
    )
    .bind(policy)
    .fetch_optional(pool)
    .await
}
