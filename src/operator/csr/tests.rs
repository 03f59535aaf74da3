use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::operator::context::Settings;

fn settings() -> Settings {
    Settings {
        namespace: "portcullis-system".into(),
        proxy_image: "x".into(),
        allowed_endpoints: vec![],
        server_cert_ttl: Duration::from_secs(86400),
        max_client_cert_ttl: Duration::from_secs(12 * 3600),
        default_client_cert_ttl: Duration::from_secs(8 * 3600),
        aws_checks: false,
        aws_recheck: Duration::from_secs(600),
        watch_namespace: None,
        proxy_defaults: Default::default(),
    }
}

fn role(yaml: &str) -> Arc<AccessRole> {
    Arc::new(serde_yaml::from_str(yaml).unwrap())
}

fn database(ns: &str, name: &str) -> Arc<Database> {
    Arc::new(serde_yaml::from_str(&format!("apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: {name}, namespace: {ns}, labels: {{env: prod}}}}\nspec: {{protocol: postgres, endpoint: 'x.y.us-east-1.rds.amazonaws.com'}}\n")).unwrap())
}

fn dev_role() -> Arc<AccessRole> {
    role(
        "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: dev-read, namespace: shop, uid: u1}\n\
          spec: {subjects: [{kind: Group, name: dev}], allow: {databases: [orders], dbUsers: [reader], dbNames: ['*']}, maxSessionTtl: 1h}\n",
    )
}

fn alice(route: Option<Route>) -> Identity {
    Identity { user: "alice".into(), groups: vec!["dev".into()], route, not_after: 0 }
}

fn route(db: &str, user: Option<&str>) -> Option<Route> {
    Some(Route { database: Some(db.into()), db_user: user.map(Into::into), db_name: None })
}

#[test]
fn an_allowed_route_is_approved_with_the_roles_ttl_cap() {
    let v = decide(&alice(route("shop/orders", Some("reader"))), None, &[dev_role()], &[database("shop", "orders")], &settings());
    assert_eq!(v, Verdict::Approve { ttl: Duration::from_secs(3600), roles: vec!["shop/dev-read".into()] });
}

#[test]
fn a_shorter_request_is_kept_and_a_longer_one_is_capped() {
    let dbs = [database("shop", "orders")];
    let short = decide(&alice(route("shop/orders", None)), Some(Duration::from_secs(600)), &[dev_role()], &dbs, &settings());
    assert!(matches!(short, Verdict::Approve { ttl, .. } if ttl == Duration::from_secs(600)));
    let long = decide(&alice(None), Some(Duration::from_secs(86400)), &[dev_role()], &dbs, &settings());
    assert!(matches!(long, Verdict::Approve { ttl, .. } if ttl == Duration::from_secs(3600)), "{long:?}");
}

#[test]
fn other_users_routes_and_databases_are_denied_with_reasons() {
    let dbs = [database("shop", "orders"), database("shop", "billing")];
    let bob = Identity { user: "bob".into(), groups: vec!["sales".into()], route: None, not_after: 0 };
    let Verdict::Deny { reason, message } = decide(&bob, None, &[dev_role()], &dbs, &settings()) else { panic!() };
    assert_eq!(reason, "NoAccessRole");
    assert!(message.contains("bob") && message.contains("sales"), "{message}");
    let Verdict::Deny { message, .. } = decide(&alice(route("shop/orders", Some("admin"))), None, &[dev_role()], &dbs, &settings()) else { panic!() };
    assert!(message.contains("admin"), "{message}");
    let Verdict::Deny { message, .. } = decide(&alice(route("shop/billing", None)), None, &[dev_role()], &dbs, &settings()) else { panic!() };
    assert!(message.contains("billing"), "{message}");
    let Verdict::Deny { reason, .. } = decide(&alice(route("shop/missing", None)), None, &[dev_role()], &dbs, &settings()) else { panic!() };
    assert_eq!(reason, "NoSuchDatabase");
    let Verdict::Deny { reason, .. } = decide(&alice(route("orders", None)), None, &[dev_role()], &dbs, &settings()) else { panic!() };
    assert_eq!(reason, "BadRoute");
}

#[test]
fn a_deny_rule_wins_for_a_full_route() {
    let deny = role(
        "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {name: no-prod, namespace: shop, uid: u2}\n\
          spec: {subjects: [{kind: User, name: alice}], deny: {databases: [orders]}}\n",
    );
    let v = decide(&alice(route("shop/orders", Some("reader"))), None, &[dev_role(), deny], &[database("shop", "orders")], &settings());
    assert!(matches!(v, Verdict::Deny { reason: "NoAccessRole", ref message } if message.contains("no-prod")), "{v:?}");
}
