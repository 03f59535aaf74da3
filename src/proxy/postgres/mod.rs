//! The PostgreSQL engine: SSLRequest → TLS with a client certificate → StartupMessage → the
//! pipeline's checks → upstream TLS and IAM login → relay with statement audit.

pub mod codec;
mod login;
mod relay;
pub mod scanner;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{Severity, StartupPacket};

use super::Upstream;
use super::pipeline::{Context, Engine, Established, Facts, Login, Opening, RelayEnd, Stage};
use super::session::{Remedy, SessionError, rds_rejected};
use super::tls::ClientTls;
use crate::authz::Identity;
use crate::crd::Protocol;

/// The PostgreSQL engine.
pub struct PostgresEngine;

/// The words of PostgreSQL remedies.
pub static REMEDY: Remedy = Remedy {
    tls_options: "connect with sslmode=verify-full and sslcert/sslkey/sslrootcert from `portcullis cert issue`",
    user_option: "pass user=<db user>",
    iam_user,
    login: "IAM",
    rejected: rds_rejected,
    plaintext_server: None,
};

fn iam_user(u: &str) -> String {
    format!("{u:?} has the rds_iam role (GRANT rds_iam TO \"{u}\")")
}

static FACTS: Facts = Facts { name: "postgres", serves: Protocol::Postgres, login_wait: "waiting for the startup message", remedy: &REMEDY };

/// The StartupMessage: protocol version and parameters.
pub struct Startup {
    version: u32,
    params: Vec<(String, String)>,
}

impl From<codec::CodecError> for SessionError {
    fn from(e: codec::CodecError) -> Self {
        SessionError::ClientProtocol(Box::new(e))
    }
}

impl Engine for PostgresEngine {
    type LoginDetail = Startup;
    type Server = login::Connected;

    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    /// Plaintext: only SSLRequest (or a CancelRequest) is acceptable.
    async fn open(&self, context: &mut Context, stream: &mut TcpStream) -> Result<Opening, SessionError> {
        let first = tokio::time::timeout_at(context.handshake_deadline(), read_startup(stream))
            .await
            .map_err(|_| SessionError::Timeout("waiting for the startup packet"))??;
        match first {
            StartupPacket::SslRequest => {
                stream.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                Ok(Opening::Tls)
            }
            StartupPacket::Cancel { pid, key } => {
                login::forward_cancel(&context.state, pid, &key).await;
                Ok(Opening::Done)
            }
            StartupPacket::GssEncRequest => Err(SessionError::GssEncUnsupported),
            StartupPacket::Startup { .. } => Err(SessionError::TlsRequired),
        }
    }

    async fn read_login(&self, context: &mut Context, client: &mut ClientTls, _: &Identity) -> Result<Option<Login<Startup>>, SessionError> {
        let (version, params) = match read_startup(client).await? {
            StartupPacket::Startup { version, params } => (version, params),
            StartupPacket::Cancel { pid, key } => {
                login::forward_cancel(&context.state, pid, &key).await;
                return Ok(None);
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => return Err(codec::CodecError::Malformed("second encryption request").into()),
        };
        let user = StartupPacket::param(&params, "user").filter(|u| !u.is_empty()).ok_or(SessionError::NoUser)?.to_owned();
        if StartupPacket::param(&params, "replication").is_some_and(|r| r != "false" && r != "off" && r != "0") {
            return Err(SessionError::Replication);
        }
        let db_name = StartupPacket::param(&params, "database").filter(|d| !d.is_empty()).unwrap_or(&user).to_owned();
        Ok(Some(Login { db_user: user, db_name: Some(db_name), detail: Startup { version, params } }))
    }

    async fn log_in(
        &self,
        context: &Context,
        upstream: &std::sync::Arc<Upstream>,
        _: &Identity,
        login: &mut Login<Startup>,
    ) -> Result<login::Connected, SessionError> {
        login::connect_and_login(&context.state, upstream, login.detail.version, &login.detail.params, &login.db_user).await
    }

    fn refusal(&self, _: &Stage<'_, Startup>, e: &SessionError) -> Option<Vec<u8>> {
        fatal_error(e)
    }

    async fn relay(&self, session: Established<Self>) -> RelayEnd {
        relay::run(session).await
    }
}

/// The FATAL ErrorResponse that tells a client why its session ends, if it can be told.
fn fatal_error(e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(&REMEDY)?;
    Some(codec::error_response(Severity::Fatal, &m.sqlstate, &m.message, m.hint.as_deref()).to_vec())
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
