//! The control loop's view of the fleet: every node's GPU utilisation and every deployment's serving metrics
//! per bucket over the lookback, kept in memory by the leader and refreshed incrementally. Each tick reads
//! only the buckets that can still change (the one being filled and newer), in two queries for the whole
//! fleet, instead of two queries per policy over the whole lookback.
//!
//! The aggregation is the one `db::series::deployment_metric` runs on raw samples (per bucket: the mean of
//! each GPU or replica, summed), so the loop and the API agree.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::db;
use crate::db::control::{LatestLatency, ServingBucket};
use crate::db::series::Point;
use crate::domain::policy::Metric;

/// One node as the loop needs it.
#[derive(Debug, Clone)]
struct NodeRow {
    node_id: String,
    group: Option<String>,
    deployment: Option<String>,
}

/// The fleet's recent buckets.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeRow>,
    /// node -> bucket -> (sum over GPUs of their mean utilisation, GPUs).
    gpu: HashMap<String, BTreeMap<i64, (f64, i64)>>,
    /// deployment -> bucket -> aggregates over replicas.
    serving: HashMap<String, BTreeMap<i64, ServingBucket>>,
    /// Buckets from this one on are read again at the next refresh.
    reread_from: Option<i64>,
}

impl Snapshot {
    /// Reads what changed since the last refresh (everything within `lookback_secs` the first time).
    pub async fn refresh(
        &mut self,
        pool: &PgPool,
        now: DateTime<Utc>,
        bucket_secs: u32,
        lookback_secs: u32,
    ) -> Result<(), sqlx::Error> {
        let bucket = i64::from(bucket_secs.max(1));
        let oldest = now.timestamp() - i64::from(lookback_secs);
        let oldest = oldest - oldest.rem_euclid(bucket);
        let from_secs = self.reread_from.unwrap_or(oldest).max(oldest);
        let from = DateTime::from_timestamp(from_secs, 0).unwrap_or(now);
        let to = now + chrono::Duration::seconds(1);
        self.nodes = db::control::all_nodes(pool)
            .await?
            .into_iter()
            .map(|(node_id, group, deployment)| NodeRow { node_id, group, deployment })
            .collect();
        let mut newest = from_secs;
        for (node, b, sum, gpus) in db::control::gpu_buckets(pool, bucket, from, to).await? {
            newest = newest.max(b);
            self.gpu.entry(node).or_default().insert(b, (sum, gpus));
        }
        for (deployment, b, agg) in db::control::serving_buckets(pool, bucket, from, to).await? {
            newest = newest.max(b);
            self.serving.entry(deployment).or_default().insert(b, agg);
        }
        for m in self.gpu.values_mut() {
            m.retain(|b, _| *b >= oldest);
        }
        self.gpu.retain(|_, m| !m.is_empty());
        for m in self.serving.values_mut() {
            m.retain(|b, _| *b >= oldest);
        }
        self.serving.retain(|_, m| !m.is_empty());
        // The newest bucket may still be filling; late samples of older ones are left to the rollups.
        self.reread_from = Some(newest);
        Ok(())
    }

    /// Nodes serving `deployment` or in agent `group` (as `db::series::nodes_of`).
    pub fn nodes_of(&self, deployment: &str, group: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.deployment.as_deref() == Some(deployment) || (group.is_some() && n.group.as_deref() == group))
            .map(|n| n.node_id.clone())
            .collect();
        v.sort_unstable();
        v
    }

    /// `metric` of a deployment summed over replicas per bucket (as `db::series::deployment_metric` on raw
    /// samples), and the nodes considered.
    pub fn metric(&self, deployment: &str, group: Option<&str>, metric: Metric) -> (Vec<Point>, Vec<String>) {
        let nodes = self.nodes_of(deployment, group);
        let points = match metric {
            Metric::GpuUtilization => {
                let mut by_bucket: BTreeMap<i64, (f64, i64)> = BTreeMap::new();
                for n in &nodes {
                    for (b, (sum, gpus)) in self.gpu.get(n).into_iter().flatten() {
                        let e = by_bucket.entry(*b).or_default();
                        e.0 += sum;
                        e.1 += gpus;
                    }
                }
                by_bucket.into_iter().map(|(b, (total, members))| Point { bucket_secs: b, total, members }).collect()
            }
            m => self
                .serving
                .get(deployment)
                .into_iter()
                .flatten()
                .map(|(b, s)| Point {
                    bucket_secs: *b,
                    total: match m {
                        Metric::QueueDepthPerReplica => s.queue_sum,
                        Metric::KvCachePct => s.kv_sum,
                        _ => s.generation_tps_sum,
                    },
                    members: s.replicas,
                })
                .collect(),
        };
        (points, nodes)
    }

    /// Worst-replica latencies, mean batch and mean queue of a deployment over buckets since `since_secs`.
    /// The deployment's newest serving bucket at or after `since_secs` (queue and request totals).
    pub fn load(&self, deployment: &str, since_secs: i64) -> Option<ServingBucket> {
        self.serving.get(deployment)?.range(since_secs..).next_back().map(|(_, s)| *s)
    }

    pub fn latency(&self, deployment: &str, since_secs: i64) -> LatestLatency {
        let mut out = LatestLatency::default();
        let (mut batch_sum, mut batch_n, mut queue_sum, mut replicas) = (0.0, 0.0, 0.0, 0i64);
        for (_, s) in self.serving.get(deployment).into_iter().flatten().filter(|(b, _)| **b >= since_secs) {
            let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            out.ttft_p95_s = max(out.ttft_p95_s, s.ttft_p95_max);
            out.itl_p95_s = max(out.itl_p95_s, s.itl_p95_max);
            if let Some(b) = s.batch_mean {
                batch_sum += b;
                batch_n += 1.0;
            }
            queue_sum += s.queue_sum;
            replicas += s.replicas;
        }
        out.batch_size_mean = (batch_n > 0.0).then(|| batch_sum / batch_n);
        out.queue_depth = if replicas > 0 { queue_sum / replicas as f64 } else { 0.0 };
        out
    }

    /// The deployment's buckets with both a batch size and an ITL p95, as latency-model observations.
    pub fn batch_observations(&self, deployment: &str) -> Vec<forecasting::latency_model::BatchObservation> {
        self.serving
            .get(deployment)
            .into_iter()
            .flatten()
            .filter_map(|(_, s)| {
                Some(forecasting::latency_model::BatchObservation {
                    batch_size: s.batch_mean?,
                    queue_delay_us: f64::NAN,
                    itl_p95_s: s.itl_p95_max?,
                    tokens_per_s: s.generation_tps_sum,
                })
            })
            .collect()
    }

    /// Mean GPU utilisation of each node at its newest bucket since `since_secs`.
    pub fn node_utilization(&self, nodes: &[String], since_secs: i64) -> Vec<(String, f64)> {
        nodes
            .iter()
            .filter_map(|n| {
                let (b, (sum, gpus)) = self.gpu.get(n)?.iter().next_back()?;
                (*b >= since_secs && *gpus > 0).then(|| (n.clone(), sum / *gpus as f64))
            })
            .collect()
    }
}
