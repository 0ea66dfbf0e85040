//! The ingest pipeline: handlers decode and validate, then hand batches to a bounded queue; writer tasks
//! drain it in groups and store each group in one transaction (group commit), so thousands of small agent
//! uploads per second cost a few transactions, one binary `COPY` per table each. A batch is acknowledged
//! only after its group committed. When the queue is full the handler answers 429 with `Retry-After`
//! instead of growing memory.

pub mod cardinality;
pub mod remote_write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpu_agent::protocol::{Batch, IncomingCommand};
use sqlx::PgPool;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::db::{self, Partitions};
use crate::telemetry::Metrics;

/// What the writer answers for one batch.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The batch had been stored before.
    pub duplicate: bool,
    /// Commands waiting for the batch's node.
    pub commands: Vec<IncomingCommand>,
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: retry later.
    #[error("ingest queue is full")]
    Busy,
    /// The batch alone is larger than the whole queue.
    #[error("batch of {0} rows exceeds the ingest queue ({1} rows)")]
    TooLarge(usize, usize),
    /// The server is shutting down.
    #[error("ingest is shutting down")]
    Closed,
}

/// Why a queued batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// The database refused this batch's data even when it was written alone: retrying cannot help (400).
    #[error("the database refused the batch ({field}): {reason}")]
    Rejected {
        /// The part of the batch to blame, as far as the database error tells.
        field: String,
        /// The database's reason.
        reason: String,
    },
    /// The database could not be reached or failed for reasons of its own: retry later (503).
    #[error("the batch could not be stored: {0}")]
    Unavailable(String),
}

/// What a submitted batch's receiver yields.
pub type StoreResult = Result<Stored, StoreFailure>;

struct Job {
    batch: Batch,
    _permit: OwnedSemaphorePermit,
    enqueued: Instant,
    reply: oneshot::Sender<StoreResult>,
}

/// Whether `e` was caused by the rows written (the data), not by the database being unavailable: SQLSTATE
/// class 22 (data exception, e.g. NUL in text), 23 (integrity, e.g. no partition for a row), 54 (limits).
fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54"))
        }
        sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// Whether `e` is a row that found no partition (SQLSTATE 23514 from partition routing).
fn is_missing_partition(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("23514") && d.message().starts_with("no partition of relation")
        }
        _ => false,
    }
}

/// The field a data error points at, as far as the message tells (the database does not name JSON paths).
fn blamed_field(e: &sqlx::Error) -> String {
    let msg = e.to_string();
    if msg.contains("partition") {
        if msg.contains("serving_hot") { "serving[].ts_ms" } else { "gpus[].ts_ms" }.to_string()
    } else {
        "batch".to_string()
    }
}

/// Limits of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Rows (GPU + serving samples) queued or being written at most.
    pub max_queued_rows: usize,
    /// Rows written per transaction at most.
    pub max_group_rows: usize,
    /// Writer tasks.
    pub writers: usize,
}

/// Handle to the pipeline; cheap to clone.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    /// Keeps the channel open even with no writer running (writers exit when every sender is gone).
    _rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    rows: Arc<Semaphore>,
    max_rows: usize,
}

fn rows_of(b: &Batch) -> usize {
    b.gpus.len() + b.serving.len() + 1
}

impl IngestQueue {
    /// Starts the writers; they stop once every handle is dropped and the queue is drained.
    pub fn start(
        pool: PgPool,
        partitions: Arc<Partitions>,
        metrics: Metrics,
        limits: QueueLimits,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel::<Job>(65_536);
        let rx = Arc::new(Mutex::new(rx));
        // One identity cache for every writer: a GPU's or a replica's key is resolved once per process.
        let keys = Arc::new(db::dimensions::Dimensions::default());
        // Zero writers is refused by configuration validation; tests use it to hold the queue full.
        let writers = (0..limits.writers)
            .map(|_| {
                let w = Writer {
                    pool: pool.clone(),
                    partitions: partitions.clone(),
                    keys: keys.clone(),
                    metrics: metrics.clone(),
                    rx: rx.clone(),
                    max_group_rows: limits.max_group_rows.max(1),
                };
                tokio::spawn(w.run())
            })
            .collect();
        let q = Self {
            tx,
            _rx: rx,
            rows: Arc::new(Semaphore::new(limits.max_queued_rows)),
            max_rows: limits.max_queued_rows,
        };
        (q, writers)
    }

    /// Queues a validated batch; the receiver yields once it is committed (or failed).
    pub fn submit(&self, batch: Batch) -> Result<oneshot::Receiver<StoreResult>, SubmitError> {
        let rows = rows_of(&batch);
        if rows > self.max_rows {
            return Err(SubmitError::TooLarge(rows, self.max_rows));
        }
        let permit = self.rows.clone().try_acquire_many_owned(rows as u32).map_err(|_| SubmitError::Busy)?;
        let (reply, rx) = oneshot::channel();
        let job = Job { batch, _permit: permit, enqueued: Instant::now(), reply };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Busy,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        Ok(rx)
    }
}

struct Writer {
    pool: PgPool,
    partitions: Arc<Partitions>,
    keys: Arc<db::dimensions::Dimensions>,
    metrics: Metrics,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_group_rows: usize,
}

impl Writer {
    async fn run(self) {
        loop {
            let group = {
                let mut rx = self.rx.lock().await;
                let Some(first) = rx.recv().await else { return };
                let mut rows = rows_of(&first.batch);
                let mut group = vec![first];
                while rows < self.max_group_rows {
                    match rx.try_recv() {
                        Ok(j) => {
                            rows += rows_of(&j.batch);
                            group.push(j);
                        }
                        Err(_) => break,
                    }
                }
                group
            };
            self.write(group).await;
        }
    }

    async fn write(&self, group: Vec<Job>) {
        let started = Instant::now();
        let result = self.store(&group).await;
        let elapsed = started.elapsed();
        match result {
            Ok(stored) => {
                let samples = self.acknowledge(group, stored);
                tracing::trace!(?elapsed, samples, "group stored");
            }
            Err(e) if is_data_error(&e) => {
                // One batch's rows were refused (a value validation missed, a partition dropped behind our
                // back): isolate it by writing every batch alone, so it costs only its own sender a 400.
                tracing::warn!(error = %e, batches = group.len(), "an ingest group was refused; isolating its batches");
                self.metrics.ingest_batches.with_label_values(&["isolated"]).inc_by(group.len() as u64);
                self.partitions.forget_all();
                for job in group {
                    let mut result = self.store(std::slice::from_ref(&job)).await;
                    // A partition dropped between creating it and writing (the packer drops an emptied hour
                    // partition; retention drops old days) is ours to fix, never the sender's fault: timestamps
                    // were checked against the accepted window, so the partition is created again.
                    for _ in 0..3 {
                        match &result {
                            Err(e) if is_missing_partition(e) => {
                                self.partitions.forget_all();
                                result = self.store(std::slice::from_ref(&job)).await;
                            }
                            _ => break,
                        }
                    }
                    match result {
                        Ok(stored) => {
                            self.acknowledge(vec![job], stored);
                        }
                        // Still racing: the sender retries later (503) rather than dropping its data (400).
                        Err(e) if is_missing_partition(&e) => self.fail(vec![job], &e).await,
                        Err(e) if is_data_error(&e) => {
                            tracing::warn!(error = %e, node = %job.batch.agent_id, seq = job.batch.seq, "batch refused by the database");
                            self.metrics.ingest_batches.with_label_values(&["rejected"]).inc();
                            let failure = StoreFailure::Rejected { field: blamed_field(&e), reason: e.to_string() };
                            let _ = job.reply.send(Err(failure));
                        }
                        Err(e) => self.fail(vec![job], &e).await,
                    }
                }
            }
            Err(e) => self.fail(group, &e).await,
        }
    }

    /// Answers every job of a stored group; returns the metric values stored.
    fn acknowledge(&self, group: Vec<Job>, stored: Vec<Stored>) -> u64 {
        let mut samples = 0u64;
        for (job, s) in group.into_iter().zip(stored) {
            if s.duplicate {
                self.metrics.ingest_batches.with_label_values(&["duplicate"]).inc();
            } else {
                self.metrics.ingest_batches.with_label_values(&["stored"]).inc();
                samples += job.batch.metric_values() as u64;
            }
            self.metrics.ingest_seconds.observe(job.enqueued.elapsed().as_secs_f64());
            let _ = job.reply.send(Ok(s));
        }
        self.metrics.ingest_samples.inc_by(samples);
        samples
    }

    /// The database is unavailable: every sender retries later.
    async fn fail(&self, group: Vec<Job>, e: &sqlx::Error) {
        tracing::warn!(error = %e, batches = group.len(), "storing an ingest group failed; agents will retry");
        for job in group {
            self.metrics.ingest_batches.with_label_values(&["error"]).inc();
            let _ = job.reply.send(Err(StoreFailure::Unavailable(e.to_string())));
        }
        // Do not spin on a database that is down.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn store(&self, group: &[Job]) -> Result<Vec<Stored>, sqlx::Error> {
        // Hot rows (GPU and serving) go to hourly partitions; the packer creates the daily chunk partitions
        // it writes.
        let mut hours: Vec<i64> = group
            .iter()
            .flat_map(|j| j.batch.gpus.iter().map(|g| g.ts_ms).chain(j.batch.serving.iter().map(|s| s.ts_ms)))
            .map(|ms| ms.div_euclid(3_600_000))
            .collect();
        hours.sort_unstable();
        hours.dedup();
        self.partitions.ensure_hours(&self.pool, hours.into_iter().map(|h| db::ingest::ts(h * 3_600_000))).await?;
        let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
        let outcomes = db::ingest::store_group(&self.pool, &self.keys, &batches).await?;
        let nodes: Vec<&str> = {
            // Batches converted from Prometheus remote-write have no agent to take commands: theirs wait.
            let mut n: Vec<&str> = batches
                .iter()
                .filter(|b| b.node.agent_version != remote_write::AGENT_VERSION)
                .map(|b| b.agent_id.as_str())
                .collect();
            n.sort_unstable();
            n.dedup();
            n
        };
        // A group of remote-write batches only has no node to ask for: spare the round trip.
        let mut commands =
            if nodes.is_empty() { Default::default() } else { db::commands::due_for(&self.pool, &nodes).await? };
        // Each node's commands go in the reply to its newest batch of the group.
        let mut out: Vec<Stored> =
            outcomes.iter().map(|o| Stored { duplicate: o.duplicate, commands: Vec::new() }).collect();
        for (i, b) in batches.iter().enumerate().rev() {
            if let Some(c) = commands.remove(b.agent_id.as_str()) {
                out[i].commands = c;
            }
        }
        Ok(out)
    }
}
