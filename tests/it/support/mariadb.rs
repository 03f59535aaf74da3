//! A MariaDB server (Debian packages) like RDS for MySQL with IAM auth: TLS only, IAM users log in through PAM with the cleartext plugin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::pam::{PamService, TokenChecker, python3};
use super::{ACCESS_KEY, REGION, SECRET_KEY, TestDatabase, UpstreamCerts, free_port, repo, run_ok, scratch, shared};

/// The server binary.
const MARIADBD: &str = "/usr/sbin/mariadbd";

/// A MariaDB server like RDS for MySQL: `require_secure_transport=ON`, and IAM users
/// (`IDENTIFIED VIA pam`) whose token PAM checks. With `pam_use_cleartext_plugin=ON` the
/// server answers their handshake with an AuthSwitchRequest to `mysql_clear_password`.
pub struct Mariadb {
    /// The TCP port (on 127.0.0.1).
    pub port: u16,
    /// The `secretsDir` for proxies: `<dir>/secrets/upstream-ca/ca.crt`.
    pub secrets_dir: PathBuf,
    /// The PAM decision log.
    pub pam_log: PathBuf,
    /// botocore's decisions on the same tokens.
    pub botocore_log: PathBuf,
    /// The Unix socket (root logs in over it by `unix_socket` auth).
    pub socket: PathBuf,
    pam_service: String,
    child: Child,
    error_log: PathBuf,
    /// The scratch directory (data, certificates, logs), removed after the server stops.
    _dir: tempfile::TempDir,
}

impl Mariadb {
    /// Starts a server whose PAM service accepts tokens signed with `keys` (access key → secret).
    pub fn start(keys: &[(&str, &str)]) -> Mariadb {
        let dir = scratch();
        let root = dir.path().to_owned();
        let data = root.join("data");
        let socket = root.join("mariadb.sock");
        let pid_file = root.join("mariadb.pid");
        let error_log = root.join("mariadb.log");
        // Small and quick; no io_uring/libaio (a container's seccomp may refuse them).
        let tuning = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=64M", "--innodb-use-native-aio=0"];
        run_ok(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve"])
                .args(tuning)
                .stdin(Stdio::null()),
        );

        // Server certificate from a test CA, as RDS has from its regional CA.
        let UpstreamCerts { server_crt, server_key, ca_file, secrets_dir } = UpstreamCerts::write(&root, &root);

        // The token checker, run by pam_tokenexec under auth_pam_tool (as root).
        let port = free_port();
        let checker = TokenChecker::write(&root, keys);
        let (keys_file, pam_log) = (checker.keys_file.clone(), checker.log.clone());
        // Every token is also checked by botocore's own SigV4 code (a second, independent check).
        let botocore_log = root.join("botocore.log");
        std::fs::write(&botocore_log, "").unwrap();
        let pam_service = format!("portcullis-test-{port}-{}", std::process::id());
        let pam_guard = PamService(pam_service.clone());
        std::fs::write(
            format!("/etc/pam.d/{pam_service}"),
            format!(
                "{}{}account required pam_permit.so\n",
                checker.pam_line(port),
                checker.exec_line(&format!(
                    "{} {} --pam --keys {} --host 127.0.0.1 --port {port} --region {REGION} --log {}",
                    python3().display(),
                    repo().join("tests/support/verify_token_botocore.py").display(),
                    keys_file.display(),
                    botocore_log.display(),
                )),
            ),
        )
        .expect("writing /etc/pam.d needs root: run the tests as root, as CI does");

        // --no-defaults first: nothing from /etc/mysql. The data directory (under
        // /tmp/portcullis-test-*) is on the command line, so scripts/test.sh spots a leftover.
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-networking=0", "--user=root"])
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--log-error={}", error_log.display()))
            .arg(format!("--ssl-cert={}", server_crt.display()))
            .arg(format!("--ssl-key={}", server_key.display()))
            .arg(format!("--ssl-ca={}", ca_file.display()))
            .args([
                "--require-secure-transport=ON",
                "--plugin-load-add=auth_pam",
                "--pam-use-cleartext-plugin=ON",
                "--max-allowed-packet=64M",
                "--max-connections=1200",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
            ])
            .args(tuning)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MARIADBD}: {e}"));
        std::mem::forget(pam_guard); // from here on, Mariadb's Drop removes it (and stops the server)
        let mut db = Mariadb { port, secrets_dir, pam_log, botocore_log, socket, pam_service, child, error_log, _dir: dir };
        db.wait_ready(Duration::from_secs(30));

        let service = &db.pam_service;
        db.sql(&format!(
            "CREATE DATABASE orders; CREATE DATABASE inventory;
             CREATE TABLE orders.items (id INT PRIMARY KEY, name VARCHAR(100), payload LONGBLOB);
             INSERT INTO orders.items (id, name) VALUES (1, 'apple'), (2, 'pear'), (3, 'plum');
             CREATE USER 'app'@'%' IDENTIFIED VIA pam USING '{service}' REQUIRE SSL;
             GRANT ALL ON orders.* TO 'app'@'%'; GRANT ALL ON inventory.* TO 'app'@'%';
             CREATE USER 'admin'@'%' IDENTIFIED VIA pam USING '{service}' REQUIRE SSL;
             GRANT ALL ON *.* TO 'admin'@'%';
             CREATE USER 'pwuser'@'%' IDENTIFIED BY 'secret-pw' REQUIRE SSL;
             GRANT ALL ON orders.* TO 'pwuser'@'%';"
        ));
        db
    }

    /// Polls `select 1` over the socket until the server answers; panics with the error log
    /// when it exits or `timeout` passes (Drop then stops it and removes the PAM service).
    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let ok = self.client().args(["-e", "select 1"]).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mariadbd exited ({status}) during start-up:\n{}", self.error_log());
            }
            if start.elapsed() > timeout {
                panic!("mariadbd did not accept connections on {} within {timeout:?}:\n{}", self.socket.display(), self.error_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `mariadb` as root over the Unix socket, batch mode, no column names.
    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults").arg("-S").arg(&self.socket).args(["-u", "root", "--batch", "--skip-column-names"]).stdin(Stdio::null());
        c
    }

    /// Runs SQL as root over the Unix socket; returns the trimmed output (tab-separated rows).
    pub fn sql(&self, sql: &str) -> String {
        let out = run_ok(self.client().args(["-e", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The PAM log lines (one decision each).
    pub fn pam_decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.pam_log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// botocore's decision lines.
    pub fn botocore_decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.botocore_log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// The server's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // The data is scratch: no clean shutdown needed (like pg_ctl -m immediate).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.pam_service));
    }
}

impl TestDatabase for Mariadb {
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

/// One MariaDB for all the tests using one at the same time (each through a proxy of its own);
/// stopped when the last of them drops it.
pub fn shared_mariadb() -> Arc<Mariadb> {
    static SHARED: Mutex<Weak<Mariadb>> = Mutex::new(Weak::new());
    shared(&SHARED, || Mariadb::start(&[(ACCESS_KEY, SECRET_KEY)]))
}
