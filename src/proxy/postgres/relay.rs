//! The relay: bytes flow both ways unchanged; the client's stream is scanned for statements to
//! audit; a change of AccessRoles re-checks the session and ends it when access was revoked.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::info;

use super::codec::{self, Severity};
use super::error::SessionError;
use super::login::Connected;
use super::scanner::{ClientEvent, ClientScanner};
use crate::authz::{Decision, Identity};
use crate::proxy::audit::{AuditEvent, EventDetail, SessionFields, events};
use crate::proxy::cancel::UpstreamCancel;
use crate::proxy::{ProxyState, Upstream};

/// Size of each direction's read buffer.
const BUF: usize = 8 * 1024;

enum End {
    Client(Result<u64, SessionError>),
    Upstream(Result<u64, SessionError>),
    Revoked(crate::authz::DenyReason),
    Shutdown,
}

/// Runs an established session to its end, with start and end audit events.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    state: &Arc<ProxyState>,
    upstream: Arc<Upstream>,
    identity: Identity,
    mut client: TlsStream<TcpStream>,
    connected: Connected,
    fields: SessionFields,
    audit_queries: bool,
    started: Instant,
) -> Result<(), SessionError> {
    let Connected { tls: upstream_tls, before_key, after_key, backend_key } = connected;
    let cancel_guard = backend_key.map(|(pid, key)| state.cancels.register(UpstreamCancel { upstream: upstream.clone(), pid, key }));
    let mut greeting = before_key;
    if let Some((pid, key, _)) = &cancel_guard {
        greeting.extend_from_slice(&codec::backend_key_data(*pid, key));
    }
    greeting.extend_from_slice(&after_key);
    client.write_all(&greeting).await.map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)?;

    let fields = Arc::new(fields);
    state.metrics.connection("postgres", "accepted");
    state.metrics.active_sessions.inc();
    state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000I", fields.clone(), true, None, EventDetail::None {}));
    info!(user = %fields.user, database = %fields.database, db_user = %fields.db_user, db_name = %fields.db_name, "session started");

    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream_tls);
    let mut roles = state.roles.clone();
    roles.mark_unchanged();
    let (mut from_client, mut to_client) = (0u64, 0u64);
    let end = {
        let client_to_upstream = async {
            let mut scanner = ClientScanner::new(audit_queries);
            let mut events = Vec::new();
            let mut buf = vec![0u8; BUF];
            loop {
                let n = client_rd.read(&mut buf).await.map_err(SessionError::ClientIo)?;
                if n == 0 {
                    let _ = up_wr.shutdown().await;
                    return Ok(from_client);
                }
                from_client += n as u64;
                scanner.feed(&buf[..n], &mut events)?;
                for event in events.drain(..) {
                    if let ClientEvent::Statement(statement) = event {
                        state.audit.emit(AuditEvent::new(events::SESSION_QUERY, "DB1001I", fields.clone(), true, None, EventDetail::Query(statement)));
                    }
                }
                up_wr.write_all(&buf[..n]).await.map_err(SessionError::UpstreamIo)?;
                up_wr.flush().await.map_err(SessionError::UpstreamIo)?;
            }
        };
        let upstream_to_client = async {
            let mut buf = vec![0u8; BUF];
            loop {
                let n = up_rd.read(&mut buf).await.map_err(SessionError::UpstreamIo)?;
                if n == 0 {
                    return Ok(to_client);
                }
                to_client += n as u64;
                client_wr.write_all(&buf[..n]).await.map_err(SessionError::ClientIo)?;
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
                    if let Decision::Deny(reason) = state.authorize(&identity, &upstream, &fields.db_user, Some(&fields.db_name)) {
                        break End::Revoked(reason);
                    }
                }
                _ = state.shutdown.cancelled() => break End::Shutdown,
            }
        }
    };
    let (reason, result) = match end {
        End::Client(Ok(_)) => ("client closed the connection".to_owned(), Ok(())),
        End::Upstream(Ok(_)) => ("the database closed the connection".to_owned(), Ok(())),
        End::Client(Err(e)) | End::Upstream(Err(e)) => (e.to_string(), Err(e)),
        End::Revoked(reason) => {
            let e = SessionError::Revoked(reason);
            if let Some(m) = e.client_message() {
                let _ = client_wr.write_all(&codec::error_response(Severity::Fatal, &m.sqlstate, &m.message, None)).await;
                let _ = client_wr.flush().await;
            }
            info!(error = %e, "session ended: access revoked");
            (e.to_string(), Ok(()))
        }
        End::Shutdown => {
            let _ = client_wr
                .write_all(&codec::error_response(Severity::Fatal, "57P01", "terminating connection: the proxy is shutting down", None))
                .await;
            let _ = client_wr.flush().await;
            ("the proxy is shutting down".to_owned(), Ok(()))
        }
    };
    let _ = client_wr.shutdown().await;
    let _ = up_wr.shutdown().await;
    drop(cancel_guard);
    state.metrics.active_sessions.dec();
    state.metrics.add_bytes("client_to_upstream", from_client);
    state.metrics.add_bytes("upstream_to_client", to_client);
    let detail = EventDetail::End {
        bytes_from_client: from_client,
        bytes_to_client: to_client,
        duration_ms: started.elapsed().as_millis() as u64,
        reason,
    };
    state.audit.emit(AuditEvent::new(events::SESSION_END, "DB1002I", fields, true, None, detail));
    // A protocol error by the client mid-session is logged, not re-audited as a refused start.
    if let Err(e) = &result {
        info!(error = %e, "session ended with an error");
    }
    Ok(())
}
