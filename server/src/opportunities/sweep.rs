//! The anomaly sweep: every GPU and deployment series of the window through a streaming
//! `forecasting::anomaly::Detector` and an `forecasting::events::EventTracker` (open / escalate / close),
//! plus peer outliers (`forecasting::peers::score_peers`), persisted in `anomalies`. Peers are the GPUs of the
//! same deployment; GPUs of nodes without a deployment are compared with those of the same workload group
//! ([`super::group_nodes`]): grouping is per node, so one straggling GPU barely moves its node's profile and
//! is still compared with the GPUs of nodes doing the same work.
//!
//! Peer outliers are judged over the whole window (a sustained departure) and over its last
//! [`RECENT_BUCKETS`] buckets (a departure that began minutes ago: the whole window's median offset would
//! need it to last half the window). The same recent comparison runs on each replica's ITL and TTFT p95
//! against the other replicas of its deployment (a latency regression on one replica, target
//! `replica:<name>`), and [`forecasting::leak`] calls memory leaks from each GPU's memory against its peers'
//! (source `leak`).
//!
//! Detector state lives in memory on the leader: each complete bucket is fed once. A new leader starts
//! fresh and closes the events it did not open itself (it cannot tell when they would have ended).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use forecasting::anomaly::Detector;
use forecasting::events::{AnomalyEvent, EventConfig, EventTracker, EventUpdate, Severity};
use forecasting::leak::{LeakConfig, leak};
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

/// Buckets of the recent peer comparison (10 minutes at the default 60 s buckets): the median offset over
/// them flags a departure that has lasted about half of it, five minutes.
pub const RECENT_BUCKETS: usize = 10;

/// A series fed to its detector: identity, values per bucket, and for GPU series with peers whether the GPU
/// departs from them at each bucket ([`peer_gates`]).
type Input<'a> = (SeriesId, &'a [f64], Option<&'a [bool]>);

struct SeriesState {
    detector: Detector,
    tracker: EventTracker,
    last_bucket: i64,
}

/// Per GPU (index in the window) of a deployment with at least three GPUs: per bucket, for utilisation and
/// temperature, whether the GPU departs from the median of the deployment's GPUs serving (at or above
/// `idle_util_pct`) at that bucket by more than `threshold` robust standard deviations of their spread
/// (1.4826 MAD, floored at `rel_floor` of the median's magnitude): the peer detector's rule, per bucket.
/// False where the GPU does not serve or fewer than three do.
fn peer_gates(
    w: &forecasting::opportunities::FleetWindow,
    temps: &[Vec<f64>],
    idle_util_pct: f64,
    threshold: f64,
    rel_floor: f64,
) -> HashMap<usize, [Vec<bool>; 2]> {
    let mut by_dep: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in w.gpus.iter().enumerate() {
        if let Some(d) = g.deployment.as_deref() {
            by_dep.entry(d).or_default().push(i);
        }
    }
    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        let k = v.len() / 2;
        if v.len() % 2 == 1 { v[k] } else { (v[k - 1] + v[k]) / 2.0 }
    }
    let mut out = HashMap::new();
    for members in by_dep.values().filter(|m| m.len() >= 3) {
        let serving =
            |gi: usize, b: usize| w.gpus[gi].util_pct.get(b).is_some_and(|u| u.is_finite() && *u >= idle_util_pct);
        let value = |gi: usize, b: usize, metric: usize| -> f64 {
            let v = if metric == 0 { w.gpus[gi].util_pct.get(b) } else { temps.get(gi).and_then(|t| t.get(b)) };
            v.copied().unwrap_or(f64::NAN)
        };
        let mut gates: HashMap<usize, [Vec<bool>; 2]> =
            members.iter().map(|&gi| (gi, [vec![false; w.buckets], vec![false; w.buckets]])).collect();
        for b in 0..w.buckets {
            let on: Vec<usize> = members.iter().copied().filter(|&gi| serving(gi, b)).collect();
            for metric in 0..2 {
                let mut vals: Vec<f64> = on.iter().map(|&gi| value(gi, b, metric)).filter(|v| v.is_finite()).collect();
                if vals.len() < 3 {
                    continue;
                }
                let med = median(&mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
                let scale = (1.4826 * median(&mut dev)).max(rel_floor * med.abs()).max(1e-9);
                for &gi in &on {
                    let v = value(gi, b, metric);
                    if v.is_finite()
                        && (v - med).abs() > threshold * scale
                        && let Some(g) = gates.get_mut(&gi)
                    {
                        g[metric][b] = true;
                    }
                }
            }
        }
        out.extend(gates);
    }
    out
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
        // A GPU series' event is recorded only at buckets where the GPU departs from the other GPUs serving
        // its deployment (when at least three serve): load moves every replica together (the deployment's own
        // series below carry it), a GPU fault moves one GPU.
        let gates = peer_gates(w, &loaded.gpu_temp_c, self.idle_util_pct, self.peers.threshold, self.peers.rel_floor);
        let mut inputs: Vec<Input<'_>> = Vec::new();
        for (gi, (g, temp)) in w.gpus.iter().zip(&loaded.gpu_temp_c).enumerate() {
            let dep = g.deployment.clone().unwrap_or_default();
            let target = format!("gpu:{}:{}", g.node, g.gpu_index);
            let gate = gates.get(&gi);
            for (mi, (metric, values)) in
                [("util_pct", g.util_pct.as_slice()), ("temp_c", temp.as_slice())].into_iter().enumerate()
            {
                let id = SeriesId {
                    node_id: g.node.clone(),
                    deployment: dep.clone(),
                    target: target.clone(),
                    metric: metric.into(),
                };
                inputs.push((id, values, gate.map(|g| g[mi].as_slice())));
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
                inputs.push((id, values, None));
            }
        }

        let complete_before = now.timestamp();
        let present: HashSet<SeriesId> = inputs.iter().map(|(id, _, _)| id.clone()).collect();
        for (id, values, gate) in inputs {
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
                    // Held back while the GPU moves with its peers; recorded once it departs from them.
                    Some(EventUpdate::Opened(_)) | Some(EventUpdate::Escalated(_))
                        if gate.is_some_and(|g| !g.get(i).copied().unwrap_or(false)) => {}
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
        self.replica_latency(pool, loaded, now, &mut out).await?;
        self.leaks(pool, loaded, now, &mut out).await?;
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
            let from = w.buckets.saturating_sub(RECENT_BUCKETS);
            let recent_series: Vec<&[f64]> = masked.iter().map(|v| v.get(from..).unwrap_or_default()).collect();
            let recent = score_peers(&recent_series, &self.peers)?;
            for i in 0..members.len() {
                // The whole window's verdict when it has one, else the recent one.
                let m = match (report.members.get(i), recent.members.get(i)) {
                    (Some(m), _) if m.is_outlier() => m,
                    (_, Some(m)) if m.is_outlier() => m,
                    _ => continue,
                };
                let Some(g) = members.get(i) else { continue };
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
                self.open_peer_outlier(pool, id, m.score, &ev, now, out, &mut flagged).await?;
            }
        }
        // Replica latency outliers are [`Self::replica_latency`]'s.
        close_peer_outliers_not_in(pool, &flagged, |id| !id.target.starts_with("replica:"), now, out).await
    }

    /// Opens (or updates) a peer outlier's event and remembers it as flagged in this sweep.
    #[allow(clippy::too_many_arguments)]
    async fn open_peer_outlier(
        &self,
        pool: &PgPool,
        id: SeriesId,
        score: f64,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
        flagged: &mut HashSet<SeriesId>,
    ) -> Result<(), RefreshError> {
        let severity = severity_str(self.events.severity(score));
        db::anomalies::open_or_update(pool, &id, "peers", now, severity, score, evidence, now).await?;
        out.opened.push(format!("{}/{}", id.target, id.metric));
        flagged.insert(id);
        Ok(())
    }
    /// Latency regressions of one replica: each replica's ITL and TTFT p95 over the last [`RECENT_BUCKETS`]
    /// against the other replicas of its deployment; open while a replica is slower than its peers.
    async fn replica_latency(
        &self,
        pool: &PgPool,
        loaded: &Loaded,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
    ) -> Result<(), RefreshError> {
        let w = &loaded.window;
        let end = w.end_secs();
        let start = end - w.bucket_secs * RECENT_BUCKETS as i64;
        let n = RECENT_BUCKETS;
        let rows = db::anomalies::replica_latency_buckets(pool, at(start), at(end), w.bucket_secs).await?;
        // deployment -> (node, replica) -> (itl, ttft) per bucket.
        type Series = (Vec<f64>, Vec<f64>);
        let mut deps: BTreeMap<String, BTreeMap<(String, String), Series>> = BTreeMap::new();
        for (dep, node, replica, b, itl, ttft) in rows {
            let Some(i) = usize::try_from((b - start) / w.bucket_secs.max(1)).ok().filter(|i| *i < n) else { continue };
            let e = deps
                .entry(dep)
                .or_default()
                .entry((node, replica))
                .or_insert_with(|| (vec![f64::NAN; n], vec![f64::NAN; n]));
            e.0[i] = itl.unwrap_or(f64::NAN);
            e.1[i] = ttft.unwrap_or(f64::NAN);
        }
        let mut flagged: HashSet<SeriesId> = HashSet::new();
        for (dep, replicas) in &deps {
            let keys: Vec<&(String, String)> = replicas.keys().collect();
            for (metric, pick) in [("peer:itl_p95_s", 0usize), ("peer:ttft_p95_s", 1)] {
                let series: Vec<&[f64]> =
                    replicas.values().map(|s| if pick == 0 { s.0.as_slice() } else { s.1.as_slice() }).collect();
                let report = score_peers(&series, &self.peers)?;
                for i in report.outliers() {
                    let (Some((node, replica)), Some(m)) = (keys.get(i), report.members.get(i)) else { continue };
                    // Only slower than the peers is a fault; a faster replica is serving less.
                    if m.evidence.is_none_or(|e| e.offset <= 0.0) {
                        continue;
                    }
                    let id = SeriesId {
                        node_id: node.clone(),
                        deployment: dep.clone(),
                        target: format!("replica:{replica}"),
                        metric: metric.into(),
                    };
                    let ev = json!({ "bucket_secs": w.bucket_secs, "from_secs": start, "to_secs": end,
                                     "peers": replicas.len() - 1, "peer_group": format!("deployment {dep}"),
                                     "replica": replica, "evidence": m.evidence });
                    self.open_peer_outlier(pool, id, m.score, &ev, now, out, &mut flagged).await?;
                }
            }
        }
        close_peer_outliers_not_in(pool, &flagged, |id| id.target.starts_with("replica:"), now, out).await
    }

    /// Memory leaks ([`forecasting::leak`]): each GPU's memory over the window's complete buckets against
    /// the per-bucket median of the GPUs serving the same deployment (none without a deployment); open,
    /// critical, while the verdict holds.
    async fn leaks(
        &self,
        pool: &PgPool,
        loaded: &Loaded,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
    ) -> Result<(), RefreshError> {
        let w = &loaded.window;
        let cfg = LeakConfig::default();
        // Complete buckets only: the newest one is still filling.
        let complete =
            (0..w.buckets).take_while(|i| w.start_secs + (*i as i64 + 1) * w.bucket_secs <= now.timestamp()).count();
        let mut by_dep: BTreeMap<&str, Vec<&forecasting::opportunities::GpuWindow>> = BTreeMap::new();
        for g in &w.gpus {
            if let Some(d) = g.deployment.as_deref() {
                by_dep.entry(d).or_default().push(g);
            }
        }
        let medians: HashMap<&str, Vec<f64>> = by_dep
            .iter()
            .filter(|(_, m)| m.len() >= 3)
            .map(|(d, members)| {
                let med = (0..complete)
                    .map(|i| {
                        let mut v: Vec<f64> =
                            members.iter().map(|g| g.mem_used_bytes[i]).filter(|x| x.is_finite()).collect();
                        if v.len() < 3 {
                            return f64::NAN;
                        }
                        v.sort_by(f64::total_cmp);
                        let k = v.len() / 2;
                        if v.len() % 2 == 1 { v[k] } else { (v[k - 1] + v[k]) / 2.0 }
                    })
                    .collect();
                (*d, med)
            })
            .collect();
        let mut flagged: HashSet<SeriesId> = HashSet::new();
        for g in &w.gpus {
            let mem = g.mem_used_bytes.get(..complete).unwrap_or_default();
            let peer = g.deployment.as_deref().and_then(|d| medians.get(d)).map_or(&[][..], Vec::as_slice);
            let Some(e) = leak(mem, peer, g.mem_total_bytes, w.bucket_secs as f64, &cfg) else { continue };
            let id = SeriesId {
                node_id: g.node.clone(),
                deployment: g.deployment.clone().unwrap_or_default(),
                target: format!("gpu:{}:{}", g.node, g.gpu_index),
                metric: "mem_used_bytes".into(),
            };
            // 0.5 at the horizon, towards 1 as the out-of-memory nears.
            let score = (1.0 - 0.5 * e.seconds_to_full / cfg.horizon_secs).clamp(0.5, 1.0);
            let ev = json!({ "bucket_secs": w.bucket_secs, "mem_total_bytes": g.mem_total_bytes,
                             "peers": !peer.is_empty(), "evidence": e });
            db::anomalies::open_or_update(pool, &id, "leak", now, "critical", score, &ev, now).await?;
            out.opened.push(format!("{}/{}", id.target, id.metric));
            flagged.insert(id);
        }
        for id in db::anomalies::open_series(pool, "leak").await? {
            if !flagged.contains(&id) {
                db::anomalies::close(pool, &id, now).await?;
                out.closed.push(format!("{}/{}", id.target, id.metric));
            }
        }
        Ok(())
    }
}

/// Closes the open peer events this sweep owns (`mine`) that it did not flag again: the series is back
/// among its peers.
async fn close_peer_outliers_not_in(
    pool: &PgPool,
    flagged: &HashSet<SeriesId>,
    mine: impl Fn(&SeriesId) -> bool,
    now: DateTime<Utc>,
    out: &mut SweepOutcome,
) -> Result<(), RefreshError> {
    for id in db::anomalies::open_series(pool, "peers").await? {
        if mine(&id) && !flagged.contains(&id) {
            db::anomalies::close(pool, &id, now).await?;
            out.closed.push(format!("{}/{}", id.target, id.metric));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use forecasting::opportunities::{FleetWindow, GpuWindow};

    fn gpu(i: u32, util: &[f64]) -> GpuWindow {
        let n = util.len();
        GpuWindow {
            node: "n".into(),
            gpu_index: i,
            model: "H100".into(),
            deployment: Some("ml/llama".into()),
            util_pct: util.to_vec(),
            sm_active: vec![f64::NAN; n],
            mem_used_bytes: vec![f64::NAN; n],
            mem_total_bytes: 0.0,
            power_w: vec![f64::NAN; n],
            sm_clock_mhz: vec![f64::NAN; n],
            throttle_reasons: vec![0; n],
            xid_max: 0,
            ecc_dbe_new: 0,
        }
    }

    #[test]
    fn a_gpu_passes_the_gate_only_where_it_departs_from_its_peers_not_when_load_moves_them_all() {
        // Bucket 1: the load doubles on every GPU; bucket 2: GPU 3 alone jumps; bucket 3: GPU 3 idles.
        let gpus = vec![
            gpu(0, &[40.0, 80.0, 41.0, 40.0]),
            gpu(1, &[41.0, 81.0, 40.0, 41.0]),
            gpu(2, &[39.0, 79.0, 40.0, 39.0]),
            gpu(3, &[40.0, 80.0, 95.0, 1.0]),
        ];
        let temps = vec![vec![50.0, 60.0, 50.0, 50.0]; 4];
        let w = FleetWindow { start_secs: 0, bucket_secs: 60, buckets: 4, gpus, deployments: vec![] };
        let gates = peer_gates(&w, &temps, 5.0, 3.5, 0.01);
        assert_eq!(gates.len(), 4);
        assert_eq!(gates[&3][0], vec![false, false, true, false], "only GPU 3's own jump, not the load step or idling");
        for i in 0..3 {
            assert_eq!(gates[&i][0], vec![false; 4], "GPU {i}");
            assert_eq!(gates[&i][1], vec![false; 4], "temperatures move together: GPU {i}");
        }
        // Fewer than three GPUs serving the deployment: no gate at all (their events are recorded as before).
        let w2 = FleetWindow { gpus: w.gpus[..2].to_vec(), ..w };
        assert!(peer_gates(&w2, &temps, 5.0, 3.5, 0.01).is_empty());
    }
}
