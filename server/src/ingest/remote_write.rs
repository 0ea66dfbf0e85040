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
//! The receiver's path ([`Trackers::convert_body`]) costs no copy per label: the body is decompressed into a
//! buffer the worker thread reuses, decoded into `&str` slices of it ([`WriteRequestRef`]), and DCGM series fill
//! per-GPU accumulators directly; only serving-engine series become owned [`Sample`]s for the engines' parsers.
//! Its result is the regrouping above, read by `dcgm_gpus` (the tests compare both on the fixtures and on random
//! requests).
//!
//! Where the rows go: a GPU's node is its `Hostname` label (else the target's host); a serving series'
//! deployment is its `deployment` label (`namespace/name`; add it with a relabel rule), else
//! `<namespace>/<job>`; its replica the `pod` label, else the target's `instance`.

mod wire;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION, ServingSample};
#[cfg(test)]
use gpu_agent::scrape::dcgm_gpus;
use gpu_agent::scrape::{DcgmGpu, EngineTracker, Sample, Scrape};
use sha2::{Digest as _, Sha256};
pub use wire::{SeriesRef, WireError, WriteRequestRef};

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
    /// Not a `WriteRequest` (the owned decoding, [`decode`]).
    #[error("body: not a remote-write WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not a `WriteRequest` (the receiver's borrowing decoding, [`WriteRequestRef`]).
    #[error("body: not a remote-write WriteRequest: {0}")]
    Wire(#[from] WireError),
    /// Too many series.
    #[error("timeseries: at most {MAX_SERIES} series per request")]
    TooManySeries,
}

/// Decompresses and decodes a request body into owned messages (prost). The receiver does not copy its strings:
/// see [`Trackers::convert_body`]; this is the reference it is tested against, and the senders' type.
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

/// The first DCGM reading of each GPU at one scrape target and timestamp, accumulated straight from the request's
/// borrowed labels (no [`Sample`] per series).
struct GpuAcc<'a> {
    /// The `UUID` (or `uuid`) label.
    uuid: &'a str,
    /// `modelName`, from the first series of the GPU that has it.
    model: Option<&'a str>,
    /// `Hostname` (else `hostname`), from the first series of the GPU that has either.
    hostname: Option<&'a str>,
    /// The numeric readings (only those fields of [`DcgmGpu`] are used).
    readings: DcgmGpu,
}

/// One scrape target's series at one timestamp.
#[derive(Default)]
struct ScrapeAcc<'a> {
    /// Series read at this timestamp.
    samples: usize,
    /// DCGM readings per GPU, keyed and ordered as [`dcgm_gpus`] orders its GPUs: index, UUID, MIG instance.
    gpus: BTreeMap<(Option<u32>, &'a str, &'a str), GpuAcc<'a>>,
    /// `(gpu label, value)` of the clock throttle series, in the order sent.
    throttle: Vec<(&'a str, f64)>,
    /// Everything else (serving engines, unknown series), for the engine path and its parsers.
    other: Vec<Sample>,
}

/// DCGM's clock throttle reasons bitmask (renamed `CLOCKS_EVENT_REASONS` in DCGM 3.3).
fn is_throttle(name: &str) -> bool {
    name == "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" || name == "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"
}

/// Whether `label` is `index` written as `index.to_string()` writes it (no sign, no leading zeros): the throttle
/// series of a GPU is matched on exactly that text.
fn is_decimal_of(label: &str, index: u32) -> bool {
    label.parse::<u32>() == Ok(index) && !label.starts_with('+') && (label == "0" || !label.starts_with('0'))
}

thread_local! {
    /// The decompression buffer of this worker thread, reused across requests.
    static RAW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decompressed bytes kept between requests at most per thread (a rare large request does not pin its size).
const KEEP_BUFFER_BYTES: usize = 4 << 20;

impl Trackers {
    /// The receiver's path: decompresses `body` into this thread's reused buffer, decodes it without copying its
    /// strings ([`WriteRequestRef`]) and converts it ([`Trackers::convert_ref`]).
    pub fn convert_body(&self, body: &[u8], body_digest: &[u8]) -> Result<Converted, RemoteWriteError> {
        let len = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
        if len > MAX_DECOMPRESSED_BYTES {
            return Err(RemoteWriteError::Snappy(format!(
                "decompresses to {len} bytes, more than {MAX_DECOMPRESSED_BYTES}"
            )));
        }
        RAW.with(|cell| {
            // A request converting on this thread cannot be interrupted by another (no await inside), so the
            // borrow is never contended; `try_borrow_mut` keeps that assumption from becoming a panic.
            let mut own = Vec::new();
            let mut guard = cell.try_borrow_mut().ok();
            let raw = guard.as_deref_mut().unwrap_or(&mut own);
            if raw.len() < len {
                raw.resize(len, 0);
            }
            let result = (|| {
                let n = snap::raw::Decoder::new()
                    .decompress(body, &mut raw[..len])
                    .map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
                let req = WriteRequestRef::decode(&raw[..n])?;
                if req.len() > MAX_SERIES {
                    return Err(RemoteWriteError::TooManySeries);
                }
                Ok(self.convert_ref(&req, body_digest))
            })();
            if raw.capacity() > KEEP_BUFFER_BYTES {
                *raw = Vec::new();
            }
            result
        })
    }

    /// Turns a decoded request into agent batches. `body_digest` makes the batches' `seq` (a retried request is
    /// the same batches, so ingest's idempotency on `(agent_id, seq)` drops the repeat).
    ///
    /// DCGM series (`DCGM_FI_*` with a `gpu` or `UUID` label) go straight into per-GPU accumulators; the rest
    /// become [`Sample`]s for the serving engines' parsers. The result is what regrouping every series into
    /// [`Scrape`]s and reading them with [`dcgm_gpus`] gives (the tests compare both).
    pub fn convert_ref(&self, req: &WriteRequestRef<'_>, body_digest: &[u8]) -> Converted {
        let mut out = Converted::default();
        // Target -> timestamp -> what was read.
        let mut scrapes: BTreeMap<(&str, &str), BTreeMap<i64, ScrapeAcc<'_>>> = BTreeMap::new();
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(16);
        for series in req.series_iter() {
            labels.clear();
            let mut name = None;
            for &(k, v) in series.labels {
                if k == "__name__" {
                    name = Some(v);
                } else {
                    labels.push((k, v));
                }
            }
            let Some(name) = name else {
                out.ignored_series += 1;
                continue;
            };
            // Prometheus sends labels sorted; a duplicate name keeps the smallest value, as the text parser does.
            if !labels.is_sorted() {
                labels.sort_unstable();
            }
            labels.dedup_by(|a, b| a.0 == b.0);
            let label = |k: &str| labels.binary_search_by(|(n, _)| (*n).cmp(k)).ok().map(|i| labels[i].1);
            let per_ts = scrapes.entry((label("job").unwrap_or(""), label("instance").unwrap_or(""))).or_default();
            let uuid = label("UUID").or_else(|| label("uuid"));
            let index_label = label("gpu");
            if name.starts_with("DCGM_FI_") && (uuid.is_some() || index_label.is_some()) {
                let index = index_label.and_then(|i| i.parse().ok());
                let uuid = uuid.unwrap_or_default();
                let key = (index, uuid, label("GPU_I_ID").unwrap_or_default());
                let model = label("modelName");
                let hostname = label("Hostname").or_else(|| label("hostname"));
                for s in series.samples {
                    let scrape = per_ts.entry(s.timestamp).or_default();
                    scrape.samples += 1;
                    let gpu = scrape.gpus.entry(key).or_insert_with(|| GpuAcc {
                        uuid,
                        model: None,
                        hostname: None,
                        readings: DcgmGpu::default(),
                    });
                    gpu.model = gpu.model.or(model);
                    gpu.hostname = gpu.hostname.or(hostname);
                    gpu.readings.record(name, s.value);
                    if let Some(i) = index_label.filter(|_| is_throttle(name)) {
                        scrape.throttle.push((i, s.value));
                    }
                }
                continue;
            }
            let owned: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            for s in series.samples {
                let scrape = per_ts.entry(s.timestamp).or_default();
                scrape.samples += 1;
                scrape.other.push(Sample {
                    name: name.to_owned(),
                    labels: owned.clone(),
                    value: s.value,
                    timestamp_ms: Some(s.timestamp),
                });
            }
        }
        let mut nodes = Nodes::new();
        let mut trackers = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        for (target, per_ts) in scrapes {
            for (ts, scrape) in per_ts {
                out.samples += scrape.samples;
                if scrape.gpus.is_empty() {
                    let samples = scrape.other;
                    let scrape = Scrape { sample_lines: samples.len(), samples, ..Scrape::default() };
                    serving(&mut trackers, target, ts, &scrape, &mut out, &mut nodes);
                    continue;
                }
                for ((index, _, _), g) in scrape.gpus {
                    let node = g.hostname.unwrap_or_else(|| host_of(target.1));
                    let (Some(index), Some(util)) = (index, g.readings.util_pct) else { continue };
                    let throttle = scrape
                        .throttle
                        .iter()
                        .find(|(i, _)| is_decimal_of(i, index))
                        .map(|(_, v)| *v)
                        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 9.0e15)
                        .map(|v| v as u64);
                    let model = g.model.unwrap_or("unknown").to_owned();
                    let sample = gpu_sample(ts, index, util, g.uuid.to_owned(), model, &g.readings, throttle);
                    nodes.entry(Cow::Borrowed(node)).or_default().0.push(sample);
                }
            }
        }
        drop(trackers);
        out.batches = batches(nodes, body_digest);
        out
    }
}

/// Samples per node, ordered by node.
type Nodes<'a> = BTreeMap<Cow<'a, str>, (Vec<GpuSample>, Vec<ServingSample>)>;

/// A GPU reading of the agent protocol from a GPU's DCGM readings at `ts` (the one place they are mapped).
fn gpu_sample(
    ts: i64,
    index: u32,
    util: f64,
    uuid: String,
    model: String,
    g: &DcgmGpu,
    throttle: Option<u64>,
) -> GpuSample {
    let mib = |v: Option<f64>| v.map(|v| (v.max(0.0) * 1_048_576.0) as u64);
    GpuSample {
        ts_ms: ts,
        gpu_index: index,
        uuid,
        model,
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
    }
}

/// A serving engine's scrape at `ts`: a serving sample from the target's second write on (rates and histogram
/// intervals need the previous one); series of no known engine are counted as ignored.
fn serving(
    trackers: &mut HashMap<Target, (i64, EngineTracker)>,
    target: (&str, &str),
    ts: i64,
    scrape: &Scrape,
    out: &mut Converted,
    nodes: &mut Nodes<'_>,
) {
    if gpu_agent::scrape::detect_engine(scrape).is_none() {
        out.ignored_series += scrape.samples.len();
        return;
    }
    let target: Target = (target.0.to_owned(), target.1.to_owned());
    if trackers.len() >= MAX_TRACKED_TARGETS && !trackers.contains_key(&target) {
        // Bounded memory: an unbounded number of targets cannot grow the map.
        trackers.clear();
    }
    let (prev_ts, tracker) = trackers.entry(target.clone()).or_insert_with(|| (ts, EngineTracker::new()));
    let elapsed = (ts - *prev_ts) as f64 / 1000.0;
    *prev_ts = ts;
    let Some(s) = tracker.update(scrape, if elapsed > 0.0 { elapsed } else { 1.0 }).filter(|_| elapsed > 0.0) else {
        return;
    };
    let first = scrape.samples.first();
    let label = |k: &str| first.and_then(|x| x.label(k)).map(str::to_owned);
    let deployment = label("deployment")
        .unwrap_or_else(|| format!("{}/{}", label("namespace").unwrap_or_else(|| "default".into()), target.0));
    let replica = label("pod").unwrap_or_else(|| target.1.clone());
    let node = label("node").or_else(|| label("Hostname")).unwrap_or_else(|| host_of(&target.1).to_owned());
    nodes.entry(Cow::Owned(node)).or_default().1.push(s.serving_sample(ts, deployment, replica));
}

/// One batch per node; the seq of each is a digest of the request and the node, 63 bits (a retried request gives
/// the same seqs).
fn batches(nodes: Nodes<'_>, body_digest: &[u8]) -> Vec<Batch> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::with_capacity(nodes.len());
    for (node, (gpus, serving)) in nodes {
        let node = node.into_owned();
        let mut h = Sha256::new();
        h.update(body_digest);
        h.update(node.as_bytes());
        let d = h.finalize();
        let seq = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 1;
        out.push(Batch {
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

/// The host of an `instance` label (`host:port`, `[v6]:port`).
fn host_of(instance: &str) -> &str {
    let s = instance.strip_prefix('[').map_or(instance, |r| r.split(']').next().unwrap_or(r));
    s.rsplit_once(':').filter(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok()).map_or(s, |(h, _)| h)
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

    /// The converter before the DCGM fast path, kept as the reference: every series becomes a [`Sample`], the
    /// samples are regrouped into [`Scrape`]s per target and timestamp and read by the agent's own [`dcgm_gpus`].
    fn reference_convert(t: &Trackers, req: &WriteRequest, body_digest: &[u8]) -> Converted {
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
            let per_ts = scrapes.entry((label("job"), label("instance"))).or_default();
            for s in &ts.samples {
                per_ts.entry(s.timestamp).or_default().push(Sample {
                    name: name.clone(),
                    labels: labels.clone(),
                    value: s.value,
                    timestamp_ms: Some(s.timestamp),
                });
            }
        }
        let mut nodes = Nodes::new();
        let mut trackers = t.targets.lock().unwrap_or_else(|e| e.into_inner());
        for (target, per_ts) in &scrapes {
            for (ts, samples) in per_ts {
                let ts = *ts;
                out.samples += samples.len();
                let scrape = Scrape { sample_lines: samples.len(), samples: samples.clone(), ..Scrape::default() };
                let gpus = dcgm_gpus(&scrape);
                if gpus.is_empty() {
                    serving(&mut trackers, (&target.0, &target.1), ts, &scrape, &mut out, &mut nodes);
                    continue;
                }
                for g in gpus {
                    let node = g.hostname.clone().unwrap_or_else(|| host_of(&target.1).to_owned());
                    let (Some(index), Some(util)) = (g.index, g.util_pct) else { continue };
                    let throttle = scrape
                        .samples
                        .iter()
                        .find(|x| is_throttle(&x.name) && x.label("gpu") == Some(index.to_string().as_str()))
                        .map(|x| x.value)
                        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 9.0e15)
                        .map(|v| v as u64);
                    let model = g.model_name.clone().unwrap_or_else(|| "unknown".into());
                    let sample = gpu_sample(ts, index, util, g.uuid.clone(), model, &g, throttle);
                    nodes.entry(Cow::Owned(node)).or_default().0.push(sample);
                }
            }
        }
        drop(trackers);
        out.batches = batches(nodes, body_digest);
        out
    }

    /// The fast path on `req` as the receiver runs it (encoded, compressed, decoded without copies).
    fn fast(t: &Trackers, req: &WriteRequest, digest: &[u8]) -> Converted {
        t.convert_body(&encode(req), digest).unwrap()
    }

    /// Both converters agree on everything but the send time.
    fn assert_same(a: &Converted, b: &Converted) {
        let strip = |c: &Converted| {
            let batches: Vec<Batch> = c.batches.iter().cloned().map(|b| Batch { sent_at_ms: 0, ..b }).collect();
            (batches, c.samples, c.ignored_series)
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn dcgm_series_become_one_batch_per_node_with_the_fixture_values() {
        let text = include_str!("../../../../shared/fixtures/dcgm.txt");
        let req = request(text, "dcgm", "10.0.0.7:9400", 1_700_000_000_000);
        let c = Trackers::default().convert_body(&encode(&req), b"digest").unwrap();
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
        let again = fast(&Trackers::default(), &req, b"digest");
        assert_eq!(again.batches[0].seq, b.seq);
        assert_ne!(fast(&Trackers::default(), &req, b"other").batches[0].seq, b.seq);
    }

    #[test]
    fn a_vllm_target_gives_serving_samples_from_its_second_write_on() {
        let text = include_str!("../../../../shared/fixtures/vllm.txt");
        let t = Trackers::default();
        let first = fast(&t, &request(text, "vllm", "10.0.0.8:8000", 1_000_000), b"1");
        assert!(first.batches.is_empty(), "one write is only a baseline");
        let second = fast(&t, &request(text, "vllm", "10.0.0.8:8000", 1_005_000), b"2");
        assert_eq!(second.batches.len(), 1);
        let s = &second.batches[0].serving[0];
        assert_eq!(s.engine, "vllm");
        assert_eq!(second.batches[0].agent_id, "10.0.0.8");
        assert!(s.deployment.ends_with("/vllm"), "{}", s.deployment);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t = Trackers::default();
        assert!(decode(b"not snappy at all").is_err());
        assert!(t.convert_body(b"not snappy at all", b"d").is_err());
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(decode(&junk).is_err());
        assert!(t.convert_body(&junk, b"d").is_err());
        assert_eq!(host_of("[::1]:9400"), "::1");
        assert_eq!(host_of("node-3:9400"), "node-3");
        assert_eq!(host_of("node-3"), "node-3");
    }

    /// Every fixture, alone and mixed, several writes: the fast path gives exactly the reference's batches.
    #[test]
    fn the_fast_path_converts_every_fixture_as_the_reference_does() {
        let fixtures = [
            ("dcgm", "10.0.0.7:9400", include_str!("../../../../shared/fixtures/dcgm.txt")),
            ("dcgm-edge", "gpu-node-03:9400", include_str!("../../../../shared/fixtures/dcgm_edge.txt")),
            ("vllm", "10.0.0.8:8000", include_str!("../../../../shared/fixtures/vllm.txt")),
            ("triton", "10.0.0.9:8002", include_str!("../../../../shared/fixtures/triton.txt")),
        ];
        let (reference, fast_t) = (Trackers::default(), Trackers::default());
        for write in 0..3i64 {
            let mut all = WriteRequest::default();
            for (job, instance, text) in fixtures {
                let req = request(text, job, instance, 1_700_000_000_000 + write * 15_000);
                let digest = format!("{job}-{write}");
                assert_same(
                    &reference_convert(&reference, &req, digest.as_bytes()),
                    &fast(&fast_t, &req, digest.as_bytes()),
                );
                all.timeseries.extend(req.timeseries);
            }
            let c = fast(&fast_t, &all, b"all");
            assert_same(&reference_convert(&reference, &all, b"all"), &c);
            assert!(c.batches.iter().all(|b| b.validate().is_ok()));
        }
        // Labels in Prometheus' order (sorted, `__name__` among them), several samples per series.
        let mut req = crate::bench::remote_write::dcgm_request(&["n1".into(), "n2".into()], 4, 3, 1_700_000_000_000);
        for ts in &mut req.timeseries {
            ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        assert_same(&reference_convert(&Trackers::default(), &req, b"x"), &fast(&Trackers::default(), &req, b"x"));
    }

    /// A random series for the property test: DCGM or not, with or without the labels that matter, duplicated
    /// and shuffled labels, several samples.
    fn series_strategy() -> impl proptest::strategy::Strategy<Value = TimeSeries> {
        use proptest::prelude::*;
        let name = prop::sample::select(vec![
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_XID_ERRORS",
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
            "DCGM_FI_PROF_SM_ACTIVE",
            "DCGM_FI_DEV_NEW_FIELD",
            "vllm:num_requests_waiting",
            "node_load1",
        ]);
        let label = (
            prop::sample::select(vec![
                "gpu",
                "UUID",
                "uuid",
                "GPU_I_ID",
                "modelName",
                "Hostname",
                "hostname",
                "job",
                "instance",
                "pod",
            ]),
            prop::sample::select(vec!["0", "1", "01", "+1", "x", "", "node-a", "10.0.0.1:9400", "GPU-a"]),
        );
        let value = prop::sample::select(vec![0.0, 1.0, 97.0, -3.0, 2_147_483_632.0, f64::NAN, 1e300, 42.5]);
        (
            prop::option::weighted(0.95, name),
            prop::collection::vec(label, 0..8),
            prop::collection::vec((value, 0i64..3), 1..3),
        )
            .prop_map(|(name, labels, samples)| {
                let mut labels: Vec<Label> =
                    labels.into_iter().map(|(n, v)| Label { name: n.into(), value: v.into() }).collect();
                if let Some(name) = name {
                    labels.insert(0, Label { name: "__name__".into(), value: name.into() });
                }
                TimeSeries {
                    labels,
                    samples: samples
                        .into_iter()
                        .map(|(value, t)| PromSample { value, timestamp: 1_700_000_000_000 + t * 1000 })
                        .collect(),
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 400, ..Default::default() })]

        /// The fast path and the reference agree on arbitrary mixes of series (NaN values compare as unequal in
        /// `PartialEq`, so the comparison is on the JSON of the batches, where both print the same).
        #[test]
        fn the_fast_path_matches_the_reference_on_random_requests(
            series in proptest::collection::vec(series_strategy(), 0..40)
        ) {
            let req = WriteRequest { timeseries: series };
            let a = reference_convert(&Trackers::default(), &req, b"p");
            let b = fast(&Trackers::default(), &req, b"p");
            let json = |c: &Converted| {
                let batches: Vec<Batch> = c.batches.iter().cloned().map(|b| Batch { sent_at_ms: 0, ..b }).collect();
                (format!("{batches:?}"), c.samples, c.ignored_series)
            };
            proptest::prop_assert_eq!(json(&a), json(&b));
        }

        /// The borrowing decoder accepts exactly what prost accepts, with the same content, on mutated bodies.
        #[test]
        fn the_borrowing_decoder_matches_prost_on_mutated_bodies(
            series in proptest::collection::vec(series_strategy(), 1..6),
            edits in proptest::collection::vec((0usize..4096, any_byte(), 0u8..4), 0..4),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut raw = prost::Message::encode_to_vec(&WriteRequest { timeseries: series });
            for (at, byte, kind) in edits {
                let at = at % (raw.len() + 1);
                match kind {
                    0 if at < raw.len() => raw[at] = byte,
                    1 => raw.insert(at, byte),
                    2 if at < raw.len() => { raw.remove(at); }
                    _ => raw.extend_from_slice(&[byte, 0x01]),
                }
            }
            if let Some(cut) = cut {
                raw.truncate(cut % (raw.len() + 1));
            }
            assert_decoders_agree(&raw)?;
        }
    }

    fn any_byte() -> impl proptest::strategy::Strategy<Value = u8> {
        proptest::prelude::any::<u8>()
    }

    /// Series as (labels, (value bits, timestamp)): NaN compares equal to itself by its bits.
    type Decoded = Vec<(Vec<(String, String)>, Vec<(u64, i64)>)>;

    /// prost's decoding and the borrowing decoder: both refuse, or both give the same series.
    fn assert_decoders_agree(raw: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let owned = <WriteRequest as prost::Message>::decode(raw);
        let borrowed = WriteRequestRef::decode(raw);
        match (owned, borrowed) {
            (Err(_), Err(_)) => {}
            (Ok(o), Ok(b)) => {
                let o: Decoded = o
                    .timeseries
                    .iter()
                    .map(|s| {
                        (
                            s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                            s.samples.iter().map(|x| (x.value.to_bits(), x.timestamp)).collect(),
                        )
                    })
                    .collect();
                let b: Decoded = b
                    .series_iter()
                    .map(|s| {
                        (
                            s.labels.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
                            s.samples.iter().map(|x| (x.value.to_bits(), x.timestamp)).collect(),
                        )
                    })
                    .collect();
                proptest::prop_assert_eq!(o, b);
            }
            (o, b) => proptest::prop_assert!(false, "prost {:?} vs borrowed {:?}", o.err(), b.err()),
        }
        Ok(())
    }

    /// Hand-made bodies at the edges: unknown fields (metadata, groups), wrong wire types, bad UTF-8, varints at
    /// their limits, nesting beyond the recursion limit.
    #[test]
    fn the_borrowing_decoder_matches_prost_at_the_edges() {
        let label = |name: &[u8], value: &[u8]| {
            let mut l = vec![0x0a, name.len() as u8];
            l.extend_from_slice(name);
            l.extend_from_slice(&[0x12, value.len() as u8]);
            l.extend_from_slice(value);
            l
        };
        let series = |inner: &[u8]| {
            let mut s = vec![0x0a, inner.len() as u8];
            s.extend_from_slice(inner);
            s
        };
        let wrap = |field: u8, inner: &[u8]| {
            let mut s = vec![field, inner.len() as u8];
            s.extend_from_slice(inner);
            s
        };
        let ok_label = label(b"__name__", b"up");
        let sample = [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x01];
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            series(&wrap(0x0a, &ok_label)),
            series(&[wrap(0x0a, &ok_label), wrap(0x12, &sample)].concat()),
            // Metadata (field 3) and an unknown varint field at the top.
            [series(&wrap(0x0a, &ok_label)), vec![0x1a, 0x02, 0x08, 0x01, 0x20, 0x05]].concat(),
            // A group with a nested group in a label, balanced and not.
            series(&wrap(0x0a, &[ok_label.clone(), vec![0x1b, 0x23, 0x24, 0x1c]].concat())),
            series(&wrap(0x0a, &[ok_label.clone(), vec![0x1b, 0x24, 0x1c]].concat())),
            series(&wrap(0x0a, &[ok_label.clone(), vec![0x1c]].concat())),
            // Wrong wire types for known fields.
            series(&[0x08, 0x01]),
            vec![0x08, 0x01],
            series(&wrap(0x12, &[0x08, 0x01])),
            series(&wrap(0x12, &[0x11, 0, 0, 0, 0, 0, 0, 0, 0])),
            series(&wrap(0x0a, &[0x08, 0x01])),
            // Not UTF-8, truncated, tag 0, wire types 6 and 7.
            series(&wrap(0x0a, &label(b"__name__", &[0xff, 0xfe]))),
            series(&wrap(0x0a, &label(b"__name__", b"up"))[..5]),
            vec![0x00, 0x01],
            vec![0x0e],
            vec![0x0f],
            // A key larger than 32 bits; 10-byte varints at the limit and past it; an 11-byte one.
            vec![0xf8, 0xff, 0xff, 0xff, 0x1f, 0x00],
            series(&wrap(0x12, &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
            series(&wrap(0x12, &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])),
            series(&wrap(0x12, &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x00])),
            // A label seen twice keeps the last value of each field.
            series(&wrap(0x0a, &[0x0a, 1, b'a', 0x0a, 1, b'b', 0x12, 1, b'1', 0x12, 1, b'2'])),
            series(&wrap(0x12, &[0x10, 0x01, 0x10, 0x02, 0x09, 0, 0, 0, 0, 0, 0, 0, 0])),
        ];
        // Groups nested around the recursion limit.
        for depth in [90usize, 97, 98, 99, 100, 101, 120] {
            let mut g = vec![0x1b; depth];
            g.extend(std::iter::repeat_n(0x1c, depth));
            cases.push([vec![0x0a, 0x80 | (g.len() as u8 & 0x7f), (g.len() >> 7) as u8], g.clone()].concat());
            let mut l = ok_label.clone();
            l.extend_from_slice(&g);
            let mut lw = vec![0x0a, 0x80 | (l.len() as u8 & 0x7f), (l.len() >> 7) as u8];
            lw.extend_from_slice(&l);
            cases.push([vec![0x0a, 0x80 | (lw.len() as u8 & 0x7f), (lw.len() >> 7) as u8], lw].concat());
            cases.push(g);
        }
        for (i, c) in cases.iter().enumerate() {
            assert_decoders_agree(c).unwrap_or_else(|e| panic!("case {i} {c:02x?}: {e}"));
        }
    }
}
