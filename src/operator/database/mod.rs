//! The `Database` reconciler, in stages, each with its own span: fetch (the caches) → validate
//! (`crd`'s rules) → build every child (pure) → one apply loop → the AWS check → conditions
//! (pure) → one status write → Warning Events. Invalid specs get `Valid=False`, a Warning
//! Event and no children. Errors carry a [`Category`] that decides when to try again.

pub mod build;
pub mod certificate;
pub mod children;
pub mod fetch;
pub mod proxy_config;
mod status;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, instrument, warn};

use super::apply::{apply_if_changed, prune};
use super::aws_cache::RETRY_SOON;
use super::context::Context;
use super::retry::{self, Category};
use crate::aws::rds::AwsCheck;
use crate::crd::{Database, FieldError, validate_for_operator};
use crate::pki::PkiError;
use build::{BuildError, Child};
use fetch::Observed;
use status::Findings;

/// How often a Database is looked at even when nothing changes (certificate renewal, AWS).
const RESYNC: Duration = Duration::from_secs(30 * 60);

/// Why a reconcile failed; [`ReconcileError::category`] decides when it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused a write.
    #[error("cannot write {kind} {namespace}/{name}")]
    Write {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The server certificate could not be issued.
    #[error("cannot issue the proxy's server certificate")]
    Certificate(#[source] PkiError),
    /// The children could not be built.
    #[error("cannot build the proxy's objects")]
    Build(#[source] BuildError),
    /// The API server refused a read.
    #[error("cannot read {0}")]
    Read(String, #[source] kube::Error),
    /// The object has no namespace or uid (not from the API server).
    #[error("the Database has no namespace or uid")]
    Incomplete,
    /// AWS throttled the IAM authentication check (the status says CheckFailed meanwhile).
    #[error("AWS throttled the IAM authentication check; checking again after a pause")]
    AwsThrottled,
}

impl ReconcileError {
    /// How soon to try again.
    pub fn category(&self) -> Category {
        match self {
            ReconcileError::Write { source, .. } | ReconcileError::Read(_, source) => retry::category_of(source),
            ReconcileError::Certificate(_) => Category::Transient,
            ReconcileError::Build(_) | ReconcileError::Incomplete => Category::Permanent,
            ReconcileError::AwsThrottled => Category::Throttled,
        }
    }
}

/// `namespace/name`, as spans and logs name a Database.
pub fn key(db: &Database) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

fn failures_key(db: &Database) -> String {
    format!("database/{}", key(db))
}

/// Reconciles one Database.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    debug!(database = %key(&db), "reconcile: waiting for caches");
    ctx.wait_until_ready().await;
    debug!(database = %key(&db), "reconcile: start");
    let started = std::time::Instant::now();
    let result = stages(&db, &ctx).await;
    ctx.metrics.reconciled("database", result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.clear(&failures_key(&db));
    }
    result
}

/// Logs the failure and retries after a delay its category decides.
pub fn error_policy(db: Arc<Database>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let category = error.category();
    let failures = ctx.failures.record(&failures_key(&db));
    let delay = retry::requeue_after(category, failures, rand::random());
    warn!(
        database = %key(&db), category = category.as_str(), failures, retry_in = ?delay,
        error = %crate::telemetry::chain(error), "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

async fn stages(db: &Database, ctx: &Context) -> Result<Action, ReconcileError> {
    let (Some(_), Some(uid)) = (db.namespace(), db.uid()) else { return Err(ReconcileError::Incomplete) };
    if db.metadata.deletion_timestamp.is_some() {
        ctx.aws.forget(&uid);
        ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        return Ok(Action::await_change());
    }
    let observed = fetch::observe(db, &ctx.children);
    if let Err(invalid) = validate(db) {
        report(db, ctx, Findings::Invalid(&invalid)).await?;
        return Ok(Action::await_change());
    }
    let certificate =
        certificate::current_or_new(db, &ctx.ca, ctx.settings.server_cert_ttl, observed.secret.as_deref()).map_err(ReconcileError::Certificate)?;
    let children = build::build(db, &ctx.settings, &certificate, ctx.ca.cert_pem()).map_err(ReconcileError::Build)?;
    apply(db, ctx, &children, &observed).await?;
    let aws = check_aws(db, ctx).await;
    let upstream = check_upstream(db, ctx).await?;
    report(db, ctx, Findings::Valid { deployment: observed.deployment.as_deref(), aws: &aws, upstream: upstream.as_ref() }).await?;
    if aws.throttled {
        return Err(ReconcileError::AwsThrottled);
    }
    // A missing CA Secret is not watched: look again soon.
    let soon = aws.retry_soon || upstream.is_some();
    Ok(Action::requeue(if soon { RETRY_SOON.min(ctx.settings.aws_recheck) } else { RESYNC }))
}

/// Upstream: the admin's endpoint allow-list and the CA Secret (see [`upstream`]).
async fn check_upstream(db: &Database, ctx: &Context) -> Result<Option<upstream::Problem>, ReconcileError> {
    if let Some(problem) = upstream::endpoint_problem(db, &ctx.settings.allowed_endpoints) {
        return Ok(Some(problem));
    }
    let secret = db.spec.tls.ca_secret_ref.as_ref().map(|r| format!("Secret {}/{}", db.namespace().unwrap_or_default(), r.name)).unwrap_or_default();
    upstream::ca_problem(db, &ctx.client).await.map_err(|e| ReconcileError::Read(secret, e))
}

/// Validate: the spec as `crd` checks it for an operator-run proxy.
#[instrument(skip_all, fields(database = %key(db)))]
fn validate(db: &Database) -> Result<(), FieldError> {
    validate_for_operator(db).inspect_err(|invalid| debug!(field = invalid.field, "invalid spec"))
}

/// Apply: every built child in one loop (skipped when the live copy already matches), then
/// the operator's ServiceAccount removed when the spec now names its own.
#[instrument(skip_all, fields(database = %key(db)))]
async fn apply(db: &Database, ctx: &Context, children: &[Child], observed: &Observed) -> Result<(), ReconcileError> {
    let ns = db.namespace().unwrap_or_default();
    let (client, metrics) = (&ctx.client, &ctx.metrics);
    for child in children {
        let written = match child {
            Child::ServiceAccount(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.service_account.as_deref(), metrics).await,
            Child::RoleBinding(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.role_binding.as_deref(), metrics).await,
            Child::Secret(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.secret.as_deref(), metrics).await,
            Child::ConfigMap(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.config_map.as_deref(), metrics).await,
            Child::Deployment(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.deployment.as_deref(), metrics).await,
            Child::Service(o) => apply_if_changed(&Api::namespaced(client.clone(), &ns), o, observed.service.as_deref(), metrics).await,
        };
        written.map_err(|source| write_err(child.kind(), &ns, &child.name(), source))?;
    }
    let keep: Vec<String> = children.iter().filter(|c| matches!(c, Child::ServiceAccount(_))).map(Child::name).collect();
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    prune(&api, &ctx.children.service_accounts, &ns, &db.name_any(), &db.uid().unwrap_or_default(), &keep, metrics)
        .await
        .map_err(|source| write_err("ServiceAccount", &ns, &children::proxy_name(db), source))?;
    Ok(())
}

/// The AWS side (cached per generation; see [`super::aws_cache`]).
#[instrument(skip_all, fields(database = %key(db)))]
async fn check_aws(db: &Database, ctx: &Context) -> AwsCheck {
    ctx.aws.check(db).await
}

/// Conditions from the findings, one status write when they changed, then the Warning Events.
async fn report(db: &Database, ctx: &Context, findings: Findings<'_>) -> Result<(), ReconcileError> {
    let plan = status::conditions(db, findings, &Time(Timestamp::now()));
    if status::write(db, ctx, &plan).await? {
        status::events(db, ctx, &plan).await;
    }
    Ok(())
}

fn write_err(kind: &'static str, namespace: &str, name: &str, source: kube::Error) -> ReconcileError {
    ReconcileError::Write { kind, namespace: namespace.to_owned(), name: name.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_the_category_that_decides_its_retry() {
        let api = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        let write = |code| ReconcileError::Write { kind: "Deployment", namespace: "n".into(), name: "d".into(), source: api(code) };
        assert_eq!(write(500).category(), Category::Transient);
        assert_eq!(write(429).category(), Category::Throttled);
        assert_eq!(write(422).category(), Category::Permanent);
        assert_eq!(ReconcileError::AwsThrottled.category(), Category::Throttled);
        assert_eq!(ReconcileError::Incomplete.category(), Category::Permanent);
        assert_eq!(ReconcileError::Build(BuildError::NoOwner).category(), Category::Permanent);
    }
}
