//! HTML pages (askama templates in `templates/`) and the embedded static assets.

pub mod dashboard;
pub mod install;

use actix_web::{HttpResponse, get, web};

/// Assets compiled into the binary, so a single file deploys.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("../../../../static/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../../static/app.js")),
];

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

/// Registers the page routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(asset).service(dashboard::index).service(install::install_sh).service(install::agent_binary);
}
