//! Attacks on a running server (issue #15): one test per attack, each against the real server and a real
//! PostgreSQL. Every test here failed on the server before the hardening and passes after it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// A valid batch for `node` with every sample at `ts_ms`.
fn batch_at(node: &str, seq: u64, ts_ms: i64) -> Value {
    json!({
        "version": 1, "agent_id": node, "seq": seq, "sent_at_ms": ts_ms,
        "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated"},
        "gpus": [
            {"ts_ms": ts_ms, "gpu_index": 0, "uuid": format!("GPU-{node}-0"), "model": "NVIDIA H100", "util_pct": 50.0,
             "mem_used_bytes": 1, "mem_total_bytes": 2, "power_w": 300.0, "temp_c": 60.0, "sm_clock_mhz": 1980}
        ]
    })
}

fn batch(node: &str, seq: u64) -> Value {
    batch_at(node, seq, chrono::Utc::now().timestamp_millis())
}

async fn post_batch(app: &TestApp, b: &Value) -> (u16, Value) {
    let r = app.ingest_raw(serde_json::to_vec(b).unwrap()).await;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn partitions(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('gpu_samples', 'serving_samples')",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_index_bomb_is_refused_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let mut b = batch("node-1", 1);
    b["gpus"][0]["gpu_index"] = json!(2_000_000_000u32);
    let (status, e) = post_batch(&app, &b).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "gpus[0].gpu_index");
    let mut p = batch("node-1", 2);
    p["probes"] = json!([{"ts_ms": chrono::Utc::now().timestamp_millis(), "gpu_index": 70000, "bandwidth_gb_s": 1.0}]);
    let (status, e) = post_batch(&app, &p).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "probes[0].gpu_index");
    assert_eq!(app.count("SELECT count(*) FROM gpu_latest").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_bombs_are_refused_and_create_no_partitions() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let before = partitions(&app).await;
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000i64;
    for (what, ts) in [("two days ahead", now + 2 * day), ("twenty years old", now - 20 * 365 * day)] {
        let (status, e) = post_batch(&app, &batch_at("node-1", 1, ts)).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["field"], "gpus[0].ts_ms", "{what}");
    }
    let mut s = batch("node-1", 2);
    s["serving"] = json!([{"ts_ms": now + 3 * day, "deployment": "ml/llama", "replica": "r1", "engine": "vllm",
        "queue_depth": 1, "running": 1, "prompt_tokens_per_s": 1.0, "generation_tokens_per_s": 1.0}]);
    let (status, e) = post_batch(&app, &s).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "serving[0].ts_ms");
    assert_eq!(partitions(&app).await, before, "no partition may be created outside the accepted window");
    // A small clock skew is fine.
    let (status, e) = post_batch(&app, &batch_at("node-1", 3, now + 60_000)).await;
    assert_eq!(status, 200, "{e}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_and_oversized_fields_are_refused_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let cases: Vec<(&str, Box<dyn Fn(&mut Value)>, &str)> = vec![
        ("NUL in model", Box::new(|b| b["gpus"][0]["model"] = json!("H100\u{0}")), "gpus[0].model"),
        ("oversized model", Box::new(|b| b["gpus"][0]["model"] = json!("H".repeat(10_000))), "gpus[0].model"),
        ("NUL in agent version", Box::new(|b| b["node"]["agent_version"] = json!("1.0\u{0}")), "node.agent_version"),
        ("oversized gpu source", Box::new(|b| b["node"]["gpu_source"] = json!("x".repeat(1000))), "node.gpu_source"),
        ("NUL in group", Box::new(|b| b["node"]["group"] = json!("g\u{0}")), "node.group"),
        (
            "NUL in a command result",
            Box::new(|b| b["command_results"] = json!([{"id": "c1", "ok": true, "message": "done\u{0}"}])),
            "command_results[0].message",
        ),
        (
            "NUL in a probe error",
            Box::new(|b| {
                b["probes"] = json!([{"ts_ms": chrono::Utc::now().timestamp_millis(), "gpu_index": 0,
                    "bandwidth_gb_s": null, "error": "x\u{0}"}])
            }),
            "probes[0].error",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut b = batch("node-1", 1);
        mutate(&mut b);
        let (status, e) = post_batch(&app, &b).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["field"], field, "{what}: {e}");
    }
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches").await, 0);
    // The unauthenticated enrollment route takes a small body only.
    let big = json!({"enrollment_token": "x".repeat(1 << 20), "node_id": "n"});
    let r = app.http.post(format!("{}/api/v1/enroll", app.address)).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await;
}

/// Holds the ingest writer inside a group (an exclusive lock on `ingest_batches`) while `queue` submits
/// batches, so those batches are written as one group once the lock is released; returns their answers.
async fn in_one_group(app: &TestApp, batches: Vec<Value>) -> Vec<(u16, Value)> {
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    // The first batch occupies the only writer (blocked on the lock); the rest queue up behind it.
    let blocker = {
        let (http, url, token) = (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
        let body = serde_json::to_vec(&batch("blocker", 1)).unwrap();
        tokio::spawn(async move { http.post(url).bearer_auth(token).body(body).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent: Vec<_> = batches
        .into_iter()
        .map(|b| {
            let (http, url, token) =
                (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
            tokio::spawn(async move {
                let r = http.post(url).bearer_auth(token).json(&b).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    lock.commit().await.unwrap();
    assert_eq!(blocker.await.unwrap(), 200);
    let mut out = Vec::new();
    for s in sent {
        out.push(s.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_batch_does_not_fail_the_good_batches_of_its_group() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.writers = 1;
    })
    .await;
    let mut batches: Vec<Value> = (1..=4).map(|i| batch(&format!("good-{i}"), 1)).collect();
    let mut bad = batch("evil", 1);
    bad["gpus"][0]["model"] = json!("H100\u{0}");
    batches.insert(2, bad);
    let answers = in_one_group(&app, batches).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        if i == 2 {
            assert_eq!(*status, 400, "the bad batch: {body}");
            assert_eq!(body["field"], "gpus[0].model");
        } else {
            assert_eq!(*status, 200, "good batch {i}: {body}");
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples WHERE node_id LIKE 'good-%'").await, 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_refuses_is_isolated_from_its_group_and_answered_400() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.writers = 1;
    })
    .await;
    // A refusal validation cannot foresee (standing in for any value the database rejects).
    sqlx::query("ALTER TABLE gpu_samples ADD CONSTRAINT adversarial_no_123_watts CHECK (power_w <> 123)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut batches: Vec<Value> = (1..=4).map(|i| batch(&format!("good-{i}"), 1)).collect();
    let mut bad = batch("odd", 1);
    bad["gpus"][0]["power_w"] = json!(123.0);
    batches.push(bad);
    let answers = in_one_group(&app, batches).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        let want = if i == 4 { 400 } else { 200 };
        assert_eq!(*status, want, "batch {i}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples WHERE node_id LIKE 'good-%'").await, 4);
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches WHERE node_id = 'odd'").await, 0);
    let metrics = app.http.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"fleetpilot_ingest_batches_total{outcome="isolated"}"#), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_its_partition_was_dropped_is_refused_cleanly() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.retention_days = 1;
    })
    .await;
    let old = chrono::Utc::now().timestamp_millis() - 50 * 3_600_000;
    // Whether or not the first copy is taken, once its partition is dropped the replay must not fail a group.
    let _ = post_batch(&app, &batch_at("node-1", 1, old)).await;
    fleetpilot::db::drop_expired_partitions(&app.pool, 1).await.unwrap();
    let (status, e) = post_batch(&app, &batch_at("node-1", 2, old)).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "gpus[0].ts_ms");
    let (status, e) = post_batch(&app, &batch("node-1", 3)).await;
    assert_eq!(status, 200, "{e}");
    app.stop().await;
}
