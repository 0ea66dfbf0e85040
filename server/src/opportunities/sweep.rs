//! The anomaly sweep: every GPU and deployment series of the window through a streaming
//! `forecasting::anomaly::Detector` and an `forecasting::events::EventTracker` (open / escalate / close),
//! plus peer outliers (`forecasting::peers::score_peers`), persisted in `anomalies`. Peers are the GPUs of the
//! same deployment; GPUs of nodes without a deployment are compared with those of the same workload group
//! ([`super::group_nodes`]): grouping is per node, so one straggling GPU barely moves its node's profile and
//! is still compared with the GPUs of nodes doing the same work.
//!
//! Detector state lives in memory on the leader: each complete bucket is fed once. A new leader starts
//! fresh and closes the events it did not open itself (it cannot tell when they would have ended).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use forecasting::anomaly::Detector;
use forecasting::events::{AnomalyEvent, EventConfig, EventTracker, EventUpdate, Severity};
use forecasting::peers::{PeerConfig, score_peers};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::{Loaded, NodeGroups, RefreshError};
use crate::db;
use crate::db::anomalies::SeriesId;

/// What one sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepOutcome {
    /// Series whose event opened (or, for peers, is open).
    pub opened: Vec<String>,
    /// Series whose event escalated.
    pub escalated: Vec<String>,
    /// Series whose event closed.
    pub closed: Vec<String>,
}

struct SeriesState {
    detector: Detector,
    tracker: EventTracker,
    last_bucket: i64,
}

/// Streaming detectors per series, kept between sweeps.
pub struct AnomalySweep {
    series: HashMap<SeriesId, SeriesState>,
    events: EventConfig,
    peers: PeerConfig,
    idle_util_pct: f64,
    /// Whether this sweep has reconciled the table with its (empty) memory since it started leading.
    reconciled: bool,
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn evidence(ev: &AnomalyEvent, bucket_secs: i64) -> serde_json::Value {
    json!({
        "bucket_secs": bucket_secs,
        "first": ev.first,
        "peak": ev.peak,
        "rows": ev.rows,
    })
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl AnomalySweep {
    /// An empty sweep; GPUs under `idle_util_pct` are left out of peer comparisons.
    pub fn new(idle_util_pct: f64) -> Self {
        Self {
            series: HashMap::new(),
            events: EventConfig::default(),
            peers: PeerConfig::default(),
            idle_util_pct,
            reconciled: false,
        }
    }

    /// Forgets every detector (leadership lost).
    pub fn reset(&mut self) {
        self.series.clear();
        self.reconciled = false;
    }

    /// Feeds the window's complete buckets not seen yet, persists event changes, and scores peers.
    pub async fn run(
        &mut self,
        pool: &PgPool,
        loaded: &Loaded,
        groups: &NodeGroups,
        now: DateTime<Utc>,
    ) -> Result<SweepOutcome, RefreshError> {
        let w = &loaded.window;
        let mut out = SweepOutcome::default();
        if !self.reconciled {
            for s in db::anomalies::open_series(pool, "detector").await? {
                db::anomalies::close(pool, &s, now).await?;
            }
            self.reconciled = true;
        }
        let mut inputs: Vec<(SeriesId, &[f64])> = Vec::new();
        for (g, temp) in w.gpus.iter().zip(&loaded.gpu_temp_c) {
            let dep = g.deployment.clone().unwrap_or_default();
            let target = format!("gpu:{}:{}", g.node, g.gpu_index);
            for (metric, values) in [("util_pct", g.util_pct.as_slice()), ("temp_c", temp.as_slice())] {
                let id = SeriesId {
                    node_id: g.node.clone(),
                    deployment: dep.clone(),
                    target: target.clone(),
                    metric: metric.into(),
                };
                inputs.push((id, values));
            }
        }
        for d in &w.deployments {
            let target = format!("deployment:{}", d.deployment);
            for (metric, values) in [
                ("itl_p95_s", d.itl_p95_s.as_slice()),
                ("queue_depth", d.queue_depth.as_slice()),
                ("generation_tokens_per_s", d.demand_tokens_per_s.as_slice()),
            ] {
                let id = SeriesId {
                    node_id: String::new(),
                    deployment: d.deployment.clone(),
                    target: target.clone(),
                    metric: metric.into(),
                };
                inputs.push((id, values));
            }
        }

        let complete_before = now.timestamp();
        let present: HashSet<SeriesId> = inputs.iter().map(|(id, _)| id.clone()).collect();
        for (id, values) in inputs {
            if !self.series.contains_key(&id) {
                let tracker = EventTracker::new(self.events.clone())?;
                let fresh = SeriesState { detector: Detector::default(), tracker, last_bucket: i64::MIN };
                self.series.insert(id.clone(), fresh);
            }
            let Some(state) = self.series.get_mut(&id) else { continue };
            for (i, v) in values.iter().enumerate() {
                let b = w.start_secs + i as i64 * w.bucket_secs;
                if b <= state.last_bucket || b + w.bucket_secs > complete_before || !v.is_finite() {
                    continue;
                }
                state.last_bucket = b;
                let score = state.detector.update(b, *v);
                match state.tracker.update(b, &score) {
                    Some(EventUpdate::Opened(ev)) | Some(EventUpdate::Escalated(ev)) => {
                        let escalated = ev.rows > 1;
                        db::anomalies::open_or_update(
                            pool,
                            &id,
                            "detector",
                            at(ev.start_secs),
                            severity_str(ev.severity),
                            ev.peak.score,
                            &evidence(&ev, w.bucket_secs),
                            now,
                        )
                        .await?;
                        let label = format!("{}/{}", id.target, id.metric);
                        if escalated { out.escalated.push(label) } else { out.opened.push(label) }
                    }
                    Some(EventUpdate::Closed(ev)) => {
                        db::anomalies::close(pool, &id, at(ev.end_secs.unwrap_or(b))).await?;
                        out.closed.push(format!("{}/{}", id.target, id.metric));
                    }
                    None => {}
                }
            }
        }
        // Series that left the window (node gone, deployment deleted): close their events and forget them.
        let gone: Vec<SeriesId> = self.series.keys().filter(|k| !present.contains(*k)).cloned().collect();
        for id in gone {
            if let Some(s) = self.series.remove(&id)
                && s.tracker.open_event().is_some()
            {
                db::anomalies::close(pool, &id, now).await?;
                out.closed.push(format!("{}/{}", id.target, id.metric));
            }
        }
        self.peers(pool, loaded, groups, now, &mut out).await?;
        Ok(out)
    }

    /// Peer outliers of GPU utilisation per deployment (or, without one, per workload group of nodes):
    /// open while a GPU departs from its peers.
    async fn peers(
        &self,
        pool: &PgPool,
        loaded: &Loaded,
        node_groups: &NodeGroups,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
    ) -> Result<(), RefreshError> {
        let w = &loaded.window;
        // Key: (deployment, workload group); the group only for GPUs without a deployment.
        let mut groups: BTreeMap<(&str, Option<i32>), Vec<&forecasting::opportunities::GpuWindow>> = BTreeMap::new();
        for g in &w.gpus {
            let key = match (g.deployment.as_deref(), node_groups.get(&g.node)) {
                (Some(dep), _) => (dep, None),
                (None, Some((cluster, _))) => ("", Some(*cluster)),
                (None, None) => continue,
            };
            let busy = g.util_pct.iter().filter(|u| u.is_finite() && **u >= self.idle_util_pct).count();
            let seen = g.util_pct.iter().filter(|u| u.is_finite()).count();
            if seen > 0 && busy * 2 > seen {
                groups.entry(key).or_default().push(g);
            }
        }
        let mut flagged: HashSet<SeriesId> = HashSet::new();
        for ((dep, cluster), members) in groups {
            let peer_group = match cluster {
                Some(c) => format!("workload group {c}"),
                None => format!("deployment {dep}"),
            };
            // Buckets where a GPU sat idle (starting, drained) are not comparable with serving peers.
            let idle = self.idle_util_pct;
            let masked: Vec<Vec<f64>> = members
                .iter()
                .map(|g| g.util_pct.iter().map(|u| if *u >= idle { *u } else { f64::NAN }).collect())
                .collect();
            let series: Vec<&[f64]> = masked.iter().map(Vec::as_slice).collect();
            let report = score_peers(&series, &self.peers)?;
            for i in report.outliers() {
                let (Some(g), Some(m)) = (members.get(i), report.members.get(i)) else { continue };
                let id = SeriesId {
                    node_id: g.node.clone(),
                    deployment: dep.to_string(),
                    target: format!("gpu:{}:{}", g.node, g.gpu_index),
                    metric: "peer:util_pct".into(),
                };
                let workload_group = node_groups.get(&g.node).map(|(_, label)| label.as_str());
                let ev = json!({ "bucket_secs": w.bucket_secs, "from_secs": w.start_secs, "to_secs": w.end_secs(),
                                 "peers": members.len() - 1, "peer_group": peer_group,
                                 "workload_group": workload_group, "evidence": m.evidence });
                db::anomalies::open_or_update(
                    pool,
                    &id,
                    "peers",
                    now,
                    severity_str(self.events.severity(m.score)),
                    m.score,
                    &ev,
                    now,
                )
                .await?;
                out.opened.push(format!("{}/{}", id.target, id.metric));
                flagged.insert(id);
            }
        }
        for id in db::anomalies::open_series(pool, "peers").await? {
            if !flagged.contains(&id) {
                db::anomalies::close(pool, &id, now).await?;
                out.closed.push(format!("{}/{}", id.target, id.metric));
            }
        }
        Ok(())
    }
}
