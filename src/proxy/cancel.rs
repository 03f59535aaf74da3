//! Cancel keys: each client gets the proxy's own (pid, key), mapped to the upstream's, so a
//! CancelRequest reaches the right backend without exposing upstream keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use super::upstream::Upstream;

/// Where a cancel request for one session must go.
#[derive(Clone)]
pub struct UpstreamCancel {
    /// The database.
    pub upstream: Arc<Upstream>,
    /// The upstream backend's pid.
    pub pid: u32,
    /// The upstream backend's secret key.
    pub key: Vec<u8>,
}

/// The proxy-side cancel key: (pid, secret).
type ProxyKey = (u32, [u8; 4]);

/// The registry of live sessions' cancel keys (PostgreSQL) and connection ids (MySQL).
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<ProxyKey, UpstreamCancel>>>,
    /// MySQL sessions by the connection id their greeting announced.
    pub mysql_threads: super::mysql::threads::Threads,
}

/// Removes its entry from the registry when dropped (when the session ends).
pub struct CancelGuard {
    registry: CancelRegistry,
    key: ProxyKey,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProxyKey, UpstreamCancel>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session; returns the proxy-side (pid, key) to give the client.
    pub fn register(&self, target: UpstreamCancel) -> (u32, [u8; 4], CancelGuard) {
        let mut rng = rand::rng();
        let mut map = self.lock();
        loop {
            let key = (rng.random::<u32>() & 0x7fff_ffff, rng.random::<[u8; 4]>());
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                slot.insert(target);
                return (key.0, key.1, CancelGuard { registry: self.clone(), key });
            }
        }
    }

    /// Looks up a client's cancel key.
    pub fn find(&self, pid: u32, key: &[u8]) -> Option<UpstreamCancel> {
        let key: [u8; 4] = key.try_into().ok()?;
        self.lock().get(&(pid, key)).cloned()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
