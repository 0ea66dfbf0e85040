//! Who leads the control loop, and the proof that it still does.
//!
//! Leadership is a PostgreSQL session advisory lock held on one dedicated connection
//! ([`crate::db::control::try_lead`]); taking it starts a term with a new epoch ([`crate::db::control::begin_epoch`]).
//! The local flag ([`Leadership::is_leading`]) is what the periodic loops look at first; before each alert pass,
//! opportunity refresh and actuation the term is re-checked in the database ([`Leadership::confirm`], and the
//! actuators' own [`crate::db::control::fence_holds`]), so a replica whose lock was lost while it was paused or
//! partitioned stops acting at once rather than at its next heartbeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use crate::db;
use crate::db::control::Fence;

/// This replica's leadership, shared by the control loop and the leader-only tasks.
pub struct Leadership {
    pool: PgPool,
    leading: AtomicBool,
    fence: Mutex<Option<Fence>>,
}

impl Leadership {
    /// Not leading, over `pool`.
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self { pool, leading: AtomicBool::new(false), fence: Mutex::new(None) })
    }

    /// Whether this replica believes it leads (cheap; confirm before acting).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The current term's fencing token, while leading.
    pub fn fence(&self) -> Option<Fence> {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-checks in the database that this replica's term is still the current one and its connection still
    /// holds the lock. False when not leading, when superseded, or when the database cannot say.
    pub async fn confirm(&self) -> bool {
        let Some(f) = self.fence() else { return false };
        match db::control::fence_holds(&self.pool, f).await {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm leadership; not acting");
                false
            }
        }
    }

    /// Takes the leader lock on a new dedicated connection and starts a term; the connection must be kept for
    /// as long as the term lasts (dropping it releases the lock). `None` when another replica leads.
    pub async fn take(&self, holder: &str) -> Option<sqlx::PgConnection> {
        let mut conn = self.pool.acquire().await.ok()?.detach();
        match db::control::try_lead(&mut conn).await {
            Ok(true) => {}
            _ => return None,
        }
        match db::control::begin_epoch(&mut conn, holder).await {
            Ok(fence) => {
                *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some(fence);
                self.leading.store(true, Ordering::Relaxed);
                tracing::info!(epoch = fence.epoch, "leadership term started");
                Some(conn)
            }
            Err(e) => {
                // Holding the lock without a term would act unfenced: give it back.
                tracing::warn!(error = %e, "took the leader lock but could not start a term; releasing it");
                let _ = sqlx::Connection::close(conn).await;
                None
            }
        }
    }

    /// Ends this replica's term locally (the lock goes with the connection).
    pub fn end(&self) {
        self.leading.store(false, Ordering::Relaxed);
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A name for this replica in the epoch table: host and process.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}
