//! Refused connections in the audit trail, flood-proof: per client address and reason kind,
//! the first `burst` refusals of a window are audited one by one, and the rest are counted and
//! audited as one `db.session.refusals` summary when the window ends (or the proxy stops), so
//! a scanner cannot fill the disk and nothing goes unrecorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::audit::{AuditEvent, AuditSink, EventDetail, SessionFields, events};

/// Windows kept before finished ones are swept.
const MAX_TRACKED: usize = 4096;

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Audit it.
    Audit,
    /// Counted for the window's summary.
    Counted,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    audited: u32,
    suppressed: u64,
}

/// The per-(address, reason kind) windows.
#[derive(Clone)]
pub struct RefusalThrottle {
    burst: u32,
    window: Duration,
    windows: Arc<Mutex<HashMap<(IpAddr, &'static str), Window>>>,
}

impl Default for RefusalThrottle {
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

impl RefusalThrottle {
    /// `burst` refusals audited one by one per address and kind in each `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self { burst, window, windows: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, &'static str), Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides for one refusal from `peer` of `kind`. The first refusal counted in a window
    /// schedules its summary (`audit`, `protocol` and `shutdown` are for that).
    pub fn admit(&self, peer: IpAddr, kind: &'static str, protocol: &str, audit: &AuditSink, shutdown: &CancellationToken) -> Admit {
        let now = Instant::now();
        let mut windows = self.lock();
        if windows.len() >= MAX_TRACKED {
            // Many addresses (a distributed scan): forget the finished windows with nothing counted.
            windows.retain(|_, w| w.suppressed > 0 || now.duration_since(w.started) < self.window);
        }
        let window = windows.entry((peer, kind)).or_insert(Window { started: now, audited: 0, suppressed: 0 });
        if now.duration_since(window.started) >= self.window && window.suppressed == 0 {
            *window = Window { started: now, audited: 0, suppressed: 0 };
        }
        if window.audited < self.burst && window.suppressed == 0 {
            window.audited += 1;
            return Admit::Audit;
        }
        window.suppressed += 1;
        if window.suppressed == 1 {
            let due = window.started + self.window;
            let (this, audit, shutdown, protocol) = (self.clone(), audit.clone(), shutdown.clone(), protocol.to_owned());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
                    _ = shutdown.cancelled() => {}
                }
                this.summarise(peer, kind, &protocol, &audit).await;
            });
        }
        Admit::Counted
    }

    /// Audits the window's count and starts a new window.
    async fn summarise(&self, peer: IpAddr, kind: &'static str, protocol: &str, audit: &AuditSink) {
        let Some(window) = self.lock().remove(&(peer, kind)) else { return };
        if window.suppressed == 0 {
            return;
        }
        let fields = SessionFields { protocol: protocol.to_owned(), client_addr: peer.to_string(), ..Default::default() };
        let detail = EventDetail::Refusals { reason_kind: kind, count: window.suppressed, window_seconds: self.window.as_secs() };
        let message = format!("{} more connections from {peer} refused ({kind}) beyond the first {} of the window", window.suppressed, self.burst);
        audit.emit(AuditEvent::new(events::SESSION_REFUSALS, "DB1004W", Arc::new(fields), false, Some(message), detail)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_is_audited_as_its_first_few_then_one_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let metrics = crate::proxy::metrics::ProxyMetrics::default();
        let (audit, _task) = crate::proxy::audit::start(crate::proxy::audit::AuditTargets { stdout: false, file: Some(file.clone()) }, 64, metrics).unwrap();
        let throttle = RefusalThrottle::new(3, Duration::from_millis(200));
        let shutdown = CancellationToken::new();
        let (scanner, other): (IpAddr, IpAddr) = ("10.0.0.9".parse().unwrap(), "10.0.0.10".parse().unwrap());
        let verdicts: Vec<Admit> = (0..1000).map(|_| throttle.admit(scanner, "client_certificate", "postgres", &audit, &shutdown)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Admit::Audit).count(), 3);
        assert_eq!(throttle.admit(other, "client_certificate", "postgres", &audit, &shutdown), Admit::Audit, "another address has its own window");
        assert_eq!(throttle.admit(scanner, "timeout", "postgres", &audit, &shutdown), Admit::Audit, "another kind too");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut summary = None;
        for _ in 0..50 {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            summary = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|e| e["event"] == "db.session.refusals");
            if summary.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let summary = summary.expect("the summary is audited when the window ends");
        assert_eq!(
            (summary["count"].as_u64(), summary["reason_kind"].as_str(), summary["client_addr"].as_str()),
            (Some(997), Some("client_certificate"), Some("10.0.0.9"))
        );
        assert_eq!(throttle.admit(scanner, "client_certificate", "postgres", &audit, &shutdown), Admit::Audit, "a new window");
    }
}
