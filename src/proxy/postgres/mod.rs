//! The PostgreSQL engine: SSLRequest → TLS with a client certificate → StartupMessage →
//! authorization → upstream TLS and IAM login → relay with statement audit.

pub mod codec;
mod login;
mod relay;
pub mod scanner;

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{Severity, StartupPacket};

use super::audit::SessionFields;
use super::engine::{self, Connection, Engine};
use super::session::SessionError;
use super::{ProxyState, Upstream};
use crate::authz::Identity;
use crate::crd::Protocol;

/// The PostgreSQL engine.
pub struct PostgresEngine;

impl Engine for PostgresEngine {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn serve(&self, connection: Connection) -> BoxFuture<'static, ()> {
        serve(connection).boxed()
    }
}

impl From<codec::CodecError> for SessionError {
    fn from(e: codec::CodecError) -> Self {
        SessionError::ClientProtocol(Box::new(e))
    }
}

/// Serves one client connection to the end. Never panics on client input.
async fn serve(connection: Connection) {
    let mut fields = connection.fields(Protocol::Postgres);
    let Connection { state, database: fixed_db, mut stream, .. } = connection;
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
        engine::record_refusal(&state, &fields, Protocol::Postgres, &e);
    }
}

async fn reject_plain(stream: &mut TcpStream, e: SessionError) -> SessionError {
    send_error(stream, &e).await;
    e
}

/// The FATAL ErrorResponse that tells a client why its session ends, if it can be told.
fn fatal_error(e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(Protocol::Postgres)?;
    Some(codec::error_response(Severity::Fatal, &m.sqlstate, &m.message, m.hint.as_deref()).to_vec())
}

/// Writes the error's client message (if any) as a FATAL ErrorResponse.
async fn send_error<S: AsyncWrite + Unpin>(stream: &mut S, e: &SessionError) {
    if let Some(wire) = fatal_error(e) {
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
    let mut tls = engine::accept_tls(state, stream).await?;
    let identity = match engine::client_identity(state, &tls) {
        Ok(id) => id,
        Err(e) => {
            send_error(&mut tls, &e).await;
            return Err(e);
        }
    };
    fields.user = identity.user.clone();
    fields.groups = identity.groups.clone();
    let timeout = state.limits.handshake_timeout;
    let outcome = async {
        let packet = tokio::time::timeout(timeout, read_startup(&mut tls)).await.map_err(|_| SessionError::Timeout("waiting for the startup message"))??;
        let (version, params) = match packet {
            StartupPacket::Startup { version, params } => (version, params),
            StartupPacket::Cancel { pid, key } => {
                login::forward_cancel(state, pid, &key).await;
                return Ok(None);
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(codec::CodecError::Malformed("second encryption request").into());
            }
        };
        let upstream = route(state, fixed_db, &identity, &params, fields)?;
        let audit_queries = state.authorize_session(&identity, &upstream, &fields.db_user, Some(&fields.db_name))?;
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
    engine::choose_upstream(state, fixed_db, identity, Protocol::Postgres, fields)
}
