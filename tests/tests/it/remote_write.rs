//! Prometheus remote-write in, with a real Prometheus (Debian's `prometheus`, installed by
//! `scripts/ensure-prometheus`): it scrapes the DCGM exporter and vLLM fixtures served here and remote-writes
//! into fleetpilot, whose GPUs and serving rows then carry the fixtures' values.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gpu_agent::fakes::FakeEngine;
use serde_json::{Value, json};

use crate::helpers::{assert_field_error, eventually, spawn_app};

/// Kills Prometheus when the test ends, however it ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `host:port` and path of a URL like `http://127.0.0.1:1234/metrics`.
fn target(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    (host.to_string(), format!("/{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_remote_writes_dcgm_and_vllm_series_into_the_fleet() {
    let bin = std::path::Path::new("/usr/bin/prometheus");
    assert!(bin.exists(), "prometheus is not installed: run scripts/ensure-prometheus (apt-get install -y prometheus)");
    let app = spawn_app(|_| {}).await;
    let dcgm = FakeEngine::start(include_str!("../../../../shared/fixtures/dcgm.txt")).await.unwrap();
    let vllm = FakeEngine::start(include_str!("../../../../shared/fixtures/vllm.txt")).await.unwrap();
    let (dcgm_host, dcgm_path) = target(&dcgm.url);
    let (vllm_host, vllm_path) = target(&vllm.url);

    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: the configuration needs no YAML library.
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "dcgm", "metrics_path": dcgm_path, "static_configs": [{"targets": [dcgm_host]}]},
            {"job_name": "vllm", "metrics_path": vllm_path,
             "static_configs": [{"targets": [vllm_host], "labels": {"deployment": "ml/llama", "node": "gpu-node-07"}}]}
        ],
        "remote_write": [{
            "url": format!("{}/api/v1/write", app.address),
            "authorization": {"credentials": app.agent_token},
            "queue_config": {"batch_send_deadline": "1s", "max_samples_per_send": 5000, "min_backoff": "100ms", "max_backoff": "1s"}
        }]
    });
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let _prometheus = Prometheus(
        Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", fleetpilot::pg::free_port().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The fixture's two GPUs of gpu-node-07 appear with its values.
    let nodes = eventually(Duration::from_secs(60), "the DCGM fixture's GPUs on /api/v1/nodes", || async {
        let v: Value = app.api_get("/api/v1/nodes").await.json().await.ok()?;
        let gpus: Vec<Value> =
            v["gpus"].as_array()?.iter().filter(|g| g["node_id"] == "gpu-node-07").cloned().collect();
        (gpus.len() == 2).then_some(gpus)
    })
    .await;
    let g0 = nodes.iter().find(|g| g["gpu_index"] == 0).unwrap();
    assert_eq!(g0["util_pct"].as_f64(), Some(97.0), "{g0}");
    assert_eq!(g0["model"], "NVIDIA H100 80GB HBM3");
    let uuid: String =
        sqlx::query_scalar("SELECT uuid FROM gpu_latest WHERE node_id = 'gpu-node-07' AND gpu_index = 0")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(uuid, "GPU-5b3c1a2e-8f0d-4d7e-9a61-3c2b7f4e9d10");
    assert_eq!(g0["power_w"].as_f64().map(|w| (w * 10.0).round() / 10.0), Some(512.4), "{g0}");
    assert_eq!(g0["mem_used_bytes"].as_i64(), Some(74_514 * 1_048_576), "{g0}");
    let clock: i32 =
        sqlx::query_scalar("SELECT sm_clock_mhz FROM gpu_latest WHERE node_id = 'gpu-node-07' AND gpu_index = 0")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(clock, 1980);

    // vLLM's series (names with ':') become serving rows of the labelled deployment, rates from two writes.
    eventually(Duration::from_secs(60), "serving rows for ml/llama", || async {
        (app.count("SELECT count(*) FROM serving_samples WHERE deployment = 'ml/llama' AND engine = 'vllm'").await > 0)
            .then_some(())
    })
    .await;
    // The dashboard's node page shows them too.
    let page = app.api_get("/nodes/gpu-node-07").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("NVIDIA H100 80GB HBM3"));

    // A body that is not a remote-write request is a 400 naming it; without a token, 401.
    let bad = app.agent_post("/api/v1/write", &[("content-encoding", "snappy")], "certainly not snappy").await;
    assert_field_error(bad, 400, "body").await;
    let anon = app.http.post(format!("{}/api/v1/write", app.address)).body("x").send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}
