//! How the client reaches a Database's proxy, in this order: `status.externalEndpoint`, then
//! `status.proxyEndpoint`, whichever answers from here; otherwise a port-forward through the
//! Kubernetes API server to a ready proxy pod, chosen afresh for every connection so that a
//! restarted pod's replacement takes over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::crd::Database;
use crate::crd::conditions::types;

/// A byte stream to the proxy, before TLS.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// How long an endpoint has to accept a TCP connection to count as reachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The label the operator puts on every proxy pod of a Database.
const DATABASE_LABEL: &str = "portcullis.io/database";

/// The way to the proxy.
pub enum Dial {
    /// A `host:port` that answers from here.
    Direct(String),
    /// Through the API server's port-forward to a ready pod.
    PortForward(Box<PortForward>),
}

/// Port-forwarding to the proxy pods of one Database.
pub struct PortForward {
    pods: Api<Pod>,
    namespace: String,
    database: String,
    next: AtomicUsize,
}

/// Where the proxy is and the name its certificate must carry.
pub struct Reach {
    /// How to open a connection.
    pub dial: Dial,
    /// The TLS server name to verify.
    pub server_name: String,
}

impl Dial {
    /// Opens one connection; `what` says where it went (for logs).
    pub async fn connect(&self, timeout: Duration) -> anyhow::Result<(Box<dyn Duplex>, String)> {
        match self {
            Dial::Direct(addr) => {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
                    .await
                    .with_context(|| format!("connecting to the proxy at {addr} timed out"))?
                    .with_context(|| format!("cannot connect to the proxy at {addr}"))?;
                let _ = tcp.set_nodelay(true);
                Ok((Box::new(tcp), addr.clone()))
            }
            Dial::PortForward(pf) => pf.connect(timeout).await,
        }
    }

    /// Describes the way, for the user.
    pub fn describe(&self) -> String {
        match self {
            Dial::Direct(addr) => format!("the proxy at {addr}"),
            Dial::PortForward(pf) => format!("a port-forward through the Kubernetes API server to a ready proxy pod of {}/{}", pf.namespace, pf.database),
        }
    }
}

impl PortForward {
    /// The ready proxy pods now (names and their `db` port), sorted by name.
    async fn ready_pods(&self) -> anyhow::Result<Vec<(String, u16)>> {
        let selector = format!("app.kubernetes.io/name=portcullis-proxy,{DATABASE_LABEL}={}", self.database);
        let pods = self.pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
                "you may not list the proxy pods in namespace {} (needed for the port-forward): ask an admin to bind the ClusterRole portcullis-tunnel to you there with a RoleBinding",
                self.namespace
            ),
            other => anyhow::Error::new(other).context(format!("listing the proxy pods in namespace {}", self.namespace)),
        })?;
        let mut ready: Vec<(String, u16)> = pods.items.iter().filter(|p| is_ready(p)).filter_map(|p| Some((p.name_any(), db_port(p)?))).collect();
        ready.sort();
        Ok(ready)
    }

    async fn connect(&self, timeout: Duration) -> anyhow::Result<(Box<dyn Duplex>, String)> {
        let pods = self.ready_pods().await?;
        if pods.is_empty() {
            bail!(
                "no proxy pod of Database {}/{} is ready (`kubectl -n {} get pods -l {DATABASE_LABEL}={}`)",
                self.namespace,
                self.database,
                self.namespace,
                self.database
            );
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        // A pod that went away between the list and the forward: try the others.
        for i in 0..pods.len() {
            let (name, port) = &pods[(first + i) % pods.len()];
            match tokio::time::timeout(timeout, self.forward(name, *port)).await {
                Ok(Ok(stream)) => return Ok((stream, format!("pod {}/{name} (port-forward)", self.namespace))),
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => last_error = Some(anyhow::anyhow!("the port-forward to pod {name} timed out")),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no proxy pod answered")))
    }

    async fn forward(&self, pod: &str, port: u16) -> anyhow::Result<Box<dyn Duplex>> {
        let mut forwarder = self.pods.portforward(pod, &[port]).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
                "you may not port-forward to the proxy pods in namespace {}: ask an admin to bind the ClusterRole portcullis-tunnel to you there with a RoleBinding",
                self.namespace
            ),
            other => anyhow::Error::new(other).context(format!("port-forwarding to pod {}/{pod}", self.namespace)),
        })?;
        let stream = forwarder.take_stream(port).context("the port-forward gave no stream")?;
        let pod = pod.to_owned();
        tokio::spawn(async move {
            if let Err(e) = forwarder.join().await {
                debug!(%pod, error = %e, "port-forward ended");
            }
        });
        Ok(Box::new(stream))
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn db_port(pod: &Pod) -> Option<u16> {
    let containers = &pod.spec.as_ref()?.containers;
    let port = containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("db"))?;
    u16::try_from(port.container_port).ok()
}

/// Whether `addr` (`host:port`) accepts a TCP connection from here soon.
async fn answers(addr: &str) -> bool {
    matches!(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// The host of `host[:port]` (an IPv6 address without its brackets).
pub fn host_of(endpoint: &str) -> String {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host.trim_matches(['[', ']']).to_owned(),
        _ => endpoint.trim_matches(['[', ']']).to_owned(),
    }
}

/// Finds the way to `db`'s proxy (see the module text).
pub async fn discover(client: &Client, db: &Database) -> anyhow::Result<Reach> {
    let (namespace, name) = (db.namespace().unwrap_or_else(|| "default".into()), db.name_any());
    let status = db.status.clone().unwrap_or_default();
    let Some(in_cluster) = status.proxy_endpoint.clone() else {
        let why = status.conditions.iter().find(|c| c.type_ == types::VALID && c.status != "True").map(|c| format!(": {}", c.message)).unwrap_or_default();
        bail!(
            "Database {namespace}/{name} has no proxy yet (its status names no proxyEndpoint{why}); `kubectl -n {namespace} describe database {name}` tells why"
        );
    };
    for endpoint in status.external_endpoint.iter().chain(std::iter::once(&in_cluster)) {
        if answers(endpoint).await {
            debug!(%endpoint, "the proxy answers directly");
            return Ok(Reach { dial: Dial::Direct(endpoint.clone()), server_name: host_of(endpoint) });
        }
        debug!(%endpoint, "the proxy does not answer here");
    }
    let pf = PortForward { pods: Api::namespaced(client.clone(), &namespace), namespace: namespace.clone(), database: name.clone(), next: AtomicUsize::new(0) };
    let unavailable = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::PROXY_AVAILABLE && c.status != "True")
        .map(|c| format!(" ({}: {})", c.reason, c.message))
        .unwrap_or_default();
    let tried = status.external_endpoint.iter().chain(std::iter::once(&in_cluster)).cloned().collect::<Vec<_>>().join(" or ");
    match pf.ready_pods().await {
        Ok(pods) if pods.is_empty() => {
            bail!(
                "no ready proxy for Database {namespace}/{name}{unavailable}: nothing answers at {tried} from here and no proxy pod is ready to port-forward to"
            )
        }
        Ok(_) => {}
        Err(e) if !unavailable.is_empty() => {
            bail!("no ready proxy for Database {namespace}/{name}{unavailable}: nothing answers at {tried} from here, and {e:#}")
        }
        Err(e) => bail!("nothing answers at {tried} from here, and {e:#}"),
    }
    Ok(Reach { dial: Dial::PortForward(Box::new(pf)), server_name: host_of(&in_cluster) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_of_endpoints() {
        assert_eq!(host_of("portcullis-orders.shop.svc:5432"), "portcullis-orders.shop.svc");
        assert_eq!(host_of("[::1]:5432"), "::1");
        assert_eq!(host_of("db.example.com"), "db.example.com");
    }
}
