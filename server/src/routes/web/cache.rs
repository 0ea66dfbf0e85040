//! Short-lived figures the dashboard's pages share between clients: data only, never a rendered page (pages
//! carry the user and the CSRF token of the request).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::WebError;
use crate::db::{self, Total, policies::StoredPolicy};

/// How long the pages share one read of the policies. Writes through this server drop it at once; a write
/// through another replica shows within this bound.
pub const POLICIES_TTL: Duration = Duration::from_secs(1);

/// The live policies, parsed once per [`POLICIES_TTL`] however many pages ask at the same moment (concurrent
/// misses wait for the one read): at 500 policies every page naming them otherwise parses 500 JSON specs.
pub struct PolicyCache(moka::future::Cache<u64, Arc<Vec<StoredPolicy>>>);

impl Default for PolicyCache {
    fn default() -> Self {
        PolicyCache(moka::future::Cache::builder().max_capacity(1).time_to_live(POLICIES_TTL).build())
    }
}

impl PolicyCache {
    /// The live policies by name, at most [`POLICIES_TTL`] old and read after the policy write `epoch`
    /// ([`crate::state::AppState::policy_epoch`]): a page after a write here shows the change.
    pub async fn list(&self, pool: &PgPool, epoch: u64) -> Result<Arc<Vec<StoredPolicy>>, WebError> {
        self.0
            .try_get_with(epoch, async { db::policies::list(pool).await.map(Arc::new) })
            .await
            .map_err(|e| WebError::Internal(e.to_string()))
    }
}

/// How long a list's count is shared. The rows of a page are always read live; only "N matching" may lag.
pub const COUNTS_TTL: Duration = Duration::from_secs(2);
/// Distinct filters whose counts are kept.
const COUNTS_KEPT: u64 = 1_000;

/// Counts of list filters (decisions), shared for [`COUNTS_TTL`]: even capped, a count reads up to
/// [`crate::db::COUNT_CAP`] rows, where the page itself reads 50.
pub struct CountCache(moka::future::Cache<String, Total>);

impl Default for CountCache {
    fn default() -> Self {
        CountCache(moka::future::Cache::builder().max_capacity(COUNTS_KEPT).time_to_live(COUNTS_TTL).build())
    }
}

impl CountCache {
    /// The count of the filter `key` (every parameter the count depends on), from `count` when none is kept.
    pub async fn get(
        &self,
        key: String,
        count: impl Future<Output = Result<Total, sqlx::Error>>,
    ) -> Result<Total, WebError> {
        self.0.try_get_with(key, count).await.map_err(|e| WebError::Internal(e.to_string()))
    }
}

/// How long the pages share one read of the rollup watermark (it moves once a minute).
pub const WATERMARK_TTL: Duration = Duration::from_secs(1);

/// Where the 1-minute rollups end, shared for [`WATERMARK_TTL`]: charts read rollups before it and raw
/// samples after it. A value instead of a subquery in each chart's SQL lets PostgreSQL plan the raw tail as
/// the few minutes it is.
pub struct WatermarkCache(moka::future::Cache<(), Option<chrono::DateTime<chrono::Utc>>>);

impl Default for WatermarkCache {
    fn default() -> Self {
        WatermarkCache(moka::future::Cache::builder().max_capacity(1).time_to_live(WATERMARK_TTL).build())
    }
}

impl WatermarkCache {
    /// The rollup watermark (`None` before the first rollup), at most [`WATERMARK_TTL`] old.
    pub async fn get(&self, pool: &PgPool) -> Result<Option<chrono::DateTime<chrono::Utc>>, WebError> {
        self.0.try_get_with((), db::series::rollup_watermark(pool)).await.map_err(|e| WebError::Internal(e.to_string()))
    }
}

/// How long a deployment page's data is shared between requests.
pub const DEPLOYMENT_TTL: Duration = Duration::from_secs(1);
/// Deployment pages (deployment x range x policy version) whose data is kept.
const DEPLOYMENTS_KEPT: u64 = 2_000;

/// A page's data, read once per [`DEPLOYMENT_TTL`] however many people watch it (concurrent misses wait for
/// the one read): in an incident, everyone on call opens the same deployment with live refresh. Data only:
/// each request renders its own page (user, CSRF token, "ago" times). Generic, so the page that owns the data
/// type names it and this module imports no page.
pub struct SharedData<K, V>(moka::future::Cache<K, Arc<V>>);

impl<K: std::hash::Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static> Default for SharedData<K, V> {
    fn default() -> Self {
        SharedData(moka::future::Cache::builder().max_capacity(DEPLOYMENTS_KEPT).time_to_live(DEPLOYMENT_TTL).build())
    }
}

impl<K: std::hash::Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static> SharedData<K, V> {
    /// The data of `key`, from `load` when none is kept.
    pub async fn get(&self, key: K, load: impl Future<Output = Result<V, WebError>>) -> Result<Arc<V>, WebError> {
        self.0.try_get_with(key, async { load.await.map(Arc::new) }).await.map_err(|e| match &*e {
            WebError::NotFound(m) => WebError::NotFound(m.clone()),
            other => WebError::Internal(other.to_string()),
        })
    }
}
