//! The `Database` resource: one upstream AWS database and how the proxy reaches it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which database this is (protocol, endpoint, the AWS side, TLS towards it) and how the
/// operator runs its proxy.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.io",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    doc = "An AWS database (RDS or Aurora PostgreSQL/MySQL, DocumentDB, DynamoDB) that people reach through a Portcullis proxy, which logs in upstream with AWS IAM. The operator runs the proxy (Deployment, Service, certificate) and reports in status.conditions whether clients can connect.",
    status = "DatabaseStatus",
    shortname = "db",
    category = "portcullis",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.protocol == 'dynamodb' || has(self.spec.endpoint)")
        .message("spec.endpoint is required for every protocol but dynamodb: set it to the database's host:port, e.g. orders.cluster-abc.us-east-1.rds.amazonaws.com:5432")
        .field_path(".spec.endpoint")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct DatabaseSpec {
    /// The wire protocol of the database: `postgres` (RDS/Aurora PostgreSQL), `mysql`
    /// (RDS/Aurora MySQL and MariaDB), `mongodb` (DocumentDB) or `dynamodb`.
    pub protocol: Protocol,
    /// The database's `host:port`, e.g. `orders.cluster-abc.us-east-1.rds.amazonaws.com:5432`.
    /// Required for every protocol but `dynamodb`. The port defaults to the protocol's usual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The AWS side: region, account, the role to assume, RDS identifiers.
    #[serde(default)]
    pub aws: AwsSpec,
    /// TLS towards the database. The proxy always uses TLS upstream: IAM tokens are never sent
    /// in the clear.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// How the operator runs this database's proxy (cluster mode only).
    #[serde(default)]
    pub proxy: ProxySpec,
}

/// The protocol a database speaks.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// PostgreSQL (RDS for PostgreSQL, Aurora PostgreSQL).
    Postgres,
    /// MySQL and MariaDB (RDS for MySQL/MariaDB, Aurora MySQL).
    Mysql,
    /// The MongoDB wire protocol (Amazon DocumentDB 5.0+).
    Mongodb,
    /// Amazon DynamoDB (HTTP, SigV4).
    Dynamodb,
}

impl Protocol {
    /// The port used when the endpoint names none.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
            Protocol::Mongodb => 27017,
            Protocol::Dynamodb => 443,
        }
    }

    /// The protocol's name as written in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Mongodb => "mongodb",
            Protocol::Dynamodb => "dynamodb",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AWS settings of one database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct AwsSpec {
    /// The AWS region, e.g. `us-east-1`. Derived from an RDS endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The 12-digit AWS account that owns the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{12}$"))]
    pub account_id: Option<String>,
    /// A role the proxy assumes before it does anything for this database (the first hop of the
    /// assume-role chain), e.g. `arn:aws:iam::123456789012:role/orders-access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role_arn: Option<String>,
    /// The external ID sent on the first assume-role hop, as the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The RDS instance or cluster behind the endpoint; discovered when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<RdsRef>,
    /// When true, the operator turns IAM database authentication on (ModifyDBInstance or
    /// ModifyDBCluster) if it is off.
    #[serde(default)]
    pub enable_iam_auth: bool,
}

/// Identifies an RDS instance or cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct RdsRef {
    /// The DB instance identifier (RDS for PostgreSQL/MySQL/MariaDB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The DB cluster identifier (Aurora, DocumentDB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The resource ID (`db-…` or `cluster-…`) used in `rds-db:connect` policy ARNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

/// TLS towards the database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct UpstreamTls {
    /// How the database's certificate is checked: `verify-full` (chain and host name, the
    /// default) or `verify-ca` (chain only).
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// A Secret key holding the PEM CA bundle that signs the database's certificate (for RDS,
    /// the regional bundle). The system trust store is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// The name to verify in the database's certificate, when it differs from the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// How strictly the upstream certificate is checked.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// The chain must verify and the certificate must name the host.
    #[default]
    VerifyFull,
    /// The chain must verify; the host name is not checked.
    VerifyCa,
}

/// A key inside a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key inside the Secret; `ca.crt` when absent.
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// How the operator runs the proxy for this database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct ProxySpec {
    /// Number of proxy pods; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// An existing ServiceAccount for the proxy pods (mutually exclusive with `iamRoleArn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The IAM role for the proxy pods (IRSA): the operator creates a ServiceAccount annotated
    /// with `eks.amazonaws.com/role-arn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_role_arn: Option<String>,
    /// CPU and memory for the proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the proxy pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the proxy pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The Service in front of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// `host[:port]` where clients outside the cluster reach the proxy (a load balancer's DNS
    /// name, a NodePort address): added to the proxy's server certificate and reported as
    /// `status.externalEndpoint`, which `portcullis db connect` tries before a port-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_endpoint: Option<String>,
}

/// The proxy's Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct ServiceSpec {
    /// `ClusterIP` (the default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The port clients connect to; the protocol's usual port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// What the operator and the proxies observed about this database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions keyed on `type`: Ready, Valid, UpstreamConfigured, ProxyAvailable, IamAuthEnabled,
    /// CredentialsResolved, UpstreamReachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where clients in the cluster reach the proxy (`host:port`, the Service's DNS name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_endpoint: Option<String>,
    /// Where clients outside the cluster reach the proxy (`host:port`, from
    /// `spec.proxy.externalEndpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_endpoint: Option<String>,
    /// Which AWS credential source the proxy uses (e.g. `WebIdentityToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_source: Option<String>,
    /// The AWS region in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_region: Option<String>,
    /// The engine version reported by AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// What the operator's AWS check found, and whose credentials made the calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsObserved>,
}

/// The AWS side as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsObserved {
    /// The resource ID (`db-…` of an instance, `cluster-…` of a cluster) that `rds-db:connect`
    /// policy ARNs name; `portcullis iam policy` uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The RDS instance or cluster found behind the endpoint, e.g. `cluster orders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whose credentials the operator's AWS calls for this database used: the role of
    /// `spec.aws.assumeRoleArn`, or `operator` (its own identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}
