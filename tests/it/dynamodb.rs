//! The DynamoDB engine and the local tunnel, end to end: moto (STS and DynamoDB with its
//! signature and policy checks on) as AWS, the AWS CLI and boto3 through
//! `portcullis db proxy --tunnel`, and psql through the same tunnel.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const ACCOUNT: &str = "123456789012";

const ROLES: &str = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [dynamo-writer, dynamo-none, 'arn:aws:iam::999999999999:role/dynamo-writer']}
";

/// moto standing in for DynamoDB, as the proxy's upstream.
struct MotoDynamo {
    moto: Moto,
    _dir: tempfile::TempDir,
    secrets_dir: std::path::PathBuf,
    setup: serde_json::Value,
}

impl TestDatabase for MotoDynamo {
    fn protocol(&self) -> &'static str {
        "dynamodb"
    }
    fn port(&self) -> u16 {
        self.moto.port
    }
    fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }
}

impl MotoDynamo {
    fn start() -> MotoDynamo {
        let moto = Moto::start();
        let setup = moto.setup_roles("dynamo");
        // The Database names a CA bundle; moto speaks plain HTTP, so it is never used.
        let dir = scratch();
        let secrets_dir = UpstreamCerts::write(dir.path(), dir.path()).secrets_dir;
        MotoDynamo { moto, _dir: dir, secrets_dir, setup }
    }

    /// The proxy's environment: the `proxy` user's keys, STS at moto.
    fn env(&self, secret: Option<&str>) -> Vec<(String, String)> {
        self.moto.proxy_env(&self.setup, secret)
    }
}

fn start_proxy(dir: &Path, db: &MotoDynamo, env: Vec<(String, String)>) -> (ProxyPki, Proxy) {
    let pki = ProxyPki::new(dir);
    let setup = ProxySetup {
        dir,
        db,
        aws_extra: &format!("    accountId: '{ACCOUNT}'"),
        roles: ROLES,
        env,
        log_level: "info",
        endpoint: Some(format!("http://127.0.0.1:{}", db.moto.port)),
    };
    let proxy = Proxy::start(setup, &pki);
    (pki, proxy)
}

fn client(tunnel: &Tunnel, scenario: &str) -> serde_json::Value {
    let out = run_ok(Command::new("python3").arg(repo().join("tests/support/dynamodb_client.py")).args([
        "--endpoint",
        &format!("http://127.0.0.1:{}", tunnel.port),
        scenario,
    ]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[test]
fn the_aws_cli_and_boto3_work_through_the_tunnel_and_moto_accepts_the_resigned_requests() {
    let _machine = machine_shared();
    let db = MotoDynamo::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("dynamo-writer"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &alice, &["--db-user", "dynamo-writer"]);

    let cli = client(&tunnel, "cli");
    assert_eq!(cli["items"].as_array().map(Vec::len), Some(1), "{cli}\n{}", proxy.log());
    let boto = client(&tunnel, "boto3");
    assert_eq!(boto["pages"], 5, "{boto}");
    assert_eq!(boto["total_items"], 121, "{boto}");
    assert_eq!(boto["big_roundtrip"], true, "a 400 KB item goes both ways: {boto}");
    assert_eq!(boto["crc_mismatches"], 0, "{boto}");

    let events = proxy.audit(10);
    let requests = events_named(&events, "db.session.request");
    let put = requests.iter().find(|r| r["target"] == "DynamoDB_20120810.PutItem").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!((put["status"].as_u64(), put["success"].as_bool(), put["db_user"].as_str()), (Some(200), Some(true), Some("dynamo-writer")));
    assert!(put["body"].as_str().unwrap().contains("orders") || put["body"].as_str().unwrap().contains("items"), "{put}");
    let table = put["tables"][0].as_str().unwrap_or_else(|| panic!("the audited tables: {put}"));
    assert!(
        put["body"].as_str().unwrap().contains(&format!("\"TableName\": \"{table}\""))
            || put["body"].as_str().unwrap().contains(&format!("\"TableName\":\"{table}\"")),
        "{put}"
    );
    assert_eq!((put["database"].as_str(), put["db_name"].as_str()), (Some("default/orders"), Some("")), "{put}");
    let big = requests.iter().find(|r| r["body_length"].as_u64().unwrap_or(0) > 400_000).unwrap_or_else(|| panic!("the big PutItem: {requests:?}"));
    assert_eq!(big["truncated"], true);
    assert!(big["body"].as_str().unwrap().len() <= 4096);
    assert!(!events_named(&events, "db.session.start").is_empty(), "{events:?}");
    let ends = events_named(&events, "db.session.end");
    assert!(ends.iter().any(|e| e["bytes_from_client"].as_u64().unwrap_or(0) > 400_000), "the 400 KB item went up: {ends:?}");
    assert!(ends.iter().any(|e| e["bytes_to_client"].as_u64().unwrap_or(0) > 400_000), "and came back: {ends:?}");
    // moto answers `Connection: close`; that is the proxy's connection's business, and boto3 keeps
    // its connection to the tunnel (121 puts and the scans on a few connections, not one each).
    assert!(ends.len() < 20, "{} sessions for ~130 requests: keep-alive is broken", ends.len());
    let metrics = proxy.metrics();
    assert!(metrics.contains("portcullis_api_requests_total{target=\"DynamoDB_20120810.PutItem\",status=\"200\"}"), "{metrics}");
    for (what, body) in [("log", proxy.log()), ("tunnel", std::fs::read_to_string(&tunnel.log_file).unwrap_or_default())] {
        for secret in [db.setup["secret_key"].as_str().unwrap(), "X-Amz-Signature", "Signature=", "X-Amz-Security-Token"] {
            assert!(!body.contains(secret), "{secret:?} leaked into the {what}: {body}");
        }
    }
}

/// The AWS CLI as users run it, with nothing of ours in its environment: a profile written by
/// `--write-aws-profile`, then the variables `db env` prints.
#[test]
fn a_written_aws_profile_and_db_env_send_the_unchanged_aws_cli_through_the_tunnel() {
    let _machine = machine_shared();
    let db = MotoDynamo::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("dynamo-writer"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &alice, &["--db-user", "dynamo-writer", "--write-aws-profile", "orders-dev"]);
    let config_file = tunnel.home.join("aws-config");
    let config = std::fs::read_to_string(&config_file).unwrap();
    assert!(config.starts_with("[profile orders-dev]\n") && config.contains(&format!("endpoint_url = http://127.0.0.1:{}\n", tunnel.port)), "{config}");
    let aws = |args: &[&str], env: &[(String, String)]| {
        let mut cmd = Command::new("aws");
        without_aws_env(&mut cmd);
        cmd.env("HOME", &tunnel.home).env("AWS_CONFIG_FILE", &config_file).env("AWS_SHARED_CREDENTIALS_FILE", tunnel.home.join("no-credentials"));
        cmd.args(args).envs(env.iter().cloned()).output().unwrap()
    };
    let out = aws(&["--profile", "orders-dev", "dynamodb", "list-tables", "--output", "json"], &[]);
    assert!(out.status.success(), "{}\n{}", text(&out), proxy.log());
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(tables["TableNames"].is_array(), "{tables}");
    let listed = |events: &[serde_json::Value]| {
        events_named(events, "db.session.request").iter().filter(|r| r["target"] == "DynamoDB_20120810.ListTables" && r["status"] == 200).count()
    };
    assert_eq!(listed(&proxy.audit(1)), 1, "the profile's request went through the proxy");

    // `db env` finds the running tunnel by the name it was started with.
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["db", "env", "orders"]).env("HOME", &tunnel.home).env_remove("KUBECONFIG"));
    let exports: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert!(exports.contains(&("AWS_ENDPOINT_URL_DYNAMODB".into(), format!("http://127.0.0.1:{}", tunnel.port))), "{exports:?}");
    let out = aws(&["dynamodb", "list-tables", "--output", "json"], &exports);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(listed(&proxy.audit(2)), 2, "the env's request went through the proxy");

    // No tunnel by that name: one line saying what to start.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["db", "env", "other", "-n", "shop"]).env("HOME", &tunnel.home).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1 && err.contains("portcullis db proxy other --tunnel"), "{err}");
}

#[test]
fn roles_the_user_may_not_use_or_that_lack_permissions_get_clean_access_denied() {
    let _machine = machine_shared();
    let db = MotoDynamo::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));

    // Not allowed by any AccessRole: refused by the proxy.
    let bob = pki.client("bob", "bob", &["dev"], route_as("dynamo-admin"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &bob, &[]);
    let denied = client(&tunnel, "denied");
    assert_eq!((denied["code"].as_str(), denied["status"].as_u64()), (Some("AccessDeniedException"), Some(400)), "{denied}");
    assert!(denied["message"].as_str().unwrap().contains("none allows database \"orders\" as db user \"dynamo-admin\""), "{denied}");

    // Allowed here, but the role has no DynamoDB permission: AWS (moto) refuses it.
    let carol = pki.client("carol", "carol", &["dev"], route_as("dynamo-none"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &carol, &[]);
    let denied = client(&tunnel, "denied");
    assert_eq!(denied["status"], 403, "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("assumed-role/dynamo-none/carol is not authorized to perform: dynamodb:ListTables"),
        "the session name is the user: {denied}"
    );

    // A role of another account is refused before anything is signed.
    let dave = pki.client("dave", "dave", &["dev"], route_as("arn:aws:iam::999999999999:role/dynamo-writer"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &dave, &[]);
    let denied = client(&tunnel, "denied");
    assert_eq!(denied["code"], "AccessDeniedException", "{denied}");
    assert!(denied["message"].as_str().unwrap().contains("999999999999"), "{denied}");

    // The proxy's own key is wrong: STS refuses the assume-role, the user reads the checklist.
    let dir2 = scratch();
    let (pki2, proxy2) = start_proxy(dir2.path(), &db, db.env(Some("wrong-secret-wrong-secret-wrong-secret-00")));
    let alice = pki2.client("alice", "alice", &["dev"], route_as("dynamo-writer"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy2.port, "orders", "dynamodb", &alice, &[]);
    let denied = client(&tunnel, "denied");
    assert_eq!(denied["code"], "AccessDeniedException", "{denied}");
    let message = denied["message"].as_str().unwrap();
    assert!(message.contains(&format!("sts:AssumeRole on arn:aws:iam::{ACCOUNT}:role/dynamo-writer failed")) && message.contains("trust policy"), "{message}");
    let events = proxy.audit(3);
    // bob and dave are refused at the session's start (no AccessRole; a role of another
    // account), carol's request is refused by AWS.
    let refused_starts: Vec<_> = events_named(&events, "db.session.start").into_iter().filter(|e| e["success"] == false).collect();
    assert_eq!(refused_starts.iter().map(|e| e["user"].as_str().unwrap()).collect::<Vec<_>>(), ["bob", "dave"], "{events:?}");
    assert!(refused_starts[0]["error"].as_str().unwrap().contains("none allows database \"orders\" as db user \"dynamo-admin\""), "{events:?}");
    let refused: Vec<_> = events_named(&events, "db.session.request").into_iter().filter(|e| e["success"] == false).collect();
    assert_eq!(refused.iter().map(|e| e["user"].as_str().unwrap()).collect::<Vec<_>>(), ["carol"], "{events:?}");
}

/// Sends raw HTTP to the tunnel and returns (status, body), or `None` when the connection closed.
fn raw_http(port: u16, request: &[u8], wait: Duration) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let start = Instant::now();
    while start.elapsed() < wait {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length =
                        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").and_then(|v| v.trim().parse::<usize>().ok()));
                    if length.is_some_and(|l| body.len() >= l) {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

#[test]
fn bad_requests_get_dynamodb_shaped_errors_and_the_proxy_keeps_serving() {
    let _machine = machine_shared();
    let db = MotoDynamo::start();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, db.env(None));
    let alice = pki.client("alice", "alice", &["dev"], route_as("dynamo-writer"), Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "dynamodb", &alice, &[]);
    let wait = Duration::from_secs(10);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("no target", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec(), 400, "UnknownOperationException"),
        (
            "an STS target",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AWSSecurityTokenServiceV20110615.GetCallerIdentity\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        (
            "a body over 16 MB",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.PutItem\r\nContent-Length: 17000000\r\n\r\n{}".to_vec(),
            413,
            "RequestEntityTooLarge",
        ),
        (
            "a chunked upload",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec(),
            411,
            "ValidationException",
        ),
        (
            "a field twice (which TableName would AWS use?)",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: 66\r\n\r\n{\"TableName\":\"orders\",\"TableName\":\"secret\",\"Key\":{\"id\":{\"S\":\"1\"}}}".to_vec(),
            400,
            "ValidationException",
        ),
        ("a body that is not JSON", b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: 5\r\n\r\n{nope".to_vec(), 400, "ValidationException"),
    ];
    for (what, request, status, code) in cases {
        let started = Instant::now();
        let (got, body) = raw_http(tunnel.port, &request, wait).unwrap_or_else(|| panic!("{what}: no answer\n{}", proxy.log()));
        assert_eq!(got, status, "{what}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(json["__type"], format!("com.amazonaws.dynamodb.v20120810#{code}"), "{what}: {body}");
        assert!(!json["message"].as_str().unwrap_or("").is_empty(), "{what}: {body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: answered promptly");
    }
    // A slow-loris client: headers never finish. The proxy drops it after its handshake timeout
    // (3 s here) instead of holding the connection.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", tunnel.port)).unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Tar").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(started.elapsed() < Duration::from_secs(9), "the slow client was cut off after {:?}", started.elapsed());
    // Others are still served.
    let ok = client(&tunnel, "denied");
    assert_eq!(ok["ok"], true, "{ok}\n{}", proxy.log());
    // The ambiguous request was refused before it was signed, and audited with what was sent.
    let events = proxy.audit(1);
    let ambiguous = events.iter().find(|e| e["body"].as_str().is_some_and(|b| b.contains("\"secret\""))).expect("audited");
    assert_eq!(ambiguous["success"], false);
    assert!(ambiguous["error"].as_str().unwrap().contains("the field \"TableName\" appears twice"), "{ambiguous}");
    // Invented operation names do not each become a metric series: they count as `other`.
    for i in 0..1000 {
        let request = format!("POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.MadeUp{i}\r\nContent-Length: 2\r\n\r\n{{}}");
        raw_http(tunnel.port, request.as_bytes(), wait).unwrap_or_else(|| panic!("invented target {i}: no answer"));
    }
    let metrics = proxy.metrics();
    assert!(!metrics.contains("MadeUp"), "an invented target became a series");
    let other: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_api_requests_total{") && l.contains("target=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(other >= 1000.0, "{other} requests counted as other:\n{metrics}");
    let series = metrics.lines().filter(|l| l.starts_with("portcullis_api_requests_total{")).count();
    assert!(series < 20, "1,000 invented names made {series} series:\n{metrics}");
    assert!(!proxy.log().contains("panicked"));
}

#[test]
fn psql_works_through_the_same_tunnel() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let roles = "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: developers}\nspec:\n  subjects: [{kind: Group, name: dev}]\n  allow: {databases: [orders], dbUsers: [app], dbNames: [orders]}\n";
    let setup = ProxySetup { dir: dir.path(), db: &*pg, aws_extra: "", roles, env: static_key_env(ACCESS_KEY, SECRET_KEY), log_level: "info", endpoint: None };
    let proxy = Proxy::start(setup, &pki);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "postgres", &alice, &[]);
    // sslmode=prefer (psql's default) asks the tunnel for TLS first; the tunnel says no locally
    // and carries the session to the proxy over mTLS.
    for sslmode in ["disable", "prefer"] {
        let out = psql(
            &format!("host=127.0.0.1 port={} user=app dbname=orders sslmode={sslmode} gssencmode=disable connect_timeout=10", tunnel.port),
            &["-c", "select current_user"],
        );
        assert!(out.status.success(), "{sslmode}: {}\n{}", text(&out), proxy.log());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
    }
    let events = proxy.audit(2);
    assert!(events.iter().any(|e| e["event"] == "db.session.start" && e["user"] == "alice" && e["success"] == true), "{events:?}");
}
