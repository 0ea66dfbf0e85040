//! Serving-engine statistics over a scrape interval: gauges as scraped, rates and histogram quantiles from the
//! increase of cumulative series between two scrapes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::histogram::{Buckets, merge, quantile};
use super::text::{Sample, Scrape};

/// A model-serving engine whose `/metrics` we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// vLLM (`vllm:*`).
    Vllm,
    /// NVIDIA Triton Inference Server (`nv_inference_*`).
    Triton,
    /// Hugging Face Text Generation Inference (`tgi_*`).
    Tgi,
}

impl Engine {
    /// The name prefix of the engine's own metrics.
    fn prefix(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm:",
            Engine::Triton => "nv_inference_",
            Engine::Tgi => "tgi_",
        }
    }
}

/// The engine whose metrics the scrape carries, if any.
///
/// vLLM wins over Triton: Triton's vLLM backend exports both families, and vLLM's are the richer ones.
pub fn detect_engine(s: &Scrape) -> Option<Engine> {
    [Engine::Vllm, Engine::Tgi, Engine::Triton]
        .into_iter()
        .find(|e| s.samples.iter().any(|x| x.name.starts_with(e.prefix())))
}

/// p50/p95/p99 of the observations made during one interval, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyQuantiles {
    /// Median.
    pub p50_s: f64,
    /// 95th percentile.
    pub p95_s: f64,
    /// 99th percentile.
    pub p99_s: f64,
}

/// What one engine did between two scrapes, summed over its label sets (models, engines) unless noted.
///
/// Quantiles come from histogram bucket increases over the interval and are None when nothing was observed in
/// it; fields an engine does not export are None, or 0 for rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Which engine.
    pub engine: Engine,
    /// Seconds between the two scrapes the rates are over.
    pub interval_s: f64,
    /// Requests waiting for admission, as scraped.
    pub queue_depth: f64,
    /// Requests being executed: the vLLM/TGI gauge; for Triton, the mean number of requests in execution (not
    /// queued) over the interval, by Little's law on the cumulative duration counters.
    pub running: f64,
    /// KV-cache usage in percent (0..100), the fullest engine's when there are several: that one preempts first.
    pub kv_cache_pct: Option<f64>,
    /// Time to first token (Triton: time to first response, i.e. the full latency for non-decoupled models).
    pub ttft: Option<LatencyQuantiles>,
    /// Inter-token latency (older vLLM: time per output token; TGI: per-request mean time per token).
    pub itl: Option<LatencyQuantiles>,
    /// End-to-end request latency.
    pub e2e: Option<LatencyQuantiles>,
    /// Mean end-to-end latency of requests finished in the interval, seconds.
    pub e2e_mean_s: Option<f64>,
    /// Mean queueing time of requests finished in the interval, seconds.
    pub queue_time_mean_s: Option<f64>,
    /// Prefill tokens per second.
    pub prompt_tokens_per_s: f64,
    /// Decoded tokens per second.
    pub generation_tokens_per_s: f64,
    /// Requests finished with a result, per second.
    pub requests_per_s: f64,
    /// Requests finished without a result (Triton/TGI failures, vLLM aborts), per second.
    pub failures_per_s: f64,
    /// Mean requests per model execution (Triton's `nv_inference_count / nv_inference_exec_count`); None for
    /// engines that only export the current batch, which is `running`.
    pub batch_size_mean: Option<f64>,
    /// Preemptions (requests evicted from the KV cache) per second.
    pub preemptions_per_s: f64,
}

impl EngineStats {
    /// The wire sample of this interval for `replica` of `deployment`, ending at `ts_ms` (negative readings
    /// clamped to 0, KV-cache use to 0..=100): what the agent uploads, and what Prometheus remote-write becomes.
    pub fn serving_sample(&self, ts_ms: i64, deployment: String, replica: String) -> crate::protocol::ServingSample {
        let q = |l: &Option<LatencyQuantiles>| l.as_ref().map(|l| (l.p50_s, l.p95_s, l.p99_s));
        let (t50, t95, t99) = q(&self.ttft).map_or((None, None, None), |(a, b, c)| (Some(a), Some(b), Some(c)));
        let (i50, i95, i99) = q(&self.itl).map_or((None, None, None), |(a, b, c)| (Some(a), Some(b), Some(c)));
        crate::protocol::ServingSample {
            ts_ms,
            deployment,
            replica,
            engine: match self.engine {
                Engine::Vllm => "vllm",
                Engine::Triton => "triton",
                Engine::Tgi => "tgi",
            }
            .into(),
            queue_depth: self.queue_depth.max(0.0),
            running: self.running.max(0.0),
            kv_cache_pct: self.kv_cache_pct.map(|v| v.clamp(0.0, 100.0)),
            ttft_p50_s: t50,
            ttft_p95_s: t95,
            ttft_p99_s: t99,
            itl_p50_s: i50,
            itl_p95_s: i95,
            itl_p99_s: i99,
            requests_per_s: self.requests_per_s.max(0.0),
            prompt_tokens_per_s: self.prompt_tokens_per_s.max(0.0),
            generation_tokens_per_s: self.generation_tokens_per_s.max(0.0),
            batch_size_mean: self.batch_size_mean,
        }
    }
}

/// A label set.
type Labels = Vec<(String, String)>;

/// Engine series values by name, then by label set.
type Series = HashMap<String, HashMap<Labels, f64>>;

/// Turns successive scrapes of one engine into [`EngineStats`]; keeps the previous scrape's values.
#[derive(Debug, Default)]
pub struct EngineTracker {
    prev: Option<(Engine, Series)>,
}

impl EngineTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics for the interval since the previous scrape, `elapsed_secs` long.
    ///
    /// None on the first scrape, when no engine is detected, when the engine changed, or when `elapsed_secs` is not
    /// a positive number; each of these still makes this scrape the baseline for the next call.
    ///
    /// A series absent from the previous scrape only sets its baseline (like PromQL's `increase`): a series that
    /// was missing from one scrape must not count its whole history as this interval's work. A series that went
    /// down was reset (engine restart), and its current value is the increase.
    pub fn update(&mut self, scrape: &Scrape, elapsed_secs: f64) -> Option<EngineStats> {
        let Some(engine) = detect_engine(scrape) else {
            self.prev = None;
            return None;
        };
        let (prev_engine, prev) = self.prev.replace((engine, snapshot(scrape, engine)))?;
        if prev_engine != engine || !(elapsed_secs > 0.0 && elapsed_secs.is_finite()) {
            return None;
        }
        let iv = Interval { cur: scrape, prev: &prev, secs: elapsed_secs };
        Some(match engine {
            Engine::Vllm => vllm(&iv),
            Engine::Triton => triton(&iv),
            Engine::Tgi => tgi(&iv),
        })
    }
}

/// The engine's series of one scrape.
fn snapshot(s: &Scrape, engine: Engine) -> Series {
    let mut series = Series::new();
    for x in s.samples.iter().filter(|x| x.name.starts_with(engine.prefix())) {
        series.entry(x.name.clone()).or_default().insert(x.labels.clone(), x.value);
    }
    series
}

/// vLLM (V1 names, with the V0 names they replaced as fallbacks).
fn vllm(iv: &Interval<'_>) -> EngineStats {
    let kv = iv.gauge_max("vllm:kv_cache_usage_perc").or_else(|| iv.gauge_max("vllm:gpu_cache_usage_perc"));
    let itl = if iv.cur.named("vllm:inter_token_latency_seconds_bucket").next().is_some() {
        "vllm:inter_token_latency_seconds"
    } else {
        "vllm:time_per_output_token_seconds"
    };
    // vLLM counts every finished request in request_success_total, by finished_reason; aborts have no result.
    let failed = |s: &Sample| matches!(s.label("finished_reason"), Some("abort" | "error"));
    EngineStats {
        engine: Engine::Vllm,
        interval_s: iv.secs,
        queue_depth: iv.gauge_sum("vllm:num_requests_waiting"),
        running: iv.gauge_sum("vllm:num_requests_running"),
        kv_cache_pct: kv.map(|fraction| fraction * 100.0),
        ttft: iv.quantiles("vllm:time_to_first_token_seconds", 1.0),
        itl: iv.quantiles(itl, 1.0),
        e2e: iv.quantiles("vllm:e2e_request_latency_seconds", 1.0),
        e2e_mean_s: iv.mean("vllm:e2e_request_latency_seconds"),
        queue_time_mean_s: iv.mean("vllm:request_queue_time_seconds"),
        prompt_tokens_per_s: iv.rate("vllm:prompt_tokens_total"),
        generation_tokens_per_s: iv.rate("vllm:generation_tokens_total"),
        requests_per_s: iv.increase_where("vllm:request_success_total", |s| !failed(s)) / iv.secs,
        failures_per_s: iv.increase_where("vllm:request_success_total", failed) / iv.secs,
        batch_size_mean: None,
        preemptions_per_s: iv.rate("vllm:num_preemptions_total"),
    }
}

/// Triton. Its durations are cumulative microsecond counters per model, counted for successful requests. Sums
/// over models count an ensemble's requests again in its composing models; nothing in /metrics says which is which.
fn triton(iv: &Interval<'_>) -> EngineStats {
    let success = iv.increase("nv_inference_request_success");
    let per_request_s = |name: &str| (success > 0.0).then(|| iv.increase(name) / success / 1e6);
    let executing_us = iv.increase("nv_inference_request_duration_us") - iv.increase("nv_inference_queue_duration_us");
    let executions = iv.increase("nv_inference_exec_count");
    EngineStats {
        engine: Engine::Triton,
        interval_s: iv.secs,
        queue_depth: iv.gauge_sum("nv_inference_pending_request_count"),
        running: executing_us.max(0.0) / 1e6 / iv.secs,
        kv_cache_pct: None,
        ttft: iv.quantiles("nv_inference_first_response_histogram_ms", 1e-3),
        itl: None,
        e2e: None,
        e2e_mean_s: per_request_s("nv_inference_request_duration_us"),
        queue_time_mean_s: per_request_s("nv_inference_queue_duration_us"),
        prompt_tokens_per_s: 0.0,
        generation_tokens_per_s: 0.0,
        requests_per_s: success / iv.secs,
        failures_per_s: iv.rate("nv_inference_request_failure"),
        batch_size_mean: (executions > 0.0).then(|| iv.increase("nv_inference_count") / executions),
        preemptions_per_s: 0.0,
    }
}

/// TGI. Its token counts are per-request histograms, so their `_sum` is the token counter.
fn tgi(iv: &Interval<'_>) -> EngineStats {
    EngineStats {
        engine: Engine::Tgi,
        interval_s: iv.secs,
        queue_depth: iv.gauge_sum("tgi_queue_size"),
        running: iv.gauge_sum("tgi_batch_current_size"),
        kv_cache_pct: None,
        // TGI exports no time-to-first-token histogram.
        ttft: None,
        itl: iv.quantiles("tgi_request_mean_time_per_token_duration", 1.0),
        e2e: iv.quantiles("tgi_request_duration", 1.0),
        e2e_mean_s: iv.mean("tgi_request_duration"),
        queue_time_mean_s: iv.mean("tgi_request_queue_duration"),
        prompt_tokens_per_s: iv.rate("tgi_request_input_length_sum"),
        generation_tokens_per_s: iv.rate("tgi_request_generated_tokens_sum"),
        requests_per_s: iv.rate("tgi_request_success"),
        failures_per_s: iv.rate("tgi_request_failure"),
        batch_size_mean: None,
        preemptions_per_s: 0.0,
    }
}

/// The current scrape against the previous one's series.
struct Interval<'a> {
    cur: &'a Scrape,
    prev: &'a Series,
    secs: f64,
}

impl Interval<'_> {
    /// Sum of gauge `name` over its series (0 when absent: an idle engine may not have created them yet).
    fn gauge_sum(&self, name: &str) -> f64 {
        self.cur.named(name).map(|s| s.value).filter(|v| v.is_finite()).sum()
    }

    /// Largest value of gauge `name`, if any series has a number.
    fn gauge_max(&self, name: &str) -> Option<f64> {
        self.cur.named(name).map(|s| s.value).filter(|v| v.is_finite()).reduce(f64::max)
    }

    /// Increase of counter `name` over the interval, summed over the series `keep` accepts.
    fn increase_where(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        let Some(prev) = self.prev.get(name) else { return 0.0 };
        self.cur
            .named(name)
            .filter(|s| keep(s))
            .filter_map(|s| prev.get(&s.labels).map(|&p| increase(p, s.value)))
            .sum()
    }

    /// Increase of counter `name` over the interval, summed over its series.
    fn increase(&self, name: &str) -> f64 {
        self.increase_where(name, |_| true)
    }

    /// Per-second increase of counter `name`.
    fn rate(&self, name: &str) -> f64 {
        self.increase(name) / self.secs
    }

    /// Mean observation of histogram or summary `base` over the interval: increase of `_sum` over that of `_count`.
    fn mean(&self, base: &str) -> Option<f64> {
        let count = self.increase(&format!("{base}_count"));
        (count > 0.0).then(|| self.increase(&format!("{base}_sum")) / count)
    }

    /// p50/p95/p99 of histogram `base` over the interval, bounds multiplied by `scale` to get seconds.
    fn quantiles(&self, base: &str, scale: f64) -> Option<LatencyQuantiles> {
        let b = self.histogram(base);
        Some(LatencyQuantiles {
            p50_s: quantile(0.50, &b)? * scale,
            p95_s: quantile(0.95, &b)? * scale,
            p99_s: quantile(0.99, &b)? * scale,
        })
    }

    /// Bucket increases of histogram `base` over the interval, summed over its series by `le`.
    fn histogram(&self, base: &str) -> Buckets {
        let name = format!("{base}_bucket");
        let mut total = Buckets::new();
        let Some(prev) = self.prev.get(&name) else { return total };
        // (le, current, previous) per series, a series being the label set without `le`.
        let mut series: HashMap<Labels, Vec<(f64, f64, Option<f64>)>> = HashMap::new();
        for s in self.cur.named(&name) {
            let Some(le) = s.label("le").and_then(|le| le.parse::<f64>().ok()) else { continue };
            let key = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            series.entry(key).or_default().push((le, s.value, prev.get(&s.labels).copied()));
        }
        for buckets in series.values() {
            if buckets.iter().all(|&(_, _, p)| p.is_none()) {
                continue; // new series: baseline only
            }
            // A bucket that went down or appeared means the histogram restarted: its counts are the increase.
            let reset = buckets.iter().any(|&(_, cur, p)| p.is_none_or(|p| cur < p));
            let deltas: Buckets =
                buckets.iter().map(|&(le, cur, p)| (le, if reset { cur } else { cur - p.unwrap_or(0.0) })).collect();
            merge(&mut total, &deltas);
        }
        total
    }
}

/// Increase of a counter from `prev` to `cur`; a counter that went down was reset, so all of `cur` is new.
fn increase(prev: f64, cur: f64) -> f64 {
    if !(prev.is_finite() && cur.is_finite()) {
        0.0 // NaN or Inf: no increase can be told
    } else if cur >= prev {
        cur - prev
    } else {
        cur
    }
}
