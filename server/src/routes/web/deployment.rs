//! Deployments: the list, and one deployment's demand, forecast, capacity, latency, decisions, policy
//! and rebatch history.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::{DateTime, Utc};

use super::chart::{self, Band, Marker, Panel, Series, Style};
use super::dashboard::outcome;
use super::session::WebUser;
use super::{Chrome, Params, RANGES, TimeRange, WebError, ago, render};
use crate::control::metric_name;
use crate::db;
use crate::domain::policy::TargetKind;
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
pub async fn list(
    state: web::Data<AppState>,
    user: WebUser,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let params = Params::new(q);
    let now = Utc::now();
    let (rows, policies) = tokio::try_join!(
        async { Ok::<_, WebError>(db::dashboard::deployments(&state.pool).await?) },
        state.policies.list(&state.pool)
    )?;
    let mut by_dep: HashMap<String, String> = HashMap::new();
    for p in policies.iter() {
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
    let mut chrome = user.chrome(&state, "Deployments", "deployments");
    chrome.fragment = params.fragment();
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
    forecast_note: String,
    policy: Option<PolicyView>,
    timeline: Vec<TimelineEntry>,
    commands: Vec<CommandView>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Bucket width for a range: about 300 buckets, at least the control loop's.
fn bucket_for(range: &TimeRange, min_secs: u32) -> u32 {
    let span = (range.to - range.from).num_seconds().max(1) as u32;
    let b = (span / 300).max(min_secs).max(1);
    if span > 7200 { b.div_ceil(60) * 60 } else { b }
}

fn command_view(now: DateTime<Utc>, c: db::commands::CommandRecord) -> CommandView {
    let batch = match (c.action.get("max_batch_size"), c.action.get("max_queue_delay_us")) {
        (Some(b), Some(d)) => format!("batch {b}, delay {d} µs"),
        _ => c.action.to_string(),
    };
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

/// `GET /deployments/{ns}/{name}?range=`.
#[get("/deployments/{ns}/{name}")]
pub async fn page(
    state: web::Data<AppState>,
    user: WebUser,
    path: web::Path<(String, String)>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let params = Params::new(q);
    let range = params.range()?;
    let (ns, name) = path.into_inner();
    let deployment = format!("{ns}/{name}");
    let now = Utc::now();
    let pool = &state.pool;
    let policies = state.policies.list(pool).await?;
    let policy = policies.iter().find(|p| p.spec.deployment() == deployment);
    let bucket = bucket_for(&range, state.settings.control.bucket_secs);

    let (_, points) = db::series::deployment_series(pool, &deployment, range.from, range.to).await?;
    let commands = db::dashboard::rebatch_commands(pool, &deployment, 20).await?;
    if policy.is_none() && points.is_empty() && commands.is_empty() {
        return Err(WebError::NotFound(format!("no deployment {deployment}: no serving data and no policy names it")));
    }

    let mut demand = Panel { title: "Demand".into(), ..Panel::default() };
    let mut latency = Panel { title: "Latency p95".into(), unit: "ms".into(), ..Panel::default() };
    let mut replicas = Panel { title: "Replicas".into(), ..Panel::default() };
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
    replicas.series.push(Series {
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
        let group = (p.spec.target.kind == TargetKind::AgentGroup).then_some(p.spec.target.name.as_str());
        if let Some(first) = first {
            demand.title = format!("Demand: {} (sum over replicas)", metric_name(first.metric));
            let (metric, _) =
                db::series::deployment_metric(pool, &deployment, group, first.metric, range.from, range.to, bucket)
                    .await?;
            demand.series.push(Series {
                name: "observed".into(),
                class: "c0",
                style: Style::Line,
                points: metric.iter().map(|p| (p.bucket_secs * 1000, p.total)).collect(),
            });
            if let Some(f) = db::dashboard::latest_forecast(pool, p.id).await? {
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
            let decisions = db::dashboard::decisions_of(pool, &[p.id], range.from, 5000).await?;
            let mut steps: Vec<(i64, f64)> =
                decisions.iter().rev().map(|d| (ms(d.decided_at), f64::from(d.desired_replicas))).collect();
            if let Some(last) = steps.last().copied() {
                steps.push((ms(now), last.1));
            }
            demand.series.push(Series {
                name: "capacity (decided × target)".into(),
                class: "c2",
                style: Style::Step,
                points: steps.iter().map(|(t, r)| (*t, r * first.target)).collect(),
            });
            replicas.series.push(Series { name: "decided".into(), class: "c2", style: Style::Step, points: steps });
            for d in decisions.iter().filter(|d| d.desired_replicas != d.current_replicas).take(50) {
                demand.markers.push(Marker {
                    at_ms: ms(d.decided_at),
                    label: format!("{} → {}: {}", d.current_replicas, d.desired_replicas, d.reason),
                    class: "c2",
                });
            }
            // Extension point: anomaly markers (the anomalies branch's table) go into `demand.markers` with
            // class "anomaly", like the decision markers above.
            let mut shown: Vec<_> = decisions
                .iter()
                .filter(|d| d.desired_replicas != d.current_replicas || d.error.is_some())
                .take(30)
                .collect();
            if shown.is_empty() {
                shown = decisions.iter().take(5).collect();
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
            p.spec.targets().iter().map(|t| format!("{} at {} per replica", metric_name(t.metric), t.target)).collect();
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
    let chart = chart::time_chart("deployment-chart", &[demand, latency, replicas], ms(range.from), end_ms);
    let mut chrome = user.chrome(&state, format!("Deployment {deployment}"), "deployments");
    chrome.fragment = params.fragment();
    let t = DeploymentTemplate {
        chrome,
        deployment,
        ranges: super::options(RANGES, range.key),
        chart,
        forecast_note,
        policy: policy_view,
        timeline,
        commands: commands.into_iter().map(|c| command_view(now, c)).collect(),
    };
    render(&t, StatusCode::OK)
}
