//! The RDS side of a `Database`: finds the RDS instance or Aurora/DocumentDB cluster behind
//! its endpoint (DescribeDBInstances, DescribeDBClusters), checks that it accepts IAM
//! authentication (DocumentDB, through aws-sdk-docdb: 5.0+ with TLS, DescribeDBClusterParameters) and, for the
//! operator when `spec.aws.enableIamAuth` asks, turns it on. The one answer to "is IAM auth
//! on?": the operator's `IamAuthEnabled` condition and `portcullis doctor` both ask here.

mod api;
mod docdb;
mod found;
#[cfg(test)]
mod tests;

pub use found::{DbKind, DbRef, version_below};

use aws_sdk_rds::Client;
use aws_sdk_rds::config::Region;
use aws_types::SdkConfig;

use super::{AwsContext, EndpointPolicy};
use crate::crd::{DatabaseSpec, Protocol, region_from_rds_host, split_endpoint};
use api::Rds;
use found::Found;

/// The oldest DocumentDB engine version with MONGODB-AWS (IAM) authentication.
const DOCDB_MIN_VERSION: &str = "5.0.0";

/// Who asks, which decides the wording of failures and whether anything may be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator: may turn IAM authentication on when the spec asks.
    Operator,
    /// `portcullis doctor`: only looks.
    Doctor,
}

impl Caller {
    /// How failure messages name the caller, e.g. "the operator".
    fn name(self) -> &'static str {
        match self {
            Caller::Operator => "the operator",
            Caller::Doctor => "portcullis doctor",
        }
    }
}

/// The outcome of the check; becomes the `IamAuthEnabled` condition, or a line of the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCheck {
    /// The condition's status.
    pub status: CheckStatus,
    /// The condition's reason (PascalCase): Enabled, Disabled, Enabling, EndpointMismatch, NotFound, EngineTooOld,
    /// TlsDisabled, CheckFailed or NotChecked.
    pub reason: &'static str,
    /// What to do, in words a platform engineer acts on; never a secret.
    pub message: String,
    /// The engine version of the database, when found.
    pub engine_version: Option<String>,
    /// The DbiResourceId or DbClusterResourceId, when found.
    pub resource_id: Option<String>,
    /// The instance or cluster found behind the endpoint.
    pub database: Option<DbRef>,
    /// When IAM authentication is off: the AWS CLI command that turns it on.
    pub enable_command: Option<String>,
    /// True after a Modify call was sent: check again in about 30 seconds.
    pub retry_soon: bool,
    /// AWS throttled a call (after the SDK's own retries): check again after a longer pause.
    pub throttled: bool,
    /// Whose credentials made the calls: the role assumed for the database
    /// (`spec.aws.assumeRoleArn`), or `None` for the caller's own.
    pub identity: Option<String>,
}

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The database accepts IAM authentication.
    True,
    /// It does not (yet).
    False,
    /// The check was not made or failed.
    Unknown,
}

impl CheckStatus {
    /// The status as a Kubernetes condition writes it.
    pub fn as_str(self) -> &'static str {
        use crate::crd::conditions::status;
        match self {
            CheckStatus::True => status::TRUE,
            CheckStatus::False => status::FALSE,
            CheckStatus::Unknown => status::UNKNOWN,
        }
    }
}

impl AwsCheck {
    fn new(status: CheckStatus, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            engine_version: None,
            resource_id: None,
            database: None,
            enable_command: None,
            retry_soon: false,
            throttled: false,
            identity: None,
        }
    }

    /// A check that was not made, and why.
    pub fn not_checked(message: impl Into<String>) -> Self {
        Self::new(CheckStatus::Unknown, "NotChecked", message)
    }

    fn failed(message: impl Into<String>) -> Self {
        Self::new(CheckStatus::Unknown, "CheckFailed", message)
    }

    fn with_db(mut self, db: &Found) -> Self {
        self.engine_version = db.version.clone();
        self.resource_id = db.resource_id.clone();
        self.database = Some(db.reference());
        self
    }
}

/// Checks the AWS side of `spec` under the database's own identity: the caller's credentials,
/// or the role in `spec.aws.assumeRoleArn` assumed from them (with `spec.aws.externalId`),
/// cached in `aws` like the proxy's. Finds the database, checks IAM authentication and, when
/// the caller is the operator and `spec.aws.enableIamAuth` asks for it, turns it on. Never
/// fails: problems become the verdict, which names the identity that made the calls.
pub async fn check_database(spec: &DatabaseSpec, aws: &AwsContext, caller: Caller) -> AwsCheck {
    let role = spec.aws.assume_role_arn.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let region = database_region(spec, aws.sdk_config());
    let sdk = match &region {
        Some(region) => aws.sdk_config_with(aws.credentials_for(role, spec.aws.external_id.as_deref(), region)),
        None => aws.sdk_config().clone(),
    };
    let check = match run(spec, &sdk, caller, role).await {
        Ok(check) | Err(check) => check,
    };
    AwsCheck { identity: role.map(str::to_owned), ..check }
}

/// An RDS API client for `region` (`AWS_ENDPOINT_URL_RDS` is honoured).
pub fn client(sdk: &SdkConfig, region: &str) -> Client {
    Client::from_conf(aws_sdk_rds::config::Builder::from(sdk).region(Region::new(region.to_owned())).build())
}

/// The region of a database: spec.aws.region, else the one in an RDS host name, else the
/// caller's default.
pub fn database_region(spec: &DatabaseSpec, sdk: &SdkConfig) -> Option<String> {
    let host = spec.endpoint.as_deref().and_then(|e| split_endpoint(e, spec.protocol).ok()).map(|(h, _)| h);
    region_for(spec, host.as_deref(), sdk)
}

/// spec.aws.region, else the region in the RDS host name `host`, else the caller's own region.
fn region_for(spec: &DatabaseSpec, host: Option<&str>, sdk: &SdkConfig) -> Option<String> {
    spec.aws.region.clone().filter(|r| !r.trim().is_empty()).or_else(|| host.and_then(region_from_rds_host)).or_else(|| sdk.region().map(|r| r.to_string()))
}

/// The check; `Err` carries an early verdict.
async fn run(spec: &DatabaseSpec, sdk: &SdkConfig, caller: Caller, role: Option<&str>) -> Result<AwsCheck, AwsCheck> {
    if spec.protocol == Protocol::Dynamodb {
        return Ok(AwsCheck::not_checked("DynamoDB has no IAM database authentication setting; access is by IAM role"));
    }
    let host = endpoint_host(spec, caller)?;
    let ids = Ids::from_spec(spec);
    let aws_host = EndpointPolicy::default().check(&host).is_ok();
    if ids.is_empty() && !aws_host {
        return Ok(AwsCheck::not_checked(format!(
            "{host} is not an RDS or DocumentDB endpoint (*.rds.amazonaws.com, *.docdb.amazonaws.com), so {} cannot tell which \
             database it is and did not check IAM authentication. To enable the check, set spec.aws.rds.instanceId (RDS instance) or \
             spec.aws.rds.clusterId (Aurora or DocumentDB cluster)",
            caller.name()
        )));
    }
    let region = pick_region(spec, &host, sdk)?;
    let client = client(sdk, &region);
    let enable_iam_auth = caller == Caller::Operator && spec.aws.enable_iam_auth;
    let rds = Rds { client, region, host, aws_host, enable_iam_auth, caller, role: role.map(str::to_owned) };
    if spec.protocol == Protocol::Mongodb {
        let client = crate::aws::inventory::docdb_client(sdk, &rds.region);
        return docdb::DocDb { client, rds: &rds }.check(&ids).await;
    }
    let db = rds.locate(&ids).await?;
    rds.check_iam(db).await
}

/// The host of `spec.endpoint`.
fn endpoint_host(spec: &DatabaseSpec, caller: Caller) -> Result<String, AwsCheck> {
    let endpoint = spec
        .endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| AwsCheck::not_checked("spec.endpoint is not set, so there is no database to check"))?;
    split_endpoint(endpoint, spec.protocol)
        .map(|(host, _)| host)
        .map_err(|e| AwsCheck::not_checked(format!("spec.endpoint is not usable ({e}); fix it and {} will check IAM authentication", caller.name())))
}

/// spec.aws.region, else the region in an RDS host name, else the caller's own region.
fn pick_region(spec: &DatabaseSpec, host: &str, sdk: &SdkConfig) -> Result<String, AwsCheck> {
    region_for(spec, Some(host), sdk)
        .ok_or_else(|| AwsCheck::failed("no AWS region is known for this database: set spec.aws.region (or AWS_REGION for the operator)"))
}

/// The identifiers in spec.aws.rds (blank ones ignored).
struct Ids<'a> {
    instance: Option<&'a str>,
    cluster: Option<&'a str>,
}

impl<'a> Ids<'a> {
    fn from_spec(spec: &'a DatabaseSpec) -> Self {
        let rds = spec.aws.rds.as_ref();
        let pick = |id: Option<&'a String>| id.map(|s| s.trim()).filter(|s| !s.is_empty());
        Self { instance: pick(rds.and_then(|r| r.instance_id.as_ref())), cluster: pick(rds.and_then(|r| r.cluster_id.as_ref())) }
    }

    fn is_empty(&self) -> bool {
        self.instance.is_none() && self.cluster.is_none()
    }
}

/// Why a DocumentDB engine version cannot log in with IAM (older than 5.0), for discovery.
pub fn documentdb_version_blocker(version: Option<&str>) -> Option<String> {
    let version = version.filter(|v| found::version_below(v, DOCDB_MIN_VERSION))?;
    Some(format!("DocumentDB {version} has no IAM authentication (MONGODB-AWS needs 5.0 or later)"))
}
