//! A `Database` resolved into what the data path needs: host, port, region, the assume-role
//! hop, and the TLS configuration towards it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::ratelimit::RateLimiter;
use super::tls::{self, TlsError};
use crate::aws::region_from_rds_host;
use super::dynamodb::target::Service;
use crate::crd::{Database, Protocol};

/// A validation failure of one `Database`: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.endpoint`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Checks a `Database` the way the proxy needs it (beyond the schema).
pub fn validate_database(db: &Database) -> Result<(), FieldError> {
    let spec = &db.spec;
    if spec.protocol == Protocol::Dynamodb {
        if spec.aws.region.is_none() {
            return Err(FieldError { field: "spec.aws.region", message: "required for protocol dynamodb, e.g. us-east-1".into() });
        }
        if spec.aws.account_id.is_none() && spec.aws.assume_role_arn.is_none() {
            return Err(FieldError {
                field: "spec.aws.accountId",
                message: "required for protocol dynamodb (unless spec.aws.assumeRoleArn names the account): users' roles must be in this account".into(),
            });
        }
        if let Some(endpoint) = spec.endpoint.as_deref() {
            split_url(endpoint).map_err(|message| FieldError { field: "spec.endpoint", message })?;
        }
    } else {
        if spec.protocol == Protocol::Mongodb && spec.aws.account_id.is_none() && spec.aws.assume_role_arn.is_none() {
            return Err(FieldError {
                field: "spec.aws.accountId",
                message: "required for protocol mongodb (unless spec.aws.assumeRoleArn names the account): users' roles must be in this account".into(),
            });
        }
        let endpoint = spec.endpoint.as_deref().ok_or(FieldError {
            field: "spec.endpoint",
            message: format!("required for protocol {}: the database's host:port, e.g. orders.abc.us-east-1.rds.amazonaws.com:5432", spec.protocol),
        })?;
        let (host, _) = split_endpoint(endpoint, spec.protocol).map_err(|message| FieldError { field: "spec.endpoint", message })?;
        if spec.aws.region.is_none() && region_from_rds_host(&host).is_none() {
            return Err(FieldError {
                field: "spec.aws.region",
                message: format!("required: the endpoint host {host:?} names no AWS region"),
            });
        }
    }
    if let Some(arn) = spec.aws.assume_role_arn.as_deref()
        && (!arn.starts_with("arn:") || !arn.contains(":role/")) {
            return Err(FieldError { field: "spec.aws.assumeRoleArn", message: format!("{arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)") });
        }
    if spec.aws.external_id.is_some() && spec.aws.assume_role_arn.is_none() {
        return Err(FieldError { field: "spec.aws.externalId", message: "only used with spec.aws.assumeRoleArn, which is not set".into() });
    }
    if spec.proxy.iam_role_arn.is_some() && spec.proxy.service_account_name.is_some() {
        return Err(FieldError {
            field: "spec.proxy.iamRoleArn",
            message: "set either iamRoleArn (the operator creates the ServiceAccount) or serviceAccountName, not both".into(),
        });
    }
    Ok(())
}

/// Splits `host:port` (the port defaults to the protocol's); IPv6 hosts go in brackets.
pub fn split_endpoint(endpoint: &str, protocol: Protocol) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("{endpoint:?}: missing ']' after the IPv6 address"))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match endpoint.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (endpoint.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{endpoint:?}: the port {p:?} is not a number from 1 to 65535"))?,
        None => protocol.default_port(),
    };
    if host.is_empty() {
        return Err(format!("{endpoint:?} is not host:port"));
    }
    Ok((host, port))
}

/// Splits a DynamoDB endpoint override, `[http://|https://]host[:port]`, into (plain HTTP?,
/// host, port).
pub fn split_url(endpoint: &str) -> Result<(bool, String, u16), String> {
    let (plain, rest) = match endpoint.split_once("://") {
        Some(("http", rest)) => (true, rest),
        Some(("https", rest)) => (false, rest),
        Some((scheme, _)) => return Err(format!("{endpoint:?}: scheme {scheme:?} is not http or https")),
        None => (false, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!("{endpoint:?}: give host[:port] only, without a path"));
    }
    let (host, port) = split_endpoint(rest, Protocol::Dynamodb)?;
    let port = if plain && !rest.contains(':') { 80 } else { port };
    Ok((plain, host, port))
}

/// A database ready for the data path.
pub struct Upstream {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The labels (for AccessRole selectors).
    pub labels: BTreeMap<String, String>,
    /// The protocol.
    pub protocol: Protocol,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The AWS region.
    pub region: String,
    /// The first assume-role hop.
    pub assume_role_arn: Option<String>,
    /// The external ID for the first hop.
    pub external_id: Option<String>,
    /// The AWS account of the database (DynamoDB: users' roles must be in it).
    pub account_id: Option<String>,
    /// DynamoDB: the endpoint was set in the Database (a VPC endpoint, a test server) rather than
    /// derived from the region; `plain_http` when it is `http://`.
    pub endpoint_override: bool,
    /// DynamoDB: the endpoint override speaks plain HTTP.
    pub plain_http: bool,
    /// TLS towards the database.
    pub tls: Arc<rustls::ClientConfig>,
    /// The verifier of the database's certificate (also used by `portcullis doctor`).
    pub verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    /// The name verified in the database's certificate.
    pub server_name: ServerName<'static>,
    /// Limits new upstream connections.
    pub limiter: RateLimiter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}/{} {}:{})", self.namespace, self.name, self.host, self.port)
    }
}

/// Errors of resolving a `Database`.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The Database is invalid.
    #[error("Database {database}: {}: {}", .error.field, .error.message)]
    Invalid { database: String, error: FieldError },
    /// The CA bundle could not be loaded.
    #[error("Database {database}: spec.tls.caSecretRef")]
    Ca { database: String, #[source] source: TlsError },
    /// The server name is not a valid DNS name or IP address.
    #[error("Database {database}: {name:?} is not a valid TLS server name")]
    ServerName { database: String, name: String },
}

impl Upstream {
    /// Resolves a validated `Database`. CA bundles are read from `secrets_dir/<name>/<key>`.
    pub fn resolve(db: &Database, secrets_dir: Option<&Path>, connects_per_second: u32) -> Result<Upstream, ResolveError> {
        let namespace = db.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = db.metadata.name.clone().unwrap_or_default();
        let database = format!("{namespace}/{name}");
        validate_database(db).map_err(|error| ResolveError::Invalid { database: database.clone(), error })?;
        let spec = &db.spec;
        let invalid = |message| ResolveError::Invalid { database: database.clone(), error: FieldError { field: "spec.endpoint", message } };
        let (plain_http, host, port) = match (spec.protocol, spec.endpoint.as_deref()) {
            (Protocol::Dynamodb, Some(url)) => split_url(url).map_err(invalid)?,
            (Protocol::Dynamodb, None) => (false, Service::DynamoDb.host(spec.aws.region.as_deref().unwrap_or_default()), 443),
            (protocol, endpoint) => {
                let (host, port) = split_endpoint(endpoint.unwrap_or_default(), protocol).map_err(invalid)?;
                (false, host, port)
            }
        };
        let region = spec.aws.region.clone().or_else(|| region_from_rds_host(&host)).unwrap_or_default();
        let account_id = spec.aws.account_id.clone().or_else(|| spec.aws.assume_role_arn.as_deref().and_then(|arn| arn.split(':').nth(4)).map(str::to_owned));
        let ca_path = spec.tls.ca_secret_ref.as_ref().map(|r| secrets_dir.unwrap_or(Path::new("/etc/portcullis/secrets")).join(&r.name).join(&r.key));
        let ca_certs = match &ca_path {
            Some(p) => Some(tls::load_certs(p, "cannot read the database CA bundle").map_err(|source| ResolveError::Ca { database: database.clone(), source })?),
            None => None,
        };
        let verifier = tls::upstream_verifier(ca_certs.as_deref().zip(ca_path.as_deref()), spec.tls.mode)
            .map_err(|source| ResolveError::Ca { database: database.clone(), source })?;
        let tls = tls::upstream_config(verifier.clone());
        let sni = spec.tls.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(sni.clone()).map_err(|_| ResolveError::ServerName { database: database.clone(), name: sni })?;
        Ok(Upstream {
            namespace,
            name,
            labels: db.metadata.labels.clone().unwrap_or_default(),
            protocol: spec.protocol,
            host,
            port,
            region,
            assume_role_arn: spec.aws.assume_role_arn.clone(),
            external_id: spec.aws.external_id.clone(),
            account_id,
            endpoint_override: spec.protocol == Protocol::Dynamodb && spec.endpoint.is_some(),
            plain_http,
            tls,
            verifier,
            server_name,
            limiter: RateLimiter::new(connects_per_second),
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The name verified in the database's certificate.
    pub fn server_name_str(&self) -> &str {
        match &self.server_name {
            ServerName::DnsName(d) => d.as_ref(),
            _ => &self.host,
        }
    }

    /// `host:port`.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
