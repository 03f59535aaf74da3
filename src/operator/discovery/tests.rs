use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::plan::*;
use crate::aws::inventory::{Endpoint, EndpointType};
use crate::crd::Database;
use crate::crd::v1alpha1::{DatabaseDiscovery, DiscoveryType};

fn discovery() -> DatabaseDiscovery {
    let mut d: DatabaseDiscovery = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "DatabaseDiscovery",
        "metadata": {"name": "prod", "namespace": "dbs", "uid": "disc-uid"},
        "spec": {"aws": [{"name": "main", "types": ["rds", "aurora"], "regions": ["us-east-1", "eu-west-1"], "tags": {"env": "prod"}}],
                 "template": {"labels": {"team": "data"}}}
    }))
    .unwrap();
    d.metadata.generation = Some(1);
    d
}

fn endpoint(id: &str, region: &str, kind: EndpointType) -> Endpoint {
    Endpoint {
        type_: if kind == EndpointType::Instance { DiscoveryType::Rds } else { DiscoveryType::Aurora },
        endpoint_type: kind,
        id: id.into(),
        endpoint_id: None,
        host: format!("{id}.abc.{region}.rds.amazonaws.com"),
        port: 5432,
        engine: "postgres".into(),
        engine_version: Some("16.3".into()),
        region: region.into(),
        account_id: Some("123456789012".into()),
        resource_id: Some("db-ABC".into()),
        tags: BTreeMap::from([("env".into(), "prod".into()), ("aws:cloudformation:stack-name".into(), "Orders Stack!".into())]),
        skip: None,
    }
}

fn found(endpoints: Vec<Endpoint>) -> Vec<Found<'static>> {
    vec![Found { matcher: "main", assume_role_arn: None, external_id: None, endpoints, failed_regions: BTreeSet::new() }]
}

fn owned(mut db: Database) -> Database {
    db.metadata.owner_references = Some(vec![OwnerReference {
        uid: "disc-uid".into(),
        name: "prod".into(),
        kind: "DatabaseDiscovery".into(),
        api_version: "portcullis.io/v1alpha1".into(),
        ..Default::default()
    }]);
    db
}

#[test]
fn tags_match_exact_values_wildcards_and_everything() {
    let tags = BTreeMap::from([("env".to_owned(), "prod".to_owned()), ("team".to_owned(), "a".to_owned())]);
    let want = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
    assert!(tags_match(&want(&[("env", "prod")]), &tags));
    assert!(tags_match(&want(&[("team", "*")]), &tags));
    assert!(tags_match(&want(&[("*", "*")]), &tags));
    assert!(tags_match(&want(&[]), &tags));
    assert!(!tags_match(&want(&[("env", "dev")]), &tags));
    assert!(!tags_match(&want(&[("owner", "*")]), &tags));
}

#[test]
fn tags_become_valid_labels() {
    assert_eq!(label_key("aws:cloudformation:stack-name").as_deref(), Some("aws-cloudformation-stack-name"));
    assert_eq!(label_key("portcullis.io/region"), None);
    assert_eq!(label_key("!!!"), None);
    assert_eq!(label_value("Orders Stack!"), "Orders-Stack");
    assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    assert_eq!(label_value(""), "");
}

#[test]
fn new_endpoints_get_stable_names_and_collisions_a_hash() {
    let d = discovery();
    let eps = vec![
        endpoint("orders", "us-east-1", EndpointType::Instance),
        endpoint("orders", "eu-west-1", EndpointType::Instance),
        endpoint("ledger", "us-east-1", EndpointType::Primary),
        endpoint("ledger", "us-east-1", EndpointType::Reader),
        endpoint("1st", "us-east-1", EndpointType::Instance),
    ];
    let hand_written: Database = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ledger", "namespace": "dbs"}, "spec": {"protocol": "postgres", "endpoint": "x:5432"}}))
    .unwrap();
    let c = changes(&d, &found(eps.clone()), std::slice::from_ref(&hand_written), "disc-uid");
    let names: BTreeSet<String> = c.create.iter().map(|w| w.database.name_any()).collect();
    assert_eq!(c.create.len(), 5);
    assert!(names.contains("orders") && names.contains("ledger-reader") && names.contains("db-1st"), "{names:?}");
    assert!(!names.contains("ledger"), "a hand-written Database keeps its name: {names:?}");
    assert!(names.iter().any(|n| n.starts_with("ledger-") && n.len() == "ledger-".len() + 6), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("orders-") && n.len() == "orders-".len() + 6), "{names:?}");
    let orders = c.create.iter().find(|w| w.database.name_any() == "orders").unwrap();
    let labels = orders.database.labels();
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(labels.get("team").map(String::as_str), Some("data"));
    assert_eq!(labels.get("aws-cloudformation-stack-name").map(String::as_str), Some("Orders-Stack"));
    assert_eq!(labels.get(labels::ENDPOINT_TYPE).map(String::as_str), Some("instance"));
    assert_eq!(labels.get(labels::ACCOUNT_ID).map(String::as_str), Some("123456789012"));
    assert_eq!(orders.database.spec.aws.rds.as_ref().unwrap().instance_id.as_deref(), Some("orders"));

    // The next sync with the same world: the owned Databases keep their names and nothing changes.
    let live: Vec<Database> = c.create.iter().map(|w| owned(w.database.clone())).chain([hand_written.clone()]).collect();
    let again = changes(&d, &found(eps.clone()), &live, "disc-uid");
    assert_eq!((again.create.len(), again.update.len(), again.delete.len(), again.unchanged), (0, 0, 0, 5));

    // A tag change updates; a vanished endpoint is deleted; the hand-written one is never touched.
    let mut changed = eps.clone();
    changed[0].tags.insert("env".into(), "prod".into());
    changed[0].tags.insert("tier".into(), "gold".into());
    changed.remove(3);
    let first = c.create.iter().find(|w| w.endpoint.key() == eps[0].key()).unwrap().database.name_any();
    let next = changes(&d, &found(changed), &live, "disc-uid");
    assert_eq!(next.update.iter().map(|w| w.database.name_any()).collect::<Vec<_>>(), vec![first]);
    assert_eq!(next.delete, vec!["ledger-reader"]);
    assert!(!next.delete.contains(&"ledger".to_owned()));
}

#[test]
fn a_region_that_failed_to_list_deletes_nothing() {
    let d = discovery();
    let eps = vec![endpoint("orders", "us-east-1", EndpointType::Instance), endpoint("reports", "eu-west-1", EndpointType::Instance)];
    let c = changes(&d, &found(eps), &[], "disc-uid");
    let live: Vec<Database> = c.create.iter().map(|w| owned(w.database.clone())).collect();
    let mut partial = found(vec![endpoint("orders", "us-east-1", EndpointType::Instance)]);
    partial[0].failed_regions.insert("eu-west-1".into());
    let next = changes(&d, &partial, &live, "disc-uid");
    assert!(next.delete.is_empty(), "{:?}", next.delete);
    let gone = changes(&d, &found(vec![endpoint("orders", "us-east-1", EndpointType::Instance)]), &live, "disc-uid");
    assert_eq!(gone.delete, vec!["reports"]);
}
