//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
//! (built by testenv/build.sh from the published Go modules) on free 127.0.0.1 ports, with
//! clients for the admin and for any user name and groups.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{Proc, free_port, repo, run_ok};

/// The directory of the test binaries (built once per machine, cached by testenv/build.sh).
pub fn testenv_bin() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = run_ok(Command::new("bash").arg(repo().join("testenv/build.sh")));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("build.sh prints the bin dir").trim())
    })
    .clone()
}

/// A running control plane.
pub struct ControlPlane {
    /// The API server URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// Scratch directory with certificates and kubeconfigs.
    pub dir: tempfile::TempDir,
    /// How long it took from starting etcd to a ready API server and controller manager.
    pub startup: Duration,
    /// The processes (etcd, kube-apiserver, kube-controller-manager).
    pub procs: Vec<Proc>,
    users: Mutex<u32>,
}

fn openssl(args: &[&str], dir: &Path) {
    run_ok(Command::new("openssl").args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()));
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager (garbage collector and namespace
    /// controllers), and waits until they are ready.
    pub fn start() -> ControlPlane {
        // One retry with fresh ports and files: a start that never answers (a port taken between
        // free_port and the bind, a stalled first etcd write under load) should not fail a test
        // about something else. The first attempt's logs are printed.
        match Self::try_start(Duration::from_secs(45)) {
            Ok(cp) => cp,
            Err(why) => {
                eprintln!("control plane did not start, trying once more: {why}");
                Self::try_start(Duration::from_secs(90)).unwrap_or_else(|why| panic!("{why}"))
            }
        }
    }

    fn try_start(timeout: Duration) -> Result<ControlPlane, String> {
        let bin = testenv_bin();
        let dir = super::scratch();
        let d_owned = dir.path().to_owned();
        let d = d_owned.as_path();
        let started = Instant::now();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=testenv-client-ca",
                "-days",
                "2",
            ],
            d,
        );
        openssl(&["genrsa", "-out", "sa.key", "2048"], d);
        openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], d);
        let (etcd_client, etcd_peer, api, kcm) = (free_port(), free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
        let spawn = |cmd: &mut Command, name: &str| Proc {
            child: cmd.stdout(log(name)).stderr(log(&format!("{name}.err"))).spawn().unwrap_or_else(|e| panic!("start {name}: {e}")),
        };
        let mut procs = Vec::new();
        procs.push(spawn(
            Command::new(bin.join("etcd")).args([
                "--name=testenv".to_owned(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=testenv=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ]),
            "etcd",
        ));
        procs.push(spawn(
            Command::new(bin.join("kube-apiserver")).args([
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api}"),
                format!("--cert-dir={}", d.join("apiserver").display()),
                format!("--client-ca-file={}", d.join("ca.crt").display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", d.join("sa.pub").display()),
                format!("--service-account-signing-key-file={}", d.join("sa.key").display()),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--endpoint-reconciler-type=none".into(),
            ]),
            "kube-apiserver",
        ));
        let mut cp = ControlPlane { url: format!("https://127.0.0.1:{api}"), dir, startup: Duration::ZERO, procs, users: Mutex::new(0) };
        let admin = cp.kubeconfig("admin", &["system:masters"]);
        cp.wait_ready(&admin, "/readyz", timeout)?;
        let d = cp.dir.path().to_owned();
        let proc = spawn(
            Command::new(bin.join("kube-controller-manager")).args([
                format!("--kubeconfig={}", admin.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm}"),
                format!("--cert-dir={}", d.join("kcm").display()),
                "--leader-elect=false".into(),
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,root-ca-certificate-publisher-controller".into(),
                "--use-service-account-credentials=false".into(),
                format!("--service-account-private-key-file={}", d.join("sa.key").display()),
                format!("--root-ca-file={}", d.join("apiserver/apiserver.crt").display()),
            ]),
            "kube-controller-manager",
        );
        cp.procs.push(proc);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", kcm)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "kube-controller-manager did not start:\n{}", cp.log("kube-controller-manager.err"));
            std::thread::sleep(Duration::from_millis(50));
        }
        cp.startup = started.elapsed();
        eprintln!("control plane ready in {:?} at {}", cp.startup, cp.url);
        Ok(cp)
    }

    /// A log file's contents.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn wait_ready(&mut self, kubeconfig: &Path, path: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "2", "--cacert"])
                .arg(self.dir.path().join("apiserver/apiserver.crt"))
                .arg("--cert")
                .arg(kubeconfig.with_extension("crt"))
                .arg("--key")
                .arg(kubeconfig.with_extension("key"))
                .arg(format!("{}{path}", self.url))
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            let exited: Vec<String> =
                self.procs.iter_mut().filter_map(|p| p.child.try_wait().ok().flatten().map(|status| format!("{} exited: {status}", p.child.id()))).collect();
            if !exited.is_empty() || start.elapsed() > timeout {
                let tail = |name: &str| self.log(name).lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "kube-apiserver not ready after {:?} ({}):\n--- kube-apiserver.err\n{}\n--- etcd.err\n{}",
                    start.elapsed(),
                    if exited.is_empty() { "all running".to_owned() } else { exited.join(", ") },
                    tail("kube-apiserver.err"),
                    tail("etcd.err")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a client certificate for `user` in `groups` (signed by the control plane's client
    /// CA) and a kubeconfig using it; returns the kubeconfig's path (`.crt`/`.key` beside it).
    pub fn kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let d = self.dir.path();
        let n = {
            let mut n = self.users.lock().unwrap();
            *n += 1;
            *n
        };
        let base = format!("user{n}");
        let subject = std::iter::once(format!("/CN={user}")).chain(groups.iter().map(|g| format!("/O={g}"))).collect::<String>();
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{base}.key"),
                "-out",
                &format!("{base}.csr"),
                "-subj",
                &subject,
            ],
            d,
        );
        std::fs::write(d.join(format!("{base}.ext")), "extendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{base}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{base}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{base}.ext"),
            ],
            d,
        );
        let path = d.join(format!("{base}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: testenv, cluster: {{server: '{}', certificate-authority: '{}'}}}}]\n\
                 users: [{{name: u, user: {{client-certificate: '{}', client-key: '{}'}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: testenv, user: u}}}}]\ncurrent-context: c\n",
                self.url,
                d.join("apiserver/apiserver.crt").display(),
                d.join(format!("{base}.crt")).display(),
                d.join(format!("{base}.key")).display()
            ),
        )
        .unwrap();
        path
    }

    /// A client acting as `user` in `groups`.
    pub async fn client(&self, user: &str, groups: &[&str]) -> kube::Client {
        let path = self.kubeconfig(user, groups);
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// A client in group `system:masters`.
    pub async fn admin(&self) -> kube::Client {
        self.client("admin", &["system:masters"]).await
    }

    /// The process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controller manager first, etcd last.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

/// One control plane for the tests of a group that use one at the same time; stopped when the
/// last of them drops it. Each group passes a `slot` of its own, as when it was a test binary
/// with its own control plane: the operator tests' operators act on the whole cluster, so
/// another group's objects there (a Database, a CSR for our signer) would be theirs too.
pub fn shared_control_plane(slot: &'static Mutex<Weak<ControlPlane>>) -> Arc<ControlPlane> {
    super::shared(slot, ControlPlane::start)
}

/// A fresh namespace for one test.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = format!("{prefix}-{}", rand_suffix());
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&Default::default(), &ns).await.unwrap();
    name
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", nanos ^ std::process::id())
}
