//! `rebatch` on a Triton node, against a fake Triton on 127.0.0.1 that records every request and keeps the
//! model config a load gives it: the exact request sequence and bodies, a refused load that leaves the
//! config untouched, a load that does not stick being rolled back, and invalid commands refused with a
//! reason before Triton sees anything. The last test drives the whole agent from a fake control plane.

// A failed setup step should fail the test on the spot.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpu_agent::agent::{Agent, AgentConfig, AgentOptions, GpuSourceKind};
use gpu_agent::fakes::{self, FakeControlPlane, Handler, Request};
use gpu_agent::protocol::{Command, CommandAction, CommandResult};
use gpu_agent::testkit::sim_config;
use gpu_agent::triton::{TritonClient, TritonError};
use serde_json::{Value, json};
use tokio::sync::watch;

const MODEL: &str = "llama";
const CONFIG_PATH: &str = "/v2/models/llama/config";
const LOAD_PATH: &str = "/v2/repository/models/llama/load";

/// How the fake answers a load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LoadMode {
    /// Take the override.
    Accept,
    /// 400 with Triton's error body.
    Refuse,
    /// 200 but keep the old config (a Triton that ignored the override).
    Ignore,
}

struct Seen {
    method: String,
    path: String,
    /// The override's config, parsed, for loads.
    config: Option<Value>,
}

struct FakeTriton {
    url: String,
    config: Arc<Mutex<Value>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn initial_config() -> Value {
    json!({
        "name": "llama",
        "platform": "tensorrt_llm",
        "backend": "tensorrtllm",
        "max_batch_size": 8,
        "input": [{"name": "input_ids", "data_type": "TYPE_INT32", "dims": ["-1"]}],
        "output": [{"name": "output_ids", "data_type": "TYPE_INT32", "dims": ["-1", "-1"]}],
        "dynamic_batching": {
            "preferred_batch_size": [2, 4, 8],
            "max_queue_delay_microseconds": "100",
            "preserve_ordering": true
        },
        "instance_group": [{"name": "llama_0", "count": 1, "gpus": [0], "kind": "KIND_GPU"}],
        "parameters": {"gpt_model_type": {"string_value": "inflight_fused_batching"}}
    })
}

impl FakeTriton {
    async fn start(mode: LoadMode, config: Value) -> Self {
        let config = Arc::new(Mutex::new(config));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (config.clone(), seen.clone());
        let handler: Handler = Arc::new(move |req: Request| Some(answer(mode, &c, &s, req)));
        let addr = fakes::serve(handler).await.unwrap();
        Self { url: format!("http://{addr}"), config, seen }
    }

    fn config(&self) -> Value {
        self.config.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far.
    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|s| format!("{} {}", s.method, s.path)).collect()
    }

    /// The configs sent in loads, in order.
    fn loaded(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter_map(|s| s.config.clone()).collect()
    }

    fn client(&self) -> TritonClient {
        TritonClient::new(&self.url, MODEL, Duration::from_secs(5)).unwrap()
    }
}

fn answer(mode: LoadMode, config: &Mutex<Value>, seen: &Mutex<Vec<Seen>>, req: Request) -> fakes::Response {
    let json_resp =
        |status: u16, v: Value| (status, vec![("content-type", "application/json".into())], v.to_string().into_bytes());
    let mut record = Seen { method: req.method.clone(), path: req.path.clone(), config: None };
    let resp = match (req.method.as_str(), req.path.as_str()) {
        ("GET", CONFIG_PATH) => json_resp(200, config.lock().unwrap().clone()),
        ("POST", LOAD_PATH) => {
            // Exactly {"parameters": {"config": "<JSON string>"}}, nothing else.
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            let params = body["parameters"].as_object().unwrap();
            assert_eq!(params.len(), 1, "{body}");
            let text = params["config"].as_str().expect("parameters.config must be a JSON string");
            let new: Value = serde_json::from_str(text).unwrap();
            record.config = Some(new.clone());
            match mode {
                LoadMode::Accept => {
                    *config.lock().unwrap() = new;
                    json_resp(200, json!({}))
                }
                LoadMode::Refuse => json_resp(
                    400,
                    json!({"error": "failed to load 'llama', failed to poll from model repository: out of memory"}),
                ),
                LoadMode::Ignore => json_resp(200, json!({})),
            }
        }
        _ => json_resp(404, json!({"error": "not found"})),
    };
    seen.lock().unwrap().push(record);
    resp
}

fn expected_after(max_batch_size: u32, delay_us: u64, preferred: &[u32]) -> Value {
    let mut c = initial_config();
    c["max_batch_size"] = json!(max_batch_size);
    c["dynamic_batching"]["max_queue_delay_microseconds"] = json!(delay_us);
    c["dynamic_batching"]["preferred_batch_size"] = json!(preferred);
    c
}

#[tokio::test]
async fn rebatch_reads_the_config_loads_an_override_that_changes_only_batching_and_verifies_it() {
    let triton = FakeTriton::start(LoadMode::Accept, initial_config()).await;
    let msg = triton.client().rebatch(4, 2500).await.unwrap();
    assert!(msg.contains("max_batch_size 4") && msg.contains("2500 us"), "{msg}");
    assert_eq!(
        triton.requests(),
        vec![format!("GET {CONFIG_PATH}"), format!("POST {LOAD_PATH}"), format!("GET {CONFIG_PATH}")]
    );
    // Preferred sizes above the new maximum are dropped; every other field is sent back as read.
    let want = expected_after(4, 2500, &[2, 4]);
    assert_eq!(triton.loaded(), vec![want.clone()]);
    assert_eq!(triton.config(), want);
}

#[tokio::test]
async fn a_refused_load_is_reported_and_leaves_the_config_untouched() {
    let triton = FakeTriton::start(LoadMode::Refuse, initial_config()).await;
    let err = triton.client().rebatch(16, 500).await.unwrap_err();
    assert!(matches!(err, TritonError::LoadRefused { status: 400, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("out of memory") && msg.contains("previous config stays"), "{msg}");
    // No read-back, no second load: nothing half-applied.
    assert_eq!(triton.requests(), vec![format!("GET {CONFIG_PATH}"), format!("POST {LOAD_PATH}")]);
    assert_eq!(triton.config(), initial_config());
}

#[tokio::test]
async fn a_load_that_does_not_stick_is_rolled_back_to_the_previous_config() {
    let triton = FakeTriton::start(LoadMode::Ignore, initial_config()).await;
    let err = triton.client().rebatch(4, 2500).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TritonError::NotApplied { .. }), "{err:?}");
    assert!(msg.contains("restored the previous config"), "{msg}");
    assert_eq!(
        triton.requests(),
        vec![
            format!("GET {CONFIG_PATH}"),
            format!("POST {LOAD_PATH}"),
            format!("GET {CONFIG_PATH}"),
            format!("POST {LOAD_PATH}"),
        ]
    );
    assert_eq!(triton.loaded(), vec![expected_after(4, 2500, &[2, 4]), initial_config()]);
}

#[tokio::test]
async fn a_model_that_cannot_batch_is_refused_with_a_reason_before_any_load() {
    let mut unbatched = initial_config();
    unbatched["max_batch_size"] = json!(0);
    let triton = FakeTriton::start(LoadMode::Accept, unbatched.clone()).await;
    let err = triton.client().rebatch(4, 100).await.unwrap_err();
    assert!(matches!(err, TritonError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("does not batch"), "{err}");
    assert_eq!(triton.requests(), vec![format!("GET {CONFIG_PATH}")]);
    assert_eq!(triton.config(), unbatched);
}

#[tokio::test]
async fn an_unreachable_triton_is_an_error_not_a_panic() {
    // A port nothing listens on (bound, then released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let client = TritonClient::new(&format!("http://{addr}"), MODEL, Duration::from_secs(1)).unwrap();
    let err = client.rebatch(4, 100).await.unwrap_err();
    assert!(matches!(err, TritonError::Request { step: "reading the model config", .. }), "{err:?}");
}

fn agent_config(server: &str) -> AgentConfig {
    let mut cfg = sim_config(server, "t0ken", "triton-node", Duration::from_millis(50));
    // No GPU telemetry: the node is only its Triton engine.
    cfg.gpu_source = GpuSourceKind::None;
    cfg.max_queued = 100;
    // Must not run: the Triton path takes precedence.
    cfg.rebatch_hook = Some("exit 3".into());
    cfg
}

fn rebatch(id: &str, deployment: &str, max_batch_size: u32, max_queue_delay_us: u64) -> Command {
    Command {
        id: id.into(),
        action: CommandAction::Rebatch { deployment: deployment.into(), max_batch_size, max_queue_delay_us },
    }
}

#[tokio::test]
async fn the_agent_applies_rebatch_through_triton_and_rejects_invalid_commands_with_a_reason() {
    let cp = FakeControlPlane::start().await.unwrap();
    let triton = FakeTriton::start(LoadMode::Accept, initial_config()).await;
    let agent = Agent::with_options(
        agent_config(&cp.url),
        AgentOptions { request_timeout: Some(Duration::from_secs(2)), ..AgentOptions::default() },
    )
    .unwrap()
    .with_triton(Some(triton.url.clone()), Some(MODEL.into()))
    .unwrap();
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(agent.run(rx));

    cp.push_command(rebatch("ok", "ml/llama", 16, 800));
    cp.push_command(rebatch("zero", "ml/llama", 0, 800));
    cp.push_command(rebatch("elsewhere", "ml/other", 4, 800));
    let results = |cp: &FakeControlPlane| -> Vec<CommandResult> {
        cp.batches().into_iter().flat_map(|b| b.command_results).collect()
    };
    let start = Instant::now();
    while results(&cp).len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "command results did not arrive: {:?}", results(&cp));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    handle.await.unwrap();

    let r = results(&cp);
    let by_id = |id: &str| r.iter().find(|c| c.id == id).unwrap().clone();
    let ok = by_id("ok");
    assert!(ok.ok && ok.message.contains("max_batch_size 16"), "{ok:?}");
    let zero = by_id("zero");
    assert!(!zero.ok && zero.message.contains("max_batch_size must be"), "{zero:?}");
    let elsewhere = by_id("elsewhere");
    assert!(!elsewhere.ok && elsewhere.message.contains("not served on this node"), "{elsewhere:?}");
    // Only the valid command reached Triton; preferred sizes all fit under 16, so they are kept.
    assert_eq!(
        triton.requests(),
        vec![format!("GET {CONFIG_PATH}"), format!("POST {LOAD_PATH}"), format!("GET {CONFIG_PATH}")]
    );
    assert_eq!(triton.config(), expected_after(16, 800, &[2, 4, 8]));
}

#[tokio::test]
async fn triton_settings_need_both_the_url_and_the_model() {
    let cp = FakeControlPlane::start().await.unwrap();
    let agent = Agent::new(agent_config(&cp.url)).unwrap();
    let err = agent.with_triton(Some("http://127.0.0.1:8000".into()), None).err().unwrap();
    assert!(err.to_string().contains("triton_model"), "{err}");
    let agent = Agent::new(agent_config(&cp.url)).unwrap();
    assert!(agent.with_triton(None, None).is_ok());
}
