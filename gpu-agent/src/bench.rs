//! `fleetpilot-agent bench overhead`: what the agent costs its node.
//!
//! The agent runs as a child process (`fleetpilot-agent run`, 8 simulated GPUs, two engine scrapes, 1 s
//! interval, an on-disk spool) against fakes served by this process, so the figures are the real binary's
//! and none of the fakes' work is counted. CPU time comes from `/proc/<pid>/stat` (all threads; clock ticks
//! of 10 ms) over a window that starts after a warm-up; peak RSS is `VmHWM` from `/proc/<pid>/status`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fakes::{FakeControlPlane, FakeEngine};

/// Warm-up excluded from the CPU window (process start, first scrapes, TLS provider, allocator growth).
const WARMUP: Duration = Duration::from_secs(3);
/// `USER_HZ`: fixed at 100 by the Linux ABI for `/proc` times, whatever the kernel's `HZ`.
const TICKS_PER_SEC: f64 = 100.0;

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A fixture could not be read.
    #[error("reading fixture {path}: {source} (pass --fixtures DIR with vllm.txt and triton.txt)")]
    Fixture {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Something around the child process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc` did not say what was expected.
    #[error("reading /proc/{pid}: {what}")]
    Proc {
        /// The agent's pid.
        pid: u32,
        /// What was missing.
        what: &'static str,
    },
    /// The agent exited during the run.
    #[error("the agent exited early ({0}); run it by hand to see why")]
    AgentExited(String),
}

/// Results of one overhead run.
#[derive(Debug, Clone, PartialEq)]
pub struct Overhead {
    /// Measured window, seconds.
    pub window_secs: f64,
    /// Agent CPU time over the window (user + system, all threads) as a percentage of one core.
    pub cpu_percent: f64,
    /// Peak resident set of the agent, MiB.
    pub peak_rss_mb: f64,
    /// Batches the fake control plane stored.
    pub batches: usize,
    /// Samples in them.
    pub samples: u64,
    /// Scrapes the fake engines served.
    pub scrapes: u64,
}

/// Default fixture directory (the repository's shared fixtures, as the scrape tests use them).
pub fn default_fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures"))
}

fn read_fixture(dir: &Path, name: &str) -> Result<String, BenchError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| BenchError::Fixture { path, source })
}

/// CPU ticks (user + system, all threads) of `pid`.
fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| BenchError::Proc { pid, what: "stat" })?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or(BenchError::Proc { pid, what: "stat format" })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(BenchError::Proc { pid, what: "utime/stime" }),
    }
}

/// Peak resident set of `pid`, KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| BenchError::Proc { pid, what: "status" })?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or(BenchError::Proc { pid, what: "VmHWM" })
}

/// Runs `agent_exe run` for `seconds` (after a warm-up) against in-process fakes and measures it.
pub async fn overhead(agent_exe: &Path, seconds: u64, fixtures: &Path) -> Result<Overhead, BenchError> {
    let vllm = read_fixture(fixtures, "vllm.txt")?;
    let triton = read_fixture(fixtures, "triton.txt")?;
    let io = |what: &'static str| move |source: std::io::Error| BenchError::Io { what, source };
    let cp = FakeControlPlane::start().await.map_err(io("starting the fake control plane"))?;
    let e1 = FakeEngine::start(&vllm).await.map_err(io("starting the fake vLLM"))?;
    let e2 = FakeEngine::start(&triton).await.map_err(io("starting the fake Triton"))?;
    let spool = tempfile_dir().map_err(io("creating a spool directory"))?;

    let mut cmd = tokio::process::Command::new(agent_exe);
    // Only the flags below count: a developer's FLEETPILOT_* variables must not change what is measured.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLEETPILOT_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["run", "--server", &cp.url, "--token", "bench", "--agent-id", "bench-node"])
        .args(["--gpu-source", "sim", "--sim-gpus", "8", "--interval-secs", "1", "--deployment", "bench/llm"])
        .args(["--engine-url", &e1.url, "--engine-url", &e2.url, "--metrics-addr", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(&spool)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(io("starting the agent"))?;
    let pid = child.id().ok_or(BenchError::AgentExited("no pid".into()))?;

    tokio::time::sleep(WARMUP).await;
    let t0 = cpu_ticks(pid)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let t1 = cpu_ticks(pid)?;
    let window_secs = started.elapsed().as_secs_f64();
    let rss = peak_rss_kib(pid)?;
    if let Ok(Some(status)) = child.try_wait() {
        return Err(BenchError::AgentExited(status.to_string()));
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&spool);

    let cpu_secs = t1.saturating_sub(t0) as f64 / TICKS_PER_SEC;
    Ok(Overhead {
        window_secs,
        cpu_percent: 100.0 * cpu_secs / window_secs.max(1e-9),
        peak_rss_mb: rss as f64 / 1024.0,
        batches: cp.batches().len(),
        samples: cp.stored_samples(),
        scrapes: e1.scrapes.load(Ordering::Relaxed) + e2.scrapes.load(Ordering::Relaxed),
    })
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fleetpilot-bench-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
