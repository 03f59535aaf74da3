//! A credential cache with refresh-ahead: concurrent callers wait for one refresh.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_types::region::Region;
use tokio::sync::{Mutex, OnceCell};

use super::{AwsError, Hop};

/// Refresh credentials this long before they expire.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Caches the credentials of one provider (the default chain, or one assume-role chain).
#[derive(Debug)]
pub struct CachedCredentials {
    refresh_ahead: Duration,
    provider: OnceCell<SharedCredentialsProvider>,
    what: Source,
    current: Mutex<Option<Credentials>>,
}

#[derive(Debug, Clone)]
enum Source {
    Chain,
    AssumeRole { hop: Hop, external_id: Option<String>, region: String, sdk: Box<SdkConfig>, base: Arc<CachedCredentials> },
}

impl CachedCredentials {
    /// Caches `provider` (the default chain).
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self { refresh_ahead: REFRESH_AHEAD, provider: OnceCell::new_with(Some(provider)), what: Source::Chain, current: Mutex::new(None) }
    }

    /// Caches the role of `hop` assumed from `base` (with the external ID, when given).
    /// Sessions last one hour, the limit of chained roles.
    pub fn assume_role(base: Arc<CachedCredentials>, hop: Hop, external_id: Option<String>, region: String, sdk: SdkConfig, refresh_ahead: Duration) -> Self {
        Self {
            refresh_ahead,
            provider: OnceCell::new(),
            what: Source::AssumeRole { hop, external_id, region, sdk: Box::new(sdk), base },
            current: Mutex::new(None),
        }
    }

    async fn provider(&self) -> &SharedCredentialsProvider {
        self.provider
            .get_or_init(|| async {
                let Source::AssumeRole { hop, external_id, region, sdk, base } = &self.what else {
                    unreachable!("the default chain's provider is set at construction")
                };
                let mut builder = aws_config::sts::AssumeRoleProvider::builder(hop.role_arn.clone())
                    .session_name(hop.session_name.clone())
                    .session_length(std::time::Duration::from_secs(3600))
                    .region(Region::new(region.clone()))
                    .configure(sdk);
                if let Some(id) = external_id {
                    builder = builder.external_id(id.clone());
                }
                SharedCredentialsProvider::new(builder.build_from_provider(BaseHop(base.clone())).await)
            })
            .await
    }

    /// Current credentials, refreshed when they expire within five minutes. Many concurrent
    /// callers cause exactly one call to the provider.
    pub async fn get(&self) -> Result<Credentials, AwsError> {
        let mut current = self.current.lock().await;
        if let Some(creds) = current.as_ref() {
            let fresh = creds.expiry().is_none_or(|exp| exp > SystemTime::now() + self.refresh_ahead);
            if fresh {
                return Ok(creds.clone());
            }
        }
        let creds = match self.provider().await.provide_credentials().await {
            Ok(c) => c,
            Err(e) => return Err(self.error(e).await),
        };
        *current = Some(creds.clone());
        Ok(creds)
    }

    async fn error(&self, e: CredentialsError) -> AwsError {
        let detail = sts_failure(&e).unwrap_or_else(|| error_chain(&e));
        match &self.what {
            Source::Chain => AwsError::NoCredentials { detail, source: e },
            Source::AssumeRole { hop, external_id, sdk, base, .. } => {
                // Name the principal that tried, for the trust-policy checklist.
                let caller = match Box::pin(base.get()).await {
                    Ok(creds) => {
                        let config = sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(creds)).build();
                        aws_sdk_sts::Client::new(&config).get_caller_identity().send().await.ok().and_then(|o| o.arn().map(str::to_owned))
                    }
                    Err(_) => None,
                };
                AwsError::AssumeRole { role_arn: hop.role_arn.clone(), caller, external_id: external_id.clone(), detail }
            }
        }
    }
}

/// A cache used as a provider (the base of an assume-role hop, or an SDK client's credentials).
#[derive(Debug)]
pub(crate) struct BaseHop(pub(crate) Arc<CachedCredentials>);

impl ProvideCredentials for BaseHop {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move { self.0.get().await.map_err(CredentialsError::provider_error) })
    }
}

/// A provider that never has credentials (when the SDK configuration has no provider at all).
#[derive(Debug)]
pub struct NoCredentialSource;

impl ProvideCredentials for NoCredentialSource {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("no credential provider is configured")))
    }
}

/// Describes an STS AssumeRole failure by its HTTP status, error code and message, when the
/// error chain holds one.
fn sts_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_sdk_sts::error::SdkError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(sdk_error @ SdkError::ServiceError(ctx)) = err.downcast_ref::<SdkError<AssumeRoleError>>() {
            let status = ctx.raw().status().as_u16();
            let (code, message) = super::error_code_and_message(sdk_error);
            let code = code.unwrap_or_else(|| format!("HTTP {status}"));
            let message = message.unwrap_or_else(|| "no message".into());
            return Some(format!("STS answered HTTP {status} {code}: {message}"));
        }
        next = err.source();
    }
    None
}

/// Joins an error and its sources into one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
}
