//! The proxy binary as the tests run it: a configuration serving the Database `orders` in
//! front of a test database, the running process (audit trail, metrics, log, psql connection
//! strings), and `portcullis db proxy --tunnel` in front of it.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ClientIdentity, Proc, ProxyPki, REGION, free_port, http_get};

/// A database server the tests start, as a proxy's upstream.
pub trait TestDatabase {
    /// The `Database`'s `spec.protocol`.
    fn protocol(&self) -> &'static str;
    /// The TCP port on 127.0.0.1.
    fn port(&self) -> u16;
    /// The `secretsDir` holding `upstream-ca/ca.crt`.
    fn secrets_dir(&self) -> &Path;
}

/// A running proxy process.
pub struct Proxy {
    /// The PostgreSQL listener port.
    pub port: u16,
    /// The admin port.
    pub admin_port: u16,
    /// The audit file.
    pub audit_file: PathBuf,
    /// Standard error (the log).
    pub log_file: PathBuf,
    /// Standard output.
    pub stdout_file: PathBuf,
    /// The process.
    pub proc: Proc,
}

/// What a proxy test needs to write a configuration.
pub struct ProxySetup<'a> {
    /// Scratch directory for config, audit and logs.
    pub dir: &'a Path,
    /// The upstream.
    pub db: &'a dyn TestDatabase,
    /// Extra YAML appended to the Database's `spec.aws` (indented 4 spaces).
    pub aws_extra: &'a str,
    /// The AccessRoles (YAML documents).
    pub roles: &'a str,
    /// Environment for the proxy process.
    pub env: Vec<(String, String)>,
    /// Log level.
    pub log_level: &'a str,
    /// The Database's endpoint; the test PostgreSQL when `None`.
    pub endpoint: Option<String>,
}

impl Proxy {
    /// Writes a configuration serving `orders` (the test PostgreSQL) and starts the proxy.
    pub fn start(setup: ProxySetup<'_>, pki: &ProxyPki) -> Proxy {
        Proxy::start_with_audit(setup, pki, "")
    }

    /// [`Proxy::start`] with more `audit` settings (`, refusalBurst: 3`).
    pub fn start_with_audit(setup: ProxySetup<'_>, pki: &ProxyPki, audit_extra: &str) -> Proxy {
        Proxy::start_with_extra(setup, pki, audit_extra, "")
    }

    /// [`Proxy::start`] with more `audit` and `limits` settings (`, drainTimeout: 2s`).
    pub fn start_with_extra(setup: ProxySetup<'_>, pki: &ProxyPki, audit_extra: &str, limits_extra: &str) -> Proxy {
        let dir = setup.dir;
        let (port, admin_port) = (free_port(), free_port());
        let manifests = dir.join("manifests.yaml");
        std::fs::write(
            &manifests,
            format!(
                "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: orders, labels: {{env: test}}}}\nspec:\n  protocol: {}\n  endpoint: {}\n  aws:\n    region: {REGION}\n{}\n  tls: {{mode: verify-full, caSecretRef: {{name: upstream-ca}}}}\n---\n{}",
                setup.db.protocol(),
                setup.endpoint.clone().unwrap_or_else(|| format!("127.0.0.1:{}", setup.db.port())),
                setup.aws_extra,
                setup.roles
            ),
        )
        .unwrap();
        let audit_file = dir.join("audit.jsonl");
        let config = dir.join("proxy.yaml");
        std::fs::write(
            &config,
            format!(
                "listeners: [{{address: '127.0.0.1:{port}', database: orders}}]\ntls: {{certFile: {ca}/server.crt, keyFile: {ca}/server.key, clientCaFile: {ca}/ca.crt}}\nadmin: {{address: '127.0.0.1:{admin_port}'}}\naudit: {{stdout: true, file: {}{audit_extra}}}\naws: {{allowedEndpoints: ['127.0.0.1']}}\nresources: [{}]\nsecretsDir: {}\nlimits: {{handshakeTimeout: 3s, connectTimeout: 3s{limits_extra}}}\n",
                audit_file.display(),
                manifests.display(),
                setup.db.secrets_dir().display(),
                ca = pki.dir.display()
            ),
        )
        .unwrap();
        let log_file = dir.join("proxy.log");
        let stdout_file = dir.join("proxy.stdout");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(["--log-level", setup.log_level, "proxy", "--config"]).arg(&config);
        cmd.env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        cmd.stdout(std::fs::File::create(&stdout_file).unwrap()).stderr(std::fs::File::create(&log_file).unwrap());
        let child = cmd.spawn().expect("start the proxy");
        let proc = Proc { child };
        let proxy = Proxy { port, admin_port, audit_file, log_file, stdout_file, proc };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                panic!("the proxy did not start:\n{}", proxy.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        proxy
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Audit events so far: at least `min` of them (waiting up to 10 s), and no more arriving.
    pub fn audit(&self, min: usize) -> Vec<serde_json::Value> {
        // Wait for `min` events, then until the file has been quiet for a moment: a client that
        // has exited may still have its session's last events in flight, and `min` is a floor.
        let start = Instant::now();
        let mut last = (0usize, Instant::now());
        loop {
            let events: Vec<serde_json::Value> =
                std::fs::read_to_string(&self.audit_file).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if events.len() != last.0 {
                last = (events.len(), Instant::now());
            }
            let quiet = last.1.elapsed() > Duration::from_millis(300);
            if (events.len() >= min && quiet) || start.elapsed() > Duration::from_secs(10) {
                // Every event the tests see matches docs/audit.md.
                for event in &events {
                    if let Err(e) = super::audit_schema::check(event) {
                        panic!(
                            "an audit event does not match docs/audit.md: {e}
{event}"
                        );
                    }
                }
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
    }

    /// A libpq connection string through the proxy.
    pub fn conninfo(&self, id: &ClientIdentity, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={db} sslmode=verify-full sslrootcert={} sslcert={} sslkey={} connect_timeout=10 gssencmode=disable",
            self.port,
            id.files.ca().display(),
            id.files.cert().display(),
            id.files.key().display()
        )
    }
}

/// The audit events named `name` (`db.session.start`, …).
pub fn events_named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// A running `portcullis db proxy --tunnel`.
pub struct Tunnel {
    /// The local port.
    pub port: u16,
    /// Its standard error.
    pub log_file: PathBuf,
    /// Its HOME (and `aws-config` there, its AWS_CONFIG_FILE).
    pub home: PathBuf,
    /// The process, stopped on drop.
    _proc: Proc,
}

impl Tunnel {
    /// Starts a tunnel to the proxy on 127.0.0.1:`proxy_port` for `database` with `id`'s files.
    pub fn start(proxy_port: u16, database: &str, protocol: &str, id: &ClientIdentity, extra: &[&str]) -> Tunnel {
        let log_file = id.files.cert().with_file_name(format!("tunnel-{}.log", free_port()));
        // Its own home: the tunnel records its port under ~/.portcullis/tunnels and writes AWS
        // profiles to $AWS_CONFIG_FILE.
        let home = id.files.cert().with_file_name(format!("home-{}", free_port()));
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "db",
                "proxy",
                database,
                "--tunnel",
                "--port",
                "0",
                "--proxy",
                &format!("127.0.0.1:{proxy_port}"),
                "--protocol",
                protocol,
                "--server-name",
                "localhost",
            ])
            .arg("--cert-dir")
            .arg(id.files.cert().parent().unwrap())
            .args(extra)
            .env("HOME", &home)
            .env("AWS_CONFIG_FILE", home.join("aws-config"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("start the tunnel");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let mut reader = std::io::BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        let proc = Proc { child };
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the tunnel did not start: {line:?}\n{}", std::fs::read_to_string(&log_file).unwrap_or_default()));
        // Keep draining stdout so the tunnel never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        Tunnel { port, log_file, home, _proc: proc }
    }
}
