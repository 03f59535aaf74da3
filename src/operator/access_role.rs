//! The `AccessRole` reconciler: how many Databases its `allow` matches, and a `Valid`
//! condition that explains specs that can never grant anything.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{instrument, warn};

use super::apply::apply_status;
use super::context::Context;
use super::retry::{self, Category};
use crate::authz::{DatabaseRef, allow_rules_for};
use crate::crd::conditions::{Observation, access_role_types, find, merge};
use crate::crd::v1alpha1::AccessRoleStatus;
use crate::crd::{AccessRole, Database};

/// Why an AccessRole reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessRoleError {
    /// The status write was refused.
    #[error("cannot write the status of AccessRole {0}")]
    Write(String, #[source] kube::Error),
    /// The Databases of its namespace could not be listed.
    #[error("cannot list the Databases of namespace {0}")]
    List(String, #[source] kube::Error),
}

impl AccessRoleError {
    /// How soon to try again.
    pub fn category(&self) -> Category {
        match self {
            AccessRoleError::Write(_, source) | AccessRoleError::List(_, source) => retry::category_of(source),
        }
    }
}

/// `namespace/name`.
fn key(role: &AccessRole) -> String {
    format!("{}/{}", role.namespace().unwrap_or_default(), role.name_any())
}

/// Reconciles one AccessRole's status.
pub async fn reconcile(role: Arc<AccessRole>, ctx: Arc<Context>) -> Result<Action, AccessRoleError> {
    ctx.wait_until_ready().await;
    let started = std::time::Instant::now();
    let result = write_status(&role, &ctx).await;
    ctx.metrics.reconciled("accessrole", result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.clear(&format!("accessrole/{}", key(&role)));
    }
    result.map(|()| Action::await_change())
}

/// Logs the failure and retries after a delay its category decides.
pub fn error_policy(role: Arc<AccessRole>, error: &AccessRoleError, ctx: Arc<Context>) -> Action {
    let key = key(&role);
    let category = error.category();
    let failures = ctx.failures.record(&format!("accessrole/{key}"));
    let delay = retry::requeue_after(category, failures, rand::random());
    warn!(access_role = %key, category = category.as_str(), failures, retry_in = ?delay, error = %crate::telemetry::chain(error), "AccessRole reconcile failed; retrying");
    Action::requeue(delay)
}

/// The number of `databases` (those of the role's namespace count) that its `allow` rules
/// match.
pub fn matched_databases(role: &AccessRole, databases: &[Database]) -> i32 {
    let ns = role.namespace().unwrap_or_default();
    let one = std::slice::from_ref(role);
    let count = databases
        .iter()
        .filter(|db| db.namespace().as_deref() == Some(ns.as_str()))
        .filter(|db| !allow_rules_for(&DatabaseRef { namespace: &ns, name: &db.name_any(), labels: db.labels() }, one).is_empty())
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Checks what the schema cannot: a parseable TTL and an `allow` that can match something.
pub fn validity(role: &AccessRole) -> Observation {
    use access_role_types::VALID;
    if let Err(e) = role.spec.max_session_ttl() {
        return Observation::failed(VALID, "BadMaxSessionTtl", format!("spec.maxSessionTtl: {e}; write a duration like 8h or 30m"));
    }
    match &role.spec.allow {
        None => Observation::ok(VALID, "DenyOnly", "no allow rules: this role only denies"),
        Some(a) if a.databases.is_empty() && a.database_selector.is_none() => Observation::failed(
            VALID,
            "AllowsNoDatabase",
            "spec.allow names no databases: add `databases` (names or \"*\") or a `databaseSelector`, or the role grants nothing",
        ),
        Some(a) if a.db_users.is_empty() => Observation::failed(
            VALID,
            "AllowsNoDbUser",
            "spec.allow.dbUsers is empty: list the database users (IAM roles for DynamoDB/DocumentDB) or \"*\", or the role grants nothing",
        ),
        Some(_) => Observation::ok(VALID, "SpecValid", "the role can grant access"),
    }
}

#[instrument(skip_all, fields(access_role = %key(role)))]
async fn write_status(role: &AccessRole, ctx: &Context) -> Result<(), AccessRoleError> {
    let live = role.status.clone().unwrap_or_default();
    let generation = role.metadata.generation;
    let condition = merge(&live.conditions, &validity(role), generation, &Time(Timestamp::now()));
    let (ns, name) = (role.namespace().unwrap_or_default(), role.name_any());
    // Counted from the API server, not the Database cache: this reconcile is triggered by a
    // Database watch of its own, which can be ahead of the cache (a deletion the cache has not
    // seen yet would otherwise be counted for good).
    let databases = Api::<Database>::namespaced(ctx.client.clone(), &ns).list(&Default::default()).await.map_err(|e| AccessRoleError::List(ns.clone(), e))?;
    let matched = matched_databases(role, &databases.items);
    if live.observed_generation == generation && live.matched_databases == Some(matched) && find(&live.conditions, access_role_types::VALID) == Some(&condition)
    {
        return Ok(());
    }
    let status = AccessRoleStatus { observed_generation: generation, conditions: vec![condition], matched_databases: Some(matched) };
    apply_status::<AccessRole, _>(&ctx.client, &ns, &name, &status, &ctx.metrics).await.map_err(|e| AccessRoleError::Write(format!("{ns}/{name}"), e))
}
