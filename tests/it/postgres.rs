//! End to end through the proxy binary: real PostgreSQL (TLS, tokens checked by PAM), real
//! psql and pgbench, moto for STS, botocore as an independent SigV4 check.

use std::process::Command;
use std::time::{Duration, Instant};

use portcullis::authz::Route;

use crate::support::*;

const ROLES: &str = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: test}}, dbUsers: [app], dbNames: [orders, postgres]}
  deny: {dbNames: [postgres]}
";

fn start_proxy(dir: &std::path::Path, pg: &Postgres, env: Vec<(String, String)>, aws_extra: &str, log_level: &str) -> (ProxyPki, Proxy) {
    let pki = ProxyPki::new(dir);
    let proxy = Proxy::start(ProxySetup { dir, db: pg, aws_extra, roles: ROLES, env, log_level, endpoint: None }, &pki);
    (pki, proxy)
}

#[test]
fn allowed_user_queries_through_the_proxy_and_every_step_is_audited() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "info");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let out =
        psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select current_user, current_database(), ssl from pg_stat_ssl where pid = pg_backend_pid()"]);
    assert!(out.status.success(), "{}\n{}", text(&out), proxy.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app|orders|t", "upstream leg must be TLS as the IAM user");

    let events = proxy.audit(3);
    let start = events_named(&events, "db.session.start");
    assert_eq!(start.len(), 1, "{events:?}");
    assert_eq!(start[0]["success"], true);
    assert_eq!(start[0]["user"], "alice");
    assert_eq!(start[0]["groups"], serde_json::json!(["dev"]));
    assert_eq!(start[0]["database"], "default/orders");
    assert_eq!(start[0]["db_user"], "app");
    assert_eq!(start[0]["db_name"], "orders");
    assert_eq!(start[0]["protocol"], "postgres");
    let queries = events_named(&events, "db.session.query");
    assert!(queries.iter().any(|q| q["statement"].as_str().unwrap_or("").contains("select current_user")), "{events:?}");
    assert_eq!(events_named(&events, "db.session.end").len(), 1, "{events:?}");
    assert!(pg.pam_decisions().iter().any(|l| l.contains("accept") && l.contains("user=\"app\"")), "{:?}", pg.pam_decisions());
    let metrics = proxy.metrics();
    assert!(metrics.contains("portcullis_token_generations_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("portcullis_connections_total{protocol=\"postgres\",result=\"accepted\"} 1"), "{metrics}");
}

#[test]
fn denied_requests_are_refused_with_the_reason_and_audited() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "info");
    let bob = pki.client("bob", "bob", &["sales"], None, Duration::from_secs(3600));
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let cases = [
        (&bob, "app", "orders", "no AccessRole in namespace \"default\" grants user \"bob\""),
        (&alice, "admin", "orders", "none allows database \"orders\" as db user \"admin\""),
        (&alice, "app", "postgres", "AccessRole \"default/developers\" denies user \"alice\""),
    ];
    for (id, user, db, reason) in cases {
        let out = psql(&proxy.conninfo(id, user, db), &["-c", "select 1"]);
        assert!(!out.status.success());
        let t = text(&out);
        assert!(t.contains("access denied") && t.contains(reason), "{user}@{db}: {t}");
    }
    let events = proxy.audit(3);
    let refused: Vec<_> = events_named(&events, "db.session.start").into_iter().filter(|e| e["success"] == false).collect();
    assert_eq!(refused.len(), 3, "{events:?}");
    assert!(refused.iter().all(|e| e["code"] == "DB1000W" && e["error"].as_str().unwrap_or("").contains("access denied")));
    assert!(events_named(&events, "db.session.query").is_empty(), "denied sessions must not reach the database");
    assert!(proxy.metrics().contains("portcullis_auth_failures_total{kind=\"authorization\"} 3"));
}

#[test]
fn the_upstream_refuses_a_token_signed_with_the_wrong_secret_key() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, "not-the-right-secret-key-000000000000000"), "", "info");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let out = psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("the database refused the IAM login of \"app\""), "{t}");
    assert!(t.contains("PAM authentication failed"), "the upstream's own verdict is passed on: {t}");
    assert!(t.contains("GRANT rds_iam"), "the remedy is named: {t}");
    assert!(pg.pam_decisions().iter().any(|l| l.contains("reject") && l.contains("signature")), "{:?}", pg.pam_decisions());
}

#[test]
fn cancel_reconnect_prepared_statements_and_pgbench_work() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "info");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let conn = proxy.conninfo(&alice, "app", "orders");

    // A cancelled pg_sleep: psql sends a CancelRequest with the proxy's key on SIGINT.
    let child = Command::new("psql").args(["-X", "-c", "select pg_sleep(30)"]).arg(&conn).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "cancel took {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"), "{}", String::from_utf8_lossy(&out.stderr));

    // \c reconnects through the proxy with the same certificate; PREPARE/EXECUTE work.
    let script = dir.path().join("script.sql");
    std::fs::write(&script, "\\c orders\nselect current_database();\nprepare add(int) as select $1 + 1;\nexecute add(41);\n").unwrap();
    let out = psql(&conn, &["-f", script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("orders") && stdout.contains("42"), "{stdout}");

    // pgbench: initialise, then the extended protocol with prepared statements.
    let pgbench = |args: &[&str]| Command::new("pgbench").args(args).arg(&conn).output().unwrap();
    let out = pgbench(&["-i", "-s", "1", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = pgbench(&["-c", "4", "-j", "2", "-t", "50", "-M", "prepared", "-S"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("number of transactions actually processed: 200/200"), "{}", text(&out));
    let events = proxy.audit(10);
    assert!(
        events.iter().any(|e| e["event"] == "db.session.query" && e["kind"] == "parse" && e["statement"].as_str().unwrap_or("").contains("pgbench_accounts")),
        "extended-protocol Parse messages are audited"
    );
}

#[test]
fn the_token_is_valid_for_botocore() {
    let _machine = machine_shared();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = rt.block_on(async {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .load()
            .await;
        let aws = portcullis::aws::AwsContext::from_sdk_config(sdk);
        let creds = aws.credentials_for(None, None, REGION);
        portcullis::aws::rds_auth_token(&aws, &creds, "orders.abc.us-east-1.rds.amazonaws.com", 5432, "app", REGION).await.unwrap()
    });
    assert!(!format!("{token:?}").contains("Signature"), "Debug must not show the token");
    let verify = |secret: &str, user: &str| {
        Command::new("python3")
            .arg(repo().join("tests/support/verify_token_botocore.py"))
            .args(["--token", token.expose(), "--host", "orders.abc.us-east-1.rds.amazonaws.com", "--port", "5432", "--user", user])
            .args(["--region", REGION, "--access-key", ACCESS_KEY, "--secret-key", secret])
            .output()
            .unwrap()
    };
    let out = verify(SECRET_KEY, "app");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(!verify("wrong", "app").status.success(), "botocore must reject a wrong key");
    assert!(!verify(SECRET_KEY, "admin").status.success(), "botocore must reject another user");
}

#[test]
fn assume_role_goes_through_sts_and_a_wrong_external_id_is_refused() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let moto = Moto::start();
    let setup = moto.setup_assume_role("ext-right");
    let role = setup["role_arn"].as_str().unwrap().to_owned();
    let key = setup["access_key"].as_str().unwrap();
    let secret = setup["secret_key"].as_str().unwrap();
    let mut env = static_key_env(key, secret);
    env.push(("AWS_ENDPOINT_URL_STS".into(), moto.url()));

    let dir = scratch();
    let extra = format!("    assumeRoleArn: {role}\n    externalId: ext-wrong");
    let (pki, proxy) = start_proxy(dir.path(), &pg, env.clone(), &extra, "debug");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let out = psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains(&format!("sts:AssumeRole on {role} failed")) && t.contains("AccessDenied"), "{t}");
    assert!(t.contains("trust policy") && t.contains("sts:ExternalId"), "the checklist is shown: {t}");
    assert!(
        t.contains("\"sts:ExternalId\": \"ext-wrong\"") && t.contains("arn:aws:iam::123456789012:user/proxy"),
        "both ARNs and the external ID condition are filled in: {t}"
    );
    drop(proxy);

    // The right external ID gets temporary credentials from STS and a token is signed with
    // them. (This PostgreSQL's checker knows only the static keys, not the temporary ones moto
    // handed out, so the upstream refusing the token is expected; tests/it/node.rs checks a
    // session-token token end to end, with the checker reading moto's keys.)
    let dir2 = scratch();
    let extra = format!("    assumeRoleArn: {role}\n    externalId: ext-right");
    let (pki, proxy) = start_proxy(dir2.path(), &pg, env, &extra, "debug");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let out = psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]);
    let t = text(&out);
    assert!(!t.contains("sts:AssumeRole"), "STS accepted the right external ID: {t}");
    assert!(proxy.metrics().contains("portcullis_token_generations_total{result=\"ok\"} 1"), "{}", proxy.metrics());
    for secret_pattern in [secret, "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "SessionToken", "ext-right"] {
        for (what, body) in [("log", proxy.log()), ("client", t.clone()), ("stdout", std::fs::read_to_string(&proxy.stdout_file).unwrap_or_default())] {
            assert!(!body.contains(secret_pattern), "{secret_pattern:?} leaked into the {what}:\n{body}");
        }
    }
}

#[test]
fn no_token_or_key_reaches_the_log_or_the_client_at_debug_level() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "debug");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let ok = psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let nobody = psql(&proxy.conninfo(&alice, "admin", "orders"), &["-c", "select 1"]);
    let (pki2, proxy2) = start_proxy(&dir.path().join("wrong"), &pg, static_key_env(ACCESS_KEY, "wrong-secret-key-wrong-secret-key-000000"), "", "debug");
    let alice2 = pki2.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let refused = psql(&proxy2.conninfo(&alice2, "app", "orders"), &["-c", "select 1"]);
    assert!(!refused.status.success());
    let everything = [
        proxy.log(),
        proxy2.log(),
        text(&ok),
        text(&nobody),
        text(&refused),
        std::fs::read_to_string(&proxy.audit_file).unwrap(),
        std::fs::read_to_string(&proxy.stdout_file).unwrap(),
    ]
    .join("\n");
    assert!(everything.contains("DEBUG"), "the proxy really logged at debug level");
    for pattern in [SECRET_KEY, "wrong-secret-key", "X-Amz-Signature", "X-Amz-Credential", "Action=connect", ACCESS_KEY] {
        assert!(!everything.contains(pattern), "{pattern:?} leaked");
    }
}

#[test]
fn a_certificate_route_limits_what_it_can_reach() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "info");
    let route = Route { database: Some("orders".into()), db_user: Some("app".into()), db_name: Some("orders".into()) };
    let id = pki.client("routed", "alice", &["dev"], Some(route), Duration::from_secs(3600));
    assert!(psql(&proxy.conninfo(&id, "app", "orders"), &["-c", "select 1"]).status.success());
    let t = text(&psql(&proxy.conninfo(&id, "app", "template1"), &["-c", "select 1"]));
    assert!(t.contains("your certificate is limited to db name \"orders\""), "{t}");
}

#[test]
fn reloading_roles_ends_a_session_whose_access_was_revoked() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let (pki, proxy) = start_proxy(dir.path(), &pg, static_key_env(ACCESS_KEY, SECRET_KEY), "", "info");
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let child = Command::new("psql")
        .args(["-X", "-c", "select pg_sleep(30)"])
        .arg(proxy.conninfo(&alice, "app", "orders"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let manifests = dir.path().join("manifests.yaml");
    let text_now = std::fs::read_to_string(&manifests).unwrap();
    std::fs::write(&manifests, text_now.replace("dbUsers: [app]", "dbUsers: [someone-else]")).unwrap();
    let started = Instant::now();
    run_ok(Command::new("kill").args(["-HUP", &proxy.proc.child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "revocation took {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access was revoked"), "{}", String::from_utf8_lossy(&out.stderr));
    // New sessions are refused at once.
    let t = text(&psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]));
    assert!(t.contains("access denied"), "{t}");
}

#[test]
fn an_unreachable_database_or_a_foreign_endpoint_is_reported_without_sending_a_token() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let dir = scratch();
    let pki = ProxyPki::new(dir.path());
    let closed = free_port();
    let proxy = Proxy::start(
        ProxySetup {
            dir: dir.path(),
            db: &*pg,
            aws_extra: "",
            roles: ROLES,
            env: static_key_env(ACCESS_KEY, SECRET_KEY),
            log_level: "info",
            endpoint: Some(format!("127.0.0.1:{closed}")),
        },
        &pki,
    );
    let alice = pki.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let t = text(&psql(&proxy.conninfo(&alice, "app", "orders"), &["-c", "select 1"]));
    assert!(t.contains(&format!("cannot reach the database at 127.0.0.1:{closed}")) && t.contains("security group"), "{t}");

    // `localhost` is not an AWS database domain and not in aws.allowedEndpoints: no token leaves.
    let dir2 = scratch();
    let pki2 = ProxyPki::new(dir2.path());
    let proxy2 = Proxy::start(
        ProxySetup {
            dir: dir2.path(),
            db: &*pg,
            aws_extra: "",
            roles: ROLES,
            env: static_key_env(ACCESS_KEY, SECRET_KEY),
            log_level: "info",
            endpoint: Some(format!("localhost:{}", pg.port)),
        },
        &pki2,
    );
    let before = pg.pam_decisions().len();
    let alice2 = pki2.client("alice", "alice", &["dev"], None, Duration::from_secs(3600));
    let t = text(&psql(&proxy2.conninfo(&alice2, "app", "orders"), &["-c", "select 1"]));
    assert!(t.contains("refusing to send an IAM token to \"localhost\"") && t.contains("aws.allowedEndpoints"), "{t}");
    assert_eq!(pg.pam_decisions().len(), before, "the database never saw a token");
    assert!(proxy2.metrics().contains("portcullis_auth_failures_total{kind=\"endpoint\"} 1"), "{}", proxy2.metrics());
}
