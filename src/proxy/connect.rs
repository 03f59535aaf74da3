//! The upstream steps the engines' login phases share: TCP and TLS to the database, the RDS IAM
//! auth token, and the AWS credentials of a user's role.

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::ProxyState;
use super::session::SessionError;
use super::tls::UpstreamStream;
use super::upstream::Upstream;
use crate::aws::{AwsError, Hop, RdsAuthToken, RoleError, partition_of, rds_auth_token, role_arn, session_name};

/// Opens the TCP connection to `host:port` (within the connect timeout).
pub async fn tcp_to(state: &ProxyState, host: &str, port: u16) -> Result<TcpStream, SessionError> {
    let addr = format!("{host}:{port}");
    let tcp = tokio::time::timeout(state.limits.connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(|source| SessionError::UpstreamConnect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Opens the TCP connection to the database (within the connect timeout).
pub async fn tcp(state: &ProxyState, upstream: &Upstream) -> Result<TcpStream, SessionError> {
    tcp_to(state, &upstream.host, upstream.port).await
}

/// The TLS handshake with `server_name` over `tcp`, verifying its certificate as the Database
/// says (within the connect timeout).
pub async fn tls_to(
    state: &ProxyState,
    upstream: &Upstream,
    server_name: rustls::pki_types::ServerName<'static>,
    addr: String,
    tcp: TcpStream,
) -> Result<UpstreamStream, SessionError> {
    let connector = TlsConnector::from(upstream.tls.clone());
    tokio::time::timeout(state.limits.connect_timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(|source| SessionError::UpstreamTls { addr, source })
}

/// The TLS handshake with the database, verifying its certificate as the Database says.
pub async fn tls(state: &ProxyState, upstream: &Upstream, tcp: TcpStream) -> Result<UpstreamStream, SessionError> {
    tls_to(state, upstream, upstream.server_name.clone(), upstream.endpoint(), tcp).await
}

/// An RDS IAM auth token for `db_user`, after checking the endpoint may receive one.
pub async fn iam_token(state: &ProxyState, upstream: &Upstream, db_user: &str) -> Result<RdsAuthToken, SessionError> {
    state.endpoints.check(&upstream.host)?;
    let credentials = state.aws.credentials_for(upstream.assume_role_arn.as_deref(), upstream.external_id.as_deref(), &upstream.region);
    let token = rds_auth_token(&state.aws, &credentials, &upstream.host, upstream.port, db_user, &upstream.region).await;
    state.metrics.token(token.is_ok());
    debug!(db_user, endpoint = %upstream.endpoint(), ok = token.is_ok(), "IAM auth token");
    Ok(token?)
}

/// The ARN of the role a user's db user names (DynamoDB, DocumentDB): a name becomes a role of
/// the database's account; an ARN of another account or partition is refused.
pub fn user_role(upstream: &Upstream, db_user: &str) -> Result<String, RoleError> {
    role_arn(db_user, partition_of(&upstream.region), upstream.account_id.as_deref().unwrap_or_default())
}

/// The credentials of `role`: the Database's `assumeRoleArn` hop (if any), then the role, with
/// the end user's name as the role session name (so CloudTrail shows who). Chains are cached.
pub async fn role_credentials(state: &ProxyState, upstream: &Upstream, role: &str, user: &str) -> Result<aws_credential_types::Credentials, AwsError> {
    let mut hops: Vec<Hop> = upstream.assume_role_arn.iter().map(|arn| Hop { role_arn: arn.clone(), session_name: "portcullis".into() }).collect();
    hops.push(Hop { role_arn: role.to_owned(), session_name: session_name(user) });
    state.aws.credentials_for_hops(hops, upstream.external_id.as_deref(), &upstream.region)?.get().await
}
