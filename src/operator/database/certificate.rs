//! The proxy's server certificate: the live one is kept while it names the right hosts, comes
//! from the operator's CA and has more than a third of its lifetime left; otherwise a new one
//! is issued.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tracing::instrument;

use super::children::{CERT_NAMES_ANNOTATION, server_names};
use super::key;
use crate::crd::Database;
use crate::pki::{Ca, PkiError};

/// A server certificate and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The certificate chain.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// The live certificate when it can stay, else a new one for `ttl`.
#[instrument(skip_all, fields(database = %key(db)))]
pub fn current_or_new(db: &Database, ca: &Ca, ttl: Duration, live: Option<&Secret>) -> Result<ServerCertificate, PkiError> {
    if let Some(current) = live.and_then(|s| reusable(s, db, ca)) {
        return Ok(current);
    }
    let issued = ca.issue_server(&server_names(db), ttl)?;
    Ok(ServerCertificate { cert_pem: issued.cert_pem, key_pem: issued.key_pem })
}

/// The live certificate and key, when they can stay.
fn reusable(secret: &Secret, db: &Database, ca: &Ca) -> Option<ServerCertificate> {
    let names = server_names(db).join(",");
    if secret.annotations().get(CERT_NAMES_ANNOTATION) != Some(&names) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let (cert, key, ca_pem) = (text("tls.crt")?, text("tls.key")?, text("ca.crt")?);
    if ca_pem != ca.cert_pem() {
        return None;
    }
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).ok().map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = parsed.validity();
    let (from, to) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (to - now > (to - from) / 3).then_some(ServerCertificate { cert_pem: cert, key_pem: key })
}
