//! The `Database` reconciler: fetch (from the cache) → validate → build the children → apply
//! what differs → status. Invalid specs get `Valid=False`, a Warning Event and no children.

pub mod children;
mod status;
mod validate;

pub use validate::validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::apply::{apply_if_changed, cached, prune};
use super::context::Context;
use crate::crd::Database;
use crate::pki::PkiError;
use children::{CERT_NAMES_ANNOTATION, proxy_name, server_names, tls_secret_name};

/// How often a Database is looked at even when nothing changes (certificate renewal, AWS).
const RESYNC: Duration = Duration::from_secs(30 * 60);

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused a write.
    #[error("cannot write {kind} {namespace}/{name}")]
    Write { kind: &'static str, namespace: String, name: String, #[source] source: kube::Error },
    /// The server certificate could not be issued.
    #[error("cannot issue the proxy's server certificate")]
    Certificate(#[source] PkiError),
    /// The object has no namespace or uid (not from the API server).
    #[error("the Database has no namespace or uid")]
    Incomplete,
}

/// Reconciles one Database.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    debug!(database = %db.name_any(), "reconcile: waiting for caches");
    ctx.wait_until_ready().await;
    debug!(database = %db.name_any(), "reconcile: start");
    let started = std::time::Instant::now();
    let result = reconcile_inner(&db, &ctx).await;
    ctx.metrics.reconciled("database", result.is_ok(), started.elapsed().as_secs_f64());
    result
}

/// Logs the failure and retries.
pub fn error_policy(db: Arc<Database>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    warn!(database = %format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any()), error = %crate::telemetry::chain(error), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile_inner(db: &Database, ctx: &Context) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(uid)) = (db.namespace(), db.uid()) else { return Err(ReconcileError::Incomplete) };
    if db.metadata.deletion_timestamp.is_some() {
        ctx.aws.forget(&uid);
        ctx.recent_status.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    if let Err(invalid) = validate(db) {
        debug!(database = %db.name_any(), field = invalid.field, "invalid spec");
        status::write(db, ctx, status::Findings::invalid(&invalid)).await?;
        return Ok(Action::await_change());
    }
    let owner = children::owner(db).ok_or(ReconcileError::Incomplete)?;
    let metrics = &ctx.metrics;
    let name = proxy_name(db);

    // ServiceAccount (only when the spec names none) and the proxy's RoleBinding.
    let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let mut keep_sa = Vec::new();
    if let Some(sa) = children::service_account(db, &owner) {
        apply_if_changed(&sa_api, &sa, cached(&ctx.children.service_accounts, &ns, &name).as_deref(), metrics).await.map_err(|s| write_err("ServiceAccount", &ns, &name, s))?;
        keep_sa.push(name.clone());
    }
    prune(&sa_api, &ctx.children.service_accounts, &ns, &db.name_any(), &uid, &keep_sa, metrics).await.map_err(|s| write_err("ServiceAccount", &ns, &name, s))?;
    let rb_api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    let rb = children::role_binding(db, &owner);
    apply_if_changed(&rb_api, &rb, cached(&ctx.children.role_bindings, &ns, &name).as_deref(), metrics).await.map_err(|s| write_err("RoleBinding", &ns, &name, s))?;

    // Server certificate: kept while it names the right hosts, comes from our CA and has more
    // than a third of its lifetime left.
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret_name = tls_secret_name(db);
    let live_secret = cached(&ctx.children.secrets, &ns, &secret_name);
    let (cert_pem, key_pem) = match live_secret.as_deref().and_then(|s| reusable_certificate(s, db, ctx)) {
        Some(pair) => pair,
        None => {
            let issued = ctx.ca.issue_server(&server_names(db), ctx.settings.server_cert_ttl).map_err(ReconcileError::Certificate)?;
            (issued.cert_pem, issued.key_pem)
        }
    };
    let secret = children::tls_secret(db, &owner, &cert_pem, &key_pem, ctx.ca.cert_pem());
    apply_if_changed(&secret_api, &secret, live_secret.as_deref(), metrics).await.map_err(|s| write_err("Secret", &ns, &secret_name, s))?;

    // ConfigMap, Deployment (rolled by the config hash), Service.
    let config = children::proxy_config(db, &ctx.settings);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = children::config_map(db, &owner, &config);
    apply_if_changed(&cm_api, &cm, cached(&ctx.children.config_maps, &ns, &name).as_deref(), metrics).await.map_err(|s| write_err("ConfigMap", &ns, &name, s))?;
    let hash = children::config_hash(&config, db, &cert_pem);
    let dep_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dep = children::deployment(db, &owner, &ctx.settings, &hash);
    let live_dep = cached(&ctx.children.deployments, &ns, &name);
    apply_if_changed(&dep_api, &dep, live_dep.as_deref(), metrics).await.map_err(|s| write_err("Deployment", &ns, &name, s))?;
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = children::service(db, &owner);
    apply_if_changed(&svc_api, &svc, cached(&ctx.children.services, &ns, &name).as_deref(), metrics).await.map_err(|s| write_err("Service", &ns, &name, s))?;

    let aws = ctx.aws.check(db).await;
    let retry_soon = aws.retry_soon;
    status::write(db, ctx, status::Findings::valid(db, live_dep.as_deref(), aws)).await?;
    Ok(Action::requeue(if retry_soon { Duration::from_secs(30).min(ctx.settings.aws_recheck) } else { RESYNC }))
}

fn write_err(kind: &'static str, namespace: &str, name: &str, source: kube::Error) -> ReconcileError {
    ReconcileError::Write { kind, namespace: namespace.to_owned(), name: name.to_owned(), source }
}

/// The live certificate and key, when they can stay.
fn reusable_certificate(secret: &Secret, db: &Database, ctx: &Context) -> Option<(String, String)> {
    let names = server_names(db).join(",");
    if secret.annotations().get(CERT_NAMES_ANNOTATION) != Some(&names) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let (cert, key, ca) = (text("tls.crt")?, text("tls.key")?, text("ca.crt")?);
    if ca != ctx.ca.cert_pem() {
        return None;
    }
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).ok().map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = parsed.validity();
    let (from, to) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (to - now > (to - from) / 3).then_some((cert, key))
}
