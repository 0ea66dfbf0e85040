//! In-process stand-ins for the agent's peers: a control plane's ingest endpoint and serving engines'
//! `/metrics`. `fleetpilot-agent bench` runs the agent against them, and the integration tests use the
//! control plane to count every sample across outages.
//!
//! The HTTP server is deliberately tiny (one request per connection, `Content-Length` bodies only): enough
//! for reqwest and Prometheus-style scrapes, with nothing that could hide the agent's own behaviour.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{Batch, BatchAck, Command};

/// A response of the tiny server: status, extra headers, body.
pub type Response = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// What a handler sees of a request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Handles one request; `None` drops the connection without an answer (a server that is "down").
pub type Handler = Arc<dyn Fn(Request) -> Option<Response> + Send + Sync>;

/// Serves `handler` on a fresh port of 127.0.0.1 until the runtime stops; returns the address.
pub async fn serve(handler: Handler) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            tokio::spawn(exchange(conn, handler.clone()));
        }
    });
    Ok(addr)
}

async fn exchange(mut conn: TcpStream, handler: Handler) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let Some((status, headers, out)) = handler(Request { method, path, body }) else {
        return;
    };
    let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", out.len());
    for (k, v) in headers {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.write_all(&out).await;
    let _ = conn.shutdown().await;
}

/// How the fake control plane answers uploads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Store and acknowledge.
    Up,
    /// 503 with `Retry-After`.
    Unavailable {
        /// Seconds in `Retry-After`.
        retry_after_secs: f64,
    },
    /// 429 with `Retry-After`.
    TooManyRequests {
        /// Seconds in `Retry-After`.
        retry_after_secs: f64,
    },
    /// Close every connection without answering.
    Down,
    /// 400 for every batch (a batch the server will never take).
    Refuse,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    stored: BTreeMap<(String, u64), Batch>,
    arrivals: Vec<(String, u64)>,
    duplicates: u64,
    posts: u64,
    commands: VecDeque<Command>,
}

/// A control plane's ingest endpoint that keeps every batch by `(agent_id, seq)` exactly once.
#[derive(Clone)]
pub struct FakeControlPlane {
    /// Base URL to give the agent.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeControlPlane {
    /// Starts it on a fresh localhost port (it does not check the bearer token).
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Up,
            stored: BTreeMap::new(),
            arrivals: Vec::new(),
            duplicates: 0,
            posts: 0,
            commands: VecDeque::new(),
        }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |req: Request| {
            let mut s = lock(&shared);
            ingest(&mut s, req)
        });
        let addr = serve(handler).await?;
        Ok(Self { url: format!("http://{addr}"), state })
    }

    /// Switches how uploads are answered.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// Queues a command for the next acknowledgement.
    pub fn push_command(&self, c: Command) {
        lock(&self.state).commands.push_back(c);
    }

    /// Stored batches, by agent then sequence number.
    pub fn batches(&self) -> Vec<Batch> {
        lock(&self.state).stored.values().cloned().collect()
    }

    /// Samples stored (GPU plus serving), each batch counted once.
    pub fn stored_samples(&self) -> u64 {
        lock(&self.state).stored.values().map(|b| (b.gpus.len() + b.serving.len()) as u64).sum()
    }

    /// `(agent_id, seq)` of each newly stored batch, in arrival order.
    pub fn arrivals(&self) -> Vec<(String, u64)> {
        lock(&self.state).arrivals.clone()
    }

    /// Uploads of a batch that was already stored.
    pub fn duplicates(&self) -> u64 {
        lock(&self.state).duplicates
    }

    /// Upload requests received, whatever the answer.
    pub fn posts(&self) -> u64 {
        lock(&self.state).posts
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the data from the assertions that follow.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ingest(s: &mut State, req: Request) -> Option<Response> {
    if req.method != "POST" || req.path != "/api/v1/ingest" {
        return Some((404, Vec::new(), b"not found".to_vec()));
    }
    s.posts += 1;
    let retry = |secs: f64| vec![("retry-after", format!("{secs}"))];
    match s.mode {
        Mode::Down => return None,
        Mode::Unavailable { retry_after_secs } => return Some((503, retry(retry_after_secs), Vec::new())),
        Mode::TooManyRequests { retry_after_secs } => return Some((429, retry(retry_after_secs), Vec::new())),
        Mode::Refuse => return Some((400, Vec::new(), b"gpus[0].util_pct: out of range".to_vec())),
        Mode::Up => {}
    }
    let batch: Batch = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => return Some((400, Vec::new(), e.to_string().into_bytes())),
    };
    let key = (batch.agent_id.clone(), batch.seq);
    let duplicate = s.stored.contains_key(&key);
    if duplicate {
        s.duplicates += 1;
    } else {
        s.arrivals.push(key.clone());
        s.stored.insert(key, batch.clone());
    }
    let ack = BatchAck { seq: batch.seq, duplicate, commands: s.commands.drain(..).map(Into::into).collect() };
    let body = serde_json::to_vec(&ack).unwrap_or_default();
    Some((200, vec![("content-type", "application/json".into())], body))
}

/// A serving engine's `/metrics`: a fixture whose counters, sums and histogram buckets grow on every scrape.
pub struct FakeEngine {
    /// The `/metrics` URL.
    pub url: String,
    /// Scrapes served.
    pub scrapes: Arc<AtomicU64>,
}

impl FakeEngine {
    /// Serves `fixture` (Prometheus text) on a fresh localhost port.
    pub async fn start(fixture: &str) -> std::io::Result<Self> {
        // Split once: (text before the value, value, grows?) per sample line.
        let lines: Vec<(String, f64, bool)> = fixture
            .lines()
            .map(|l| {
                if l.starts_with('#') || l.trim().is_empty() {
                    return (l.to_string(), f64::NAN, false);
                }
                match l.rsplit_once(' ').and_then(|(k, v)| v.parse::<f64>().ok().map(|v| (k, v))) {
                    Some((key, v)) => {
                        let name = key.split(['{', ' ']).next().unwrap_or_default();
                        let grows = ["_total", "_count", "_sum", "_bucket"].iter().any(|s| name.ends_with(s));
                        (format!("{key} "), v, grows)
                    }
                    None => (l.to_string(), f64::NAN, false),
                }
            })
            .collect();
        let scrapes = Arc::new(AtomicU64::new(0));
        let counter = scrapes.clone();
        let handler: Handler = Arc::new(move |_req| {
            let n = counter.fetch_add(1, Ordering::Relaxed) as f64;
            let mut out = String::with_capacity(fixture_len(&lines));
            for (key, v, grows) in &lines {
                out.push_str(key);
                if !v.is_nan() {
                    // Adding the same amount to every bucket keeps histograms cumulative.
                    out.push_str(&format!("{}", if *grows { v + 10.0 * n } else { *v }));
                }
                out.push('\n');
            }
            Some((200, vec![("content-type", "text/plain; version=0.0.4".into())], out.into_bytes()))
        });
        let addr = serve(handler).await?;
        Ok(Self { url: format!("http://{addr}/metrics"), scrapes })
    }
}

fn fixture_len(lines: &[(String, f64, bool)]) -> usize {
    lines.iter().map(|(k, _, _)| k.len() + 16).sum()
}

/// A GPU whose NVML readings are scripted: each is a value, or `None` for a call that fails (as a driver
/// that lost the device, or a field the GPU does not support, answers). Lets tests check what a failed
/// reading becomes without a GPU.
#[derive(Debug, Clone, Default)]
pub struct FakeDevice {
    /// Device UUID.
    pub uuid: Option<String>,
    /// Product name.
    pub name: Option<String>,
    /// Utilisation, percent.
    pub util_pct: Option<u32>,
    /// Framebuffer `(used, total)`, bytes.
    pub memory: Option<(u64, u64)>,
    /// Power, milliwatts.
    pub power_mw: Option<u32>,
    /// Temperature, Celsius.
    pub temp_c: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// Throttle reasons bitmask.
    pub throttle_reasons: Option<u64>,
    /// ECC double-bit errors.
    pub ecc_dbe_total: Option<u64>,
}

impl FakeDevice {
    /// A healthy H100 with every reading present.
    pub fn healthy() -> Self {
        Self {
            uuid: Some("GPU-fake-0".into()),
            name: Some("NVIDIA H100 80GB HBM3".into()),
            util_pct: Some(37),
            memory: Some((10 << 30, 80 << 30)),
            power_mw: Some(312_500),
            temp_c: Some(55),
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            throttle_reasons: Some(0),
            ecc_dbe_total: Some(0),
        }
    }
}

fn scripted<T: Clone>(v: &Option<T>) -> Result<T, nvml_wrapper::error::NvmlError> {
    // `Unknown` is what NVML answers for a device that fell off the bus mid-call.
    v.clone().ok_or(nvml_wrapper::error::NvmlError::Unknown)
}

impl crate::nvml::DeviceReadings for FakeDevice {
    fn uuid(&self) -> Result<String, nvml_wrapper::error::NvmlError> {
        scripted(&self.uuid)
    }
    fn name(&self) -> Result<String, nvml_wrapper::error::NvmlError> {
        scripted(&self.name)
    }
    fn utilization_pct(&self) -> Result<u32, nvml_wrapper::error::NvmlError> {
        scripted(&self.util_pct)
    }
    fn memory_bytes(&self) -> Result<(u64, u64), nvml_wrapper::error::NvmlError> {
        scripted(&self.memory)
    }
    fn power_mw(&self) -> Result<u32, nvml_wrapper::error::NvmlError> {
        scripted(&self.power_mw)
    }
    fn temperature_c(&self) -> Result<u32, nvml_wrapper::error::NvmlError> {
        scripted(&self.temp_c)
    }
    fn clock_mhz(
        &self,
        clock: nvml_wrapper::enum_wrappers::device::Clock,
    ) -> Result<u32, nvml_wrapper::error::NvmlError> {
        match clock {
            nvml_wrapper::enum_wrappers::device::Clock::Memory => scripted(&self.mem_clock_mhz),
            _ => scripted(&self.sm_clock_mhz),
        }
    }
    fn throttle_reasons(&self) -> Result<u64, nvml_wrapper::error::NvmlError> {
        scripted(&self.throttle_reasons)
    }
    fn ecc_dbe_total(&self) -> Result<u64, nvml_wrapper::error::NvmlError> {
        scripted(&self.ecc_dbe_total)
    }
}
