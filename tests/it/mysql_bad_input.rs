//! Malformed and hostile traffic against the MySQL listener: each gets an ERR packet that says
//! what is wrong, or a close — never a panic or a hang — and the proxy keeps serving others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use portcullis::proxy::mysql::codec::{self, HandshakeResponse, SslRequest, caps};
use rustls::pki_types::ServerName;

use crate::support::mariadb::shared_mariadb;
use crate::support::*;

const ROLES: &str = DEV_APP_ON_ORDERS;

const CLIENT_CAPS: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH | caps::CONNECT_WITH_DB | caps::SSL | caps::DEPRECATE_EOF;

/// Reads one packet, or `None` on close or after `limit`.
fn read_packet(stream: &mut impl Read, limit: Duration) -> Option<(u8, Vec<u8>)> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= 4 {
            let (len, seq) = codec::header(buf[..4].try_into().unwrap());
            if buf.len() >= 4 + len {
                return Some((seq, buf[4..4 + len].to_vec()));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if start.elapsed() > limit {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// Whether the peer closes within `limit` (reading and dropping whatever comes first).
fn closes(stream: &mut impl Read, limit: Duration) -> bool {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The ERR packet the proxy answers with: (sequence id, code, message).
fn expect_err(stream: &mut impl Read, what: &str) -> (u8, u16, String) {
    let (seq, payload) = read_packet(stream, Duration::from_secs(10)).unwrap_or_else(|| panic!("{what}: no answer"));
    let err = codec::parse_err(&payload).unwrap_or_else(|e| panic!("{what}: not an ERR packet ({e}): {payload:?}"));
    (seq, err.code, err.message)
}

/// A TCP connection that has read the proxy's greeting.
fn greeted(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (seq, payload) = read_packet(&mut s, Duration::from_secs(5)).expect("greeting");
    assert_eq!(seq, 0);
    let greeting = codec::Greeting::parse(&payload).expect("a valid greeting");
    assert!(greeting.capabilities & caps::SSL != 0, "TLS is advertised");
    assert_eq!(greeting.capabilities & caps::COMPRESS, 0, "compression is not offered");
    s
}

fn ssl_request(capabilities: u32) -> Vec<u8> {
    SslRequest { capabilities, max_packet: 1 << 24, collation: 45 }.encode()
}

fn response(capabilities: u32, user: &str, db: Option<&str>) -> Vec<u8> {
    HandshakeResponse {
        prefix: SslRequest { capabilities, max_packet: 1 << 24, collation: 45 },
        user: user.into(),
        auth_response: vec![],
        database: db.map(str::to_owned),
        auth_plugin: Some("mysql_native_password".into()),
        attributes: vec![],
    }
    .encode()
}

/// Greeting, SSLRequest and the TLS handshake (with `id`'s certificate, if any).
fn tls(pki: &ProxyPki, id: Option<&ClientIdentity>, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = client_tls_config(pki, id);
    let mut tcp = greeted(port);
    tcp.write_all(&codec::packet(1, &ssl_request(CLIENT_CAPS))).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn malformed_logins_get_an_err_packet_or_a_close_and_the_proxy_keeps_serving() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let setup =
        ProxySetup { dir: dir.path(), db: &*db, aws_extra: "", roles: ROLES, env: static_key_env(ACCESS_KEY, SECRET_KEY), log_level: "info", endpoint: None };
    let proxy = Proxy::start(setup, &pki);
    let port = proxy.port;
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));

    // A client that never asks for TLS gets told how to connect.
    let mut s = greeted(port);
    s.write_all(&codec::packet(1, &response(CLIENT_CAPS & !caps::SSL, "app", Some("orders")))).unwrap();
    let (seq, code, message) = expect_err(&mut s, "no TLS");
    assert_eq!((seq, code), (2, 1045), "{message}");
    assert!(message.contains("requires TLS with a client certificate") && message.contains("--ssl-cert"), "{message}");
    assert!(closes(&mut s, Duration::from_secs(2)));

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("wrong sequence id", codec::packet(5, &ssl_request(CLIENT_CAPS)), 1156, "out of order"),
        ("a short handshake response", codec::packet(1, b"\x00\x02\x00\x00"), 1043, "shorter than 32 bytes"),
        ("a pre-4.1 client", codec::packet(1, &ssl_request((CLIENT_CAPS & !caps::PROTOCOL_41) | caps::SSL)), 1043, "protocol 4.1"),
        ("a packet header claiming 16 MiB", vec![0xff, 0xff, 0xff, 1], 1043, "over the limit"),
        ("an SSLRequest with trailing bytes", codec::packet(1, &[ssl_request(CLIENT_CAPS), b"junk".to_vec()].concat()), 1043, "longer than 32 bytes"),
    ];
    for (what, bytes, want_code, want_text) in cases {
        let mut s = greeted(port);
        s.write_all(&bytes).unwrap();
        let started = Instant::now();
        let (_, code, message) = expect_err(&mut s, what);
        assert_eq!(code, want_code, "{what}: {message}");
        assert!(message.contains(want_text), "{what}: {message}");
        assert!(started.elapsed() < Duration::from_secs(2), "{what}: answered at once, not after reading 16 MiB");
        assert!(closes(&mut s, Duration::from_secs(2)), "{what}: the proxy closes");
    }

    // Random bytes instead of a handshake.
    let mut s = greeted(port);
    let noise: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = s.write_all(&noise);
    assert!(closes(&mut s, Duration::from_secs(5)), "random bytes: an ERR and a close");

    // Silence: the handshake timeout (3 s in the test configuration) ends it with an ERR.
    let mut s = greeted(port);
    let (_, code, message) = expect_err(&mut s, "silence");
    assert_eq!(code, 1043, "{message}");
    assert!(message.contains("timed out"), "{message}");

    // After TLS: no client certificate.
    let mut t = tls(&pki, None, port);
    t.write_all(&codec::packet(2, &response(CLIENT_CAPS, "app", Some("orders")))).unwrap();
    let (seq, code, message) = expect_err(&mut t, "no certificate");
    assert_eq!((seq, code), (3, 1045), "{message}");
    assert!(message.contains("certificate"), "{message}");

    // After TLS: compression asked for although not offered.
    let mut t = tls(&pki, Some(&alice), port);
    t.write_all(&codec::packet(2, &response(CLIENT_CAPS | caps::COMPRESS, "app", Some("orders")))).unwrap();
    let (_, code, message) = expect_err(&mut t, "compression");
    assert_eq!(code, 1043, "{message}");
    assert!(message.contains("compression"), "{message}");

    // After TLS: random bytes.
    let mut t = tls(&pki, Some(&alice), port);
    let _ = t.write_all(&noise[..200]);
    let _ = t.flush();
    assert!(closes(&mut t, Duration::from_secs(5)), "random bytes after TLS: an ERR and a close");

    // A logged-in session that sends garbage ends; nobody else notices.
    let mut t = tls(&pki, Some(&alice), port);
    t.write_all(&codec::packet(2, &response(CLIENT_CAPS, "app", Some("orders")))).unwrap();
    let (seq, ok) = read_packet(&mut t, Duration::from_secs(10)).expect("login answer");
    assert_eq!((seq, ok.first()), (3, Some(&0u8)), "logged in: {ok:?}\n{}", proxy.log());
    let _ = t.write_all(&[0xff, 0xff, 0xff, 0x00, 0x03]);
    let _ = t.write_all(&noise);
    let _ = t.flush();
    drop(t);

    // The proxy still serves a real client, and never panicked.
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string(), "-u", "app", "--batch", "--skip-column-names"])
        .arg(format!("--ssl-ca={}", alice.files.ca().display()))
        .arg(format!("--ssl-cert={}", alice.files.cert().display()))
        .arg(format!("--ssl-key={}", alice.files.key().display()))
        .args(["--ssl-verify-server-cert", "-e", "select 42", "orders"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{}\n{}", text(&out), proxy.log());
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.admin_port)).is_ok());
}
