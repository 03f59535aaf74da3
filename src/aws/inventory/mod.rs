//! Lists the database endpoints of one region for discovery: RDS instances, Aurora clusters
//! (writer, reader, custom endpoints) and RDS Proxies with aws-sdk-rds, DocumentDB clusters with
//! aws-sdk-docdb. Each endpoint carries its tags and, when Portcullis cannot serve it, why.

mod docdb;

pub use docdb::client as docdb_client;
mod rds;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_types::SdkConfig;

use crate::aws::{describe_sdk_error, is_throttling};

use crate::crd::Protocol;
use crate::crd::v1alpha1::DiscoveryType;

/// What kind of endpoint of its resource this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointType {
    /// A DB instance's endpoint.
    Instance,
    /// A cluster's writer endpoint.
    Primary,
    /// A cluster's reader endpoint.
    Reader,
    /// An Aurora custom endpoint.
    Custom,
    /// An RDS Proxy's default endpoint.
    Proxy,
}

impl EndpointType {
    /// The value of the `portcullis.io/endpoint-type` label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Instance => "instance",
            EndpointType::Primary => "primary",
            EndpointType::Reader => "reader",
            EndpointType::Custom => "custom",
            EndpointType::Proxy => "proxy",
        }
    }
}

/// One endpoint found in AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The discovery type it was found as.
    pub type_: DiscoveryType,
    /// Which endpoint of the resource.
    pub endpoint_type: EndpointType,
    /// The instance, cluster or proxy identifier.
    pub id: String,
    /// A custom endpoint's own identifier.
    pub endpoint_id: Option<String>,
    /// The host name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The engine, e.g. `aurora-postgresql`, `mariadb`, `docdb`.
    pub engine: String,
    /// The engine version, e.g. `15.4`.
    pub engine_version: Option<String>,
    /// The region.
    pub region: String,
    /// The 12-digit account, from the resource's ARN.
    pub account_id: Option<String>,
    /// `db-…` (instance) or `cluster-…` (cluster): what `rds-db:connect` ARNs name.
    pub resource_id: Option<String>,
    /// The resource's AWS tags.
    pub tags: BTreeMap<String, String>,
    /// Why it cannot be served (no Database is made), when it cannot.
    pub skip: Option<String>,
}

impl Endpoint {
    /// The wire protocol, from the engine (or the proxy's engine family).
    pub fn protocol(&self) -> Option<Protocol> {
        protocol_of_engine(&self.engine)
    }

    /// A stable key: account, region, resource and endpoint.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.account_id.as_deref().unwrap_or("-"),
            self.region,
            self.type_.as_str(),
            self.id,
            self.endpoint_id.as_deref().unwrap_or(self.endpoint_type.as_str())
        )
    }
}

/// The protocol of an engine name (RDS engines, RDS Proxy engine families, `docdb`).
pub fn protocol_of_engine(engine: &str) -> Option<Protocol> {
    match engine.to_ascii_lowercase().as_str() {
        "postgres" | "aurora-postgresql" | "postgresql" => Some(Protocol::Postgres),
        "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Some(Protocol::Mysql),
        "docdb" => Some(Protocol::Mongodb),
        _ => None,
    }
}

/// A listing call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} in {region} failed: {detail}")]
pub struct ListError {
    /// The IAM action of the call, e.g. `rds:DescribeDBClusters`.
    pub action: &'static str,
    /// The region.
    pub region: String,
    /// The error code and message (never credentials).
    pub detail: String,
    /// AWS said the identity may not make the call.
    pub access_denied: bool,
    /// AWS throttled the call.
    pub throttled: bool,
}

/// What to list in one region.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The region.
    pub region: &'a str,
    /// The discovery types.
    pub types: &'a [DiscoveryType],
    /// Aurora/DocumentDB reader endpoints too.
    pub reader_endpoints: bool,
    /// Aurora custom endpoints too.
    pub custom_endpoints: bool,
}

/// The endpoints found, and how many AWS API calls finding them took.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every endpoint of the asked types (tags not yet matched).
    pub endpoints: Vec<Endpoint>,
    /// AWS API calls made.
    pub calls: u32,
}

/// Lists the endpoints of `query` with the credentials in `sdk`. Stops at the first failing call:
/// a partial listing must not be mistaken for resources gone.
pub async fn list(sdk: &SdkConfig, query: &Query<'_>) -> Result<Listing, ListError> {
    let mut listing = Listing::default();
    let wants = |t| query.types.contains(&t);
    if wants(DiscoveryType::Rds) || wants(DiscoveryType::Aurora) {
        rds::instances_and_clusters(sdk, query, &mut listing).await?;
    }
    if wants(DiscoveryType::RdsProxy) {
        rds::proxies(sdk, query.region, &mut listing).await?;
    }
    if wants(DiscoveryType::Docdb) {
        docdb::clusters(sdk, query, &mut listing).await?;
    }
    Ok(listing)
}

/// A failed call as a [`ListError`].
fn failure<E, R>(action: &'static str, region: &str, e: &SdkError<E, R>) -> ListError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let code = crate::aws::error_code_and_message(e).0.unwrap_or_default();
    let access_denied = matches!(code.as_str(), "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "InvalidClientTokenId" | "ExpiredToken");
    ListError { action, region: region.to_owned(), detail: describe_sdk_error(e), access_denied, throttled: is_throttling(e) }
}

/// The account in an ARN (`arn:aws:rds:us-east-1:123456789012:db:orders`).
fn account_of_arn(arn: Option<&str>) -> Option<String> {
    arn?.split(':').nth(4).filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())).map(str::to_owned)
}

/// Why an engine and version cannot log in with IAM, when it cannot.
fn engine_blocker(engine: &str, version: Option<&str>, engine_mode: Option<&str>) -> Option<String> {
    if engine_mode == Some("serverless") {
        return Some("Aurora Serverless v1 has no IAM database authentication (Serverless v2 has: use a provisioned cluster)".into());
    }
    match engine {
        "mariadb" => {
            if crate::aws::rds::version_below(version?, "10.6") {
                Some(format!("MariaDB {} has no IAM database authentication (10.6 or later has)", version.unwrap_or("?")))
            } else {
                None
            }
        }
        e if protocol_of_engine(e).is_none() => Some(format!("engine {e} is not one Portcullis serves (PostgreSQL, MySQL, MariaDB, DocumentDB)")),
        _ => None,
    }
}
