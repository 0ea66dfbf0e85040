//! Silencing from an alert's row, as a service any interface can call: what a silence of an incident can
//! match (one of its rules in its group, or the whole group) and for how long, the checks (the API's own
//! `SilenceSpec::validate`, so a form accepts exactly what `POST /api/v1/silences` does), and the writes
//! (the silence and its audit entry). Expiring a silence is here too, for the same reason: the API and the
//! dashboard record it the same way.
//!
//! The dashboard's confirm page (`routes::web::silences`) only parses the form, calls [`create`] and renders.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::alerts::rules::{MatchOp, Matcher, SilenceSpec};
use crate::db::alerts::{self as store, Incident, Silence};

/// The lengths offered, `(value, label, seconds)`; `custom` reads [`Request::duration_custom`].
pub const DURATIONS: &[(&str, &str, f64)] =
    &[("1h", "1 hour", 3600.0), ("4h", "4 hours", 14_400.0), ("24h", "24 hours", 86_400.0), ("custom", "custom", 0.0)];

/// The length picked by default.
pub const DEFAULT_DURATION: &str = "1h";

/// One thing a silence of an incident can match, with its words.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// `rule:<name>` or `group`.
    pub value: String,
    /// What it silences, in words.
    pub label: String,
}

/// What a person asked for: a scope among [`scopes`], a length among [`DURATIONS`] and why.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// One of the [`Scope::value`]s of the incident.
    pub scope: String,
    /// One of the [`DURATIONS`] values.
    pub duration: String,
    /// With `duration` `custom`: `90m`, `2h`, `1.5h`, `3d` (a bare number is hours).
    pub duration_custom: String,
    /// Why (checked as the API checks `comment`).
    pub comment: String,
}

/// A request refused, naming the [`Request`] field to blame (`scope`, `duration`, `duration_custom`,
/// `comment`; empty when none is).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Refused {
    /// The field of [`Request`] to show the message next to.
    pub field: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// Why a silence was not created.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// The request does not make a valid silence.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The store failed.
    #[error("silences: {0}")]
    Db(#[from] sqlx::Error),
}

/// The rules of an incident (its `rule` lists its members' rules, comma-separated).
fn rules_of(inc: &Incident) -> Vec<&str> {
    inc.rule.split(',').map(str::trim).filter(|r| !r.is_empty()).collect()
}

/// What a silence of `inc` can match: each of its rules in its group, then the whole group.
pub fn scopes(inc: &Incident) -> Vec<Scope> {
    let mut out: Vec<Scope> = rules_of(inc)
        .into_iter()
        .map(|r| Scope { value: format!("rule:{r}"), label: format!("{r} on {}", inc.group) })
        .collect();
    out.push(Scope { value: "group".into(), label: format!("every alert of {}", inc.group) });
    out
}

/// The request a confirm page starts from: the narrowest scope, the default length.
pub fn default_request(inc: &Incident) -> Request {
    Request {
        scope: scopes(inc).first().map(|c| c.value.clone()).unwrap_or_default(),
        duration: DEFAULT_DURATION.into(),
        ..Request::default()
    }
}

/// The matchers of a scope value; None when it is not one of `scopes(inc)`.
fn matchers(inc: &Incident, scope: &str) -> Option<Vec<Matcher>> {
    let group = Matcher { label: "group".into(), value: inc.group.clone(), op: MatchOp::Eq };
    if scope == "group" {
        return Some(vec![group]);
    }
    let rule = scope.strip_prefix("rule:")?;
    rules_of(inc)
        .contains(&rule)
        .then(|| vec![Matcher { label: "alertname".into(), value: rule.to_string(), op: MatchOp::Eq }, group])
}

/// Seconds of `90m`, `2h`, `1.5h`, `3d` (a bare number is hours).
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, 'm') => (&s[..i], 60.0),
        (i, 'h') => (&s[..i], 3600.0),
        (i, 'd') => (&s[..i], 86_400.0),
        _ => (s, 3600.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n * unit)
}

/// The request field to blame for an error of `SilenceSpec::validate` about `api_field`.
fn request_field(api_field: &str, custom: bool) -> &'static str {
    match api_field {
        "comment" => "comment",
        "duration_secs" | "ends_at" if custom => "duration_custom",
        "duration_secs" | "ends_at" => "duration",
        f if f.starts_with("matchers") => "scope",
        _ => "",
    }
}

fn refuse(field: &'static str, message: impl Into<String>) -> Refused {
    Refused { field, message: message.into() }
}

/// The silence `req` asks for on `inc`, created by `by`, with its `[starts_at, ends_at)` at `now`.
pub fn check(
    inc: &Incident,
    req: &Request,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(SilenceSpec, DateTime<Utc>, DateTime<Utc>), Refused> {
    let duration = req.duration.trim();
    let custom = duration == "custom";
    let matchers =
        matchers(inc, req.scope.trim()).ok_or_else(|| refuse("scope", "choose one of the offered scopes"))?;
    let secs = match DURATIONS.iter().find(|(v, _, _)| *v == duration) {
        None => return Err(refuse("duration", "choose 1h, 4h, 24h or custom")),
        Some(_) if custom => parse_duration(&req.duration_custom)
            .ok_or_else(|| refuse("duration_custom", "give a duration like 90m, 2h or 3d"))?,
        Some((_, _, s)) => *s,
    };
    let spec = SilenceSpec {
        matchers,
        comment: req.comment.clone(),
        created_by: Some(by.to_string()),
        starts_at: None,
        ends_at: None,
        duration_secs: Some(secs),
    };
    let (start, end) = spec.validate(now).map_err(|e| refuse(request_field(&e.field, custom), e.error))?;
    Ok((spec, start, end))
}

/// Stores a checked silence created by `by` and records it in the audit log as `actor`'s.
pub async fn record(
    pool: &sqlx::PgPool,
    spec: &SilenceSpec,
    by: &str,
    actor: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Silence, sqlx::Error> {
    let s = store::create_silence(pool, &spec.matchers, spec.comment.trim(), by, start, end).await?;
    crate::db::audit::record(pool, actor, "create", "silence", &s.id.to_string(), None, crate::db::audit::json(&s))
        .await;
    Ok(s)
}

/// Silences `inc` as `req` asks, created by the user `by` (audit actor `actor`).
#[tracing::instrument(name = "silence_from_alert", skip_all, fields(alert = inc.id))]
pub async fn create(
    pool: &sqlx::PgPool,
    inc: &Incident,
    req: &Request,
    by: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Silence, SilenceError> {
    let (spec, start, end) = check(inc, req, by, now)?;
    let s = record(pool, &spec, by, actor, (start, end)).await?;
    tracing::info!(silence = %s.id, user = %by, matchers = %matchers_text(&spec.matchers), "silence created from an alert");
    Ok(s)
}

/// Ends a silence at `now` and records it as `actor`'s; false when none is in force with that id.
pub async fn expire(pool: &sqlx::PgPool, id: Uuid, actor: &str, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    if !store::expire_silence(pool, id, now).await? {
        return Ok(false);
    }
    crate::db::audit::record(pool, actor, "expire", "silence", &id.to_string(), None, None).await;
    Ok(true)
}

/// `alertname=gpu-temperature, group=node/a`.
pub fn matchers_text(ms: &[Matcher]) -> String {
    ms.iter()
        .map(|m| {
            let op = match m.op {
                MatchOp::Eq => "=",
                MatchOp::Ne => "!=",
                MatchOp::Glob => "=~",
            };
            format!("{}{op}{}", m.label, m.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(rule: &str) -> Incident {
        Incident {
            id: 7,
            dedup_key: "k".into(),
            group: "node/a".into(),
            rule: rule.into(),
            severity: "warning".into(),
            source: "node a".into(),
            component: "gpu".into(),
            summary: "hot".into(),
            details: serde_json::Value::Null,
            state: "firing".into(),
            started_at: Utc::now(),
            resolved_at: None,
            last_notified_at: None,
            notifications: 1,
        }
    }

    #[test]
    fn durations_read_minutes_hours_and_days() {
        assert_eq!(parse_duration("90m"), Some(5400.0));
        assert_eq!(parse_duration("1.5h"), Some(5400.0));
        assert_eq!(parse_duration("2"), Some(7200.0));
        assert_eq!(parse_duration(" 3d "), Some(259_200.0));
        assert_eq!(parse_duration("0h"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn a_rule_scope_matches_the_rule_in_its_group_and_errors_name_the_request_field() {
        let inc = incident("gpu-temperature, xid");
        let values: Vec<String> = scopes(&inc).into_iter().map(|s| s.value).collect();
        assert_eq!(values, ["rule:gpu-temperature", "rule:xid", "group"]);
        let mut req = default_request(&inc);
        req.comment = "maintenance".into();
        let now = Utc::now();
        let (spec, start, end) = check(&inc, &req, "ann", now).unwrap();
        assert_eq!(matchers_text(&spec.matchers), "alertname=gpu-temperature, group=node/a");
        assert_eq!((end - start).num_seconds(), 3600);
        let field = |r: &Request| check(&inc, r, "ann", now).err().map(|e| e.field);
        assert_eq!(field(&Request { scope: "rule:other".into(), ..req.clone() }), Some("scope"));
        assert_eq!(field(&Request { duration: "2w".into(), ..req.clone() }), Some("duration"));
        assert_eq!(field(&Request { duration: "custom".into(), ..req.clone() }), Some("duration_custom"));
        assert_eq!(field(&Request { comment: " ".into(), ..req }), Some("comment"));
    }
}
