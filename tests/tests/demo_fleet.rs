//! The demo fleet against the backtest, in a test binary of its own: it is timed (simulated agents at 30x
//! against the live control loop), so it runs alone rather than beside the `it` binary's other tests, which
//! would slow its loop on a 2-core machine and make its SLO a measure of the machine.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

// The demo fleet (simulated agents replaying a real trace, sized as the trace's static-peak fleet) against
// the real control plane: after one loop of the trace, the opportunities page's idle capacity matches what
// the backtest's static-peak versus fleetpilot GPU-hours imply, within 20 % (issue #7).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleetpilot::demo::{self, Fleet, FleetOptions};

use crate::helpers::{WebSession, add_user, spawn_app};

const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/traces/azure_conv_10s.csv");
/// Trace seconds per wall second: one loop of the 58-minute trace in under two minutes.
const SPEEDUP: f64 = 30.0;
const AGENTS: u32 = 3;
const GPUS: u32 = 4;

fn text_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_fleets_idle_capacity_matches_the_backtest() {
    let trace = PathBuf::from(TRACE);
    let sizing = demo::size_fleet(&trace, AGENTS * GPUS).unwrap();
    assert!(sizing.implied_idle_share > 0.1, "the trace leaves a static fleet idle: {sizing:?}");
    let loop_secs = sizing.trace_secs / SPEEDUP;
    let app = spawn_app(|s| {
        demo::tune_settings(s, SPEEDUP);
        // One loop of the trace per window, in 1 s buckets; refreshed by hand below at the end of the loop.
        s.opportunities.bucket_secs = 1;
        s.opportunities.window_secs = loop_secs.round() as u32;
        s.opportunities.refresh_secs = 3600.0;
    })
    .await;
    let settings = {
        let mut s = fleetpilot::config::Settings::default();
        demo::tune_settings(&mut s, SPEEDUP);
        s.opportunities.bucket_secs = 1;
        s.opportunities.window_secs = loop_secs.round() as u32;
        s.opportunities
    };
    let policy = demo::demo_policy(AGENTS * GPUS, SPEEDUP);
    policy.validate().unwrap();
    fleetpilot::db::policies::create(&app.pool, &policy).await.unwrap();
    let started = Instant::now();
    let start_at = chrono::Utc::now();
    let fleet = Fleet::start(&FleetOptions {
        server_url: app.address.clone(),
        agent_token: app.agent_token.clone(),
        agents: AGENTS,
        gpus: GPUS,
        trace: Some(trace),
        speedup: SPEEDUP,
        replica_speed: sizing.replica_speed,
        interval: Duration::from_millis(250),
        initial_replicas: sizing.initial_replicas,
    })
    .unwrap();
    // One full loop of the trace, then the idle capacity over exactly that loop.
    let wait = Duration::from_secs_f64(loop_secs + 1.5).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let now = start_at + chrono::Duration::milliseconds((loop_secs * 1000.0) as i64 + 1000);
    fleetpilot::opportunities::refresh_once(&app.pool, &settings, now).await.unwrap();
    fleet.stop().await;

    let row = fleetpilot::db::idle::latest(&app.pool).await.unwrap().expect("an idle-capacity figure");
    let scaled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM decisions WHERE applied AND desired_replicas <> current_replicas")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let timeline: Vec<(f64, i32, i32, String)> = sqlx::query_as(
        "SELECT extract(epoch FROM decided_at - $1)::float8, current_replicas, desired_replicas, reason FROM decisions \
         WHERE desired_replicas <> current_replicas OR decided_at > now() - interval '100 seconds' ORDER BY decided_at",
    )
    .bind(start_at)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (t, from, to, why) in &timeline {
        eprintln!("  trace {:>6.0} s: {from} -> {to}: {why}", t * SPEEDUP);
    }
    // The SLO of EVAL.md's model (queueing delay at most 2 s) seen through the replicas' TTFT (queue delay
    // plus prefill of about 0.3 s).
    let (samples, late): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE ttft_p50_s > 2.5) FROM serving_samples WHERE deployment = 'demo/llama'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let on_time = 1.0 - late as f64 / samples.max(1) as f64;
    eprintln!("serving samples within the SLO: {:.2} % of {samples}", on_time * 100.0);
    let expected = sizing.implied_idle_gpu_equivalent();
    let ratio = row.idle_gpu_equivalent / expected;
    eprintln!(
        "demo fleet: {} GPUs seen, {:.2} idle on average ({:.0} GPU-h/week); backtest implies {:.2} \
         (static-peak {:.1} GPU-h, fleetpilot {:.1} GPU-h); ratio {ratio:.3}; {scaled} replica changes",
        row.gpus_observed,
        row.idle_gpu_equivalent,
        row.gpu_hours_per_week,
        expected,
        sizing.static_peak_gpu_hours,
        sizing.fleetpilot_gpu_hours
    );
    assert_eq!(row.gpus_observed, (AGENTS * GPUS) as i32);
    // Scaled, and down from the static-peak size it started at. (Whether a second change lands before the
    // trace loop ends depends on timing: with 2 shared cores a run once held 7 replicas to the end.)
    let last: Option<i32> = sqlx::query_scalar(
        "SELECT desired_replicas FROM decisions WHERE applied AND desired_replicas <> current_replicas \
         ORDER BY decided_at DESC LIMIT 1",
    )
    .fetch_optional(&app.pool)
    .await
    .unwrap();
    assert!(scaled >= 1, "fleetpilot scaled the demo fleet ({scaled} changes)");
    assert!(
        last.is_some_and(|n| (n as u32) < sizing.initial_replicas),
        "the fleet ended below its static-peak size {}: {last:?}",
        sizing.initial_replicas
    );
    assert!(on_time >= 0.99, "the demo fleet kept its SLO: {:.2} % on time", on_time * 100.0);
    assert!((0.8..=1.2).contains(&ratio), "idle capacity {:.2} GPUs vs {expected:.2} implied", row.idle_gpu_equivalent);

    // The page shows the same figure.
    add_user(&app.pool, "viewer", "viewer-password-1", fleetpilot::db::users::Role::Viewer).await;
    let web = WebSession::login(&app.address, "viewer", "viewer-password-1").await;
    let html = web.get("/opportunities").await.text().await.unwrap();
    let shown = text_of(&html, "idle-gpus").expect("the idle-capacity tile");
    assert_eq!(shown, format!("{:.1} GPUs", row.idle_gpu_equivalent), "{html}");
    assert!(text_of(&html, "idle-gpu-hours").is_some());
    app.stop().await;
}
