//! The CSR signer for `signerName: portcullis.io/client`: approves and signs a request when
//! some AccessRole naming the requester (user and groups as the API server recorded them)
//! could allow the requested route, with the lifetime capped by the roles; denies otherwise,
//! with the reason in the request's condition.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, FIELD_MANAGER};
use crate::authz::{self, DatabaseRef, Decision, Identity, Route};
use crate::crd::{AccessRole, Database};
use crate::pki::{PkiError, parse_client_request};

/// The signer name handled here.
pub use crate::pki::CSR_SIGNER_NAME as SIGNER_NAME;

/// Why handling a request failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The API server refused the approval or the certificate.
    #[error("cannot update CertificateSigningRequest {0}")]
    Write(String, #[source] kube::Error),
    /// Signing failed.
    #[error("cannot sign CertificateSigningRequest {0}")]
    Sign(String, #[source] PkiError),
}

/// The signer's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sign, for this long, because of these roles.
    Approve { ttl: Duration, roles: Vec<String> },
    /// Refuse, with the reason shown in `kubectl describe csr`.
    Deny { reason: &'static str, message: String },
}

/// Handles one CertificateSigningRequest of our signer.
pub async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action, CsrError> {
    if csr.spec.signer_name != SIGNER_NAME || is_finished(&csr) {
        return Ok(Action::await_change());
    }
    ctx.wait_until_ready().await;
    let started = std::time::Instant::now();
    let result = handle(&csr, &ctx).await;
    ctx.metrics.reconciled("csr", result.is_ok(), started.elapsed().as_secs_f64());
    result.map(|()| Action::await_change())
}

/// Logs and retries.
pub fn error_policy(_csr: Arc<CertificateSigningRequest>, error: &CsrError, _ctx: Arc<Context>) -> Action {
    warn!(error = %crate::telemetry::chain(error), "CSR handling failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

fn is_finished(csr: &CertificateSigningRequest) -> bool {
    let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
    issued || conditions(csr).iter().any(|c| c.type_ == "Denied" || c.type_ == "Failed")
}

async fn handle(csr: &CertificateSigningRequest, ctx: &Context) -> Result<(), CsrError> {
    let name = csr.name_any();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    // The cache may trail our own last write; decide on the current object.
    let csr = &match api.get_opt(&name).await.map_err(|e| CsrError::Write(name.clone(), e))? {
        Some(current) if !is_finished(&current) => current,
        _ => return Ok(()),
    };
    let user = csr.spec.username.clone().unwrap_or_default();
    let groups: Vec<String> = csr.spec.groups.clone().unwrap_or_default().into_iter().filter(|g| !authz::IMPLICIT_GROUPS.contains(&g.as_str())).collect();
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let request = match parse_client_request(&pem) {
        Ok(r) => r,
        Err(e) => return deny(&api, csr, ctx, "BadRequest", &e.to_string()).await,
    };
    let identity = Identity { user: user.clone(), groups: groups.clone(), route: request.route.clone(), not_after: 0 };
    let requested = csr.spec.expiration_seconds.and_then(|s| u64::try_from(s).ok()).map(Duration::from_secs);
    let roles = ctx.access_roles.state();
    let databases = ctx.databases.state();
    let mut verdict = decide(&identity, requested, &roles, &databases, &ctx.settings);
    if matches!(verdict, Verdict::Deny { .. }) {
        // A denial is final, and the cache may not have seen an AccessRole or Database created
        // a moment ago (`kubectl apply` then `db connect`): decide again on what the API server
        // holds now.
        match current_state(ctx).await {
            Ok((roles, databases)) => verdict = decide(&identity, requested, &roles, &databases, &ctx.settings),
            Err(e) => warn!(csr = %name, error = %e, "cannot re-read AccessRoles and Databases before denying; deciding from the cache"),
        }
    }
    match verdict {
        Verdict::Deny { reason, message } => deny(&api, csr, ctx, reason, &message).await,
        Verdict::Approve { ttl, roles } => {
            let already_approved = conditions(csr).iter().any(|c| c.type_ == "Approved");
            if !already_approved {
                let message = format!("allowed by AccessRole(s) {}; certificate valid for {}", roles.join(", "), humantime::format_duration(ttl));
                add_condition(&api, csr, condition("Approved", "AccessRoleAllows", &message)).await.map_err(|e| CsrError::Write(name.clone(), e))?;
                ctx.metrics.write("CertificateSigningRequest/approval", "patch");
            }
            let cert = ctx.ca.sign_client_request(&request, &user, &groups, ttl).map_err(|e| CsrError::Sign(name.clone(), e))?;
            // The chain ends with our CA, so `portcullis login` can also verify the proxies.
            let chain = format!("{cert}{}", ctx.ca.cert_pem());
            let status = serde_json::json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(chain)}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.map_err(|e| CsrError::Write(name.clone(), e))?;
            ctx.metrics.write("CertificateSigningRequest/status", "patch");
            ctx.metrics.csrs.get_or_create(&super::metrics::CsrLabels { result: "signed".into() }).inc();
            info!(csr = %name, user = %user, ttl = %humantime::format_duration(ttl), route = ?request.route, "signed a client certificate");
            Ok(())
        }
    }
}

/// The AccessRoles and Databases the operator may read, straight from the API server.
async fn current_state(ctx: &Context) -> Result<(Vec<Arc<AccessRole>>, Vec<Arc<crate::crd::Database>>), kube::Error> {
    let scope = ctx.settings.watch_namespace.as_deref();
    let roles = super::scoped_api::<AccessRole>(&ctx.client, scope).list(&Default::default()).await?;
    let databases = super::scoped_api::<crate::crd::Database>(&ctx.client, scope).list(&Default::default()).await?;
    Ok((roles.items.into_iter().map(Arc::new).collect(), databases.items.into_iter().map(Arc::new).collect()))
}

async fn deny(api: &Api<CertificateSigningRequest>, csr: &CertificateSigningRequest, ctx: &Context, reason: &str, message: &str) -> Result<(), CsrError> {
    let name = csr.name_any();
    add_condition(api, csr, condition("Denied", reason, message)).await.map_err(|e| CsrError::Write(name.clone(), e))?;
    ctx.metrics.write("CertificateSigningRequest/approval", "patch");
    ctx.metrics.csrs.get_or_create(&super::metrics::CsrLabels { result: "denied".into() }).inc();
    info!(csr = %name, user = ?csr.spec.username, reason, message, "denied a client certificate");
    Ok(())
}

/// Adds an approval condition, guarded by the resourceVersion (a concurrent decision wins).
async fn add_condition(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    new: CertificateSigningRequestCondition,
) -> Result<CertificateSigningRequest, kube::Error> {
    let mut list = conditions(csr).to_vec();
    list.push(new);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": csr.metadata.resource_version},
        "status": {"conditions": list},
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch_approval(&csr.name_any(), &params, &Patch::Merge(&patch)).await
}

fn condition(type_: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.into(),
        status: crate::crd::conditions::status::TRUE.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Decides a request: which Databases it could reach, whether some role allows the route,
/// and the lifetime (the requested one, capped by the smallest `maxSessionTtl` of the
/// allowing roles and by the operator's maximum).
pub fn decide(
    identity: &Identity,
    requested: Option<Duration>,
    roles: &[Arc<AccessRole>],
    databases: &[Arc<Database>],
    settings: &super::context::Settings,
) -> Verdict {
    let roles: Vec<AccessRole> = roles.iter().map(|r| (**r).clone()).collect();
    let route = identity.route.clone().unwrap_or_default();
    let candidates: Vec<&Arc<Database>> = match route.database.as_deref() {
        Some(reference) => {
            let Some((ns, name)) = reference.split_once('/') else {
                return Verdict::Deny {
                    reason: "BadRoute",
                    message: format!("the requested database {reference:?} must be namespace/name (portcullis db login sets it)"),
                };
            };
            let found: Vec<_> = databases.iter().filter(|d| d.namespace().as_deref() == Some(ns) && d.name_any() == name).collect();
            if found.is_empty() {
                return Verdict::Deny { reason: "NoSuchDatabase", message: format!("there is no Database {ns}/{name}") };
            }
            found
        }
        None => databases.iter().collect(),
    };
    let mut allowing: Vec<&AccessRole> = Vec::new();
    let mut last_denial = None;
    for db in candidates {
        let (ns, name) = (db.namespace().unwrap_or_default(), db.name_any());
        let db_ref = DatabaseRef { namespace: &ns, name: &name, labels: db.labels() };
        match route.db_user.as_deref() {
            Some(db_user) => {
                let request = authz::Request { database: db_ref, db_user, db_name: route.db_name.as_deref() };
                match authz::authorize(identity, &request, &roles) {
                    Decision::Allow { roles: names, .. } => allowing.extend(roles.iter().filter(|r| names.contains(&authz::role_name(r)))),
                    Decision::Deny(reason) => last_denial = Some(reason.to_string()),
                }
            }
            None => {
                // No db user asked for: some role naming the caller must allow this database
                // for some user (and the requested db name, if any).
                for role in roles.iter().filter(|r| authz::subjects_match(r, identity)) {
                    let grants = authz::allow_rules_for(&db_ref, std::slice::from_ref(role))
                        .iter()
                        .any(|rule| !rule.db_users.is_empty() && route.db_name.as_deref().is_none_or(|n| rule.db_names.iter().any(|x| x == "*" || x == n)));
                    if grants {
                        allowing.push(role);
                    }
                }
            }
        }
    }
    allowing.sort_by_key(|r| authz::role_name(r));
    allowing.dedup_by_key(|r| authz::role_name(r));
    if allowing.is_empty() {
        let message =
            last_denial.unwrap_or_else(|| format!("no AccessRole grants user {:?} (groups {:?}) {}", identity.user, identity.groups, describe_route(&route)));
        return Verdict::Deny { reason: "NoAccessRole", message };
    }
    let mut ttl = requested.unwrap_or(settings.default_client_cert_ttl).min(settings.max_client_cert_ttl);
    for role in &allowing {
        if let Ok(Some(cap)) = role.spec.max_session_ttl() {
            ttl = ttl.min(cap);
        }
    }
    Verdict::Approve { ttl: ttl.max(Duration::from_secs(60)), roles: allowing.iter().map(|r| authz::role_name(r)).collect() }
}

fn describe_route(route: &Route) -> String {
    let mut parts = Vec::new();
    parts.push(match &route.database {
        Some(d) => format!("database {d:?}"),
        None => "any database".to_owned(),
    });
    if let Some(u) = &route.db_user {
        parts.push(format!("as db user {u:?}"));
    }
    if let Some(n) = &route.db_name {
        parts.push(format!("with db name {n:?}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests;
