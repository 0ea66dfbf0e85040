//! The `ScalingPolicy` controller: platform teams declare policies as Kubernetes resources
//! (`fleetpilot.dev/v1`, CRD in `deploy/crds/`) and manage them with `kubectl apply` and GitOps.
//!
//! On the leader, a kube-runtime watcher follows every ScalingPolicy (a re-list after a `410 Gone` or any
//! watch failure is the watcher's job). Each resource becomes a stored policy owned by it
//! (`ScalingPolicy <namespace>/<name>`, read-only in the API and the dashboard): created, updated (a new
//! version) and deleted with it, and the policies whose resource vanished while nobody watched are deleted
//! when a (re-)list completes. A spec the API would refuse is refused here too: the resource's `Accepted`
//! condition carries the validation message (field and reason) and nothing is stored (an earlier valid version
//! stays in force). The status subresource also carries the policy's latest decision: current and desired
//! replicas and its reason. Policies made through the REST API are never touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher::watcher as watch};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch as signal;

use crate::db;
use crate::db::policies::Write;
use crate::domain::policy::{PolicyCondition, ScalingPolicy, ScalingPolicyStatus};

/// What the controller failed at (logged; the next event or status pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The store refused.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The API server refused a status write.
    #[error("status of {0}: {1}")]
    Status(String, kube::Error),
}

/// `ScalingPolicy <namespace>/<name>`: the owner recorded on the stored policy.
pub fn owner_of(sp: &ScalingPolicy) -> String {
    format!("ScalingPolicy {}/{}", sp.namespace().unwrap_or_default(), sp.name_any())
}

/// The controller.
pub struct PolicyController {
    pool: PgPool,
    client: kube::Client,
    status_every: Duration,
}

impl PolicyController {
    /// A controller writing to `pool`, reading resources through `client`; the latest decisions go into the
    /// resources' status every `status_every`.
    pub fn new(pool: PgPool, client: kube::Client, status_every: Duration) -> Self {
        Self { pool, client, status_every }
    }

    /// Follows the resources while `leading` is set, until `shutdown` flips.
    pub async fn run_until_stopped(
        self,
        leading: Arc<super::leadership::Leadership>,
        mut shutdown: signal::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            if !leading.is_leading() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            self.lead(&leading, &mut shutdown).await;
        }
    }

    /// One term of leadership: watch, reconcile, publish status; returns when leadership or the process ends.
    async fn lead(&self, leading: &super::leadership::Leadership, shutdown: &mut signal::Receiver<bool>) {
        let api: Api<ScalingPolicy> = Api::all(self.client.clone());
        let mut events = watch(api, watcher::Config::default()).default_backoff().boxed();
        let mut listed: HashSet<String> = HashSet::new();
        // The resources seen, by owner, for the status pass.
        let mut known: HashMap<String, ScalingPolicy> = HashMap::new();
        let mut published: HashMap<String, ScalingPolicyStatus> = HashMap::new();
        let mut status_tick = tokio::time::interval(self.status_every);
        let mut errors = 0u32;
        while leading.is_leading() && !*shutdown.borrow() {
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { return };
                    let r = match ev {
                        Ok(Event::Init) => {
                            listed.clear();
                            Ok(())
                        }
                        Ok(Event::InitApply(sp)) => {
                            listed.insert(owner_of(&sp));
                            known.insert(owner_of(&sp), sp.clone());
                            self.reconcile(&sp, &mut published).await
                        }
                        Ok(Event::InitDone) => self.forget_unlisted(&listed, &mut known).await,
                        Ok(Event::Apply(sp)) => {
                            known.insert(owner_of(&sp), sp.clone());
                            self.reconcile(&sp, &mut published).await
                        }
                        Ok(Event::Delete(sp)) => {
                            known.remove(&owner_of(&sp));
                            self.forget(&owner_of(&sp)).await
                        }
                        Err(e) => {
                            // The watcher re-lists and backs off by itself; say so now and then, not in a loop.
                            errors += 1;
                            if errors.is_power_of_two() {
                                tracing::warn!(error = %e, errors, "ScalingPolicy watch failed (is the CRD in deploy/crds/ installed?)");
                            }
                            Ok(())
                        }
                    };
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "ScalingPolicy reconcile failed");
                    }
                }
                _ = status_tick.tick() => {
                    for sp in known.values() {
                        if let Err(e) = self.publish_decision(sp, &mut published).await {
                            tracing::warn!(error = %e, "ScalingPolicy status not written");
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Makes the stored policy match the resource, and says how it went in its status.
    async fn reconcile(
        &self,
        sp: &ScalingPolicy,
        published: &mut HashMap<String, ScalingPolicyStatus>,
    ) -> Result<(), CrdError> {
        let owner = owner_of(sp);
        let generation = sp.metadata.generation;
        let stored = db::policies::by_owner(&self.pool, &owner).await?;
        let (ok, reason, message, policy_id) = match sp.spec.validate() {
            Err(e) => {
                let field = format!("spec.{}: ", e.field);
                let kept =
                    stored.as_ref().map_or(String::new(), |p| format!(" (version {} stays in force)", p.version));
                (false, "InvalidSpec", format!("{field}{}{kept}", e.error), stored.map(|p| p.id))
            }
            Ok(()) => {
                let written = match &stored {
                    Some(p) if p.spec == sp.spec => Write::Ok(p.clone()),
                    Some(p) => db::policies::update(&self.pool, p.id, &sp.spec).await?,
                    None => db::policies::create_owned(&self.pool, &sp.spec, Some(&owner)).await?,
                };
                match written {
                    Write::Ok(p) => {
                        if stored.as_ref().is_none_or(|s| s.version != p.version) {
                            tracing::info!(%owner, policy = %p.spec.name, version = p.version, "ScalingPolicy stored");
                        }
                        (true, "Stored", format!("policy {} version {}", p.spec.name, p.version), Some(p.id))
                    }
                    Write::NameTaken => (
                        false,
                        "NameTaken",
                        format!("spec.name: another policy is named {:?}", sp.spec.name),
                        stored.map(|p| p.id),
                    ),
                    Write::NotFound => (false, "NotFound", "the stored policy vanished; retrying".into(), None),
                }
            }
        };
        let previous = sp.status.clone().unwrap_or_default();
        let mut status = ScalingPolicyStatus {
            observed_generation: generation,
            policy_id: policy_id.map(|id| id.to_string()),
            conditions: vec![condition(&previous, ok, reason, &message, generation)],
            ..previous.clone()
        };
        if let Some(id) = policy_id {
            fill_decision(&self.pool, id, &mut status).await?;
        }
        self.write_status(sp, &previous, status, published).await
    }

    /// Writes the latest decision into the status when it changed.
    async fn publish_decision(
        &self,
        sp: &ScalingPolicy,
        published: &mut HashMap<String, ScalingPolicyStatus>,
    ) -> Result<(), CrdError> {
        let owner = owner_of(sp);
        let Some(previous) = published.get(&owner).cloned() else { return Ok(()) };
        let Some(id) = previous.policy_id.as_deref().and_then(|s| s.parse().ok()) else { return Ok(()) };
        let mut status = previous.clone();
        fill_decision(&self.pool, id, &mut status).await?;
        self.write_status(sp, &previous, status, published).await
    }

    async fn write_status(
        &self,
        sp: &ScalingPolicy,
        previous: &ScalingPolicyStatus,
        status: ScalingPolicyStatus,
        published: &mut HashMap<String, ScalingPolicyStatus>,
    ) -> Result<(), CrdError> {
        let owner = owner_of(sp);
        if &status == previous && published.get(&owner) == Some(&status) {
            return Ok(());
        }
        let api: Api<ScalingPolicy> = Api::namespaced(self.client.clone(), &sp.namespace().unwrap_or_default());
        api.patch_status(&sp.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": &status })))
            .await
            .map_err(|e| CrdError::Status(owner.clone(), e))?;
        published.insert(owner, status);
        Ok(())
    }

    /// Deletes the policy `owner` owned.
    async fn forget(&self, owner: &str) -> Result<(), CrdError> {
        if let Some(p) = db::policies::by_owner(&self.pool, owner).await? {
            db::policies::delete(&self.pool, p.id).await?;
            tracing::info!(%owner, policy = %p.spec.name, "ScalingPolicy deleted: its policy too");
        }
        Ok(())
    }

    /// After a (re-)list: deletes the owned policies whose resource is gone (deleted while nobody watched).
    async fn forget_unlisted(
        &self,
        listed: &HashSet<String>,
        known: &mut HashMap<String, ScalingPolicy>,
    ) -> Result<(), CrdError> {
        known.retain(|owner, _| listed.contains(owner));
        for p in db::policies::owned(&self.pool).await? {
            if let Some(owner) = p.owner.as_deref().filter(|o| !listed.contains(*o)) {
                db::policies::delete(&self.pool, p.id).await?;
                tracing::info!(%owner, policy = %p.spec.name, "ScalingPolicy gone while not watched: its policy deleted");
            }
        }
        Ok(())
    }
}

/// The `Accepted` condition, keeping its transition time while its status holds.
fn condition(
    previous: &ScalingPolicyStatus,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> PolicyCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    PolicyCondition {
        type_: "Accepted".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The policy's latest decision into `status`.
async fn fill_decision(pool: &PgPool, policy: uuid::Uuid, status: &mut ScalingPolicyStatus) -> Result<(), CrdError> {
    if let Some((at, current, desired, reason)) = db::control::latest_decision(pool, policy).await? {
        status.current_replicas = u32::try_from(current).ok();
        status.desired_replicas = u32::try_from(desired).ok();
        status.last_decision = Some(reason);
        status.last_decision_time = Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    Ok(())
}
