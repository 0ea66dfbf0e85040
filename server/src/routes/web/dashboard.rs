//! The fleet overview `/`: tiles, the node × GPU heatmap, the health strip, the latest decisions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get};
use askama::Template;
use chrono::Utc;
use tokio::sync::Mutex;

use super::chart::{self, Cell};
use super::{Chrome, Pager, Params, Viewer, WebError, ago, render};
use crate::db;
use crate::db::dashboard::{SlowTiles, Tiles};
use crate::db::opportunities::{ListedOpportunity, OpenSummary};

/// Nodes per heatmap page.
const HEATMAP_NODES: i64 = 64;
/// How long the history-scanning figures are served before a background refresh.
const SLOW_TTL: Duration = Duration::from_secs(30);
/// How long every client is served the same overview figures. Fifty people (or live-refreshing tabs) on the
/// overview then cost one computation per second instead of fifty, and what anyone sees is at most this old.
pub const OVERVIEW_TTL: Duration = Duration::from_secs(1);
/// Heatmap pages kept (one entry per page number asked for within [`OVERVIEW_TTL`]).
const OVERVIEW_PAGES_KEPT: u64 = 64;

/// What the overview shows for one heatmap page, read once per [`OVERVIEW_TTL`] and shared by every client.
/// Data only: the user, role and CSRF token of the page come from each request, never from here.
#[derive(Debug)]
pub struct OverviewData {
    tiles: Tiles,
    slow: SlowTiles,
    node_total: i64,
    /// The heatmap's SVG (stale cells judged when the data was read).
    heatmap: String,
    decisions: Vec<db::dashboard::DecisionRow>,
    summary: OpenSummary,
    top: Vec<ListedOpportunity>,
}

/// The overview's shared figures: the history-scanning ones (idle GPU-hours today, ECC), computed at most
/// every 30 s in the background, and the rest per heatmap page for [`OVERVIEW_TTL`], loaded once however
/// many clients ask at the same moment (concurrent misses wait for the one load).
pub struct OverviewCache {
    slow: Mutex<Option<(Instant, SlowTiles)>>,
    refreshing: std::sync::atomic::AtomicBool,
    pages: moka::future::Cache<i64, Arc<OverviewData>>,
}

impl Default for OverviewCache {
    fn default() -> Self {
        OverviewCache {
            slow: Mutex::default(),
            refreshing: std::sync::atomic::AtomicBool::default(),
            pages: moka::future::Cache::builder().max_capacity(OVERVIEW_PAGES_KEPT).time_to_live(OVERVIEW_TTL).build(),
        }
    }
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

    /// The figures of heatmap page `page` (1-based), at most [`OVERVIEW_TTL`] old.
    pub async fn page(
        self: &Arc<Self>,
        pool: &sqlx::PgPool,
        fresh_secs: u32,
        page: i64,
    ) -> Result<Arc<OverviewData>, WebError> {
        self.pages
            .try_get_with(page, async { self.load(pool, fresh_secs, page).await.map(Arc::new) })
            .await
            .map_err(|e| WebError::Internal(e.to_string()))
    }

    async fn load(
        self: &Arc<Self>,
        pool: &sqlx::PgPool,
        fresh_secs: u32,
        page: i64,
    ) -> Result<OverviewData, sqlx::Error> {
        let top_query = db::opportunities::PageQuery {
            filter: db::opportunities::Filter {
                status: Some("open".into()),
                limit: TOP_OPPORTUNITIES,
                ..Default::default()
            },
            sort: db::opportunities::Sort::Value,
        };
        let (tiles, slow, (node_ids, node_total), decisions, summary, top) = tokio::try_join!(
            db::dashboard::tiles(pool, fresh_secs),
            self.slow(pool),
            db::dashboard::node_page(pool, HEATMAP_NODES, (page - 1) * HEATMAP_NODES),
            db::dashboard::decisions(pool, 10),
            db::opportunities::open_summary(pool),
            db::opportunities::page_rows(pool, &top_query),
        )?;
        let gpus = db::dashboard::gpus_of(pool, &node_ids).await?;
        let now = Utc::now();
        let mut by_node: HashMap<&str, Vec<Cell>> = HashMap::new();
        for g in &gpus {
            by_node.entry(g.node_id.as_str()).or_default().push(Cell {
                gpu: g.gpu_index,
                util: g.util_pct.map(f64::from),
                stale: (now - g.ts).num_seconds() > i64::from(fresh_secs),
            });
        }
        let rows: Vec<(String, Vec<Cell>)> =
            node_ids.iter().map(|n| (n.clone(), by_node.remove(n.as_str()).unwrap_or_default())).collect();
        let heatmap = if rows.is_empty() { String::new() } else { chart::heatmap(&rows) };
        Ok(OverviewData { tiles, slow, node_total, heatmap, decisions, summary, top })
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
pub async fn index(v: Viewer, params: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let page = params.page()?;
    let now = Utc::now();
    let data = caches.overview.page(&state.pool, state.settings.alerts.node_silent_secs, page).await?;
    let OverviewData { tiles, slow, node_total, .. } = &*data;
    let d = &state.settings.dashboard;
    let chrome = user.list_chrome(&state, "Fleet", "fleet", &params);
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
        heatmap: data.heatmap.clone(),
        pager: Pager::new(page, HEATMAP_NODES, *node_total, String::new()),
        decisions: data
            .decisions
            .iter()
            .map(|d| DecisionView {
                when: ago(now, d.decided_at),
                change: format!("{} → {}", d.current_replicas, d.desired_replicas),
                outcome: outcome(&d.error, d.dry_run, d.applied),
                link: target_link(&d.target),
                target: d.target.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        open_opportunities: data.summary.open,
        savings: format!("{} {:.0}", state.settings.opportunities.prices.currency, data.summary.saving_per_week),
        savings_gpu_hours: format!("{:.0}", data.summary.gpu_hours_per_week),
        top: data
            .top
            .iter()
            .filter(|l| l.o.expected_value > 0.0)
            .map(|l| TopOpportunity {
                id: l.o.id,
                saving: format!("{} {:.0}", l.o.currency, l.o.saving_per_week),
                gpu_hours: format!("{:.1}", l.o.gpu_hours_per_week),
                kind: l.o.kind.replace('_', " "),
                action: l.o.action.get("description").and_then(|d| d.as_str()).unwrap_or("").to_string(),
                title: l.o.title.clone(),
            })
            .collect(),
    };
    render(&t, StatusCode::OK)
}
