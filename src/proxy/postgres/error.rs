//! Everything that can end a PostgreSQL session early, and what the client is told: only
//! vetted text (never a token, key or signed URL) with a SQLSTATE and a remedy.

use crate::authz::DenyReason;
use crate::aws::{AwsError, EndpointError};
use crate::proxy::tls::ClientCertError;

use super::codec::CodecError;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client went away or the socket failed; nothing can be told.
    #[error("client connection: {0}")]
    ClientIo(#[source] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol violation by the client: {0}")]
    ClientProtocol(#[from] CodecError),
    /// A plaintext StartupMessage.
    #[error("the client did not request TLS")]
    TlsRequired,
    /// A GSSENCRequest.
    #[error("the client requested GSSAPI encryption")]
    GssEncUnsupported,
    /// The TLS handshake failed (an alert was sent by TLS itself).
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(#[source] std::io::Error),
    /// The client certificate was refused.
    #[error(transparent)]
    ClientCert(#[from] ClientCertError),
    /// A stage took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The startup message has no user.
    #[error("the startup message names no user")]
    NoUser,
    /// Replication connections are not proxied.
    #[error("replication connections are not supported")]
    Replication,
    /// Neither listener nor certificate names a database.
    #[error("no database to route to")]
    NoRoute,
    /// The named Database does not exist.
    #[error("unknown Database {0:?}")]
    UnknownDatabase(String),
    /// The Database is of another protocol.
    #[error("Database {0:?} is not a PostgreSQL database")]
    WrongProtocol(String),
    /// Authorization said no.
    #[error(transparent)]
    Denied(#[from] DenyReason),
    /// Too many new upstream connections.
    #[error("too many new connections to {0}")]
    RateLimited(String),
    /// The endpoint may not receive tokens.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// AWS credentials or signing failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// TCP connect to the database failed.
    #[error("cannot connect to the database at {addr}: {source}")]
    UpstreamConnect { addr: String, #[source] source: std::io::Error },
    /// TCP connect to the database timed out.
    #[error("connecting to the database at {0} timed out")]
    UpstreamConnectTimeout(String),
    /// The database does not speak TLS.
    #[error("the database at {0} refused TLS")]
    UpstreamNoTls(String),
    /// The upstream TLS handshake failed.
    #[error("TLS with the database at {addr} failed: {source}")]
    UpstreamTls { addr: String, #[source] source: std::io::Error },
    /// The database asked for a password method other than cleartext.
    #[error("the database asked for {method} authentication instead of a cleartext password")]
    UpstreamAuthMethod { method: &'static str, db_user: String },
    /// The database refused the login.
    #[error("the database refused the login of {db_user:?}: {message}")]
    UpstreamRejected { db_user: String, sqlstate: String, message: String },
    /// The database ended the session after the login (e.g. the database name does not exist).
    #[error("the database refused the session: {message}")]
    UpstreamFatal { sqlstate: String, message: String },
    /// The access was revoked while the session ran.
    #[error("access revoked: {0}")]
    Revoked(DenyReason),
    /// The database broke the protocol or closed early.
    #[error("the database broke the protocol: {0}")]
    UpstreamProtocol(String),
    /// The database socket failed.
    #[error("database connection: {0}")]
    UpstreamIo(#[source] std::io::Error),
}

/// What the client is told: SQLSTATE, message, hint.
pub struct ClientMessage {
    /// The SQLSTATE.
    pub sqlstate: String,
    /// The message.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl SessionError {
    /// A stable label for metrics (`auth_failures{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientIo(_) | Self::ClientTls(_) => "client_io",
            Self::ClientProtocol(_) | Self::TlsRequired | Self::GssEncUnsupported | Self::NoUser | Self::Replication => "client_protocol",
            Self::ClientCert(_) => "client_certificate",
            Self::Timeout(_) => "timeout",
            Self::NoRoute | Self::UnknownDatabase(_) | Self::WrongProtocol(_) => "routing",
            Self::Denied(_) => "authorization",
            Self::RateLimited(_) => "rate_limited",
            Self::Endpoint(_) => "endpoint",
            Self::Aws(_) => "credentials",
            Self::UpstreamConnect { .. } | Self::UpstreamConnectTimeout(_) => "upstream_unreachable",
            Self::UpstreamNoTls(_) | Self::UpstreamTls { .. } => "upstream_tls",
            Self::UpstreamAuthMethod { .. } | Self::UpstreamRejected { .. } => "upstream_auth",
            Self::UpstreamFatal { .. } => "upstream_refused",
            Self::Revoked(_) => "revoked",
            Self::UpstreamProtocol(_) | Self::UpstreamIo(_) => "upstream_io",
        }
    }

    /// The message for the client, or `None` when the client cannot be told anything.
    pub fn client_message(&self) -> Option<ClientMessage> {
        let msg = |sqlstate: &str, message: String, hint: Option<&str>| Some(ClientMessage { sqlstate: sqlstate.to_owned(), message, hint: hint.map(str::to_owned) });
        match self {
            Self::ClientIo(_) | Self::ClientTls(_) | Self::UpstreamIo(_) => None,
            Self::ClientProtocol(e) => msg("08P01", format!("invalid startup packet: {e}"), None),
            Self::TlsRequired => msg(
                "28000",
                "Portcullis requires TLS with a client certificate".into(),
                Some("connect with sslmode=verify-full and sslcert/sslkey/sslrootcert from `portcullis cert issue`"),
            ),
            Self::GssEncUnsupported => msg("08P01", "GSSAPI encryption is not supported by Portcullis".into(), Some("connect with gssencmode=disable and sslmode=verify-full")),
            Self::ClientCert(e) => msg("28000", e.to_string(), None),
            Self::Timeout(stage) => msg("08006", format!("timed out while {stage}"), None),
            Self::NoUser => msg("28000", "no user name in the startup message".into(), Some("pass user=<db user>")),
            Self::Replication => msg("0A000", "replication connections are not supported through Portcullis".into(), None),
            Self::NoRoute => msg(
                "3D000",
                "this listener serves several databases and your certificate names none".into(),
                Some("issue a certificate with --database NAME"),
            ),
            Self::UnknownDatabase(name) => msg("3D000", format!("this proxy serves no Database named {name:?}"), None),
            Self::WrongProtocol(name) => msg("3D000", format!("Database {name:?} is not a PostgreSQL database"), None),
            Self::Denied(reason) => msg("28000", format!("access denied: {reason}"), None),
            Self::RateLimited(db) => msg("53300", format!("too many new connections to {db}; retry shortly"), None),
            Self::Endpoint(e) => msg("08004", e.to_string(), None),
            Self::Aws(e) => msg("08004", format!("the proxy cannot log in to AWS: {e}"), None),
            Self::UpstreamConnect { addr, source } => msg(
                "08001",
                format!("cannot reach the database at {addr}: {source}"),
                Some("check the security group of the database allows the proxy, and the network path (routes, NACLs)"),
            ),
            Self::UpstreamConnectTimeout(addr) => msg(
                "08001",
                format!("connecting to the database at {addr} timed out"),
                Some("a timeout usually means a security group or NACL drops the traffic: allow the proxy to reach this port"),
            ),
            Self::UpstreamNoTls(addr) => msg("08001", format!("the database at {addr} does not accept TLS; IAM tokens are only sent over TLS"), None),
            Self::UpstreamTls { addr, source } => {
                let text = source.to_string();
                let hint = if text.contains("NotValidForName") || text.contains("not valid for name") {
                    Some("the database certificate does not name this host; if it has no subject alternative names at all it is a legacy Common-Name certificate: rotate the instance's CA (e.g. rds-ca-rsa2048-g1)")
                } else if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
                    Some("set spec.tls.caSecretRef to the RDS CA bundle of the region")
                } else {
                    None
                };
                msg("08001", format!("TLS with the database at {addr} failed: {text}"), hint)
            }
            Self::UpstreamAuthMethod { method, db_user } => msg(
                "28000",
                format!("the database asked for {method} authentication for {db_user:?}, not an IAM token"),
                Some(&format!("IAM authentication is off for this user: enable IAM DB authentication on the instance and run GRANT rds_iam TO \"{db_user}\"")),
            ),
            Self::UpstreamFatal { sqlstate, message } => msg(sqlstate, message.clone(), None),
            Self::Revoked(reason) => msg("57P01", format!("terminating the session: access was revoked: {reason}"), None),
            Self::UpstreamRejected { db_user, message, .. } => Some(ClientMessage {
                sqlstate: "28000".into(),
                message: format!("the database refused the IAM login of {db_user:?}: {message}"),
                hint: Some(format!(
                    "check that IAM DB authentication is enabled on the instance, that {db_user:?} has the rds_iam role (GRANT rds_iam TO \"{db_user}\"), and that the proxy's AWS identity may rds-db:connect to dbuser:<resource-id>/{db_user}"
                )),
            }),
            Self::UpstreamProtocol(e) => msg("08P01", format!("the database broke the protocol: {e}"), None),
        }
    }
}
