//! The API against its own OpenAPI document, with Schemathesis (PyPI, pinned; installed into
//! `.venv-schemathesis/` by `scripts/ensure-schemathesis`, which `scripts/test` runs): every operation, every
//! check, the examples, coverage, fuzzing and stateful phases, a fixed seed, 0 failures (issue #16).
//!
//! In a test binary of its own: it sends thousands of requests for a few minutes, which would slow the `it`
//! binary's timed tests on a 2-core machine.
//!
//! Constraints between fields that JSON Schema cannot state (min <= max, a silence's end in the future) are
//! applied to generated bodies by `tests/schemathesis/hooks.py`, which also sends the protobuf body of
//! remote-write as generated.
//!
//! Destructive operations need no special care here: the API token Schemathesis sends is configuration (no
//! request can revoke it), deleting or disabling dashboard users ends no API access, and revoking the
//! enrolled node or the enrollment token only makes later requests that use them answer 401/404, which the
//! document declares.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Seed of Schemathesis' generator: the same requests on every run.
const SEED: &str = "16";
/// Test cases per operation and phase: bounded so the run takes a few minutes on 2 cores.
const MAX_EXAMPLES: &str = "25";

fn schemathesis() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-schemathesis/bin/schemathesis");
    bin.exists().then_some(bin)
}

/// A batch of two GPUs and one serving replica of `ml/llama` for `node`.
fn batch(node: &str, seq: u64, ts_ms: i64) -> Value {
    let gpus: Vec<Value> = [0u32, 1]
        .iter()
        .map(|i| {
            json!({
                "ts_ms": ts_ms, "gpu_index": i, "uuid": format!("GPU-{node}-{i}"), "model": "NVIDIA H100",
                "util_pct": 40.0 + f64::from(*i) * 10.0, "mem_used_bytes": 1_000_000_000u64,
                "mem_total_bytes": 80_000_000_000u64, "power_w": 300.0, "temp_c": 60.0, "sm_clock_mhz": 1980
            })
        })
        .collect();
    json!({
        "version": 1, "agent_id": node, "seq": seq, "sent_at_ms": ts_ms,
        "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated", "group": "llama",
                 "deployment": "ml/llama"},
        "gpus": gpus,
        "serving": [{
            "ts_ms": ts_ms, "deployment": "ml/llama", "replica": format!("{node}-r0"), "engine": "vllm",
            "queue_depth": 2.0, "running": 8.0, "kv_cache_pct": 40.0, "ttft_p95_s": 0.4, "itl_p95_s": 0.03,
            "requests_per_s": 3.0, "prompt_tokens_per_s": 900.0, "generation_tokens_per_s": 400.0
        }]
    })
}

/// Data for every read and for the stateful phase's links: nodes with GPU and serving samples, a policy
/// (and so decisions), an alert rule, a silence, a webhook, an enrollment token and an enrolled node.
async fn seed(app: &TestApp) {
    let now = chrono::Utc::now().timestamp_millis();
    for node in ["node-a", "node-b"] {
        for seq in 0..30u64 {
            let r = app
                .ingest_raw(serde_json::to_vec(&batch(node, seq + 1, now - 29_000 + seq as i64 * 1000)).unwrap())
                .await;
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        }
    }
    let created = [
        (
            "/api/v1/policies",
            json!({"name": "llama", "target": {"kind": "agent_group", "name": "llama", "deployment": "ml/llama"},
                   "min_replicas": 1, "max_replicas": 4, "metric": "gpu_utilization", "target_value": 60,
                   "dry_run": true}),
        ),
        (
            "/api/v1/alert-rules",
            json!({"name": "hot-gpu", "metric": "temp_c", "op": ">", "threshold": 85, "for_secs": 30,
                   "severity": "warning"}),
        ),
        (
            "/api/v1/silences",
            json!({"matchers": [{"label": "node", "value": "node-b"}], "comment": "maintenance",
                   "duration_secs": 3600}),
        ),
        ("/api/v1/webhooks", json!({"name": "ops", "url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef"})),
        ("/api/v1/enrollment-tokens", json!({"note": "contract", "deployments": ["ml/*"]})),
    ];
    let mut token = String::new();
    for (path, body) in created {
        let r = app.api_post(path, &body).await;
        assert_eq!(r.status(), 201, "{path}: {}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.unwrap();
        if let Some(t) = v["token"].as_str() {
            token = t.to_string();
        }
    }
    let r = app
        .http
        .post(format!("{}/api/v1/enroll", app.address))
        .json(&json!({"enrollment_token": token, "node_id": "node-c", "hostname": "node-c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_api() {
    let Some(bin) = schemathesis() else {
        let why = "schemathesis is not installed: run scripts/ensure-schemathesis";
        // CI must run the contract test: a missing tool there is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let app = spawn_app(|s| {
        // The dashboard's admin exists so the users routes have someone to disable or delete.
        s.dashboard.admin_password = fleetpilot::config::Secret::new("contract-admin-password");
    })
    .await;
    seed(&app).await;
    let report = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .args(["--no-color", "run"])
        .arg(format!("{}/api/v1/openapi.json", app.address))
        .args(["--header", &format!("Authorization: Bearer {}", app.api_token)])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES, "--workers", "2"])
        .args(["--request-timeout", "30", "--generation-database", "none"])
        .arg("--report-dir")
        .arg(report.path())
        .current_dir(report.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis/hooks.py"))
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("schemathesis ran {:.0} s:\n{stdout}\n{stderr}", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "schemathesis found failures (report above)");
    assert!(stdout.contains("No issues found") || !stdout.contains("Failures"), "{stdout}");
    app.stop().await;
}
