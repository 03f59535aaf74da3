//! Remembers AWS-side check results per Database (uid and generation) so reconciles triggered
//! by child objects do not call AWS again; results expire after the re-check interval (sooner
//! after a Modify call, and a throttled answer is kept a while so AWS gets a rest).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::aws::AwsContext;
use crate::aws::rds::{AwsCheck, Caller, check_database};
use crate::crd::Database;

/// How soon a check is repeated after the operator asked AWS to turn IAM authentication on.
pub const RETRY_SOON: Duration = Duration::from_secs(30);
/// How long a throttled answer is kept (reconciles meanwhile do not call AWS).
pub const THROTTLED_HOLD: Duration = Duration::from_secs(120);

/// Cached AWS-side checks.
pub struct AwsCheckCache {
    aws: Option<AwsContext>,
    recheck: Duration,
    entries: Mutex<HashMap<String, (i64, Instant, AwsCheck)>>,
}

impl AwsCheckCache {
    /// A cache; `aws` is `None` when AWS checks are off. Each Database's calls use its own
    /// assume-role chain, cached in `aws` (the same cache as the proxy's).
    pub fn new(aws: Option<AwsContext>, recheck: Duration) -> Self {
        Self { aws, recheck, entries: Mutex::default() }
    }

    /// The operator's AWS state (credential chains), unless AWS calls are off.
    pub fn context(&self) -> Option<&AwsContext> {
        self.aws.as_ref()
    }

    /// How long `check` stays fresh.
    fn lifetime(&self, check: &AwsCheck) -> Duration {
        if check.retry_soon {
            RETRY_SOON.min(self.recheck)
        } else if check.throttled {
            THROTTLED_HOLD.min(self.recheck)
        } else {
            self.recheck
        }
    }

    /// The current check for `db`, calling AWS when nothing fresh is cached.
    pub async fn check(&self, db: &Database) -> AwsCheck {
        let Some(aws) = &self.aws else {
            return AwsCheck::not_checked("AWS-side checks are turned off for this operator (--aws-checks=false)");
        };
        let (uid, generation) = (db.uid().unwrap_or_default(), db.metadata.generation.unwrap_or(0));
        if let Some((g, at, check)) = self.lock().get(&uid)
            && *g == generation
            && at.elapsed() < self.lifetime(check)
        {
            return check.clone();
        }
        let check = check_database(&db.spec, aws, Caller::Operator).await;
        self.lock().insert(uid, (generation, Instant::now(), check.clone()));
        check
    }

    /// Forgets a deleted Database.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant, AwsCheck)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
