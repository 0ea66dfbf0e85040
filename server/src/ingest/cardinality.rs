//! Per-node series cardinality: a node may report at most `ingest.max_serving_series_per_node` distinct
//! (deployment, replica) serving series over its lifetime, so one node (or one stolen credential) cannot grow
//! the store and every per-series computation without bound across batches (one batch is bounded by the
//! protocol's own checks). GPU series are bounded by the `gpu_index` range (256 per node).
//!
//! The series a node has are those in `serving_latest`, loaded on the node's first batch after a start and
//! kept in memory; a new series is admitted while the node is under its budget.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use tokio::sync::Mutex;

/// Series known per node.
#[derive(Debug, Default)]
pub struct SeriesBudget {
    nodes: Mutex<HashMap<String, HashSet<(String, String)>>>,
}

/// Nodes whose series are kept in memory at most (beyond it the map starts over and reloads from the store).
const MAX_NODES: usize = 100_000;

impl SeriesBudget {
    /// Admits the serving series of one batch from `node`, or names the first one over the budget
    /// (`serving[i].replica`).
    pub async fn admit(
        &self,
        pool: &PgPool,
        node: &str,
        series: impl Iterator<Item = (&str, &str)>,
        max: usize,
    ) -> Result<Result<(), (String, String)>, sqlx::Error> {
        let mut nodes = self.nodes.lock().await;
        if !nodes.contains_key(node) {
            if nodes.len() >= MAX_NODES {
                nodes.clear();
            }
            let known = crate::db::ingest::serving_series_of(pool, node, max as i64 + 1).await?;
            nodes.insert(node.to_string(), known.into_iter().collect());
        }
        let Some(known) = nodes.get_mut(node) else { return Ok(Ok(())) };
        for (i, (deployment, replica)) in series.enumerate() {
            let key = (deployment.to_string(), replica.to_string());
            if known.contains(&key) {
                continue;
            }
            if known.len() >= max {
                return Ok(Err((
                    format!("serving[{i}].replica"),
                    format!(
                        "node {node:?} already reports {} serving series, the most one node may \
                         (ingest.max_serving_series_per_node); new series {deployment}/{replica} refused",
                        known.len()
                    ),
                )));
            }
            known.insert(key);
        }
        Ok(Ok(()))
    }
}
