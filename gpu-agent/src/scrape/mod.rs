//! Prometheus `/metrics` scraping for the agent: a strict, total parser for the text exposition format (0.0.4 and
//! OpenMetrics 1.0), and mappers from parsed samples to serving-engine interval statistics (vLLM, Triton, TGI) and
//! per-GPU DCGM readings.
//!
//! Why not prometheus-parse (0.2.5, the latest release)? It drops every name containing `:` (all of vLLM's
//! `vllm:*`), splits label values on `,` and `=` without unescaping, keeps the space after a comma in the label
//! name, folds histogram buckets into per-series maps so a sample can no longer be traced to its line, turns a
//! missing or non-integer timestamp into "now", and drops lines it cannot read without a word. Wrapping it would
//! mean running a quote-aware tokenizer over every line anyway just to find out whether it mangled that line, so the
//! wrapper would be a parser plus prometheus-parse; [`parse`] is that tokenizer, and prometheus-parse is only used by
//! the tests, as an independent oracle on the fixture lines it can read.
//!
//! A scrape never fails as a whole: [`parse`] returns every sample it could read plus one [`LineError`] per sample
//! line it could not, so `samples.len() + errors.len() == sample_lines` always holds.

mod dcgm;
mod engine;
mod histogram;
mod text;

#[cfg(test)]
mod tests;

pub use dcgm::{DcgmGpu, MigInstance, dcgm_gpus};
pub use engine::{Engine, EngineStats, EngineTracker, LatencyQuantiles, detect_engine};
pub use text::{LineError, ParseError, Sample, Scrape, parse};
