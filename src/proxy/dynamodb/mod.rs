//! The DynamoDB engine: an HTTP/1.1 (keep-alive) proxy behind mTLS. The db user is an IAM role;
//! each request is authorized, stripped of the client's (dummy) signature, routed by its
//! `X-Amz-Target`, re-signed with the role's credentials (assume-role chain, session name = the
//! user), forwarded, and its answer streamed back. Errors are DynamoDB-shaped JSON.

pub mod error;
pub mod sign;
pub mod target;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use error::ApiError;
use target::Target;

use super::audit::{ApiCall, AuditEvent, EventDetail, SessionFields, events, shown_text};
use super::engine::{self, Connection, Engine};
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

impl Engine for DynamoDbEngine {
    fn protocol(&self) -> Protocol {
        Protocol::Dynamodb
    }

    fn serve(&self, connection: Connection) -> BoxFuture<'static, ()> {
        serve(connection).boxed()
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// One client connection: who it is, the role it uses, and its connections to AWS.
struct Session {
    state: Arc<ProxyState>,
    fields: Arc<SessionFields>,
    /// Why every request is refused (no valid certificate, no role), or what it may use.
    access: Result<Access, ApiError>,
    /// Open HTTP connections to AWS endpoints, by authority.
    upstreams: tokio::sync::Mutex<HashMap<String, SendRequest<Full<Bytes>>>>,
    requests: AtomicU64,
    bytes_from_client: AtomicU64,
    /// Response bytes as the responses' Content-Length headers declare them.
    bytes_to_client: AtomicU64,
}

struct Access {
    identity: Identity,
    upstream: Arc<Upstream>,
    /// The role's ARN.
    role_arn: String,
}

async fn serve(connection: Connection) {
    let mut fields = connection.fields(Protocol::Dynamodb);
    let Connection { state, database, stream, .. } = connection;
    let started = Instant::now();
    let tls = match engine::accept_tls(&state, stream).await {
        Ok(tls) => tls,
        Err(e) => return engine::record_refusal(&state, &fields, Protocol::Dynamodb, &e),
    };
    let access = admit(&state, database, &tls, &mut fields);
    let fields = Arc::new(fields);
    match &access {
        Ok(_) => {
            state.metrics.connection("dynamodb", "accepted");
            state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000I", fields.clone(), true, None, EventDetail::None {}));
            info!(user = %fields.user, database = %fields.database, db_user = %fields.db_user, "session started");
        }
        Err(e) => {
            state.metrics.connection("dynamodb", "denied");
            if !fields.user.is_empty() {
                state.audit.emit(AuditEvent::new(events::SESSION_START, "DB1000W", fields.clone(), false, Some(e.message.clone()), EventDetail::None {}));
            }
            info!(error = %e.message, "session refused; its requests get the reason");
        }
    }
    let accepted = access.is_ok();
    let session = Arc::new(Session {
        state: state.clone(),
        fields: fields.clone(),
        access,
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
    state.metrics.active_sessions.inc();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(state.limits.handshake_timeout).keep_alive(accepted);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let reason = tokio::select! {
        r = conn.as_mut() => match r {
            Ok(()) => "client closed the connection".to_owned(),
            Err(e) if e.is_timeout() => "the client was too slow sending a request".to_owned(),
            Err(e) => format!("HTTP error: {e}"),
        },
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.as_mut()).await;
            "the proxy is shutting down".to_owned()
        }
    };
    state.metrics.active_sessions.dec();
    let detail = EventDetail::End {
        bytes_from_client: session.bytes_from_client.load(Ordering::Relaxed),
        bytes_to_client: session.bytes_to_client.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_millis() as u64,
        reason: format!("{reason} after {} requests", session.requests.load(Ordering::Relaxed)),
    };
    if accepted {
        state.audit.emit(AuditEvent::new(events::SESSION_END, "DB1002I", fields, true, None, detail));
    }
}

/// Identity, database and role of a new connection.
fn admit(state: &ProxyState, database: Option<Arc<Upstream>>, tls: &engine::ClientTls, fields: &mut SessionFields) -> Result<Access, ApiError> {
    let identity = engine::client_identity(state, tls).map_err(|e| ApiError::unrecognized_client(e.to_string()))?;
    fields.user = identity.user.clone();
    fields.groups = identity.groups.clone();
    let upstream = engine::choose_upstream(state, database, &identity, Protocol::Dynamodb, fields).map_err(|e| ApiError::access_denied(e.to_string()))?;
    let db_user = identity.route.as_ref().and_then(|r| r.db_user.clone()).ok_or_else(|| {
        ApiError::access_denied("your certificate names no IAM role to use: issue it with --db-user ROLE (a role name or ARN the AccessRoles allow)")
    })?;
    fields.db_user = db_user.clone();
    let role_arn = engine::user_role(&upstream, &db_user).map_err(|e| ApiError::access_denied(e.to_string()))?;
    Ok(Access { identity, upstream, role_arn })
}

impl Session {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        match self.forward(request).await {
            Ok((response, call)) => {
                self.record(call, None);
                response
            }
            Err((e, call)) => {
                let call = call.unwrap_or_else(|| ApiCall { target: target.clone(), ..Default::default() });
                self.record(ApiCall { status: e.status.as_u16(), ..call }, Some(&e));
                e.to_response().map(|b| b.map_err(|never: Infallible| match never {}).boxed())
            }
        }
    }

    fn record(&self, call: ApiCall, error: Option<&ApiError>) {
        let state = &self.state;
        state.metrics.api_request(&call.target, call.status);
        if self.access.is_ok() {
            let success = error.is_none() && call.status < 400;
            let message = error.map(|e| format!("{}: {}", e.code, e.message));
            state.audit.emit(AuditEvent::new(events::SESSION_REQUEST, "DB1003I", self.fields.clone(), success, message, EventDetail::Request(call)));
        }
    }

    /// Checks, re-signs and forwards one request; on failure, the error and what is known of
    /// the call.
    async fn forward(&self, request: Request<Incoming>) -> Result<(Response<Body>, ApiCall), (ApiError, Option<ApiCall>)> {
        let access = self.access.as_ref().map_err(|e| (e.clone(), None))?;
        let state = &self.state;
        let upstream = &access.upstream;
        if let Decision::Deny(reason) = state.authorize(&access.identity, upstream, &self.fields.db_user, None) {
            return Err((ApiError::access_denied(format!("access denied: {reason}")), None));
        }
        let target = Target::parse(request.headers().get("x-amz-target").and_then(|v| v.to_str().ok())).map_err(|e| (ApiError::unknown_operation(e.to_string()), None))?;
        let mut call = ApiCall { target: target.name.clone(), ..Default::default() };
        let (parts, body) = request.into_parts();
        if parts.headers.get(http::header::TRANSFER_ENCODING).is_some() || parts.headers.get(http::header::CONTENT_LENGTH).is_none() {
            let e = ApiError { status: http::StatusCode::LENGTH_REQUIRED, ..ApiError::validation("send the body with a Content-Length (chunked uploads are not accepted; every AWS SDK sets Content-Length)") };
            return Err((e, Some(call)));
        }
        let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).unwrap_or(usize::MAX);
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

        let (host, port) = if upstream.endpoint_override { (upstream.host.clone(), upstream.port) } else { (target.service.host(&upstream.region), 443) };
        if upstream.endpoint_override {
            state.endpoints.check_signed_request(&host).map_err(|e| (ApiError::internal(e.to_string()), Some(call.clone())))?;
        }
        let default_port = if upstream.plain_http { 80 } else { 443 };
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let credentials = self.credentials(access, upstream).await.map_err(|e| (e, Some(call.clone())))?;
        let to = sign::Destination { authority: &authority, scheme: if upstream.plain_http { "http" } else { "https" }, region: &upstream.region, signing_name: target.service.signing_name() };
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let signed = sign::resign(&parts.method, path, &parts.headers, body, &to, &credentials, SystemTime::now()).map_err(|e| (ApiError::internal(e.to_string()), Some(call.clone())))?;
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
    async fn credentials(&self, access: &Access, upstream: &Upstream) -> Result<aws_credential_types::Credentials, ApiError> {
        engine::role_credentials(&self.state, upstream, &access.role_arn, &access.identity.user).await.map_err(|e| match e {
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
        let upstream = &self.access.as_ref().map_err(Clone::clone)?.upstream;
        let addr = format!("{host}:{port}");
        let timeout = state.limits.connect_timeout;
        let unreachable = |e: String| {
            ApiError::unavailable(format!("cannot reach {addr}: {e}; check the network path from the proxy (security groups, a DynamoDB VPC endpoint or NAT)"))
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
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
        let tls = tokio::time::timeout(timeout, tokio_rustls::TlsConnector::from(upstream.tls.clone()).connect(name, tcp))
            .await
            .map_err(|_| unreachable("the TLS handshake timed out".into()))?
            .map_err(|e| ApiError::unavailable(format!("TLS with {addr} failed: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
