//! Remembers AWS-side check results per Database (uid and generation) so reconciles triggered
//! by child objects do not call AWS again; results expire after the re-check interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_types::SdkConfig;
use kube::ResourceExt;

use super::aws_checks::{AwsCheck, CheckStatus, check_database};
use crate::crd::Database;

/// Cached AWS-side checks.
pub struct AwsCheckCache {
    sdk: Option<SdkConfig>,
    recheck: Duration,
    entries: Mutex<HashMap<String, (i64, Instant, AwsCheck)>>,
}

impl AwsCheckCache {
    /// A cache; `sdk` is `None` when AWS checks are off.
    pub fn new(sdk: Option<SdkConfig>, recheck: Duration) -> Self {
        Self { sdk, recheck, entries: Mutex::default() }
    }

    /// The current check for `db`, calling AWS when nothing fresh is cached.
    pub async fn check(&self, db: &Database) -> AwsCheck {
        let Some(sdk) = &self.sdk else {
            return AwsCheck {
                status: CheckStatus::Unknown,
                reason: "NotChecked",
                message: "AWS-side checks are turned off for this operator (--aws-checks=false)".into(),
                engine_version: None,
                resource_id: None,
                retry_soon: false,
            };
        };
        let (uid, generation) = (db.uid().unwrap_or_default(), db.metadata.generation.unwrap_or(0));
        if let Some((g, at, check)) = self.lock().get(&uid)
            && *g == generation
            && at.elapsed() < if check.retry_soon { Duration::from_secs(30).min(self.recheck) } else { self.recheck }
        {
            return check.clone();
        }
        let check = check_database(&db.spec, sdk).await;
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
