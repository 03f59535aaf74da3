//! The `AccessRole` reconciler: how many Databases its `allow` matches, and a `Valid`
//! condition that explains specs that can never grant anything.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::context::{Context, FIELD_MANAGER};
use crate::authz::{DatabaseRef, allow_rules_for};
use crate::crd::AccessRole;
use crate::crd::conditions::{Observation, find, merge};

/// Why an AccessRole reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessRoleError {
    /// The status write was refused.
    #[error("cannot write the status of AccessRole {0}")]
    Write(String, #[source] kube::Error),
}

/// Reconciles one AccessRole's status.
pub async fn reconcile(role: Arc<AccessRole>, ctx: Arc<Context>) -> Result<Action, AccessRoleError> {
    ctx.wait_until_ready().await;
    let started = std::time::Instant::now();
    let result = write_status(&role, &ctx).await;
    ctx.metrics.reconciled("accessrole", result.is_ok(), started.elapsed().as_secs_f64());
    result.map(|()| Action::await_change())
}

/// Logs and retries.
pub fn error_policy(_role: Arc<AccessRole>, error: &AccessRoleError, _ctx: Arc<Context>) -> Action {
    warn!(error = %crate::telemetry::chain(error), "AccessRole reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// The number of Databases in the role's namespace that its `allow` rules match.
pub fn matched_databases(role: &AccessRole, ctx: &Context) -> i32 {
    let ns = role.namespace().unwrap_or_default();
    let one = std::slice::from_ref(role);
    let count = ctx
        .databases
        .state()
        .iter()
        .filter(|db| db.namespace().as_deref() == Some(ns.as_str()))
        .filter(|db| !allow_rules_for(&DatabaseRef { namespace: &ns, name: &db.name_any(), labels: db.labels() }, one).is_empty())
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Checks what the schema cannot: a parseable TTL and an `allow` that can match something.
pub fn validity(role: &AccessRole) -> Observation {
    if let Err(e) = role.spec.max_session_ttl() {
        return Observation::failed("Valid", "BadMaxSessionTtl", format!("spec.maxSessionTtl: {e}; write a duration like 8h or 30m"));
    }
    match &role.spec.allow {
        None => Observation::ok("Valid", "DenyOnly", "no allow rules: this role only denies"),
        Some(a) if a.databases.is_empty() && a.database_selector.is_none() => Observation::failed(
            "Valid",
            "AllowsNoDatabase",
            "spec.allow names no databases: add `databases` (names or \"*\") or a `databaseSelector`, or the role grants nothing",
        ),
        Some(a) if a.db_users.is_empty() => Observation::failed(
            "Valid",
            "AllowsNoDbUser",
            "spec.allow.dbUsers is empty: list the database users (IAM roles for DynamoDB/DocumentDB) or \"*\", or the role grants nothing",
        ),
        Some(_) => Observation::ok("Valid", "SpecValid", "the role can grant access"),
    }
}

async fn write_status(role: &AccessRole, ctx: &Context) -> Result<(), AccessRoleError> {
    let live = role.status.clone().unwrap_or_default();
    let generation = role.metadata.generation;
    let condition = merge(&live.conditions, &validity(role), generation, &Time(Timestamp::now()));
    let matched = matched_databases(role, ctx);
    if live.observed_generation == generation && live.matched_databases == Some(matched) && find(&live.conditions, "Valid") == Some(&condition) {
        return Ok(());
    }
    let (ns, name) = (role.namespace().unwrap_or_default(), role.name_any());
    let patch = json!({
        "apiVersion": AccessRole::api_version(&()),
        "kind": AccessRole::kind(&()),
        "status": {"observedGeneration": generation, "conditions": [condition], "matchedDatabases": matched},
    });
    Api::<AccessRole>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| AccessRoleError::Write(format!("{ns}/{name}"), e))?;
    ctx.metrics.write("AccessRole/status", "apply");
    Ok(())
}
