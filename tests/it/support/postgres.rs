//! A PostgreSQL server (Debian packages) like RDS: TLS only, IAM users log in with a token
//! checked through PAM; one shared by the tests running at once; and psql as the client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};

use super::pam::{PamService, TokenChecker};
use super::{ACCESS_KEY, SECRET_KEY, TestDatabase, UpstreamCerts, free_port, run_ok, scratch, shared};

/// A PostgreSQL server like RDS: TLS only, IAM users log in with a token checked by PAM.
pub struct Postgres {
    /// The TCP port.
    pub port: u16,
    /// The CA that signs the server certificate (PEM file).
    pub ca_file: PathBuf,
    /// The `secretsDir` for proxies: `<dir>/secrets/upstream-ca/ca.crt`.
    pub secrets_dir: PathBuf,
    /// The PAM decision log.
    pub pam_log: PathBuf,
    pam_service: String,
    data: PathBuf,
    socket_dir: PathBuf,
    /// The scratch directory (data, certificates, logs), removed after the server stops.
    _dir: tempfile::TempDir,
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
        run_ok(
            as_postgres(&pg_bin("pg_ctl")).args(["-w", "-t", "30", "-D"]).arg(&data).arg("-l").arg(&log).args(["-o", &options, "start"]).stdout(Stdio::null()),
        );
        std::mem::forget(pam_guard); // from here on, Postgres's Drop removes it
        let pg = Postgres { port, ca_file, secrets_dir, pam_log, pam_service, data, socket_dir, _dir: dir };
        pg.sql("postgres", "CREATE ROLE app LOGIN; CREATE ROLE admin LOGIN; CREATE ROLE nobody LOGIN;");
        pg.sql("postgres", "CREATE DATABASE orders OWNER app;");
        pg
    }

    /// Runs SQL as the superuser over the Unix socket; returns unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = run_ok(Command::new("psql").args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"]).arg(&self.socket_dir).args([
            "-p",
            &self.port.to_string(),
            "-d",
            db,
            "-c",
            sql,
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The PAM log lines (one decision each).
    pub fn pam_decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.pam_log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            as_postgres(&pg_bin("pg_ctl")).args(["-D"]).arg(&self.data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.pam_service));
    }
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

/// One PostgreSQL for all the tests using one at the same time (each through a proxy of its
/// own); stopped when the last of them drops it.
pub fn shared_postgres() -> Arc<Postgres> {
    static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    shared(&SHARED, || Postgres::start(&[(ACCESS_KEY, SECRET_KEY)]))
}

/// Runs `psql` with `args` after the connection string; returns the output.
pub fn psql(conninfo: &str, args: &[&str]) -> Output {
    Command::new("psql").arg("-X").args(["-A", "-t", "-v", "ON_ERROR_STOP=1"]).arg(conninfo).args(args).env("PGCONNECT_TIMEOUT", "10").output().expect("psql")
}
