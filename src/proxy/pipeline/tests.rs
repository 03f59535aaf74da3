//! A test engine for a trivial line protocol, written only with the engine phases: it gets the
//! certificate check, routing, authorization, refusal audit and metrics from the pipeline.
//!
//! The protocol: after TLS the client sends `LOGIN <db user> <db name>\n`; the proxy answers
//! `OK\n` or `ERR <reason>\n`. Upstream, the engine sends `HELLO <db user>\n` to a plain TCP
//! server and expects `WELCOME\n`; then lines are relayed both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::{Context, Engine, Established, Facts, Login, RelayEnd, Serve, Stage};
use crate::authz::{Identity, Route};
use crate::aws::{AwsContext, EndpointPolicy};
use crate::crd::{AccessRole, Database, Protocol};
use crate::pki::{Ca, CaFiles};
use crate::proxy::ProxyState;
use crate::proxy::audit::{self, AuditTargets};
use crate::proxy::session::{Remedy, SessionError, rds_rejected};
use crate::proxy::tls::{ClientTls, ServerTls};
use crate::proxy::upstream::Upstream;

/// How often each phase ran, to prove which ones a connection reached.
static READ_LOGIN: AtomicUsize = AtomicUsize::new(0);
static LOG_IN: AtomicUsize = AtomicUsize::new(0);
/// The tests share the counters: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct LineEngine;

static REMEDY: Remedy = Remedy {
    tls_options: "connect with TLS and your certificate",
    user_option: "send LOGIN <db user> <db name>",
    iam_user: |u| format!("{u:?} may log in"),
    login: "line",
    rejected: rds_rejected,
    plaintext_server: None,
};

// It has no protocol of its own in the CRD: it serves Databases declared as PostgreSQL.
static FACTS: Facts = Facts { name: "line", serves: Protocol::Postgres, login_wait: "waiting for LOGIN", remedy: &REMEDY };

impl Engine for LineEngine {
    type LoginDetail = ();
    type Server = BufReader<TcpStream>;

    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    async fn read_login(&self, _: &mut Context, client: &mut ClientTls, _: &Identity) -> Result<Option<Login<()>>, SessionError> {
        READ_LOGIN.fetch_add(1, Ordering::SeqCst);
        let line = read_line(client).await.map_err(SessionError::ClientIo)?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("LOGIN"), Some(user), Some(db)) => Ok(Some(Login { db_user: user.into(), db_name: Some(db.into()), detail: () })),
            _ => Err(SessionError::NoUser),
        }
    }

    async fn log_in(&self, context: &Context, upstream: &Arc<Upstream>, _: &Identity, login: &mut Login<()>) -> Result<Self::Server, SessionError> {
        LOG_IN.fetch_add(1, Ordering::SeqCst);
        let mut server = BufReader::new(crate::proxy::connect::tcp(&context.state, upstream).await?);
        server.write_all(format!("HELLO {}\n", login.db_user).as_bytes()).await.map_err(SessionError::UpstreamIo)?;
        let mut answer = String::new();
        server.read_line(&mut answer).await.map_err(SessionError::UpstreamIo)?;
        if answer != "WELCOME\n" {
            return Err(SessionError::UpstreamRejected { db_user: login.db_user.clone(), sqlstate: String::new(), message: answer.trim().into() });
        }
        Ok(server)
    }

    fn refusal(&self, _: &Stage<'_, ()>, e: &SessionError) -> Option<Vec<u8>> {
        e.client_message(&REMEDY).map(|m| format!("ERR {}\n", m.message).into_bytes())
    }

    async fn relay(&self, session: Established<Self>) -> RelayEnd {
        let Established { context, mut client, mut server, .. } = session;
        let mut to_client = 0u64;
        if client.write_all(b"OK\n").await.is_ok() {
            to_client += 3;
            if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                return RelayEnd {
                    fields: Arc::new(context.fields),
                    bytes_from_client: a,
                    bytes_to_client: to_client + b,
                    reason: "closed".into(),
                    error: None,
                };
            }
        }
        RelayEnd { fields: Arc::new(context.fields), bytes_from_client: 0, bytes_to_client: to_client, reason: "closed".into(), error: None }
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).await? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A line server upstream: `HELLO x` → `WELCOME`, then `echo: <line>` for every line. Counts
/// the connections it gets.
async fn line_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = if line.starts_with("HELLO ") { "WELCOME\n".to_owned() } else { format!("echo: {line}\n") };
                    if wr.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

struct Harness {
    state: Arc<ProxyState>,
    ca: Ca,
    ca_pem: String,
    audit_file: std::path::PathBuf,
    upstream_connections: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::new(dir.path());
        let ca = files.init(&["localhost".to_owned()], Duration::from_secs(3600), false).unwrap();
        let ca_pem = std::fs::read_to_string(files.ca_cert()).unwrap();
        let server_tls = ServerTls::load(&files.server_cert(), &files.server_key(), &files.ca_cert(), &[]).unwrap();
        let (addr, upstream_connections) = line_server().await;
        let db: Database = serde_yaml::from_str(&format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: lines, namespace: default}}\nspec: {{protocol: postgres, endpoint: \"127.0.0.1:{}\", aws: {{region: us-east-1}}}}\n",
            addr.port()
        ))
        .unwrap();
        let upstream = Arc::new(Upstream::resolve(&db, None, 0).unwrap());
        let role: AccessRole = serde_yaml::from_str(
            "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: dev, namespace: default}\nspec:\n  subjects: [{kind: Group, name: dev}]\n  allow: {databases: [lines], dbUsers: [app], dbNames: [orders]}\n",
        )
        .unwrap();
        let (_, roles) = tokio::sync::watch::channel(Arc::new(vec![role]));
        let audit_file = dir.path().join("audit.jsonl");
        let metrics = crate::proxy::metrics::ProxyMetrics::default();
        let (audit, _) = audit::start(AuditTargets { stdout: false, file: Some(audit_file.clone()) }, 64, metrics.clone()).unwrap();
        let state = Arc::new(ProxyState {
            databases: [(upstream.key(), upstream)].into_iter().collect(),
            roles,
            aws: AwsContext::from_sdk_config(aws_config::SdkConfig::builder().build()),
            endpoints: EndpointPolicy::new(Vec::new()),
            server_tls,
            audit,
            metrics,
            cancels: Default::default(),
            refusals: Default::default(),
            stop_accepting: Default::default(),
            limits: Default::default(),
            shutdown: Default::default(),
        });
        Harness { state, ca, ca_pem, audit_file, upstream_connections, _dir: dir }
    }

    /// Accepts one connection through the pipeline with the line engine and connects to it
    /// with a client certificate from `ca`.
    async fn connect(&self, ca: &Ca, groups: &[&str]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let addr = self.serve_one().await;
        let route = Route { database: Some("lines".into()), ..Default::default() };
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let issued = ca.issue_client("alice", &groups, Some(&route), Duration::from_secs(600)).unwrap();
        let config = client_config(&self.ca_pem, &issued.cert_pem, &issued.key_pem);
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(config)).connect("localhost".try_into().unwrap(), tcp).await.unwrap()
    }

    /// A listener whose one connection the pipeline serves with the line engine.
    async fn serve_one(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = self.state.clone();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            static ENGINE: LineEngine = LineEngine;
            let engine: &'static dyn Serve = &ENGINE;
            engine.serve(super::Connection { state, fixed_upstream: None, stream, peer, session_id: "test".into() }).await;
        });
        addr
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_file).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    async fn audit_until(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let events = self.audit();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.audit()
    }

    fn count(&self, result: &str) -> u64 {
        self.state.metrics.connections.get_or_create(&crate::proxy::metrics::ConnLabels { protocol: "line".into(), result: result.into() }).get()
    }
}

fn client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key).unwrap()
}

async fn line<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> String {
    tokio::time::timeout(Duration::from_secs(10), read_line(stream)).await.expect("an answer").unwrap_or_default()
}

#[tokio::test]
async fn an_allowed_client_logs_in_and_relays_with_start_and_end_audited() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new().await;
    let mut client = h.connect(&h.ca, &["dev"]).await;
    client.write_all(b"LOGIN app orders\n").await.unwrap();
    assert_eq!(line(&mut client).await, "OK");
    client.write_all(b"ping\n").await.unwrap();
    assert_eq!(line(&mut client).await, "echo: ping");
    client.shutdown().await.unwrap();
    drop(client);
    let events = h.audit_until(2).await;
    let kinds: Vec<_> = events.iter().map(|e| (e["event"].as_str().unwrap().to_owned(), e["success"].as_bool().unwrap())).collect();
    assert_eq!(kinds, [("db.session.start".to_owned(), true), ("db.session.end".to_owned(), true)], "{events:?}");
    assert_eq!(
        (events[0]["user"].as_str(), events[0]["db_user"].as_str(), events[0]["db_name"].as_str(), events[0]["protocol"].as_str()),
        (Some("alice"), Some("app"), Some("orders"), Some("line"))
    );
    assert_eq!(events[0]["database"], "default/lines");
    assert_eq!(h.count("accepted"), 1);
}

#[tokio::test]
async fn a_certificate_of_another_ca_never_reaches_the_login_phases() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new().await;
    let (read_before, log_in_before) = (READ_LOGIN.load(Ordering::SeqCst), LOG_IN.load(Ordering::SeqCst));
    let (stranger, _) = Ca::generate("someone else").unwrap();
    let mut client = h.connect(&stranger, &["dev"]).await;
    // The client sends its login anyway; the engine must not read it.
    let _ = client.write_all(b"LOGIN app orders\n").await;
    let answer = line(&mut client).await;
    assert!(answer.starts_with("ERR ") && answer.contains("certificate"), "{answer}");
    assert_eq!(READ_LOGIN.load(Ordering::SeqCst), read_before, "read_login ran for a refused certificate");
    assert_eq!(LOG_IN.load(Ordering::SeqCst), log_in_before, "log_in ran for a refused certificate");
    assert_eq!(h.upstream_connections.load(Ordering::SeqCst), 0, "the upstream was contacted");
    assert_eq!(h.count("failed"), 1);
    let failures = h.state.metrics.auth_failures.get_or_create(&crate::proxy::metrics::AuthFailLabels { kind: "client_certificate".into() }).get();
    assert_eq!(failures, 1);
    // Audited although nobody was identified: the reason's kind and the certificate shown.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = h.audit();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!((e["event"].as_str(), e["success"].as_bool(), e["reason_kind"].as_str()), (Some("db.session.start"), Some(false), Some("client_certificate")));
    assert_eq!((e["certificate_subject"].as_str(), e["certificate_issuer"].as_str()), (Some("O=dev, CN=alice"), Some("CN=someone else")), "{e}");
    assert!(e["certificate_serial"].as_str().is_some_and(|s| s.len() >= 2 && s.chars().all(|c| c.is_ascii_hexdigit())), "{e}");
    assert_eq!(e["user"], "", "not identified: {e}");
}

/// TCP health checks and reachability probes connect and close: counted as `closed`, not as
/// failures, and not audited.
#[tokio::test]
async fn a_connection_closed_before_tls_is_counted_as_closed_not_failed() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new().await;
    drop(TcpStream::connect(h.serve_one().await).await.unwrap());
    let start = std::time::Instant::now();
    while h.count("closed") == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the closed connection was not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((h.count("closed"), h.count("failed")), (1, 0));
    let failures = h.state.metrics.auth_failures.get_or_create(&crate::proxy::metrics::AuthFailLabels { kind: "client_io".into() }).get();
    assert_eq!(failures, 0);
    assert!(h.audit().is_empty(), "{:?}", h.audit());
}

#[tokio::test]
async fn a_denied_login_is_refused_in_the_protocol_and_audited_without_an_upstream_login() {
    let _serial = SERIAL.lock().await;
    let h = Harness::new().await;
    let log_in_before = LOG_IN.load(Ordering::SeqCst);
    // Group `sales` has no AccessRole.
    let mut client = h.connect(&h.ca, &["sales"]).await;
    client.write_all(b"LOGIN app orders\n").await.unwrap();
    let answer = line(&mut client).await;
    assert!(answer.starts_with("ERR access denied: ") && answer.contains("no AccessRole"), "{answer}");
    // And a database name the role does not allow, for an allowed group.
    let mut client = h.connect(&h.ca, &["dev"]).await;
    client.write_all(b"LOGIN app payroll\n").await.unwrap();
    let answer = line(&mut client).await;
    assert!(answer.starts_with("ERR access denied: ") && answer.contains("payroll"), "{answer}");
    assert_eq!(LOG_IN.load(Ordering::SeqCst), log_in_before, "log_in ran for a denied login");
    assert_eq!(h.upstream_connections.load(Ordering::SeqCst), 0);
    let events = h.audit_until(2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!((e["event"].as_str(), e["code"].as_str(), e["success"].as_bool()), (Some("db.session.start"), Some("DB1000W"), Some(false)), "{e}");
        assert!(e["error"].as_str().unwrap().starts_with("access denied"), "{e}");
    }
    assert_eq!(h.count("denied"), 2);
}
