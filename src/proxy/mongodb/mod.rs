//! The DocumentDB engine (MongoDB wire protocol): TLS with a client certificate from the first
//! byte; the db user is an IAM role from the certificate's route; on the first client message
//! the proxy connects to DocumentDB over TLS and logs in with MONGODB-AWS as that role; then
//! every command is checked (database, no client authentication) and audited.

pub mod aws_auth;
pub mod codec;
pub mod filter;
mod login;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use codec::{HEADER, Header, OP_QUERY};
use filter::CommandFilter;

use super::Upstream;
use super::connect;
use super::pipeline::{Context, Engine, Established, Facts, Login, RelayEnd, Stage, tell};
use super::relay::{self, Session};
use super::session::{Remedy, SessionError};
use super::tls::{ClientTls, UpstreamStream};
use crate::authz::Identity;
use crate::aws::AwsError;
use crate::crd::Protocol;

/// The DocumentDB engine.
pub struct MongodbEngine;

/// The words of DocumentDB remedies.
pub static REMEDY: Remedy = Remedy {
    tls_options: "connect with tls=true, tlsCertificateKeyFile (the certificate and key from `portcullis cert issue` in one PEM) and tlsCAFile",
    user_option: "issue a certificate with --db-user ROLE",
    iam_user,
    login: "MONGODB-AWS",
    rejected,
    plaintext_server: Some((
        "the cluster does not speak TLS: IAM authentication needs TLS; set tls to enabled in the cluster parameter group and reboot the instances",
        &["corrupt message", "InvalidContentType", "reset"],
    )),
};

fn iam_user(u: &str) -> String {
    format!(
        "the role exists as a user in $external with mechanism MONGODB-AWS: db.getSiblingDB(\"$external\").createUser({{user: \"{u}\", mechanisms: [\"MONGODB-AWS\"], roles: [...]}})"
    )
}

fn rejected(_: &str, iam_user: &str) -> String {
    format!("check that {iam_user}, and that the cluster runs DocumentDB 5.0 or later with TLS on")
}

static FACTS: Facts = Facts { name: "mongodb", serves: Protocol::Mongodb, login_wait: "waiting for the first message", remedy: &REMEDY };

/// The client's first message, whole: the login happens when it arrives, and it is relayed
/// once the session is logged in.
pub struct FirstMessage {
    header: Header,
    raw: Vec<u8>,
}

impl Engine for MongodbEngine {
    type LoginDetail = FirstMessage;
    type Server = UpstreamStream;

    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    /// The db user is the IAM role the certificate's route names.
    async fn read_login(&self, _: &mut Context, client: &mut ClientTls, identity: &Identity) -> Result<Option<Login<FirstMessage>>, SessionError> {
        let first = first_message(client).await?;
        let db_user = identity.route.as_ref().and_then(|r| r.db_user.clone()).ok_or(SessionError::NoUser)?;
        Ok(Some(Login { db_user, db_name: None, detail: first }))
    }

    async fn log_in(
        &self,
        context: &Context,
        upstream: &Arc<Upstream>,
        identity: &Identity,
        login: &mut Login<FirstMessage>,
    ) -> Result<UpstreamStream, SessionError> {
        let role = connect::user_role(upstream, &login.db_user).map_err(|e| SessionError::Aws(AwsError::Role(e)))?;
        let credentials = connect::role_credentials(&context.state, upstream, &role, &identity.user).await?;
        login::connect_and_login(&context.state, upstream, &role, &credentials).await
    }

    fn refusal(&self, stage: &Stage<'_, FirstMessage>, e: &SessionError) -> Option<Vec<u8>> {
        match stage {
            Stage::AfterLogin(login) => error_reply(&login.detail.header, e),
            _ => None,
        }
    }

    /// The answer must be a reply to a message: a refused certificate waits for the first one.
    async fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, context: &Context, client: &mut S, stage: Stage<'_, FirstMessage>, e: &SessionError) {
        let reply = match stage {
            Stage::Certificate => match tokio::time::timeout_at(context.handshake_deadline(), first_message(client)).await {
                Ok(Ok(first)) => error_reply(&first.header, e),
                _ => None,
            },
            stage => self.refusal(&stage, e),
        };
        tell(client, reply).await;
    }

    async fn relay(&self, session: Established<Self>) -> RelayEnd {
        let Established { context, identity, upstream, client, server, login, audit_queries } = session;
        let state = context.state;
        let check = relay::database_check(state.clone(), identity.clone(), upstream.clone());
        let session = Session {
            state,
            upstream,
            identity,
            fields: context.fields,
            client,
            server,
            greeting: Vec::new(),
            goodbye: |_| None,
            pending_input: login.detail.raw,
        };
        relay::run(session, CommandFilter::new(audit_queries, check), relay::NoObserver).await
    }
}

/// Reads the first message, whole.
async fn first_message<S: AsyncRead + Unpin>(client: &mut S) -> Result<FirstMessage, SessionError> {
    let mut head = [0u8; HEADER];
    client.read_exact(&mut head).await.map_err(SessionError::ClientIo)?;
    let header = Header::parse(&head)?;
    let mut raw = head.to_vec();
    raw.resize(header.length, 0);
    client.read_exact(&mut raw[HEADER..]).await.map_err(SessionError::ClientIo)?;
    Ok(FirstMessage { header, raw })
}

/// The error document answering the client's first message, in the form it expects.
fn error_reply(header: &Header, e: &SessionError) -> Option<Vec<u8>> {
    let m = e.client_message(&REMEDY)?;
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
