//! Fetch: what exists now for one `Database`, read from the operator's caches (no API calls).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use tracing::instrument;

use super::children::{proxy_name, tls_secret_name};
use super::key;
use crate::crd::Database;
use crate::operator::apply::cached;
use crate::operator::context::ChildStores;

/// The live children of a Database, as the caches hold them.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// The proxy's ServiceAccount (absent when the spec names its own).
    pub service_account: Option<Arc<ServiceAccount>>,
    /// The proxy's RoleBinding.
    pub role_binding: Option<Arc<RoleBinding>>,
    /// The server certificate Secret.
    pub secret: Option<Arc<Secret>>,
    /// The proxy's ConfigMap.
    pub config_map: Option<Arc<ConfigMap>>,
    /// The proxy's Deployment (its status says how many pods are available).
    pub deployment: Option<Arc<Deployment>>,
    /// The proxy's Service.
    pub service: Option<Arc<Service>>,
}

/// Reads the Database's children from the caches.
#[instrument(skip_all, fields(database = %key(db)))]
pub fn observe(db: &Database, stores: &ChildStores) -> Observed {
    let ns = db.namespace().unwrap_or_default();
    let name = proxy_name(db);
    Observed {
        service_account: cached(&stores.service_accounts, &ns, &name),
        role_binding: cached(&stores.role_bindings, &ns, &name),
        secret: cached(&stores.secrets, &ns, &tls_secret_name(db)),
        config_map: cached(&stores.config_maps, &ns, &name),
        deployment: cached(&stores.deployments, &ns, &name),
        service: cached(&stores.services, &ns, &name),
    }
}
