//! The fleet overview page.

use actix_web::{get, web};
use askama::Template;
use askama_web::WebTemplate;
use chrono::{DateTime, Utc};

use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// A node as shown.
pub struct NodeView {
    node_id: String,
    hostname: String,
    gpu_source: String,
    group: String,
    deployment: String,
    gpus: i64,
    mean_util: String,
    last_seen: String,
    silent: bool,
}

/// A GPU as shown.
pub struct GpuView {
    node_id: String,
    gpu_index: i32,
    model: String,
    util_pct: u32,
    util: String,
    mem: String,
    power: String,
    temp: String,
    hot: bool,
    age: String,
}

/// A decision as shown.
pub struct DecisionView {
    when: String,
    target: String,
    change: String,
    outcome: String,
    reason: String,
}

/// An alert as shown.
pub struct AlertView {
    since: String,
    severity: String,
    rule: String,
    source: String,
    summary: String,
}

/// `templates/index.html`.
#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct IndexTemplate {
    generated_at: String,
    nodes: Vec<NodeView>,
    gpus: Vec<GpuView>,
    decisions: Vec<DecisionView>,
    alerts: Vec<AlertView>,
    gpus_reporting: usize,
    fleet_util: String,
    idle_gpus: usize,
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// `GET /`: nodes, GPUs with their latest utilisation, recent decisions, open alerts.
#[get("/")]
pub async fn index(state: web::Data<AppState>) -> Result<IndexTemplate, ApiError> {
    let now = Utc::now();
    let pool = &state.pool;
    let silent_secs = i64::from(state.settings.alerts.node_silent_secs);
    let (nodes, gpus, decisions, alerts) = tokio::try_join!(
        db::dashboard::nodes(pool),
        db::dashboard::gpus(pool),
        db::dashboard::decisions(pool, 20),
        db::alerts::open(pool),
    )?;
    let fresh: Vec<_> = gpus.iter().filter(|g| (now - g.ts).num_seconds() <= silent_secs).collect();
    let fleet_util = if fresh.is_empty() {
        "–".to_string()
    } else {
        format!("{:.0}%", fresh.iter().map(|g| f64::from(g.util_pct)).sum::<f64>() / fresh.len() as f64)
    };
    let idle_gpus = fresh.iter().filter(|g| g.util_pct < 5.0).count();
    let mut alerts: Vec<_> = alerts.into_values().collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a.started_at));
    Ok(IndexTemplate {
        generated_at: now.format("%H:%M:%S UTC").to_string(),
        gpus_reporting: fresh.len(),
        fleet_util,
        idle_gpus,
        nodes: nodes
            .into_iter()
            .map(|n| NodeView {
                silent: (now - n.last_seen).num_seconds() > silent_secs,
                last_seen: ago(now, n.last_seen),
                node_id: n.node_id,
                hostname: n.hostname,
                gpu_source: n.gpu_source,
                group: n.agent_group.unwrap_or_default(),
                deployment: n.deployment.unwrap_or_default(),
                gpus: n.gpus,
                mean_util: n.mean_util.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "–".into()),
            })
            .collect(),
        gpus: gpus
            .into_iter()
            .map(|g| GpuView {
                util_pct: g.util_pct.clamp(0.0, 100.0).round() as u32,
                util: format!("{:.0}%", g.util_pct),
                mem: format!(
                    "{:.1} / {:.0} GiB",
                    g.mem_used_bytes as f64 / 1073741824.0,
                    g.mem_total_bytes as f64 / 1073741824.0
                ),
                power: format!("{:.0} W", g.power_w),
                temp: format!("{:.0} °C", g.temp_c),
                hot: f64::from(g.temp_c) >= state.settings.alerts.gpu_temp_c,
                age: ago(now, g.ts),
                node_id: g.node_id,
                gpu_index: g.gpu_index,
                model: g.model,
            })
            .collect(),
        decisions: decisions
            .into_iter()
            .map(|d| DecisionView {
                when: ago(now, d.decided_at),
                change: format!("{} → {}", d.current_replicas, d.desired_replicas),
                outcome: match (&d.error, d.dry_run, d.applied) {
                    (Some(e), _, _) => format!("failed: {e}"),
                    (None, true, _) => "dry run".into(),
                    (None, false, true) => "applied".into(),
                    (None, false, false) => "pending".into(),
                },
                target: d.target,
                reason: d.reason,
            })
            .collect(),
        alerts: alerts
            .into_iter()
            .map(|a| AlertView {
                since: ago(now, a.started_at),
                severity: a.severity,
                rule: a.rule,
                source: a.source,
                summary: a.summary,
            })
            .collect(),
    })
}
