//! The served OpenAPI document describes routes that exist, and the policy API in full.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_in_the_openapi_document_is_a_route_of_the_server() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let doc: Value =
        app.http.get(format!("{}/api/v1/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    let mut checked = 0;
    for (path, ops) in paths {
        // Concrete values for path parameters; the handler may answer 404 for the resource, never the router.
        let url = crate::helpers::concrete_path(path);
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r =
                app.api_request(m, &url).header("content-type", "application/json").body("{}").send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(!body.contains("no such route") && status != 405, "{method} {path}: {status} {body}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
    // The policy API is described field by field, HPA behavior included.
    let spec = &doc["components"]["schemas"]["PolicySpec"]["properties"];
    for field in
        ["target", "metrics", "slo", "behavior", "predictive", "panic", "scale_to_zero_idle_secs", "rebatch", "dry_run"]
    {
        assert!(spec.get(field).is_some(), "PolicySpec.{field} is missing from the document");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_method_on_a_declared_path_is_a_405_with_allow() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/v1/commands/ack", "POST"),
        (reqwest::Method::PATCH, "/api/v1/policies/00000000-0000-0000-0000-000000000000", "DELETE, GET, PUT"),
        (reqwest::Method::DELETE, "/api/v1/fleet", "GET"),
        (reqwest::Method::POST, "/healthz", "GET"),
    ] {
        let r = app.api_request(method.clone(), path).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("not allowed"), "{body}");
    }
    // The declared methods still reach their handlers, and an unknown path is still a 404.
    let r = app.http.post(format!("{}/api/v1/commands/ack", app.address)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.http.get(format!("{}/api/v1/nope", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}
