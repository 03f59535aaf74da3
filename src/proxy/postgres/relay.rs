//! The PostgreSQL relay phase: the end of the login (with the proxy's cancel key) for the
//! client, and a filter that forwards every byte unchanged while the scanner reports statements
//! for the audit trail.

use super::login::Connected;
use super::scanner::{ClientEvent, ClientScanner};
use super::{PostgresEngine, codec, fatal_error};
use crate::proxy::audit::SessionFields;
use crate::proxy::cancel::UpstreamCancel;
use crate::proxy::pipeline::{Established, RelayEnd};
use crate::proxy::relay::{self, ClientFilter, NoObserver, Session, Step};
use crate::proxy::session::SessionError;

/// Forwards everything; reports statements.
struct StatementAudit {
    scanner: ClientScanner,
    events: Vec<ClientEvent>,
}

impl ClientFilter for StatementAudit {
    fn feed(&mut self, input: &[u8], _: &SessionFields, steps: &mut Vec<Step>) -> Result<(), SessionError> {
        self.scanner.feed(input, &mut self.events)?;
        for event in self.events.drain(..) {
            if let ClientEvent::Statement(statement) = event {
                steps.push(Step::Audit { statement, error: None });
            }
        }
        steps.push(Step::Forward(0..input.len()));
        Ok(())
    }
}

/// Relays a logged-in session to its end.
pub async fn run(session: Established<PostgresEngine>) -> RelayEnd {
    let Established { context, identity, upstream, client, server, audit_queries, .. } = session;
    let Connected { tls, before_key, after_key, backend_key } = server;
    let state = context.state;
    // The client gets the proxy's own cancel key; the registry maps it to the database's.
    let cancel_guard = backend_key.map(|(pid, key)| state.cancels.register(UpstreamCancel { upstream: upstream.clone(), pid, key }));
    let mut greeting = before_key.to_vec();
    if let Some((pid, key, _)) = &cancel_guard {
        greeting.extend_from_slice(&codec::backend_key_data(*pid, key));
    }
    greeting.extend_from_slice(&after_key);
    let session = Session { state, upstream, identity, fields: context.fields, client, server: tls, greeting, goodbye: fatal_error, pending_input: Vec::new() };
    let filter = StatementAudit { scanner: ClientScanner::new(audit_queries), events: Vec::new() };
    let end = relay::run(session, filter, NoObserver).await;
    drop(cancel_guard);
    end
}
