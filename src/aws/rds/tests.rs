//! The pure parts of the RDS check: endpoint matching, versions, verdicts, regions.

use aws_sdk_rds::config::Region;
use aws_sdk_rds::types::{DbCluster, DbInstance, Endpoint};
use aws_types::SdkConfig;

use super::found::{DbKind, Found, documentdb_blocker, documentdb_verdict, enable_command, same_host, version_below};
use super::*;
use crate::crd::v1alpha1::{AwsSpec, RdsRef};

fn spec(protocol: Protocol, endpoint: &str, aws: AwsSpec) -> DatabaseSpec {
    DatabaseSpec { protocol, endpoint: Some(endpoint.to_owned()), aws, tls: Default::default(), proxy: Default::default() }
}

fn docdb(version: &str) -> Found {
    Found {
        kind: Some(DbKind::Cluster),
        id: "docs".into(),
        engine: "docdb".into(),
        version: Some(version.into()),
        resource_id: Some("cluster-ABC".into()),
        parameter_group: Some("docs-params".into()),
        ..Found::default()
    }
}

#[test]
fn versions_compare_part_by_part() {
    assert!(version_below("4.0.0", "5.0.0"));
    assert!(version_below("3.6", "5.0.0"));
    assert!(!version_below("5.0.0", "5.0.0"));
    assert!(!version_below("5.0", "5.0.0"));
    assert!(!version_below("10.0.0", "5.0.0"));
    assert!(!version_below("8.0.mysql_aurora.3.05.2", "5.0.0"));
    assert!(version_below("4.9.99", "5.0.0"));
    assert!(version_below("", "5.0.0"));
}

#[test]
fn hosts_match_exactly_without_case_or_trailing_dot() {
    assert!(same_host("Orders.abc.us-east-1.RDS.amazonaws.com", "orders.abc.us-east-1.rds.amazonaws.com"));
    assert!(same_host("orders.abc.us-east-1.rds.amazonaws.com.", "orders.abc.us-east-1.rds.amazonaws.com"));
    assert!(!same_host("evil-orders.abc.us-east-1.rds.amazonaws.com", "orders.abc.us-east-1.rds.amazonaws.com"));
    assert!(!same_host("orders.abc.us-east-1.rds.amazonaws.com", "abc.us-east-1.rds.amazonaws.com"));
    assert!(!same_host("", ""));
}

#[test]
fn cluster_endpoints_include_reader_and_custom_endpoints() {
    let cluster = DbCluster::builder()
        .db_cluster_identifier("orders")
        .engine("aurora-postgresql")
        .endpoint("orders.cluster-abc.us-east-1.rds.amazonaws.com")
        .reader_endpoint("orders.cluster-ro-abc.us-east-1.rds.amazonaws.com")
        .custom_endpoints("reports.cluster-custom-abc.us-east-1.rds.amazonaws.com")
        .build();
    let found = Found::from_cluster(&cluster);
    for host in [
        "orders.cluster-abc.us-east-1.rds.amazonaws.com",
        "ORDERS.cluster-ro-abc.us-east-1.rds.amazonaws.com",
        "reports.cluster-custom-abc.us-east-1.rds.amazonaws.com",
    ] {
        assert!(found.serves(host), "{host}");
    }
    assert!(!found.serves("orders.abc.us-east-1.rds.amazonaws.com"));
    assert_eq!(found.name(), "Aurora cluster orders");
    assert_eq!(found.reference().to_string(), "cluster orders");
}

#[test]
fn aurora_members_have_iam_switched_on_their_cluster() {
    let instance = DbInstance::builder()
        .db_instance_identifier("orders-1")
        .db_cluster_identifier("orders")
        .engine("aurora-postgresql")
        .endpoint(Endpoint::builder().address("orders-1.abc.us-east-1.rds.amazonaws.com").port(5432).build())
        .build();
    let found = Found::from_instance(&instance);
    assert!(found.serves("orders-1.abc.us-east-1.rds.amazonaws.com"));
    assert_eq!(found.iam_owner(), (DbKind::Cluster, "orders"));
    let standalone = Found::from_instance(&DbInstance::builder().db_instance_identifier("solo").build());
    assert_eq!(standalone.iam_owner(), (DbKind::Instance, "solo"));
    assert_eq!(standalone.reference().to_string(), "instance solo");
    assert_eq!(
        enable_command(DbKind::Instance, "solo", "us-east-1"),
        "aws rds modify-db-instance --db-instance-identifier solo --enable-iam-database-authentication --apply-immediately --region us-east-1"
    );
}

#[test]
fn documentdb_needs_5_0_and_tls() {
    let old = documentdb_blocker(&docdb("4.0.0"), "us-east-1").expect("too old");
    assert_eq!((old.status, old.reason, old.engine_version.as_deref()), (CheckStatus::False, "EngineTooOld", Some("4.0.0")));
    assert!(old.message.contains("5.0"), "{}", old.message);

    let current = docdb("5.0.0");
    assert!(documentdb_blocker(&current, "us-east-1").is_none());
    let off = documentdb_verdict(&current, Some("disabled"), "us-east-1");
    assert_eq!((off.status, off.reason), (CheckStatus::False, "TlsDisabled"));
    assert!(off.message.contains("docs-params") && off.message.contains("ParameterValue=enabled"), "{}", off.message);

    for tls in [None, Some("enabled"), Some("tls1.2+")] {
        let ok = documentdb_verdict(&current, tls, "us-east-1");
        assert_eq!((ok.status, ok.reason, ok.resource_id.as_deref()), (CheckStatus::True, "Enabled", Some("cluster-ABC")), "{tls:?}");
        assert!(ok.message.contains("MONGODB-AWS available"));
    }

    let aurora = Found { engine: "aurora-postgresql".into(), version: Some("16.1".into()), ..docdb("16.1") };
    assert_eq!(documentdb_blocker(&aurora, "us-east-1").map(|c| c.reason), Some("EndpointMismatch"));
}

#[test]
fn region_comes_from_spec_then_host_then_sdk() {
    let sdk = SdkConfig::builder().region(Region::new("eu-west-1")).build();
    let host = "orders.abc.us-east-2.rds.amazonaws.com";
    let with_region = spec(Protocol::Postgres, host, AwsSpec { region: Some("ap-south-1".into()), ..Default::default() });
    assert_eq!(pick_region(&with_region, host, &sdk).unwrap(), "ap-south-1");
    let plain = spec(Protocol::Postgres, host, AwsSpec::default());
    assert_eq!(pick_region(&plain, host, &sdk).unwrap(), "us-east-2");
    assert_eq!(pick_region(&plain, "db.internal", &sdk).unwrap(), "eu-west-1");
    let none = pick_region(&plain, "db.internal", &SdkConfig::builder().build()).unwrap_err();
    assert_eq!(none.reason, "CheckFailed");
}

#[tokio::test]
async fn dynamodb_and_unknown_hosts_are_not_checked() {
    let sdk = crate::aws::AwsContext::from_sdk_config(SdkConfig::builder().build());
    let dynamo = DatabaseSpec { endpoint: None, ..spec(Protocol::Dynamodb, "", AwsSpec::default()) };
    let check = check_database(&dynamo, &sdk, Caller::Operator).await;
    assert_eq!((check.status, check.reason), (CheckStatus::Unknown, "NotChecked"));
    assert!(check.message.contains("DynamoDB"));

    let private = spec(Protocol::Postgres, "db.internal:5432", AwsSpec::default());
    let check = check_database(&private, &sdk, Caller::Operator).await;
    assert_eq!((check.status.as_str(), check.reason), ("Unknown", "NotChecked"));
    assert!(check.message.contains("spec.aws.rds.instanceId") && check.message.contains("the operator cannot tell"), "{}", check.message);
    assert!(!check.retry_soon && !check.throttled);
    let check = check_database(&private, &sdk, Caller::Doctor).await;
    assert!(check.message.contains("portcullis doctor cannot tell"), "{}", check.message);
}

#[test]
fn blank_identifiers_are_ignored() {
    let rds = RdsRef { instance_id: Some(" ".into()), cluster_id: Some("orders".into()), resource_id: None };
    let s = spec(Protocol::Postgres, "x:1", AwsSpec { rds: Some(rds), ..Default::default() });
    let ids = Ids::from_spec(&s);
    assert_eq!((ids.instance, ids.cluster), (None, Some("orders")));
}

#[test]
fn throttling_is_told_apart_from_other_failures() {
    use crate::aws::is_throttling_code;
    for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
        assert!(is_throttling_code(Some(code)), "{code}");
    }
    for code in [Some("AccessDenied"), Some("DBInstanceNotFound"), None] {
        assert!(!is_throttling_code(code), "{code:?}");
    }
}
