//! Per-node series cardinality across batches (issue #15): a node cannot grow its serving series without bound,
//! the limit survives a restart, and the series it already has keep flowing.

use serde_json::{Value, json};

use crate::helpers::{fresh_database, spawn_app_on};

fn batch(seq: u64, replicas: &[&str]) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let serving: Vec<Value> = replicas
        .iter()
        .map(|r| {
            json!({"ts_ms": now, "deployment": "ml/llama", "replica": r, "engine": "vllm", "queue_depth": 1,
                   "running": 2, "prompt_tokens_per_s": 10.0, "generation_tokens_per_s": 5.0})
        })
        .collect();
    json!({"version": 1, "agent_id": "node-1", "seq": seq, "sent_at_ms": now,
           "node": {"hostname": "node-1", "agent_version": "t", "gpu_source": "none"}, "serving": serving})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_grow_its_serving_series_beyond_its_budget_even_across_batches_and_restarts() {
    let url = fresh_database().await;
    let limit = |s: &mut fleetpilot::config::Settings| {
        s.control.enabled = false;
        s.ingest.max_serving_series_per_node = 3;
    };
    let app = spawn_app_on(&url, limit).await;
    let post = |app: &crate::helpers::TestApp, b: Value| {
        let (http, url, token) = (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
        async move { http.post(url).bearer_auth(token).json(&b).send().await.unwrap() }
    };
    assert_eq!(post(&app, batch(1, &["a", "b"])).await.status(), 200);
    assert_eq!(post(&app, batch(2, &["c"])).await.status(), 200);
    // A fourth series, in a later batch: refused, naming it.
    let r = post(&app, batch(3, &["a", "d"])).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], "serving[1].replica", "{e}");
    assert!(e["error"].as_str().unwrap().contains("max_serving_series_per_node"), "{e}");
    // Known series keep flowing.
    assert_eq!(post(&app, batch(4, &["a", "b", "c"])).await.status(), 200);
    app.stop().await;
    // After a restart the budget is read back from the store.
    let app = spawn_app_on(&url, limit).await;
    assert_eq!(post(&app, batch(5, &["e"])).await.status(), 400);
    assert_eq!(post(&app, batch(6, &["c"])).await.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM serving_latest WHERE node_id = 'node-1'").await, 3);
    app.stop().await;
}
