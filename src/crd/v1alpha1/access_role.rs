//! The `AccessRole` resource: who may reach which databases as which database users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LabelSelector;

/// Who the role applies to (subjects), what they may and may never reach (allow, deny), how
/// long their client certificates may last and what is audited.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.io",
    version = "v1alpha1",
    kind = "AccessRole",
    namespaced,
    doc = "Grants (and denies) people and programs access to databases in this namespace. Access is denied unless some AccessRole naming the caller allows it, and any matching deny wins.",
    status = "AccessRoleStatus",
    shortname = "dbrole",
    category = "portcullis",
    printcolumn(name = "Databases", type_ = "integer", json_path = ".status.matchedDatabases"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct AccessRoleSpec {
    /// Who this role applies to.
    #[schemars(length(min = 1))]
    pub subjects: Vec<Subject>,
    /// What the subjects may reach. Within `allow`, an omitted list allows nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<RuleSet>,
    /// What the subjects may never reach, whatever other roles allow. Within `deny`, an omitted
    /// list matches everything (so `deny: {dbUsers: [postgres]}` denies that user everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<RuleSet>,
    /// The longest client certificate this role lets a subject obtain, e.g. `8h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ns|us|µs|ms|s|m|h|d))+$"))]
    pub max_session_ttl: Option<String>,
    /// What is recorded for sessions this role allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
}

/// A person, group or workload an AccessRole applies to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: SubjectKind,
    /// The user name, group name or ServiceAccount name, exactly as the certificate carries it.
    pub name: String,
    /// For `ServiceAccount`: its namespace; the AccessRole's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kinds of subject.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    /// A user name (the certificate's Common Name).
    User,
    /// A group (one of the certificate's Organization entries).
    Group,
    /// A Kubernetes ServiceAccount (`system:serviceaccount:<namespace>:<name>`).
    ServiceAccount,
}

/// A set of databases, database users and database names. `*` in a list matches anything.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct RuleSet {
    /// Databases in this namespace whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_selector: Option<LabelSelector>,
    /// Databases in this namespace by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Database users (for DynamoDB and DocumentDB: IAM role names or ARNs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_users: Vec<String>,
    /// Database names (PostgreSQL databases, MySQL schemas, MongoDB databases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_names: Vec<String>,
}

/// Audit settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct AuditSpec {
    /// Record every statement (`db.session.query`); true when absent.
    #[serde(default = "yes")]
    pub queries: bool,
}

fn yes() -> bool {
    true
}

/// What the operator observed about this AccessRole.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRoleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions keyed on `type` (e.g. Valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many databases in the namespace the `allow` rules match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_databases: Option<i32>,
}

impl AccessRoleSpec {
    /// The session TTL cap, parsed. `Err` carries the text that failed to parse.
    pub fn max_session_ttl(&self) -> Result<Option<std::time::Duration>, humantime::DurationError> {
        self.max_session_ttl.as_deref().map(humantime::parse_duration).transpose()
    }

    /// Whether statements are audited for sessions this role allows.
    pub fn audit_queries(&self) -> bool {
        self.audit.as_ref().is_none_or(|a| a.queries)
    }
}
