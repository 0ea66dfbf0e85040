//! The Kubernetes actuator against the fake API server: drain-safe scale-downs (pods ranked by load before
//! the scale PATCH, only the Deployment's own pods) and replica reads from the Deployment watch instead of
//! a `GET .../scale` per policy per tick.

use std::time::Duration;

use fleetpilot::actuators::Actuators;
use fleetpilot::actuators::kube::{COST_IDLE, COST_UNKNOWN, KubeScaler, POD_DELETION_COST};
use fleetpilot::config::KubeSettings;
use fleetpilot::domain::policy::PolicySpec;
use fleetpilot::telemetry::Metrics;
use sqlx::PgPool;

use crate::fakes::{FakeCluster, KubeRequest};
use crate::helpers::{eventually, fresh_database};

fn policy(ns: &str, name: &str) -> PolicySpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "target": {"kind": "deployment", "namespace": ns, "name": name},
        "min_replicas": 1, "max_replicas": 16, "metric": "gpu_utilization", "target_value": 60
    }))
    .unwrap()
}

async fn scaler(cluster: &FakeCluster, metrics: &Metrics) -> KubeScaler {
    let settings = KubeSettings { api_url: Some(cluster.url.clone()), ..KubeSettings::default() };
    KubeScaler::from_settings(&settings, metrics.clone()).await.unwrap().unwrap()
}

async fn pool() -> PgPool {
    let url = fresh_database().await;
    let pool = fleetpilot::db::connect(&url, 2).await.unwrap();
    fleetpilot::db::migrate(&pool).await.unwrap();
    pool
}

/// A replica's latest serving sample, `age_secs` old.
async fn load(pool: &PgPool, deployment: &str, replica: &str, node: &str, running: f32, queued: f32, age_secs: f64) {
    sqlx::query(
        "INSERT INTO serving_latest (deployment, replica, node_id, ts, engine, queue_depth, running, \
         requests_per_s, generation_tokens_per_s) \
         VALUES ($1, $2, $3, now() - make_interval(secs => $4), 'vllm', $5, $6, 1, 100)",
    )
    .bind(deployment)
    .bind(replica)
    .bind(node)
    .bind(age_secs)
    .bind(queued)
    .bind(running)
    .execute(pool)
    .await
    .unwrap();
}

/// `ml/llama` with 4 pods, and `ml/mistral` (2 pods) beside it in the same namespace.
fn two_deployments(cluster: &FakeCluster) {
    cluster.add_deployment("ml", "llama", 4, &[("app", "llama")]);
    cluster.add_pod("ml", "llama-a", "llama", &[("app", "llama")], "10.0.0.1", "node-1");
    cluster.add_pod("ml", "llama-b", "llama", &[("app", "llama")], "10.0.0.2", "node-2");
    cluster.add_pod("ml", "llama-c", "llama", &[("app", "llama")], "10.0.0.3", "node-3");
    cluster.add_pod("ml", "llama-d", "llama", &[("app", "llama")], "10.0.0.4", "node-4");
    cluster.add_deployment("ml", "mistral", 2, &[("app", "mistral")]);
    cluster.add_pod("ml", "mistral-a", "mistral", &[("app", "mistral")], "10.0.1.1", "node-1");
    cluster.add_pod("ml", "mistral-b", "mistral", &[("app", "mistral")], "10.0.1.2", "node-2");
}

fn pod_patches(requests: &[KubeRequest]) -> Vec<&KubeRequest> {
    requests.iter().filter(|r| r.method == "PATCH" && r.path.contains("/pods/")).collect()
}

fn cost(cluster: &FakeCluster, pod: &str) -> Option<i64> {
    cluster.pod_annotation("ml", pod, POD_DELETION_COST).map(|c| c.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_ranks_the_deployments_own_pods_by_load_before_the_scale_patch() {
    let cluster = FakeCluster::start().unwrap();
    two_deployments(&cluster);
    let pool = pool().await;
    // llama-a by pod name, busy; llama-b by pod IP (the agent's `<node>/<ip>:<port>`), idle; llama-c busy
    // through its node's 127.0.0.1 engine; llama-d has only a stale sample (unknown).
    load(&pool, "ml/llama", "llama-a", "node-1", 6.0, 2.0, 1.0).await;
    load(&pool, "ml/llama", "node-2/10.0.0.2:8000", "node-2", 0.0, 0.0, 1.0).await;
    load(&pool, "ml/llama", "node-3/127.0.0.1:8000", "node-3", 1.0, 0.0, 1.0).await;
    load(&pool, "ml/llama", "llama-d", "node-4", 0.0, 0.0, 3600.0).await;
    // mistral's idle replica must not make any mistral pod a candidate.
    load(&pool, "ml/mistral", "mistral-a", "node-1", 0.0, 0.0, 1.0).await;
    let metrics = Metrics::new();
    let act = Actuators::new(Some(scaler(&cluster, &metrics).await), pool.clone());
    let spec = policy("ml", "llama");

    let report = act.scale_reported(&spec, 2, 1, None).await.unwrap();
    assert_eq!(cluster.replicas("ml", "llama"), Some(2));
    let drain = report.drain.expect("a scale-down drains");
    assert_eq!((drain.pods, drain.patched, drain.with_load, drain.error.as_deref()), (4, 4, 3, None));

    let requests = cluster.requests();
    let scale_at = requests
        .iter()
        .position(|r| r.method == "PATCH" && r.path == "/apis/apps/v1/namespaces/ml/deployments/llama/scale")
        .expect("the scale PATCH");
    let patches: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "PATCH" && r.path.contains("/pods/"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(patches.len(), 4, "{requests:#?}");
    assert!(patches.iter().all(|i| *i < scale_at), "annotations precede the scale: {requests:#?}");
    for p in pod_patches(&requests) {
        assert!(p.path.starts_with("/api/v1/namespaces/ml/pods/llama-"), "only llama's pods: {}", p.path);
        assert!(p.content_type.starts_with("application/merge-patch+json"), "{}", p.content_type);
        assert!(p.body["metadata"]["annotations"][POD_DELETION_COST].is_string(), "{}", p.body);
    }
    // The pods were listed with the Deployment's selector, in its namespace only.
    let list = requests.iter().find(|r| r.method == "GET" && r.path == "/api/v1/namespaces/ml/pods").unwrap();
    assert!(list.query.contains("labelSelector=app%3Dllama"), "{}", list.query);

    let (a, b, c, d) =
        (cost(&cluster, "llama-a"), cost(&cluster, "llama-b"), cost(&cluster, "llama-c"), cost(&cluster, "llama-d"));
    assert_eq!(b, Some(i64::from(COST_IDLE)), "the idle pod is deleted first");
    assert_eq!(d, Some(i64::from(COST_UNKNOWN)), "no fresh sample: next");
    assert!(c.unwrap() > d.unwrap() && a.unwrap() > c.unwrap(), "busier costs more: a={a:?} c={c:?}");
    assert_eq!(cost(&cluster, "mistral-a"), None);
    assert_eq!(cost(&cluster, "mistral-b"), None);
    assert!(metrics.render().contains("fleetpilot_kube_drain_annotations_total{outcome=\"patched\"} 4"));

    // The same loads again: nothing to re-annotate, the scale still goes out.
    cluster.clear_requests();
    let report = act.scale_reported(&spec, 1, 2, None).await.unwrap();
    assert_eq!(report.drain.map(|d| (d.patched, d.unchanged)), Some((0, 4)));
    assert!(pod_patches(&cluster.requests()).is_empty());
    assert_eq!(cluster.replicas("ml", "llama"), Some(1));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_touches_no_pod() {
    let cluster = FakeCluster::start().unwrap();
    two_deployments(&cluster);
    let pool = pool().await;
    let act = Actuators::new(Some(scaler(&cluster, &Metrics::new()).await), pool);
    let report = act.scale_reported(&policy("ml", "llama"), 6, 1, None).await.unwrap();
    assert_eq!(report.drain, None);
    assert_eq!(cluster.replicas("ml", "llama"), Some(6));
    let requests = cluster.requests();
    assert!(pod_patches(&requests).is_empty(), "{requests:#?}");
    assert!(!requests.iter().any(|r| r.path.contains("/pods")), "pods not even listed: {requests:#?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_annotation_does_not_block_the_scale_down() {
    let cluster = FakeCluster::start().unwrap();
    two_deployments(&cluster);
    let pool = pool().await;
    let metrics = Metrics::new();
    let act = Actuators::new(Some(scaler(&cluster, &metrics).await), pool);
    // No RBAC to patch pods: every annotation is refused; the scale goes out all the same.
    cluster.forbid_pod_patches(true);
    let report = act.scale_reported(&policy("ml", "llama"), 3, 1, None).await.unwrap();
    let drain = report.drain.expect("a scale-down drains");
    assert_eq!((drain.pods, drain.patched), (4, 0));
    assert!(drain.error.as_deref().is_some_and(|e| e.starts_with("4 of 4 pod annotations failed")), "{drain:?}");
    assert_eq!(cluster.replicas("ml", "llama"), Some(3), "the scale went out anyway");
    assert!(metrics.render().contains("fleetpilot_kube_drain_annotations_total{outcome=\"failed\"} 4"));

    // Replica loads that cannot be read: nothing is annotated (every pod would cost the same), the error is
    // reported, the scale goes out.
    cluster.forbid_pod_patches(false);
    let closed = fleetpilot::db::connect(&fresh_database().await, 1).await.unwrap();
    closed.close().await;
    let act = Actuators::new(Some(scaler(&cluster, &metrics).await), closed);
    let report = act.scale_reported(&policy("ml", "mistral"), 1, 2, None).await.unwrap();
    let drain = report.drain.expect("a scale-down drains");
    assert!(drain.error.as_deref().is_some_and(|e| e.contains("replica loads")), "{drain:?}");
    assert_eq!(cluster.replicas("ml", "mistral"), Some(1));
    assert_eq!(cost(&cluster, "mistral-a"), None);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_come_from_the_watch_not_a_get_per_policy_per_tick() {
    const POLICIES: usize = 20;
    const TICKS: usize = 50;
    let cluster = FakeCluster::start().unwrap();
    for i in 0..POLICIES {
        cluster.add_deployment("ml", &format!("model-{i}"), 3, &[("app", &format!("model-{i}"))]);
    }
    let metrics = Metrics::new();
    let kube = scaler(&cluster, &metrics).await;
    let specs: Vec<PolicySpec> = (0..POLICIES).map(|i| policy("ml", &format!("model-{i}"))).collect();
    for tick in 0..TICKS {
        for s in &specs {
            assert_eq!(kube.current(s).await.unwrap(), 3, "tick {tick}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let requests = cluster.requests();
    let scale_gets = requests.iter().filter(|r| r.method == "GET" && r.path.ends_with("/scale")).count();
    let watches = requests.iter().filter(|r| r.is_watch()).count();
    let lists =
        requests.iter().filter(|r| r.method == "GET" && r.path.ends_with("/deployments") && !r.is_watch()).count();
    assert!(scale_gets <= POLICIES, "{scale_gets} GET /scale for {TICKS} ticks x {POLICIES} policies");
    assert_eq!((lists, watches), (1, 1), "one list and one watch for the namespace: {requests:#?}");
    assert_eq!(metrics.kube_requests_total(), requests.len() as u64, "every request is counted");
    assert!(metrics.render().contains("fleetpilot_kube_requests_total{verb=\"watch\"} 1"));

    // A change by someone else arrives through the watch; our own scale is read back at once.
    cluster.set_replicas("ml", "model-0", 7);
    eventually(Duration::from_secs(5), "the watch event", || {
        let (kube, spec) = (&kube, &specs[0]);
        async move { (kube.current(spec).await.unwrap() == 7).then_some(()) }
    })
    .await;
    kube.scale(&specs[1], 5).await.unwrap();
    assert_eq!(kube.current(&specs[1]).await.unwrap(), 5);
    let after = cluster.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with("/scale")).count();
    assert_eq!(after, scale_gets, "no GET /scale once the watch is in sync");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watch_replicas_are_read_with_a_get_as_before() {
    // An API server that refuses list/watch (no RBAC for it): every read is a GET of the scale.
    let (fake, _) = crate::fakes::kube_api("ml", "llama", 4).await;
    let metrics = Metrics::new();
    let settings = KubeSettings { api_url: Some(fake.url.clone()), ..KubeSettings::default() };
    let kube = KubeScaler::from_settings(&settings, metrics).await.unwrap().unwrap();
    let spec = policy("ml", "llama");
    for _ in 0..3 {
        assert_eq!(kube.current(&spec).await.unwrap(), 4);
    }
    let gets = fake.recorded().iter().filter(|r| r.method == "GET" && r.path.ends_with("/scale")).count();
    assert_eq!(gets, 3);
    fake.stop().await;
}

/// Issue #15: a leader that lost its lock without noticing (its connection was cut, here by
/// `pg_terminate_backend`; in life a partition or a long pause) must not act after its successor. Its PATCH and
/// its agent commands carry its term's fencing token and are refused; the successor's go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leaders_patch_and_commands_are_refused() {
    use fleetpilot::actuators::ActuateError;
    use fleetpilot::control::leadership::Leadership;

    let cluster = FakeCluster::start().unwrap();
    two_deployments(&cluster);
    let pool = pool().await;
    let metrics = Metrics::new();
    let act = Actuators::new(Some(scaler(&cluster, &metrics).await), pool.clone());
    let spec = policy("ml", "llama");

    let a = Leadership::new(pool.clone());
    let _a_conn = a.take("replica-a").await.expect("a leads");
    let fence_a = a.fence().expect("a has a term");
    assert!(a.confirm().await);
    act.scale_reported(&spec, 3, 1, Some(fence_a)).await.expect("the leader acts");
    assert_eq!(cluster.replicas("ml", "llama"), Some(3));

    // A's lock-holding backend goes away; A still believes it leads.
    sqlx::query("SELECT pg_terminate_backend($1)").bind(fence_a.holder_pid).execute(&pool).await.unwrap();
    eventually(Duration::from_secs(10), "the terminated backend's lock to go", || async {
        (!fleetpilot::db::control::fence_holds(&pool, fence_a).await.unwrap()).then_some(())
    })
    .await;
    assert!(a.is_leading(), "the stale leader has not noticed");
    assert!(!a.confirm().await, "but its term no longer holds");
    // Refused even before anyone else leads: the lock is gone.
    let patches = |c: &FakeCluster| c.requests().iter().filter(|r| r.method == "PATCH").count();
    let before = patches(&cluster);
    let err = act.scale_reported(&spec, 8, 2, Some(fence_a)).await.expect_err("no lock, no PATCH");
    assert!(matches!(err, ActuateError::Fenced(e) if e == fence_a.epoch), "{err:?}");

    // B takes over with a newer term and acts.
    let b = Leadership::new(pool.clone());
    let _b_conn = b.take("replica-b").await.expect("b leads once a's lock is gone");
    let fence_b = b.fence().unwrap();
    assert_eq!(fence_b.epoch, fence_a.epoch + 1);
    assert_eq!(
        fleetpilot::db::control::current_epoch(&pool).await.unwrap(),
        Some((fence_b.epoch, "replica-b".to_string()))
    );
    let err = act.scale_reported(&spec, 8, 3, Some(fence_a)).await.expect_err("the stale term is refused");
    assert!(matches!(err, ActuateError::Fenced(_)), "{err:?}");
    let err = act
        .agents
        .rebatch(&["node-1".to_string()], "ml/llama", 32, 1000, None, Some(fence_a))
        .await
        .expect_err("the stale term queues no command");
    assert!(matches!(err, ActuateError::Fenced(_)), "{err:?}");
    assert_eq!(patches(&cluster), before, "nothing reached the API server from the stale leader");
    assert_eq!(cluster.replicas("ml", "llama"), Some(3));

    act.scale_reported(&spec, 5, 4, Some(fence_b)).await.expect("the new leader acts");
    assert_eq!(cluster.replicas("ml", "llama"), Some(5));
    act.agents.rebatch(&["node-1".to_string()], "ml/llama", 32, 1000, None, Some(fence_b)).await.unwrap();
    let epochs: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT leader_epoch FROM commands").fetch_all(&pool).await.unwrap();
    assert_eq!(epochs, vec![Some(fence_b.epoch)], "only the current term's command, stamped with its epoch");
}
