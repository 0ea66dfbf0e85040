//! Building and running the control plane: database, migrations, HTTP server and background tasks.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpServer, dev::Server, middleware, web};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actuators::{Actuators, kube::KubeScaler};
use crate::alerts::{AlertEngine, Receivers, outbox::OutboxWorker};
use crate::config::Settings;
use crate::control::ControlLoop;
use crate::control::crd::PolicyController;
use crate::db::{self, Partitions};
use crate::delivery::CommandBus;
use crate::error::ApiError;
use crate::ingest::{IngestQueue, QueueLimits};
use crate::opportunities::Refresher;

/// How often the leader writes policies' latest decisions into their ScalingPolicy resources' status.
pub const SCALING_POLICY_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
use crate::pg::{PgOptions, PrivatePostgres};
use crate::routes;
use crate::state::AppState;
use crate::telemetry::Metrics;

/// Why the control plane could not start or stop cleanly: the library's boundary error (binaries wrap it).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The private PostgreSQL cluster would not start.
    #[error("starting the private PostgreSQL cluster: {0}")]
    PrivatePostgres(#[from] crate::pg::PgError),
    /// The database could not be reached or prepared.
    #[error("{what}: {source}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The first dashboard operator could not be created.
    #[error("dashboard bootstrap operator: {0}")]
    Bootstrap(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The listen address or a signal handler could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS was configured and its certificate could not be loaded (never falls back to plain text).
    #[error("loading the TLS certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The Kubernetes client could not be built.
    #[error("Kubernetes: {0}")]
    Kube(#[from] crate::actuators::ActuateError),
    /// A blocking task panicked or was cancelled.
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StartupError {
    fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { what, source }
    }
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what: what.into(), source }
    }
}

/// Opens the configured database, or starts the private cluster when none is configured.
pub async fn open_database(settings: &Settings) -> Result<(PgPool, Option<PrivatePostgres>), StartupError> {
    let (url, pg) = match &settings.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let opts = PgOptions { data_dir: settings.data_dir.join("pgdata"), ephemeral: false };
            let pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(&opts)).await??;
            crate::pg::ensure_database(&pg.url_for("postgres"), crate::pg::DATABASE)
                .await
                .map_err(StartupError::db("creating the database"))?;
            (pg.url(), Some(pg))
        }
    };
    let pool = db::connect(&url, 20).await.map_err(StartupError::db("connecting to PostgreSQL"))?;
    db::migrate(&pool).await?;
    Ok((pool, pg))
}

/// A built, bound, not yet running control plane.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
    pg: Option<PrivatePostgres>,
}

impl Application {
    /// Opens the database (private cluster if needed), migrates, binds `settings.listen`, and starts the
    /// control loop, alert evaluation and outbox worker.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (pool, pg) = open_database(&settings).await?;
        let mut app = Self::build_with_pool(settings, pool).await?;
        app.pg = pg;
        Ok(app)
    }

    /// Like [`Application::build`] with an existing pool (migrations are run).
    pub async fn build_with_pool(settings: Settings, pool: PgPool) -> Result<Self, StartupError> {
        db::migrate(&pool).await?;
        routes::web::session::bootstrap_admin(&pool, &settings.dashboard)
            .await
            .map_err(|e| StartupError::Bootstrap(e.into()))?;
        let listener =
            TcpListener::bind(&settings.listen).map_err(StartupError::io(format!("binding {}", settings.listen)))?;
        let port = listener.local_addr().map_err(StartupError::io("reading the bound address"))?.port();
        let scheme = if settings.tls.enabled() { "https" } else { "http" };
        let public_url = settings.public_url.clone().unwrap_or_else(|| format!("{scheme}://127.0.0.1:{port}"));
        // A server configured for TLS that cannot load its certificate must not start in plain text.
        let tls = if settings.tls.enabled() { Some(crate::tls::server_config(&settings.tls)?) } else { None };
        let partitions = Arc::new(Partitions::default());
        partitions.ensure_around_now(&pool).await.map_err(StartupError::db("creating today's partitions"))?;
        let metrics = Metrics::new();
        let limits = QueueLimits {
            max_queued_rows: settings.ingest.max_queued_rows,
            max_group_rows: settings.ingest.max_group_rows,
            writers: settings.ingest.writers,
        };
        let (ingest, writers) = IngestQueue::start(pool.clone(), partitions.clone(), metrics.clone(), limits);
        let (shutdown, rx) = watch::channel(false);
        let commands = CommandBus::new(rx.clone());
        let kube = KubeScaler::from_settings(&settings.kube, metrics.clone()).await?;
        let kube_client = kube.as_ref().map(KubeScaler::client);
        let actuators = Actuators::new(kube, pool.clone());
        let state = AppState {
            pool: pool.clone(),
            ingest,
            settings: Arc::new(settings.clone()),
            partitions,
            metrics: metrics.clone(),
            credentials: Arc::default(),
            api_tokens: Arc::default(),
            series_budget: Arc::default(),
            commands: commands.clone(),
            policy_writes: Arc::default(),
            remote_write: Arc::default(),
            lockout: Arc::new(crate::lockout::Lockout::new(
                settings.dashboard.login_free_failures,
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(u64::from(settings.dashboard.login_lockout_max_secs)),
            )),
        };
        let (tls_config, tls_cert) = tls.unzip();
        let server = http_server(listener, state.clone(), tls_config)?;
        let mut tasks = vec![tokio::spawn(commands.clone().listen_until_stopped(pool.clone(), rx.clone()))];
        if let Some(cert) = tls_cert {
            tasks.push(tokio::spawn(crate::tls::reload_until_stopped(settings.tls.clone(), cert, rx.clone())));
        }

        // The engine wakes the outbox worker when it queues deliveries, so a page does not wait for a poll.
        let wake = Arc::new(tokio::sync::Notify::new());
        if settings.control.enabled {
            let control = ControlLoop::new(pool.clone(), settings.control.clone(), actuators, metrics.clone())
                .with_wake(commands.ingested());
            let receivers = Receivers {
                pagerduty: !settings.pagerduty.routing_key.is_empty(),
                webhooks: settings.webhooks.iter().map(|w| w.name.clone()).collect(),
            };
            let alerts =
                AlertEngine::new(pool.clone(), settings.alerts.clone(), receivers, public_url.clone(), wake.clone());
            // Alerts are evaluated by whichever replica leads the control loop.
            tasks.push(tokio::spawn(alerts.run_until_stopped(control.leadership(), rx.clone())));
            if settings.opportunities.enabled {
                // Opportunities and anomalies are refreshed by the control-loop leader too.
                let refresher = Refresher::new(pool.clone(), settings.opportunities.clone());
                tasks.push(tokio::spawn(refresher.run_until_stopped(control.leadership(), rx.clone())));
            }
            if let Some(client) = kube_client.filter(|_| settings.kube.scaling_policies) {
                // ScalingPolicy resources are followed by the leader too.
                let controller = PolicyController::new(pool.clone(), client, SCALING_POLICY_STATUS_EVERY);
                tasks.push(tokio::spawn(controller.run_until_stopped(control.leadership(), rx.clone())));
            }
            tasks.push(tokio::spawn(control.run_until_stopped(rx.clone())));
        }
        // Every replica drains the outbox (rows are claimed with SKIP LOCKED), whatever receivers it knows:
        // webhooks may be added through the API at any time.
        let worker = OutboxWorker::new(pool.clone(), &settings, metrics, wake);
        tasks.push(tokio::spawn(worker.run_until_stopped(rx.clone())));
        tasks.push(tokio::spawn(rollups(state.pool.clone(), settings.ingest.rollup_secs, rx.clone())));
        tasks.push(tokio::spawn(packing(state.pool.clone(), state.partitions.clone(), rx.clone())));
        tasks.push(tokio::spawn(maintenance(state.clone(), rx)));
        Ok(Self { port, server, state, shutdown, tasks, writers, pg: None })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Handler state (pool, settings, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that stops the application when signalled.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Serves until the shutdown handle fires (or the server stops), then drains within
    /// `shutdown_grace_secs`: the HTTP server stops accepting and finishes in-flight requests (an ingest
    /// request waits for its group commit), background tasks finish their step (the control loop releases
    /// leadership, the outbox finishes its delivery), the writers commit what is queued; then the private
    /// database stops.
    pub async fn run_until_stopped(mut self) -> Result<(), StartupError> {
        let handle = self.server.handle();
        let mut rx = self.shutdown.subscribe();
        let server = tokio::spawn(self.server);
        tokio::select! {
            _ = rx.wait_for(|v| *v) => {}
        }
        let _ = self.shutdown.send(true);
        let grace = std::time::Duration::from_secs_f64(self.state.settings.shutdown_grace_secs);
        let tasks: Vec<JoinHandle<()>> = self.tasks.drain(..).collect();
        let Self { state, writers, pg, .. } = self;
        let pool = state.pool.clone();
        let drain = async move {
            handle.stop(true).await;
            let _ = server.await;
            for t in tasks {
                let _ = t.await;
            }
            // The HTTP server is stopped: dropping the last queue handle lets the writers drain and exit.
            drop(state);
            for w in writers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(?grace, "shutdown grace period over; stopping with work still in flight");
        }
        pool.close().await;
        if let Some(mut pg) = pg {
            tokio::task::spawn_blocking(move || pg.stop()).await?;
        }
        Ok(())
    }
}

/// Registers SIGTERM (Kubernetes' stop signal) and SIGINT (Ctrl-C) now, and returns a future that flips
/// `stop` on the first of them; a second signal while draining is ignored (the grace period bounds it).
pub fn stop_on_signals(stop: watch::Sender<bool>) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down gracefully");
        let _ = stop.send(true);
    })
}

/// Every `secs`: roll up what is complete (one replica at a time).
async fn rollups(pool: PgPool, secs: f64, mut rx: watch::Receiver<bool>) {
    let period = std::time::Duration::from_secs_f64(secs.max(0.1));
    while !*rx.borrow() {
        match db::rollups::run(&pool, chrono::Utc::now()).await {
            Ok(s) if s.minute_rows > 0 => tracing::debug!(ranges = s.ranges, rows = s.minute_rows, "rolled up"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rollup failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = rx.changed() => {}
        }
    }
}

/// Every minute: pack the hot GPU hours that are complete (one replica at a time).
async fn packing(pool: PgPool, partitions: Arc<Partitions>, mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        match db::pack::run(&pool, chrono::Utc::now(), &partitions).await {
            Ok(s) if s.partitions > 0 => {
                tracing::info!(hours = s.partitions, chunks = s.chunks, samples = s.samples, "packed hot GPU hours")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "packing hot GPU rows failed; retrying next pass"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = rx.changed() => {}
        }
    }
}

/// Hourly: create upcoming partitions, drop expired ones.
async fn maintenance(state: AppState, mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if let Err(e) = state.partitions.ensure_around_now(&state.pool).await {
            tracing::warn!(error = %e, "creating partitions failed");
        }
        let retention = state.settings.ingest.retention_days;
        match db::drop_expired_partitions(&state.pool, retention).await {
            Ok(d) if !d.is_empty() => tracing::info!(dropped = ?d, "expired partitions dropped"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dropping expired partitions failed"),
        }
        // Even after a partial failure: a day we may have dropped must not be assumed to exist.
        state.partitions.forget_before(db::retention_cutoff(retention));
        let i = &state.settings.ingest;
        if let Err(e) = db::rollups::expire(&state.pool, i.rollup_1m_retention_days, i.rollup_1h_retention_days).await {
            tracing::warn!(error = %e, "expiring rollups failed");
        }
        match db::retention::expire(&state.pool, &state.settings.retention).await {
            Ok(d) if !d.is_empty() => tracing::info!(deleted = ?d, "history past its retention deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring history failed"),
        }
        match db::commands::expire(&state.pool).await {
            Ok(n) if n > 0 => tracing::warn!(commands = n, "commands expired without a result"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring commands failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = rx.changed() => {}
        }
    }
}

/// Refuses a NUL in the path or the query string (400 naming which): PostgreSQL cannot store or compare it,
/// and no identifier or filter of the API holds one.
async fn refuse_nul(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    // The API only: dashboard pages check their own parameters and name the offending field on the page.
    if !req.path().starts_with("/api/") {
        return next.call(req).await;
    }
    let nul = |s: &str| s.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00"));
    if nul(req.path()) {
        return Err(ApiError::field("path", "must not contain NUL characters").into());
    }
    if nul(req.query_string()) {
        return Err(ApiError::field("query", "must not contain NUL characters").into());
    }
    next.call(req).await
}

/// What no route answered: 405 with `Allow` for a path the API document declares with other methods (the
/// per-path resources of `doc::configure_method_not_allowed` answer first; this covers what they miss), else 404.
async fn not_routed(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    match routes::api::doc::allowed_methods(req.path()) {
        Some(methods) if !methods.iter().any(|m| m == req.method().as_str()) => {
            routes::api::doc::method_not_allowed(&req, methods)
        }
        _ => ApiError::not_found("no such route").error_response(),
    }
}

fn http_server(
    listener: TcpListener,
    state: AppState,
    tls: Option<rustls::ServerConfig>,
) -> Result<Server, StartupError> {
    let body_limit = state.settings.ingest.max_body_bytes;
    // In-flight requests get the whole grace period (the overall drain is bounded by it too).
    let shutdown_secs = state.settings.shutdown_grace_secs.ceil() as u64;
    let data = web::Data::new(state);
    // The dashboard's caches belong to the web layer: their own app data, not part of the shared state.
    let caches = web::Data::new(routes::web::WebCaches::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(caches.clone())
            .app_data(web::PayloadConfig::new(body_limit))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(format!("query string: {e}")).into()),
            )
            .app_data(
                web::PathConfig::default().error_handler(|e, _| ApiError::bad_request(format!("path: {e}")).into()),
            )
            .wrap(middleware::Compress::default())
            .wrap(middleware::from_fn(refuse_nul))
            .wrap(middleware::NormalizePath::trim())
            .configure(routes::configure)
            .default_service(web::to(not_routed))
    });
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config).map_err(StartupError::io("serving TLS"))?,
        None => server.listen(listener).map_err(StartupError::io("serving HTTP"))?,
    };
    let server = server.disable_signals().shutdown_timeout(shutdown_secs).run();
    Ok(server)
}
