//! The one-node cluster of scripts/cluster.sh (kubelet, containerd, kube-proxy and scheduler;
//! the bridge pcbr0, so one at a time on a machine) with the image packed from the tests' own
//! binary imported, and PostgreSQL on the bridge address for its pods: what the node tests
//! run on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, repo, run_ok, scratch, text};

/// The image the node runs, packed by scripts/pack-image.sh.
pub const IMAGE: &str = "localhost/portcullis:test";

/// A running one-node cluster; torn down (and checked for leftovers) on drop.
pub struct Cluster {
    /// Its scratch directory (`run/` inside holds its state and logs).
    pub dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    bin: PathBuf,
    /// The node's address on the bridge.
    pub node_ip: String,
}

impl Cluster {
    /// Brings a cluster up in a scratch directory and imports [`IMAGE`] into its containerd.
    pub fn up() -> Cluster {
        let dir = scratch();
        let started = Instant::now();
        let out = Command::new("bash").arg(repo().join("scripts/cluster.sh")).arg("up").arg(dir.path()).output().unwrap();
        if !out.status.success() {
            panic!("scripts/cluster.sh up failed:\n{}", text(&out));
        }
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_else(|| panic!("{k} in env")).to_owned();
        let c = Cluster { kubeconfig: var("KUBECONFIG").into(), bin: var("BIN").into(), node_ip: var("NODE_IP"), dir };
        let node_ready = started.elapsed();
        let mut pack = Command::new("bash");
        pack.arg(repo().join("scripts/pack-image.sh")).arg(IMAGE).stderr(Stdio::null());
        // The binary these tests were built with: the test command builds one profile only.
        pack.env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis"));
        let tar = run_ok(&mut pack);
        let tar = String::from_utf8_lossy(&tar.stdout).lines().last().unwrap().trim().to_owned();
        let packed = started.elapsed();
        run_ok(Command::new("ctr").args(["-a", &var("CONTAINERD_SOCK"), "-n", "k8s.io", "images", "import", &tar]));
        eprintln!("cluster: node Ready after {node_ready:?}, image packed after {packed:?}, imported after {:?}", started.elapsed());
        c
    }

    /// kubectl with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// kubectl ARGS, panicking with its output on failure; returns stdout.
    pub fn k(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run_ok(self.kubectl().args(args)).stdout).into_owned()
    }

    /// helm with the admin kubeconfig, run from the repository root.
    pub fn helm(&self) -> Command {
        let mut c = Command::new(self.bin.join("helm"));
        c.arg("--kubeconfig").arg(&self.kubeconfig).current_dir(repo());
        c
    }

    /// `kubectl apply` of `yaml`, panicking with its output on failure.
    pub fn apply(&self, yaml: &str) {
        let mut child = self.kubectl().args(["apply", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl apply failed: {}\n{yaml}", text(&out));
    }

    /// Waits until `kubectl ARGS` prints something containing `want`.
    pub fn wait_for(&self, what: &str, args: &[&str], want: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.kubectl().args(args).output().unwrap();
            let s = text(&out);
            if out.status.success() && s.contains(want) {
                return s;
            }
            if start.elapsed() > timeout {
                let pods = self.kubectl().args(["get", "pods", "-A", "-o", "wide"]).output().unwrap();
                let events = self.kubectl().args(["get", "events", "-A", "--sort-by=.lastTimestamp"]).output().unwrap();
                panic!("timed out after {timeout:?} waiting for {what}: last output {s}\npods:\n{}\nevents:\n{}", text(&pods), text(&events));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `kubectl ARGS` (a `get … -o name`) lists nothing; returns how long it took.
    pub fn wait_until_gone(&self, what: &str, args: &[&str], timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let left = self.k(args);
            if left.trim().is_empty() {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "left {what}: {left}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A kubeconfig for a user of the cluster's client CA.
    pub fn user(&self, name: &str, groups: &[&str]) -> PathBuf {
        let out = run_ok(Command::new("bash").arg(repo().join("scripts/cluster.sh")).arg("user").arg(self.dir.path()).arg(name).args(groups));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("bash").arg(repo().join("scripts/cluster.sh")).arg("down").arg(self.dir.path()).output().unwrap();
        if !out.status.success() && !std::thread::panicking() {
            panic!("tear-down left something behind:\n{}", text(&out));
        }
    }
}

/// PostgreSQL on the bridge address: TLS only, its `app` user logs in with an RDS IAM token
/// that PAM re-computes with the keys moto's STS handed out.
pub struct BridgePostgres {
    /// Its directory (data, upstream-ca/, pam.log, postgres.log).
    pub dir: PathBuf,
    /// The port on the bridge address.
    pub port: u16,
}

impl BridgePostgres {
    /// Starts it in `root/pg` on `ip`; it also accepts the keys moto at `moto` hands out.
    pub fn start(root: &Path, ip: &str, moto: &str) -> BridgePostgres {
        let dir = root.join("pg");
        let port = free_port();
        let script = format!(
            ". scripts/lib/upstream.sh && upstream_pg_start '{d}' {port} '{{}}' app && \
             upstream_pg_sql '{d}' {port} postgres 'CREATE DATABASE orders OWNER app' && \
             upstream_pg_sql '{d}' {port} orders \"CREATE TABLE items(id int); INSERT INTO items VALUES (42); GRANT ALL ON items TO app\"",
            d = dir.display()
        );
        run_ok(
            Command::new("bash")
                .args(["-c", &script])
                .current_dir(repo())
                .env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis"))
                .env("UPSTREAM_PG_ADDR", ip)
                .env("UPSTREAM_PG_MOTO", moto),
        );
        BridgePostgres { dir, port }
    }
}

impl BridgePostgres {
    /// What the token checker decided for each login.
    pub fn pam_log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let server = read("postgres.log");
        let tail: Vec<&str> = server.lines().rev().take(15).collect();
        format!("{}\npostgres.log (last lines):\n{}", read("pam.log"), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

impl Drop for BridgePostgres {
    fn drop(&mut self) {
        let _ =
            Command::new("bash").args(["-c", &format!(". scripts/lib/upstream.sh && upstream_pg_stop '{}'", self.dir.display())]).current_dir(repo()).status();
    }
}
