//! Certificates: the proxy's CA and the client identities it issues, a test database's server
//! certificate from a CA of its own, and a rustls client configuration for raw TLS to a proxy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis::pki::{Ca, ClientFiles};

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
