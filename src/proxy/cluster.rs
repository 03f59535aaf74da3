//! Cluster mode: the proxy reads its `Database` from the Kubernetes API, watches the
//! namespace's AccessRoles live (a revoked grant ends running sessions), and reports
//! `CredentialsResolved` and `UpstreamReachable` into the Database status under its own
//! field manager.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::ProxyConfig;
use super::error::{ClusterError, ProxyError};
use super::listener::serve;
use super::{ProxyState, Upstream};
use crate::crd::conditions::{Observation, merge, types};
use crate::crd::{AccessRole, Database};
use crate::runtime::wait_for_termination;

/// The field manager of the proxy's status fields (the operator owns the others).
pub const PROXY_FIELD_MANAGER: &str = "portcullis-proxy";

/// How often credentials and reachability are re-checked.
const RECHECK: Duration = Duration::from_secs(60);

/// Runs the proxy for one Database read from the API until SIGINT/SIGTERM.
pub async fn run_cluster(config_path: PathBuf, reference: &str) -> Result<(), ProxyError> {
    let (ns, name) =
        reference.split_once('/').filter(|(n, d)| !n.is_empty() && !d.is_empty()).ok_or_else(|| ClusterError::BadReference(reference.to_owned()))?;
    let config = ProxyConfig::load(&config_path)?;
    let client = Client::try_default().await.map_err(ClusterError::Client)?;
    let db_api: Api<Database> = Api::namespaced(client.clone(), ns);
    let db = db_api.get(name).await.map_err(|e| ClusterError::Read(reference.to_owned(), e))?;
    let upstream = Arc::new(Upstream::resolve(&db, config.secrets_dir.as_deref(), config.limits.upstream_connects_per_second)?);
    let databases = HashMap::from([(upstream.key(), upstream.clone())]);

    // AccessRoles of the namespace, live: every change replaces the set in force.
    let (roles_tx, roles_rx) = watch::channel(Arc::new(Vec::<AccessRole>::new()));
    let (reader, writer) = reflector::store::<AccessRole>();
    let roles_api: Api<AccessRole> = Api::namespaced(client.clone(), ns);
    let role_watch = tokio::spawn({
        let reader = reader.clone();
        async move {
            let stream = watcher(roles_api, watcher::Config::default()).default_backoff().reflect(writer);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    // The initial list is published whole, at InitDone.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => {
                        let roles: Vec<AccessRole> = reader.state().iter().map(|r| (**r).clone()).collect();
                        let versions =
                            |list: &[AccessRole]| list.iter().map(|r| r.metadata.resource_version.clone()).collect::<std::collections::BTreeSet<_>>();
                        if versions(&roles_tx.borrow()) != versions(&roles) {
                            info!(roles = roles.len(), "AccessRoles changed; running sessions are re-checked");
                            roles_tx.send_replace(Arc::new(roles));
                        }
                    }
                    Err(e) => warn!(error = %e, "watching AccessRoles failed; retrying (the last known roles stay in force)"),
                }
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready()).await.is_err() {
        role_watch.abort();
        return Err(ClusterError::Roles(ns.to_owned()).into());
    }
    let reporter = Reporter { api: db_api, name: name.to_owned(), db };
    let result = serve(
        config,
        databases,
        Some(upstream.clone()),
        roles_rx,
        move |state| {
            tokio::spawn(reporter.run(state, upstream));
        },
        wait_for_termination(),
    )
    .await;
    role_watch.abort();
    result
}

/// Writes the proxy's two conditions (and the credential source) when they change.
struct Reporter {
    api: Api<Database>,
    name: String,
    db: Database,
}

impl Reporter {
    async fn run(self, state: Arc<ProxyState>, upstream: Arc<Upstream>) {
        let mut last: Option<(Observation, Observation, Option<String>)> = None;
        loop {
            let (creds, source) = credentials(&state, &upstream).await;
            let reach = reachability(&upstream, state.limits.connect_timeout).await;
            let now = (creds, reach, source);
            if last.as_ref() != Some(&now) {
                match self.write(&now.0, &now.1, now.2.as_deref()).await {
                    Ok(()) => last = Some(now),
                    Err(e) => warn!(error = %crate::telemetry::chain(&e), "cannot report status into the Database"),
                }
            }
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    async fn write(&self, creds: &Observation, reach: &Observation, source: Option<&str>) -> Result<(), kube::Error> {
        // Transition times come from the live object, so an unchanged status stays unchanged.
        let live = self.api.get_status(&self.name).await?.status.unwrap_or_default();
        let now = Time(Timestamp::now());
        let generation = self.db.metadata.generation;
        let conditions = [merge(&live.conditions, creds, generation, &now), merge(&live.conditions, reach, generation, &now)];
        let patch = json!({
            "apiVersion": Database::api_version(&()),
            "kind": Database::kind(&()),
            "status": {"conditions": conditions, "credentialSource": source},
        });
        self.api.patch_status(&self.name, &PatchParams::apply(PROXY_FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        info!(credentials = creds.status, upstream = reach.status, "reported status into the Database");
        Ok(())
    }
}

/// Resolves the credentials the proxy would sign with for this database.
async fn credentials(state: &ProxyState, upstream: &Upstream) -> (Observation, Option<String>) {
    let provider = state.aws.credentials_for(upstream.assume_role_arn.as_deref(), upstream.external_id.as_deref(), &upstream.region);
    let result = provider.get().await;
    // Read after resolving: the report names the provider that just answered.
    let source = state.aws.chain_report().and_then(|r| r.source).map(str::to_owned);
    match result {
        Ok(_) => {
            let via = upstream.assume_role_arn.as_deref().map(|arn| format!(", then assumed {arn}")).unwrap_or_default();
            let from = source.clone().unwrap_or_else(|| "the default chain".into());
            (Observation::ok(types::CREDENTIALS_RESOLVED, "Resolved", format!("AWS credentials from {from}{via}")), source)
        }
        Err(e) => (Observation::failed(types::CREDENTIALS_RESOLVED, "NoCredentials", crate::telemetry::chain(&e)), source),
    }
}

/// Opens (and closes) a TCP connection to the database.
async fn reachability(upstream: &Upstream, timeout: Duration) -> Observation {
    let address = format!("{}:{}", upstream.host, upstream.port);
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((upstream.host.as_str(), upstream.port))).await {
        Ok(Ok(_)) => Observation::ok(types::UPSTREAM_REACHABLE, "Reachable", format!("connected to {address} in {} ms", started.elapsed().as_millis())),
        Ok(Err(e)) => Observation::failed(
            types::UPSTREAM_REACHABLE,
            "ConnectFailed",
            format!("cannot connect to {address}: {e}; check the database's security group allows the proxy pods and the endpoint is right"),
        ),
        Err(_) => Observation::failed(
            types::UPSTREAM_REACHABLE,
            "ConnectTimeout",
            format!("no answer from {address} within {timeout:?}: a security group or network ACL probably drops the traffic from the proxy pods"),
        ),
    }
}
