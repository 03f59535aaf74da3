//! The MySQL engine (RDS/Aurora MySQL and MariaDB): the proxy's greeting → SSLRequest → TLS
//! with a client certificate → HandshakeResponse → authorization → upstream TLS and IAM login
//! (`mysql_clear_password` answered with a token) → relay with command checks and audit.

pub mod codec;
pub mod filter;
mod login;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{CodecError, HandshakeResponse, MAX_LOGIN_PACKET, SslRequest, caps};
use filter::{CommandFilter, PrepareWatcher, Prepared};
use login::{client_read_error, expect_seq, read_packet};

use super::audit::SessionFields;
use super::engine::{self, Connection, Engine};
use super::relay::{self, Session};
use super::session::SessionError;
use super::{ProxyState, Upstream};
use crate::crd::Protocol;


/// The MySQL engine.
pub struct MysqlEngine;

impl Engine for MysqlEngine {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }

    fn serve(&self, connection: Connection) -> BoxFuture<'static, ()> {
        serve(connection).boxed()
    }
}

impl From<CodecError> for SessionError {
    fn from(e: CodecError) -> Self {
        SessionError::ClientProtocol(Box::new(e))
    }
}

async fn serve(connection: Connection) {
    let mut fields = connection.fields(Protocol::Mysql);
    let Connection { state, database, stream, .. } = connection;
    if let Err(e) = session(&state, database, stream, &mut fields).await {
        engine::record_refusal(&state, &fields, Protocol::Mysql, &e);
    }
}

async fn session(state: &Arc<ProxyState>, fixed: Option<Arc<Upstream>>, mut stream: TcpStream, fields: &mut SessionFields) -> Result<(), SessionError> {
    let started = Instant::now();
    let timeout = state.limits.handshake_timeout;
    stream.write_all(&codec::packet(0, &login::greeting().encode())).await.map_err(SessionError::ClientIo)?;

    // Before TLS only an SSLRequest is acceptable.
    let plain = async {
        let (seq, payload) = tokio::time::timeout(timeout, read_packet(&mut stream, MAX_LOGIN_PACKET, "handshake response"))
            .await
            .map_err(|_| SessionError::Timeout("waiting for the client's handshake response"))?
            .map_err(client_read_error)?;
        expect_seq(seq, 1)?;
        let request = SslRequest::parse(&payload)?;
        if request.capabilities & caps::PROTOCOL_41 == 0 {
            return Err(SessionError::ClientTooOld);
        }
        if request.capabilities & caps::SSL == 0 {
            return Err(SessionError::TlsRequired);
        }
        if payload.len() != 32 {
            return Err(CodecError::Malformed("SSLRequest (longer than 32 bytes)").into());
        }
        Ok(())
    }
    .await;
    if let Err(e) = plain {
        send_error(&mut stream, 2, &e).await;
        return Err(e);
    }

    let mut tls = engine::accept_tls(state, stream).await?;
    // The client sends its whole response before it reads: read it first, so that every answer
    // carries the sequence id the client expects.
    let response = tokio::time::timeout(timeout, read_packet(&mut tls, MAX_LOGIN_PACKET, "handshake response"))
        .await
        .map_err(|_| SessionError::Timeout("waiting for the client's handshake response"))
        .and_then(|r| r.map_err(client_read_error));
    let outcome = async {
        let identity = engine::client_identity(state, &tls)?;
        fields.user = identity.user.clone();
        fields.groups = identity.groups.clone();
        let (seq, payload) = response?;
        expect_seq(seq, 2)?;
        let response = HandshakeResponse::parse(&payload)?;
        let c = response.prefix.capabilities;
        if c & caps::COMPRESS != 0 {
            return Err(CodecError::NotOffered("compression").into());
        }
        if c & caps::SSL == 0 {
            return Err(CodecError::Malformed("handshake response (TLS was negotiated but CLIENT_SSL is not set)").into());
        }
        if response.user.is_empty() {
            return Err(SessionError::NoUser);
        }
        fields.db_user = response.user.clone();
        fields.db_name = response.database.clone().unwrap_or_default();
        let upstream = engine::choose_upstream(state, fixed, &identity, Protocol::Mysql, fields)?;
        let audit_queries = state.authorize_session(&identity, &upstream, &fields.db_user, response.database.as_deref())?;
        let connected = login::connect_and_login(state, &upstream, &response, &identity.user).await?;
        Ok((identity, upstream, connected, audit_queries))
    }
    .await;
    let (identity, upstream, connected, audit_queries) = match outcome {
        Ok(x) => x,
        Err(e) => {
            send_error(&mut tls, 3, &e).await;
            return Err(e);
        }
    };
    tracing::debug!(server_version = %connected.server_version, "logged in to the database");

    let prepared = Arc::new(Mutex::new(Prepared::default()));
    let check = relay::database_check(state.clone(), identity.clone(), upstream.clone());
    let filter = CommandFilter::new(audit_queries, prepared.clone(), check);
    let session = Session {
        state: state.clone(),
        upstream,
        identity,
        fields: fields.clone(),
        started,
        client: tls,
        database: connected.tls,
        greeting: codec::packet(3, &connected.ok),
        goodbye,
        pending_input: Vec::new(),
    };
    relay::run(session, filter, PrepareWatcher::new(prepared)).await
}

/// The ERR packet that ends a running session (revoked, shutting down). Sequence id 1: a client
/// that sends its next command reads it as the answer.
fn goodbye(e: &SessionError) -> Option<Vec<u8>> {
    err_packet(1, e)
}

/// The ERR packet for `e` with sequence id `seq`, if the client can be told anything.
fn err_packet(seq: u8, e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(Protocol::Mysql)?;
    let (code, sqlstate) = error_code(e);
    let sqlstate = match e {
        SessionError::UpstreamFatal { sqlstate, .. } => sqlstate.as_str(),
        _ => sqlstate,
    };
    Some(codec::err_packet(seq, code, sqlstate, &m.with_hint()))
}

/// The MySQL error number and SQLSTATE that fit `e`.
fn error_code(e: &SessionError) -> (u16, &'static str) {
    use SessionError::*;
    match e {
        TlsRequired | ClientCert(_) | NoUser | Denied(_) | UpstreamRejected { .. } | UpstreamAuthMethod { .. } => (1045, "28000"),
        ClientProtocol(inner) if matches!(inner.downcast_ref::<CodecError>(), Some(CodecError::OutOfOrder { .. })) => (1156, "08S01"),
        ClientProtocol(_) | ClientTooOld | Timeout(_) => (1043, "08S01"),
        NoRoute | UnknownDatabase(_) | WrongProtocol { .. } => (1049, "42000"),
        RateLimited(_) => (1040, "08004"),
        Endpoint(_) | StsHost(_) | Aws(_) | UpstreamCapability(_) => (1105, "HY000"),
        // ER_CONNECT_TO_FOREIGN_DATA_SOURCE: clients refuse client-side numbers (2xxx) from a server.
        UpstreamConnect { .. } | UpstreamConnectTimeout(_) | UpstreamNoTls(_) | UpstreamTls { .. } => (1429, "HY000"),
        UpstreamFatal { code, .. } => (code.unwrap_or(1105), "HY000"),
        Revoked(_) => (1927, "70100"),
        ShuttingDown => (1053, "08S01"),
        GssEncUnsupported | Replication => (1235, "42000"),
        UpstreamProtocol(_) | UpstreamIo(_) | ClientIo(_) | ClientTls(_) => (1105, "HY000"),
    }
}

/// Writes the ERR packet for `e` (if any) and closes.
async fn send_error<S: AsyncWrite + Unpin>(stream: &mut S, seq: u8, e: &SessionError) {
    if let Some(wire) = err_packet(seq, e) {
        let _ = stream.write_all(&wire).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}
