//! Server-rendered SVG charts: time panels sharing one x axis (lines, steps, interval bands, markers) and
//! the utilisation heatmap. Colours come from CSS classes, so `prefers-color-scheme` restyles them.

use std::fmt::Write as _;

use chrono::{DateTime, TimeZone as _, Utc};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Straight segments.
    Line,
    /// Holds each value until the next point (replicas, capacity).
    Step,
    /// Dashed line (forecasts).
    Dashed,
}

/// One series of a panel; `class` picks its colour in `style.css` (`c0`..`c5`).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS class.
    pub class: &'static str,
    /// Drawing style.
    pub style: Style,
    /// (Unix ms, value) in time order.
    pub points: Vec<(i64, f64)>,
}

/// A shaded interval (forecast bounds).
#[derive(Debug, Clone)]
pub struct Band {
    /// Legend text.
    pub name: String,
    /// CSS class.
    pub class: &'static str,
    /// (Unix ms, low, high) in time order.
    pub points: Vec<(i64, f64, f64)>,
}

/// A vertical marker at a time (decisions, the start of an anomaly).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Unix ms.
    pub at_ms: i64,
    /// Tooltip.
    pub label: String,
    /// CSS class.
    pub class: &'static str,
}

/// A shaded time interval across the plot (an anomaly event), with its tooltip.
#[derive(Debug, Clone)]
pub struct Span {
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End, Unix ms (the range's end for an ongoing event).
    pub to_ms: i64,
    /// Tooltip.
    pub label: String,
    /// CSS class (`anomaly warning`).
    pub class: &'static str,
}

/// One panel: a y axis with its series.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// Title shown above the plot.
    pub title: String,
    /// Unit of the y axis.
    pub unit: String,
    /// Series.
    pub series: Vec<Series>,
    /// Bands, drawn under the series.
    pub bands: Vec<Band>,
    /// Markers.
    pub markers: Vec<Marker>,
    /// Shaded intervals, drawn under the series.
    pub spans: Vec<Span>,
    /// Fixed y maximum (e.g. 100 for percentages).
    pub y_max: Option<f64>,
}

impl Panel {
    /// Whether anything would be drawn.
    pub fn has_data(&self) -> bool {
        self.series.iter().any(|s| !s.points.is_empty()) || self.bands.iter().any(|b| !b.points.is_empty())
    }
}

const W: f64 = 800.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 22.0;
const MAX_POINTS: usize = 600;

/// XML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Compact number: 1.2k, 3.4M, 0.25.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Averages runs of points so at most `MAX_POINTS` are drawn.
fn thin(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let k = points.len().div_ceil(MAX_POINTS);
    points.chunks(k).map(|c| (c[0].0, c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64)).collect()
}

fn time_label(ms: i64, span_ms: i64) -> String {
    let t: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    if span_ms > 2 * 86_400_000 { t.format("%m-%d %H:%M").to_string() } else { t.format("%H:%M").to_string() }
}

/// Renders panels stacked over one time axis `[from_ms, to_ms]`; `id` names the SVG for tests and links.
pub fn time_chart(id: &str, panels: &[Panel], from_ms: i64, to_ms: i64) -> String {
    let span = (to_ms - from_ms).max(1);
    let plot_w = W - LEFT - RIGHT;
    let inner_h = PANEL_H - TOP - BOTTOM;
    let h = PANEL_H * panels.len().max(1) as f64;
    let x = |ms: i64| LEFT + (ms - from_ms) as f64 / span as f64 * plot_w;
    let mut s = String::with_capacity(8192);
    let _ = write!(
        s,
        r#"<svg class="chart" id="{}" viewBox="0 0 {W} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(id),
        esc(&panels.iter().map(|p| p.title.as_str()).collect::<Vec<_>>().join(", "))
    );
    for (pi, p) in panels.iter().enumerate() {
        let y0 = pi as f64 * PANEL_H;
        let top = y0 + TOP;
        let bottom = top + inner_h;
        let mut hi = p.y_max.unwrap_or(0.0);
        let mut lo = 0.0_f64;
        for v in p
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(p.bands.iter().flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2])))
        {
            if v.is_finite() {
                hi = hi.max(v);
                lo = lo.min(v);
            }
        }
        if p.y_max.is_none() {
            hi = if hi <= lo { lo + 1.0 } else { hi * 1.08 };
        }
        let y = |v: f64| bottom - ((v - lo) / (hi - lo)).clamp(-0.05, 1.05) * inner_h;
        let _ = write!(s, r#"<text class="ptitle" x="{LEFT}" y="{:.1}">{}"#, y0 + 15.0, esc(&p.title));
        if !p.unit.is_empty() {
            let _ = write!(s, r#" <tspan class="unit">({})</tspan>"#, esc(&p.unit));
        }
        s.push_str("</text>");
        // Legend, right-aligned on the title line.
        let mut lx = W - RIGHT;
        for (name, class) in p
            .series
            .iter()
            .map(|s| (&s.name, s.class))
            .chain(p.bands.iter().map(|b| (&b.name, b.class)))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = write!(
                s,
                r#"<text class="legend {class}" x="{lx:.1}" y="{:.1}" text-anchor="end">■ {}</text>"#,
                y0 + 15.0,
                esc(name)
            );
            lx -= 24.0 + 6.5 * name.chars().count() as f64;
        }
        for i in 0..=4 {
            let v = lo + (hi - lo) * f64::from(i) / 4.0;
            let yy = y(v);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                LEFT - 4.0,
                yy + 3.5,
                num(v)
            );
        }
        if pi == panels.len() - 1 || panels.len() == 1 {
            for i in 0..=4 {
                let ms = from_ms + span * i / 4;
                let anchor = match i {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                };
                let _ = write!(
                    s,
                    r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                    x(ms),
                    bottom + 15.0,
                    time_label(ms, span)
                );
            }
        }
        if !p.has_data() {
            let _ = write!(
                s,
                r#"<text class="nodata" x="{:.1}" y="{:.1}" text-anchor="middle">no data in this range</text>"#,
                LEFT + plot_w / 2.0,
                top + inner_h / 2.0
            );
        }
        for b in &p.bands {
            if b.points.is_empty() {
                continue;
            }
            let mut d = String::new();
            for (i, (t, _, hi_v)) in b.points.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(*t), y(*hi_v));
            }
            for (t, lo_v, _) in b.points.iter().rev() {
                let _ = write!(d, "L{:.1},{:.1}", x(*t), y(*lo_v));
            }
            let _ = write!(s, r#"<path class="band {}" d="{d}Z"><title>{}</title></path>"#, b.class, esc(&b.name));
        }
        for sp in &p.spans {
            // Clipped to the plot; at least 2 px wide so a one-bucket event still shows.
            let x0 = x(sp.from_ms.max(from_ms));
            let x1 = x(sp.to_ms.min(to_ms)).max(x0 + 2.0);
            let _ = write!(
                s,
                r#"<rect class="span {}" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{inner_h:.1}"><title>{}</title></rect>"#,
                sp.class,
                x1 - x0,
                esc(&sp.label)
            );
        }
        // A marker before the range (an event that started earlier) would be drawn left of the plot.
        for m in p.markers.iter().filter(|m| (from_ms..=to_ms).contains(&m.at_ms)) {
            let mx = x(m.at_ms);
            let _ = write!(
                s,
                r#"<line class="marker {}" x1="{mx:.1}" x2="{mx:.1}" y1="{top:.1}" y2="{bottom:.1}"><title>{}</title></line>"#,
                m.class,
                esc(&m.label)
            );
        }
        for se in &p.series {
            let pts = thin(&se.points);
            if pts.is_empty() {
                continue;
            }
            let mut d = String::with_capacity(pts.len() * 14);
            let mut prev_y = None;
            for (i, (t, v)) in pts.iter().enumerate() {
                let (xx, yy) = (x(*t), y(*v));
                match (i, se.style, prev_y) {
                    (0, _, _) => {
                        let _ = write!(d, "M{xx:.1},{yy:.1}");
                    }
                    (_, Style::Step, Some(py)) => {
                        let _ = write!(d, "L{xx:.1},{py:.1}L{xx:.1},{yy:.1}");
                    }
                    _ => {
                        let _ = write!(d, "L{xx:.1},{yy:.1}");
                    }
                }
                prev_y = Some(yy);
            }
            if pts.len() == 1 {
                // A single point still shows: a short horizontal tick.
                let (xx, yy) = (x(pts[0].0), y(pts[0].1));
                let _ = write!(d, "L{:.1},{yy:.1}", xx + 3.0);
            }
            let dash = if se.style == Style::Dashed { " dashed" } else { "" };
            let _ =
                write!(s, r#"<path class="line {}{dash}" d="{d}"><title>{}</title></path>"#, se.class, esc(&se.name));
        }
    }
    s.push_str("</svg>");
    s
}

/// One heatmap cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// GPU index (column).
    pub gpu: i32,
    /// Utilisation %; `None` when the agent could not read it (drawn as unknown, never as idle).
    pub util: Option<f64>,
    /// Whether the reading is stale.
    pub stale: bool,
}

/// Node × GPU utilisation heatmap; each cell links to its GPU page, each row label to its node page.
pub fn heatmap(rows: &[(String, Vec<Cell>)]) -> String {
    // Columns are GPU indexes: bounded by the protocol's largest index, so a row stored before that bound
    // existed (or written around it) cannot make the page loop to an attacker-chosen index.
    let max_cols = gpu_agent::protocol::MAX_GPU_INDEX as i32 + 1;
    let in_range = |c: &&Cell| (0..max_cols).contains(&c.gpu);
    let cols =
        rows.iter().flat_map(|(_, c)| c.iter().filter(in_range).map(|c| c.gpu + 1)).max().unwrap_or(1).max(1) as f64;
    let (label_w, cell, gap) = (120.0, 22.0, 3.0);
    let w = label_w + cols * (cell + gap);
    let h = 18.0 + rows.len().max(1) as f64 * (cell * 0.7 + gap);
    let mut s = String::with_capacity(rows.len() * 8 * 150);
    let _ = write!(
        s,
        r#"<svg class="heatmap" id="heatmap" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="GPU utilisation by node and GPU" xmlns="http://www.w3.org/2000/svg">"#
    );
    for c in 0..cols as i32 {
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="12" text-anchor="middle">{c}</text>"#,
            label_w + f64::from(c) * (cell + gap) + cell / 2.0
        );
    }
    for (ri, (node, cells)) in rows.iter().enumerate() {
        let yy = 18.0 + ri as f64 * (cell * 0.7 + gap);
        let node_e = esc(node);
        let href = super::url_encode(node);
        let _ = write!(
            s,
            r#"<a href="/nodes/{href}"><text class="rowlabel" x="{:.1}" y="{:.1}" text-anchor="end">{node_e}</text></a>"#,
            label_w - 6.0,
            yy + cell * 0.5
        );
        for c in cells.iter().filter(in_range) {
            let xx = label_w + f64::from(c.gpu) * (cell + gap);
            let fill = match c.util {
                Some(u) if !c.stale => {
                    // Blue (idle: wasted money) through green to red (saturated).
                    format!("hsl({:.0},70%,48%)", 220.0 - 2.2 * u.clamp(0.0, 100.0))
                }
                // Stale or unknown: grey, never the idle blue.
                _ => "var(--stale)".to_string(),
            };
            let util = c.util.map_or_else(|| "unknown".to_string(), |u| format!("{u:.0}%"));
            let _ = write!(
                s,
                r#"<a href="/nodes/{href}/gpus/{g}"><rect class="cell" x="{xx:.1}" y="{yy:.1}" width="{cell}" height="{:.1}" rx="3" fill="{fill}"><title>{node_e} GPU {g}: {util}{}</title></rect></a>"#,
                cell * 0.7,
                if c.stale { " (stale)" } else { "" },
                g = c.gpu
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_series_becomes_a_path_scaled_into_the_plot_and_labels_are_escaped() {
        let p = Panel {
            title: "a <b>".into(),
            series: vec![Series {
                name: "x&y".into(),
                class: "c0",
                style: Style::Line,
                points: vec![(0, 0.0), (500, 5.0), (1000, 10.0)],
            }],
            ..Panel::default()
        };
        let svg = time_chart("t", &[p], 0, 1000);
        assert!(svg.contains(r#"<path class="line c0" d="M56.0,"#), "{svg}");
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("x&amp;y"));
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn an_empty_panel_says_so_and_long_series_are_thinned() {
        let svg = time_chart("t", &[Panel::default()], 0, 1000);
        assert!(svg.contains("no data in this range"));
        let pts: Vec<(i64, f64)> = (0..7200).map(|i| (i, i as f64)).collect();
        assert!(thin(&pts).len() <= MAX_POINTS);
    }

    #[test]
    fn spans_are_clipped_to_the_range_and_carry_their_tooltip() {
        let p = Panel {
            spans: vec![Span { from_ms: -500, to_ms: 500, label: "util <low>".into(), class: "anomaly warning" }],
            ..Panel::default()
        };
        let svg = time_chart("t", &[p], 0, 1000);
        assert!(svg.contains(r#"<rect class="span anomaly warning" x="56.0""#), "{svg}");
        assert!(svg.contains("<title>util &lt;low&gt;</title>"), "{svg}");
    }

    #[test]
    fn heatmap_cells_link_to_their_gpu_pages() {
        let svg = heatmap(&[(
            "n 1".into(),
            vec![
                Cell { gpu: 0, util: Some(50.0), stale: false },
                Cell { gpu: 1, util: Some(0.0), stale: true },
                Cell { gpu: 2, util: None, stale: false },
            ],
        )]);
        assert!(svg.contains(r#"href="/nodes/n%201/gpus/1""#), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("var(--stale)"));
        // An unknown reading is grey and says so, never the idle blue at 0 %.
        assert!(svg.contains("n 1 GPU 2: unknown</title>"), "{svg}");
    }

    #[test]
    fn a_huge_gpu_index_does_not_widen_the_heatmap() {
        let svg = heatmap(&[("n".into(), vec![Cell { gpu: 2_000_000_000, util: Some(50.0), stale: false }])]);
        assert!(svg.len() < 4096, "{} bytes", svg.len());
        assert_eq!(svg.matches("<rect").count(), 0);
    }
}
