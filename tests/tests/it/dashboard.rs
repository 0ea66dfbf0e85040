//! The dashboard's access rules and form handling over plain HTTP (the browser test drives the pages).

use fleetpilot::config::Secret;
use fleetpilot::db::users::Role;

use std::time::Duration;

use crate::alerting::{alerting, gpu, node};
use crate::fakes;
use crate::helpers::{TestApp, WebSession, add_user, eventually, set_cookie, spawn_app};

const ADMIN_PASSWORD: &str = "correct horse battery";

/// An app (control loop off) whose bootstrap operator `admin` has [`ADMIN_PASSWORD`].
async fn admin_app() -> TestApp {
    spawn_app(|s| {
        s.control.enabled = false;
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await
}

/// A dashboard session of the bootstrap operator of [`admin_app`].
async fn admin_session(app: &TestApp) -> WebSession {
    WebSession::login(&app.address, "admin", ADMIN_PASSWORD).await
}

/// The policy form for a Deployment `ml/llama` of 1..4 replicas at 60 % GPU utilisation (no CSRF token).
fn llama_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("name", "llama"),
        ("target.kind", "deployment"),
        ("target.namespace", "ml"),
        ("target.name", "llama"),
        ("min_replicas", "1"),
        ("max_replicas", "4"),
        ("metric", "gpu_utilization"),
        ("target_value", "60"),
    ]
}

/// The same form with the session's CSRF token.
fn llama_policy(csrf: &str) -> Vec<(&str, &str)> {
    let mut form = vec![("csrf", csrf)];
    form.extend(llama_form());
    form
}

/// `path` (read with the API token) is a 400 page naming `field`.
async fn assert_page_names_field(app: &TestApp, path: &str, field: &str) {
    let r = app.api_get(path).await;
    assert_eq!(r.status(), 400, "{path}");
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!(r#"<strong id="error-field">{field}</strong>"#)), "{path}: {html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_without_a_login_redirect_to_it_and_a_wrong_bearer_token_is_401() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/decisions?page=2", "/policies", "/install", "/nodes/x"] {
        let r = http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with("/login?next=/"), "{path}: {loc}");
    }
    let r = http.get(format!("{}/", app.address)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{}/", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_operator_logs_in_with_an_httponly_samesite_strict_cookie_and_a_wrong_password_is_refused() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.dashboard.admin_user = "ops".into();
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM dashboard_users WHERE username = 'ops'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let s = WebSession::login(&app.address, "ops", ADMIN_PASSWORD).await;
    let c = s.set_cookie.to_lowercase();
    assert!(c.contains("httponly") && c.contains("samesite=strict") && !c.contains("secure"), "{c}");
    let page = s.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Fleet utilisation"));

    // Wrong password: 401 with the login form again, and no session.
    let login = s.http.get(format!("{}/login", app.address)).send().await.unwrap();
    let (csrf, _) = set_cookie(&login, "fp_login_csrf").unwrap();
    let r = s
        .http
        .post(format!("{}/login", app.address))
        .header("cookie", format!("fp_login_csrf={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form_body(&[("username", "ops"), ("password", "nope"), ("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "fp_session").is_none());
    // A login form without its CSRF token is refused.
    let r = s
        .http
        .post(format!("{}/login", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form_body(&[("username", "ops"), ("password", ADMIN_PASSWORD)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Logging out ends the session.
    let r = s.post("/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.get("/").await.status(), 303);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_when_the_public_url_is_https() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.public_url = Some("https://fleet.example".into());
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    let s = admin_session(&app).await;
    assert!(s.set_cookie.to_lowercase().contains("secure"), "{}", s.set_cookie);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_every_page_but_every_post_is_forbidden() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
    let s = WebSession::login(&app.address, "watcher", "viewer-password").await;
    for path in ["/", "/deployments", "/decisions", "/alerts", "/policies", "/policies/new", "/install"] {
        assert_eq!(s.get(path).await.status(), 200, "{path}");
    }
    let mut policy = llama_policy(&s.csrf);
    policy.push(("predictive.mode", "on"));
    let r = s.post("/policies", &policy).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("viewer"));
    assert_eq!(s.post("/install/token", &[("csrf", &s.csrf)]).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM policies").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM enrollment_tokens").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_forms_need_the_session_csrf_token_and_validate_like_the_api() {
    let app = admin_app().await;
    let s = admin_session(&app).await;
    let mut form = llama_form();
    form.retain(|(k, _)| *k != "target_value");
    form.extend([
        ("target_value", "150"),
        ("predictive.mode", "on"),
        ("predictive.quantile", "0.9"),
        ("dry_run", "on"),
    ]);
    // No token, then a wrong one: 403, nothing stored.
    assert_eq!(s.post("/policies", &form).await.status(), 403);
    let mut wrong = form.clone();
    wrong.push(("csrf", "0000"));
    assert_eq!(s.post("/policies", &wrong).await.status(), 403);
    form.push(("csrf", &s.csrf));
    // 150 % is not a utilisation: 400, the form again with the error next to target_value.
    let r = s.post("/policies", &form).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"id="err-target_value""#), "{html}");
    assert!(html.contains(r#"value="150""#), "the form keeps what was typed");
    // A number that is not one names its field too.
    let mut bad = form.clone();
    bad.retain(|(k, _)| *k != "min_replicas");
    bad.push(("min_replicas", "two"));
    let html = s.post("/policies", &bad).await.text().await.unwrap();
    assert!(html.contains(r#"id="err-min_replicas""#), "{html}");
    assert_eq!(app.count("SELECT count(*) FROM policies").await, 0);
    // Fixed: created, and the edit page shows it.
    form.retain(|(k, _)| *k != "target_value");
    form.push(("target_value", "60"));
    let r = s.post("/policies", &form).await;
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let page = s.get(&loc).await.text().await.unwrap();
    assert!(page.contains(r#"value="llama""#));
    let (spec,): (serde_json::Value,) = sqlx::query_as("SELECT spec FROM policies").fetch_one(&app.pool).await.unwrap();
    assert_eq!(spec["target_value"], 60.0);
    assert_eq!(spec["dry_run"], true);
    // The preview runs (no data yet: no changes).
    assert_eq!(s.get(&format!("{loc}/preview")).await.status(), 200);
    // An enrollment token from the install page.
    let html = s.post("/install/token", &[("csrf", &s.csrf)]).await.text().await.unwrap();
    assert!(html.contains("install.sh | sudo sh -s -- --token fpe_"), "{html}");
    assert_eq!(app.count("SELECT count(*) FROM enrollment_tokens").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_on_pages_are_a_400_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    for (path, field) in [
        ("/?page=abc", "page"),
        ("/decisions?outcome=bogus", "outcome"),
        ("/alerts?state=maybe", "state"),
        ("/alerts?sort=sideways", "sort"),
        ("/deployments/ml/llama?range=2y", "range"),
        ("/nodes/node-a/gpus/abc", "gpu"),
        ("/policies/not-a-uuid", "id"),
    ] {
        assert_page_names_field(&app, path, field).await;
    }
    assert_eq!(app.api_get("/nodes/nope").await.status(), 404);
    app.stop().await;
}

// ---- Opportunities and anomalies pages (issue #8) ----

mod insights {
    use std::collections::BTreeMap;

    use chrono::{Duration, Utc};
    use fleetpilot::db::anomalies::SeriesId;
    use fleetpilot::db::users::Role;
    use forecasting::opportunities::{ActionPlan, Command, Evidence, Kind, LatencyEffect, Opportunity, Target};
    use serde_json::json;

    use super::{admin_app, admin_session, assert_page_names_field};
    use crate::helpers::{TestApp, WebSession, add_user, spawn_app};

    const NODE: &str = "node-a";

    /// One minute of readings from `node-a` (agent group `sim`, serving `ml/llama`): GPU 0 idle, GPU 1 hot.
    async fn ingest_node(app: &TestApp) {
        let now = Utc::now();
        let gib = 1024_u64 * 1024 * 1024;
        let mut gpus = Vec::new();
        for k in 0..6 {
            let ts = (now - Duration::seconds(60 - 10 * k)).timestamp_millis();
            for (i, util, temp) in [(0, 0.0, 40.0), (1, 80.0, 91.0)] {
                gpus.push(
                    json!({"ts_ms": ts, "gpu_index": i, "uuid": format!("GPU-a-{i}"), "model": "NVIDIA H100 80GB HBM3",
                    "util_pct": util, "mem_used_bytes": gib, "mem_total_bytes": 80 * gib,
                    "power_w": 300.0, "temp_c": temp, "sm_clock_mhz": 1980}),
                );
            }
        }
        let batch = json!({
            "version": 1, "agent_id": NODE, "seq": 1, "sent_at_ms": now.timestamp_millis(),
            "node": {"hostname": NODE, "agent_version": "test", "gpu_source": "simulated", "deployment": "ml/llama", "group": "sim"},
            "gpus": gpus,
        });
        let r = app.ingest_raw(serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    fn opportunity(
        kind: Kind,
        key: &str,
        target: Target,
        saving: f64,
        gpu_hours: f64,
        command: Option<Command>,
    ) -> Opportunity {
        let now = Utc::now().timestamp();
        let mut numbers = BTreeMap::new();
        numbers.insert("replicas".to_string(), 4.0);
        Opportunity {
            kind,
            key: key.into(),
            target,
            title: format!("{key} title"),
            evidence: Evidence { series: "gpu_util_pct".into(), from_secs: now - 1800, to_secs: now, numbers },
            gpu_hours_per_week: gpu_hours,
            saving_per_week: saving,
            currency: "USD".into(),
            latency: LatencyEffect {
                summary: format!("{key} latency"),
                before_s: Some(0.05),
                after_s: None,
                slo_s: Some(0.1),
            },
            confidence: 0.5,
            action: ActionPlan { description: format!("{key} action"), one_click: command.is_some(), command },
            expected_value: saving * 0.5,
        }
    }

    fn dep(d: &str) -> Target {
        Target { deployment: Some(d.into()), node: None, gpu_index: None }
    }

    /// Five opportunities: three one-click ones (scale, rebatch, probe), two advisory ones.
    async fn seed(app: &TestApp) {
        let node = Target { deployment: Some("ml/llama".into()), node: Some(NODE.into()), gpu_index: None };
        let gpu = Target { gpu_index: Some(0), ..node.clone() };
        let ops = vec![
            opportunity(
                Kind::Consolidation,
                "consolidation:ml/llama",
                dep("ml/llama"),
                1000.0,
                336.0,
                Some(Command::Scale { deployment: "ml/llama".into(), replicas: 2 }),
            ),
            opportunity(Kind::IdleGpu, "idle_gpu:node-a:0", gpu, 600.0, 500.0, None),
            opportunity(
                Kind::Batching,
                "batching:ml/llama",
                dep("ml/llama"),
                300.0,
                80.0,
                Some(Command::Rebatch { deployment: "ml/llama".into(), max_batch_size: 32, max_queue_delay_us: None }),
            ),
            opportunity(
                Kind::Straggler,
                "straggler:node-a",
                node.clone(),
                50.0,
                10.0,
                Some(Command::Probe { node: NODE.into() }),
            ),
            opportunity(
                Kind::DrainNode,
                "drain_node:node-b",
                Target { node: Some("node-b".into()), ..Target::default() },
                0.0,
                0.0,
                None,
            ),
        ];
        fleetpilot::db::opportunities::upsert(&app.pool, &ops, Utc::now()).await.unwrap();
        let r = app
            .api_post(
                "/api/v1/policies",
                &json!({"name": "llama", "target": {"kind": "agent_group", "name": "sim", "deployment": "ml/llama"},
                        "min_replicas": 1, "max_replicas": 8, "metric": "gpu_utilization", "target_value": 50}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    async fn id_of(app: &TestApp, key: &str) -> i64 {
        sqlx::query_scalar("SELECT id FROM opportunities WHERE key = $1").bind(key).fetch_one(&app.pool).await.unwrap()
    }

    /// Row ids of the opportunities table, in page order.
    fn row_ids(html: &str) -> Vec<i64> {
        html.match_indices("<tr id=\"opportunity-")
            .filter_map(|(i, m)| {
                let rest = &html[i + m.len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect()
    }

    async fn page(s: &WebSession, path: &str) -> String {
        let r = s.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_opportunities_page_filters_sorts_and_offers_actions_only_where_fleetpilot_can_act() {
        let app = admin_app().await;
        ingest_node(&app).await;
        seed(&app).await;
        let s = admin_session(&app).await;
        let (scale, idle, batching, probe, drain) = (
            id_of(&app, "consolidation:ml/llama").await,
            id_of(&app, "idle_gpu:node-a:0").await,
            id_of(&app, "batching:ml/llama").await,
            id_of(&app, "straggler:node-a").await,
            id_of(&app, "drain_node:node-b").await,
        );

        // Default: open ones by expected value; every column is there.
        let html = page(&s, "/opportunities").await;
        assert_eq!(row_ids(&html), vec![scale, idle, batching, probe, drain], "{html}");
        assert!(html.contains("5 matching"));
        assert!(html.contains("USD 1000") && html.contains("336.0 GPU-h"), "money and GPU-hours");
        assert!(html.contains("consolidation:ml/llama latency (now 50 ms, SLO 100 ms)"), "latency/SLO effect");
        assert!(html.contains("50%"), "confidence");
        assert!(html.contains("consolidation:ml/llama action"), "the action in words");
        assert!(html.contains("gpu_util_pct, "), "evidence series and range");
        assert!(html.contains("href=\"/nodes/node-a/gpus/0?range=1h\""), "evidence links to the GPU page");
        assert!(html.contains("href=\"/deployments/ml/llama?range=1h\""), "and to the deployment page");
        // One-click where fleetpilot can act; advisory ones have no button; everything open can be dismissed.
        for id in [scale, batching, probe] {
            assert!(html.contains(&format!("id=\"act-{id}\"")), "act button for {id}");
        }
        for id in [idle, drain] {
            assert!(!html.contains(&format!("id=\"act-{id}\"")), "no act button for advisory {id}");
            assert!(html.contains(&format!("id=\"dismiss-{id}\"")), "dismiss form for {id}");
        }

        // Sorting, filters.
        let by_hours = page(&s, "/opportunities?sort=gpu_hours").await;
        assert_eq!(row_ids(&by_hours)[..2], [idle, scale]);
        assert_eq!(row_ids(&page(&s, "/opportunities?kind=batching").await), vec![batching]);
        assert_eq!(row_ids(&page(&s, "/opportunities?node=node-a&sort=first_seen").await).len(), 2);
        assert_eq!(row_ids(&page(&s, "/opportunities?deployment=ml%2Fllama&sort=updated").await).len(), 4);
        assert!(row_ids(&page(&s, "/opportunities?status=dismissed").await).is_empty());
        assert_eq!(row_ids(&page(&s, "/opportunities?status=all&page=1").await).len(), 5);
        // A page past the end is empty, not an error.
        let empty = page(&s, "/opportunities?page=3").await;
        assert!(row_ids(&empty).is_empty() && empty.contains("No opportunities match"));

        // The overview: the savings tile and the top list link to the page.
        let overview = page(&s, "/").await;
        assert!(overview.contains("id=\"tile-savings\"") && overview.contains("USD 1950"), "{overview}");
        assert!(overview.contains(&format!("href=\"/opportunities/{scale}\"")), "top opportunities");
        assert!(overview.contains("href=\"/opportunities\"") && overview.contains("href=\"/anomalies\""), "nav");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_click_actions_confirm_first_then_scale_rebatch_or_probe_and_record_who_did_it() {
        let app = admin_app().await;
        ingest_node(&app).await;
        seed(&app).await;
        add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
        let s = admin_session(&app).await;
        let v = WebSession::login(&app.address, "watcher", "viewer-password").await;
        let (scale, idle, batching, probe) = (
            id_of(&app, "consolidation:ml/llama").await,
            id_of(&app, "idle_gpu:node-a:0").await,
            id_of(&app, "batching:ml/llama").await,
            id_of(&app, "straggler:node-a").await,
        );

        // The confirmation page says exactly what will happen; GET changes nothing.
        let confirm = page(&s, &format!("/opportunities/{scale}/act")).await;
        assert!(confirm.contains("scale agent group sim from 4 to 2 replicas"), "{confirm}");
        assert!(confirm.contains("id=\"act-confirm\""));
        assert_eq!(app.count("SELECT count(*) FROM decisions").await, 0);
        // Viewers get neither the page nor the action; a POST without the CSRF token is refused.
        assert_eq!(v.get(&format!("/opportunities/{scale}/act")).await.status(), 403);
        assert_eq!(v.post(&format!("/opportunities/{scale}/act"), &[("csrf", &v.csrf)]).await.status(), 403);
        assert_eq!(s.post(&format!("/opportunities/{scale}/act"), &[]).await.status(), 403);
        assert_eq!(s.post(&format!("/opportunities/{scale}/act"), &[("csrf", "nope")]).await.status(), 403);
        assert_eq!(app.count("SELECT count(*) FROM decisions").await, 0);
        assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);

        // Scale: an override for the leader, not an actuation from the handler: nothing is decided or sent yet.
        assert_eq!(
            s.post(&format!("/opportunities/{scale}/act"), &[("csrf", &s.csrf), ("hold_minutes", "99999")])
                .await
                .status(),
            400,
            "a hold past a day is refused"
        );
        let r = s.post(&format!("/opportunities/{scale}/act"), &[("csrf", &s.csrf), ("hold_minutes", "60")]).await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], format!("/opportunities/{scale}").as_str());
        assert_eq!(app.count("SELECT count(*) FROM decisions").await, 0);
        assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);
        let (replicas, by, held): (i32, String, f64) = sqlx::query_as(
            "SELECT replicas, created_by, extract(epoch FROM hold_until - created_at)::float8 FROM policy_overrides",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!((replicas, by.as_str()), (2, "admin"));
        assert!((held - 3600.0).abs() < 5.0, "{held}");
        let detail = page(&s, &format!("/opportunities/{scale}")).await;
        assert!(detail.contains("agent group sim goes from 4 to 2 replicas"), "{detail}");
        assert!(detail.contains("<td>admin</td>"), "who did it: {detail}");

        // The leader applies it on its tick, through the agent-group actuator, with the term's fencing token ...
        let control = fleetpilot::control::ControlLoop::new(
            app.pool.clone(),
            fleetpilot::config::ControlSettings::default(),
            fleetpilot::actuators::Actuators::new(None, app.pool.clone()),
            fleetpilot::telemetry::Metrics::new(),
        );
        let _lead = control.take_leadership().await.expect("leads");
        control.tick(chrono::Utc::now()).await.unwrap();
        let (winner, desired, applied, reason): (String, i32, bool, String) =
            sqlx::query_as("SELECT winner, desired_replicas, applied, reason FROM decisions ORDER BY id DESC LIMIT 1")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!((winner.as_str(), desired, applied), ("override", 2, true));
        assert!(reason.contains("admin") && reason.contains("the engine wanted"), "{reason}");
        let set: serde_json::Value =
            sqlx::query_scalar("SELECT action FROM commands WHERE node_id = 'node-a' AND decision_id IS NOT NULL")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(set, json!({"kind": "set_replicas", "group": "sim", "replicas": 2}));
        assert_eq!(app.count("SELECT count(*) FROM policy_overrides WHERE applied_at IS NOT NULL").await, 1);
        // ... and holds it: the next tick keeps 2 whatever the engine would do.
        control.tick(chrono::Utc::now() + chrono::Duration::seconds(40)).await.unwrap();
        let (winner, desired, reason): (String, i32, String) =
            sqlx::query_as("SELECT winner, desired_replicas, reason FROM decisions ORDER BY id DESC LIMIT 1")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!((winner.as_str(), desired), ("override", 2));
        assert!(reason.starts_with("held at 2"), "{reason}");

        // Rebatch: one command per node serving the deployment, with the default delay; the page shows its state.
        assert!(page(&s, &format!("/opportunities/{batching}/act")).await.contains("max batch size 32"));
        assert_eq!(s.post(&format!("/opportunities/{batching}/act"), &[("csrf", &s.csrf)]).await.status(), 303);
        let rebatch: serde_json::Value =
            sqlx::query_scalar("SELECT action FROM commands WHERE action->>'kind' = 'rebatch'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            rebatch,
            json!({"kind": "rebatch", "deployment": "ml/llama", "max_batch_size": 32, "max_queue_delay_us": 2000})
        );
        let detail = page(&s, &format!("/opportunities/{batching}")).await;
        assert!(detail.contains("queued for ml/llama on 1 node") && detail.contains("node-a</a>: queued"), "{detail}");

        // Probe.
        assert_eq!(s.post(&format!("/opportunities/{probe}/act"), &[("csrf", &s.csrf)]).await.status(), 303);
        assert_eq!(app.count("SELECT count(*) FROM commands WHERE action->>'kind' = 'probe'").await, 1);
        let acted: Vec<(i64, String, bool)> =
            sqlx::query_as("SELECT opportunity_id, acted_by, ok FROM opportunity_actions ORDER BY id")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            acted,
            vec![(scale, "admin".into(), true), (batching, "admin".into(), true), (probe, "admin".into(), true)]
        );
        // The list shows the last action's result.
        assert!(page(&s, "/opportunities").await.contains("bandwidth probe queued on node-a"));

        // Advisory: no button on the confirmation page, and a POST is a 400 naming why.
        let advisory = page(&s, &format!("/opportunities/{idle}/act")).await;
        assert!(advisory.contains("id=\"blocked\"") && !advisory.contains("act-confirm"), "{advisory}");
        let r = s.post(&format!("/opportunities/{idle}/act"), &[("csrf", &s.csrf)]).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("<strong id=\"error-field\">action</strong>"));
        assert_eq!(app.count("SELECT count(*) FROM opportunity_actions").await, 3);

        // A viewer reads the pages but sees no forms.
        let viewed = page(&v, "/opportunities").await;
        assert_eq!(row_ids(&viewed).len(), 5);
        assert!(!viewed.contains("action=\"/opportunities/") && !viewed.contains("id=\"act-"), "{viewed}");
        let viewed = page(&v, &format!("/opportunities/{scale}")).await;
        assert!(
            !viewed.contains("action=\"/opportunities/")
                && viewed.contains("agent group sim goes from 4 to 2 replicas")
        );
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dismissing_from_the_page_needs_an_operator_a_csrf_token_and_a_reason() {
        let app = admin_app().await;
        seed(&app).await;
        add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
        let s = admin_session(&app).await;
        let v = WebSession::login(&app.address, "watcher", "viewer-password").await;
        let idle = id_of(&app, "idle_gpu:node-a:0").await;
        let path = format!("/opportunities/{idle}/dismiss");
        let back = "/opportunities?status=open&sort=value&page=1";
        let status = || async {
            sqlx::query_scalar::<_, String>("SELECT status FROM opportunities WHERE id = $1")
                .bind(idle)
                .fetch_one(&app.pool)
                .await
                .unwrap()
        };
        assert_eq!(v.post(&path, &[("csrf", &v.csrf), ("reason", "no"), ("back", back)]).await.status(), 403);
        assert_eq!(s.post(&path, &[("reason", "no"), ("back", back)]).await.status(), 403);
        let r = s.post(&path, &[("csrf", &s.csrf), ("reason", "  "), ("back", back)]).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("<strong id=\"error-field\">reason</strong>"));
        let long = "x".repeat(501);
        assert_eq!(s.post(&path, &[("csrf", &s.csrf), ("reason", &long)]).await.status(), 400);
        assert_eq!(status().await, "open");

        let r = s.post(&path, &[("csrf", &s.csrf), ("reason", "reserved for the nightly batch"), ("back", back)]).await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], format!("{back}&dismissed={idle}").as_str());
        assert_eq!(status().await, "dismissed");
        let by: Option<String> = sqlx::query_scalar("SELECT dismissed_by FROM opportunities WHERE id = $1")
            .bind(idle)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(by.as_deref(), Some("admin"));
        let listed = page(&s, &format!("{back}&dismissed={idle}")).await;
        assert!(listed.contains(&format!("Opportunity {idle} dismissed.")));
        assert!(!row_ids(&listed).contains(&idle), "an open list no longer shows it");
        let dismissed = page(&s, "/opportunities?status=dismissed").await;
        assert_eq!(row_ids(&dismissed), vec![idle]);
        assert!(dismissed.contains("by admin: reserved for the nightly batch"), "{dismissed}");
        // Somewhere else than an opportunities page is not redirected to.
        let r = s.post(&path, &[("csrf", &s.csrf), ("reason", "again"), ("back", "https://evil.example/")]).await;
        assert_eq!(r.headers()["location"], format!("/opportunities/{idle}").as_str());
        // Closed ones cannot be dismissed; unknown ids are a 404.
        sqlx::query("UPDATE opportunities SET status = 'closed' WHERE id = $1")
            .bind(idle)
            .execute(&app.pool)
            .await
            .unwrap();
        assert_eq!(s.post(&path, &[("csrf", &s.csrf), ("reason", "x")]).await.status(), 400);
        assert_eq!(s.post("/opportunities/99999/dismiss", &[("csrf", &s.csrf), ("reason", "x")]).await.status(), 404);
        app.stop().await;
    }

    async fn open_event(
        app: &TestApp,
        target: &str,
        metric: &str,
        severity: &str,
        score: f64,
        ev: serde_json::Value,
        ago_min: i64,
    ) {
        let node = if target.starts_with("gpu:") { NODE } else { "" };
        let s = SeriesId {
            node_id: node.into(),
            deployment: "ml/llama".into(),
            target: target.into(),
            metric: metric.into(),
        };
        let at = Utc::now() - Duration::minutes(ago_min);
        fleetpilot::db::anomalies::open_or_update(&app.pool, &s, "detector", at, severity, score, &ev, at)
            .await
            .unwrap();
    }

    /// Serving readings of one replica on `node`, reported by that node's agent.
    async fn ingest_replica(app: &TestApp, node: &str, replica: &str, itl_s: f64) {
        let now = Utc::now();
        let serving: Vec<_> = (0..6)
            .map(|k| {
                json!({"ts_ms": (now - Duration::seconds(60 - 10 * k)).timestamp_millis(), "deployment": "ml/llama",
                       "replica": replica, "engine": "vllm", "queue_depth": 2, "running": 12, "kv_cache_pct": 40.0,
                       "ttft_p95_s": 0.2, "itl_p95_s": itl_s, "prompt_tokens_per_s": 900.0,
                       "generation_tokens_per_s": 150.0, "batch_size_mean": 12.0})
            })
            .collect();
        let batch = json!({
            "version": 1, "agent_id": node, "seq": 7, "sent_at_ms": now.timestamp_millis(),
            "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated", "deployment": "ml/llama"},
            "serving": serving,
        });
        let r = app.ingest_raw(serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_deployment_page_lists_replicas_with_their_batching_and_peer_outliers_and_shades_its_events() {
        let app = admin_app().await;
        ingest_node(&app).await;
        ingest_replica(&app, NODE, "llama-a", 0.03).await;
        ingest_replica(&app, "node-b", "llama-b", 0.09).await;
        // node-a's GPU 1 departs from its peers; node-a was rebatched (applied), node-b never.
        let peer = SeriesId {
            node_id: NODE.into(),
            deployment: "ml/llama".into(),
            target: "gpu:node-a:1".into(),
            metric: "peer:util_pct".into(),
        };
        let ev = json!({"peers": 3, "peer_group": "deployment ml/llama",
                        "evidence": {"value": 20.0, "peer_median": 75.0, "mad_distance": -6.5}});
        let at = Utc::now() - Duration::minutes(3);
        fleetpilot::db::anomalies::open_or_update(&app.pool, &peer, "peers", at, "warning", 0.9, &ev, at)
            .await
            .unwrap();
        open_event(&app, "deployment:ml/llama", "itl_p95_s", "info", 0.55, json!({}), 20).await;
        sqlx::query(
            "INSERT INTO commands (id, node_id, action, created_at, completed_at, ok, result) VALUES \
             (gen_random_uuid(), 'node-a', '{\"kind\": \"rebatch\", \"deployment\": \"ml/llama\", \"max_batch_size\": 32, \"max_queue_delay_us\": 1000}', \
              now() - interval '10 minutes', now() - interval '10 minutes', true, 'applied'), \
             (gen_random_uuid(), 'node-a', '{\"kind\": \"rebatch\", \"deployment\": \"ml/llama\", \"max_batch_size\": 64, \"max_queue_delay_us\": 2000}', \
              now() - interval '5 minutes', now() - interval '5 minutes', true, 'applied'), \
             (gen_random_uuid(), 'node-a', '{\"kind\": \"rebatch\", \"deployment\": \"ml/llama\", \"max_batch_size\": 128, \"max_queue_delay_us\": 2000}', \
              now() - interval '1 minute', now() - interval '1 minute', false, 'engine refused')",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
        let s = WebSession::login(&app.address, "watcher", "viewer-password").await;

        let html = page(&s, "/deployments/ml/llama?range=1h").await;
        let table = &html[html.find("id=\"replicas\"").expect("a replicas table")..];
        let table = &table[..table.find("</table>").unwrap()];
        let (a, b) = (table.find("llama-a").unwrap(), table.find("llama-b").unwrap());
        let (row_a, row_b) = (&table[a..b], &table[b..]);
        assert!(row_a.contains("batch 64, delay 2000 µs"), "the newest applied batching, not the refused one: {row_a}");
        assert!(row_a.contains("GPU 1 (warning): typically 20% while its 3 peers sit at 75%"), "{row_a}");
        assert!(row_a.contains("href=\"/anomalies?node=node-a&#38;state=all&#38;range=1h\""), "{row_a}");
        assert!(row_b.contains("never rebatched") && row_b.contains("no open outlier"), "{row_b}");
        assert!(row_b.contains("90 ms"), "ITL p95 of the replica: {row_b}");
        assert!(html.contains("1 peer outlier"), "counted in the heading");
        // The deployment's own event is shaded on the chart and listed.
        assert!(html.contains("<rect class=\"span anomaly info\""), "{html}");
        assert!(html.contains("id=\"chart-anomalies\"") && html.contains("ml/llama · itl_p95_s"));
        // A minute of data in an hour's range: raw samples at the chart's resolution, not one rollup point.
        assert!(html.contains("raw samples, 12 s buckets"), "{html}");
        let short = page(&s, "/deployments/ml/llama?range=15m").await;
        assert!(short.contains("raw samples, "), "{short}");
        assert!(!short.contains("class=\"marker anomaly\" x1=\"-"), "a marker before the range is not drawn");
        // The latency chart has data from the minutes not rolled up yet.
        assert!(short.contains("TTFT") && short.matches("<path").count() >= 3, "{short}");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_anomalies_page_filters_by_range_and_series_and_node_and_gpu_charts_shade_the_events() {
        let app = admin_app().await;
        ingest_node(&app).await;
        let hot = json!({"peak": {"observed": 91.0, "expected": 70.0, "component": "OutOfRange", "tail": 0.001}});
        open_event(&app, "gpu:node-a:1", "temp_c", "warning", 0.8, hot, 5).await;
        let idle = json!({"peak": {"observed": 0.0, "expected": 60.0, "component": "Level", "tail": 0.01}});
        open_event(&app, "gpu:node-a:0", "util_pct", "critical", 0.97, idle, 10).await;
        let closed = SeriesId {
            node_id: NODE.into(),
            deployment: "ml/llama".into(),
            target: "gpu:node-a:0".into(),
            metric: "util_pct".into(),
        };
        fleetpilot::db::anomalies::close(&app.pool, &closed, Utc::now() - Duration::minutes(2)).await.unwrap();
        open_event(&app, "deployment:ml/llama", "itl_p95_s", "info", 0.55, json!({}), 30).await;
        // Three days old, closed a day later: outside the default 24 hours.
        let old = SeriesId {
            node_id: NODE.into(),
            deployment: "ml/llama".into(),
            target: "gpu:node-a:1".into(),
            metric: "util_pct".into(),
        };
        let at = Utc::now() - Duration::days(3);
        fleetpilot::db::anomalies::open_or_update(&app.pool, &old, "detector", at, "info", 0.5, &json!({}), at)
            .await
            .unwrap();
        fleetpilot::db::anomalies::close(&app.pool, &old, at + Duration::hours(1)).await.unwrap();
        add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
        let s = WebSession::login(&app.address, "watcher", "viewer-password").await;
        let rows = |html: &str| html.matches("<tr id=\"anomaly-").count();

        let html = page(&s, "/anomalies").await;
        assert_eq!(rows(&html), 3, "{html}");
        assert!(html.contains("peak 91 °C where about 70 °C was expected (out of range"), "evidence in words");
        assert!(html.contains("ongoing") && html.contains("href=\"/nodes/node-a/gpus/1?range=24h\""));
        assert!(html.contains("href=\"/deployments/ml/llama?range=24h\""));
        assert_eq!(rows(&page(&s, "/anomalies?range=7d").await), 4);
        assert_eq!(rows(&page(&s, "/anomalies?severity=critical").await), 1);
        assert_eq!(rows(&page(&s, "/anomalies?state=open").await), 2);
        assert_eq!(rows(&page(&s, "/anomalies?state=closed&range=7d").await), 2);
        assert_eq!(rows(&page(&s, "/anomalies?node=node-a&gpu=1&range=7d").await), 2);
        // Ongoing events overlap any range, however long ago they started.
        assert_eq!(rows(&page(&s, "/anomalies?deployment=ml%2Fllama&range=15m").await), 3);
        assert_eq!(rows(&page(&s, "/anomalies?deployment=ml%2Fother").await), 0);
        let by_score = page(&s, "/anomalies?sort=score").await;
        let (crit, warn) = (by_score.find("critical</span>").unwrap(), by_score.find("warning</span>").unwrap());
        assert!(crit < warn, "highest score first");

        // The node chart shades both GPU events of the range and lists them; the GPU chart only its own.
        let node = page(&s, "/nodes/node-a?range=15m").await;
        assert!(node.contains("<rect class=\"span anomaly warning\""), "{node}");
        assert!(node.contains("<rect class=\"span anomaly critical\""));
        assert!(node.contains("<title>warning node-a GPU 1 · temp_c from"), "tooltip with evidence");
        assert!(node.contains("id=\"chart-anomalies\""));
        let gpu = page(&s, "/nodes/node-a/gpus/1?range=15m").await;
        assert!(
            gpu.contains("<rect class=\"span anomaly warning\"") && !gpu.contains("span anomaly critical"),
            "{gpu}"
        );
        assert!(gpu.contains("href=\"/anomalies?node=node-a&#38;gpu=1&#38;range=15m\""));
        let quiet = page(&s, "/nodes/node-a/gpus/0?range=1h").await;
        assert!(quiet.contains("span anomaly critical") && !quiet.contains("span anomaly warning"));
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_filters_on_the_new_pages_are_a_400_naming_the_field_never_a_500() {
        let app = spawn_app(|s| s.control.enabled = false).await;
        for (path, field) in [
            ("/opportunities?kind=bogus", "kind"),
            ("/opportunities?status=maybe", "status"),
            ("/opportunities?sort=cheapest", "sort"),
            ("/opportunities?page=0", "page"),
            ("/opportunities/abc", "id"),
            ("/opportunities/-1/act", "id"),
            ("/anomalies?severity=bad", "severity"),
            ("/anomalies?state=maybe", "state"),
            ("/anomalies?range=2y", "range"),
            ("/anomalies?gpu=1", "gpu"),
            ("/anomalies?node=n&gpu=x", "gpu"),
            ("/anomalies?sort=x", "sort"),
            // Postgres refuses a NUL in text: named, not a 500.
            ("/anomalies?node=%00weird", "node"),
            ("/opportunities?deployment=a%00b", "deployment"),
        ] {
            assert_page_names_field(&app, path, field).await;
        }
        for path in [
            "/opportunities?node=%27%3B--&deployment=x",
            "/anomalies?node=%25&deployment=%25",
            "/opportunities?dismissed=abc",
        ] {
            assert_eq!(app.api_get(path).await.status(), 200, "{path}");
        }
        assert_eq!(app.api_get("/opportunities/12345").await.status(), 404);
        app.stop().await;
    }
}

/// The fields a browser would submit from the form with id `form_id`: inputs (ticked checkboxes only),
/// selected options and textareas, entities decoded.
fn form_fields(html: &str, form_id: &str) -> Vec<(String, String)> {
    let start = html.find(&format!(r#"id="{form_id}""#)).expect("the form");
    let form = &html[start..start + html[start..].find("</form>").expect("the form's end")];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    let decode = |s: &str| {
        s.replace("&#34;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    };
    let mut out = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let end = rest.find('>').unwrap_or(rest.len() - 1);
        let tag = &rest[..=end];
        if tag.starts_with("<input") {
            let ty = attr(tag, "type").unwrap_or_default();
            if let Some(name) = attr(tag, "name")
                && (ty != "checkbox" || tag.contains(" checked"))
            {
                let value = if ty == "checkbox" { "on".to_string() } else { attr(tag, "value").unwrap_or_default() };
                out.push((name, decode(&value)));
            }
        } else if tag.starts_with("<select") {
            let name = attr(tag, "name").unwrap_or_default();
            let body = &rest[..rest.find("</select>").unwrap()];
            let options: Vec<&str> = body.split("<option").skip(1).collect();
            let chosen = options.iter().find(|o| o.contains(" selected")).or(options.first());
            let value = chosen.and_then(|o| attr(o, "value")).unwrap_or_default();
            out.push((name, decode(&value)));
        } else if tag.starts_with("<textarea") {
            let name = attr(tag, "name").unwrap_or_default();
            let body = &rest[end + 1..];
            out.push((name, decode(&body[..body.find("</textarea>").unwrap()])));
        }
        rest = &rest[end + 1..];
    }
    out
}

/// `pairs` with `key` set to `value` (added when missing).
fn with(pairs: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != key).cloned().collect();
    out.push((key.to_string(), value.to_string()));
    out
}

fn refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The spec part of a policy as the API returns it (without id, version and times).
async fn api_spec(app: &crate::helpers::TestApp, id: &str) -> serde_json::Value {
    let r = app.http.get(format!("{}/api/v1/policies/{id}", app.address)).bearer_auth(&app.api_token).send().await;
    let mut v: serde_json::Value = r.unwrap().json().await.unwrap();
    for k in ["id", "version", "created_at", "updated_at"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_made_through_the_api_with_behavior_and_several_metrics_round_trips_through_the_edit_form() {
    let app = admin_app().await;
    let r = app
        .api_post(
            "/api/v1/policies",
            &serde_json::json!({
                "name": "llama", "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
                "min_replicas": 0, "max_replicas": 16, "scale_to_zero_idle_secs": 900,
                "metric": "gpu_utilization", "target_value": 60,
                "metrics": [{"metric": "queue_depth_per_replica", "target": 4}, {"metric": "kv_cache_pct", "target": 85.5}],
                "slo": {"ttft_p95_ms": 800, "itl_p95_ms": 60},
                "predictive": {"mode": "forecast_only", "quantile": 0.95, "horizon_secs": 300},
                "panic": {"threshold": 3, "window_secs": 30},
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                             {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                    "scaleDown": {"stabilizationWindowSeconds": 600, "selectPolicy": "Min",
                                  "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}
                },
                "tolerance": 0.05, "cold_start_secs": 90, "dry_run": true,
                "rebatch": {"min_batch_size": 4, "max_batch_size": 128, "itl_slo_ms": 60, "max_queue_delay_us": 5000}
            }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let before = api_spec(&app, &id).await;
    let s = admin_session(&app).await;
    let page = format!("/policies/{id}");
    let html = s.get(&page).await.text().await.unwrap();
    let form = form_fields(&html, "policy-form");
    let value = |k: &str| form.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str()).unwrap_or("<missing>");
    assert_eq!(value("behavior.scaleDown.stabilizationWindowSeconds"), "600");
    assert_eq!(value("behavior.scaleUp.policies[1].type"), "Percent");
    assert_eq!(value("metrics[1].metric"), "kv_cache_pct");
    assert_eq!(value("metrics[2].target"), "", "a spare empty row");
    assert_eq!(value("predictive.horizon_secs"), "300");
    assert_eq!(value("panic.window_secs"), "30");

    // Saved unchanged: a new version with the identical spec.
    let r = s.post(&page, &refs(&form)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(api_spec(&app, &id).await, before);
    let version: i32 = sqlx::query_scalar("SELECT version FROM policies").fetch_one(&app.pool).await.unwrap();
    assert_eq!(version, 2);

    // A bad period in the second scale-down row (the first cleared): refused next to that row's field.
    let mut bad = with(&form, "behavior.scaleDown.policies[0].value", "");
    bad = with(&bad, "behavior.scaleDown.policies[0].periodSeconds", "");
    bad = with(&bad, "behavior.scaleDown.policies[1].value", "2");
    bad = with(&bad, "behavior.scaleDown.policies[1].periodSeconds", "0");
    let r = s.post(&page, &refs(&bad)).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"id="err-behavior.scaleDown.policies[1].periodSeconds""#), "{html}");
    assert!(html.contains("must be in 1..=1800"), "{html}");
    // A stabilization window above an hour, and a utilisation target above 100 % in a metric row.
    let bad = with(&form, "behavior.scaleUp.stabilizationWindowSeconds", "4000");
    let html = s.post(&page, &refs(&bad)).await.text().await.unwrap();
    assert!(html.contains(r#"id="err-behavior.scaleUp.stabilizationWindowSeconds""#), "{html}");
    let bad = with(&with(&form, "metrics[2].metric", "gpu_utilization"), "metrics[2].target", "150");
    let html = s.post(&page, &refs(&bad)).await.text().await.unwrap();
    assert!(html.contains(r#"id="err-metrics[2].target""#), "{html}");
    assert_eq!(api_spec(&app, &id).await, before, "nothing refused was stored");

    // Changed through the form: behavior and a third metric target.
    let changed = with(
        &with(&form, "behavior.scaleDown.stabilizationWindowSeconds", "120"),
        "metrics[2].metric",
        "tokens_per_sec_per_replica",
    );
    let changed = with(&changed, "metrics[2].target", "900");
    let changed = with(&changed, "behavior.scaleDown.policies[1].type", "Pods");
    let changed = with(&changed, "behavior.scaleDown.policies[1].value", "1");
    let changed = with(&changed, "behavior.scaleDown.policies[1].periodSeconds", "30");
    assert_eq!(s.post(&page, &refs(&changed)).await.status(), 303);
    let after = api_spec(&app, &id).await;
    assert_eq!(after["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 120);
    assert_eq!(
        after["behavior"]["scaleDown"]["policies"][1],
        serde_json::json!({"type": "Pods", "value": 1, "periodSeconds": 30})
    );
    assert_eq!(after["metrics"][2], serde_json::json!({"metric": "tokens_per_sec_per_replica", "target": 900.0}));
    assert_eq!(after["behavior"]["scaleUp"], before["behavior"]["scaleUp"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_from_the_form_takes_metric_rows_ignoring_empty_ones() {
    let app = admin_app().await;
    let s = admin_session(&app).await;
    let html = s.get("/policies/new").await.text().await.unwrap();
    let form = form_fields(&html, "policy-form");
    for row in 0..3 {
        assert!(form.iter().any(|(k, _)| *k == format!("metrics[{row}].target")), "metric row {row}");
    }
    let form = with(&form, "name", "qwen");
    let form = with(&form, "target.namespace", "ml");
    let form = with(&form, "target.name", "qwen");
    let form = with(&form, "metric", "");
    let form = with(&form, "target_value", "");
    let form = with(&form, "metrics[1].metric", "queue_depth_per_replica");
    let form = with(&form, "metrics[1].target", "4");
    let form = with(&form, "metrics[2].metric", "kv_cache_pct");
    let form = with(&form, "metrics[2].target", "80");
    let form = with(&form, "behavior.scaleUp.selectPolicy", "Disabled");
    let form = with(&form, "csrf", &s.csrf);
    let r = s.post("/policies", &refs(&form)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let (spec,): (serde_json::Value,) = sqlx::query_as("SELECT spec FROM policies").fetch_one(&app.pool).await.unwrap();
    assert_eq!(spec["metric"], serde_json::Value::Null);
    assert_eq!(
        spec["metrics"],
        serde_json::json!([{"metric": "queue_depth_per_replica", "target": 4.0}, {"metric": "kv_cache_pct", "target": 80.0}])
    );
    assert_eq!(spec["behavior"]["scaleUp"]["selectPolicy"], "Disabled");
    assert_eq!(spec["behavior"]["scaleDown"], serde_json::Value::Null, "untouched: HPA's defaults");
    assert_eq!(spec["panic"], serde_json::json!({"threshold": 2.0, "window_secs": 60}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_list_filters_by_rule_node_and_deployment_sorts_by_severity_and_pages() {
    // Without the control loop no alert engine runs: the incidents stay as inserted.
    let app = spawn_app(|s| s.control.enabled = false).await;
    let incident = |key: &str, rule: &str, sev: &str, group: &str, source: &str, mins_ago: i32| {
        let (key, rule, sev, group, source) =
            (key.to_string(), rule.to_string(), sev.to_string(), group.to_string(), source.to_string());
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO alerts (dedup_key, rule, severity, source, component, group_name, summary, details, state, started_at) \
                 VALUES ($1, $2, $3, $4, 'x', $5, $1, '{}', 'firing', now() - make_interval(mins => $6))",
            )
            .bind(key)
            .bind(rule)
            .bind(sev)
            .bind(source)
            .bind(group)
            .bind(mins_ago)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    incident("hot-a", "gpu-temperature", "error", "node/node-a", "node-a", 3).await;
    incident("silent-b", "node-silent", "critical", "node/node-b", "node-b", 2).await;
    incident("slo-llama", "slo-burn,failed-scaling", "warning", "deployment/ml/llama", "ml/llama", 1).await;
    let get = |path: String| {
        let app = &app;
        async move {
            let r = app.http.get(format!("{}{path}", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    let summaries = |html: &str| -> Vec<String> {
        ["hot-a", "silent-b", "slo-llama"]
            .iter()
            .filter_map(|k| html.find(&format!(r#"<td class="why">{k}</td>"#)).map(|at| (at, k.to_string())))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect()
    };
    assert_eq!(summaries(&get("/alerts".into()).await), ["slo-llama", "silent-b", "hot-a"], "newest first");
    assert_eq!(summaries(&get("/alerts?sort=oldest".into()).await), ["hot-a", "silent-b", "slo-llama"]);
    assert_eq!(summaries(&get("/alerts?sort=severity".into()).await), ["silent-b", "hot-a", "slo-llama"]);
    assert_eq!(summaries(&get("/alerts?rule=node-silent".into()).await), ["silent-b"]);
    assert_eq!(summaries(&get("/alerts?rule=failed-scaling".into()).await), ["slo-llama"], "one of several rules");
    assert_eq!(summaries(&get("/alerts?node=node-a".into()).await), ["hot-a"]);
    assert_eq!(summaries(&get("/alerts?deployment=ml%2Fllama".into()).await), ["slo-llama"]);
    assert_eq!(summaries(&get("/alerts?severity=critical&node=node-a".into()).await), Vec::<String>::new());
    // 60 more: two pages of 50, the filters kept in the pager's links.
    for i in 0..60 {
        incident(&format!("more-{i}"), "gpu-temperature", "warning", &format!("node/n{i}"), "n", 10 + i).await;
    }
    let html = get("/alerts?rule=gpu-temperature&sort=oldest".into()).await;
    assert!(html.contains("61 matching · page 1 of 2"), "{html}");
    let next = html.split(r#"id="next-page" href="?"#).nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
    let next = next.replace("&#38;", "&").replace("&amp;", "&");
    assert_eq!(
        next, "state=firing&severity=any&rule=gpu-temperature&sort=oldest&page=2",
        "the pager keeps the filters"
    );
    let html = get("/alerts?rule=gpu-temperature&sort=oldest&page=2".into()).await;
    assert_eq!(html.matches("<tr id=\"alert-").count(), 11);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_silences_a_firing_alert_from_the_alerts_page_and_it_pages_no_more_until_expired() {
    let pd = fakes::receiver().await;
    let app = spawn_app(|s| {
        alerting(s, &pd);
        s.alerts.repeat_interval_secs = 0.5;
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
    node(&app.pool, "node-a", 0.0, Some("ml/llama")).await;
    gpu(&app.pool, "node-a", 0, 95.0, 50.0).await;
    let triggers = || app.count("SELECT count(*) FROM alert_deliveries WHERE action = 'trigger'");
    // Open, and triggered again every half second while nothing mutes it.
    let firing = "SELECT id FROM alerts WHERE state = 'firing' AND group_name = 'node/node-a'";
    let id: i64 = app.eventually_scalar(Duration::from_secs(10), "an incident triggered twice", firing).await;
    eventually(Duration::from_secs(10), "a repeat trigger", || async { (triggers().await >= 2).then_some(()) }).await;

    let s = admin_session(&app).await;
    let html = s.get("/alerts").await.text().await.unwrap();
    assert!(html.contains(&format!(r#"id="silence-{id}""#)), "a silence button on the firing row: {html}");
    let confirm = format!("/alerts/{id}/silence");
    let page = s.get(&confirm).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<option value="rule:gpu-temperature" selected>gpu-temperature on node/node-a</option>"#),
        "{html}"
    );
    assert!(html.contains(r#"<option value="group">every alert of node/node-a</option>"#), "{html}");
    let form = form_fields(&html, "silence-form");
    assert_eq!(hidden(&form, "duration"), "1h");

    // No CSRF token, or a wrong one: refused, nothing stored.
    let without: Vec<(String, String)> =
        with(&form, "comment", "fan swap").into_iter().filter(|(k, _)| k != "csrf").collect();
    assert_eq!(s.post(&confirm, &refs(&without)).await.status(), 403);
    assert_eq!(s.post(&confirm, &refs(&with(&without, "csrf", "0000"))).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM silences").await, 0);
    // The API's validation, each error next to its field: a comment is required, a custom duration must read
    // as one and stay within 90 days.
    for (bad, field) in [
        (with(&form, "comment", "  "), "comment"),
        (with(&with(&form, "duration", "custom"), "duration_custom", "soon"), "duration_custom"),
        (with(&with(&form, "duration", "custom"), "duration_custom", "91d"), "duration_custom"),
        (with(&form, "duration", "1y"), "duration"),
        (with(&form, "scope", "rule:node-silent"), "scope"),
    ] {
        let bad = with(&bad, "comment", if field == "comment" { "  " } else { "fan swap" });
        let r = s.post(&confirm, &refs(&bad)).await;
        assert_eq!(r.status(), 400, "{field}");
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!(r#"id="err-{field}""#)), "{field}: {html}");
    }
    assert_eq!(app.count("SELECT count(*) FROM silences").await, 0);

    // Confirmed: 4 hours, by the logged-in user, matching the rule on that node.
    let good = with(&with(&form, "duration", "4h"), "comment", "fan swap on node-a");
    let r = s.post(&confirm, &refs(&good)).await;
    assert_eq!(r.status(), 303);
    let back = r.headers()["location"].to_str().unwrap().to_string();
    let (sid, by, matchers, hours): (uuid::Uuid, String, serde_json::Value, f64) = sqlx::query_as(
        "SELECT id, created_by, matchers, extract(epoch FROM ends_at - starts_at)::float8 / 3600 FROM silences",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(by, "admin");
    assert_eq!(
        matchers,
        serde_json::json!([{"label": "alertname", "value": "gpu-temperature", "op": "="}, {"label": "group", "value": "node/node-a", "op": "="}])
    );
    assert!((hours - 4.0).abs() < 0.01, "{hours}");
    assert!(back.starts_with(&format!("/alerts?silenced={sid}")), "{back}");
    let html = s.get(&back).await.text().await.unwrap();
    assert!(html.contains(&format!(r#"id="silenced-{id}""#)), "the alert shows as silenced at once: {html}");
    assert!(html.contains(r#"id="silence-note""#) && html.contains("fan swap on node-a"), "{html}");
    assert!(html.contains(&format!(r#"id="expire-{sid}""#)), "{html}");

    // Muted: once the engine has marked it, no more triggers.
    eventually(Duration::from_secs(10), "the instance marked silenced", || async {
        let n = app.count("SELECT count(*) FROM alert_instances WHERE suppressed LIKE 'silenced by%'").await;
        (n == 1).then_some(())
    })
    .await;
    let muted = triggers().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(triggers().await, muted, "a silenced incident is not triggered again");

    // A viewer sees neither button and may not post.
    let v = WebSession::login(&app.address, "watcher", "viewer-password").await;
    let html = v.get("/alerts").await.text().await.unwrap();
    assert!(html.contains(&format!(r#"id="silenced-{id}""#)), "{html}");
    assert!(!html.contains("Silence…") && !html.contains("Expire now"), "{html}");
    assert_eq!(v.get(&confirm).await.status(), 403);
    assert_eq!(v.post(&confirm, &refs(&with(&good, "csrf", &v.csrf))).await.status(), 403);
    assert_eq!(v.post(&format!("/silences/{sid}/expire"), &[("csrf", &v.csrf)]).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM silences").await, 1);

    // Expire now (CSRF-checked too): it pages again.
    assert_eq!(s.post(&format!("/silences/{sid}/expire"), &[]).await.status(), 403);
    let r = s.post(&format!("/silences/{sid}/expire"), &[("csrf", &s.csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.post(&format!("/silences/{sid}/expire"), &[("csrf", &s.csrf)]).await.status(), 404);
    let html = s.get("/alerts").await.text().await.unwrap();
    assert!(html.contains(r#"id="no-silences""#) && !html.contains(&format!(r#"id="silenced-{id}""#)), "{html}");
    eventually(Duration::from_secs(10), "triggers again after the silence ended", || async {
        (triggers().await > muted).then_some(())
    })
    .await;
    app.stop().await;
    pd.stop().await;
}

fn hidden<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The dashboard at fleet scale (issue #8): figures shared between clients for a second or two, capped counts.
mod perf {
    use super::*;

    use fleetpilot::routes::web::cache::{COUNTS_TTL, POLICIES_TTL};
    use fleetpilot::routes::web::dashboard::OVERVIEW_TTL;

    const OPERATOR_PASSWORD: &str = "operator-password";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_overview_shows_a_new_alert_within_its_cache_bound_and_every_user_gets_their_own_csrf_token() {
        assert!(OVERVIEW_TTL <= Duration::from_secs(2), "pages must show live data");
        let app = spawn_app(|s| s.control.enabled = false).await;
        add_user(&app.pool, "ops", OPERATOR_PASSWORD, Role::Operator).await;
        add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
        let ops = WebSession::login(&app.address, "ops", OPERATOR_PASSWORD).await;
        let watcher = WebSession::login(&app.address, "watcher", "viewer-password").await;
        let page = ops.get("/").await.text().await.unwrap();
        assert!(page.contains("id=\"tile-alerts\">0<"), "{page}");

        sqlx::query(
            "INSERT INTO alerts (dedup_key, rule, severity, source, component, group_name, summary, details, state, \
             started_at) VALUES ('k', 'gpu-temperature', 'critical', 'node-a', 'gpu', 'node/node-a', 'hot', '{}', \
             'firing', now())",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        // Both users read the same shared figures: at most OVERVIEW_TTL later the new alert is on the page.
        tokio::time::sleep(OVERVIEW_TTL + Duration::from_millis(100)).await;
        let (a, b) = (ops.get("/").await.text().await.unwrap(), watcher.get("/").await.text().await.unwrap());
        for page in [&a, &b] {
            assert!(page.contains("id=\"tile-alerts\">1<"), "{page}");
        }
        // The data is shared, the page is not: each carries its own session's CSRF token.
        assert_ne!(ops.csrf, watcher.csrf);
        assert!(a.contains(&ops.csrf) && !a.contains(&watcher.csrf), "operator's page");
        assert!(b.contains(&watcher.csrf) && !b.contains(&ops.csrf), "viewer's page");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_saved_from_the_dashboard_is_listed_at_once_and_one_written_behind_its_back_within_a_second() {
        let app = spawn_app(|s| s.control.enabled = false).await;
        add_user(&app.pool, "ops", OPERATOR_PASSWORD, Role::Operator).await;
        let s = WebSession::login(&app.address, "ops", OPERATOR_PASSWORD).await;
        // The empty list is read (and shared) first, then the form writes: the write drops the shared read.
        assert!(!s.get("/policies").await.text().await.unwrap().contains("ml/llama"));
        assert_eq!(s.post("/policies", &llama_policy(&s.csrf)).await.status(), 303);
        let listed = s.get("/policies").await.text().await.unwrap();
        assert!(listed.contains("ml/llama"), "{listed}");
        assert!(s.get("/deployments").await.text().await.unwrap().contains("ml/llama"));

        // A write that does not pass through this server (another replica) shows within POLICIES_TTL.
        sqlx::query("UPDATE policies SET deleted_at = now()").execute(&app.pool).await.unwrap();
        tokio::time::sleep(POLICIES_TTL + Duration::from_millis(100)).await;
        assert!(!s.get("/policies").await.text().await.unwrap().contains("ml/llama"));
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_decisions_list_counts_up_to_ten_thousand_and_still_pages_past_them() {
        let app = spawn_app(|s| s.control.enabled = false).await;
        add_user(&app.pool, "ops", OPERATOR_PASSWORD, Role::Operator).await;
        let s = WebSession::login(&app.address, "ops", OPERATOR_PASSWORD).await;
        assert_eq!(s.post("/policies", &llama_policy(&s.csrf)).await.status(), 303);
        sqlx::query(
            "INSERT INTO decisions (policy_id, policy_version, decided_at, target, current_replicas, desired_replicas, \
             winner, reason, proposals, inputs, dry_run, applied) \
             SELECT p.id, 1, now() - i * interval '1 second', 'deployment ml/llama', 1, 1 + (i % 2), 'test', \
                    'decision ' || i, '[]', '{}', false, true FROM policies p, generate_series(1, 10050) i",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        let first = s.get("/decisions").await.text().await.unwrap();
        assert!(first.contains("10000+ matching · page 1 of 201+"), "{first}");
        assert!(first.contains("id=\"next-page\""));
        // The last page is counted exactly: the count reaches one row past the page asked for.
        let last = s.get("/decisions?page=201").await.text().await.unwrap();
        assert!(last.contains("10050 matching · page 201 of 201"), "{last}");
        assert!(last.contains("decision 10050") && !last.contains("id=\"next-page\""));
        // Filtered counts are counted (and shared for COUNTS_TTL) per filter.
        let changed = s.get("/decisions?outcome=changed").await.text().await.unwrap();
        assert!(changed.contains("5025 matching · page 1 of 101"), "{changed}");
        sqlx::query("UPDATE decisions SET desired_replicas = current_replicas WHERE reason = 'decision 1'")
            .execute(&app.pool)
            .await
            .unwrap();
        tokio::time::sleep(COUNTS_TTL + Duration::from_millis(100)).await;
        let changed = s.get("/decisions?outcome=changed").await.text().await.unwrap();
        assert!(changed.contains("5024 matching"), "{changed}");
        app.stop().await;
    }
}
