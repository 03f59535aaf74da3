//! A `Database` resolved into what the data path needs: host, port, region, the assume-role
//! hop, and the TLS configuration towards it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::ratelimit::RateLimiter;
use super::tls::{self, TlsError};
use crate::aws::Service;
use crate::crd::{Database, FieldError, Protocol, region_from_rds_host, split_endpoint, split_url, validate_database};

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
    Ca {
        database: String,
        #[source]
        source: TlsError,
    },
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
            Some(p) => {
                Some(tls::load_certs(p, "cannot read the database CA bundle").map_err(|source| ResolveError::Ca { database: database.clone(), source })?)
            }
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
