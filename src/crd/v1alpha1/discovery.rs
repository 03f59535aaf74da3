//! The `DatabaseDiscovery` resource: finds RDS, Aurora, RDS Proxy and DocumentDB endpoints by
//! type, region and tags, and keeps one owned `Database` per endpoint.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ProxySpec, UpstreamTls};

/// What to look for in AWS (matchers), what every Database it creates carries (template), and
/// how often to look again.
// Two date columns repeat `type_ = "date"`, which the lint takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.io",
    version = "v1alpha1",
    kind = "DatabaseDiscovery",
    namespaced,
    doc = "Discovers RDS instances, Aurora clusters (writer, reader and custom endpoints), RDS Proxies (their default endpoint) and DocumentDB clusters by type, region and AWS tags, and keeps one Database in this namespace per endpoint: created when found, updated when its endpoint, engine or tags change, deleted when it is gone from AWS. Databases written by hand are never touched.",
    status = "DatabaseDiscoveryStatus",
    shortname = "dbdisc",
    category = "portcullis",
    printcolumn(name = "Databases", type_ = "integer", json_path = ".status.databases"),
    printcolumn(name = "Synced", type_ = "string", json_path = ".status.conditions[?(@.type==\"Synced\")].status"),
    printcolumn(name = "Last sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct DatabaseDiscoverySpec {
    /// The matchers: each lists one set of types in its regions, under its own AWS identity.
    #[schemars(length(min = 1, max = 20))]
    pub aws: Vec<AwsMatcher>,
    /// What every Database this discovery creates carries.
    #[serde(default)]
    pub template: DatabaseTemplate,
    /// How often AWS is listed again, e.g. `5m` (the default); at least `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Aurora and DocumentDB: also a Database for each cluster's reader endpoint (`<cluster>-reader`). On by default.
    #[serde(default = "yes")]
    pub reader_endpoints: bool,
    /// Aurora: also a Database for each custom endpoint (`<cluster>-<endpoint>`). On by default.
    #[serde(default = "yes")]
    pub custom_endpoints: bool,
}

fn yes() -> bool {
    true
}

/// One kind of search: these types, in these regions, with these tags, as this identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.aws) || !has(self.aws.externalId) || has(self.aws.assumeRoleArn)",
    "message": "aws.externalId goes with aws.assumeRoleArn: it is sent when assuming that role",
    "fieldPath": ".aws.externalId",
    "reason": "FieldValueRequired"
}]))]
pub struct AwsMatcher {
    /// A name for the matcher in status and labels; `matcher-<index>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"))]
    pub name: Option<String>,
    /// What to find: `rds` (DB instances outside clusters), `aurora` (Aurora clusters),
    /// `rds-proxy` (RDS Proxy default endpoints), `docdb` (DocumentDB clusters).
    #[schemars(length(min = 1, max = 4))]
    pub types: Vec<DiscoveryType>,
    /// The regions to list, e.g. `[us-east-1, eu-west-1]`.
    #[schemars(length(min = 1, max = 30), inner(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")))]
    pub regions: Vec<String>,
    /// AWS tags a resource must carry; a value of `*` matches any value of that key, and the
    /// entry `"*": "*"` matches every resource. Empty: every resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The identity this matcher's AWS calls (and the proxies of the Databases it creates) use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<MatcherIdentity>,
}

/// A role to assume for a matcher (another account, a narrower role).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct MatcherIdentity {
    /// The role assumed from the operator's own identity, e.g.
    /// `arn:aws:iam::222222222222:role/portcullis-discovery`; copied to each Database's
    /// `spec.aws.assumeRoleArn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub assume_role_arn: Option<String>,
    /// The external ID the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A kind of AWS database endpoint.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryType {
    /// RDS for PostgreSQL, MySQL and MariaDB instances (not members of a cluster).
    Rds,
    /// Aurora PostgreSQL and MySQL clusters.
    Aurora,
    /// RDS Proxy (its default endpoint).
    RdsProxy,
    /// DocumentDB clusters.
    Docdb,
}

impl DiscoveryType {
    /// The name as written in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryType::Rds => "rds",
            DiscoveryType::Aurora => "aurora",
            DiscoveryType::RdsProxy => "rds-proxy",
            DiscoveryType::Docdb => "docdb",
        }
    }
}

/// Settings copied into every Database the discovery creates.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct DatabaseTemplate {
    /// Labels added to each Database (after the ones made from AWS tags; `portcullis.io/`
    /// labels are the discovery's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// TLS towards the databases (e.g. the regional RDS CA bundle in a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// How the operator runs each Database's proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
}

/// What the last sync found, per matcher, and whether it worked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseDiscoveryStatus {
    /// The generation of the spec the last sync used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Synced` (every matcher listed every region) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many Databases this discovery owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<i32>,
    /// When the last sync in which every matcher succeeded ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// One entry per matcher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<MatcherStatus>,
}

/// The last sync of one matcher.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatcherStatus {
    /// The matcher's name.
    pub name: String,
    /// Whose credentials listed AWS: the assumed role, or `operator`.
    pub identity: String,
    /// Endpoints that matched (types, regions, tags), skipped ones included.
    pub found: i32,
    /// Databases created by the last sync.
    pub created: i32,
    /// Databases updated by the last sync.
    pub updated: i32,
    /// Databases deleted by the last sync (their AWS resource is gone).
    pub deleted: i32,
    /// Endpoints that matched but cannot be served, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Regions whose listing failed, with what to do; their Databases are kept as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When this matcher last listed every region without an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
}

/// An endpoint that matched but gets no Database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// `region/identifier`.
    pub name: String,
    /// Why, e.g. `MariaDB 10.5 has no IAM database authentication (10.6 or later has)`.
    pub reason: String,
}
