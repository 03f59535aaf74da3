//! The RDS API calls of the check: locating the database, describing it, and (operator only)
//! ModifyDBInstance/ModifyDBCluster to turn IAM authentication on. DocumentDB goes through
//! aws-sdk-docdb (`docdb.rs`).

use aws_sdk_rds::Client;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};

use super::found::{DbKind, Found, cluster_endpoints, enable_command, instance_endpoints, noun, serves};
use super::{AwsCheck, Caller, CheckStatus, Ids};
use crate::aws::{describe_sdk_error, is_throttling};

/// The read permissions the check needs, named in failure messages.
const DESCRIBE_PERMISSIONS: &str = "rds:DescribeDBInstances, rds:DescribeDBClusters and rds:DescribeDBClusterParameters";

/// An RDS API client for one database's region and host.
pub(super) struct Rds {
    pub(super) client: Client,
    pub(super) region: String,
    pub(super) host: String,
    /// The host is an RDS/DocumentDB name, so it can be compared with the database's endpoints
    /// (a private alias such as `orders.db.internal` cannot).
    pub(super) aws_host: bool,
    /// Turn IAM authentication on when it is off (the operator, when the spec asks).
    pub(super) enable_iam_auth: bool,
    pub(super) caller: Caller,
    /// The role assumed for the database (`spec.aws.assumeRoleArn`), whose policy must allow the calls.
    pub(super) role: Option<String>,
}

impl Rds {
    /// A failed API call.
    fn failure<E, R>(&self, action: &str, e: &SdkError<E, R>) -> AwsCheck
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let check = AwsCheck::failed(format!("{action} in {} failed: {}. {}", self.region, describe_sdk_error(e), self.whose_policy(DESCRIBE_PERMISSIONS)));
        AwsCheck { throttled: is_throttling(e), ..check }
    }

    /// "Check that … allows ACTIONS", naming the identity that made the calls.
    pub(super) fn whose_policy(&self, actions: &str) -> String {
        match &self.role {
            Some(role) => format!(
                "{} assumes {role} for this database (spec.aws.assumeRoleArn): check that it may (trust policy, external ID) and that \
                 the role's IAM policy allows {actions}",
                capitalised(self.caller.name())
            ),
            None => format!("Check that {} has AWS credentials (IRSA or EKS Pod Identity) and that its IAM policy allows {actions}", self.caller.name()),
        }
    }

    /// Whose IAM identity needs a permission, in words.
    pub(super) fn identity_name(&self) -> String {
        match &self.role {
            Some(role) => format!("role {role} (spec.aws.assumeRoleArn)"),
            None => format!("{}'s IAM identity", self.caller.name()),
        }
    }

    /// The database named in spec.aws.rds (the one whose endpoints include an RDS host; the first
    /// named for a private alias), or discovered by its host.
    pub(super) async fn locate(&self, ids: &Ids<'_>) -> Result<Found, AwsCheck> {
        if ids.is_empty() {
            return self.discover().await;
        }
        let mut mismatched = Vec::new();
        if let Some(id) = ids.instance {
            let db = self.instance(id).await?;
            if db.serves(&self.host) || !self.aws_host {
                return Ok(db);
            }
            mismatched.push(db);
        }
        if let Some(id) = ids.cluster {
            let db = self.cluster(id).await?;
            if db.serves(&self.host) || !self.aws_host {
                return Ok(db);
            }
            mismatched.push(db);
        }
        Err(self.mismatch(&mismatched))
    }

    fn mismatch(&self, dbs: &[Found]) -> AwsCheck {
        let named: Vec<String> = dbs.iter().map(|db| format!("{} (endpoints: {})", db.name(), db.endpoints.join(", "))).collect();
        let msg = format!(
            "spec.endpoint's host {} is not an endpoint of {}. Fix spec.endpoint or spec.aws.rds (an Aurora or DocumentDB cluster \
             endpoint goes with clusterId, an instance endpoint with instanceId)",
            self.host,
            named.join(" or ")
        );
        let check = AwsCheck::new(CheckStatus::False, "EndpointMismatch", msg);
        match dbs.first() {
            Some(db) => check.with_db(db),
            None => check,
        }
    }

    fn id_not_found(&self, kind: DbKind, id: &str) -> AwsCheck {
        let (field, action, what) = match kind {
            DbKind::Instance => ("instanceId", "rds:DescribeDBInstances", "RDS instance"),
            DbKind::Cluster => ("clusterId", "rds:DescribeDBClusters", "DB cluster"),
        };
        AwsCheck::new(
            CheckStatus::False,
            "NotFound",
            format!(
                "{what} {id:?} was not found in {}. Check spec.aws.rds.{field} and spec.aws.region; {} needs {action} to see it",
                self.region,
                self.identity_name()
            ),
        )
    }

    async fn instance(&self, id: &str) -> Result<Found, AwsCheck> {
        match self.client.describe_db_instances().db_instance_identifier(id).send().await {
            Ok(out) => out.db_instances().first().map(Found::from_instance).ok_or_else(|| self.id_not_found(DbKind::Instance, id)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => Err(self.id_not_found(DbKind::Instance, id)),
            Err(e) => Err(self.failure("DescribeDBInstances", &e)),
        }
    }

    async fn cluster(&self, id: &str) -> Result<Found, AwsCheck> {
        match self.client.describe_db_clusters().db_cluster_identifier(id).send().await {
            Ok(out) => out.db_clusters().first().map(Found::from_cluster).ok_or_else(|| self.id_not_found(DbKind::Cluster, id)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => Err(self.id_not_found(DbKind::Cluster, id)),
            Err(e) => Err(self.failure("DescribeDBClusters", &e)),
        }
    }

    /// The instance or cluster with the host among its endpoints (all pages of both lists).
    async fn discover(&self) -> Result<Found, AwsCheck> {
        let mut instances = self.client.describe_db_instances().into_paginator().items().send();
        while let Some(item) = instances.next().await {
            let instance = item.map_err(|e| self.failure("DescribeDBInstances", &e))?;
            if serves(&self.host, instance_endpoints(&instance)) {
                return Ok(Found::from_instance(&instance));
            }
        }
        let mut clusters = self.client.describe_db_clusters().into_paginator().items().send();
        while let Some(item) = clusters.next().await {
            let cluster = item.map_err(|e| self.failure("DescribeDBClusters", &e))?;
            if serves(&self.host, cluster_endpoints(&cluster)) {
                return Ok(Found::from_cluster(&cluster));
            }
        }
        Err(AwsCheck::new(
            CheckStatus::False,
            "NotFound",
            format!(
                "no RDS instance, Aurora or DocumentDB cluster in {} has the endpoint {}. Check spec.endpoint and spec.aws.region, or name \
                 the database in spec.aws.rds.instanceId or clusterId. {} needs rds:DescribeDBInstances and \
                 rds:DescribeDBClusters to find it",
                self.region,
                self.host,
                capitalised(&self.identity_name())
            ),
        ))
    }

    /// RDS and Aurora: is IAM authentication on; turn it on when asked.
    pub(super) async fn check_iam(&self, db: Found) -> Result<AwsCheck, AwsCheck> {
        if db.iam_enabled {
            let msg = format!("IAM database authentication is enabled on {} ({}, {})", db.name(), db.engine_text(), self.region);
            return Ok(AwsCheck::new(CheckStatus::True, "Enabled", msg).with_db(&db));
        }
        let (kind, owner) = db.iam_owner();
        let owner_name = format!("{} {owner}", noun(kind, &db.engine));
        if db.iam_pending {
            let msg = format!("IAM database authentication is being turned on for {owner_name} (pending modification); checking again shortly");
            return Ok(AwsCheck { retry_soon: true, ..AwsCheck::new(CheckStatus::False, "Enabling", msg).with_db(&db) });
        }
        let command = enable_command(kind, owner, &self.region);
        if !self.enable_iam_auth {
            let msg = format!(
                "IAM database authentication is off on {owner_name} ({}), so the proxy cannot log in with IAM. Turn it on with `{command}`, \
                 or set spec.aws.enableIamAuth: true to let the operator do it",
                db.engine_text(),
            );
            return Ok(AwsCheck { enable_command: Some(command), ..AwsCheck::new(CheckStatus::False, "Disabled", msg).with_db(&db) });
        }
        self.enable_iam(kind, owner).await?;
        let action = if kind == DbKind::Instance { "ModifyDBInstance" } else { "ModifyDBCluster" };
        let msg = format!(
            "IAM database authentication was off on {owner_name}; the operator called {action} to turn it on (apply immediately). \
             This takes a few minutes; checking again shortly"
        );
        Ok(AwsCheck { retry_soon: true, ..AwsCheck::new(CheckStatus::False, "Enabling", msg).with_db(&db) })
    }

    /// ModifyDBInstance or ModifyDBCluster with IAM authentication on, applied immediately.
    async fn enable_iam(&self, kind: DbKind, id: &str) -> Result<(), AwsCheck> {
        let (action, result) = match kind {
            DbKind::Instance => {
                let call = self.client.modify_db_instance().db_instance_identifier(id).enable_iam_database_authentication(true).apply_immediately(true);
                ("ModifyDBInstance", call.send().await.map(drop).map_err(|e| (describe_sdk_error(&e), is_throttling(&e))))
            }
            DbKind::Cluster => {
                let call = self.client.modify_db_cluster().db_cluster_identifier(id).enable_iam_database_authentication(true).apply_immediately(true);
                ("ModifyDBCluster", call.send().await.map(drop).map_err(|e| (describe_sdk_error(&e), is_throttling(&e))))
            }
        };
        result.map_err(|(detail, throttled)| {
            let check = AwsCheck::failed(format!(
                "{action} on {id} in {} failed: {detail}. {} needs rds:{action} on it; or turn IAM authentication on \
                 yourself: `{}`",
                self.region,
                capitalised(&self.identity_name()),
                enable_command(kind, id, &self.region)
            ));
            AwsCheck { throttled, ..check }
        })
    }
}

/// `text` with its first letter in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
