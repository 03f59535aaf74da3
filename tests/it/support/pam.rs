//! The IAM token check behind a test database's PAM service: tests/support/rdstokencheck
//! re-computes each token's SigV4 signature with the keys it knows, run by the pam_tokenexec
//! module (tests/support/pam_tokenexec), one decision per line in a log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{REGION, repo, run_ok};

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

/// Removes a PAM service file if start-up fails before the database owns it.
pub struct PamService(pub String);

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.0));
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
        self.exec_line(&format!(
            "{} -keys {} -endpoint 127.0.0.1:{port} -region {REGION} -log {}",
            self.bin.display(),
            self.keys_file.display(),
            self.log.display()
        ))
    }

    /// A PAM `auth` line that runs `command` (space-separated) with the whole token on stdin.
    pub fn exec_line(&self, command: &str) -> String {
        format!("auth required {} {command}\n", self.pam_module.display())
    }
}
