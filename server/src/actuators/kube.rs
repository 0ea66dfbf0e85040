//! Scaling Deployments and StatefulSets through the `scale` subresource.
//!
//! **Reads without a request per tick.** The replica count of a Deployment target comes from a cache that a
//! kube-runtime `watcher` on Deployments keeps fresh: one watch per namespace that a policy targets, started
//! the first time a policy of that namespace is read (per namespace rather than cluster-wide, so a namespaced
//! Role with `get`, `list`, `watch` and `patch` on `deployments` and `deployments/scale` is enough, and
//! namespaces no policy targets are not streamed). While a namespace's watch has not listed yet, or has failed
//! and not relisted, its cache is not trusted and every read is a `GET .../scale`, as without a cache; so
//! without `list`/`watch` rights scaling works exactly as before, one GET per policy per tick. Our own
//! successful scale PATCH updates the entry at once (the watch event follows). StatefulSets are rare for
//! serving and keep the plain GET.
//!
//! **Drain-safe scale-down.** Before a Deployment is scaled down, its pods get the
//! `controller.kubernetes.io/pod-deletion-cost` annotation from their current load, so the ReplicaSet
//! controller deletes the least busy pods first and in-flight requests are least disturbed (see
//! [`deletion_costs`]). Only the Deployment's own pods are touched: those its `spec.selector` selects in its
//! namespace and that a ReplicaSet of the Deployment owns. The annotations are sent before the scale PATCH;
//! failing to annotate never blocks the scale (it is logged, counted in
//! `fleetpilot_kube_drain_annotations_total{outcome="failed"}` and returned in [`ScaleReport`]).
//!
//! Every request is counted in `fleetpilot_kube_requests_total{verb}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use sqlx::PgPool;

use super::ActuateError;
use crate::config::KubeSettings;
use crate::db;
use crate::domain::policy::{PolicySpec, TargetKind};
use crate::telemetry::{Metrics, kube_verb};

/// The annotation the ReplicaSet controller ranks pods by when it scales down (lowest deleted first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Cost of a pod whose replica reported no request running or queued: deleted first.
pub const COST_IDLE: i32 = 0;
/// Cost of a pod with no fresh load sample (just started, not scraped yet, or not matched to a replica):
/// after the pods known to be idle, before every pod known to be busy, since nothing says it has work in
/// flight while a busy pod certainly has.
pub const COST_UNKNOWN: i32 = 1;
/// A busy pod costs this plus its in-flight requests in tenths, so any busy pod outranks an unknown one.
pub const COST_BUSY_BASE: i32 = 2;

/// Samples older than this say nothing about a pod's load now.
const LOAD_MAX_AGE_SECS: i64 = 120;
/// Pod PATCHes in flight at once.
const ANNOTATE_CONCURRENCY: usize = 8;

/// What one Deployment looks like in the cache.
#[derive(Debug, Clone)]
struct Cached {
    /// `spec.replicas`.
    replicas: u32,
    /// `spec.selector` (absent when the entry came from a scale PATCH, which does not carry it).
    selector: Option<LabelSelector>,
    /// `metadata.resourceVersion`, when it is a number (it is with etcd): older events are ignored.
    resource_version: Option<u64>,
}

impl Cached {
    fn of(d: &Deployment) -> Option<(String, Self)> {
        let name = d.metadata.name.clone()?;
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
        Some((
            name,
            Self {
                replicas,
                selector: spec.map(|s| s.selector.clone()),
                resource_version: rv(d.metadata.resource_version.as_deref()),
            },
        ))
    }

    /// Whether `self` may replace `old`: not when `old` is known to be newer.
    fn newer_than(&self, old: &Self) -> bool {
        match (self.resource_version, old.resource_version) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        }
    }
}

fn rv(v: Option<&str>) -> Option<u64> {
    v.and_then(|s| s.parse().ok())
}

/// The cache of one namespace.
#[derive(Debug, Default)]
struct Namespace {
    /// True between the watch's first complete list and its next error.
    synced: bool,
    deployments: HashMap<String, Cached>,
}

type Namespaces = Arc<Mutex<HashMap<String, Namespace>>>;

/// Owns the watch tasks: they stop when the last clone of the scaler is dropped.
#[derive(Default)]
struct Watches {
    started: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for h in self.started.get_mut().unwrap_or_else(|e| e.into_inner()).values() {
            h.abort();
        }
    }
}

/// How a scale request went beyond its own success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleReport {
    /// The drain annotations sent before a Deployment's scale-down; `None` when it was no scale-down.
    pub drain: Option<DrainReport>,
}

/// The pod-deletion-cost annotations of one scale-down.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainReport {
    /// Pods of the Deployment found.
    pub pods: usize,
    /// Pods whose annotation was written.
    pub patched: usize,
    /// Pods that already carried the right cost.
    pub unchanged: usize,
    /// Pods whose load was known (matched to a fresh serving sample).
    pub with_load: usize,
    /// Why annotating failed, in whole or for some pods (the scale was sent anyway).
    pub error: Option<String>,
}

/// A Kubernetes client for scaling.
#[derive(Clone)]
pub struct KubeScaler {
    client: kube::Client,
    metrics: Metrics,
    namespaces: Namespaces,
    watches: Arc<Watches>,
    loads: Option<PgPool>,
}

impl KubeScaler {
    /// Builds a client from settings: explicit URL, else (if `discover`) in-cluster or kubeconfig; `None`
    /// when Kubernetes is not configured. Its requests are counted in `metrics`.
    pub async fn from_settings(s: &KubeSettings, metrics: Metrics) -> Result<Option<Self>, ActuateError> {
        let config = if let Some(url) = &s.api_url {
            let uri = url.parse().map_err(|e| ActuateError::Kube(format!("kube.api_url {url:?}: {e}")))?;
            let mut c = kube::Config::new(uri);
            if !s.token.is_empty() {
                c.auth_info.token = Some(s.token.expose().to_string().into());
            }
            c
        } else if s.discover {
            kube::Config::infer().await.map_err(|e| ActuateError::Kube(format!("discover: {e}")))?
        } else {
            return Ok(None);
        };
        let counter = metrics.kube_requests.clone();
        let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
            counter.with_label_values(&[kube_verb(req.method().as_str(), req.uri().path(), req.uri().query())]).inc();
            req
        });
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| ActuateError::Kube(e.to_string()))?
            .with_layer(&count)
            .build();
        Ok(Some(Self { client, metrics, namespaces: Arc::default(), watches: Arc::default(), loads: None }))
    }

    /// The client (shared with the ScalingPolicy controller: the same credentials and request counting).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Reads replicas' load from `pool` (`serving_latest`) to order pods before a scale-down; without it,
    /// scale-downs annotate nothing.
    pub fn with_replica_loads(mut self, pool: PgPool) -> Self {
        self.loads = Some(pool);
        self
    }

    fn ns(spec: &PolicySpec) -> &str {
        spec.target.namespace.as_deref().unwrap_or("default")
    }

    /// `spec.replicas` of the target: from the watch cache for a Deployment when it is in sync, else a GET
    /// of the scale subresource.
    pub async fn current(&self, spec: &PolicySpec) -> Result<u32, ActuateError> {
        let (ns, name) = (Self::ns(spec), spec.target.name.as_str());
        if spec.target.kind == TargetKind::Statefulset {
            let scale = Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                .get_scale(name)
                .await
                .map_err(|e| ActuateError::Kube(e.to_string()))?;
            return Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32);
        }
        self.watch(ns);
        if let Some(c) = self.cached(ns, name) {
            return Ok(c.replicas);
        }
        let scale = Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get_scale(name)
            .await
            .map_err(|e| ActuateError::Kube(e.to_string()))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32)
    }

    /// `PATCH .../{deployments|statefulsets}/NAME/scale` with `{"spec":{"replicas":N}}` (merge patch); a
    /// Deployment's scale-down first annotates its pods' deletion costs.
    pub async fn scale(&self, spec: &PolicySpec, replicas: u32) -> Result<ScaleReport, ActuateError> {
        let (ns, name) = (Self::ns(spec), spec.target.name.as_str());
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let pp = PatchParams::default();
        if spec.target.kind == TargetKind::Statefulset {
            Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await
                .map_err(|e| ActuateError::Kube(e.to_string()))?;
            return Ok(ScaleReport::default());
        }
        let mut report = ScaleReport::default();
        // Only a scale-down deletes pods; an unknown current count is not worth a drain (it would be a GET).
        if let Ok(current) = self.current(spec).await
            && replicas < current
        {
            let drain = self.annotate_for_drain(spec).await;
            if let Some(e) = &drain.error {
                tracing::warn!(target = %spec.target_label(), error = %e, "pod deletion costs not (all) set before scale-down");
            }
            report.drain = Some(drain);
        }
        let scale = Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch_scale(name, &pp, &patch)
            .await
            .map_err(|e| ActuateError::Kube(e.to_string()))?;
        self.remember_scale(ns, name, replicas, rv(scale.metadata.resource_version.as_deref()));
        Ok(report)
    }

    /// The cached entry, when the namespace's watch is in sync.
    fn cached(&self, ns: &str, name: &str) -> Option<Cached> {
        let map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        map.get(ns).filter(|n| n.synced).and_then(|n| n.deployments.get(name).cloned())
    }

    /// Our own scale, so the next tick reads it without waiting for the watch event.
    fn remember_scale(&self, ns: &str, name: &str, replicas: u32, resource_version: Option<u64>) {
        let mut map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ns.to_string()).or_default();
        let selector = n.deployments.get(name).and_then(|c| c.selector.clone());
        let new = Cached { replicas, selector, resource_version };
        match n.deployments.get(name) {
            Some(old) if !new.newer_than(old) => {}
            _ => {
                n.deployments.insert(name.to_string(), new);
            }
        }
    }

    /// Starts the namespace's Deployment watch unless it runs already.
    fn watch(&self, ns: &str) {
        let mut started = self.watches.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.contains_key(ns) {
            return;
        }
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let task = tokio::spawn(keep_in_sync(api, ns.to_string(), self.namespaces.clone()));
        started.insert(ns.to_string(), task.abort_handle());
    }

    /// Sets the pod-deletion-cost of each of the Deployment's pods from its replica's load; never fails, the
    /// report says what went wrong.
    async fn annotate_for_drain(&self, spec: &PolicySpec) -> DrainReport {
        let mut report = DrainReport::default();
        let counter = &self.metrics.kube_drain_annotations;
        let Some(pool) = &self.loads else {
            return report;
        };
        let pods = match self.own_pods(spec).await {
            Ok(p) => p,
            Err(e) => {
                counter.with_label_values(&["failed"]).inc();
                report.error = Some(e);
                return report;
            }
        };
        report.pods = pods.len();
        let since = chrono::Utc::now() - chrono::Duration::seconds(LOAD_MAX_AGE_SECS);
        let loads = match db::replica_load::latest(pool, &spec.deployment(), since).await {
            Ok(l) => l,
            Err(e) => {
                // Without loads every pod would cost the same: annotating would order nothing.
                counter.with_label_values(&["failed"]).inc();
                report.error = Some(format!("reading replica loads: {e}"));
                return report;
            }
        };
        let costs = deletion_costs(&pods, &loads);
        report.with_load = costs.iter().filter(|c| c.load.is_some()).count();
        let api = Api::<Pod>::namespaced(self.client.clone(), Self::ns(spec));
        // Owned (pod, cost) pairs: the futures below must not borrow from this frame's locals.
        let mut todo: Vec<(String, String)> = Vec::new();
        for c in &costs {
            let cost = c.cost.to_string();
            if pods.iter().any(|p| p.name == c.pod && p.cost.as_deref() == Some(cost.as_str())) {
                report.unchanged += 1;
            } else {
                todo.push((c.pod.clone(), cost));
            }
        }
        let results: Vec<Result<(), String>> = futures_util::stream::iter(todo.into_iter().map(|(pod, cost)| {
            let api = api.clone();
            async move {
                let patch =
                    Patch::Merge(serde_json::json!({ "metadata": { "annotations": { POD_DELETION_COST: cost } } }));
                api.patch(&pod, &PatchParams::default(), &patch)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("pod {pod}: {e}"))
            }
        }))
        .buffer_unordered(ANNOTATE_CONCURRENCY)
        .collect()
        .await;
        let mut failures = Vec::new();
        for r in results {
            match r {
                Ok(()) => report.patched += 1,
                Err(e) => failures.push(e),
            }
        }
        counter.with_label_values(&["patched"]).inc_by(report.patched as u64);
        counter.with_label_values(&["unchanged"]).inc_by(report.unchanged as u64);
        counter.with_label_values(&["failed"]).inc_by(failures.len() as u64);
        if !failures.is_empty() {
            report.error =
                Some(format!("{} of {} pod annotations failed: {}", failures.len(), costs.len(), failures.join("; ")));
        }
        report
    }

    /// The Deployment's pods: selected by its `spec.selector` in its namespace, owned by one of its
    /// ReplicaSets (`<deployment>-<pod-template-hash>`, which rules out another Deployment's pods under an
    /// overlapping selector), and not already terminating.
    async fn own_pods(&self, spec: &PolicySpec) -> Result<Vec<PodLoad>, String> {
        let (ns, name) = (Self::ns(spec), spec.target.name.as_str());
        let selector = match self.cached(ns, name).and_then(|c| c.selector) {
            Some(s) => s,
            None => {
                let d = Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| format!("reading deployment {ns}/{name}: {e}"))?;
                d.spec.map(|s| s.selector).ok_or_else(|| format!("deployment {ns}/{name} has no spec"))?
            }
        };
        let selector = Selector::try_from(selector).map_err(|e| format!("selector of {ns}/{name}: {e}"))?;
        // An empty selector would select every pod of the namespace (the API server refuses one on a
        // Deployment, but a cache entry must never make us touch other pods).
        if selector.to_string().is_empty() {
            return Err(format!("deployment {ns}/{name} has an empty selector: no pod annotated"));
        }
        let list = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|e| format!("listing pods of {ns}/{name}: {e}"))?;
        Ok(list.items.iter().filter(|p| owned_by(p, name)).map(PodLoad::of).collect())
    }
}

/// Whether a ReplicaSet of Deployment `deployment` owns `pod`, and it is not being deleted.
fn owned_by(pod: &Pod, deployment: &str) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
    let Some(hash) = hash else { return false };
    let rs = format!("{deployment}-{hash}");
    pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "ReplicaSet" && o.name == rs)
}

/// Applies a namespace's watch events to the cache until the task is aborted; the watcher relists after
/// errors (with backoff), and the cache is untrusted from an error to the next complete list.
async fn keep_in_sync(api: Api<Deployment>, ns: String, namespaces: Namespaces) {
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut listing: HashMap<String, Cached> = HashMap::new();
    let mut healthy = true;
    while let Some(ev) = events.next().await {
        let mut map = namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ns.clone()).or_default();
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(d)) => {
                if let Some((name, c)) = Cached::of(&d) {
                    listing.insert(name, c);
                }
            }
            Ok(Event::InitDone) => {
                // The list replaces the cache, except entries our own PATCHes made newer meanwhile.
                let mut fresh = std::mem::take(&mut listing);
                for (name, c) in fresh.iter_mut() {
                    if let Some(old) = n.deployments.get(name)
                        && !c.newer_than(old)
                    {
                        c.replicas = old.replicas;
                        c.resource_version = old.resource_version;
                    }
                }
                n.deployments = fresh;
                n.synced = true;
                if !healthy {
                    tracing::info!(namespace = %ns, "deployment watch back in sync");
                }
                healthy = true;
            }
            Ok(Event::Apply(d)) => {
                if let Some((name, c)) = Cached::of(&d) {
                    match n.deployments.get(&name) {
                        Some(old) if !c.newer_than(old) => {}
                        _ => {
                            n.deployments.insert(name, c);
                        }
                    }
                }
            }
            Ok(Event::Delete(d)) => {
                if let Some(name) = &d.metadata.name {
                    n.deployments.remove(name);
                }
            }
            Err(e) => {
                n.synced = false;
                if healthy {
                    tracing::warn!(namespace = %ns, error = %e, "deployment watch failed: reading scales with GET until it relists");
                } else {
                    tracing::debug!(namespace = %ns, error = %e, "deployment watch still failing");
                }
                healthy = false;
            }
        }
    }
}

/// What the cost of one pod is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PodLoad {
    /// Pod name.
    pub name: String,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// The pod's current deletion-cost annotation.
    pub cost: Option<String>,
}

impl PodLoad {
    fn of(p: &Pod) -> Self {
        Self {
            name: p.metadata.name.clone().unwrap_or_default(),
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            cost: p.metadata.annotations.as_ref().and_then(|a| a.get(POD_DELETION_COST).cloned()),
        }
    }
}

/// The deletion cost chosen for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodCost {
    /// Pod name.
    pub pod: String,
    /// In-flight requests (running + queued) of its replica, when known.
    pub load: Option<f64>,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub cost: i32,
}

/// Deletion costs from replica loads: a known idle pod [`COST_IDLE`], a pod without a fresh sample
/// [`COST_UNKNOWN`], a busy one [`COST_BUSY_BASE`] plus its in-flight requests in tenths, so the fewest
/// requests in flight are deleted first.
///
/// A pod's load is its replica's latest serving sample (`serving_latest`), matched in this order:
/// 1. the replica id is the pod name (a reporter that names replicas by pod, as Kubernetes-aware scrapers
///    of vLLM pods do);
/// 2. the agent's replica id `<node>/<host>:<port>` names the pod's IP (an engine scraped at its pod IP);
/// 3. the pod is the Deployment's only pod on its node and the node's agent reports replicas of the
///    deployment that rules 1 and 2 did not place (an engine scraped through `127.0.0.1` or a host port):
///    their sum.
///
/// Load counts running and queued requests alike: a deleted pod drops both.
pub fn deletion_costs(pods: &[PodLoad], loads: &[db::replica_load::ReplicaLoad]) -> Vec<PodCost> {
    let mut used = vec![false; loads.len()];
    let mut load: Vec<Option<f64>> = vec![None; pods.len()];
    let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
    for (i, p) in pods.iter().enumerate() {
        for (j, l) in loads.iter().enumerate() {
            let by_ip = p.ip.as_deref().is_some_and(|ip| replica_host(&l.replica) == Some(ip));
            if l.replica == p.name || by_ip {
                add(&mut load[i], l.in_flight());
                used[j] = true;
            }
        }
    }
    let mut per_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in pods.iter().enumerate() {
        if let Some(n) = &p.node {
            per_node.entry(n.as_str()).or_default().push(i);
        }
    }
    for (node, idx) in per_node {
        if let [i] = idx[..]
            && load[i].is_none()
        {
            for (j, l) in loads.iter().enumerate() {
                if !used[j] && l.node_id == node {
                    add(&mut load[i], l.in_flight());
                    used[j] = true;
                }
            }
        }
    }
    pods.iter()
        .zip(load)
        .map(|(p, load)| {
            let cost = match load {
                None => COST_UNKNOWN,
                Some(v) if v <= 0.0 => COST_IDLE,
                Some(v) => COST_BUSY_BASE.saturating_add((v * 10.0).round().min(f64::from(i32::MAX / 2)) as i32),
            };
            PodCost { pod: p.name.clone(), load, cost }
        })
        .collect()
}

/// The host of an agent's replica id `<agent>/<host>:<port>` (IPv6 in brackets), if it has that shape.
fn replica_host(replica: &str) -> Option<&str> {
    let (_, hostport) = replica.rsplit_once('/')?;
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    Some(hostport.rsplit_once(':').map_or(hostport, |(h, _)| h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use db::replica_load::ReplicaLoad;

    fn pod(name: &str, ip: &str, node: &str) -> PodLoad {
        PodLoad { name: name.into(), ip: Some(ip.into()), node: Some(node.into()), cost: None }
    }

    fn load(replica: &str, node: &str, running: f64, queued: f64) -> ReplicaLoad {
        ReplicaLoad { replica: replica.into(), node_id: node.into(), running, queue_depth: queued }
    }

    #[test]
    fn the_least_loaded_pod_costs_least_and_unknown_pods_sit_between_idle_and_busy() {
        let pods = [
            pod("a", "10.0.0.1", "n1"),
            pod("b", "10.0.0.2", "n1"),
            pod("c", "10.0.0.3", "n2"),
            pod("d", "10.0.0.4", "n3"),
        ];
        let loads = [
            load("a", "n1", 7.0, 1.0),                // by pod name
            load("n1/10.0.0.2:8000", "n1", 0.0, 0.0), // by pod IP: idle
            load("n2/10.0.0.3:8000", "n2", 0.3, 0.0), // by pod IP: barely busy
        ];
        let costs = deletion_costs(&pods, &loads);
        let by: HashMap<&str, i32> = costs.iter().map(|c| (c.pod.as_str(), c.cost)).collect();
        assert_eq!(by["b"], COST_IDLE);
        assert_eq!(by["d"], COST_UNKNOWN, "no sample for d");
        assert_eq!(by["c"], COST_BUSY_BASE + 3);
        assert_eq!(by["a"], COST_BUSY_BASE + 80);
        assert!(by["b"] < by["d"] && by["d"] < by["c"] && by["c"] < by["a"]);
    }

    #[test]
    fn a_node_local_engine_is_the_load_of_the_only_pod_on_that_node() {
        let pods = [pod("a", "10.0.0.1", "n1"), pod("b", "10.0.0.2", "n2"), pod("c", "10.0.0.3", "n2")];
        let loads = [load("n1/127.0.0.1:8000", "n1", 2.0, 0.0), load("n2/127.0.0.1:8000", "n2", 5.0, 0.0)];
        let costs = deletion_costs(&pods, &loads);
        assert_eq!(costs[0].load, Some(2.0));
        // Two pods on n2: which one the engine is cannot be told, so neither gets its load.
        assert_eq!((costs[1].load, costs[2].load), (None, None));
    }

    #[test]
    fn replica_hosts_are_read_from_agent_replica_ids() {
        assert_eq!(replica_host("node-1/10.1.2.3:8000"), Some("10.1.2.3"));
        assert_eq!(replica_host("node-1/[fd00::5]:8000"), Some("fd00::5"));
        assert_eq!(replica_host("node-1/engine"), Some("engine"));
        assert_eq!(replica_host("llama-7d9c-abcde"), None);
    }
}
