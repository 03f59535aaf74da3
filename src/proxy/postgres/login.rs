//! The upstream leg: TCP, SSLRequest, TLS (`verify-full`), StartupMessage, and the answer to
//! the cleartext-password request with an RDS IAM auth token; also cancel forwarding.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::codec::{self, MAX_AUTH_PHASE_MESSAGE};
use crate::proxy::connect;
use crate::proxy::session::SessionError;
use crate::proxy::tls::UpstreamStream;
use crate::proxy::{ProxyState, Upstream};

/// A logged-in upstream connection and what it said up to its first ReadyForQuery.
pub struct Connected {
    /// The TLS stream to the database.
    pub tls: UpstreamStream,
    /// Messages for the client before BackendKeyData (AuthenticationOk, ParameterStatus, …).
    pub before_key: BytesMut,
    /// Messages for the client after BackendKeyData, up to and including ReadyForQuery.
    pub after_key: BytesMut,
    /// The upstream's (pid, secret key), when it sent BackendKeyData.
    pub backend_key: Option<(u32, Vec<u8>)>,
}

/// Opens a TLS connection to the database (TCP connect, SSLRequest, handshake).
pub async fn connect_tls(state: &ProxyState, upstream: &Upstream) -> Result<UpstreamStream, SessionError> {
    let addr = upstream.endpoint();
    let mut tcp = connect::tcp(state, upstream).await?;
    tcp.write_all(&codec::encode_ssl_request()).await.map_err(SessionError::UpstreamIo)?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(state.limits.connect_timeout, tcp.read_exact(&mut answer))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(SessionError::UpstreamIo)?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(SessionError::UpstreamNoTls(addr)),
        other => return Err(SessionError::UpstreamProtocol(format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
    connect::tls(state, upstream, tcp).await
}

/// Connects to the database and logs in as `db_user` with an IAM token.
pub async fn connect_and_login(
    state: &ProxyState,
    upstream: &Upstream,
    version: u32,
    params: &[(String, String)],
    db_user: &str,
) -> Result<Connected, SessionError> {
    let mut tls = connect_tls(state, upstream).await?;
    tls.write_all(&codec::encode_startup(version, params)).await.map_err(SessionError::UpstreamIo)?;
    tls.flush().await.map_err(SessionError::UpstreamIo)?;
    let mut before_key = BytesMut::new();
    let mut after_key = BytesMut::new();
    let mut backend_key = None;
    let mut authenticated = false;
    let timeout = state.limits.connect_timeout * 2;
    loop {
        let (tag, body) = tokio::time::timeout(timeout, read_message(&mut tls))
            .await
            .map_err(|_| SessionError::UpstreamProtocol("the database did not answer the login in time".into()))??;
        match tag {
            b'R' if !authenticated => {
                let code = body.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| malformed("Authentication"))?;
                match code {
                    0 => {
                        authenticated = true;
                        before_key.extend_from_slice(&codec::encode_message(tag, &body));
                    }
                    3 => {
                        let token = connect::iam_token(state, upstream, db_user).await?;
                        tls.write_all(&codec::password_message(token.expose())).await.map_err(SessionError::UpstreamIo)?;
                        tls.flush().await.map_err(SessionError::UpstreamIo)?;
                    }
                    5 => return Err(SessionError::UpstreamAuthMethod { method: "MD5 password".into(), db_user: db_user.into() }),
                    10 => return Err(SessionError::UpstreamAuthMethod { method: "SCRAM (SASL)".into(), db_user: db_user.into() }),
                    2 | 7 | 8 | 9 => return Err(SessionError::UpstreamAuthMethod { method: "Kerberos/GSSAPI/SSPI".into(), db_user: db_user.into() }),
                    other => return Err(SessionError::UpstreamProtocol(format!("unknown authentication request {other}"))),
                }
            }
            b'E' if !authenticated => {
                let fields = codec::decode_error_fields(&body);
                let get = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone()).unwrap_or_default();
                let (sqlstate, message) = (get(b'C'), get(b'M'));
                warn!(sqlstate, message, db_user, "the database refused the login");
                return Err(SessionError::UpstreamRejected { db_user: db_user.into(), sqlstate, message });
            }
            b'v' | b'N' if !authenticated => before_key.extend_from_slice(&codec::encode_message(tag, &body)),
            b'K' if authenticated => {
                let pid = body.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| malformed("BackendKeyData"))?;
                backend_key = Some((pid, body[4..].to_vec()));
            }
            b'Z' if authenticated => {
                after_key.extend_from_slice(&codec::encode_message(tag, &body));
                return Ok(Connected { tls, before_key, after_key, backend_key });
            }
            b'E' => {
                // After AuthenticationOk (e.g. the database does not exist): pass it on and stop.
                let fields = codec::decode_error_fields(&body);
                let get = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone()).unwrap_or_default();
                return Err(SessionError::UpstreamFatal { sqlstate: get(b'C'), message: get(b'M'), code: None });
            }
            _ if authenticated => {
                let target = if backend_key.is_some() { &mut after_key } else { &mut before_key };
                target.extend_from_slice(&codec::encode_message(tag, &body));
            }
            other => return Err(SessionError::UpstreamProtocol(format!("unexpected message {:?} before authentication", other as char))),
        }
    }
}

fn malformed(what: &str) -> SessionError {
    SessionError::UpstreamProtocol(format!("malformed {what} message"))
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u8, Vec<u8>), SessionError> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SessionError::UpstreamProtocol("the database closed the connection during login".into()),
        _ => SessionError::UpstreamIo(e),
    })?;
    let (tag, len) = codec::message_header(header, MAX_AUTH_PHASE_MESSAGE).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(SessionError::UpstreamIo)?;
    Ok((tag, body))
}

/// Forwards a client's CancelRequest to the backend it maps to (over TLS, like the login).
/// Unknown keys are ignored silently, as PostgreSQL does.
pub async fn forward_cancel(state: &Arc<ProxyState>, pid: u32, key: &[u8]) {
    let Some(target) = state.cancels.find(pid, key) else {
        debug!("cancel request with an unknown key ignored");
        return;
    };
    match connect_tls(state, &target.upstream).await {
        Ok(mut tls) => {
            let _ = tls.write_all(&codec::encode_cancel(target.pid, &target.key)).await;
            let _ = tls.flush().await;
            let _ = tls.shutdown().await;
            info!(database = %target.upstream.key(), "forwarded a cancel request");
        }
        Err(e) => warn!(error = %e, "cannot forward a cancel request"),
    }
}
