//! Running the operator against the test control plane: install the CRDs and `deploy/` RBAC,
//! start `portcullis operator` as its ServiceAccount, read its metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Api, Client, ResourceExt};
use portcullis::crd::Database;
use serde::Deserialize;

use super::control_plane::ControlPlane;
use super::{ACCESS_KEY, Proc, SECRET_KEY, eventually, free_port, http_get, repo, static_key_env};

/// The operator's ServiceAccount user name (as in deploy/operator.yaml).
pub const OPERATOR_USER: &str = "system:serviceaccount:portcullis-system:portcullis-operator";
/// Its groups.
pub const OPERATOR_GROUPS: &[&str] = &["system:serviceaccounts", "system:serviceaccounts:portcullis-system"];

/// Server-side applies every document of a YAML stream as the admin.
pub async fn apply_yaml(client: &Client, text: &str) {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value).unwrap();
        let gvk = GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match (caps.scope, obj.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        api.patch(&obj.name_any(), &PatchParams::apply("portcullis-test").force(), &Patch::Apply(&obj)).await.unwrap();
    }
}

/// CRDs and the install RBAC from the repository, applied once per control plane (each test
/// may get a fresh one: the shared control plane stops when no test holds it).
pub async fn install(cp: &ControlPlane) -> Client {
    static DONE: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);
    let admin = cp.admin().await;
    let mut done = DONE.lock().await;
    if done.as_deref() != Some(cp.url.as_str()) {
        for dir in ["crds", "deploy"] {
            let mut files: Vec<_> = std::fs::read_dir(repo().join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files {
                apply_yaml(&admin, &std::fs::read_to_string(f).unwrap()).await;
            }
        }
        let dbs: Api<Database> = Api::all(admin.clone());
        eventually("Database CRD served", Duration::from_secs(30), || async { dbs.list(&ListParams::default()).await.is_ok() }).await;
        *done = Some(cp.url.clone());
    }
    admin
}

/// A running operator process, acting as its ServiceAccount.
pub struct Operator {
    /// The admin port (/metrics, /readyz).
    pub admin_port: u16,
    /// Standard error.
    pub log: PathBuf,
    /// The process.
    pub proc: Option<Proc>,
}

impl Operator {
    /// Starts `portcullis operator` (PORTCULLIS_BIN overrides the binary) and waits for /readyz.
    pub fn start(cp: &ControlPlane, dir: &Path, aws_endpoint: &str, name: &str) -> Operator {
        Operator::start_with_env(cp, dir, aws_endpoint, name, static_key_env(ACCESS_KEY, SECRET_KEY))
    }

    /// [`Operator::start`] with this AWS environment (keys of a moto user, extra endpoints).
    pub fn start_with_env(cp: &ControlPlane, dir: &Path, aws_endpoint: &str, name: &str, aws_env: Vec<(String, String)>) -> Operator {
        let op = Operator::spawn_with_env(cp, dir, aws_endpoint, name, aws_env);
        let start = Instant::now();
        while !(std::net::TcpStream::connect(("127.0.0.1", op.admin_port)).is_ok() && http_get(op.admin_port, "/readyz").contains("200 OK")) {
            assert!(start.elapsed() < Duration::from_secs(60), "the operator did not become ready:\n{}", op.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        op
    }

    /// Starts `portcullis operator` as its ServiceAccount without waiting (a standby is never ready).
    pub fn spawn(cp: &ControlPlane, dir: &Path, aws_endpoint: &str, name: &str) -> Operator {
        Operator::spawn_with_env(cp, dir, aws_endpoint, name, static_key_env(ACCESS_KEY, SECRET_KEY))
    }

    fn spawn_with_env(cp: &ControlPlane, dir: &Path, aws_endpoint: &str, name: &str, aws_env: Vec<(String, String)>) -> Operator {
        let kubeconfig = cp.kubeconfig(OPERATOR_USER, OPERATOR_GROUPS);
        let admin_port = free_port();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(std::env::var_os("PORTCULLIS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullis").into()));
        cmd.args(["operator", "--identity", name, "--proxy-image", "portcullis:test", "--allowed-endpoint", "localhost", "--allowed-endpoint", "127.0.0.1"])
            .args(["--admin-address", &format!("127.0.0.1:{admin_port}"), "--aws-recheck", "2s", "--lease-duration", "6s"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .env("PORTCULLIS_LOG", std::env::var("TEST_OPERATOR_LOG").unwrap_or_else(|_| "info,portcullis=debug".into()))
            .env("AWS_ENDPOINT_URL", aws_endpoint)
            .envs(aws_env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Operator { admin_port, log, proc: Some(Proc { child: cmd.spawn().expect("start the operator") }) }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sum of every sample of metrics starting with `prefix`.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        http_get(self.admin_port, "/metrics").lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// Stops the process (SIGTERM, waits).
    pub fn stop(&mut self) {
        self.proc.take();
    }
}

/// Where the operator's AWS calls go in tests that make none (no RDS host names): nowhere.
pub const NO_AWS: &str = "http://127.0.0.1:9";

/// A proxy pod run the way a kubelet would run the operator's Deployment, locally: the
/// ConfigMap and Secrets mounted under a root, the paths mapped, the environment resolved,
/// the container's command run as the pod's ServiceAccount, listening on 127.0.0.1:`port`.
pub struct LocalPod {
    /// The proxy's log.
    pub log_file: PathBuf,
    _proc: Proc,
}

impl LocalPod {
    /// Starts the pod of Database `ns/name` (its Deployment must exist) with the test's static
    /// AWS keys, and waits until it is ready.
    pub async fn start(cp: &ControlPlane, admin: &Client, ns: &str, name: &str, dir: &Path, port: u16) -> LocalPod {
        Self::start_with_aws(cp, admin, ns, name, dir, port, static_key_env(ACCESS_KEY, SECRET_KEY)).await
    }

    /// [`LocalPod::start`] with `aws_env` as what IRSA would give the pod.
    pub async fn start_with_aws(cp: &ControlPlane, admin: &Client, ns: &str, name: &str, dir: &Path, port: u16, aws_env: Vec<(String, String)>) -> LocalPod {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let deps: Api<Deployment> = Api::namespaced(admin.clone(), ns);
        let deployment = format!("portcullis-{name}");
        eventually("the Deployment", Duration::from_secs(30), || async { deps.get_opt(&deployment).await.unwrap().is_some() }).await;
        let dep = deps.get(&deployment).await.unwrap();
        let pod = dep.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let root = dir.join(format!("pod-{name}"));
        let mut volumes = std::collections::BTreeMap::new();
        for v in pod.volumes.as_ref().unwrap() {
            volumes.insert(v.name.clone(), v.clone());
        }
        for m in container.volume_mounts.as_ref().unwrap() {
            let target = root.join(m.mount_path.trim_start_matches('/'));
            std::fs::create_dir_all(&target).unwrap();
            let v = &volumes[&m.name];
            let files: std::collections::BTreeMap<String, Vec<u8>> = if let Some(cm) = &v.config_map {
                let cm = Api::<ConfigMap>::namespaced(admin.clone(), ns).get(&cm.name).await.unwrap();
                cm.data.unwrap().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
            } else if let Some(s) = &v.secret {
                let s = Api::<Secret>::namespaced(admin.clone(), ns).get(s.secret_name.as_ref().unwrap()).await.unwrap();
                s.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect()
            } else {
                std::collections::BTreeMap::new()
            };
            for (k, bytes) in files {
                std::fs::write(target.join(k), bytes).unwrap();
            }
        }
        let container_port = container.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("db")).unwrap().container_port;
        let listen = format!("0.0.0.0:{container_port}");
        let admin_port = free_port();
        let root_s = root.display().to_string();
        let config_path = root.join("etc/portcullis/config/proxy.yaml");
        let config = std::fs::read_to_string(&config_path).unwrap();
        assert!(config.contains(&listen) && config.contains("/etc/portcullis/tls/tls.crt"), "{config}");
        let config = config
            .replace("/etc/portcullis", &format!("{root_s}/etc/portcullis"))
            .replace(&listen, &format!("127.0.0.1:{port}"))
            .replace("0.0.0.0:9090", &format!("127.0.0.1:{admin_port}"));
        std::fs::write(&config_path, format!("{config}limits: {{handshakeTimeout: 3s, connectTimeout: 3s}}\n")).unwrap();
        let args: Vec<String> =
            container.args.clone().unwrap().into_iter().map(|a| a.replace("/etc/portcullis", &format!("{root_s}/etc/portcullis"))).collect();
        let sa = pod.service_account_name.clone().unwrap();
        let proxy_kubeconfig = cp.kubeconfig(&format!("system:serviceaccount:{ns}:{sa}"), &["system:serviceaccounts", &format!("system:serviceaccounts:{ns}")]);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(&args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for e in container.env.as_ref().unwrap() {
            let value = match (&e.value, e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).map(|f| f.field_path.as_str())) {
                (Some(v), _) => v.clone(),
                (None, Some("metadata.name")) => format!("{deployment}-local"),
                (None, Some("metadata.namespace")) => ns.to_owned(),
                other => panic!("unexpected env source {other:?}"),
            };
            cmd.env(&e.name, value);
        }
        // What the cluster adds: the API server (in-cluster config) and the IRSA webhook's AWS
        // identity; here a kubeconfig for the proxy's ServiceAccount and the test keys.
        cmd.env("KUBECONFIG", &proxy_kubeconfig).envs(aws_env);
        let log_file = dir.join(format!("proxy-{name}.log"));
        cmd.stdout(std::fs::File::create(dir.join(format!("proxy-{name}.stdout"))).unwrap()).stderr(std::fs::File::create(&log_file).unwrap());
        let pod = LocalPod { log_file, _proc: Proc { child: cmd.spawn().unwrap() } };
        let start = Instant::now();
        while !(std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok() && http_get(admin_port, "/readyz").contains("200 OK")) {
            assert!(start.elapsed() < Duration::from_secs(30), "the proxy did not start:\n{}", pod.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        pod
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}
