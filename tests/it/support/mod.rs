//! Test harness: real PostgreSQL (Debian packages) with TLS and an IAM-token-checking PAM
//! service, moto server for STS, and the proxy binary itself, all on 127.0.0.1 free ports
//! and stopped when the test ends.
#![allow(dead_code)]

use std::io::{BufRead, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use portcullis::pki::{Ca, ClientFiles};

pub mod counting_proxy;
pub mod control_plane;
pub mod mariadb;
pub mod operator_harness;

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

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    wait_for_addr("127.0.0.1", port, what, timeout)
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

/// The PAM helper that verifies RDS IAM tokens (built once from tests/support/rdstokencheck).
pub fn rdstokencheck() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = run_ok(Command::new("bash").arg(repo().join("tests/support/build-rdstokencheck.sh")));
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(text.lines().last().expect("build script prints the path").trim())
    })
    .clone()
}

/// The absolute path of the Python that has botocore (PAM runs helpers with an empty PATH).
pub fn python3() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = run_ok(Command::new("python3").args(["-c", "import sys, botocore; print(sys.executable)"]));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A PostgreSQL server like RDS: TLS only, IAM users log in with a token checked by PAM.
pub struct Postgres {
    /// The TCP port.
    pub port: u16,
    /// The scratch directory.
    pub dir: tempfile::TempDir,
    /// The CA that signs the server certificate (PEM file).
    pub ca_file: PathBuf,
    /// The `secretsDir` for proxies: `<dir>/secrets/upstream-ca/ca.crt`.
    pub secrets_dir: PathBuf,
    /// The PAM decision log.
    pub pam_log: PathBuf,
    pam_service: String,
    data: PathBuf,
    socket_dir: PathBuf,
}

/// The PostgreSQL binaries.
pub fn pg_bin(name: &str) -> PathBuf {
    for v in ["17", "16", "15"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{name}"));
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

impl Postgres {
    /// Starts a server whose PAM service accepts tokens signed with `keys` (access key → secret).
    pub fn start(keys: &[(&str, &str)]) -> Postgres {
        let dir = scratch();
        let root = dir.path().to_owned();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        run_ok(Command::new("chown").args(["postgres:postgres"]).arg(&socket_dir).arg(&data));
        run_ok(as_postgres(&pg_bin("initdb")).args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data).stdout(Stdio::null()));

        // Server certificate from a test CA, as RDS has from its regional CA.
        let UpstreamCerts { server_crt, server_key, ca_file, secrets_dir } = UpstreamCerts::write(&root, &data);
        run_ok(Command::new("chown").args(["postgres:postgres"]).arg(&server_crt).arg(&server_key));

        // The token checker, where the postgres user can run it.
        let port = free_port();
        let checker = TokenChecker::write(&root, keys);
        let pam_log = checker.log.clone();
        run_ok(Command::new("chown").args(["postgres:postgres"]).arg(&pam_log));
        let pam_service = format!("portcullis-test-{port}-{}", std::process::id());
        let pam_guard = PamService(pam_service.clone());
        std::fs::write(format!("/etc/pam.d/{pam_service}"), format!("{}account required pam_permit.so\n", checker.pam_line(port)))
            .expect("writing /etc/pam.d needs root: run the tests as root, as CI does");

        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhostssl all postgres 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 pam pamservice={pam_service}\nhost all all 127.0.0.1/32 reject\n"
            ),
        )
        .unwrap();
        let log = root.join("postgres.log");
        std::fs::write(&log, "").unwrap();
        run_ok(Command::new("chown").args(["postgres:postgres"]).arg(&log));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off -c max_connections=1200 -c shared_buffers=64MB",
            socket_dir.display()
        );
        run_ok(as_postgres(&pg_bin("pg_ctl")).args(["-w", "-t", "30", "-D"]).arg(&data).arg("-l").arg(&log).args(["-o", &options, "start"]).stdout(Stdio::null()));
        std::mem::forget(pam_guard); // from here on, Postgres's Drop removes it
        let pg = Postgres { port, dir, ca_file, secrets_dir, pam_log, pam_service, data, socket_dir };
        pg.sql("postgres", "CREATE ROLE app LOGIN; CREATE ROLE admin LOGIN; CREATE ROLE nobody LOGIN;");
        pg.sql("postgres", "CREATE DATABASE orders OWNER app;");
        pg
    }

    /// Runs SQL as the superuser over the Unix socket; returns unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = run_ok(
            Command::new("psql")
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The PAM log lines (one decision each).
    pub fn pam_decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.pam_log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl")).args(["-D"]).arg(&self.data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.pam_service));
    }
}

/// Removes a PAM service file if start-up fails before `Postgres` owns it.
struct PamService(String);

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.0));
    }
}

/// One PostgreSQL per test binary while any test uses it; stopped when the last user drops it.
pub fn shared_postgres() -> Arc<Postgres> {
    static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(Postgres::start(&[(ACCESS_KEY, SECRET_KEY)]));
    *slot = Arc::downgrade(&pg);
    pg
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

/// moto server for STS (and other AWS APIs).
pub struct Moto {
    /// The address it listens on (127.0.0.1, or the test node's bridge address).
    pub host: String,
    /// The port.
    pub port: u16,
    _proc: Proc,
}

impl Moto {
    /// Starts moto with auth off (turn it on with [`Moto::setup_assume_role`]).
    pub fn start() -> Moto {
        Moto::start_on("127.0.0.1")
    }

    /// Starts moto on `host` (the test node's bridge address, where pods reach it).
    pub fn start_on(host: &str) -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", host, "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "inf")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]')");
        let proc = Proc { child };
        wait_for_addr(host, port, "moto_server", Duration::from_secs(30));
        Moto { host: host.to_owned(), port, _proc: proc }
    }

    /// Creates the `proxy` user and the roles `PREFIX-writer` and `PREFIX-none` it may assume
    /// (tests/support/moto_dynamodb_setup.py), then turns auth on. Returns its JSON (keys, ARNs).
    pub fn setup_roles(&self, prefix: &str) -> serde_json::Value {
        let out = run_ok(Command::new("python3").arg(repo().join("tests/support/moto_dynamodb_setup.py")).args(["--endpoint", &self.url(), "--prefix", prefix]));
        serde_json::from_slice(&out.stdout).expect("moto_dynamodb_setup.py prints JSON")
    }

    /// A proxy's environment after [`Moto::setup_roles`]: the `proxy` user's keys (or `secret`
    /// instead of its secret), STS at moto.
    pub fn proxy_env(&self, setup: &serde_json::Value, secret: Option<&str>) -> Vec<(String, String)> {
        let mut env = static_key_env(setup["access_key"].as_str().unwrap(), secret.unwrap_or(setup["secret_key"].as_str().unwrap()));
        env.push(("AWS_ENDPOINT_URL_STS".into(), self.url()));
        env
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Creates an IAM user (the proxy's identity) allowed to assume a role whose trust policy
    /// requires `external_id`, then turns moto's auth on. Returns the JSON the script prints.
    pub fn setup_assume_role(&self, external_id: &str) -> serde_json::Value {
        let out = run_ok(
            Command::new("python3")
                .arg(repo().join("tests/support/moto_setup.py"))
                .args(["--endpoint", &self.url(), "--external-id", external_id]),
        );
        serde_json::from_slice(&out.stdout).expect("moto_setup.py prints JSON")
    }
}

/// A client identity issued by a proxy CA.
pub struct ClientIdentity {
    /// The files.
    pub files: ClientFiles,
}

/// The proxy's CA and server certificate.
pub struct ProxyPki {
    /// The CA.
    pub ca: Ca,
    /// Where the files are.
    pub dir: PathBuf,
}

impl ProxyPki {
    /// Creates a CA and server certificate under `dir`.
    pub fn new(dir: &Path) -> ProxyPki {
        let files = portcullis::pki::CaFiles::new(dir.join("proxy-ca"));
        let ca = files.init(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(86400), false).unwrap();
        ProxyPki { ca, dir: files.dir }
    }

    /// Issues a client certificate into `dir/name`.
    pub fn client(&self, name: &str, user: &str, groups: &[&str], route: Option<portcullis::authz::Route>, ttl: Duration) -> ClientIdentity {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let issued = self.ca.issue_client(user, &groups, route.as_ref(), ttl).unwrap();
        let files = ClientFiles::new(self.dir.parent().unwrap().join(name));
        files.write(&issued, self.ca.cert_pem()).unwrap();
        ClientIdentity { files }
    }
}

/// A database server the tests start, as a proxy's upstream.
pub trait TestDatabase {
    /// The `Database`'s `spec.protocol`.
    fn protocol(&self) -> &'static str;
    /// The TCP port on 127.0.0.1.
    fn port(&self) -> u16;
    /// The `secretsDir` holding `upstream-ca/ca.crt`.
    fn secrets_dir(&self) -> &Path;
}

impl TestDatabase for Postgres {
    fn protocol(&self) -> &'static str {
        "postgres"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }
}

impl TestDatabase for mariadb::Mariadb {
    fn protocol(&self) -> &'static str {
        "mysql"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }
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

impl Proxy {
    /// Writes a configuration serving `orders` (the test PostgreSQL) and starts the proxy.
    pub fn start(setup: ProxySetup<'_>, pki: &ProxyPki) -> Proxy {
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
                "listeners: [{{address: '127.0.0.1:{port}', database: orders}}]\ntls: {{certFile: {ca}/server.crt, keyFile: {ca}/server.key, clientCaFile: {ca}/ca.crt}}\nadmin: {{address: '127.0.0.1:{admin_port}'}}\naudit: {{stdout: true, file: {}}}\naws: {{allowedEndpoints: ['127.0.0.1']}}\nresources: [{}]\nsecretsDir: {}\nlimits: {{handshakeTimeout: 3s, connectTimeout: 3s}}\n",
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
            let events: Vec<serde_json::Value> = std::fs::read_to_string(&self.audit_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if events.len() != last.0 {
                last = (events.len(), Instant::now());
            }
            let quiet = last.1.elapsed() > Duration::from_millis(300);
            if (events.len() >= min && quiet) || start.elapsed() > Duration::from_secs(10) {
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

/// A minimal HTTP/1.0 GET against 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Runs `psql` with `args` after the connection string; returns the output.
pub fn psql(conninfo: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .arg("-X")
        .args(["-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(conninfo)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql")
}

/// stdout + stderr as one string.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Reads lines of a file that match `needle`.
pub fn grep(path: &Path, needle: &str) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.contains(needle)).collect())
        .unwrap_or_default()
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

/// A running `portcullis db proxy --tunnel`.
pub struct Tunnel {
    /// The local port.
    pub port: u16,
    /// The process.
    pub proc: Proc,
    /// Its standard error.
    pub log_file: PathBuf,
}

impl Tunnel {
    /// Starts a tunnel to the proxy on 127.0.0.1:`proxy_port` for `database` with `id`'s files.
    pub fn start(proxy_port: u16, database: &str, protocol: &str, id: &ClientIdentity, extra: &[&str]) -> Tunnel {
        let log_file = id.files.cert().with_file_name(format!("tunnel-{}.log", free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["db", "proxy", database, "--tunnel", "--port", "0", "--proxy", &format!("127.0.0.1:{proxy_port}"), "--protocol", protocol, "--server-name", "localhost"])
            .arg("--cert-dir")
            .arg(id.files.cert().parent().unwrap())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("start the tunnel");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let mut reader = std::io::BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        let proc = Proc { child };
        let port = line.trim().strip_prefix("listening on 127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            panic!("the tunnel did not start: {line:?}\n{}", std::fs::read_to_string(&log_file).unwrap_or_default())
        });
        // Keep draining stdout so the tunnel never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        Tunnel { port, proc, log_file }
    }
}

/// The audit events named `name` (`db.session.start`, …).
pub fn events_named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// A certificate route to the test Database `orders` as `db_user` (DynamoDB, DocumentDB: a role).
pub fn route_as(db_user: &str) -> Option<portcullis::authz::Route> {
    Some(portcullis::authz::Route { database: Some("orders".into()), db_user: Some(db_user.into()), db_name: None })
}

/// A rustls client configuration trusting the proxy's CA, with `id`'s certificate if given.
pub fn client_tls_config(pki: &ProxyPki, id: Option<&ClientIdentity>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match id {
        Some(id) => {
            let certs = CertificateDer::pem_file_iter(id.files.cert()).unwrap().map(|c| c.unwrap()).collect();
            builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(id.files.key()).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

/// A test database's TLS material: a server certificate for localhost/127.0.0.1 from a fresh
/// test CA (as RDS has from its regional CA), and that CA where a proxy's `secretsDir` expects it.
pub struct UpstreamCerts {
    /// The server certificate (PEM).
    pub server_crt: PathBuf,
    /// Its key (PEM, mode 0600).
    pub server_key: PathBuf,
    /// `<root>/secrets/upstream-ca/ca.crt`.
    pub ca_file: PathBuf,
    /// `<root>/secrets`.
    pub secrets_dir: PathBuf,
}

impl UpstreamCerts {
    /// Writes the server certificate and key into `cert_dir` and the CA under `root/secrets`.
    pub fn write(root: &Path, cert_dir: &Path) -> UpstreamCerts {
        let (ca, ca_files) = Ca::generate("test upstream CA").unwrap();
        let server = ca.issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(86400)).unwrap();
        let (server_crt, server_key) = (cert_dir.join("server.crt"), cert_dir.join("server.key"));
        std::fs::write(&server_crt, &server.cert_pem).unwrap();
        std::fs::write(&server_key, &server.key_pem).unwrap();
        std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secrets_dir = root.join("secrets");
        std::fs::create_dir_all(secrets_dir.join("upstream-ca")).unwrap();
        let ca_file = secrets_dir.join("upstream-ca/ca.crt");
        std::fs::write(&ca_file, &ca_files.cert_pem).unwrap();
        UpstreamCerts { server_crt, server_key, ca_file, secrets_dir }
    }
}

/// The IAM token checker set up for a PAM service: its binary copied under `root`, the keys it
/// accepts (access key → secret) and its decision log.
pub struct TokenChecker {
    /// The binary.
    pub bin: PathBuf,
    /// The PAM module that runs a command with the whole token on its stdin (pam_exec cuts it
    /// at 511 bytes, shorter than a token signed with temporary credentials).
    pub pam_module: PathBuf,
    /// `keys.json`.
    pub keys_file: PathBuf,
    /// One line per decision.
    pub log: PathBuf,
}

impl TokenChecker {
    /// Prepares the checker under `root`.
    pub fn write(root: &Path, keys: &[(&str, &str)]) -> TokenChecker {
        let bin = root.join("rdstokencheck");
        std::fs::copy(rdstokencheck(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pam_module = root.join("pam_tokenexec.so");
        std::fs::copy(format!("{}-pam_tokenexec.so", rdstokencheck().display()), &pam_module).unwrap();
        std::fs::set_permissions(&pam_module, std::fs::Permissions::from_mode(0o644)).unwrap();
        let keys_file = root.join("keys.json");
        let keys_json: serde_json::Map<String, serde_json::Value> = keys.iter().map(|(k, s)| (k.to_string(), serde_json::Value::from(*s))).collect();
        std::fs::write(&keys_file, serde_json::to_string(&keys_json).unwrap()).unwrap();
        std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = root.join("pam.log");
        std::fs::write(&log, "").unwrap();
        TokenChecker { bin, pam_module, keys_file, log }
    }

    /// The PAM `auth` line that runs the checker for tokens to 127.0.0.1:`port`.
    pub fn pam_line(&self, port: u16) -> String {
        self.exec_line(&format!("{} -keys {} -endpoint 127.0.0.1:{port} -region {REGION} -log {}", self.bin.display(), self.keys_file.display(), self.log.display()))
    }

    /// A PAM `auth` line that runs `command` (space-separated) with the whole token on stdin.
    pub fn exec_line(&self, command: &str) -> String {
        format!("auth required {} {command}\n", self.pam_module.display())
    }
}
