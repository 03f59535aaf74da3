//! Prometheus metrics of the proxy, exposed on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of connection counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `postgres`, `mysql`, …
    pub protocol: String,
    /// `accepted`, `denied`, `failed`.
    pub result: String,
}

/// Labels of authentication failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailLabels {
    /// `client_certificate`, `authorization`, `upstream_auth`, `credentials`, `endpoint`, …
    pub kind: String,
}

/// Labels of byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `client_to_upstream` or `upstream_to_client`.
    pub direction: String,
}

/// Labels of token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Every metric the proxy records.
#[derive(Clone, Default)]
pub struct ProxyMetrics {
    /// Client connections by protocol and result.
    pub connections: Family<ConnLabels, Counter>,
    /// Sessions currently relaying.
    pub active_sessions: Gauge,
    /// Authentication and authorization failures by kind.
    pub auth_failures: Family<AuthFailLabels, Counter>,
    /// Bytes relayed by direction.
    pub bytes: Family<DirectionLabels, Counter>,
    /// RDS IAM tokens generated, by result.
    pub token_generations: Family<ResultLabels, Counter>,
    /// Audit events dropped because the audit queue was full (`audit.onOverflow: drop`).
    pub audit_dropped: Counter,
    /// Time sessions waited for room in a full audit queue (`audit.onOverflow: block`).
    pub audit_blocked_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// HTTP API requests (DynamoDB) by target and status.
    pub api_requests: Family<ApiLabels, Counter>,
}

/// Labels of an HTTP API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ApiLabels {
    /// The `X-Amz-Target` (empty when missing).
    pub target: String,
    /// The HTTP status.
    pub status: u16,
}

impl ProxyMetrics {
    /// Registers the metrics under the `portcullis` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("portcullis");
        r.register("connections", "Client connections by protocol and result", self.connections.clone());
        r.register("active_sessions", "Sessions currently relaying", self.active_sessions.clone());
        r.register("auth_failures", "Authentication and authorization failures by kind", self.auth_failures.clone());
        r.register("bytes", "Bytes relayed by direction", self.bytes.clone());
        r.register("token_generations", "RDS IAM auth tokens generated, by result", self.token_generations.clone());
        r.register("audit_dropped_events", "Audit events dropped because the queue was full", self.audit_dropped.clone());
        r.register("audit_blocked_seconds", "Time sessions waited for room in a full audit queue", self.audit_blocked_seconds.clone());
        r.register("api_requests", "HTTP API requests (DynamoDB) by X-Amz-Target and status", self.api_requests.clone());
    }

    /// Counts one HTTP API request; `target` is `None` for targets the engine does not know,
    /// which are counted under `other`, so clients cannot grow the label set.
    pub fn api_request(&self, target: Option<&str>, status: u16) {
        let target = target.unwrap_or("other").to_owned();
        self.api_requests.get_or_create(&ApiLabels { target, status }).inc();
    }

    /// Counts one connection outcome.
    pub fn connection(&self, protocol: &str, result: &str) {
        self.connections.get_or_create(&ConnLabels { protocol: protocol.into(), result: result.into() }).inc();
    }

    /// Counts one failure of `kind`.
    pub fn auth_failure(&self, kind: &str) {
        self.auth_failures.get_or_create(&AuthFailLabels { kind: kind.into() }).inc();
    }

    /// Counts one token generation.
    pub fn token(&self, ok: bool) {
        self.token_generations.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" }.into() }).inc();
    }

    /// Adds relayed bytes.
    pub fn add_bytes(&self, direction: &str, n: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: direction.into() }).inc_by(n);
    }
}
