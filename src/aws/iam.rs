//! IAM policy documents: the least-privilege policies of the proxy's identity, the operator's
//! and each assumed role for a set of `Database`s, `AccessRole`s and `DatabaseDiscovery`s,
//! split to fit AWS size limits, and the IRSA trust policy.

use serde_json::{Value, json};

use super::roles::{partition_of, role_arn};
use crate::authz::{DatabaseRef, allow_rules_for};
use crate::crd::{AccessRole, Database, DatabaseDiscovery, Protocol, resolved_region};

/// Where a policy will live, which decides its size limit (characters, white space excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// A customer managed policy: 6,144 characters.
    Managed,
    /// Inline policies of a role: 10,240 characters in total.
    RoleInline,
    /// Inline policies of a user: 2,048 characters in total.
    UserInline,
}

impl PolicyKind {
    /// The limit in characters.
    pub fn limit(self) -> usize {
        match self {
            PolicyKind::Managed => 6_144,
            PolicyKind::RoleInline => 10_240,
            PolicyKind::UserInline => 2_048,
        }
    }
}

/// Generated documents and what the user should know about them.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// One or more policy documents, each within the limit.
    pub documents: Vec<Value>,
    /// Warnings (wildcards used for unknown identifiers, splits, …).
    pub warnings: Vec<String>,
}

/// Options of policy generation.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// The size limit to respect.
    pub kind: PolicyKind,
    /// Grant `sts:AssumeRole` on roles carrying this tag (`key`, `value`) instead of listing them.
    pub role_tag: Option<(String, String)>,
}

/// The characters IAM counts: the document without white space outside strings.
pub fn policy_size(doc: &Value) -> usize {
    serde_json::to_string(doc).map(|s| s.len()).unwrap_or(0)
}

/// Whose policy a permission belongs in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    /// The proxy pods' own identity.
    Proxy,
    /// The operator's own identity.
    Operator,
    /// A role assumed for Databases (`spec.aws.assumeRoleArn`) or discovery matchers.
    Role(String),
}

/// What one identity must be allowed.
#[derive(Debug, Default)]
struct Grants {
    connect: Vec<String>,
    assume: Vec<String>,
    describe: Vec<String>,
    modify: Vec<(&'static str, String)>,
    discover: bool,
    databases: usize,
}

/// The actions discovery lists AWS with.
pub const DISCOVERY_ACTIONS: &[&str] = &["rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBProxies", "rds:ListTagsForResource"];

/// Who needs what for `databases`, `roles` and `discoveries`: the proxy logs in (rds-db:connect,
/// db-user roles) unless a Database names an assumeRoleArn, whose role then does; the operator
/// describes (and, with enableIamAuth, modifies) databases and lists AWS for discovery, through
/// the same roles when they are set; both assume those roles.
fn collect(
    databases: &[Database],
    roles: &[AccessRole],
    discoveries: &[DatabaseDiscovery],
    warnings: &mut Vec<String>,
) -> std::collections::BTreeMap<Holder, Grants> {
    let mut out: std::collections::BTreeMap<Holder, Grants> = std::collections::BTreeMap::new();
    out.entry(Holder::Proxy).or_default();
    out.entry(Holder::Operator).or_default();
    for db in databases {
        let name = db.metadata.name.clone().unwrap_or_default();
        let namespace = db.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let spec = &db.spec;
        let region = resolved_region(spec).unwrap_or_else(|| "*".into());
        let partition = partition_of(&region);
        let account = spec.aws.account_id.clone().unwrap_or_else(|| {
            warnings.push(format!("Database {namespace}/{name}: spec.aws.accountId is not set; `*` is used for the account"));
            "*".into()
        });
        let labels = db.metadata.labels.clone().unwrap_or_default();
        let reference = DatabaseRef { namespace: &namespace, name: &name, labels: &labels };
        let mut db_users: Vec<String> = allow_rules_for(&reference, roles).into_iter().flat_map(|r| r.db_users.clone()).collect();
        db_users.sort();
        db_users.dedup();
        if db_users.is_empty() {
            warnings.push(format!("Database {namespace}/{name}: no AccessRole allows any db user; nothing to grant"));
        }
        let role = spec.aws.assume_role_arn.clone().filter(|r| !r.trim().is_empty());
        let (db_holder, aws_holder) = match &role {
            Some(arn) => (Holder::Role(arn.clone()), Holder::Role(arn.clone())),
            None => (Holder::Proxy, Holder::Operator),
        };
        if let Some(arn) = &role {
            out.entry(Holder::Proxy).or_default().assume.push(arn.clone());
            out.entry(Holder::Operator).or_default().assume.push(arn.clone());
        }
        let grants = out.entry(db_holder).or_default();
        grants.databases += 1;
        match spec.protocol {
            Protocol::Postgres | Protocol::Mysql => {
                let observed = db.status.as_ref().and_then(|s| s.aws.as_ref()).and_then(|a| a.resource_id.clone());
                let resource_id = spec.aws.rds.as_ref().and_then(|r| r.resource_id.clone()).or(observed).unwrap_or_else(|| {
                    warnings.push(format!(
                        "Database {namespace}/{name}: neither spec.aws.rds.resourceId nor status.aws.resourceId is known; rds-db:connect uses \
                         `*` for it (read the Database from the cluster, e.g. `kubectl get db -o yaml`, once the operator has checked it)"
                    ));
                    "*".into()
                });
                for user in &db_users {
                    grants.connect.push(format!("arn:{partition}:rds-db:{region}:{account}:dbuser:{resource_id}/{user}"));
                }
            }
            Protocol::Mongodb | Protocol::Dynamodb => {
                for user in db_users.iter().filter(|u| *u != "*") {
                    match role_arn(user, partition, &account) {
                        Ok(arn) => grants.assume.push(arn),
                        Err(e) => warnings.push(format!("Database {namespace}/{name}: db user {user:?}: {e}")),
                    }
                }
                if db_users.iter().any(|u| u == "*") {
                    warnings.push(format!("Database {namespace}/{name}: dbUsers has `*`; use --role-tag to grant sts:AssumeRole by tag"));
                }
            }
        }
        let grants = out.entry(aws_holder).or_default();
        if let Some(rds) = &spec.aws.rds {
            if let Some(id) = &rds.instance_id {
                let arn = format!("arn:{partition}:rds:{region}:{account}:db:{id}");
                grants.describe.push(arn.clone());
                if spec.aws.enable_iam_auth {
                    grants.modify.push(("rds:ModifyDBInstance", arn));
                }
            }
            if let Some(id) = &rds.cluster_id {
                let arn = format!("arn:{partition}:rds:{region}:{account}:cluster:{id}");
                grants.describe.push(arn.clone());
                if spec.aws.enable_iam_auth {
                    grants.modify.push(("rds:ModifyDBCluster", arn));
                }
            }
        } else if matches!(spec.protocol, Protocol::Postgres | Protocol::Mysql | Protocol::Mongodb) {
            grants.describe.push("*".into());
            if spec.aws.enable_iam_auth {
                warnings.push(format!("Database {namespace}/{name}: enableIamAuth needs spec.aws.rds.instanceId or clusterId to grant ModifyDB* narrowly"));
            }
        }
    }
    for d in discoveries {
        for m in &d.spec.aws {
            match m.aws.as_ref().and_then(|a| a.assume_role_arn.clone()) {
                Some(arn) => {
                    out.entry(Holder::Operator).or_default().assume.push(arn.clone());
                    // The proxies of the Databases it creates assume it too.
                    out.entry(Holder::Proxy).or_default().assume.push(arn.clone());
                    out.entry(Holder::Role(arn)).or_default().discover = true;
                }
                None => out.entry(Holder::Operator).or_default().discover = true,
            }
        }
    }
    out
}

/// The statements of one identity's grants.
fn statements(grants: Grants, options: &PolicyOptions) -> Vec<Value> {
    let mut statements = Vec::new();
    for chunk in dedup(grants.connect).chunks(50) {
        statements.push(json!({"Sid": "ConnectAsDbUsers", "Effect": "Allow", "Action": "rds-db:connect", "Resource": chunk}));
    }
    let assume = dedup(grants.assume);
    if let Some((key, value)) = &options.role_tag {
        statements.push(json!({"Sid": "AssumeTaggedRoles", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*",
            "Condition": {"StringEquals": {format!("aws:ResourceTag/{key}"): value}}}));
    } else {
        for chunk in assume.chunks(50) {
            statements.push(json!({"Sid": "AssumeDatabaseRoles", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": chunk}));
        }
    }
    let describe = dedup(grants.describe);
    if !describe.is_empty() {
        let resource: Value = if describe.iter().any(|d| d == "*") { json!("*") } else { json!(describe) };
        statements.push(json!({"Sid": "DescribeDatabases", "Effect": "Allow",
            "Action": ["rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBClusterParameters"], "Resource": resource}));
    }
    for (action, arn) in grants.modify {
        statements.push(json!({"Sid": "EnableIamAuth", "Effect": "Allow", "Action": action, "Resource": arn}));
    }
    if grants.discover {
        statements.push(json!({"Sid": "DiscoverDatabases", "Effect": "Allow", "Action": DISCOVERY_ACTIONS, "Resource": "*"}));
    }
    statements
}

/// Builds one policy for the proxy's identity for `databases` given `roles`, with the
/// operator's describe and modify permissions folded in (one identity for both, as in a
/// standalone set-up); roles named by assumeRoleArn get theirs from [`role_policies`].
pub fn proxy_policy(databases: &[Database], roles: &[AccessRole], options: &PolicyOptions) -> PolicySet {
    let mut warnings = Vec::new();
    let mut all = collect(databases, roles, &[], &mut warnings);
    let mut merged = all.remove(&Holder::Proxy).unwrap_or_default();
    if let Some(op) = all.remove(&Holder::Operator) {
        merged.assume.extend(op.assume);
        merged.describe.extend(op.describe);
        merged.modify.extend(op.modify);
    }
    for holder in all.keys() {
        if let Holder::Role(arn) = holder {
            warnings.push(format!("rds-db:connect and the describe permissions of its Databases belong in the policy of {arn} (assumed for them)"));
        }
    }
    let documents = split(statements(merged, options), options.kind.limit(), &mut warnings);
    PolicySet { documents, warnings }
}

/// One identity's policy.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    /// `proxy`, `operator`, or the ARN of an assumed role.
    pub role: String,
    /// Where the policy goes and what the identity does with it.
    pub purpose: String,
    /// The documents (split to fit the limit).
    pub documents: Vec<Value>,
}

/// One policy per distinct identity: the proxy's, the operator's, and each role named by a
/// Database's `spec.aws.assumeRoleArn` or a discovery matcher, each with what it must allow.
pub fn role_policies(
    databases: &[Database],
    roles: &[AccessRole],
    discoveries: &[DatabaseDiscovery],
    options: &PolicyOptions,
) -> (Vec<RolePolicy>, Vec<String>) {
    let mut warnings = Vec::new();
    let all = collect(databases, roles, discoveries, &mut warnings);
    let mut out = Vec::new();
    for (holder, grants) in all {
        let (role, purpose) = match &holder {
            Holder::Proxy => (
                "proxy".to_owned(),
                "the proxy pods' identity (IRSA: spec.proxy.iamRoleArn, or the role of the ServiceAccount they run as): logs in to the \
                 databases that name no assumeRoleArn and assumes the roles below"
                    .to_owned(),
            ),
            Holder::Operator => (
                "operator".to_owned(),
                "the operator's identity (IRSA: the Helm value serviceAccount.annotations.eks.amazonaws.com/role-arn): checks IAM \
                 authentication, discovers databases and assumes the roles below"
                    .to_owned(),
            ),
            Holder::Role(arn) => (
                arn.clone(),
                format!(
                    "assumed by the proxy and the operator ({} Database(s){}); its trust policy must allow both identities, with the \
                     external ID when one is set",
                    grants.databases,
                    if grants.discover { ", discovery" } else { "" }
                ),
            ),
        };
        let statements = statements(grants, options);
        if statements.is_empty() {
            continue;
        }
        let documents = split(statements, options.kind.limit(), &mut warnings);
        out.push(RolePolicy { role, purpose, documents });
    }
    (out, warnings)
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn document(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Packs statements into as few documents as fit `limit`, splitting long resource lists.
fn split(statements: Vec<Value>, limit: usize, warnings: &mut Vec<String>) -> Vec<Value> {
    let whole = document(statements.clone());
    if policy_size(&whole) <= limit {
        return vec![whole];
    }
    let total = policy_size(&whole);
    let mut pieces = Vec::new();
    for st in statements {
        let resources = st.get("Resource").and_then(Value::as_array).cloned();
        match resources {
            Some(list) if policy_size(&document(vec![st.clone()])) > limit && list.len() > 1 => {
                let (a, b) = list.split_at(list.len() / 2);
                let mut left = st.clone();
                left["Resource"] = json!(a);
                let mut right = st.clone();
                right["Resource"] = json!(b);
                pieces.extend(split_statement(left, limit));
                pieces.extend(split_statement(right, limit));
            }
            _ => pieces.push(st),
        }
    }
    let mut docs: Vec<Vec<Value>> = vec![Vec::new()];
    for st in pieces {
        let mut candidate = docs.last().cloned().unwrap_or_default();
        candidate.push(st.clone());
        if policy_size(&document(candidate.clone())) <= limit || docs.last().is_some_and(Vec::is_empty) {
            *docs.last_mut().unwrap_or(&mut Vec::new()) = candidate;
        } else {
            docs.push(vec![st]);
        }
    }
    warnings.push(format!(
        "the policy would be {total} characters, over the {limit}-character limit: split into {} documents. To shrink it, give \
         groups of databases their own spec.aws.assumeRoleArn, or grant sts:AssumeRole by tag (--role-tag)",
        docs.len()
    ));
    docs.into_iter().map(document).collect()
}

fn split_statement(st: Value, limit: usize) -> Vec<Value> {
    split(vec![st], limit, &mut Vec::new()).into_iter().flat_map(|d| d["Statement"].as_array().cloned().unwrap_or_default()).collect()
}

/// The IRSA trust policy: the cluster's OIDC provider may assume the role for one ServiceAccount.
pub fn irsa_trust_policy(oidc_provider_arn: &str, namespace: &str, service_account: &str) -> Result<Value, String> {
    let issuer = oidc_provider_arn
        .split_once(":oidc-provider/")
        .map(|(_, issuer)| issuer.to_owned())
        .filter(|i| !i.is_empty() && oidc_provider_arn.starts_with("arn:"))
        .ok_or_else(|| format!("{oidc_provider_arn:?} is not an OIDC provider ARN (arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID)"))?;
    Ok(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{issuer}:sub"): format!("system:serviceaccount:{namespace}:{service_account}"),
                format!("{issuer}:aud"): "sts.amazonaws.com"
            }}
        }]
    }))
}

/// The EKS Pod Identity trust policy: the Pod Identity service may assume the role and tag the
/// session, and only for `namespace/service_account` (the session tags it sets), of
/// `cluster_arn` when given.
pub fn pod_identity_trust_policy(cluster_arn: Option<&str>, namespace: &str, service_account: &str) -> Result<Value, String> {
    let mut tags = serde_json::Map::new();
    tags.insert("aws:RequestTag/kubernetes-namespace".into(), json!(namespace));
    tags.insert("aws:RequestTag/kubernetes-service-account".into(), json!(service_account));
    if let Some(arn) = cluster_arn {
        let valid =
            arn.starts_with("arn:") && arn.split(':').nth(2) == Some("eks") && arn.split(':').nth(5).is_some_and(|r| r.starts_with("cluster/") && r.len() > 8);
        if !valid {
            return Err(format!("{arn:?} is not an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME)"));
        }
        tags.insert("aws:RequestTag/eks-cluster-arn".into(), json!(arn));
    }
    Ok(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PortcullisPodIdentity",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": tags}
        }]
    }))
}

#[cfg(test)]
#[path = "iam_tests.rs"]
mod tests;
