//! The ingest write path: one transaction per batch, bulk `INSERT ... SELECT FROM UNNEST` per table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gpu_agent::protocol::{Batch, Command, CommandAction, CommandResult, GpuSample};
use sqlx::PgPool;
use uuid::Uuid;

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The batch had been stored before; nothing was written again.
    pub duplicate: bool,
}

/// Milliseconds to a timestamp (validated batches are always in range).
pub fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Stores a validated batch exactly once, plus node facts and command results.
pub async fn store_batch(pool: &PgPool, b: &Batch) -> Result<StoreOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, agent_group, deployment, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, now()) \
         ON CONFLICT (node_id) DO UPDATE SET hostname = $2, agent_version = $3, gpu_source = $4, \
         agent_group = $5, deployment = $6, last_seen = now()",
    )
    .bind(&b.agent_id)
    .bind(&b.node.hostname)
    .bind(&b.node.agent_version)
    .bind(&b.node.gpu_source)
    .bind(&b.node.group)
    .bind(&b.node.deployment)
    .execute(&mut *tx)
    .await?;

    let fresh: Option<i64> = sqlx::query_scalar(
        "INSERT INTO ingest_batches (node_id, seq, gpu_samples, serving_samples) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING RETURNING seq",
    )
    .bind(&b.agent_id)
    .bind(b.seq as i64)
    .bind(b.gpus.len() as i32)
    .bind(b.serving.len() as i32)
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        record_command_results(&mut tx, &b.agent_id, &b.command_results).await?;
        tx.commit().await?;
        return Ok(StoreOutcome { duplicate: true });
    }
    if !b.gpus.is_empty() {
        insert_gpu_samples(&mut tx, &b.agent_id, &b.gpus).await?;
        upsert_gpu_latest(&mut tx, &b.agent_id, &b.gpus).await?;
    }
    if !b.serving.is_empty() {
        insert_serving_samples(&mut tx, &b.agent_id, b).await?;
    }
    record_command_results(&mut tx, &b.agent_id, &b.command_results).await?;
    tx.commit().await?;
    Ok(StoreOutcome { duplicate: false })
}

async fn insert_gpu_samples(tx: &mut sqlx::PgConnection, node: &str, gpus: &[GpuSample]) -> Result<(), sqlx::Error> {
    let n = gpus.len();
    let mut c = GpuColumns::with_capacity(n);
    for g in gpus {
        c.push(g);
    }
    sqlx::query(
        "INSERT INTO gpu_samples (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, \
         power_w, temp_c, sm_clock_mhz, mem_clock_mhz, throttle_reasons, ecc_dbe_total, xid_last, sm_active, tensor_active) \
         SELECT $1, * FROM UNNEST($2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::real[], $7::bigint[], \
         $8::bigint[], $9::real[], $10::real[], $11::int[], $12::int[], $13::bigint[], $14::bigint[], $15::int[], \
         $16::real[], $17::real[])",
    )
    .bind(node)
    .bind(&c.gpu_index)
    .bind(&c.ts)
    .bind(&c.uuid)
    .bind(&c.model)
    .bind(&c.util)
    .bind(&c.mem_used)
    .bind(&c.mem_total)
    .bind(&c.power)
    .bind(&c.temp)
    .bind(&c.sm_clock)
    .bind(&c.mem_clock)
    .bind(&c.throttle)
    .bind(&c.ecc)
    .bind(&c.xid)
    .bind(&c.sm_active)
    .bind(&c.tensor_active)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct GpuColumns {
    gpu_index: Vec<i32>,
    ts: Vec<DateTime<Utc>>,
    uuid: Vec<String>,
    model: Vec<String>,
    util: Vec<f32>,
    mem_used: Vec<i64>,
    mem_total: Vec<i64>,
    power: Vec<f32>,
    temp: Vec<f32>,
    sm_clock: Vec<i32>,
    mem_clock: Vec<i32>,
    throttle: Vec<i64>,
    ecc: Vec<i64>,
    xid: Vec<i32>,
    sm_active: Vec<Option<f32>>,
    tensor_active: Vec<Option<f32>>,
}

impl GpuColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            gpu_index: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            uuid: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            util: Vec::with_capacity(n),
            mem_used: Vec::with_capacity(n),
            mem_total: Vec::with_capacity(n),
            power: Vec::with_capacity(n),
            temp: Vec::with_capacity(n),
            sm_clock: Vec::with_capacity(n),
            mem_clock: Vec::with_capacity(n),
            throttle: Vec::with_capacity(n),
            ecc: Vec::with_capacity(n),
            xid: Vec::with_capacity(n),
            sm_active: Vec::with_capacity(n),
            tensor_active: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, g: &GpuSample) {
        self.gpu_index.push(clamp_i32(u64::from(g.gpu_index)));
        self.ts.push(ts(g.ts_ms));
        self.uuid.push(g.uuid.clone());
        self.model.push(g.model.clone());
        self.util.push(g.util_pct as f32);
        self.mem_used.push(clamp_i64(g.mem_used_bytes));
        self.mem_total.push(clamp_i64(g.mem_total_bytes));
        self.power.push(g.power_w as f32);
        self.temp.push(g.temp_c as f32);
        self.sm_clock.push(clamp_i32(u64::from(g.sm_clock_mhz)));
        self.mem_clock.push(clamp_i32(u64::from(g.mem_clock_mhz)));
        self.throttle.push(g.throttle_reasons as i64);
        self.ecc.push(clamp_i64(g.ecc_dbe_total));
        self.xid.push(clamp_i32(u64::from(g.xid_last)));
        self.sm_active.push(g.sm_active.map(|v| v as f32));
        self.tensor_active.push(g.tensor_active.map(|v| v as f32));
    }
}

fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn upsert_gpu_latest(tx: &mut sqlx::PgConnection, node: &str, gpus: &[GpuSample]) -> Result<(), sqlx::Error> {
    // ON CONFLICT cannot touch one row twice per statement: keep the newest sample per GPU first.
    let mut newest: HashMap<u32, &GpuSample> = HashMap::new();
    for g in gpus {
        newest
            .entry(g.gpu_index)
            .and_modify(|cur| {
                if g.ts_ms > cur.ts_ms {
                    *cur = g
                }
            })
            .or_insert(g);
    }
    let mut c = GpuColumns::with_capacity(newest.len());
    for g in newest.values() {
        c.push(g);
    }
    sqlx::query(
        "INSERT INTO gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, \
         power_w, temp_c, sm_clock_mhz, throttle_reasons, xid_last) \
         SELECT $1, * FROM UNNEST($2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::real[], $7::bigint[], \
         $8::bigint[], $9::real[], $10::real[], $11::int[], $12::bigint[], $13::int[]) \
         ON CONFLICT (node_id, gpu_index) DO UPDATE SET ts = excluded.ts, uuid = excluded.uuid, model = excluded.model, \
         util_pct = excluded.util_pct, mem_used_bytes = excluded.mem_used_bytes, mem_total_bytes = excluded.mem_total_bytes, \
         power_w = excluded.power_w, temp_c = excluded.temp_c, sm_clock_mhz = excluded.sm_clock_mhz, \
         throttle_reasons = excluded.throttle_reasons, xid_last = excluded.xid_last \
         WHERE excluded.ts > gpu_latest.ts",
    )
    .bind(node)
    .bind(&c.gpu_index)
    .bind(&c.ts)
    .bind(&c.uuid)
    .bind(&c.model)
    .bind(&c.util)
    .bind(&c.mem_used)
    .bind(&c.mem_total)
    .bind(&c.power)
    .bind(&c.temp)
    .bind(&c.sm_clock)
    .bind(&c.throttle)
    .bind(&c.xid)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_serving_samples(tx: &mut sqlx::PgConnection, node: &str, b: &Batch) -> Result<(), sqlx::Error> {
    let s = &b.serving;
    let f = |get: fn(&gpu_agent::protocol::ServingSample) -> f64| s.iter().map(|x| get(x) as f32).collect::<Vec<f32>>();
    let o = |get: fn(&gpu_agent::protocol::ServingSample) -> Option<f64>| {
        s.iter().map(|x| get(x).map(|v| v as f32)).collect::<Vec<Option<f32>>>()
    };
    sqlx::query(
        "INSERT INTO serving_samples (node_id, deployment, replica, ts, engine, queue_depth, running, kv_cache_pct, \
         ttft_p50_s, ttft_p95_s, ttft_p99_s, itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s, prompt_tokens_per_s, \
         generation_tokens_per_s, batch_size_mean) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::real[], $7::real[], \
         $8::real[], $9::real[], $10::real[], $11::real[], $12::real[], $13::real[], $14::real[], $15::real[], \
         $16::real[], $17::real[], $18::real[])",
    )
    .bind(node)
    .bind(s.iter().map(|x| x.deployment.clone()).collect::<Vec<_>>())
    .bind(s.iter().map(|x| x.replica.clone()).collect::<Vec<_>>())
    .bind(s.iter().map(|x| ts(x.ts_ms)).collect::<Vec<_>>())
    .bind(s.iter().map(|x| x.engine.clone()).collect::<Vec<_>>())
    .bind(f(|x| x.queue_depth))
    .bind(f(|x| x.running))
    .bind(o(|x| x.kv_cache_pct))
    .bind(o(|x| x.ttft_p50_s))
    .bind(o(|x| x.ttft_p95_s))
    .bind(o(|x| x.ttft_p99_s))
    .bind(o(|x| x.itl_p50_s))
    .bind(o(|x| x.itl_p95_s))
    .bind(o(|x| x.itl_p99_s))
    .bind(f(|x| x.requests_per_s))
    .bind(f(|x| x.prompt_tokens_per_s))
    .bind(f(|x| x.generation_tokens_per_s))
    .bind(o(|x| x.batch_size_mean))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn record_command_results(
    tx: &mut sqlx::PgConnection,
    node: &str,
    results: &[CommandResult],
) -> Result<(), sqlx::Error> {
    for r in results {
        let Ok(id) = Uuid::parse_str(&r.id) else { continue };
        // Only the node the command was for may complete it; the first result wins.
        sqlx::query(
            "UPDATE commands SET completed_at = now(), ok = $3, result = $4 \
             WHERE id = $1 AND node_id = $2 AND completed_at IS NULL",
        )
        .bind(id)
        .bind(node)
        .bind(r.ok)
        .bind(&r.message)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Commands not yet completed by `node`, oldest first; marks them delivered.
pub async fn pending_commands(pool: &PgPool, node: &str) -> Result<Vec<Command>, sqlx::Error> {
    let mut rows: Vec<(Uuid, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE commands SET delivered_at = coalesce(delivered_at, now()) \
         WHERE id IN (SELECT id FROM commands WHERE node_id = $1 AND completed_at IS NULL ORDER BY created_at LIMIT 100) \
         RETURNING id, action, created_at",
    )
    .bind(node)
    .fetch_all(pool)
    .await?;
    // RETURNING has no order; the agent applies commands in creation order.
    rows.sort_by_key(|r| r.2);
    let mut out = Vec::with_capacity(rows.len());
    for (id, action, _) in rows {
        match serde_json::from_value::<CommandAction>(action) {
            Ok(action) => out.push(Command { id: id.to_string(), action }),
            Err(e) => tracing::error!(%id, error = %e, "stored command does not parse; skipping it"),
        }
    }
    Ok(out)
}

/// Queues a command for a node.
pub async fn enqueue_command(
    pool: &PgPool,
    node: &str,
    action: &CommandAction,
    decision_id: Option<i64>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO commands (id, node_id, action, decision_id) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(node)
        .bind(serde_json::to_value(action).unwrap_or_default())
        .bind(decision_id)
        .execute(pool)
        .await?;
    Ok(id)
}
