//! The data plane: listeners, client TLS and identity, authorization, one engine per protocol,
//! upstream IAM login, audit and metrics.

pub mod audit;
pub mod cancel;
mod cluster;
pub mod config;
pub mod connect;
pub mod dynamodb;
mod engines;
mod error;
mod listener;
pub mod manifests;
pub mod metrics;
pub mod mongodb;
pub mod mysql;
pub mod pipeline;
pub mod postgres;
pub mod ratelimit;
pub mod refusals;
pub mod relay;
pub mod session;
pub mod tls;
pub mod upstream;

pub use cluster::{PROXY_FIELD_MANAGER, run_cluster};
pub use error::{ClusterError, ProxyError};
pub use listener::run_standalone;
pub use upstream::Upstream;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::authz::{self, Decision, Identity};
use crate::aws::{AwsContext, EndpointPolicy};
use crate::crd::AccessRole;
use crate::proxy::metrics::ProxyMetrics;
use audit::AuditSink;
use cancel::CancelRegistry;
use config::LimitsConfig;
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
    /// How refused connections reach the audit trail (a burst, then a count).
    pub refusals: refusals::RefusalThrottle,
    /// Timeouts and rates.
    pub limits: LimitsConfig,
    /// Fires on SIGTERM: stop accepting (running sessions go on for `limits.drainTimeout`).
    pub stop_accepting: CancellationToken,
    /// Fires when the drain is over: running sessions are ended with a message saying why.
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

/// A fresh random session id.
pub fn new_session_id() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}
