//! The dashboard in a real browser: headless Debian chromium driven through chromedriver (WebDriver), the app
//! fed by simulated agents. Logs in, opens every page, checks that charts hold data, creates a policy through
//! the form (with a rejected value first), silences an alert and sets HPA behavior through the forms, takes a
//! screenshot of each page and asserts that the browser logged no console errors. `scripts/test` installs
//! `chromium` and `chromium-driver`; without them this test fails and says how to install them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use gpu_agent::agent::SimSettings;
use gpu_agent::testkit::{RunningAgent, sim_config};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "browser-test-password";

fn require_browser() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "browser test needs headless chromium: {} missing. Install them with `sudo apt-get install -y chromium chromium-driver` (scripts/test does this when run as root)",
        missing.join(" and ")
    );
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap_or(dir)
}

fn trace() -> PathBuf {
    let path = std::env::temp_dir().join(format!("fleetpilot-browser-trace-{}.csv", std::process::id()));
    let mut text = String::from("timestamp,requests,prompt_tokens,output_tokens\n");
    for i in 0..360 {
        let r = 20 + (i % 12) * 3;
        text.push_str(&format!(
            "2024-01-01 {:02}:{:02}:{:02},{r},{},{}\n",
            i * 10 / 3600,
            (i * 10 / 60) % 60,
            (i * 10) % 60,
            r * 1000,
            r * 100
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Node `i` of two in group `sim`, 4 GPUs and 4 replicas on `trace` (5 s cold start), uploading every
/// 250 ms; node 1's GPU 3 runs hot now and then.
fn agent(server: &str, token: &str, i: u32, trace: &Path) -> RunningAgent {
    let mut cfg = sim_config(server, token, &format!("node-{i}"), Duration::from_millis(250));
    cfg.group = Some("sim".into());
    cfg.sim = SimSettings {
        gpus: 4,
        trace: Some(trace.to_path_buf()),
        node_index: i,
        nodes_total: 2,
        initial_replicas: 4,
        cold_start_secs: 5.0,
        hot_gpu: (i == 1).then_some(3),
        ..cfg.sim
    };
    RunningAgent::start(cfg).unwrap()
}

/// Chromium's console messages since the last call (WebDriver log endpoint of chromedriver).
async fn console(driver: &str, session: &str) -> Vec<(String, String)> {
    let r: Value = reqwest::Client::new()
        .post(format!("{driver}/session/{session}/se/log"))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn assert_no_console_errors(driver: &str, session: &str, page: &str) {
    let errors: Vec<_> = console(driver, session).await.into_iter().filter(|(l, _)| l == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors on {page}: {errors:?}");
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    assert!(png.len() > 1000, "screenshot of {name} is empty");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// Counts drawn elements of a chart: paths with real geometry and rects.
async fn chart_marks(c: &Client, svg_id: &str) -> (u64, u64) {
    let v = c
        .execute(
            "const s = document.getElementById(arguments[0]); if (!s) return [0, 0];\
             const paths = [...s.querySelectorAll('path')].filter(p => (p.getAttribute('d') || '').split('L').length > 2).length;\
             return [paths, s.querySelectorAll('rect').length];",
            vec![json!(svg_id)],
        )
        .await
        .unwrap();
    (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
}

async fn fill(c: &Client, name: &str, value: &str) {
    let e = c.find(Locator::Css(&format!("[name='{name}']"))).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_page_shows_data_in_headless_chromium_without_console_errors() {
    require_browser();
    let app = spawn_app(|s| {
        s.dashboard.admin_password = fleetpilot::config::Secret::new(PASSWORD);
        s.dashboard.refresh_secs = 2;
        s.alerts.node_silent_secs = 30;
        s.alerts.gpu_temp_c = 80.0;
        // The preview reads minute rollups (24 h range): make the first complete minute appear quickly.
        s.ingest.rollup_secs = 1.0;
    })
    .await;
    app.create_policy(&json!({
        "name": "llama", "target": {"kind": "agent_group", "name": "sim", "deployment": "ml/llama"},
        "min_replicas": 1, "max_replicas": 8, "metric": "gpu_utilization", "target_value": 50,
        "cold_start_secs": 5, "rebatch": {"min_batch_size": 4, "max_batch_size": 64, "itl_slo_ms": 60}
    }))
    .await;
    let trace = trace();
    let agents: Vec<_> = (0..2).map(|i| agent(&app.address, &app.agent_token, i, &trace)).collect();
    eventually(Duration::from_secs(200), "samples, decisions, a forecast and a rolled-up minute", || async {
        let ok = app.count("SELECT count(*) FROM gpu_samples").await >= 80
            && app.count("SELECT count(*) FROM decisions").await >= 5
            && app.count("SELECT count(*) FROM forecasts").await >= 1
            && app.count("SELECT count(*) FROM serving_samples").await >= 10
            && app.count("SELECT count(*) FROM gpu_rollup_1m").await >= 1;
        ok.then_some(())
    })
    .await;
    // A resolved alert too, so the list has both states.
    sqlx::query(
        "INSERT INTO alerts (dedup_key, rule, severity, source, component, group_name, summary, details, state, started_at, resolved_at) \
         VALUES ('t1', 'gpu-temperature', 'warning', 'node-0/gpu-1', 'gpu', 'node-0', 'GPU ran hot', '{}', 'resolved', now() - interval '1 hour', now() - interval '50 minutes')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let port = fleetpilot::pg::free_port().unwrap();
    let mut driver_proc = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
    let driver = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "chromedriver listening", || async {
        reqwest::get(format!("{driver}/status")).await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        },
        "goog:loggingPrefs": {"browser": "ALL"}
    });
    let caps = caps.as_object().unwrap().clone();
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver)
        .await
        .expect("a chromium session through chromedriver");
    let session = c.session_id().await.unwrap().unwrap();
    let base = app.address.clone();

    // Log in: the page asked for comes back after the form.
    c.goto(&format!("{base}/decisions")).await.unwrap();
    c.wait().for_element(Locator::Id("login-form")).await.unwrap();
    screenshot(&c, "login").await;
    fill(&c, "username", "admin").await;
    fill(&c, "password", PASSWORD).await;
    c.find(Locator::Id("login-submit")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("decisions")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/decisions"));
    assert_no_console_errors(&driver, &session, "login").await;

    let policy_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM policies").fetch_one(&app.pool).await.unwrap();
    let pages: Vec<(&str, String, Option<&str>)> = vec![
        ("overview", "/".into(), Some("heatmap")),
        ("deployments", "/deployments".into(), None),
        ("deployment", "/deployments/ml/llama".into(), Some("deployment-chart")),
        // The fleet is minutes old: raw samples (15 min); the 1 h default reads minute rollups.
        ("node", "/nodes/node-0?range=15m".into(), Some("node-chart")),
        ("gpu", "/nodes/node-1/gpus/3".into(), Some("gpu-chart")),
        ("decisions", "/decisions?outcome=all".into(), None),
        ("alerts", "/alerts?state=all".into(), None),
        ("policies", "/policies".into(), None),
        ("policy-edit", format!("/policies/{policy_id}"), None),
        ("policy-preview", format!("/policies/{policy_id}/preview"), Some("preview-chart")),
        ("install", "/install".into(), None),
    ];
    for (name, path, chart) in &pages {
        c.goto(&format!("{base}{path}")).await.unwrap();
        c.wait().for_element(Locator::Css("header.top")).await.unwrap();
        let title = c.title().await.unwrap();
        assert!(title.contains("fleetpilot") && !title.starts_with("4") && !title.starts_with("5"), "{name}: {title}");
        if let Some(svg) = chart {
            let (paths, rects) = chart_marks(&c, svg).await;
            if *svg == "heatmap" {
                assert!(rects >= 8, "{name}: heatmap has {rects} cells");
            } else {
                assert!(paths >= 1, "{name}: chart {svg} has no drawn series");
            }
        }
        screenshot(&c, name).await;
        assert_no_console_errors(&driver, &session, name).await;
    }

    // ---- Opportunities and anomalies pages (issue #8): one seeded row each, so the lists and the GPU chart's
    // anomaly band have data whatever the refresher found by now. ----
    insights::check(&c, &app, &base, &driver, &session).await;

    // The decisions list has rows with reasons; the alerts list shows the resolved one.
    c.goto(&format!("{base}/decisions")).await.unwrap();
    let rows = c.find_all(Locator::Css("#decisions tbody tr")).await.unwrap();
    assert!(!rows.is_empty(), "decisions rows");
    c.goto(&format!("{base}/alerts?state=resolved")).await.unwrap();
    let text = c.find(Locator::Id("alerts")).await.unwrap().text().await.unwrap();
    assert!(text.contains("GPU ran hot"), "{text}");

    // The deployment page's timeline and chart markers say why.
    c.goto(&format!("{base}/deployments/ml/llama")).await.unwrap();
    let timeline = c.find(Locator::Id("timeline")).await.unwrap().text().await.unwrap();
    assert!(timeline.len() > 20, "timeline: {timeline}");

    // Live refresh: the overview's live part is fetched again without a reload.
    c.goto(&format!("{base}/")).await.unwrap();
    c.execute("document.getElementById('live').dataset.marker = 'kept'; window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    let before = c.find(Locator::Id("updated")).await.unwrap().text().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = c.find(Locator::Id("updated")).await.unwrap().text().await.unwrap();
    let same_doc = c.execute("return window.__sameDocument === true", vec![]).await.unwrap();
    assert_eq!(same_doc, json!(true), "refresh must not reload the page");
    assert_ne!(before, after, "live refresh updates the page");
    assert!(chart_marks(&c, "heatmap").await.1 >= 8, "heatmap after refresh");
    assert_no_console_errors(&driver, &session, "overview refresh").await;

    // The time-range picker.
    c.goto(&format!("{base}/nodes/node-1/gpus/3")).await.unwrap();
    c.find(Locator::Id("range")).await.unwrap().select_by_value("15m").await.unwrap();
    c.wait().for_url(&url_with(&base, "/nodes/node-1/gpus/3?range=15m")).await.unwrap();
    assert!(chart_marks(&c, "gpu-chart").await.0 >= 5, "15 minute charts");

    // Install page: a fresh token and its command, and the copy button.
    c.goto(&format!("{base}/install")).await.unwrap();
    c.find(Locator::Id("new-token")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("token-note")).await.unwrap();
    let cmd = c.find(Locator::Id("install-command")).await.unwrap().text().await.unwrap();
    assert!(cmd.contains("--token fpe_"), "{cmd}");
    c.find(Locator::Id("copy-button")).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.find(Locator::Id("copy-button")).await.unwrap().text().await.unwrap(), "Copied");
    screenshot(&c, "install-token").await;
    assert_no_console_errors(&driver, &session, "install token").await;

    // A policy through the form: 150 % utilisation is refused next to its field, then 55 is accepted.
    c.goto(&format!("{base}/policies/new")).await.unwrap();
    fill(&c, "name", "mistral").await;
    c.find(Locator::Css("select[name='target.kind']")).await.unwrap().select_by_value("deployment").await.unwrap();
    fill(&c, "target.namespace", "ml").await;
    fill(&c, "target.name", "mistral").await;
    fill(&c, "max_replicas", "6").await;
    fill(&c, "target_value", "150").await;
    c.find(Locator::Id("policy-submit")).await.unwrap().click().await.unwrap();
    let err = c.wait().for_element(Locator::Id("err-target_value")).await.unwrap();
    let msg = err.text().await.unwrap();
    assert!(msg.contains("(0, 100]"), "error next to target_value: {msg}");
    screenshot(&c, "policy-form-error").await;
    // The refused form is a 400 document: chromium logs exactly that, nothing else.
    let errors: Vec<_> = console(&driver, &session)
        .await
        .into_iter()
        .filter(|(l, m)| l == "SEVERE" && !m.contains("status of 400"))
        .collect();
    assert!(errors.is_empty(), "console errors on the refused form: {errors:?}");
    fill(&c, "target_value", "55").await;
    c.find(Locator::Id("policy-submit")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("preview-link")).await.unwrap();
    let spec: Value =
        sqlx::query_scalar("SELECT spec FROM policies WHERE name = 'mistral'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(spec["target_value"], 55.0);
    screenshot(&c, "policy-created").await;
    assert_no_console_errors(&driver, &session, "policy created").await;
    silence_an_alert_and_set_hpa_behavior(&c, &app, &base, &driver, &session).await;

    // On a phone: the page itself does not scroll sideways (wide tables and charts scroll in their boxes).
    c.set_window_size(390, 844).await.unwrap();
    for (name, path) in [("overview-phone", "/"), ("deployment-phone", "/deployments/ml/llama")] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        let overflow =
            c.execute("return document.documentElement.scrollWidth - window.innerWidth", vec![]).await.unwrap();
        assert!(overflow.as_i64().unwrap_or(999) <= 1, "{name}: the page is {overflow} px wider than a phone");
        screenshot(&c, name).await;
        assert_no_console_errors(&driver, &session, name).await;
    }

    c.close().await.unwrap();
    let _ = driver_proc.kill().await;
    let _ = RunningAgent::stop_all(agents).await;
    app.stop().await;
}

/// Issue #8's steps, kept apart from the walk-through above: silence a firing alert from the alerts page
/// (through the confirm page, with a custom duration), see it marked silenced, expire the silence, and set
/// HPA behavior through the policy form (a refused value first, shown next to its field).
async fn silence_an_alert_and_set_hpa_behavior(c: &Client, app: &TestApp, base: &str, driver: &str, session: &str) {
    // A user rule that holds as long as node-0 reports: an alert that stays firing.
    let r = app
        .api_post(
            "/api/v1/alert-rules",
            &json!({"name": "browser-watch", "metric": "temp_c", "op": ">=", "threshold": 0,
                    "severity": "warning", "scope": {"node": "node-0"}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let firing = "SELECT id FROM alerts WHERE state = 'firing' AND 'browser-watch' = ANY (string_to_array(rule, ','))";
    let id: i64 = app.eventually_scalar(Duration::from_secs(30), "a firing browser-watch incident", firing).await;
    c.goto(&format!("{base}/alerts")).await.unwrap();
    c.wait().for_element(Locator::Id(&format!("silence-{id}"))).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("silence-form")).await.unwrap();
    let custom_shown = || async {
        c.execute(
            "return getComputedStyle(document.getElementById('duration_custom').closest('label')).display",
            vec![],
        )
        .await
        .unwrap()
    };
    assert_eq!(custom_shown().await, json!("none"), "the custom duration shows only with \"custom\"");
    c.find(Locator::Css("select[name='scope']")).await.unwrap().select_by_value("rule:browser-watch").await.unwrap();
    c.find(Locator::Id("duration")).await.unwrap().select_by_value("custom").await.unwrap();
    assert_ne!(custom_shown().await, json!("none"));
    fill(c, "duration_custom", "90m").await;
    fill(c, "comment", "browser test: fan swap on node-0").await;
    screenshot(c, "silence-confirm").await;
    assert_no_console_errors(driver, session, "silence confirm").await;
    c.find(Locator::Id("silence-submit")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("silence-note")).await.unwrap();
    c.find(Locator::Id(&format!("silenced-{id}"))).await.expect("the alert is shown as silenced");
    let (sid, by, mins): (uuid::Uuid, String, f64) = sqlx::query_as(
        "SELECT id, created_by, extract(epoch FROM ends_at - starts_at)::float8 / 60 FROM silences WHERE ends_at > now()",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(by, "admin");
    assert!((mins - 90.0).abs() < 0.1, "a 90 minute silence: {mins}");
    screenshot(c, "alert-silenced").await;
    assert_no_console_errors(driver, session, "alert silenced").await;
    c.find(Locator::Id(&format!("expire-{sid}"))).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("no-silences")).await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM silences WHERE ends_at > now()").await, 0);

    // HPA behavior through the form: a window above an hour is refused next to its field, then saved.
    let policy: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM policies WHERE name = 'mistral'").fetch_one(&app.pool).await.unwrap();
    c.goto(&format!("{base}/policies/{policy}")).await.unwrap();
    fill(c, "behavior.scaleDown.stabilizationWindowSeconds", "4000").await;
    c.find(Locator::Id("policy-submit")).await.unwrap().click().await.unwrap();
    let err = c.wait().for_element(Locator::Id("err-behavior.scaleDown.stabilizationWindowSeconds")).await.unwrap();
    assert!(err.text().await.unwrap().contains("at most 3600"));
    let errors: Vec<_> = console(driver, session)
        .await
        .into_iter()
        .filter(|(l, m)| l == "SEVERE" && !m.contains("status of 400"))
        .collect();
    assert!(errors.is_empty(), "console errors on the refused behavior: {errors:?}");
    fill(c, "behavior.scaleDown.stabilizationWindowSeconds", "600").await;
    c.find(Locator::Css("select[name='behavior.scaleDown.policies[0].type']"))
        .await
        .unwrap()
        .select_by_value("Percent")
        .await
        .unwrap();
    fill(c, "behavior.scaleDown.policies[0].value", "50").await;
    fill(c, "behavior.scaleDown.policies[0].periodSeconds", "60").await;
    screenshot(c, "policy-behavior").await;
    c.find(Locator::Id("policy-submit")).await.unwrap().click().await.unwrap();
    // The edit page carries the preview link before and after the save: wait for the stored spec instead.
    let want = json!({"stabilizationWindowSeconds": 600, "selectPolicy": null,
                      "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]});
    let pool = app.pool.clone();
    eventually(Duration::from_secs(20), "the saved behavior", || {
        let pool = pool.clone();
        let want = want.clone();
        async move {
            let spec: Value = sqlx::query_scalar("SELECT spec FROM policies WHERE id = $1")
                .bind(policy)
                .fetch_one(&pool)
                .await
                .unwrap();
            (spec["behavior"]["scaleDown"] == want).then_some(())
        }
    })
    .await;
    c.wait().for_element(Locator::Id("preview-link")).await.unwrap();
    assert_no_console_errors(driver, session, "policy behavior saved").await;
}

fn url_with(base: &str, path: &str) -> url::Url {
    url::Url::parse(&format!("{base}{path}")).unwrap()
}

/// The opportunities and anomalies pages and the GPU chart's anomaly band (issue #8).
mod insights {
    use fantoccini::{Client, Locator};
    use serde_json::json;

    use super::{assert_no_console_errors, screenshot};
    use crate::helpers::TestApp;

    pub async fn check(c: &Client, app: &TestApp, base: &str, driver: &str, session: &str) {
        let hot = json!({"peak": {"observed": 92.0, "expected": 71.0, "component": "OutOfRange", "tail": 0.001}});
        let series = fleetpilot::db::anomalies::SeriesId {
            node_id: "node-1".into(),
            deployment: "ml/llama".into(),
            target: "gpu:node-1:3".into(),
            metric: "temp_c".into(),
        };
        let at = chrono::Utc::now() - chrono::Duration::minutes(2);
        fleetpilot::db::anomalies::open_or_update(&app.pool, &series, "detector", at, "warning", 0.8, &hot, at)
            .await
            .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO opportunities (key, kind, status, deployment, title, evidence, gpu_hours_per_week, \
             saving_per_week, currency, confidence, expected_value, latency, action, first_seen, last_seen) \
             VALUES ('browser:consolidation', 'consolidation', 'open', 'ml/llama', 'ml/llama fits on fewer replicas', \
             $1, 168, 672, 'USD', 0.8, 537.6, '{\"summary\": \"ITL p95 stays under the SLO\"}', $2, now(), now()) \
             RETURNING id",
        )
        .bind(json!({"series": "deployment_generation_tokens_per_s", "from_secs": at.timestamp() - 600,
                     "to_secs": at.timestamp(), "numbers": {"replicas": 4.0, "replicas_needed": 3.0}}))
        .bind(json!({"description": "scale ml/llama from 4 to 3 replicas", "one_click": true,
                     "command": {"type": "scale", "deployment": "ml/llama", "replicas": 3}}))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        for (name, path, table) in [
            ("opportunities", "/opportunities?status=all".to_string(), "opportunities"),
            ("opportunity", format!("/opportunities/{id}"), "opportunity-title"),
            ("opportunity-confirm", format!("/opportunities/{id}/act"), "confirm"),
            ("anomalies", "/anomalies".to_string(), "anomalies"),
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            let text = c.wait().for_element(Locator::Id(table)).await.unwrap().text().await.unwrap();
            assert!(!text.trim().is_empty(), "{name}: #{table} is empty");
            screenshot(c, name).await;
            assert_no_console_errors(driver, session, name).await;
        }
        // The hot GPU's chart shades the event, with the evidence as its tooltip, and lists it below.
        c.goto(&format!("{base}/nodes/node-1/gpus/3?range=15m")).await.unwrap();
        let bands = c
            .execute("return document.querySelectorAll('#gpu-chart rect.span.anomaly title').length", vec![])
            .await
            .unwrap();
        assert!(bands.as_u64().unwrap_or(0) >= 1, "anomaly bands on the GPU chart: {bands}");
        let listed = c.find(Locator::Id("chart-anomalies")).await.unwrap().text().await.unwrap();
        assert!(listed.contains("92"), "{listed}");
        screenshot(c, "gpu-anomaly").await;
        assert_no_console_errors(driver, session, "gpu-anomaly").await;
    }
}
