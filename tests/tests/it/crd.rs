//! `ScalingPolicy` resources (`fleetpilot.dev/v1`) against the fake API server: list and watch, a
//! resourceVersion gap (`410 Gone`), a bad spec, read-only policies in the API, status written back.

use std::time::Duration;

use fleetpilot::db::policies::{StoredPolicy, by_owner};
use serde_json::{Value, json};

use crate::fakes::FakeCluster;
use crate::helpers::{eventually, spawn_app};

fn spec(name: &str, max: u32) -> Value {
    json!({"name": name, "target": {"kind": "deployment", "namespace": "ml", "name": "llama"},
           "min_replicas": 1, "max_replicas": max})
}

fn accepted(cluster: &FakeCluster, ns: &str, name: &str) -> Option<(String, String, String)> {
    let o = cluster.scaling_policy(ns, name)?;
    let c = o.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Accepted")?.clone();
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_policy_resources_become_read_only_policies_with_status_through_watch_gaps() {
    let cluster = FakeCluster::start().unwrap();
    cluster.add_deployment("ml", "llama", 2, &[("app", "llama")]);
    cluster.apply_scaling_policy("ml", "llama", spec("llama", 8));
    cluster.apply_scaling_policy(
        "ml",
        "spare",
        json!({"name": "spare", "target": {"kind": "deployment", "namespace": "ml", "name": "spare"},
        "min_replicas": 1, "max_replicas": 2, "mode": "shadow"}),
    );
    // min above max: the API refuses it, so does the controller.
    cluster.apply_scaling_policy(
        "ml",
        "broken",
        json!({"name": "broken", "target": {"kind": "deployment", "namespace": "ml", "name": "x"},
        "min_replicas": 5, "max_replicas": 2}),
    );
    let app = spawn_app(|s| s.kube.api_url = Some(cluster.url.clone())).await;
    // A policy made through the REST API, which the controller must never touch.
    let rest = app.api_post("/api/v1/policies", &spec("rest-made", 4)).await;
    assert_eq!(rest.status(), 201);

    let owned = |owner: &'static str| {
        let pool = app.pool.clone();
        async move { by_owner(&pool, owner).await.unwrap() }
    };
    let llama: StoredPolicy =
        eventually(Duration::from_secs(20), "the resource's policy", || owned("ScalingPolicy ml/llama")).await;
    assert_eq!((llama.spec.max_replicas, llama.version), (8, 1));
    assert_eq!(llama.owner.as_deref(), Some("ScalingPolicy ml/llama"));
    eventually(Duration::from_secs(20), "the shadow resource's policy", || owned("ScalingPolicy ml/spare")).await;

    // Status: accepted, with the stored policy's id and then its latest decision.
    let status = eventually(Duration::from_secs(30), "status with the latest decision", || async {
        let o = cluster.scaling_policy("ml", "llama")?;
        let s = o.get("status")?.clone();
        (s["desiredReplicas"].is_u64() && s["lastDecision"].is_string()).then_some(s)
    })
    .await;
    assert_eq!(status["policyId"], llama.id.to_string());
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["currentReplicas"], 2, "{status}");
    assert_eq!(accepted(&cluster, "ml", "llama").unwrap().0, "True");

    // The bad spec: a False condition naming the field, nothing stored.
    let (ok, reason, message) = eventually(Duration::from_secs(20), "the bad spec's condition", || async {
        accepted(&cluster, "ml", "broken")
    })
    .await;
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.starts_with("spec.min_replicas: "), "{message}");
    assert!(owned("ScalingPolicy ml/broken").await.is_none());
    let count = |sql: &'static str| app.count(sql);
    assert_eq!(count("SELECT count(*) FROM policies WHERE name = 'broken'").await, 0);

    // Read-only in the API: 409 naming `owner`; the REST-made one stays editable.
    let path = format!("/api/v1/policies/{}", llama.id);
    let (status, e) = app.api_call(reqwest::Method::PUT, &path, Some(&spec("llama", 3))).await;
    assert_eq!((status, e["field"].as_str()), (409, Some("owner")), "{e}");
    assert_eq!(app.api_call(reqwest::Method::DELETE, &path, None).await.0, 409);
    let got = app.api_json(&path).await;
    assert_eq!(got["owner"], "ScalingPolicy ml/llama");

    // kubectl apply of a new spec: a new version. Fixing the broken one stores it.
    cluster.apply_scaling_policy("ml", "llama", spec("llama", 12));
    cluster.apply_scaling_policy(
        "ml",
        "broken",
        json!({"name": "broken", "target": {"kind": "deployment", "namespace": "ml", "name": "x"},
        "min_replicas": 1, "max_replicas": 2}),
    );
    eventually(Duration::from_secs(20), "version 2", || async {
        owned("ScalingPolicy ml/llama").await.filter(|p| p.version == 2 && p.spec.max_replicas == 12)
    })
    .await;
    eventually(Duration::from_secs(20), "the fixed spec stored", || owned("ScalingPolicy ml/broken")).await;
    eventually(Duration::from_secs(20), "generation 2 observed", || async {
        let o = cluster.scaling_policy("ml", "llama")?;
        (o.pointer("/status/observedGeneration") == Some(&json!(2))).then_some(())
    })
    .await;

    // A resourceVersion gap: the API server compacts, and `spare` is deleted while no watch can tell. The
    // controller's next watch gets 410 Gone, it lists again, and the policy of the vanished resource goes.
    let lists_before = list_requests(&cluster);
    cluster.compact_scaling_policies(&[("ml", "spare")]);
    eventually(Duration::from_secs(30), "the vanished resource's policy deleted", || async {
        owned("ScalingPolicy ml/spare").await.is_none().then_some(())
    })
    .await;
    assert!(cluster.scaling_policy_watches_gone() >= 1, "the watch from the old resourceVersion got 410");
    assert!(list_requests(&cluster) > lists_before, "a fresh list after the 410");
    // A delete seen live removes its policy too.
    cluster.delete_scaling_policy("ml", "broken");
    eventually(Duration::from_secs(20), "the deleted resource's policy deleted", || async {
        owned("ScalingPolicy ml/broken").await.is_none().then_some(())
    })
    .await;
    // Through all of it: the REST-made policy is as it was; the resource-made one still there.
    assert_eq!(
        count("SELECT count(*) FROM policies WHERE name = 'rest-made' AND deleted_at IS NULL AND version = 1").await,
        1
    );
    assert!(owned("ScalingPolicy ml/llama").await.is_some());
    app.stop().await;
    cluster.stop().await;
}

/// Non-watch GETs of the ScalingPolicy collection (lists).
fn list_requests(cluster: &FakeCluster) -> usize {
    cluster
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/apis/fleetpilot.dev/v1/scalingpolicies" && !r.is_watch())
        .count()
}
