//! Conditions from sample observations, and which of them warn.

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::aws::rds::CheckStatus;
use crate::operator::database::children::tests::{ORDERS, db};

fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn aws(status: CheckStatus, reason: &'static str) -> AwsCheck {
    AwsCheck { status, reason, message: format!("{reason}!"), engine_version: Some("16.3".into()), ..AwsCheck::not_checked("") }
}

fn pods(available: i32) -> Deployment {
    Deployment { status: Some(DeploymentStatus { available_replicas: Some(available), ..Default::default() }), ..Default::default() }
}

fn sample() -> Database {
    let mut d = db(ORDERS);
    d.metadata.generation = Some(3);
    d
}

fn of<'a>(plan: &'a Plan, type_: &str) -> (&'a str, &'a str) {
    let c = find(&plan.status.conditions, type_).unwrap_or_else(|| panic!("no {type_} in {:?}", plan.status.conditions));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn an_invalid_spec_gives_valid_and_ready_false_and_nothing_else() {
    let error = FieldError { field: "spec.aws.externalId", message: "only used with spec.aws.assumeRoleArn".into() };
    let plan = conditions(&sample(), Findings::Invalid(&error), &at(100));
    let types: Vec<&str> = plan.status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [types::VALID, types::READY]);
    assert_eq!(of(&plan, types::VALID), ("False", "InvalidSpec"));
    assert_eq!(of(&plan, types::READY), ("False", "InvalidSpec"));
    assert!(plan.status.conditions[0].message.starts_with("spec.aws.externalId: "));
    assert_eq!((plan.status.proxy_endpoint.as_deref(), plan.status.observed_generation), (None, Some(3)));
    assert_eq!(plan.warnings.len(), 1, "Valid turned False: one Warning");
    assert!(!plan.unchanged);
}

#[test]
fn a_valid_spec_reports_pods_aws_and_the_proxys_own_conditions_in_ready() {
    let check = aws(CheckStatus::True, "Enabled");
    let deployment = pods(1);
    let mut d = sample();
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(of(&plan, types::VALID), ("True", "SpecValid"));
    assert_eq!(of(&plan, types::PROXY_AVAILABLE), ("True", "PodsAvailable"));
    assert_eq!(of(&plan, types::IAM_AUTH_ENABLED), ("True", "Enabled"));
    assert_eq!(of(&plan, types::READY), ("Unknown", "WaitingForProxy"), "the proxy has not reported yet");
    assert_eq!(plan.status.proxy_endpoint.as_deref(), Some("portcullis-orders.shop.svc:5432"));
    assert_eq!((plan.status.resolved_region.as_deref(), plan.status.engine_version.as_deref()), (Some("eu-west-1"), Some("16.3")));
    assert!(plan.warnings.is_empty());

    let reported = vec![condition(types::CREDENTIALS_RESOLVED, "True", "Resolved"), condition(types::UPSTREAM_REACHABLE, "True", "Reachable")];
    d.status = Some(DatabaseStatus { conditions: reported.clone(), ..Default::default() });
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(of(&plan, types::READY), ("True", "Ready"));

    d.status =
        Some(DatabaseStatus { conditions: vec![reported[0].clone(), condition(types::UPSTREAM_REACHABLE, "False", "ConnectTimeout")], ..Default::default() });
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(of(&plan, types::READY), ("False", "ConnectTimeout"));
}

#[test]
fn the_first_problem_is_readys_reason() {
    let off = aws(CheckStatus::False, "Disabled");
    let plan = conditions(&sample(), Findings::Valid { deployment: None, aws: &off, upstream: None }, &at(100));
    assert_eq!(of(&plan, types::PROXY_AVAILABLE), ("False", "NoPodsAvailable"));
    assert_eq!(of(&plan, types::READY), ("False", "NoPodsAvailable"));
    assert_eq!(of(&plan, types::IAM_AUTH_ENABLED), ("False", "Disabled"));
    assert_eq!(plan.warnings, vec![("Disabled".to_owned(), "IamAuthEnabled: Disabled!".to_owned())], "IAM auth off warns; no pods does not");
}

#[test]
fn an_unchanged_world_plans_no_write_and_keeps_transition_times() {
    let check = aws(CheckStatus::Unknown, "NotChecked");
    let deployment = pods(2);
    let mut d = sample();
    let first = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    d.status = Some(first.status.clone());
    let again = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(500));
    assert!(again.unchanged, "{:?}", again.status);
    assert_eq!(again.status, first.status);
    assert!(again.status.conditions.iter().all(|c| c.last_transition_time == at(100)));
    d.metadata.generation = Some(4);
    assert!(!conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(500)).unchanged, "a new generation is written");
}

#[test]
fn warning_events_for_valid_and_iam_auth_turning_false_only() {
    for type_ in [types::VALID, types::IAM_AUTH_ENABLED] {
        let bad = condition(type_, "False", "Off");
        assert!(warns(&bad, None), "{type_} False from the start");
        assert!(warns(&bad, Some(&condition(type_, "True", "On"))), "{type_} True -> False");
        assert!(warns(&bad, Some(&condition(type_, "Unknown", "NotChecked"))), "{type_} Unknown -> False");
        assert!(warns(&bad, Some(&condition(type_, "False", "Other"))), "{type_} False for a new reason");
        assert!(!warns(&bad, Some(&bad)), "{type_} still False for the same reason");
        assert!(!warns(&condition(type_, "True", "On"), Some(&bad)), "{type_} recovered");
        assert!(!warns(&condition(type_, "Unknown", "NotChecked"), None), "{type_} Unknown");
    }
    for type_ in [types::PROXY_AVAILABLE, types::READY] {
        let bad = condition(type_, "False", "NoPodsAvailable");
        assert!(!warns(&bad, None), "{type_} False on a new Database is no Warning");
        assert!(!warns(&bad, Some(&condition(type_, "True", "PodsAvailable"))), "{type_} True -> False is no Warning");
    }
}

#[test]
fn an_external_endpoint_is_reported_with_the_service_port_when_it_names_none() {
    let check = aws(CheckStatus::True, "Enabled");
    let deployment = pods(1);
    let mut d = sample();
    assert_eq!(conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100)).status.external_endpoint, None);
    d.spec.proxy.external_endpoint = Some("db.example.com".into());
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(plan.status.external_endpoint.as_deref(), Some("db.example.com:5432"));
    d.spec.proxy.external_endpoint = Some("[2001:db8::1]:15432".into());
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(plan.status.external_endpoint.as_deref(), Some("[2001:db8::1]:15432"));
    assert!(crate::operator::database::children::server_names(&d).contains(&"2001:db8::1".to_owned()));
    let invalid = conditions(&d, Findings::Invalid(&crate::crd::validate::FieldError { field: "spec", message: "x".into() }), &at(100));
    assert_eq!(invalid.status.external_endpoint, None, "an invalid Database reports no endpoints");
}

#[test]
fn an_endpoint_outside_the_allow_list_or_a_missing_ca_is_upstream_configured_false_and_not_ready() {
    let check = aws(CheckStatus::True, "Enabled");
    let deployment = pods(1);
    let d = sample();
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: None }, &at(100));
    assert_eq!(of(&plan, types::UPSTREAM_CONFIGURED), ("True", "Configured"));
    let problem = crate::operator::database::upstream::Problem { reason: "CaSecretMissing", message: "Secret \"rds-ca\" … does not exist".into() };
    let plan = conditions(&d, Findings::Valid { deployment: Some(&deployment), aws: &check, upstream: Some(&problem) }, &at(100));
    assert_eq!(of(&plan, types::UPSTREAM_CONFIGURED), ("False", "CaSecretMissing"));
    assert_eq!(of(&plan, types::READY), ("False", "CaSecretMissing"));
    assert!(!plan.warnings.is_empty(), "a Warning Event goes with it");
}
