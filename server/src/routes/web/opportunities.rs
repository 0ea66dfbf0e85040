//! Optimization opportunities: the list (filters, sorting, paging), one opportunity with its action history,
//! dismissal, and the one-click action behind a server-side confirmation page.
//!
//! A one-click action goes through the machinery the control loop uses: a scale is recorded as a decision of
//! the deployment's policy (winner `operator`) and applied through the same actuators; a rebatch or probe is
//! queued as agent commands. Each is recorded in `opportunity_actions` with who clicked and what came of it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use chrono::{DateTime, Utc};
use forecasting::opportunities::Kind;
use serde_json::json;

use super::{
    Chrome, Listing, Operator, Params, State, Submitted, Viewer, WebError, ago, render, see_other, url_encode,
};
use crate::db;
use crate::db::opportunities::{self as store, ListedOpportunity, PageQuery, Sort, StoredOpportunity};
use crate::db::policies::StoredPolicy;
use crate::opportunities::act::{self as one_click, Plan};
use crate::state::AppState;

const PER_PAGE: i64 = 50;
const SORTS: &[&str] = &["value", "gpu_hours", "first_seen", "updated"];
const STATUSES: &[&str] = &["open", "dismissed", "closed", "all"];

/// Longest dismissal reason, characters (as the API).
const MAX_REASON_CHARS: usize = crate::routes::api::opportunities::MAX_REASON_CHARS;
/// Nodes named on the confirmation page before "and N more".
const NODES_NAMED: usize = 12;

/// An opportunity as a row (and the head of its own page).
pub struct OpportunityView {
    id: i64,
    kind: String,
    status: String,
    title: String,
    target: String,
    target_link: String,
    evidence: String,
    numbers: String,
    evidence_link: String,
    gpu_hours: String,
    saving: String,
    expected: String,
    latency: String,
    confidence: String,
    action: String,
    /// Whether the one-click button is offered.
    can_act: bool,
    /// Why there is no button (advisory), when there is not.
    advisory: String,
    first_seen: String,
    updated: String,
    dismissed: String,
    last_action: String,
    last_action_failed: bool,
}

fn money(currency: &str, v: f64) -> String {
    format!("{currency} {v:.0}")
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The smallest range of the picker that reaches back to `from` (the evidence's start).
fn range_key(now: DateTime<Utc>, from: DateTime<Utc>) -> &'static str {
    let secs = (now - from).num_seconds();
    match secs {
        s if s <= 900 => "15m",
        s if s <= 3600 => "1h",
        s if s <= 6 * 3600 => "6h",
        s if s <= 24 * 3600 => "24h",
        s if s <= 3 * 86_400 => "3d",
        _ => "7d",
    }
}

fn target_words(o: &StoredOpportunity) -> (String, String) {
    match (&o.node_id, o.gpu_index, &o.deployment) {
        (Some(n), Some(g), _) => (format!("{n} GPU {g}"), format!("/nodes/{}/gpus/{g}", url_encode(n))),
        (Some(n), None, _) => (format!("node {n}"), format!("/nodes/{}", url_encode(n))),
        (None, _, Some(d)) if d.contains('/') => (d.clone(), format!("/deployments/{}", url_encode(d))),
        (None, _, Some(d)) => (d.clone(), String::new()),
        (None, _, None) => ("fleet".into(), String::new()),
    }
}

/// Key numbers as `name value` pairs (NaN, stored as null, is left out).
fn numbers_words(evidence: &serde_json::Value) -> String {
    evidence
        .get("numbers")
        .and_then(|n| n.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_f64().map(|v| format!("{} {}", k.replace('_', " "), super::chart::num(v))))
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default()
}

fn latency_words(latency: &serde_json::Value) -> String {
    let ms = |k: &str| latency.get(k).and_then(|v| v.as_f64()).map(|s| format!("{:.0} ms", s * 1000.0));
    let mut out = latency.get("summary").and_then(|s| s.as_str()).unwrap_or("").to_string();
    let figures: Vec<String> = [("now", ms("before_s")), ("after", ms("after_s")), ("SLO", ms("slo_s"))]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
        .collect();
    if !figures.is_empty() {
        out = format!("{out} ({})", figures.join(", "));
    }
    out
}

fn view(now: DateTime<Utc>, l: ListedOpportunity, policies: &[StoredPolicy]) -> OpportunityView {
    let o = &l.o;
    let plan = one_click::action_plan(o);
    let advisory = one_click::advisory_reason(o, plan.as_ref(), policies);
    let (target, target_link) = target_words(o);
    let series = o.evidence.get("series").and_then(|s| s.as_str()).unwrap_or("?");
    let from = at(o.evidence.get("from_secs").and_then(|v| v.as_i64()).unwrap_or(0));
    let to = at(o.evidence.get("to_secs").and_then(|v| v.as_i64()).unwrap_or(0));
    let evidence_link =
        if target_link.is_empty() { String::new() } else { format!("{target_link}?range={}", range_key(now, from)) };
    let dismissed = match (&o.dismissed_at, &o.dismissed_reason) {
        (Some(t), reason) => format!(
            "dismissed {} by {}: {}",
            ago(now, *t),
            l.dismissed_by.as_deref().unwrap_or("the API"),
            reason.as_deref().unwrap_or("")
        ),
        _ => String::new(),
    };
    let last_action = match (&l.action_at, &l.action_by, &l.action_result) {
        (Some(t), Some(by), Some(r)) => format!("{} by {by}: {r}", ago(now, *t)),
        _ => String::new(),
    };
    OpportunityView {
        id: o.id,
        kind: o.kind.replace('_', " "),
        status: o.status.clone(),
        title: o.title.clone(),
        target,
        target_link,
        evidence: format!(
            "{series}, {} – {} UTC",
            from.format("%Y-%m-%d %H:%M"),
            if to.date_naive() == from.date_naive() {
                to.format("%H:%M").to_string()
            } else {
                to.format("%Y-%m-%d %H:%M").to_string()
            }
        ),
        numbers: numbers_words(&o.evidence),
        evidence_link,
        gpu_hours: format!("{:.1}", o.gpu_hours_per_week),
        saving: money(&o.currency, o.saving_per_week),
        expected: money(&o.currency, o.expected_value),
        latency: latency_words(&o.latency),
        confidence: format!("{:.0}%", o.confidence * 100.0),
        action: plan
            .as_ref()
            .map(|p| p.description.clone())
            .or_else(|| o.action.get("description").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_default(),
        can_act: advisory.is_none(),
        advisory: advisory.unwrap_or_default(),
        first_seen: ago(now, o.first_seen),
        updated: ago(now, o.last_seen),
        dismissed,
        last_action,
        last_action_failed: l.action_ok == Some(false),
    }
}

/// `templates/opportunities.html`.
#[derive(Template)]
#[template(path = "opportunities.html")]
pub struct ListTemplate {
    chrome: Chrome,
    deployment: String,
    node: String,
    kinds: Vec<super::Opt>,
    statuses: Vec<super::Opt>,
    list: Listing<OpportunityView>,
    /// This page's URL, where the dismiss forms come back to.
    back: String,
    /// "Opportunity N dismissed" after a dismissal.
    notice: String,
    /// The fleet's idle capacity over the latest window, if the refresher has run.
    idle: Option<IdleView>,
}

/// The idle-capacity summary above the list.
pub struct IdleView {
    /// GPUs idle on average, e.g. `4.3`.
    gpus: String,
    /// Of how many.
    of: i32,
    /// Share, e.g. `36 %`.
    share: String,
    /// GPU-hours per week.
    gpu_hours: String,
    /// Money per week.
    money: String,
    /// Window, e.g. `10:02-10:12 UTC`.
    window: String,
}

fn idle_view(r: &db::idle::IdleRow) -> IdleView {
    IdleView {
        gpus: format!("{:.1}", r.idle_gpu_equivalent),
        of: r.gpus_observed,
        share: format!("{:.0} %", r.idle_share * 100.0),
        gpu_hours: format!("{:.0}", r.gpu_hours_per_week),
        money: money(&r.currency, r.money_per_week),
        window: format!("{} to {} UTC", r.window_start.format("%m-%d %H:%M"), r.window_end.format("%m-%d %H:%M")),
    }
}

fn kinds() -> Vec<&'static str> {
    std::iter::once("any").chain(Kind::ALL.iter().map(|k| k.as_str())).collect()
}

/// `GET /opportunities?deployment=&node=&kind=&status=&sort=&page=`.
#[get("/opportunities")]
pub async fn list(v: Viewer, p: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let deployment = p.text("deployment")?;
    let node = p.text("node")?;
    let kinds = kinds();
    let kind = p.choice("kind", &kinds)?;
    let status = p.choice("status", STATUSES)?;
    let sort = p.choice("sort", SORTS)?;
    let paging = p.paging(PER_PAGE)?;
    let dismissed: Option<i64> = p.text("dismissed")?.and_then(|v| v.parse().ok());
    let query = PageQuery {
        filter: store::Filter {
            deployment: deployment.clone(),
            node: node.clone(),
            kind: (kind != "any").then(|| kind.to_string()),
            status: (status != "all").then(|| status.to_string()),
            limit: PER_PAGE,
            offset: paging.offset(),
        },
        sort: match sort {
            "gpu_hours" => Sort::GpuHours,
            "first_seen" => Sort::FirstSeen,
            "updated" => Sort::Updated,
            _ => Sort::Value,
        },
    };
    let ((rows, total), policies, idle) = tokio::try_join!(
        async { Ok::<_, WebError>(store::page(&state.pool, &query).await?) },
        caches.policies.list(&state.pool, state.policy_epoch()),
        async { Ok(db::idle::latest(&state.pool).await?) }
    )?;
    let now = Utc::now();
    let (deployment, node) = (deployment.unwrap_or_default(), node.unwrap_or_default());
    let filters = [("deployment", deployment.as_str()), ("node", node.as_str()), ("kind", kind), ("status", status)];
    let mut chrome = user.list_chrome(&state, "Opportunities", "opportunities", &p);
    // No live refresh: it would swap the dismiss forms out from under a reason being typed (opportunities are
    // refreshed every few minutes anyway).
    chrome.refresh_secs = 0;
    let list =
        paging.listing((SORTS, sort), rows.into_iter().map(|l| view(now, l, &policies)).collect(), total, &filters);
    // This page again (the dismiss forms come back to it): its filters, sort and page.
    let sep = if list.pager.base_query.is_empty() { "" } else { "&" };
    let back = format!("/opportunities?{}{sep}page={}", list.pager.base_query, paging.page);
    let t = ListTemplate {
        chrome,
        kinds: super::options(&kinds, kind),
        statuses: super::options(STATUSES, status),
        back,
        list,
        notice: dismissed.map(|id| format!("Opportunity {id} dismissed.")).unwrap_or_default(),
        idle: idle.as_ref().map(idle_view),
        deployment,
        node,
    };
    render(&t, StatusCode::OK)
}

fn parse_id(id: &str) -> Result<i64, WebError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| WebError::field("id", "must be a positive integer"))
}

async fn load(state: &AppState, id: i64) -> Result<ListedOpportunity, WebError> {
    store::listed(&state.pool, id).await?.ok_or_else(|| WebError::NotFound(format!("no opportunity {id}")))
}

/// A past action as shown.
pub struct ActionView {
    when: String,
    at: String,
    by: String,
    ok: bool,
    result: String,
    decision_link: String,
    commands: Vec<CommandState>,
}

/// A queued agent command's state.
pub struct CommandState {
    node: String,
    node_link: String,
    state: String,
    result: String,
}

/// `templates/opportunity.html`.
#[derive(Template)]
#[template(path = "opportunity.html")]
pub struct DetailTemplate {
    chrome: Chrome,
    o: OpportunityView,
    actions: Vec<ActionView>,
    back: String,
}

fn command_state(c: &db::commands::CommandRecord) -> &'static str {
    match (c.ok, c.acked_at, c.delivered_at) {
        (Some(true), _, _) => "done",
        (Some(false), _, _) => "failed",
        (None, Some(_), _) => "received",
        (None, None, Some(_)) => "delivered",
        _ => "queued",
    }
}

/// `GET /opportunities/{id}`: one opportunity, its forms and what was done about it.
#[get("/opportunities/{id}")]
pub async fn detail(v: Viewer, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let id = parse_id(&id)?;
    let (l, policies, actions) =
        tokio::try_join!(load(&state, id), caches.policies.list(&state.pool, state.policy_epoch()), async {
            store::actions(&state.pool, id, 20).await.map_err(WebError::from)
        },)?;
    let now = Utc::now();
    let mut shown = Vec::with_capacity(actions.len());
    for a in actions {
        let mut commands = Vec::new();
        // Only the newest actions' commands are looked up (each is one primary-key read).
        for cid in a.command_ids.iter().take(NODES_NAMED) {
            if let Some(c) = db::commands::get(&state.pool, *cid).await? {
                commands.push(CommandState {
                    node_link: format!("/nodes/{}", url_encode(&c.node_id)),
                    state: command_state(&c).into(),
                    result: c.result.clone().unwrap_or_default(),
                    node: c.node_id,
                });
            }
        }
        shown.push(ActionView {
            when: ago(now, a.acted_at),
            at: a.acted_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            by: a.acted_by,
            ok: a.ok,
            result: a.result,
            decision_link: a.decision_id.map(|d| format!("/decisions#decision-{d}")).unwrap_or_default(),
            commands,
        });
    }
    let title = format!("Opportunity {id}");
    let chrome = user.still_chrome(&state, title, "opportunities");
    let t = DetailTemplate { chrome, o: view(now, l, &policies), actions: shown, back: format!("/opportunities/{id}") };
    render(&t, StatusCode::OK)
}

/// What a plan will do, in words, for the confirmation page.
fn words(plan: &Plan) -> Vec<String> {
    match plan {
        Plan::Scale { policy, current, replicas, asked } => {
            let s = &policy.spec;
            let mut w = vec![format!(
                "Record an override of policy {}: its control loop will scale {} from {current} to {replicas} \
                     replicas on its next tick (a decision with winner \"override\", fenced like its own) and hold \
                     that count for the period chosen below.",
                s.name,
                s.target_label()
            )];
            if replicas != asked {
                w.push(format!(
                    "The opportunity asks for {asked}; the policy allows {}..={}, so {replicas}.",
                    s.min_replicas, s.max_replicas
                ));
            }
            if s.dry_run {
                w.push("The policy is in dry-run mode: the decision is recorded, nothing is scaled.".into());
            } else {
                w.push(
                    "After the hold the policy decides again: if its targets call for other replicas, it will \
                         move them. To make this stick, change the policy."
                        .into(),
                );
            }
            w
        }
        Plan::Rebatch { deployment, nodes, max_batch_size, max_queue_delay_us } => {
            let mut named: Vec<String> = nodes.iter().take(NODES_NAMED).cloned().collect();
            if nodes.len() > NODES_NAMED {
                named.push(format!("and {} more", nodes.len() - NODES_NAMED));
            }
            vec![
                format!(
                    "Queue a rebatch command (max batch size {max_batch_size}, batching delay {max_queue_delay_us} µs) for {deployment} on {} node{}: {}.",
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" },
                    named.join(", ")
                ),
                "Agents apply it with their next poll; a policy's rebatch controller may change batching again later."
                    .into(),
            ]
        }
        Plan::Probe { node } => vec![format!(
            "Queue the GPU memory-bandwidth probe on node {node}; results appear on its page under Health probes."
        )],
    }
}

/// `templates/opportunity_confirm.html`.
#[derive(Template)]
#[template(path = "opportunity_confirm.html")]
pub struct ConfirmTemplate {
    chrome: Chrome,
    o: OpportunityView,
    steps: Vec<String>,
    blocked: String,
    /// Whether the action sets a replica count (and so takes a hold period).
    holds: bool,
}

/// `GET /opportunities/{id}/act`: what the one-click action will do, and the button that does it (operators).
#[get("/opportunities/{id}/act")]
pub async fn confirm(state: State, user: Operator, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let l = load(&state, id).await?;
    let planned = one_click::plan(&state.pool, &l.o).await?;
    let policies = db::policies::list(&state.pool).await?;
    let (steps, blocked, holds) = match planned {
        Ok(p) => (words(&p), String::new(), matches!(p, Plan::Scale { .. })),
        Err(why) => (Vec::new(), why, false),
    };
    let chrome = user.still_chrome(&state, format!("Act on opportunity {id}"), "opportunities");
    let t = ConfirmTemplate { chrome, o: view(Utc::now(), l, &policies), steps, blocked, holds };
    render(&t, StatusCode::OK)
}

/// `POST /opportunities/{id}/act` (operators, CSRF): carries out the one-click action, records who did it and
/// what came of it, and shows the opportunity with the result.
#[post("/opportunities/{id}/act")]
pub async fn act(state: State, id: web::Path<String>, form: Submitted) -> Result<HttpResponse, WebError> {
    let user = &form.user;
    let id = parse_id(&id)?;
    let l = load(&state, id).await?;
    let planned = match one_click::plan(&state.pool, &l.o).await? {
        Ok(p) => p,
        Err(why) => return Err(WebError::field("action", why)),
    };
    let hold_minutes = match Some(form.get("hold_minutes")).filter(|v| !v.is_empty()) {
        None => one_click::DEFAULT_HOLD_MINUTES,
        Some(v) => v.parse::<u32>().ok().filter(|m| *m <= one_click::MAX_HOLD_MINUTES).ok_or_else(|| {
            WebError::field("hold_minutes", format!("must be 0 to {} minutes", one_click::MAX_HOLD_MINUTES))
        })?,
    };
    let now = Utc::now();
    let one_click::Outcome { ok, result, decision_id, command_ids } =
        one_click::perform(&state.pool, state.settings.control.enabled, &user.name, &l.o, planned, hold_minutes, now)
            .await?;
    tracing::info!(user = %user.name, opportunity = id, key = %l.o.key, ok, result = %result, "one-click action from the dashboard");
    let command = l.o.action.get("command").cloned().unwrap_or_default();
    let after =
        json!({"command": command, "ok": ok, "result": result, "decision_id": decision_id, "command_ids": command_ids});
    db::audit::record(&state.pool, &user.actor(), "act", "opportunity", &id.to_string(), None, Some(after)).await;
    Ok(see_other(format!("/opportunities/{id}")))
}

/// Only this page's own lists are redirected back to (no open redirect).
fn safe_back(back: Option<&String>, id: i64) -> String {
    match back {
        Some(b)
            if (b.starts_with("/opportunities?") || b == "/opportunities" || *b == format!("/opportunities/{id}"))
                && !b.contains("//")
                && !b.contains('\\') =>
        {
            b.clone()
        }
        _ => format!("/opportunities/{id}"),
    }
}

/// `POST /opportunities/{id}/dismiss` with `reason` (1..=500 characters) and `back` (operators, CSRF): it stays
/// dismissed while it persists; back to the list (or the opportunity's page) afterwards.
#[post("/opportunities/{id}/dismiss")]
pub async fn dismiss(state: State, id: web::Path<String>, form: Submitted) -> Result<HttpResponse, WebError> {
    let user = &form.user;
    let id = parse_id(&id)?;
    let reason = form.get("reason");
    let chars = reason.chars().count();
    if chars == 0 || chars > MAX_REASON_CHARS {
        return Err(WebError::field("reason", format!("must be 1 to {MAX_REASON_CHARS} characters")));
    }
    if store::dismiss_by(&state.pool, id, reason, &user.name, Utc::now()).await?.is_none() {
        return match store::get(&state.pool, id).await? {
            Some(_) => Err(WebError::field("id", format!("opportunity {id} is closed: there is nothing to dismiss"))),
            None => Err(WebError::NotFound(format!("no opportunity {id}"))),
        };
    }
    tracing::info!(user = %user.name, opportunity = id, reason, "opportunity dismissed from the dashboard");
    db::audit::record(
        &state.pool,
        &user.actor(),
        "dismiss",
        "opportunity",
        &id.to_string(),
        None,
        Some(json!({"reason": reason})),
    )
    .await;
    let back = safe_back(form.values.get("back"), id);
    let location = if back.starts_with("/opportunities?") || back == "/opportunities" {
        format!("{back}{}dismissed={id}", if back.contains('?') { "&" } else { "?" })
    } else {
        back
    };
    Ok(see_other(location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_picked_for_evidence_reaches_back_to_its_start() {
        let now = Utc::now();
        assert_eq!(range_key(now, now - chrono::Duration::minutes(10)), "15m");
        assert_eq!(range_key(now, now - chrono::Duration::hours(5)), "6h");
        assert_eq!(range_key(now, now - chrono::Duration::days(30)), "7d");
        assert!(crate::routes::web::RANGES.contains(&range_key(now, now)));
    }

    #[test]
    fn dismissals_only_go_back_to_opportunity_pages() {
        assert_eq!(
            safe_back(Some(&"/opportunities?status=open&page=2".into()), 3),
            "/opportunities?status=open&page=2"
        );
        assert_eq!(safe_back(Some(&"https://evil.example/".into()), 3), "/opportunities/3");
        assert_eq!(safe_back(Some(&"/opportunities?x=//evil".into()), 3), "/opportunities/3");
        assert_eq!(safe_back(None, 3), "/opportunities/3");
    }

    #[test]
    fn latency_and_numbers_read_as_words() {
        let l = json!({"summary": "fine", "before_s": 0.05, "after_s": null, "slo_s": 0.1});
        assert_eq!(latency_words(&l), "fine (now 50 ms, SLO 100 ms)");
        let e = json!({"numbers": {"idle_fraction": 1.0, "nan_value": null}});
        assert_eq!(numbers_words(&e), "idle fraction 1.0");
    }
}
