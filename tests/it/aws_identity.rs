//! AWS identity against moto (STS and IAM with auth on, RDS), the project's IMDS server in
//! network namespaces, and `portcullis doctor` / `portcullis iam` as users run them.

use std::process::{Command, Output};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use portcullis::aws::{AwsContext, Hop, session_name};

use crate::support::counting_proxy::CountingProxy;
use crate::support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn context(endpoint: &str, key: &str, secret: &str) -> AwsContext {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(key, secret, None, None, "test"))
        .load()
        .await;
    AwsContext::from_sdk_config(sdk)
}

fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[test]
fn many_connections_needing_one_chain_cause_one_sts_call_and_refresh_ahead_calls_again() {
    let _machine = machine_shared();
    let moto = Moto::start();
    let setup = moto.setup_assume_role("ext-1");
    let counter = CountingProxy::start(moto.port, b"Action=AssumeRole");
    let endpoint = format!("http://127.0.0.1:{}", counter.port);
    rt().block_on(async {
        let aws = context(&endpoint, &s(&setup, "access_key"), &s(&setup, "secret_key")).await;
        let creds = aws.credentials_for(Some(&s(&setup, "role_arn")), Some("ext-1"), REGION);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = creds.clone();
                tokio::spawn(async move { c.get().await.map(|c| c.access_key_id().to_owned()) })
            })
            .collect();
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.unwrap().expect("assume role through moto with auth on"));
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "every caller got the same cached credentials");
        assert!(keys[0].starts_with("ASIA"), "temporary credentials from STS");
        assert_eq!(counter.count(), 1, "50 concurrent connections made exactly one AssumeRole call");
        // Same chain requested again (another connection): still cached.
        let again = aws.credentials_for(Some(&s(&setup, "role_arn")), Some("ext-1"), REGION);
        again.get().await.unwrap();
        assert_eq!(counter.count(), 1);

        // Credentials within the refresh-ahead window are refreshed before use.
        let eager = context(&endpoint, &s(&setup, "access_key"), &s(&setup, "secret_key")).await.with_refresh_ahead(Duration::from_secs(7200));
        let c = eager.credentials_for(Some(&s(&setup, "role_arn")), Some("ext-1"), REGION);
        c.get().await.unwrap();
        c.get().await.unwrap();
        assert_eq!(counter.count(), 3, "two refreshes of credentials expiring within the window");
    });
}

#[test]
fn two_hops_carry_the_external_id_first_and_the_user_as_session_name() {
    let _machine = machine_shared();
    let moto = Moto::start();
    let setup = moto.setup_assume_role("ext-2");
    rt().block_on(async {
        let aws = context(&moto.url(), &s(&setup, "access_key"), &s(&setup, "secret_key")).await;
        let hops = vec![
            Hop { role_arn: s(&setup, "role_arn"), session_name: "portcullis".into() },
            Hop { role_arn: s(&setup, "reader_arn"), session_name: session_name("alice@example.com") },
        ];
        let creds = aws.credentials_for_hops(hops.clone(), Some("ext-2"), REGION).unwrap();
        let sts = aws_sdk_sts::Client::new(&aws.sdk_config_with(creds));
        let arn = sts.get_caller_identity().send().await.unwrap().arn().unwrap().to_owned();
        assert_eq!(arn, "arn:aws:sts::123456789012:assumed-role/reader/alice@example.com");
        // The external ID belongs on the first hop: with a wrong one the chain fails there.
        let err = aws.credentials_for_hops(hops.clone(), Some("wrong"), REGION).unwrap().get().await.unwrap_err().to_string();
        assert!(err.contains(&format!("sts:AssumeRole on {} failed", s(&setup, "role_arn"))), "{err}");
        let three = vec![hops[0].clone(), hops[1].clone(), hops[1].clone()];
        let err = aws.credentials_for_hops(three, None, REGION).unwrap_err().to_string();
        assert!(err.contains("at most two assume-role hops"), "{err}");
    });
}

#[test]
fn access_denied_on_assume_role_prints_the_checklist_with_both_arns() {
    let _machine = machine_shared();
    let moto = Moto::start();
    let setup = moto.setup_assume_role("ext-3");
    rt().block_on(async {
        let aws = context(&moto.url(), &s(&setup, "nopriv_access_key"), &s(&setup, "nopriv_secret_key")).await;
        let err = aws.credentials_for(Some(&s(&setup, "role_arn")), Some("ext-3"), REGION).get().await.unwrap_err().to_string();
        assert!(err.contains("AccessDenied"), "{err}");
        assert!(err.contains("arn:aws:iam::123456789012:role/orders-access"), "{err}");
        assert!(err.contains("arn:aws:iam::123456789012:user/nopriv"), "the caller's ARN is filled in: {err}");
        assert!(err.contains("\"sts:ExternalId\": \"ext-3\""), "{err}");
        assert!(err.contains("permissions boundary"), "{err}");
        assert!(!err.contains(&s(&setup, "nopriv_secret_key")));
    });
}

fn doctor(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap()).env("HOME", "/nonexistent");
    cmd.envs(env.iter().copied());
    cmd.arg("doctor").args(args);
    cmd.output().unwrap()
}

fn empty_manifests(dir: &std::path::Path) -> String {
    let p = dir.join("none.yaml");
    std::fs::write(&p, "# no databases\n").unwrap();
    p.display().to_string()
}

#[test]
fn no_credentials_lists_every_provider_tried_and_why() {
    let _machine = machine_shared();
    let dir = scratch();
    let closed = free_port();
    let imds = format!("http://127.0.0.1:{closed}");
    let out = doctor(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds), ("AWS_REGION", REGION)], &["--manifests", &empty_manifests(dir.path())]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for expected in [
        "every provider of the default chain failed",
        "environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set",
        "profile:",
        "web identity (IRSA): AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE are not set",
        "container (EKS Pod Identity):",
        "instance metadata (IMDS):",
        "IMDS probe: instance metadata is unreachable",
        "verdict: ",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
}

#[test]
fn unreadable_or_expired_web_identity_tokens_say_so() {
    let _machine = machine_shared();
    let dir = scratch();
    let manifests = empty_manifests(dir.path());
    fn env(file: &str) -> Vec<(&str, &str)> {
        vec![("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"), ("AWS_WEB_IDENTITY_TOKEN_FILE", file), ("AWS_REGION", REGION)]
    }
    let missing = dir.path().join("missing-token");
    let t = text(&doctor(&env(missing.to_str().unwrap()), &["--manifests", &manifests]));
    assert!(t.contains(&format!("the web identity token file {} cannot be read", missing.display())), "{t}");
    let expired = dir.path().join("expired-token");
    std::fs::write(&expired, jwt(1_600_000_000)).unwrap();
    let t = text(&doctor(&env(expired.to_str().unwrap()), &["--manifests", &manifests]));
    assert!(t.contains("expired at 2020-09-13T12:26:40Z"), "{t}");
}

fn jwt(exp: i64) -> String {
    use base64::Engine;
    let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.c2ln",
        enc(r#"{"alg":"RS256","kid":"k"}"#),
        enc(&format!(
            r#"{{"iss":"https://oidc.eks.us-east-1.amazonaws.com/id/X","sub":"system:serviceaccount:portcullis:orders","aud":["sts.amazonaws.com"],"exp":{exp}}}"#
        ))
    )
}

#[test]
fn irsa_web_identity_is_used_the_way_eks_sets_it_up() {
    let _machine = machine_shared();
    // moto refuses AssumeRoleWithWebIdentity in auth mode, so this one runs with auth off.
    let moto = Moto::start();
    let dir = scratch();
    let token = dir.path().join("token");
    std::fs::write(&token, jwt(4_000_000_000)).unwrap();
    let out = doctor(
        &[
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/orders-proxy"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL_STS", &moto.url()),
        ],
        &["--manifests", &empty_manifests(dir.path()), "--output", "json"],
    );
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let find = |name: &str| checks.as_array().unwrap().iter().find(|c| c["check"] == name).cloned().unwrap();
    assert_eq!(find("AWS credentials")["detail"], "from web identity (IRSA)");
    assert!(find("caller identity")["detail"].as_str().unwrap().contains("assumed-role/orders-proxy/"), "{checks}");
    assert_eq!(find("instance metadata (IMDS)")["status"], "skip", "no IMDS probe with IRSA");
    assert!(out.status.success(), "{}", text(&out));
}

/// A three-namespace topology (client → router → server) made by tests/support/netns.sh.
struct Netns {
    prefix: String,
    server: String,
    servers: Vec<Proc>,
}

impl Netns {
    fn up(tag: &str) -> Netns {
        let prefix = format!("pc{tag}{}", std::process::id() % 10_000);
        let out = run_ok(Command::new("bash").arg(repo().join("tests/support/netns.sh")).args(["up", &prefix]));
        let server = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned();
        Netns { prefix, server, servers: Vec::new() }
    }

    fn command(&self, side: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("tests/support/netns.sh")).args(["exec", &self.prefix, side]);
        c
    }

    /// Starts the project's IMDS server in the server namespace on `port`.
    fn imds(&mut self, port: u16, args: &[&str]) {
        let child = self
            .command("server")
            .args(["python3"])
            .arg(repo().join("tests/support/imds_server.py"))
            .args(["--host", &self.server, "--port", &port.to_string(), "--role", "node-role"])
            .args(["--access-key", "ASIAIMDSTEST000000001", "--secret-key", "imds-secret", "--session-token", "imds-session"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(Proc { child });
        let probe = format!("for i in $(seq 100); do (exec 3<>/dev/tcp/{}/{port}) 2>/dev/null && exit 0; sleep 0.05; done; exit 1", self.server);
        run_ok(self.command("client").args(["bash", "-c", &probe]));
    }

    fn doctor(&self, port: u16, manifests: &str) -> Output {
        let mut c = self.command("client");
        c.env_clear().env("PATH", std::env::var("PATH").unwrap()).env("HOME", "/nonexistent");
        c.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://{}:{port}", self.server));
        c.env("AWS_REGION", REGION).env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9");
        c.arg(env!("CARGO_BIN_EXE_portcullis")).args(["doctor", "--manifests", manifests]);
        c.output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = Command::new("bash").arg(repo().join("tests/support/netns.sh")).args(["down", &self.prefix]).output();
    }
}

#[test]
fn imds_hop_limit_one_is_detected_across_a_real_routing_hop_and_the_fix_is_named() {
    let _machine = machine_shared();
    let dir = scratch();
    let manifests = empty_manifests(dir.path());
    let mut net = Netns::up("h");
    net.imds(80, &["--put-ttl", "1"]);
    net.imds(8080, &["--put-ttl", "2"]);
    net.imds(8081, &["--mode", "v1-only"]);

    let out = net.doctor(80, &manifests);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("hop limit is probably 1"), "{t}");
    assert!(t.contains("--http-put-response-hop-limit 2") && t.contains("IRSA or EKS Pod Identity"), "the fix is named: {t}");
    let imds_line = t.lines().find(|l| l.starts_with("instance metadata (IMDS)")).unwrap_or_default();
    assert!(imds_line.contains("FAIL"), "{t}");

    // Hop limit 2: the token reply survives the hop; credentials come from IMDS.
    let t = text(&net.doctor(8080, &manifests));
    assert!(t.lines().any(|l| l.starts_with("instance metadata (IMDS)") && l.contains(" ok ") && l.contains("IMDSv2 answers")), "{t}");
    assert!(t.lines().any(|l| l.starts_with("AWS credentials") && l.contains("from instance metadata (IMDS)")), "{t}");
    assert!(!t.contains("imds-secret") && !t.contains("imds-session"), "no secret in the output: {t}");

    // IMDSv1 only: a warning.
    let t = text(&net.doctor(8081, &manifests));
    assert!(t.lines().any(|l| l.starts_with("instance metadata (IMDS)") && l.contains("WARN") && l.contains("only IMDSv1 answers")), "{t}");
}

#[test]
fn doctor_checks_each_database_and_names_a_remedy_for_every_failure() {
    let _machine = machine_shared();
    let pg = shared_postgres();
    let moto = Moto::start();
    let dir = scratch();
    // RDS instances in moto: one with IAM authentication, one without.
    let py = format!(
        "import boto3\nr=boto3.client('rds',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='a',aws_secret_access_key='b')\n\
         r.create_db_instance(DBInstanceIdentifier='orders',DBInstanceClass='db.t3.micro',Engine='postgres',MasterUsername='m',MasterUserPassword='password1',AllocatedStorage=20,EnableIAMDatabaseAuthentication=True)\n\
         r.create_db_instance(DBInstanceIdentifier='legacy',DBInstanceClass='db.t3.micro',Engine='postgres',MasterUsername='m',MasterUserPassword='password1',AllocatedStorage=20)\n",
        moto.url()
    );
    run_ok(Command::new("python3").args(["-c", &py]));
    let legacy_port = legacy_cn_only_server(dir.path());
    let closed = free_port();
    let db = |name: &str, port: u16, instance: &str| {
        format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  protocol: postgres\n  endpoint: 127.0.0.1:{port}\n  aws: {{region: us-east-1, rds: {{instanceId: {instance}}}}}\n  tls: {{caSecretRef: {{name: upstream-ca}}}}\n---\n"
        )
    };
    let manifests = dir.path().join("dbs.yaml");
    std::fs::write(&manifests, [db("orders", pg.port, "orders"), db("legacy", legacy_port, "legacy"), db("gone", closed, "orders")].concat()).unwrap();
    let out = doctor(
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL", &moto.url()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        &["--manifests", manifests.to_str().unwrap(), "--secrets-dir", pg.secrets_dir.to_str().unwrap()],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    let line = |prefix: &str| t.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in\n{t}")).to_owned();
    assert!(line("AWS credentials").contains("from environment"), "{t}");
    assert!(line("caller identity").contains("arn:aws:"), "{t}");
    assert!(line("db default/orders: network path").contains(&format!("connected to 127.0.0.1:{}", pg.port)), "{t}");
    assert!(line("db default/orders: TLS certificate").contains(" ok "), "{t}");
    assert!(line("db default/orders: IAM authentication").contains("enabled on instance orders"), "{t}");
    assert!(line("db default/legacy: TLS certificate").contains("legacy Common-Name-only certificate"), "{t}");
    assert!(line("db default/legacy: IAM authentication").contains("IAM database authentication is off on instance legacy"), "{t}");
    assert!(t.contains("aws rds modify-db-instance --db-instance-identifier legacy --enable-iam-database-authentication"), "{t}");
    assert!(t.contains("rotate the instance's certificate authority"), "{t}");
    assert!(line("db default/gone: network path").contains(&format!("cannot connect to 127.0.0.1:{closed}")), "the address and port tried: {t}");
    assert!(t.contains("verdict: "), "{t}");
    assert!(!t.contains(SECRET_KEY));
    let json = doctor(
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL", &moto.url()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        &["--manifests", manifests.to_str().unwrap(), "--secrets-dir", pg.secrets_dir.to_str().unwrap(), "-o", "json"],
    );
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(checks.as_array().unwrap().iter().any(|c| c["status"] == "fail" && c["remedy"].is_string()));
}

/// A PostgreSQL-speaking TLS endpoint whose certificate has a Common Name but no SANs.
fn legacy_cn_only_server(dir: &std::path::Path) -> u16 {
    let (ca, _) = portcullis::pki::Ca::generate("legacy").unwrap();
    let _ = ca;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("legacy.crt"), cert.pem()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let der = cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    std::thread::spawn(move || {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = std::sync::Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![der], key_der).unwrap());
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let mut req = [0u8; 8];
                if stream.read_exact(&mut req).is_err() || stream.write_all(b"S").is_err() {
                    return;
                }
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut buf = [0u8; 64];
                let _ = tls.read(&mut buf);
            });
        }
    });
    port
}

#[test]
fn generated_iam_policies_are_valid_for_moto_iam() {
    let _machine = machine_shared();
    let moto = Moto::start();
    let dir = scratch();
    let manifests = dir.path().join("m.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {name: orders}\nspec:\n  protocol: postgres\n  endpoint: orders.cluster-abc.us-east-1.rds.amazonaws.com:5432\n  aws: {accountId: '123456789012', rds: {clusterId: orders, resourceId: cluster-ABC}, enableIamAuth: true}\n---\n\
         apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {name: events}\nspec: {protocol: dynamodb, aws: {region: us-east-1, accountId: '123456789012'}}\n---\n\
         apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: devs}\nspec:\n  subjects: [{kind: Group, name: dev}]\n  allow: {databases: ['*'], dbUsers: [app, reader], dbNames: ['*']}\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let policy = run_ok(Command::new(bin).args(["iam", "policy", "--role", "proxy+operator", "--manifests", manifests.to_str().unwrap()]));
    let trust = run_ok(Command::new(bin).args([
        "iam",
        "trust-policy",
        "--oidc-provider-arn",
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC",
        "--namespace",
        "portcullis",
        "--service-account",
        "orders-proxy",
    ]));
    let pod_identity = run_ok(Command::new(bin).args([
        "iam",
        "trust-policy",
        "--pod-identity",
        "--cluster-arn",
        "arn:aws:eks:us-east-1:123456789012:cluster/prod",
        "--namespace",
        "portcullis-system",
        "--service-account",
        "portcullis-operator",
    ]));
    std::fs::write(dir.path().join("policy.json"), &policy.stdout).unwrap();
    std::fs::write(dir.path().join("trust.json"), &trust.stdout).unwrap();
    std::fs::write(dir.path().join("pod-identity.json"), &pod_identity.stdout).unwrap();
    // Neither mechanism, or a cluster ARN that is none: refused, saying what is wanted.
    let neither = Command::new(bin).args(["iam", "trust-policy", "--namespace", "a", "--service-account", "b"]).output().unwrap();
    assert_eq!(neither.status.code(), Some(2), "{}", text(&neither));
    assert!(text(&neither).contains("--oidc-provider-arn") && text(&neither).contains("--pod-identity"), "{}", text(&neither));
    let bad = Command::new(bin)
        .args(["iam", "trust-policy", "--pod-identity", "--cluster-arn", "prod", "--namespace", "a", "--service-account", "b"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && text(&bad).contains("is not an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME)"), "{}", text(&bad));
    let py = format!(
        "import boto3\ni=boto3.client('iam',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='a',aws_secret_access_key='b')\n\
         p=i.create_policy(PolicyName='portcullis-proxy',PolicyDocument=open('{d}/policy.json').read())\n\
         r=i.create_role(RoleName='portcullis-proxy',AssumeRolePolicyDocument=open('{d}/trust.json').read())\n\
         i.attach_role_policy(RoleName='portcullis-proxy',PolicyArn=p['Policy']['Arn'])\n\
         i.create_role(RoleName='portcullis-operator',AssumeRolePolicyDocument=open('{d}/pod-identity.json').read())\nprint('accepted')\n",
        moto.url(),
        d = dir.path().display()
    );
    let out = run_ok(Command::new("python3").args(["-c", &py]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "accepted");
    // One policy per identity: each document is one moto accepts.
    let list = run_ok(Command::new(bin).args(["iam", "policy", "--manifests", manifests.to_str().unwrap()]));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let roles: Vec<&str> = list.iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["proxy", "operator"], "{list:?}");
    for (i, p) in list.iter().enumerate() {
        for (j, doc) in p["documents"].as_array().unwrap().iter().enumerate() {
            std::fs::write(dir.path().join(format!("role-{i}-{j}.json")), doc.to_string()).unwrap();
            let py = format!(
                "import boto3\ni=boto3.client('iam',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='a',aws_secret_access_key='b')\n\
                 i.create_policy(PolicyName='p-{i}-{j}',PolicyDocument=open('{d}/role-{i}-{j}.json').read())\nprint('accepted')\n",
                moto.url(),
                d = dir.path().display()
            );
            assert_eq!(String::from_utf8_lossy(&run_ok(Command::new("python3").args(["-c", &py])).stdout).trim(), "accepted");
        }
    }
    // moto validates syntax: a broken document is refused, so acceptance above means something.
    let bad = format!(
        "import boto3,sys\ni=boto3.client('iam',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='a',aws_secret_access_key='b')\n\
         try:\n  i.create_policy(PolicyName='bad',PolicyDocument='{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Maybe\",\"Action\":\"x\",\"Resource\":\"*\"}}]}}')\n  print('accepted')\nexcept Exception as e:\n  print('refused')\n",
        moto.url()
    );
    let out = run_ok(Command::new("python3").args(["-c", &bad]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused");
}
