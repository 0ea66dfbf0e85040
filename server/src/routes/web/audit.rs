//! The audit log page: who changed what, when, with the object before and after.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get};
use askama::Template;

use super::session::WebUser;
use super::{Chrome, Params, State, WebError, ago, query_string, render};
use crate::db;

const PER_PAGE: i64 = 100;
/// Longest JSON shown per cell (the whole entry is in `GET /api/v1/audit`).
const MAX_SHOWN: usize = 600;

/// One entry as shown.
pub struct AuditView {
    id: i64,
    when: String,
    at: String,
    actor: String,
    action: String,
    object: String,
    before: String,
    after: String,
}

/// `templates/audit.html`.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditTemplate {
    chrome: Chrome,
    kind: String,
    rows: Vec<AuditView>,
    older: String,
}

fn shown(v: Option<&serde_json::Value>) -> String {
    let Some(v) = v else { return String::new() };
    let s = v.to_string();
    if s.chars().count() > MAX_SHOWN { format!("{}…", s.chars().take(MAX_SHOWN).collect::<String>()) } else { s }
}

/// `GET /audit?kind=&before=`: newest first, 100 per page.
#[get("/audit")]
pub async fn page(state: State, user: WebUser, p: Params) -> Result<HttpResponse, WebError> {
    let kind = p.text("kind")?.unwrap_or_default();
    let before = match p.text("before")?.unwrap_or_default().as_str() {
        "" => None,
        b => Some(
            b.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| WebError::field("before", "must be an entry id"))?,
        ),
    };
    let kind_filter = (!kind.is_empty()).then_some(kind.as_str());
    let entries = db::audit::list(&state.pool, kind_filter, before, PER_PAGE).await?;
    let older = match entries.last() {
        Some(e) if entries.len() as i64 == PER_PAGE => {
            format!("/audit?{}", query_string(&[("before", &e.id.to_string()), ("kind", &kind)]))
        }
        _ => String::new(),
    };
    let now = chrono::Utc::now();
    let rows = entries
        .iter()
        .map(|e| AuditView {
            id: e.id,
            when: ago(now, e.at),
            at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            object: if e.object_id.is_empty() {
                e.object_kind.clone()
            } else {
                format!("{} {}", e.object_kind, e.object_id)
            },
            before: shown(e.before.as_ref()),
            after: shown(e.after.as_ref()),
        })
        .collect();
    let t = AuditTemplate { chrome: user.chrome(&state, "Audit log", "audit"), kind, rows, older };
    render(&t, StatusCode::OK)
}
