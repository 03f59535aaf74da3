//! The `DatabaseDiscovery` reconciler: every `interval`, each matcher lists its regions under its
//! own assume-role chain, and the discovery's owned Databases follow what AWS holds. A failing
//! region (or identity) is reported in status and leaves its Databases as they are.

pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::apply::apply_status;
use super::context::Context;
use super::retry::{self, Category};
use crate::aws::inventory::{self, ListError, Query};
use crate::crd::conditions::{Observation, merge};
use crate::crd::v1alpha1::{AwsMatcher, DatabaseDiscoveryStatus, MatcherStatus, Skipped};
use crate::crd::{Database, DatabaseDiscovery};
use plan::{Found, Wanted};

/// The field manager of the Databases a discovery writes.
pub const FIELD_MANAGER: &str = "portcullis-discovery";
/// The default `spec.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest interval honoured.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The condition types of a DatabaseDiscovery.
pub mod types {
    /// Every matcher listed every region in the last sync.
    pub const SYNCED: &str = "Synced";
    /// The owned Databases match what AWS holds.
    pub const READY: &str = "Ready";
}

/// Why a discovery reconcile failed (AWS failures are status, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The Databases of the namespace could not be listed.
    #[error("cannot list the Databases of namespace {0}")]
    List(String, #[source] kube::Error),
    /// A Database could not be written or deleted.
    #[error("cannot {verb} Database {namespace}/{name}")]
    Write { verb: &'static str, namespace: String, name: String, source: kube::Error },
    /// The status write was refused.
    #[error("cannot write the status of DatabaseDiscovery {0}")]
    Status(String, #[source] kube::Error),
}

impl DiscoveryError {
    /// How soon to try again.
    pub fn category(&self) -> Category {
        match self {
            DiscoveryError::List(_, source) | DiscoveryError::Status(_, source) | DiscoveryError::Write { source, .. } => retry::category_of(source),
        }
    }
}

fn key(d: &DatabaseDiscovery) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

/// `spec.interval`, at least [`MIN_INTERVAL`].
pub fn interval(d: &DatabaseDiscovery) -> Duration {
    d.spec.interval.as_deref().and_then(|i| humantime::parse_duration(i).ok()).unwrap_or(DEFAULT_INTERVAL).max(MIN_INTERVAL)
}

/// Syncs one discovery, then comes back after its interval.
pub async fn reconcile(d: Arc<DatabaseDiscovery>, ctx: Arc<Context>) -> Result<Action, DiscoveryError> {
    ctx.wait_until_ready().await;
    let started = std::time::Instant::now();
    let result = sync(&d, &ctx).await;
    ctx.metrics.reconciled("databasediscovery", result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.clear(&format!("discovery/{}", key(&d)));
    }
    result.map(|()| Action::requeue(interval(&d)))
}

/// Logs the failure and retries after a delay its category decides.
pub fn error_policy(d: Arc<DatabaseDiscovery>, error: &DiscoveryError, ctx: Arc<Context>) -> Action {
    let key = key(&d);
    let category = error.category();
    let failures = ctx.failures.record(&format!("discovery/{key}"));
    let delay = retry::requeue_after(category, failures, rand::random());
    warn!(discovery = %key, category = category.as_str(), failures, retry_in = ?delay, error = %crate::telemetry::chain(error), "DatabaseDiscovery sync failed; retrying");
    Action::requeue(delay)
}

/// What one matcher's listing gave.
struct MatcherResult<'a> {
    matcher: &'a AwsMatcher,
    name: String,
    identity: String,
    matched: Vec<inventory::Endpoint>,
    errors: Vec<String>,
    failed_regions: BTreeSet<String>,
}

#[instrument(skip_all, fields(discovery = %key(d)))]
async fn sync(d: &DatabaseDiscovery, ctx: &Context) -> Result<(), DiscoveryError> {
    let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
    let names = plan::discovery_matchers(d);
    let mut results = Vec::new();
    for (matcher, mname) in d.spec.aws.iter().zip(names) {
        results.push(list_matcher(d, matcher, mname, ctx).await);
    }
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = api.list(&ListParams::default()).await.map_err(|e| DiscoveryError::List(ns.clone(), e))?.items;
    let found: Vec<Found<'_>> = results
        .iter()
        .map(|r| Found {
            matcher: &r.name,
            assume_role_arn: r.matcher.aws.as_ref().and_then(|a| a.assume_role_arn.as_deref()),
            external_id: r.matcher.aws.as_ref().and_then(|a| a.external_id.as_deref()),
            endpoints: r.matched.iter().filter(|e| e.skip.is_none()).cloned().collect(),
            failed_regions: r.failed_regions.clone(),
        })
        .collect();
    let uid = d.uid().unwrap_or_default();
    let changes = plan::changes(d, &found, &existing, &uid);
    let mut counts: BTreeMap<String, (i32, i32, i32)> = BTreeMap::new();
    for w in &changes.create {
        write(&api, d, w, "create").await?;
        ctx.metrics.write("Database", "apply");
        counts.entry(w.matcher.clone()).or_default().0 += 1;
    }
    for w in &changes.update {
        write(&api, d, w, "update").await?;
        ctx.metrics.write("Database", "apply");
        counts.entry(w.matcher.clone()).or_default().1 += 1;
    }
    for gone in &changes.delete {
        match api.delete(gone, &DeleteParams::background()).await {
            Ok(_) => ctx.metrics.write("Database", "delete"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(DiscoveryError::Write { verb: "delete", namespace: ns.clone(), name: gone.clone(), source }),
        }
        let matcher = existing.iter().find(|x| &x.name_any() == gone).and_then(|x| x.labels().get(plan::MATCHER_LABEL).cloned()).unwrap_or_default();
        counts.entry(matcher).or_default().2 += 1;
    }
    if !(changes.create.is_empty() && changes.update.is_empty() && changes.delete.is_empty()) {
        info!(created = changes.create.len(), updated = changes.update.len(), deleted = changes.delete.len(), "discovery sync changed Databases");
    }
    let owned = changes.create.len() + changes.update.len() + changes.unchanged;
    let status = status(d, &results, &counts, owned);
    apply_status::<DatabaseDiscovery, _>(&ctx.client, &ns, &name, &status, &ctx.metrics).await.map_err(|e| DiscoveryError::Status(format!("{ns}/{name}"), e))
}

/// Lists every region of one matcher under its identity, keeping the endpoints its tags match.
async fn list_matcher<'a>(d: &DatabaseDiscovery, matcher: &'a AwsMatcher, name: String, ctx: &Context) -> MatcherResult<'a> {
    let role = matcher.aws.as_ref().and_then(|a| a.assume_role_arn.as_deref());
    let external_id = matcher.aws.as_ref().and_then(|a| a.external_id.as_deref());
    let identity = role.map(str::to_owned).unwrap_or_else(|| "operator".into());
    let mut out = MatcherResult { matcher, name, identity, matched: Vec::new(), errors: Vec::new(), failed_regions: BTreeSet::new() };
    let Some(aws) = ctx.aws.context() else {
        out.errors.push("the operator runs with --aws-checks=false, so it makes no AWS calls and discovers nothing".into());
        out.failed_regions = matcher.regions.iter().cloned().collect();
        return out;
    };
    let mut types = matcher.types.clone();
    types.sort();
    types.dedup();
    for region in &matcher.regions {
        let sdk = aws.sdk_config_with(aws.credentials_for(role, external_id, region));
        let query = Query { region, types: &types, reader_endpoints: d.spec.reader_endpoints, custom_endpoints: d.spec.custom_endpoints };
        match inventory::list(&sdk, &query).await {
            Ok(listing) => {
                ctx.metrics.aws_calls("discovery", u64::from(listing.calls));
                out.matched.extend(listing.endpoints.into_iter().filter(|e| plan::tags_match(&matcher.tags, &e.tags)));
            }
            Err(e) => {
                ctx.metrics.aws_calls("discovery", 1);
                warn!(discovery = %key(d), matcher = %out.name, region = %region, error = %e, "discovery listing failed; this region's Databases are kept");
                out.errors.push(list_error_message(&e, role));
                out.failed_regions.insert(region.clone());
            }
        }
    }
    out
}

/// What went wrong and what to do, naming the action and the identity.
fn list_error_message(e: &ListError, role: Option<&str>) -> String {
    let who = match role {
        Some(role) => format!("role {role} (the matcher's aws.assumeRoleArn)"),
        None => "the operator's own identity".to_owned(),
    };
    if e.access_denied {
        format!(
            "{} in {} was denied to {who} ({}). Allow {} in its IAM policy; discovery needs rds:DescribeDBInstances, rds:DescribeDBClusters, \
             rds:DescribeDBProxies and rds:ListTagsForResource (`portcullis iam policy --manifests` given this DatabaseDiscovery prints the document)",
            e.action, e.region, e.detail, e.action
        )
    } else if e.throttled {
        format!("{} in {} was throttled by AWS ({}); the next sync tries again", e.action, e.region, e.detail)
    } else {
        format!("{} in {} as {who} failed: {}", e.action, e.region, e.detail)
    }
}

/// Creates or updates one Database (server-side apply under the discovery's field manager,
/// owned by the discovery).
async fn write(api: &Api<Database>, d: &DatabaseDiscovery, w: &Wanted, verb: &'static str) -> Result<(), DiscoveryError> {
    let mut db = w.database.clone();
    db.metadata.owner_references = Some(vec![owner(d)]);
    let mut value = serde_json::to_value(&db).map_err(|e| DiscoveryError::Write {
        verb,
        namespace: db.namespace().unwrap_or_default(),
        name: db.name_any(),
        source: kube::Error::SerdeError(e),
    })?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), Database::api_version(&()).into());
        obj.insert("kind".into(), Database::kind(&()).into());
        obj.remove("status");
    }
    api.patch(&db.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value)).await.map(drop).map_err(|source| DiscoveryError::Write {
        verb,
        namespace: db.namespace().unwrap_or_default(),
        name: db.name_any(),
        source,
    })
}

fn owner(d: &DatabaseDiscovery) -> OwnerReference {
    OwnerReference {
        api_version: DatabaseDiscovery::api_version(&()).into(),
        kind: DatabaseDiscovery::kind(&()).into(),
        name: d.name_any(),
        uid: d.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// The status after a sync.
fn status(d: &DatabaseDiscovery, results: &[MatcherResult<'_>], counts: &BTreeMap<String, (i32, i32, i32)>, owned: usize) -> DatabaseDiscoveryStatus {
    let now = Time(Timestamp::now());
    let live = d.status.clone().unwrap_or_default();
    let matchers: Vec<MatcherStatus> = results
        .iter()
        .map(|r| {
            let (created, updated, deleted) = counts.get(&r.name).copied().unwrap_or_default();
            let previous = live.matchers.iter().find(|m| m.name == r.name);
            MatcherStatus {
                name: r.name.clone(),
                identity: r.identity.clone(),
                found: i32::try_from(r.matched.len()).unwrap_or(i32::MAX),
                created,
                updated,
                deleted,
                skipped: r
                    .matched
                    .iter()
                    .filter_map(|e| Some(Skipped { name: format!("{}/{}", e.region, e.id), reason: e.skip.clone()? }))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                errors: r.errors.clone(),
                last_success_time: if r.errors.is_empty() { Some(now.clone()) } else { previous.and_then(|p| p.last_success_time.clone()) },
            }
        })
        .collect();
    let errors: Vec<String> = results.iter().flat_map(|r| r.errors.iter().map(move |e| format!("matcher {}: {e}", r.name))).collect();
    let synced = if errors.is_empty() {
        Observation::ok(types::SYNCED, "Synced", format!("every matcher listed every region; {owned} Databases"))
    } else {
        let failed = results.iter().filter(|r| !r.errors.is_empty()).count();
        Observation::failed(
            types::SYNCED,
            "ListFailed",
            format!("{failed} of {} matchers could not list AWS; their Databases are kept as they were. {}", results.len(), errors.join(" | ")),
        )
    };
    let ready = if errors.is_empty() {
        Observation::ok(types::READY, "Ready", format!("{owned} Databases follow what AWS holds"))
    } else {
        Observation::failed(types::READY, "NotSynced", "see the Synced condition")
    };
    let generation = d.metadata.generation;
    DatabaseDiscoveryStatus {
        observed_generation: generation,
        conditions: vec![merge(&live.conditions, &synced, generation, &now), merge(&live.conditions, &ready, generation, &now)],
        databases: Some(i32::try_from(owned).unwrap_or(i32::MAX)),
        last_sync_time: if errors.is_empty() { Some(now.clone()) } else { live.last_sync_time.clone() },
        matchers,
    }
}
