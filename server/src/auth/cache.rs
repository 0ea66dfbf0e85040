//! Recently resolved credentials and API tokens, so an upload or an API call does not cost a lookup each.
//! Below the application state that holds them and the extractors that read them.

use crate::db::api_tokens::Scope;

/// A token digest's name and scope (`None`: not a live token) and when that was looked up.
type CachedToken = (Option<(String, Scope)>, std::time::Instant);

/// Named API tokens resolved recently (digest -> name and scope; `None`: not a live token), for 30 s; this
/// replica forgets them at once on a revocation or rotation ([`ApiTokenCache::clear`]), other replicas
/// within 30 s.
#[derive(Debug, Default)]
pub struct ApiTokenCache {
    map: std::sync::Mutex<std::collections::HashMap<Vec<u8>, CachedToken>>,
}

impl ApiTokenCache {
    /// The name and scope of a live token with this secret.
    pub async fn lookup(&self, pool: &sqlx::PgPool, secret: &str) -> Result<Option<(String, Scope)>, sqlx::Error> {
        let key = crate::db::enroll::digest(secret);
        if let Some((hit, at)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && at.elapsed().as_secs() < 30
        {
            return Ok(hit.clone());
        }
        let found = crate::db::api_tokens::lookup(pool, secret).await?.map(|(_, name, scope)| (name, scope));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(key, (found.clone(), std::time::Instant::now()));
        Ok(found)
    }

    /// Forgets every cached token.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
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
