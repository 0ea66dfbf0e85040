//! The store: rollups maintained incrementally (including late data), series read at the right
//! resolution, and the fleet overview.

use chrono::{Duration, DurationRound as _, Utc};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn batch(seq: u64, ts_ms: i64, util: f64) -> Value {
    json!({
        "version": 1, "agent_id": "node-r", "seq": seq, "sent_at_ms": ts_ms,
        "node": {"hostname": "node-r", "agent_version": "test", "gpu_source": "simulated", "deployment": "ml/llama"},
        "gpus": [
            {"ts_ms": ts_ms, "gpu_index": 0, "uuid": "GPU-0", "util_pct": util, "mem_used_bytes": 10, "mem_total_bytes": 20,
             "power_w": 300.0, "temp_c": 60.0, "sm_clock_mhz": 1980},
            {"ts_ms": ts_ms + 1000, "gpu_index": 0, "uuid": "GPU-0", "util_pct": util + 10.0, "mem_used_bytes": 12, "mem_total_bytes": 20,
             "power_w": 320.0, "temp_c": 62.0, "sm_clock_mhz": 1900, "throttle_reasons": 32}
        ],
        "serving": [
            {"ts_ms": ts_ms, "deployment": "ml/llama", "replica": "r1", "engine": "vllm", "queue_depth": 3, "running": 8,
             "itl_p95_s": 0.05, "prompt_tokens_per_s": 1000.0, "generation_tokens_per_s": 200.0}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_follow_raw_data_including_late_batches_and_series_pick_their_resolution() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.rollup_secs = 3600.0; // driven by hand below
    })
    .await;
    let minute = (Utc::now() - Duration::minutes(10)).duration_trunc(Duration::minutes(1)).unwrap();
    let t0 = minute.timestamp_millis() + 5_000;
    let r = app.ingest_raw(serde_json::to_vec(&batch(1, t0, 40.0)).unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM gpu_latest").await, 1, "one latest row per GPU");
    assert_eq!(app.count("SELECT count(*) FROM serving_latest").await, 1, "one latest row per replica");
    // The app's own rollup task may hold the rollup lock at this moment (then `run` does nothing and says so):
    // run until the minute is rolled up, by whichever of the two.
    let mut rolled = 0;
    for _ in 0..50 {
        rolled += fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap().minute_rows;
        if app.count("SELECT count(*) FROM gpu_rollup_1m WHERE node_id = 'node-r'").await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        app.count("SELECT count(*) FROM gpu_rollup_1m WHERE node_id = 'node-r'").await > 0,
        "rolled up ({rolled} rows here)"
    );
    let (n, mean, max, throttle): (i32, f32, f32, i64) = sqlx::query_as(
        "SELECT samples, util_mean, util_max, throttle_any FROM gpu_rollup_1m WHERE node_id = 'node-r' AND bucket = $1",
    )
    .bind(minute)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((n, mean, max, throttle), (2, 45.0, 50.0, 32));
    assert_eq!(app.count("SELECT count(*) FROM gpu_rollup_1h WHERE node_id = 'node-r'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM serving_rollup_1m WHERE deployment = 'ml/llama'").await, 1);

    // A late batch (replayed after an outage) into the same minute is folded in by the next run.
    let r = app.ingest_raw(serde_json::to_vec(&batch(2, t0 + 10_000, 80.0)).unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 1);
    fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap();
    let (n, max): (i32, f32) =
        sqlx::query_as("SELECT samples, util_max FROM gpu_rollup_1m WHERE node_id = 'node-r' AND bucket = $1")
            .bind(minute)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((n, max), (4, 90.0));
    assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 0);

    // Short ranges read raw samples, a day reads minutes, a month reads hours.
    let get = |path: String| {
        let app = &app;
        async move {
            let r = app.http.get(format!("{}{path}", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let enc = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).replace('+', "%2B");
    let raw = get(format!("/api/v1/gpus/node-r/0/series?from={}", enc(minute - Duration::minutes(1)))).await;
    assert_eq!(raw["resolution"], "raw");
    assert_eq!(raw["points"].as_array().unwrap().len(), 4);
    let day = get(format!("/api/v1/gpus/node-r/0/series?from={}", enc(Utc::now() - Duration::days(1)))).await;
    assert_eq!(day["resolution"], "minute");
    assert_eq!(day["points"].as_array().unwrap().len(), 1);
    let month = get(format!("/api/v1/gpus/node-r/0/series?from={}", enc(Utc::now() - Duration::days(30)))).await;
    assert_eq!(month["resolution"], "hour");
    let dep = get(format!("/api/v1/deployments/ml/llama/series?from={}", enc(minute - Duration::minutes(1)))).await;
    assert_eq!(dep["points"][0]["queue_depth"], 3.0);
    let seen = get(format!(
        "/api/v1/deployments/ml/llama/metric?metric=gpu_utilization&bucket_secs=60&from={}",
        enc(minute - Duration::minutes(1))
    ))
    .await;
    assert_eq!(seen["nodes"][0], "node-r");
    assert!(seen["points"].as_array().unwrap().iter().any(|p| p["total"].as_f64().unwrap() > 0.0), "{seen}");
    let queue = get(format!(
        "/api/v1/deployments/ml/llama/metric?metric=queue_depth_per_replica&from={}",
        enc(minute - Duration::minutes(1))
    ))
    .await;
    assert_eq!(queue["points"][0]["total"], 3.0);
    let fleet = get("/api/v1/fleet".into()).await;
    assert_eq!(fleet["nodes"], 1);

    let bad = app
        .http
        .get(format!("{}/api/v1/gpus/node-r/0/series?from=yesterday", app.address))
        .bearer_auth(&app.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "from");
    app.stop().await;
}

/// The dashboard's charts read 1-minute rollups up to the rollup watermark and raw samples after it: what
/// they draw must be what the raw samples alone give, bucket for bucket, up to the newest second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_from_rollups_plus_the_raw_tail_match_the_raw_samples() {
    use fleetpilot::db::series::{self, ChartPlan, Resolution};
    use fleetpilot::domain::policy::Metric;

    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.rollup_secs = 3600.0; // driven by hand below
    })
    .await;
    let now = Utc::now();
    let from = (now - Duration::minutes(40)).duration_trunc(Duration::minutes(1)).unwrap();
    sqlx::query("INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, deployment, last_seen) VALUES ('node-c', 'c', 't', 'simulated', 'ml/chart', now())")
        .execute(&app.pool)
        .await
        .unwrap();
    // 40 minutes at 1 s up to now: two GPUs with a saw-tooth, a throttled stretch and a clock dip; two
    // replicas with their own levels. Written with SQL, not through ingest, so the hour partitions are made
    // here as ingest makes them: the app's packer may have dropped the past hour's already. A later pass packs
    // these rows; the reads below see them in either layout.
    let partitions = fleetpilot::db::Partitions::default();
    let mut written = Err(sqlx::Error::RowNotFound);
    for _ in 0..3 {
        partitions.forget_all();
        partitions.ensure_hours(&app.pool, [from, now]).await.unwrap();
        written = sqlx::query(
            "INSERT INTO gpu_samples (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, \
                                      sm_clock_mhz, mem_clock_mhz, throttle_reasons, ecc_dbe_total, xid_last) \
             SELECT 'node-c', g, $1 + s * interval '1 second', 'GPU-' || g, 'test', ((s * 7 + g * 13) % 100)::real, 1000 + s, 2000000, \
                    200 + s % 50, 50 + s % 20, CASE WHEN s % 600 = 17 THEN 900 ELSE 1980 END, 2619, \
                    CASE WHEN s BETWEEN 700 AND 760 THEN 4 ELSE 0 END, 0, 0 \
             FROM generate_series(0, 1) g, generate_series(0, $2) s",
        )
        .bind(from)
        .bind((now - from).num_seconds() as i32)
        .execute(&app.pool)
        .await;
        if written.is_ok() {
            break;
        }
    }
    written.unwrap();
    sqlx::query(
        "INSERT INTO serving_samples (node_id, deployment, replica, ts, engine, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, \
                                      requests_per_s, prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean) \
         SELECT 'node-c', 'ml/chart', 'r' || r, $1 + s * interval '1 second', 'vllm', (s % 9)::real + r, 4 + r, 30 + s % 40, \
                0.1 + (s % 13) / 100.0, 0.02 + r / 100.0, 3 + (s % 5), 900, 100 + r * 10 + s % 7, 8 \
         FROM generate_series(1, 2) r, generate_series(0, $2) s",
    )
    .bind(from)
    .bind((now - from).num_seconds() as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    // Written behind the ingest path (no dirty minutes): roll up from the first sample, as on a first run.
    sqlx::query("DELETE FROM rollup_watermark").execute(&app.pool).await.unwrap();
    let stats = fleetpilot::db::rollups::run(&app.pool, now).await.unwrap();
    assert!(stats.minute_rows >= 38 * 4, "{stats:?}");
    let to = from + Duration::minutes(41);
    let span = (to - from).num_seconds();

    for bucket in [60, 180] {
        let rolled = ChartPlan::new(from, to, Duration::minutes(15), (span + bucket - 1) / bucket, 1);
        assert_eq!((rolled.resolution, rolled.bucket_secs), (Resolution::Minute, bucket), "{rolled:?}");
        assert!(rolled.describe().starts_with("1-minute rollups"), "{}", rolled.describe());
        let raw = ChartPlan { resolution: Resolution::Raw, bucket_secs: bucket, rollups_upto: None, young: None };
        fn minute<T>((plan, points): (ChartPlan, Vec<T>)) -> Vec<T> {
            assert_eq!(plan.resolution, Resolution::Minute, "40 minutes of data are read from the rollups");
            points
        }
        fn plain<T>((_, points): (ChartPlan, Vec<T>)) -> Vec<T> {
            points
        }

        let (a, b) = (
            minute(series::gpu_chart(&app.pool, "node-c", 1, from, to, &rolled).await.unwrap()),
            plain(series::gpu_chart(&app.pool, "node-c", 1, from, to, &raw).await.unwrap()),
        );
        assert_eq!(a.len(), b.len(), "bucket {bucket}");
        assert!(a.last().unwrap().ts > now - Duration::seconds(bucket + 1), "the newest bucket is drawn");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.ts, y.ts);
            let close = |p: Option<f32>, q: Option<f32>| matches!((p, q), (Some(p), Some(q)) if (p - q).abs() < 1e-3);
            assert!(close(x.util_pct, y.util_pct), "{x:?} vs {y:?}");
            assert!(close(x.power_w, y.power_w) && close(x.temp_c, y.temp_c), "{x:?} vs {y:?}");
            assert_eq!(
                (x.util_max, x.mem_used_bytes, x.sm_clock_mhz, x.throttle_reasons),
                (y.util_max, y.mem_used_bytes, y.sm_clock_mhz, y.throttle_reasons)
            );
        }
        assert!(
            a.iter().any(|p| p.sm_clock_mhz == Some(900)) && a.iter().any(|p| p.throttle_reasons == Some(4)),
            "extremes kept"
        );

        let (a, b) = (
            minute(series::node_gpu_chart(&app.pool, "node-c", from, to, &rolled).await.unwrap()),
            plain(series::node_gpu_chart(&app.pool, "node-c", from, to, &raw).await.unwrap()),
        );
        assert_eq!(a.len(), b.len(), "bucket {bucket}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.gpu_index, x.ts), (y.gpu_index, y.ts));
            let close = |p: Option<f64>, q: Option<f64>| matches!((p, q), (Some(p), Some(q)) if (p - q).abs() < 1e-3);
            assert!(close(x.util_pct, y.util_pct) && close(x.power_w, y.power_w), "{x:?} vs {y:?}");
        }

        let (a, b) = (
            minute(series::deployment_chart(&app.pool, "ml/chart", from, to, &rolled).await.unwrap()),
            plain(series::deployment_chart(&app.pool, "ml/chart", from, to, &raw).await.unwrap()),
        );
        assert_eq!(a.len(), b.len(), "bucket {bucket}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.ts, x.replicas), (y.ts, y.replicas));
            for (u, v) in [
                (x.queue_depth, y.queue_depth),
                (x.running, y.running),
                (x.requests_per_s, y.requests_per_s),
                (x.generation_tokens_per_s, y.generation_tokens_per_s),
                (x.kv_cache_pct.unwrap(), y.kv_cache_pct.unwrap()),
                (x.ttft_p95_s.unwrap(), y.ttft_p95_s.unwrap()),
                (x.itl_p95_s.unwrap(), y.itl_p95_s.unwrap()),
            ] {
                assert!((u - v).abs() < 1e-3, "{x:?} vs {y:?}");
            }
        }
        assert_eq!(b[0].replicas, 2);

        for metric in [Metric::GpuUtilization, Metric::QueueDepthPerReplica, Metric::TokensPerSecPerReplica] {
            let (a, b) = (
                minute(
                    series::deployment_metric_chart(&app.pool, "ml/chart", None, metric, from, to, &rolled)
                        .await
                        .unwrap(),
                ),
                plain(
                    series::deployment_metric_chart(&app.pool, "ml/chart", None, metric, from, to, &raw).await.unwrap(),
                ),
            );
            assert_eq!(a.len(), b.len(), "{metric:?} bucket {bucket}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((x.bucket_secs, x.members), (y.bucket_secs, y.members), "{metric:?}");
                assert!((x.total - y.total).abs() < 1e-3, "{metric:?}: {x:?} vs {y:?}");
            }
        }
    }
    // Short ranges are raw; a week reads hours.
    let short = ChartPlan::new(now - Duration::minutes(15), now, Duration::minutes(15), 600, 1);
    assert_eq!((short.resolution, short.bucket_secs), (Resolution::Raw, 2));
    let week = ChartPlan::new(now - Duration::days(7), now, Duration::minutes(15), 300, 10);
    assert_eq!((week.resolution, week.bucket_secs), (Resolution::Hour, 3600));

    // A series younger than the raw window is read raw at the chart's resolution whatever the range: a new
    // fleet's first minutes are not a few rollup points. One with no data at all reads nothing more.
    sqlx::query(
        "INSERT INTO gpu_samples (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, \
                                  sm_clock_mhz, mem_clock_mhz, throttle_reasons, ecc_dbe_total, xid_last) \
         SELECT 'node-y', 0, $1 - s * interval '1 second', 'GPU-y', 'test', 50, 1, 2, 300, 60, 1980, 2619, 0, 0, 0 \
         FROM generate_series(1, 300) s",
    )
    .bind(now)
    .execute(&app.pool)
    .await
    .unwrap();
    let hour = ChartPlan::new(now - Duration::hours(1), now + Duration::seconds(1), Duration::minutes(15), 300, 1);
    let (plan, young) =
        series::gpu_chart(&app.pool, "node-y", 0, now - Duration::hours(1), now + Duration::seconds(1), &hour)
            .await
            .unwrap();
    assert_eq!((plan.resolution, plan.bucket_secs), (Resolution::Raw, 13), "{plan:?}");
    assert!(young.len() >= 23, "five minutes in 13 s buckets: {}", young.len());
    let (plan, none) =
        series::gpu_chart(&app.pool, "node-none", 0, now - Duration::hours(1), now + Duration::seconds(1), &hour)
            .await
            .unwrap();
    assert!(none.is_empty() && plan.resolution == Resolution::Raw);
    let (plan, _) =
        series::gpu_chart(&app.pool, "node-c", 0, now - Duration::hours(1), now + Duration::seconds(1), &hour)
            .await
            .unwrap();
    assert_eq!(plan.resolution, Resolution::Minute, "40 minutes of data");
}

/// Posts `batch(seq, ts, util)` (two GPU samples 1 s apart, one serving sample) and expects it stored.
async fn post(app: &crate::helpers::TestApp, seq: u64, ts_ms: i64, util: f64) {
    let r = app.ingest_raw(serde_json::to_vec(&batch(seq, ts_ms, util)).unwrap()).await;
    assert_eq!(r.status(), 200, "batch {seq}");
}

/// Runs the packer until no due hour has hot rows left (the app's own packer may hold the lock at first).
async fn pack_all(app: &crate::helpers::TestApp) {
    let partitions = fleetpilot::db::Partitions::default();
    for _ in 0..100 {
        fleetpilot::db::pack::run(&app.pool, Utc::now(), &partitions).await.unwrap();
        if app.count("SELECT count(*) FROM gpu_samples_hot WHERE ts < now() - interval '2 hours'").await == 0
            && app.count("SELECT count(*) FROM serving_hot WHERE ts < now() - interval '2 hours'").await == 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("due hours still hold hot rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_is_packed_into_chunks_and_late_samples_are_merged_into_them_counted_once() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.rollup_secs = 3600.0; // driven by hand below
    })
    .await;
    // An hour that ended three hours ago is due for packing; so is the one after it.
    let hour = (Utc::now() - Duration::hours(3)).duration_trunc(Duration::hours(1)).unwrap();
    let t0 = hour.timestamp_millis();
    post(&app, 1, t0 + 5_000, 10.0).await; // 00:05, 00:06 (chunk 1)
    post(&app, 2, t0 + 65 * 60_000, 20.0).await; // 01:05 (the next hour)
    let before: Vec<(chrono::DateTime<Utc>, Option<f32>)> =
        sqlx::query_as("SELECT ts, util_pct FROM gpu_samples WHERE node_id = 'node-r' ORDER BY ts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(before.len(), 4);
    let serving = "SELECT ts, queue_depth, running, itl_p95_s, kv_cache_pct, generation_tokens_per_s FROM serving_samples \
                   WHERE deployment = 'ml/llama' AND replica = 'r1' ORDER BY ts";
    type ServingRow = (chrono::DateTime<Utc>, f32, f32, Option<f32>, Option<f32>, f32);
    let serving_before: Vec<ServingRow> = sqlx::query_as(serving).fetch_all(&app.pool).await.unwrap();
    assert_eq!(serving_before.len(), 2);

    pack_all(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM gpu_chunks").await, 2, "one chunk per GPU per 10 minutes");
    assert_eq!(app.count("SELECT count(*) FROM serving_chunks").await, 2, "one chunk per replica per 10 minutes");
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples_hot WHERE ts < now() - interval '2 hours'").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM serving_hot WHERE ts < now() - interval '2 hours'").await, 0);
    let after: Vec<(chrono::DateTime<Utc>, Option<f32>)> =
        sqlx::query_as("SELECT ts, util_pct FROM gpu_samples WHERE node_id = 'node-r' ORDER BY ts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(after, before, "the same samples, read back from the chunks");
    let serving_after: Vec<ServingRow> = sqlx::query_as(serving).fetch_all(&app.pool).await.unwrap();
    assert_eq!(serving_after, serving_before, "the same serving samples (NULLs included), read back from the chunks");

    // Late samples (an agent replaying after an outage) for the packed chunk, interleaved with its samples,
    // and a replayed duplicate batch (same seq) that must not be stored again.
    post(&app, 3, t0 + 2_000, 30.0).await; // 00:02, 00:03: before the packed ones
    post(&app, 1, t0 + 5_000, 10.0).await;
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples WHERE node_id = 'node-r'").await, 6, "hot + packed");
    pack_all(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM gpu_chunks").await, 2, "merged into the existing chunk");
    let (n, offsets): (i32, Vec<i32>) = sqlx::query_as(
        "SELECT c.samples, c.ts_off_ms FROM gpu_chunks c JOIN gpus g USING (gpu_key) WHERE c.chunk_start = $1",
    )
    .bind(hour)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((n, offsets), (4, vec![2_000, 3_000, 5_000, 6_000]), "in time order");
    assert_eq!(app.count("SELECT count(*) FROM serving_chunks").await, 2, "the late serving sample merged too");
    let (n, offsets): (i32, Vec<i32>) =
        sqlx::query_as("SELECT samples, ts_off_ms FROM serving_chunks WHERE chunk_start = $1")
            .bind(hour)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((n, offsets), (2, vec![2_000, 5_000]), "serving: in time order, the replayed batch counted once");
    assert_eq!(
        app.count("SELECT count(*) FROM serving_samples WHERE deployment = 'ml/llama' AND replica = 'r1'").await,
        3
    );
    let utils: Vec<Option<f32>> =
        sqlx::query_scalar("SELECT util_pct FROM gpu_samples_between($1, $2) WHERE node_id = 'node-r' ORDER BY ts")
            .bind(hour)
            .bind(hour + Duration::hours(2))
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(utils, vec![Some(30.0), Some(40.0), Some(10.0), Some(20.0), Some(20.0), Some(30.0)]);

    // Rollups of the late minute are recomputed from the chunks.
    fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap();
    let (samples, max): (i32, f32) =
        sqlx::query_as("SELECT samples, util_max FROM gpu_rollup_1m WHERE node_id = 'node-r' AND bucket = $1")
            .bind(hour)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((samples, max), (4, 40.0));
    // The API's series reads both layouts.
    let (status, body) = app
        .api_call(
            reqwest::Method::GET,
            &format!(
                "/api/v1/gpus/node-r/0/series?from={}&to={}",
                urlencoding(hour),
                urlencoding(hour + Duration::minutes(90))
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().map(|p| p.len()), Some(6), "{body}");
    app.stop().await;
}

fn urlencoding(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).replace('+', "%2B")
}

/// A late batch for a minute the rollup job is recomputing is stored at once, not after the job's transaction
/// (with a unique key on the dirty minutes, its upsert waited for the job, and every ingest group with it), and
/// its mark survives the job, so the next run folds it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_batch_does_not_wait_for_a_rollup_recomputing_its_minute_and_is_folded_in_next() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.rollup_secs = 3600.0; // driven by hand below
    })
    .await;
    let minute = (Utc::now() - Duration::minutes(10)).duration_trunc(Duration::minutes(1)).unwrap();
    let t0 = minute.timestamp_millis() + 5_000;
    post(&app, 1, t0, 10.0).await;
    fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap();
    post(&app, 2, t0 + 10_000, 50.0).await; // late: marks the minute dirty
    // (Marked here too, in case the app's own startup rollup consumed that mark already.)
    sqlx::query("INSERT INTO rollup_dirty (bucket) VALUES ($1)").bind(minute).execute(&app.pool).await.unwrap();

    // A rollup job in the middle of recomputing that minute: it has claimed the marks and not committed.
    let mut job = app.pool.begin().await.unwrap();
    let claimed: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("DELETE FROM rollup_dirty RETURNING bucket").fetch_all(&mut *job).await.unwrap();
    assert!(claimed.contains(&minute), "{claimed:?}");
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.ingest_raw(serde_json::to_vec(&batch(3, t0 + 20_000, 90.0)).unwrap()),
    )
    .await
    .expect("a late batch waited for the rollup job's transaction");
    assert_eq!(late.status(), 200);
    job.commit().await.unwrap();

    // The job's claim is gone; the late batch's mark is not.
    assert_eq!(app.count("SELECT count(DISTINCT bucket) FROM rollup_dirty").await, 1);
    // The app's own rollup task may hold the rollup lock at a given moment: run until the mark is consumed.
    for _ in 0..50 {
        fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap();
        if app.count("SELECT count(*) FROM rollup_dirty").await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (n, max): (i32, f32) =
        sqlx::query_as("SELECT samples, util_max FROM gpu_rollup_1m WHERE node_id = 'node-r' AND bucket = $1")
            .bind(minute)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((n, max), (6, 100.0), "all three batches' samples, two each");
    assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 0);
    app.stop().await;
}
