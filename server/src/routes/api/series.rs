//! Series and fleet overview: `/api/v1/gpus/{node}/{gpu}/series`, `/api/v1/deployments/{ns}/{name}/series`,
//! `/api/v1/fleet`.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::responses::{BadPath, Unauthorized};
use crate::auth::ApiAuth;
use crate::db::series;
use crate::error::ApiError;
use crate::state::AppState;

/// `?from=RFC3339&to=RFC3339` (default: the last hour).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Start (RFC 3339; default: an hour before `to`). A start after `to` gives an empty series; one more than
    /// 400 days before `to` counts as 400 days before it.
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    from: Option<String>,
    /// End (RFC 3339; default: now).
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    to: Option<String>,
}

fn parse_time(field: &str, v: &Option<String>, default: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::field(field, "must be an RFC 3339 time, e.g. 2026-11-24T10:00:00Z")),
    }
}

impl Range {
    fn resolve(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let now = Utc::now();
        let to = parse_time("to", &self.to, now)?;
        let from = parse_time("from", &self.from, to - Duration::hours(1))?;
        // An inverted range is empty, and a longer one is the 400 days up to `to`: the two parameters are
        // independent in the document, so each combination of valid values is a valid request.
        Ok((from.clamp(to - Duration::days(400), to), to))
    }
}

/// A GPU's series.
#[utoipa::path(tag = "fleet", operation_id = "gpu_series", security(("api" = [])),
    params(("node" = String, Path, description = "Node id"), ("gpu" = i32, Path, description = "GPU index"), Range),
    responses((status = 200, description = "The GPU's series: raw up to 2 h, 1-minute rollups up to 3 days, hourly beyond", body = serde_json::Value), BadPath, Unauthorized))]
#[get("/api/v1/gpus/{node}/{gpu}/series")]
pub async fn gpu(
    _a: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    q: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (node, gpu) = path.into_inner();
    let (from, to) = q.resolve()?;
    let (resolution, points) = series::gpu_series(&state.pool, &node, gpu, from, to).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "node": node, "gpu": gpu, "from": from, "to": to, "resolution": resolution, "points": points })))
}

/// A deployment's series.
#[utoipa::path(tag = "fleet", operation_id = "deployment_series", security(("api" = [])),
    params(("namespace" = String, Path, description = "Namespace (a Kubernetes name)", pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"), ("name" = String, Path, description = "Deployment name (a Kubernetes name)", pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"), Range),
    responses((status = 200, description = "The deployment's serving series", body = serde_json::Value), BadPath, Unauthorized))]
#[get("/api/v1/deployments/{namespace}/{name}/series")]
pub async fn deployment(
    _a: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let d = format!("{ns}/{name}");
    gpu_agent::protocol::parse_deployment(&d).map_err(|e| ApiError::field("deployment", e))?;
    let (from, to) = q.resolve()?;
    let (resolution, points) = series::deployment_series(&state.pool, &d, from, to).await?;
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "deployment": d, "from": from, "to": to, "resolution": resolution, "points": points }),
    ))
}

/// `?metric=...&from=&to=&bucket_secs=&group=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// The metric.
    metric: crate::domain::policy::Metric,
    /// Start (RFC 3339; default: an hour before `to`). A start after `to` gives no points; the range is at
    /// most 400 days and 100,000 buckets, counted back from `to`.
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    from: Option<String>,
    /// End (RFC 3339; default: now).
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    to: Option<String>,
    /// Bucket width, seconds (1..=86400, default 10).
    #[param(minimum = 1, maximum = 86400)]
    bucket_secs: Option<u32>,
    /// Only the replicas of this agent group.
    #[param(max_length = 256)]
    group: Option<String>,
}

/// What a scaling policy on this deployment sees: the metric summed over replicas per bucket.
#[utoipa::path(tag = "fleet", operation_id = "deployment_metric", security(("api" = [])),
    params(("namespace" = String, Path, description = "Namespace (a Kubernetes name)", pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"), ("name" = String, Path, description = "Deployment name (a Kubernetes name)", pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"), MetricQuery),
    responses((status = 200, description = "The metric summed over replicas per bucket", body = serde_json::Value), BadPath, Unauthorized))]
#[get("/api/v1/deployments/{namespace}/{name}/metric")]
pub async fn deployment_metric(
    _a: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<MetricQuery>,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let d = format!("{ns}/{name}");
    gpu_agent::protocol::parse_deployment(&d).map_err(|e| ApiError::field("deployment", e))?;
    let (from, to) = Range { from: q.from.clone(), to: q.to.clone() }.resolve()?;
    if let Some(g) = &q.group
        && (g.chars().count() > 256 || g.contains('\0'))
    {
        return Err(ApiError::field("group", "must be at most 256 characters, without NUL"));
    }
    let bucket = q.bucket_secs.unwrap_or(10);
    if !(1..=86_400).contains(&bucket) {
        return Err(ApiError::field("bucket_secs", "must be in 1..=86400"));
    }
    // At most 100,000 buckets: a longer range keeps its most recent ones.
    let from = from.max(to - Duration::seconds(i64::from(bucket) * 100_000));
    let (points, nodes) =
        series::deployment_metric(&state.pool, &d, q.group.as_deref(), q.metric, from, to, bucket).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deployment": d, "metric": q.metric, "from": from, "to": to, "bucket_secs": bucket, "nodes": nodes, "points": points })))
}

/// The fleet at a glance.
#[utoipa::path(tag = "fleet", operation_id = "fleet_overview", security(("api" = [])),
    responses((status = 200, description = "Fleet overview", body = crate::db::series::FleetOverview), Unauthorized))]
#[get("/api/v1/fleet")]
pub async fn fleet(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(series::fleet_overview(&state.pool, state.settings.alerts.node_silent_secs).await?))
}
