//! The integration tests' harness. Here what every group needs: the test AWS keys, scratch
//! directories, free ports, child processes stopped on drop, waiting, servers shared by the
//! tests running at once. One module per component: the test databases (postgres, mariadb and
//! the token checker behind their PAM service, pam), moto, certificates (pki), the proxy binary
//! (proxy), the Kubernetes control plane and the operator on it, the one-node cluster.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

pub mod audit_schema;
pub mod cluster;
pub mod control_plane;
pub mod counting_proxy;
pub mod mariadb;
pub mod moto;
pub mod operator_harness;
pub mod pam;
pub mod pki;
pub mod postgres;
pub mod proxy;

pub use moto::Moto;
pub use pki::{ClientIdentity, ProxyPki, UpstreamCerts, client_tls_config, route_as};
pub use postgres::{Postgres, psql, shared_postgres};
pub use proxy::{Proxy, ProxySetup, TestDatabase, Tunnel, events_named};

/// The static AWS keys the proxy signs with in most tests, and that PAM knows.
pub const ACCESS_KEY: &str = "AKIAPORTCULLISTEST01";
/// Its secret.
pub const SECRET_KEY: &str = "portcullis-test-secret-key-0123456789abcd";
/// The region of every test database.
pub const REGION: &str = "us-east-1";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Waits until `host:port` accepts TCP connections.
pub fn wait_for_addr(host: &str, port: u16, what: &str, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect((host, port)).is_err() {
        assert!(start.elapsed() < timeout, "{what} did not listen on {host}:{port} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// A scratch directory every user may traverse (PostgreSQL runs as `postgres`).
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("portcullis-test-").tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A child process killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server the tests running at once share: started by the first that asks, stopped when the
/// last one drops it (a later test starts a fresh one).
pub fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(it) = slot.upgrade() {
        return it;
    }
    let it = Arc::new(start());
    *slot = Arc::downgrade(&it);
    it
}

/// The node tests put a whole cluster on this machine (the bridge pcbr0, kubelet, containerd,
/// kube-proxy's nftables, pods) and take minutes; in their own test binary they never ran beside
/// other tests, and in this one they still do not: each holds this lock for writing, every
/// other test holds it for reading.
static MACHINE: RwLock<()> = RwLock::new(());

/// Every test but the node tests takes this first: it waits while a node test runs.
pub fn machine_shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// The node tests take this first: it waits until no other test runs, and keeps them out (and
/// the node tests take turns: one cluster at a time).
pub fn machine_exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// The default AWS environment: static keys, no profile, no IMDS.
pub fn static_key_env(access: &str, secret: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), access.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_REGION".into(), REGION.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
    ]
}

/// `cmd` without any AWS credential, profile, region or endpoint of the environment the tests
/// run in: the AWS CLI then has only what the test gives it.
pub fn without_aws_env(cmd: &mut Command) -> &mut Command {
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"] {
        cmd.env_remove(var);
    }
    cmd
}

/// A minimal HTTP/1.0 GET against 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// stdout + stderr as one string.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Polls `check` until it holds or `timeout` passes (then panics with `what`).
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// An AccessRole `developers`: group `dev` may use database `orders` as db user `app` on db name
/// `orders`.
pub const DEV_APP_ON_ORDERS: &str = "apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [app], dbNames: [orders]}
";

/// The port a child announced as its first stdout line, `listening on 127.0.0.1:PORT` (the
/// stand-ins' convention); panics naming `what` otherwise.
pub fn announced_port(child: &mut std::process::Child, what: &str) -> u16 {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut line).unwrap();
    line.trim().strip_prefix("listening on 127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{what}: {line:?}"))
}

/// The peak resident set size of process `pid` in KiB (`VmHWM`), for the benchmarks.
#[allow(dead_code)] // used by benches/, which include this harness
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or(0)
}
