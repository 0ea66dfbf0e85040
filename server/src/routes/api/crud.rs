//! The one create / read / replace / delete skeleton of the API's named resources (policies, alert rules):
//! each resource says how it is stored ([`Resource`]); the handlers here parse, guard, write, audit and
//! answer the same way for all of them (201 with `Location`, 409 for a taken name, 404, 204).
//!
//! Also the small answers every handler shares: [`found`] (200 or 404) and [`audited`] (204 after an
//! audited change, or 404 when there was nothing to change).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::ApiAuth;
use crate::error::ApiError;
use crate::state::AppState;

/// What a write of a named resource came to.
pub enum Written<T> {
    /// Stored: the resource as it is now.
    Ok(T),
    /// Another live resource of the kind has that name.
    NameTaken,
    /// No such resource.
    NotFound,
}

/// A resource the API creates, reads, replaces and deletes by id, with a unique name.
#[allow(async_fn_in_trait)] // handlers run on actix's single-threaded workers: no `Send` bound is wanted
pub trait Resource {
    /// What a client sends (validated by [`Resource::parse`]).
    type Spec;
    /// What is stored and answered.
    type Stored: Serialize;
    /// Its kind in the audit log (`policy`, `alert_rule`).
    const KIND: &'static str;
    /// Its collection's path (`/api/v1/policies`): `Location` is this and the id.
    const PATH: &'static str;
    /// Its name in messages with the article (`a policy`, `an alert rule`).
    const A: &'static str;
    /// Its name in messages (`policy`, `alert rule`).
    const WHAT: &'static str;

    /// Parses and validates a body.
    fn parse(body: &[u8]) -> Result<Self::Spec, ApiError>;
    /// The spec's name (for the 409).
    fn name(spec: &Self::Spec) -> &str;
    /// The stored resource's id.
    fn id(stored: &Self::Stored) -> Uuid;
    /// Reads one.
    async fn get(state: &AppState, id: Uuid) -> Result<Option<Self::Stored>, sqlx::Error>;
    /// Creates one.
    async fn create(state: &AppState, spec: &Self::Spec) -> Result<Written<Self::Stored>, sqlx::Error>;
    /// Replaces one.
    async fn update(state: &AppState, id: Uuid, spec: &Self::Spec) -> Result<Written<Self::Stored>, sqlx::Error>;
    /// Deletes one; false when there was none.
    async fn delete(state: &AppState, id: Uuid) -> Result<bool, sqlx::Error>;
    /// Refuses a change of `id` before anything is written (a policy a Kubernetes resource owns); none by
    /// default.
    async fn may_change(_state: &AppState, _id: Uuid) -> Result<(), ApiError> {
        Ok(())
    }
    /// Told after every write attempt (caches of the kind drop theirs); nothing by default.
    fn changed(_state: &AppState) {}
}

/// A path id that must be a UUID (400 naming `id` otherwise).
pub fn parse_uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::field("id", "must be a UUID"))
}

/// 200 with `v`, or 404 with `missing` when there is none.
pub fn found<T: Serialize>(v: Option<T>, missing: impl FnOnce() -> String) -> Result<HttpResponse, ApiError> {
    match v {
        Some(v) => Ok(HttpResponse::Ok().json(v)),
        None => Err(ApiError::not_found(missing())),
    }
}

/// What an audited change without an answer body touched: `action` on the `kind` object `id`.
pub struct Change<'a> {
    /// Verb in the audit log (`delete`, `expire`, `revoke`).
    pub action: &'a str,
    /// Object kind in the audit log.
    pub kind: &'a str,
    /// Object id in the audit log.
    pub id: &'a str,
    /// What the object became, if worth recording.
    pub after: Option<serde_json::Value>,
}

impl<'a> Change<'a> {
    /// `action` on the `kind` object `id`, nothing recorded of what it became.
    pub fn of(action: &'a str, kind: &'a str, id: &'a str) -> Self {
        Change { action, kind, id, after: None }
    }

    /// With what the object became.
    pub fn after(self, after: serde_json::Value) -> Self {
        Change { after: Some(after), ..self }
    }
}

/// 204 when `done`; 404 with `missing` when there was nothing to change.
pub fn no_content(done: bool, missing: impl FnOnce() -> String) -> Result<HttpResponse, ApiError> {
    if done { Ok(HttpResponse::NoContent().finish()) } else { Err(ApiError::not_found(missing())) }
}

/// 204 after recording `change` as `actor`'s when it was `done`; 404 with `missing` when there was nothing
/// to change.
pub async fn audited(
    state: &AppState,
    actor: &str,
    done: bool,
    change: Change<'_>,
    missing: impl FnOnce() -> String,
) -> Result<HttpResponse, ApiError> {
    if done {
        crate::db::audit::record(&state.pool, actor, change.action, change.kind, change.id, None, change.after).await;
    }
    no_content(done, missing)
}

fn missing<R: Resource>(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no {} {id}", R::WHAT))
}

fn name_taken<R: Resource>(spec: &R::Spec) -> ApiError {
    ApiError::conflict("name", format!("{} named {:?} exists", R::A, R::name(spec)))
}

/// `POST`: 201 with `Location` and the stored resource.
pub async fn create<R: Resource>(
    a: ApiAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let spec = R::parse(&body)?;
    let written = R::create(&state, &spec).await?;
    R::changed(&state);
    match written {
        Written::Ok(r) => {
            let id = R::id(&r).to_string();
            let after = crate::db::audit::json(&r);
            crate::db::audit::record(&state.pool, &a.actor, "create", R::KIND, &id, None, after).await;
            Ok(HttpResponse::Created().insert_header(("Location", format!("{}/{id}", R::PATH))).json(r))
        }
        Written::NameTaken => Err(name_taken::<R>(&spec)),
        Written::NotFound => Err(ApiError::internal(format!("created {} vanished", R::WHAT))),
    }
}

/// `GET` of one: 200 or 404.
pub async fn get<R: Resource>(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_uuid(&id)?;
    R::get(&state, id).await?.map(|r| HttpResponse::Ok().json(r)).ok_or_else(|| missing::<R>(id))
}

/// `PUT`: the resource replaced (200), audited with what it was before.
pub async fn update<R: Resource>(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_uuid(&id)?;
    let spec = R::parse(&body)?;
    R::may_change(&state, id).await?;
    let before = R::get(&state, id).await?;
    let written = R::update(&state, id, &spec).await?;
    R::changed(&state);
    match written {
        Written::Ok(r) => {
            let (b, after) = (before.as_ref().and_then(crate::db::audit::json), crate::db::audit::json(&r));
            crate::db::audit::record(&state.pool, &a.actor, "update", R::KIND, &id.to_string(), b, after).await;
            Ok(HttpResponse::Ok().json(r))
        }
        Written::NameTaken => Err(name_taken::<R>(&spec)),
        Written::NotFound => Err(missing::<R>(id)),
    }
}

/// `DELETE`: 204, audited with what it was.
pub async fn delete<R: Resource>(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_uuid(&id)?;
    R::may_change(&state, id).await?;
    let before = R::get(&state, id).await?;
    let deleted = R::delete(&state, id).await?;
    R::changed(&state);
    if !deleted {
        return Err(missing::<R>(id));
    }
    let b = before.as_ref().and_then(crate::db::audit::json);
    crate::db::audit::record(&state.pool, &a.actor, "delete", R::KIND, &id.to_string(), b, None).await;
    Ok(HttpResponse::NoContent().finish())
}
