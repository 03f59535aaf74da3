//! The PostgreSQL engine: SSLRequest → TLS with a client certificate → StartupMessage →
//! authorization → upstream TLS and IAM login → relay with statement audit.

pub mod codec;
mod error;
mod login;
mod relay;
pub mod scanner;

pub use error::SessionError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use codec::{Severity, StartupPacket};

use super::audit::{AuditEvent, EventDetail, SessionFields, events};
use super::{ProxyState, Upstream};
use crate::authz::{Decision, Identity};

/// Serves one client connection to the end. Never panics on client input.
pub async fn serve(state: Arc<ProxyState>, fixed_db: Option<Arc<Upstream>>, mut stream: TcpStream, peer: SocketAddr, session_id: String) {
    let mut fields = SessionFields { session_id, protocol: "postgres".into(), client_addr: peer.to_string(), ..Default::default() };
    let started = Instant::now();
    let handshake = state.limits.handshake_timeout;
    // Plaintext stage: only SSLRequest (or a CancelRequest) is acceptable.
    let first = match tokio::time::timeout(handshake, read_startup(&mut stream)).await {
        Err(_) => Err(SessionError::Timeout("waiting for the startup packet")),
        Ok(r) => r,
    };
    let result = match first {
        Ok(StartupPacket::SslRequest) => secure_session(&state, fixed_db, stream, &mut fields, started).await,
        Ok(StartupPacket::Cancel { pid, key }) => {
            login::forward_cancel(&state, pid, &key).await;
            return;
        }
        Ok(StartupPacket::GssEncRequest) => Err(reject_plain(&mut stream, SessionError::GssEncUnsupported).await),
        Ok(StartupPacket::Startup { .. }) => Err(reject_plain(&mut stream, SessionError::TlsRequired).await),
        Err(e) => Err(reject_plain(&mut stream, e).await),
    };
    if let Err(e) = result {
        finish_with_error(&state, &fields, &e);
    }
}

fn finish_with_error(state: &ProxyState, fields: &SessionFields, e: &SessionError) {
    state.metrics.connection("postgres", if matches!(e, SessionError::Denied(_)) { "denied" } else { "failed" });
    state.metrics.auth_failure(e.kind());
    match e {
        SessionError::ClientIo(_) => debug!(error = %e, "client went away"),
        _ => info!(error = %e, kind = e.kind(), "session refused"),
    }
    // Connections that never showed a certificate (port scans, health checks) are not audited.
    if !fields.user.is_empty() {
        let message = e.client_message().map(|m| m.message).unwrap_or_else(|| e.to_string());
        state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000W", Arc::new(fields.clone()), false, Some(message), EventDetail::None {}));
    }
}

async fn reject_plain(stream: &mut TcpStream, e: SessionError) -> SessionError {
    send_error(stream, &e).await;
    e
}

/// Writes the error's client message (if any) as a FATAL ErrorResponse.
async fn send_error<S: AsyncWrite + Unpin>(stream: &mut S, e: &SessionError) {
    if let Some(m) = e.client_message() {
        let wire = codec::error_response(Severity::Fatal, &m.sqlstate, &m.message, m.hint.as_deref());
        let _ = stream.write_all(&wire).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

/// Reads one startup-phase packet.
async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> Result<StartupPacket, SessionError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(SessionError::ClientIo)?;
    let len = codec::startup_length(header)?;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.map_err(SessionError::ClientIo)?;
    Ok(codec::decode_startup(&body)?)
}

async fn secure_session(
    state: &Arc<ProxyState>,
    fixed_db: Option<Arc<Upstream>>,
    mut stream: TcpStream,
    fields: &mut SessionFields,
    started: Instant,
) -> Result<(), SessionError> {
    stream.write_all(b"S").await.map_err(SessionError::ClientIo)?;
    let acceptor = TlsAcceptor::from(state.server_tls.config.clone());
    let timeout = state.limits.handshake_timeout;
    let mut tls = tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| SessionError::Timeout("in the TLS handshake"))?
        .map_err(SessionError::ClientTls)?;
    let peer_certs = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
    let identity = match state.server_tls.verify_client(peer_certs.as_deref()) {
        Ok(id) => id,
        Err(e) => {
            let e = SessionError::ClientCert(e);
            send_error(&mut tls, &e).await;
            return Err(e);
        }
    };
    fields.user = identity.user.clone();
    fields.groups = identity.groups.clone();
    let outcome = async {
        let packet = tokio::time::timeout(timeout, read_startup(&mut tls)).await.map_err(|_| SessionError::Timeout("waiting for the startup message"))??;
        let (version, params) = match packet {
            StartupPacket::Startup { version, params } => (version, params),
            StartupPacket::Cancel { pid, key } => {
                login::forward_cancel(state, pid, &key).await;
                return Ok(None);
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(SessionError::ClientProtocol(codec::CodecError::Malformed("second encryption request")));
            }
        };
        let upstream = route(state, fixed_db, &identity, &params, fields)?;
        let audit_queries = match state.authorize(&identity, &upstream, &fields.db_user, Some(&fields.db_name)) {
            Decision::Allow { audit_queries, .. } => audit_queries,
            Decision::Deny(reason) => return Err(SessionError::Denied(reason)),
        };
        let connected = login::connect_and_login(state, &upstream, version, &params, &fields.db_user).await?;
        Ok(Some((upstream, connected, audit_queries)))
    }
    .await;
    let (upstream, connected, audit_queries) = match outcome {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(()),
        Err(e) => {
            send_error(&mut tls, &e).await;
            return Err(e);
        }
    };
    relay::run(state, upstream, identity, tls, connected, fields.clone(), audit_queries, started).await
}

/// Picks the database (listener's, or the certificate's route) and fills the session fields.
fn route(
    state: &ProxyState,
    fixed_db: Option<Arc<Upstream>>,
    identity: &Identity,
    params: &[(String, String)],
    fields: &mut SessionFields,
) -> Result<Arc<Upstream>, SessionError> {
    let user = StartupPacket::param(params, "user").filter(|u| !u.is_empty()).ok_or(SessionError::NoUser)?;
    if StartupPacket::param(params, "replication").is_some_and(|r| r != "false" && r != "off" && r != "0") {
        return Err(SessionError::Replication);
    }
    fields.db_user = user.to_owned();
    fields.db_name = StartupPacket::param(params, "database").filter(|d| !d.is_empty()).unwrap_or(user).to_owned();
    let upstream = match fixed_db {
        Some(db) => db,
        None => {
            let name = identity.route.as_ref().and_then(|r| r.database.as_deref()).ok_or(SessionError::NoRoute)?;
            state.database(name).ok_or_else(|| SessionError::UnknownDatabase(name.to_owned()))?
        }
    };
    if upstream.protocol != crate::crd::Protocol::Postgres {
        return Err(SessionError::WrongProtocol(upstream.key()));
    }
    fields.database = upstream.key();
    fields.endpoint = upstream.endpoint();
    Ok(upstream)
}
