//! Retention of the history tables and the outbox's give-up (issue #15): old history goes, open things and
//! what still points at them stay, and a delivery undelivered for too long is marked failed instead of being
//! retried forever.

use std::sync::Arc;

use fleetpilot::config::RetentionSettings;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{fresh_database, test_settings};

async fn pool() -> PgPool {
    let url = fresh_database().await;
    let pool = fleetpilot::db::connect(&url, 2).await.unwrap();
    fleetpilot::db::migrate(&pool).await.unwrap();
    pool
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_its_retention_goes_and_open_things_and_their_referrers_stay() {
    let pool = pool().await;
    let policy = Uuid::new_v4();
    exec(&pool, &format!("INSERT INTO policies (id, name, version, spec) VALUES ('{policy}', 'p', 1, '{{}}')")).await;
    // Decisions 40 days and 1 day old; the old one has a forecast, a fresh command and a one-click action
    // pointing at it.
    exec(
        &pool,
        &format!(
            "INSERT INTO forecasts (id, policy_id, made_at, step_secs, model, history, point, lower, upper, level) VALUES \
             (1, '{policy}', now() - interval '40 days', 60, 'm', '{{}}', '{{}}', '{{}}', '{{}}', 0.8), \
             (2, '{policy}', now() - interval '1 day', 60, 'm', '{{}}', '{{}}', '{{}}', '{{}}', 0.8)"
        ),
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO decisions (id, policy_id, policy_version, decided_at, target, current_replicas, desired_replicas, \
               winner, reason, proposals, inputs, forecast_id, dry_run) VALUES \
             (1, '{policy}', 1, now() - interval '40 days', 't', 1, 2, 'w', 'r', '[]', '{{}}', 1, false), \
             (2, '{policy}', 1, now() - interval '1 day', 't', 2, 2, 'w', 'r', '[]', '{{}}', 1, false)"
        ),
    )
    .await;
    exec(
        &pool,
        "INSERT INTO commands (id, node_id, action, decision_id, created_at) VALUES \
         (gen_random_uuid(), 'n', '{}', 1, now()), (gen_random_uuid(), 'n', '{}', 2, now() - interval '20 days')",
    )
    .await;
    // Anomaly events: old and ended (goes), old and still open (stays), recent and ended (stays).
    exec(
        &pool,
        "INSERT INTO anomalies (node_id, target, metric, source, started_at, ended_at, severity, score, evidence, updated_at) VALUES \
         ('n', 'a', 'util', 'detector', now() - interval '100 days', now() - interval '99 days', 'info', 1, '{}', now()), \
         ('n', 'b', 'util', 'detector', now() - interval '100 days', NULL, 'info', 1, '{}', now()), \
         ('n', 'c', 'util', 'detector', now() - interval '2 days', now() - interval '1 day', 'info', 1, '{}', now())",
    )
    .await;
    // Incidents: resolved long ago with a delivery (both go), still firing since long ago (stays).
    exec(
        &pool,
        "INSERT INTO alerts (id, dedup_key, rule, severity, source, component, group_name, summary, details, state, \
           started_at, resolved_at) VALUES \
         (1, 'k1', 'r', 'critical', 's', 'c', 'g', 's', '{}', 'resolved', now() - interval '200 days', now() - interval '199 days'), \
         (2, 'k2', 'r', 'critical', 's', 'c', 'g', 's', '{}', 'firing', now() - interval '200 days', NULL)",
    )
    .await;
    exec(
        &pool,
        "INSERT INTO alert_deliveries (alert_id, action, dedup_key, payload, delivered_at) VALUES \
         (1, 'trigger', 'k1', '{}', now() - interval '199 days'), (2, 'trigger', 'k2', '{}', now() - interval '199 days')",
    )
    .await;
    // Opportunities closed 100 days ago: one without an action (goes), one with a recent action (stays); an
    // open one first seen 100 days ago (stays).
    for (key, status, closed) in [
        ("o1", "closed", "now() - interval '100 days'"),
        ("o2", "closed", "now() - interval '100 days'"),
        ("o3", "open", "NULL"),
    ] {
        exec(
            &pool,
            &format!(
                "INSERT INTO opportunities (key, kind, status, title, evidence, gpu_hours_per_week, saving_per_week, \
                   currency, confidence, expected_value, latency, action, first_seen, last_seen, closed_at) VALUES \
                 ('{key}', 'idle_gpu', '{status}', 't', '{{}}', 1, 1, 'USD', 1, 1, '{{}}', '{{}}', \
                  now() - interval '100 days', now() - interval '100 days', {closed})"
            ),
        )
        .await;
    }
    exec(
        &pool,
        "INSERT INTO opportunity_actions (opportunity_id, acted_at, acted_by, command, ok, result, decision_id) \
         SELECT id, now() - interval '10 days', 'op', '{}', true, 'ok', 1 FROM opportunities WHERE key = 'o2'",
    )
    .await;
    exec(
        &pool,
        "INSERT INTO enrollment_events (at, kind, actor) VALUES (now() - interval '400 days', 'enrolled', 'x'), (now(), 'enrolled', 'y')",
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO policy_overrides (policy_id, replicas, created_at, hold_until, created_by, reason, decision_id) VALUES \
             ('{policy}', 2, now() - interval '100 days', now() - interval '99 days', 'op', 'old', 1), \
             ('{policy}', 3, now(), now() + interval '1 hour', 'op', 'held', NULL)"
        ),
    )
    .await;

    let deleted = fleetpilot::db::retention::expire(&pool, &RetentionSettings::default()).await.unwrap();
    let mut tables: Vec<&str> = deleted.iter().map(|(t, _)| *t).collect();
    tables.sort_unstable();
    assert_eq!(
        tables,
        [
            "alerts",
            "anomalies",
            "commands",
            "decisions",
            "enrollment_events",
            "forecasts",
            "opportunities",
            "policy_overrides"
        ],
        "{deleted:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM decisions").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM decisions WHERE id = 2 AND forecast_id IS NULL").await,
        1,
        "its forecast expired"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM forecasts").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM commands WHERE decision_id IS NULL").await,
        1,
        "a fresh command outlives its decision"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM commands").await,
        1,
        "the 20-day-old command is past commands_days (14)"
    );
    let anomalies: Vec<String> =
        sqlx::query_scalar("SELECT target FROM anomalies ORDER BY target").fetch_all(&pool).await.unwrap();
    assert_eq!(anomalies, ["b", "c"]);
    let incidents: Vec<i64> = sqlx::query_scalar("SELECT id FROM alerts").fetch_all(&pool).await.unwrap();
    assert_eq!(incidents, [2], "the firing incident stays");
    assert_eq!(count(&pool, "SELECT count(*) FROM alert_deliveries").await, 1, "deliveries go with their incident");
    let opportunities: Vec<String> =
        sqlx::query_scalar("SELECT key FROM opportunities ORDER BY key").fetch_all(&pool).await.unwrap();
    assert_eq!(opportunities, ["o2", "o3"]);
    assert_eq!(count(&pool, "SELECT count(*) FROM opportunity_actions WHERE decision_id IS NULL").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM enrollment_events").await, 1);
    let overrides: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM policy_overrides").fetch_all(&pool).await.unwrap();
    assert_eq!(overrides, ["held"], "an override 90 days past its hold goes, a held one stays");

    // 0 keeps forever; a second pass finds nothing.
    let keep = RetentionSettings { decisions_days: 0, ..RetentionSettings::default() };
    exec(&pool, "UPDATE decisions SET decided_at = now() - interval '1000 days'").await;
    assert!(fleetpilot::db::retention::expire(&pool, &keep).await.unwrap().is_empty());
    assert_eq!(count(&pool, "SELECT count(*) FROM decisions").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_undelivered_for_too_long_is_given_up_visibly_and_counted() {
    let pool = pool().await;
    exec(
        &pool,
        "INSERT INTO alerts (id, dedup_key, rule, severity, source, component, group_name, summary, details, state, started_at) \
         VALUES (1, 'k', 'r', 'critical', 's', 'c', 'g', 's', '{}', 'firing', now() - interval '2 days')",
    )
    .await;
    // Queued two days ago and never delivered (e.g. PagerDuty unreachable since), retried 40 times; and a
    // fresh one that is not due yet.
    exec(
        &pool,
        "INSERT INTO alert_deliveries (alert_id, action, dedup_key, payload, created_at, attempts, next_attempt_at, last_error) VALUES \
         (1, 'trigger', 'k', '{}', now() - interval '2 days', 40, now() + interval '1 hour', 'connection refused'), \
         (1, 'resolve', 'k', '{}', now(), 0, now() + interval '1 hour', NULL)",
    )
    .await;
    let settings = test_settings();
    assert_eq!(settings.alerts.delivery_give_up_secs, 86_400.0);
    let metrics = fleetpilot::telemetry::Metrics::new();
    let worker = fleetpilot::alerts::outbox::OutboxWorker::new(
        pool.clone(),
        &settings,
        metrics.clone(),
        Arc::new(tokio::sync::Notify::new()),
    );
    assert_eq!(worker.drain_once().await.unwrap(), 0, "nothing is due");
    let rows: Vec<(String, bool, Option<String>)> =
        sqlx::query_as("SELECT action, failed_permanently, last_error FROM alert_deliveries ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(rows[0].1, "{rows:?}");
    let why = rows[0].2.as_deref().unwrap();
    assert!(
        why.starts_with("gave up: undelivered 86400 s")
            && why.contains("40 attempts")
            && why.contains("connection refused"),
        "{why}"
    );
    assert!(!rows[1].1, "the fresh delivery is kept: {rows:?}");
    assert_eq!(metrics.alert_deliveries.with_label_values(&["given_up"]).get(), 1);
    // Listed with the failed deliveries.
    let failed = fleetpilot::db::alerts::deliveries(&pool, Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
}
