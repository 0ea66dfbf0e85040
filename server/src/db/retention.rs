//! Retention of the history tables (telemetry partitions and rollups have their own, in [`super`] and
//! [`super::rollups`]): each pass deletes rows older than their table's setting in batches, so a first pass over a
//! large backlog never holds long locks or one huge transaction.

use sqlx::PgPool;

use crate::config::RetentionSettings;

/// Rows one statement deletes at most; a pass repeats it until fewer are left.
const BATCH: i64 = 10_000;

/// What a table keeps: the rows a retention pass may delete, as a condition on `$1` (the age in days).
fn rule(setting: &str) -> Option<(&'static str, &'static str)> {
    Some(match setting {
        "decisions_days" => ("decisions", "decided_at < now() - make_interval(days => $1)"),
        "forecasts_days" => ("forecasts", "made_at < now() - make_interval(days => $1)"),
        "commands_days" => ("commands", "created_at < now() - make_interval(days => $1)"),
        // Only ended events: an open one is still being updated.
        "anomalies_days" => ("anomalies", "ended_at IS NOT NULL AND ended_at < now() - make_interval(days => $1)"),
        // Only resolved incidents; their deliveries go with them (ON DELETE CASCADE).
        "incidents_days" => ("alerts", "resolved_at IS NOT NULL AND resolved_at < now() - make_interval(days => $1)"),
        "alert_instances_days" => {
            ("alert_instances", "state = 'resolved' AND resolved_at < now() - make_interval(days => $1)")
        }
        // Only closed or dismissed ones that no recorded one-click action points at.
        "opportunities_days" => (
            "opportunities",
            "status <> 'open' AND coalesce(closed_at, dismissed_at, last_seen) < now() - make_interval(days => $1) \
             AND NOT EXISTS (SELECT 1 FROM opportunity_actions a WHERE a.opportunity_id = opportunities.id)",
        ),
        "opportunity_actions_days" => ("opportunity_actions", "acted_at < now() - make_interval(days => $1)"),
        "enrollment_events_days" => ("enrollment_events", "at < now() - make_interval(days => $1)"),
        "gpu_probes_days" => ("gpu_probes", "ts < now() - make_interval(days => $1)"),
        "overrides_days" => ("policy_overrides", "hold_until < now() - make_interval(days => $1)"),
        _ => return None,
    })
}

/// Deletes every history row past its retention; returns (table, rows deleted) for the tables that lost rows.
/// Actions are visited before opportunities, so an opportunity whose last action expires goes in the same pass;
/// other references are `ON DELETE SET NULL` (a command outlives its decision) or cascade (deliveries).
pub async fn expire(pool: &PgPool, r: &RetentionSettings) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let mut out = Vec::new();
    for (setting, days) in r.tables() {
        let Some((table, condition)) = rule(setting) else { continue };
        if days == 0 {
            continue;
        }
        // Table and condition are fixed strings from `rule`, never input.
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {condition} LIMIT {BATCH}))"
        );
        let mut total = 0u64;
        loop {
            let n =
                sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(days as i32).execute(pool).await?.rows_affected();
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        if total > 0 {
            out.push((table, total));
        }
    }
    Ok(out)
}
