//! The whole flow: agent -> ingest -> Postgres -> control loop (forecast, decision) -> Kubernetes scale
//! and PagerDuty trigger/resolve -> dashboard.

use std::time::Duration;

use gpu_agent::agent::AgentConfig;
use gpu_agent::testkit::{RunningAgent, sim_config};
use serde_json::{Value, json};

use crate::fakes;
use crate::helpers::{eventually, spawn_app};

/// A steady load of 8 busy replicas (40 requests of 1000 prompt + 100 output tokens per 10 s step).
fn heavy_trace() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("fleetpilot-heavy-trace-{}.csv", std::process::id()));
    let mut text = String::from("timestamp,requests,prompt_tokens,output_tokens\n");
    for i in 0..360 {
        text.push_str(&format!(
            "2024-01-01 {:02}:{:02}:{:02},40,40000,4000\n",
            i * 10 / 3600,
            (i * 10 / 60) % 60,
            (i * 10) % 60
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Node `node-a` with 4 GPUs and 4 replicas saturated by [`heavy_trace`], uploading every 200 ms.
fn agent_config(server: &str, token: &str) -> AgentConfig {
    let mut cfg = sim_config(server, token, "node-a", Duration::from_millis(200));
    cfg.sim.trace = Some(heavy_trace());
    (cfg.sim.gpus, cfg.sim.initial_replicas) = (4, 4);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_from_agent_to_kubernetes_pagerduty_and_dashboard_works_end_to_end() {
    let (kube, kube_replicas) = fakes::kube_api("ml", "llama", 2).await;
    let pd = fakes::pagerduty().await;
    let app = spawn_app(|s| {
        s.kube.api_url = Some(kube.url.clone());
        s.pagerduty.url = format!("{}/v2/enqueue", pd.url);
        s.pagerduty.routing_key = fleetpilot::config::Secret::new("R0UT1NGKEY");
        s.alerts.node_silent_secs = 3;
    })
    .await;

    app.create_policy(&json!({
        "name": "llama",
        "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
        "min_replicas": 1, "max_replicas": 10,
        "metric": "gpu_utilization", "target_value": 50,
        "cold_start_secs": 5
    }))
    .await;
    // A shadow policy on the same Deployment that always wants 1 replica: decided and recorded every tick,
    // never sent to Kubernetes.
    let shadow = app
        .create_policy(&json!({
            "name": "llama-one",
            "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
            "min_replicas": 1, "max_replicas": 1, "cold_start_secs": 5, "mode": "shadow"
        }))
        .await;
    let shadow_id = shadow["id"].as_str().unwrap().to_string();

    // The simulated node runs 4 saturated replicas of a deployment Kubernetes says has 2: per-replica
    // utilisation far above the 50 % target must scale it up.
    let agent = RunningAgent::start(agent_config(&app.address, &app.agent_token)).unwrap();

    let samples = eventually(Duration::from_secs(20), "GPU samples stored", || async {
        let n = app.count("SELECT count(*) FROM gpu_samples").await;
        (n >= 8).then_some(n)
    })
    .await;
    assert!(samples >= 8);

    let patch = eventually(Duration::from_secs(30), "a PATCH of the deployment's scale", || async {
        kube.recorded().into_iter().find(|r| r.method == "PATCH")
    })
    .await;
    assert_eq!(patch.path, "/apis/apps/v1/namespaces/ml/deployments/llama/scale");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let patched = patch.body.pointer("/spec/replicas").and_then(Value::as_u64).unwrap();
    // The replicas sent are exactly what the recorded, applied decision asked for.
    let (desired, current, reason): (i32, i32, String) = sqlx::query_as(
        "SELECT desired_replicas, current_replicas, reason FROM decisions WHERE applied AND desired_replicas <> current_replicas ORDER BY id LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(patched, desired as u64, "decision: {reason}");
    assert_eq!(current, 2);
    assert!(desired > 2 && desired <= 10, "{desired}: {reason}");
    assert_eq!(*kube_replicas.lock().unwrap(), desired as u32);
    // The shadow decided 1 each time, recorded as not applied, and no PATCH ever carried its count.
    let (shadow_decisions, shadow_applied, shadow_other): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE applied OR NOT dry_run), count(*) FILTER (WHERE desired_replicas <> 1)          FROM decisions d JOIN policies p ON p.id = d.policy_id WHERE p.name = 'llama-one'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(shadow_decisions >= 1);
    assert_eq!((shadow_applied, shadow_other), (0, 0));
    assert!(
        kube.recorded()
            .iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.body.pointer("/spec/replicas") != Some(&json!(1)))
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("fleetpilot_policy_shadow_desired_replicas{policy=\"llama\",shadow=\"llama-one\"} 1"),
        "{metrics}"
    );
    let report = app.api_json(&format!("/api/v1/policies/{shadow_id}/shadow-report")).await;
    let names: Vec<&str> = report["policies"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["llama", "llama-one"], "{report}");
    // Once a few buckets of history exist, decisions are made with a stored forecast and an anomaly score.
    eventually(Duration::from_secs(45), "a decision with its forecast and anomaly inputs", || async {
        let n = app
            .count("SELECT count(*) FROM decisions d JOIN forecasts f ON f.id = d.forecast_id WHERE d.inputs->'anomaly' IS NOT NULL AND d.inputs->'anomaly' <> 'null'::jsonb")
            .await;
        (n >= 1).then_some(())
    })
    .await;

    // The dashboard lists the node.
    let page = app.api_get("/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("node-a"), "dashboard lists the node");
    assert!(html.contains("deployment ml/llama"), "dashboard lists the decision's target");

    // Silence the node: PagerDuty gets one trigger, then a resolve with the same dedup_key when it is back.
    agent.stop().await.unwrap();
    let trigger = eventually(Duration::from_secs(20), "a PagerDuty trigger", || async {
        pd.recorded().into_iter().find(|r| r.body["event_action"] == "trigger")
    })
    .await;
    assert_eq!(trigger.path, "/v2/enqueue");
    let b = &trigger.body;
    assert_eq!(b["routing_key"], "R0UT1NGKEY");
    // One incident per group (the node), its key unique to the incident.
    assert!(b["dedup_key"].as_str().unwrap().starts_with("fleetpilot/node/node-a/"), "{b}");
    assert_eq!(b["payload"]["group"], "node/node-a");
    assert!(b["payload"]["summary"].as_str().unwrap().contains("node-a"));
    assert_eq!(b["payload"]["source"], "node-a");
    assert_eq!(b["payload"]["severity"], "critical");
    assert!(b["links"][0]["href"].as_str().unwrap().starts_with("http://127.0.0.1:"));

    let agent = RunningAgent::start(agent_config(&app.address, &app.agent_token)).unwrap();
    let resolve = eventually(Duration::from_secs(20), "a PagerDuty resolve", || async {
        pd.recorded().into_iter().find(|r| r.body["event_action"] == "resolve")
    })
    .await;
    assert_eq!(resolve.body["dedup_key"], b["dedup_key"]);
    assert_eq!(resolve.body["routing_key"], "R0UT1NGKEY");
    let triggers = pd.recorded().iter().filter(|r| r.body["event_action"] == "trigger").count();
    assert_eq!(triggers, 1, "one incident, one trigger");

    // The routing key is never stored.
    let stored = app.count("SELECT count(*) FROM alert_deliveries WHERE payload::text LIKE '%R0UT1NGKEY%'").await;
    assert_eq!(stored, 0);

    agent.stop().await.unwrap();
    app.stop().await;
    kube.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_group_policy_scales_the_simulated_fleet_through_agent_commands() {
    let app = spawn_app(|_| {}).await;
    app.create_policy(&json!({
        "name": "sim",
        "target": {"kind": "agent_group", "name": "sim", "deployment": "demo/llama"},
        "min_replicas": 1, "max_replicas": 4,
        "metric": "gpu_utilization", "target_value": 60,
        "cold_start_secs": 2,
        "rebatch": {"min_batch_size": 4, "max_batch_size": 64, "itl_slo_ms": 50}
    }))
    .await;
    let mut cfg = agent_config(&app.address, &app.agent_token);
    cfg.agent_id = "sim-1".into();
    cfg.group = Some("sim".into());
    cfg.deployment = Some("demo/llama".into());
    cfg.sim.initial_replicas = 1;
    let agent = RunningAgent::start(cfg).unwrap();
    // The saturated single replica is scaled up by a set_replicas command the agent executes and reports.
    let (ok, result): (bool, String) = eventually(Duration::from_secs(30), "a completed set_replicas command", || async {
        sqlx::query_as("SELECT ok, result FROM commands WHERE action->>'kind' = 'set_replicas' AND completed_at IS NOT NULL LIMIT 1")
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    })
    .await;
    assert!(ok, "{result}");
    assert!(result.contains("replicas"), "{result}");
    let rebatch = app.count("SELECT count(*) FROM commands WHERE action->>'kind' = 'rebatch'").await;
    assert!(rebatch >= 1, "a rebatch command is queued for the deployment's agents");
    agent.stop().await.unwrap();
    app.stop().await;
}
