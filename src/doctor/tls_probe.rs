//! Fetches a database's TLS certificate chain (after PostgreSQL's SSLRequest where needed)
//! and judges it: chain verifies, not expired, names the host, has SANs at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crd::Protocol;
use crate::proxy::postgres::codec::encode_ssl_request;

/// What the certificate check found.
#[derive(Debug, Clone)]
pub struct CertFindings {
    /// The subject of the end-entity certificate.
    pub subject: String,
    /// When it expires (RFC 3339).
    pub not_after: String,
    /// Whether it has expired.
    pub expired: bool,
    /// Whether it has a subject alternative name extension at all.
    pub has_san: bool,
    /// The result of verifying it against the configured CA for the host.
    pub verification: Result<(), String>,
}

/// Records the chain and accepts it; the chain is judged afterwards.
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![ee.clone().into_owned()];
        chain.extend(im.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Connects, negotiates TLS the way `protocol` does, and returns the server's chain.
pub async fn fetch_chain(host: &str, port: u16, protocol: Protocol, timeout: Duration) -> Result<Vec<CertificateDer<'static>>, String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let capture = Arc::new(Capture { chain: Mutex::new(Vec::new()), schemes: provider.signature_verification_algorithms.supported_schemes() });
    let config = rustls::ClientConfig::builder().dangerous().with_custom_certificate_verifier(capture.clone()).with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is not a valid server name"))?;
    let work = async {
        let mut tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("cannot connect: {e}"))?;
        match protocol {
            Protocol::Postgres => {
                tcp.write_all(&encode_ssl_request()).await.map_err(|e| e.to_string())?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await.map_err(|e| e.to_string())?;
                if answer[0] != b'S' {
                    return Err::<(), String>("the server refused TLS (answered the SSLRequest with N)".into());
                }
            }
            Protocol::Mysql => mysql_starttls(&mut tcp).await?,
            Protocol::Mongodb | Protocol::Dynamodb => {}
        }
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| "timed out".to_owned())??;
    let chain = capture.chain.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if chain.is_empty() {
        return Err("the server sent no certificate".into());
    }
    Ok(chain)
}

/// Judges a chain for `host` against the upstream TLS configuration's verifier.
pub fn judge(chain: &[CertificateDer<'static>], host: &str, verifier: &Arc<dyn ServerCertVerifier>) -> Result<CertFindings, String> {
    let (_, cert) = X509Certificate::from_der(&chain[0]).map_err(|e| format!("the certificate does not parse: {e}"))?;
    let has_san = cert.subject_alternative_name().ok().flatten().is_some();
    let not_after = cert.validity().not_after;
    let expired = not_after.timestamp() < time::OffsetDateTime::now_utc().unix_timestamp();
    let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is not a valid server name"))?;
    let verification = verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| e.to_string());
    Ok(CertFindings {
        subject: cert.subject().to_string(),
        not_after: not_after.to_rfc2822().unwrap_or_else(|_| not_after.to_string()),
        expired,
        has_san,
        verification,
    })
}

/// MySQL's way into TLS: read the greeting, then send an SSLRequest.
async fn mysql_starttls(tcp: &mut TcpStream) -> Result<(), String> {
    use crate::proxy::mysql::codec;
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await.map_err(|e| format!("no greeting: {e}"))?;
    let (len, _) = codec::header(head);
    if len > codec::MAX_LOGIN_PACKET {
        return Err(format!("a greeting of {len} bytes is not a MySQL greeting"));
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.map_err(|e| format!("no greeting: {e}"))?;
    if payload.first() == Some(&0xff) {
        let err = codec::parse_err(&payload).map_err(|e| e.to_string())?;
        return Err(format!("the server refused the connection: {} ({})", err.message, err.code));
    }
    let greeting = codec::Greeting::parse(&payload).map_err(|e| format!("not a MySQL greeting: {e}"))?;
    if greeting.capabilities & codec::caps::SSL == 0 {
        return Err("the server does not offer TLS (no CLIENT_SSL in its greeting)".into());
    }
    let request = codec::SslRequest { capabilities: codec::caps::OFFERED, max_packet: 1 << 24, collation: codec::DEFAULT_COLLATION };
    tcp.write_all(&codec::packet(1, &request.encode())).await.map_err(|e| e.to_string())
}
