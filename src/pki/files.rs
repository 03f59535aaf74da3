//! Where `portcullis ca init` and `portcullis cert issue` keep their files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Ca, Issued, PkiError};

/// The files of a CA directory made by `portcullis ca init`.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl CaFiles {
    /// The CA directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The proxy's server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// The proxy's server key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Loads the CA.
    pub fn load(&self) -> Result<Ca, PkiError> {
        let cert = read(&self.ca_cert())?;
        let key = read(&self.ca_key())?;
        Ca::from_pem(&cert, &key, &self.dir.display().to_string())
    }

    /// Writes a new CA and a server certificate for `server_names`. Refuses to overwrite an
    /// existing CA unless `force`.
    pub fn init(&self, server_names: &[String], server_ttl: std::time::Duration, force: bool) -> Result<Ca, PkiError> {
        if self.ca_key().exists() && !force {
            return Err(PkiError::Io {
                action: "refusing to overwrite the existing CA (pass --force to replace it) at",
                path: self.ca_key().display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        fs::create_dir_all(&self.dir).map_err(|e| io("cannot create", &self.dir, e))?;
        let (ca, ca_files) = Ca::generate("Portcullis client CA")?;
        write_public(&self.ca_cert(), &ca_files.cert_pem)?;
        write_private(&self.ca_key(), &ca_files.key_pem)?;
        let server = ca.issue_server(server_names, server_ttl)?;
        write_public(&self.server_cert(), &server.cert_pem)?;
        write_private(&self.server_key(), &server.key_pem)?;
        Ok(ca)
    }
}

/// The files of a client identity made by `portcullis cert issue`, named the way `psql`
/// expects them as `sslcert`, `sslkey` and `sslrootcert`.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl ClientFiles {
    /// The client identity directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The client certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    /// The client key (mode 0600, as libpq demands).
    pub fn key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    /// The CA that signs the proxy's server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Writes an issued client certificate and the CA certificate.
    pub fn write(&self, issued: &Issued, ca_pem: &str) -> Result<(), PkiError> {
        fs::create_dir_all(&self.dir).map_err(|e| io("cannot create", &self.dir, e))?;
        write_public(&self.cert(), &issued.cert_pem)?;
        write_private(&self.key(), &issued.key_pem)?;
        write_public(&self.ca(), ca_pem)
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io { action, path: path.display().to_string(), source }
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| io("cannot read", path, e))
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|e| io("cannot write", path, e))
}

/// Writes a file readable only by its owner (mode 0600), replacing any earlier one.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| io("cannot write", path, e))?;
    file.write_all(contents.as_bytes()).map_err(|e| io("cannot write", path, e))
}
