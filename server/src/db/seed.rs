//! Synthetic fleets written straight into the tables, for benchmarks that measure reads at a scale no test
//! run ingests (`bench dashboard`). Bulk `INSERT … SELECT generate_series` statements: seconds for a week of
//! a 10,000-GPU fleet. Not used by the product's own paths.

use std::time::Instant;

use crate::db;
use crate::domain::policy::PolicySpec;

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A statement failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A seeded policy did not parse or validate (a bug in the seed).
    #[error("seeded policy: {0}")]
    Policy(String),
}

impl From<serde_json::Error> for SeedError {
    fn from(e: serde_json::Error) -> Self {
        Self::Policy(e.to_string())
    }
}

impl From<crate::domain::Invalid> for SeedError {
    fn from(e: crate::domain::Invalid) -> Self {
        Self::Policy(e.to_string())
    }
}

/// GPUs on each seeded node.
pub const GPUS_PER_NODE: usize = 8;
/// Nodes with one hour of 1 s raw GPU samples (the node and GPU pages ask for these), and deployments with
/// one hour of 1 s serving samples from 8 replicas.
pub const HOT_NODES: usize = 10;

async fn exec(pool: &sqlx::PgPool, what: &str, sql: &str) -> Result<(), SeedError> {
    let t = Instant::now();
    let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(pool).await?;
    println!("  loaded {what}: {} rows in {:.1} s", r.rows_affected(), t.elapsed().as_secs_f64());
    Ok(())
}

/// Loads a fleet of `nodes` x [`GPUS_PER_NODE`] GPUs and `deployments` deployments with a week of history:
/// what `bench dashboard` measures its pages on.
pub async fn dashboard_fleet(pool: &sqlx::PgPool, nodes: usize, deployments: usize) -> Result<(), SeedError> {
    let (n_max, d) = (nodes - 1, deployments);
    exec(
        pool,
        "nodes",
        &format!(
            "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, deployment, last_seen) \
         SELECT 'node-' || lpad(n::text, 5, '0'), 'host-' || n, 'bench', 'nvml', \
                'ns' || ((n % {d}) % 50) || '/dep-' || (n % {d}), now() - (n % 7) * interval '1 second' \
         FROM generate_series(0, {n_max}) n"
        ),
    )
    .await?;
    exec(pool, "latest GPU readings", &format!(
        "INSERT INTO gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, sm_clock_mhz, throttle_reasons, xid_last) \
         SELECT 'node-' || lpad(n::text, 5, '0'), g, now() - (n % 5) * interval '1 second', 'GPU-' || n || '-' || g, 'NVIDIA H100 80GB HBM3', \
                ((n * 7 + g * 13) % 100)::real, 40000000000, 85520809984, 350 + (n + g) % 300, 45 + (n + g) % 40, 1980, \
                CASE WHEN (n + g) % 97 = 0 THEN 4 ELSE 0 END, CASE WHEN (n * 8 + g) % 997 = 0 THEN 79 ELSE 0 END \
         FROM generate_series(0, {n_max}) n, generate_series(0, 7) g")).await?;
    let rollup_cols = "node_id, gpu_index, bucket, samples, util_min, util_mean, util_max, util_p95, mem_used_max, mem_total_bytes, \
                       power_mean, power_max, temp_mean, temp_max, sm_clock_min, throttle_any, xid_max, sm_active_mean";
    let rollup_vals = "'node-' || lpad(n::text, 5, '0'), g, b, 60, 0, ((n * 7 + g * 13 + m) % 100)::real, 100, 95, 40000000000, 85520809984, \
                       400, 500, 60, 70, 1800, 0, 0, 0.5";
    exec(pool, "1-minute GPU rollups (last hour)", &format!(
        "INSERT INTO gpu_rollup_1m ({rollup_cols}) SELECT {rollup_vals} FROM generate_series(0, {n_max}) n, generate_series(0, 7) g, \
         generate_series(1, 60) m, LATERAL (SELECT date_trunc('minute', now()) - m * interval '1 minute' AS b) t")).await?;
    exec(pool, "1-hour GPU rollups (last day)", &format!(
        "INSERT INTO gpu_rollup_1h ({rollup_cols}) SELECT {rollup_vals} FROM generate_series(0, {n_max}) n, generate_series(0, 7) g, \
         generate_series(1, 24) m, LATERAL (SELECT date_trunc('hour', now()) - m * interval '1 hour' AS b) t")).await?;
    exec(pool, "GPU identities", &format!(
        "INSERT INTO gpus (node_id, gpu_index, uuid, model) SELECT 'node-' || lpad(n::text, 5, '0'), g, 'GPU', 'NVIDIA H100 80GB HBM3' \
         FROM generate_series(0, {n_max}) n, generate_series(0, 7) g ON CONFLICT DO NOTHING")).await?;
    let raw_cols = "gpu_key, ts, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, sm_clock_mhz, mem_clock_mhz, \
                    throttle_reasons, ecc_dbe_total, xid_last";
    let raw_vals = "k.gpu_key, t, ((n + g + s) % 100)::real, 40000000000, 85520809984, 400, 60, 1980, 2619, 0, \
                    CASE WHEN n = 3 AND g = 1 THEN 2 ELSE 0 END, 0";
    let key = "JOIN gpus k ON k.node_id = 'node-' || lpad(n::text, 5, '0') AND k.gpu_index = g AND k.uuid = 'GPU'";
    exec(pool, "raw GPU samples: 1 h at 1 s for the hot nodes", &format!(
        "INSERT INTO gpu_samples_hot ({raw_cols}) SELECT {raw_vals} FROM generate_series(0, {}) n CROSS JOIN generate_series(0, 7) g \
         CROSS JOIN generate_series(1, 3600) s CROSS JOIN LATERAL (SELECT now() - s * interval '1 second' AS t) x {key}", HOT_NODES - 1)).await?;
    exec(pool, "raw GPU samples: 5 min at 10 s for every other node", &format!(
        "INSERT INTO gpu_samples_hot ({raw_cols}) SELECT {raw_vals} FROM generate_series({HOT_NODES}, {n_max}) n CROSS JOIN generate_series(0, 7) g \
         CROSS JOIN generate_series(1, 30) s CROSS JOIN LATERAL (SELECT now() - s * interval '10 seconds' AS t) x {key}")).await?;
    exec(
        pool,
        "serving replica identities",
        &format!(
            "INSERT INTO serving_replicas (deployment, replica, node_id, engine) \
         SELECT 'ns' || (dd % 50) || '/dep-' || dd, 'r' || r, 'node-' || lpad(dd::text, 5, '0'), 'vllm' \
         FROM generate_series(0, {}) dd, generate_series(0, 1) r \
         UNION ALL SELECT 'ns' || (dd % 50) || '/dep-' || dd, 'hot-r' || r, 'node-' || lpad(dd::text, 5, '0'), 'vllm' \
         FROM generate_series(0, {}) dd, generate_series(0, 7) r ON CONFLICT DO NOTHING",
            d - 1,
            HOT_NODES.min(d) - 1
        ),
    )
    .await?;
    let serving_cols = "ts, replica_key, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, requests_per_s, \
                        prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean";
    let replica = "JOIN serving_replicas k ON k.deployment = 'ns' || (dd % 50) || '/dep-' || dd AND k.replica = rn \
                   AND k.node_id = 'node-' || lpad(dd::text, 5, '0') AND k.engine = 'vllm'";
    exec(
        pool,
        "raw serving samples: 1 h at 10 s, 2 replicas per deployment",
        &format!(
            "INSERT INTO serving_hot ({serving_cols}) \
         SELECT now() - s * interval '10 seconds', k.replica_key, (s % 7)::real, 8, 50, 0.2 + (s % 10) / 50.0, 0.03, \
                5 + (s % 30) / 3.0, 5000, 500, 8 \
         FROM generate_series(0, {}) dd CROSS JOIN generate_series(0, 1) r CROSS JOIN generate_series(1, 360) s \
         CROSS JOIN LATERAL (SELECT 'r' || r AS rn) x {replica}",
            d - 1
        ),
    )
    .await?;
    exec(pool, "raw serving samples: 1 h at 1 s, 8 replicas, for the hot deployments", &format!(
        "INSERT INTO serving_hot ({serving_cols}) \
         SELECT now() - s * interval '1 second', k.replica_key, ((s + r) % 7)::real, 8, 50, 0.2 + (s % 10) / 50.0, 0.03, \
                5 + (s % 30) / 3.0, 5000, 500, 8 \
         FROM generate_series(0, {}) dd CROSS JOIN generate_series(0, 7) r CROSS JOIN generate_series(1, 3600) s \
         CROSS JOIN LATERAL (SELECT 'hot-r' || r AS rn) x {replica}", HOT_NODES.min(d) - 1)).await?;
    exec(pool, "latest serving readings", &format!(
        "INSERT INTO serving_latest (deployment, replica, node_id, ts, engine, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, \
                                     requests_per_s, generation_tokens_per_s, batch_size_mean) \
         SELECT 'ns' || (dd % 50) || '/dep-' || dd, 'r' || r, 'node-' || lpad(dd::text, 5, '0'), now(), 'vllm', 1, 8, 50, 0.3, 0.03, 9, 500, 8 \
         FROM generate_series(0, {}) dd, generate_series(0, 1) r", d - 1)).await?;
    let t = Instant::now();
    for i in 0..d {
        let spec: PolicySpec = serde_json::from_value(serde_json::json!({
            "name": format!("dep-{i}"), "target": {"kind": "deployment", "namespace": format!("ns{}", i % 50), "name": format!("dep-{i}")},
            "min_replicas": 1, "max_replicas": 16, "metric": "gpu_utilization", "target_value": 60, "cold_start_secs": 120,
            "rebatch": {"min_batch_size": 4, "max_batch_size": 128, "itl_slo_ms": 60}
        }))?;
        spec.validate()?;
        db::policies::create(pool, &spec).await?;
    }
    println!("  loaded policies: {d} in {:.1} s", t.elapsed().as_secs_f64());
    exec(
        pool,
        "forecasts",
        "INSERT INTO forecasts (policy_id, made_at, step_secs, model, history, point, lower, upper, level) \
         SELECT id, now() - interval '5 seconds', 10, 'MSTL', ARRAY[1.0, 2.0], \
                ARRAY(SELECT 100 + 5 * sin(i / 3.0) FROM generate_series(1, 12) i), \
                ARRAY(SELECT 80 + 5 * sin(i / 3.0) FROM generate_series(1, 12) i), \
                ARRAY(SELECT 120 + 5 * sin(i / 3.0) FROM generate_series(1, 12) i), 0.8 FROM policies",
    )
    .await?;
    exec(pool, "decisions: 200 per policy over the last hour", "INSERT INTO decisions (policy_id, policy_version, decided_at, target, current_replicas, \
             desired_replicas, winner, reason, proposals, inputs, dry_run, applied) \
         SELECT p.id, 1, now() - i * interval '18 seconds', 'deployment ' || (p.spec->'target'->>'namespace') || '/' || (p.spec->'target'->>'name'), \
                2 + i % 3, 2 + (i + (i % 5 = 0)::int) % 3, 'gpu_utilization', \
                'gpu_utilization: 3 replicas at 71% against a 60% target need 4 (HPA ratio 1.18, tolerance 0.1)', '[]', '{}', false, true \
         FROM policies p, generate_series(1, 200) i").await?;
    exec(pool, "rebatch commands", "INSERT INTO commands (id, node_id, action, created_at, delivered_at, acked_at, completed_at, ok, result) \
         SELECT gen_random_uuid(), 'node-' || lpad((i % 1250)::text, 5, '0'), \
                jsonb_build_object('kind', 'rebatch', 'deployment', 'ns' || (i % 500 % 50) || '/dep-' || (i % 500), 'max_batch_size', 32 + i % 64, 'max_queue_delay_us', 2000), \
                now() - i * interval '1 second', now(), now(), now(), true, 'applied' FROM generate_series(0, 4999) i").await?;
    exec(pool, "alerts", "INSERT INTO alerts (dedup_key, rule, severity, source, component, group_name, summary, details, state, started_at, resolved_at) \
         SELECT 'k' || i, CASE WHEN i % 3 = 0 THEN 'gpu-temperature' ELSE 'node-silent' END, CASE WHEN i % 4 = 0 THEN 'critical' ELSE 'warning' END, \
                'node-' || lpad((i % 1250)::text, 5, '0'), 'gpu', 'node/node-' || lpad((i % 1250)::text, 5, '0'), 'alert ' || i, '{}', CASE WHEN i < 200 THEN 'firing' ELSE 'resolved' END, \
                now() - i * interval '1 minute', CASE WHEN i < 200 THEN NULL ELSE now() - i * interval '30 seconds' END \
         FROM generate_series(0, 1999) i").await?;
    exec(pool, "probes", &format!("INSERT INTO gpu_probes (node_id, gpu_index, ts, uuid, bandwidth_gb_s) \
         SELECT 'node-' || lpad(n::text, 5, '0'), g, now(), 'GPU', 3000 FROM generate_series(0, {}) n, generate_series(0, 7) g", HOT_NODES - 1)).await?;
    exec(pool, "silences", "INSERT INTO silences (id, matchers, comment, created_by, starts_at, ends_at) \
         SELECT gen_random_uuid(), jsonb_build_array(jsonb_build_object('label', 'node', 'value', 'node-' || lpad((i * 37)::text, 5, '0'))), \
                'maintenance ' || i, 'bench', now() - interval '1 hour' + (i % 3 = 0)::int * interval '2 hours', now() + interval '4 hours' \
         FROM generate_series(0, 19) i").await?;
    // Opportunities as the refresher leaves them after a week: open ones for idle GPUs and deployments, and
    // many more closed or dismissed ones.
    exec(pool, "opportunities: 2,000 open, 18,000 closed or dismissed", &format!("INSERT INTO opportunities (key, kind, status, deployment, node_id, gpu_index, title, evidence, \
             gpu_hours_per_week, saving_per_week, currency, confidence, expected_value, latency, action, first_seen, last_seen, closed_at, dismissed_at) \
         SELECT 'bench:' || i, (ARRAY['idle_gpu', 'memory_only', 'consolidation', 'batching', 'throttling'])[1 + i % 5], \
                CASE WHEN i < 2000 THEN 'open' WHEN i % 50 = 0 THEN 'dismissed' ELSE 'closed' END, \
                'ns' || (i % {d} % 50) || '/dep-' || (i % {d}), 'node-' || lpad((i % {nodes})::text, 5, '0'), i % 8, 'opportunity ' || i, \
                jsonb_build_object('series', 'util', 'from_secs', extract(epoch FROM now() - interval '2 hours')::bigint, \
                                   'to_secs', extract(epoch FROM now())::bigint, 'numbers', jsonb_build_object('util_mean_pct', 1.5)), \
                20 + i % 150, 40 + i % 300, 'USD', 0.5 + (i % 50) / 100.0, (40 + i % 300) * (0.5 + (i % 50) / 100.0), \
                jsonb_build_object('summary', 'fine'), jsonb_build_object('kind', 'none', 'description', 'release the GPU'), \
                now() - (i % 10000) * interval '1 minute', now() - (i % 100) * interval '1 minute', \
                CASE WHEN i >= 2000 AND i % 50 <> 0 THEN now() - (i % 5000) * interval '1 minute' END, \
                CASE WHEN i >= 2000 AND i % 50 = 0 THEN now() - (i % 5000) * interval '1 minute' END \
         FROM generate_series(0, 19999) i")).await?;
    // Anomaly events over a week: GPU series and deployments, 100 still open.
    exec(pool, "anomalies: 30,000 over the last week", &format!("INSERT INTO anomalies (node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence, updated_at) \
         SELECT CASE WHEN i % 4 = 0 THEN '' ELSE 'node-' || lpad((i % {nodes})::text, 5, '0') END, \
                CASE WHEN i % 4 = 0 THEN 'ns' || (i % {d} % 50) || '/dep-' || (i % {d}) ELSE '' END, \
                CASE WHEN i % 4 = 0 THEN 'deployment:ns' || (i % {d} % 50) || '/dep-' || (i % {d}) \
                     ELSE 'gpu:node-' || lpad((i % {nodes})::text, 5, '0') || ':' || (i % 8) END, \
                (ARRAY['util', 'power', 'temp', 'ttft'])[1 + i % 4], CASE WHEN i % 10 = 0 THEN 'peers' ELSE 'detector' END, \
                now() - i * interval '20 seconds', CASE WHEN i < 100 THEN NULL ELSE now() - i * interval '20 seconds' + interval '5 minutes' END, \
                (ARRAY['info', 'warning', 'critical'])[1 + i % 3], 3 + (i % 70) / 10.0, jsonb_build_object('value', 97.0, 'expected', 40.0), now() \
         FROM generate_series(0, 29999) i")).await?;
    exec(pool, "idle capacity: a week of refreshes every 5 minutes", "INSERT INTO idle_capacity (computed_at, window_start, window_end, gpus_observed, \
             idle_gpu_equivalent, idle_share, gpu_hours_per_week, money_per_week, currency, by_model) \
         SELECT now() - i * interval '5 minutes', now() - i * interval '5 minutes' - interval '1 hour', now() - i * interval '5 minutes', \
                10000, 812.5, 0.081, 136500, 341250, 'USD', '[]' FROM generate_series(0, 2015) i").await?;
    // What a running server's rollup job would have done by now (it runs every minute; the first run after
    // start would otherwise roll up the whole hour while the pages are measured).
    let t = Instant::now();
    let r = db::rollups::run(pool, chrono::Utc::now()).await?;
    println!("  rolled up: {} minute rows in {:.1} s", r.minute_rows, t.elapsed().as_secs_f64());
    exec(pool, "analyze", "ANALYZE").await?;
    Ok(())
}

/// Registers `nodes` as reporting now (`bench query`).
pub async fn nodes(conn: &mut sqlx::PgConnection, nodes: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, last_seen) \
         SELECT n, n, 'bench', 'nvml', now() FROM UNNEST($1::text[]) n",
    )
    .bind(nodes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Binary COPY of latest readings: node, index, ts, uuid, model, util, memory used and total, power,
/// temperature, SM clock, throttle reasons, last XID.
pub const GPU_LATEST_COPY: &str = "COPY gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, \
    mem_total_bytes, power_w, temp_c, sm_clock_mhz, throttle_reasons, xid_last) FROM STDIN (FORMAT binary)";

/// Binary COPY of 1-minute GPU rollups, every column in table order.
pub const GPU_ROLLUP_1M_COPY: &str = "COPY gpu_rollup_1m FROM STDIN (FORMAT binary)";

/// Vacuums and analyses what was seeded (so reads are measured on settled tables) and returns the
/// database's size, MiB.
pub async fn settle(conn: &mut sqlx::PgConnection) -> Result<f64, sqlx::Error> {
    sqlx::query("VACUUM ANALYZE").execute(&mut *conn).await?;
    sqlx::query_scalar("SELECT pg_database_size(current_database())::float8 / 1048576").fetch_one(conn).await
}
