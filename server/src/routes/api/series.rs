//! Series and fleet overview: `/api/v1/gpus/{node}/{gpu}/series`, `/api/v1/deployments/{ns}/{name}/series`,
//! `/api/v1/fleet`.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::auth::ApiAuth;
use crate::db::series;
use crate::error::ApiError;
use crate::state::AppState;

/// `?from=RFC3339&to=RFC3339` (default: the last hour).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<String>,
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
        if from >= to {
            return Err(ApiError::field("from", "must be before `to`"));
        }
        if to - from > Duration::days(400) {
            return Err(ApiError::field("from", "the range is at most 400 days"));
        }
        Ok((from, to))
    }
}

/// A GPU's series.
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    metric: crate::domain::policy::Metric,
    from: Option<String>,
    to: Option<String>,
    bucket_secs: Option<u32>,
    group: Option<String>,
}

/// What a scaling policy on this deployment sees: the metric summed over replicas per bucket.
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
    let bucket = q.bucket_secs.unwrap_or(10);
    if !(1..=86_400).contains(&bucket) {
        return Err(ApiError::field("bucket_secs", "must be in 1..=86400"));
    }
    if (to - from).num_seconds() / i64::from(bucket) > 100_000 {
        return Err(ApiError::field("bucket_secs", "too many buckets for the range (at most 100000)"));
    }
    let (points, nodes) =
        series::deployment_metric(&state.pool, &d, q.group.as_deref(), q.metric, from, to, bucket).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deployment": d, "metric": q.metric, "from": from, "to": to, "bucket_secs": bucket, "nodes": nodes, "points": points })))
}

/// The fleet at a glance.
#[get("/api/v1/fleet")]
pub async fn fleet(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(series::fleet_overview(&state.pool, state.settings.alerts.node_silent_secs).await?))
}
