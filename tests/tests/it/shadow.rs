//! Shadow policies priced: `GET /api/v1/policies/{id}/shadow-report` and the deployment page's table replay
//! each policy's recorded decisions against the observed demand through the fluid model.

use chrono::{Duration, DurationRound as _, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{WebSession, add_user, spawn_app};

fn spec(name: &str, mode: &str, min: u32, max: u32) -> Value {
    json!({
        "name": name,
        "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
        "min_replicas": min, "max_replicas": max,
        "cold_start_secs": 120,
        "mode": mode
    })
}

/// Records one decision per minute over the last `minutes` for `policy`: `replicas` throughout, and the
/// engine's demand estimate `demand` (busy replicas) in its inputs.
async fn record_path(pool: &sqlx::PgPool, policy: Uuid, minutes: i64, replicas: i32, demand: f64) {
    let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap();
    for i in (1..=minutes).rev() {
        let at = now - Duration::minutes(i) + Duration::seconds(5);
        sqlx::query(
            "INSERT INTO decisions (policy_id, policy_version, decided_at, target, current_replicas, \
             desired_replicas, winner, reason, proposals, inputs, dry_run, applied) \
             VALUES ($1, 1, $2, 'deployment ml/llama', $3, $3, 'capacity', 'hold', '[]', $4, false, true)",
        )
        .bind(policy)
        .bind(at)
        .bind(replicas)
        .bind(json!({ "demand": demand }))
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_is_priced_beside_the_active_one_from_their_recorded_decisions() {
    // No control loop: the decisions are exactly the ones recorded below.
    let app = spawn_app(|s| s.control.enabled = false).await;
    let created = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let active = created(app.api_post("/api/v1/policies", &spec("llama", "active", 1, 16)).await).await;
    let shadow = created(app.api_post("/api/v1/policies", &spec("llama-lean", "shadow", 1, 16)).await).await;
    let idle = created(app.api_post("/api/v1/policies", &spec("llama-new", "shadow", 1, 16)).await).await;
    // A mode that does not exist is refused by name.
    let bad = app.api_post("/api/v1/policies", &spec("llama-x", "sometimes", 1, 16)).await;
    assert_eq!(bad.status(), 400);

    // Two hours of a steady 3 busy replicas: the active policy ran 4, the shadow would have run 2.
    record_path(&app.pool, active, 120, 4, 3.0).await;
    record_path(&app.pool, shadow, 120, 2, 3.0).await;

    let get = |path: String| {
        let app = &app;
        async move { app.http.get(format!("{}{path}", app.address)).bearer_auth(&app.api_token).send().await.unwrap() }
    };
    let r = get(format!("/api/v1/policies/{shadow}/shadow-report")).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deployment"], "ml/llama");
    assert_eq!(report["step_secs"], 60);
    let steps = report["steps"].as_u64().unwrap();
    assert!((119..=121).contains(&steps), "{report}");
    // Every minute had an estimate but the one in progress, which holds the last.
    assert!(steps - report["demand_steps_estimated"].as_u64().unwrap() <= 1, "{report}");
    assert_eq!(report["without_decisions"], json!(["llama-new"]));
    let rows = report["policies"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let (a, s) = (&rows[0], &rows[1]);
    assert_eq!((a["name"].as_str(), a["mode"].as_str()), (Some("llama"), Some("active")));
    assert_eq!((s["name"].as_str(), s["mode"].as_str()), (Some("llama-lean"), Some("shadow")));
    let hours = steps as f64 / 60.0;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    // 4 and 2 GPUs for the window, priced at the default 2.5 per GPU-hour (no GPU model is known).
    assert!((f(a, "gpu_hours") - 4.0 * hours).abs() < 1e-6, "{a}");
    assert!((f(s, "gpu_hours") - 2.0 * hours).abs() < 1e-6, "{s}");
    assert!((f(s, "cost") - 2.5 * f(s, "gpu_hours")).abs() < 1e-6, "{s}");
    assert!((f(s, "gpu_hours_vs_active") - 0.5).abs() < 1e-9, "{s}");
    assert!(a["gpu_hours_vs_active"].is_null());
    // 4 replicas serve 3 busy replicas' work; 2 fall behind at once and never catch up.
    assert_eq!(f(a, "slo_attainment"), 1.0);
    assert!(f(s, "slo_attainment") < 0.05, "{s}");
    assert_eq!((f(a, "actions_per_hour"), f(s, "actions_per_hour")), (0.0, 0.0));
    assert_eq!(a["decisions"].as_u64(), Some(120));

    // Asked about the active policy, the same rows come back; an unknown policy is a 404, a bad id a 400.
    let r: Value = get(format!("/api/v1/policies/{active}/shadow-report")).await.json().await.unwrap();
    assert_eq!(r["policies"].as_array().unwrap().len(), 2);
    assert_eq!(get(format!("/api/v1/policies/{}/shadow-report", Uuid::new_v4())).await.status(), 404);
    let bad = get("/api/v1/policies/not-a-uuid/shadow-report".into()).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "id");
    let _ = idle;

    // The deployment page shows the table, the shadow's replicas on the chart, and keeps the active policy
    // as the deployment's policy.
    add_user(&app.pool, "viewer", "viewer-password-1", fleetpilot::db::users::Role::Viewer).await;
    let web = WebSession::login(&app.address, "viewer", "viewer-password-1").await;
    let page = web.get("/deployments/ml/llama").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"shadow-report\""), "{html}");
    assert!(html.contains("llama-lean") && html.contains("0.50×"), "shadow row with its ratio to the active");
    assert!(html.contains("shadow llama-lean"), "the shadow's replica path is drawn");
    assert!(html.contains("No decisions recorded yet: llama-new"));
    assert!(html.contains("<strong>llama</strong>"), "the active policy is the deployment's policy");
    app.stop().await;
}
