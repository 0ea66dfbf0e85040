//! Scaling policies: list, create and edit through a form (validated exactly like the API, the error shown
//! next to its field), and a dry-run preview over the last 24 hours of stored data.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use chrono::{Duration, Utc};
use forecasting::decision::{DecisionInput, DecisionState, MetricObservation, PredictiveMode, decide};
use serde_json::{Value, json};
use uuid::Uuid;

use super::chart::{self, Panel, Series, Style};
use super::session::WebUser;
use super::{Chrome, WebError, ago, render};
use crate::control::{fill_gaps, metric_name};
use crate::db::{self, policies::Write};
use crate::domain::policy::{PolicySpec, TargetKind};
use crate::error::parse_json;
use crate::state::AppState;

/// A policy row.
pub struct PolicyRow {
    id: String,
    name: String,
    version: i32,
    target: String,
    deployment: String,
    deployment_link: String,
    metrics: String,
    replicas: String,
    dry_run: bool,
    updated: String,
}

/// `templates/policies.html`.
#[derive(Template)]
#[template(path = "policies.html")]
pub struct PoliciesTemplate {
    chrome: Chrome,
    rows: Vec<PolicyRow>,
}

fn parse_id(s: &str) -> Result<Uuid, WebError> {
    Uuid::parse_str(s).map_err(|_| WebError::field("id", "must be a policy id (UUID)"))
}

/// `GET /policies`.
#[get("/policies")]
pub async fn list(state: web::Data<AppState>, user: WebUser) -> Result<HttpResponse, WebError> {
    let now = Utc::now();
    let rows = db::policies::list(&state.pool)
        .await?
        .into_iter()
        .map(|p| {
            let dep = p.spec.deployment();
            PolicyRow {
                id: p.id.to_string(),
                version: p.version,
                target: p.spec.target_label(),
                deployment_link: format!("/deployments/{}", super::url_encode(&dep)),
                deployment: dep,
                metrics: p
                    .spec
                    .targets()
                    .iter()
                    .map(|t| format!("{} {}", metric_name(t.metric), t.target))
                    .collect::<Vec<_>>()
                    .join(", "),
                replicas: format!("{}..={}", p.spec.min_replicas, p.spec.max_replicas),
                dry_run: p.spec.dry_run,
                updated: ago(now, p.updated_at),
                name: p.spec.name,
            }
        })
        .collect();
    let mut chrome = user.chrome(&state, "Policies", "policies");
    chrome.refresh_secs = 0;
    render(&PoliciesTemplate { chrome, rows }, StatusCode::OK)
}

/// `templates/policy_form.html`: create (no id) or edit.
#[derive(Template)]
#[template(path = "policy_form.html")]
pub struct PolicyFormTemplate {
    chrome: Chrome,
    id: Option<String>,
    version: i32,
    values: HashMap<String, String>,
    error_field: String,
    error: String,
}

impl PolicyFormTemplate {
    /// The form value of `field`.
    pub fn v(&self, field: &str) -> &str {
        self.values.get(field).map(String::as_str).unwrap_or("")
    }
    /// Whether `field` holds `value` (selects, checkboxes).
    pub fn is(&self, field: &str, value: &str) -> bool {
        self.v(field) == value
    }
    /// The error of `field`, if it is the one to blame.
    pub fn err(&self, field: &str) -> &str {
        if self.error_field == field { &self.error } else { "" }
    }
}

/// The form fields, named after the API's JSON paths so `PolicySpec::validate`'s field names match them.
const FIELDS: &[&str] = &[
    "name",
    "target.kind",
    "target.namespace",
    "target.name",
    "target.deployment",
    "min_replicas",
    "max_replicas",
    "metric",
    "target_value",
    "cold_start_secs",
    "tolerance",
    "scale_to_zero_idle_secs",
    "predictive.mode",
    "predictive.quantile",
    "slo.ttft_p95_ms",
    "slo.itl_p95_ms",
    "rebatch.min_batch_size",
    "rebatch.max_batch_size",
    "rebatch.itl_slo_ms",
    "dry_run",
];

/// Form values of a stored spec.
fn values_of(spec: &PolicySpec) -> HashMap<String, String> {
    let json = serde_json::to_value(spec).unwrap_or_default();
    let mut out = HashMap::new();
    for f in FIELDS {
        let ptr = format!("/{}", f.replace('.', "/"));
        let v = match json.pointer(&ptr) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => {
                if *b {
                    "on".into()
                } else {
                    String::new()
                }
            }
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        out.insert((*f).to_string(), v);
    }
    out
}

fn defaults() -> HashMap<String, String> {
    let mut v: HashMap<String, String> = FIELDS.iter().map(|f| ((*f).to_string(), String::new())).collect();
    for (k, d) in [
        ("target.kind", "deployment"),
        ("min_replicas", "1"),
        ("max_replicas", "8"),
        ("metric", "gpu_utilization"),
        ("target_value", "60"),
        ("cold_start_secs", "120"),
        ("tolerance", "0.1"),
        ("predictive.mode", "on"),
        ("predictive.quantile", "0.9"),
        ("dry_run", "on"),
    ] {
        v.insert(k.into(), d.into());
    }
    v
}

/// Sets `path` (dotted) in a JSON object, creating objects on the way.
fn set(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else { return };
        if i == parts.len() - 1 {
            map.insert((*p).to_string(), v);
            return;
        }
        cur = map.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// Builds the spec from the form on top of `base` (fields the form does not show are kept), and validates
/// it like the API does. Errors name the form field.
fn spec_from_form(base: Value, form: &HashMap<String, String>) -> Result<PolicySpec, WebError> {
    let mut spec = if base.is_object() { base } else { json!({}) };
    let get = |f: &str| form.get(f).map(|s| s.trim()).unwrap_or("");
    let text = |f: &str| -> Value { if get(f).is_empty() { Value::Null } else { Value::String(get(f).to_string()) } };
    let whole = |f: &str| -> Result<Value, WebError> {
        match get(f) {
            "" => Ok(Value::Null),
            s => s.parse::<u64>().map(Value::from).map_err(|_| WebError::field(f, "must be a whole number")),
        }
    };
    let number = |f: &str| -> Result<Value, WebError> {
        match get(f) {
            "" => Ok(Value::Null),
            s => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(json!(v)),
                _ => Err(WebError::field(f, "must be a number")),
            },
        }
    };
    set(&mut spec, "name", Value::String(get("name").to_string()));
    set(&mut spec, "target.kind", Value::String(get("target.kind").to_string()));
    set(&mut spec, "target.namespace", text("target.namespace"));
    set(&mut spec, "target.name", Value::String(get("target.name").to_string()));
    set(&mut spec, "target.deployment", text("target.deployment"));
    for f in ["min_replicas", "max_replicas"] {
        let v = whole(f)?;
        if v.is_null() {
            return Err(WebError::field(f, "is required"));
        }
        set(&mut spec, f, v);
    }
    set(&mut spec, "metric", text("metric"));
    set(&mut spec, "target_value", number("target_value")?);
    for f in ["cold_start_secs", "scale_to_zero_idle_secs"] {
        let v = whole(f)?;
        if !(v.is_null() && f == "cold_start_secs") {
            set(&mut spec, f, v);
        }
    }
    let tol = number("tolerance")?;
    if !tol.is_null() {
        set(&mut spec, "tolerance", tol);
    }
    set(&mut spec, "predictive.mode", Value::String(get("predictive.mode").to_string()));
    let q = number("predictive.quantile")?;
    if !q.is_null() {
        set(&mut spec, "predictive.quantile", q);
    }
    let (ttft, itl) = (number("slo.ttft_p95_ms")?, number("slo.itl_p95_ms")?);
    if ttft.is_null() && itl.is_null() {
        set(&mut spec, "slo", Value::Null);
    } else {
        set(&mut spec, "slo", json!({"ttft_p95_ms": ttft, "itl_p95_ms": itl}));
    }
    let (bmin, bmax, bslo) =
        (whole("rebatch.min_batch_size")?, whole("rebatch.max_batch_size")?, number("rebatch.itl_slo_ms")?);
    if bmin.is_null() && bmax.is_null() && bslo.is_null() {
        set(&mut spec, "rebatch", Value::Null);
    } else {
        let delay = spec.pointer("/rebatch/max_queue_delay_us").cloned().unwrap_or(json!(2000));
        set(
            &mut spec,
            "rebatch",
            json!({"min_batch_size": bmin, "max_batch_size": bmax, "itl_slo_ms": bslo, "max_queue_delay_us": delay}),
        );
    }
    set(&mut spec, "dry_run", Value::Bool(!get("dry_run").is_empty()));
    let bytes = serde_json::to_vec(&spec).map_err(|e| WebError::Internal(e.to_string()))?;
    let parsed: PolicySpec = parse_json(&bytes).map_err(WebError::from)?;
    parsed.validate().map_err(WebError::from)?;
    Ok(parsed)
}

fn form_page(
    chrome: Chrome,
    id: Option<String>,
    version: i32,
    values: HashMap<String, String>,
    err: Option<WebError>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let (error_field, error) = match err {
        Some(WebError::BadRequest { field, message }) => (field, message),
        Some(other) => (String::new(), other.to_string()),
        None => (String::new(), String::new()),
    };
    let mut chrome = chrome;
    chrome.refresh_secs = 0;
    render(&PolicyFormTemplate { chrome, id, version, values, error_field, error }, status)
}

/// `GET /policies/new`.
#[get("/policies/new")]
pub async fn new_form(state: web::Data<AppState>, user: WebUser) -> Result<HttpResponse, WebError> {
    form_page(user.chrome(&state, "New policy", "policies"), None, 0, defaults(), None, StatusCode::OK)
}

/// `POST /policies`: creates a policy from the form (operators).
#[post("/policies")]
pub async fn create(
    state: web::Data<AppState>,
    user: WebUser,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    user.may_act(form.get("csrf").map(String::as_str))?;
    let chrome = user.chrome(&state, "New policy", "policies");
    let values: HashMap<String, String> =
        FIELDS.iter().map(|f| ((*f).to_string(), form.get(*f).cloned().unwrap_or_default())).collect();
    let spec = match spec_from_form(json!({}), &form) {
        Ok(s) => s,
        Err(e @ WebError::BadRequest { .. }) => {
            return form_page(chrome, None, 0, values, Some(e), StatusCode::BAD_REQUEST);
        }
        Err(e) => return Err(e),
    };
    match db::policies::create(&state.pool, &spec).await? {
        Write::Ok(p) => {
            tracing::info!(policy = %p.spec.name, user = %user.name, "policy created from the dashboard");
            Ok(HttpResponse::SeeOther().insert_header(("Location", format!("/policies/{}", p.id))).finish())
        }
        Write::NameTaken => {
            let e = WebError::field("name", "is taken by another policy");
            form_page(chrome, None, 0, values, Some(e), StatusCode::BAD_REQUEST)
        }
        Write::NotFound => Err(WebError::NotFound("policy vanished".into())),
    }
}

/// `GET /policies/{id}`: the edit form.
#[get("/policies/{id}")]
pub async fn edit_form(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let Some(p) = db::policies::get(&state.pool, id).await? else {
        return Err(WebError::NotFound(format!("no policy {id}")));
    };
    let chrome = user.chrome(&state, format!("Policy {}", p.spec.name), "policies");
    form_page(chrome, Some(id.to_string()), p.version, values_of(&p.spec), None, StatusCode::OK)
}

/// `POST /policies/{id}`: a new version from the form (operators).
#[post("/policies/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    user.may_act(form.get("csrf").map(String::as_str))?;
    let id = parse_id(&id)?;
    let Some(p) = db::policies::get(&state.pool, id).await? else {
        return Err(WebError::NotFound(format!("no policy {id}")));
    };
    let chrome = user.chrome(&state, format!("Policy {}", p.spec.name), "policies");
    let values: HashMap<String, String> =
        FIELDS.iter().map(|f| ((*f).to_string(), form.get(*f).cloned().unwrap_or_default())).collect();
    let base = serde_json::to_value(&p.spec).unwrap_or_default();
    let spec = match spec_from_form(base, &form) {
        Ok(s) => s,
        Err(e @ WebError::BadRequest { .. }) => {
            return form_page(chrome, Some(id.to_string()), p.version, values, Some(e), StatusCode::BAD_REQUEST);
        }
        Err(e) => return Err(e),
    };
    match db::policies::update(&state.pool, id, &spec).await? {
        Write::Ok(p) => {
            tracing::info!(policy = %p.spec.name, version = p.version, user = %user.name, "policy updated from the dashboard");
            Ok(HttpResponse::SeeOther().insert_header(("Location", format!("/policies/{id}"))).finish())
        }
        Write::NameTaken => {
            let e = WebError::field("name", "is taken by another policy");
            form_page(chrome, Some(id.to_string()), p.version, values, Some(e), StatusCode::BAD_REQUEST)
        }
        Write::NotFound => Err(WebError::NotFound(format!("no policy {id}"))),
    }
}

/// A simulated change of the preview.
pub struct PreviewChange {
    at: String,
    change: String,
    reason: String,
}

/// `templates/policy_preview.html`.
#[derive(Template)]
#[template(path = "policy_preview.html")]
pub struct PreviewTemplate {
    chrome: Chrome,
    id: String,
    name: String,
    deployment: String,
    chart: String,
    buckets: usize,
    changes: Vec<PreviewChange>,
    change_count: usize,
    simulated_replica_hours: String,
    actual_changes: usize,
}

/// `GET /policies/{id}/preview`: what the policy would have decided, minute by minute, over the last 24 hours
/// of stored data (`forecasting::decision::decide` on the same metric series the control loop reads). It is
/// reactive only: forecasts, SLO feedback and anomaly gating are not replayed.
#[get("/policies/{id}/preview")]
pub async fn preview(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    const BUCKET: u32 = 60;
    let id = parse_id(&id)?;
    let pool = &state.pool;
    let Some(p) = db::policies::get(pool, id).await? else {
        return Err(WebError::NotFound(format!("no policy {id}")));
    };
    let spec = &p.spec;
    let now = Utc::now();
    let from = now - Duration::hours(24);
    let group = (spec.target.kind == TargetKind::AgentGroup).then_some(spec.target.name.as_str());
    let deployment = spec.deployment();
    let targets = spec.targets();
    let mut series = Vec::with_capacity(targets.len());
    let mut start = None;
    for t in &targets {
        let (points, _) = db::series::deployment_metric(pool, &deployment, group, t.metric, from, now, BUCKET).await?;
        if t == &targets[0] {
            start = points.first().map(|p| p.bucket_secs);
        }
        series.push((*t, points));
    }
    let start = start.unwrap_or(now.timestamp());
    // Align every target on the first one's buckets; a target without data at a bucket is "no data".
    let first_len = series.first().map(|(_, p)| fill_gaps(p, i64::from(BUCKET)).len()).unwrap_or(0);
    let filled: Vec<(crate::domain::policy::MetricTarget, HashMap<i64, f64>)> =
        series.iter().map(|(t, pts)| (*t, pts.iter().map(|p| (p.bucket_secs, p.total)).collect())).collect();
    let first_filled = series.first().map(|(_, p)| fill_gaps(p, i64::from(BUCKET))).unwrap_or_default();
    let mut behavior = spec.behavior.resolve();
    if spec.behavior.scale_down.as_ref().and_then(|r| r.stabilization_window_seconds).is_none() {
        behavior.scale_down.stabilization_window_secs = state.settings.control.scale_down_stabilization_secs;
    }
    let actual = db::dashboard::decisions_of(pool, &[id], from, 20_000).await?;
    let mut current = actual.last().map(|d| d.current_replicas.max(0) as u32).unwrap_or(spec.min_replicas.max(1));
    let mut st = DecisionState::default();
    let mut steps = Vec::with_capacity(first_len);
    let mut changes = Vec::new();
    let mut replica_secs = 0.0;
    for (i, total) in first_filled.iter().enumerate() {
        let t = start + i as i64 * i64::from(BUCKET);
        let mut metrics = Vec::with_capacity(filled.len());
        for (k, (target, by_bucket)) in filled.iter().enumerate() {
            let total = if k == 0 { Some(*total) } else { by_bucket.get(&t).copied() };
            metrics.push(MetricObservation {
                name: metric_name(target.metric).into(),
                total,
                target_per_replica: target.target,
            });
        }
        let input = DecisionInput {
            now_secs: t,
            current_replicas: current,
            min_replicas: spec.min_replicas,
            max_replicas: spec.max_replicas,
            metrics,
            slos: Vec::new(),
            predictive: PredictiveMode::Off,
            forecast_total_upper: None,
            latest_anomalous: false,
            single_node_fault: None,
            tolerance: spec.tolerance,
            behavior: behavior.clone(),
            panic: spec.panic,
            scale_to_zero_idle_secs: spec.scale_to_zero_idle_secs,
            cold_start_secs: spec.cold_start_secs,
        };
        let d = decide(&input, &mut st);
        if d.desired != current {
            if changes.len() < 200 {
                changes.push(PreviewChange {
                    at: chrono::DateTime::from_timestamp(t, 0).unwrap_or_default().format("%m-%d %H:%M").to_string(),
                    change: format!("{current} → {}", d.desired),
                    reason: d.reason.clone(),
                });
            }
            st.applied(t, current, d.desired);
            current = d.desired;
        }
        replica_secs += f64::from(current) * f64::from(BUCKET);
        steps.push((t * 1000, f64::from(current)));
    }
    let first_target = targets.first().map(|t| t.target).unwrap_or(1.0);
    let mut demand = Panel {
        title: format!("Demand: {}", targets.first().map(|t| metric_name(t.metric)).unwrap_or("")),
        ..Panel::default()
    };
    demand.series.push(Series {
        name: "observed".into(),
        class: "c0",
        style: Style::Line,
        points: first_filled.iter().enumerate().map(|(i, v)| ((start + i as i64 * 60) * 1000, *v)).collect(),
    });
    demand.series.push(Series {
        name: "preview capacity".into(),
        class: "c1",
        style: Style::Step,
        points: steps.iter().map(|(t, r)| (*t, r * first_target)).collect(),
    });
    let mut reps = Panel { title: "Replicas".into(), ..Panel::default() };
    reps.series.push(Series { name: "preview".into(), class: "c1", style: Style::Step, points: steps.clone() });
    reps.series.push(Series {
        name: "actual decisions".into(),
        class: "c2",
        style: Style::Step,
        points: actual.iter().rev().map(|d| (d.decided_at.timestamp_millis(), f64::from(d.desired_replicas))).collect(),
    });
    let chart = chart::time_chart("preview-chart", &[demand, reps], from.timestamp_millis(), now.timestamp_millis());
    let mut chrome = user.chrome(&state, format!("Preview {}", spec.name), "policies");
    chrome.refresh_secs = 0;
    let t = PreviewTemplate {
        chrome,
        id: id.to_string(),
        name: spec.name.clone(),
        deployment,
        chart,
        buckets: first_filled.len(),
        change_count: changes.len(),
        changes,
        simulated_replica_hours: format!("{:.1}", replica_secs / 3600.0),
        actual_changes: actual.iter().filter(|d| d.desired_replicas != d.current_replicas).count(),
    };
    render(&t, StatusCode::OK)
}
