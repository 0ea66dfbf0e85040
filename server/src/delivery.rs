//! Wakes long polls for commands on every server replica: one `LISTEN` connection per process fans
//! PostgreSQL notifications (payload: node id) out to the waiting requests. A command is recorded in one
//! replica's transaction and reaches the agent polling another within milliseconds of the commit, with no
//! cluster machinery beyond the database every replica already shares. The same connection hears about
//! committed samples, which wakes the control loop of the leading replica.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;

use tokio::sync::{Notify, broadcast, watch};

use crate::db::commands::CHANNEL;
use crate::db::control::INGESTED_CHANNEL;

/// Wakes every waiter (after the listener reconnects, notifications may have been missed).
const EVERYONE: &str = "*";

/// The fan-out of command notifications.
#[derive(Clone)]
pub struct CommandBus {
    tx: broadcast::Sender<String>,
    stopped: watch::Receiver<bool>,
    ingested: Arc<Notify>,
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A command for this node may be waiting (or notifications were missed): look.
    Look,
    /// The wait ran out.
    TimedOut,
    /// The server is stopping.
    Stopping,
}

impl CommandBus {
    /// A bus that reports [`Wake::Stopping`] once `stopped` flips.
    pub fn new(stopped: watch::Receiver<bool>) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { tx, stopped, ingested: Arc::new(Notify::new()) }
    }

    /// Signalled whenever any replica commits samples (the control loop's wake-up).
    pub fn ingested(&self) -> Arc<Notify> {
        self.ingested.clone()
    }

    /// A subscription; take it before looking in the database so no notification falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// Waits on `rx` until `node` is named, `timeout` passes or the server stops.
    pub async fn wait(&self, rx: &mut broadcast::Receiver<String>, node: &str, timeout: Duration) -> Wake {
        let mut stopped = self.stopped.clone();
        if *stopped.borrow() {
            return Wake::Stopping;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(n) if n == node || n == EVERYONE => return Wake::Look,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Wake::Look,
                    Err(broadcast::error::RecvError::Closed) => return Wake::Stopping,
                },
                _ = tokio::time::sleep_until(deadline) => return Wake::TimedOut,
                _ = stopped.wait_for(|v| *v) => return Wake::Stopping,
            }
        }
    }

    fn publish(&self, node: &str) {
        // No receivers is normal (no agent is polling here).
        let _ = self.tx.send(node.to_string());
    }

    /// Listens until `shutdown` flips, reconnecting after a lost connection (and then waking every waiter,
    /// since notifications sent meanwhile are gone).
    pub async fn listen_until_stopped(self, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        let mut first = true;
        while !*shutdown.borrow() {
            match listen(&pool).await {
                Ok(mut listener) => {
                    if !first {
                        tracing::info!("command notifications listening again");
                    }
                    first = false;
                    self.publish(EVERYONE);
                    loop {
                        tokio::select! {
                            n = listener.try_recv() => match n {
                                Ok(Some(n)) if n.channel() == INGESTED_CHANNEL => self.ingested.notify_one(),
                                Ok(Some(n)) => self.publish(n.payload()),
                                // The connection dropped; sqlx reconnects on the next call.
                                Ok(None) => {
                                    tracing::warn!("command notification connection lost; reconnecting");
                                    self.publish(EVERYONE);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "command notifications failed; reconnecting");
                                    break;
                                }
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for command notifications; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen_all([CHANNEL, INGESTED_CHANNEL]).await?;
    Ok(l)
}
