//! Why a proxy cannot start, standalone or in cluster mode.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::config::ConfigError;
use super::tls::TlsError;
use super::upstream::ResolveError;
use crate::crd::Protocol;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration or a manifest is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Database cannot be served.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// TLS files are unusable.
    #[error("proxy TLS")]
    Tls(#[from] TlsError),
    /// A listener names a Database that is not loaded.
    #[error("listener {address}: database {database:?} is not among the loaded Database manifests (loaded: {loaded})")]
    UnknownListenerDatabase { address: SocketAddr, database: String, loaded: String },
    /// A protocol has no engine in this build yet.
    #[error("listener {address}: protocol {protocol} cannot be served by this proxy yet")]
    UnsupportedProtocol { address: SocketAddr, protocol: Protocol },
    /// A listener's `protocol` disagrees with its database's.
    #[error(
        "listener {address}: protocol {listener} does not match database {database:?}, which uses {database_protocol}; drop the listener's protocol or fix it"
    )]
    ListenerProtocolMismatch { address: SocketAddr, listener: Protocol, database: String, database_protocol: Protocol },
    /// Binding an address failed.
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The audit file cannot be opened.
    #[error("cannot open the audit file {path}")]
    AuditFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Errors specific to cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `--database` is not `namespace/name`.
    #[error("--database {0:?} must be NAMESPACE/NAME")]
    BadReference(String),
    /// No Kubernetes client configuration.
    #[error("cannot configure the Kubernetes client (in a pod: the ServiceAccount token; elsewhere: KUBECONFIG)")]
    Client(#[source] kube::Error),
    /// The Database cannot be read.
    #[error("cannot read Database {0}: does it exist, and may this ServiceAccount get it (ClusterRole portcullis-proxy)?")]
    Read(String, #[source] kube::Error),
    /// AccessRoles could not be listed in time.
    #[error("cannot list AccessRoles in namespace {0} within 30 s: check the proxy's RoleBinding (ClusterRole portcullis-proxy)")]
    Roles(String),
}
