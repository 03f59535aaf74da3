//! TLS on both legs: the client-facing server config (client certificates are verified after
//! the handshake, so a bad one gets a protocol error message instead of a bare alert) and the
//! upstream client configs (`verify-full` or `verify-ca`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::authz::{Identity, identity_from_certificate};
use crate::crd::v1alpha1::UpstreamTlsMode;

/// A client's connection after the TLS handshake, as the proxy serves it.
pub type ClientTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
/// The proxy's TLS connection to a database.
pub type UpstreamStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Errors of TLS set-up and client certificate checks.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Pem { what: &'static str, path: String, reason: String },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration")]
    Config(#[from] rustls::Error),
    /// The verifier could not be built.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Why a client certificate was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    /// The client sent none.
    #[error(
        "a client certificate is required: present client.crt and client.key from `portcullis db login` (or `portcullis cert issue`) with your client's TLS options, or let `portcullis db connect` or the local tunnel `portcullis db proxy --tunnel` do it"
    )]
    Missing,
    /// It has expired.
    #[error(
        "your client certificate has expired: get a new one with `portcullis db login` (or `portcullis cert issue`); `portcullis db connect` renews it by itself"
    )]
    Expired,
    /// It is not yet valid.
    #[error("your client certificate is not valid yet: check the clock of the machine that issued it")]
    NotYetValid,
    /// It was not signed by the proxy's client CA.
    #[error("your client certificate was not issued by this proxy's client CA")]
    UnknownIssuer,
    /// Any other verification failure.
    #[error("your client certificate is not acceptable: {0}")]
    Invalid(String),
}

/// Loads all certificates of a PEM file.
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem { what, path: path.display().to_string(), reason };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds a root store from PEM certificates.
pub fn root_store(certs: &[CertificateDer<'static>], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| TlsError::Pem { what: "unusable CA certificate in", path: path.display().to_string(), reason: e.to_string() })?;
    }
    Ok(roots)
}

/// The client-facing TLS configuration and the verifier used after the handshake.
pub struct ServerTls {
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// Builds the server TLS from the proxy's certificate, key and client CA files.
    pub fn load(cert_file: &Path, key_file: &Path, client_ca_file: &Path, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let chain = load_certs(cert_file, "cannot read the server certificate")?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Pem {
            what: "cannot read the server key",
            path: key_file.display().to_string(),
            reason: e.to_string(),
        })?;
        let ca = load_certs(client_ca_file, "cannot read the client CA")?;
        let roots = Arc::new(root_store(&ca, client_ca_file)?);
        let verifier = WebPkiClientVerifier::builder(roots).build()?;
        let deferred = Arc::new(DeferredClientVerifier { inner: verifier.clone() });
        let mut config = rustls::ServerConfig::builder().with_client_cert_verifier(deferred).with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self { config: Arc::new(config), verifier })
    }

    /// Verifies the client's certificate chain (as presented in the handshake) and reads its
    /// identity.
    pub fn verify_client(&self, chain: Option<&[CertificateDer<'static>]>) -> Result<Identity, ClientCertError> {
        let chain = chain.filter(|c| !c.is_empty()).ok_or(ClientCertError::Missing)?;
        let (end_entity, intermediates) = chain.split_first().ok_or(ClientCertError::Missing)?;
        self.verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).map_err(|e| match e {
            rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => ClientCertError::Expired,
            rustls::Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => ClientCertError::NotYetValid,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => ClientCertError::UnknownIssuer,
            other => ClientCertError::Invalid(other.to_string()),
        })?;
        identity_from_certificate(end_entity).map_err(|e| ClientCertError::Invalid(e.to_string()))
    }
}

/// Requests a client certificate and checks that the client holds its key, but leaves the
/// chain verification to [`ServerTls::verify_client`] after the handshake.
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The verifier of an upstream database's certificate: the CA bundle (or the system trust
/// store) and, for `verify-full`, the host name.
pub fn upstream_verifier(ca: Option<(&[CertificateDer<'static>], &Path)>, mode: UpstreamTlsMode) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let roots = match ca {
        Some((certs, path)) => root_store(certs, path)?,
        None => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let inner = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(format!("no usable CA certificate: {e}"))))?;
    Ok(match mode {
        UpstreamTlsMode::VerifyFull => inner,
        UpstreamTlsMode::VerifyCa => Arc::new(IgnoreHostName { inner }),
    })
}

/// Builds the TLS client configuration for one upstream database.
pub fn upstream_config(verifier: Arc<dyn ServerCertVerifier>) -> Arc<rustls::ClientConfig> {
    Arc::new(rustls::ClientConfig::builder().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// `verify-ca`: the chain must verify; a host-name mismatch is accepted.
#[derive(Debug)]
struct IgnoreHostName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
