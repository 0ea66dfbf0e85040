//! The decisions and alerts lists: filters, sorting, paging.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::Utc;

use super::dashboard::{outcome, target_link};
use super::session::WebUser;
use super::{Chrome, Pager, Params, WebError, ago, query_string, render};
use crate::db::dashboard::{self as store, AlertQuery, DecisionQuery, OutcomeFilter};
use crate::state::AppState;

const PER_PAGE: i64 = 50;
const SORTS: &[&str] = &["newest", "oldest"];

/// A decision row.
pub struct DecisionView {
    id: i64,
    when: String,
    at: String,
    target: String,
    link: String,
    change: String,
    winner: String,
    outcome: String,
    failed: bool,
    reason: String,
}

/// `templates/decisions.html`.
#[derive(Template)]
#[template(path = "decisions.html")]
pub struct DecisionsTemplate {
    chrome: Chrome,
    target: String,
    outcomes: Vec<super::Opt>,
    sorts: Vec<super::Opt>,
    rows: Vec<DecisionView>,
    pager: Pager,
}

/// `GET /decisions?target=&outcome=&sort=&page=`.
#[get("/decisions")]
pub async fn decisions(
    state: web::Data<AppState>,
    user: WebUser,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    const OUTCOMES: &[&str] = &["all", "changed", "applied", "dry_run", "failed"];
    let p = Params::new(q);
    let target = p.text("target")?;
    let outcome_key = p.choice("outcome", OUTCOMES)?;
    let sort = p.choice("sort", SORTS)?;
    let page = p.page()?;
    let query = DecisionQuery {
        target: target.clone(),
        outcome: match outcome_key {
            "changed" => OutcomeFilter::Changed,
            "applied" => OutcomeFilter::Applied,
            "dry_run" => OutcomeFilter::DryRun,
            "failed" => OutcomeFilter::Failed,
            _ => OutcomeFilter::All,
        },
        oldest_first: sort == "oldest",
        limit: PER_PAGE,
        offset: (page - 1) * PER_PAGE,
    };
    let (rows, total) = store::decision_page(&state.pool, &query).await?;
    let now = Utc::now();
    let target = target.unwrap_or_default();
    let base = query_string(&[("target", target.as_str()), ("outcome", outcome_key), ("sort", sort)]);
    let mut chrome = user.chrome(&state, "Decisions", "decisions");
    chrome.fragment = p.fragment();
    let t = DecisionsTemplate {
        chrome,
        outcomes: super::options(OUTCOMES, outcome_key),
        sorts: super::options(SORTS, sort),
        pager: Pager::new(page, PER_PAGE, total, base),
        rows: rows
            .into_iter()
            .map(|d| DecisionView {
                id: d.id,
                when: ago(now, d.decided_at),
                at: d.decided_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                link: target_link(&d.target),
                change: format!("{} → {}", d.current_replicas, d.desired_replicas),
                outcome: outcome(&d.error, d.dry_run, d.applied),
                failed: d.error.is_some(),
                winner: d.winner,
                target: d.target,
                reason: d.reason,
            })
            .collect(),
        target,
    };
    render(&t, StatusCode::OK)
}

/// An alert row.
pub struct AlertView {
    id: i64,
    since: String,
    at: String,
    severity: String,
    rule: String,
    source: String,
    summary: String,
    state: String,
    resolved: String,
}

/// `templates/alerts.html`.
#[derive(Template)]
#[template(path = "alerts.html")]
pub struct AlertsTemplate {
    chrome: Chrome,
    search: String,
    states: Vec<super::Opt>,
    severities: Vec<super::Opt>,
    sorts: Vec<super::Opt>,
    rows: Vec<AlertView>,
    pager: Pager,
}

/// `GET /alerts?state=&severity=&q=&sort=&page=`.
#[get("/alerts")]
pub async fn alerts(
    state: web::Data<AppState>,
    user: WebUser,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    const STATES: &[&str] = &["firing", "resolved", "all"];
    const SEVERITIES: &[&str] = &["any", "critical", "error", "warning", "info"];
    let p = Params::new(q);
    let alert_state = p.choice("state", STATES)?;
    let severity = p.choice("severity", SEVERITIES)?;
    let search = p.text("q")?;
    let sort = p.choice("sort", SORTS)?;
    let page = p.page()?;
    let query = AlertQuery {
        state: (alert_state != "all").then(|| alert_state.to_string()),
        severity: (severity != "any").then(|| severity.to_string()),
        search: search.clone(),
        oldest_first: sort == "oldest",
        limit: PER_PAGE,
        offset: (page - 1) * PER_PAGE,
    };
    let (rows, total) = store::alert_page(&state.pool, &query).await?;
    let now = Utc::now();
    let search = search.unwrap_or_default();
    let base = query_string(&[("state", alert_state), ("severity", severity), ("q", search.as_str()), ("sort", sort)]);
    let mut chrome = user.chrome(&state, "Alerts", "alerts");
    chrome.fragment = p.fragment();
    let t = AlertsTemplate {
        chrome,
        states: super::options(STATES, alert_state),
        severities: super::options(SEVERITIES, severity),
        sorts: super::options(SORTS, sort),
        pager: Pager::new(page, PER_PAGE, total, base),
        rows: rows
            .into_iter()
            .map(|a| AlertView {
                id: a.id,
                since: ago(now, a.started_at),
                at: a.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                resolved: a.resolved_at.map(|r| ago(now, r)).unwrap_or_default(),
                severity: a.severity,
                rule: a.rule,
                source: a.source,
                summary: a.summary,
                state: a.state,
            })
            .collect(),
        search,
    };
    render(&t, StatusCode::OK)
}
