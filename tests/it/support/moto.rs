//! moto server as AWS: STS (and IAM, RDS, DynamoDB) on a free port, with the scripts that
//! create its users and roles and turn its auth on.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_port, repo, run_ok, static_key_env, wait_for_addr};

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
        let out =
            run_ok(Command::new("python3").arg(repo().join("tests/support/moto_dynamodb_setup.py")).args(["--endpoint", &self.url(), "--prefix", prefix]));
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
        let out =
            run_ok(Command::new("python3").arg(repo().join("tests/support/moto_setup.py")).args(["--endpoint", &self.url(), "--external-id", external_id]));
        serde_json::from_slice(&out.stdout).expect("moto_setup.py prints JSON")
    }
}
