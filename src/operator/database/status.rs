//! The operator's part of a Database's status (Ready, Valid, UpstreamConfigured, ProxyAvailable, IamAuthEnabled
//! and the endpoint fields): [`conditions`] computes it from what was observed (pure), [`write`]
//! applies it only when it differs, and [`events`] publishes a Warning Event whenever Valid, UpstreamConfigured or
//! IamAuthEnabled turns `False` (see [`warns`]). The proxy reports CredentialsResolved and
//! UpstreamReachable itself.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{instrument, warn};

use super::children::{external_endpoint, proxy_endpoint, proxy_name};
use super::{ReconcileError, key};
use crate::aws::rds::AwsCheck;
use crate::crd::conditions::{Observation, find, merge, status, types};
use crate::crd::v1alpha1::{AwsObserved, DatabaseStatus};
use crate::crd::{Database, FieldError, resolved_region};
use crate::operator::apply::apply_status;
use crate::operator::context::Context;

/// How long a status write is remembered (longer than any cache lag, shorter than a resync).
const RECENT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the reconciler found, before it becomes conditions.
#[derive(Debug, Clone, Copy)]
pub enum Findings<'a> {
    /// A spec that cannot be served (no children are made).
    Invalid(&'a FieldError),
    /// A valid spec with its children in place.
    Valid {
        /// The live proxy Deployment (its available replicas).
        deployment: Option<&'a Deployment>,
        /// The AWS side.
        aws: &'a AwsCheck,
        /// What would stop the proxy from logging in upstream (endpoint policy, CA Secret).
        upstream: Option<&'a super::upstream::Problem>,
    },
}

/// The status the operator wants, computed from findings and the live status.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The operator's status fields (the proxy's conditions and credential source are not in it).
    pub status: DatabaseStatus,
    /// Whether the live status already says exactly this (nothing to write).
    pub unchanged: bool,
    /// Conditions that deserve a Warning Event once the status is written: (reason, note).
    pub warnings: Vec<(String, String)>,
    /// Identifies this status among recent writes (the cache can lag behind our own write).
    fingerprint: String,
}

/// Computes the operator's conditions and status fields (pure: `now` is given).
#[instrument(skip_all, fields(database = %key(db)))]
pub fn conditions(db: &Database, findings: Findings<'_>, now: &Time) -> Plan {
    let live = db.status.clone().unwrap_or_default();
    let generation = db.metadata.generation;
    let (valid, others, endpoint, region, engine_version, aws_observed) = match findings {
        Findings::Invalid(error) => {
            (Observation::failed(types::VALID, "InvalidSpec", format!("{}: {}", error.field, error.message)), vec![], None, None, None, None)
        }
        Findings::Valid { deployment, aws, upstream } => (
            Observation::ok(types::VALID, "SpecValid", "the spec is complete; the proxy's objects are in place"),
            vec![upstream_configured(upstream), proxy_available(db, deployment), iam_auth(aws)],
            Some(proxy_endpoint(db)),
            resolved_region(&db.spec),
            aws.engine_version.clone(),
            aws_observed(aws),
        ),
    };
    let external = endpoint.as_ref().and(external_endpoint(db)).map(|(host, port)| crate::crd::endpoint::join_host_port(&host, port));
    let mut observations = vec![valid.clone()];
    observations.extend(others.iter().cloned());
    observations.push(ready(&valid, &others, &live.conditions));
    let conditions: Vec<Condition> = observations.iter().map(|o| merge(&live.conditions, o, generation, now)).collect();
    let unchanged = live.observed_generation == generation
        && conditions.iter().all(|c| find(&live.conditions, &c.type_) == Some(c))
        && live.proxy_endpoint == endpoint
        && live.external_endpoint == external
        && live.resolved_region == region
        && live.engine_version == engine_version
        && live.aws == aws_observed;
    let warnings =
        conditions.iter().filter(|c| warns(c, find(&live.conditions, &c.type_))).map(|c| (c.reason.clone(), format!("{}: {}", c.type_, c.message))).collect();
    let fingerprint = serde_json::json!([generation, observations, endpoint, external, region, engine_version, aws_observed]).to_string();
    let status = DatabaseStatus {
        observed_generation: generation,
        conditions,
        proxy_endpoint: endpoint,
        external_endpoint: external,
        credential_source: None,
        resolved_region: region,
        engine_version,
        aws: aws_observed,
    };
    Plan { status, unchanged, warnings, fingerprint }
}

/// `status.aws`: what the check found and whose credentials it used (nothing when AWS was not asked).
fn aws_observed(aws: &AwsCheck) -> Option<AwsObserved> {
    if aws.reason == "NotChecked" {
        return None;
    }
    Some(AwsObserved {
        resource_id: aws.resource_id.clone(),
        database: aws.database.as_ref().map(|d| d.to_string()),
        identity: Some(aws.identity.clone().unwrap_or_else(|| "operator".into())),
    })
}

fn proxy_available(db: &Database, deployment: Option<&Deployment>) -> Observation {
    let wanted = db.spec.proxy.replicas.unwrap_or(1);
    let available = deployment.and_then(|d| d.status.as_ref()).and_then(|s| s.available_replicas).unwrap_or(0);
    let ns = db.namespace().unwrap_or_default();
    if wanted == 0 {
        return Observation::failed(types::PROXY_AVAILABLE, "ScaledToZero", "spec.proxy.replicas is 0: no proxy pod runs, so clients cannot connect");
    }
    if available > 0 {
        return Observation::ok(types::PROXY_AVAILABLE, "PodsAvailable", format!("{available} of {wanted} proxy pods are available"));
    }
    Observation::failed(
        types::PROXY_AVAILABLE,
        "NoPodsAvailable",
        format!(
            "0 of {wanted} proxy pods are available; see `kubectl -n {ns} describe deployment {}` and `kubectl -n {ns} logs deployment/{}`",
            proxy_name(db),
            proxy_name(db)
        ),
    )
}

fn upstream_configured(problem: Option<&super::upstream::Problem>) -> Observation {
    match problem {
        Some(p) => Observation::failed(types::UPSTREAM_CONFIGURED, p.reason, p.message.clone()),
        None => Observation::ok(types::UPSTREAM_CONFIGURED, "Configured", "the endpoint is one proxies may log in to, and the upstream CA is in place"),
    }
}

fn iam_auth(aws: &AwsCheck) -> Observation {
    Observation { type_: types::IAM_AUTH_ENABLED, status: aws.status.as_str(), reason: aws.reason.to_owned(), message: aws.message.clone() }
}

/// `Ready` from every condition, the proxy's included: the first problem is the message.
fn ready(valid: &Observation, others: &[Observation], proxy_reported: &[Condition]) -> Observation {
    if valid.status != status::TRUE {
        return Observation::failed(types::READY, "InvalidSpec", valid.message.clone());
    }
    for o in others {
        if o.status == status::FALSE {
            return Observation::failed(types::READY, &o.reason, format!("{}: {}", o.type_, o.message));
        }
    }
    for type_ in [types::CREDENTIALS_RESOLVED, types::UPSTREAM_REACHABLE] {
        match find(proxy_reported, type_) {
            Some(c) if c.status == status::TRUE => {}
            Some(c) => return Observation::failed(types::READY, &c.reason, format!("{type_}: {}", c.message)),
            None => {
                return Observation::unknown(types::READY, "WaitingForProxy", format!("no proxy has reported {type_} yet"));
            }
        }
    }
    Observation::ok(types::READY, "Ready", "clients can connect through the proxy")
}

/// Applies the planned status unless the live one already says it (or this operator applied
/// exactly it a moment ago). Returns whether it wrote.
#[instrument(skip_all, fields(database = %key(db)))]
pub async fn write(db: &Database, ctx: &Context, plan: &Plan) -> Result<bool, ReconcileError> {
    if plan.unchanged {
        return Ok(false);
    }
    // The cache may not show our last status write yet (a reconcile triggered by our own child
    // writes can run first): skip when we applied exactly this a moment ago.
    let uid = db.uid().unwrap_or_default();
    let recent = |f: &String, at: &std::time::Instant| *f == plan.fingerprint && at.elapsed() < RECENT;
    if ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).get(&uid).is_some_and(|(f, at)| recent(f, at)) {
        return Ok(false);
    }
    let (ns, name) = (db.namespace().unwrap_or_default(), db.name_any());
    apply_status::<Database, _>(&ctx.client, &ns, &name, &plan.status, &ctx.metrics).await.map_err(|source| ReconcileError::Write {
        kind: "Database/status",
        namespace: ns.clone(),
        name: name.clone(),
        source,
    })?;
    ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, (plan.fingerprint.clone(), std::time::Instant::now()));
    Ok(true)
}

/// Whether condition `c` (before: `was`) deserves a Warning Event: it turned `False`, or stayed
/// `False` for a new reason. ProxyAvailable and Ready never do: pods not (yet) available is
/// the Deployment's story, told by its own controller and normal for every new Database, and
/// Ready repeats another condition, so both would only be noise.
fn warns(c: &Condition, was: Option<&Condition>) -> bool {
    let eventful = c.type_ != types::READY && c.type_ != types::PROXY_AVAILABLE;
    eventful && c.status == status::FALSE && was.is_none_or(|w| w.status != status::FALSE || w.reason != c.reason)
}

/// Publishes the plan's Warning Events (after its status was written).
#[instrument(skip_all, fields(database = %key(db)))]
pub async fn events(db: &Database, ctx: &Context, plan: &Plan) {
    for (reason, note) in &plan.warnings {
        let event = Event { type_: EventType::Warning, reason: reason.clone(), note: Some(note.clone()), action: "Reconcile".into(), secondary: None };
        match ctx.recorder.publish(&event, &db.object_ref(&())).await {
            Ok(()) => ctx.metrics.write("Event", "event"),
            Err(e) => warn!(error = %e, "cannot publish a Warning Event"),
        }
    }
}

#[cfg(test)]
mod tests;
