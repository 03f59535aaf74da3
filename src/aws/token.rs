//! RDS IAM authentication tokens (SigV4-presigned `connect` URLs for `rds-db`).

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
use aws_types::region::Region;

use super::{AwsContext, AwsError, CachedCredentials};

/// An RDS IAM auth token. It is a bearer credential for 15 minutes: its `Debug` is redacted and
/// it has no `Display`.
#[derive(Clone)]
pub struct RdsAuthToken(String);

impl RdsAuthToken {
    /// The token, to be sent as the password over TLS only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RdsAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RdsAuthToken(<redacted>)")
    }
}

/// Signs an RDS IAM auth token for `user` at `host:port` with the given credentials. The
/// caller must have checked the endpoint against the [`super::EndpointPolicy`].
pub async fn rds_auth_token(
    aws: &AwsContext,
    credentials: &CachedCredentials,
    host: &str,
    port: u16,
    user: &str,
    region: &str,
) -> Result<RdsAuthToken, AwsError> {
    let creds = credentials.get().await?;
    let config = Config::builder()
        .hostname(host)
        .port(u64::from(port))
        .username(user)
        .region(Region::new(region.to_owned()))
        .credentials(SharedCredentialsProvider::new(creds))
        .expires_in(900)
        .build()
        .map_err(|e| AwsError::Sign(e.to_string()))?;
    let token = AuthTokenGenerator::new(config).auth_token(aws.sdk_config()).await.map_err(|e| AwsError::Sign(e.to_string()))?;
    Ok(RdsAuthToken(token.as_str().to_owned()))
}
