//! Attacks on a running server (issue #15): one test per attack, each against the real server and a real
//! PostgreSQL. Every test here failed on the server before the hardening and passes after it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_field_error, call, spawn_app, status_json};

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;

/// (what, how to break a valid batch, the field the 400 must name)
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

/// A valid batch for `node` with every sample at `ts_ms`.
fn batch_at(node: &str, seq: u64, ts_ms: i64) -> Value {
    json!({
        "version": 1, "agent_id": node, "seq": seq, "sent_at_ms": ts_ms,
        "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated"},
        "gpus": [
            {"ts_ms": ts_ms, "gpu_index": 0, "uuid": format!("GPU-{node}-0"), "model": "NVIDIA H100", "util_pct": 50.0,
             "mem_used_bytes": 1, "mem_total_bytes": 2, "power_w": 300.0, "temp_c": 60.0, "sm_clock_mhz": 1980}
        ]
    })
}

fn batch(node: &str, seq: u64) -> Value {
    batch_at(node, seq, chrono::Utc::now().timestamp_millis())
}

async fn post_batch(app: &TestApp, b: &Value) -> (u16, Value) {
    status_json(app.ingest_raw(serde_json::to_vec(b).unwrap()).await).await
}

/// The day stamps (`YYYYMMDD`) of every partition of the sample tables. The app's own packer may drop
/// an emptied hour partition at any moment, so the test looks at which days exist, not how many.
async fn partition_days(app: &TestApp) -> Vec<String> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE p.relname IN ('gpu_samples_hot', 'gpu_chunks', 'serving_hot', 'serving_chunks')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    names
        .iter()
        .map(|n| {
            let stamp = n.rsplit('_').next().unwrap_or_default();
            stamp.get(..8).unwrap_or(stamp).to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_index_bomb_is_refused_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let mut b = batch("node-1", 1);
    b["gpus"][0]["gpu_index"] = json!(2_000_000_000u32);
    let (status, e) = post_batch(&app, &b).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "gpus[0].gpu_index");
    let mut p = batch("node-1", 2);
    p["probes"] = json!([{"ts_ms": chrono::Utc::now().timestamp_millis(), "gpu_index": 70000, "bandwidth_gb_s": 1.0}]);
    let (status, e) = post_batch(&app, &p).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "probes[0].gpu_index");
    assert_eq!(app.count("SELECT count(*) FROM gpu_latest").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_bombs_are_refused_and_create_no_partitions() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000i64;
    for (what, ts) in [("two days ahead", now + 2 * day), ("twenty years old", now - 20 * 365 * day)] {
        let (status, e) = post_batch(&app, &batch_at("node-1", 1, ts)).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["field"], "gpus[0].ts_ms", "{what}");
    }
    let mut s = batch("node-1", 2);
    s["serving"] = json!([{"ts_ms": now + 3 * day, "deployment": "ml/llama", "replica": "r1", "engine": "vllm",
        "queue_depth": 1, "running": 1, "prompt_tokens_per_s": 1.0, "generation_tokens_per_s": 1.0}]);
    let (status, e) = post_batch(&app, &s).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "serving[0].ts_ms");
    // The server keeps partitions from yesterday through the day after tomorrow (and the retention window
    // behind); nothing a refused batch named may exist beyond that.
    let days = partition_days(&app).await;
    let first_day = chrono::DateTime::from_timestamp_millis(now).unwrap().date_naive();
    let ahead = 2 + (chrono::Utc::now().date_naive() - first_day).num_days();
    for d in &days {
        let day = chrono::NaiveDate::parse_from_str(d, "%Y%m%d").unwrap_or_else(|e| panic!("partition day {d}: {e}"));
        assert!(
            (first_day - day).num_days() <= 30 && (day - first_day).num_days() <= ahead,
            "no partition may be created outside the accepted window: {d} in {days:?}"
        );
    }
    // A small clock skew is fine.
    let (status, e) = post_batch(&app, &batch_at("node-1", 3, now + 60_000)).await;
    assert_eq!(status, 200, "{e}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_and_oversized_fields_are_refused_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let cases: Vec<Case> = vec![
        ("NUL in model", Box::new(|b| b["gpus"][0]["model"] = json!("H100\u{0}")), "gpus[0].model"),
        ("oversized model", Box::new(|b| b["gpus"][0]["model"] = json!("H".repeat(10_000))), "gpus[0].model"),
        ("NUL in agent version", Box::new(|b| b["node"]["agent_version"] = json!("1.0\u{0}")), "node.agent_version"),
        ("oversized gpu source", Box::new(|b| b["node"]["gpu_source"] = json!("x".repeat(1000))), "node.gpu_source"),
        ("NUL in group", Box::new(|b| b["node"]["group"] = json!("g\u{0}")), "node.group"),
        (
            "NUL in a command result",
            Box::new(|b| b["command_results"] = json!([{"id": "c1", "ok": true, "message": "done\u{0}"}])),
            "command_results[0].message",
        ),
        (
            "NUL in a probe error",
            Box::new(|b| {
                b["probes"] = json!([{"ts_ms": chrono::Utc::now().timestamp_millis(), "gpu_index": 0,
                    "bandwidth_gb_s": null, "error": "x\u{0}"}])
            }),
            "probes[0].error",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut b = batch("node-1", 1);
        mutate(&mut b);
        let (status, e) = post_batch(&app, &b).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["field"], field, "{what}: {e}");
    }
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches").await, 0);
    // The unauthenticated enrollment route takes a small body only.
    let big = json!({"enrollment_token": "x".repeat(1 << 20), "node_id": "n"});
    let r = app.http.post(format!("{}/api/v1/enroll", app.address)).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await;
}

/// Holds the ingest writer inside a group (an exclusive lock on `ingest_batches`) while `queue` submits
/// batches, so those batches are written as one group once the lock is released; returns their answers.
async fn in_one_group(app: &TestApp, batches: Vec<Value>) -> Vec<(u16, Value)> {
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    // The first batch occupies the only writer (blocked on the lock); the rest queue up behind it.
    let blocker = {
        let (http, url, token) = (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
        let body = serde_json::to_vec(&batch("blocker", 1)).unwrap();
        tokio::spawn(async move { http.post(url).bearer_auth(token).body(body).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent: Vec<_> = batches
        .into_iter()
        .map(|b| {
            let (http, url, token) =
                (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
            tokio::spawn(
                async move { status_json(http.post(url).bearer_auth(token).json(&b).send().await.unwrap()).await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    lock.commit().await.unwrap();
    assert_eq!(blocker.await.unwrap(), 200);
    let mut out = Vec::new();
    for s in sent {
        out.push(s.await.unwrap());
    }
    out
}

/// An app with one ingest writer, so that batches queued behind a blocked one are written as one group.
async fn one_writer_app() -> TestApp {
    spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.writers = 1;
    })
    .await
}

/// Sends `bad` at position `at` among four good batches, all in one write group: every good batch is
/// answered 200 and stored; returns the bad batch's answer.
async fn bad_among_good(app: &TestApp, bad: Value, at: usize) -> (u16, Value) {
    let mut batches: Vec<Value> = (1..=4).map(|i| batch(&format!("good-{i}"), 1)).collect();
    batches.insert(at, bad);
    let mut answers = in_one_group(app, batches).await;
    let bad_answer = answers.remove(at);
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "good batch {i}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM gpu_samples WHERE node_id LIKE 'good-%'").await, 4);
    bad_answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_batch_does_not_fail_the_good_batches_of_its_group() {
    let app = one_writer_app().await;
    let mut bad = batch("evil", 1);
    bad["gpus"][0]["model"] = json!("H100\u{0}");
    let (status, body) = bad_among_good(&app, bad, 2).await;
    assert_eq!(status, 400, "the bad batch: {body}");
    assert_eq!(body["field"], "gpus[0].model");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_refuses_is_isolated_from_its_group_and_answered_400() {
    let app = one_writer_app().await;
    // A refusal validation cannot foresee (standing in for any value the database rejects).
    sqlx::query("ALTER TABLE gpu_samples_hot ADD CONSTRAINT adversarial_no_123_watts CHECK (power_w <> 123)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut bad = batch("odd", 1);
    bad["gpus"][0]["power_w"] = json!(123.0);
    let (status, body) = bad_among_good(&app, bad, 4).await;
    assert_eq!(status, 400, "batch 4: {body}");
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches WHERE node_id = 'odd'").await, 0);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"fleetpilot_ingest_batches_total{outcome="isolated"}"#), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_its_partition_was_dropped_is_refused_cleanly() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.ingest.retention_days = 1;
    })
    .await;
    let old = chrono::Utc::now().timestamp_millis() - 50 * 3_600_000;
    // Whether or not the first copy is taken, once its partition is dropped the replay must not fail a group.
    let _ = post_batch(&app, &batch_at("node-1", 1, old)).await;
    fleetpilot::db::drop_expired_partitions(&app.pool, 1).await.unwrap();
    let (status, e) = post_batch(&app, &batch_at("node-1", 2, old)).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "gpus[0].ts_ms");
    let (status, e) = post_batch(&app, &batch("node-1", 3)).await;
    assert_eq!(status, 200, "{e}");
    app.stop().await;
}

async fn new_enrollment_token(app: &TestApp, deployments: &[&str]) -> String {
    let r = app
        .api_post("/api/v1/enrollment-tokens", &json!({"ttl_secs": 600, "max_uses": 10, "deployments": deployments}))
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn enroll(app: &TestApp, token: &str, node: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/api/v1/enroll", app.address))
        .json(&json!({"enrollment_token": token, "node_id": node, "hostname": node}))
        .send()
        .await
        .unwrap()
}

async fn credential_of(app: &TestApp, token: &str, node: &str) -> String {
    let r = enroll(app, token, node).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn ingest_with(app: &TestApp, credential: &str, b: &Value) -> (u16, Value) {
    call(app, credential, POST, "/api/v1/ingest", Some(b)).await
}

fn serving(b: &mut Value, deployment: &str) {
    b["serving"] = json!([{"ts_ms": chrono::Utc::now().timestamp_millis(), "deployment": deployment, "replica": "r1",
        "engine": "vllm", "queue_depth": 1000, "running": 1, "prompt_tokens_per_s": 1.0, "generation_tokens_per_s": 1.0}]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_cannot_take_over_an_enrolled_node() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let token = new_enrollment_token(&app, &[]).await;
    let original = credential_of(&app, &token, "node-a").await;
    // The attacker holds an enrollment token (from an install command) and names an existing node.
    assert_field_error(enroll(&app, &token, "node-a").await, 409, "node_id").await;
    assert_eq!(ingest_with(&app, &original, &batch("node-a", 1)).await.0, 200, "the node keeps its credential");
    // An operator's explicit grant allows one re-enrollment, which replaces the credential.
    let g = app.api_post("/api/v1/enrollments/node-a/re-enroll", &json!({})).await;
    assert_eq!(g.status(), 201);
    let renewed = credential_of(&app, &token, "node-a").await;
    assert_eq!(ingest_with(&app, &original, &batch("node-a", 2)).await.0, 401, "the old credential is dead");
    assert_eq!(ingest_with(&app, &renewed, &batch("node-a", 3)).await.0, 200);
    assert_eq!(enroll(&app, &token, "node-a").await.status(), 409, "the grant is spent");
    let events = app.api_json("/api/v1/enrollment-events").await;
    let kinds: Vec<&str> = events.as_array().unwrap().iter().rev().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["enrolled", "refused-existing-node", "re-enroll-granted", "re-enrolled", "refused-existing-node"],
        "{events}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_writes_only_its_node_and_its_deployments() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let token = new_enrollment_token(&app, &["ml/llama"]).await;
    let cred = credential_of(&app, &token, "node-a").await;
    let _victim = credential_of(&app, &token, "node-b").await;
    // Cross-node: GPU rows of another node.
    let (status, e) = ingest_with(&app, &cred, &batch("node-b", 1)).await;
    assert_eq!((status, e["field"].as_str()), (403, Some("agent_id")), "{e}");
    // Cross-deployment: serving rows (queue depth 1000) for a deployment not assigned to this node.
    let mut b = batch("node-a", 2);
    serving(&mut b, "prod/checkout");
    let (status, e) = ingest_with(&app, &cred, &b).await;
    assert_eq!((status, e["field"].as_str()), (403, Some("serving[0].deployment")), "{e}");
    let mut b = batch("node-a", 3);
    b["node"]["deployment"] = json!("prod/checkout");
    let (status, e) = ingest_with(&app, &cred, &b).await;
    assert_eq!((status, e["field"].as_str()), (403, Some("node.deployment")), "{e}");
    assert_eq!(app.count("SELECT count(*) FROM serving_latest WHERE deployment = 'prod/checkout'").await, 0);
    // Its own deployment is fine; the operator can assign more.
    let mut b = batch("node-a", 4);
    serving(&mut b, "ml/llama");
    assert_eq!(ingest_with(&app, &cred, &b).await.0, 200);
    let assign = json!({"deployments": ["prod/*"]});
    assert_eq!(app.api_call(PUT, "/api/v1/enrollments/node-a/deployments", Some(&assign)).await.0, 200);
    let mut b = batch("node-a", 5);
    serving(&mut b, "prod/checkout");
    assert_eq!(ingest_with(&app, &cred, &b).await.0, 200);
    // Commands: only its own.
    assert_eq!(call(&app, &cred, GET, "/api/v1/commands?agent_id=node-b&wait_s=0", None).await.0, 403);
    let ack = json!({"agent_id": "node-b", "received": ["x"]});
    assert_eq!(call(&app, &cred, POST, "/api/v1/commands/ack", Some(&ack)).await.0, 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_agent_token_cannot_write_unless_trusted_by_configuration() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.agent_token_can_write = false;
    })
    .await;
    let (status, e) = post_batch(&app, &batch("node-a", 1)).await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(app.count("SELECT count(*) FROM ingest_batches").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_and_node_credentials_can_be_listed_and_revoked() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let token = new_enrollment_token(&app, &[]).await;
    let cred = credential_of(&app, &token, "node-a").await;
    let get = |path: &'static str| {
        let (http, url, t) = (app.http.clone(), format!("{}{path}", app.address), app.api_token.clone());
        async move { http.get(url).bearer_auth(t).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let tokens = get("/api/v1/enrollment-tokens").await;
    assert_eq!(tokens[0]["uses"], 1);
    assert!(tokens[0].get("token").is_none(), "the token itself is never listed: {tokens}");
    let id = tokens[0]["id"].as_str().unwrap().to_string();
    let del = |path: String| {
        let (http, url, t) = (app.http.clone(), format!("{}{path}", app.address), app.api_token.clone());
        async move { http.delete(url).bearer_auth(t).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(del(format!("/api/v1/enrollment-tokens/{id}")).await, 204);
    assert_eq!(enroll(&app, &token, "node-new").await.status(), 401, "a revoked token enrolls nothing");
    assert_eq!(ingest_with(&app, &cred, &batch("node-a", 1)).await.0, 200);
    assert_eq!(del("/api/v1/enrollments/node-a".into()).await, 204);
    assert_eq!(ingest_with(&app, &cred, &batch("node-a", 2)).await.0, 401, "a revoked credential writes nothing");
    let nodes = get("/api/v1/enrollments").await;
    assert!(nodes[0]["revoked_at"].is_string(), "{nodes}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_ingest_loses_and_duplicates_no_acknowledged_sample() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.shutdown_grace_secs = 10.0;
    })
    .await;
    // What `fleetpilot serve` installs; registered now, so the SIGTERM below is caught, not fatal.
    tokio::spawn(fleetpilot::startup::stop_on_signals(app.shutdown_handle()).unwrap());
    let base = chrono::Utc::now().timestamp_millis();
    let agents: Vec<_> = (0..4)
        .map(|a| {
            let (http, url, token) =
                (app.http.clone(), format!("{}/api/v1/ingest", app.address), app.agent_token.clone());
            tokio::spawn(async move {
                let node = format!("node-{a}");
                let mut acked = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                for seq in 1..100_000u64 {
                    if std::time::Instant::now() > deadline {
                        break;
                    }
                    // Distinct timestamps per batch, so a stored duplicate would show as an extra row.
                    let b = batch_at(&node, seq, base + seq as i64);
                    match http.post(&url).bearer_auth(&token).json(&b).send().await {
                        Ok(r) if r.status() == 200 => acked.push(seq),
                        Ok(_) => {}      // refused while draining: not acknowledged, the agent keeps it
                        Err(_) => break, // the server stopped accepting
                    }
                }
                (node, acked)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut acked = Vec::new();
    for a in agents {
        acked.push(a.await.unwrap());
    }
    // The app closes its own pool when it stops: check through a new one.
    let pool = sqlx::PgPool::connect_with((*app.pool.connect_options()).clone()).await.unwrap();
    app.stop().await;
    let total: usize = acked.iter().map(|(_, s)| s.len()).sum();
    assert!(total > 10, "ingest was running when the signal came ({total} acknowledged)");
    for (node, seqs) in &acked {
        let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM ingest_batches WHERE node_id = $1")
            .bind(node)
            .fetch_all(&pool)
            .await
            .unwrap();
        let lost: Vec<&u64> = seqs.iter().filter(|s| !stored.contains(&(**s as i64))).collect();
        assert!(lost.is_empty(), "{node}: acknowledged but lost: {lost:?}");
    }
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (node_id, gpu_index, ts)) FROM gpu_samples")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, distinct, "no sample stored twice");
    assert!(rows as usize >= total, "every acknowledged sample is stored ({rows} rows, {total} acknowledged)");
}

/// Posts the login form once (fresh CSRF cookie each time); returns the status and the Retry-After header.
async fn try_login(app: &TestApp, user: &str, password: &str) -> (u16, Option<String>) {
    let r = crate::helpers::post_login(&crate::helpers::no_redirects(), &app.address, user, password).await;
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_brute_force_is_locked_out_with_a_growing_backoff() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    crate::helpers::add_user(&app.pool, "ops", "the-right-password", fleetpilot::db::users::Role::Operator).await;
    for i in 0..5 {
        assert_eq!(try_login(&app, "ops", &format!("guess-{i}")).await.0, 401, "guess {i}");
    }
    // The sixth failure locks the name and the address; then even the right password waits.
    assert_eq!(try_login(&app, "ops", "guess-5").await.0, 401);
    let (status, retry) = try_login(&app, "ops", "the-right-password").await;
    assert_eq!(status, 429);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // Another name from the same address is locked too (a spray over user names).
    assert_eq!(try_login(&app, "someone", "x").await.0, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(try_login(&app, "ops", "the-right-password").await.0, 303, "the lockout ends");
    // Enrollment guesses are locked out the same way.
    for _ in 0..5 {
        let r = enroll(&app, "fpe_guess", "node-x").await;
        assert_eq!(r.status(), 401);
    }
    let _ = enroll(&app, "fpe_guess", "node-x").await;
    let r = enroll(&app, "fpe_guess", "node-x").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_or_a_disabled_user_ends_the_users_sessions() {
    use fleetpilot::db::users::Role;
    let app = spawn_app(|s| s.control.enabled = false).await;
    crate::helpers::add_user(&app.pool, "ops", "old-password-1", Role::Operator).await;
    let s = crate::helpers::WebSession::login(&app.address, "ops", "old-password-1").await;
    assert_eq!(s.get("/policies").await.status(), 200);
    // Reset, as `fleetpilot user add` does.
    crate::helpers::add_user(&app.pool, "ops", "new-password-2", Role::Operator).await;
    assert_eq!(s.get("/policies").await.status(), 303, "the old session is gone after a password reset");
    let s = crate::helpers::WebSession::login(&app.address, "ops", "new-password-2").await;
    let r = app.api_post("/api/v1/users/ops/disable", &json!({})).await;
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/policies").await.status(), 303, "a disabled user's session is gone");
    assert_eq!(try_login(&app, "ops", "new-password-2").await.0, 401, "a disabled user cannot log in");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_on_internal_addresses_are_refused() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.alerts.webhook_allow_private = false;
    })
    .await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://127.0.0.1:8080/api/v1/policies",
        "http://localhost:5432/",
        "http://[::1]/",
        "http://10.0.0.7/",
        "http://192.168.1.1/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let body = json!({"name": "hook", "url": url, "secret": "api-secret-abcdefghijkl"});
        let r = app.api_post("/api/v1/webhooks", &body).await;
        let status = r.status().as_u16();
        let e: Value = r.json().await.unwrap();
        assert_eq!((status, e["field"].as_str()), (400, Some("url")), "{url}: {e}");
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_receivers").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_do_not_follow_redirects() {
    let pd = crate::fakes::receiver().await;
    let inner = crate::fakes::receiver().await;
    // A target that answers every delivery with a redirect to an internal service.
    let to = format!("{}/stolen", inner.url);
    let (redirector, handle) = crate::fakes::serve_any(1, move |_, _| {
        let to = to.clone();
        async move { actix_web::HttpResponse::TemporaryRedirect().insert_header(("Location", to)).finish() }
    })
    .unwrap();
    let app = spawn_app(|s| {
        crate::alerting::alerting(s, &pd);
        s.webhooks.push(fleetpilot::config::WebhookSettings {
            name: "bouncer".into(),
            url: format!("{redirector}/hook"),
            secret: fleetpilot::config::Secret::new("settings-secret-0123456789"),
        });
    })
    .await;
    crate::alerting::node(&app.pool, "node-r", 0.0, None).await;
    crate::alerting::gpu(&app.pool, "node-r", 0, 99.0, 10.0).await;
    let failed = crate::helpers::eventually(Duration::from_secs(15), "the redirected delivery to fail", || async {
        let v = app.api_json("/api/v1/alert-deliveries?state=failed").await;
        v.as_array().unwrap().iter().find(|d| d["receiver"] == "webhook:bouncer").cloned()
    })
    .await;
    assert_eq!(failed["last_status"], 307, "{failed}");
    assert!(inner.received().is_empty(), "the redirect was not followed");
    app.stop().await;
    handle.stop(false).await;
    for r in [pd, inner] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_writing_route_of_the_api_refuses_unauthenticated_calls() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    // The route table as the server publishes it (the document's paths are checked against the router by
    // `openapi::every_path_in_the_openapi_document_is_a_route_of_the_server`).
    let doc: Value = serde_json::from_str(fleetpilot::routes::api::doc::document()).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let url = crate::helpers::concrete_path(path);
        for (method, op) in ops.as_object().unwrap() {
            if !matches!(method.as_str(), "post" | "put" | "delete" | "patch") {
                continue;
            }
            let public = op.get("security").is_none();
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for token in [None, Some("wrong-token"), Some(app.agent_token.as_str())] {
                let mut req = app
                    .http
                    .request(m.clone(), format!("{}{url}", app.address))
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let status = req.send().await.unwrap().status().as_u16();
                if public {
                    // The enrollment exchange is public by design: it must still refuse an empty body.
                    assert!(status >= 400, "{method} {path} with {token:?}: {status}");
                } else if token == Some(app.agent_token.as_str()) && op["security"][0].get("agent").is_some() {
                    // The agent token on an agent route: authenticated, then refused on the body.
                    assert!(status >= 400, "{method} {path} with the agent token: {status}");
                } else {
                    assert_eq!(status, 401, "{method} {path} with {token:?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
    for table in ["policies", "alert_rules", "silences", "webhook_receivers", "enrollment_tokens", "reenroll_grants"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} changed");
    }
    app.stop().await;
}
