//! The install as users do it, on a real node (scripts/cluster.sh: kubelet, containerd,
//! kube-proxy, scheduler): the image packed from the binary the tests were built with, `helm install`, the
//! operator and proxy pods running for real with IRSA through moto's STS, psql with a
//! certificate from `portcullis db login` through the Service and `kubectl port-forward`,
//! a rolling update with no refused connection, upgrade, uninstall, and a namespace-scoped
//! install. One cluster at a time, and nothing else beside it: each test has the machine to
//! itself (support::machine_exclusive).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cluster::{BridgePostgres, Cluster, IMAGE};
use crate::support::{Moto, Proc, machine_exclusive, repo, run_ok, text};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/orders-proxy";

fn helm_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// The chart's values for a test install: the image imported into the node, nothing pulled,
/// one operator replica, no AWS checks (the database is not an RDS instance).
fn test_values(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "image.repository=localhost/portcullis",
        "image.tag=test",
        "image.pullPolicy=Never",
        "proxy.imagePullPolicy=Never",
        "operator.replicas=1",
        "operator.awsChecks=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.into_iter().flat_map(|s| ["--set".to_owned(), s]).collect()
}

#[test]
fn the_chart_lints_renders_and_passes_a_server_side_dry_run_and_both_apply_styles_agree() {
    let _machine = machine_exclusive();
    let cluster = Cluster::up();
    helm_ok(cluster.helm().args(["lint", "--strict", "charts/portcullis"]));
    helm_ok(cluster.helm().args([
        "lint",
        "--strict",
        "charts/portcullis",
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]));

    // A typo in values is refused by the schema, naming the field.
    let typo = cluster.helm().args(["template", "portcullis", "charts/portcullis", "--set", "operator.replica=3"]).output().unwrap();
    assert!(!typo.status.success(), "a misspelt value was accepted");
    assert!(text(&typo).contains("replica"), "the error does not name the field: {}", text(&typo));

    // Every rendered object passes the real API server's validation (CRDs first).
    cluster.k(&["apply", "--server-side", "-f", repo().join("charts/portcullis/crds").to_str().unwrap()]);
    cluster.k(&["create", "namespace", "portcullis-system"]);
    cluster.k(&["create", "namespace", "team-a"]);
    for extra in [&[][..], &["--set", "watchNamespaces={team-a}", "--set", "csrSigner.enabled=false"][..]] {
        let rendered = helm_ok(cluster.helm().args(["template", "portcullis", "charts/portcullis", "-n", "portcullis-system"]).args(extra));
        assert!(rendered.contains("kind: Deployment"), "{rendered}");
        let path = cluster.dir.path().join("rendered.yaml");
        std::fs::write(&path, &rendered).unwrap();
        let out = cluster.k(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]);
        assert!(out.contains("deployment.apps/portcullis-operator") && out.contains("(server dry run)"), "{out}");
    }

    // deploy/ by client-side apply, then server-side over it (and back): no field conflict.
    let deploy = repo().join("deploy");
    let crds = repo().join("crds");
    cluster.k(&["apply", "-f", crds.to_str().unwrap(), "-f", deploy.to_str().unwrap()]);
    let ssa = cluster.kubectl().args(["apply", "--server-side", "-f", deploy.to_str().unwrap()]).output().unwrap();
    assert!(ssa.status.success(), "server-side apply over a client-side apply conflicts: {}", text(&ssa));
    cluster.k(&["apply", "-f", deploy.to_str().unwrap()]);
}

fn psql(conninfo: &str) -> Output {
    Command::new("psql").args([conninfo, "-XAtc", "SELECT id FROM items"]).env("PGCONNECT_TIMEOUT", "5").output().unwrap()
}

/// psql, retried for up to 15 s while it fails: right after a pod turns Ready, kube-proxy may
/// not yet have programmed the Service's endpoints (nftables rejects: connection refused).
fn psql_once_ready(conninfo: &str) -> Output {
    let start = Instant::now();
    loop {
        let out = psql(conninfo);
        if (out.status.success() && text(&out).trim() == "42") || start.elapsed() > Duration::from_secs(15) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn conninfo(host: &str, hostaddr: &str, port: &str, certs: &Path) -> String {
    format!(
        "host={host} hostaddr={hostaddr} port={port} user=app dbname=orders sslmode=verify-full sslrootcert={c}/ca.crt sslcert={c}/client.crt sslkey={c}/client.key",
        c = certs.display()
    )
}

/// Connects every 100 ms until stopped; counts successes and keeps the failures.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientLoop {
    fn start(conninfo: String) -> ClientLoop {
        let (stop, ok, failures) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let thread = std::thread::spawn({
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = psql(&conninfo);
                    if out.status.success() && text(&out).trim() == "42" {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.lock().unwrap().push(text(&out));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        ClientLoop { stop, ok, failures, thread: Some(thread) }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.ok.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

#[test]
fn helm_install_runs_the_operator_and_proxy_pods_and_psql_reaches_postgres_through_them() {
    let _machine = machine_exclusive();
    let cluster = Cluster::up();
    let ip = cluster.node_ip.clone();
    // moto on the bridge address, where the proxy pods can reach it.
    let moto_server = Moto::start_on(&ip);
    let moto = moto_server.url();
    let pg = BridgePostgres::start(cluster.dir.path(), &ip, &moto);

    // The install, as on EKS: the operator's ServiceAccount carries the IRSA annotation.
    let values = test_values(&[
        &format!("operator.allowedEndpoints={{{ip}}}"),
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/portcullis-operator",
        &format!("proxy.env[0].name=AWS_ENDPOINT_URL_STS,proxy.env[0].value={moto}"),
        "proxy.env[1].name=AWS_EC2_METADATA_DISABLED,proxy.env[1].value=true",
    ]);
    // Users in group dev may port-forward in shop (db connect from outside the cluster).
    let values =
        [values, ["login.tunnel.namespaces={shop}", "login.tunnel.group=dev"].iter().flat_map(|s| ["--set".to_owned(), s.to_string()]).collect()].concat();
    cluster.k(&["create", "namespace", "shop"]);
    let started = Instant::now();
    helm_ok(
        cluster
            .helm()
            .args(["install", "portcullis", "charts/portcullis", "-n", "portcullis-system", "--create-namespace", "--wait", "--timeout", "180s"])
            .args(&values),
    );
    eprintln!("helm install --wait: {:?}", started.elapsed());
    let op_pod =
        cluster.k(&["-n", "portcullis-system", "get", "pods", "-l", "app.kubernetes.io/name=portcullis-operator", "-o", "jsonpath={.items[0].metadata.name}"]);
    cluster.wait_for(
        "the operator to hold the Lease",
        &["-n", "portcullis-system", "get", "lease", "portcullis-operator", "-o", "jsonpath={.spec.holderIdentity}"],
        &op_pod,
        Duration::from_secs(60),
    );
    let sa = cluster.k(&["-n", "portcullis-system", "get", "sa", "portcullis-operator", "-o", "jsonpath={.metadata.annotations}"]);
    assert!(sa.contains("role/portcullis-operator"), "{sa}");

    // A Database and an AccessRole, as users write them.
    let ca = std::fs::read_to_string(pg.dir.join("upstream-ca/ca.crt")).unwrap();
    cluster.k(&["-n", "shop", "create", "secret", "generic", "rds-ca", "--from-literal", &format!("ca.crt={ca}")]);
    let database = |extra: &str| {
        format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: orders, namespace: shop}}\nspec:\n  protocol: postgres\n  endpoint: '{ip}:{}'\n  aws: {{region: us-east-1}}\n  tls: {{mode: verify-full, caSecretRef: {{name: rds-ca}}}}\n  proxy: {{iamRoleArn: '{ROLE_ARN}'{extra}}}\n",
            pg.port
        )
    };
    cluster.apply(&database(""));
    cluster.apply("apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: devs, namespace: shop}\nspec: {subjects: [{kind: Group, name: dev}], allow: {databases: [orders], dbUsers: [app], dbNames: [orders]}, maxSessionTtl: 1h}\n");
    cluster.k(&["-n", "shop", "rollout", "status", "deployment/portcullis-orders", "--timeout=180s"]);
    let pod = cluster.k(&["-n", "shop", "get", "pods", "-l", "portcullis.io/database=orders", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&pod).unwrap();
    let pod = &pod["items"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], IMAGE);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
    let ready = pod["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "the proxy pod is not Ready: {pod}");

    // Its AWS identity came from the projected token through AssumeRoleWithWebIdentity.
    let status = cluster.wait_for(
        "the proxy to report its credential source",
        &["-n", "shop", "get", "database", "orders", "-o", "jsonpath={.status.credentialSource}"],
        "web identity",
        Duration::from_secs(60),
    );
    eprintln!("credentialSource: {status}");

    // A certificate with the user's Kubernetes login, then psql through the Service's ClusterIP.
    let alice = cluster.user("alice", &["dev"]);
    let certs = cluster.dir.path().join("alice-certs");
    let login = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["db", "login", "orders", "-n", "shop", "--db-user", "app", "--db-name", "orders", "--out"])
        .arg(&certs)
        .env("KUBECONFIG", &alice)
        .output()
        .unwrap();
    assert!(login.status.success(), "portcullis db login: {}", text(&login));
    let cluster_ip = cluster.k(&["-n", "shop", "get", "svc", "portcullis-orders", "-o", "jsonpath={.spec.clusterIP}"]);
    let port = cluster.k(&["-n", "shop", "get", "svc", "portcullis-orders", "-o", "jsonpath={.spec.ports[0].port}"]);
    let host = "portcullis-orders.shop.svc";
    let out = psql_once_ready(&conninfo(host, &cluster_ip, &port, &certs));
    assert!(out.status.success() && text(&out).trim() == "42", "psql through the ClusterIP: {}\nPAM: {}", text(&out), pg.pam_log());

    // PostgreSQL's PAM check re-computed the token's signature with the role session's keys
    // (temporary ASIA… keys from AssumeRoleWithWebIdentity, not the static ones).
    let pam = pg.pam_log();
    assert!(pam.lines().any(|l| l.contains("accept user=\"app\"") && l.contains("akid=\"ASIA")), "{pam}");

    // ... and through kubectl port-forward.
    let mut pf = cluster
        .kubectl()
        .args(["-n", "shop", "port-forward", "--address", "127.0.0.1", "svc/portcullis-orders", &format!("0:{port}")])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(cluster.dir.path().join("port-forward.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut pf_out = std::io::BufReader::new(pf.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut pf_out, &mut line).unwrap();
    // kubectl prints a line per connection: keep reading, or it dies of SIGPIPE.
    std::thread::spawn(move || std::io::copy(&mut pf_out, &mut std::io::sink()));
    let _pf = Proc { child: pf };
    let local = line.split("127.0.0.1:").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("port-forward said {line:?}")).to_owned();
    let out = psql_once_ready(&conninfo(host, "127.0.0.1", &local, &certs));
    if !(out.status.success() && text(&out).trim() == "42") {
        let pf_log = std::fs::read_to_string(cluster.dir.path().join("port-forward.log")).unwrap_or_default();
        let kubelet = std::fs::read_to_string(cluster.dir.path().join("run/logs/kubelet.log")).unwrap_or_default();
        let kubelet: Vec<&str> = kubelet.lines().filter(|l| l.contains("ortforward") || l.contains("ort-forward")).collect();
        panic!("psql through port-forward: {}\nkubectl port-forward said: {pf_log}\nkubelet: {}", text(&out), kubelet.join("\n"));
    }

    // db connect from the host, where the Service's name does not resolve: through the API
    // server's port-forward, with a certificate it gets itself.
    let home = cluster.dir.path().join("alice-home");
    std::fs::create_dir_all(&home).unwrap();
    let portcullis = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.env("HOME", &home).env("KUBECONFIG", &alice);
        cmd
    };
    let out = portcullis().args(["db", "connect", "orders", "-n", "shop", "--", "-XAtc", "SELECT id FROM items"]).output().unwrap();
    assert!(out.status.success() && text(&out).contains("42"), "db connect through the port-forward: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested certificate"), "{}", text(&out));

    // A tunnel that outlives its proxy pod: the next connection goes to the replacement.
    let tunnel_log = cluster.dir.path().join("tunnel.log");
    let mut tunnel = portcullis()
        .args(["db", "proxy", "orders", "-n", "shop", "--tunnel"])
        .env("RUST_LOG", "portcullis=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&tunnel_log).unwrap())
        .spawn()
        .unwrap();
    let mut tunnel_out = std::io::BufReader::new(tunnel.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut tunnel_out, &mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut tunnel_out, &mut std::io::sink()));
    let _tunnel = Proc { child: tunnel };
    let tunnel_port = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("the tunnel said {line:?}: {}", std::fs::read_to_string(&tunnel_log).unwrap_or_default()))
        .to_owned();
    let through_tunnel = format!("host=127.0.0.1 port={tunnel_port} user=app dbname=orders sslmode=disable");
    let pod_names = |c: &Cluster| c.k(&["-n", "shop", "get", "pods", "-l", "portcullis.io/database=orders", "-o", "jsonpath={.items[*].metadata.name}"]);
    let before = pod_names(&cluster);
    let out = psql(&through_tunnel);
    assert!(
        out.status.success() && text(&out).trim() == "42",
        "psql through the tunnel: {}\n{}",
        text(&out),
        std::fs::read_to_string(&tunnel_log).unwrap_or_default()
    );
    cluster.k(&["-n", "shop", "delete", "pod", &before, "--wait=false"]);
    cluster.k(&["-n", "shop", "rollout", "status", "deployment/portcullis-orders", "--timeout=120s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = psql(&through_tunnel);
        if (out.status.success() && text(&out).trim() == "42") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let after = pod_names(&cluster);
    let log = std::fs::read_to_string(&tunnel_log).unwrap_or_default();
    assert!(out.status.success() && text(&out).trim() == "42", "psql through the tunnel after the pod went: {}\n{log}", text(&out));
    let replacement = after.split_whitespace().find(|p| *p != before).unwrap_or_else(|| panic!("no replacement pod: {after}"));
    assert!(
        log.contains(&format!("pod shop/{before}")) && log.contains(&format!("pod shop/{replacement}")),
        "the tunnel went to {before}, then {replacement}:\n{log}"
    );
    drop(_tunnel);

    // The audit trail is in the pod's log.
    let logs = cluster.k(&["-n", "shop", "logs", "deployment/portcullis-orders"]);
    assert!(logs.contains("db.session.start") && logs.contains("\"alice\""), "no audit event for alice in the pod log:\n{logs}");
    assert!(!logs.contains("X-Amz-Signature"), "a token reached the log");

    // A spec change rolls the pods (new config hash) while a client connecting every 100 ms
    // sees no error.
    let hash = |c: &Cluster| {
        c.k(&["-n", "shop", "get", "deploy", "portcullis-orders", "-o", "jsonpath={.spec.template.metadata.annotations.portcullis\\.io/config-hash}"])
    };
    let before = hash(&cluster);
    let client = ClientLoop::start(conninfo(host, &cluster_ip, &port, &certs));
    std::thread::sleep(Duration::from_secs(2));
    cluster.apply(&database(", resources: {requests: {cpu: 20m, memory: 32Mi}}"));
    cluster.wait_for(
        "a new config hash",
        &["-n", "shop", "get", "deploy", "portcullis-orders", "-o", "jsonpath={.spec.template.metadata.annotations}"],
        "config-hash",
        Duration::from_secs(30),
    );
    let start = Instant::now();
    while hash(&cluster) == before {
        assert!(start.elapsed() < Duration::from_secs(30), "the config hash did not change");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.k(&["-n", "shop", "rollout", "status", "deployment/portcullis-orders", "--timeout=180s"]);
    std::thread::sleep(Duration::from_secs(8));
    let (ok, failures) = client.finish();
    eprintln!("during the roll: {ok} connections, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {} connections failed during the roll: {:?}", failures.len(), ok + failures.len(), &failures[..failures.len().min(3)]);
    assert!(ok > 20, "too few connections to prove anything: {ok}");

    // helm upgrade with changed values rolls the operator; nothing is orphaned.
    let op_hash =
        |c: &Cluster| c.k(&["-n", "portcullis-system", "get", "deploy", "portcullis-operator", "-o", "jsonpath={.spec.template.metadata.annotations}"]);
    let op_before = op_hash(&cluster);
    let values2 = [values.clone(), vec!["--set".into(), "proxy.replicas=2".into()]].concat();
    helm_ok(cluster.helm().args(["upgrade", "portcullis", "charts/portcullis", "-n", "portcullis-system", "--wait", "--timeout", "180s"]).args(&values2));
    assert_ne!(op_before, op_hash(&cluster), "changed proxy defaults did not roll the operator");
    cluster.wait_for(
        "two proxy replicas (the new default)",
        &["-n", "shop", "get", "deploy", "portcullis-orders", "-o", "jsonpath={.status.readyReplicas}"],
        "2",
        Duration::from_secs(120),
    );

    // Deleting the Database removes everything it owned.
    cluster.k(&["-n", "shop", "delete", "database", "orders", "--wait"]);
    let children = ["-n", "shop", "get", "deploy,svc,cm,secret,sa,rolebinding", "-l", "app.kubernetes.io/managed-by=portcullis-operator", "-o", "name"];
    cluster.wait_until_gone("after deleting the Database", &children, Duration::from_secs(60));

    // helm uninstall leaves nothing of the release (the CRDs stay, as Helm documents).
    helm_ok(cluster.helm().args(["uninstall", "portcullis", "-n", "portcullis-system", "--wait"]));
    // (The garbage collector removes the ReplicaSet's pods after the Deployment; they stop
    // within their grace period.)
    let release = ["get", "all,cm,sa,role,rolebinding,clusterrole,clusterrolebinding,pdb", "-A", "-l", "app.kubernetes.io/instance=portcullis", "-o", "name"];
    let took = cluster.wait_until_gone("after helm uninstall", &release, Duration::from_secs(60));
    eprintln!("nothing of the release left {took:?} after helm uninstall returned");
    cluster.k(&["get", "crd", "databases.portcullis.io"]);
}

#[test]
fn a_namespace_scoped_install_uses_roles_only_and_ignores_other_namespaces() {
    let _machine = machine_exclusive();
    let cluster = Cluster::up();
    cluster.k(&["create", "namespace", "team-a"]);
    cluster.k(&["create", "namespace", "team-b"]);
    let values = test_values(&["watchNamespaces={team-a}", "csrSigner.enabled=false"]);
    helm_ok(
        cluster
            .helm()
            .args(["install", "portcullis", "charts/portcullis", "-n", "portcullis-team-a", "--create-namespace", "--wait", "--timeout", "180s"])
            .args(&values),
    );
    // No cluster-wide grant for the operator.
    let bindings = cluster.k(&["get", "clusterrolebinding", "-o", "json"]);
    let bindings: serde_json::Value = serde_json::from_str(&bindings).unwrap();
    for b in bindings["items"].as_array().unwrap() {
        for s in b["subjects"].as_array().into_iter().flatten() {
            assert!(s["name"] != "portcullis-operator", "the operator has a ClusterRoleBinding: {}", b["metadata"]["name"]);
        }
    }
    let can = |verb: &str, what: &str, ns: &str| {
        let out = cluster
            .kubectl()
            .args(["auth", "can-i", verb, what, "-n", ns, "--as", "system:serviceaccount:portcullis-team-a:portcullis-operator"])
            .output()
            .unwrap();
        text(&out).trim().starts_with("yes")
    };
    assert!(can("create", "deployments", "team-a"));
    assert!(!can("create", "deployments", "team-b"), "the operator may write outside its namespace");
    assert!(!can("list", "databases.portcullis.io", "team-b"));
    // People (`portcullis db ls`) may read Databases and AccessRoles in the watched namespace only.
    let user_can = |what: &str, ns: &str| {
        let out = cluster.kubectl().args(["auth", "can-i", "list", what, "-n", ns, "--as", "alice", "--as-group", "system:authenticated"]).output().unwrap();
        text(&out).trim().starts_with("yes")
    };
    assert!(user_can("databases.portcullis.io", "team-a") && user_can("accessroles.portcullis.io", "team-a"));
    assert!(!user_can("databases.portcullis.io", "team-b"), "people may read Databases outside the watched namespace");

    let db = |ns: &str| {
        format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: orders, namespace: {ns}}}\nspec: {{protocol: postgres, endpoint: 'orders.abc.us-east-1.rds.amazonaws.com:5432'}}\n"
        )
    };
    cluster.apply(&db("team-a"));
    cluster.apply(&db("team-b"));
    cluster.wait_for("the team-a proxy Deployment", &["-n", "team-a", "get", "deploy", "-o", "name"], "portcullis-orders", Duration::from_secs(60));
    cluster.wait_for(
        "the team-a status",
        &["-n", "team-a", "get", "database", "orders", "-o", "jsonpath={.status.conditions}"],
        "Valid",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cluster.k(&["-n", "team-b", "get", "deploy", "-o", "name"]).trim(), "", "a Database outside the watched namespace was reconciled");
    assert_eq!(cluster.k(&["-n", "team-b", "get", "database", "orders", "-o", "jsonpath={.status}"]).trim(), "");
    let logs = cluster.k(&["-n", "portcullis-team-a", "logs", "deployment/portcullis-operator"]);
    assert!(!logs.contains("forbidden"), "the operator hit RBAC refusals:\n{logs}");
    helm_ok(cluster.helm().args(["uninstall", "portcullis", "-n", "portcullis-team-a", "--wait"]));
}
