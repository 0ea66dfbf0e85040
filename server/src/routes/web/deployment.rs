//! Deployments: the list, and one deployment's demand, forecast, capacity, latency, decisions, policy
//! and rebatch history.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::{DateTime, Duration, Utc};

use super::WebCaches;
use super::anomalies::{AnomalyView, MAX_MARKED, anomaly_view, evidence_words, mark};
use super::chart::{self, Band, Marker, Panel, Series, Style};
use super::dashboard::outcome;
use super::{Chrome, Params, RANGES, TimeRange, Viewer, WebError, ago, render};
use crate::db;
use crate::db::anomalies::StoredAnomaly;
use crate::db::policies::StoredPolicy;
use crate::db::series::ChartPlan;
use crate::domain::policy::{PolicyMode, TargetKind};
use crate::state::AppState;

/// A deployment row.
pub struct DeploymentView {
    name: String,
    link: String,
    replicas: i64,
    rps: String,
    ttft: String,
    seen: String,
    policy: String,
}

/// `templates/deployments.html`.
#[derive(Template)]
#[template(path = "deployments.html")]
pub struct DeploymentsTemplate {
    chrome: Chrome,
    deployments: Vec<DeploymentView>,
}

/// `GET /deployments`.
#[get("/deployments")]
pub async fn list(v: Viewer, params: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let now = Utc::now();
    let (rows, policies) = tokio::try_join!(
        async { Ok::<_, WebError>(db::dashboard::deployments(&state.pool).await?) },
        caches.policies.list(&state.pool, state.policy_epoch())
    )?;
    let mut by_dep: HashMap<String, String> = HashMap::new();
    for p in policies.iter().filter(|p| !p.spec.is_shadow()) {
        by_dep.entry(p.spec.deployment()).or_insert_with(|| p.spec.name.clone());
    }
    let mut out: Vec<DeploymentView> = rows
        .into_iter()
        .map(|r| DeploymentView {
            link: format!("/deployments/{}", super::url_encode(&r.deployment)),
            policy: by_dep.remove(&r.deployment).unwrap_or_default(),
            replicas: r.replicas,
            rps: r.requests_per_s.map(chart::num).unwrap_or_else(|| "–".into()),
            ttft: r.ttft_p95_s.map(|v| format!("{:.0} ms", v * 1000.0)).unwrap_or_else(|| "–".into()),
            seen: r.last_ts.map(|t| ago(now, t)).unwrap_or_default(),
            name: r.deployment,
        })
        .collect();
    // Deployments a policy names but that report nothing yet.
    for (dep, policy) in by_dep {
        out.push(DeploymentView {
            link: format!("/deployments/{}", super::url_encode(&dep)),
            name: dep,
            replicas: 0,
            rps: "–".into(),
            ttft: "–".into(),
            seen: "never".into(),
            policy,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let chrome = user.list_chrome(&state, "Deployments", "deployments", &params);
    render(&DeploymentsTemplate { chrome, deployments: out }, StatusCode::OK)
}

/// A decision in the timeline.
pub struct TimelineEntry {
    when: String,
    at: String,
    change: String,
    outcome: String,
    reason: String,
    failed: bool,
}

/// A rebatch command.
pub struct CommandView {
    when: String,
    node: String,
    node_link: String,
    batch: String,
    state: String,
    result: String,
}

/// A serving replica: its latest reading, the batching it was set to, and whether its GPUs depart from
/// their peers.
pub struct ReplicaView {
    replica: String,
    node: String,
    node_link: String,
    engine: String,
    seen: String,
    stale: bool,
    running: String,
    queue: String,
    kv: String,
    ttft: String,
    itl: String,
    batch_mean: String,
    batching: String,
    batching_when: String,
    outlier: bool,
    peers: String,
    peers_link: String,
}

/// One row of the shadow table: a policy's recorded decisions priced against the observed demand.
pub struct ShadowRow {
    id: String,
    name: String,
    mode: &'static str,
    decisions: usize,
    gpu_hours: String,
    cost: String,
    vs_active: String,
    attainment: String,
    actions: String,
    peak: u32,
}

/// The shadow table and what it was computed on.
pub struct ShadowView {
    rows: Vec<ShadowRow>,
    note: String,
    without: String,
    report_link: String,
}

/// The deployment's policy.
pub struct PolicyView {
    id: String,
    name: String,
    version: i32,
    summary: String,
    dry_run: bool,
}

/// `templates/deployment.html`.
#[derive(Template)]
#[template(path = "deployment.html")]
pub struct DeploymentTemplate {
    chrome: Chrome,
    deployment: String,
    ranges: Vec<super::Opt>,
    chart: String,
    resolution: String,
    forecast_note: String,
    policy: Option<PolicyView>,
    shadow: Option<ShadowView>,
    timeline: Vec<TimelineEntry>,
    replicas: Vec<ReplicaView>,
    outliers: usize,
    commands: Vec<CommandView>,
    anomalies: Vec<AnomalyView>,
    anomalies_link: String,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Points across a deployment chart at most.
const CHART_POINTS: i64 = 300;

fn batching_words(action: &serde_json::Value) -> Option<String> {
    match (action.get("max_batch_size"), action.get("max_queue_delay_us")) {
        (Some(b), Some(d)) => Some(format!("batch {b}, delay {d} µs")),
        _ => None,
    }
}

fn command_view(now: DateTime<Utc>, c: db::commands::CommandRecord) -> CommandView {
    let batch = batching_words(&c.action).unwrap_or_else(|| c.action.to_string());
    let state = match (c.ok, c.completed_at, c.acked_at, c.delivered_at) {
        (Some(true), _, _, _) => "applied",
        (Some(false), _, _, _) => "failed",
        (None, _, Some(_), _) => "received",
        (None, _, None, Some(_)) => "delivered",
        _ => "queued",
    };
    CommandView {
        when: ago(now, c.created_at),
        node_link: format!("/nodes/{}", super::url_encode(&c.node_id)),
        node: c.node_id,
        batch,
        state: state.into(),
        result: c.result.unwrap_or_default(),
    }
}

fn ms_words(s: Option<f32>) -> String {
    s.map(|v| format!("{:.0} ms", f64::from(v) * 1000.0)).unwrap_or_else(|| "–".into())
}

/// The replicas table: latest readings, applied batching per node, open peer outliers per node.
fn replica_views(
    state: &AppState,
    now: DateTime<Utc>,
    range_key: &str,
    rows: &[db::dashboard::ReplicaRow],
    batching: &[db::commands::CommandRecord],
    events: &[StoredAnomaly],
) -> Vec<ReplicaView> {
    let silent = i64::from(state.settings.alerts.node_silent_secs);
    rows.iter()
        .map(|r| {
            let applied = batching.iter().find(|c| c.node_id == r.node_id);
            let outliers: Vec<String> = events
                .iter()
                .filter(|a| a.source == "peers" && a.ended_at.is_none() && a.node_id == r.node_id)
                .map(|a| {
                    let gpu = a.target.rsplit(':').next().unwrap_or("?");
                    format!("GPU {gpu} ({}): {}", a.severity, evidence_words(a))
                })
                .collect();
            ReplicaView {
                node_link: format!("/nodes/{}", super::url_encode(&r.node_id)),
                peers_link: format!("/anomalies?node={}&state=all&range={range_key}", super::url_encode(&r.node_id)),
                seen: ago(now, r.ts),
                stale: (now - r.ts).num_seconds() > silent,
                running: chart::num(f64::from(r.running)),
                queue: chart::num(f64::from(r.queue_depth)),
                kv: r.kv_cache_pct.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "–".into()),
                ttft: ms_words(r.ttft_p95_s),
                itl: ms_words(r.itl_p95_s),
                batch_mean: r.batch_size_mean.map(|v| chart::num(f64::from(v))).unwrap_or_else(|| "–".into()),
                batching: applied
                    .and_then(|c| batching_words(&c.action))
                    .unwrap_or_else(|| "engine's own (never rebatched)".into()),
                batching_when: applied.map(|c| ago(now, c.completed_at.unwrap_or(c.created_at))).unwrap_or_default(),
                outlier: !outliers.is_empty(),
                peers: if outliers.is_empty() { "no open outlier".into() } else { outliers.join("; ") },
                replica: r.replica.clone(),
                node: r.node_id.clone(),
                engine: r.engine.clone(),
            }
        })
        .collect()
}

/// What a deployment page reads, shared between the requests of one second (see
/// [`super::cache::SharedData`]).
pub struct Data {
    read: ChartPlan,
    points: Vec<db::series::DeploymentPoint>,
    commands: Vec<db::commands::CommandRecord>,
    replicas: Vec<db::dashboard::ReplicaRow>,
    batching: Vec<db::commands::CommandRecord>,
    events: Vec<StoredAnomaly>,
    policy_data: Option<PolicyData>,
    shadow: Option<crate::control::shadow::ShadowReport>,
}

/// What the page reads of its policy's loop: the observed metric, the latest forecast, the decisions.
struct PolicyData {
    metric: Vec<db::series::Point>,
    forecast: Option<db::dashboard::ForecastRow>,
    decisions: Vec<db::dashboard::DecisionItem>,
}

/// The key of a deployment page's shared data: the deployment, the range, and the policy version it was
/// read for (an edited policy is read afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataKey {
    deployment: String,
    range: &'static str,
    policy: Option<(uuid::Uuid, i32)>,
}

/// Reads a deployment page's data: the chart series (raw samples only for short ranges: a deployment is
/// many replicas reporting every second, so longer ranges read the 1-minute rollups plus the minutes not
/// rolled up yet), rebatch commands, replicas, anomaly events, and the policy's metric, forecast and
/// decisions.
async fn load(
    state: &AppState,
    caches: &WebCaches,
    deployment: &str,
    range: &TimeRange,
    policy: Option<&StoredPolicy>,
    all: &[StoredPolicy],
) -> Result<Data, WebError> {
    let pool = &state.pool;
    let plan = ChartPlan::new(
        range.from,
        range.to,
        Duration::minutes(15),
        CHART_POINTS,
        i64::from(state.settings.control.bucket_secs),
    )
    .rolled_up_to(caches.watermark.get(pool).await?);
    let policy_data = async {
        let Some(p) = policy else { return Ok(None) };
        let Some(first) = p.spec.targets().first().copied() else { return Ok(None) };
        let group = (p.spec.target.kind == TargetKind::AgentGroup).then_some(p.spec.target.name.as_str());
        let ((_, metric), forecast, decisions) = tokio::try_join!(
            db::series::deployment_metric_chart(pool, deployment, group, first.metric, range.from, range.to, &plan),
            db::dashboard::latest_forecast(pool, p.id),
            db::dashboard::decision_steps(pool, p.id, range.from, 5000),
        )?;
        Ok::<_, sqlx::Error>(Some(PolicyData { metric, forecast, decisions }))
    };
    // With shadow policies: the last 24 h priced for each, beside the active policy.
    let shadow = async {
        let Some(first_shadow) = all.iter().find(|p| p.spec.is_shadow() && p.spec.deployment() == deployment) else {
            return Ok(None);
        };
        let pricing = crate::opportunities::detector_config(&state.settings.opportunities).pricing;
        crate::control::shadow::report(pool, all, first_shadow, Utc::now(), &pricing).await.map(Some).map_err(|e| {
            match e {
                crate::control::shadow::ShadowError::Db(e) => WebError::from(e),
                other => WebError::Internal(other.to_string()),
            }
        })
    };
    let (stored, shadow) = tokio::join!(
        async {
            tokio::try_join!(
                db::series::deployment_chart(pool, deployment, range.from, range.to, &plan),
                db::dashboard::rebatch_commands(pool, deployment, 20),
                db::dashboard::replicas_of(pool, deployment),
                db::dashboard::applied_batching(pool, deployment),
                db::anomalies::of_deployment(pool, deployment, range.from, range.to, MAX_MARKED),
                policy_data,
            )
        },
        shadow,
    );
    let ((read, points), commands, replicas, batching, events, policy_data) = stored?;
    let shadow = shadow?;
    Ok(Data { read, points, commands, replicas, batching, events, policy_data, shadow })
}

/// `GET /deployments/{ns}/{name}?range=`.
#[get("/deployments/{ns}/{name}")]
pub async fn page(v: Viewer, path: web::Path<(String, String)>, params: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let range = params.range()?;
    let (ns, name) = path.into_inner();
    let deployment = format!("{ns}/{name}");
    let now = Utc::now();
    let pool = &state.pool;
    let policies = caches.policies.list(pool, state.policy_epoch()).await?;
    let policy = db::policies::active_for(&policies, &deployment);
    let key = DataKey { deployment: deployment.clone(), range: range.key, policy: policy.map(|p| (p.id, p.version)) };
    let data = caches.deployment_data.get(key, load(&state, &caches, &deployment, &range, policy, &policies)).await?;
    let Data { read, points, commands, replicas, batching, events, policy_data, shadow } = &*data;
    if policy.is_none() && points.is_empty() && commands.is_empty() && replicas.is_empty() {
        return Err(WebError::NotFound(format!("no deployment {deployment}: no serving data and no policy names it")));
    }

    let mut demand = Panel { title: "Demand".into(), ..Panel::default() };
    let mut latency = Panel { title: "Latency p95 (worst replica)".into(), unit: "ms".into(), ..Panel::default() };
    let mut replicas_panel = Panel { title: "Replicas".into(), ..Panel::default() };
    latency.series.push(Series {
        name: "TTFT".into(),
        class: "c3",
        style: Style::Line,
        points: points.iter().filter_map(|p| p.ttft_p95_s.map(|v| (ms(p.ts), v * 1000.0))).collect(),
    });
    latency.series.push(Series {
        name: "ITL".into(),
        class: "c4",
        style: Style::Line,
        points: points.iter().filter_map(|p| p.itl_p95_s.map(|v| (ms(p.ts), v * 1000.0))).collect(),
    });
    replicas_panel.series.push(Series {
        name: "reporting".into(),
        class: "c0",
        style: Style::Step,
        points: points.iter().map(|p| (ms(p.ts), p.replicas as f64)).collect(),
    });

    let mut end_ms = ms(range.to);
    let mut forecast_note = String::new();
    let mut timeline = Vec::new();
    let mut policy_view = None;
    if let Some(p) = &policy {
        let first = p.spec.targets().first().copied();
        if let Some(first) = first {
            demand.title = format!("Demand: {}, all replicas", first.metric.name());
            let PolicyData { metric, forecast, decisions } = policy_data
                .as_ref()
                .ok_or_else(|| WebError::Internal("the deployment's data was read without its policy".into()))?;
            demand.series.push(Series {
                name: "observed".into(),
                class: "c0",
                style: Style::Line,
                points: metric.iter().map(|p| (p.bucket_secs * 1000, p.total)).collect(),
            });
            if let Some(f) = forecast {
                let step = i64::from(f.step_secs) * 1000;
                let at = |i: usize| ms(f.made_at) + step * (i as i64 + 1);
                demand.bands.push(Band {
                    name: format!("{:.0}% interval", f.level * 100.0),
                    class: "c1",
                    points: f.lower.iter().zip(&f.upper).enumerate().map(|(i, (l, u))| (at(i), *l, *u)).collect(),
                });
                demand.series.push(Series {
                    name: "forecast".into(),
                    class: "c1",
                    style: Style::Dashed,
                    points: f.point.iter().enumerate().map(|(i, v)| (at(i), *v)).collect(),
                });
                end_ms = end_ms.max(at(f.point.len().saturating_sub(1)));
                forecast_note = format!(
                    "latest forecast {} ({}, {} steps of {} s, {:.0}% interval)",
                    ago(now, f.made_at),
                    f.model,
                    f.point.len(),
                    f.step_secs,
                    f.level * 100.0
                );
            } else {
                forecast_note = "no forecast stored yet".into();
            }
            // Replica steps from the decision in force at the range's start.
            let mut steps: Vec<(i64, f64)> = decisions
                .iter()
                .rev()
                .map(|d| (ms(d.decided_at).max(ms(range.from)), f64::from(d.desired_replicas)))
                .collect();
            let decisions: Vec<_> = decisions.iter().filter(|d| d.decided_at >= range.from).collect();
            if let Some(last) = steps.last().copied() {
                steps.push((ms(now), last.1));
            }
            demand.series.push(Series {
                name: "capacity (decided × target)".into(),
                class: "c2",
                style: Style::Step,
                points: steps.iter().map(|(t, r)| (*t, r * first.target)).collect(),
            });
            replicas_panel.series.push(Series {
                name: "decided".into(),
                class: "c2",
                style: Style::Step,
                points: steps,
            });
            for d in decisions.iter().filter(|d| d.desired_replicas != d.current_replicas).take(50) {
                demand.markers.push(Marker {
                    at_ms: ms(d.decided_at),
                    label: format!("{} → {}: {}", d.current_replicas, d.desired_replicas, d.reason),
                    class: "c2",
                });
            }
            let mut shown: Vec<_> = decisions
                .iter()
                .copied()
                .filter(|d| d.desired_replicas != d.current_replicas || d.error.is_some())
                .take(30)
                .collect();
            if shown.is_empty() {
                shown = decisions.iter().take(5).copied().collect();
            }
            timeline = shown
                .into_iter()
                .map(|d| TimelineEntry {
                    when: ago(now, d.decided_at),
                    at: d.decided_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    change: format!("{} → {}", d.current_replicas, d.desired_replicas),
                    outcome: outcome(&d.error, d.dry_run, d.applied),
                    failed: d.error.is_some(),
                    reason: d.reason.clone(),
                })
                .collect();
        }
        let targets: Vec<String> =
            p.spec.targets().iter().map(|t| format!("{} at {} per replica", t.metric.name(), t.target)).collect();
        policy_view = Some(PolicyView {
            id: p.id.to_string(),
            name: p.spec.name.clone(),
            version: p.version,
            summary: format!(
                "{}; {}..={} replicas; {}; cold start {} s; predictive {:?}",
                p.spec.target_label(),
                p.spec.min_replicas,
                p.spec.max_replicas,
                targets.join(", "),
                p.spec.cold_start_secs,
                p.spec.predictive.mode
            ),
            dry_run: p.spec.dry_run,
        });
    } else {
        demand.title = "Demand: requests per second".into();
        demand.series.push(Series {
            name: "requests/s".into(),
            class: "c0",
            style: Style::Line,
            points: points.iter().map(|p| (ms(p.ts), p.requests_per_s)).collect(),
        });
    }
    let shadow_view = shadow.as_ref().map(|r| {
        let money = |v: f64| format!("{}{v:.2}", r.currency);
        for (i, row) in r.policies.iter().filter(|row| row.mode == PolicyMode::Shadow).enumerate() {
            replicas_panel.series.push(Series {
                name: format!("shadow {}", row.name),
                class: ["c3", "c4", "c5", "c1"][i % 4],
                style: Style::Step,
                points: row
                    .path
                    .iter()
                    .filter(|(t, _)| *t >= ms(range.from))
                    .map(|(t, n)| (*t, f64::from(*n)))
                    .collect(),
            });
        }
        ShadowView {
            rows: r
                .policies
                .iter()
                .map(|row| ShadowRow {
                    id: row.policy_id.to_string(),
                    name: row.name.clone(),
                    mode: if row.mode == PolicyMode::Shadow { "shadow" } else { "active" },
                    decisions: row.decisions,
                    gpu_hours: format!("{:.1}", row.gpu_hours),
                    cost: money(row.cost),
                    vs_active: row.gpu_hours_vs_active.map(|v| format!("{v:.2}×")).unwrap_or_default(),
                    attainment: format!("{:.1} %", row.slo_attainment * 100.0),
                    actions: format!("{:.1}", row.actions_per_hour),
                    peak: row.peak_replicas,
                })
                .collect(),
            note: format!(
                "{} to {} in {}-s steps: each policy's recorded decisions replayed against the observed demand                  ({} steps estimated by the engine, {} from GPU busy time only) through the fluid model, cold start                  {:.0} s, delay budget {:.1} s, {} at {}{:.2}/GPU-hour",
                r.from.format("%Y-%m-%d %H:%M"),
                r.to.format("%H:%M UTC"),
                r.step_secs,
                r.demand_steps_estimated,
                r.demand_steps_from_utilization,
                r.cold_start_secs,
                r.queue_delay_slo_secs,
                r.gpu_model.as_deref().unwrap_or("unknown GPU"),
                r.currency,
                r.price_per_gpu_hour
            ),
            without: r.without_decisions.join(", "),
            report_link: format!("/api/v1/policies/{}/shadow-report", r.policy_id),
        }
    });
    // The deployment's own anomaly events on the chart (latency ones on the latency panel); its GPUs' peer
    // outliers show in the replicas table.
    let anomalies: Vec<AnomalyView> = events.iter().map(|a| anomaly_view(now, a, range.key)).collect();
    for (a, v) in events.iter().zip(&anomalies).filter(|(a, _)| a.target.starts_with("deployment:")) {
        let panel = if a.metric.contains("ttft") || a.metric.contains("itl") { &mut latency } else { &mut demand };
        mark(panel, a, v, ms(range.to));
    }
    let replicas = replica_views(&state, now, range.key, replicas, batching, events);
    let chart = chart::time_chart("deployment-chart", &[demand, latency, replicas_panel], ms(range.from), end_ms);
    let chrome = user.list_chrome(&state, format!("Deployment {deployment}"), "deployments", &params);
    let t = DeploymentTemplate {
        chrome,
        anomalies_link: format!(
            "/anomalies?deployment={}&state=all&range={}",
            super::url_encode(&deployment),
            range.key
        ),
        deployment,
        ranges: super::options(RANGES, range.key),
        chart,
        resolution: read.describe(),
        forecast_note,
        policy: policy_view,
        shadow: shadow_view,
        timeline,
        outliers: replicas.iter().filter(|r| r.outlier).count(),
        replicas,
        commands: commands.iter().map(|c| command_view(now, c.clone())).collect(),
        anomalies,
    };
    render(&t, StatusCode::OK)
}
