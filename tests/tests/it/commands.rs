//! Command delivery against the real server: the long poll brings a command long before the next upload,
//! results come back at once, unknown commands are refused with a reason, lost replies are redelivered,
//! and the health probe runs on command.

use std::time::Duration;

use fleetpilot::db;
use gpu_agent::protocol::CommandAction;
use gpu_agent::testkit::{RunningAgent, sim_config};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, call, eventually, spawn_app};

const GET: Method = Method::GET;
const POST: Method = Method::POST;

/// A simulated node that uploads only every 10 s, so anything faster came through the long poll.
fn slow_agent(app: &TestApp, node: &str) -> RunningAgent {
    let mut cfg = sim_config(&app.address, &app.agent_token, node, Duration::from_secs(10));
    cfg.group = Some("pollers".into());
    cfg.sim.hot_gpu = Some(1);
    cfg.max_queued = 100;
    RunningAgent::start(cfg).unwrap()
}

type Row = (Option<chrono::DateTime<chrono::Utc>>, Option<bool>, Option<String>);

/// The command's row once it has a result.
async fn completed_row(app: &TestApp, id: Uuid, limit: Duration, what: &str) -> Row {
    eventually(limit, what, || async {
        let r: Row = sqlx::query_as("SELECT completed_at, ok, result FROM commands WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        r.0.is_some().then_some(r)
    })
    .await
}

async fn wait_for_node(app: &TestApp, node: &'static str) {
    eventually(Duration::from_secs(15), "the node's first batch", || async {
        db::commands::node_exists(&app.pool, node).await.unwrap().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_a_long_polling_agent_long_before_its_next_upload_and_its_result_comes_back() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let agent = slow_agent(&app, "node-poll");
    wait_for_node(&app, "node-poll").await;
    // Let the first long poll settle on the server.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let action = CommandAction::SetReplicas { group: "pollers".into(), replicas: 3 };
    let id = db::commands::enqueue(&app.pool, "node-poll", &action, None).await.unwrap();
    // Uploads are 10 s apart: completing within 5 s is only possible through the long poll.
    let (completed, ok, result) = completed_row(&app, id, Duration::from_secs(5), "the command's result").await;
    assert!(completed.is_some());
    assert_eq!(ok, Some(true), "{result:?}");
    let acked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT acked_at FROM commands WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
    assert!(acked.is_some(), "receipt was acknowledged");

    // The operator's view of it.
    let r = app.api_get(&format!("/api/v1/commands/{id}")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["action"]["kind"], "set_replicas");
    let metrics = app.metrics().await;
    assert!(metrics.contains("fleetpilot_commands_delivered_total{path=\"poll\"} 1"), "{metrics}");

    agent.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_is_refused_with_a_reason_and_the_next_one_still_runs() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let agent = slow_agent(&app, "node-unknown");
    wait_for_node(&app, "node-unknown").await;
    let unknown = Uuid::new_v4();
    sqlx::query("INSERT INTO commands (id, node_id, action) VALUES ($1, 'node-unknown', '{\"kind\":\"reboot\"}')")
        .bind(unknown)
        .execute(&app.pool)
        .await
        .unwrap();
    let bad_batch = CommandAction::Rebatch { deployment: "ml/llama".into(), max_batch_size: 0, max_queue_delay_us: 1 };
    let bad = db::commands::enqueue(&app.pool, "node-unknown", &bad_batch, None).await.unwrap();
    let good = CommandAction::Rebatch { deployment: "ml/llama".into(), max_batch_size: 64, max_queue_delay_us: 500 };
    let good = db::commands::enqueue(&app.pool, "node-unknown", &good, None).await.unwrap();
    for (id, want_ok, needle) in [(unknown, false, "unknown or invalid command"), (bad, false, "max_batch_size")] {
        let (_, ok, result) = completed_row(&app, id, Duration::from_secs(8), "a result").await;
        assert_eq!(ok, Some(want_ok));
        assert!(result.as_deref().unwrap_or_default().contains(needle), "{result:?}");
    }
    let (_, ok, result) = completed_row(&app, good, Duration::from_secs(8), "the valid command's result").await;
    assert_eq!(ok, Some(true), "{result:?}");
    agent.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_command_without_a_receipt_is_delivered_again() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let batch = serde_json::json!({
        "version": 1, "agent_id": "node-lost", "seq": 1, "sent_at_ms": chrono::Utc::now().timestamp_millis(),
        "node": {"hostname": "h", "agent_version": "t", "gpu_source": "none"}
    });
    assert_eq!(app.ingest_raw(batch.to_string()).await.status(), 200);
    let id = db::commands::enqueue(&app.pool, "node-lost", &CommandAction::Probe {}, None).await.unwrap();
    let poll = |wait: u32| {
        let (app, path) = (&app, format!("/api/v1/commands?agent_id=node-lost&wait_s={wait}"));
        async move {
            let (_, v) = call(app, &app.agent_token, GET, &path, None).await;
            v["commands"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(poll(0).await, vec![id.to_string()]);
    // Delivered and not acknowledged: not handed out again at once...
    assert!(poll(1).await.is_empty());
    // ...but after the receipt deadline, in case the reply was lost on the way.
    tokio::time::sleep(Duration::from_secs_f64(db::commands::REDELIVER_UNACKED_SECS)).await;
    assert_eq!(poll(0).await, vec![id.to_string()]);
    let ack = serde_json::json!({"agent_id": "node-lost", "received": [id.to_string()]});
    assert_eq!(call(&app, &app.agent_token, POST, "/api/v1/commands/ack", Some(&ack)).await.0, 200);
    tokio::time::sleep(Duration::from_secs_f64(db::commands::REDELIVER_UNACKED_SECS)).await;
    assert!(poll(0).await.is_empty(), "an acknowledged command is not redelivered before its result deadline");

    // Bad input: a named field, nothing recorded.
    let (status, e) = call(&app, &app.agent_token, GET, "/api/v1/commands?agent_id=node-lost&wait_s=3600", None).await;
    assert_eq!((status, e["field"].as_str()), (400, Some("wait_s")), "{e}");
    let bad_ack = serde_json::json!({"agent_id": "node-lost", "received": [""]});
    let (status, e) = call(&app, &app.agent_token, POST, "/api/v1/commands/ack", Some(&bad_ack)).await;
    assert_eq!((status, e["field"].as_str()), (400, Some("received[0]")), "{e}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_runs_on_command_and_finds_the_degraded_gpu() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let agent = slow_agent(&app, "node-probe");
    wait_for_node(&app, "node-probe").await;
    let (status, v) = app.api_call(POST, "/api/v1/nodes/node-probe/probe", None).await;
    assert_eq!(status, 202);
    let id: Uuid = v["command_id"].as_str().unwrap().parse().unwrap();
    let (_, ok, result) = completed_row(&app, id, Duration::from_secs(5), "the probe's result").await;
    assert_eq!(ok, Some(true), "{result:?}");
    assert!(result.unwrap_or_default().contains("GB/s"));
    // The measurements ride on the next upload (10 s later); the start-up probe is there already.
    let probes: Value = eventually(Duration::from_secs(15), "probe results", || async {
        let v = app.api_json("/api/v1/nodes/node-probe/probes").await;
        (v.as_array().map(Vec::len) == Some(2)).then_some(v)
    })
    .await;
    let bw = |i: usize| probes[i]["bandwidth_gb_s"].as_f64().unwrap();
    assert!(bw(1) < 0.8 * bw(0), "GPU 1 is the degraded one: {probes}");
    assert_eq!(app.api_call(POST, "/api/v1/nodes/nobody/probe", None).await.0, 404);
    agent.stop().await.unwrap();
    app.stop().await;
}
