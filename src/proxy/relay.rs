//! The byte relay the stream engines share once a session is logged in: bytes flow both ways;
//! the engine's [`ClientFilter`] sees the client's stream first (to audit statements, answer or
//! refuse commands itself, or follow a database switch); a change of AccessRoles re-checks the
//! session and ends it when access was revoked. The pipeline audits start and end.

use std::ops::Range;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::info;

use super::audit::{AuditEvent, DocumentCommand, EventDetail, SessionFields, Statement, events};
use super::pipeline::RelayEnd;
use super::session::SessionError;
use super::tls::{ClientTls, UpstreamStream};
use super::{ProxyState, Upstream};
use crate::authz::{Decision, Identity};

/// Size of each direction's read buffer.
const BUF: usize = 8 * 1024;

/// What to do with bytes the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Forward `input[range]` to the database unchanged.
    Forward(Range<usize>),
    /// Send these bytes to the database (a message the filter held back, then allowed).
    ForwardOwned(Vec<u8>),
    /// Send these bytes to the client: the proxy answers a command itself.
    Reply(Vec<u8>),
    /// Record a statement.
    Audit { statement: Statement, error: Option<String> },
    /// Record a document database command.
    AuditCommand { command: DocumentCommand, error: Option<String> },
    /// The session's database changed (`USE`, `COM_INIT_DB`): later events and access checks
    /// use the new name.
    SwitchDatabase(String),
}

/// An engine's view of the client's stream after login.
pub trait ClientFilter: Send {
    /// Inspects the next bytes from the client (in order, cut anywhere) and pushes what to do
    /// with them. `fields` are the session's current fields. An error ends the session.
    fn feed(&mut self, input: &[u8], fields: &SessionFields, steps: &mut Vec<Step>) -> Result<(), SessionError>;
}

/// Decides whether a session may switch to (or run a command on) a database: `Err` carries the
/// reason for the client.
pub type DatabaseCheck = Box<dyn Fn(&SessionFields, &str) -> Result<(), String> + Send>;

/// The AccessRoles' check of database names for `identity` on `upstream`, re-read on every call
/// (so role changes apply at once).
pub fn database_check(state: Arc<ProxyState>, identity: Identity, upstream: Arc<Upstream>) -> DatabaseCheck {
    Box::new(move |fields: &SessionFields, name: &str| match state.authorize(&identity, &upstream, &fields.db_user, Some(name)) {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny(reason) => Err(reason.to_string()),
    })
}

/// An engine's view of the database's stream after login (it cannot change it).
pub trait UpstreamObserver: Send {
    /// Sees the next bytes from the database.
    fn feed(&mut self, input: &[u8]);
}

/// Observes nothing.
pub struct NoObserver;

impl UpstreamObserver for NoObserver {
    fn feed(&mut self, _: &[u8]) {}
}

/// A logged-in session ready to relay.
pub struct Session {
    /// The proxy.
    pub state: Arc<ProxyState>,
    /// The database.
    pub upstream: Arc<Upstream>,
    /// Who the client is.
    pub identity: Identity,
    /// The audit fields.
    pub fields: SessionFields,
    /// The client.
    pub client: ClientTls,
    /// The logged-in connection to the database.
    pub server: UpstreamStream,
    /// Bytes the client gets before relaying starts (the end of the login).
    pub greeting: Vec<u8>,
    /// Encodes a fatal error for the client (revocation, shutdown) in the engine's protocol.
    pub goodbye: fn(&SessionError) -> Option<Vec<u8>>,
    /// Bytes the engine already read from the client; they go through the filter first.
    pub pending_input: Vec<u8>,
}

enum End {
    Client(Result<u64, SessionError>),
    Upstream(Result<u64, SessionError>),
    Revoked(crate::authz::DenyReason),
    Shutdown,
}

/// Runs a logged-in session to its end.
pub async fn run(session: Session, mut filter: impl ClientFilter, mut observer: impl UpstreamObserver) -> RelayEnd {
    let Session { state, upstream, identity, fields, mut client, server, greeting, goodbye, pending_input } = session;
    let mut fields = Arc::new(fields);
    let greeted = async {
        client.write_all(&greeting).await?;
        client.flush().await
    };
    if let Err(e) = greeted.await {
        let e = SessionError::ClientIo(e);
        return RelayEnd { fields, bytes_from_client: 0, bytes_to_client: 0, reason: e.to_string(), error: Some(e) };
    }

    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(server);
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (fields_tx, fields_rx) = tokio::sync::watch::channel(fields.clone());
    let mut roles = state.roles.clone();
    roles.mark_unchanged();
    let (mut from_client, mut to_client) = (0u64, 0u64);
    let end = {
        let client_to_upstream = async {
            let mut steps = Vec::new();
            let mut buf = vec![0u8; BUF];
            let mut pending = Some(pending_input).filter(|p| !p.is_empty());
            loop {
                let first;
                let input: &[u8] = if let Some(p) = pending.take() {
                    first = p;
                    &first
                } else {
                    // Many clients (libmariadb, libpq) close after their goodbye without a TLS
                    // close_notify: that is a normal end, not an error.
                    let n = match client_rd.read(&mut buf).await {
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                        r => r.map_err(SessionError::ClientIo)?,
                    };
                    if n == 0 {
                        let _ = up_wr.shutdown().await;
                        return Ok(from_client);
                    }
                    &buf[..n]
                };
                from_client += input.len() as u64;
                filter.feed(input, &fields, &mut steps)?;
                let mut wrote = false;
                for step in steps.drain(..) {
                    match step {
                        Step::Forward(range) => {
                            up_wr.write_all(&input[range]).await.map_err(SessionError::UpstreamIo)?;
                            wrote = true;
                        }
                        Step::ForwardOwned(bytes) => {
                            up_wr.write_all(&bytes).await.map_err(SessionError::UpstreamIo)?;
                            wrote = true;
                        }
                        Step::Reply(bytes) => {
                            let _ = reply_tx.send(bytes);
                        }
                        Step::Audit { statement, error } => {
                            let detail = EventDetail::Query(statement);
                            state.audit.emit(AuditEvent::new(events::SESSION_QUERY, "DB1001I", fields.clone(), error.is_none(), error, detail)).await;
                        }
                        Step::AuditCommand { command, error } => {
                            // A document database names its database per command: the event's db_name.
                            let event_fields = if command.db_name == fields.db_name {
                                fields.clone()
                            } else {
                                Arc::new(SessionFields { db_name: command.db_name.clone(), ..(*fields).clone() })
                            };
                            let detail = EventDetail::Command(command);
                            state.audit.emit(AuditEvent::new(events::SESSION_QUERY, "DB1001I", event_fields, error.is_none(), error, detail)).await;
                        }
                        Step::SwitchDatabase(db_name) => {
                            fields = Arc::new(SessionFields { db_name, ..(*fields).clone() });
                            fields_tx.send_replace(fields.clone());
                        }
                    }
                }
                if wrote {
                    up_wr.flush().await.map_err(SessionError::UpstreamIo)?;
                }
            }
        };
        let upstream_to_client = async {
            let mut buf = vec![0u8; BUF];
            loop {
                tokio::select! {
                    read = up_rd.read(&mut buf) => {
                        let n = read.map_err(SessionError::UpstreamIo)?;
                        if n == 0 {
                            return Ok(to_client);
                        }
                        to_client += n as u64;
                        observer.feed(&buf[..n]);
                        client_wr.write_all(&buf[..n]).await.map_err(SessionError::ClientIo)?;
                    }
                    Some(reply) = reply_rx.recv() => {
                        client_wr.write_all(&reply).await.map_err(SessionError::ClientIo)?;
                    }
                }
                client_wr.flush().await.map_err(SessionError::ClientIo)?;
            }
        };
        tokio::pin!(client_to_upstream, upstream_to_client);
        loop {
            tokio::select! {
                r = &mut client_to_upstream => break End::Client(r),
                r = &mut upstream_to_client => break End::Upstream(r),
                changed = roles.changed() => {
                    if changed.is_err() { continue; }
                    let current = fields_rx.borrow().clone();
                    if let Decision::Deny(reason) = state.authorize(&identity, &upstream, &current.db_user, Some(current.db_name.as_str()).filter(|d| !d.is_empty())) {
                        break End::Revoked(reason);
                    }
                }
                _ = state.shutdown.cancelled() => break End::Shutdown,
            }
        }
    };
    let fields = fields_rx.borrow().clone();
    let (reason, result) = match end {
        End::Client(Ok(_)) => ("client closed the connection".to_owned(), Ok::<(), SessionError>(())),
        End::Upstream(Ok(_)) => ("the database closed the connection".to_owned(), Ok(())),
        End::Client(Err(e)) | End::Upstream(Err(e)) => (e.to_string(), Err(e)),
        End::Revoked(reason) => {
            let e = SessionError::Revoked(reason);
            if let Some(bytes) = goodbye(&e) {
                let _ = client_wr.write_all(&bytes).await;
                let _ = client_wr.flush().await;
            }
            info!(error = %e, "session ended: access revoked");
            (e.to_string(), Ok(()))
        }
        End::Shutdown => {
            if let Some(bytes) = goodbye(&SessionError::ShuttingDown) {
                let _ = client_wr.write_all(&bytes).await;
                let _ = client_wr.flush().await;
            }
            ("the proxy is shutting down".to_owned(), Ok(()))
        }
    };
    let _ = client_wr.shutdown().await;
    let _ = up_wr.shutdown().await;
    RelayEnd { fields, bytes_from_client: from_client, bytes_to_client: to_client, reason, error: result.err() }
}
