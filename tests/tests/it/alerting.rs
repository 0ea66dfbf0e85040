//! Alerting that on-call can trust: one incident per group through restarts and receiver failures,
//! inhibition and silences, user rules, signed webhooks, and 1,000 alerts with nothing lost or doubled.

use std::time::Duration;

use fleetpilot::config::{Secret, Settings};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::fakes::{self, Answer, Receiver};
use crate::helpers::{TestApp, eventually, fresh_database, spawn_app_on};

/// Fast lifecycle and delivery settings, PagerDuty pointed at `pd`.
pub(crate) fn alerting(s: &mut Settings, pd: &Receiver) {
    s.pagerduty.url = format!("{}/v2/enqueue", pd.url);
    s.pagerduty.routing_key = Secret::new("R0UT1NGKEY-alerting");
    s.alerts.eval_secs = 0.2;
    s.alerts.group_wait_secs = 0.3;
    s.alerts.retry_base_secs = 0.05;
    s.alerts.retry_max_secs = 0.4;
    s.alerts.delivery_timeout_secs = 1.0;
    s.alerts.node_silent_secs = 3600;
}

/// A node last heard from `ago_secs` ago.
pub(crate) async fn node(pool: &PgPool, node: &str, ago_secs: f64, deployment: Option<&str>) {
    sqlx::query(
        "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, deployment, last_seen) \
         VALUES ($1, $1, 'test', 'simulated', $2, now() - make_interval(secs => $3)) \
         ON CONFLICT (node_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
    )
    .bind(node)
    .bind(deployment)
    .bind(ago_secs)
    .execute(pool)
    .await
    .unwrap();
}

/// A GPU's latest reading, now.
pub(crate) async fn gpu(pool: &PgPool, node: &str, index: i32, temp_c: f32, util: f32) {
    sqlx::query(
        "INSERT INTO gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, \
         temp_c, sm_clock_mhz, throttle_reasons, xid_last) VALUES ($1, $2, now(), 'GPU-' || $1 || '-' || $2, 'test', $4, 1, 2, \
         300, $3, 1980, 0, 0) ON CONFLICT (node_id, gpu_index) DO UPDATE SET ts = now(), temp_c = $3, util_pct = $4",
    )
    .bind(node)
    .bind(index)
    .bind(temp_c)
    .bind(util)
    .execute(pool)
    .await
    .unwrap();
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.api_call(reqwest::Method::GET, path, None).await
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    app.api_call(method, path, body).await
}

/// (what, how to break a valid body, the field the 400 must name)
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn triggers_for(pd: &Receiver, group: &str) -> Vec<fakes::Received> {
    pd.accepted()
        .into_iter()
        .filter(|r| r.body["event_action"] == "trigger" && r.body["payload"]["group"] == group)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_pages_once_through_receiver_failures_and_restarts_and_resolves_with_the_same_key() {
    let pd = fakes::receiver().await;
    // The first attempts fail every way a receiver can: 500, 429 with Retry-After, and a hang.
    pd.script([Answer::Fail, Answer::RateLimit(1), Answer::Hang(Duration::from_millis(1500)), Answer::Fail]);
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    node(&app.pool, "node-a", 0.0, Some("ml/llama")).await;
    for i in 0..4 {
        gpu(&app.pool, "node-a", i, 93.0, 50.0).await;
    }
    // Restart while the receiver is failing.
    eventually(Duration::from_secs(10), "the first failed attempt", || async {
        (!pd.received().is_empty()).then_some(())
    })
    .await;
    app.stop().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    let trigger = eventually(Duration::from_secs(20), "an accepted trigger", || async {
        triggers_for(&pd, "node/node-a").into_iter().next()
    })
    .await;
    assert_eq!(trigger.path, "/v2/enqueue");
    let b = &trigger.body;
    let key = b["dedup_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fleetpilot/node/node-a/"), "{key}");
    assert_eq!(b["routing_key"], "R0UT1NGKEY-alerting");
    assert_eq!(b["payload"]["source"], "node-a");
    assert_eq!(b["payload"]["severity"], "error");
    assert_eq!(b["payload"]["class"], "gpu-temperature");
    assert_eq!(b["payload"]["component"], "4 components");
    assert!(b["payload"]["summary"].as_str().unwrap().contains("+3 more"), "{b}");
    assert_eq!(b["payload"]["custom_details"]["alerts"], 4);
    assert_eq!(b["payload"]["custom_details"]["members"][0]["evidence"]["temp_c"], 93.0);
    // Queued by the first server, so its dashboard address.
    assert!(b["links"][0]["href"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{b}");
    // The 429 was honoured: the retry after it waited about its Retry-After second.
    eventually(Duration::from_secs(5), "five attempts recorded", || async { (pd.received().len() >= 5).then_some(()) })
        .await;
    let mut log = pd.received();
    log.sort_by_key(|r| r.at);
    let i = log.iter().position(|r| r.status == 429).unwrap();
    let waited = log[i + 1].at.duration_since(log[i].at);
    assert!(waited >= Duration::from_millis(900), "Retry-After: 1 honoured, waited {waited:?}");

    // Cool down; restart again before the resolve can go out, with the receiver failing once more.
    pd.script([Answer::Fail, Answer::Fail]);
    sqlx::query("UPDATE gpu_latest SET temp_c = 40").execute(&app.pool).await.unwrap();
    eventually(Duration::from_secs(10), "the incident resolved in the database", || async {
        (app.count("SELECT count(*) FROM alerts WHERE state = 'resolved'").await == 1).then_some(())
    })
    .await;
    app.stop().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    eventually(Duration::from_secs(15), "an accepted resolve", || async {
        pd.accepted().into_iter().find(|r| r.body["event_action"] == "resolve")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let per_key = pd.per_key();
    assert_eq!(per_key.len(), 1, "{per_key:?}");
    assert_eq!(per_key.get(&key), Some(&(1, 1)), "one trigger, one resolve: {per_key:?}");
    // The routing key is stored nowhere.
    assert_eq!(app.count("SELECT count(*) FROM alert_deliveries WHERE payload::text LIKE '%R0UT1NGKEY%'").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM alert_deliveries WHERE coalesce(last_error, '') LIKE '%R0UT1NGKEY%'").await,
        0
    );
    app.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_inhibits_its_gpu_alerts_and_a_silence_mutes_matching_groups_until_it_expires() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.alerts.node_silent_secs = 60;
    })
    .await;
    // node-s is silent while its last (stale-looking but recent) GPU rows are hot; node-q is silenced.
    let (st, silence) = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/silences",
        Some(&json!({"matchers": [{"label": "node", "value": "node-q"}], "comment": "maintenance", "duration_secs": 600})),
    )
    .await;
    assert_eq!(st, 201, "{silence}");
    node(&app.pool, "node-s", 600.0, None).await;
    node(&app.pool, "node-q", 0.0, None).await;
    node(&app.pool, "node-h", 0.0, None).await;
    for n in ["node-s", "node-q", "node-h"] {
        gpu(&app.pool, n, 0, 95.0, 10.0).await;
    }
    eventually(Duration::from_secs(10), "node-h and node-s paged", || async {
        (!triggers_for(&pd, "node/node-h").is_empty() && !triggers_for(&pd, "node/node-s").is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(triggers_for(&pd, "node/node-q").is_empty(), "the silenced node does not page");
    let s = &triggers_for(&pd, "node/node-s")[0].body;
    assert_eq!(s["payload"]["class"], "node-silent", "the GPU alert of the silent node is inhibited: {s}");
    assert_eq!(s["payload"]["custom_details"]["alerts"], 1);
    let (_, instances) = get(&app, "/api/v1/alert-instances").await;
    let why = |fp: &str| {
        instances.as_array().unwrap().iter().find(|i| i["fingerprint"] == fp).map(|i| i["suppressed"].clone())
    };
    assert!(why("gpu-temperature/node-s/0").unwrap().as_str().unwrap().starts_with("inhibited by node-silent"));
    assert!(why("gpu-temperature/node-q/0").unwrap().as_str().unwrap().starts_with("silenced by"));
    assert_eq!(why("gpu-temperature/node-h/0"), Some(Value::Null));

    // Expiring the silence lets node-q page.
    let id = silence["id"].as_str().unwrap();
    let (st, _) = send(&app, reqwest::Method::DELETE, &format!("/api/v1/silences/{id}"), None).await;
    assert_eq!(st, 204);
    let (st, _) = send(&app, reqwest::Method::DELETE, &format!("/api/v1/silences/{id}"), None).await;
    assert_eq!(st, 404, "already expired");
    eventually(Duration::from_secs(10), "node-q paged after the silence ended", || async {
        (!triggers_for(&pd, "node/node-q").is_empty()).then_some(())
    })
    .await;
    let (_, open) = get(&app, "/api/v1/alerts?severity=critical").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "only node-s's incident is critical: {open}");
    let (st, err) = get(&app, "/api/v1/alerts?state=sideways").await;
    assert_eq!((st, err["field"].as_str()), (400, Some("state")));
    app.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_rules_are_validated_field_by_field_and_fire_after_their_for_duration() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    let valid = json!({
        "name": "busy-gpus", "metric": "util_pct", "op": ">=", "threshold": 90, "for_secs": 1.5,
        "severity": "warning", "scope": {"node": "node-u"}, "labels": {"team": "inference"}
    });
    let cases: Vec<Case> = vec![
        ("bad name", Box::new(|b| b["name"] = json!("no spaces please")), "name"),
        ("unknown metric", Box::new(|b| b["metric"] = json!("fan_rpm")), "metric"),
        ("unknown op", Box::new(|b| b["op"] = json!("~")), "op"),
        ("non-number threshold", Box::new(|b| b["threshold"] = json!("high")), "threshold"),
        ("negative for", Box::new(|b| b["for_secs"] = json!(-1)), "for_secs"),
        ("bad severity", Box::new(|b| b["severity"] = json!("urgent")), "severity"),
        ("unknown scope field", Box::new(|b| b["scope"]["rack"] = json!("r1")), "scope.rack"),
        ("reserved label", Box::new(|b| b["labels"]["node"] = json!("x")), "labels.node"),
        ("unknown field", Box::new(|b| b["colour"] = json!("red")), "colour"),
        (
            "missing metric",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("metric");
            }),
            "metric",
        ),
    ];
    for (what, breaks, field) in cases {
        let mut body = valid.clone();
        breaks(&mut body);
        let (st, err) = send(&app, reqwest::Method::POST, "/api/v1/alert-rules", Some(&body)).await;
        assert_eq!(st, 400, "{what}: {err}");
        assert_eq!(err["field"], field, "{what}: {err}");
        assert!(err["error"].is_string());
    }
    let (st, rule) = send(&app, reqwest::Method::POST, "/api/v1/alert-rules", Some(&valid)).await;
    assert_eq!(st, 201, "{rule}");
    let id = rule["id"].as_str().unwrap().to_string();
    let (st, _) = send(&app, reqwest::Method::POST, "/api/v1/alert-rules", Some(&valid)).await;
    assert_eq!(st, 409, "the name is taken");
    let (st, got) = get(&app, &format!("/api/v1/alert-rules/{id}")).await;
    assert_eq!((st, got["metric"].as_str()), (200, Some("util_pct")));
    let (st, err) = get(&app, "/api/v1/alert-rules/not-a-uuid").await;
    assert_eq!((st, err["field"].as_str()), (400, Some("id")));
    let mut changed = valid.clone();
    changed["severity"] = json!("critical");
    let (st, upd) = send(&app, reqwest::Method::PUT, &format!("/api/v1/alert-rules/{id}"), Some(&changed)).await;
    assert_eq!((st, upd["severity"].as_str()), (200, Some("critical")));
    let (_, list) = get(&app, "/api/v1/alert-rules").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The rule holds on node-u's busy GPU: pending first, firing after 1.5 s, then one page.
    node(&app.pool, "node-u", 0.0, None).await;
    node(&app.pool, "node-v", 0.0, None).await;
    gpu(&app.pool, "node-u", 0, 50.0, 97.0).await;
    gpu(&app.pool, "node-v", 0, 50.0, 97.0).await;
    let fp = format!("rule/{id}/node-u/0");
    let pending = eventually(Duration::from_secs(5), "a pending instance", || async {
        let (_, v) = get(&app, "/api/v1/alert-instances?state=pending").await;
        v.as_array().unwrap().iter().find(|i| i["fingerprint"] == fp.as_str()).cloned()
    })
    .await;
    assert_eq!(pending["labels"]["team"], "inference");
    let t = eventually(Duration::from_secs(10), "the rule's page", || async {
        triggers_for(&pd, "node/node-u").into_iter().next()
    })
    .await;
    assert_eq!(t.body["payload"]["severity"], "critical");
    assert_eq!(t.body["payload"]["class"], "busy-gpus");
    assert!(triggers_for(&pd, "node/node-v").is_empty(), "the rule is scoped to node-u");
    // Deleting the rule resolves its alert.
    let (st, _) = send(&app, reqwest::Method::DELETE, &format!("/api/v1/alert-rules/{id}"), None).await;
    assert_eq!(st, 204);
    eventually(Duration::from_secs(10), "the resolve", || async {
        pd.accepted().into_iter().find(|r| r.body["event_action"] == "resolve")
    })
    .await;
    let (st, _) = get(&app, &format!("/api/v1/alert-rules/{id}")).await;
    assert_eq!(st, 404);
    app.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_refusals_are_permanent_and_visible_and_secrets_never_come_back() {
    let pd = fakes::receiver().await;
    let hook = fakes::receiver().await;
    let bad = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.webhooks.push(fleetpilot::config::WebhookSettings {
            name: "ops-chat".into(),
            url: format!("{}/hook", hook.url),
            secret: Secret::new("settings-secret-0123456789"),
        });
    })
    .await;
    // One receiver added through the API refuses everything with a 400.
    bad.script([Answer::Refuse; 4]);
    let body = json!({"name": "refuser", "url": format!("{}/in", bad.url), "secret": "api-secret-abcdefghijkl"});
    let (st, created) = send(&app, reqwest::Method::POST, "/api/v1/webhooks", Some(&body)).await;
    assert_eq!(st, 201, "{created}");
    assert!(!created.to_string().contains("api-secret"), "the secret is not returned: {created}");
    for (broken, field) in [
        (json!({"name": "x", "url": "ftp://nope", "secret": "api-secret-abcdefghijkl"}), "url"),
        (json!({"name": "y", "url": "http://127.0.0.1:1/", "secret": "short"}), "secret"),
        (json!({"name": "bad name", "url": "http://127.0.0.1:1/", "secret": "api-secret-abcdefghijkl"}), "name"),
        (json!({"name": "z", "url": "http://127.0.0.1:1/"}), "secret"),
    ] {
        let (st, err) = send(&app, reqwest::Method::POST, "/api/v1/webhooks", Some(&broken)).await;
        assert_eq!((st, err["field"].as_str()), (400, Some(field)), "{err}");
    }
    let (_, listed) = get(&app, "/api/v1/webhooks").await;
    let text = listed.to_string();
    assert!(!text.contains("secret-") && !text.contains("R0UT1NG"), "{text}");
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 2);
    assert_eq!(listed["pagerduty"]["configured"], true);

    node(&app.pool, "node-w", 0.0, None).await;
    gpu(&app.pool, "node-w", 0, 99.0, 10.0).await;
    let got = eventually(Duration::from_secs(10), "the webhook's trigger", || async {
        hook.accepted().into_iter().find(|r| r.body["event"] == "trigger")
    })
    .await;
    // The fake verifies the signature the way a receiver would.
    let ts = got.headers.get("x-fleetpilot-timestamp").unwrap().clone();
    let sig = got.headers.get("x-fleetpilot-signature").unwrap().clone();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&got.raw);
    let expected =
        format!("sha256={}", hex_of(&fleetpilot::alerts::outbox::hmac_sha256(b"settings-secret-0123456789", &signed)));
    assert_eq!(sig, expected);
    let wrong = format!("sha256={}", hex_of(&fleetpilot::alerts::outbox::hmac_sha256(b"another-secret", &signed)));
    assert_ne!(sig, wrong);
    assert_eq!(got.body["incident"]["group"], "node/node-w");
    assert!(got.body["dedup_key"].as_str().unwrap().starts_with("fleetpilot/node/node-w/"));
    assert!(got.body["incident"]["details"]["dashboard"].as_str().unwrap().starts_with(&app.address));

    // The refusing receiver got one attempt, recorded as permanent and visible through the API.
    let failed = eventually(Duration::from_secs(10), "a permanent failure", || async {
        let (_, v) = get(&app, "/api/v1/alert-deliveries?state=failed").await;
        v.as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(failed["receiver"], "webhook:refuser");
    assert_eq!(failed["last_status"], 400);
    assert_eq!(failed["attempts"], 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bad.received().len(), 1, "a 400 is not retried");
    let (st, err) = get(&app, "/api/v1/alert-deliveries?state=odd").await;
    assert_eq!((st, err["field"].as_str()), (400, Some("state")));
    // Secrets are in no delivery row.
    assert_eq!(
        app.count("SELECT count(*) FROM alert_deliveries WHERE payload::text LIKE '%secret%' OR coalesce(last_error, '') LIKE '%secret%'").await,
        0
    );
    app.stop().await;
    for r in [pd, hook, bad] {
        r.stop().await;
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_firing_incident_is_triggered_again_after_the_repeat_interval_with_the_same_key() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.alerts.repeat_interval_secs = 1.0;
    })
    .await;
    node(&app.pool, "node-r", 0.0, None).await;
    gpu(&app.pool, "node-r", 0, 99.0, 10.0).await;
    let keys = eventually(Duration::from_secs(10), "two triggers", || async {
        let t = triggers_for(&pd, "node/node-r");
        (t.len() >= 2).then(|| t.iter().map(|r| r.body["dedup_key"].as_str().unwrap().to_string()).collect::<Vec<_>>())
    })
    .await;
    assert_eq!(keys[0], keys[1], "a repeat re-triggers the same incident");
    let (_, open) = get(&app, "/api/v1/alerts?group=node/node-r").await;
    assert!(open[0]["notifications"].as_i64().unwrap() >= 2);
    app.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_alerts_with_a_flaky_receiver_and_two_restarts_lose_nothing_and_duplicate_nothing() {
    const NODES: i64 = 250;
    const GPUS: i64 = 4;
    let pd = fakes::receiver().await;
    pd.fail_percent(30);
    let url = fresh_database().await;
    let start = std::time::Instant::now();
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    sqlx::query(
        "INSERT INTO nodes (node_id, hostname, agent_version, gpu_source, last_seen) \
         SELECT 'n' || lpad(n::text, 4, '0'), 'h', 'test', 'simulated', now() FROM generate_series(1, $1) n",
    )
    .bind(NODES)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO gpu_latest (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, mem_total_bytes, power_w, \
         temp_c, sm_clock_mhz, throttle_reasons, xid_last) \
         SELECT 'n' || lpad(n::text, 4, '0'), g, now(), 'GPU-' || n || '-' || g, 'test', 50, 1, 2, 300, 95, 1980, 0, 0 \
         FROM generate_series(1, $1) n, generate_series(0, $2 - 1) g",
    )
    .bind(NODES)
    .bind(GPUS as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    let triggered = |pd: &Receiver| pd.per_key().values().filter(|(t, _)| *t > 0).count() as i64;
    let resolved = |pd: &Receiver| pd.per_key().values().filter(|(_, r)| *r > 0).count() as i64;

    eventually(Duration::from_secs(20), "some triggers through", || async { (triggered(&pd) >= 50).then_some(()) })
        .await;
    app.stop().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    eventually(Duration::from_secs(30), "every group triggered", || async { (triggered(&pd) == NODES).then_some(()) })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM alert_instances WHERE state = 'firing'").await, NODES * GPUS);

    sqlx::query("UPDATE gpu_latest SET temp_c = 40").execute(&app.pool).await.unwrap();
    eventually(Duration::from_secs(20), "some resolves through", || async { (resolved(&pd) >= 50).then_some(()) })
        .await;
    app.stop().await;
    let app = spawn_app_on(&url, |s| alerting(s, &pd)).await;
    eventually(Duration::from_secs(30), "every group resolved and the outbox empty", || async {
        let pending = app.count("SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NULL").await;
        (resolved(&pd) == NODES && pending == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let per_key = pd.per_key();
    assert_eq!(per_key.len() as i64, NODES, "one incident per group");
    let wrong: Vec<_> = per_key.iter().filter(|(_, c)| **c != (1, 1)).collect();
    assert!(wrong.is_empty(), "exactly one trigger and one resolve per dedup_key: {wrong:?}");
    let failures = pd.received().iter().filter(|r| r.status == 500).count();
    assert!(failures > 50, "the receiver really failed ({failures} times)");
    // Every trigger carried all four of its group's alerts: 1,000 alerts, none lost.
    let alerts: i64 = pd
        .accepted()
        .iter()
        .filter(|r| r.body["event_action"] == "trigger")
        .map(|r| r.body["payload"]["custom_details"]["alerts"].as_i64().unwrap())
        .sum();
    assert_eq!(alerts, NODES * GPUS);
    assert_eq!(app.count("SELECT count(*) FROM alert_instances WHERE state = 'resolved'").await, NODES * GPUS);
    assert_eq!(app.count("SELECT count(*) FROM alert_deliveries WHERE failed_permanently").await, 0);
    eprintln!("1,000 alerts through a 30 % failing receiver and two restarts in {:?}", start.elapsed());
    app.stop().await;
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_rules_fire_on_xid_errors_thermal_throttling_slo_burn_and_failed_scaling() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.alerts.throttle_for_secs = 0.5;
        s.alerts.slo_for_secs = 0.5;
        s.alerts.slo_ttft_p95_s = 1.0;
        // Long enough for the SLO alert (0.5 s pending) to join the scaling alert before the page.
        s.alerts.group_wait_secs = 1.5;
    })
    .await;
    node(&app.pool, "node-x", 0.0, Some("ml/chat")).await;
    gpu(&app.pool, "node-x", 0, 60.0, 50.0).await;
    gpu(&app.pool, "node-x", 1, 80.0, 50.0).await;
    sqlx::query("UPDATE gpu_latest SET xid_last = 79 WHERE gpu_index = 0").execute(&app.pool).await.unwrap();
    sqlx::query("UPDATE gpu_latest SET throttle_reasons = 64 WHERE gpu_index = 1").execute(&app.pool).await.unwrap();
    sqlx::query(
        "INSERT INTO serving_latest (deployment, replica, node_id, ts, engine, queue_depth, running, ttft_p95_s, itl_p95_s, \
         requests_per_s, generation_tokens_per_s) VALUES ('ml/chat', 'r0', 'node-x', now(), 'vllm', 3, 8, 4.5, 0.05, 2, 100)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (st, policy) = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/policies",
        Some(&json!({"name": "chat", "target": {"kind": "deployment", "namespace": "ml", "name": "chat"},
                     "min_replicas": 1, "max_replicas": 4, "metric": "gpu_utilization", "target_value": 60, "dry_run": true})),
    )
    .await;
    assert_eq!(st, 201, "{policy}");
    // The latest decision of the policy failed (dated ahead so the loop's own decisions do not replace it).
    sqlx::query(
        "INSERT INTO decisions (policy_id, policy_version, decided_at, target, current_replicas, desired_replicas, winner, \
         reason, proposals, inputs, dry_run, error) VALUES ($1, 1, now() + interval '10 minutes', 'deployment ml/chat', 1, 2, \
         'test', 'test', '[]', '{}', false, 'kubernetes said 403 Forbidden')",
    )
    .bind(uuid::Uuid::parse_str(policy["id"].as_str().unwrap()).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let want = ["gpu-xid-error/node-x/0", "gpu-thermal-throttling/node-x/1", "slo-ttft/ml/chat", "scaling-failed/chat"];
    let firing = eventually(Duration::from_secs(10), "the four built-in rules firing", || async {
        let (_, v) = get(&app, "/api/v1/alert-instances?state=firing").await;
        let fps: Vec<String> =
            v.as_array().unwrap().iter().map(|i| i["fingerprint"].as_str().unwrap().to_string()).collect();
        want.iter().all(|w| fps.iter().any(|f| f == w)).then_some(v)
    })
    .await;
    assert!(!firing.to_string().contains("slo-itl"), "ITL is within its target");
    // Node rules page the node's group, serving and scaling rules the deployment's.
    let t = eventually(Duration::from_secs(10), "the deployment's page", || async {
        let t = triggers_for(&pd, "deployment/ml/chat");
        t.into_iter().find(|r| r.body["payload"]["custom_details"]["alerts"] == 2)
    })
    .await;
    assert_eq!(t.body["payload"]["class"], "scaling-failed,slo-ttft");
    let n = eventually(Duration::from_secs(10), "the node's page", || async {
        triggers_for(&pd, "node/node-x").into_iter().next()
    })
    .await;
    assert_eq!(n.body["payload"]["severity"], "critical", "an XID error is critical");
    app.stop().await;
    pd.stop().await;
}

/// An anomaly event as the sweep stores it (`ended`: already over).
#[allow(clippy::too_many_arguments)]
async fn anomaly(pool: &PgPool, node: &str, deployment: &str, target: &str, metric: &str, severity: &str, ended: bool) {
    let evidence = json!({"bucket_secs": 60, "rows": 4, "peak": {"timestamp_secs": 1_700_000_000, "score": 0.97,
        "component": "OutOfRange", "observed": 99.0, "expected": 61.5, "tail": 2.0e-6}});
    sqlx::query(
        "INSERT INTO anomalies (node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence, \
         updated_at) VALUES ($1, $2, $3, $4, 'detector', now() - interval '5 minutes', \
         CASE WHEN $6 THEN now() ELSE NULL END, $5, 0.97, $7, now())",
    )
    .bind(node)
    .bind(deployment)
    .bind(target)
    .bind(metric)
    .bind(severity)
    .bind(ended)
    .bind(evidence)
    .execute(pool)
    .await
    .unwrap();
}

fn resolves_of(pd: &Receiver, key: &str) -> usize {
    pd.accepted().iter().filter(|r| r.body["event_action"] == "resolve" && r.body["dedup_key"] == key).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_anomaly_pages_its_node_with_the_evidence_is_inhibited_on_a_silent_node_and_resolves_when_it_ends() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.alerts.node_silent_secs = 60;
        // The rows below are written by hand; the real sweep would close the ones it did not open.
        s.opportunities.enabled = false;
    })
    .await;
    for (n, ago) in [("node-a", 0.0), ("node-b", 0.0), ("node-c", 0.0), ("node-s", 600.0)] {
        node(&app.pool, n, ago, Some("ml/llama")).await;
    }
    anomaly(&app.pool, "node-a", "ml/llama", "gpu:node-a:0", "util_pct", "critical", false).await;
    // Below the default level, and over: both stay quiet.
    anomaly(&app.pool, "node-b", "ml/llama", "gpu:node-b:1", "util_pct", "warning", false).await;
    anomaly(&app.pool, "node-c", "ml/llama", "gpu:node-c:0", "temp_c", "critical", true).await;
    // On a silent node: inhibited.
    anomaly(&app.pool, "node-s", "ml/llama", "gpu:node-s:0", "util_pct", "critical", false).await;
    // A deployment series: the deployment's group.
    anomaly(&app.pool, "", "ml/llama", "deployment:ml/llama", "itl_p95_s", "critical", false).await;

    let t = eventually(Duration::from_secs(10), "node-a's anomaly page", || async {
        triggers_for(&pd, "node/node-a").into_iter().next()
    })
    .await;
    let p = &t.body["payload"];
    assert_eq!(p["class"], "anomaly-high");
    assert_eq!(p["severity"], "error", "a critical anomaly event is an error");
    assert_eq!(p["component"], "gpu 0");
    let m = &p["custom_details"]["members"][0];
    assert_eq!(m["labels"]["node"], "node-a");
    assert_eq!(m["labels"]["gpu"], "0");
    assert_eq!(m["labels"]["metric"], "util_pct");
    let ev = &m["evidence"];
    assert_eq!(ev["series"], json!({"target": "gpu:node-a:0", "metric": "util_pct"}));
    assert_eq!(ev["score"], 0.97);
    assert!(ev["started_at"].is_string());
    let why = ev["explanation"].as_str().unwrap();
    assert!(why.contains("value 99.00 beyond the range edge 61.50"), "{why}");
    assert!(p["summary"].as_str().unwrap().contains(why), "{p}");
    assert!(ev["dashboard"].as_str().unwrap().ends_with("/nodes/node-a/gpus/0"), "{ev}");
    let d = eventually(Duration::from_secs(10), "the deployment's anomaly page", || async {
        triggers_for(&pd, "deployment/ml/llama").into_iter().next()
    })
    .await;
    assert_eq!(d.body["payload"]["class"], "anomaly-high");
    let dev = &d.body["payload"]["custom_details"]["members"][0]["evidence"];
    assert!(dev["dashboard"].as_str().unwrap().ends_with("/deployments/ml/llama"), "{dev}");
    let s = eventually(Duration::from_secs(10), "the silent node's page", || async {
        triggers_for(&pd, "node/node-s").into_iter().next()
    })
    .await;
    assert_eq!(s.body["payload"]["class"], "node-silent", "the anomaly of the silent node is inhibited");
    let (_, instances) = get(&app, "/api/v1/alert-instances").await;
    let inhibited =
        instances.as_array().unwrap().iter().find(|i| i["labels"]["node"] == "node-s" && i["rule"] == "anomaly-high");
    assert!(inhibited.unwrap()["suppressed"].as_str().unwrap().starts_with("inhibited by node-silent"), "{instances}");
    assert!(triggers_for(&pd, "node/node-b").is_empty() && triggers_for(&pd, "node/node-c").is_empty());
    assert!(!instances.to_string().contains("gpu:node-b") && !instances.to_string().contains("gpu:node-c"));

    // The event ends: the alert resolves, with the key it was triggered with.
    let key = t.body["dedup_key"].as_str().unwrap().to_string();
    sqlx::query("UPDATE anomalies SET ended_at = now() WHERE target = 'gpu:node-a:0'")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "node-a's resolve", || async { (resolves_of(&pd, &key) == 1).then_some(()) })
        .await;
    assert_eq!(pd.per_key().get(&key), Some(&(1, 1)));
    app.stop().await;
    pd.stop().await;
}

/// An opportunity as the refresher stores it.
async fn opportunity(pool: &PgPool, key: &str, node: &str, status: &str, saving: f64) {
    sqlx::query(
        "INSERT INTO opportunities (key, kind, status, deployment, node_id, gpu_index, title, evidence, gpu_hours_per_week, \
         saving_per_week, currency, confidence, expected_value, latency, action, first_seen, last_seen) \
         VALUES ($1, 'idle_gpu', $2, 'ml/llama', $3, 0, 'GPU 0 on ' || $3 || ' is idle', '{\"series\": \"gpu_util_pct\"}', \
         168, $4, 'USD', 0.8, $4 * 0.8, '{}', '{\"one_click\": false}', now(), now())",
    )
    .bind(key)
    .bind(status)
    .bind(node)
    .bind(saving)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valuable_opportunity_notifies_at_info_severity_holds_within_the_hysteresis_band_and_resolves_when_closed() {
    let pd = fakes::receiver().await;
    let url = fresh_database().await;
    let app = spawn_app_on(&url, |s| {
        alerting(s, &pd);
        s.opportunities.enabled = false;
        s.alerts.opportunity_min_money_per_week = 500.0;
    })
    .await;
    opportunity(&app.pool, "idle_gpu:node-o:0", "node-o", "open", 672.0).await;
    // Too small, and dismissed: quiet.
    opportunity(&app.pool, "idle_gpu:node-p:0", "node-p", "open", 300.0).await;
    opportunity(&app.pool, "idle_gpu:node-q:0", "node-q", "dismissed", 900.0).await;

    let group = "opportunity/node/node-o";
    let t = eventually(Duration::from_secs(10), "the opportunity's notification", || async {
        triggers_for(&pd, group).into_iter().next()
    })
    .await;
    let p = &t.body["payload"];
    assert_eq!(p["severity"], "info", "money is not a page at 3am");
    assert_eq!(p["class"], "opportunity-value");
    assert_eq!(p["summary"], "GPU 0 on node-o is idle: saves 672 USD/week (alert at 500)");
    let ev = &p["custom_details"]["members"][0]["evidence"];
    assert_eq!(ev["saving_per_week"], 672.0);
    assert_eq!(ev["key"], "idle_gpu:node-o:0");
    assert_eq!(ev["evidence"]["series"], "gpu_util_pct");
    assert!(ev["dashboard"].as_str().unwrap().ends_with("/nodes/node-o/gpus/0"), "{ev}");
    assert!(ev["api"].as_str().unwrap().contains("/api/v1/opportunities/"), "{ev}");
    let labels = &p["custom_details"]["members"][0]["labels"];
    assert_eq!((labels["node"].as_str(), labels["kind"].as_str()), (Some("node-o"), Some("idle_gpu")));
    let key = t.body["dedup_key"].as_str().unwrap().to_string();

    // Just under the threshold but within 90 % of it: still firing, nothing sent.
    sqlx::query("UPDATE opportunities SET saving_per_week = 470 WHERE key = 'idle_gpu:node-o:0'")
        .execute(&app.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(resolves_of(&pd, &key), 0, "inside the hysteresis band");
    // Below 90 %: resolves.
    sqlx::query("UPDATE opportunities SET saving_per_week = 440 WHERE key = 'idle_gpu:node-o:0'")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the resolve below the band", || async {
        (resolves_of(&pd, &key) == 1).then_some(())
    })
    .await;
    // Back above the threshold it fires again (a new incident); closing the opportunity resolves it.
    sqlx::query("UPDATE opportunities SET saving_per_week = 700 WHERE key = 'idle_gpu:node-o:0'")
        .execute(&app.pool)
        .await
        .unwrap();
    let again = eventually(Duration::from_secs(10), "the second notification", || async {
        triggers_for(&pd, group).into_iter().find(|r| r.body["dedup_key"] != key.as_str())
    })
    .await;
    let key2 = again.body["dedup_key"].as_str().unwrap().to_string();
    sqlx::query("UPDATE opportunities SET status = 'closed', closed_at = now() WHERE key = 'idle_gpu:node-o:0'")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the resolve on close", || async {
        (resolves_of(&pd, &key2) == 1).then_some(())
    })
    .await;
    for quiet in ["opportunity/node/node-p", "opportunity/node/node-q"] {
        assert!(triggers_for(&pd, quiet).is_empty(), "{quiet} is below the threshold or dismissed");
    }
    app.stop().await;
    pd.stop().await;
}

/// One batch of `node` at `at` with the given GPUs `(index, util %, power W)`.
fn gpu_batch(node: &str, seq: u64, at: chrono::DateTime<chrono::Utc>, gpus: &[(u32, f64, f64)]) -> Value {
    let ts = at.timestamp_millis();
    let gpus: Vec<Value> = gpus
        .iter()
        .map(|(i, util, power)| {
            json!({"ts_ms": ts, "gpu_index": i, "uuid": format!("GPU-{node}-{i}"), "util_pct": util,
                   "mem_used_bytes": 40_000_000_000_u64, "mem_total_bytes": 85_520_809_984_u64, "power_w": power,
                   "temp_c": 55.0, "sm_clock_mhz": 1980})
        })
        .collect();
    json!({"version": 1, "agent_id": node, "seq": seq, "sent_at_ms": ts,
           "node": {"hostname": node, "agent_version": "test", "gpu_source": "simulated"}, "gpus": gpus})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_gone_from_a_reporting_node_and_a_gpu_repeating_its_reading_fire_their_rules() {
    let app = crate::helpers::spawn_app(|s| s.control.enabled = false).await;
    let now = chrono::Utc::now();
    let before = now - chrono::Duration::seconds(90);
    // 90 s ago three GPUs report; 10 s ago GPU 0 repeats its reading exactly (stuck exporter), GPU 1 has
    // moved on, GPU 2 is gone while its node still reports.
    for (seq, at, gpus) in [
        (1, before, vec![(0, 41.0, 312.25), (1, 55.0, 401.5), (2, 60.0, 420.0)]),
        (2, now - chrono::Duration::seconds(10), vec![(0, 41.0, 312.25), (1, 56.0, 404.75)]),
    ] {
        let r = app.ingest_raw(serde_json::to_vec(&gpu_batch("node-f", seq, at, &gpus)).unwrap()).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let settings = Settings::default().alerts;
    let engine = fleetpilot::alerts::AlertEngine::new(
        app.pool.clone(),
        settings,
        fleetpilot::alerts::Receivers::default(),
        "http://fleetpilot.test".into(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let out = engine.evaluate(now).await.unwrap();
    let mut fired = out.fired.clone();
    fired.sort();
    assert_eq!(fired, vec!["gpu-missing/node-f/2", "gpu-stuck-reading/node-f/0"], "{out:?}");
    // Once GPU 2 reports again and GPU 0's reading moves, both resolve.
    let later = now + chrono::Duration::seconds(5);
    let body = gpu_batch("node-f", 3, later, &[(0, 43.0, 318.5), (1, 57.0, 405.0), (2, 61.0, 421.0)]);
    assert_eq!(app.ingest_raw(serde_json::to_vec(&body).unwrap()).await.status(), 200);
    let out = engine.evaluate(later).await.unwrap();
    let mut resolved = out.resolved.clone();
    resolved.sort();
    assert_eq!(resolved, vec!["gpu-missing/node-f/2", "gpu-stuck-reading/node-f/0"], "{out:?}");
    app.stop().await;
}
