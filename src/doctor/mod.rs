//! `portcullis doctor`: runs the whole chain — AWS credentials, caller identity, assume-role
//! hops, IMDS, each database's network path, TLS certificate and IAM authentication — and
//! prints a verdict with a remedy for every failed line.

mod checks;
mod tls_probe;

use serde::Serialize;

pub use checks::run;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but should be looked at.
    Warn,
    /// Broken.
    Fail,
    /// Not applicable or not possible here.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `db default/orders: TLS certificate`.
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was found (never a secret).
    pub detail: String,
    /// What to do, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    /// A check with an outcome and detail.
    pub fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Check { check: check.into(), status, detail: detail.into(), remedy: None }
    }

    /// Adds a remedy.
    pub fn remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}

/// Renders the report as a table followed by numbered remedies.
pub fn render_table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "STATUS");
    let mut remedies = Vec::new();
    for c in checks {
        let mut detail = c.detail.replace('\n', " ");
        if let Some(r) = &c.remedy {
            remedies.push(r.clone());
            detail.push_str(&format!(" [{}]", remedies.len()));
        }
        out.push_str(&format!("{:<width$}  {:<6}  {}\n", c.check, c.status.label(), detail));
    }
    if !remedies.is_empty() {
        out.push_str("\nWhat to do:\n");
        for (i, r) in remedies.iter().enumerate() {
            out.push_str(&format!("  [{}] {}\n", i + 1, r.replace('\n', "\n      ")));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    out.push_str(&if failed == 0 { "\nverdict: OK\n".to_owned() } else { format!("\nverdict: {failed} check(s) failed\n") });
    out
}
