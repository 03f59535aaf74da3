//! Version `v1alpha1` of the `Database` and `AccessRole` resources.

mod access_role;
mod database;
mod discovery;
mod selector;

pub use access_role::{AccessRole, AccessRoleSpec, AccessRoleStatus, AuditSpec, RuleSet, Subject, SubjectKind};
pub use database::{
    AwsObserved, AwsSpec, Database, DatabaseSpec, DatabaseStatus, Protocol, ProxySpec, RdsRef, SecretKeyRef, ServiceSpec, UpstreamTls, UpstreamTlsMode,
};
pub use discovery::{
    AwsMatcher, DatabaseDiscovery, DatabaseDiscoverySpec, DatabaseDiscoveryStatus, DatabaseTemplate, DiscoveryType, MatcherIdentity, MatcherStatus, Skipped,
};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// Strips `additionalProperties: false` (which `deny_unknown_fields` produces and which a
/// structural schema may not combine with `properties`) from a generated schema.
pub(crate) fn allow_unknown_in_schema(schema: &mut schemars::Schema) {
    if let Some(obj) = schema.as_object_mut()
        && obj.get("additionalProperties") == Some(&serde_json::Value::Bool(false))
    {
        obj.remove("additionalProperties");
    }
}
