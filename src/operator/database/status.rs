//! The operator's part of a Database's status (Ready, Valid, ProxyAvailable, IamAuthEnabled
//! and the endpoint fields), applied only when it differs, with a Warning Event whenever Valid
//! or IamAuthEnabled turns `False` (see [`warns`]). The proxy reports CredentialsResolved and
//! UpstreamReachable itself.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::ReconcileError;
use super::children::{proxy_endpoint, proxy_name, resolved_region};
use crate::crd::Database;
use crate::crd::conditions::{Observation, find, merge, types};
use crate::operator::aws_checks::{AwsCheck, CheckStatus};
use crate::operator::context::{Context, FIELD_MANAGER};
use crate::proxy::FieldError;

/// How long a status write is remembered (longer than any cache lag, shorter than a resync).
const RECENT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the reconciler found, before it becomes conditions.
pub struct Findings {
    valid: Observation,
    others: Vec<Observation>,
    endpoint: Option<String>,
    region: Option<String>,
    engine_version: Option<String>,
}

impl Findings {
    /// A spec that cannot be served.
    pub fn invalid(error: &FieldError) -> Self {
        Findings {
            valid: Observation::failed(types::VALID, "InvalidSpec", format!("{}: {}", error.field, error.message)),
            others: vec![],
            endpoint: None,
            region: None,
            engine_version: None,
        }
    }

    /// A valid spec with its children in place.
    pub fn valid(db: &Database, deployment: Option<&Deployment>, aws: AwsCheck) -> Self {
        Findings {
            valid: Observation::ok(types::VALID, "SpecValid", "the spec is complete; the proxy's objects are in place"),
            others: vec![proxy_available(db, deployment), iam_auth(&aws)],
            endpoint: Some(proxy_endpoint(db)),
            region: resolved_region(db),
            engine_version: aws.engine_version,
        }
    }
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

fn iam_auth(aws: &AwsCheck) -> Observation {
    let status = match aws.status {
        CheckStatus::True => "True",
        CheckStatus::False => "False",
        CheckStatus::Unknown => "Unknown",
    };
    Observation { type_: types::IAM_AUTH_ENABLED, status, reason: aws.reason.to_owned(), message: aws.message.clone() }
}

/// `Ready` from every condition, the proxy's included: the first problem is the message.
fn ready(valid: &Observation, others: &[Observation], proxy_reported: &[Condition]) -> Observation {
    if valid.status != "True" {
        return Observation::failed(types::READY, "InvalidSpec", valid.message.clone());
    }
    for o in others {
        if o.status == "False" {
            return Observation::failed(types::READY, &o.reason, format!("{}: {}", o.type_, o.message));
        }
    }
    for type_ in [types::CREDENTIALS_RESOLVED, types::UPSTREAM_REACHABLE] {
        match find(proxy_reported, type_) {
            Some(c) if c.status == "True" => {}
            Some(c) => return Observation::failed(types::READY, &c.reason, format!("{type_}: {}", c.message)),
            None => {
                return Observation::unknown(types::READY, "WaitingForProxy", format!("no proxy has reported {type_} yet"));
            }
        }
    }
    Observation::ok(types::READY, "Ready", "clients can connect through the proxy")
}

/// Applies the operator's status fields when they differ from the live ones, and publishes a
/// Warning Event for each condition that newly turned `False`.
pub async fn write(db: &Database, ctx: &Context, findings: Findings) -> Result<(), ReconcileError> {
    let live = db.status.clone().unwrap_or_default();
    let generation = db.metadata.generation;
    let now = Time(Timestamp::now());
    let mut observations = vec![findings.valid.clone()];
    observations.extend(findings.others.iter().cloned());
    observations.push(ready(&findings.valid, &findings.others, &live.conditions));
    let conditions: Vec<Condition> = observations.iter().map(|o| merge(&live.conditions, o, generation, &now)).collect();
    let unchanged = live.observed_generation == generation
        && conditions.iter().all(|c| find(&live.conditions, &c.type_) == Some(c))
        && live.proxy_endpoint == findings.endpoint
        && live.resolved_region == findings.region
        && live.engine_version == findings.engine_version;
    if unchanged {
        return Ok(());
    }
    // The cache may not show our last status write yet (a reconcile triggered by our own child
    // writes can run first): skip when we applied exactly this a moment ago.
    let fingerprint = serde_json::json!([generation, observations, findings.endpoint, findings.region, findings.engine_version]).to_string();
    let uid = db.uid().unwrap_or_default();
    if ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).get(&uid).is_some_and(|(f, at)| *f == fingerprint && at.elapsed() < RECENT) {
        return Ok(());
    }
    let (ns, name) = (db.namespace().unwrap_or_default(), db.name_any());
    let patch = json!({
        "apiVersion": Database::api_version(&()),
        "kind": Database::kind(&()),
        "status": {
            "observedGeneration": generation,
            "conditions": conditions,
            "proxyEndpoint": findings.endpoint,
            "resolvedRegion": findings.region,
            "engineVersion": findings.engine_version,
        }
    });
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| ReconcileError::Write { kind: "Database/status", namespace: ns.clone(), name: name.clone(), source })?;
    ctx.metrics.write("Database/status", "apply");
    ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, (fingerprint, std::time::Instant::now()));
    for c in &conditions {
        if warns(c, find(&live.conditions, &c.type_)) {
            warning(db, ctx, &c.reason, &format!("{}: {}", c.type_, c.message)).await;
        }
    }
    Ok(())
}

/// Whether condition `c` (before: `was`) deserves a Warning Event: it turned `False`, or stayed
/// `False` for a new reason. ProxyAvailable and Ready never do: pods not (yet) available is
/// the Deployment's story, told by its own controller and normal for every new Database, and
/// Ready repeats another condition, so both would only be noise.
fn warns(c: &Condition, was: Option<&Condition>) -> bool {
    let eventful = c.type_ != types::READY && c.type_ != types::PROXY_AVAILABLE;
    eventful && c.status == "False" && was.is_none_or(|w| w.status != "False" || w.reason != c.reason)
}

async fn warning(db: &Database, ctx: &Context, reason: &str, note: &str) {
    let event = Event { type_: EventType::Warning, reason: reason.to_owned(), note: Some(note.to_owned()), action: "Reconcile".into(), secondary: None };
    match ctx.recorder.publish(&event, &db.object_ref(&())).await {
        Ok(()) => ctx.metrics.write("Event", "event"),
        Err(e) => warn!(error = %e, "cannot publish a Warning Event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn warning_events_for_valid_and_iam_auth_turning_false_only() {
        for type_ in [types::VALID, types::IAM_AUTH_ENABLED] {
            let bad = condition(type_, "False", "Off");
            assert!(warns(&bad, None), "{type_} False from the start");
            assert!(warns(&bad, Some(&condition(type_, "True", "On"))), "{type_} True -> False");
            assert!(warns(&bad, Some(&condition(type_, "Unknown", "NotChecked"))), "{type_} Unknown -> False");
            assert!(warns(&bad, Some(&condition(type_, "False", "Other"))), "{type_} False for a new reason");
            assert!(!warns(&bad, Some(&bad)), "{type_} still False for the same reason");
            assert!(!warns(&condition(type_, "True", "On"), Some(&bad)), "{type_} recovered");
            assert!(!warns(&condition(type_, "Unknown", "NotChecked"), None), "{type_} Unknown");
        }
        for type_ in [types::PROXY_AVAILABLE, types::READY] {
            let bad = condition(type_, "False", "NoPodsAvailable");
            assert!(!warns(&bad, None), "{type_} False on a new Database is no Warning");
            assert!(!warns(&bad, Some(&condition(type_, "True", "PodsAvailable"))), "{type_} True -> False is no Warning");
        }
    }
}
