//! Named API tokens with scopes, rotation and revocation, and the audit log (issue #15).

use serde_json::{Value, json};

use crate::helpers::{call, spawn_app};

fn policy(name: &str) -> Value {
    json!({"name": name, "target": {"kind": "agent_group", "name": name, "deployment": "ml/llama"}, "min_replicas": 1, "max_replicas": 4,
           "metric": "gpu_utilization", "target_value": 60, "dry_run": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_scopes_rotate_and_revoke_and_every_change_is_audited() {
    use reqwest::Method as M;
    let app = spawn_app(|s| s.control.enabled = false).await;
    let admin = app.api_token.clone();
    let mut secrets = std::collections::HashMap::new();
    let mut ids = std::collections::HashMap::new();
    for (name, scope) in [("dashboards", "read"), ("ci-deployer", "operate"), ("platform", "admin")] {
        let (s, v) = call(&app, &admin, M::POST, "/api/v1/tokens", Some(&json!({"name": name, "scope": scope}))).await;
        assert_eq!(s, 201, "{v}");
        let secret = v["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("fpa_") && secret.len() == 68);
        assert_eq!(v["prefix"], &secret[..12]);
        secrets.insert(scope, secret);
        ids.insert(scope, v["id"].as_str().unwrap().to_string());
    }
    // Bad input names the field; a live name is taken.
    let (s, v) = call(&app, &admin, M::POST, "/api/v1/tokens", Some(&json!({"name": "x", "scope": "root"}))).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("scope")));
    let (s, v) = call(&app, &admin, M::POST, "/api/v1/tokens", Some(&json!({"name": "a b", "scope": "read"}))).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("name")));
    let (s, v) =
        call(&app, &admin, M::POST, "/api/v1/tokens", Some(&json!({"name": "platform", "scope": "read"}))).await;
    assert_eq!((s, v["field"].as_str()), (409, Some("name")));
    // The list never shows a secret or its digest.
    let (s, v) = call(&app, &admin, M::GET, "/api/v1/tokens", None).await;
    assert_eq!(s, 200);
    let text = v.to_string();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 3);
    assert!(secrets.values().all(|sec| !text.contains(sec.as_str())) && !text.contains("digest"), "{text}");

    // read: reads only.
    let read = &secrets["read"];
    assert_eq!(call(&app, read, M::GET, "/api/v1/policies", None).await.0, 200);
    let (s, v) = call(&app, read, M::POST, "/api/v1/policies", Some(&policy("p-read"))).await;
    assert_eq!((s, v["field"].as_str()), (403, Some("authorization")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("needs operate"), "{v}");
    assert_eq!(call(&app, read, M::GET, "/api/v1/tokens", None).await.0, 403);
    assert_eq!(call(&app, read, M::GET, "/api/v1/audit", None).await.0, 403);
    // operate: runs the fleet, but does not manage identities or where alerts go.
    let operate = &secrets["operate"];
    let (s, created) = call(&app, operate, M::POST, "/api/v1/policies", Some(&policy("p-operate"))).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        call(&app, operate, M::POST, "/api/v1/tokens", Some(&json!({"name": "n", "scope": "read"}))).await.0,
        403
    );
    let webhook = json!({"name": "w", "url": "https://hooks.example/x", "secret": "s3cret-s3cret"});
    assert_eq!(call(&app, operate, M::POST, "/api/v1/webhooks", Some(&webhook)).await.0, 403);
    assert_eq!(call(&app, operate, M::DELETE, "/api/v1/users/someone", None).await.0, 403);
    // admin (named): everything.
    let platform = &secrets["admin"];
    assert_eq!(call(&app, platform, M::GET, "/api/v1/audit", None).await.0, 200);
    // A named token also opens the dashboard (operate acts there, read only looks).
    let page = app.http.get(format!("{}/policies", app.address)).bearer_auth(read).send().await.unwrap();
    assert_eq!(page.status(), 200);

    // Rotation: the old secret stops working at once, the new one works.
    let (s, v) = call(&app, platform, M::POST, &format!("/api/v1/tokens/{}/rotate", ids["operate"]), None).await;
    assert_eq!(s, 200, "{v}");
    let rotated = v["secret"].as_str().unwrap().to_string();
    assert_ne!(&rotated, operate);
    assert_eq!(call(&app, operate, M::GET, "/api/v1/policies", None).await.0, 401);
    assert_eq!(call(&app, &rotated, M::GET, "/api/v1/policies", None).await.0, 200);
    // Revocation: at once.
    assert_eq!(call(&app, &admin, M::DELETE, &format!("/api/v1/tokens/{}", ids["read"]), None).await.0, 204);
    assert_eq!(call(&app, read, M::GET, "/api/v1/policies", None).await.0, 401);
    assert_eq!(call(&app, &admin, M::DELETE, &format!("/api/v1/tokens/{}", ids["read"]), None).await.0, 404);
    assert_eq!(call(&app, &admin, M::DELETE, "/api/v1/tokens/not-a-uuid", None).await.0, 400);

    // A dashboard action through a token is audited too.
    let r = app
        .http
        .post(format!("{}/install/token", app.address))
        .bearer_auth(&rotated)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("deployments=ml%2Fllama")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Changes through the REST API are audited with the object before and after.
    let pid = created["id"].as_str().unwrap().to_string();
    let mut changed = policy("p-operate");
    changed["max_replicas"] = json!(6);
    assert_eq!(call(&app, &rotated, M::PUT, &format!("/api/v1/policies/{pid}"), Some(&changed)).await.0, 200);
    assert_eq!(call(&app, &admin, M::DELETE, &format!("/api/v1/policies/{pid}"), None).await.0, 204);

    // The audit log: who, what, when, before/after; never a secret.
    let (s, v) = call(&app, &admin, M::GET, "/api/v1/audit?limit=50", None).await;
    assert_eq!(s, 200);
    let entries = v["entries"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["object_kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("api-token", "create", "api_token"),
        ("token:platform", "rotate", "api_token"),
        ("api-token", "revoke", "api_token"),
        ("token:ci-deployer", "create", "enrollment_token"),
        ("token:ci-deployer", "create", "policy"),
        ("token:ci-deployer", "update", "policy"),
        ("api-token", "delete", "policy"),
    ] {
        assert!(seen.iter().any(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()) == want), "{want:?} not in {seen:?}");
    }
    let rotate = entries.iter().find(|e| e["action"] == "rotate").unwrap();
    assert!(rotate["before"]["rotated_at"].is_null() && rotate["after"]["rotated_at"].is_string(), "{rotate}");
    let revoke = entries.iter().find(|e| e["action"] == "revoke").unwrap();
    assert!(revoke["before"]["revoked_at"].is_null() && revoke["after"]["revoked_at"].is_string(), "{revoke}");
    let update = entries.iter().find(|e| e["action"] == "update" && e["object_kind"] == "policy").unwrap();
    assert_eq!(
        (update["before"]["max_replicas"].as_i64(), update["after"]["max_replicas"].as_i64()),
        (Some(4), Some(6))
    );
    let delete = entries.iter().find(|e| e["action"] == "delete" && e["object_kind"] == "policy").unwrap();
    assert!(delete["before"]["name"] == "p-operate" && delete["after"].is_null(), "{delete}");
    let text = v.to_string();
    assert!(!text.contains(&rotated) && secrets.values().all(|sec| !text.contains(sec.as_str())));
    // Paging and filters are bounded.
    assert_eq!(call(&app, &admin, M::GET, "/api/v1/audit?limit=501", None).await.1["field"], "limit");
    let (_, v) = call(&app, &admin, M::GET, "/api/v1/audit?kind=enrollment_token", None).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    // The dashboard page lists them.
    let page = app.http.get(format!("{}/audit", app.address)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("token:platform") && html.contains("enrollment_token"), "{html}");
    app.stop().await;
}
