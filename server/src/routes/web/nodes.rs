//! A node (its GPUs, agent status, probes, commands) and one GPU's series.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::{DateTime, Duration, Utc};

use super::anomalies::{AnomalyView, MAX_MARKED, anomaly_view, mark};
use super::chart::{self, Panel, Series, Style};
use super::{Chrome, Params, RANGES, Viewer, WebError, ago, render};
use crate::db;

/// How a reading the agent could not take is shown.
const UNKNOWN: &str = "—";
use crate::db::series::ChartPlan;
use crate::state::AppState;

/// Agent status of a node.
pub struct AgentView {
    node_id: String,
    hostname: String,
    version: String,
    gpu_source: String,
    group: String,
    deployment: String,
    deployment_link: String,
    last_seen: String,
    first_seen: String,
    silent: bool,
}

/// A GPU's latest reading.
pub struct GpuView {
    index: i32,
    link: String,
    model: String,
    util: String,
    util_pct: Option<u32>,
    mem: String,
    power: String,
    temp: String,
    hot: bool,
    age: String,
}

/// A probe result.
pub struct ProbeView {
    gpu: i32,
    when: String,
    result: String,
    failed: bool,
}

/// A command.
pub struct CommandView {
    when: String,
    kind: String,
    action: String,
    state: String,
    result: String,
}

/// `templates/node.html`.
#[derive(Template)]
#[template(path = "node.html")]
pub struct NodeTemplate {
    chrome: Chrome,
    agent: AgentView,
    ranges: Vec<super::Opt>,
    chart: String,
    gpus: Vec<GpuView>,
    probes: Vec<ProbeView>,
    commands: Vec<CommandView>,
    anomalies: Vec<AnomalyView>,
    anomalies_link: String,
}

/// Points across a GPU chart at most (about one per pixel of a laptop-wide chart).
const CHART_POINTS: i64 = 600;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn agent_view(state: &AppState, now: DateTime<Utc>, n: db::dashboard::NodeDetail) -> AgentView {
    let deployment = n.deployment.unwrap_or_default();
    AgentView {
        silent: (now - n.last_seen).num_seconds() > i64::from(state.settings.alerts.node_silent_secs),
        last_seen: ago(now, n.last_seen),
        first_seen: n.first_seen.format("%Y-%m-%d %H:%M UTC").to_string(),
        deployment_link: if deployment.contains('/') {
            format!("/deployments/{}", super::url_encode(&deployment))
        } else {
            String::new()
        },
        deployment,
        group: n.agent_group.unwrap_or_default(),
        node_id: n.node_id,
        hostname: n.hostname,
        version: n.agent_version,
        gpu_source: n.gpu_source,
    }
}

fn command_view(now: DateTime<Utc>, c: db::commands::CommandRecord) -> CommandView {
    let kind = c.action.get("kind").and_then(|k| k.as_str()).unwrap_or("?").to_string();
    let state = match (c.ok, c.acked_at, c.delivered_at) {
        (Some(true), _, _) => "done",
        (Some(false), _, _) => "failed",
        (None, Some(_), _) => "received",
        (None, None, Some(_)) => "delivered",
        _ => "queued",
    };
    CommandView {
        when: ago(now, c.created_at),
        kind,
        action: c.action.to_string(),
        state: state.into(),
        result: c.result.unwrap_or_default(),
    }
}

/// `GET /nodes/{node}?range=`.
#[get("/nodes/{node}")]
pub async fn node_page(v: Viewer, path: web::Path<String>, params: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let range = params.range()?;
    let node = path.into_inner();
    let now = Utc::now();
    let pool = &state.pool;
    let Some(detail) = db::dashboard::node(pool, &node).await? else {
        return Err(WebError::NotFound(format!("no node {node}")));
    };
    let ids = [node.clone()];
    let (gpus, probes, commands, events) = tokio::try_join!(
        db::dashboard::gpus_of(pool, &ids),
        db::commands::latest_probes(pool, &node),
        db::commands::recent_for_node(pool, &node, 20),
        db::anomalies::of_node_gpus(pool, &node, None, range.from, range.to, MAX_MARKED),
    )?;
    let mut util = Panel { title: "GPU utilisation".into(), unit: "%".into(), y_max: Some(100.0), ..Panel::default() };
    let mut power = Panel { title: "Power".into(), unit: "W".into(), ..Panel::default() };
    let classes = ["c0", "c1", "c2", "c3", "c4", "c5"];
    // Every GPU of the node in one chart: rollups beyond 15 minutes, about 300 points.
    let plan = ChartPlan::new(range.from, range.to, Duration::minutes(15), 300, 1)
        .rolled_up_to(caches.watermark.get(pool).await?);
    let (_, pts) = db::series::node_gpu_chart(pool, &node, range.from, range.to, &plan).await?;
    for (i, g) in gpus.iter().enumerate() {
        let class = classes[i % classes.len()];
        let mine = || pts.iter().filter(|p| p.gpu_index == g.gpu_index);
        util.series.push(Series {
            name: format!("GPU {}", g.gpu_index),
            class,
            style: Style::Line,
            // A bucket without the reading is left out of the line (unknown), not drawn at 0.
            points: mine().filter_map(|p| Some((ms(p.ts), p.util_pct?))).collect(),
        });
        power.series.push(Series {
            name: format!("GPU {}", g.gpu_index),
            class,
            style: Style::Line,
            points: mine().filter_map(|p| Some((ms(p.ts), p.power_w?))).collect(),
        });
    }
    let anomalies: Vec<AnomalyView> = events.iter().map(|a| anomaly_view(now, a, range.key)).collect();
    for (a, v) in events.iter().zip(&anomalies) {
        mark(&mut util, a, v, ms(range.to));
    }
    let chart = chart::time_chart("node-chart", &[util, power], ms(range.from), ms(range.to));
    let chrome = user.list_chrome(&state, format!("Node {node}"), "fleet", &params);
    let t = NodeTemplate {
        chrome,
        agent: agent_view(&state, now, detail),
        ranges: super::options(RANGES, range.key),
        chart,
        gpus: gpus
            .into_iter()
            .map(|g| GpuView {
                link: format!("/nodes/{}/gpus/{}", super::url_encode(&g.node_id), g.gpu_index),
                index: g.gpu_index,
                // An absent reading shows "—" (unknown), never 0.
                util_pct: g.util_pct.map(|u| u.clamp(0.0, 100.0).round() as u32),
                util: g.util_pct.map_or_else(|| UNKNOWN.to_string(), |u| format!("{u:.0}%")),
                mem: match (g.mem_used_bytes, g.mem_total_bytes) {
                    (Some(used), Some(total)) => {
                        format!("{:.1} / {:.0} GiB", used as f64 / 1_073_741_824.0, total as f64 / 1_073_741_824.0)
                    }
                    (None, Some(total)) => format!("{UNKNOWN} / {:.0} GiB", total as f64 / 1_073_741_824.0),
                    _ => UNKNOWN.to_string(),
                },
                power: g.power_w.map_or_else(|| UNKNOWN.to_string(), |p| format!("{p:.0} W")),
                temp: g.temp_c.map_or_else(|| UNKNOWN.to_string(), |t| format!("{t:.0} °C")),
                hot: g.temp_c.is_some_and(|t| f64::from(t) >= state.settings.alerts.gpu_temp_c),
                age: ago(now, g.ts),
                model: g.model,
            })
            .collect(),
        probes: probes
            .into_iter()
            .map(|p| ProbeView {
                gpu: p.gpu_index,
                when: ago(now, p.ts),
                failed: p.error.is_some(),
                result: match (p.bandwidth_gb_s, p.error) {
                    (Some(b), _) => format!("{b:.0} GB/s"),
                    (None, Some(e)) => e,
                    (None, None) => "–".into(),
                },
            })
            .collect(),
        commands: commands.into_iter().map(|c| command_view(now, c)).collect(),
        anomalies,
        anomalies_link: format!("/anomalies?node={}&range={}", super::url_encode(&node), range.key),
    };
    render(&t, StatusCode::OK)
}

/// `templates/gpu.html`.
#[derive(Template)]
#[template(path = "gpu.html")]
pub struct GpuTemplate {
    chrome: Chrome,
    node: String,
    node_link: String,
    gpu: i32,
    model: String,
    resolution: String,
    ranges: Vec<super::Opt>,
    chart: String,
    points: usize,
    throttled_points: usize,
    probe: String,
    anomalies: Vec<AnomalyView>,
    anomalies_link: String,
}

/// `GET /nodes/{node}/gpus/{i}?range=`: utilisation, memory, power, temperature, clocks.
#[get("/nodes/{node}/gpus/{gpu}")]
pub async fn gpu_page(v: Viewer, path: web::Path<(String, String)>, params: Params) -> Result<HttpResponse, WebError> {
    let Viewer { state, caches, user } = v;
    let range = params.range()?;
    let (node, gpu) = path.into_inner();
    let gpu: i32 = gpu
        .parse()
        .ok()
        .filter(|g| (0..=1024).contains(g))
        .ok_or_else(|| WebError::field("gpu", "must be a GPU index (a whole number from 0 to 1024)"))?;
    let now = Utc::now();
    let pool = &state.pool;
    let ids = [node.clone()];
    let (latest, probes, events) = tokio::try_join!(
        db::dashboard::gpus_of(pool, &ids),
        db::commands::latest_probes(pool, &node),
        db::anomalies::of_node_gpus(pool, &node, Some(gpu), range.from, range.to, MAX_MARKED),
    )?;
    let Some(g) = latest.into_iter().find(|g| g.gpu_index == gpu) else {
        return Err(WebError::NotFound(format!("no GPU {gpu} on node {node}")));
    };
    // Raw samples up to 15 minutes, aggregated in PostgreSQL to the chart's resolution; 1-minute rollups
    // (plus the minutes not rolled up yet) beyond. One GPU's raw samples sit one per heap page (every
    // GPU of the fleet reports each second), so an hour of them is 3,600 page reads; the rollups keep the
    // extremes (maximum utilisation, minimum SM clock, throttle reasons) that a mean would hide.
    let plan = ChartPlan::new(range.from, range.to, Duration::minutes(15), CHART_POINTS, 1)
        .rolled_up_to(caches.watermark.get(pool).await?);
    let (plan, pts) = db::series::gpu_chart(pool, &node, gpu, range.from, range.to, &plan).await?;
    // A bucket without the reading (the agent could not read it) is left out of the line, never drawn at 0.
    let line = |name: &str, class: &'static str, f: &dyn Fn(&db::series::GpuPoint) -> Option<f64>| Series {
        name: name.into(),
        class,
        style: Style::Line,
        points: pts.iter().filter_map(|p| Some((ms(p.ts), f(p)?))).collect(),
    };
    let mut util = Panel { title: "Utilisation".into(), unit: "%".into(), y_max: Some(100.0), ..Panel::default() };
    util.series.push(line("mean", "c0", &|p| p.util_pct.map(f64::from)));
    if plan.bucket_secs > 1 {
        util.series.push(line("max", "c1", &|p| p.util_max.map(f64::from)));
    }
    let total_gib = g.mem_total_bytes.map(|b| b as f64 / 1_073_741_824.0);
    let mut mem = Panel { title: "Memory used".into(), unit: "GiB".into(), y_max: total_gib, ..Panel::default() };
    mem.series.push(line("used", "c2", &|p| p.mem_used_bytes.map(|b| b as f64 / 1_073_741_824.0)));
    let mut power = Panel { title: "Power".into(), unit: "W".into(), ..Panel::default() };
    power.series.push(line("power", "c3", &|p| p.power_w.map(f64::from)));
    let mut temp = Panel { title: "Temperature".into(), unit: "°C".into(), ..Panel::default() };
    temp.series.push(line("temperature", "c4", &|p| p.temp_c.map(f64::from)));
    let mut clocks = Panel { title: "SM clock".into(), unit: "MHz".into(), ..Panel::default() };
    clocks.series.push(line("SM clock (min)", "c5", &|p| p.sm_clock_mhz.map(f64::from)));
    // Each event on the panel of its metric: temperature, else utilisation (detector and peer outliers).
    let anomalies: Vec<AnomalyView> = events.iter().map(|a| anomaly_view(now, a, range.key)).collect();
    for (a, v) in events.iter().zip(&anomalies) {
        let panel = if a.metric == "temp_c" { &mut temp } else { &mut util };
        mark(panel, a, v, ms(range.to));
    }
    let chart = chart::time_chart("gpu-chart", &[util, mem, power, temp, clocks], ms(range.from), ms(range.to));
    let probe = probes
        .into_iter()
        .find(|p| p.gpu_index == gpu)
        .map(|p| match (p.bandwidth_gb_s, p.error) {
            (Some(b), _) => format!("{b:.0} GB/s memory bandwidth, {}", ago(now, p.ts)),
            (None, Some(e)) => format!("{e} ({})", ago(now, p.ts)),
            (None, None) => "no result".into(),
        })
        .unwrap_or_else(|| "never probed".into());
    let anomalies_link = format!("/anomalies?node={}&gpu={gpu}&range={}", super::url_encode(&node), range.key);
    let chrome = user.list_chrome(&state, format!("{node} GPU {gpu}"), "fleet", &params);
    let t = GpuTemplate {
        chrome,
        node_link: format!("/nodes/{}", super::url_encode(&node)),
        node,
        gpu,
        model: g.model,
        resolution: plan.describe(),
        ranges: super::options(RANGES, range.key),
        chart,
        points: pts.len(),
        throttled_points: pts.iter().filter(|p| p.throttle_reasons.is_some_and(|t| t & !1 != 0)).count(),
        probe,
        anomalies,
        anomalies_link,
    };
    render(&t, StatusCode::OK)
}
