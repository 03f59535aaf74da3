//! Both logins of a MySQL session: the proxy's own greeting to the client (TLS required) and
//! the proxy's login to the database over TLS, answering its `mysql_clear_password` switch with
//! an RDS IAM auth token.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::codec::{self, AuthReply, CodecError, Greeting, HandshakeResponse, MAX_LOGIN_PACKET, SslRequest, caps};
use crate::proxy::connect;
use crate::proxy::session::SessionError;
use crate::proxy::tls::UpstreamStream;
use crate::proxy::{ProxyState, Upstream};

/// The version the proxy's greeting announces.
pub const SERVER_VERSION: &str = "8.0.36-portcullis";

/// The proxy's greeting: a fresh scramble (the proxy never checks a client password).
pub fn greeting(connection_id: u32) -> Greeting {
    // Printable, never NUL, like the servers' own scrambles.
    let scramble = (0..20).map(|_| rand::random_range(0x21u8..0x7f)).collect();
    Greeting {
        server_version: SERVER_VERSION.into(),
        // The proxy's own id (there is no database connection yet): `KILL <id>` is mapped to
        // the database's thread id once logged in, for the same person only (`threads`).
        connection_id,
        scramble,
        capabilities: caps::OFFERED,
        collation: codec::DEFAULT_COLLATION,
        status: codec::STATUS_AUTOCOMMIT,
        auth_plugin: "mysql_native_password".into(),
    }
}

/// Reads one packet of at most `max` bytes; `what` names it in errors.
pub async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S, max: usize, what: &'static str) -> Result<(u8, Vec<u8>), std::io::Error> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let (len, seq) = codec::header(head);
    if len > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, CodecError::TooLong { what, len, max }));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok((seq, payload))
}

/// Turns a read error from the client into the session error it means.
pub fn client_read_error(e: std::io::Error) -> SessionError {
    match e.kind() {
        std::io::ErrorKind::InvalidData => {
            let inner = e.into_inner().map(|b| b.to_string()).unwrap_or_default();
            SessionError::ClientProtocol(inner.into())
        }
        _ => SessionError::ClientIo(e),
    }
}

/// Checks a packet's sequence id.
pub fn expect_seq(got: u8, expected: u8) -> Result<(), SessionError> {
    if got == expected { Ok(()) } else { Err(CodecError::OutOfOrder { got, expected }.into()) }
}

/// A logged-in database connection.
pub struct Connected {
    /// The TLS stream to the database.
    pub tls: UpstreamStream,
    /// The payload of the database's final OK packet, for the client.
    pub ok: Vec<u8>,
    /// The database's version string.
    pub server_version: String,
    /// The database connection's thread id (its greeting's connection id).
    pub thread_id: u32,
}

/// Connects to the database and logs in as the client asked (user, database, capabilities,
/// attributes), with an IAM token instead of a password.
pub async fn connect_and_login(state: &ProxyState, upstream: &Upstream, client: &HandshakeResponse, end_user: &str) -> Result<Connected, SessionError> {
    let addr = upstream.endpoint();
    let timeout = state.limits.connect_timeout;
    let mut tcp = connect::tcp(state, upstream).await?;
    let (_, payload) = tokio::time::timeout(timeout, read_packet(&mut tcp, MAX_LOGIN_PACKET, "server greeting"))
        .await
        .map_err(|_| SessionError::UpstreamConnectTimeout(addr.clone()))?
        .map_err(upstream_read_error)?;
    if payload.first() == Some(&0xff) {
        // Too many connections, host blocked, …: said before any login.
        let err = codec::parse_err(&payload).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
        return Err(SessionError::UpstreamFatal { sqlstate: err.sqlstate, message: err.message, code: Some(err.code) });
    }
    let server = Greeting::parse(&payload).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
    if server.capabilities & caps::SSL == 0 {
        return Err(SessionError::UpstreamNoTls(addr));
    }
    let wanted = client.prefix.capabilities & caps::OFFERED;
    for (flag, name) in caps::FORMAT {
        if wanted & flag != 0 && server.capabilities & flag == 0 {
            return Err(SessionError::UpstreamCapability(name));
        }
    }
    let capabilities = (wanted & server.capabilities) | caps::SSL | caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
    let prefix = SslRequest { capabilities, max_packet: client.prefix.max_packet, collation: client.prefix.collation };
    tcp.write_all(&codec::packet(1, &prefix.encode())).await.map_err(SessionError::UpstreamIo)?;
    let mut tls = connect::tls(state, upstream, tcp).await?;
    // The client's attributes, and who the user really is (a client cannot set that one).
    let mut attributes: Vec<(String, String)> = client.attributes.iter().filter(|(k, _)| k != "portcullis_user").cloned().collect();
    attributes.push(("portcullis_user".into(), end_user.into()));
    let response = HandshakeResponse {
        prefix,
        user: client.user.clone(),
        auth_response: Vec::new(),
        database: client.database.clone(),
        auth_plugin: Some("mysql_native_password".into()),
        attributes: if capabilities & caps::CONNECT_ATTRS != 0 { attributes } else { Vec::new() },
    };
    write(&mut tls, 2, &response.encode()).await?;
    let db_user = client.user.as_str();
    let mut token_sent = false;
    loop {
        let (seq, payload) = tokio::time::timeout(timeout * 2, read_packet(&mut tls, MAX_LOGIN_PACKET, "login reply"))
            .await
            .map_err(|_| SessionError::UpstreamProtocol("the database did not answer the login in time".into()))?
            .map_err(upstream_read_error)?;
        match codec::parse_auth_reply(&payload).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))? {
            AuthReply::Ok => {
                if !token_sent {
                    warn!(db_user, "the database let the user in without a password");
                }
                return Ok(Connected { tls, ok: payload, server_version: server.server_version, thread_id: server.connection_id });
            }
            AuthReply::Switch { plugin } if plugin == "mysql_clear_password" && !token_sent => {
                let token = connect::iam_token(state, upstream, db_user).await?;
                let mut answer = token.expose().as_bytes().to_vec();
                answer.push(0);
                write(&mut tls, seq.wrapping_add(1), &answer).await?;
                token_sent = true;
            }
            AuthReply::Switch { plugin } => return Err(SessionError::UpstreamAuthMethod { method: plugin, db_user: db_user.into() }),
            AuthReply::MoreData => {
                // A second prompt (PAM asking again) or caching_sha2's fast path: not IAM.
                let method = if token_sent { "a second password prompt after the IAM token" } else { "a multi-step plugin" };
                return Err(SessionError::UpstreamAuthMethod { method: method.into(), db_user: db_user.into() });
            }
            AuthReply::Err(err) if matches!(err.code, 1044..=1045 | 1698 | 1251 | 1862) || !token_sent && err.sqlstate == "28000" => {
                warn!(code = err.code, message = %err.message, db_user, "the database refused the login");
                if !token_sent && err.code == 1045 {
                    // Refused before it asked for a cleartext password: a password user.
                    return Err(SessionError::UpstreamAuthMethod { method: "password".into(), db_user: db_user.into() });
                }
                return Err(SessionError::UpstreamRejected { db_user: db_user.into(), sqlstate: err.sqlstate, message: err.message });
            }
            AuthReply::Err(err) => {
                debug!(code = err.code, "the database ended the login");
                return Err(SessionError::UpstreamFatal { sqlstate: err.sqlstate, message: err.message, code: Some(err.code) });
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
    stream.write_all(&codec::packet(seq, payload)).await.map_err(SessionError::UpstreamIo)?;
    stream.flush().await.map_err(SessionError::UpstreamIo)
}

fn upstream_read_error(e: std::io::Error) -> SessionError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SessionError::UpstreamProtocol("the database closed the connection during login".into()),
        std::io::ErrorKind::InvalidData => SessionError::UpstreamProtocol(e.to_string()),
        _ => SessionError::UpstreamIo(e),
    }
}
