//! `DatabaseDiscovery` against a real kube-apiserver and moto with its IAM auth on: two
//! regions, two accounts (the second reached only through an assumed role), a role that may not
//! DescribeDBClusters, tag changes and deletions in AWS, and hand-written Databases beside the
//! discovered ones. Shares the operator group's control plane and takes its turn.

#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use portcullis::crd::{Database, DatabaseDiscovery};

use crate::operator::{CONTROL_PLANE, TURN, condition, database, wait_condition};
use crate::support::control_plane::{namespace, shared_control_plane};
use crate::support::moto::Moto;
use crate::support::operator_harness::*;
use crate::support::*;

const EXTERNAL_ID: &str = "ext-42";

/// moto prepared by tests/support/moto_discovery_setup.py (auth on afterwards).
fn prepare(moto: &Moto, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        Command::new("python3")
            .arg(repo().join("tests/support/moto_discovery_setup.py"))
            .args(["--endpoint", &moto.url(), "--external-id", EXTERNAL_ID])
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).expect("moto_discovery_setup.py prints JSON")
}

/// Runs Python with boto3 as moto's admin user (account 123456789012).
fn as_admin(moto: &Moto, setup: &serde_json::Value, code: &str) {
    let prelude = format!(
        "import boto3\ndef rds(region='us-east-1'):\n    return boto3.client('rds', region_name=region, endpoint_url='{}', aws_access_key_id='{}', aws_secret_access_key='{}')\n",
        moto.url(),
        setup["admin_key"].as_str().unwrap(),
        setup["admin_secret"].as_str().unwrap()
    );
    run_ok(Command::new("python3").arg("-c").arg(format!("{prelude}{code}")));
}

fn operator_env(setup: &serde_json::Value) -> Vec<(String, String)> {
    static_key_env(setup["access_key"].as_str().unwrap(), setup["secret_key"].as_str().unwrap())
}

async fn discovered(api: &Api<Database>, discovery: &str) -> BTreeMap<String, Database> {
    let lp = ListParams::default().labels(&format!("portcullis.io/discovery={discovery}"));
    api.list(&lp).await.unwrap().items.into_iter().map(|d| (d.name_any(), d)).collect()
}

fn label<'a>(db: &'a Database, key: &str) -> Option<&'a str> {
    db.labels().get(key).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_rds_and_aurora_across_regions_and_accounts() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let moto = Moto::start();
    let setup = prepare(&moto, &[]);
    let hosts = &setup["hosts"];
    let role = setup["discovery_role"].as_str().unwrap().to_owned();
    let limited = setup["limited_role"].as_str().unwrap().to_owned();
    let op = Operator::start_with_env(&cp, dir.path(), &moto.url(), "op-discovery", operator_env(&setup));
    let ns = namespace(&admin, "disc").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);

    // Written by hand: one elsewhere, one in the second account through its role.
    dbs.create(&PostParams::default(), &database(&ns, "manual", serde_json::json!({"protocol": "postgres", "endpoint": "localhost:5432"}))).await.unwrap();
    let by_hand = serde_json::json!({"protocol": "postgres", "endpoint": format!("{}:5432", hosts["partner"].as_str().unwrap()),
        "aws": {"assumeRoleArn": role, "externalId": EXTERNAL_ID}});
    dbs.create(&PostParams::default(), &database(&ns, "partner-by-hand", by_hand)).await.unwrap();

    let discoveries: Api<DatabaseDiscovery> = Api::namespaced(admin.clone(), &ns);
    let spec: DatabaseDiscovery = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "DatabaseDiscovery",
        "metadata": {"name": "prod", "namespace": ns},
        "spec": {
            "interval": "10s",
            "template": {"labels": {"owner": "platform"}},
            "aws": [
                {"name": "main", "types": ["rds", "aurora"], "regions": ["us-east-1", "eu-west-1"], "tags": {"env": "prod"}},
                {"name": "partner", "types": ["rds"], "regions": ["us-east-1"], "tags": {"env": "*"},
                 "aws": {"assumeRoleArn": role, "externalId": EXTERNAL_ID}},
                {"name": "limited", "types": ["aurora"], "regions": ["us-east-1"], "aws": {"assumeRoleArn": limited}},
            ],
        },
    }))
    .unwrap();
    discoveries.create(&PostParams::default(), &spec).await.unwrap();

    let expected: BTreeSet<String> = ["orders", "ledger", "ledger-reader", "reports", "partner", "partner-off"].map(String::from).into();
    eventually("the discovered Databases", Duration::from_secs(40), || async {
        discovered(&dbs, "prod").await.keys().cloned().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let found = discovered(&dbs, "prod").await;
    let orders = &found["orders"];
    for (key, value) in [
        ("env", "prod"),
        ("team", "payments"),
        ("aws-cloudformation-stack-name", "Orders-Stack"),
        ("owner", "platform"),
        ("portcullis.io/region", "us-east-1"),
        ("portcullis.io/account-id", "123456789012"),
        ("portcullis.io/engine", "postgres"),
        ("portcullis.io/engine-version", "16.3"),
        ("portcullis.io/endpoint-type", "instance"),
        ("portcullis.io/matcher", "main"),
    ] {
        assert_eq!(label(orders, key), Some(value), "{key} on orders: {:?}", orders.labels());
    }
    assert_eq!(orders.spec.endpoint.as_deref(), Some(format!("{}:5432", hosts["orders"].as_str().unwrap()).as_str()));
    assert_eq!(orders.owner_references()[0].kind, "DatabaseDiscovery");
    let reader = &found["ledger-reader"];
    assert_eq!(label(reader, "portcullis.io/endpoint-type"), Some("reader"));
    assert_eq!(reader.spec.endpoint.as_deref(), Some(format!("{}:5432", hosts["ledger-reader"].as_str().unwrap()).as_str()));
    assert_eq!(reader.spec.aws.rds.as_ref().and_then(|r| r.cluster_id.as_deref()), Some("ledger"));
    assert_eq!(label(&found["ledger"], "portcullis.io/engine"), Some("aurora-postgresql"));
    assert_eq!(label(&found["reports"], "portcullis.io/region"), Some("eu-west-1"));
    assert_eq!(found["reports"].spec.protocol, portcullis::crd::Protocol::Mysql);
    let partner = &found["partner"];
    assert_eq!(label(partner, "portcullis.io/account-id"), Some("222222222222"));
    assert_eq!(partner.spec.aws.assume_role_arn.as_deref(), Some(role.as_str()), "the proxy uses the matcher's role too");
    assert_eq!(partner.spec.aws.external_id.as_deref(), Some(EXTERNAL_ID));

    // Status: the limited role cannot list clusters; the other matchers synced anyway.
    let d = discoveries.get("prod").await.unwrap();
    let status = d.status.clone().unwrap();
    let synced = status.conditions.iter().find(|c| c.type_ == "Synced").unwrap();
    assert_eq!(synced.status, "False", "{status:?}");
    assert!(synced.message.contains("rds:DescribeDBClusters") && synced.message.contains(&limited), "{}", synced.message);
    let matcher = |name: &str| status.matchers.iter().find(|m| m.name == name).unwrap().clone();
    let main = matcher("main");
    assert_eq!((main.found, main.identity.as_str()), (5, "operator"), "{main:?}");
    assert!(main.errors.is_empty() && main.last_success_time.is_some(), "{main:?}");
    assert!(main.skipped.iter().any(|s| s.name == "us-east-1/legacy" && s.reason.contains("10.6")), "{:?}", main.skipped);
    assert_eq!((matcher("partner").found, matcher("partner").identity), (2, role.clone()));
    assert!(matcher("limited").errors[0].contains("denied"), "{:?}", matcher("limited"));
    assert_eq!(status.databases, Some(6));

    // Every AWS call for a Database goes through its role: IAM auth on, and off with the fix.
    let db = wait_condition(&dbs, "partner-by-hand", "IamAuthEnabled", "True", &op).await;
    let aws = db.status.as_ref().and_then(|s| s.aws.clone()).unwrap();
    assert_eq!(aws.identity.as_deref(), Some(role.as_str()), "{aws:?}");
    assert!(aws.resource_id.as_deref().is_some_and(|r| r.starts_with("db-")), "{aws:?}");
    assert_eq!(aws.database.as_deref(), Some("instance partner"));
    let off = wait_condition(&dbs, "partner-off", "IamAuthEnabled", "False", &op).await;
    let (_, reason, message) = condition(&off, "IamAuthEnabled").unwrap();
    assert_eq!(reason, "Disabled", "{message}");
    assert!(message.contains("--enable-iam-database-authentication") && message.contains("partner-off"), "{message}");

    // AWS changes: a tag on orders, reports deleted. The next sync follows.
    as_admin(
        &moto,
        &setup,
        "r = rds()\narn = r.describe_db_instances(DBInstanceIdentifier='orders')['DBInstances'][0]['DBInstanceArn']\n\
         r.add_tags_to_resource(ResourceName=arn, Tags=[{'Key': 'team', 'Value': 'billing'}])\n\
         r.remove_tags_from_resource(ResourceName=arn, TagKeys=['aws:cloudformation:stack-name'])\n\
         rds('eu-west-1').delete_db_instance(DBInstanceIdentifier='reports', SkipFinalSnapshot=True)\n",
    );
    eventually("the tag change and the deletion", Duration::from_secs(40), || async {
        let now = discovered(&dbs, "prod").await;
        now.get("orders").is_some_and(|o| label(o, "team") == Some("billing") && label(o, "aws-cloudformation-stack-name").is_none())
            && !now.contains_key("reports")
    })
    .await;
    for name in ["manual", "partner-by-hand"] {
        assert!(dbs.get_opt(name).await.unwrap().is_some(), "hand-written {name} survives");
    }

    // Nothing changed in AWS: a sync writes no Database.
    let writes = || op.metric_sum("portcullis_operator_api_writes_total{kind=\"Database\"");
    let success = |d: &DatabaseDiscovery| d.status.as_ref().and_then(|s| s.matchers.first()).and_then(|m| m.last_success_time.clone());
    let before = (writes(), success(&discoveries.get("prod").await.unwrap()));
    let start = Instant::now();
    while success(&discoveries.get("prod").await.unwrap()) == before.1 {
        assert!(start.elapsed() < Duration::from_secs(30), "no second sync:\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(writes(), before.0, "a sync with nothing changed wrote Databases");
    assert!(op.metric_sum("portcullis_operator_aws_calls_total{caller=\"discovery\"}") > 0.0);

    // The discovery goes: the garbage collector removes what it owned, and only that.
    discoveries.delete("prod", &Default::default()).await.unwrap();
    eventually("the owned Databases collected", Duration::from_secs(60), || async { discovered(&dbs, "prod").await.is_empty() }).await;
    for name in ["manual", "partner-by-hand"] {
        assert!(dbs.get_opt(name).await.unwrap().is_some(), "hand-written {name} survives the discovery's deletion");
    }
}

/// The DocumentDB management API stand-in (tests/support/docdb_api_standin.py) on a free port.
struct DocDbApi {
    port: u16,
    _proc: Proc,
}

impl DocDbApi {
    fn start(state: &std::path::Path, key: &str) -> DocDbApi {
        let mut child = Command::new("python3")
            .arg(repo().join("tests/support/docdb_api_standin.py"))
            .arg("--state")
            .arg(state)
            .args(["--key", key])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the DocumentDB API stand-in");
        let port = announced_port(&mut child, "the DocumentDB API stand-in");
        DocDbApi { port, _proc: Proc { child } }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documentdb_clusters_are_discovered_and_checked_through_the_docdb_api() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let state = dir.path().join("docdb.json");
    let cluster = |id: &str, version: &str, group: &str, env: &str| serde_json::json!({"id": id, "engine": "docdb", "version": version, "parameterGroup": group, "tags": {"env": env}, "members": [format!("{id}-1")]});
    let world = |extra: Vec<serde_json::Value>| {
        let mut clusters = vec![
            cluster("docs", "5.0.0", "tls-on", "prod"),
            cluster("old", "4.0.0", "tls-on", "prod"),
            cluster("notls", "5.0.0", "tls-off", "prod"),
            cluster("scratch", "5.0.0", "tls-on", "dev"),
            serde_json::json!({"id": "aurora-one", "engine": "aurora-postgresql", "version": "15.4", "tags": {"env": "prod"}}),
        ];
        clusters.extend(extra);
        serde_json::json!({"account": "123456789012", "region": "us-east-1", "clusters": clusters,
            "parameterGroups": {"tls-on": {"tls": "enabled", "audit_logs": "disabled"}, "tls-off": {"tls": "disabled"}}})
    };
    std::fs::write(&state, world(vec![]).to_string()).unwrap();
    let api = DocDbApi::start(&state, &format!("{ACCESS_KEY}:{SECRET_KEY}"));
    let mut env = static_key_env(ACCESS_KEY, SECRET_KEY);
    env.push(("AWS_ENDPOINT_URL_DOCDB".into(), format!("http://127.0.0.1:{}", api.port)));
    let op = Operator::start_with_env(&cp, dir.path(), NO_AWS, "op-docdb", env);
    let ns = namespace(&admin, "docdisc").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    // By hand, by endpoint only: the check finds the cluster behind it and its version.
    let old_host = "old.cluster-c0ffee.us-east-1.docdb.amazonaws.com";
    dbs.create(
        &PostParams::default(),
        &database(
            &ns,
            "old-by-hand",
            serde_json::json!({"protocol": "mongodb", "endpoint": format!("{old_host}:27017"), "aws": {"accountId": "123456789012"}}),
        ),
    )
    .await
    .unwrap();
    let discoveries: Api<DatabaseDiscovery> = Api::namespaced(admin.clone(), &ns);
    let spec: DatabaseDiscovery = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "DatabaseDiscovery",
        "metadata": {"name": "docs", "namespace": ns},
        "spec": {"interval": "10s", "aws": [{"name": "docdb", "types": ["docdb"], "regions": ["us-east-1"], "tags": {"env": "prod"}}]},
    }))
    .unwrap();
    discoveries.create(&PostParams::default(), &spec).await.unwrap();

    let expected: BTreeSet<String> = ["docs", "docs-reader", "notls", "notls-reader"].map(String::from).into();
    eventually("the discovered DocumentDB Databases", Duration::from_secs(40), || async {
        discovered(&dbs, "docs").await.keys().cloned().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let found = discovered(&dbs, "docs").await;
    let docs = &found["docs"];
    assert_eq!(docs.spec.protocol, portcullis::crd::Protocol::Mongodb);
    assert_eq!(docs.spec.endpoint.as_deref(), Some("docs.cluster-c0ffee.us-east-1.docdb.amazonaws.com:27017"));
    assert_eq!((label(docs, "portcullis.io/engine"), label(docs, "portcullis.io/engine-version")), (Some("docdb"), Some("5.0.0")));
    assert_eq!(label(&found["docs-reader"], "portcullis.io/endpoint-type"), Some("reader"));
    let status = discoveries.get("docs").await.unwrap().status.unwrap();
    assert_eq!(status.conditions.iter().find(|c| c.type_ == "Synced").map(|c| c.status.as_str()), Some("True"), "{status:?}");
    let skipped = &status.matchers[0].skipped;
    assert!(skipped.iter().any(|s| s.name == "us-east-1/old" && s.reason.contains("5.0")), "{skipped:?}");

    // The checks, through aws-sdk-docdb: version and the tls parameter.
    let db = wait_condition(&dbs, "docs", "IamAuthEnabled", "True", &op).await;
    let aws = db.status.as_ref().and_then(|s| s.aws.clone()).unwrap();
    assert_eq!((aws.database.as_deref(), aws.resource_id.as_deref()), (Some("cluster docs"), Some("cluster-DOCSRESOURCE")), "{aws:?}");
    let db = wait_condition(&dbs, "notls", "IamAuthEnabled", "False", &op).await;
    let (_, reason, message) = condition(&db, "IamAuthEnabled").unwrap();
    assert_eq!(reason, "TlsDisabled", "{message}");
    assert!(message.contains("tls-off") && message.contains("ParameterValue=enabled"), "{message}");
    let db = wait_condition(&dbs, "old-by-hand", "IamAuthEnabled", "False", &op).await;
    let (_, reason, message) = condition(&db, "IamAuthEnabled").unwrap();
    assert_eq!(reason, "EngineTooOld", "{message}");
    assert!(message.contains("4.0.0") && message.contains("--engine-version 5.0.0"), "{message}");

    // A new cluster appears and one goes: the next sync follows.
    let mut next = world(vec![cluster("fresh", "5.0.1", "tls-on", "prod")]);
    next["clusters"].as_array_mut().unwrap().retain(|c| c["id"] != "notls");
    std::fs::write(&state, next.to_string()).unwrap();
    let expected: BTreeSet<String> = ["docs", "docs-reader", "fresh", "fresh-reader"].map(String::from).into();
    eventually("the DocumentDB change", Duration::from_secs(40), || async {
        discovered(&dbs, "docs").await.keys().cloned().collect::<BTreeSet<_>>() == expected
    })
    .await;
}
