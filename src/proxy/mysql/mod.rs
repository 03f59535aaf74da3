//! The MySQL engine (RDS/Aurora MySQL and MariaDB): the proxy's greeting → SSLRequest → TLS
//! with a client certificate → HandshakeResponse → authorization → upstream TLS and IAM login
//! (`mysql_clear_password` answered with a token) → relay with command checks and audit.

pub mod codec;
pub mod filter;
mod login;
pub mod sql;
pub mod threads;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{CodecError, HandshakeResponse, MAX_LOGIN_PACKET, SslRequest, caps};
use filter::{CommandFilter, PrepareWatcher, Prepared};
use login::{client_read_error, expect_seq, read_packet};

use super::Upstream;
use super::pipeline::{Context, Engine, Established, Facts, Login, Opening, RelayEnd, Stage, tell};
use super::relay::{self, Session};
use super::session::{Remedy, SessionError, rds_rejected};
use super::tls::ClientTls;
use crate::authz::Identity;
use crate::crd::Protocol;

/// The MySQL engine.
pub struct MysqlEngine;

/// The words of MySQL remedies.
pub static REMEDY: Remedy = Remedy {
    tls_options: "connect with --ssl-ca, --ssl-cert and --ssl-key from `portcullis cert issue` and --ssl-verify-server-cert (MariaDB client) or --ssl-mode=VERIFY_IDENTITY (MySQL client)",
    user_option: "pass --user <db user>",
    iam_user,
    login: "IAM",
    rejected: rds_rejected,
    plaintext_server: None,
};

fn iam_user(u: &str) -> String {
    format!("{u:?} is created for IAM: CREATE USER '{u}' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'")
}

static FACTS: Facts = Facts { name: "mysql", serves: Protocol::Mysql, login_wait: "waiting for the client's handshake response", remedy: &REMEDY };

impl From<CodecError> for SessionError {
    fn from(e: CodecError) -> Self {
        SessionError::ClientProtocol(Box::new(e))
    }
}

impl Engine for MysqlEngine {
    type LoginDetail = HandshakeResponse;
    type Server = login::Connected;

    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    /// The proxy's greeting; before TLS only an SSLRequest is acceptable.
    async fn open(&self, context: &mut Context, stream: &mut TcpStream) -> Result<Opening, SessionError> {
        context.connection_id = context.state.cancels.mysql_threads.allocate();
        stream.write_all(&codec::packet(0, &login::greeting(context.connection_id).encode())).await.map_err(SessionError::ClientIo)?;
        let (seq, payload) = tokio::time::timeout_at(context.handshake_deadline(), read_packet(stream, MAX_LOGIN_PACKET, "handshake response"))
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
        Ok(Opening::Tls)
    }

    async fn read_login(&self, _: &mut Context, client: &mut ClientTls, _: &Identity) -> Result<Option<Login<HandshakeResponse>>, SessionError> {
        let (seq, payload) = read_packet(client, MAX_LOGIN_PACKET, "handshake response").await.map_err(client_read_error)?;
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
        Ok(Some(Login { db_user: response.user.clone(), db_name: response.database.clone(), detail: response }))
    }

    async fn log_in(
        &self,
        context: &Context,
        upstream: &Arc<Upstream>,
        identity: &Identity,
        login: &mut Login<HandshakeResponse>,
    ) -> Result<login::Connected, SessionError> {
        let connected = login::connect_and_login(&context.state, upstream, &login.detail, &identity.user).await?;
        tracing::debug!(server_version = %connected.server_version, "logged in to the database");
        Ok(connected)
    }

    fn refusal(&self, stage: &Stage<'_, HandshakeResponse>, e: &SessionError) -> Option<Vec<u8>> {
        // The client's SSLRequest was packet 1; after TLS its handshake response is packet 2.
        err_packet(if matches!(stage, Stage::Plaintext) { 2 } else { 3 }, e)
    }

    /// A refused certificate: the client sends its whole handshake response before it reads,
    /// so it is read first (and dropped), and the answer carries the sequence id it expects.
    async fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, context: &Context, client: &mut S, stage: Stage<'_, HandshakeResponse>, e: &SessionError) {
        if matches!(stage, Stage::Certificate) {
            let _ = tokio::time::timeout_at(context.handshake_deadline(), read_packet(client, MAX_LOGIN_PACKET, "handshake response")).await;
        }
        tell(client, self.refusal(&stage, e)).await;
    }

    async fn relay(&self, session: Established<Self>) -> RelayEnd {
        let Established { context, identity, upstream, client, server, audit_queries, .. } = session;
        let state = context.state;
        let prepared = Arc::new(Mutex::new(Prepared::default()));
        let check = relay::database_check(state.clone(), identity.clone(), upstream.clone());
        let threads = state.cancels.mysql_threads.clone();
        let me =
            threads::Thread { user: identity.user.clone(), database: upstream.key(), db_user: context.fields.db_user.clone(), upstream_id: server.thread_id };
        let _registered = threads.register(context.connection_id, me.clone());
        let kill: filter::KillCheck = Box::new(move |id| threads.resolve(id, &me));
        let filter = CommandFilter::new(audit_queries, prepared.clone(), check).with_kill(kill);
        let greeting = codec::packet(3, &server.ok);
        let session = Session { state, upstream, identity, fields: context.fields, client, server: server.tls, greeting, goodbye, pending_input: Vec::new() };
        relay::run(session, filter, PrepareWatcher::new(prepared)).await
    }
}

/// The ERR packet that ends a running session (revoked, shutting down). Sequence id 1: a client
/// that sends its next command reads it as the answer.
fn goodbye(e: &SessionError) -> Option<Vec<u8>> {
    err_packet(1, e)
}

/// The ERR packet for `e` with sequence id `seq`, if the client can be told anything.
fn err_packet(seq: u8, e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(&REMEDY)?;
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
