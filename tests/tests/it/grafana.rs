//! Grafana out: both binaries' `/metrics` pass `promtool check metrics`, and the dashboard in
//! `deploy/grafana/` charts only series the binaries declare, with PromQL that Prometheus' own parser accepts
//! (`promtool check rules` on the dashboard's expressions as recording rules).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{eventually, spawn_app};

/// Runs `promtool` with `args`, feeding `stdin`; `None` where promtool is not installed.
fn promtool(args: &[&str], stdin: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), said))
}

/// Every `fleetpilot_*` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("fleetpilot_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every target expression of the dashboard, with its panel's title.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap().to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_expositions_pass_promtool_and_the_grafana_dashboard_charts_declared_series_with_valid_promql() {
    assert!(
        promtool(&["--version"], "").is_some(),
        "promtool is not installed: run scripts/ensure-prometheus (apt-get install -y prometheus)"
    );
    let app = spawn_app(|_| {}).await;
    // A policy and a shadow, so the per-policy series are in the exposition too.
    for (name, mode) in [("demo", "active"), ("demo-lean", "shadow")] {
        let r = app
            .api_post(
                "/api/v1/policies",
                &json!({"name": name, "target": {"kind": "agent_group", "name": "demo", "deployment": "ml/demo"},
                        "min_replicas": 1, "max_replicas": 4, "mode": mode}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let server = eventually(Duration::from_secs(20), "per-policy series on /metrics", || async {
        let text = app.http.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
        (text.contains("fleetpilot_policy_desired_replicas{policy=\"demo\"}")
            && text.contains("fleetpilot_policy_shadow_desired_replicas{policy=\"demo\",shadow=\"demo-lean\"}"))
        .then_some(text)
    })
    .await;
    // The fleet gauges are there, with their bounded label sets, read from the store.
    for line in [
        "fleetpilot_fleet_gpus_reporting 0",
        "fleetpilot_alerts_firing{severity=\"critical\"} 0",
        "fleetpilot_opportunities_open_saving_per_week{kind=\"idle_gpu\"} 0",
    ] {
        assert!(server.contains(line), "{line}: {server}");
    }
    let agent = gpu_agent::selfmetrics::AgentStats::default().render().unwrap();
    for (who, text) in [("server", &server), ("agent", &agent)] {
        let (ok, said) = promtool(&["check", "metrics"], text).unwrap();
        assert!(ok && said.trim().is_empty(), "promtool check metrics ({who}): {said}\n{text}");
    }

    let dashboard: Value = serde_json::from_str(include_str!("../../../deploy/grafana/fleetpilot.json")).unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 20, "{}", exprs.len());
    let declared: Vec<String> = metric_names(include_str!("../../../server/src/telemetry.rs"))
        .into_iter()
        .chain(metric_names(include_str!("../../../gpu-agent/src/selfmetrics.rs")))
        .collect();
    for (title, expr) in &exprs {
        for name in metric_names(expr) {
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(declared.iter().any(|d| d == base), "panel {title:?} charts {name}, which no binary exports");
        }
    }
    // Prometheus' parser on every expression: as recording rules, `promtool check rules` parses them all.
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("dashboard:expr_{i}"), "expr": e}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    // JSON is YAML: the rule file needs no YAML library.
    std::fs::write(file.path(), json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.path().to_str().unwrap()], "").unwrap();
    assert!(ok, "promtool check rules: {said}");
    app.stop().await;
}
