//! Commands to agents: queueing (with a notification that wakes long polls on every server replica),
//! delivery with redelivery of what was lost on the way, receipts and results.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gpu_agent::protocol::{Command, CommandAction, CommandResult, IncomingCommand};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The `LISTEN`/`NOTIFY` channel; the payload is the node id.
pub const CHANNEL: &str = "fleetpilot_commands";
/// A delivered command whose receipt was not acknowledged within this is delivered again (the reply was lost).
pub const REDELIVER_UNACKED_SECS: f64 = 5.0;
/// A received command without a result within this is delivered again (the agent restarted while running it).
pub const REDELIVER_UNFINISHED_SECS: f64 = 120.0;
/// A command not completed within this is dropped rather than applied late.
pub const EXPIRE_SECS: f64 = 600.0;

/// Queues a command for a node and wakes its long poll (the notification is sent at commit).
pub async fn enqueue(
    pool: &PgPool,
    node: &str,
    action: &CommandAction,
    decision_id: Option<i64>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "WITH c AS (INSERT INTO commands (id, node_id, action, decision_id) VALUES ($1, $2, $3, $4) \
         RETURNING node_id) SELECT pg_notify($5, node_id) FROM c",
    )
    .bind(id)
    .bind(node)
    .bind(serde_json::to_value(action).unwrap_or_default())
    .bind(decision_id)
    .bind(CHANNEL)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Queues `action` for every node of `nodes` in one transaction, only while `fence` is the current leadership
/// term: the epoch row is read `FOR SHARE`, so a successor's [`crate::db::control::begin_epoch`] waits for this
/// transaction and no command of a superseded leader lands after it. `Ok(None)` when fenced off.
pub async fn enqueue_fenced(
    pool: &PgPool,
    fence: crate::db::control::Fence,
    nodes: &[String],
    action: &CommandAction,
    decision_id: Option<i64>,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM leader_epoch FOR SHARE").fetch_optional(&mut *tx).await?;
    if locked != Some(fence.epoch) || !crate::db::control::fence_holds(&mut *tx, fence).await? {
        return Ok(None);
    }
    let ids: Vec<Uuid> = nodes.iter().map(|_| Uuid::new_v4()).collect();
    sqlx::query(
        "WITH c AS (INSERT INTO commands (id, node_id, action, decision_id, leader_epoch) \
           SELECT id, node, $3, $4, $5 FROM UNNEST($1::uuid[], $2::text[]) AS u(id, node) RETURNING node_id) \
         SELECT pg_notify($6, node_id) FROM c",
    )
    .bind(&ids)
    .bind(nodes)
    .bind(serde_json::to_value(action).unwrap_or_default())
    .bind(decision_id)
    .bind(fence.epoch)
    .bind(CHANNEL)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(ids))
}

/// Commands due for delivery to each of `nodes`, oldest first; marks them delivered. Due: never delivered,
/// delivered without a receipt for [`REDELIVER_UNACKED_SECS`], or received without a result for
/// [`REDELIVER_UNFINISHED_SECS`]; never older than [`EXPIRE_SECS`].
pub async fn due_for(pool: &PgPool, nodes: &[&str]) -> Result<HashMap<String, Vec<IncomingCommand>>, sqlx::Error> {
    let mut rows: Vec<(String, Uuid, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE commands SET delivered_at = now() \
         WHERE node_id = ANY($1) AND completed_at IS NULL \
           AND created_at > now() - make_interval(secs => $4) \
           AND (delivered_at IS NULL \
                OR (acked_at IS NULL AND delivered_at < now() - make_interval(secs => $2)) \
                OR delivered_at < now() - make_interval(secs => $3)) \
         RETURNING node_id, id, action, created_at",
    )
    .bind(nodes)
    .bind(REDELIVER_UNACKED_SECS)
    .bind(REDELIVER_UNFINISHED_SECS)
    .bind(EXPIRE_SECS)
    .fetch_all(pool)
    .await?;
    // RETURNING has no order; agents apply commands in creation order.
    rows.sort_by_key(|r| r.3);
    let mut out: HashMap<String, Vec<IncomingCommand>> = HashMap::new();
    for (node, id, action, _) in rows {
        // A kind this replica does not know (written by a newer one mid-upgrade) goes out as it is: the agent
        // either knows it or refuses it with a reason, so nobody waits on a command that silently vanished.
        let c = match serde_json::from_value::<CommandAction>(action.clone()) {
            Ok(action) => Command { id: id.to_string(), action }.into(),
            Err(_) => IncomingCommand::Unknown {
                id: id.to_string(),
                rest: serde_json::Map::from_iter([("action".to_string(), action)]),
            },
        };
        out.entry(node).or_default().push(c);
    }
    Ok(out)
}

/// Records receipts and results reported by `node` (ids of other nodes' commands are ignored; the first
/// result wins). Returns (receipts recorded, results recorded).
pub async fn acknowledge(
    conn: &mut sqlx::PgConnection,
    node: &str,
    received: &[String],
    results: &[CommandResult],
) -> Result<(u64, u64), sqlx::Error> {
    let ids: Vec<Uuid> = received.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
    let mut acked = 0;
    if !ids.is_empty() {
        acked = sqlx::query(
            "UPDATE commands SET acked_at = now() WHERE node_id = $1 AND id = ANY($2) AND acked_at IS NULL",
        )
        .bind(node)
        .bind(&ids)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let parsed: Vec<(Uuid, &CommandResult)> =
        results.iter().filter_map(|r| Uuid::parse_str(&r.id).ok().map(|id| (id, r))).collect();
    let mut done = 0;
    if !parsed.is_empty() {
        done = sqlx::query(
            "UPDATE commands c SET completed_at = now(), acked_at = coalesce(c.acked_at, now()), \
             ok = r.ok, result = r.result \
             FROM UNNEST($2::uuid[], $3::bool[], $4::text[]) AS r(id, ok, result) \
             WHERE c.id = r.id AND c.node_id = $1 AND c.completed_at IS NULL",
        )
        .bind(node)
        .bind(parsed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(parsed.iter().map(|(_, r)| r.ok).collect::<Vec<_>>())
        .bind(parsed.iter().map(|(_, r)| r.message.as_str()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok((acked, done))
}

/// A command's record, for the API.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CommandRecord {
    /// Id.
    pub id: Uuid,
    /// Target node.
    pub node_id: String,
    /// The action as sent.
    pub action: serde_json::Value,
    /// Decision that issued it, if any.
    pub decision_id: Option<i64>,
    /// Queued.
    pub created_at: DateTime<Utc>,
    /// Last handed to the agent.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Receipt acknowledged by the agent.
    pub acked_at: Option<DateTime<Utc>>,
    /// Result reported.
    pub completed_at: Option<DateTime<Utc>>,
    /// Whether it was applied.
    pub ok: Option<bool>,
    /// The agent's message.
    pub result: Option<String>,
}

const RECORD_COLUMNS: &str =
    "id, node_id, action, decision_id, created_at, delivered_at, acked_at, completed_at, ok, result";

/// One command.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<CommandRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {RECORD_COLUMNS} FROM commands WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The newest commands of a node.
pub async fn recent_for_node(pool: &PgPool, node: &str, limit: i64) -> Result<Vec<CommandRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM commands WHERE node_id = $1 ORDER BY created_at DESC LIMIT $2"
    )))
    .bind(node)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks commands older than [`EXPIRE_SECS`] without a result as failed, so nobody waits for them.
pub async fn expire(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE commands SET completed_at = now(), ok = false, \
         result = 'expired: no result within ' || $1::text || ' s' \
         WHERE completed_at IS NULL AND created_at < now() - make_interval(secs => $1)",
    )
    .bind(EXPIRE_SECS)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Whether `node` is known (has sent a batch).
pub async fn node_exists(pool: &PgPool, node: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM nodes WHERE node_id = $1)").bind(node).fetch_one(pool).await
}

/// The latest probe of each GPU of a node.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProbeRecord {
    /// GPU index.
    pub gpu_index: i32,
    /// When.
    pub ts: DateTime<Utc>,
    /// GPU UUID, when known.
    pub uuid: Option<String>,
    /// Measured bandwidth, GB/s.
    pub bandwidth_gb_s: Option<f64>,
    /// Why there is none.
    pub error: Option<String>,
}

/// The latest probe result of every GPU of `node`.
pub async fn latest_probes(pool: &PgPool, node: &str) -> Result<Vec<ProbeRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (gpu_index) gpu_index, ts, uuid, bandwidth_gb_s, error FROM gpu_probes \
         WHERE node_id = $1 ORDER BY gpu_index, ts DESC",
    )
    .bind(node)
    .fetch_all(pool)
    .await
}

/// The nodes of agent group `group` (the receivers of a group's replica count).
pub async fn nodes_of_group(pool: &PgPool, group: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT node_id FROM nodes WHERE agent_group = $1 ORDER BY node_id")
        .bind(group)
        .fetch_all(pool)
        .await
}

/// How long each of `ids` took from enqueue to the agent's receipt, ms (`None`: no receipt yet).
pub async fn ack_latencies_ms(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, Option<f64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, (extract(epoch FROM acked_at - created_at) * 1000)::float8 FROM commands WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}
