//! The engine abstraction: one engine per wire protocol behind [`Engine`], and the steps every
//! engine shares around its protocol — the client TLS handshake and certificate, choosing the
//! upstream, connecting to it over TLS, the IAM token, and recording refused sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info};

use super::audit::{AuditEvent, EventDetail, SessionFields, events};
use super::session::SessionError;
use super::{ProxyState, Upstream, dynamodb, mongodb, mysql, postgres};
use crate::authz::Identity;
use crate::aws::{AwsError, Hop, RdsAuthToken, RoleError, partition_of, rds_auth_token, role_arn, session_name};
use crate::crd::Protocol;

/// The client's TLS stream, as the proxy serves it.
pub type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;
/// The TLS stream to a database.
pub type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

/// One accepted client connection, handed to an engine.
pub struct Connection {
    /// The proxy.
    pub state: Arc<ProxyState>,
    /// The listener's database; `None` when the certificate's route chooses.
    pub database: Option<Arc<Upstream>>,
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The session id.
    pub session_id: String,
}

impl Connection {
    /// Fresh audit fields for this connection.
    pub fn fields(&self, protocol: Protocol) -> SessionFields {
        SessionFields { session_id: self.session_id.clone(), protocol: protocol.to_string(), client_addr: self.peer.to_string(), ..Default::default() }
    }
}

/// A wire protocol the proxy serves.
pub trait Engine: Sync {
    /// The protocol.
    fn protocol(&self) -> Protocol;
    /// Serves one connection to its end. Never panics on client or database input.
    fn serve(&self, connection: Connection) -> BoxFuture<'static, ()>;
}

/// The engine for `protocol`, if this build has one.
pub fn engine_for(protocol: Protocol) -> Option<&'static dyn Engine> {
    match protocol {
        Protocol::Postgres => Some(&postgres::PostgresEngine),
        Protocol::Mysql => Some(&mysql::MysqlEngine),
        Protocol::Dynamodb => Some(&dynamodb::DynamoDbEngine),
        Protocol::Mongodb => Some(&mongodb::MongodbEngine),
    }
}

/// The TLS handshake with the client (within the handshake timeout).
pub async fn accept_tls(state: &ProxyState, stream: TcpStream) -> Result<ClientTls, SessionError> {
    let acceptor = TlsAcceptor::from(state.server_tls.config.clone());
    tokio::time::timeout(state.limits.handshake_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| SessionError::Timeout("in the TLS handshake"))?
        .map_err(SessionError::ClientTls)
}

/// The identity in the client's certificate, verified against the client CA.
pub fn client_identity(state: &ProxyState, tls: &ClientTls) -> Result<Identity, SessionError> {
    let chain = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
    Ok(state.server_tls.verify_client(chain.as_deref())?)
}

/// The database of this session: the listener's, or the one the certificate's route names; it
/// must speak `protocol`. Fills the routing fields of `fields`.
pub fn choose_upstream(
    state: &ProxyState,
    fixed: Option<Arc<Upstream>>,
    identity: &Identity,
    protocol: Protocol,
    fields: &mut SessionFields,
) -> Result<Arc<Upstream>, SessionError> {
    let upstream = match fixed {
        Some(db) => db,
        None => {
            let name = identity.route.as_ref().and_then(|r| r.database.as_deref()).ok_or(SessionError::NoRoute)?;
            state.database(name).ok_or_else(|| SessionError::UnknownDatabase(name.to_owned()))?
        }
    };
    if upstream.protocol != protocol {
        return Err(SessionError::WrongProtocol { database: upstream.key(), actual: upstream.protocol, expected: protocol });
    }
    fields.database = upstream.key();
    fields.endpoint = upstream.endpoint();
    Ok(upstream)
}

/// Waits for the database's new-connection budget (IAM logins are rate-limited by AWS).
pub async fn admit(state: &ProxyState, upstream: &Upstream) -> Result<(), SessionError> {
    upstream.limiter.acquire(state.limits.connect_timeout).await.map_err(|_| SessionError::RateLimited(upstream.key()))
}

/// Opens the TCP connection to the database (within the connect timeout).
pub async fn connect_tcp(state: &ProxyState, upstream: &Upstream) -> Result<TcpStream, SessionError> {
    let addr = upstream.endpoint();
    let tcp = tokio::time::timeout(state.limits.connect_timeout, TcpStream::connect((upstream.host.as_str(), upstream.port)))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(|source| SessionError::UpstreamConnect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS handshake with the database, verifying its certificate as the Database says.
pub async fn upstream_tls(state: &ProxyState, upstream: &Upstream, tcp: TcpStream) -> Result<UpstreamTls, SessionError> {
    let addr = upstream.endpoint();
    let connector = TlsConnector::from(upstream.tls.clone());
    tokio::time::timeout(state.limits.connect_timeout, connector.connect(upstream.server_name.clone(), tcp))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(|source| SessionError::UpstreamTls { addr, source })
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

/// Records a session that ended before it started: metrics, a log line, and an audit event
/// when the client had shown who it is.
pub fn record_refusal(state: &ProxyState, fields: &SessionFields, protocol: Protocol, e: &SessionError) {
    let label = protocol.to_string();
    state.metrics.connection(&label, if matches!(e, SessionError::Denied(_)) { "denied" } else { "failed" });
    state.metrics.auth_failure(e.kind());
    match e {
        SessionError::ClientIo(_) => debug!(error = %e, "client went away"),
        _ => info!(error = %e, kind = e.kind(), "session refused"),
    }
    // Connections that never showed a certificate (port scans, health checks) are not audited.
    if !fields.user.is_empty() {
        let message = e.client_message(protocol).map(|m| m.message).unwrap_or_else(|| e.to_string());
        state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000W", Arc::new(fields.clone()), false, Some(message), EventDetail::None {}));
    }
}
