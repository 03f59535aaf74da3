//! Malformed and hostile traffic against the PostgreSQL listener: each gets an ErrorResponse
//! or a close, never a panic or a hang, and the proxy keeps serving others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::support::*;

const ROLES: &str = DEV_APP_ON_ORDERS;

/// Reads until EOF or timeout; returns the bytes and whether the peer closed.
fn read_all(stream: &mut impl Read, limit: Duration) -> (Vec<u8>, bool) {
    read_all_until(stream, None, limit)
}

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// The text of the first ErrorResponse in `bytes`, if any.
fn error_text(bytes: &[u8]) -> Option<String> {
    let pos = bytes.iter().position(|&b| b == b'E')?;
    Some(String::from_utf8_lossy(&bytes[pos..]).into_owned())
}

fn startup(version: u32, params: &[u8]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(params);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn tls_client(pki: &ProxyPki, id: Option<&ClientIdentity>, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = client_tls_config(pki, id);
    let mut tcp = raw(port);
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut s = [0u8; 1];
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.read_exact(&mut s).unwrap();
    assert_eq!(&s, b"S");
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A proxy in front of the shared PostgreSQL and a client identity allowed through it. Fields
/// drop in order: the proxy stops before its directory goes.
struct Fixture {
    proxy: Proxy,
    alice: ClientIdentity,
    pki: ProxyPki,
    dir: tempfile::TempDir,
    _pg: std::sync::Arc<Postgres>,
}

impl Fixture {
    fn start() -> Fixture {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let pg = shared_postgres();
        let dir = scratch();
        let pki = ProxyPki::new(dir.path());
        let setup = ProxySetup {
            dir: dir.path(),
            db: &*pg,
            aws_extra: "",
            roles: ROLES,
            env: static_key_env(ACCESS_KEY, SECRET_KEY),
            log_level: "info",
            endpoint: None,
        };
        let proxy = Proxy::start(setup, &pki);
        let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
        Fixture { proxy, alice, pki, dir, _pg: pg }
    }
}

#[test]
fn malformed_traffic_gets_an_error_or_a_close_and_the_proxy_keeps_serving() {
    let _machine = machine_shared();
    let Fixture { proxy, alice, pki, dir, .. } = &Fixture::start();
    let port = proxy.port;

    // (what, bytes, expected text in an ErrorResponse or None for "closed")
    let plain_startup = startup(196_608, b"user\0app\0database\0orders\0\0");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("length 2^31", vec![0x80, 0, 0, 0, 4, 210, 22, 47], Some("invalid message length")),
        ("oversized startup packet", [&20_000u32.to_be_bytes()[..], &[0u8; 64]].concat(), Some("invalid message length")),
        ("length shorter than its header", vec![0, 0, 0, 3], Some("invalid message length")),
        ("unknown protocol version", startup(0x0002_0000, b"\0"), Some("unsupported frontend protocol 2.0")),
        ("protocol 4", startup(0x0004_0000, b"user\0x\0\0"), Some("unsupported frontend protocol 4.0")),
        ("plaintext startup message", plain_startup, Some("requires TLS with a client certificate")),
        ("GSSENCRequest", vec![0, 0, 0, 8, 4, 210, 22, 48], Some("GSSAPI encryption is not supported")),
        ("invalid UTF-8 in parameters", startup(196_608, b"user\0\xff\xfe\0\0"), Some("not UTF-8")),
        ("truncated startup packet then close", vec![0, 0], None),
        ("random bytes", (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect(), Some("")),
    ];
    for (what, bytes, expect) in cases {
        let mut s = raw(port);
        s.write_all(&bytes).unwrap();
        if expect.is_none() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let (got, closed) = read_all(&mut s, Duration::from_secs(6));
        assert!(closed, "{what}: the proxy neither answered nor closed within 6 s");
        if let Some(needle) = expect {
            let err = error_text(&got).unwrap_or_else(|| panic!("{what}: no ErrorResponse, got {got:?}"));
            assert!(err.contains(needle), "{what}: {err}");
        }
    }

    // A client that sends half a header and then nothing is cut off by the handshake timeout.
    let mut slow = raw(port);
    slow.write_all(&[0, 0]).unwrap();
    let started = Instant::now();
    let (_, closed) = read_all(&mut slow, Duration::from_secs(8));
    assert!(closed && started.elapsed() >= Duration::from_secs(2), "slow client: closed={closed} after {:?}", started.elapsed());

    // One deadline from accept to the login (3 s here): an SSLRequest sent after 2 s does not
    // restart it, so the stalled client is closed at 3 s, not at 2 + 3.
    let mut late = raw(port);
    let connected = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    late.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut answer = [0u8; 1];
    late.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    let (_, closed) = read_all(&mut late, Duration::from_secs(8));
    let took = connected.elapsed();
    assert!(closed && took < Duration::from_millis(4500), "the late client was closed={closed} after {took:?} (deadline 3 s from accept)");

    // SSLRequest, then garbage instead of a TLS ClientHello.
    let mut s = raw(port);
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    s.write_all(b"\x16\x03\x01\xff\xffthis is not TLS at all").unwrap();
    let (_, closed) = read_all(&mut s, Duration::from_secs(6));
    assert!(closed, "garbage after SSLRequest must be closed");

    // TLS without a client certificate: a PostgreSQL error over TLS.
    let mut tls = tls_client(pki, None, port);
    tls.write_all(&startup(196_608, b"user\0app\0\0")).unwrap();
    let (got, _) = read_all(&mut tls, Duration::from_secs(5));
    let err = error_text(&got).expect("ErrorResponse for a missing certificate");
    assert!(err.contains("a client certificate is required"), "{err}");

    // Inside TLS with a valid certificate: random bytes, then invalid UTF-8 parameters.
    let mut tls = tls_client(pki, Some(alice), port);
    tls.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let (got, closed) = read_all(&mut tls, Duration::from_secs(5));
    assert!(closed, "random bytes after TLS");
    assert!(error_text(&got).is_some_and(|e| e.contains("invalid")), "{got:?}");
    let mut tls = tls_client(pki, Some(alice), port);
    tls.write_all(&startup(196_608, b"user\0app\0database\0\xc3\x28\0\0")).unwrap();
    let (got, _) = read_all(&mut tls, Duration::from_secs(5));
    assert!(error_text(&got).is_some_and(|e| e.contains("not UTF-8")), "{got:?}");

    // Expired and foreign certificates.
    let expired = expired_certificate(pki, dir.path());
    let t = text(&psql(&proxy.conninfo(&expired, "app", "orders"), &["-c", "select 1"]));
    assert!(t.contains("your client certificate has expired"), "{t}");
    let foreign_pki = ProxyPki::new(&dir.path().join("foreign"));
    let foreign = foreign_pki.client("mallory", "alice", &["dev"], None, Duration::from_secs(3600));
    let mut info = proxy.conninfo(&foreign, "app", "orders");
    info = info.replace(foreign.files.ca().to_str().unwrap(), pki.dir.join("ca.crt").to_str().unwrap());
    let t = text(&psql(&info, &["-c", "select 1"]));
    assert!(t.contains("not issued by this proxy's client CA"), "{t}");

    // Still serving, still alive.
    let out = psql(&proxy.conninfo(alice, "app", "orders"), &["-c", "select 41 + 1"]);
    assert!(out.status.success(), "{}\n{}", text(&out), proxy.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

#[test]
fn thousands_of_bytes_of_mid_session_garbage_end_only_that_session() {
    let _machine = machine_shared();
    let Fixture { proxy, alice, pki, .. } = &Fixture::start();
    let mut tls = tls_client(pki, Some(alice), proxy.port);
    tls.write_all(&startup(196_608, b"user\0app\0database\0orders\0\0")).unwrap();
    // Wait for ReadyForQuery, then send a message whose length lies (2^31 - 1).
    let (got, _) = read_all_until(&mut tls, Some(b'Z'), Duration::from_secs(10));
    assert!(got.contains(&b'Z'), "no ReadyForQuery: {got:?}");
    tls.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b's']).unwrap();
    let (_, closed) = read_all(&mut tls, Duration::from_secs(6));
    assert!(closed, "a lying length ends the session");
    let out = psql(&proxy.conninfo(alice, "app", "orders"), &["-c", "select 1"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Reads until EOF, until `tag` has been seen, or until `limit`; returns the bytes and whether
/// the peer closed.
fn read_all_until(stream: &mut impl Read, tag: Option<u8>, limit: Duration) -> (Vec<u8>, bool) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit && !tag.is_some_and(|t| out.contains(&t)) {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// A client certificate from the proxy's CA that expired an hour ago.
fn expired_certificate(pki: &ProxyPki, dir: &std::path::Path) -> ClientIdentity {
    let now = time::OffsetDateTime::now_utc();
    certificate_between(pki, &dir.join("expired"), now - time::Duration::hours(3), now - time::Duration::hours(1))
}

/// A client certificate for alice (group dev) from the proxy's CA, valid between these times.
fn certificate_between(pki: &ProxyPki, dir: &std::path::Path, not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> ClientIdentity {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.dir.join("ca.crt")).unwrap(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = portcullis::pki::ClientFiles::new(dir.to_path_buf());
    let issued = portcullis::pki::Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
    files.write(&issued, &std::fs::read_to_string(pki.dir.join("ca.crt")).unwrap()).unwrap();
    ClientIdentity { files }
}

#[test]
fn every_refusal_is_audited_with_its_kind_and_certificate_and_a_flood_is_counted() {
    let _machine = machine_shared();
    let (proxy, _alice, pki, dir, _pg) = custom_proxy(", refusalBurst: 20, refusalWindow: 3s", "");
    let port = proxy.port;
    // No TLS: a StartupMessage without the SSLRequest.
    let mut s = raw(port);
    s.write_all(&startup(196_608, b"user\0app\0database\0orders\0\0")).unwrap();
    let _ = read_all(&mut s, Duration::from_secs(5));
    // TLS without a certificate.
    let mut tls = tls_client(&pki, None, port);
    let _ = tls.write_all(&startup(196_608, b"user\0app\0\0"));
    let _ = read_all(&mut tls, Duration::from_secs(5));
    // A foreign CA's, an expired, a not-yet-valid certificate, and a route to another database.
    let foreign_pki = ProxyPki::new(&dir.path().join("foreign"));
    let foreign = foreign_pki.client("mallory", "alice", &["dev"], None, Duration::from_secs(3600));
    let now = time::OffsetDateTime::now_utc();
    let expired = certificate_between(&pki, &dir.path().join("expired"), now - time::Duration::hours(3), now - time::Duration::hours(1));
    let early = certificate_between(&pki, &dir.path().join("early"), now + time::Duration::hours(1), now + time::Duration::hours(3));
    let routed = pki.client(
        "routed",
        "alice",
        &["dev"],
        Some(portcullis::authz::Route { database: Some("billing".into()), db_user: None, db_name: None }),
        Duration::from_secs(3600),
    );
    for id in [&foreign, &expired, &early, &routed] {
        let mut tls = tls_client(&pki, Some(id), port);
        let _ = tls.write_all(&startup(196_608, b"user\0app\0database\0orders\0\0"));
        let _ = read_all(&mut tls, Duration::from_secs(5));
    }
    let events = proxy.audit(6);
    let refused: Vec<&serde_json::Value> = events.iter().filter(|e| e["code"] == "DB1000W").collect();
    let find = |needle: &str| {
        refused
            .iter()
            .copied()
            .find(|e| e["error"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no refusal saying {needle:?}: {refused:?}"))
    };
    let no_tls = find("requires TLS");
    assert_eq!((no_tls["reason_kind"].as_str(), no_tls["user"].as_str()), (Some("client_protocol"), Some("")));
    assert!(no_tls["client_addr"].as_str().unwrap().starts_with("127.0.0.1:") && no_tls.get("certificate_subject").is_none(), "{no_tls}");
    let missing = find("a client certificate is required");
    assert_eq!(missing["reason_kind"], "client_certificate");
    let stranger = find("not issued by this proxy's client CA");
    assert!(stranger["certificate_subject"].as_str().unwrap().contains("CN=alice"), "{stranger}");
    assert!(!stranger["certificate_issuer"].as_str().unwrap().is_empty() && !stranger["certificate_serial"].as_str().unwrap().is_empty(), "{stranger}");
    let old = find("has expired");
    assert_eq!((old["reason_kind"].as_str(), old["user"].as_str()), (Some("client_certificate"), Some("")), "not identified: {old}");
    assert!(old["certificate_subject"].as_str().unwrap().contains("CN=alice"), "{old}");
    let not_yet = find("not valid yet");
    assert!(not_yet["certificate_serial"].as_str().is_some(), "{not_yet}");
    let route = find("your certificate is limited to database");
    assert_eq!((route["reason_kind"].as_str(), route["user"].as_str()), (Some("authorization"), Some("alice")), "{route}");

    // 10,000 refused connections from one address: a bounded number of lines, and nothing uncounted.
    let flood = 10_000u64;
    let started = Instant::now();
    for _ in 0..flood {
        let mut s = raw(port);
        let _ = s.write_all(&startup(196_608, b"user\0app\0\0"));
        let mut sink = [0u8; 256];
        let _ = s.read(&mut sink);
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let events = proxy.audit(1);
    let no_tls_lines: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["code"] == "DB1000W" && e["error"].as_str().is_some_and(|m| m.contains("requires TLS"))).collect();
    let summaries: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "db.session.refusals").collect();
    let counted: u64 = summaries.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(
        no_tls_lines.len() as u64 + counted,
        flood + 1,
        "every refusal is audited or counted ({} lines, {} summaries)",
        no_tls_lines.len(),
        summaries.len()
    );
    let windows = took.as_secs() / 3 + 2;
    assert!(
        no_tls_lines.len() as u64 + summaries.len() as u64 <= windows * 21,
        "{} lines for {flood} refusals in {took:?}",
        no_tls_lines.len() + summaries.len()
    );
    assert!(summaries.iter().all(|e| e["reason_kind"] == "client_protocol" && e["client_addr"] == "127.0.0.1"), "{summaries:?}");
    let log_lines = proxy.log().lines().filter(|l| l.contains("session refused")).count();
    assert!(log_lines < 500, "the log is spared too: {log_lines} lines");
    eprintln!("flood: {flood} refusals in {took:?}: {} audit lines, {} summaries", no_tls_lines.len(), summaries.len());
}

/// A proxy with more `audit` and `limits` settings (`, drainTimeout: 2s`), and alice.
fn custom_proxy(audit_extra: &str, limits_extra: &str) -> (Proxy, ClientIdentity, ProxyPki, tempfile::TempDir, std::sync::Arc<Postgres>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pg = shared_postgres();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let setup =
        ProxySetup { dir: dir.path(), db: &*pg, aws_extra: "", roles: ROLES, env: static_key_env(ACCESS_KEY, SECRET_KEY), log_level: "info", endpoint: None };
    let proxy = Proxy::start_with_extra(setup, &pki, audit_extra, limits_extra);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    (proxy, alice, pki, dir, pg)
}

fn spawn_psql(conninfo: &str, sql: &str) -> std::process::Child {
    std::process::Command::new("psql")
        .arg("-X")
        .args(["-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(conninfo)
        .args(["-c", sql])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_drains_running_sessions_refuses_new_ones_and_then_says_why() {
    let _machine = machine_shared();
    // A 10 s statement, drainTimeout 30 s: it finishes, and the proxy exits right after it.
    let (mut proxy, alice, _pki, _dir, _pg) = custom_proxy("", ", drainTimeout: 30s");
    let conninfo = proxy.conninfo(&alice, "app", "orders");
    let running = spawn_psql(&conninfo, "select pg_sleep(10), 'finished'");
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    run_ok(std::process::Command::new("kill").args(["-TERM", &proxy.proc.child.id().to_string()]));
    std::thread::sleep(Duration::from_millis(500));
    assert!(http_get(proxy.admin_port, "/readyz").contains("503"), "not ready while draining");
    let refused = TcpStream::connect(("127.0.0.1", proxy.port));
    assert!(refused.is_err(), "a new connection during the drain is refused");
    let out = running.wait_with_output().unwrap();
    assert!(out.status.success() && text(&out).contains("|finished"), "the running statement finished: {}\n{}", text(&out), proxy.log());
    let status = proxy.proc.child.wait().unwrap();
    let exited = signalled.elapsed();
    assert!(status.success() && exited < Duration::from_secs(15), "the proxy exited {exited:?} after SIGTERM, once the session ended: {status:?}");
    assert!(proxy.log().contains("running sessions may finish"), "{}", proxy.log());

    // drainTimeout 2 s: a 20 s statement is ended after the drain, and the client is told why.
    let (proxy, alice, _pki, _dir, _pg) = custom_proxy("", ", drainTimeout: 2s");
    let running = spawn_psql(&proxy.conninfo(&alice, "app", "orders"), "select pg_sleep(20)");
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    run_ok(std::process::Command::new("kill").args(["-TERM", &proxy.proc.child.id().to_string()]));
    let out = running.wait_with_output().unwrap();
    let ended = signalled.elapsed();
    let t = text(&out);
    assert!(!out.status.success() && t.contains("the proxy is shutting down"), "{t}");
    assert!(ended >= Duration::from_millis(1800) && ended < Duration::from_secs(8), "ended {ended:?} after SIGTERM (drain 2 s)");
    let events = proxy.audit(2);
    let end = events.iter().find(|e| e["event"] == "db.session.end").expect("the session's end is audited");
    assert_eq!(end["reason"], "the proxy is shutting down", "{end}");
}

/// A proxy whose audit file is a FIFO that nobody reads yet (held open, so the writer blocks
/// once the pipe is full), with a small audit queue and `extra` audit settings.
fn stalled_audit(extra: &str) -> (Proxy, ClientIdentity, std::fs::File, tempfile::TempDir, std::sync::Arc<Postgres>, ProxyPki) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pg = shared_postgres();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let fifo = dir.path().join("audit.jsonl");
    run_ok(std::process::Command::new("mkfifo").arg(&fifo));
    // Read and write: opening a FIFO so does not wait for the other end (Linux).
    let held = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let setup =
        ProxySetup { dir: dir.path(), db: &*pg, aws_extra: "", roles: ROLES, env: static_key_env(ACCESS_KEY, SECRET_KEY), log_level: "warn", endpoint: None };
    let proxy = Proxy::start_with_audit(setup, &pki, &format!(", queueSize: 16{extra}"));
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    (proxy, alice, held, dir, pg, pki)
}

fn metric(proxy: &Proxy, name: &str) -> f64 {
    proxy.metrics().lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_stalled_audit_sink_makes_sessions_wait_and_loses_nothing_unless_told_to_drop() {
    let _machine = machine_shared();
    let statements = 1000;
    let script = (0..statements).map(|i| format!("select {i};\n")).collect::<String>();

    // block (the default): the session waits while nobody reads the audit trail.
    let (proxy, alice, mut held, dir, _pg, _pki) = stalled_audit("");
    std::fs::write(dir.path().join("script.sql"), &script).unwrap();
    let mut running = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(proxy.conninfo(&alice, "app", "orders"))
        .arg("-f")
        .arg(dir.path().join("script.sql"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(running.try_wait().unwrap().is_none(), "the session waits for the audit trail");
    // Read the trail: the session goes on, and every statement is in it.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut queries = 0;
        for line in std::io::BufReader::new(&mut held).lines() {
            let line = line.unwrap();
            if line.contains("\"db.session.query\"") {
                queries += 1;
            }
            if line.contains("\"db.session.end\"") {
                break;
            }
        }
        queries
    });
    let status = running.wait().unwrap();
    assert!(status.success());
    assert_eq!(reader.join().unwrap(), statements, "every statement audited");
    assert_eq!(metric(&proxy, "portcullis_audit_dropped_events_total"), 0.0);
    assert!(metric(&proxy, "portcullis_audit_blocked_seconds_total") > 1.0, "{}", proxy.metrics());

    // drop: the session does not wait, and the loss is counted.
    let (proxy, alice, _held, dir, _pg, _pki) = stalled_audit(", onOverflow: drop");
    std::fs::write(dir.path().join("script.sql"), &script).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(proxy.conninfo(&alice, "app", "orders"))
        .arg("-f")
        .arg(dir.path().join("script.sql"))
        .output()
        .unwrap();
    assert!(out.status.success() && started.elapsed() < Duration::from_secs(20), "{}", text(&out));
    assert!(metric(&proxy, "portcullis_audit_dropped_events_total") > 0.0, "{}", proxy.metrics());
}
