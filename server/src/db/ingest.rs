//! The ingest write path: one transaction per batch, bulk `INSERT ... SELECT FROM UNNEST` per table.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use gpu_agent::protocol::{Batch, GpuSample, ProbeSample, ServingSample};
use sqlx::PgPool;

use super::copy::CopyBinary;
use super::dimensions::{Dimensions, GpuKeys, GpuRef, ReplicaKeys, ReplicaRef};

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
pub async fn store_batch(pool: &PgPool, keys: &Dimensions, b: &Batch) -> Result<StoreOutcome, sqlx::Error> {
    let out = store_group(pool, keys, &[b]).await?;
    Ok(out.into_iter().next().unwrap_or(StoreOutcome { duplicate: true }))
}

/// Stores several validated batches in one transaction (group commit): one dedup statement, one binary
/// `COPY` per table, one upsert of the latest readings. Returns one outcome per batch, in order; a batch
/// whose `(agent_id, seq)` was stored before (or appears earlier in the group) is a duplicate and is not
/// stored again.
pub async fn store_group(
    pool: &PgPool,
    keys: &Dimensions,
    batches: &[&Batch],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    // Identities are resolved before the transaction (a new GPU's key is committed even if the group fails,
    // so the cache never holds a key the table lacks).
    let gpus: Vec<GpuRef<'_>> =
        batches.iter().flat_map(|b| b.gpus.iter().map(|g| GpuRef::of(&b.agent_id, g))).collect();
    keys.gpus.resolve(pool, &gpus).await?;
    let replicas: Vec<ReplicaRef<'_>> =
        batches.iter().flat_map(|b| b.serving.iter().map(|s| ReplicaRef::of(&b.agent_id, s))).collect();
    keys.replicas.resolve(pool, &replicas).await?;
    let mut tx = pool.begin().await?;
    // The hot tables' parents first (the order the packer locks in): once held, the packer cannot drop a
    // partition this group is about to write into (it drops only empty ones, under the parent's lock).
    let hot_tables: Vec<&str> = [
        (batches.iter().any(|b| !b.gpus.is_empty()), super::pack::GPU.hot),
        (batches.iter().any(|b| !b.serving.is_empty()), super::pack::SERVING.hot),
    ]
    .into_iter()
    .filter_map(|(any, table)| any.then_some(table))
    .collect();
    if !hot_tables.is_empty() {
        // `ONLY`: the parent alone, not every partition (one being packed holds a `SHARE` lock).
        let only: Vec<String> = hot_tables.iter().map(|t| format!("ONLY {t}")).collect();
        let sql = format!("LOCK TABLE {} IN ROW EXCLUSIVE MODE", only.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    upsert_nodes(&mut tx, batches).await?;

    let fresh: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO ingest_batches (node_id, seq, gpu_samples, serving_samples) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::int[], $4::int[]) \
         ON CONFLICT DO NOTHING RETURNING node_id, seq",
    )
    .bind(batches.iter().map(|b| b.agent_id.as_str()).collect::<Vec<_>>())
    .bind(batches.iter().map(|b| b.seq as i64).collect::<Vec<_>>())
    .bind(batches.iter().map(|b| b.gpus.len() as i32).collect::<Vec<_>>())
    .bind(batches.iter().map(|b| b.serving.len() as i32).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut fresh: HashSet<(String, i64)> = fresh.into_iter().collect();
    // The first occurrence of a key in the group is the one stored.
    let outcomes: Vec<StoreOutcome> = batches
        .iter()
        .map(|b| StoreOutcome { duplicate: !fresh.remove(&(b.agent_id.clone(), b.seq as i64)) })
        .collect();
    let stored: Vec<&Batch> = batches.iter().zip(&outcomes).filter(|(_, o)| !o.duplicate).map(|(b, _)| *b).collect();

    let gpu_rows: usize = stored.iter().map(|b| b.gpus.len()).sum();
    if gpu_rows > 0 {
        let payload = encode_gpu_rows(
            &keys.gpus,
            stored.iter().flat_map(|b| b.gpus.iter().map(|g| (b.agent_id.as_str(), g))),
            gpu_rows,
        );
        copy_in(&mut tx, GPU_COPY, payload).await?;
        upsert_gpu_latest(&mut tx, &stored).await?;
    }
    let serving_rows: usize = stored.iter().map(|b| b.serving.len()).sum();
    if serving_rows > 0 {
        copy_in(&mut tx, SERVING_COPY, encode_serving_rows(&keys.replicas, &stored, serving_rows)).await?;
        upsert_serving_latest(&mut tx, &stored).await?;
    }
    // Late samples (replayed after an outage) land in minutes that may be rolled up already.
    let cutoff_ms = super::rollups::late_cutoff(Utc::now()).timestamp_millis();
    let mut late: Vec<DateTime<Utc>> = stored
        .iter()
        .flat_map(|b| b.gpus.iter().map(|g| g.ts_ms).chain(b.serving.iter().map(|s| s.ts_ms)))
        .filter(|ms| *ms < cutoff_ms)
        .map(|ms| ts(ms - ms.rem_euclid(60_000)))
        .collect();
    late.sort_unstable();
    late.dedup();
    super::rollups::mark_dirty(&mut tx, &late).await?;
    insert_probes(&mut tx, &stored).await?;
    if !stored.is_empty() {
        // Wakes the control loop of whichever replica leads, at commit: decisions follow data within a tick gap.
        sqlx::query("SELECT pg_notify($1, '')").bind(super::control::INGESTED_CHANNEL).execute(&mut *tx).await?;
    }
    for b in batches {
        if !b.command_results.is_empty() {
            super::commands::acknowledge(&mut tx, &b.agent_id, &[], &b.command_results).await?;
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn insert_probes(tx: &mut sqlx::PgConnection, stored: &[&Batch]) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, &ProbeSample)> =
        stored.iter().flat_map(|b| b.probes.iter().map(|p| (b.agent_id.as_str(), p))).collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO gpu_probes (node_id, gpu_index, ts, uuid, bandwidth_gb_s, error) \
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::timestamptz[], $4::text[], $5::float8[], $6::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|(n, _)| *n).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p)| i32::try_from(p.gpu_index).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p)| ts(p.ts_ms)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p)| p.uuid.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p)| p.bandwidth_gb_s).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p)| p.error.as_deref()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn upsert_nodes(tx: &mut sqlx::PgConnection, batches: &[&Batch]) -> Result<(), sqlx::Error> {
    // One row per node (the last batch's facts win): ON CONFLICT cannot touch a row twice per statement.
    let mut latest: HashMap<&str, &Batch> = HashMap::new();
    for b in batches {
        latest.insert(b.agent_id.as_str(), b);
    }
    // In key order: two groups upserting the same nodes lock their rows in the same order (no deadlock).
    let mut nodes: Vec<&Batch> = latest.into_values().collect();
    nodes.sort_unstable_by(|a, b| a.agent_id.cmp(&b.agent_id));
    sqlx::query(
        "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, agent_group, deployment, last_seen) \
         SELECT n, h, v, s, g, d, now() \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(n, h, v, s, g, d) \
         ON CONFLICT (node_id) DO UPDATE SET hostname = excluded.hostname, agent_version = excluded.agent_version, \
         gpu_source = excluded.gpu_source, agent_group = excluded.agent_group, deployment = excluded.deployment, \
         last_seen = now()",
    )
    .bind(nodes.iter().map(|b| b.agent_id.as_str()).collect::<Vec<_>>())
    .bind(nodes.iter().map(|b| b.node.hostname.as_str()).collect::<Vec<_>>())
    .bind(nodes.iter().map(|b| b.node.agent_version.as_str()).collect::<Vec<_>>())
    .bind(nodes.iter().map(|b| b.node.gpu_source.as_str()).collect::<Vec<_>>())
    .bind(nodes.iter().map(|b| b.node.group.as_deref()).collect::<Vec<_>>())
    .bind(nodes.iter().map(|b| b.node.deployment.as_deref()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Streams a binary COPY payload.
pub async fn copy_in(conn: &mut sqlx::PgConnection, statement: &str, payload: Vec<u8>) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(payload).await?;
    copy.finish().await
}

/// Columns of the hot GPU table, in COPY order: the GPU's key, not its identity strings.
pub const GPU_COPY: &str = "COPY gpu_samples_hot (ts, mem_used_bytes, mem_total_bytes, throttle_reasons, \
     ecc_dbe_total, gpu_key, util_pct, power_w, temp_c, sm_clock_mhz, mem_clock_mhz, xid_last, sm_active, \
     tensor_active) FROM STDIN (FORMAT binary)";

/// Encodes `(node, sample)` rows for [`GPU_COPY`]; every identity must have been resolved in `keys` (one that
/// was not, which [`store_group`] never lets happen, would be written as key 0, which no GPU has).
pub fn encode_gpu_rows<'a>(
    keys: &GpuKeys,
    rows: impl Iterator<Item = (&'a str, &'a GpuSample)>,
    capacity_rows: usize,
) -> Vec<u8> {
    let mut c = CopyBinary::with_capacity(capacity_rows * 96);
    let map = keys.lock();
    for (node, g) in rows {
        c.row(14);
        c.ts_ms(g.ts_ms);
        // An absent reading is NULL, never 0 (0 would read as an idle GPU).
        c.opt_i64(g.mem_used_bytes.map(clamp_i64));
        c.opt_i64(g.mem_total_bytes.map(clamp_i64));
        c.opt_i64(g.throttle_reasons.map(|v| v as i64));
        c.opt_i64(g.ecc_dbe_total.map(clamp_i64));
        c.i32(map.get(&GpuRef::of(node, g)).unwrap_or(0));
        c.opt_f32(g.util_pct.map(|v| v as f32));
        c.opt_f32(g.power_w.map(|v| v as f32));
        c.opt_f32(g.temp_c.map(|v| v as f32));
        c.opt_i32(g.sm_clock_mhz.map(|v| clamp_i32(u64::from(v))));
        c.opt_i32(g.mem_clock_mhz.map(|v| clamp_i32(u64::from(v))));
        c.opt_i32(g.xid_last.map(|v| clamp_i32(u64::from(v))));
        c.opt_f32(g.sm_active.map(|v| v as f32));
        c.opt_f32(g.tensor_active.map(|v| v as f32));
    }
    c.finish()
}

/// Columns of `serving_hot`, in COPY order: the replica's key, not its identity strings.
pub const SERVING_COPY: &str = "COPY serving_hot (ts, replica_key, queue_depth, running, kv_cache_pct, ttft_p50_s, \
     ttft_p95_s, ttft_p99_s, itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s, prompt_tokens_per_s, \
     generation_tokens_per_s, batch_size_mean) FROM STDIN (FORMAT binary)";

fn encode_serving_rows(keys: &ReplicaKeys, batches: &[&Batch], rows: usize) -> Vec<u8> {
    let mut c = CopyBinary::with_capacity(rows * 80);
    let f = |v: Option<f64>| v.map(|v| v as f32);
    let map = keys.lock();
    for b in batches {
        for s in &b.serving {
            c.row(15);
            c.ts_ms(s.ts_ms);
            c.i32(map.get(&ReplicaRef::of(&b.agent_id, s)).unwrap_or(0));
            c.f32(s.queue_depth as f32);
            c.f32(s.running as f32);
            c.opt_f32(f(s.kv_cache_pct));
            c.opt_f32(f(s.ttft_p50_s));
            c.opt_f32(f(s.ttft_p95_s));
            c.opt_f32(f(s.ttft_p99_s));
            c.opt_f32(f(s.itl_p50_s));
            c.opt_f32(f(s.itl_p95_s));
            c.opt_f32(f(s.itl_p99_s));
            c.f32(s.requests_per_s as f32);
            c.f32(s.prompt_tokens_per_s as f32);
            c.f32(s.generation_tokens_per_s as f32);
            c.opt_f32(f(s.batch_size_mean));
        }
    }
    c.finish()
}

async fn upsert_serving_latest(tx: &mut sqlx::PgConnection, batches: &[&Batch]) -> Result<(), sqlx::Error> {
    let mut newest: HashMap<(&str, &str), (&str, &ServingSample)> = HashMap::new();
    for b in batches {
        for s in &b.serving {
            let e = newest.entry((s.deployment.as_str(), s.replica.as_str())).or_insert((b.agent_id.as_str(), s));
            if s.ts_ms > e.1.ts_ms {
                *e = (b.agent_id.as_str(), s);
            }
        }
    }
    // In key order, so concurrent groups lock the same rows in the same order.
    let mut rows: Vec<(&str, &ServingSample)> = newest.into_values().collect();
    rows.sort_unstable_by(|a, b| (&a.1.deployment, &a.1.replica).cmp(&(&b.1.deployment, &b.1.replica)));
    let f = |get: fn(&ServingSample) -> f64| rows.iter().map(|(_, s)| get(s) as f32).collect::<Vec<f32>>();
    let o =
        |get: fn(&ServingSample) -> Option<f64>| rows.iter().map(|(_, s)| get(s).map(|v| v as f32)).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO serving_latest (deployment, replica, node_id, ts, engine, queue_depth, running, kv_cache_pct, \
         ttft_p95_s, itl_p95_s, requests_per_s, generation_tokens_per_s, batch_size_mean) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::real[], $7::real[], \
         $8::real[], $9::real[], $10::real[], $11::real[], $12::real[], $13::real[]) \
         ON CONFLICT (deployment, replica) DO UPDATE SET node_id = excluded.node_id, ts = excluded.ts, \
         engine = excluded.engine, queue_depth = excluded.queue_depth, running = excluded.running, \
         kv_cache_pct = excluded.kv_cache_pct, ttft_p95_s = excluded.ttft_p95_s, itl_p95_s = excluded.itl_p95_s, \
         requests_per_s = excluded.requests_per_s, generation_tokens_per_s = excluded.generation_tokens_per_s, \
         batch_size_mean = excluded.batch_size_mean WHERE excluded.ts > serving_latest.ts",
    )
    .bind(rows.iter().map(|(_, s)| s.deployment.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.replica.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(n, _)| *n).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| ts(s.ts_ms)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.engine.as_str()).collect::<Vec<_>>())
    .bind(f(|s| s.queue_depth))
    .bind(f(|s| s.running))
    .bind(o(|s| s.kv_cache_pct))
    .bind(o(|s| s.ttft_p95_s))
    .bind(o(|s| s.itl_p95_s))
    .bind(f(|s| s.requests_per_s))
    .bind(f(|s| s.generation_tokens_per_s))
    .bind(o(|s| s.batch_size_mean))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Columns of the `gpu_latest` upsert.
struct LatestColumns {
    node: Vec<String>,
    gpu_index: Vec<i32>,
    ts: Vec<DateTime<Utc>>,
    uuid: Vec<String>,
    model: Vec<String>,
    util: Vec<Option<f32>>,
    mem_used: Vec<Option<i64>>,
    mem_total: Vec<Option<i64>>,
    power: Vec<Option<f32>>,
    temp: Vec<Option<f32>>,
    sm_clock: Vec<Option<i32>>,
    throttle: Vec<Option<i64>>,
    xid: Vec<Option<i32>>,
}

fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn upsert_gpu_latest(tx: &mut sqlx::PgConnection, batches: &[&Batch]) -> Result<(), sqlx::Error> {
    // ON CONFLICT cannot touch one row twice per statement: keep the newest sample per GPU first.
    let mut newest: HashMap<(&str, u32), &GpuSample> = HashMap::new();
    for b in batches {
        for g in &b.gpus {
            let e = newest.entry((b.agent_id.as_str(), g.gpu_index)).or_insert(g);
            if g.ts_ms > e.ts_ms {
                *e = g;
            }
        }
    }
    let n = newest.len();
    let mut c = LatestColumns {
        node: Vec::with_capacity(n),
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
        throttle: Vec::with_capacity(n),
        xid: Vec::with_capacity(n),
    };
    // In key order, so concurrent groups lock the same rows in the same order.
    let mut newest: Vec<((&str, u32), &GpuSample)> = newest.into_iter().collect();
    newest.sort_unstable_by_key(|(k, _)| *k);
    for ((node, _), g) in newest {
        c.node.push(node.to_string());
        c.gpu_index.push(clamp_i32(u64::from(g.gpu_index)));
        c.ts.push(ts(g.ts_ms));
        c.uuid.push(g.uuid.clone());
        c.model.push(g.model.clone());
        c.util.push(g.util_pct.map(|v| v as f32));
        c.mem_used.push(g.mem_used_bytes.map(clamp_i64));
        c.mem_total.push(g.mem_total_bytes.map(clamp_i64));
        c.power.push(g.power_w.map(|v| v as f32));
        c.temp.push(g.temp_c.map(|v| v as f32));
        c.sm_clock.push(g.sm_clock_mhz.map(|v| clamp_i32(u64::from(v))));
        c.throttle.push(g.throttle_reasons.map(|v| v as i64));
        c.xid.push(g.xid_last.map(|v| clamp_i32(u64::from(v))));
    }
    sqlx::query(
        "INSERT INTO gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, \
         power_w, temp_c, sm_clock_mhz, throttle_reasons, xid_last, changed_at) \
         SELECT n, g, t, u, m, ut, mu, mt, p, te, sc, th, x, t FROM UNNEST($1::text[], $2::int[], $3::timestamptz[], \
         $4::text[], $5::text[], $6::real[], $7::bigint[], $8::bigint[], $9::real[], $10::real[], $11::int[], \
         $12::bigint[], $13::int[]) AS z(n, g, t, u, m, ut, mu, mt, p, te, sc, th, x) \
         ON CONFLICT (node_id, gpu_index) DO UPDATE SET ts = excluded.ts, uuid = excluded.uuid, model = excluded.model, \
         util_pct = excluded.util_pct, mem_used_bytes = excluded.mem_used_bytes, mem_total_bytes = excluded.mem_total_bytes, \
         power_w = excluded.power_w, temp_c = excluded.temp_c, sm_clock_mhz = excluded.sm_clock_mhz, \
         throttle_reasons = excluded.throttle_reasons, xid_last = excluded.xid_last, \
         changed_at = CASE WHEN gpu_latest.changed_at IS NULL OR (gpu_latest.util_pct, gpu_latest.mem_used_bytes, \
             gpu_latest.power_w, gpu_latest.temp_c, gpu_latest.sm_clock_mhz) IS DISTINCT FROM (excluded.util_pct, \
             excluded.mem_used_bytes, excluded.power_w, excluded.temp_c, excluded.sm_clock_mhz) \
           THEN excluded.ts ELSE gpu_latest.changed_at END \
         WHERE excluded.ts > gpu_latest.ts",
    )
    .bind(&c.node)
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

/// Up to `limit` of the (deployment, replica) serving series `node` reports (the cardinality guard's memory).
pub async fn serving_series_of(pool: &PgPool, node: &str, limit: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT deployment, replica FROM serving_latest WHERE node_id = $1 LIMIT $2")
        .bind(node)
        .bind(limit)
        .fetch_all(pool)
        .await
}
