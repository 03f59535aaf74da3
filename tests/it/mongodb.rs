//! The DocumentDB engine end to end: a DocumentDB stand-in (`tests/support/docdb_standin.py`:
//! MongoDB wire protocol over TLS, MONGODB-AWS checked by forwarding the signed
//! GetCallerIdentity to STS) with moto as STS (signature checks on), pymongo and mongosh
//! through the proxy.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, doc};
use portcullis::proxy::mongodb::{aws_auth, codec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

const ACCOUNT: &str = "123456789012";

const ROLES: &str = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [docdb-writer, docdb-none], dbNames: [orders]}
";

/// moto as STS and the DocumentDB stand-in that checks logins against it.
struct DocDb {
    moto: Moto,
    setup: serde_json::Value,
    port: u16,
    secrets: PathBuf,
    dir: tempfile::TempDir,
    _standin: Proc,
}

impl TestDatabase for DocDb {
    fn protocol(&self) -> &'static str {
        "mongodb"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn secrets_dir(&self) -> &Path {
        &self.secrets
    }
}

impl DocDb {
    fn start() -> DocDb {
        DocDb::start_with(&[])
    }

    /// With extra stand-in arguments (`--replica-set rs0` for transactions).
    fn start_with(extra: &[&str]) -> DocDb {
        let moto = Moto::start();
        let setup = moto.setup_roles("docdb");
        let dir = scratch();
        let certs = UpstreamCerts::write(dir.path(), dir.path());
        let mut child = Command::new("python3")
            .arg(repo().join("tests/support/docdb_standin.py"))
            .args([
                "--port",
                "0",
                "--sts-host",
                &format!("127.0.0.1:{}", moto.port),
                "--user",
                &format!("arn:aws:iam::{ACCOUNT}:role/docdb-writer"),
                "--log-commands",
            ])
            .args(extra)
            .arg("--cert")
            .arg(&certs.server_crt)
            .arg("--key")
            .arg(&certs.server_key)
            .arg("--log")
            .arg(dir.path().join("standin.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the DocumentDB stand-in");
        let port = announced_port(&mut child, "the DocumentDB stand-in");
        DocDb { moto, setup, port, secrets: certs.secrets_dir, dir, _standin: Proc { child } }
    }

    fn env(&self, secret: Option<&str>) -> Vec<(String, String)> {
        self.moto.proxy_env(&self.setup, secret)
    }

    /// The stand-in's decisions.
    fn decisions(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("standin.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "auth")
            .collect()
    }

    /// Temporary credentials of `role` (assumed with the proxy user's keys).
    fn assume(&self, role: &str) -> serde_json::Value {
        let py = format!(
            "import boto3, json\nc = boto3.client('sts', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}').assume_role(RoleArn='arn:aws:iam::{ACCOUNT}:role/{role}', RoleSessionName='test')['Credentials']\nprint(json.dumps({{k: str(v) for k, v in c.items()}}))",
            self.moto.url(),
            self.setup["access_key"].as_str().unwrap(),
            self.setup["secret_key"].as_str().unwrap()
        );
        serde_json::from_slice(&run_ok(Command::new("python3").args(["-c", &py])).stdout).unwrap()
    }
}

fn start_proxy(dir: &Path, db: &DocDb, env: Vec<(String, String)>) -> (ProxyPki, Proxy) {
    let pki = ProxyPki::new(dir);
    let setup = ProxySetup { dir, db, aws_extra: &format!("    accountId: '{ACCOUNT}'"), roles: ROLES, env, log_level: "info", endpoint: None };
    let proxy = Proxy::start(setup, &pki);
    (pki, proxy)
}

/// The certificate and key in one PEM, as MongoDB clients want them.
fn combined_pem(id: &ClientIdentity) -> PathBuf {
    let path = id.files.cert().with_file_name("client.pem");
    let pem = std::fs::read_to_string(id.files.cert()).unwrap() + &std::fs::read_to_string(id.files.key()).unwrap();
    std::fs::write(&path, pem).unwrap();
    path
}

fn pymongo(proxy: &Proxy, id: &ClientIdentity, scenario: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new("python3")
            .arg(repo().join("tests/support/mongo_client.py"))
            .args(["--port", &proxy.port.to_string(), "--timeout-ms", "4000"])
            .arg("--ca")
            .arg(id.files.ca())
            .arg("--pem")
            .arg(combined_pem(id))
            .arg(scenario),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out), proxy.log()))
}

#[test]
fn pymongo_and_mongosh_insert_and_find_through_the_proxy_logged_in_with_mongodb_aws() {
    let _machine = machine_shared();
    let db = DocDb::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &alice, "basic");
    assert_eq!(r["found_qty"], 3, "{r}\n{}", proxy.log());

    let uri = format!(
        "mongodb://127.0.0.1:{}/orders?tls=true&directConnection=true&tlsCAFile={}&tlsCertificateKeyFile={}&serverSelectionTimeoutMS=10000",
        proxy.port,
        alice.files.ca().display(),
        combined_pem(&alice).display()
    );
    let out = Command::new("mongosh")
        .args([
            &uri,
            "--quiet",
            "--norc",
            "--eval",
            "db.items.insertOne({sku: 'pear', qty: 5}); print(JSON.stringify(db.items.findOne({sku: 'pear'}, {_id: 0})))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success() && text(&out).contains("{\"sku\":\"pear\",\"qty\":5}"), "{}\n{}", text(&out), proxy.log());

    let decisions = db.decisions();
    let accepted: Vec<_> = decisions.iter().filter(|d| d["decision"] == "accept").collect();
    assert!(accepted.len() >= 2, "{decisions:?}");
    assert!(
        accepted.iter().all(|d| d["caller_arn"].as_str().unwrap_or("").contains(":assumed-role/docdb-writer/alice")),
        "logged in as the role, session named after the user: {decisions:?}"
    );
    let events = proxy.audit(6);
    let inserts: Vec<_> = events_named(&events, "db.session.query").into_iter().filter(|e| e["command"] == "insert").collect();
    assert_eq!(inserts.len(), 2, "{events:?}");
    assert_eq!(
        (inserts[0]["database"].as_str(), inserts[0]["db_name"].as_str(), inserts[0]["collection"].as_str(), inserts[0]["db_user"].as_str()),
        (Some("default/orders"), Some("orders"), Some("items"), Some("docdb-writer"))
    );
    assert!(inserts[0]["document"].as_str().unwrap().contains("apple"), "{:?}", inserts[0]);
    assert!(events_named(&events, "db.session.start").iter().all(|e| e["success"] == true && e["protocol"] == "mongodb"), "{events:?}");
    for secret in [db.setup["secret_key"].as_str().unwrap(), "Signature=", "X-Amz-Security-Token"] {
        assert!(!proxy.log().contains(secret), "{secret:?} in the log");
    }
}

#[test]
fn roles_databases_and_client_authentication_are_refused_with_mongodb_errors() {
    let _machine = machine_shared();
    let db = DocDb::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &alice, "other_db");
    assert_eq!(r["error"], 13, "{r}");
    assert!(r["message"].as_str().unwrap().contains("not authorized on hr to execute command find"), "{r}");
    let r = pymongo(&proxy, &alice, "sasl");
    assert_eq!(r["error"], 13, "{r}");
    assert!(r["message"].as_str().unwrap().contains("saslStart is not allowed through Portcullis"), "{r}");

    // Refusals of the connection itself answer its first message (the driver's handshake).
    let bob = pki.client("bob", "bob", &["dev"], route_as("docdb-admin"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &bob, "basic");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("none allows database \"orders\" as db user \"docdb-admin\"") && message.contains("'code': 13"), "{r}");

    // The role exists and may be assumed, but DocumentDB has no such user in $external.
    let carol = pki.client("carol", "carol", &["dev"], route_as("docdb-none"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &carol, "basic");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("'code': 18") && message.contains("AuthenticationFailed"), "{r}");
    assert!(message.contains("refused the MONGODB-AWS login") && message.contains("$external") && message.contains("MONGODB-AWS"), "the remedy: {message}");

    let events = proxy.audit(4);
    let refused: Vec<_> = events.iter().filter(|e| e["success"] == false).collect();
    assert!(refused.len() >= 4, "{events:?}");
}

#[test]
fn the_stand_in_refuses_wrong_credentials_and_a_wrong_nonce() {
    let _machine = machine_shared();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = DocDb::start();
    let creds = db.assume("docdb-writer");
    let ca = CertificateDer::pem_file_iter(db.dir.path().join("secrets/upstream-ca/ca.crt")).unwrap().map(|c| c.unwrap());
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c).unwrap();
    }
    let config = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    // One MONGODB-AWS conversation; `tamper` changes what is signed. Returns the final reply.
    let login = |secret: &str, tamper_nonce: bool| -> bson::Document {
        let tcp = TcpStream::connect(("127.0.0.1", db.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut exchange = |id: i32, command: bson::Document| -> bson::Document {
            tls.write_all(&codec::encode_msg(id, 0, &command)).unwrap();
            let mut head = [0u8; codec::HEADER];
            tls.read_exact(&mut head).unwrap();
            let header = codec::Header::parse(&head).unwrap();
            let mut body = vec![0u8; header.length - codec::HEADER];
            tls.read_exact(&mut body).unwrap();
            codec::reply_document(&header, &body).unwrap()
        };
        let nonce = [5u8; 32];
        let payload = bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: aws_auth::client_first(&nonce) };
        let first = exchange(1, doc! { "saslStart": 1, "mechanism": "MONGODB-AWS", "payload": payload, "$db": "$external" });
        let Some(Bson::Binary(p)) = first.get("payload") else { panic!("{first}") };
        let (mut s, host) = aws_auth::server_first(&p.bytes, &nonce).unwrap();
        if tamper_nonce {
            s[63] ^= 1;
        }
        let credentials = aws_credential_types::Credentials::new(
            creds["AccessKeyId"].as_str().unwrap(),
            secret,
            creds["SessionToken"].as_str().map(str::to_owned),
            None,
            "test",
        );
        let (a, d, t) = aws_auth::sign_caller_identity(&host, &aws_auth::sts_region(&host), &s, &credentials, std::time::SystemTime::now()).unwrap();
        let payload = bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: aws_auth::client_final(&a, &d, t.as_deref()) };
        exchange(
            2,
            doc! { "saslContinue": 1, "conversationId": first.get("conversationId").cloned().unwrap_or(Bson::Int32(1)), "payload": payload, "$db": "$external" },
        )
    };
    let right = creds["SecretAccessKey"].as_str().unwrap().to_owned();
    let ok = login(&right, false);
    assert_eq!(ok.get_f64("ok").ok().or(ok.get_i32("ok").ok().map(f64::from)), Some(1.0), "the right signature is accepted through STS: {ok}");
    for (what, reply) in [("a wrong secret", login("wrong-secret", false)), ("a wrong nonce", login(&right, true))] {
        assert_eq!(reply.get_i32("code").ok(), Some(18), "{what}: {reply}");
        assert_eq!(reply.get_str("codeName").ok(), Some("AuthenticationFailed"), "{what}: {reply}");
    }
    let decisions = db.decisions();
    assert_eq!(decisions.iter().filter(|d| d["decision"] == "reject").count(), 2, "{decisions:?}");
}

/// Raw TLS with a client certificate to the proxy.
fn raw_tls(pki: &ProxyPki, id: &ClientIdentity, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = client_tls_config(pki, Some(id));
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap(), tcp)
}

/// Reads until close (or 10 s); returns what came and whether the peer closed.
fn drain(stream: &mut impl Read) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

#[test]
fn malformed_messages_get_an_error_or_a_close_and_the_proxy_keeps_serving() {
    let _machine = machine_shared();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = DocDb::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let ping = codec::encode(1, &codec::Message::Msg { flags: 0, body: doc! { "ping": 1, "$db": "admin" }, sequences: vec![] });
    let mut over = (49_000_000i32).to_le_bytes().to_vec();
    over.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0xdd, 0x07, 0, 0]);
    let mut lying = ping.clone();
    lying[..4].copy_from_slice(&(ping.len() as i32 + 100).to_le_bytes());
    let mut bad_bson = ping.clone();
    bad_bson[codec::HEADER + 4 + 1 + 4] = 0x7f; // the body's first element gets an unknown type
    let mut unknown_opcode = ping.clone();
    unknown_opcode[12..16].copy_from_slice(&2002i32.to_le_bytes());
    let mut compressed = ping.clone();
    compressed[12..16].copy_from_slice(&2012i32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a message over 48 MB", over),
        ("a length that lies (then silence)", lying),
        ("invalid BSON", bad_bson),
        ("OP_INSERT (legacy opcode)", unknown_opcode),
        ("OP_COMPRESSED", compressed),
    ];
    for (what, bytes) in cases {
        let mut tls = raw_tls(&pki, &alice, proxy.port);
        let _ = tls.write_all(&bytes);
        let _ = tls.flush();
        let started = std::time::Instant::now();
        let (answer, closed) = drain(&mut tls);
        assert!(closed, "{what}: the proxy closes ({} bytes came)", answer.len());
        assert!(started.elapsed() < Duration::from_secs(9), "{what}: promptly");
        if answer.len() > codec::HEADER {
            let header = codec::Header::parse(answer[..codec::HEADER].try_into().unwrap()).unwrap();
            let reply = codec::reply_document(&header, &answer[codec::HEADER..header.length]).unwrap();
            assert!(reply.get_i32("code").is_ok(), "{what}: an error document: {reply}");
        }
    }
    // Still serving, and no panic.
    let r = pymongo(&proxy, &alice, "basic");
    assert_eq!(r["found_qty"], 3, "{r}\n{}", proxy.log());
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

#[test]
fn a_cluster_without_tls_is_explained() {
    let _machine = machine_shared();
    let db = DocDb::start();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    // moto's port speaks plain HTTP: a database with TLS off looks like this to the proxy.
    let setup = ProxySetup {
        dir: dir.path(),
        db: &db,
        aws_extra: &format!("    accountId: '{ACCOUNT}'"),
        roles: ROLES,
        env: db.env(None),
        log_level: "info",
        endpoint: Some(format!("127.0.0.1:{}", db.moto.port)),
    };
    let proxy = Proxy::start(setup, &pki);
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &alice, "basic");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("TLS with the database") && message.contains("tls to enabled in the cluster parameter group"), "{r}");
}

#[test]
fn doctor_checks_the_documentdb_certificate_and_tries_each_db_user_role() {
    let _machine = machine_shared();
    let db = DocDb::start();
    let dir = scratch();
    let database = |name: &str, port: u16| {
        format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  protocol: mongodb\n  endpoint: 127.0.0.1:{port}\n  aws: {{region: {REGION}, accountId: '{ACCOUNT}'}}\n  tls: {{mode: verify-full, caSecretRef: {{name: upstream-ca}}}}\n---\n"
        )
    };
    let roles = "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: developers}\nspec:\n  subjects: [{kind: Group, name: dev}]\n  allow: {databases: [orders], dbUsers: [docdb-writer, docdb-stranger, 'arn:aws:iam::999999999999:role/elsewhere']}\n";
    let manifests = dir.path().join("docdb.yaml");
    // `plain` is moto's port: plain HTTP, as a cluster with TLS off looks to a client.
    std::fs::write(&manifests, [database("orders", db.port), database("plain", db.moto.port), roles.to_owned()].concat()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("AWS_REGION", REGION).env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.envs(db.env(None));
    cmd.args(["doctor", "--manifests"]).arg(&manifests).arg("--secrets-dir").arg(&db.secrets);
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "three checks fail: {t}");
    let line = |prefix: &str| t.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in\n{t}")).to_owned();
    let ok = |prefix: &str| assert!(line(prefix).split_whitespace().any(|w| w == "ok"), "{prefix}: {t}");
    ok("db default/orders: TLS certificate");
    assert!(line("db default/orders: TLS certificate").contains("verifies"), "{t}");
    ok("db default/orders: db user docdb-writer");
    assert!(line("db default/orders: db user docdb-writer").contains(&format!("assumed arn:aws:iam::{ACCOUNT}:role/docdb-writer")), "{t}");
    let stranger = line("db default/orders: db user docdb-stranger");
    assert!(stranger.contains("FAIL") && stranger.contains(&format!("sts:AssumeRole on arn:aws:iam::{ACCOUNT}:role/docdb-stranger failed")), "{t}");
    assert!(stranger.contains("AccessDenied: User: arn:aws:iam::123456789012:user/proxy is not authorized to perform: sts:AssumeRole"), "STS's own words: {t}");
    assert!(!t.contains("Unhandled"), "no raw SDK error on stderr: {t}");
    assert!(t.contains("the trust policy of arn:aws:iam::123456789012:role/docdb-stranger allows"), "the remedy names the trust policy: {t}");
    let elsewhere = line("db default/orders: db user arn:aws:iam::999999999999:role/elsewhere");
    assert!(elsewhere.contains("FAIL") && elsewhere.contains("is in account 999999999999, but the database is in account 123456789012"), "{t}");
    // No AccessRole names `plain`: its roles are not tried, and the doctor says how to have them tried.
    assert!(line("db default/plain: db user roles").contains("pass the AccessRoles too"), "{t}");
    let plain = line("db default/plain: TLS certificate");
    assert!(plain.contains("FAIL") && plain.contains("TLS handshake failed"), "{t}");
    assert!(t.contains("set the cluster parameter `tls` to enabled"), "the remedy: {t}");
    assert!(line("verdict").contains("check(s) failed"), "{t}");
    assert!(!t.contains(db.setup["secret_key"].as_str().unwrap()), "no secret in the report");
}

/// mongosh's answer to `script` run through the proxy as `id`.
fn mongosh(proxy: &Proxy, id: &ClientIdentity, script: &str) -> String {
    let uri = format!(
        "mongodb://127.0.0.1:{}/catalog?tls=true&directConnection=true&tlsCAFile={}&tlsCertificateKeyFile={}&serverSelectionTimeoutMS=10000",
        proxy.port,
        id.files.ca().display(),
        combined_pem(id).display()
    );
    let out = Command::new("mongosh").args([&uri, "--quiet", "--norc", "--eval", script]).output().unwrap();
    text(&out)
}

#[test]
fn a_deny_of_some_db_names_refuses_exactly_those_and_transactions_end_on_admin() {
    let _machine = machine_shared();
    let db = DocDb::start_with(&["--replica-set", "rs0"]);
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let roles = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [docdb-writer], dbNames: [catalog, orders]}
  deny: {databases: [orders], dbNames: [reports]}
";
    let setup =
        ProxySetup { dir: dir.path(), db: &db, aws_extra: &format!("    accountId: '{ACCOUNT}'"), roles, env: db.env(None), log_level: "info", endpoint: None };
    let proxy = Proxy::start(setup, &pki);
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));

    // The session starts (the deny names db names, and none is known yet); catalog works, reports is refused by the rule.
    let out = mongosh(
        &proxy,
        &alice,
        "db.items.insertOne({sku: 'fig'}); print('catalog:' + db.items.countDocuments({})); \
         try { db.getSiblingDB('reports').items.findOne(); print('reports: read') } catch (e) { print('reports: ' + e.message) }",
    );
    assert!(out.contains("catalog:1"), "{out}\n{}", proxy.log());
    assert!(
        out.contains("reports: not authorized on reports to execute command find") && out.contains("AccessRole \"default/developers\" denies"),
        "the rule's name: {out}"
    );

    // A certificate limited to one db name works on that database, and only there.
    let limited = portcullis::authz::Route { database: Some("orders".into()), db_user: Some("docdb-writer".into()), db_name: Some("catalog".into()) };
    let carol = pki.client("carol", "carol", &["dev"], Some(limited), Duration::from_secs(3600));
    let out = mongosh(
        &proxy,
        &carol,
        "print('catalog:' + db.items.countDocuments({})); \
         try { db.getSiblingDB('orders').items.findOne(); print('orders: read') } catch (e) { print('orders: ' + e.message) }",
    );
    assert!(out.contains("catalog:1"), "{out}");
    assert!(out.contains("orders: not authorized on orders") && out.contains("your certificate is limited to db name \"catalog\""), "{out}");

    // Transactions: one on an allowed database commits (commitTransaction runs on admin, which no rule allows).
    let r = pymongo(&proxy, &alice, "transaction");
    assert_eq!(r["count"], 2, "{r}\n{}", proxy.log());
    // One that touches a denied database is refused and rolled back.
    let r = pymongo(&proxy, &alice, "transaction_denied");
    assert_eq!(r["error"], 13, "{r}");
    assert!(r["message"].as_str().unwrap().contains("not authorized on hr"), "{r}");
    assert_eq!((r["before"].as_i64(), r["after"].as_i64()), (Some(0), Some(0)), "the orders insert was rolled back: {r}");

    // The audit trail: `database` is the Portcullis Database, db_name the MongoDB database.
    let events = proxy.audit(10);
    let queries = events_named(&events, "db.session.query");
    let fig = queries.iter().find(|e| e["command"] == "insert" && e["collection"] == "items").expect("the insert is audited");
    assert_eq!((fig["database"].as_str(), fig["db_name"].as_str()), (Some("default/orders"), Some("catalog")), "{fig}");
    let refused = queries.iter().find(|e| e["command"] == "find" && e["db_name"] == "reports").expect("the refused find is audited");
    assert_eq!(refused["success"], false);
    assert!(queries.iter().any(|e| e["command"] == "commitTransaction" && e["db_name"] == "admin" && e["success"] == true), "{queries:?}");
}

#[test]
fn a_client_workload_of_ten_thousand_documents_runs_through_the_proxy() {
    let _machine = machine_shared();
    let db = DocDb::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let r = pymongo(&proxy, &alice, "workload");
    assert_eq!((r["updated"].as_i64(), r["deleted"].as_i64(), r["left"].as_i64()), (Some(1000), Some(1000), Some(9000)), "{r}\n{}", proxy.log());
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 9, "{r}");
    // Group 3: qty 3, 13, … 9993 (sum 4,998,000), each raised by one.
    assert_eq!((groups[3]["_id"].as_i64(), groups[3]["n"].as_i64(), groups[3]["total"].as_i64()), (Some(3), Some(1000), Some(4_998_000 + 1000)), "{r}");
    assert!(r["insert_seconds"].as_f64().unwrap() < 20.0, "{r}");
    eprintln!("workload: 10,000 documents inserted through the proxy in {} s", r["insert_seconds"]);
}

/// An OP_MSG whose body has these string fields exactly as given (repeats included).
fn raw_msg(id: i32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut doc = Vec::new();
    for (key, value) in fields {
        doc.push(0x02);
        doc.extend_from_slice(key.as_bytes());
        doc.push(0);
        doc.extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
        doc.extend_from_slice(value.as_bytes());
        doc.push(0);
    }
    let doc = [((doc.len() + 5) as i32).to_le_bytes().to_vec(), doc, vec![0]].concat();
    let body = [0u32.to_le_bytes().to_vec(), vec![0u8], doc].concat();
    let mut out = Vec::new();
    for v in [(codec::HEADER + body.len()) as i32, id, 0, codec::OP_MSG] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend(body);
    out
}

/// Reads one reply and returns its document.
fn read_reply(stream: &mut impl Read) -> bson::Document {
    let mut head = [0u8; codec::HEADER];
    stream.read_exact(&mut head).unwrap();
    let header = codec::Header::parse(&head).unwrap();
    let mut body = vec![0u8; header.length - codec::HEADER];
    stream.read_exact(&mut body).unwrap();
    codec::reply_document(&header, &body).unwrap()
}

#[test]
fn a_command_with_two_db_fields_is_refused_audited_and_never_reaches_the_database() {
    let _machine = machine_shared();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = DocDb::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("docdb-writer"), Duration::from_secs(3600));
    let mut tls = raw_tls(&pki, &alice, proxy.port);
    let ping = codec::encode(1, &codec::Message::Msg { flags: 0, body: doc! { "ping": 1, "$db": "admin" }, sequences: vec![] });
    tls.write_all(&ping).unwrap();
    assert_eq!(read_reply(&mut tls).get_f64("ok").ok(), Some(1.0), "logged in");
    // Either order: a server reading the first or the last `$db` would run it on hr.
    for (id, fields) in [(2, [("find", "items"), ("$db", "orders"), ("$db", "hr")]), (3, [("find", "items"), ("$db", "hr"), ("$db", "orders")])] {
        tls.write_all(&raw_msg(id, &fields)).unwrap();
        let reply = read_reply(&mut tls);
        assert_eq!((reply.get_i32("code").ok(), reply.get_str("codeName").ok()), (Some(2), Some("BadValue")), "{reply}");
        assert!(reply.get_str("errmsg").unwrap().contains("the field \"$db\" appears twice"), "{reply}");
    }
    // The session goes on.
    tls.write_all(&codec::encode(4, &codec::Message::Msg { flags: 0, body: doc! { "find": "items", "$db": "orders" }, sequences: vec![] })).unwrap();
    assert_eq!(read_reply(&mut tls).get_f64("ok").ok(), Some(1.0));
    drop(tls);
    let events = proxy.audit(3);
    let refused: Vec<_> = events_named(&events, "db.session.query").into_iter().filter(|e| e["success"] == false).collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(refused[0]["document"].as_str().unwrap().contains(r#""$db":"orders","$db":"hr""#), "shown as sent: {}", refused[0]);
    // The database never saw a command on hr.
    let log = std::fs::read_to_string(db.dir.path().join("standin.log")).unwrap();
    let commands: Vec<serde_json::Value> =
        log.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|e: &serde_json::Value| e["event"] == "command").collect();
    assert!(commands.iter().any(|c| c["command"] == "find" && c["db"] == "orders"), "{commands:?}");
    assert!(!commands.iter().any(|c| c["db"] == "hr"), "{commands:?}");
}
