use super::*;

#[test]
fn engines_that_cannot_use_iam_are_skipped_with_the_reason() {
    assert!(engine_blocker("mariadb", Some("10.5.16"), None).unwrap().contains("10.6 or later"));
    assert_eq!(engine_blocker("mariadb", Some("10.6.14"), None), None);
    assert_eq!(engine_blocker("mariadb", Some("11.4.3"), None), None);
    assert!(engine_blocker("aurora-mysql", Some("5.7"), Some("serverless")).unwrap().contains("Serverless v1"));
    assert_eq!(engine_blocker("aurora-postgresql", Some("15.4"), Some("provisioned")), None);
    assert!(engine_blocker("oracle-ee", Some("19"), None).unwrap().contains("oracle-ee"));
    assert_eq!(engine_blocker("postgres", Some("16.3"), None), None);
}

#[test]
fn accounts_come_from_arns_and_keys_are_stable_per_endpoint() {
    assert_eq!(account_of_arn(Some("arn:aws:rds:us-east-1:123456789012:db:orders")).as_deref(), Some("123456789012"));
    assert_eq!(account_of_arn(Some("arn:aws:rds:us-east-1:abc:db:orders")), None);
    assert_eq!(account_of_arn(None), None);
    let e = Endpoint {
        type_: DiscoveryType::Aurora,
        endpoint_type: EndpointType::Reader,
        id: "ledger".into(),
        endpoint_id: None,
        host: "h".into(),
        port: 5432,
        engine: "aurora-postgresql".into(),
        engine_version: None,
        region: "us-east-1".into(),
        account_id: Some("123456789012".into()),
        resource_id: None,
        tags: Default::default(),
        skip: None,
    };
    assert_eq!(e.key(), "123456789012/us-east-1/aurora/ledger/reader");
    assert_eq!(e.protocol(), Some(Protocol::Postgres));
    assert_eq!(protocol_of_engine("MYSQL"), Some(Protocol::Mysql));
}
