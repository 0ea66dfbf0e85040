//! The decisions and alerts lists: filters, sorting, paging.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get};
use askama::Template;
use chrono::{DateTime, Utc};

use super::dashboard::{outcome, target_link};
use super::session::WebUser;
use super::{Chrome, Listing, Params, State, Viewer, WebError, ago, render};
use crate::alerts::rules::Labels;
use crate::alerts::silence_from::matchers_text;
use crate::db::alerts::{self as alert_store, Silence};
use crate::db::dashboard::{self as store, AlertQuery, AlertSort, DecisionQuery, OutcomeFilter};

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
    list: Listing<DecisionView>,
}

/// `GET /decisions?target=&outcome=&sort=&page=`.
#[get("/decisions")]
pub async fn decisions(v: Viewer, p: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    const OUTCOMES: &[&str] = &["all", "changed", "applied", "dry_run", "failed"];
    let target = p.text("target")?;
    let outcome_key = p.choice("outcome", OUTCOMES)?;
    let sort = p.choice("sort", SORTS)?;
    let paging = p.paging(PER_PAGE)?;
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
        offset: paging.offset(),
    };
    // Rows and the filter's count (a count a few seconds old is fine; the rows are live).
    let count_key = format!(
        "decisions\u{0}{outcome_key}\u{0}{}\u{0}{}",
        query.target.as_deref().unwrap_or(""),
        crate::db::Total::limit(query.offset, query.limit)
    );
    let (rows, total) = tokio::try_join!(
        async { Ok::<_, WebError>(store::decision_rows(&state.pool, &query).await?) },
        caches.counts.get(count_key, store::decision_total(&state.pool, &query)),
    )?;
    let now = Utc::now();
    let target = target.unwrap_or_default();
    let filters = [("target", target.as_str()), ("outcome", outcome_key)];
    let t = DecisionsTemplate {
        chrome: user.list_chrome(&state, "Decisions", "decisions", &p),
        outcomes: super::options(OUTCOMES, outcome_key),
        list: paging.listing(
            (SORTS, sort),
            rows.into_iter()
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
            total,
            &filters,
        ),
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
    /// Open: a silence can be created for it.
    firing: bool,
    /// The active silence muting every member of the incident, if one does.
    silenced_by: Option<String>,
}

/// An active or upcoming silence.
pub struct SilenceView {
    id: String,
    matchers: String,
    comment: String,
    created_by: String,
    /// "until 2024-01-01 12:00 UTC (in 3h)".
    until: String,
    /// It starts later.
    upcoming: bool,
    /// It was just created from this page.
    fresh: bool,
}

/// `templates/alerts.html`.
#[derive(Template)]
#[template(path = "alerts.html")]
pub struct AlertsTemplate {
    chrome: Chrome,
    search: String,
    rule: String,
    rules: Vec<String>,
    node: String,
    deployment: String,
    states: Vec<super::Opt>,
    severities: Vec<super::Opt>,
    list: Listing<AlertView>,
    silences: Vec<SilenceView>,
}

/// `GET /alerts?state=&severity=&rule=&node=&deployment=&q=&sort=&page=` (`silenced=<id>` after a silence was
/// created here, to point it out).
#[get("/alerts")]
pub async fn alerts(state: State, user: WebUser, p: Params) -> Result<HttpResponse, WebError> {
    const STATES: &[&str] = &["firing", "resolved", "all"];
    const SEVERITIES: &[&str] = &["any", "critical", "error", "warning", "info"];
    const ALERT_SORTS: &[&str] = &["newest", "oldest", "severity"];
    let alert_state = p.choice("state", STATES)?;
    let severity = p.choice("severity", SEVERITIES)?;
    let search = p.text("q")?;
    let rule = p.text("rule")?;
    let node = p.text("node")?;
    let deployment = p.text("deployment")?;
    let sort = p.choice("sort", ALERT_SORTS)?;
    let paging = p.paging(PER_PAGE)?;
    let fresh = p.text("silenced")?;
    let query = AlertQuery {
        state: (alert_state != "all").then(|| alert_state.to_string()),
        severity: (severity != "any").then(|| severity.to_string()),
        search: search.clone(),
        rule: rule.clone(),
        node: node.clone(),
        deployment: deployment.clone(),
        sort: match sort {
            "oldest" => AlertSort::Oldest,
            "severity" => AlertSort::Severity,
            _ => AlertSort::Newest,
        },
        limit: PER_PAGE,
        offset: paging.offset(),
    };
    let (rows, total) = store::alert_page(&state.pool, &query).await?;
    let now = Utc::now();
    let silences = alert_store::silences(&state.pool, now, false).await?;
    let active: Vec<&Silence> = silences.iter().filter(|s| s.starts_at <= now).collect();
    let open_groups: Vec<String> = rows.iter().filter(|a| a.state == "firing").map(|a| a.group_name.clone()).collect();
    let mut members: HashMap<String, Vec<Labels>> = HashMap::new();
    for (group, labels) in alert_store::active_labels(&state.pool, &open_groups).await? {
        members.entry(group).or_default().push(labels);
    }
    let rules = alert_store::incident_rules(&state.pool).await?;
    let (search, rule, node, deployment) = (
        search.unwrap_or_default(),
        rule.unwrap_or_default(),
        node.unwrap_or_default(),
        deployment.unwrap_or_default(),
    );
    let filters = [
        ("state", alert_state),
        ("severity", severity),
        ("rule", rule.as_str()),
        ("node", node.as_str()),
        ("deployment", deployment.as_str()),
        ("q", search.as_str()),
    ];
    let t = AlertsTemplate {
        chrome: user.list_chrome(&state, "Alerts", "alerts", &p),
        states: super::options(STATES, alert_state),
        severities: super::options(SEVERITIES, severity),
        list: paging.listing(
            (ALERT_SORTS, sort),
            rows.into_iter()
                .map(|a| {
                    let firing = a.state == "firing";
                    let silenced_by = if firing {
                        members.get(&a.group_name).and_then(|m| silenced_by(m, &active)).map(|s| {
                            format!("until {} by {}: {}", s.ends_at.format("%H:%M UTC"), s.created_by, s.comment)
                        })
                    } else {
                        None
                    };
                    AlertView {
                        id: a.id,
                        since: ago(now, a.started_at),
                        at: a.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        resolved: a.resolved_at.map(|r| ago(now, r)).unwrap_or_default(),
                        severity: a.severity,
                        rule: a.rule,
                        source: a.source,
                        summary: a.summary,
                        state: a.state,
                        firing,
                        silenced_by,
                    }
                })
                .collect(),
            total,
            &filters,
        ),
        silences: silences
            .iter()
            .map(|s| SilenceView {
                id: s.id.to_string(),
                matchers: matchers_text(&s.matchers.0),
                comment: s.comment.clone(),
                created_by: s.created_by.clone(),
                until: if s.starts_at > now {
                    format!(
                        "from {} until {}",
                        s.starts_at.format("%Y-%m-%d %H:%M UTC"),
                        s.ends_at.format("%Y-%m-%d %H:%M UTC")
                    )
                } else {
                    format!("until {} (in {})", s.ends_at.format("%Y-%m-%d %H:%M UTC"), remaining(now, s.ends_at))
                },
                upcoming: s.starts_at > now,
                fresh: fresh.as_deref() == Some(s.id.to_string().as_str()),
            })
            .collect(),
        rules,
        search,
        rule,
        node,
        deployment,
    };
    render(&t, StatusCode::OK)
}

/// The silence that mutes all of an incident's members (none without members: nothing to mute).
fn silenced_by<'a>(members: &[Labels], active: &[&'a Silence]) -> Option<&'a Silence> {
    let mut first = None;
    for labels in members {
        let s = active.iter().find(|s| s.matchers.0.iter().all(|m| m.matches(labels)))?;
        first.get_or_insert(*s);
    }
    first
}

/// "3h 20m", "45m", "2d 4h".
fn remaining(now: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let s = (end - now).num_seconds().max(0);
    match s {
        0..=3599 => format!("{}m", (s + 59) / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}
