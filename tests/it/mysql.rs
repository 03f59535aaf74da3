//! End to end through the proxy binary for the MySQL engine: real MariaDB (TLS, IAM users
//! served by PAM with the cleartext plugin, each token checked by the Go SDK's signer and by
//! botocore), the `mariadb` client, PyMySQL and the `mysql` Rust driver.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::support::mariadb::{Mariadb, shared_mariadb};
use crate::support::*;

const ROLES: &str = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: test}}, dbUsers: [app, pwuser], dbNames: [orders]}
";

fn start_proxy(dir: &std::path::Path, db: &Mariadb, env: Vec<(String, String)>, endpoint: Option<String>) -> (ProxyPki, Proxy) {
    let pki = ProxyPki::new(dir);
    let proxy = Proxy::start(ProxySetup { dir, db, aws_extra: "", roles: ROLES, env, log_level: "info", endpoint }, &pki);
    (pki, proxy)
}

fn keys() -> Vec<(String, String)> {
    static_key_env(ACCESS_KEY, SECRET_KEY)
}

/// The `mariadb` command-line client through the proxy, verifying the proxy's certificate.
fn mariadb(proxy: &Proxy, id: &ClientIdentity, user: &str, db: Option<&str>, sql: &str) -> Output {
    let mut cmd = Command::new("mariadb");
    cmd.args(["--no-defaults", "-h", "127.0.0.1", "-P", &proxy.port.to_string(), "-u", user, "--batch", "--skip-column-names", "--connect-timeout=10"])
        .arg(format!("--ssl-ca={}", id.files.ca().display()))
        .arg(format!("--ssl-cert={}", id.files.cert().display()))
        .arg(format!("--ssl-key={}", id.files.key().display()))
        .arg("--ssl-verify-server-cert")
        .args(["-e", sql]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    cmd.output().expect("run mariadb")
}

fn pymysql(proxy: &Proxy, id: &ClientIdentity, user: &str, db: &str, scenario: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new("python3")
            .arg(repo().join("tests/support/mysql_client.py"))
            .args(["--port", &proxy.port.to_string(), "--user", user, "--db", db])
            .arg("--ca")
            .arg(id.files.ca())
            .arg("--cert")
            .arg(id.files.cert())
            .arg("--key")
            .arg(id.files.key())
            .arg(scenario),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn rust_driver(proxy: &Proxy, id: &ClientIdentity, user: &str, db: &str) -> mysql::Result<mysql::Conn> {
    let ssl = mysql::SslOpts::default()
        .with_root_cert_path(Some(id.files.ca()))
        .with_client_identity(Some(mysql::ClientIdentity::new(id.files.cert(), id.files.key())));
    let opts = mysql::OptsBuilder::new().ip_or_hostname(Some("127.0.0.1")).tcp_port(proxy.port).user(Some(user)).db_name(Some(db)).ssl_opts(Some(ssl));
    mysql::Conn::new(opts)
}

#[test]
fn the_mariadb_client_works_use_is_checked_and_every_step_is_audited() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let out =
        mariadb(&proxy, &alice, "app", Some("orders"), "select current_user(), database(); show session status like 'Ssl_version'; select count(*) from items");
    assert!(out.status.success(), "{}\n{}", text(&out), proxy.log());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "app@%\torders", "logged in upstream as the IAM user: {lines:?}");
    assert!(lines[1].starts_with("Ssl_version\tTLSv1."), "the upstream leg is TLS: {lines:?}");
    assert_eq!(lines[2], "3");

    // `use` (COM_INIT_DB) is checked against dbNames; the database itself would allow it.
    let out = mariadb(&proxy, &alice, "app", Some("orders"), "use inventory");
    let t = text(&out);
    assert!(!out.status.success() && t.contains("ERROR 1044 (42000)") && t.contains("access denied to database \"inventory\""), "{t}");
    let out = mariadb(&proxy, &alice, "app", None, "use orders; select database()");
    assert!(out.status.success() && text(&out).contains("orders"), "{}", text(&out));

    let events = proxy.audit(10);
    let starts = events_named(&events, "db.session.start");
    assert_eq!(starts.len(), 3, "{events:?}");
    let first = starts[0];
    assert_eq!((first["success"].as_bool(), first["user"].as_str(), first["protocol"].as_str()), (Some(true), Some("alice"), Some("mysql")));
    assert_eq!((first["db_user"].as_str(), first["db_name"].as_str(), first["database"].as_str()), (Some("app"), Some("orders"), Some("default/orders")));
    let queries = events_named(&events, "db.session.query");
    assert!(queries.iter().any(|q| q["kind"] == "query" && q["statement"].as_str().unwrap().contains("select current_user()")), "{queries:?}");
    let denied_use: Vec<_> = queries.iter().filter(|q| q["kind"] == "init_db" && q["statement"] == "inventory").collect();
    assert_eq!(denied_use.len(), 1, "{queries:?}");
    assert_eq!(denied_use[0]["success"], false);
    // After an allowed `use`, later events carry the new database name.
    assert!(queries.iter().any(|q| q["statement"] == "select database()" && q["db_name"] == "orders"), "{queries:?}");
    assert_eq!(events_named(&events, "db.session.end").len(), 3, "{events:?}");
    assert!(db.pam_decisions().iter().any(|l| l.contains("accept") && l.contains("user=\"app\"")), "{:?}", db.pam_decisions());
    let metrics = proxy.metrics();
    assert!(metrics.contains("portcullis_connections_total{protocol=\"mysql\",result=\"accepted\"} 3"), "{metrics}");
}

#[test]
fn denied_logins_get_mysql_errors_with_the_reason_and_are_audited() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let bob = pki.client("bob", "bob", &["sales"], None, Duration::from_secs(3600));
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let pam_before = db.pam_decisions().len();
    let cases = [
        (&bob, "app", "orders", "no AccessRole in namespace \"default\" grants user \"bob\""),
        (&alice, "admin", "orders", "none allows database \"orders\" as db user \"admin\""),
        (&alice, "app", "inventory", "and db name \"inventory\""),
    ];
    for (id, user, name, reason) in cases {
        let out = mariadb(&proxy, id, user, Some(name), "select 1");
        let t = text(&out);
        assert!(!out.status.success() && t.contains("ERROR 1045 (28000)") && t.contains(reason), "{user}@{name}: {t}");
    }
    // PyMySQL sees the same error number.
    let r = pymysql(&proxy, &bob, "app", "orders", "basic");
    assert_eq!(r["error"], 1045, "{r}");
    assert_eq!(db.pam_decisions().len(), pam_before, "refused logins never reach the database");
    let events = proxy.audit(4);
    let refused: Vec<_> = events_named(&events, "db.session.start").into_iter().filter(|e| e["success"] == false).collect();
    assert_eq!(refused.len(), 4, "{events:?}");
    assert!(refused[0]["error"].as_str().unwrap().contains("access denied"), "{events:?}");
}

#[test]
fn pymysql_moves_values_over_16_mib_both_ways_and_runs_multi_statements() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let basic = pymysql(&proxy, &alice, "app", "orders", "basic");
    assert_eq!(basic["user"], "app@%", "{basic}");
    assert_eq!(basic["names"], serde_json::json!(["apple", "pear", "plum"]));
    assert!(basic["upstream_tls"].as_str().unwrap_or("").starts_with("TLSv1."), "{basic}");

    let big = pymysql(&proxy, &alice, "app", "orders", "big");
    assert_eq!(big["sent"], 20 * 1024 * 1024, "{big}");
    assert_eq!(big["stored"], big["sent"], "{big}");
    assert_eq!(big["stored_sha_matches"], true, "{big}");
    assert_eq!(big["read_back_matches"], true, "{big}");
    // The > 16 MiB statement is one audit event, truncated but hashed whole.
    let events = proxy.audit(6);
    let insert =
        events_named(&events, "db.session.query").into_iter().find(|q| q["statement"].as_str().unwrap_or("").starts_with("insert into orders.items")).cloned();
    let insert = insert.unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(insert["truncated"], true);
    assert!(insert["statement_length"].as_u64().unwrap() > 20 * 1024 * 1024, "{insert}");

    let multi = pymysql(&proxy, &alice, "app", "orders", "multi");
    assert_eq!(multi["results"], serde_json::json!([[[1]], [[2]], [["plum"]]]), "{multi}");

    // USE sent as SQL is checked like COM_INIT_DB; inside a multi-statement it is refused.
    let r = pymysql(&proxy, &alice, "app", "orders", "use");
    assert_eq!(r["allowed"]["db"], "orders", "{r}");
    assert_eq!(r["denied"]["error"], 1044, "{r}");
    assert!(r["denied"]["message"].as_str().unwrap().contains("access denied to database \"mysql\""), "{r}");
    assert_eq!(r["mixed"]["error"], 1235, "{r}");
    assert!(r["mixed"]["message"].as_str().unwrap().contains("send USE on its own"), "{r}");
    assert_eq!(r["after"], "orders", "the session stayed on its database: {r}");
    assert_eq!(r["xa"], "xa", "an XA transaction commits through the proxy: {r}");
}

#[test]
fn the_rust_driver_uses_prepared_statements_which_are_audited_and_change_user_is_refused() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let mut conn = rust_driver(&proxy, &alice, "app", "orders").unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let row: Option<(i32, String)> = conn.exec_first("select id, name from items where id = ?", (2,)).unwrap();
    assert_eq!(row, Some((2, "pear".to_owned())));
    let names: Vec<String> = conn.exec("select name from items where id > ? order by id", (1,)).unwrap();
    assert_eq!(names, ["pear", "plum"]);

    let refused = conn.change_user(mysql::ChangeUserOpts::default().with_user(Some("admin".into())));
    let message = format!("{}", refused.expect_err("COM_CHANGE_USER must not get through"));
    assert!(message.contains("COM_CHANGE_USER is not supported"), "{message}");
    drop(conn);
    // A new connection is the way to log in as someone else, and it is checked.
    let denied = rust_driver(&proxy, &alice, "admin", "orders").map(|_| ()).expect_err("admin is not allowed");
    assert!(format!("{denied}").contains("1045"), "{denied}");

    let events = proxy.audit(8);
    let queries = events_named(&events, "db.session.query");
    let prepare = queries.iter().find(|q| q["kind"] == "prepare" && q["statement"] == "select id, name from items where id = ?");
    assert!(prepare.is_some(), "{queries:?}");
    let execute = queries.iter().find(|q| q["kind"] == "execute" && q["statement"] == "select id, name from items where id = ?");
    let execute = execute.unwrap_or_else(|| panic!("the execute event names the prepared text: {queries:?}"));
    assert!(execute["statement_id"].as_u64().is_some(), "{execute}");
    let change = queries.iter().find(|q| q["kind"] == "change_user").unwrap_or_else(|| panic!("{queries:?}"));
    assert_eq!(change["success"], false);
}

#[test]
fn the_database_refuses_a_wrong_token_and_botocore_accepts_the_right_one() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let boto_before = db.botocore_decisions().len();
    let out = mariadb(&proxy, &alice, "app", Some("orders"), "select 1");
    assert!(out.status.success(), "{}", text(&out));
    let boto = db.botocore_decisions();
    assert!(boto[boto_before..].iter().any(|l| l.starts_with("accept user='app'")), "{boto:?}");

    let wrong = scratch();
    let (pki2, proxy2) = start_proxy(wrong.path(), &db, static_key_env(ACCESS_KEY, "wrong-secret-key-wrong-secret-key-000000"), None);
    let alice2 = pki2.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let pam_before = db.pam_decisions().len();
    let out = mariadb(&proxy2, &alice2, "app", Some("orders"), "select 1");
    let t = text(&out);
    assert!(!out.status.success() && t.contains("ERROR 1045") && t.contains("the database refused the IAM login of \"app\""), "{t}");
    assert!(t.contains("AWSAuthenticationPlugin"), "the remedy names the MySQL fix: {t}");
    let pam = db.pam_decisions();
    assert!(pam[pam_before..].iter().any(|l| l.contains("reject") && l.contains("signature mismatch")), "{pam:?}");
    for log in [proxy.log(), proxy2.log(), t] {
        for secret in [SECRET_KEY, "wrong-secret-key", "X-Amz-Signature", "X-Amz-Credential", "Action=connect"] {
            assert!(!log.contains(secret), "{secret:?} leaked: {log}");
        }
    }
}

#[test]
fn a_password_user_and_an_unreachable_database_are_explained() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let t = text(&mariadb(&proxy, &alice, "pwuser", Some("orders"), "select 1"));
    assert!(t.contains("ERROR 1045") && t.contains("CREATE USER 'pwuser' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'"), "{t}\n{}", proxy.log());

    let closed = free_port();
    let dir2 = scratch();
    let (pki2, proxy2) = start_proxy(dir2.path(), &db, keys(), Some(format!("127.0.0.1:{closed}")));
    let alice2 = pki2.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let t = text(&mariadb(&proxy2, &alice2, "app", Some("orders"), "select 1"));
    assert!(t.contains("ERROR 1429") && t.contains(&format!("cannot reach the database at 127.0.0.1:{closed}")) && t.contains("security group"), "{t}");
}

#[test]
fn reloading_roles_ends_a_running_mysql_session() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let mut cmd = Command::new("mariadb");
    cmd.args(["--no-defaults", "-h", "127.0.0.1", "-P", &proxy.port.to_string(), "-u", "app", "--batch"])
        .arg(format!("--ssl-ca={}", alice.files.ca().display()))
        .arg(format!("--ssl-cert={}", alice.files.cert().display()))
        .arg(format!("--ssl-key={}", alice.files.key().display()))
        .args(["--ssl-verify-server-cert", "-e", "select sleep(30)", "orders"])
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let manifests = dir.path().join("manifests.yaml");
    let now = std::fs::read_to_string(&manifests).unwrap();
    std::fs::write(&manifests, now.replace("dbUsers: [app, pwuser]", "dbUsers: [someone-else]")).unwrap();
    let started = Instant::now();
    run_ok(Command::new("kill").args(["-HUP", &proxy.proc.child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "revocation took {:?}", started.elapsed());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR 1927 (70100)") && stderr.contains("access was revoked"), "the client is told why: {stderr}");
    let t = text(&mariadb(&proxy, &alice, "app", Some("orders"), "select 1"));
    assert!(t.contains("ERROR 1045") && t.contains("access denied"), "new sessions are refused: {t}");
    let events = proxy.audit(3);
    let end = events_named(&events, "db.session.end");
    assert!(end.iter().any(|e| e["reason"].as_str().unwrap_or("").contains("revoked")), "{events:?}");
}

#[test]
fn doctor_checks_a_mysql_database_tls_certificate() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (_pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    drop(proxy);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", "/nonexistent")
        .envs(keys())
        .env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")
        .args(["doctor", "--manifests"])
        .arg(dir.path().join("manifests.yaml"))
        .arg("--secrets-dir")
        .arg(&db.secrets_dir)
        .output()
        .unwrap();
    let t = text(&out);
    let line = |label: &str| t.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no {label:?} line: {t}")).to_owned();
    assert!(line("db default/orders: TLS certificate").contains(" ok "), "the MySQL STARTTLS probe reads and verifies the chain: {t}");
}

#[test]
fn the_mariadb_client_works_through_the_local_tunnel() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let tunnel = Tunnel::start(proxy.port, "orders", "mysql", &alice, &[]);
    // The client talks plain MySQL to 127.0.0.1; the tunnel does the TLS switch with the
    // proxy inside the login and presents the certificate.
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &tunnel.port.to_string(), "-u", "app", "--skip-ssl", "--batch", "--skip-column-names"])
        .args(["-e", "select current_user(), database(); select count(*) from items", "orders"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}\n{}", text(&out), proxy.log(), std::fs::read_to_string(&tunnel.log_file).unwrap_or_default());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app@%\torders\n3");
    let denied = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &tunnel.port.to_string(), "-u", "admin", "--skip-ssl", "-e", "select 1", "orders"])
        .output()
        .unwrap();
    assert!(
        text(&denied).contains("ERROR 1045 (28000)") && text(&denied).contains("access denied"),
        "refusals come through the tunnel with their sequence ids right: {}",
        text(&denied)
    );
}

#[test]
fn ctrl_c_in_the_mariadb_client_cancels_the_running_statement_for_the_same_person_only() {
    let _machine = machine_shared();
    let db = shared_mariadb();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &db, keys(), None);
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let sleeper = |id: &ClientIdentity| {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "-h", "127.0.0.1", "-P", &proxy.port.to_string(), "-u", "app", "--batch", "--skip-column-names"])
            .arg(format!("--ssl-ca={}", id.files.ca().display()))
            .arg(format!("--ssl-cert={}", id.files.cert().display()))
            .arg(format!("--ssl-key={}", id.files.key().display()))
            .args(["--ssl-verify-server-cert", "-e", "select connection_id(); select sleep(30)", "orders"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let child = sleeper(&alice);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    let waited = started.elapsed();
    eprintln!("ctrl-c: the client ended {waited:?} after SIGINT");
    let t = text(&out);
    assert!(waited < Duration::from_secs(2), "the statement was cancelled {waited:?} after Ctrl-C: {t}\n{}", proxy.log());
    assert!(t.contains("query killed") || t.contains("Query execution was interrupted") || t.lines().any(|l| l.trim() == "1"), "{t}");

    // The id the client saw is the proxy's; KILL by it reaches the database's thread.
    let events = proxy.audit(4);
    let kills: Vec<_> =
        events_named(&events, "db.session.query").into_iter().filter(|e| e["statement"].as_str().is_some_and(|s| s.starts_with("KILL QUERY"))).collect();
    assert!(kills.iter().any(|e| e["success"] == true), "the client's KILL QUERY is audited: {events:?}");

    // Ids are the proxy's, handed out in order: alice's first session, the client's KILL
    // connection, then the next session.
    let first: u64 = kills[0]["statement"].as_str().unwrap().trim_start_matches("KILL QUERY ").trim().parse().unwrap();
    let child = sleeper(&alice);
    std::thread::sleep(Duration::from_millis(1500));
    let second = first + 2;
    // Somebody else (bob, allowed the same db user) cannot: as if there were no such thread.
    let bob = pki.client("bob", "bob", &["dev"], None, Duration::from_secs(3600));
    let t = text(&mariadb(&proxy, &bob, "app", Some("orders"), &format!("KILL QUERY {second}")));
    assert!(t.contains("ERROR 1094") && t.contains(&format!("Unknown thread id: {second}")), "{t}");
    std::thread::sleep(Duration::from_millis(500));
    let mut child = child;
    assert!(child.try_wait().unwrap().is_none(), "alice's statement still runs");
    // Alice herself can, by the id her client was given.
    let started = Instant::now();
    let t = text(&mariadb(&proxy, &alice, "app", Some("orders"), &format!("KILL QUERY {second}")));
    assert!(!t.contains("ERROR"), "{t}");
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled in {:?}: {}", started.elapsed(), text(&out));
}
