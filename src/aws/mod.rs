//! AWS: one shared credential provider per process, assume-role chains with a cache, RDS IAM
//! auth tokens, and the rule that tokens only go to AWS database endpoints.

mod cache;
mod chain;
mod endpoint;
pub mod iam;
pub mod imds;
mod roles;
mod token;
mod web_identity;

pub use cache::CachedCredentials;
pub use chain::{Attempt, ChainReport, ReportingChain};
pub use roles::{RoleError, partition_of, role_arn, session_name};
pub use endpoint::{EndpointError, EndpointPolicy, region_from_rds_host};
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
    NoCredentials { detail: String, #[source] source: aws_credential_types::provider::error::CredentialsError },
    /// STS refused or failed an AssumeRole call.
    #[error("{}", assume_role_help(.role_arn, .external_id.as_deref(), .detail))]
    AssumeRole { role_arn: String, external_id: Option<String>, detail: String },
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

fn assume_role_help(role_arn: &str, external_id: Option<&str>, detail: &str) -> String {
    let ext = external_id
        .map(|_| "\n  - the trust policy's sts:ExternalId condition equals the externalId in the Database (the value is not shown here)")
        .unwrap_or("");
    format!(
        "sts:AssumeRole on {role_arn} failed: {detail}\nCheck:\n  - the role's trust policy allows the proxy's identity as Principal with Action sts:AssumeRole{ext}\n  - the proxy's identity has an IAM policy allowing sts:AssumeRole on {role_arn}\n  - no permissions boundary or SCP denies sts:AssumeRole"
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

/// Process-wide AWS state: the SDK configuration loaded once, the default chain behind a
/// cache, and one cached provider per assume-role chain.
#[derive(Clone)]
pub struct AwsContext {
    sdk: SdkConfig,
    chain: Option<Arc<ReportingChain>>,
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
    /// and the other `AWS_ENDPOINT_URL_*` variables are honoured.
    pub async fn load() -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let chain = Arc::new(ReportingChain::default_chain(sdk.region().cloned()));
        let base = Arc::new(CachedCredentials::new(SharedCredentialsProvider::new(ChainHandle(chain.clone()))));
        Self { sdk, chain: Some(chain), base, chains: Arc::default() }
    }

    /// Builds the context from an already loaded SDK configuration and its credentials.
    pub fn from_sdk_config(sdk: SdkConfig) -> Self {
        let base_provider = sdk.credentials_provider().unwrap_or_else(|| SharedCredentialsProvider::new(cache::NoCredentialSource));
        let base = Arc::new(CachedCredentials::new(base_provider));
        Self { sdk, chain: None, base, chains: Arc::default() }
    }

    /// The SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
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
        if hops.is_empty() {
            return Ok(self.base.clone());
        }
        let key = ChainKey { hops, external_id: external_id.map(str::to_owned), region: region.to_owned() };
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = chains.get(&key) {
            return Ok(found.clone());
        }
        let mut current = self.base.clone();
        for (i, hop) in key.hops.iter().enumerate() {
            let prefix = ChainKey { hops: key.hops[..=i].to_vec(), external_id: key.external_id.clone(), region: key.region.clone() };
            current = chains
                .entry(prefix)
                .or_insert_with(|| {
                    let ext = if i == 0 { key.external_id.clone() } else { None };
                    Arc::new(CachedCredentials::assume_role(current.clone(), hop.clone(), ext, region.to_owned(), self.sdk.clone()))
                })
                .clone();
        }
        Ok(current)
    }

    /// The credentials for a database with an optional first hop (`spec.aws.assumeRoleArn`).
    pub fn credentials_for(&self, assume_role_arn: Option<&str>, external_id: Option<&str>, region: &str) -> Arc<CachedCredentials> {
        let hops = assume_role_arn.map(|arn| Hop { role_arn: arn.to_owned(), session_name: "portcullis".into() }).into_iter().collect();
        self.credentials_for_hops(hops, external_id, region).unwrap_or_else(|_| self.base.clone())
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
