//! Prometheus metrics of the operator, on its admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `database`, `accessrole` or `csr`.
    pub controller: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of API write counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The object kind, e.g. `Deployment` or `Database/status`.
    pub kind: String,
    /// `apply`, `create`, `delete`, `patch` or `event`.
    pub verb: String,
}

/// Labels of CSR decisions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CsrLabels {
    /// `signed`, `denied` or `failed`.
    pub result: String,
}

/// Every metric the operator records.
#[derive(Clone)]
pub struct OperatorMetrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration in seconds, by controller.
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    /// Writes to the API server by kind and verb (Lease renewals excluded).
    pub writes: Family<WriteLabels, Counter>,
    /// CSR decisions.
    pub csrs: Family<CsrLabels, Counter>,
    /// 1 while this instance holds the leader Lease.
    pub leader: Gauge,
    /// AWS API calls by caller (`discovery`).
    pub aws_calls: Family<CallerLabels, Counter>,
}

/// Labels of the AWS call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    /// Which part of the operator made the calls.
    pub caller: String,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
            writes: Family::default(),
            csrs: Family::default(),
            leader: Gauge::default(),
            aws_calls: Family::default(),
        }
    }
}

impl OperatorMetrics {
    /// Registers the metrics under the `portcullis_operator` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("portcullis_operator");
        r.register("reconciles", "Reconciles by controller and result", self.reconciles.clone());
        r.register("reconcile_seconds", "Reconcile duration by controller", self.reconcile_seconds.clone());
        r.register("api_writes", "Writes to the Kubernetes API by kind and verb (Lease renewals excluded)", self.writes.clone());
        r.register("csr_decisions", "CertificateSigningRequest decisions by result", self.csrs.clone());
        r.register("leader", "1 while this instance holds the leader Lease", self.leader.clone());
        r.register("aws_calls", "AWS API calls by the part of the operator that made them", self.aws_calls.clone());
    }

    /// Counts one write.
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes.get_or_create(&WriteLabels { kind: kind.to_owned(), verb: verb.to_owned() }).inc();
    }

    /// Counts `n` AWS API calls.
    pub fn aws_calls(&self, caller: &str, n: u64) {
        self.aws_calls.get_or_create(&CallerLabels { caller: caller.to_owned() }).inc_by(n);
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &str, ok: bool, seconds: f64) {
        let labels = ReconcileLabels { controller: controller.to_owned(), result: if ok { "ok" } else { "error" }.to_owned() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds.get_or_create(&labels).observe(seconds);
    }
}
