//! The operator: reconciles `Database` and `AccessRole`, signs client certificates (CSR
//! signer), keeps its CA, and runs leader-elected with bounded concurrency.

pub mod access_role;
pub mod apply;
pub mod aws_cache;
pub mod ca;
pub mod context;
pub mod csr;
pub mod database;
pub mod discovery;
pub mod leader;
pub mod metrics;
pub mod proxy_defaults;
pub mod retry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::crd::{AccessRole, Database, DatabaseDiscovery};
use context::{ChildStores, Context, MANAGED_BY, Settings};

/// Options of `portcullis operator` that are not reconciler settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Reconciler settings.
    pub settings: Settings,
    /// This instance's identity in the leader Lease (the pod name).
    pub identity: String,
    /// Whether to take part in leader election (off: reconcile at once, for one replica).
    pub leader_election: bool,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_address: SocketAddr,
    /// Whether to run the CertificateSigningRequest signer.
    pub csr_signer: bool,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No usable Kubernetes client configuration.
    #[error("cannot configure the Kubernetes client (in a pod: the ServiceAccount token; elsewhere: KUBECONFIG or ~/.kube/config)")]
    Client(#[source] kube::Error),
    /// The CA is unavailable.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// The admin port cannot be bound.
    #[error("cannot listen on {0} for /metrics and the probes")]
    Admin(SocketAddr, #[source] std::io::Error),
    /// Leadership was lost; the process exits so a restart rejoins the election cleanly.
    #[error("lost the leader Lease; exiting so that only one instance reconciles")]
    LostLeadership,
}

/// Runs the operator until SIGINT/SIGTERM.
pub async fn run(options: RunOptions) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            crate::runtime::wait_for_termination().await;
            info!("shutting down: finishing running reconciles");
            shutdown.cancel();
        }
    });

    let metrics = metrics::OperatorMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let admin = crate::runtime::admin::bind(options.admin_address).await.map_err(|e| OperatorError::Admin(options.admin_address, e))?;
    info!(address = %options.admin_address, "admin endpoint (/metrics, /healthz, /readyz)");
    let detail = crate::runtime::admin::Detail::default();
    let admin_task = tokio::spawn(crate::runtime::admin::serve(admin, registry, ready.clone(), detail.clone(), shutdown.clone()));

    // A standby is ready: it is up and can take over. (Were it not, a rolling update of a
    // leader-elected Deployment would wait forever for the new pod, a standby, to be Ready.)
    // The leader turns ready again once its caches are filled.
    ready.store(options.leader_election, std::sync::atomic::Ordering::Relaxed);
    let lost = CancellationToken::new();
    let election =
        options.leader_election.then(|| leader::LeaderElection::new(client.clone(), &options.settings.namespace, &options.identity, options.lease_duration));
    if let Some(election) = &election
        && !election.acquire(&shutdown).await
    {
        let _ = admin_task.await;
        return Ok(());
    }
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    metrics.leader.set(1);
    let keeper = election.map(|e| {
        let (stop, lost) = (shutdown.clone(), lost.clone());
        tokio::spawn(async move { e.keep(stop, lost).await })
    });

    let ca = ca::ensure(&client, &options.settings.namespace).await?;
    let aws_sdk = if options.settings.aws_checks {
        let aws = crate::aws::AwsContext::load().await;
        // In the background: an unreachable IMDS or STS must not hold up the controllers.
        *detail.write().unwrap_or_else(|p| p.into_inner()) = "aws credentials: resolving\n".into();
        tokio::spawn({
            let (aws, detail) = (aws.clone(), detail.clone());
            async move {
                let identity = own_aws_identity(&aws).await;
                *detail.write().unwrap_or_else(|p| p.into_inner()) = format!("{identity}\n");
            }
        });
        Some(aws)
    } else {
        *detail.write().unwrap_or_else(|p| p.into_inner()) = "aws credentials: not used (--aws-checks=false)\n".into();
        None
    };
    let stop_controllers = CancellationToken::new();
    let scope = options.settings.watch_namespace.clone();
    match &scope {
        Some(ns) => info!(namespace = %ns, "reconciling the Databases and AccessRoles of one namespace"),
        None => info!("reconciling Databases and AccessRoles in every namespace"),
    }
    let (children, child_streams) = child_watches(&client, scope.as_deref());
    let (db_reader, db_writer) = reflector::store::<Database>();
    let (role_reader, role_writer) = reflector::store::<AccessRole>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: options.settings.clone(),
        ca,
        children,
        databases: db_reader.clone(),
        access_roles: role_reader.clone(),
        recorder: Recorder::new(client.clone(), Context::reporter(&options.identity)),
        metrics: metrics.clone(),
        aws: aws_cache::AwsCheckCache::new(aws_sdk, options.settings.aws_recheck),
        recent_status: Default::default(),
        failures: Default::default(),
        caches_ready: tokio::sync::watch::Sender::new(false),
    });

    let config = ControllerConfig::default().concurrency(options.concurrency);
    let db_stream =
        watcher(scoped_api::<Database>(&client, scope.as_deref()), watcher::Config::default()).default_backoff().reflect(db_writer).touched_objects();
    let ChildStreams { service_accounts, config_maps, secrets, deployments, services, role_bindings } = child_streams;
    let databases = Controller::for_stream(db_stream, db_reader.clone())
        .owns_stream(service_accounts)
        .owns_stream(config_maps)
        .owns_stream(secrets)
        .owns_stream(deployments)
        .owns_stream(services)
        .owns_stream(role_bindings)
        .with_config(config.clone())
        .graceful_shutdown_on(cancelled(stop_controllers.clone()))
        .run(database::reconcile, database::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    // AccessRoles: their own changes, and any Database change in their namespace (the match
    // count may change).
    let role_stream =
        watcher(scoped_api::<AccessRole>(&client, scope.as_deref()), watcher::Config::default()).default_backoff().reflect(role_writer).touched_objects();
    let roles_by_ns = role_reader.clone();
    let roles = Controller::for_stream(role_stream, role_reader.clone())
        .watches(scoped_api::<Database>(&client, scope.as_deref()), watcher::Config::default().any_semantic(), move |db: Database| {
            let ns = db.namespace();
            roles_by_ns.state().into_iter().filter(move |r| r.namespace() == ns).map(|r| ObjectRef::from_obj(&*r)).collect::<Vec<_>>()
        })
        .with_config(config.clone())
        .graceful_shutdown_on(cancelled(stop_controllers.clone()))
        .run(access_role::reconcile, access_role::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    // DatabaseDiscoveries: a spec change, then every spec.interval (their status writes and the
    // Databases they own do not trigger a sync: each sync calls AWS).
    let (disc_reader, disc_writer) = reflector::store::<DatabaseDiscovery>();
    let disc_stream = watcher(scoped_api::<DatabaseDiscovery>(&client, scope.as_deref()), watcher::Config::default())
        .default_backoff()
        .reflect(disc_writer)
        .touched_objects()
        .predicate_filter(kube::runtime::predicates::generation, Default::default());
    let discoveries = Controller::for_stream(disc_stream, disc_reader)
        .with_config(config.clone())
        .graceful_shutdown_on(cancelled(stop_controllers.clone()))
        .run(discovery::reconcile, discovery::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let csrs = if options.csr_signer {
        let csr_api = Api::<CertificateSigningRequest>::all(client.clone());
        futures::future::Either::Left(
            Controller::new(csr_api, watcher::Config::default().fields(&format!("spec.signerName={}", csr::SIGNER_NAME)))
                .with_config(config)
                .graceful_shutdown_on(cancelled(stop_controllers.clone()))
                .run(csr::reconcile, csr::error_policy, ctx.clone())
                .for_each(|_| futures::future::ready(())),
        )
    } else {
        info!("the CertificateSigningRequest signer is off (--csr-signer=false): `portcullis login` gets no certificates here");
        futures::future::Either::Right(futures::future::ready(()))
    };

    let watchdog = {
        let (ctx, ready, stop) = (ctx.clone(), ready.clone(), stop_controllers.clone());
        let (shutdown, lost) = (shutdown.clone(), lost.clone());
        async move {
            ctx.fill_caches().await;
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
            info!(databases = ctx.databases.state().len(), roles = ctx.access_roles.state().len(), "caches filled; reconciling");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = lost.cancelled() => warn!("stopping the controllers: leadership lost"),
            }
            ready.store(false, std::sync::atomic::Ordering::Relaxed);
            stop.cancel();
        }
    };
    futures::join!(databases, roles, discoveries, csrs, watchdog);
    info!("controllers stopped");
    metrics.leader.set(0);
    shutdown.cancel();
    if let Some(k) = keeper {
        let _ = k.await;
    }
    let _ = admin_task.await;
    if lost.is_cancelled() { Err(OperatorError::LostLeadership) } else { Ok(()) }
}

/// An Api over every namespace, or over the one the operator is limited to.
fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Resolves the operator's own AWS credentials once (in the background, beside the
/// controllers), logs where they came from (or why there are none, with what the chain tried:
/// environment, web identity, IMDS …) and the IMDS verdict, and returns the lines `/readyz`
/// shows.
async fn own_aws_identity(aws: &crate::aws::AwsContext) -> String {
    let resolved = tokio::time::timeout(std::time::Duration::from_secs(10), aws.base().get()).await;
    let report = aws.chain_report().unwrap_or_default();
    let tried = report.describe();
    let (credentials, has_credentials) = match resolved {
        Ok(Ok(_)) => {
            let source = report.source.unwrap_or("the default chain");
            info!(source, tried = %tried, "the operator's AWS identity: credentials from {source}");
            (format!("aws credentials: {source}"), true)
        }
        Ok(Err(e)) => {
            warn!(error = %crate::telemetry::chain(&e), tried = %tried, "the operator has no AWS credentials, so its IAM-authentication checks fail: give its ServiceAccount an IAM role (IRSA: serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn in the Helm chart) or an EKS Pod Identity association; or run it with --aws-checks=false");
            (format!("aws credentials: none ({tried})"), false)
        }
        Err(_) => {
            warn!(tried = %tried, "resolving the operator's AWS credentials took over 10 s (an unreachable IMDS or STS?); the IAM-authentication checks will try again");
            (format!("aws credentials: unresolved after 10 s ({tried})"), false)
        }
    };
    format!("{credentials}\n{}", imds_line(has_credentials).await)
}

/// The IMDS verdict for `/readyz` and the log: not probed (and why), or what the probe found.
/// A hop limit of 1 or IMDSv1 only is a warning; unreachable IMDS is one only when nothing
/// else gave credentials.
async fn imds_line(has_credentials: bool) -> String {
    use crate::aws::imds;
    if let Some(why) = imds::not_probed_because() {
        info!(imds = "not probed", "instance metadata (IMDS) not probed: {why}");
        return format!("imds: not probed: {why}");
    }
    let verdict = imds::probe(&imds::endpoint(), imds::PROBE_TIMEOUT).await;
    let explained = verdict.explain();
    match &verdict {
        imds::ImdsVerdict::Working => info!(imds = "working", "instance metadata (IMDS): {explained}"),
        imds::ImdsVerdict::Unreachable { .. } if has_credentials => info!(imds = "unreachable", "instance metadata (IMDS): {explained}"),
        imds::ImdsVerdict::Unreachable { .. } => warn!(imds = "unreachable", "instance metadata (IMDS): {explained}"),
        imds::ImdsVerdict::HopLimitProbablyOne => warn!(imds = "hop-limit-probably-one", "instance metadata (IMDS): {explained}"),
        imds::ImdsVerdict::V1Only { .. } => warn!(imds = "v1-only", "instance metadata (IMDS): {explained}"),
    }
    format!("imds: {explained}")
}

async fn cancelled(token: CancellationToken) {
    token.cancelled().await
}

type ChildStream<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

struct ChildStreams {
    service_accounts: ChildStream<ServiceAccount>,
    config_maps: ChildStream<ConfigMap>,
    secrets: ChildStream<Secret>,
    deployments: ChildStream<Deployment>,
    services: ChildStream<Service>,
    role_bindings: ChildStream<RoleBinding>,
}

/// One watch per child kind, selected by the managed-by label, cached (without managed
/// fields, to save memory) and used to trigger the owner's reconcile.
fn child_watches(client: &Client, namespace: Option<&str>) -> (ChildStores, ChildStreams) {
    fn one<K>(client: &Client, namespace: Option<&str>) -> (Store<K>, ChildStream<K>)
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (reader, writer) = reflector::store::<K>();
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let stream = watcher(scoped_api::<K>(client, namespace), watcher::Config::default().labels(&selector))
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer)
            .touched_objects()
            .boxed();
        (reader, stream)
    }
    let (sa, sa_s) = one::<ServiceAccount>(client, namespace);
    let (cm, cm_s) = one::<ConfigMap>(client, namespace);
    let (sec, sec_s) = one::<Secret>(client, namespace);
    let (dep, dep_s) = one::<Deployment>(client, namespace);
    let (svc, svc_s) = one::<Service>(client, namespace);
    let (rb, rb_s) = one::<RoleBinding>(client, namespace);
    (
        ChildStores { service_accounts: sa, config_maps: cm, secrets: sec, deployments: dep, services: svc, role_bindings: rb },
        ChildStreams { service_accounts: sa_s, config_maps: cm_s, secrets: sec_s, deployments: dep_s, services: svc_s, role_bindings: rb_s },
    )
}
