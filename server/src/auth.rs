//! Bearer-token extractors: `ApiAuth` for the REST API, `AgentAuth` for ingest.

use std::future::{Ready, ready};

use futures_util::future::LocalBoxFuture;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::AppState;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

fn check(req: &HttpRequest, pick: fn(&AppState) -> &str) -> Result<(), ApiError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("app state missing"))?;
    let expected = pick(state).as_bytes();
    match bearer(req) {
        Some(given) if !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected)) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Proof that the request carried the API token.
pub struct ApiAuth;

impl FromRequest for ApiAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, |s| s.settings.api_token.expose()).map(|()| ApiAuth))
    }
}

/// Who is uploading: the shared agent token (only when `agent_token_can_write` trusts it: demos and
/// simulators) or an enrolled node's own credential, which may only write that node's GPU rows, serving
/// rows of the deployments assigned to it, and its own commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAuth {
    /// The shared agent token, trusted by configuration.
    Shared,
    /// An enrolled node.
    Node(crate::db::enroll::NodeScope),
}

impl AgentAuth {
    /// Refuses unless this credential may act for `agent_id` (403 naming `field`).
    pub fn check_node(&self, field: &str, agent_id: &str) -> Result<(), ApiError> {
        match self {
            AgentAuth::Node(scope) if scope.node_id != agent_id => {
                Err(ApiError::forbidden(field, format!("this credential may only act for node {:?}", scope.node_id)))
            }
            _ => Ok(()),
        }
    }

    /// Refuses unless this credential may report `deployment` (403 naming `field`).
    pub fn check_deployment(&self, field: &str, deployment: &str) -> Result<(), ApiError> {
        match self {
            AgentAuth::Node(scope) if !crate::db::enroll::deployment_allowed(&scope.deployments, deployment) => {
                Err(ApiError::forbidden(
                    field,
                    format!(
                        "deployment {deployment:?} is not assigned to node {:?} (assigned: {:?}); an operator sets \
                         them with PUT /api/v1/enrollments/{{node_id}}/deployments",
                        scope.node_id, scope.deployments
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequest for AgentAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req).map(str::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("app state missing"))?;
            let token = token.ok_or_else(ApiError::unauthorized)?;
            let shared = state.settings.agent_token.expose().as_bytes();
            if !shared.is_empty() && bool::from(token.as_bytes().ct_eq(shared)) {
                // A token every node shares cannot prove which node is writing: refused unless trusted.
                if !state.settings.agent_token_can_write {
                    return Err(ApiError::forbidden(
                        "authorization",
                        "the shared agent token may not write (agent_token_can_write is off): enroll each node \
                         (POST /api/v1/enroll) and use its own credential",
                    ));
                }
                return Ok(AgentAuth::Shared);
            }
            match state.credentials.scope_of(&state.pool, &token).await? {
                Some(scope) => Ok(AgentAuth::Node(scope)),
                None => Err(ApiError::unauthorized()),
            }
        })
    }
}

/// A credential digest's scope (None: not a valid node credential) and when that was looked up.
type Resolved = (Option<crate::db::enroll::NodeScope>, std::time::Instant);

/// Node credentials resolved recently (digest -> node), so uploads do not cost a lookup each.
#[derive(Debug, Default)]
pub struct CredentialCache {
    map: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Resolved>>,
}

impl CredentialCache {
    /// The scope of `credential`, if it is a valid node credential. Known credentials are cached for 60 s,
    /// unknown ones for 5 s; this replica forgets everything at once on [`CredentialCache::clear`] (revoke,
    /// re-enroll, new deployments), other replicas within a minute.
    pub async fn scope_of(
        &self,
        pool: &sqlx::PgPool,
        credential: &str,
    ) -> Result<Option<crate::db::enroll::NodeScope>, sqlx::Error> {
        let key = crate::db::enroll::digest(credential);
        if let Some((node, at)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            let ttl = if node.is_some() { 60 } else { 5 };
            if at.elapsed().as_secs() < ttl {
                return Ok(node.clone());
            }
        }
        let node = crate::db::enroll::scope_of(pool, credential).await?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(key, (node.clone(), std::time::Instant::now()));
        Ok(node)
    }

    /// Forgets every cached credential (after a revocation or a scope change).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
