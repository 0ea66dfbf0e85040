//! Bearer-token extractors: `ApiAuth` for the REST API, `AgentAuth` for ingest.

use futures_util::future::LocalBoxFuture;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::AppState;

pub mod cache;
pub use cache::{ApiTokenCache, CredentialCache};

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Who called the REST API and what it may do: the configured `api_token` (the bootstrap token, admin) or a
/// named token from `POST /api/v1/tokens` with its scope. The scope a request needs follows from its method and
/// path ([`required_scope`]); a token without it gets a 403 naming `authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAuth {
    /// For the audit log: `api-token` (the configured token) or `token:<name>`.
    pub actor: String,
    /// What the token may do.
    pub scope: Scope,
}

pub use crate::db::api_tokens::Scope;

/// Path prefixes whose writes (and, for the first three, reads too) need the `admin` scope: identities,
/// credentials, the audit trail, and where alerts go and when they fire.
const ADMIN_PREFIXES: [&str; 8] = [
    "/api/v1/tokens",
    "/api/v1/users",
    "/api/v1/audit",
    "/api/v1/enrollment-tokens",
    "/api/v1/enrollments",
    "/api/v1/webhooks",
    "/api/v1/alert-rules",
    "/api/v1/enrollment-events",
];

/// The scope a request needs: reads need `read` (except tokens, users and the audit log: `admin`), writes to
/// identities, credentials, webhooks and alert rules need `admin`, every other write `operate`.
pub fn required_scope(method: &actix_web::http::Method, path: &str) -> Scope {
    let admin_path = ADMIN_PREFIXES.iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let read = matches!(*method, actix_web::http::Method::GET | actix_web::http::Method::HEAD);
    let admin_read = ["/api/v1/tokens", "/api/v1/users", "/api/v1/audit"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    match (read, admin_path) {
        (true, _) if admin_read => Scope::Admin,
        (true, _) => Scope::Read,
        (false, true) => Scope::Admin,
        (false, false) => Scope::Operate,
    }
}

impl ApiAuth {
    /// Who the credential in `req` is, if it is an API credential at all (no scope check).
    pub async fn identify(state: &AppState, req: &HttpRequest) -> Result<Option<ApiAuth>, ApiError> {
        let Some(given) = bearer(req) else { return Ok(None) };
        let configured = state.settings.api_token.expose().as_bytes();
        if !configured.is_empty() && bool::from(given.as_bytes().ct_eq(configured)) {
            return Ok(Some(ApiAuth { actor: "api-token".into(), scope: Scope::Admin }));
        }
        if !given.starts_with("fpa_") {
            return Ok(None);
        }
        Ok(state
            .api_tokens
            .lookup(&state.pool, given)
            .await?
            .map(|(name, scope)| ApiAuth { actor: format!("token:{name}"), scope }))
    }

    /// Refuses (403 naming `authorization`) unless this token's scope covers `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "authorization",
                format!("this token's scope is {}; this request needs {}", self.scope.as_str(), needed.as_str()),
            ))
        }
    }
}

impl FromRequest for ApiAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::internal("app state missing"))?;
            let auth = ApiAuth::identify(&state, &req).await?.ok_or_else(ApiError::unauthorized)?;
            auth.require(required_scope(req.method(), req.path()))?;
            Ok(auth)
        })
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
