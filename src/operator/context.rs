//! What every reconciler shares: the API client, the caches of owned objects, the CA, the
//! Event recorder, settings and metrics.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::aws_cache::AwsCheckCache;
use super::metrics::OperatorMetrics;
use crate::crd::{AccessRole, Database};
use crate::pki::Ca;

/// The field manager of every object and status field the operator writes.
pub const FIELD_MANAGER: &str = "portcullis-operator";
/// Label on every object the operator creates (the owned-object watches select on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "portcullis-operator");
/// Label naming the Database a child belongs to.
pub const DATABASE_LABEL: &str = "portcullis.io/database";

/// Settings of the operator, from its command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace the operator runs in (its CA Secret and Lease live there).
    pub namespace: String,
    /// The proxy container image.
    pub proxy_image: String,
    /// Hosts besides AWS database domains the proxies may send IAM tokens to.
    pub allowed_endpoints: Vec<String>,
    /// Lifetime of proxy server certificates; they are renewed when a third is left.
    pub server_cert_ttl: Duration,
    /// The longest client certificate the CSR signer issues, whatever roles say.
    pub max_client_cert_ttl: Duration,
    /// Client certificate lifetime when no AccessRole sets `maxSessionTtl`.
    pub default_client_cert_ttl: Duration,
    /// Whether AWS-side checks run (off: IamAuthEnabled is reported as not checked).
    pub aws_checks: bool,
    /// How often AWS-side state is re-checked.
    pub aws_recheck: Duration,
    /// The only namespace whose Databases and AccessRoles are reconciled (None: all).
    pub watch_namespace: Option<String>,
    /// Defaults for every proxy Deployment.
    pub proxy_defaults: super::proxy_defaults::ProxyDefaults,
}

/// The caches of objects the operator owns (filled by watches on the managed-by label).
#[derive(Clone)]
pub struct ChildStores {
    /// ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// Secrets.
    pub secrets: Store<Secret>,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// Services.
    pub services: Store<Service>,
    /// RoleBindings.
    pub role_bindings: Store<RoleBinding>,
}

impl ChildStores {
    /// Waits until every cache holds its first full list (so "absent" really means absent).
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.service_accounts.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
        );
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// The CA that signs proxy server certificates and client certificates.
    pub ca: Ca,
    /// Owned-object caches.
    pub children: ChildStores,
    /// All Databases (cache).
    pub databases: Store<Database>,
    /// All AccessRoles (cache).
    pub access_roles: Store<AccessRole>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: OperatorMetrics,
    /// AWS-side check results, so they are not repeated on every reconcile.
    pub aws: AwsCheckCache,
    /// Status this operator applied recently, by Database uid (fingerprint, when).
    pub recent_status: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
    /// Failed reconciles in a row per object, for the error policies' backoff.
    pub failures: super::retry::Failures,
    /// Becomes true once every cache holds its first full list.
    pub caches_ready: tokio::sync::watch::Sender<bool>,
}

impl Context {
    /// The Event reporter identity.
    pub fn reporter(instance: &str) -> Reporter {
        Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance.to_owned()) }
    }

    /// Waits for every cache, then marks them ready for [`Context::wait_until_ready`]. Called
    /// once, by one task: reconcilers that each awaited the stores themselves were seen never
    /// to wake after a start with existing objects, so they wait on this flag instead.
    pub async fn fill_caches(&self) {
        self.children.wait_until_ready().await;
        let _ = futures::join!(self.databases.wait_until_ready(), self.access_roles.wait_until_ready());
        self.caches_ready.send_replace(true);
    }

    /// Waits until every cache holds its first full list (so "absent" really means absent).
    pub async fn wait_until_ready(&self) {
        let mut ready = self.caches_ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// A cheaply clonable handle.
pub type Ctx = Arc<Context>;
