//! Fake Kubernetes API server and fake PagerDuty receiver: real HTTP servers on 127.0.0.1 that record
//! every request they get.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
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
    let server = HttpServer::new(move || {
        let recorded = recorded.clone();
        let responder = responder.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let recorded = recorded.clone();
            let responder = responder.clone();
            async move {
                let r = Recorded {
                    method: req.method().to_string(),
                    path: req.path().to_string(),
                    content_type: req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                let resp = responder(&r);
                recorded.lock().unwrap().push(r);
                resp
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Fake { url: format!("http://127.0.0.1:{port}"), requests, handle }
}

/// A Kubernetes API server holding one Deployment's scale; GET and PATCH of
/// `/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale` behave like the real API.
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
