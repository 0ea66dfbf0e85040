//! The fleet overview `/`: tiles, the node × GPU heatmap, the health strip, the latest decisions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::Utc;
use tokio::sync::Mutex;

use super::chart::{self, Cell};
use super::session::WebUser;
use super::{Chrome, Pager, Params, WebError, ago, render};
use crate::db::{self, dashboard::SlowTiles};
use crate::state::AppState;

/// Nodes per heatmap page.
const HEATMAP_NODES: i64 = 64;
/// How long the history-scanning figures are served before a background refresh.
const SLOW_TTL: Duration = Duration::from_secs(30);

/// The figures that scan history (idle GPU-hours today, ECC), computed at most every 30 s in the background
/// and served from memory, so the overview stays fast at 10,000 GPUs.
#[derive(Debug, Default)]
pub struct OverviewCache {
    slow: Mutex<Option<(Instant, SlowTiles)>>,
    refreshing: std::sync::atomic::AtomicBool,
}

impl OverviewCache {
    /// The cached figures; the first call computes them, later calls refresh stale ones in the background.
    pub async fn slow(self: &Arc<Self>, pool: &sqlx::PgPool) -> Result<SlowTiles, sqlx::Error> {
        use std::sync::atomic::Ordering;
        let mut guard = self.slow.lock().await;
        match *guard {
            Some((at, v)) => {
                if at.elapsed() > SLOW_TTL && !self.refreshing.swap(true, Ordering::AcqRel) {
                    let (me, pool) = (self.clone(), pool.clone());
                    tokio::spawn(async move {
                        match db::dashboard::slow_tiles(&pool).await {
                            Ok(v) => *me.slow.lock().await = Some((Instant::now(), v)),
                            Err(e) => tracing::warn!(error = %e, "refreshing overview figures failed"),
                        }
                        me.refreshing.store(false, Ordering::Release);
                    });
                }
                Ok(v)
            }
            None => {
                let v = db::dashboard::slow_tiles(pool).await?;
                *guard = Some((Instant::now(), v));
                Ok(v)
            }
        }
    }
}

/// A decision as shown.
pub struct DecisionView {
    when: String,
    target: String,
    link: String,
    change: String,
    outcome: String,
    reason: String,
}

/// An opportunity in the overview's top list.
pub struct TopOpportunity {
    id: i64,
    saving: String,
    gpu_hours: String,
    kind: String,
    title: String,
    action: String,
}

/// Open opportunities on the overview.
const TOP_OPPORTUNITIES: i64 = 5;

/// `templates/index.html`.
#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexTemplate {
    chrome: Chrome,
    gpus_reporting: i64,
    idle_allocated: i64,
    fleet_util: String,
    idle_hours: String,
    idle_cost: String,
    open_alerts: i64,
    nodes: i64,
    xid: i64,
    ecc: i64,
    throttled: i64,
    silent: i64,
    heatmap: String,
    pager: Pager,
    decisions: Vec<DecisionView>,
    /// Open opportunities.
    open_opportunities: i64,
    /// Money they would save per week.
    savings: String,
    /// GPU-hours they would free per week.
    savings_gpu_hours: String,
    /// The top open opportunities by expected value.
    top: Vec<TopOpportunity>,
}

/// Outcome of a decision in words.
pub fn outcome(error: &Option<String>, dry_run: bool, applied: bool) -> String {
    match (error, dry_run, applied) {
        (Some(e), _, _) => format!("failed: {e}"),
        (None, true, _) => "dry run".into(),
        (None, false, true) => "applied".into(),
        (None, false, false) => "pending".into(),
    }
}

/// The deployment page of a decision's target label, when it names one.
pub fn target_link(target: &str) -> String {
    let rest = target.strip_prefix("deployment ").or_else(|| target.strip_prefix("statefulset "));
    match rest {
        Some(d) if d.contains('/') => format!("/deployments/{}", super::url_encode(d)),
        _ => "/deployments".into(),
    }
}

/// `GET /`: the fleet at a glance.
#[get("/")]
pub async fn index(
    state: web::Data<AppState>,
    user: WebUser,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let params = Params::new(q);
    let page = params.page()?;
    let now = Utc::now();
    let pool = &state.pool;
    let fresh = state.settings.alerts.node_silent_secs;
    let top_query = db::opportunities::PageQuery {
        filter: db::opportunities::Filter {
            status: Some("open".into()),
            limit: TOP_OPPORTUNITIES,
            ..Default::default()
        },
        sort: db::opportunities::Sort::Value,
    };
    let (tiles, slow, (node_ids, node_total), decisions, summary, (top, _)) = tokio::try_join!(
        db::dashboard::tiles(pool, fresh),
        state.overview.slow(pool),
        db::dashboard::node_page(pool, HEATMAP_NODES, (page - 1) * HEATMAP_NODES),
        db::dashboard::decisions(pool, 10),
        db::opportunities::open_summary(pool),
        db::opportunities::page(pool, &top_query),
    )?;
    let gpus = db::dashboard::gpus_of(pool, &node_ids).await?;
    let mut by_node: HashMap<&str, Vec<Cell>> = HashMap::new();
    for g in &gpus {
        by_node.entry(g.node_id.as_str()).or_default().push(Cell {
            gpu: g.gpu_index,
            util: f64::from(g.util_pct),
            stale: (now - g.ts).num_seconds() > i64::from(fresh),
        });
    }
    let rows: Vec<(String, Vec<Cell>)> =
        node_ids.iter().map(|n| (n.clone(), by_node.remove(n.as_str()).unwrap_or_default())).collect();
    let d = &state.settings.dashboard;
    let mut chrome = user.chrome(&state, "Fleet", "fleet");
    chrome.fragment = params.fragment();
    let t = IndexTemplate {
        chrome,
        gpus_reporting: tiles.gpus_reporting,
        idle_allocated: tiles.idle_allocated,
        fleet_util: tiles.mean_util_pct.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "–".into()),
        idle_hours: format!("{:.1}", slow.idle_gpu_hours_today),
        idle_cost: format!("{}{:.2}", d.currency, slow.idle_gpu_hours_today * d.price_per_gpu_hour),
        open_alerts: tiles.open_alerts,
        nodes: tiles.nodes,
        xid: tiles.xid,
        ecc: slow.ecc_gpus,
        throttled: tiles.throttled,
        silent: tiles.silent_nodes,
        heatmap: if rows.is_empty() { String::new() } else { chart::heatmap(&rows) },
        pager: Pager::new(page, HEATMAP_NODES, node_total, String::new()),
        decisions: decisions
            .into_iter()
            .map(|d| DecisionView {
                when: ago(now, d.decided_at),
                change: format!("{} → {}", d.current_replicas, d.desired_replicas),
                outcome: outcome(&d.error, d.dry_run, d.applied),
                link: target_link(&d.target),
                target: d.target,
                reason: d.reason,
            })
            .collect(),
        open_opportunities: summary.open,
        savings: format!("{} {:.0}", state.settings.opportunities.currency, summary.saving_per_week),
        savings_gpu_hours: format!("{:.0}", summary.gpu_hours_per_week),
        top: top
            .into_iter()
            .filter(|l| l.o.expected_value > 0.0)
            .map(|l| TopOpportunity {
                id: l.o.id,
                saving: format!("{} {:.0}", l.o.currency, l.o.saving_per_week),
                gpu_hours: format!("{:.1}", l.o.gpu_hours_per_week),
                kind: l.o.kind.replace('_', " "),
                action: l.o.action.get("description").and_then(|d| d.as_str()).unwrap_or("").to_string(),
                title: l.o.title,
            })
            .collect(),
    };
    render(&t, StatusCode::OK)
}
