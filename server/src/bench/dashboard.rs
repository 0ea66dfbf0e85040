//! `fleetpilot bench dashboard`: every dashboard page at fleet scale. Loads 10,000 GPUs (1,250 nodes x 8) and
//! 500 deployments with policies, forecasts, decisions, rebatch commands, alerts, silences, opportunities,
//! anomaly events, idle-capacity refreshes, rollups and raw samples,
//! starts the server, then has `--clients` concurrent clients request each page in turn (each client waits
//! `--think-ms` between its requests, as a person or a live-refreshing page does) and prints p50/p99 per
//! page. The last line is `overview_p99_ms=… max_page_p99_ms=… slowest_page=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{self, users::Role};
use crate::domain::policy::PolicySpec;
use crate::startup::Application;

use super::quantile;

/// Options of the dashboard benchmark.
#[derive(Debug, Clone)]
pub struct DashboardBenchOptions {
    /// GPUs in the fleet (8 per node).
    pub gpus: usize,
    /// Deployments, each with a policy.
    pub deployments: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client per page.
    pub requests: usize,
    /// Pause of each client between its requests, milliseconds.
    pub think_ms: u64,
    /// Only the pages of these names; every page when empty.
    pub pages: Vec<String>,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

const GPUS_PER_NODE: usize = 8;
/// Nodes with one hour of 1 s raw GPU samples (the node and GPU pages ask for these), and deployments with
/// one hour of 1 s serving samples from 8 replicas.
const HOT_NODES: usize = 10;

async fn exec(pool: &sqlx::PgPool, what: &str, sql: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(pool).await?;
    println!("  loaded {what}: {} rows in {:.1} s", r.rows_affected(), t.elapsed().as_secs_f64());
    Ok(())
}

/// Loads the fleet.
async fn load(pool: &sqlx::PgPool, nodes: usize, deployments: usize) -> anyhow::Result<()> {
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
    let raw_cols = "node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, sm_clock_mhz, \
                    mem_clock_mhz, throttle_reasons, ecc_dbe_total, xid_last";
    let raw_vals = "'node-' || lpad(n::text, 5, '0'), g, t, 'GPU', 'NVIDIA H100 80GB HBM3', ((n + g + s) % 100)::real, 40000000000, \
                    85520809984, 400, 60, 1980, 2619, 0, CASE WHEN n = 3 AND g = 1 THEN 2 ELSE 0 END, 0";
    exec(pool, "raw GPU samples: 1 h at 1 s for the hot nodes", &format!(
        "INSERT INTO gpu_samples ({raw_cols}) SELECT {raw_vals} FROM generate_series(0, {}) n, generate_series(0, 7) g, \
         generate_series(1, 3600) s, LATERAL (SELECT now() - s * interval '1 second' AS t) x", HOT_NODES - 1)).await?;
    exec(pool, "raw GPU samples: 5 min at 10 s for every other node", &format!(
        "INSERT INTO gpu_samples ({raw_cols}) SELECT {raw_vals} FROM generate_series({HOT_NODES}, {n_max}) n, generate_series(0, 7) g, \
         generate_series(1, 30) s, LATERAL (SELECT now() - s * interval '10 seconds' AS t) x")).await?;
    exec(pool, "raw serving samples: 1 h at 10 s, 2 replicas per deployment", &format!(
        "INSERT INTO serving_samples (node_id, deployment, replica, ts, engine, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, \
                                      requests_per_s, prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean) \
         SELECT 'node-' || lpad(dd::text, 5, '0'), 'ns' || (dd % 50) || '/dep-' || dd, 'r' || r, now() - s * interval '10 seconds', 'vllm', \
                (s % 7)::real, 8, 50, 0.2 + (s % 10) / 50.0, 0.03, 5 + (s % 30) / 3.0, 5000, 500, 8 \
         FROM generate_series(0, {}) dd, generate_series(0, 1) r, generate_series(1, 360) s", d - 1)).await?;
    exec(pool, "raw serving samples: 1 h at 1 s, 8 replicas, for the hot deployments", &format!(
        "INSERT INTO serving_samples (node_id, deployment, replica, ts, engine, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, \
                                      requests_per_s, prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean) \
         SELECT 'node-' || lpad(dd::text, 5, '0'), 'ns' || (dd % 50) || '/dep-' || dd, 'hot-r' || r, now() - s * interval '1 second', 'vllm', \
                ((s + r) % 7)::real, 8, 50, 0.2 + (s % 10) / 50.0, 0.03, 5 + (s % 30) / 3.0, 5000, 500, 8 \
         FROM generate_series(0, {}) dd, generate_series(0, 7) r, generate_series(1, 3600) s", HOT_NODES.min(d) - 1)).await?;
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
        spec.validate().map_err(|e| anyhow::anyhow!("bench policy: {}", e.error))?;
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

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: DashboardBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.gpus >= GPUS_PER_NODE * HOT_NODES, "--gpus must be at least {}", GPUS_PER_NODE * HOT_NODES);
    anyhow::ensure!(
        opts.deployments >= 1 && opts.clients >= 1 && opts.requests >= 1,
        "--deployments, --clients, --requests >= 1"
    );
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let nodes = opts.gpus.div_ceil(GPUS_PER_NODE);
    println!("loading {} GPUs on {nodes} nodes, {} deployments", nodes * GPUS_PER_NODE, opts.deployments);
    let t = Instant::now();
    load(&pool, nodes, opts.deployments).await?;
    println!("loaded in {:.1} s", t.elapsed().as_secs_f64());

    let mut settings = super::bench_settings(url.clone());
    settings.control.enabled = false;
    settings.alerts.node_silent_secs = 3600;
    let app_pool = db::connect(&url, 20).await?;
    let app = Application::build_with_pool(settings, app_pool).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    // A logged-in operator: the session lookup is part of every request, as for a person.
    let hash = tokio::task::spawn_blocking(|| db::users::hash_password("bench-password"))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    db::users::upsert(&pool, "bench", &hash, Role::Operator).await?;
    let sid = "bench-session-id";
    db::users::create_session(&pool, sid, "bench", "csrf", chrono::Utc::now() + chrono::Duration::hours(2)).await?;
    let policy: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM policies ORDER BY name LIMIT 1").fetch_one(&pool).await?;

    let mut pages: Vec<(&str, Vec<String>)> = vec![
        ("overview", vec!["/".into()]),
        ("overview_page", vec!["/?page=7".into()]),
        ("deployments", vec!["/deployments".into()]),
        (
            "deployment",
            // Every hot deployment (8 replicas at 1 s) and a spread of the others.
            (0..HOT_NODES.min(opts.deployments))
                .chain((HOT_NODES..opts.deployments).step_by(7))
                .map(|i| format!("/deployments/ns{}/dep-{i}", i % 50))
                .collect(),
        ),
        ("node", (0..HOT_NODES).map(|n| format!("/nodes/node-{n:05}")).collect()),
        ("gpu", (0..HOT_NODES * 8).map(|i| format!("/nodes/node-{:05}/gpus/{}", i / 8, i % 8)).collect()),
        (
            "decisions",
            vec!["/decisions".into(), "/decisions?outcome=changed&page=3".into(), "/decisions?target=dep-42".into()],
        ),
        (
            "alerts",
            vec![
                "/alerts".into(),
                "/alerts?state=all&sort=oldest&page=5".into(),
                "/alerts?state=all&severity=critical&q=node-001&sort=severity".into(),
                "/alerts?state=all&node=node-00042".into(),
                "/alerts?rule=node-silent&page=2".into(),
            ],
        ),
        (
            "opportunities",
            vec![
                "/opportunities".into(),
                "/opportunities?status=all&sort=gpu_hours&page=4".into(),
                "/opportunities?kind=idle_gpu&sort=first_seen".into(),
                "/opportunities?deployment=ns7/dep-7".into(),
            ],
        ),
        ("opportunity", (1..=2000).step_by(97).map(|i| format!("/opportunities/{i}")).collect()),
        (
            "anomalies",
            vec![
                "/anomalies".into(),
                "/anomalies?state=all&range=7d&page=6".into(),
                "/anomalies?state=open&sort=score".into(),
                "/anomalies?node=node-00003&range=7d".into(),
                "/anomalies?deployment=ns2/dep-2&range=3d".into(),
            ],
        ),
        ("policies", vec!["/policies".into()]),
        ("policy_edit", vec![format!("/policies/{policy}")]),
        ("policy_preview", vec![format!("/policies/{policy}/preview")]),
        ("install", vec!["/install".into()]),
    ];
    if !opts.pages.is_empty() {
        pages.retain(|(name, _)| opts.pages.iter().any(|p| p == name));
        anyhow::ensure!(!pages.is_empty(), "--pages names no page");
    }
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(opts.clients).timeout(Duration::from_secs(60)).build()?;
    // Warm up: connections, caches, and one check that every page answers 200.
    for (name, urls) in &pages {
        for u in urls.iter().take(3) {
            let r = http.get(format!("{base}{u}")).header("cookie", format!("fp_session={sid}")).send().await?;
            anyhow::ensure!(r.status() == 200, "{name} {u}: HTTP {}", r.status());
            let _ = r.bytes().await?;
        }
    }
    println!(
        "{} clients, {} requests each per page, {} ms between a client's requests",
        opts.clients, opts.requests, opts.think_ms
    );
    let mut overview_p99 = 0.0_f64;
    let (mut max_other, mut slowest) = (0.0_f64, "");
    for (name, urls) in &pages {
        let urls = Arc::new(urls.clone());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..opts.clients {
            let (http, base, urls) = (http.clone(), base.clone(), urls.clone());
            let (n, think, clients) = (opts.requests, Duration::from_millis(opts.think_ms), opts.clients);
            tasks.push(tokio::spawn(async move {
                // Spread the clients' start over one think time, as independent people would be.
                tokio::time::sleep(think.mul_f64(c as f64 / clients as f64)).await;
                let mut lat = Vec::with_capacity(n);
                for i in 0..n {
                    let u = &urls[(c * 31 + i) % urls.len()];
                    let t = Instant::now();
                    let r = http.get(format!("{base}{u}")).header("cookie", format!("fp_session={sid}")).send().await?;
                    let ok = r.status() == 200;
                    let _ = r.bytes().await?;
                    anyhow::ensure!(ok, "{u}: not 200");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    tokio::time::sleep(think).await;
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        let count = all.len();
        let (p50, p99) = (quantile(&mut all, 0.5), quantile(&mut all, 0.99));
        println!(
            "{name:<16} requests={count:<5} p50_ms={p50:<7.1} p99_ms={p99:<7.1} req_per_s={:.0}",
            count as f64 / secs
        );
        if *name == "overview" {
            overview_p99 = p99;
        }
        if p99 > max_other {
            (max_other, slowest) = (p99, name);
        }
    }
    let _ = stop.send(true);
    server.await??;
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!("overview_p99_ms={overview_p99:.1} max_page_p99_ms={max_other:.1} slowest_page={slowest}");
    Ok(())
}
