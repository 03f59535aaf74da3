//! AWS: one shared credential provider per process, assume-role chains with a cache, RDS IAM
//! auth tokens, the rule that tokens only go to AWS database endpoints, and the RDS side of a
//! Database (is IAM authentication on).

mod cache;
mod chain;
mod endpoint;
pub mod iam;
pub mod imds;
pub mod inventory;
pub mod rds;
pub mod region;
mod roles;
mod services;
mod token;
mod web_identity;

pub use cache::CachedCredentials;
pub use chain::{Attempt, ChainReport, ReportingChain};
pub use endpoint::{EndpointError, EndpointPolicy, SignedRequestEndpointError, StsHostError};
pub use roles::{RoleError, partition_of, role_arn, session_name};
pub use services::Service;
pub use token::{RdsAuthToken, rds_auth_token};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// Errors of the AWS layer. Messages never contain keys, tokens or signed URLs.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No provider of the default chain produced credentials.
    #[error("no AWS credentials: {detail}")]
    NoCredentials {
        detail: String,
        #[source]
        source: aws_credential_types::provider::error::CredentialsError,
    },
    /// STS refused or failed an AssumeRole call.
    #[error("{}", assume_role_help(.role_arn, .caller.as_deref(), .external_id.as_deref(), .detail))]
    AssumeRole { role_arn: String, caller: Option<String>, external_id: Option<String>, detail: String },
    /// Signing the RDS token failed.
    #[error("cannot sign the RDS IAM auth token: {0}")]
    Sign(String),
    /// A role reference or chain is invalid.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The endpoint is not one a token may be sent to.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

fn assume_role_help(role_arn: &str, caller: Option<&str>, external_id: Option<&str>, detail: &str) -> String {
    let who = caller.unwrap_or("the proxy's identity");
    let ext = external_id
        .map(|id| {
            format!(
                "\n  - the trust policy's statement has the condition {{\"StringEquals\": {{\"sts:ExternalId\": \"{id}\"}}}}, the externalId of the Database"
            )
        })
        .unwrap_or_default();
    format!(
        "sts:AssumeRole on {role_arn} failed: {detail}\nCheck:\n  - the trust policy of {role_arn} allows {{\"Principal\": {{\"AWS\": \"{who}\"}}, \"Action\": \"sts:AssumeRole\"}}{ext}\n  - {who} has an IAM policy allowing sts:AssumeRole on {role_arn}\n  - no permissions boundary or SCP denies sts:AssumeRole to {who}"
    )
}

/// One assume-role hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The role to assume.
    pub role_arn: String,
    /// The role session name.
    pub session_name: String,
}

/// Describes an SDK error by error code and message (never credentials).
pub fn describe_sdk_error<E, R>(e: &aws_sdk_sts::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_sts::error::SdkError;
    match e {
        SdkError::ServiceError(_) => {
            let (code, message) = error_code_and_message(e);
            format!("{}: {}", code.as_deref().unwrap_or("service error"), message.as_deref().unwrap_or("no message"))
        }
        other => cache::error_chain(other),
    }
}

/// The error code and message of a service error. When the SDK could not read them (an error
/// document in another shape, as moto writes for denied calls: `<ErrorResponse><Errors><Error>`),
/// they are taken from the raw XML body, and a 403 without a code counts as `AccessDenied`.
pub fn error_code_and_message<E, R>(e: &aws_sdk_sts::error::SdkError<E, R>) -> (Option<String>, Option<String>)
where
    E: aws_sdk_sts::error::ProvideErrorMetadata,
    R: 'static,
{
    let aws_sdk_sts::error::SdkError::ServiceError(ctx) = e else {
        return (None, None);
    };
    let (code, message) = (ctx.err().code().map(str::to_owned), ctx.err().message().map(str::to_owned));
    if code.is_some() {
        return (code, message);
    }
    let Some(raw) = (ctx.raw() as &dyn std::any::Any).downcast_ref::<aws_sdk_sts::config::http::HttpResponse>() else {
        return (code, message);
    };
    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
    let element = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].trim().to_owned()).filter(|v| !v.is_empty())
    };
    let code = element("Code").or_else(|| (raw.status().as_u16() == 403).then(|| "AccessDenied".to_owned()));
    (code, message.or_else(|| element("Message")))
}

/// Error codes with which AWS says "too many requests" (the SDK's standard retry classifier
/// treats the same codes as throttling).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Whether an error code is one of AWS's throttling codes.
pub fn is_throttling_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| THROTTLING_CODES.contains(&c))
}

/// Whether AWS refused the call for its rate (after the SDK's own retries).
pub fn is_throttling<E, R>(e: &aws_sdk_sts::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_sts::error::ProvideErrorMetadata,
    R: 'static,
{
    is_throttling_code(error_code_and_message(e).0.as_deref())
}

/// Process-wide AWS state: the SDK configuration loaded once, the default chain behind a
/// cache, and one cached provider per assume-role chain.
#[derive(Clone)]
pub struct AwsContext {
    refresh_ahead: std::time::Duration,
    sdk: SdkConfig,
    chain: Option<Arc<ReportingChain>>,
    region: region::RegionFound,
    base: Arc<CachedCredentials>,
    chains: Arc<Mutex<HashMap<ChainKey, Arc<CachedCredentials>>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChainKey {
    hops: Vec<Hop>,
    external_id: Option<String>,
    region: String,
}

impl AwsContext {
    /// Loads the AWS configuration and builds the default chain: environment, profile, web
    /// identity (IRSA), container credentials (EKS Pod Identity), IMDS. `AWS_ENDPOINT_URL_STS`
    /// and the other `AWS_ENDPOINT_URL_*` variables are honoured. The default region is resolved
    /// first (environment, profile, IMDS) and its absence logged in one line.
    pub async fn load() -> Self {
        let region = region::resolve().await;
        match &region.region {
            Some(_) => tracing::debug!(region = %region.describe(), "AWS region"),
            None => tracing::info!("{}", region::NOT_FOUND),
        }
        let sdk = aws_config::defaults(BehaviorVersion::latest()).region(region.region.clone()).load().await;
        let chain = Arc::new(ReportingChain::default_chain(sdk.region().cloned()));
        let base = Arc::new(CachedCredentials::new(SharedCredentialsProvider::new(ChainHandle(chain.clone()))));
        Self { refresh_ahead: cache::REFRESH_AHEAD, sdk, chain: Some(chain), region, base, chains: Arc::default() }
    }

    /// Builds the context from an already loaded SDK configuration and its credentials.
    pub fn from_sdk_config(sdk: SdkConfig) -> Self {
        let base_provider = sdk.credentials_provider().unwrap_or_else(|| SharedCredentialsProvider::new(cache::NoCredentialSource));
        let base = Arc::new(CachedCredentials::new(base_provider));
        let region = region::RegionFound { region: sdk.region().cloned(), source: Some(region::sources::SDK_CONFIG) };
        Self { refresh_ahead: cache::REFRESH_AHEAD, sdk, chain: None, region, base, chains: Arc::default() }
    }

    /// The default region and where it came from.
    pub fn region(&self) -> &region::RegionFound {
        &self.region
    }

    /// Refresh assumed-role credentials this long before they expire (five minutes by
    /// default; tests use more to force refreshes).
    pub fn with_refresh_ahead(mut self, refresh_ahead: std::time::Duration) -> Self {
        self.refresh_ahead = refresh_ahead;
        self
    }

    /// The SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The SDK configuration with `credentials` as its provider (for STS/RDS API clients).
    pub fn sdk_config_with(&self, credentials: Arc<CachedCredentials>) -> SdkConfig {
        self.sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(cache::BaseHop(credentials))).build()
    }

    /// The default chain's credentials (cached).
    pub fn base(&self) -> Arc<CachedCredentials> {
        self.base.clone()
    }

    /// What the default chain tried last, and which source won.
    pub fn chain_report(&self) -> Option<ChainReport> {
        self.chain.as_ref().map(|c| c.report())
    }

    /// The credentials for a database: the default chain, or the roles in `hops` assumed in
    /// turn (at most two; the external ID goes on the first), cached per chain.
    pub fn credentials_for_hops(&self, hops: Vec<Hop>, external_id: Option<&str>, region: &str) -> Result<Arc<CachedCredentials>, AwsError> {
        if hops.len() > 2 {
            return Err(AwsError::Role(RoleError::TooManyHops(hops.len())));
        }
        Ok(self.chain(hops, external_id, region))
    }

    /// The credentials for a database with an optional first hop (`spec.aws.assumeRoleArn`).
    pub fn credentials_for(&self, assume_role_arn: Option<&str>, external_id: Option<&str>, region: &str) -> Arc<CachedCredentials> {
        let hops = assume_role_arn.map(|arn| Hop { role_arn: arn.to_owned(), session_name: "portcullis".into() }).into_iter().collect();
        self.chain(hops, external_id, region)
    }

    /// The cached provider of a chain of hops (length already checked), building each prefix once.
    fn chain(&self, hops: Vec<Hop>, external_id: Option<&str>, region: &str) -> Arc<CachedCredentials> {
        if hops.is_empty() {
            return self.base.clone();
        }
        let key = ChainKey { hops, external_id: external_id.map(str::to_owned), region: region.to_owned() };
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = chains.get(&key) {
            return found.clone();
        }
        let mut current = self.base.clone();
        for (i, hop) in key.hops.iter().enumerate() {
            let prefix = ChainKey { hops: key.hops[..=i].to_vec(), external_id: key.external_id.clone(), region: key.region.clone() };
            current = chains
                .entry(prefix)
                .or_insert_with(|| {
                    let ext = if i == 0 { key.external_id.clone() } else { None };
                    Arc::new(CachedCredentials::assume_role(current.clone(), hop.clone(), ext, region.to_owned(), self.sdk.clone(), self.refresh_ahead))
                })
                .clone();
        }
        current
    }
}

/// Lets the shared chain be wrapped by the cache.
#[derive(Debug)]
struct ChainHandle(Arc<ReportingChain>);

impl ProvideCredentials for ChainHandle {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.provide_credentials()
    }
}

impl std::fmt::Debug for AwsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsContext").field("region", &self.sdk.region()).finish_non_exhaustive()
    }
}
