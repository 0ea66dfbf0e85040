//! Fake Kubernetes API server and fake PagerDuty receiver: real HTTP servers on 127.0.0.1 that record
//! every request they get.

use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
/// The fake Kubernetes API server with Deployments (watchable), their scale and Pods: the server crate's,
/// which `fleetpilot bench tick` runs too, so the tests and the benchmark exercise one fake.
pub use fleetpilot::bench::fake_kube::{FakeCluster, KubeRequest, serve_any};
use serde_json::{Value, json};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Content-Type header.
    pub content_type: String,
    /// Body parsed as JSON (Null if not JSON).
    pub body: Value,
}

/// A running fake.
pub struct Fake {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests so far.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Fake {
    /// Requests recorded so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> HttpResponse + Send + Sync>;

async fn serve(responder: Responder) -> Fake {
    let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let recorded = requests.clone();
    let (url, handle) = serve_any(1, move |req, body| {
        let (recorded, responder) = (recorded.clone(), responder.clone());
        async move {
            let KubeRequest { method, path, content_type, body, .. } = KubeRequest::from_parts(&req, &body);
            let r = Recorded { method, path, content_type, body };
            let resp = responder(&r);
            recorded.lock().unwrap().push(r);
            resp
        }
    })
    .unwrap();
    Fake { url, requests, handle }
}

/// A Kubernetes API server holding one Deployment's scale; GET and PATCH of
/// `/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale` behave like the real API, everything else is a
/// 404 (so the scaler's Deployment watch never syncs and it reads the scale with a GET, as without RBAC for
/// `list`/`watch`). [`FakeCluster`] serves Deployments, watches and Pods.
pub async fn kube_api(namespace: &str, name: &str, replicas: u32) -> (Fake, Arc<Mutex<u32>>) {
    let state = Arc::new(Mutex::new(replicas));
    let s = state.clone();
    let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale");
    let (ns, nm) = (namespace.to_string(), name.to_string());
    let responder: Responder = Arc::new(move |r: &Recorded| {
        if r.path != path {
            return HttpResponse::NotFound().json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            );
        }
        let mut cur = s.lock().unwrap();
        if r.method == "PATCH"
            && let Some(n) = r.body.pointer("/spec/replicas").and_then(Value::as_u64)
        {
            *cur = n as u32;
        }
        HttpResponse::Ok().json(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": nm, "namespace": ns},
            "spec": {"replicas": *cur},
            "status": {"replicas": *cur}
        }))
    });
    (serve(responder).await, state)
}

/// A PagerDuty Events API v2 receiver answering 202 like the real one.
pub async fn pagerduty() -> Fake {
    serve(Arc::new(|r: &Recorded| {
        HttpResponse::Accepted()
            .json(json!({"status": "success", "message": "Event processed", "dedup_key": r.body.get("dedup_key")}))
    }))
    .await
}

/// How the programmable receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// 202 Accepted.
    Accept,
    /// 500.
    Fail,
    /// 429 with `Retry-After: <secs>`.
    RateLimit(u32),
    /// 400 (a permanent refusal).
    Refuse,
    /// Sleep this long, then 503 (the sender has given up by then).
    Hang(std::time::Duration),
}

/// One request the programmable receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: std::collections::HashMap<String, String>,
    /// Raw body.
    pub raw: Vec<u8>,
    /// Body parsed as JSON (Null if not JSON).
    pub body: Value,
    /// Status answered (0: hung).
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A PagerDuty-like receiver whose answers are scripted (then a failure ratio, else 202).
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<std::collections::VecDeque<Answer>>>,
    fail_pct: Arc<Mutex<u32>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Answers the next requests in this order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }
    /// Unscripted requests fail (500) with this probability, percent.
    pub fn fail_percent(&self, pct: u32) {
        *self.fail_pct.lock().unwrap() = pct;
    }
    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }
    /// Accepted events per dedup key: (triggers, resolves).
    pub fn per_key(&self) -> std::collections::BTreeMap<String, (usize, usize)> {
        let mut m = std::collections::BTreeMap::<String, (usize, usize)>::new();
        for r in self.accepted() {
            let key = r.body["dedup_key"].as_str().unwrap_or("").to_string();
            let action = r.body["event_action"].as_str().or(r.body["event"].as_str()).unwrap_or("").to_string();
            let e = m.entry(key).or_default();
            match action.as_str() {
                "trigger" => e.0 += 1,
                "resolve" => e.1 += 1,
                _ => {}
            }
        }
        m
    }
    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Starts a programmable receiver.
pub async fn receiver() -> Receiver {
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let script: Arc<Mutex<std::collections::VecDeque<Answer>>> = Arc::default();
    let fail_pct: Arc<Mutex<u32>> = Arc::default();
    let (l, s, f) = (log.clone(), script.clone(), fail_pct.clone());
    let (url, handle) = serve_any(2, move |req: HttpRequest, body: web::Bytes| {
        let (l, s, f) = (l.clone(), s.clone(), f.clone());
        async move {
            let at = std::time::Instant::now();
            let scripted = s.lock().unwrap().pop_front();
            let answer = scripted.unwrap_or_else(|| {
                let pct = *f.lock().unwrap();
                if pct > 0 && (uuid::Uuid::new_v4().as_u128() % 100) < u128::from(pct) {
                    Answer::Fail
                } else {
                    Answer::Accept
                }
            });
            let mut r = Received {
                path: req.path().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
                raw: body.to_vec(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                status: 0,
                at,
            };
            let resp = match answer {
                Answer::Accept => {
                    HttpResponse::Accepted().json(json!({"status": "success", "dedup_key": r.body.get("dedup_key")}))
                }
                Answer::Fail => HttpResponse::InternalServerError().finish(),
                Answer::RateLimit(secs) => {
                    HttpResponse::TooManyRequests().insert_header(("Retry-After", secs.to_string())).finish()
                }
                Answer::Refuse => HttpResponse::BadRequest().json(json!({"status": "invalid event"})),
                Answer::Hang(d) => {
                    tokio::time::sleep(d).await;
                    HttpResponse::ServiceUnavailable().finish()
                }
            };
            r.status = if matches!(answer, Answer::Hang(_)) { 0 } else { resp.status().as_u16() };
            l.lock().unwrap().push(r);
            resp
        }
    })
    .unwrap();
    Receiver { url, log, script, fail_pct, handle }
}
