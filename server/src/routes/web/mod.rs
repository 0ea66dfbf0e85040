//! HTML pages (askama templates in `templates/`, one typed struct per page) and the embedded static assets.
//!
//! Every page needs a login (session cookie) or the API token as a Bearer header; viewers read, operators
//! act; every form carries the session's CSRF token. Charts are SVG built on the server (`chart`).

pub mod anomalies;
pub mod audit;
pub mod cache;
pub mod chart;
pub mod dashboard;
pub mod deployment;
pub mod install;
pub mod lists;
pub mod nodes;
pub mod opportunities;
pub mod policies;
pub mod session;
pub mod silences;

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, get, web};
use askama::Template;
use chrono::{DateTime, Duration, Utc};

use crate::error::ApiError;

/// Assets compiled into the binary, so a single file deploys (no CDN: the dashboard works offline).
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("../../../../static/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../../static/app.js")),
];

/// Scripts only from this origin; inline styles are used by bars and SVG.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/static/{file}`.
#[get("/static/{file}")]
pub async fn asset(file: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(name, _, _)| *name == file.as_str()) {
        Some((_, ct, body)) => {
            HttpResponse::Ok().content_type(*ct).insert_header(("Cache-Control", "public, max-age=300")).body(*body)
        }
        None => HttpResponse::NotFound().finish(),
    }
}

/// The shared state, as page handlers take it.
pub type State = web::Data<crate::state::AppState>;
/// The web layer's caches, as page handlers take them.
pub type Caches = web::Data<WebCaches>;

// The composite of the pages' caches lives here, above both the generic caches (`cache`) and the pages that
// own their data types, so neither imports the other.
/// The dashboard's caches, registered as their own app data (the web layer's, not the shared state's).
#[derive(Default)]
pub struct WebCaches {
    /// Overview figures that scan history.
    pub overview: std::sync::Arc<dashboard::OverviewCache>,
    /// The live policies as the pages read them, for a second.
    pub policies: cache::PolicyCache,
    /// Where the minute rollups end, as the charts read it, for a second.
    pub watermark: cache::WatermarkCache,
    /// Deployment pages' data, shared for a second.
    pub deployment_data: cache::SharedData<deployment::DataKey, deployment::Data>,
    /// Counts of the lists, for two seconds.
    pub counts: cache::CountCache,
}

/// What a page that reads the web layer's caches starts from: the shared state, the caches, and who is
/// looking.
pub struct Viewer {
    /// The shared state.
    pub state: State,
    /// The web layer's caches.
    pub caches: Caches,
    /// Who is looking.
    pub user: session::WebUser,
}

impl actix_web::FromRequest for Viewer {
    type Error = WebError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, WebError>>;
    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let data = (req.app_data::<State>().cloned(), req.app_data::<Caches>().cloned());
        let user = session::WebUser::from_request(req, payload);
        Box::pin(async move {
            let (Some(state), Some(caches)) = data else {
                return Err(WebError::Internal("app state or web caches missing".into()));
            };
            Ok(Viewer { state, caches, user: user.await? })
        })
    }
}

/// An operator looking at a page that offers to change something (a confirm page): 403 for a viewer.
pub struct Operator(pub session::WebUser);

impl std::ops::Deref for Operator {
    type Target = session::WebUser;
    fn deref(&self) -> &session::WebUser {
        &self.0
    }
}

impl actix_web::FromRequest for Operator {
    type Error = WebError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, WebError>>;
    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let user = session::WebUser::from_request(req, payload);
        Box::pin(async move {
            let user = user.await?;
            user.require_operator()?;
            Ok(Operator(user))
        })
    }
}

/// What `base.html` needs: title, navigation, the user, the CSRF token for forms, refresh.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// Page title.
    pub title: String,
    /// Active navigation entry.
    pub nav: &'static str,
    /// User name.
    pub user: String,
    /// Whether the user may act (forms are shown).
    pub is_operator: bool,
    /// Role name.
    pub role: &'static str,
    /// CSRF token for forms (empty for Bearer clients).
    pub csrf: String,
    /// Render time.
    pub generated_at: String,
    /// Seconds between live refreshes (0: none).
    pub refresh_secs: u32,
    /// Render only the live part (`?fragment=1`, for polling).
    pub fragment: bool,
}

/// An error answered as an HTML page (or a redirect to the login page).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not logged in: 303 to `/login?next=...`.
    #[error("login required")]
    Login(String),
    /// A wrong Bearer token: 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 400 naming a field.
    #[error("{field}: {message}")]
    BadRequest {
        /// The query parameter or form field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 500 (detail logged, not shown).
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    /// 400 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        WebError::BadRequest { field: field.into(), message: message.into() }
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        match (e.status.as_u16(), e.field) {
            (400, Some(f)) => WebError::BadRequest { field: f, message: e.error },
            (400, None) => WebError::BadRequest { field: String::new(), message: e.error },
            (403, _) => WebError::Forbidden(e.error),
            (404, _) => WebError::NotFound(e.error),
            _ => WebError::Internal(e.error),
        }
    }
}

/// `templates/error.html`.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorTemplate {
    status: u16,
    reason: String,
    field: String,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::Login(_) => StatusCode::SEE_OTHER,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let WebError::Login(next) = self {
            let q: String = url_encode(next);
            return HttpResponse::SeeOther().insert_header(("Location", format!("/login?next={q}"))).finish();
        }
        let (field, message) = match self {
            WebError::BadRequest { field, message } => (field.clone(), message.clone()),
            WebError::Internal(detail) => {
                tracing::error!(error = %detail, "dashboard page failed");
                (String::new(), "internal error (see the server log)".into())
            }
            other => (String::new(), other.to_string()),
        };
        let t = ErrorTemplate {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("error").into(),
            field,
            message,
        };
        let mut r = HttpResponse::build(status);
        r.insert_header(("Content-Security-Policy", CSP));
        if status == StatusCode::UNAUTHORIZED {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        match t.render() {
            Ok(body) => r.content_type("text/html; charset=utf-8").body(body),
            Err(_) => r.content_type("text/plain; charset=utf-8").body(t.message),
        }
    }
}

/// Percent-encodes a string for a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Renders a page with `status`, no caching, and the content security policy.
pub fn render<T: Template>(t: &T, status: StatusCode) -> Result<HttpResponse, WebError> {
    let body = t.render().map_err(|e| WebError::Internal(format!("template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body))
}

/// Query parameters of a page, parsed one by one so a bad value is a 400 naming its parameter; unknown
/// parameters are ignored.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

/// Deepest page a list serves.
pub const MAX_PAGE: i64 = 1000;

impl actix_web::FromRequest for Params {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, actix_web::Error>>;
    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        // Through `web::Query`, so that the app's `QueryConfig` answers a malformed query string.
        let query = web::Query::<HashMap<String, String>>::from_request(req, payload);
        Box::pin(async move { Ok(Params(query.await?.into_inner())) })
    }
}

/// Where a list page is: the page asked for (1-based) and the page size.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// Current page (1-based).
    pub page: i64,
    /// Rows per page.
    pub per_page: i64,
}

/// What every filtered, paged list page shows besides its filters: the sort choices, the rows and the pager.
pub struct Listing<R> {
    /// The sort select.
    pub sorts: Vec<Opt>,
    /// This page's rows.
    pub rows: Vec<R>,
    /// The pager.
    pub pager: Pager,
}

impl Paging {
    /// This page's listing: `sort` marked among `sorts`, `rows` out of a capped `total`; the pager's links
    /// carry `filters` (the empty ones left out) and the sort.
    pub fn listing<R>(
        &self,
        (sorts, sort): (&[&'static str], &str),
        rows: Vec<R>,
        total: crate::db::Total,
        filters: &[(&str, &str)],
    ) -> Listing<R> {
        let mut pairs = filters.to_vec();
        pairs.push(("sort", sort));
        Listing { sorts: options(sorts, sort), rows, pager: self.pager(total, query_string(&pairs)) }
    }

    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
    /// The pager of a capped count; `base` is the query string of the other parameters.
    pub fn pager(&self, total: crate::db::Total, base: String) -> Pager {
        Pager::counted(self.page, self.per_page, total, base)
    }
}

impl Params {
    /// The page asked for (`page`), `per_page` rows each.
    pub fn paging(&self, per_page: i64) -> Result<Paging, WebError> {
        Ok(Paging { page: self.page()?, per_page })
    }

    /// A non-empty trimmed text value, at most 200 characters, without control characters (Postgres refuses
    /// a NUL in text, which would otherwise cost a 500).
    pub fn text(&self, name: &str) -> Result<Option<String>, WebError> {
        match self.0.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) if v.len() > 200 => Err(WebError::field(name, "at most 200 characters")),
            Some(v) if v.chars().any(char::is_control) => {
                Err(WebError::field(name, "must not contain control characters"))
            }
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    /// One of `choices` (the first is the default).
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<&'static str, WebError> {
        match self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(choices[0]),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .ok_or_else(|| WebError::field(name, format!("must be one of {}", choices.join(", ")))),
        }
    }

    /// A page number (1-based, default 1), at most [`MAX_PAGE`]: lists page with OFFSET, and a deep offset
    /// costs the database a scan of every row before it (narrow the filters instead).
    pub fn page(&self) -> Result<i64, WebError> {
        match self.0.get("page").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(1),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(WebError::field(
                    "page",
                    format!("must be a whole number from 1 to {MAX_PAGE} (narrow the filters to reach older rows)"),
                )),
            },
        }
    }

    /// Whether only the live fragment is wanted.
    pub fn fragment(&self) -> bool {
        self.0.get("fragment").is_some_and(|v| v == "1")
    }

    /// The time range picked (`range`: 15m, 1h, 6h, 24h, 3d, 7d; default 1h).
    pub fn range(&self) -> Result<TimeRange, WebError> {
        self.range_or("1h")
    }

    /// The time range picked, `default` (one of [`RANGES`]) when none is.
    pub fn range_or(&self, default: &'static str) -> Result<TimeRange, WebError> {
        let mut choices: Vec<&'static str> = vec![default];
        choices.extend(RANGES.iter().copied().filter(|r| *r != default));
        let key = self.choice("range", &choices)?;
        let span = match key {
            "15m" => Duration::minutes(15),
            "6h" => Duration::hours(6),
            "24h" => Duration::hours(24),
            "3d" => Duration::days(3),
            "7d" => Duration::days(7),
            _ => Duration::hours(1),
        };
        let to = Utc::now();
        Ok(TimeRange { key, from: to - span, to })
    }
}

/// A time range ending now.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    /// The picker's key (`1h`).
    pub key: &'static str,
    /// Start.
    pub from: DateTime<Utc>,
    /// End (now).
    pub to: DateTime<Utc>,
}

/// The picker's choices, for templates.
pub const RANGES: &[&str] = &["15m", "1h", "6h", "24h", "3d", "7d"];

/// What a form page shows: the values submitted (or stored), and the one error with the field it is about
/// (`form.v("field")`, `form.is("field", "value")`, `form.err("field")` in the templates).
#[derive(Debug, Default)]
pub struct FormState {
    /// The form's values by field name.
    pub values: HashMap<String, String>,
    /// The field the error is about (empty: none, or the whole form).
    pub error_field: String,
    /// The error message (empty: none).
    pub error: String,
}

impl FormState {
    /// Values without an error.
    pub fn new(values: HashMap<String, String>) -> Self {
        FormState { values, ..FormState::default() }
    }
    /// Values shown again with `err` next to its field (a 400's field), or above the form.
    pub fn refused(values: HashMap<String, String>, err: WebError) -> Self {
        let (error_field, error) = match err {
            WebError::BadRequest { field, message } => (field, message),
            other => (String::new(), other.to_string()),
        };
        FormState { values, error_field, error }
    }
    /// Whether an error is shown.
    pub fn failed(&self) -> bool {
        !self.error.is_empty()
    }
    /// The status a page showing this form answers with: 400 when it shows an error.
    pub fn status(&self) -> StatusCode {
        if self.failed() { StatusCode::BAD_REQUEST } else { StatusCode::OK }
    }
    /// The value of `field`.
    pub fn v(&self, field: &str) -> &str {
        self.values.get(field).map(String::as_str).unwrap_or("")
    }
    /// Whether `field` holds `value` (selects, checkboxes).
    pub fn is(&self, field: &str, value: &str) -> bool {
        self.v(field) == value
    }
    /// The error of `field`, if it is the one to blame.
    pub fn err(&self, field: &str) -> &str {
        if self.error_field == field { &self.error } else { "" }
    }
}

/// A form an operator POSTed: who (an operator whose CSRF token matched: checked before the handler runs,
/// as every form POST must be) and the values, without the token.
pub struct Submitted {
    /// The operator.
    pub user: session::WebUser,
    /// The form's values by field name (`csrf` removed).
    pub values: HashMap<String, String>,
}

impl Submitted {
    /// The trimmed value of `field` (empty when absent).
    pub fn get(&self, field: &str) -> &str {
        self.values.get(field).map(|v| v.trim()).unwrap_or("")
    }
}

impl actix_web::FromRequest for Submitted {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, actix_web::Error>>;
    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let user = session::WebUser::from_request(req, payload);
        let form = web::Form::<HashMap<String, String>>::from_request(req, payload);
        Box::pin(async move {
            let user = user.await?;
            let mut values = form.await?.into_inner();
            user.may_act(values.remove("csrf").as_deref())?;
            Ok(Submitted { user, values })
        })
    }
}

/// 303 to `location` (after a form POST).
pub fn see_other(location: impl Into<String>) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location.into())).finish()
}

/// One `<option>` of a select.
#[derive(Debug, Clone)]
pub struct Opt {
    /// Value and label.
    pub value: &'static str,
    /// Whether it is the current one.
    pub selected: bool,
}

/// The options of a select with `selected` marked.
pub fn options(choices: &[&'static str], selected: &str) -> Vec<Opt> {
    choices.iter().map(|c| Opt { value: c, selected: *c == selected }).collect()
}

/// "5s ago", "3m ago", "2h ago", "4d ago".
pub fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A page of a list: numbers for the pager.
#[derive(Debug, Clone)]
pub struct Pager {
    /// Current page (1-based).
    pub page: i64,
    /// Pages in all (at least 1).
    pub pages: i64,
    /// Rows matching.
    pub total: i64,
    /// Whether more rows match than `total` (a capped count: "10000+ matching").
    pub more: bool,
    /// Query string of the other parameters (`&`-joined, encoded), to build links.
    pub base_query: String,
}

impl Pager {
    /// From the page, the page size and the total.
    pub fn new(page: i64, per_page: i64, total: i64, base_query: String) -> Self {
        // Never a link past the deepest page served.
        let pages = ((total + per_page - 1) / per_page).clamp(1, MAX_PAGE);
        Pager { page, pages, total, more: false, base_query }
    }

    /// From the page, the page size and a capped count: past the count there is at least one more page.
    pub fn counted(page: i64, per_page: i64, total: crate::db::Total, base_query: String) -> Self {
        // One row past the count stands for "more", so the last counted page links to the next.
        let rows = total.counted + i64::from(total.more);
        Pager { total: total.counted, more: total.more, ..Pager::new(page, per_page, rows, base_query) }
    }
    /// Whether there is a previous page.
    pub fn has_prev(&self) -> bool {
        self.page > 1
    }
    /// Whether there is a next page.
    pub fn has_next(&self) -> bool {
        self.page < self.pages
    }
}

/// Builds `k=v&...` from the non-empty pairs.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Registers the page routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(asset)
        .service(session::login_page)
        .service(session::login)
        .service(session::logout)
        .service(dashboard::index)
        .service(deployment::list)
        .service(deployment::page)
        .service(nodes::node_page)
        .service(nodes::gpu_page)
        .service(lists::decisions)
        .service(lists::alerts)
        .service(opportunities::list)
        .service(opportunities::detail)
        .service(opportunities::confirm)
        .service(opportunities::act)
        .service(opportunities::dismiss)
        .service(anomalies::list)
        .service(silences::confirm)
        .service(silences::create)
        .service(silences::expire)
        .service(policies::list)
        .service(policies::new_form)
        .service(policies::create)
        .service(policies::preview)
        .service(policies::edit_form)
        .service(policies::update)
        .service(install::page)
        .service(install::create_token)
        .service(install::reenroll)
        .service(audit::page)
        .service(install::install_sh)
        .service(install::agent_binary_sha256)
        .service(install::agent_binary);
}
