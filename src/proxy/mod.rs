//! The data plane: listeners, client TLS and identity, authorization, one engine per protocol,
//! upstream IAM login, audit and metrics.

pub mod admin;
pub mod audit;
pub mod cancel;
mod cluster;
pub mod config;
pub mod dynamodb;
pub mod mongodb;
pub mod engine;
mod listener;
pub mod mysql;
pub mod postgres;
pub mod ratelimit;
pub mod relay;
pub mod session;
pub mod tls;
pub mod upstream;

pub use cluster::{ClusterError, PROXY_FIELD_MANAGER, run_cluster};
pub use listener::{ProxyError, run_standalone, wait_for_termination};
pub use upstream::Upstream;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::authz::{self, Decision, Identity};
use crate::aws::{AwsContext, EndpointPolicy};
use crate::crd::AccessRole;
use crate::metrics::ProxyMetrics;
use config::LimitsConfig;
use audit::AuditSink;
use cancel::CancelRegistry;
use tls::ServerTls;

/// Shared state of a running proxy.
pub struct ProxyState {
    /// Databases by `namespace/name`.
    pub databases: HashMap<String, Arc<Upstream>>,
    /// The AccessRoles in force; sessions re-check when they change.
    pub roles: watch::Receiver<Arc<Vec<AccessRole>>>,
    /// AWS credentials and signing.
    pub aws: AwsContext,
    /// Where tokens may go.
    pub endpoints: EndpointPolicy,
    /// Client-facing TLS.
    pub server_tls: ServerTls,
    /// The audit queue.
    pub audit: AuditSink,
    /// Metrics.
    pub metrics: ProxyMetrics,
    /// Cancel keys of live sessions.
    pub cancels: CancelRegistry,
    /// Timeouts and rates.
    pub limits: LimitsConfig,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

impl ProxyState {
    /// Finds a database by `name` (namespace `default`) or `namespace/name`.
    pub fn database(&self, reference: &str) -> Option<Arc<Upstream>> {
        let key = if reference.contains('/') { reference.to_owned() } else { format!("default/{reference}") };
        self.databases.get(&key).cloned()
    }

    /// Authorizes `identity` for `db_user`/`db_name` on `upstream` with the current roles.
    pub fn authorize(&self, identity: &Identity, upstream: &Upstream, db_user: &str, db_name: Option<&str>) -> Decision {
        let roles = self.roles.borrow().clone();
        let request = authz::Request {
            database: authz::DatabaseRef { namespace: &upstream.namespace, name: &upstream.name, labels: &upstream.labels },
            db_user,
            db_name,
        };
        authz::authorize(identity, &request, &roles)
    }
}

impl ProxyState {
    /// Authorizes a new session; on success, whether its statements are to be audited.
    pub fn authorize_session(&self, identity: &Identity, upstream: &Upstream, db_user: &str, db_name: Option<&str>) -> Result<bool, session::SessionError> {
        match self.authorize(identity, upstream, db_user, db_name) {
            Decision::Allow { audit_queries, .. } => Ok(audit_queries),
            Decision::Deny(reason) => Err(session::SessionError::Denied(reason)),
        }
    }
}

/// A fresh random session id.
pub fn new_session_id() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}
