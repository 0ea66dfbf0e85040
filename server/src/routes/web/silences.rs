//! Silencing an alert from the alerts list: a confirm page (what it will match, for how long, why), the
//! POST that creates the silence (validated by the API's own `SilenceSpec::validate`, the error shown next
//! to its field), and "expire now". Operators only; every POST carries the session's CSRF token.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use askama::Template;

use super::FormValues as _;
use chrono::Utc;
use uuid::Uuid;

use super::lists::matchers_text;
use super::session::WebUser;
use super::{Chrome, WebError, render};
use crate::alerts::rules::{MatchOp, Matcher, SilenceSpec};
use crate::db::alerts::{self as store, Incident};
use crate::state::AppState;

/// The durations offered, `(value, label, seconds)`; `custom` reads `duration_custom`.
const DURATIONS: &[(&str, &str, f64)] =
    &[("1h", "1 hour", 3600.0), ("4h", "4 hours", 14_400.0), ("24h", "24 hours", 86_400.0), ("custom", "custom", 0.0)];

/// One `<option>` with its label.
pub struct Choice {
    value: String,
    label: String,
}

/// `templates/silence_form.html`: the confirm step.
#[derive(Template)]
#[template(path = "silence_form.html")]
pub struct SilenceFormTemplate {
    chrome: Chrome,
    id: i64,
    rule: String,
    severity: String,
    source: String,
    summary: String,
    scopes: Vec<Choice>,
    durations: Vec<Choice>,
    values: HashMap<String, String>,
    error_field: String,
    error: String,
}

impl super::FormValues for SilenceFormTemplate {
    fn values(&self) -> &HashMap<String, String> {
        &self.values
    }
    fn error_field(&self) -> &str {
        &self.error_field
    }
    fn error(&self) -> &str {
        &self.error
    }
}

/// The rules of an incident (its `rule` lists its members' rules, comma-separated).
fn rules_of(inc: &Incident) -> Vec<&str> {
    inc.rule.split(',').map(str::trim).filter(|r| !r.is_empty()).collect()
}

/// What a silence of `inc` can match: one of its rules in its group, or the whole group.
fn scopes(inc: &Incident) -> Vec<Choice> {
    let mut out: Vec<Choice> = rules_of(inc)
        .into_iter()
        .map(|r| Choice { value: format!("rule:{r}"), label: format!("{r} on {}", inc.group) })
        .collect();
    out.push(Choice { value: "group".into(), label: format!("every alert of {}", inc.group) });
    out
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
fn parse_duration(s: &str) -> Option<f64> {
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

fn page(
    user: &WebUser,
    state: &AppState,
    inc: &Incident,
    values: HashMap<String, String>,
    error_field: String,
    error: String,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let mut chrome = user.chrome(state, format!("Silence {}", inc.rule), "alerts");
    chrome.refresh_secs = 0;
    let t = SilenceFormTemplate {
        chrome,
        id: inc.id,
        rule: inc.rule.clone(),
        severity: inc.severity.clone(),
        source: inc.source.clone(),
        summary: inc.summary.clone(),
        scopes: scopes(inc),
        durations: DURATIONS.iter().map(|(v, l, _)| Choice { value: (*v).into(), label: (*l).into() }).collect(),
        values,
        error_field,
        error,
    };
    render(&t, status)
}

async fn incident(state: &AppState, id: &str) -> Result<Incident, WebError> {
    let id: i64 = id.parse().map_err(|_| WebError::field("id", "must be an alert id (a whole number)"))?;
    store::incident(&state.pool, id).await?.ok_or_else(|| WebError::NotFound(format!("no alert {id}")))
}

/// `GET /alerts/{id}/silence`: the confirm page (operators).
#[get("/alerts/{id}/silence")]
pub async fn confirm(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    user.require_operator()?;
    let inc = incident(&state, &id).await?;
    let scope = scopes(&inc).first().map(|c| c.value.clone()).unwrap_or_default();
    let values = HashMap::from([("scope".to_string(), scope), ("duration".to_string(), "1h".to_string())]);
    page(&user, &state, &inc, values, String::new(), String::new(), StatusCode::OK)
}

/// The form field to show an error of `SilenceSpec::validate` next to.
fn form_field(api_field: &str, custom: bool) -> &'static str {
    match api_field {
        "comment" => "comment",
        "duration_secs" | "ends_at" if custom => "duration_custom",
        "duration_secs" | "ends_at" => "duration",
        f if f.starts_with("matchers") => "scope",
        _ => "",
    }
}

/// `POST /alerts/{id}/silence`: creates the silence (created by the logged-in user) and goes back to the
/// alerts list, where the alert shows as silenced and the silence is listed.
#[post("/alerts/{id}/silence")]
pub async fn create(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let mut values = form.into_inner();
    user.may_act(values.get("csrf").map(String::as_str))?;
    values.remove("csrf");
    let inc = incident(&state, &id).await?;
    let get = |f: &str| values.get(f).map(|v| v.trim()).unwrap_or("");
    let custom = get("duration") == "custom";
    let refuse = |field: &str, msg: String| (field.to_string(), msg);
    let checked = (|| {
        let matchers =
            matchers(&inc, get("scope")).ok_or_else(|| refuse("scope", "choose one of the offered scopes".into()))?;
        let secs = match DURATIONS.iter().find(|(v, _, _)| *v == get("duration")) {
            None => return Err(refuse("duration", "choose 1h, 4h, 24h or custom".into())),
            Some(_) if custom => parse_duration(get("duration_custom"))
                .ok_or_else(|| refuse("duration_custom", "give a duration like 90m, 2h or 3d".into()))?,
            Some((_, _, s)) => *s,
        };
        let spec = SilenceSpec {
            matchers,
            comment: values.get("comment").cloned().unwrap_or_default(),
            created_by: Some(user.name.clone()),
            starts_at: None,
            ends_at: None,
            duration_secs: Some(secs),
        };
        // The API's own checks, so the form accepts exactly what `POST /api/v1/silences` does.
        let (start, end) = spec.validate(Utc::now()).map_err(|e| refuse(form_field(&e.field, custom), e.error))?;
        Ok((spec, start, end))
    })();
    let (spec, start, end) = match checked {
        Ok(v) => v,
        Err((field, error)) => return page(&user, &state, &inc, values, field, error, StatusCode::BAD_REQUEST),
    };
    let s = store::create_silence(&state.pool, &spec.matchers, spec.comment.trim(), &user.name, start, end).await?;
    tracing::info!(silence = %s.id, user = %user.name, matchers = %matchers_text(&spec.matchers), "silence created from the dashboard");
    let after = serde_json::to_value(&s).ok();
    crate::db::audit::record(&state.pool, &user.actor(), "create", "silence", &s.id.to_string(), None, after).await;
    Ok(HttpResponse::SeeOther().insert_header(("Location", format!("/alerts?silenced={}#silences", s.id))).finish())
}

/// `POST /silences/{id}/expire`: ends a silence now (operators).
#[post("/silences/{id}/expire")]
pub async fn expire(
    state: web::Data<AppState>,
    user: WebUser,
    id: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    user.may_act(form.get("csrf").map(String::as_str))?;
    let id = Uuid::parse_str(&id).map_err(|_| WebError::field("id", "must be a silence id (UUID)"))?;
    if !store::expire_silence(&state.pool, id, Utc::now()).await? {
        return Err(WebError::NotFound(format!("no silence {id} in force")));
    }
    tracing::info!(silence = %id, user = %user.name, "silence expired from the dashboard");
    crate::db::audit::record(&state.pool, &user.actor(), "expire", "silence", &id.to_string(), None, None).await;
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/alerts#silences")).finish())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
