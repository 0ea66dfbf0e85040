//! The control loop's view of the fleet: every node's GPU utilisation and every deployment's serving metrics
//! per bucket over the lookback, kept in memory by the leader and refreshed incrementally. Each tick reads
//! only the buckets that can still change (the one being filled and newer), in two queries for the whole
//! fleet, instead of two queries per policy over the whole lookback.
//!
//! The aggregation is the one `db::series::deployment_metric` runs on raw samples (per bucket: the mean of
//! each GPU or replica, summed), so the loop and the API agree, with one exception: in the newest GPU bucket,
//! which is still filling, a node that has not reported yet counts with its previous bucket (see
//! [`Snapshot::metric`]).

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
    /// Bucket width of the last refresh, seconds.
    bucket_secs: i64,
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
        self.bucket_secs = bucket;
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
    ///
    /// GPU utilisation in the newest bucket, which is still filling, counts a node that has not reported in it
    /// yet with its value in the bucket before: agents post at their own phase, so a tick early in a bucket would
    /// otherwise read a fraction of the fleet as if the rest were idle (a silent node is missing data, not zero
    /// demand), and a step seen by some nodes first would be diluted by the absent ones.
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
                if let Some((&newest, _)) = by_bucket.last_key_value() {
                    let previous = newest - self.bucket_secs.max(1);
                    let carried = nodes
                        .iter()
                        .filter_map(|n| self.gpu.get(n))
                        .filter(|m| !m.contains_key(&newest))
                        .filter_map(|m| m.get(&previous))
                        .fold((0.0, 0), |(s, g), (sum, gpus)| (s + sum, g + gpus));
                    if let Some(e) = by_bucket.get_mut(&newest) {
                        e.0 += carried.0;
                        e.1 += carried.1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeRow {
        NodeRow { node_id: id.into(), group: None, deployment: Some("ns/llm".into()) }
    }

    #[test]
    fn a_node_not_yet_heard_in_the_newest_bucket_counts_with_its_previous_one() {
        let mut s = Snapshot { bucket_secs: 10, ..Snapshot::default() };
        s.nodes = vec![node("a"), node("b"), node("c")];
        // Two GPUs per node; a and b have reported in bucket 110, c only up to 100.
        s.gpu.insert("a".into(), BTreeMap::from([(100, (90.0, 2)), (110, (190.0, 2))]));
        s.gpu.insert("b".into(), BTreeMap::from([(100, (90.0, 2)), (110, (190.0, 2))]));
        s.gpu.insert("c".into(), BTreeMap::from([(90, (80.0, 2)), (100, (90.0, 2))]));
        let (points, nodes) = s.metric("ns/llm", None, Metric::GpuUtilization);
        assert_eq!(nodes, vec!["a", "b", "c"]);
        let last = points.last().expect("points");
        assert_eq!((last.bucket_secs, last.total, last.members), (110, 190.0 + 190.0 + 90.0, 6));
        // Complete buckets are summed as they are.
        assert_eq!((points[1].bucket_secs, points[1].total, points[1].members), (100, 270.0, 6));
        assert_eq!((points[0].bucket_secs, points[0].total, points[0].members), (90, 80.0, 2));
        // A node silent for longer than one bucket is not carried.
        s.gpu.insert("c".into(), BTreeMap::from([(90, (80.0, 2))]));
        let (points, _) = s.metric("ns/llm", None, Metric::GpuUtilization);
        assert_eq!(points.last().map(|p| (p.total, p.members)), Some((380.0, 4)));
    }
}
