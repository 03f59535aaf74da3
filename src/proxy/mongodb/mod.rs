//! The DocumentDB engine (MongoDB wire protocol): TLS with a client certificate from the first
//! byte; the db user is an IAM role from the certificate's route; on the first client message
//! the proxy connects to DocumentDB over TLS and logs in with MONGODB-AWS as that role; then
//! every command is checked (database, no client authentication) and audited.

pub mod aws_auth;
pub mod codec;
pub mod filter;
mod login;

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use codec::{HEADER, Header, OP_QUERY};
use filter::CommandFilter;

use super::audit::SessionFields;
use super::engine::{self, ClientTls, Connection, Engine};
use super::relay::{self, Session};
use super::session::SessionError;
use super::{ProxyState, Upstream};
use crate::aws::AwsError;
use crate::crd::Protocol;

/// The DocumentDB engine.
pub struct MongodbEngine;

impl Engine for MongodbEngine {
    fn protocol(&self) -> Protocol {
        Protocol::Mongodb
    }

    fn serve(&self, connection: Connection) -> BoxFuture<'static, ()> {
        serve(connection).boxed()
    }
}

async fn serve(connection: Connection) {
    let mut fields = connection.fields(Protocol::Mongodb);
    let Connection { state, database, stream, .. } = connection;
    let started = Instant::now();
    let tls = match engine::accept_tls(&state, stream).await {
        Ok(tls) => tls,
        Err(e) => return engine::record_refusal(&state, &fields, Protocol::Mongodb, &e),
    };
    if let Err(e) = session(&state, database, tls, &mut fields, started).await {
        engine::record_refusal(&state, &fields, Protocol::Mongodb, &e);
    }
}

/// The first message, whole: (header, raw bytes).
async fn first_message(state: &ProxyState, tls: &mut ClientTls) -> Result<(Header, Vec<u8>), SessionError> {
    let read = async {
        let mut head = [0u8; HEADER];
        tls.read_exact(&mut head).await.map_err(SessionError::ClientIo)?;
        let header = Header::parse(&head)?;
        let mut raw = head.to_vec();
        raw.resize(header.length, 0);
        tls.read_exact(&mut raw[HEADER..]).await.map_err(SessionError::ClientIo)?;
        Ok((header, raw))
    };
    tokio::time::timeout(state.limits.handshake_timeout, read).await.map_err(|_| SessionError::Timeout("waiting for the first message"))?
}

async fn session(state: &Arc<ProxyState>, fixed: Option<Arc<Upstream>>, mut tls: ClientTls, fields: &mut SessionFields, started: Instant) -> Result<(), SessionError> {
    let (header, first) = first_message(state, &mut tls).await?;
    let outcome = async {
        let identity = engine::client_identity(state, &tls)?;
        fields.user = identity.user.clone();
        fields.groups = identity.groups.clone();
        let upstream = engine::choose_upstream(state, fixed, &identity, Protocol::Mongodb, fields)?;
        let db_user = identity.route.as_ref().and_then(|r| r.db_user.clone()).ok_or(SessionError::NoUser)?;
        fields.db_user = db_user.clone();
        let audit_queries = state.authorize_session(&identity, &upstream, &db_user, None)?;
        let role = engine::user_role(&upstream, &db_user).map_err(|e| SessionError::Aws(AwsError::Role(e)))?;
        let credentials = engine::role_credentials(state, &upstream, &role, &identity.user).await?;
        let database = login::connect_and_login(state, &upstream, &role, &credentials).await?;
        Ok((identity, upstream, database, audit_queries))
    }
    .await;
    let (identity, upstream, database, audit_queries) = match outcome {
        Ok(x) => x,
        Err(e) => {
            if let Some(reply) = error_reply(&header, &e) {
                let _ = tls.write_all(&reply).await;
                let _ = tls.flush().await;
            }
            let _ = tls.shutdown().await;
            return Err(e);
        }
    };
    let check = relay::database_check(state.clone(), identity.clone(), upstream.clone());
    let session = Session {
        state: state.clone(),
        upstream,
        identity,
        fields: fields.clone(),
        started,
        client: tls,
        database,
        greeting: Vec::new(),
        goodbye: |_| None,
        pending_input: first,
    };
    relay::run(session, CommandFilter::new(audit_queries, check), relay::NoObserver).await
}

/// The error document answering the client's first message, in the form it expects.
fn error_reply(header: &Header, e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(Protocol::Mongodb)?;
    let (code, name) = match e {
        SessionError::Denied(_) | SessionError::ClientCert(_) | SessionError::NoUser | SessionError::Aws(_) => (13, "Unauthorized"),
        SessionError::UpstreamRejected { .. } => (18, "AuthenticationFailed"),
        SessionError::Timeout(_) | SessionError::UpstreamConnectTimeout(_) => (89, "NetworkTimeout"),
        SessionError::UpstreamConnect { .. } | SessionError::UpstreamTls { .. } | SessionError::UpstreamNoTls(_) => (6, "HostUnreachable"),
        SessionError::RateLimited(_) => (462, "IngressRequestRateLimitExceeded"),
        _ => (1, "InternalError"),
    };
    let doc = codec::error_document(code, name, &m.with_hint());
    Some(if header.opcode == OP_QUERY { codec::encode_reply(1, header.request_id, &doc, true) } else { codec::encode_msg(1, header.request_id, &doc) })
}
