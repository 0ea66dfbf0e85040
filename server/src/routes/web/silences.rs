//! Silencing an alert from the alerts list: a confirm page (what it will match, for how long, why), the
//! POST that creates the silence, and "expire now". The workflow (scopes, lengths, the API's own checks,
//! the writes) is the service [`crate::alerts::silence_from`]; this view parses the form, calls it and
//! renders, with a refusal shown next to its field. Operators only; every POST carries the CSRF token.

use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;
use uuid::Uuid;

use super::session::WebUser;
use super::{Chrome, FormState, Operator, State, Submitted, WebError, render, see_other};
use crate::alerts::silence_from::{self as service, Request, Scope, SilenceError};
use crate::db::alerts::{self as store, Incident};
use crate::state::AppState;

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
    form: FormState,
}

fn page(user: &WebUser, state: &AppState, inc: &Incident, form: FormState) -> Result<HttpResponse, WebError> {
    let t = SilenceFormTemplate {
        chrome: user.still_chrome(state, format!("Silence {}", inc.rule), "alerts"),
        id: inc.id,
        rule: inc.rule.clone(),
        severity: inc.severity.clone(),
        source: inc.source.clone(),
        summary: inc.summary.clone(),
        scopes: service::scopes(inc).into_iter().map(|Scope { value, label }| Choice { value, label }).collect(),
        durations: service::DURATIONS
            .iter()
            .map(|(v, l, _)| Choice { value: (*v).into(), label: (*l).into() })
            .collect(),
        form,
    };
    render(&t, t.form.status())
}

async fn incident(state: &AppState, id: &str) -> Result<Incident, WebError> {
    let id: i64 = id.parse().map_err(|_| WebError::field("id", "must be an alert id (a whole number)"))?;
    store::incident(&state.pool, id).await?.ok_or_else(|| WebError::NotFound(format!("no alert {id}")))
}

/// `GET /alerts/{id}/silence`: the confirm page (operators).
#[get("/alerts/{id}/silence")]
pub async fn confirm(state: State, user: Operator, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let inc = incident(&state, &id).await?;
    let start = service::default_request(&inc);
    let values = [("scope", start.scope), ("duration", start.duration)].map(|(k, v)| (k.to_string(), v));
    page(&user, &state, &inc, FormState::new(values.into()))
}

/// `POST /alerts/{id}/silence`: creates the silence (created by the logged-in user) and goes back to the
/// alerts list, where the alert shows as silenced and the silence is listed.
#[post("/alerts/{id}/silence")]
pub async fn create(state: State, id: web::Path<String>, form: Submitted) -> Result<HttpResponse, WebError> {
    let inc = incident(&state, &id).await?;
    let req = Request {
        scope: form.get("scope").into(),
        duration: form.get("duration").into(),
        duration_custom: form.get("duration_custom").into(),
        comment: form.values.get("comment").cloned().unwrap_or_default(),
    };
    let Submitted { user, values } = form;
    match service::create(&state.pool, &inc, &req, &user.name, &user.actor(), Utc::now()).await {
        Ok(s) => Ok(see_other(format!("/alerts?silenced={}#silences", s.id))),
        Err(SilenceError::Refused(r)) => {
            page(&user, &state, &inc, FormState::refused(values, WebError::field(r.field, r.message)))
        }
        Err(SilenceError::Db(e)) => Err(e.into()),
    }
}

/// `POST /silences/{id}/expire`: ends a silence now (operators).
#[post("/silences/{id}/expire")]
pub async fn expire(state: State, id: web::Path<String>, form: Submitted) -> Result<HttpResponse, WebError> {
    let id = Uuid::parse_str(&id).map_err(|_| WebError::field("id", "must be a silence id (UUID)"))?;
    if !service::expire(&state.pool, id, &form.user.actor(), Utc::now()).await? {
        return Err(WebError::NotFound(format!("no silence {id} in force")));
    }
    tracing::info!(silence = %id, user = %form.user.name, "silence expired from the dashboard");
    Ok(see_other("/alerts#silences"))
}
