//! Start-up of a standalone proxy and the accept loops: one task per connection, tracked so
//! shutdown drains sessions before the process exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::ProxyState;
use super::audit::{self, AuditTargets};
use super::engines::engine_for;
use super::error::ProxyError;
use super::pipeline::{Connection, Serve};
use super::tls::ServerTls;
use super::upstream::Upstream;
use crate::aws::{AwsContext, EndpointPolicy};
use crate::crd::Protocol;
use crate::proxy::config::{ConfigError, ProxyConfig};
use crate::proxy::manifests::load_manifests;
use crate::proxy::metrics::ProxyMetrics;
use crate::runtime::admin;

/// How long ended sessions get to say goodbye after the drain.
const GOODBYE: Duration = Duration::from_secs(5);

/// A bound listener, its engine, and the database it serves, if fixed.
struct Listener {
    socket: TcpListener,
    engine: &'static dyn Serve,
    /// The Database every connection goes to; `None` when certificates' routes choose.
    fixed_upstream: Option<Arc<Upstream>>,
}

/// Runs a standalone proxy from `config_path` until SIGINT/SIGTERM. SIGHUP reloads the
/// AccessRoles from the manifests (running sessions are re-checked).
pub async fn run_standalone(config_path: PathBuf) -> Result<(), ProxyError> {
    let config = ProxyConfig::load(&config_path)?;
    if config.resources.is_empty() {
        return Err(ProxyError::Config(ConfigError::Inconsistent {
            path: config_path.display().to_string(),
            message: "resources: name at least one file or directory of Database/AccessRole manifests (or run in cluster mode with --database)".into(),
        }));
    }
    let manifests = load_manifests(&config.resources)?;
    for skipped in &manifests.skipped {
        info!(document = %skipped, "skipping a manifest that is not a Portcullis resource");
    }
    let mut databases = HashMap::new();
    for db in &manifests.databases {
        let upstream = Upstream::resolve(db, config.secrets_dir.as_deref(), config.limits.upstream_connects_per_second)?;
        databases.insert(upstream.key(), Arc::new(upstream));
    }
    let (roles_tx, roles_rx) = watch::channel(Arc::new(manifests.roles.clone()));
    let resources = config.resources.clone();
    serve(config, databases, None, roles_rx, |_| {}, async move { wait_for_signals(&resources, &roles_tx).await }).await
}

/// Serves `databases` until `stop` completes. `default_database` serves listeners that name
/// none (cluster mode); `on_ready` gets the shared state once the listeners are bound.
pub(super) async fn serve(
    config: ProxyConfig,
    databases: HashMap<String, Arc<Upstream>>,
    default_database: Option<Arc<Upstream>>,
    roles_rx: watch::Receiver<Arc<Vec<crate::crd::AccessRole>>>,
    on_ready: impl FnOnce(Arc<ProxyState>),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let server_tls = ServerTls::load(&config.tls.cert_file, &config.tls.key_file, &config.tls.client_ca_file, &[b"postgresql"])?;
    let metrics = ProxyMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let targets = AuditTargets { stdout: config.audit.stdout, file: config.audit.file.clone() };
    let (audit, audit_task) = audit::start(targets, config.audit.queue_size, metrics.clone())
        .map_err(|source| ProxyError::AuditFile { path: config.audit.file.clone().unwrap_or_default(), source })?;
    let audit = audit.with_overflow(config.audit.on_overflow);
    let shutdown = CancellationToken::new();
    let aws = AwsContext::load().await;
    let state = Arc::new(ProxyState {
        databases,
        roles: roles_rx,
        aws,
        endpoints: EndpointPolicy::new(config.aws.allowed_endpoints.clone()),
        server_tls,
        audit,
        metrics,
        cancels: Default::default(),
        stop_accepting: CancellationToken::new(),
        refusals: crate::proxy::refusals::RefusalThrottle::new(config.audit.refusal_burst, config.audit.refusal_window),
        limits: config.limits.clone(),
        shutdown: shutdown.clone(),
    });

    let mut listeners = Vec::new();
    for l in &config.listeners {
        let database = match &l.database {
            Some(name) => Some(state.database(name).ok_or_else(|| ProxyError::UnknownListenerDatabase {
                address: l.address,
                database: name.clone(),
                loaded: state.databases.keys().cloned().collect::<Vec<_>>().join(", "),
            })?),
            None => default_database.clone(),
        };
        let protocol = match (&database, l.protocol) {
            (Some(db), Some(p)) if db.protocol != p => {
                return Err(ProxyError::ListenerProtocolMismatch { address: l.address, listener: p, database: db.key(), database_protocol: db.protocol });
            }
            (Some(db), _) => db.protocol,
            (None, p) => p.unwrap_or(Protocol::Postgres),
        };
        let engine = engine_for(protocol).ok_or(ProxyError::UnsupportedProtocol { address: l.address, protocol })?;
        let socket = TcpListener::bind(l.address).await.map_err(|source| ProxyError::Bind { address: l.address, source })?;
        info!(address = %socket.local_addr().unwrap_or(l.address), protocol = %engine.facts().name, database = ?database.as_ref().map(|d| d.key()), "listening");
        listeners.push(Listener { socket, engine, fixed_upstream: database });
    }
    let ready = Arc::new(AtomicBool::new(false));
    let tracker = TaskTracker::new();
    if let Some(admin) = &config.admin {
        let socket = admin::bind(admin.address).await.map_err(|source| ProxyError::Bind { address: admin.address, source })?;
        info!(address = %admin.address, "admin endpoint (/metrics, /healthz, /readyz)");
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        // Not in the tracker: it answers (not ready) through the drain, and stops after it.
        tokio::spawn(async move {
            if let Err(e) = admin::serve(socket, registry, ready, Default::default(), shutdown).await {
                warn!(error = %e, "admin endpoint stopped");
            }
        });
    }
    for listener in listeners {
        tracker.spawn(accept_loop(listener, state.clone(), tracker.clone()));
    }
    ready.store(true, Ordering::Relaxed);
    info!(databases = state.databases.len(), roles = state.roles.borrow().len(), "proxy ready");
    on_ready(state.clone());

    stop.await;
    let drain = state.limits.drain_timeout;
    info!(drain_timeout = ?drain, "shutting down: not ready, no new connections; running sessions may finish");
    ready.store(false, Ordering::Relaxed);
    state.stop_accepting.cancel();
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!(sessions = tracker.len(), "sessions still running after the drain ({drain:?}): ending them");
        shutdown.cancel();
        if tokio::time::timeout(GOODBYE, tracker.wait()).await.is_err() {
            warn!("sessions still running {GOODBYE:?} after they were told to end; exiting anyway");
        }
    }
    shutdown.cancel();
    drop(state);
    let _ = tokio::time::timeout(Duration::from_secs(2), audit_task).await;
    Ok(())
}

async fn wait_for_signals(resources: &[PathBuf], roles_tx: &watch::Sender<Arc<Vec<crate::crd::AccessRole>>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => match load_manifests(resources) {
                Ok(m) => {
                    info!(roles = m.roles.len(), "reloaded AccessRoles; running sessions are re-checked");
                    roles_tx.send_replace(Arc::new(m.roles));
                }
                Err(e) => warn!(error = %e, "reload failed; keeping the AccessRoles in force"),
            },
        }
    }
}

async fn accept_loop(listener: Listener, state: Arc<ProxyState>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = state.stop_accepting.cancelled() => return,
            a = listener.socket.accept() => a,
        };
        let Some((stream, peer)) = crate::runtime::accepted(accepted).await else { continue };
        let _ = stream.set_nodelay(true);
        let session_id = super::new_session_id();
        let span = info_span!("session", id = %session_id, client = %peer);
        let connection = Connection { state: state.clone(), fixed_upstream: listener.fixed_upstream.clone(), stream, peer, session_id };
        tracker.spawn(listener.engine.serve(connection).instrument(span));
    }
}
