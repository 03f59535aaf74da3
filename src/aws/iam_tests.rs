//! Tests of policy generation.

use super::*;

fn manifests(yaml: &str) -> (Vec<Database>, Vec<AccessRole>) {
    let mut dbs = Vec::new();
    let mut roles = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str() {
            Some("Database") => dbs.push(serde_yaml::from_value(v).unwrap()),
            Some("AccessRole") => roles.push(serde_yaml::from_value(v).unwrap()),
            _ => {}
        }
    }
    for d in &mut dbs {
        let d: &mut Database = d;
        d.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for r in &mut roles {
        let r: &mut AccessRole = r;
        r.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    (dbs, roles)
}

const BASE: &str = "
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: orders}
spec:
  protocol: postgres
  endpoint: orders.cluster-abc.us-east-1.rds.amazonaws.com:5432
  aws: {accountId: '123456789012', rds: {clusterId: orders, resourceId: cluster-ABC}, enableIamAuth: true}
---
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: events}
spec:
  protocol: dynamodb
  aws: {region: eu-west-1, accountId: '123456789012'}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: devs}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders, events], dbUsers: [app, reader], dbNames: ['*']}
";

fn opts() -> PolicyOptions {
    PolicyOptions { kind: PolicyKind::Managed, role_tag: None }
}

#[test]
fn least_privilege_names_each_db_user_role_and_cluster() {
    let (dbs, roles) = manifests(BASE);
    let set = proxy_policy(&dbs, &roles, &opts());
    assert_eq!(set.documents.len(), 1);
    let text = serde_json::to_string(&set.documents[0]).unwrap();
    assert!(text.contains("arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/app"), "{text}");
    assert!(text.contains("arn:aws:rds-db:us-east-1:123456789012:dbuser:cluster-ABC/reader"), "{text}");
    assert!(text.contains("arn:aws:iam::123456789012:role/reader"), "dynamodb db users are roles: {text}");
    assert!(text.contains("rds:ModifyDBCluster") && text.contains("arn:aws:rds:us-east-1:123456789012:cluster:orders"), "{text}");
    assert!(!text.contains("ModifyDBInstance"), "{text}");
}

#[test]
fn no_modify_permission_without_enable_iam_auth() {
    let (dbs, roles) = manifests(&BASE.replace(", enableIamAuth: true", ""));
    let text = serde_json::to_string(&proxy_policy(&dbs, &roles, &opts()).documents).unwrap();
    assert!(!text.contains("ModifyDB"), "{text}");
}

#[test]
fn oversized_policies_are_split_under_the_limit_with_a_warning() {
    let users: Vec<String> = (0..400).map(|i| format!("user{i:04}")).collect();
    let (dbs, roles) = manifests(&BASE.replace("dbUsers: [app, reader]", &format!("dbUsers: [{}]", users.join(", "))));
    for kind in [PolicyKind::UserInline, PolicyKind::Managed, PolicyKind::RoleInline] {
        let set = proxy_policy(&dbs, &roles, &PolicyOptions { kind, role_tag: None });
        assert!(set.documents.len() > 1, "{kind:?}");
        for d in &set.documents {
            assert!(policy_size(d) <= kind.limit(), "{kind:?}: {} > {}", policy_size(d), kind.limit());
        }
        assert!(set.warnings.iter().any(|w| w.contains("split into")), "{:?}", set.warnings);
        let all = serde_json::to_string(&set.documents).unwrap();
        assert!(users.iter().all(|u| all.contains(&format!("cluster-ABC/{u}\""))), "no grant is lost in the split");
    }
}

#[test]
fn tag_condition_replaces_the_role_list() {
    let (dbs, roles) = manifests(BASE);
    let set = proxy_policy(&dbs, &roles, &PolicyOptions { kind: PolicyKind::Managed, role_tag: Some(("portcullis".into(), "db".into())) });
    let text = serde_json::to_string(&set.documents).unwrap();
    assert!(text.contains("aws:ResourceTag/portcullis") && !text.contains("role/reader"), "{text}");
}

#[test]
fn trust_policy_binds_one_service_account() {
    let arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
    let doc = irsa_trust_policy(arn, "portcullis", "orders-proxy").unwrap();
    let cond = &doc["Statement"][0]["Condition"]["StringEquals"];
    assert_eq!(cond["oidc.eks.us-east-1.amazonaws.com/id/ABC:sub"], "system:serviceaccount:portcullis:orders-proxy");
    assert_eq!(cond["oidc.eks.us-east-1.amazonaws.com/id/ABC:aud"], "sts.amazonaws.com");
    assert!(irsa_trust_policy("oidc.eks.us-east-1.amazonaws.com", "a", "b").is_err());
}

#[test]
fn pod_identity_trust_names_the_service_and_one_service_account() {
    let doc = pod_identity_trust_policy(Some("arn:aws:eks:us-east-1:123456789012:cluster/prod"), "portcullis-system", "portcullis-operator").unwrap();
    let st = &doc["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "pods.eks.amazonaws.com");
    assert_eq!(st["Action"], serde_json::json!(["sts:AssumeRole", "sts:TagSession"]));
    let cond = &st["Condition"]["StringEquals"];
    assert_eq!(cond["aws:RequestTag/kubernetes-namespace"], "portcullis-system");
    assert_eq!(cond["aws:RequestTag/kubernetes-service-account"], "portcullis-operator");
    assert_eq!(cond["aws:RequestTag/eks-cluster-arn"], "arn:aws:eks:us-east-1:123456789012:cluster/prod");
    let any_cluster = pod_identity_trust_policy(None, "a", "b").unwrap();
    assert!(any_cluster["Statement"][0]["Condition"]["StringEquals"].get("aws:RequestTag/eks-cluster-arn").is_none());
    for bad in ["prod", "arn:aws:iam::123456789012:role/prod", "arn:aws:eks:us-east-1:123456789012:cluster/"] {
        assert!(pod_identity_trust_policy(Some(bad), "a", "b").is_err(), "{bad}");
    }
}

#[test]
fn each_identity_gets_its_own_policy_with_what_it_does() {
    let extra = "
---
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: partner}
spec:
  protocol: postgres
  endpoint: partner.abc.us-east-1.rds.amazonaws.com:5432
  aws: {accountId: '222222222222', assumeRoleArn: 'arn:aws:iam::222222222222:role/partner-access', rds: {instanceId: partner}}
status:
  aws: {resourceId: db-PARTNER}
";
    let (dbs, roles) = manifests(&format!("{BASE}{extra}").replace("databases: [orders, events]", "databases: [orders, events, partner]"));
    let discovery: DatabaseDiscovery = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "DatabaseDiscovery", "metadata": {"name": "d", "namespace": "default"},
        "spec": {"aws": [{"types": ["rds"], "regions": ["us-east-1"]},
                         {"types": ["aurora"], "regions": ["eu-west-1"], "aws": {"assumeRoleArn": "arn:aws:iam::333333333333:role/finder"}}]}
    }))
    .unwrap();
    let (policies, _) = role_policies(&dbs, &roles, &[discovery], &opts());
    let text = |role: &str| serde_json::to_string(&policies.iter().find(|p| p.role == role).unwrap_or_else(|| panic!("{role}")).documents).unwrap();
    let proxy = text("proxy");
    assert!(proxy.contains("dbuser:cluster-ABC/app") && !proxy.contains("db-PARTNER"), "{proxy}");
    assert!(proxy.contains("role/partner-access") && !proxy.contains("DescribeDB"), "{proxy}");
    let operator = text("operator");
    assert!(operator.contains("rds:ModifyDBCluster") && operator.contains("rds:DescribeDBProxies"), "{operator}");
    assert!(operator.contains("role/partner-access") && operator.contains("role/finder") && !operator.contains("rds-db:connect"), "{operator}");
    let partner = text("arn:aws:iam::222222222222:role/partner-access");
    assert!(partner.contains("arn:aws:rds-db:us-east-1:222222222222:dbuser:db-PARTNER/app"), "status.aws.resourceId names it exactly: {partner}");
    assert!(partner.contains("arn:aws:rds:us-east-1:222222222222:db:partner") && !partner.contains("ListTagsForResource"), "{partner}");
    let finder = text("arn:aws:iam::333333333333:role/finder");
    assert!(finder.contains("rds:ListTagsForResource") && !finder.contains("rds-db"), "{finder}");
}
