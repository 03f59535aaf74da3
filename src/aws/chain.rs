//! The default credential chain, tried in the SDK's order, remembering which source won and
//! why every other one failed, so "no credentials" can say what was tried.

use std::sync::Mutex;

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_types::region::Region;

use super::cache::error_chain;
use super::web_identity;

/// One provider's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// The provider, e.g. `web identity (IRSA)`.
    pub provider: &'static str,
    /// `ok`, or why it did not provide credentials.
    pub outcome: String,
}

/// What the last resolution tried.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// The provider that produced credentials.
    pub source: Option<&'static str>,
    /// Every provider tried, in order.
    pub attempts: Vec<Attempt>,
}

impl ChainReport {
    /// "environment: not set; profile: …" for error messages.
    pub fn describe(&self) -> String {
        self.attempts.iter().map(|a| format!("{}: {}", a.provider, a.outcome)).collect::<Vec<_>>().join("; ")
    }
}

/// The environment, profile, web identity (IRSA), container (EKS Pod Identity) and IMDS
/// providers, tried in that order.
#[derive(Debug)]
pub struct ReportingChain {
    providers: Vec<(&'static str, SharedCredentialsProvider)>,
    last: Mutex<ChainReport>,
}

/// Provider names, as reported.
pub mod names {
    /// Environment variables.
    pub const ENVIRONMENT: &str = "environment";
    /// Shared config/credentials files.
    pub const PROFILE: &str = "profile";
    /// IRSA.
    pub const WEB_IDENTITY: &str = "web identity (IRSA)";
    /// EKS Pod Identity / ECS.
    pub const CONTAINER: &str = "container (EKS Pod Identity)";
    /// EC2 instance metadata.
    pub const IMDS: &str = "instance metadata (IMDS)";
}

impl ReportingChain {
    /// The default chain for `region`.
    pub fn default_chain(region: Option<Region>) -> Self {
        let conf = ProviderConfig::default().with_region(region);
        let providers = vec![
            (names::ENVIRONMENT, SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new())),
            (names::PROFILE, SharedCredentialsProvider::new(ProfileFileCredentialsProvider::builder().configure(&conf).build())),
            (names::WEB_IDENTITY, SharedCredentialsProvider::new(WebIdentityTokenCredentialsProvider::builder().configure(&conf).build())),
            (names::CONTAINER, SharedCredentialsProvider::new(EcsCredentialsProvider::builder().configure(&conf).build())),
            (names::IMDS, SharedCredentialsProvider::new(ImdsCredentialsProvider::builder().configure(&conf).build())),
        ];
        Self { providers, last: Mutex::new(ChainReport::default()) }
    }

    /// A chain of the given providers (for tests and special set-ups).
    pub fn of(providers: Vec<(&'static str, SharedCredentialsProvider)>) -> Self {
        Self { providers, last: Mutex::new(ChainReport::default()) }
    }

    /// What the last resolution tried.
    pub fn report(&self) -> ChainReport {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn resolve(&self) -> Result<aws_credential_types::Credentials, CredentialsError> {
        let mut report = ChainReport::default();
        let mut result = Err(CredentialsError::not_loaded_no_source());
        for (name, provider) in &self.providers {
            match provider.provide_credentials().await {
                Ok(creds) => {
                    report.attempts.push(Attempt { provider: name, outcome: "ok".into() });
                    report.source = Some(name);
                    result = Ok(creds);
                    break;
                }
                Err(e @ CredentialsError::CredentialsNotLoaded(_)) => {
                    report.attempts.push(Attempt { provider: name, outcome: not_loaded_reason(name, &e) });
                }
                Err(other) => {
                    let mut outcome = error_chain(&other);
                    if *name == names::WEB_IDENTITY
                        && let Some(hint) = web_identity::diagnose()
                    {
                        outcome = format!("{hint} ({outcome})");
                    }
                    report.attempts.push(Attempt { provider: name, outcome });
                    result = Err(CredentialsError::provider_error(format!("the default chain stopped at {name}: {}", report.describe())));
                    break;
                }
            }
        }
        if result.is_err() && report.source.is_none() && report.attempts.len() == self.providers.len() {
            let mut text = format!("every provider of the default chain failed: {}", report.describe());
            if super::imds::should_probe() && self.providers.iter().any(|(n, _)| *n == names::IMDS) {
                let verdict = super::imds::probe(&super::imds::endpoint(), super::imds::PROBE_TIMEOUT).await;
                text.push_str(&format!(". IMDS probe: {}", verdict.explain()));
            }
            result = Err(CredentialsError::not_loaded(text));
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = report;
        result
    }
}

fn not_loaded_reason(name: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let text = error_chain(e);
    match name {
        n if n == names::ENVIRONMENT => "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set".into(),
        n if n == names::WEB_IDENTITY => web_identity::diagnose().unwrap_or_else(|| "AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE are not set (no IRSA)".into()),
        n if n == names::CONTAINER => "AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI are not set (no EKS Pod Identity)".into(),
        _ => text,
    }
}

impl ProvideCredentials for ReportingChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.resolve())
    }
}
