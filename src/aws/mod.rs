//! AWS: one shared credential provider per process, assume-role chains with a cache, RDS IAM
//! auth tokens, and the rule that tokens only go to AWS database endpoints.

mod cache;
mod endpoint;
mod token;

pub use cache::CachedCredentials;
pub use endpoint::{EndpointError, EndpointPolicy, region_from_rds_host};
pub use token::{RdsAuthToken, rds_auth_token};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

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

/// Process-wide AWS state: the SDK configuration loaded once, the default-chain credentials
/// behind a cache, and one cached provider per assume-role chain.
#[derive(Clone)]
pub struct AwsContext {
    sdk: SdkConfig,
    base: Arc<CachedCredentials>,
    chains: Arc<Mutex<HashMap<ChainKey, Arc<CachedCredentials>>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChainKey {
    role_arn: String,
    external_id: Option<String>,
    region: String,
}

impl AwsContext {
    /// Loads the AWS configuration from the default chain (environment, profile, web identity
    /// (IRSA), container credentials (EKS Pod Identity), IMDS). `AWS_ENDPOINT_URL_STS` and the
    /// other `AWS_ENDPOINT_URL_*` variables are honoured.
    pub async fn load() -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config(sdk)
    }

    /// Builds the context from an already loaded SDK configuration.
    pub fn from_sdk_config(sdk: SdkConfig) -> Self {
        let base_provider = sdk.credentials_provider().unwrap_or_else(|| {
            SharedCredentialsProvider::new(cache::NoCredentialSource)
        });
        let base = Arc::new(CachedCredentials::new(base_provider));
        Self { sdk, base, chains: Arc::default() }
    }

    /// The SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The credentials for a database: the default chain, or the role `assume_role_arn`
    /// assumed from it (with the external ID), cached per chain.
    pub fn credentials_for(&self, assume_role_arn: Option<&str>, external_id: Option<&str>, region: &str) -> Arc<CachedCredentials> {
        let Some(role_arn) = assume_role_arn else { return self.base.clone() };
        let key = ChainKey { role_arn: role_arn.to_owned(), external_id: external_id.map(str::to_owned), region: region.to_owned() };
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        chains
            .entry(key)
            .or_insert_with(|| {
                Arc::new(CachedCredentials::assume_role(
                    self.base.clone(),
                    role_arn.to_owned(),
                    external_id.map(str::to_owned),
                    region.to_owned(),
                    self.sdk.clone(),
                ))
            })
            .clone()
    }
}

impl std::fmt::Debug for AwsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsContext").field("region", &self.sdk.region()).finish_non_exhaustive()
    }
}
