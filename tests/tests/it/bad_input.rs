//! Bad input gets a 400 naming the field (or 401), stores nothing, and never takes the server down.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_field_error, error_of, spawn_app};

/// (what, how to break a valid body, the field the 400 must name)
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn batch(seq: u64) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    json!({
        "version": 1, "agent_id": "node-1", "seq": seq, "sent_at_ms": now,
        "node": {"hostname": "node-1", "agent_version": "test", "gpu_source": "simulated"},
        "gpus": [
            {"ts_ms": now, "gpu_index": 0, "uuid": "GPU-0", "util_pct": 50.0, "mem_used_bytes": 1, "mem_total_bytes": 2,
             "power_w": 300.0, "temp_c": 60.0, "sm_clock_mhz": 1980},
            {"ts_ms": now, "gpu_index": 1, "uuid": "GPU-1", "util_pct": 20.0, "mem_used_bytes": 1, "mem_total_bytes": 2,
             "power_w": 200.0, "temp_c": 50.0, "sm_clock_mhz": 1980}
        ],
        "serving": [
            {"ts_ms": now, "deployment": "ml/llama", "replica": "r1", "engine": "vllm", "queue_depth": 3, "running": 8,
             "prompt_tokens_per_s": 1000.0, "generation_tokens_per_s": 200.0}
        ]
    })
}

async fn nothing_stored(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM serving_samples").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rejects_bad_batches_with_the_field_named_and_stores_nothing() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let cases: Vec<Case> = vec![
        ("utilization above 100", Box::new(|b| b["gpus"][1]["util_pct"] = json!(100.5)), "gpus[1].util_pct"),
        ("negative utilization", Box::new(|b| b["gpus"][0]["util_pct"] = json!(-1)), "gpus[0].util_pct"),
        ("wrong type", Box::new(|b| b["gpus"][0]["temp_c"] = json!("hot")), "gpus[0].temp_c"),
        ("unknown field", Box::new(|b| b["gpus"][0]["fan_pct"] = json!(3)), "gpus[0].fan_pct"),
        ("unknown top-level field", Box::new(|b| b["extra"] = json!(1)), "extra"),
        (
            "missing field",
            Box::new(|b| {
                b["gpus"][0].as_object_mut().unwrap().remove("uuid");
            }),
            "gpus[0].uuid",
        ),
        ("negative memory", Box::new(|b| b["gpus"][0]["mem_used_bytes"] = json!(-5)), "gpus[0].mem_used_bytes"),
        ("used above total", Box::new(|b| b["gpus"][0]["mem_used_bytes"] = json!(3)), "gpus[0].mem_used_bytes"),
        ("seconds for milliseconds", Box::new(|b| b["gpus"][0]["ts_ms"] = json!(1_700_000_000)), "gpus[0].ts_ms"),
        ("bad deployment", Box::new(|b| b["serving"][0]["deployment"] = json!("Not A Name")), "serving[0].deployment"),
        ("kv cache above 100", Box::new(|b| b["serving"][0]["kv_cache_pct"] = json!(140)), "serving[0].kv_cache_pct"),
        ("negative queue", Box::new(|b| b["serving"][0]["queue_depth"] = json!(-2)), "serving[0].queue_depth"),
        ("protocol version", Box::new(|b| b["version"] = json!(9)), "version"),
        ("empty agent id", Box::new(|b| b["agent_id"] = json!("")), "agent_id"),
    ];
    for (what, mutate, field) in cases {
        let mut b = batch(1);
        mutate(&mut b);
        let e = error_of(app.ingest_raw(serde_json::to_vec(&b).unwrap()).await, 400).await;
        assert_eq!(e["field"], field, "{what}: {e}");
        assert!(!e["error"].as_str().unwrap().is_empty(), "{what}");
    }
    for raw in ["", "{", "not json", "[1,2,3]", "{\"version\": 1}", "\u{0}\u{1}"] {
        let e = error_of(app.ingest_raw(raw.to_string()).await, 400).await;
        assert!(e["error"].is_string(), "{raw:?}: {e}");
    }
    nothing_stored(&app).await;

    // A good batch is stored once; the same batch again is acknowledged as a duplicate, not stored twice.
    let good = serde_json::to_vec(&batch(7)).unwrap();
    let ack: Value = app.ingest_raw(good.clone()).await.json().await.unwrap();
    assert_eq!(ack, json!({"seq": 7, "duplicate": false, "commands": []}));
    let again: Value = app.ingest_raw(good).await.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM serving_samples").await, 1);
    // A gzip-compressed body is accepted the same way.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &serde_json::to_vec(&batch(9)).unwrap()).unwrap();
    let headers = [("content-type", "application/json"), ("content-encoding", "gzip")];
    let r = app.agent_post("/api/v1/ingest", &headers, gz.finish().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples").await, 4);
    // ... and a bad batch after it loses nothing of what was accepted.
    let mut bad = batch(8);
    bad["gpus"][0]["util_pct"] = json!(1000);
    error_of(app.ingest_raw(serde_json::to_vec(&bad).unwrap()).await, 400).await;
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples").await, 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_get_401() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let body = serde_json::to_vec(&batch(1)).unwrap();
    let url = format!("{}/api/v1/ingest", app.address);
    let none = app.http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = app.http.post(&url).bearer_auth("nope").body(body.clone()).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // The API token is not an agent token, nor the other way round.
    let api_as_agent = app.http.post(&url).bearer_auth(&app.api_token).body(body).send().await.unwrap();
    assert_eq!(api_as_agent.status(), 401);
    for path in ["/api/v1/policies", "/api/v1/decisions", "/api/v1/alerts", "/api/v1/nodes"] {
        let r = app.http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = app.http.get(format!("{}{path}", app.address)).bearer_auth(&app.agent_token).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with the agent token");
    }
    nothing_stored(&app).await;
    app.stop().await;
}

fn policy() -> Value {
    json!({
        "name": "llama",
        "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
        "min_replicas": 1, "max_replicas": 8, "metric": "gpu_utilization", "target_value": 70
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reject_bad_specs_naming_the_field_and_keep_what_was_stored() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let cases: Vec<Case> = vec![
        ("min above max", Box::new(|p| p["min_replicas"] = json!(9)), "min_replicas"),
        ("negative replicas", Box::new(|p| p["min_replicas"] = json!(-1)), "min_replicas"),
        (
            "max zero",
            Box::new(|p| {
                p["min_replicas"] = json!(0);
                p["max_replicas"] = json!(0);
            }),
            "max_replicas",
        ),
        ("utilization target above 100", Box::new(|p| p["target_value"] = json!(150)), "target_value"),
        ("negative target", Box::new(|p| p["target_value"] = json!(-3)), "target_value"),
        ("wrong type", Box::new(|p| p["max_replicas"] = json!("eight")), "max_replicas"),
        ("unknown metric", Box::new(|p| p["metric"] = json!("vibes")), "metric"),
        ("unknown field", Box::new(|p| p["replicas"] = json!(3)), "replicas"),
        ("nested unknown field", Box::new(|p| p["target"]["labels"] = json!({})), "target.labels"),
        (
            "missing namespace",
            Box::new(|p| {
                p["target"].as_object_mut().unwrap().remove("namespace");
            }),
            "target.namespace",
        ),
        ("bad name", Box::new(|p| p["name"] = json!("Has Spaces")), "name"),
        (
            "missing field",
            Box::new(|p| {
                p.as_object_mut().unwrap().remove("metric");
            }),
            "metric",
        ),
        (
            "bad rebatch bounds",
            Box::new(|p| p["rebatch"] = json!({"min_batch_size": 64, "max_batch_size": 8, "itl_slo_ms": 50})),
            "rebatch.min_batch_size",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut p = policy();
        mutate(&mut p);
        let e = error_of(app.api_post("/api/v1/policies", &p).await, 400).await;
        assert_eq!(e["field"], field, "{what}: {e}");
    }
    assert_eq!(app.count("SELECT count(*) FROM policies").await, 0);

    // Create, then an invalid update changes nothing; a valid one bumps the version and keeps history.
    let created: Value = app.api_post("/api/v1/policies", &policy()).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 1);
    let path = format!("/api/v1/policies/{id}");
    let mut bad = policy();
    bad["max_replicas"] = json!(0);
    error_of(app.api_request(Method::PUT, &path).json(&bad).send().await.unwrap(), 400).await;
    let mut good = policy();
    good["max_replicas"] = json!(12);
    let (_, updated) = app.api_call(Method::PUT, &path, Some(&good)).await;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["max_replicas"], 12);
    assert_eq!(app.count("SELECT count(*) FROM policy_versions").await, 2);
    assert_field_error(app.api_post("/api/v1/policies", &policy()).await, 409, "name").await;

    assert_field_error(app.api_get("/api/v1/policies/not-a-uuid").await, 400, "id").await;
    error_of(app.api_get(&format!("/api/v1/policies/{}", uuid::Uuid::new_v4())).await, 404).await;
    assert_field_error(app.api_get("/api/v1/decisions?limit=0").await, 400, "limit").await;
    error_of(app.api_get("/api/v1/decisions?limit=x").await, 400).await;

    let list = app.api_json("/api/v1/policies").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(app.api_call(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(app.api_get(&path).await.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingest_queue_answers_429_with_retry_after() {
    // One real writer, held inside its group by a lock the test owns, and a queue that holds one batch: the
    // first batch waits, the second is refused. (With no writer at all, "nothing stored" could not fail.)
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.max_queued_rows = 5;
        s.ingest.writers = 1;
    })
    .await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let first = {
        let http = app.http.clone();
        let url = format!("{}/api/v1/ingest", app.address);
        let token = app.agent_token.clone();
        let body = serde_json::to_vec(&batch(1)).unwrap();
        tokio::spawn(async move {
            http.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = app.ingest_raw(serde_json::to_vec(&batch(2)).unwrap()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    // A batch larger than the whole queue can never fit: that is a 400, not a retry.
    let mut big = batch(3);
    let gpu = big["gpus"][0].clone();
    big["gpus"] = serde_json::Value::Array(vec![gpu; 10]);
    let r = app.ingest_raw(serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(r.status(), 400);
    // Released, the writer stores the waiting batch, and only it: the refused ones were never queued.
    lock.commit().await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM ingest_batches").fetch_all(&app.pool).await.unwrap();
    assert_eq!(seqs, vec![1]);
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples").await, 2);
    // The queue is free again.
    assert_eq!(app.ingest_raw(serde_json::to_vec(&batch(4)).unwrap()).await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    for (path, needle) in [("/healthz", "ok"), ("/readyz", "ready"), ("/metrics", "fleetpilot_ingest_batches_total")] {
        let r = app.http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path}: {body}");
    }
    let r = app.http.get(format!("{}/no/such/route", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let css = app.http.get(format!("{}/static/style.css", app.address)).send().await.unwrap();
    assert_eq!(css.status(), 200);
    app.stop().await;
}
