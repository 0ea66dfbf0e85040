//! Scaling policies: list, create and edit through a form (validated exactly like the API, the error shown
//! next to its field), and a dry-run preview over the last 24 hours of stored data.

use std::collections::{BTreeSet, HashMap};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use askama::Template;

use chrono::Utc;
use forecasting::decision::PanicSettings;
use serde_json::{Value, json};
use uuid::Uuid;

use super::chart::{self, Panel, Series, Style};
use super::session::WebUser;
use super::{Chrome, FormState, State, Submitted, Viewer, WebError, ago, render, see_other};
use crate::control::preview::{self as service, Preview, PreviewError};
use crate::db;
use crate::db::policies::{StoredPolicy, Write};
use crate::domain::policy::PolicySpec;
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
    shadow: bool,
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
pub async fn list(v: Viewer) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let now = Utc::now();
    let rows = caches
        .policies
        .list(&state.pool, state.policy_epoch())
        .await?
        .iter()
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
                    .map(|t| format!("{} {}", t.metric.name(), t.target))
                    .collect::<Vec<_>>()
                    .join(", "),
                replicas: format!("{}..={}", p.spec.min_replicas, p.spec.max_replicas),
                dry_run: p.spec.dry_run,
                shadow: p.spec.is_shadow(),
                updated: ago(now, p.updated_at),
                name: p.spec.name.clone(),
            }
        })
        .collect();
    let chrome = user.still_chrome(&state, "Policies", "policies");
    render(&PoliciesTemplate { chrome, rows }, StatusCode::OK)
}

/// A metric-target row of the form: its field names.
pub struct MetricRow {
    metric: String,
    target: String,
}

/// An HPA rate-policy row of the form: its field names.
pub struct RateRow {
    kind: String,
    value: String,
    period: String,
}

/// One direction of HPA `behavior` in the form: its field names and rate-policy rows.
pub struct DirectionRows {
    label: &'static str,
    window: String,
    select: String,
    rows: Vec<RateRow>,
}

/// `templates/policy_form.html`: create (no id) or edit.
#[derive(Template)]
#[template(path = "policy_form.html")]
pub struct PolicyFormTemplate {
    chrome: Chrome,
    id: Option<String>,
    version: i32,
    form: FormState,
    metric_rows: Vec<MetricRow>,
    directions: Vec<DirectionRows>,
}

/// The scalar form fields, named after the API's JSON paths so `PolicySpec::validate`'s field names match
/// them. The rows (`metrics[i].metric`, `behavior.scaleUp.policies[i].value`, ...) are named the same way.
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
    "predictive.horizon_secs",
    "panic.threshold",
    "panic.window_secs",
    "slo.ttft_p95_ms",
    "slo.itl_p95_ms",
    "behavior.scaleUp.stabilizationWindowSeconds",
    "behavior.scaleUp.selectPolicy",
    "behavior.scaleDown.stabilizationWindowSeconds",
    "behavior.scaleDown.selectPolicy",
    "rebatch.min_batch_size",
    "rebatch.max_batch_size",
    "rebatch.itl_slo_ms",
    "rebatch.max_queue_delay_us",
    "dry_run",
    "mode",
];

/// HPA's directions: JSON key and label.
const DIRECTIONS: &[(&str, &str)] = &[("scaleUp", "Scale up"), ("scaleDown", "Scale down")];
/// Fewest metric-target rows shown, and most (the API takes at most 8 targets).
const METRIC_ROWS: (usize, usize) = (3, 8);
/// Fewest rate-policy rows shown per direction, and most.
const RATE_ROWS: (usize, usize) = (2, 10);

/// The text of a JSON scalar as a form shows it (`true` is a ticked checkbox: `on`).
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "on".into(),
        Some(Value::Bool(false) | Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Form values of a stored spec (its JSON): the scalar fields and a row per metric target and rate policy.
fn values_of(spec: &Value) -> HashMap<String, String> {
    let mut out: HashMap<String, String> =
        FIELDS.iter().map(|f| ((*f).to_string(), scalar(spec.pointer(&format!("/{}", f.replace('.', "/")))))).collect();
    for (i, m) in spec.get("metrics").and_then(Value::as_array).into_iter().flatten().enumerate() {
        out.insert(format!("metrics[{i}].metric"), scalar(m.get("metric")));
        out.insert(format!("metrics[{i}].target"), scalar(m.get("target")));
    }
    for (dir, _) in DIRECTIONS {
        let policies = spec.pointer(&format!("/behavior/{dir}/policies")).and_then(Value::as_array);
        for (i, p) in policies.into_iter().flatten().enumerate() {
            for k in ["type", "value", "periodSeconds"] {
                out.insert(format!("behavior.{dir}.policies[{i}].{k}"), scalar(p.get(k)));
            }
        }
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
        ("panic.threshold", "2"),
        ("panic.window_secs", "60"),
        ("dry_run", "on"),
        ("mode", "active"),
    ] {
        v.insert(k.into(), d.into());
    }
    v
}

/// The row indices present under `prefix` (`metrics` finds `metrics[3].target`), ascending.
fn row_indices(values: &HashMap<String, String>, prefix: &str) -> Vec<usize> {
    let open = format!("{prefix}[");
    let set: BTreeSet<usize> =
        values.keys().filter_map(|k| k.strip_prefix(&open)?.split(']').next()?.parse().ok()).collect();
    set.into_iter().collect()
}

/// How many rows to show: those filled (one of `keys` not empty), one empty row more, at least `min`, and
/// at most `max` unless more are filled.
fn rows_shown(values: &HashMap<String, String>, prefix: &str, keys: &[&str], (min, max): (usize, usize)) -> usize {
    let filled = row_indices(values, prefix)
        .into_iter()
        .filter(|i| {
            keys.iter().any(|k| values.get(&format!("{prefix}[{i}].{k}")).is_some_and(|v| !v.trim().is_empty()))
        })
        .max()
        .map_or(0, |i| i + 1);
    (filled + 1).max(min).min(max.max(filled))
}

fn metric_rows(values: &HashMap<String, String>) -> Vec<MetricRow> {
    (0..rows_shown(values, "metrics", &["metric", "target"], METRIC_ROWS))
        .map(|i| MetricRow { metric: format!("metrics[{i}].metric"), target: format!("metrics[{i}].target") })
        .collect()
}

fn direction_rows(values: &HashMap<String, String>) -> Vec<DirectionRows> {
    DIRECTIONS
        .iter()
        .map(|(dir, label)| {
            let prefix = format!("behavior.{dir}.policies");
            let rows = (0..rows_shown(values, &prefix, &["value", "periodSeconds"], RATE_ROWS))
                .map(|i| RateRow {
                    kind: format!("{prefix}[{i}].type"),
                    value: format!("{prefix}[{i}].value"),
                    period: format!("{prefix}[{i}].periodSeconds"),
                })
                .collect();
            DirectionRows {
                label,
                window: format!("behavior.{dir}.stabilizationWindowSeconds"),
                select: format!("behavior.{dir}.selectPolicy"),
                rows,
            }
        })
        .collect()
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

/// Sets `path`, or removes it when `v` is null so the API's default applies (as if the field were left out).
fn set_or_default(obj: &mut Value, path: &str, v: Value) {
    if !v.is_null() {
        set(obj, path, v);
        return;
    }
    let (parent, key) = match path.rsplit_once('.') {
        Some((p, k)) => (obj.pointer_mut(&format!("/{}", p.replace('.', "/"))), k),
        None => (Some(obj), path),
    };
    if let Some(Value::Object(m)) = parent {
        m.remove(key);
    }
}

/// Reads typed values out of the submitted form; a bad value is a 400 naming its form field.
struct FormReader<'a>(&'a HashMap<String, String>);

impl FormReader<'_> {
    fn get(&self, f: &str) -> &str {
        self.0.get(f).map(|s| s.trim()).unwrap_or("")
    }
    fn text(&self, f: &str) -> Value {
        match self.get(f) {
            "" => Value::Null,
            s => Value::String(s.to_string()),
        }
    }
    fn whole(&self, f: &str) -> Result<Value, WebError> {
        match self.get(f) {
            "" => Ok(Value::Null),
            s => s.parse::<u64>().map(Value::from).map_err(|_| WebError::field(f, "must be a whole number")),
        }
    }
    fn number(&self, f: &str) -> Result<Value, WebError> {
        match self.get(f) {
            "" => Ok(Value::Null),
            s => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(json!(v)),
                _ => Err(WebError::field(f, "must be a number")),
            },
        }
    }
    fn required(&self, f: &str, v: Value) -> Result<Value, WebError> {
        if v.is_null() { Err(WebError::field(f, "is required in a filled row (or clear the row)")) } else { Ok(v) }
    }

    /// The `metrics` list from the filled rows (both fields empty: ignored), and for each entry its form row.
    fn metrics(&self) -> Result<(Value, Vec<usize>), WebError> {
        let mut targets = Vec::new();
        let mut rows = Vec::new();
        for i in row_indices(self.0, "metrics") {
            let (mf, tf) = (format!("metrics[{i}].metric"), format!("metrics[{i}].target"));
            let (metric, target) = (self.text(&mf), self.number(&tf)?);
            if metric.is_null() && target.is_null() {
                continue;
            }
            if metric.is_null() {
                return Err(WebError::field(mf, "choose a metric for this target (or clear the row)"));
            }
            targets.push(json!({"metric": metric, "target": self.required(&tf, target)?}));
            rows.push(i);
        }
        Ok((Value::Array(targets), rows))
    }

    /// One direction of HPA `behavior` (null when every field is empty: HPA's defaults), and for each rate
    /// policy its form row.
    fn direction(&self, dir: &str) -> Result<(Value, Vec<usize>), WebError> {
        let window = self.whole(&format!("behavior.{dir}.stabilizationWindowSeconds"))?;
        let select = self.text(&format!("behavior.{dir}.selectPolicy"));
        let prefix = format!("behavior.{dir}.policies");
        let mut policies = Vec::new();
        let mut rows = Vec::new();
        for i in row_indices(self.0, &prefix) {
            let (vf, pf) = (format!("{prefix}[{i}].value"), format!("{prefix}[{i}].periodSeconds"));
            let (value, period) = (self.whole(&vf)?, self.whole(&pf)?);
            if value.is_null() && period.is_null() {
                continue;
            }
            let kind = self.text(&format!("{prefix}[{i}].type"));
            let kind = self.required(&format!("{prefix}[{i}].type"), kind)?;
            policies.push(json!({"type": kind, "value": self.required(&vf, value)?, "periodSeconds": self.required(&pf, period)?}));
            rows.push(i);
        }
        if window.is_null() && select.is_null() && policies.is_empty() {
            return Ok((Value::Null, rows));
        }
        let policies = if policies.is_empty() { Value::Null } else { Value::Array(policies) };
        Ok((json!({"stabilizationWindowSeconds": window, "selectPolicy": select, "policies": policies}), rows))
    }

    /// The SLO block: null when both are empty.
    fn slo(&self) -> Result<Value, WebError> {
        let (ttft, itl) = (self.number("slo.ttft_p95_ms")?, self.number("slo.itl_p95_ms")?);
        Ok(if ttft.is_null() && itl.is_null() { Value::Null } else { json!({"ttft_p95_ms": ttft, "itl_p95_ms": itl}) })
    }
}

/// The stored JSON of a section when the form reads the same as the stored spec's own form values: a block
/// the form cannot tell apart from its reading (`"scaleUp": {}` and `null`, `"policies": []`) stays as stored.
fn unchanged_or(form: Value, stored_reading: Option<Value>, stored: Option<&Value>) -> Value {
    match (stored_reading, stored) {
        (Some(r), Some(s)) if r == form => s.clone(),
        _ => form,
    }
}

/// Renames a spec path's list index to the form row it came from (`metrics[0].target` -> `metrics[2].target`
/// when the first two rows were empty).
fn to_form_field(field: &str, prefix: &str, rows: &[usize]) -> Option<String> {
    let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
    let (index, tail) = rest.split_once(']')?;
    let row = rows.get(index.parse::<usize>().ok()?)?;
    Some(format!("{prefix}[{row}]{tail}"))
}

/// Builds the spec from the form on top of `base` (the stored spec's JSON; `{}` when creating) and validates
/// it exactly like the API does (`parse_json`, then `PolicySpec::validate`). Errors name the form field.
fn spec_from_form(base: Value, form: &HashMap<String, String>) -> Result<PolicySpec, WebError> {
    let stored = values_of(&base);
    let stored = FormReader(&stored);
    let mut spec = if base.is_object() { base.clone() } else { json!({}) };
    let r = FormReader(form);
    set(&mut spec, "name", Value::String(r.get("name").to_string()));
    set(&mut spec, "target.kind", Value::String(r.get("target.kind").to_string()));
    set(&mut spec, "target.namespace", r.text("target.namespace"));
    set(&mut spec, "target.name", Value::String(r.get("target.name").to_string()));
    set(&mut spec, "target.deployment", r.text("target.deployment"));
    for f in ["min_replicas", "max_replicas"] {
        let v = r.whole(f)?;
        if v.is_null() {
            return Err(WebError::field(f, "is required"));
        }
        set(&mut spec, f, v);
    }
    set(&mut spec, "metric", r.text("metric"));
    set(&mut spec, "target_value", r.number("target_value")?);
    let (metrics, metric_rows) = r.metrics()?;
    set(&mut spec, "metrics", metrics);
    set(&mut spec, "scale_to_zero_idle_secs", r.whole("scale_to_zero_idle_secs")?);
    set_or_default(&mut spec, "cold_start_secs", r.whole("cold_start_secs")?);
    set_or_default(&mut spec, "tolerance", r.number("tolerance")?);
    set_or_default(&mut spec, "predictive.mode", r.text("predictive.mode"));
    set_or_default(&mut spec, "predictive.quantile", r.number("predictive.quantile")?);
    set(&mut spec, "predictive.horizon_secs", r.whole("predictive.horizon_secs")?);
    // `panic` has no per-field defaults in the API: an empty field takes the default value.
    let panic = PanicSettings::default();
    let threshold = r.number("panic.threshold")?;
    let window = r.whole("panic.window_secs")?;
    set(&mut spec, "panic.threshold", if threshold.is_null() { json!(panic.threshold) } else { threshold });
    set(&mut spec, "panic.window_secs", if window.is_null() { json!(panic.window_secs) } else { window });
    let slo = unchanged_or(r.slo()?, stored.slo().ok(), base.get("slo"));
    set(&mut spec, "slo", slo);
    let mut rate_rows = Vec::new();
    for (dir, _) in DIRECTIONS {
        let (block, rows) = r.direction(dir)?;
        let stored_reading = stored.direction(dir).ok().map(|(b, _)| b);
        let block = unchanged_or(block, stored_reading, base.pointer(&format!("/behavior/{dir}")));
        set(&mut spec, &format!("behavior.{dir}"), block);
        rate_rows.push((format!("behavior.{dir}.policies"), rows));
    }
    let (bmin, bmax, bslo, delay) = (
        r.whole("rebatch.min_batch_size")?,
        r.whole("rebatch.max_batch_size")?,
        r.number("rebatch.itl_slo_ms")?,
        r.whole("rebatch.max_queue_delay_us")?,
    );
    if bmin.is_null() && bmax.is_null() && bslo.is_null() && delay.is_null() {
        set(&mut spec, "rebatch", Value::Null);
    } else {
        set(&mut spec, "rebatch", json!({"min_batch_size": bmin, "max_batch_size": bmax, "itl_slo_ms": bslo}));
        set_or_default(&mut spec, "rebatch.max_queue_delay_us", delay);
    }
    set(&mut spec, "dry_run", Value::Bool(!r.get("dry_run").is_empty()));
    set_or_default(&mut spec, "mode", r.text("mode"));
    let bytes = serde_json::to_vec(&spec).map_err(|e| WebError::Internal(e.to_string()))?;
    let checked =
        parse_json::<PolicySpec>(&bytes).and_then(|p| p.validate().map(|()| p).map_err(crate::error::ApiError::from));
    checked.map_err(|e| {
        let field = e.field.clone().unwrap_or_default();
        let renamed = to_form_field(&field, "metrics", &metric_rows)
            .or_else(|| rate_rows.iter().find_map(|(prefix, rows)| to_form_field(&field, prefix, rows)));
        match (WebError::from(e), renamed) {
            (WebError::BadRequest { message, .. }, Some(f)) => WebError::BadRequest { field: f, message },
            (other, _) => other,
        }
    })
}

/// The form page of policy `id` (none: a new one) at `version`, showing `form`.
fn form_page(chrome: Chrome, id: Option<Uuid>, version: i32, form: FormState) -> Result<HttpResponse, WebError> {
    let (metric_rows, directions) = (metric_rows(&form.values), direction_rows(&form.values));
    let status = form.status();
    let t = PolicyFormTemplate { chrome, id: id.map(|i| i.to_string()), version, form, metric_rows, directions };
    render(&t, status)
}

/// `GET /policies/new`.
#[get("/policies/new")]
pub async fn new_form(state: State, user: WebUser) -> Result<HttpResponse, WebError> {
    form_page(user.still_chrome(&state, "New policy", "policies"), None, 0, FormState::new(defaults()))
}

/// Writes a policy from the form (created when `before` is none), records it, and answers with the policy's
/// page; a refused form is shown again with the error next to its field.
async fn save(state: &AppState, form: Submitted, before: Option<StoredPolicy>) -> Result<HttpResponse, WebError> {
    let Submitted { user, values } = form;
    let title = before.as_ref().map_or("New policy".to_string(), |p| format!("Policy {}", p.spec.name));
    let (id, version) = before.as_ref().map_or((None, 0), |p| (Some(p.id), p.version));
    let refused = |values, e| {
        form_page(user.still_chrome(state, title.clone(), "policies"), id, version, FormState::refused(values, e))
    };
    let base = before.as_ref().map_or(json!({}), |p| serde_json::to_value(&p.spec).unwrap_or_default());
    let spec = match spec_from_form(base, &values) {
        Ok(s) => s,
        Err(e @ WebError::BadRequest { .. }) => return refused(values, e),
        Err(e) => return Err(e),
    };
    let written = match id {
        Some(id) => db::policies::update(&state.pool, id, &spec).await?,
        None => db::policies::create(&state.pool, &spec).await?,
    };
    state.policies_changed();
    match written {
        Write::Ok(after) => {
            let action = if before.is_some() { "update" } else { "create" };
            tracing::info!(policy = %after.spec.name, version = after.version, user = %user.name, action, "policy saved from the dashboard");
            let (b, a) = (before.as_ref().and_then(db::audit::json), db::audit::json(&after));
            db::audit::record(&state.pool, &user.actor(), action, "policy", &after.id.to_string(), b, a).await;
            Ok(see_other(format!("/policies/{}", after.id)))
        }
        Write::NameTaken => refused(values, WebError::field("name", "is taken by another policy")),
        Write::NotFound => Err(WebError::NotFound(match id {
            Some(id) => format!("no policy {id}"),
            None => "policy vanished".into(),
        })),
    }
}

/// `POST /policies`: creates a policy from the form (operators).
#[post("/policies")]
pub async fn create(state: State, form: Submitted) -> Result<HttpResponse, WebError> {
    save(&state, form, None).await
}

/// The stored policy `id`, or 404.
async fn policy(state: &AppState, id: &str) -> Result<StoredPolicy, WebError> {
    let id = parse_id(id)?;
    db::policies::get(&state.pool, id).await?.ok_or_else(|| WebError::NotFound(format!("no policy {id}")))
}

/// `GET /policies/{id}`: the edit form.
#[get("/policies/{id}")]
pub async fn edit_form(state: State, user: WebUser, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let p = policy(&state, &id).await?;
    let mut chrome = user.still_chrome(&state, format!("Policy {}", p.spec.name), "policies");
    let mut values = values_of(&serde_json::to_value(&p.spec).unwrap_or_default());
    if let Some(owner) = &p.owner {
        // Managed in Kubernetes: shown read-only, whoever looks.
        chrome.is_operator = false;
        values.insert("owner".into(), owner.clone());
    }
    form_page(chrome, Some(p.id), p.version, FormState::new(values))
}

/// `POST /policies/{id}`: a new version from the form (operators).
#[post("/policies/{id}")]
pub async fn update(state: State, id: web::Path<String>, form: Submitted) -> Result<HttpResponse, WebError> {
    let p = policy(&state, &id).await?;
    if let Some(owner) = &p.owner {
        return Err(WebError::Forbidden(format!(
            "policy {} is managed by {owner}: change it with kubectl (or in Git), not here",
            p.spec.name
        )));
    }
    save(&state, form, Some(p)).await
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

/// `GET /policies/{id}/preview`: the service [`service::preview`] (the last 24 hours replayed through the policy's
/// scaling engine, next to what the control loop decided), drawn and in words.
#[get("/policies/{id}/preview")]
pub async fn preview(state: State, user: WebUser, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let down_window = state.settings.control.scale_down_stabilization_secs;
    let p = service::preview(&state.pool, id, Utc::now(), down_window).await.map_err(|e| match e {
        PreviewError::NotFound(_) => WebError::NotFound(e.to_string()),
        PreviewError::Db(e) => e.into(),
    })?;
    let changes = p
        .changes()
        .take(200)
        .map(|s| PreviewChange {
            at: chrono::DateTime::from_timestamp(s.at_secs, 0).unwrap_or_default().format("%m-%d %H:%M").to_string(),
            change: format!("{} → {}", s.current, s.desired),
            reason: format!("{}: {}", s.winner, s.reason),
        })
        .collect();
    let spec = &p.policy.spec;
    let t = PreviewTemplate {
        chrome: user.still_chrome(&state, format!("Preview {}", spec.name), "policies"),
        id: id.to_string(),
        name: spec.name.clone(),
        deployment: spec.deployment(),
        chart: preview_chart(&p),
        buckets: p.replay.steps.len(),
        change_count: p.changes().count(),
        changes,
        simulated_replica_hours: format!("{:.1}", p.replay.replica_hours),
        actual_changes: p.actual_changes(),
    };
    render(&t, StatusCode::OK)
}

/// The preview's chart: demand with the forecast's upper bound and the capacity the preview would have run,
/// and the replicas next to the recorded decisions.
fn preview_chart(p: &Preview) -> String {
    let spec = &p.policy.spec;
    let steps = &p.replay.steps;
    let title = if p.sized_by_capacity() {
        "Demand: busy replicas (estimated)".to_string()
    } else {
        format!("Demand: {}", spec.targets().first().map(|t| t.metric.name()).unwrap_or(""))
    };
    let per_replica = p.per_replica();
    let ms = |t: i64| (t + i64::from(service::BUCKET_SECS)) * 1000;
    let series = |name: &str, class, style, points: Vec<(i64, f64)>| Series { name: name.into(), class, style, points };
    let mut demand = Panel { title, ..Panel::default() };
    demand.series.push(series(
        "observed",
        "c0",
        Style::Line,
        steps.iter().filter_map(|s| Some((ms(s.at_secs), s.signal?))).collect(),
    ));
    demand.series.push(series(
        "forecast upper bound",
        "c3",
        Style::Line,
        steps.iter().filter_map(|s| Some((ms(s.at_secs), s.forecast_upper?))).collect(),
    ));
    demand.series.push(series(
        "preview capacity",
        "c1",
        Style::Step,
        steps.iter().map(|s| (ms(s.at_secs), f64::from(s.desired) * per_replica)).collect(),
    ));
    let mut reps = Panel { title: "Replicas".into(), ..Panel::default() };
    reps.series.push(series(
        "preview",
        "c1",
        Style::Step,
        steps.iter().map(|s| (ms(s.at_secs), f64::from(s.desired))).collect(),
    ));
    let actual =
        p.actual.iter().rev().map(|d| (d.decided_at.timestamp_millis(), f64::from(d.desired_replicas))).collect();
    reps.series.push(series("actual decisions", "c2", Style::Step, actual));
    chart::time_chart("preview-chart", &[demand, reps], p.from.timestamp_millis(), p.to.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &str) -> (PolicySpec, Value) {
        let spec: PolicySpec = parse_json(body.as_bytes()).unwrap();
        assert_eq!(spec.validate().map_err(|e| e.error), Ok(()));
        let json = serde_json::to_value(&spec).unwrap();
        (spec, json)
    }

    #[test]
    fn every_field_of_a_spec_survives_the_form_unchanged() {
        for body in [
            r#"{"name":"llama","target":{"kind":"deployment","namespace":"ml","name":"llama"},
                "min_replicas":0,"max_replicas":16,"scale_to_zero_idle_secs":900,
                "metric":"gpu_utilization","target_value":60,
                "metrics":[{"metric":"queue_depth_per_replica","target":4},{"metric":"kv_cache_pct","target":85.5}],
                "slo":{"ttft_p95_ms":800,"itl_p95_ms":60},
                "predictive":{"mode":"forecast_only","quantile":0.95,"horizon_secs":300},
                "panic":{"threshold":3,"window_secs":30},
                "behavior":{"scaleUp":{"stabilizationWindowSeconds":0,"selectPolicy":"Max",
                              "policies":[{"type":"Pods","value":4,"periodSeconds":15},{"type":"Percent","value":100,"periodSeconds":15}]},
                            "scaleDown":{"stabilizationWindowSeconds":600,"selectPolicy":"Min",
                              "policies":[{"type":"Percent","value":50,"periodSeconds":60}]}},
                "tolerance":0.05,"cold_start_secs":90,"dry_run":true,
                "rebatch":{"min_batch_size":4,"max_batch_size":128,"itl_slo_ms":60,"max_queue_delay_us":5000}}"#,
            // Blocks the form cannot tell from their absence stay as they were stored.
            r#"{"name":"odd","target":{"kind":"agent_group","name":"sim","deployment":"ml/odd"},
                "min_replicas":1,"max_replicas":2,"metrics":[{"metric":"tokens_per_sec_per_replica","target":900}],
                "slo":{},"behavior":{"scaleUp":{},"scaleDown":{"policies":[]}}}"#,
        ] {
            let (spec, json) = stored(body);
            let form = values_of(&json);
            assert_eq!(spec_from_form(json.clone(), &form).map_err(|e| e.to_string()), Ok(spec.clone()), "{body}");
        }
    }

    #[test]
    fn empty_rows_are_ignored_and_errors_name_the_row_they_were_typed_in() {
        let (_, json) = stored(
            r#"{"name":"llama","target":{"kind":"deployment","namespace":"ml","name":"llama"},
                "min_replicas":1,"max_replicas":8,"metric":"gpu_utilization","target_value":60}"#,
        );
        let mut form = values_of(&json);
        for (k, v) in [
            ("metrics[0].metric", ""),
            ("metrics[0].target", ""),
            ("metrics[1].metric", "kv_cache_pct"),
            ("metrics[1].target", "80"),
            ("behavior.scaleDown.policies[0].type", "Pods"),
            ("behavior.scaleDown.policies[0].value", ""),
            ("behavior.scaleDown.policies[0].periodSeconds", ""),
            ("behavior.scaleDown.policies[1].type", "Percent"),
            ("behavior.scaleDown.policies[1].value", "50"),
            ("behavior.scaleDown.policies[1].periodSeconds", "60"),
        ] {
            form.insert(k.into(), v.into());
        }
        let spec = spec_from_form(json.clone(), &form).unwrap();
        assert_eq!(spec.targets().len(), 2);
        let down = spec.behavior.scale_down.clone().unwrap();
        assert_eq!(down.policies.map(|p| p.len()), Some(1));
        assert_eq!(spec.behavior.scale_up, None);

        let field = |form: &HashMap<String, String>| match spec_from_form(json.clone(), form) {
            Err(WebError::BadRequest { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        let mut bad = form.clone();
        bad.insert("behavior.scaleDown.policies[1].periodSeconds".into(), "0".into());
        assert_eq!(field(&bad), "behavior.scaleDown.policies[1].periodSeconds");
        let mut bad = form.clone();
        bad.insert("metrics[1].target".into(), "150".into());
        assert_eq!(field(&bad), "metrics[1].target");
        let mut bad = form.clone();
        bad.insert("metrics[1].target".into(), "".into());
        assert_eq!(field(&bad), "metrics[1].target");
        let mut bad = form;
        bad.insert("behavior.scaleUp.stabilizationWindowSeconds".into(), "4000".into());
        assert_eq!(field(&bad), "behavior.scaleUp.stabilizationWindowSeconds");
    }
}
