//! The life of every client connection, written once for all engines: plaintext opening → TLS
//! → the client certificate's identity → the client's login request → route → authorize →
//! admit → upstream login → relay → audit. An engine implements the phases of its protocol
//! ([`Engine`]); it cannot skip the identity check, the authorization or the audit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::ProxyState;
use super::audit::{AuditEvent, EventDetail, SessionFields, events};
use super::session::{Remedy, SessionError};
use super::tls::ClientTls;
use super::upstream::Upstream;
use crate::authz::Identity;
use crate::crd::Protocol;

/// The facts of a protocol the pipeline needs.
pub struct Facts {
    /// The engine's name in metrics labels and audit events (`postgres`, `mysql`, …).
    pub name: &'static str,
    /// The `spec.protocol` of the Databases it serves.
    pub serves: Protocol,
    /// What the client is waiting for while the proxy reads its login request (in timeouts).
    pub login_wait: &'static str,
    /// The protocol's words in remedies.
    pub remedy: &'static Remedy,
}

/// What the client asked to log in as, and the engine's own part of the request.
pub struct Login<D> {
    /// The database user.
    pub db_user: String,
    /// The database name, if the protocol names one at login.
    pub db_name: Option<String>,
    /// What else the engine read (startup parameters, the handshake response, a first message).
    pub detail: D,
}

/// How the plaintext opening ended.
pub enum Opening {
    /// Go on with the TLS handshake.
    Tls,
    /// The connection did what it came for without a session (a PostgreSQL CancelRequest).
    Done,
}

/// Where a refusal happens: the client may expect a different answer before and after the proxy
/// has read its login request.
pub enum Stage<'a, D> {
    /// Before TLS.
    Plaintext,
    /// The certificate was refused: the login request is not read.
    Certificate,
    /// Reading the login request failed.
    LoginRequest,
    /// After the login request was read.
    AfterLogin(&'a Login<D>),
}

/// A connection's own state: who, from where, since when, and its audit fields.
pub struct Context {
    /// The proxy.
    pub state: Arc<ProxyState>,
    /// The session id.
    pub session_id: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub started: Instant,
    /// The audit fields, filled as the phases learn them.
    pub fields: SessionFields,
    /// The connection id the engine announced to the client (MySQL's greeting), or 0.
    pub connection_id: u32,
    /// The certificate the client presented (DER), once TLS is up; read only for a refusal's
    /// audit event.
    pub presented: Option<Vec<u8>>,
}

impl Context {
    /// The one deadline from accept to a login request, across every phase and engine
    /// (`limits.handshakeTimeout`): a client cannot restart it by finishing a phase.
    pub fn handshake_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + self.state.limits.handshake_timeout)
    }
}

/// A logged-in session, handed to the engine's relay phase.
pub struct Established<E: Engine + ?Sized> {
    /// The connection.
    pub context: Context,
    /// Who the client is.
    pub identity: Identity,
    /// The Database.
    pub upstream: Arc<Upstream>,
    /// The client's TLS stream.
    pub client: ClientTls,
    /// The engine's logged-in upstream.
    pub server: E::Server,
    /// The login request.
    pub login: Login<E::LoginDetail>,
    /// Whether statements are audited.
    pub audit_queries: bool,
}

/// How a relay ended: the figures of the end event.
pub struct RelayEnd {
    /// The audit fields as they were at the end (a `USE` changes the database name).
    pub fields: Arc<SessionFields>,
    /// Bytes the client sent.
    pub bytes_from_client: u64,
    /// Bytes the client was sent.
    pub bytes_to_client: u64,
    /// Why it ended.
    pub reason: String,
    /// The error that ended it, if one did.
    pub error: Option<SessionError>,
}

/// A wire protocol's phases. Defaults cover protocols that speak TLS from the first byte.
pub trait Engine: Send + Sync + 'static {
    /// The engine's part of a login request.
    type LoginDetail: Send + Sync;
    /// A logged-in upstream.
    type Server: Send;

    /// The protocol's facts.
    fn facts(&self) -> &'static Facts;

    /// The plaintext exchange before TLS (PostgreSQL's SSLRequest, MySQL's greeting). An error
    /// is answered with [`Engine::refusal`] at [`Stage::Plaintext`].
    fn open(&self, _context: &mut Context, _stream: &mut TcpStream) -> impl Future<Output = Result<Opening, SessionError>> + Send {
        async { Ok(Opening::Tls) }
    }

    /// Reads the client's login request; runs only for a verified identity. `None`: the
    /// connection ended without a session (nothing to refuse).
    fn read_login(
        &self,
        context: &mut Context,
        client: &mut ClientTls,
        identity: &Identity,
    ) -> impl Future<Output = Result<Option<Login<Self::LoginDetail>>, SessionError>> + Send;

    /// Waits for the database's new-connection budget (IAM logins are rate-limited by AWS).
    fn admit(&self, context: &Context, upstream: &Upstream) -> impl Future<Output = Result<(), SessionError>> + Send {
        async move { upstream.limiter.acquire(context.state.limits.connect_timeout).await.map_err(|_| SessionError::RateLimited(upstream.key())) }
    }

    /// Connects to the database and logs in as the login's db user.
    fn log_in(
        &self,
        context: &Context,
        upstream: &Arc<Upstream>,
        identity: &Identity,
        login: &mut Login<Self::LoginDetail>,
    ) -> impl Future<Output = Result<Self::Server, SessionError>> + Send;

    /// The bytes that tell the client why its session ends, in the protocol's own error format;
    /// `None` when it cannot be told.
    fn refusal(&self, stage: &Stage<'_, Self::LoginDetail>, e: &SessionError) -> Option<Vec<u8>>;

    /// Tells the client why its session ends and closes. The default writes
    /// [`Engine::refusal`]; engines whose client must be read first override it.
    fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        _context: &Context,
        client: &mut S,
        stage: Stage<'_, Self::LoginDetail>,
        e: &SessionError,
    ) -> impl Future<Output = ()> + Send {
        tell(client, self.refusal(&stage, e))
    }

    /// Relays the logged-in session to its end.
    fn relay(&self, session: Established<Self>) -> impl Future<Output = RelayEnd> + Send;
}

/// A type-erased engine, as listeners hold it.
pub trait Serve: Send + Sync {
    /// The protocol's facts.
    fn facts(&self) -> &'static Facts;
    /// Runs one connection's life.
    fn serve(&'static self, connection: Connection) -> BoxFuture<'static, ()>;
}

impl<E: Engine> Serve for E {
    fn facts(&self) -> &'static Facts {
        Engine::facts(self)
    }

    fn serve(&'static self, connection: Connection) -> BoxFuture<'static, ()> {
        run(self, connection).boxed()
    }
}

/// One accepted client connection.
pub struct Connection {
    /// The proxy.
    pub state: Arc<ProxyState>,
    /// The listener's Database; `None` when the certificate's route chooses.
    pub fixed_upstream: Option<Arc<Upstream>>,
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The session id.
    pub session_id: String,
}

/// Runs one connection's life with `engine`. Never panics on client or database input.
pub async fn run<E: Engine>(engine: &'static E, connection: Connection) {
    let Connection { state, fixed_upstream, mut stream, peer, session_id } = connection;
    let facts = engine.facts();
    let fields = SessionFields { session_id: session_id.clone(), protocol: facts.name.to_owned(), client_addr: peer.to_string(), ..Default::default() };
    let mut context = Context { state, session_id, peer, started: Instant::now(), fields, connection_id: 0, presented: None };

    match engine.open(&mut context, &mut stream).await {
        Ok(Opening::Tls) => {}
        Ok(Opening::Done) => return,
        Err(e) => {
            engine.refuse(&context, &mut stream, Stage::Plaintext, &e).await;
            return record_refusal(&context, facts, &e).await;
        }
    }
    let acceptor = TlsAcceptor::from(context.state.server_tls.config.clone());
    let mut client = match tokio::time::timeout_at(context.handshake_deadline(), acceptor.accept(stream)).await {
        Err(_) => return record_refusal(&context, facts, &SessionError::Timeout("in the TLS handshake")).await,
        Ok(Err(e)) => return record_refusal(&context, facts, &SessionError::ClientTls(e)).await,
        Ok(Ok(tls)) => tls,
    };
    context.presented = client.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|der| der.to_vec());
    let identity = match verify(&context.state, &client) {
        Ok(identity) => identity,
        Err(e) => {
            engine.refuse(&context, &mut client, Stage::Certificate, &e).await;
            return record_refusal(&context, facts, &e).await;
        }
    };
    context.fields.user = identity.user.clone();
    context.fields.groups = identity.groups.clone();

    let deadline = context.handshake_deadline();
    let mut login = match tokio::time::timeout_at(deadline, engine.read_login(&mut context, &mut client, &identity)).await {
        Ok(Ok(Some(login))) => login,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            engine.refuse(&context, &mut client, Stage::LoginRequest, &e).await;
            return record_refusal(&context, facts, &e).await;
        }
        Err(_) => {
            let e = SessionError::Timeout(facts.login_wait);
            engine.refuse(&context, &mut client, Stage::LoginRequest, &e).await;
            return record_refusal(&context, facts, &e).await;
        }
    };
    context.fields.db_user = login.db_user.clone();
    context.fields.db_name = login.db_name.clone().unwrap_or_default();
    let outcome = async {
        let upstream = route(&context.state, fixed_upstream, &identity, facts, &mut context.fields)?;
        let audit_queries = authorize(&context.state, &identity, &upstream, &login)?;
        engine.admit(&context, &upstream).await?;
        let server = engine.log_in(&context, &upstream, &identity, &mut login).await?;
        Ok((upstream, audit_queries, server))
    }
    .await;
    let (upstream, audit_queries, server) = match outcome {
        Ok(x) => x,
        Err(e) => {
            engine.refuse(&context, &mut client, Stage::AfterLogin(&login), &e).await;
            return record_refusal(&context, facts, &e).await;
        }
    };

    let state = context.state.clone();
    let started = context.started;
    state.metrics.connection(facts.name, "accepted");
    state.metrics.active_sessions.inc();
    let start_fields = Arc::new(context.fields.clone());
    state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000I", start_fields.clone(), true, None, EventDetail::None {})).await;
    info!(user = %start_fields.user, database = %start_fields.database, db_user = %start_fields.db_user, db_name = %start_fields.db_name, "session started");

    let end = engine.relay(Established { context, identity, upstream, client, server, login, audit_queries }).await;

    state.metrics.active_sessions.dec();
    state.metrics.add_bytes("client_to_upstream", end.bytes_from_client);
    state.metrics.add_bytes("upstream_to_client", end.bytes_to_client);
    let detail = EventDetail::End {
        bytes_from_client: end.bytes_from_client,
        bytes_to_client: end.bytes_to_client,
        duration_ms: started.elapsed().as_millis() as u64,
        reason: end.reason,
    };
    state.audit.emit(AuditEvent::new(events::SESSION_END, "DB1002I", end.fields, true, None, detail)).await;
    // A protocol error mid-session is logged, not re-audited as a refused start.
    if let Some(e) = &end.error {
        info!(error = %e, "session ended with an error");
    }
}

/// Writes a refusal (if the client can be told anything) and closes the client's side.
pub async fn tell<S: AsyncWrite + Unpin>(client: &mut S, refusal: Option<Vec<u8>>) {
    if let Some(wire) = refusal {
        let _ = client.write_all(&wire).await;
        let _ = client.flush().await;
    }
    let _ = client.shutdown().await;
}

/// The identity in the client's certificate, verified against the client CA.
fn verify(state: &ProxyState, client: &ClientTls) -> Result<Identity, SessionError> {
    let chain = client.get_ref().1.peer_certificates().map(|c| c.to_vec());
    Ok(state.server_tls.verify_client(chain.as_deref())?)
}

/// The Database of this session: the listener's, or the one the certificate's route names; it
/// must be one the engine serves. Fills the routing fields.
fn route(
    state: &ProxyState,
    fixed: Option<Arc<Upstream>>,
    identity: &Identity,
    facts: &Facts,
    fields: &mut SessionFields,
) -> Result<Arc<Upstream>, SessionError> {
    let upstream = match fixed {
        Some(db) => db,
        None => {
            let name = identity.route.as_ref().and_then(|r| r.database.as_deref()).ok_or(SessionError::NoRoute)?;
            state.database(name).ok_or_else(|| SessionError::UnknownDatabase(name.to_owned()))?
        }
    };
    if upstream.protocol != facts.serves {
        return Err(SessionError::WrongProtocol { database: upstream.key(), actual: upstream.protocol, expected: facts.serves });
    }
    fields.database = upstream.key();
    fields.endpoint = upstream.endpoint();
    Ok(upstream)
}

/// The AccessRoles' verdict on the login; on success, whether statements are audited.
fn authorize<D>(state: &ProxyState, identity: &Identity, upstream: &Upstream, login: &Login<D>) -> Result<bool, SessionError> {
    match state.authorize(identity, upstream, &login.db_user, login.db_name.as_deref()) {
        crate::authz::Decision::Allow { audit_queries, .. } => Ok(audit_queries),
        crate::authz::Decision::Deny(reason) => Err(SessionError::Denied(reason)),
    }
}

/// Records a session that ended before it started: metrics, a log line and an audit event
/// (the first few of a flood one by one, the rest counted: `refusals`).
async fn record_refusal(context: &Context, facts: &Facts, e: &SessionError) {
    let state = &context.state;
    // A client that closed before showing a certificate (TCP health checks, reachability
    // probes such as `portcullis db connect`'s) is neither a failure nor worth a log line.
    if let SessionError::ClientIo(io) | SessionError::ClientTls(io) = e
        && io.kind() == std::io::ErrorKind::UnexpectedEof
        && context.fields.user.is_empty()
    {
        state.metrics.connection(facts.name, "closed");
        debug!(error = %e, "client closed the connection");
        return;
    }
    state.metrics.connection(facts.name, if matches!(e, SessionError::Denied(_)) { "denied" } else { "failed" });
    state.metrics.auth_failure(e.kind());
    if matches!(e, SessionError::ClientIo(_)) && context.fields.user.is_empty() {
        debug!(error = %e, "client went away");
        return;
    }
    // Every refusal is audited (and logged), before identification too (no TLS, no or a bad
    // certificate, a timeout): the first few per address and kind one by one, the rest as a
    // count, so a flood fills neither the audit trail nor the log.
    let kind = e.kind();
    if state.refusals.admit(context.peer.ip(), kind, facts.name, &state.audit, &state.shutdown) == crate::proxy::refusals::Admit::Counted {
        return;
    }
    match e {
        SessionError::ClientIo(_) => debug!(error = %e, "client went away"),
        _ => info!(error = %e, kind, "session refused"),
    }
    let message = e.client_message(facts.remedy).map(|m| m.message).unwrap_or_else(|| e.to_string());
    let certificate = context.presented.as_deref().and_then(crate::proxy::audit::PresentedCertificate::from_der);
    let detail = EventDetail::Refused { reason_kind: kind, certificate };
    state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000W", Arc::new(context.fields.clone()), false, Some(message), detail)).await;
}

#[cfg(test)]
mod tests;
