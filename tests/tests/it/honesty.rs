//! Agent honesty (issue #15): a reading the agent could not take is absent on the wire, NULL in the store,
//! `null` in the API, "—" on the dashboard, and never makes a GPU look idle; a MIG slice is priced as its
//! share of the board.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use fleetpilot::db::users::Role;
use fleetpilot::ingest::remote_write::{Label, PromSample, TimeSeries, Trackers, WriteRequest, encode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, WebSession, add_user, spawn_app};

const NODE: &str = "node-honest";
const H100: &str = "NVIDIA H100 80GB HBM3";

/// Ten minutes of 10-second readings from `t0`: GPU 0's NVML utilisation and power calls fail (absent,
/// the rest present, nothing loaded); GPU 1 really is idle with nothing loaded; the MIG slice `1g.10gb` of
/// GPU 2 is idle with nothing loaded.
fn batch(t0: DateTime<Utc>) -> Value {
    let gib = 1024_u64 * 1024 * 1024;
    let mut gpus = Vec::new();
    for k in 0..60 {
        let ts = (t0 + Duration::seconds(10 * k)).timestamp_millis();
        gpus.push(json!({"ts_ms": ts, "gpu_index": 0, "uuid": "GPU-h-0", "model": H100,
            "util_pct": null, "mem_used_bytes": gib / 2, "mem_total_bytes": 80 * gib,
            "temp_c": 41.0, "sm_clock_mhz": 1980}));
        gpus.push(json!({"ts_ms": ts, "gpu_index": 1, "uuid": "GPU-h-1", "model": H100,
            "util_pct": 0.0, "mem_used_bytes": gib / 2, "mem_total_bytes": 80 * gib,
            "power_w": 70.0, "temp_c": 35.0, "sm_clock_mhz": 1980}));
        gpus.push(json!({"ts_ms": ts, "gpu_index": 1200, "uuid": "MIG-h-2-0", "model": format!("{H100} MIG 1g.10gb"),
            "util_pct": 0.0, "mem_used_bytes": gib / 4, "mem_total_bytes": 10 * gib}));
    }
    json!({
        "version": 1, "agent_id": NODE, "seq": 1, "sent_at_ms": t0.timestamp_millis(),
        "node": {"hostname": NODE, "agent_version": "test", "gpu_source": "nvml"},
        "gpus": gpus,
    })
}

async fn get(app: &TestApp, path: &str) -> Value {
    app.api_ok_json(path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_whose_readings_failed_shows_null_not_zero_and_is_never_an_idle_gpu_opportunity() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let t0 = (Utc::now() - Duration::minutes(25)).duration_trunc(Duration::minutes(1)).unwrap();
    let r = app.ingest_raw(serde_json::to_vec(&batch(t0)).unwrap()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    // The store: NULL, not 0, in the raw samples and the latest row.
    let (util_null, power_null, temp): (bool, bool, Option<f32>) = sqlx::query_as(
        "SELECT util_pct IS NULL, power_w IS NULL, temp_c FROM gpu_latest WHERE node_id = $1 AND gpu_index = 0",
    )
    .bind(NODE)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(util_null && power_null, "absent readings are NULL in gpu_latest");
    assert_eq!(temp, Some(41.0), "the readings that worked are kept");
    let zeros: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gpu_samples WHERE node_id = $1 AND gpu_index = 0 AND (util_pct = 0 OR power_w = 0)",
    )
    .bind(NODE)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(zeros, 0);

    // The API: null for the unknown GPU, a real 0 for the idle one.
    let nodes = get(&app, "/api/v1/nodes").await;
    let gpus = nodes["gpus"].as_array().unwrap();
    let gpu = |i: i64| gpus.iter().find(|g| g["node_id"] == NODE && g["gpu_index"] == i).unwrap();
    assert!(gpu(0)["util_pct"].is_null() && gpu(0)["power_w"].is_null(), "{}", gpu(0));
    assert_eq!(gpu(1)["util_pct"], 0.0);
    let from = t0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (t0 + Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let series = get(&app, &format!("/api/v1/gpus/{NODE}/0/series?from={from}&to={to}")).await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 60, "{series}");
    assert!(points.iter().all(|p| p["util_pct"].is_null() && p["power_w"].is_null()), "{}", points[0]);
    assert!(points.iter().all(|p| p["temp_c"] == 41.0), "{}", points[0]);

    // Opportunities: the idle GPU is one, the unknown GPU is not; the idle slice is 1/7 of a GPU.
    let settings = fleetpilot::config::OpportunitySettings { window_secs: 600, bucket_secs: 10, ..Default::default() };
    let out = fleetpilot::opportunities::refresh_once(&app.pool, &settings, t0 + Duration::seconds(595)).await.unwrap();
    let mut opened = out.opened.clone();
    opened.sort();
    assert_eq!(opened, vec![format!("idle_gpu:{NODE}:1"), format!("idle_gpu:{NODE}:1200")], "{out:?}");
    let list = get(&app, "/api/v1/opportunities").await;
    let item =
        |key: String| list["items"].as_array().unwrap().iter().find(|o| o["key"] == key.as_str()).unwrap().clone();
    let (whole, slice) = (item(format!("idle_gpu:{NODE}:1")), item(format!("idle_gpu:{NODE}:1200")));
    let hours = |o: &Value| o["gpu_hours_per_week"].as_f64().unwrap();
    let money = |o: &Value| o["saving_per_week"].as_f64().unwrap();
    assert!((hours(&slice) * 7.0 - hours(&whole)).abs() < 0.1, "{slice} vs {whole}");
    assert!(money(&slice) < money(&whole) / 6.0, "a 1g slice is not priced as a whole H100: {slice}");

    // The dashboard: "—" for the unknown readings of GPU 0, never "0%" or "0 W".
    add_user(&app.pool, "viewer", "viewer-password", Role::Viewer).await;
    let s = WebSession::login(&app.address, "viewer", "viewer-password").await;
    let page = s.get(&format!("/nodes/{NODE}")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let row = html.split("/gpus/0\"").nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or_default();
    assert!(row.contains("—"), "GPU 0's row shows the unknown readings: {row}");
    assert!(!row.contains("0%") && !row.contains(" 0 W"), "no 0 stands in for an unknown reading: {row}");
    app.stop().await;
}

/// A DCGM exporter's series for one GPU without `DCGM_FI_DEV_POWER_USAGE` (nor clocks-event reasons).
fn dcgm_without_power(node: &str, ts_ms: i64) -> WriteRequest {
    let series = |name: &str, value: f64| TimeSeries {
        labels: [
            ("__name__", name),
            ("Hostname", node),
            ("UUID", "GPU-rw-0"),
            ("gpu", "0"),
            ("instance", "10.0.0.9:9400"),
            ("job", "dcgm"),
            ("modelName", H100),
        ]
        .into_iter()
        .map(|(k, v)| Label { name: k.into(), value: v.into() })
        .collect(),
        samples: vec![PromSample { value, timestamp: ts_ms }],
    };
    WriteRequest {
        timeseries: vec![
            series("DCGM_FI_DEV_GPU_UTIL", 42.0),
            series("DCGM_FI_DEV_FB_USED", 1024.0),
            series("DCGM_FI_DEV_FB_FREE", 80_000.0),
            series("DCGM_FI_DEV_GPU_TEMP", 55.0),
        ],
    }
}

#[test]
fn a_dcgm_series_set_without_power_usage_converts_to_absent_power_not_zero() {
    let body = encode(&dcgm_without_power("rw-node", 1_700_000_000_000));
    let c = Trackers::default().convert_body(&body, b"digest").expect("decodes");
    let g = &c.batches[0].gpus[0];
    assert_eq!(g.util_pct, Some(42.0));
    assert_eq!(g.temp_c, Some(55.0));
    assert_eq!(g.power_w, None, "a DCGM field the exporter does not publish is absent");
    assert_eq!((g.sm_clock_mhz, g.mem_clock_mhz, g.throttle_reasons, g.xid_last), (None, None, None, None));
    assert_eq!(g.mem_total_bytes, Some((1024 + 80_000) * 1_048_576));
    assert_eq!(c.batches[0].validate(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_without_power_usage_stores_null_power() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    // `encode` is what Prometheus sends: protobuf, snappy block format.
    let body = encode(&dcgm_without_power("rw-node", Utc::now().timestamp_millis()));
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ];
    let r = app.agent_post("/api/v1/write", &headers, body).await;
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let (util, power_null): (Option<f32>, bool) =
        sqlx::query_as("SELECT util_pct, power_w IS NULL FROM gpu_latest WHERE node_id = 'rw-node' AND gpu_index = 0")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(util, Some(42.0));
    assert!(power_null, "power is NULL, not 0");
    app.stop().await;
}
