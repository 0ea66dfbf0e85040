//! A fake Kubernetes API server on 127.0.0.1 holding Deployments and Pods, for `fleetpilot bench tick` and
//! the integration tests (one implementation for both, as `gpu_agent::fakes` is for the agent's peers).
//!
//! It serves what the scaler uses, the way the real API does: Deployments (get, list, `watch=true` as a
//! stream of JSON events, the `scale` subresource's get and merge-patch), Pods (list with an equality
//! `labelSelector`, merge-patch), and fleetpilot's `ScalingPolicy` custom resources (cluster-wide list, watch
//! from a resource version with the events since replayed, `410 Gone` for a compacted one, the `status`
//! subresource's merge-patch). Every request is recorded in arrival order. Resource versions are one
//! increasing counter, as etcd's revision.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeRequest {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string (empty when none).
    pub query: String,
    /// Content-Type header.
    pub content_type: String,
    /// Body parsed as JSON (Null when not JSON).
    pub body: Value,
}

impl KubeRequest {
    /// The request as received: the parts the fakes record and answer from.
    pub fn from_parts(req: &HttpRequest, body: &[u8]) -> Self {
        KubeRequest {
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            content_type: req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// Whether it is a `watch=true` request.
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

#[derive(Default)]
struct State {
    /// (namespace, name) -> Deployment object.
    deployments: BTreeMap<(String, String), Value>,
    /// (namespace, name) -> Pod object.
    pods: BTreeMap<(String, String), Value>,
    revision: u64,
    requests: Vec<KubeRequest>,
    /// Open Deployment watches: namespace and the stream's sender.
    watches: Vec<(String, mpsc::UnboundedSender<web::Bytes>)>,
    /// Pod PATCHes answer 403, as for a service account without that right.
    forbid_pod_patches: bool,
    /// (namespace, name) -> ScalingPolicy object.
    scaling_policies: BTreeMap<(String, String), Value>,
    /// Every ScalingPolicy watch event with its resource version (what a watch from an older one replays).
    sp_log: Vec<(u64, Value)>,
    /// Resource versions at or below this are compacted: a watch from one gets `410 Gone`.
    sp_compacted: u64,
    /// Open ScalingPolicy watches.
    sp_watches: Vec<mpsc::UnboundedSender<web::Bytes>>,
    /// ScalingPolicy watches answered `410 Gone`.
    sp_gone: usize,
}

/// The ScalingPolicy collection path.
const SP_PATH: [&str; 4] = ["apis", "fleetpilot.dev", "v1", "scalingpolicies"];

impl State {
    fn bump(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Sends a watch event for a Deployment to the open watches of its namespace.
    fn notify(&mut self, ns: &str, kind: &str, object: &Value) {
        let mut line = json!({ "type": kind, "object": object }).to_string();
        line.push('\n');
        let bytes = web::Bytes::from(line);
        self.watches.retain(|(w_ns, tx)| w_ns != ns || tx.send(bytes.clone()).is_ok());
    }
}

impl State {
    /// Records a ScalingPolicy event and sends it to the open watches.
    fn sp_event(&mut self, kind: &str, object: &Value) {
        let rv = self.revision;
        let event = json!({ "type": kind, "object": object });
        let mut line = event.to_string();
        line.push('\n');
        let bytes = web::Bytes::from(line);
        self.sp_watches.retain(|tx| tx.send(bytes.clone()).is_ok());
        self.sp_log.push((rv, event));
    }

    /// A streaming response from `rx`, after `first` (lines already due).
    fn stream(first: Vec<web::Bytes>, rx: Option<mpsc::UnboundedReceiver<web::Bytes>>) -> HttpResponse {
        let head = futures_util::stream::iter(first.into_iter().map(Ok::<_, actix_web::Error>));
        let tail = futures_util::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), Some(rx)))
        });
        HttpResponse::Ok().content_type("application/json").streaming(futures_util::StreamExt::chain(head, tail))
    }

    fn scaling_policies(&mut self, r: &KubeRequest, rest: &[&str]) -> HttpResponse {
        match (r.method.as_str(), rest) {
            ("GET", []) if r.is_watch() => {
                let from: u64 = query_param(&r.query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                if from < self.sp_compacted {
                    self.sp_gone += 1;
                    // As the real API: a watch event of type ERROR carrying a 410 Status, then the end.
                    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": format!("too old resource version: {from} ({})", self.sp_compacted),
                        "reason": "Expired", "code": 410}});
                    return Self::stream(vec![web::Bytes::from(format!("{gone}\n"))], None);
                }
                let replay: Vec<web::Bytes> = self
                    .sp_log
                    .iter()
                    .filter(|(rv, _)| *rv > from)
                    .map(|(_, e)| web::Bytes::from(format!("{e}\n")))
                    .collect();
                let (tx, rx) = mpsc::unbounded_channel::<web::Bytes>();
                self.sp_watches.push(tx);
                Self::stream(replay, Some(rx))
            }
            ("GET", []) => HttpResponse::Ok().json(json!({
                "apiVersion": "fleetpilot.dev/v1", "kind": "ScalingPolicyList",
                "metadata": {"resourceVersion": self.revision.to_string()},
                "items": self.scaling_policies.values().cloned().collect::<Vec<_>>()
            })),
            ("PATCH", ["namespaces", ns, "scalingpolicies", name, "status"]) => {
                let key = (ns.to_string(), name.to_string());
                if !self.scaling_policies.contains_key(&key) {
                    return status(404, "NotFound", &format!("scalingpolicies.fleetpilot.dev \"{name}\" not found"));
                }
                if !r.content_type.starts_with("application/merge-patch+json") {
                    return status(415, "UnsupportedMediaType", "only merge patches are served here");
                }
                let rv = self.bump();
                let Some(o) = self.scaling_policies.get_mut(&key) else { return status(404, "NotFound", name) };
                // The status subresource changes only `status`.
                merge(o, &json!({"status": r.body.get("status").cloned().unwrap_or(Value::Null)}));
                merge(o, &json!({"metadata": {"resourceVersion": rv}}));
                let o = o.clone();
                self.sp_event("MODIFIED", &o);
                HttpResponse::Ok().json(o)
            }
            _ => status(404, "NotFound", "the server could not find the requested resource"),
        }
    }
}

/// A running fake API server.
pub struct FakeCluster {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

fn status(code: u16, reason: &str, message: &str) -> HttpResponse {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap_or_default()).json(body)
}

/// Merges a JSON merge patch (RFC 7386) into `target`.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Whether `labels` satisfy an equality-based selector (`a=b,c==d,e!=f`); set-based terms are not
/// supported and match nothing, so a test can never pass by selecting too much.
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).and_then(Value::as_str) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            let v = v.strip_prefix('=').unwrap_or(v);
            labels.get(k.trim()).and_then(Value::as_str) == Some(v.trim())
        } else {
            false
        }
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url_decode_pairs(query).find(|(k, _)| k == key).map(|(_, v)| v)
}

fn url_decode_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(state: &Arc<Mutex<State>>, r: &KubeRequest) -> HttpResponse {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if segs.len() >= 3 && segs[..3] == SP_PATH[..3] {
        // Cluster-wide list/watch, or a namespaced object's subresource.
        let rest: Vec<&str> = if segs.get(3) == Some(&SP_PATH[3]) { segs[4..].to_vec() } else { segs[3..].to_vec() };
        return st.scaling_policies(r, &rest);
    }
    match (r.method.as_str(), segs.as_slice()) {
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "deployments"]) => {
            if r.is_watch() {
                let (tx, rx) = mpsc::unbounded_channel::<web::Bytes>();
                st.watches.push((ns.to_string(), tx));
                // Open until the client goes away or the server stops, as a real watch (up to its timeout).
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
                });
                return HttpResponse::Ok().content_type("application/json").streaming(stream);
            }
            let items: Vec<Value> =
                st.deployments.iter().filter(|((n, _), _)| n == ns).map(|(_, d)| d.clone()).collect();
            HttpResponse::Ok().json(json!({
                "apiVersion": "apps/v1", "kind": "DeploymentList",
                "metadata": {"resourceVersion": st.revision.to_string()}, "items": items
            }))
        }
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            match st.deployments.get(&(ns.to_string(), name.to_string())) {
                Some(d) => HttpResponse::Ok().json(d),
                None => status(404, "NotFound", &format!("deployments.apps \"{name}\" not found")),
            }
        }
        (method @ ("GET" | "PATCH"), ["apis", "apps", "v1", "namespaces", ns, "deployments", name, "scale"]) => {
            let key = (ns.to_string(), name.to_string());
            if !st.deployments.contains_key(&key) {
                return status(404, "NotFound", &format!("deployments.apps \"{name}\" not found"));
            }
            if method == "PATCH" {
                let Some(n) = r.body.pointer("/spec/replicas").and_then(Value::as_u64) else {
                    return status(422, "Invalid", "spec.replicas: a number is required");
                };
                let rv = st.bump();
                let Some(d) = st.deployments.get_mut(&key) else { return status(404, "NotFound", name) };
                merge(
                    d,
                    &json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": n}, "status": {"replicas": n}}),
                );
                let d = d.clone();
                st.notify(ns, "MODIFIED", &d);
            }
            let d = &st.deployments[&key];
            let n = d.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
            HttpResponse::Ok().json(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": ns, "resourceVersion": d["metadata"]["resourceVersion"]},
                "spec": {"replicas": n}, "status": {"replicas": n}
            }))
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
            let selector = query_param(&r.query, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = st
                .pods
                .iter()
                .filter(|((n, _), p)| n == ns && selects(&selector, &p["metadata"]["labels"]))
                .map(|(_, p)| p.clone())
                .collect();
            HttpResponse::Ok().json(json!({
                "apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": st.revision.to_string()}, "items": items
            }))
        }
        (method @ ("GET" | "PATCH"), ["api", "v1", "namespaces", ns, "pods", name]) => {
            let key = (ns.to_string(), name.to_string());
            if method == "PATCH" {
                if st.forbid_pod_patches {
                    return status(
                        403,
                        "Forbidden",
                        &format!("pods \"{name}\" is forbidden: cannot patch resource \"pods\""),
                    );
                }
                if !r.content_type.starts_with("application/merge-patch+json") {
                    return status(415, "UnsupportedMediaType", "only merge patches are served here");
                }
                let rv = st.bump();
                let Some(p) = st.pods.get_mut(&key) else {
                    return status(404, "NotFound", &format!("pods \"{name}\" not found"));
                };
                merge(p, &r.body);
                merge(p, &json!({"metadata": {"resourceVersion": rv}}));
            }
            match st.pods.get(&key) {
                Some(p) => HttpResponse::Ok().json(p),
                None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            }
        }
        _ => status(404, "NotFound", "the server could not find the requested resource"),
    }
}

/// Serves `handler` for every request on a free port of 127.0.0.1 with `workers` workers, in the background
/// of the current Tokio runtime; the server's URL (`http://127.0.0.1:PORT`) and its handle. The fakes of the
/// benchmarks and of the integration tests are all started this way.
pub fn serve_any<F, Fut>(workers: usize, handler: F) -> std::io::Result<(String, actix_web::dev::ServerHandle)>
where
    F: Fn(HttpRequest, web::Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = HttpResponse> + 'static,
{
    let server = HttpServer::new(move || {
        let handler = handler.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| handler(req, body)))
    })
    .workers(workers)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let port = server.addrs().first().map(|a| a.port()).unwrap_or_default();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((format!("http://127.0.0.1:{port}"), handle))
}

impl FakeCluster {
    /// Starts an empty cluster on a free port of 127.0.0.1 (within a Tokio runtime).
    pub fn start() -> std::io::Result<Self> {
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        let (url, handle) = serve_any(1, move |req, body| {
            let s = s.clone();
            async move {
                let r = KubeRequest::from_parts(&req, &body);
                s.lock().unwrap_or_else(|e| e.into_inner()).requests.push(r.clone());
                handle(&s, &r)
            }
        })?;
        Ok(Self { url, state, handle })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a Deployment whose `spec.selector.matchLabels` (and pod template labels) are `labels`.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: u32, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let mut st = self.state();
        let rv = st.bump();
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": format!("uid-{ns}-{name}")},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "engine", "image": "vllm"}]}}},
            "status": {"replicas": replicas}
        });
        st.notify(ns, "ADDED", &d);
        st.deployments.insert((ns.to_string(), name.to_string()), d);
    }

    /// Adds a running, ready pod of Deployment `deployment` (owned by its ReplicaSet
    /// `<deployment>-<hash>`), with `labels` plus `pod-template-hash`.
    pub fn add_pod(&self, ns: &str, name: &str, deployment: &str, labels: &[(&str, &str)], ip: &str, node: &str) {
        let hash = "5d8f7c9b4";
        let mut l: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        l.insert("pod-template-hash".into(), hash.into());
        let mut st = self.state();
        let rv = st.bump();
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": l,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": format!("{deployment}-{hash}"), "uid": format!("uid-rs-{deployment}"),
                                              "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "engine", "image": "vllm"}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        st.pods.insert((ns.to_string(), name.to_string()), p);
    }

    /// Changes a Deployment's replicas as another client would (watchers see a MODIFIED event).
    pub fn set_replicas(&self, ns: &str, name: &str, replicas: u32) {
        let mut st = self.state();
        let rv = st.bump();
        let Some(d) = st.deployments.get_mut(&(ns.to_string(), name.to_string())) else { return };
        merge(
            d,
            &json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}, "status": {"replicas": replicas}}),
        );
        let d = d.clone();
        st.notify(ns, "MODIFIED", &d);
    }

    /// A Deployment's `spec.replicas`.
    pub fn replicas(&self, ns: &str, name: &str) -> Option<u32> {
        let st = self.state();
        let d = st.deployments.get(&(ns.to_string(), name.to_string()))?;
        d.pointer("/spec/replicas").and_then(Value::as_u64).map(|n| n as u32)
    }

    /// A pod's annotation.
    pub fn pod_annotation(&self, ns: &str, pod: &str, key: &str) -> Option<String> {
        let st = self.state();
        let p = st.pods.get(&(ns.to_string(), pod.to_string()))?;
        p["metadata"]["annotations"].get(key).and_then(Value::as_str).map(str::to_string)
    }

    /// Makes pod PATCHes fail with 403 (a service account without `patch` on pods), or succeed again.
    pub fn forbid_pod_patches(&self, forbid: bool) {
        self.state().forbid_pod_patches = forbid;
    }

    /// Creates or updates a ScalingPolicy (its `generation` goes up when the spec changes, as the API server
    /// does); watchers see ADDED or MODIFIED.
    pub fn apply_scaling_policy(&self, ns: &str, name: &str, spec: Value) {
        let mut st = self.state();
        let rv = st.bump();
        let key = (ns.to_string(), name.to_string());
        let (kind, object) = match st.scaling_policies.get_mut(&key) {
            Some(o) => {
                if o["spec"] != spec {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    o["metadata"]["generation"] = g.into();
                    o["spec"] = spec;
                }
                o["metadata"]["resourceVersion"] = rv.into();
                ("MODIFIED", o.clone())
            }
            None => {
                let o = json!({"apiVersion": "fleetpilot.dev/v1", "kind": "ScalingPolicy",
                    "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "generation": 1,
                                 "uid": format!("uid-sp-{ns}-{name}")},
                    "spec": spec});
                st.scaling_policies.insert(key, o.clone());
                ("ADDED", o)
            }
        };
        st.sp_event(kind, &object);
    }

    /// Deletes a ScalingPolicy; watchers see DELETED.
    pub fn delete_scaling_policy(&self, ns: &str, name: &str) {
        let mut st = self.state();
        let Some(mut o) = st.scaling_policies.remove(&(ns.to_string(), name.to_string())) else { return };
        let rv = st.bump();
        o["metadata"]["resourceVersion"] = rv.into();
        st.sp_event("DELETED", &o);
    }

    /// A ScalingPolicy as stored (with its status).
    pub fn scaling_policy(&self, ns: &str, name: &str) -> Option<Value> {
        self.state().scaling_policies.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Compacts the ScalingPolicy history as an API server restart after etcd compaction does: the open
    /// watches close, the ScalingPolicies in `deleted_meanwhile` are gone without any event left to replay,
    /// and a watch from any resource version seen so far gets `410 Gone` (the client must list again).
    pub fn compact_scaling_policies(&self, deleted_meanwhile: &[(&str, &str)]) {
        let mut st = self.state();
        for (ns, name) in deleted_meanwhile {
            st.scaling_policies.remove(&(ns.to_string(), name.to_string()));
        }
        st.bump();
        st.sp_compacted = st.revision;
        st.sp_log.clear();
        st.sp_watches.clear();
    }

    /// ScalingPolicy watches answered `410 Gone` so far.
    pub fn scaling_policy_watches_gone(&self) -> usize {
        self.state().sp_gone
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.state().requests.clone()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Open watch streams (closed ones are noticed at the next event).
    pub fn open_watches(&self) -> usize {
        self.state().watches.iter().filter(|(_, tx)| !tx.is_closed()).count()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge(&mut v, &json!({"a": {"b": null, "e": 4}, "d": [1]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 4}, "d": [1]}));
    }

    #[test]
    fn equality_selectors_select_and_set_based_ones_select_nothing() {
        let labels = json!({"app": "llama", "tier": "gpu"});
        assert!(selects("app=llama", &labels));
        assert!(selects("app==llama,tier=gpu", &labels));
        assert!(!selects("app=llama,tier!=gpu", &labels));
        assert!(!selects("app=mistral", &labels));
        assert!(!selects("app in (llama)", &labels));
        assert_eq!(
            query_param("limit=5&labelSelector=app%3Dllama%2Ctier%3Dgpu", "labelSelector").as_deref(),
            Some("app=llama,tier=gpu")
        );
    }
}
