//! Command delivery outside the upload cycle: a long poll brings commands within milliseconds of the server
//! recording them, receipt is acknowledged at once, and results are reported as soon as a command ran.
//!
//! The upload acknowledgements still carry pending commands, so an agent whose long poll is down (or a
//! server without the endpoint) still gets them within one interval; executing is idempotent by command id,
//! so a command that arrives both ways runs once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, watch};

use crate::protocol::{CommandAck, CommandPoll, CommandResult, IncomingCommand};
use crate::selfmetrics::AgentStats;

/// Default long-poll wait: the server answers at once when a command is created, else after this long.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(25);

/// Why a poll did not bring commands.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The server has no long-poll endpoint (an older control plane): commands ride on uploads only.
    #[error("the control plane has no command long-poll endpoint (404)")]
    NotSupported,
    /// The credential is refused.
    #[error("the control plane refused the agent's credential ({0})")]
    Unauthorized(u16),
    /// Network trouble, a timeout, a 5xx or an unreadable reply.
    #[error("command poll failed: {0}")]
    Failed(String),
}

/// The HTTP side of command delivery.
#[derive(Clone)]
pub struct CommandClient {
    http: reqwest::Client,
    poll_url: String,
    ack_url: String,
    token: String,
    agent_id: String,
    wait: Duration,
}

impl CommandClient {
    /// A client for `server_url` that long-polls for `wait` at a time.
    /// `server_ca`: the PEM CA bundle the server must chain to, if not the platform's roots.
    pub fn new(server_url: &str, token: &str, agent_id: &str, wait: Duration, server_ca: Option<&[u8]>) -> Self {
        let base = server_url.trim_end_matches('/');
        let http = crate::tls::client(
            reqwest::Client::builder()
                // The server holds a poll for `wait`; anything much longer is a dead connection.
                .timeout(wait + Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(3)),
            server_ca,
        );
        Self {
            http,
            poll_url: format!("{base}/api/v1/commands"),
            ack_url: format!("{base}/api/v1/commands/ack"),
            token: token.to_string(),
            agent_id: agent_id.to_string(),
            wait,
        }
    }

    /// One long poll: the commands waiting for this agent (possibly none, after the wait).
    pub async fn poll(&self) -> Result<Vec<IncomingCommand>, PollError> {
        let wait_s = self.wait.as_secs().to_string();
        let url = reqwest::Url::parse_with_params(
            &self.poll_url,
            &[("agent_id", self.agent_id.as_str()), ("wait_s", wait_s.as_str())],
        )
        .map_err(|e| PollError::Failed(format!("server URL: {e}")))?;
        let res =
            self.http.get(url).bearer_auth(&self.token).send().await.map_err(|e| PollError::Failed(e.to_string()))?;
        match res.status().as_u16() {
            200 => res.json::<CommandPoll>().await.map(|p| p.commands).map_err(|e| PollError::Failed(e.to_string())),
            404 | 405 => Err(PollError::NotSupported),
            s @ (401 | 403) => Err(PollError::Unauthorized(s)),
            s => Err(PollError::Failed(format!("HTTP {s}"))),
        }
    }

    /// Tells the server which commands arrived and how those that ran ended. Errors are reasons to fall back
    /// to the next upload, which carries the results too.
    pub async fn ack(&self, received: Vec<String>, results: Vec<CommandResult>) -> Result<(), String> {
        let body = CommandAck { agent_id: self.agent_id.clone(), received, results };
        let res = self
            .http
            .post(&self.ack_url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status().is_success() { Ok(()) } else { Err(format!("HTTP {}", res.status())) }
    }
}

/// Long-polls until `shutdown` flips, acknowledging receipt at once and handing commands to the agent's loop.
/// Failures back off (1 s doubling to 30 s, with jitter); a server without the endpoint is asked again every
/// 5 minutes (it may have been upgraded).
pub async fn poll_until_stopped(
    client: CommandClient,
    tx: mpsc::Sender<Vec<IncomingCommand>>,
    stats: Arc<AgentStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut warned_unsupported = false;
    loop {
        let outcome = tokio::select! {
            r = client.poll() => r,
            _ = shutdown.changed() => return,
        };
        let pause = match outcome {
            Ok(cmds) => {
                failures = 0;
                if !cmds.is_empty() {
                    stats.commands_polled.fetch_add(cmds.len() as u64, Ordering::Relaxed);
                    let ids = cmds.iter().map(command_id).collect();
                    if let Err(e) = client.ack(ids, Vec::new()).await {
                        tracing::debug!(error = %e, "receipt acknowledgement failed; results will follow");
                    }
                    if tx.send(cmds).await.is_err() {
                        return; // the agent's loop is gone
                    }
                }
                None
            }
            Err(PollError::NotSupported) => {
                if !warned_unsupported {
                    warned_unsupported = true;
                    tracing::info!("the control plane has no command long poll; commands arrive with uploads");
                }
                Some(Duration::from_secs(300))
            }
            Err(e) => {
                stats.command_poll_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                let base = (2f64.powi(failures.saturating_sub(1).min(10) as i32)).min(30.0);
                let delay = Duration::from_secs_f64(base * rand::rng().random_range(0.5..=1.0));
                if matches!(e, PollError::Unauthorized(_)) || failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, retry_in = ?delay, "command long poll failed");
                }
                Some(delay)
            }
        };
        if let Some(p) = pause {
            tokio::select! {
                _ = tokio::time::sleep(p) => {}
                _ = shutdown.changed() => return,
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// The id of a command, known or not.
pub fn command_id(c: &IncomingCommand) -> String {
    match c {
        IncomingCommand::Known(c) => c.id.clone(),
        IncomingCommand::Unknown { id, .. } => id.clone(),
    }
}
