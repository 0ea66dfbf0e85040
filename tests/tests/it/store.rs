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
    let stats = fleetpilot::db::rollups::run(&app.pool, Utc::now()).await.unwrap();
    assert!(stats.minute_rows >= 2, "{stats:?}");
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
