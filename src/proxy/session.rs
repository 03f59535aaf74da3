//! Everything that can end a session early, whatever the engine, and what the client is told:
//! only vetted text (never a token, key or signed URL) with a SQLSTATE and a remedy in the
//! words of the client's own database.

use crate::authz::DenyReason;
use crate::aws::{AwsError, EndpointError};
use crate::crd::Protocol;
use crate::proxy::tls::ClientCertError;

/// A protocol violation found by an engine's codec.
pub type CodecFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client went away or the socket failed; nothing can be told.
    #[error("client connection: {0}")]
    ClientIo(#[source] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol violation by the client: {0}")]
    ClientProtocol(#[source] CodecFailure),
    /// A plaintext StartupMessage.
    #[error("the client did not request TLS")]
    TlsRequired,
    /// A MySQL client too old for protocol 4.1 with plugin authentication.
    #[error("the client does not speak MySQL protocol 4.1")]
    ClientTooOld,
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
    /// The Database is of another protocol than the listener's engine.
    #[error("Database {database:?} uses protocol {actual}, not {expected}")]
    WrongProtocol { database: String, actual: Protocol, expected: Protocol },
    /// Authorization said no.
    #[error(transparent)]
    Denied(#[from] DenyReason),
    /// Too many new upstream connections.
    #[error("too many new connections to {0}")]
    RateLimited(String),
    /// The endpoint may not receive tokens.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A DocumentDB server named an STS host that may not receive a signed request.
    #[error(transparent)]
    StsHost(#[from] crate::aws::StsHostError),
    /// AWS credentials or signing failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// TCP connect to the database failed.
    #[error("cannot connect to the database at {addr}: {source}")]
    UpstreamConnect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// TCP connect to the database timed out.
    #[error("connecting to the database at {0} timed out")]
    UpstreamConnectTimeout(String),
    /// The database does not speak TLS.
    #[error("the database at {0} refused TLS")]
    UpstreamNoTls(String),
    /// The upstream TLS handshake failed.
    #[error("TLS with the database at {addr} failed: {source}")]
    UpstreamTls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The database asked for a password method other than cleartext.
    #[error("the database asked for {method} authentication instead of a cleartext password")]
    UpstreamAuthMethod { method: String, db_user: String },
    /// The database lacks a capability the client relies on.
    #[error("the database does not support {0}, which the client asked for")]
    UpstreamCapability(&'static str),
    /// The database refused the login.
    #[error("the database refused the login of {db_user:?}: {message}")]
    UpstreamRejected { db_user: String, sqlstate: String, message: String },
    /// The database ended the session after the login (e.g. the database name does not exist).
    #[error("the database refused the session: {message}")]
    UpstreamFatal { sqlstate: String, message: String, code: Option<u16> },
    /// The access was revoked while the session ran.
    #[error("access revoked: {0}")]
    Revoked(DenyReason),
    /// The proxy is shutting down.
    #[error("the proxy is shutting down")]
    ShuttingDown,
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

impl ClientMessage {
    /// The message with its hint, for protocols whose errors have no hint field.
    pub fn with_hint(self) -> String {
        match self.hint {
            Some(hint) => format!("{}. Hint: {hint}", self.message),
            None => self.message,
        }
    }
}

impl SessionError {
    /// A stable label for metrics (`auth_failures{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientIo(_) | Self::ClientTls(_) => "client_io",
            Self::ClientProtocol(_) | Self::TlsRequired | Self::ClientTooOld | Self::GssEncUnsupported | Self::NoUser | Self::Replication => "client_protocol",
            Self::ClientCert(_) => "client_certificate",
            Self::Timeout(_) => "timeout",
            Self::NoRoute | Self::UnknownDatabase(_) | Self::WrongProtocol { .. } => "routing",
            Self::Denied(_) => "authorization",
            Self::RateLimited(_) => "rate_limited",
            Self::Endpoint(_) | Self::StsHost(_) => "endpoint",
            Self::Aws(_) => "credentials",
            Self::UpstreamConnect { .. } | Self::UpstreamConnectTimeout(_) => "upstream_unreachable",
            Self::UpstreamNoTls(_) | Self::UpstreamTls { .. } => "upstream_tls",
            Self::UpstreamAuthMethod { .. } | Self::UpstreamRejected { .. } => "upstream_auth",
            Self::UpstreamFatal { .. } | Self::UpstreamCapability(_) => "upstream_refused",
            Self::Revoked(_) => "revoked",
            Self::ShuttingDown => "shutdown",
            Self::UpstreamProtocol(_) | Self::UpstreamIo(_) => "upstream_io",
        }
    }

    /// The message for a client of an engine with these remedies, or `None` when the client
    /// cannot be told anything.
    pub fn client_message(&self, remedy: &Remedy) -> Option<ClientMessage> {
        let msg = |sqlstate: &str, message: String, hint: Option<String>| Some(ClientMessage { sqlstate: sqlstate.to_owned(), message, hint });
        let hint = |h: &str| Some(h.to_owned());
        match self {
            Self::ClientIo(_) | Self::ClientTls(_) | Self::UpstreamIo(_) => None,
            Self::ClientProtocol(e) => msg("08P01", format!("invalid packet: {e}"), None),
            Self::TlsRequired => msg("28000", "Portcullis requires TLS with a client certificate".into(), hint(remedy.tls_options)),
            Self::ClientTooOld => msg(
                "08004",
                "this client does not speak MySQL protocol 4.1 with plugin authentication".into(),
                hint("use a MySQL 5.7+/MariaDB 10.2+ client or driver"),
            ),
            Self::GssEncUnsupported => {
                msg("08P01", "GSSAPI encryption is not supported by Portcullis".into(), hint("connect with gssencmode=disable and sslmode=verify-full"))
            }
            Self::ClientCert(e) => msg("28000", e.to_string(), None),
            Self::Timeout(stage) => msg("08006", format!("timed out while {stage}"), None),
            Self::NoUser => msg("28000", "no user name in the login".into(), hint(remedy.user_option)),
            Self::Replication => msg("0A000", "replication connections are not supported through Portcullis".into(), None),
            Self::NoRoute => {
                msg("3D000", "this listener serves several databases and your certificate names none".into(), hint("issue a certificate with --database NAME"))
            }
            Self::UnknownDatabase(name) => msg("3D000", format!("this proxy serves no Database named {name:?}"), None),
            Self::WrongProtocol { database, actual, expected } => msg(
                "3D000",
                format!("Database {database:?} speaks {actual}, but this listener serves {expected} clients"),
                hint(&format!("connect with a {actual} client to a listener for {database:?}")),
            ),
            Self::Denied(reason) => msg("28000", format!("access denied: {reason}"), None),
            Self::RateLimited(db) => msg("53300", format!("too many new connections to {db}; retry shortly"), None),
            Self::Endpoint(e) => msg("08004", e.to_string(), None),
            Self::StsHost(e) => msg("08004", e.to_string(), None),
            Self::Aws(e) => msg("08004", format!("the proxy cannot log in to AWS: {e}"), None),
            Self::UpstreamConnect { addr, source } => msg(
                "08001",
                format!("cannot reach the database at {addr}: {source}"),
                hint("check the security group of the database allows the proxy, and the network path (routes, NACLs)"),
            ),
            Self::UpstreamConnectTimeout(addr) => msg(
                "08001",
                format!("connecting to the database at {addr} timed out"),
                hint("a timeout usually means a security group or NACL drops the traffic: allow the proxy to reach this port"),
            ),
            Self::UpstreamNoTls(addr) => msg("08001", format!("the database at {addr} does not accept TLS; IAM tokens are only sent over TLS"), None),
            Self::UpstreamTls { addr, source } => {
                let text = source.to_string();
                let tls_hint = if text.contains("NotValidForName") || text.contains("not valid for name") {
                    hint(
                        "the database certificate does not name this host; if it has no subject alternative names at all it is a legacy Common-Name certificate: rotate the instance's CA (e.g. rds-ca-rsa2048-g1)",
                    )
                } else if let Some((plaintext, _)) = remedy.plaintext_server.filter(|(_, signs)| signs.iter().any(|s| text.contains(s))) {
                    hint(plaintext)
                } else if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
                    hint("set spec.tls.caSecretRef to the RDS CA bundle of the region")
                } else {
                    None
                };
                msg("08001", format!("TLS with the database at {addr} failed: {text}"), tls_hint)
            }
            Self::UpstreamAuthMethod { method, db_user } => msg(
                "28000",
                format!("the database asked for {method} authentication for {db_user:?}, not an IAM token"),
                Some(format!(
                    "IAM authentication is off for this user: enable IAM DB authentication on the instance and make sure {}",
                    (remedy.iam_user)(db_user)
                )),
            ),
            Self::UpstreamCapability(what) => msg(
                "08004",
                format!("the database does not support {what}, which the client asked for"),
                hint("use a database engine version from the last five years (MySQL 5.7+, MariaDB 10.2+)"),
            ),
            Self::UpstreamFatal { sqlstate, message, .. } => msg(sqlstate, message.clone(), None),
            Self::Revoked(reason) => msg("57P01", format!("terminating the session: access was revoked: {reason}"), None),
            Self::UpstreamRejected { db_user, message, .. } => msg(
                "28000",
                format!("the database refused the {} login of {db_user:?}: {message}", remedy.login),
                Some((remedy.rejected)(db_user, &(remedy.iam_user)(db_user))),
            ),
            Self::ShuttingDown => msg("57P01", "terminating connection: the proxy is shutting down".into(), None),
            Self::UpstreamProtocol(e) => msg("08P01", format!("the database broke the protocol: {e}"), None),
        }
    }
}

/// An engine's words in the remedies its clients read.
pub struct Remedy {
    /// How to connect with TLS and a client certificate.
    pub tls_options: &'static str,
    /// How to name the database user.
    pub user_option: &'static str,
    /// How to make `db_user` a user that logs in with IAM.
    pub iam_user: fn(&str) -> String,
    /// The name of the upstream login (`IAM`, `MONGODB-AWS`).
    pub login: &'static str,
    /// What to check when the database refuses the login of `db_user` (given `iam_user`'s text).
    pub rejected: fn(db_user: &str, iam_user: &str) -> String,
    /// The hint when the upstream TLS handshake fails because the server speaks plaintext, and
    /// the error texts that mean so.
    pub plaintext_server: Option<(&'static str, &'static [&'static str])>,
}

/// The check list when an RDS database refuses an IAM login.
pub fn rds_rejected(db_user: &str, iam_user: &str) -> String {
    format!(
        "check that IAM DB authentication is enabled on the instance, that {iam_user}, and that the proxy's AWS identity may rds-db:connect to dbuser:<resource-id>/{db_user}"
    )
}
