//! The caller's identity, read from a verified client certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI scheme prefix of the route carried in a client certificate's SAN.
pub const ROUTE_URI_PREFIX: &str = "portcullis:route?";

/// The SAN URI prefix that carries one group.
pub const GROUP_URI_PREFIX: &str = "portcullis:group?name=";

/// Who is calling: user name (CN), groups (O), and an optional route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The user name (the certificate's Common Name).
    pub user: String,
    /// The groups (the certificate's Organization entries).
    pub groups: Vec<String>,
    /// The database / db user / db name the certificate is limited to, if any.
    pub route: Option<Route>,
    /// When the certificate stops being valid (seconds since the epoch).
    pub not_after: i64,
}

/// What a certificate limits its holder to. Each field, when set, must match the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The `Database` name.
    pub database: Option<String>,
    /// The database user.
    pub db_user: Option<String>,
    /// The database name.
    pub db_name: Option<String>,
}

impl Route {
    /// Encodes the route as the SAN URI `portcullis:route?database=…&dbUser=…&dbName=…`.
    ///
    /// Values keep `/`, `-`, `.`, `_`, `~`, `:` and `@` as they are: `kubectl describe csr`
    /// prints the URI through a format string, where `%2F` would read `%!F(MISSING)`.
    pub fn to_uri(&self) -> String {
        let mut parts = Vec::new();
        for (key, value) in [("database", &self.database), ("dbUser", &self.db_user), ("dbName", &self.db_name)] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", percent_encoding::utf8_percent_encode(v, ROUTE_VALUE_ESCAPES)));
            }
        }
        format!("{ROUTE_URI_PREFIX}{}", parts.join("&"))
    }

    /// Parses a route SAN URI; `None` when the URI is not a Portcullis route.
    pub fn from_uri(uri: &str) -> Option<Result<Route, IdentityError>> {
        let query = uri.strip_prefix(ROUTE_URI_PREFIX)?;
        let mut route = Route::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = match percent_encoding::percent_decode_str(raw).decode_utf8() {
                Ok(v) => v.into_owned(),
                Err(_) => return Some(Err(IdentityError::BadRoute(format!("{key} is not UTF-8")))),
            };
            match key {
                "database" => route.database = Some(value),
                "dbUser" => route.db_user = Some(value),
                "dbName" => route.db_name = Some(value),
                other => return Some(Err(IdentityError::BadRoute(format!("unknown route field {other:?}")))),
            }
        }
        Some(Ok(route))
    }
}

/// What a route value escapes: everything but letters, digits and the characters of names
/// (`namespace/name`, `user@host`, `a.b-c_d`).
const ROUTE_VALUE_ESCAPES: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':').remove(b'@');

/// Groups every authenticated user has: the CSR signer leaves them out of certificates, and a
/// stored certificate is compared with the caller without them.
pub const IMPLICIT_GROUPS: &[&str] = &["system:authenticated"];

/// The groups that a certificate carries for someone in `groups`, sorted.
pub fn certificate_groups(groups: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = groups.iter().filter(|g| !IMPLICIT_GROUPS.contains(&g.as_str())).cloned().collect();
    kept.sort();
    kept
}

/// Why a certificate does not yield an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The DER could not be parsed.
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    /// No Common Name.
    #[error("the client certificate has no Common Name (the user name)")]
    NoCommonName,
    /// The route URI is malformed.
    #[error("the client certificate's route is malformed: {0}")]
    BadRoute(String),
}

/// Reads the identity from a client certificate (DER) whose chain has already been verified.
pub fn identity_from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).filter(|s| !s.is_empty()).ok_or(IdentityError::NoCommonName)?.to_owned();
    let mut groups: Vec<String> = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_owned).collect();
    let mut route = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let GeneralName::URI(uri) = name else { continue };
            if let Some(parsed) = Route::from_uri(uri) {
                route = Some(parsed?);
            } else if let Some(raw) = uri.strip_prefix(GROUP_URI_PREFIX) {
                let group =
                    percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| IdentityError::BadRoute("a group is not UTF-8".into()))?.into_owned();
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
    }
    Ok(Identity { user, groups, route, not_after: cert.validity().not_after.timestamp() })
}
