//! Table-driven tests of every authorization rule.

use std::collections::BTreeMap;

use super::*;
use crate::crd::v1alpha1::AccessRoleSpec;

fn role(ns: &str, name: &str, yaml: &str) -> AccessRole {
    let spec: AccessRoleSpec = serde_yaml::from_str(yaml).expect("test role parses");
    let mut r = AccessRole::new(name, spec);
    r.metadata.namespace = Some(ns.to_owned());
    r
}

fn alice() -> Identity {
    Identity { user: "alice".into(), groups: vec!["dev".into()], ..Default::default() }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn decide(identity: &Identity, db: &str, db_labels: &BTreeMap<String, String>, user: &str, name: Option<&str>, roles: &[AccessRole]) -> Decision {
    let request = Request { database: DatabaseRef { namespace: "team", name: db, labels: db_labels }, db_user: user, db_name: name };
    authorize(identity, &request, roles)
}

fn allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

const DEV_ORDERS: &str = "
subjects: [{kind: Group, name: dev}]
allow: {databases: [orders], dbUsers: [app], dbNames: [orders]}
";

#[test]
fn every_rule_in_one_table() {
    let prod = labels(&[("env", "prod")]);
    let none = labels(&[]);
    // (description, roles, database, labels, db user, db name, expected allow)
    type Case<'a> = (&'a str, Vec<AccessRole>, &'a str, &'a BTreeMap<String, String>, &'a str, Option<&'a str>, bool);
    let cases: Vec<Case> = vec![
        ("default deny: no roles at all", vec![], "orders", &none, "app", Some("orders"), false),
        ("group subject allows the exact route", vec![role("team", "r", DEV_ORDERS)], "orders", &none, "app", Some("orders"), true),
        ("other db user is not allowed", vec![role("team", "r", DEV_ORDERS)], "orders", &none, "admin", Some("orders"), false),
        ("other db name is not allowed", vec![role("team", "r", DEV_ORDERS)], "orders", &none, "app", Some("postgres"), false),
        ("other database is not allowed", vec![role("team", "r", DEV_ORDERS)], "billing", &none, "app", Some("orders"), false),
        ("role in another namespace does not apply", vec![role("other", "r", DEV_ORDERS)], "orders", &none, "app", Some("orders"), false),
        (
            "user subject",
            vec![role("team", "r", "subjects: [{kind: User, name: alice}]\nallow: {databases: ['*'], dbUsers: ['*'], dbNames: ['*']}")],
            "x",
            &none,
            "y",
            Some("z"),
            true,
        ),
        (
            "subject of another user does not apply",
            vec![role("team", "r", "subjects: [{kind: User, name: bob}]\nallow: {databases: ['*'], dbUsers: ['*'], dbNames: ['*']}")],
            "x",
            &none,
            "y",
            Some("z"),
            false,
        ),
        (
            "label selector matches",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databaseSelector: {matchLabels: {env: prod}}, dbUsers: [app], dbNames: ['*']}",
            )],
            "orders",
            &prod,
            "app",
            Some("any"),
            true,
        ),
        (
            "label selector does not match",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databaseSelector: {matchLabels: {env: prod}}, dbUsers: [app], dbNames: ['*']}",
            )],
            "orders",
            &none,
            "app",
            Some("any"),
            false,
        ),
        (
            "allow with omitted dbUsers allows nothing",
            vec![role("team", "r", "subjects: [{kind: Group, name: dev}]\nallow: {databases: ['*'], dbNames: ['*']}")],
            "orders",
            &none,
            "app",
            Some("orders"),
            false,
        ),
        (
            "allow with omitted databases allows nothing",
            vec![role("team", "r", "subjects: [{kind: Group, name: dev}]\nallow: {dbUsers: ['*'], dbNames: ['*']}")],
            "orders",
            &none,
            "app",
            Some("orders"),
            false,
        ),
        (
            "deny wins over allow in the same role",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databases: ['*'], dbUsers: ['*'], dbNames: ['*']}\ndeny: {dbUsers: [postgres]}",
            )],
            "orders",
            &none,
            "postgres",
            Some("orders"),
            false,
        ),
        (
            "deny wins over allow in another role",
            vec![role("team", "a", DEV_ORDERS), role("team", "d", "subjects: [{kind: User, name: alice}]\ndeny: {databaseSelector: {}}")],
            "orders",
            &none,
            "app",
            Some("orders"),
            false,
        ),
        (
            "deny that does not match leaves allow in force",
            vec![role("team", "a", DEV_ORDERS), role("team", "d", "subjects: [{kind: Group, name: dev}]\ndeny: {dbUsers: [postgres]}")],
            "orders",
            &none,
            "app",
            Some("orders"),
            true,
        ),
        (
            "deny of another subject does not apply",
            vec![role("team", "a", DEV_ORDERS), role("team", "d", "subjects: [{kind: User, name: bob}]\ndeny: {}")],
            "orders",
            &none,
            "app",
            Some("orders"),
            true,
        ),
        (
            "no db name (dynamodb) skips the db name check",
            vec![role("team", "r", "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [reader]}")],
            "orders",
            &none,
            "reader",
            None,
            true,
        ),
        (
            "no db name yet: a deny of some db names does not refuse the session",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [app], dbNames: ['*']}\ndeny: {databases: [orders], dbNames: [reports]}",
            )],
            "orders",
            &none,
            "app",
            None,
            true,
        ),
        (
            "the same deny refuses the named db name once it is known",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [app], dbNames: ['*']}\ndeny: {databases: [orders], dbNames: [reports]}",
            )],
            "orders",
            &none,
            "app",
            Some("reports"),
            false,
        ),
        (
            "... and allows the others",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [app], dbNames: ['*']}\ndeny: {databases: [orders], dbNames: [reports]}",
            )],
            "orders",
            &none,
            "app",
            Some("catalog"),
            true,
        ),
        (
            "no db name yet: a deny of every db name (omitted) refuses",
            vec![role("team", "a", DEV_ORDERS), role("team", "d", "subjects: [{kind: Group, name: dev}]\ndeny: {databases: [orders], dbUsers: [app]}")],
            "orders",
            &none,
            "app",
            None,
            false,
        ),
        (
            "no db name yet: a deny of `*` db names refuses",
            vec![role("team", "a", DEV_ORDERS), role("team", "d", "subjects: [{kind: Group, name: dev}]\ndeny: {databases: [orders], dbNames: ['*']}")],
            "orders",
            &none,
            "app",
            None,
            false,
        ),
        ("no db name yet: an allow limited to some db names lets the session start", vec![role("team", "a", DEV_ORDERS)], "orders", &none, "app", None, true),
        (
            "matchExpressions NotIn",
            vec![role(
                "team",
                "r",
                "subjects: [{kind: Group, name: dev}]\nallow: {databaseSelector: {matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}, dbUsers: ['*'], dbNames: ['*']}",
            )],
            "orders",
            &prod,
            "app",
            Some("x"),
            false,
        ),
    ];
    for (what, roles, db, db_labels, user, name, expect) in cases {
        let d = decide(&alice(), db, db_labels, user, name, &roles);
        assert_eq!(allowed(&d), expect, "{what}: got {d:?}");
    }
}

#[test]
fn service_account_subject_uses_the_roles_namespace_by_default() {
    let r = role("team", "r", "subjects: [{kind: ServiceAccount, name: worker}]\nallow: {databases: ['*'], dbUsers: ['*'], dbNames: ['*']}");
    let sa = Identity { user: "system:serviceaccount:team:worker".into(), ..Default::default() };
    let other = Identity { user: "system:serviceaccount:other:worker".into(), ..Default::default() };
    assert!(allowed(&decide(&sa, "orders", &labels(&[]), "app", Some("x"), std::slice::from_ref(&r))));
    assert!(!allowed(&decide(&other, "orders", &labels(&[]), "app", Some("x"), &[r])));
}

#[test]
fn denial_reasons_name_what_failed() {
    let none = labels(&[]);
    let d = decide(&alice(), "orders", &none, "app", Some("orders"), &[]);
    assert!(matches!(&d, Decision::Deny(DenyReason::NoRoleForSubject { .. })), "{d:?}");
    let Decision::Deny(reason) = d else { unreachable!() };
    assert!(reason.to_string().contains("no AccessRole in namespace \"team\" grants user \"alice\""), "{reason}");

    let d = decide(&alice(), "orders", &none, "admin", Some("orders"), &[role("team", "r", DEV_ORDERS)]);
    let Decision::Deny(reason) = d else { panic!("expected deny") };
    assert_eq!(
        reason.to_string(),
        "AccessRole(s) [\"team/r\"] apply to user \"alice\" but none allows database \"orders\" as db user \"admin\" and db name \"orders\""
    );

    let deny = role("team", "block", "subjects: [{kind: Group, name: dev}]\ndeny: {dbUsers: [app]}");
    let d = decide(&alice(), "orders", &none, "app", Some("orders"), &[role("team", "r", DEV_ORDERS), deny]);
    assert!(matches!(&d, Decision::Deny(DenyReason::ExplicitlyDenied { role, .. }) if role == "team/block"), "{d:?}");
}

#[test]
fn certificate_route_limits_the_request() {
    let mut id = alice();
    id.route = Some(Route { database: Some("orders".into()), db_user: Some("app".into()), db_name: None });
    let roles = [role("team", "r", "subjects: [{kind: Group, name: dev}]\nallow: {databases: ['*'], dbUsers: ['*'], dbNames: ['*']}")];
    let none = labels(&[]);
    assert!(allowed(&decide(&id, "orders", &none, "app", Some("x"), &roles)));
    let d = decide(&id, "orders", &none, "admin", Some("x"), &roles);
    assert!(matches!(&d, Decision::Deny(DenyReason::OutsideCertificateRoute { field: "db user", .. })), "{d:?}");
    let d = decide(&id, "billing", &none, "app", Some("x"), &roles);
    assert!(matches!(&d, Decision::Deny(DenyReason::OutsideCertificateRoute { field: "database", .. })), "{d:?}");
}

#[test]
fn audit_queries_follows_the_allowing_roles() {
    let quiet =
        role("team", "q", "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [app], dbNames: [orders]}\naudit: {queries: false}");
    let d = decide(&alice(), "orders", &labels(&[]), "app", Some("orders"), std::slice::from_ref(&quiet));
    assert_eq!(d, Decision::Allow { roles: vec!["team/q".into()], audit_queries: false });
    let d = decide(&alice(), "orders", &labels(&[]), "app", Some("orders"), &[quiet, role("team", "r", DEV_ORDERS)]);
    assert!(matches!(d, Decision::Allow { audit_queries: true, .. }));
}

#[test]
fn route_uri_round_trips_with_odd_characters() {
    let route = Route { database: Some("orders".into()), db_user: Some("a&b=c".into()), db_name: Some("ünï".into()) };
    let uri = route.to_uri();
    assert!(uri.starts_with(ROUTE_URI_PREFIX_FOR_TESTS));
    assert_eq!(Route::from_uri(&uri).unwrap().unwrap(), route);
    assert!(Route::from_uri("portcullis:route?bogus=1").unwrap().is_err());
    assert!(Route::from_uri("spiffe://x").is_none());
}

/// `kubectl describe csr` prints SAN URIs through a format string: names must carry no `%`,
/// and URIs written by older clients (`%2F`) still parse.
#[test]
fn route_uris_of_plain_names_carry_no_percent_sign() {
    let route = Route { database: Some("shop/orders".into()), db_user: Some("app@x.y-z_1".into()), db_name: Some("orders".into()) };
    let uri = route.to_uri();
    assert_eq!(uri, format!("{ROUTE_URI_PREFIX_FOR_TESTS}database=shop/orders&dbUser=app@x.y-z_1&dbName=orders"));
    assert_eq!(Route::from_uri(&uri).unwrap().unwrap(), route);
    let old = format!("{ROUTE_URI_PREFIX_FOR_TESTS}database=shop%2Forders&dbUser=app");
    assert_eq!(Route::from_uri(&old).unwrap().unwrap().database.as_deref(), Some("shop/orders"));
}

const ROUTE_URI_PREFIX_FOR_TESTS: &str = identity::ROUTE_URI_PREFIX;

/// Four roles, one with a deny: what `db ls` shows for alice (group dev) on each database, and
/// every listed pair is what `authorize` allows while every denied one is refused.
#[test]
fn the_grant_lists_what_authorize_allows_and_nothing_else() {
    let roles = vec![
        role("team", "dev-orders", "subjects: [{kind: Group, name: dev}]\nallow: {databases: [orders], dbUsers: [app, report], dbNames: [orders, stats]}\n"),
        role(
            "team",
            "dev-prod",
            "subjects: [{kind: Group, name: dev}]\nallow: {databaseSelector: {matchLabels: {env: prod}}, dbUsers: [readonly, postgres], dbNames: ['*']}\ndeny: {dbUsers: [postgres]}\n",
        ),
        role("team", "dev-no-payroll", "subjects: [{kind: User, name: alice}]\ndeny: {databases: [orders], dbNames: [stats]}\n"),
        role("team", "ops-only", "subjects: [{kind: Group, name: ops}]\nallow: {databases: [orders, billing], dbUsers: [admin], dbNames: ['*']}\n"),
        role("elsewhere", "dev-other-ns", "subjects: [{kind: Group, name: dev}]\nallow: {databases: [billing], dbUsers: [app], dbNames: [billing]}\n"),
    ];
    let prod = labels(&[("env", "prod")]);
    let none = labels(&[]);
    let db = |name: &'static str, l: &'static BTreeMap<String, String>| DatabaseRef { namespace: "team", name, labels: l };
    let (prod, none): (&'static _, &'static _) = (Box::leak(Box::new(prod)), Box::leak(Box::new(none)));

    let orders = grant(&alice(), &db("orders", none), &roles).expect("orders is reachable");
    assert_eq!(orders.roles, ["team/dev-orders"]);
    assert_eq!((orders.db_users.as_slice(), orders.db_names.as_slice()), (&["app".to_owned(), "report".to_owned()][..], &["orders".to_owned()][..]));
    assert_eq!(orders.denied, ["db name stats"]);
    let ledger = grant(&alice(), &db("ledger", prod), &roles).expect("ledger (env=prod) is reachable");
    assert_eq!((ledger.db_users.as_slice(), ledger.db_names.as_slice()), (&["readonly".to_owned()][..], &["*".to_owned()][..]));
    assert_eq!(ledger.denied, ["db user postgres"]);
    assert_eq!(grant(&alice(), &db("billing", none), &roles), None, "only ops, and dev in another namespace");
    assert_eq!(grant(&Identity { user: "bob".into(), groups: vec!["sales".into()], ..Default::default() }, &db("orders", none), &roles), None);

    // The listing agrees with the decision function, pair by pair.
    for (name, l, g) in [("orders", none, &orders), ("ledger", prod, &ledger)] {
        for user in &g.db_users {
            for db_name in g.db_names.iter().map(|n| if n == "*" { "anything" } else { n }) {
                assert!(allowed(&decide(&alice(), name, l, user, Some(db_name), &roles)), "{name}: {user}/{db_name} listed but refused");
            }
        }
    }
    assert!(!allowed(&decide(&alice(), "orders", none, "app", Some("stats"), &roles)));
    assert!(!allowed(&decide(&alice(), "ledger", prod, "postgres", Some("x"), &roles)));
    assert!(!allowed(&decide(&alice(), "billing", none, "app", Some("billing"), &roles)));
}
