//! Local identity for standalone mode: a client CA, the proxy's server certificate, and
//! short-lived client certificates that carry user, groups and an optional route.

mod files;

pub use files::{CaFiles, ClientFiles, write_private};

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use time::OffsetDateTime;

use crate::authz::{GROUP_URI_PREFIX, Route};

/// Errors of certificate issuance.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot build the certificate")]
    Build(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The CA files do not hold a usable CA.
    #[error("{path} does not hold a usable CA: {reason}")]
    BadCa { path: String, reason: String },
    /// A certificate signing request is malformed or its signature does not verify.
    #[error("the certificate signing request is unusable: {0}")]
    BadRequest(String),
    /// A requested lifetime is unusable.
    #[error("the certificate lifetime must be between 1 minute and 1 year, got {0:?}")]
    BadTtl(Duration),
}

/// The `signerName` of CertificateSigningRequests for client certificates (`portcullis
/// login` asks for it; the operator signs it).
pub const CSR_SIGNER_NAME: &str = "portcullis.io/client";

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A certificate authority that can sign server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// Creates a new self-signed CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<(Ca, Issued), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let issued = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        let ca = Ca::from_pem(&issued.cert_pem, &issued.key_pem, "<new CA>")?;
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key (PEM). `origin` names the files in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: &str) -> Result<Ca, PkiError> {
        let bad = |reason: String| PkiError::BadCa { path: origin.to_owned(), reason };
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("the key does not parse: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
        Ok(Ca { issuer, cert_pem: cert_pem.to_owned() })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], ttl: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(names.first().map(String::as_str).unwrap_or("portcullis"), &[]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, ttl)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a client certificate: CN = user, groups as `O` (when one) and as group URIs,
    /// and the route (if any) as a `portcullis:route?…` URI.
    pub fn issue_client(&self, user: &str, groups: &[String], route: Option<&Route>, ttl: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = client_params(user, groups, route, ttl)?.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a client certificate for the key in `request`. The user, groups and route come
    /// from the caller (the CSR signer takes them from the API server, never from the request).
    pub fn sign_client_request(&self, request: &ClientRequest, user: &str, groups: &[String], ttl: Duration) -> Result<String, PkiError> {
        let cert = client_params(user, groups, request.route.as_ref(), ttl)?.signed_by(&request.public_key, &self.issuer)?;
        Ok(cert.pem())
    }
}

/// A certificate signing request whose signature checked out, with the route it asks for.
pub struct ClientRequest {
    public_key: rcgen::PublicKey,
    /// The route requested as a `portcullis:route?…` SAN URI, if any.
    pub route: Option<Route>,
}

/// Parses a PEM certificate signing request and checks its self-signature.
pub fn parse_client_request(pem: &str) -> Result<ClientRequest, PkiError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| PkiError::BadRequest(e.to_string()))?;
    let mut route = None;
    for san in &csr.params.subject_alt_names {
        if let SanType::URI(uri) = san
            && let Some(parsed) = Route::from_uri(uri.as_str())
        {
            route = Some(parsed.map_err(|e| PkiError::BadRequest(e.to_string()))?);
        }
    }
    Ok(ClientRequest { public_key: csr.public_key, route })
}

/// A new key and a PEM certificate signing request asking for `route` (what `portcullis
/// login` sends). Returns `(csr_pem, key_pem)`.
pub fn new_client_request(route: Option<&Route>) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("portcullis-login", &[]);
    if let Some(route) = route {
        params.subject_alt_names = vec![SanType::URI(route.to_uri().try_into()?)];
    }
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

fn client_params(user: &str, groups: &[String], route: Option<&Route>, ttl: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(user, groups);
    let mut sans = Vec::new();
    for g in groups {
        let encoded = percent_encoding::utf8_percent_encode(g, percent_encoding::NON_ALPHANUMERIC);
        sans.push(SanType::URI(format!("{GROUP_URI_PREFIX}{encoded}").try_into()?));
    }
    if let Some(route) = route {
        sans.push(SanType::URI(route.to_uri().try_into()?));
    }
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, ttl)?;
    Ok(params)
}

fn dn(common_name: &str, groups: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let [only] = groups {
        dn.push(DnType::OrganizationName, only.as_str());
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, ttl: Duration) -> Result<(), PkiError> {
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err(PkiError::BadTtl(ttl));
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + ttl;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::identity_from_certificate;

    fn der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn client_certificate_carries_user_groups_and_route() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        let route = Route { database: Some("orders".into()), db_user: Some("app".into()), db_name: None };
        let groups = vec!["dev".to_string(), "on call".to_string()];
        let issued = ca.issue_client("alice", &groups, Some(&route), Duration::from_secs(3600)).unwrap();
        let id = identity_from_certificate(&der(&issued.cert_pem)).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, groups);
        assert_eq!(id.route, Some(route));
        let lifetime = id.not_after - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3500..=3600).contains(&lifetime), "{lifetime}");
    }

    #[test]
    fn single_group_is_also_the_organization() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        let issued = ca.issue_client("bob", &["ops".into()], None, Duration::from_secs(600)).unwrap();
        let id = identity_from_certificate(&der(&issued.cert_pem)).unwrap();
        assert_eq!(id.groups, vec!["ops".to_string()], "group must not be counted twice");
        assert_eq!(id.route, None);
    }

    #[test]
    fn a_signed_request_keeps_the_route_but_takes_user_and_groups_from_the_signer() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        let route = Route { database: Some("shop/orders".into()), db_user: Some("app".into()), db_name: None };
        let (csr, _key) = new_client_request(Some(&route)).unwrap();
        let request = parse_client_request(&csr).unwrap();
        assert_eq!(request.route.as_ref(), Some(&route));
        let pem = ca.sign_client_request(&request, "alice", &["dev".into()], Duration::from_secs(600)).unwrap();
        let id = identity_from_certificate(&der(&pem)).unwrap();
        assert_eq!((id.user.as_str(), id.groups.clone(), id.route), ("alice", vec!["dev".to_string()], Some(route)));
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let (csr, _) = new_client_request(None).unwrap();
        let body: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
        let last = raw.len() - 5;
        raw[last] ^= 0xff;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw)
        );
        assert!(matches!(parse_client_request(&tampered), Err(PkiError::BadRequest(_))));
        assert!(matches!(parse_client_request("not a csr"), Err(PkiError::BadRequest(_))));
    }

    #[test]
    fn lifetimes_outside_bounds_are_refused() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        assert!(matches!(ca.issue_client("a", &[], None, Duration::from_secs(5)), Err(PkiError::BadTtl(_))));
        assert!(matches!(ca.issue_client("a", &[], None, Duration::from_secs(400 * 86400)), Err(PkiError::BadTtl(_))));
    }
}
