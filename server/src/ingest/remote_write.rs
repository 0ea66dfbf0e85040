//! Prometheus remote-write 1.0 in: an existing Prometheus that scrapes DCGM exporters and serving engines
//! forwards what it scrapes, and fleetpilot learns about the fleet without its agent on every node.
//!
//! A request (snappy block-compressed protobuf `WriteRequest`) is regrouped into what the agent would have
//! scraped: per scrape target (`job`, `instance`) and timestamp, a [`Scrape`] of samples. The agent's own
//! readers turn those into GPU samples (`dcgm_gpus`: `DCGM_FI_*` with `Hostname`/`gpu`/`UUID`/`modelName`) and
//! serving samples (the engine tracker: vLLM's `vllm:*`, Triton, TGI; histogram buckets to p50/p95/p99 over the
//! interval between two writes of the same target, counters to rates), and those become agent [`Batch`]es, one per
//! node: the ingest route's validation, scope checks and idempotency apply to them unchanged.
//!
//! Where the rows go: a GPU's node is its `Hostname` label (else the target's host); a serving series'
//! deployment is its `deployment` label (`namespace/name`; add it with a relabel rule), else
//! `<namespace>/<job>`; its replica the `pod` label, else the target's `instance`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION, ServingSample};
use gpu_agent::scrape::{EngineTracker, Sample, Scrape, dcgm_gpus};
use sha2::{Digest as _, Sha256};

/// `node.agent_version` of the batches made here (no agent behind them: no commands go back).
pub const AGENT_VERSION: &str = "prometheus-remote-write";

/// Largest decompressed request accepted (Prometheus sends at most a few MiB per request by default).
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
/// Most series one request may carry.
pub const MAX_SERIES: usize = 200_000;
/// Most engine targets whose previous write is kept (for rates and histogram intervals).
pub const MAX_TRACKED_TARGETS: usize = 10_000;

/// `prometheus.WriteRequest` (remote-write 1.0); metadata (field 3) is not needed and skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PromSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a request cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// Not snappy block format, or larger than [`MAX_DECOMPRESSED_BYTES`] once decompressed.
    #[error("body: {0}")]
    Snappy(String),
    /// Not a `WriteRequest`.
    #[error("body: not a remote-write WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Too many series.
    #[error("timeseries: at most {MAX_SERIES} series per request")]
    TooManySeries,
}

/// Decompresses and decodes a request body.
pub fn decode(body: &[u8]) -> Result<WriteRequest, RemoteWriteError> {
    let len = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(RemoteWriteError::Snappy(format!(
            "decompresses to {len} bytes, more than {MAX_DECOMPRESSED_BYTES}"
        )));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    let req = <WriteRequest as prost::Message>::decode(raw.as_slice())?;
    if req.timeseries.len() > MAX_SERIES {
        return Err(RemoteWriteError::TooManySeries);
    }
    Ok(req)
}

/// Encodes a request as Prometheus sends it (the bench and the tests' senders).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

/// The previous write of each engine target, for rates and histogram intervals (kept per server replica: a
/// target whose writes alternate between replicas gets its first interval on each skipped, never a wrong one).
#[derive(Default)]
pub struct Trackers {
    targets: Mutex<HashMap<(String, String), (i64, EngineTracker)>>,
}

/// A scrape target: `job` and `instance`.
type Target = (String, String);

/// What a request becomes, before the ingest path's checks.
#[derive(Debug, Default)]
pub struct Converted {
    /// One batch per node.
    pub batches: Vec<Batch>,
    /// Samples read into them.
    pub samples: usize,
    /// Series that were neither DCGM nor a known serving engine's (ignored).
    pub ignored_series: usize,
}

impl Trackers {
    /// Turns a request into agent batches. `body_digest` makes the batches' `seq` (a retried request is the
    /// same batches, so ingest's idempotency on `(agent_id, seq)` drops the repeat).
    pub fn convert(&self, req: &WriteRequest, body_digest: &[u8]) -> Converted {
        // Target -> timestamp -> samples.
        let mut scrapes: BTreeMap<Target, BTreeMap<i64, Vec<Sample>>> = BTreeMap::new();
        let mut out = Converted::default();
        for ts in &req.timeseries {
            let mut name = None;
            let mut labels: Vec<(String, String)> = Vec::with_capacity(ts.labels.len());
            for l in &ts.labels {
                if l.name == "__name__" {
                    name = Some(l.value.clone());
                } else {
                    labels.push((l.name.clone(), l.value.clone()));
                }
            }
            let Some(name) = name else {
                out.ignored_series += 1;
                continue;
            };
            labels.sort();
            labels.dedup_by(|a, b| a.0 == b.0);
            let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            let target = (label("job"), label("instance"));
            let per_ts = scrapes.entry(target).or_default();
            // Usually one sample per series and request: the last one takes the labels, the others copy them.
            let n = ts.samples.len();
            let mut labels = Some(labels);
            let mut name = Some(name);
            for (i, s) in ts.samples.iter().enumerate() {
                let (name, labels) = if i + 1 == n {
                    (name.take().unwrap_or_default(), labels.take().unwrap_or_default())
                } else {
                    (name.clone().unwrap_or_default(), labels.clone().unwrap_or_default())
                };
                per_ts.entry(s.timestamp).or_default().push(Sample {
                    name,
                    labels,
                    value: s.value,
                    timestamp_ms: Some(s.timestamp),
                });
            }
        }
        let mut nodes: BTreeMap<String, (Vec<GpuSample>, Vec<ServingSample>)> = BTreeMap::new();
        let mut trackers = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        for (target, per_ts) in scrapes {
            for (ts, samples) in per_ts {
                out.samples += samples.len();
                let scrape = Scrape { sample_lines: samples.len(), samples, ..Scrape::default() };
                let gpus = dcgm_gpus(&scrape);
                if !gpus.is_empty() {
                    for g in gpus {
                        let node = g.hostname.clone().unwrap_or_else(|| host_of(&target.1));
                        let (Some(index), Some(util)) = (g.index, g.util_pct) else { continue };
                        let mib = |v: Option<f64>| v.map(|v| (v.max(0.0) * 1_048_576.0) as u64);
                        let throttle = scrape
                            .samples
                            .iter()
                            .find(|x| {
                                (x.name == "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"
                                    || x.name == "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
                                    && x.label("gpu") == Some(index.to_string().as_str())
                            })
                            .map(|x| x.value)
                            .filter(|v| v.is_finite() && *v >= 0.0 && *v < 9.0e15)
                            .map(|v| v as u64);
                        nodes.entry(node).or_default().0.push(GpuSample {
                            ts_ms: ts,
                            gpu_index: index,
                            uuid: g.uuid.clone(),
                            model: g.model_name.clone().unwrap_or_else(|| "unknown".into()),
                            // A field the exporter does not publish is absent, never 0 (an idle reading).
                            util_pct: Some(util),
                            mem_used_bytes: mib(g.fb_used_mib),
                            mem_total_bytes: mib(g.fb_used_mib).zip(mib(g.fb_free_mib)).map(|(u, f)| u + f),
                            power_w: g.power_w,
                            temp_c: g.temperature_c,
                            sm_clock_mhz: g.sm_clock_mhz.map(|v| v.clamp(0.0, 1e6) as u32),
                            mem_clock_mhz: g.mem_clock_mhz.map(|v| v.clamp(0.0, 1e6) as u32),
                            throttle_reasons: throttle,
                            ecc_dbe_total: None,
                            xid_last: g.xid_last,
                            sm_active: g.sm_active,
                            tensor_active: g.tensor_active,
                        });
                    }
                    continue;
                }
                if gpu_agent::scrape::detect_engine(&scrape).is_none() {
                    out.ignored_series += scrape.samples.len();
                    continue;
                }
                if trackers.len() >= MAX_TRACKED_TARGETS && !trackers.contains_key(&target) {
                    // Bounded memory: an unbounded number of targets cannot grow the map.
                    trackers.clear();
                }
                let (prev_ts, tracker) = trackers.entry(target.clone()).or_insert_with(|| (ts, EngineTracker::new()));
                let elapsed = (ts - *prev_ts) as f64 / 1000.0;
                *prev_ts = ts;
                let Some(s) =
                    tracker.update(&scrape, if elapsed > 0.0 { elapsed } else { 1.0 }).filter(|_| elapsed > 0.0)
                else {
                    continue;
                };
                let first = scrape.samples.first();
                let label = |k: &str| first.and_then(|x| x.label(k)).map(str::to_owned);
                let deployment = label("deployment").unwrap_or_else(|| {
                    format!("{}/{}", label("namespace").unwrap_or_else(|| "default".into()), target.0)
                });
                let replica = label("pod").unwrap_or_else(|| target.1.clone());
                let node = label("node").or_else(|| label("Hostname")).unwrap_or_else(|| host_of(&target.1));
                nodes.entry(node).or_default().1.push(s.serving_sample(ts, deployment, replica));
            }
        }
        drop(trackers);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (node, (gpus, serving)) in nodes {
            // The seq: digest of the request and the node, 63 bits (a retried request gives the same seqs).
            let mut h = Sha256::new();
            h.update(body_digest);
            h.update(node.as_bytes());
            let d = h.finalize();
            let seq = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 1;
            out.batches.push(Batch {
                version: PROTOCOL_VERSION,
                agent_id: node.clone(),
                seq,
                sent_at_ms: now_ms,
                node: NodeInfo {
                    hostname: node,
                    agent_version: AGENT_VERSION.into(),
                    gpu_source: "dcgm-exporter".into(),
                    group: None,
                    deployment: None,
                },
                gpus,
                serving,
                command_results: Vec::new(),
                probes: Vec::new(),
            });
        }
        out
    }
}

/// The host of an `instance` label (`host:port`, `[v6]:port`).
fn host_of(instance: &str) -> String {
    let s = instance.strip_prefix('[').map_or(instance, |r| r.split(']').next().unwrap_or(r));
    s.rsplit_once(':').filter(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok()).map_or(s, |(h, _)| h).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WriteRequest of `text` (exposition format) as Prometheus would send it after scraping `job`/`instance`
    /// at `ts`.
    fn request(text: &str, job: &str, instance: &str, ts: i64) -> WriteRequest {
        let scrape = gpu_agent::scrape::parse(text);
        WriteRequest {
            timeseries: scrape
                .samples
                .into_iter()
                .map(|s| {
                    let mut labels = vec![
                        Label { name: "__name__".into(), value: s.name },
                        Label { name: "job".into(), value: job.into() },
                        Label { name: "instance".into(), value: instance.into() },
                    ];
                    labels.extend(s.labels.into_iter().map(|(name, value)| Label { name, value }));
                    TimeSeries { labels, samples: vec![PromSample { value: s.value, timestamp: ts }] }
                })
                .collect(),
        }
    }

    #[test]
    fn dcgm_series_become_one_batch_per_node_with_the_fixture_values() {
        let text = include_str!("../../../../shared/fixtures/dcgm.txt");
        let req = decode(&encode(&request(text, "dcgm", "10.0.0.7:9400", 1_700_000_000_000))).unwrap();
        let c = Trackers::default().convert(&req, b"digest");
        assert_eq!(c.batches.len(), 1);
        let b = &c.batches[0];
        assert_eq!(b.agent_id, "gpu-node-07");
        assert!(b.validate().is_ok(), "{:?}", b.validate());
        let g0 = b.gpus.iter().find(|g| g.gpu_index == 0).unwrap();
        assert_eq!(g0.util_pct, Some(97.0));
        assert_eq!(g0.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(g0.mem_used_bytes, Some(74_514 * 1_048_576));
        assert_eq!(g0.sm_clock_mhz, Some(1980));
        assert_eq!(g0.ts_ms, 1_700_000_000_000);
        // The same request again: the same seq (ingest drops it as a duplicate); another request: another.
        let again = Trackers::default().convert(&req, b"digest");
        assert_eq!(again.batches[0].seq, b.seq);
        assert_ne!(Trackers::default().convert(&req, b"other").batches[0].seq, b.seq);
    }

    #[test]
    fn a_vllm_target_gives_serving_samples_from_its_second_write_on() {
        let text = include_str!("../../../../shared/fixtures/vllm.txt");
        let t = Trackers::default();
        let first = t.convert(&request(text, "vllm", "10.0.0.8:8000", 1_000_000), b"1");
        assert!(first.batches.is_empty(), "one write is only a baseline");
        let second = t.convert(&request(text, "vllm", "10.0.0.8:8000", 1_005_000), b"2");
        assert_eq!(second.batches.len(), 1);
        let s = &second.batches[0].serving[0];
        assert_eq!(s.engine, "vllm");
        assert_eq!(second.batches[0].agent_id, "10.0.0.8");
        assert!(s.deployment.ends_with("/vllm"), "{}", s.deployment);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not snappy at all").is_err());
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(decode(&junk).is_err());
        assert_eq!(host_of("[::1]:9400"), "::1");
        assert_eq!(host_of("node-3:9400"), "node-3");
        assert_eq!(host_of("node-3"), "node-3");
    }
}
