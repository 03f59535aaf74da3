//! The DynamoDB engine: an HTTP/1.1 (keep-alive) proxy behind mTLS. The db user is an IAM role;
//! each request is authorized, stripped of the client's (dummy) signature, routed by its
//! `X-Amz-Target`, re-signed with the role's credentials (assume-role chain, session name = the
//! user), forwarded, and its answer streamed back. Errors are DynamoDB-shaped JSON.

mod body;
pub mod error;
pub mod sign;
pub mod target;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use error::ApiError;
use target::Target;

use super::audit::{ApiCall, AuditEvent, EventDetail, SessionFields, events, shown_text};
use super::connect;
use super::pipeline::{Context, Engine, Established, Facts, Login, RelayEnd, Stage};
use super::session::{Remedy, SessionError};
use super::tls::ClientTls;
use super::{ProxyState, Upstream};
use crate::authz::{Decision, Identity};
use crate::aws::AwsError;
use crate::crd::Protocol;

/// DynamoDB's largest request body (BatchWriteItem): 16 MB.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Request bodies are shown in audit events up to this size.
pub const MAX_AUDITED_BODY: usize = 4 * 1024;

/// The DynamoDB engine.
pub struct DynamoDbEngine;

/// The words of DynamoDB remedies.
pub static REMEDY: Remedy = Remedy {
    tls_options: "connect through `portcullis db proxy DATABASE --tunnel` (it speaks mTLS with your certificate)",
    user_option: "your certificate names no IAM role to use: issue it with --db-user ROLE (a role name or ARN the AccessRoles allow)",
    iam_user,
    login: "IAM",
    rejected,
    plaintext_server: None,
};

fn iam_user(u: &str) -> String {
    format!("the role {u:?} exists and trusts the proxy's identity")
}

fn rejected(_: &str, iam_user: &str) -> String {
    format!("check that {iam_user}")
}

static FACTS: Facts = Facts { name: "dynamodb", serves: Protocol::Dynamodb, login_wait: "reading the login", remedy: &REMEDY };

type Body = BoxBody<Bytes, hyper::Error>;

/// What a session may use: the role's ARN.
pub struct Access {
    role_arn: String,
}

impl Engine for DynamoDbEngine {
    type LoginDetail = ();
    type Server = Access;

    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    /// Nothing is read: the db user is the IAM role the certificate's route names.
    async fn read_login(&self, _: &mut Context, _: &mut ClientTls, identity: &Identity) -> Result<Option<Login<()>>, SessionError> {
        let db_user = identity.route.as_ref().and_then(|r| r.db_user.clone()).ok_or(SessionError::NoUser)?;
        Ok(Some(Login { db_user, db_name: None, detail: () }))
    }

    /// Requests are signed per request over pooled HTTP connections: no IAM login to budget.
    async fn admit(&self, _: &Context, _: &Upstream) -> Result<(), SessionError> {
        Ok(())
    }

    /// The role of the db user; its credentials are resolved (and cached) per request, so a
    /// refused assume-role is that request's AccessDenied.
    async fn log_in(&self, _: &Context, upstream: &Arc<Upstream>, _: &Identity, login: &mut Login<()>) -> Result<Access, SessionError> {
        let role_arn = connect::user_role(upstream, &login.db_user).map_err(|e| SessionError::Aws(AwsError::Role(e)))?;
        Ok(Access { role_arn })
    }

    fn refusal(&self, _: &Stage<'_, ()>, _: &SessionError) -> Option<Vec<u8>> {
        None
    }

    /// A refused session answers its (first) request with the reason, as DynamoDB would.
    async fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, context: &Context, client: &mut S, _: Stage<'_, ()>, e: &SessionError) {
        let error = api_error(e);
        let service = service_fn(move |_request: Request<Incoming>| {
            let response = error.to_response();
            async move { Ok::<_, Infallible>(response) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(context.state.limits.handshake_timeout).keep_alive(false);
        let _ = builder.serve_connection(TokioIo::new(client), service).await;
    }

    async fn relay(&self, session: Established<Self>) -> RelayEnd {
        let Established { context, identity, upstream, client, server, .. } = session;
        let state = context.state.clone();
        let fields = Arc::new(context.fields);
        let session = Arc::new(Session {
            state: state.clone(),
            fields: fields.clone(),
            identity,
            upstream,
            role_arn: server.role_arn,
            upstreams: Default::default(),
            requests: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
        });
        let service = {
            let session = session.clone();
            service_fn(move |request| {
                let session = session.clone();
                async move { Ok::<_, Infallible>(session.handle(request).await) }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(state.limits.handshake_timeout).keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(client), service);
        tokio::pin!(conn);
        let reason = tokio::select! {
            r = conn.as_mut() => match r {
                Ok(()) => "client closed the connection".to_owned(),
                Err(e) if e.is_timeout() => "the client was too slow sending a request".to_owned(),
                Err(e) => format!("HTTP error: {e}"),
            },
            // At SIGTERM: the request in flight is answered, then the connection closes (an
            // idle keep-alive connection at once); the drain bounds the wait.
            _ = state.stop_accepting.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = state.shutdown.cancelled() => {}
                }
                "the proxy is shutting down".to_owned()
            }
        };
        RelayEnd {
            fields,
            bytes_from_client: session.bytes_from_client.load(Ordering::Relaxed),
            bytes_to_client: session.bytes_to_client.load(Ordering::Relaxed),
            reason: format!("{reason} after {} requests", session.requests.load(Ordering::Relaxed)),
            error: None,
        }
    }
}

/// The DynamoDB error that tells a refused client why.
fn api_error(e: &SessionError) -> ApiError {
    let message = e.client_message(&REMEDY).map(|m| m.with_hint()).unwrap_or_else(|| e.to_string());
    match e {
        SessionError::ClientCert(_) => ApiError::unrecognized_client(message),
        SessionError::NoUser => ApiError::access_denied(REMEDY.user_option),
        SessionError::Denied(_) | SessionError::NoRoute | SessionError::UnknownDatabase(_) | SessionError::WrongProtocol { .. } | SessionError::Aws(_) => {
            ApiError::access_denied(message)
        }
        SessionError::Timeout(_) => ApiError::timeout(message),
        _ => ApiError::internal(message),
    }
}

/// One logged-in client connection: who it is, the role it uses, and its connections to AWS.
struct Session {
    state: Arc<ProxyState>,
    fields: Arc<SessionFields>,
    identity: Identity,
    upstream: Arc<Upstream>,
    /// The role's ARN.
    role_arn: String,
    /// Open HTTP connections to AWS endpoints, by authority.
    upstreams: tokio::sync::Mutex<HashMap<String, SendRequest<Full<Bytes>>>>,
    requests: AtomicU64,
    bytes_from_client: AtomicU64,
    /// Response bytes as the responses' Content-Length headers declare them.
    bytes_to_client: AtomicU64,
}

impl Session {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        match self.forward(request).await {
            Ok((response, call)) => {
                self.record(call, None).await;
                response
            }
            Err((e, call)) => {
                let call = call.unwrap_or_else(|| ApiCall { target: target.clone(), ..Default::default() });
                self.record(ApiCall { status: e.status.as_u16(), ..call }, Some(&e)).await;
                e.to_response().map(|b| b.map_err(|never: Infallible| match never {}).boxed())
            }
        }
    }

    async fn record(&self, call: ApiCall, error: Option<&ApiError>) {
        let state = &self.state;
        let known = Target::parse(Some(&call.target)).is_ok_and(|t| t.is_known());
        state.metrics.api_request(known.then_some(call.target.as_str()), call.status);
        let success = error.is_none() && call.status < 400;
        let message = error.map(|e| format!("{}: {}", e.code, e.message));
        state.audit.emit(AuditEvent::new(events::SESSION_REQUEST, "DB1003I", self.fields.clone(), success, message, EventDetail::Request(call))).await;
    }

    /// Checks, re-signs and forwards one request; on failure, the error and what is known of
    /// the call.
    async fn forward(&self, request: Request<Incoming>) -> Result<(Response<Body>, ApiCall), (ApiError, Option<ApiCall>)> {
        let state = &self.state;
        let upstream = &self.upstream;
        if let Decision::Deny(reason) = state.authorize(&self.identity, upstream, &self.fields.db_user, None) {
            return Err((ApiError::access_denied(format!("access denied: {reason}")), None));
        }
        let target = Target::parse(request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()))
            .map_err(|e| (ApiError::unknown_operation(e.to_string()), None))?;
        let mut call = ApiCall { target: target.name.clone(), ..Default::default() };
        let (parts, body) = request.into_parts();
        if parts.headers.get(http::header::TRANSFER_ENCODING).is_some() || parts.headers.get(http::header::CONTENT_LENGTH).is_none() {
            let e = ApiError {
                status: http::StatusCode::LENGTH_REQUIRED,
                ..ApiError::validation("send the body with a Content-Length (chunked uploads are not accepted; every AWS SDK sets Content-Length)")
            };
            return Err((e, Some(call)));
        }
        let declared =
            parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).unwrap_or(usize::MAX);
        if declared > MAX_BODY {
            return Err((ApiError::too_large(format!("the request body of {declared} bytes is over DynamoDB's limit of {MAX_BODY} bytes")), Some(call)));
        }
        let body = match tokio::time::timeout(state.limits.handshake_timeout, Limited::new(body, MAX_BODY).collect()).await {
            Err(_) => return Err((ApiError::timeout(format!("the request body did not arrive within {:?}", state.limits.handshake_timeout)), Some(call))),
            Ok(Err(e)) => return Err((ApiError::validation(format!("cannot read the request body: {e}")), Some(call))),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        self.bytes_from_client.fetch_add(body.len() as u64, Ordering::Relaxed);
        call.body = shown_text(&body, MAX_AUDITED_BODY);
        call.body_length = body.len();
        call.truncated = body.len() > MAX_AUDITED_BODY;
        call.tables = body::tables(&body).map_err(|e| (ApiError::validation(e), Some(call.clone())))?;

        let (host, port) = if upstream.endpoint_override { (upstream.host.clone(), upstream.port) } else { (target.service.host(&upstream.region), 443) };
        if upstream.endpoint_override {
            state.endpoints.check_signed_request(&host).map_err(|e| (ApiError::internal(e.to_string()), Some(call.clone())))?;
        }
        let default_port = if upstream.plain_http { 80 } else { 443 };
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let credentials = self.credentials().await.map_err(|e| (e, Some(call.clone())))?;
        let to = sign::Destination {
            authority: &authority,
            scheme: if upstream.plain_http { "http" } else { "https" },
            region: &upstream.region,
            signing_name: target.service.signing_name(),
        };
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let signed = sign::resign(&parts.method, path, &parts.headers, body, &to, &credentials, SystemTime::now())
            .map_err(|e| (ApiError::internal(e.to_string()), Some(call.clone())))?;
        let mut response = self.send(&host, port, &authority, signed.map(Full::new)).await.map_err(|e| (e, Some(call.clone())))?;
        // Hop-by-hop headers belong to the proxy's connection to AWS, not to the client's: an
        // upstream `Connection: close` must not close the client's keep-alive connection.
        for hop in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            response.headers_mut().remove(hop);
        }
        call.status = response.status().as_u16();
        let length = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        self.bytes_to_client.fetch_add(length.unwrap_or(0), Ordering::Relaxed);
        debug!(target = %call.target, status = call.status, "forwarded");
        Ok((response.map(|b| b.boxed()), call))
    }

    /// The role's credentials; a refused assume-role is the caller's AccessDenied.
    async fn credentials(&self) -> Result<aws_credential_types::Credentials, ApiError> {
        connect::role_credentials(&self.state, &self.upstream, &self.role_arn, &self.identity.user).await.map_err(|e| match e {
            AwsError::AssumeRole { .. } => ApiError::access_denied(e.to_string()),
            other => ApiError::internal(format!("the proxy has no usable AWS credentials: {other}")),
        })
    }

    /// Sends over the open connection to `authority`, opening one when there is none.
    async fn send(&self, host: &str, port: u16, authority: &str, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, ApiError> {
        let mut upstreams = self.upstreams.lock().await;
        let reuse = match upstreams.get_mut(authority) {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reuse {
            let sender = self.open(host, port).await?;
            upstreams.insert(authority.to_owned(), sender);
        }
        let sender = upstreams.get_mut(authority).expect("just inserted");
        sender.send_request(request).await.map_err(|e| {
            upstreams.remove(authority);
            ApiError::unavailable(format!("the request to {authority} failed: {e}"))
        })
    }

    async fn open(&self, host: &str, port: u16) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let state = &self.state;
        let upstream = &self.upstream;
        let addr = format!("{host}:{port}");
        let unreachable =
            |e: SessionError| ApiError::unavailable(format!("{e}; check the network path from the proxy (security groups, a DynamoDB VPC endpoint or NAT)"));
        let tcp = connect::tcp_to(state, host, port).await.map_err(unreachable)?;
        let handshake = |e: hyper::Error| ApiError::unavailable(format!("HTTP with {addr} failed: {e}"));
        if upstream.plain_http {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "upstream connection ended");
                }
            });
            return Ok(sender);
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|_| ApiError::internal(format!("{host:?} is not a valid TLS server name")))?;
        let tls = connect::tls_to(state, upstream, name, addr.clone(), tcp).await.map_err(unreachable)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
