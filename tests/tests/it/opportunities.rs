//! Optimization opportunities and anomalies over REST: detection from ingested data, stability across
//! refreshes, closing, dismissal, and 400s that name the field.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use fleetpilot::db::anomalies::SeriesId;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const NODE: &str = "node-o";

/// Ten minutes of 10-second readings from `t0`: GPU 0 at `gpu0_util` (nothing loaded when idle), GPU 1
/// thermally throttled at 1,500 MHz, GPU 2 healthy at 1,980 MHz.
fn batch(seq: u64, t0: DateTime<Utc>, gpu0_util: f64) -> Value {
    let gib = 1024_u64 * 1024 * 1024;
    let mut gpus = Vec::new();
    for k in 0..60 {
        let ts = (t0 + Duration::seconds(10 * k)).timestamp_millis();
        let gpu0_mem = if gpu0_util > 0.0 { 60 * gib } else { gib / 2 };
        gpus.push(json!({"ts_ms": ts, "gpu_index": 0, "uuid": "GPU-o-0", "model": "NVIDIA H100 80GB HBM3",
            "util_pct": gpu0_util, "mem_used_bytes": gpu0_mem, "mem_total_bytes": 80 * gib,
            "power_w": 80.0 + 5.0 * gpu0_util, "temp_c": 40.0, "sm_clock_mhz": 1980}));
        gpus.push(json!({"ts_ms": ts, "gpu_index": 1, "uuid": "GPU-o-1", "model": "NVIDIA H100 80GB HBM3",
            "util_pct": 75.0, "mem_used_bytes": 60 * gib, "mem_total_bytes": 80 * gib,
            "power_w": 600.0, "temp_c": 91.0, "sm_clock_mhz": 1500, "throttle_reasons": 0x20}));
        gpus.push(json!({"ts_ms": ts, "gpu_index": 2, "uuid": "GPU-o-2", "model": "NVIDIA H100 80GB HBM3",
            "util_pct": 75.0, "mem_used_bytes": 60 * gib, "mem_total_bytes": 80 * gib,
            "power_w": 550.0, "temp_c": 70.0, "sm_clock_mhz": 1980}));
    }
    json!({
        "version": 1, "agent_id": NODE, "seq": seq, "sent_at_ms": t0.timestamp_millis(),
        "node": {"hostname": NODE, "agent_version": "test", "gpu_source": "simulated", "deployment": "ml/opps"},
        "gpus": gpus,
    })
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.api_call(reqwest::Method::GET, path, None).await
}

async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    app.api_call(reqwest::Method::POST, path, Some(body)).await
}

fn keys(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect()
}

fn settings() -> fleetpilot::config::OpportunitySettings {
    fleetpilot::config::OpportunitySettings { window_secs: 600, bucket_secs: 10, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_and_a_throttled_gpu_become_ranked_opportunities_that_persist_close_and_can_be_dismissed() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let t0 = (Utc::now() - Duration::minutes(25)).duration_trunc(Duration::minutes(1)).unwrap();
    let r = app.ingest_raw(serde_json::to_vec(&batch(1, t0, 0.0)).unwrap()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let settings = settings();

    // The window [t0, t0 + 10 min) holds the idle phase only.
    let now_a = t0 + Duration::seconds(595);
    let first = fleetpilot::opportunities::refresh_once(&app.pool, &settings, now_a).await.unwrap();
    let mut opened = first.opened.clone();
    opened.sort();
    assert_eq!(opened, vec![format!("idle_gpu:{NODE}:0"), format!("throttling:{NODE}:1")]);
    assert!(first.closed.is_empty());

    let (status, list) = get(&app, "/api/v1/opportunities").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    // Ranked by expected value: a whole idle H100 beats a quarter of a throttled one's clock.
    assert_eq!(keys(&list), vec![format!("idle_gpu:{NODE}:0"), format!("throttling:{NODE}:1")]);
    let idle = &list["items"][0];
    assert_eq!(idle["kind"], "idle_gpu");
    assert_eq!(idle["status"], "open");
    assert_eq!(idle["node_id"], NODE);
    assert_eq!(idle["gpu_index"], 0);
    assert_eq!(idle["gpu_hours_per_week"], 168.0);
    assert_eq!(idle["saving_per_week"], 672.0, "168 GPU-hours at the default H100 price of 4.0");
    assert_eq!(idle["currency"], "USD");
    assert_eq!(idle["evidence"]["series"], "gpu_util_pct");
    assert_eq!(idle["evidence"]["from_secs"], t0.timestamp());
    assert_eq!(idle["evidence"]["numbers"]["idle_fraction"], 1.0);
    let c = idle["confidence"].as_f64().unwrap();
    assert!(c > 0.0 && c < 1.0, "ten minutes of evidence is not full confidence: {c}");
    assert_eq!(idle["action"]["one_click"], false);
    let throttled = &list["items"][1];
    assert_eq!(throttled["kind"], "throttling");
    let loss = throttled["evidence"]["numbers"]["clock_loss_fraction"].as_f64().unwrap();
    assert!((loss - (1.0 - 1500.0 / 1980.0)).abs() < 1e-3, "{loss}");
    assert!(throttled["title"].as_str().unwrap().contains("thermal"));
    assert!(throttled["expected_value"].as_f64().unwrap() < idle["expected_value"].as_f64().unwrap());
    // The healthy GPU has nothing to say.
    assert!(!keys(&list).iter().any(|k| k.ends_with(":2")));

    // Filters and paging.
    let (_, only) = get(&app, "/api/v1/opportunities?kind=throttling").await;
    assert_eq!(keys(&only), vec![format!("throttling:{NODE}:1")]);
    let (_, by_node) = get(&app, &format!("/api/v1/opportunities?node={NODE}&deployment=ml%2Fopps&status=open")).await;
    assert_eq!(by_node["total"], 2);
    let (_, page2) = get(&app, "/api/v1/opportunities?limit=1&offset=1").await;
    assert_eq!(keys(&page2), vec![format!("throttling:{NODE}:1")]);
    assert_eq!(page2["total"], 2);
    let (_, other) = get(&app, "/api/v1/opportunities?node=elsewhere").await;
    assert_eq!(other["total"], 0);

    // A second refresh updates in place: same ids, nothing new, nothing closed.
    let ids: Vec<i64> = list["items"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    let second =
        fleetpilot::opportunities::refresh_once(&app.pool, &settings, now_a + Duration::seconds(2)).await.unwrap();
    assert!(second.opened.is_empty() && second.closed.is_empty(), "{second:?}");
    assert_eq!(second.updated.len(), 2);
    let (_, again) = get(&app, "/api/v1/opportunities").await;
    let ids_again: Vec<i64> = again["items"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, ids_again);
    assert_eq!(again["total"], 2);
    assert_eq!(again["items"][0]["first_seen"], idle["first_seen"]);
    assert_ne!(again["items"][0]["last_seen"], idle["last_seen"]);

    // Dismiss the throttled GPU with a reason.
    let throttle_id = ids[1];
    let (status, d) = post(
        &app,
        &format!("/api/v1/opportunities/{throttle_id}/dismiss"),
        &json!({"reason": "fans replaced on Tuesday; watching"}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "dismissed");
    assert_eq!(d["dismissed_reason"], "fans replaced on Tuesday; watching");

    // GPU 0 gets busy: its idle opportunity closes; the dismissed one persists and stays dismissed.
    let r = app.ingest_raw(serde_json::to_vec(&batch(2, t0 + Duration::minutes(10), 75.0)).unwrap()).await;
    assert_eq!(r.status(), 200);
    let now_b = t0 + Duration::seconds(1195);
    let third = fleetpilot::opportunities::refresh_once(&app.pool, &settings, now_b).await.unwrap();
    assert_eq!(third.closed, vec![format!("idle_gpu:{NODE}:0")], "{third:?}");
    assert!(third.opened.is_empty(), "{third:?}");
    let (_, idle_now) = get(&app, &format!("/api/v1/opportunities/{}", ids[0])).await;
    assert_eq!(idle_now["status"], "closed");
    assert!(idle_now["closed_at"].is_string());
    let (_, t) = get(&app, &format!("/api/v1/opportunities/{throttle_id}")).await;
    assert_eq!(t["status"], "dismissed");
    assert_eq!(t["dismissed_reason"], "fans replaced on Tuesday; watching");
    let (_, open) = get(&app, "/api/v1/opportunities?status=open").await;
    assert_eq!(open["total"], 0, "{open}");
    let (_, closed) = get(&app, "/api/v1/opportunities?status=closed").await;
    assert_eq!(keys(&closed), vec![format!("idle_gpu:{NODE}:0")]);
    // A closed opportunity cannot be dismissed.
    let (status, _) = post(&app, &format!("/api/v1/opportunities/{}/dismiss", ids[0]), &json!({"reason": "x"})).await;
    assert_eq!(status, 409);

    // The same idle condition coming back reopens the same key (and id).
    let back =
        fleetpilot::opportunities::refresh_once(&app.pool, &settings, now_a + Duration::seconds(4)).await.unwrap();
    assert_eq!(back.opened, vec![format!("idle_gpu:{NODE}:0")]);
    let (_, reopened) = get(&app, &format!("/api/v1/opportunities/{}", ids[0])).await;
    assert_eq!(reopened["status"], "open");
    assert!(reopened["closed_at"].is_null());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunity_and_anomaly_requests_with_bad_input_get_400s_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let t0 = (Utc::now() - Duration::minutes(15)).duration_trunc(Duration::minutes(1)).unwrap();
    let r = app.ingest_raw(serde_json::to_vec(&batch(1, t0, 0.0)).unwrap()).await;
    assert_eq!(r.status(), 200);
    fleetpilot::opportunities::refresh_once(&app.pool, &settings(), t0 + Duration::seconds(595)).await.unwrap();
    let (_, list) = get(&app, "/api/v1/opportunities").await;
    let id = list["items"][0]["id"].as_i64().unwrap();
    let dismiss = format!("/api/v1/opportunities/{id}/dismiss");

    for (body, field) in [
        (json!({"reason": ""}), "reason"),
        (json!({"reason": "   "}), "reason"),
        (json!({"reason": "x".repeat(501)}), "reason"),
        (json!({}), "reason"),
        (json!({"reason": 5}), "reason"),
        (json!({"reason": "ok", "extra": 1}), "extra"),
    ] {
        let (status, e) = post(&app, &dismiss, &body).await;
        assert_eq!(status, 400, "{body} -> {e}");
        assert_eq!(e["field"], field, "{body} -> {e}");
        assert!(e["error"].is_string());
    }
    let (status, _) = post(&app, &dismiss, &json!({"reason": "y".repeat(500)})).await;
    assert_eq!(status, 200, "500 characters are allowed");
    let (status, _) = post(&app, "/api/v1/opportunities/999999/dismiss", &json!({"reason": "gone"})).await;
    assert_eq!(status, 404);

    for (path, field) in [
        ("/api/v1/opportunities?kind=bogus", "kind"),
        ("/api/v1/opportunities?status=maybe", "status"),
        ("/api/v1/opportunities?limit=0", "limit"),
        ("/api/v1/opportunities?limit=abc", "limit"),
        ("/api/v1/opportunities?offset=-1", "offset"),
        ("/api/v1/opportunities?node=", "node"),
        ("/api/v1/opportunities/abc", "id"),
        ("/api/v1/opportunities/0", "id"),
        ("/api/v1/anomalies?severity=bad", "severity"),
        ("/api/v1/anomalies?open=maybe", "open"),
        ("/api/v1/anomalies?limit=5000", "limit"),
    ] {
        let (status, e) = get(&app, path).await;
        assert_eq!(status, 400, "{path} -> {e}");
        assert_eq!(e["field"], field, "{path} -> {e}");
    }
    let (status, _) = get(&app, "/api/v1/opportunities/424242").await;
    assert_eq!(status, 404);
    let anon = app.http.get(format!("{}/api/v1/opportunities", app.address)).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_events_are_listed_with_filters_and_close() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let now = Utc::now();
    let gpu = SeriesId {
        node_id: NODE.into(),
        deployment: "ml/opps".into(),
        target: format!("gpu:{NODE}:1"),
        metric: "temp_c".into(),
    };
    let ev = json!({"peak": {"observed": 91.0, "expected": 70.0}});
    fleetpilot::db::anomalies::open_or_update(&app.pool, &gpu, "detector", now, "warning", 0.8, &ev, now)
        .await
        .unwrap();
    // Escalation keeps one open event per series and raises its severity.
    fleetpilot::db::anomalies::open_or_update(&app.pool, &gpu, "detector", now, "critical", 0.95, &ev, now)
        .await
        .unwrap();
    fleetpilot::db::anomalies::open_or_update(&app.pool, &gpu, "detector", now, "info", 0.5, &ev, now).await.unwrap();
    let dep = SeriesId {
        node_id: String::new(),
        deployment: "ml/opps".into(),
        target: "deployment:ml/opps".into(),
        metric: "itl_p95_s".into(),
    };
    fleetpilot::db::anomalies::open_or_update(&app.pool, &dep, "detector", now, "info", 0.55, &ev, now).await.unwrap();

    let (status, all) = get(&app, "/api/v1/anomalies").await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (_, crit) = get(&app, "/api/v1/anomalies?severity=critical").await;
    assert_eq!(crit.as_array().unwrap().len(), 1);
    assert_eq!(crit[0]["target"], format!("gpu:{NODE}:1"));
    assert_eq!(crit[0]["score"], 0.95);
    let (_, by_node) = get(&app, &format!("/api/v1/anomalies?node={NODE}")).await;
    assert_eq!(by_node.as_array().unwrap().len(), 1);
    let (_, by_dep) = get(&app, "/api/v1/anomalies?deployment=ml%2Fopps").await;
    assert_eq!(by_dep.as_array().unwrap().len(), 2);

    assert!(fleetpilot::db::anomalies::close(&app.pool, &gpu, now + Duration::seconds(30)).await.unwrap());
    let (_, open) = get(&app, "/api/v1/anomalies?open=true").await;
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["metric"], "itl_p95_s");
    let (_, closed) = get(&app, "/api/v1/anomalies?open=false").await;
    assert_eq!(closed[0]["metric"], "temp_c");
    assert!(closed[0]["ended_at"].is_string());

    // A full refresher tick (opportunities + sweep) runs on real data without error.
    let t0 = (now - Duration::minutes(15)).duration_trunc(Duration::minutes(1)).unwrap();
    let r = app.ingest_raw(serde_json::to_vec(&batch(1, t0, 0.0)).unwrap()).await;
    assert_eq!(r.status(), 200);
    let refresher = fleetpilot::opportunities::Refresher::new(app.pool.clone(), settings());
    let out = refresher.tick(t0 + Duration::seconds(595)).await.unwrap();
    assert_eq!(out.opportunities.opened.len(), 2, "{out:?}");
    app.stop().await;
}

/// Ten minutes of 10-second readings of a node's two GPUs at `util` % (GPU 0, GPU 1) with `mem_gib` GiB used;
/// no deployment.
fn node_batch(node: &str, t0: DateTime<Utc>, util: [f64; 2], mem_gib: u64, power_w: f64) -> Value {
    let gib = 1024_u64 * 1024 * 1024;
    let mut gpus = Vec::new();
    for k in 0..60 {
        let ts = (t0 + Duration::seconds(10 * k)).timestamp_millis();
        for (i, u) in util.iter().enumerate() {
            gpus.push(
                json!({"ts_ms": ts, "gpu_index": i, "uuid": format!("GPU-{node}-{i}"), "model": "NVIDIA H100 80GB HBM3",
                "util_pct": u, "mem_used_bytes": mem_gib * gib, "mem_total_bytes": 80 * gib,
                "power_w": power_w, "temp_c": 50.0, "sm_clock_mhz": 1980}),
            );
        }
    }
    json!({
        "version": 1, "agent_id": node, "seq": 1, "sent_at_ms": t0.timestamp_millis(),
        "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated"},
        "gpus": gpus,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_two_clearly_different_workloads_form_two_labelled_groups_whose_gpus_are_peers() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let (_, none) = get(&app, "/api/v1/node-groups").await;
    assert_eq!(none, json!({"computed_at": null, "silhouette": 0.0, "groups": [], "nodes": []}));
    let t0 = (Utc::now() - Duration::minutes(15)).duration_trunc(Duration::minutes(1)).unwrap();
    // busy-3's GPU 1 straggles at 60 %: its node still does the busy nodes' kind of work.
    for (node, util, mem, power) in [
        ("busy-1", [95.0, 95.0], 70, 650.0),
        ("idle-1", [0.0, 0.0], 0, 70.0),
        ("busy-2", [93.0, 93.0], 72, 640.0),
        ("idle-2", [1.0, 1.0], 0, 72.0),
        ("busy-3", [94.0, 60.0], 70, 600.0),
    ] {
        let r = app.ingest_raw(serde_json::to_vec(&node_batch(node, t0, util, mem, power)).unwrap()).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let refresher = fleetpilot::opportunities::Refresher::new(app.pool.clone(), settings());
    refresher.tick(t0 + Duration::seconds(595)).await.unwrap();

    let (status, g) = get(&app, "/api/v1/node-groups").await;
    assert_eq!(status, 200, "{g}");
    let groups = g["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{g}");
    // Ordered by utilisation; labels come from the centroids.
    assert_eq!(groups[0]["nodes"], json!(["idle-1", "idle-2"]));
    assert_eq!(groups[0]["kind"], "idle");
    assert!(groups[0]["label"].as_str().unwrap().starts_with("idle: util ~1%"), "{g}");
    assert!(groups[0]["label"].as_str().unwrap().ends_with("[2 nodes, 4 GPUs]"), "the label counts the members: {g}");
    assert_eq!(groups[1]["nodes"], json!(["busy-1", "busy-2", "busy-3"]));
    assert_eq!(groups[1]["kind"], "saturated");
    let busy = groups[1]["centroid"]["mean_util"].as_f64().unwrap();
    assert!((busy - (0.95 + 0.93 + 0.77) / 3.0).abs() < 1e-9, "{busy}");
    assert!(groups[1]["label"].as_str().unwrap().starts_with("saturated: util ~88%"), "{g}");
    assert!(groups[1]["label"].as_str().unwrap().ends_with("[3 nodes, 6 GPUs]"), "{g}");
    assert!(g["silhouette"].as_f64().unwrap() > 0.9, "well separated: {g}");
    let nodes = g["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    let b1 = nodes.iter().find(|n| n["node_id"] == "busy-1").unwrap();
    assert_eq!((b1["cluster"].as_i64(), b1["gpus"].as_i64()), (Some(1), Some(2)));
    let mem = b1["features"]["mean_mem_frac"].as_f64().unwrap();
    assert!((mem - 70.0 / 80.0).abs() < 1e-9, "{mem}");
    assert!(g["computed_at"].is_string());
    // These nodes serve no deployment: their GPUs are compared with the GPUs of their workload group, and
    // the straggler stands out.
    let (_, peers) = get(&app, "/api/v1/anomalies?open=true").await;
    let flagged: Vec<&Value> = peers.as_array().unwrap().iter().filter(|a| a["metric"] == "peer:util_pct").collect();
    assert_eq!(flagged.len(), 1, "{peers}");
    assert_eq!(flagged[0]["target"], "gpu:busy-3:1");
    assert_eq!(flagged[0]["evidence"]["peer_group"], "workload group 1");
    assert_eq!(flagged[0]["evidence"]["peers"], 5);
    assert!(flagged[0]["evidence"]["workload_group"].as_str().unwrap().starts_with("saturated"), "{peers}");

    // Recomputed on every refresh: a node that left the window leaves its group.
    sqlx::query("DELETE FROM gpu_samples_hot h USING gpus g WHERE g.gpu_key = h.gpu_key AND g.node_id = 'idle-2'")
        .execute(&app.pool)
        .await
        .unwrap();
    refresher.tick(t0 + Duration::seconds(597)).await.unwrap();
    let (_, after) = get(&app, "/api/v1/node-groups").await;
    assert_eq!(after["nodes"].as_array().unwrap().len(), 4, "{after}");
    let anon = app.http.get(format!("{}/api/v1/node-groups", app.address)).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}
