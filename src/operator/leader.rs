//! Leader election on a `coordination.k8s.io/v1` Lease: one operator instance reconciles at a
//! time; the others wait and take over when the holder stops renewing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The Lease name.
pub const LEASE_NAME: &str = "portcullis-operator";

/// A Lease-based election for one identity.
pub struct LeaderElection {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl LeaderElection {
    /// An election in `namespace` for `identity` (the pod name) with the given lease duration.
    pub fn new(client: Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), identity: identity.to_owned(), duration }
    }

    /// Waits until this instance holds the Lease (or `stop` fires: returns false).
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        let mut logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = LEASE_NAME, identity = %self.identity, "became the leader");
                    return true;
                }
                Ok(false) if !logged => {
                    info!(lease = LEASE_NAME, "another instance is the leader; waiting");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.duration / 4) => {}
            }
        }
    }

    /// Renews the Lease until `stop` fires; fires `lost` when renewal fails for a whole lease
    /// duration (another instance may now lead, so this one must stop reconciling).
    pub async fn keep(&self, stop: CancellationToken, lost: CancellationToken) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.duration / 3) => {}
            }
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("the leader Lease was taken by another instance");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot renew the leader Lease");
                    if last_ok.elapsed() >= self.duration {
                        lost.cancel();
                        return;
                    }
                }
            }
        }
        self.release().await;
    }

    /// Takes or renews the Lease when it is free, expired or ours.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(d)) => renewed.0.as_second() + i64::from(d) < now.0.as_second(),
            _ => true,
        };
        if !ours && !expired && spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so a waiting instance takes over at once.
    async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                Ok(_) => info!("released the leader Lease"),
                Err(e) => warn!(error = %e, "cannot release the leader Lease; it expires on its own"),
            }
        }
    }
}
