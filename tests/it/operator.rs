//! The operator against a real kube-apiserver, etcd and controller manager, running with the
//! least-privilege RBAC from `deploy/` as its own ServiceAccount; moto for the AWS side; real
//! PostgreSQL, psql and `portcullis db login` end to end. Tests take turns (one operator and
//! one leader Lease at a time).

// The machine lock (`machine_shared`, a std RwLock guard) is held for a whole test on purpose:
// it keeps the node tests out while these run.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use portcullis::crd::{AccessRole, Database};

use crate::support::control_plane::{ControlPlane, namespace, shared_control_plane};
use crate::support::moto::Moto;
use crate::support::operator_harness::*;
use crate::support::*;

/// This group's control plane (see `shared_control_plane`).
pub(crate) static CONTROL_PLANE: Mutex<Weak<ControlPlane>> = Mutex::new(Weak::new());

/// One operator (and one Lease holder) at a time.
pub(crate) static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn database(ns: &str, name: &str, spec: serde_json::Value) -> Database {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "Database",
        "metadata": {"name": name, "namespace": ns, "labels": {"env": "test"}},
        "spec": spec,
    }))
    .unwrap()
}

pub(crate) fn condition(db: &Database, type_: &str) -> Option<(String, String, String)> {
    let c = db.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub(crate) async fn wait_condition(api: &Api<Database>, name: &str, type_: &str, status: &str, op: &Operator) -> Database {
    let start = Instant::now();
    loop {
        let db = api.get(name).await.unwrap();
        if condition(&db, type_).is_some_and(|c| c.0 == status) {
            return db;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{name}: {type_} not {status}: {:?}\n{}", db.status, op.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn warning_events(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name) && e.type_.as_deref() == Some("Warning"))
        .collect()
}

async fn names<K>(client: &Client, ns: &str) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=portcullis-operator");
    Api::<K>::namespaced(client.clone(), ns).list(&lp).await.unwrap().items.iter().map(|o| o.name_any()).collect()
}

async fn child_names(client: &Client, ns: &str) -> BTreeMap<&'static str, Vec<String>> {
    BTreeMap::from([
        ("ServiceAccount", names::<ServiceAccount>(client, ns).await),
        ("ConfigMap", names::<ConfigMap>(client, ns).await),
        ("Secret", names::<Secret>(client, ns).await),
        ("Deployment", names::<Deployment>(client, ns).await),
        ("Service", names::<Service>(client, ns).await),
        ("RoleBinding", names::<RoleBinding>(client, ns).await),
    ])
}

fn pod_hash(dep: &Deployment) -> String {
    dep.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["portcullis.io/config-hash"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gets_its_proxy_objects_which_follow_spec_changes_and_go_with_it() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let op = Operator::start(&cp, dir.path(), NO_AWS, "op-lifecycle");
    let ns = namespace(&admin, "lifecycle").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = serde_json::json!({"protocol": "postgres", "endpoint": "localhost:5432", "aws": {"region": "eu-west-1"},
        "proxy": {"iamRoleArn": "arn:aws:iam::123456789012:role/orders-proxy"}});
    dbs.create(&PostParams::default(), &database(&ns, "orders", spec)).await.unwrap();

    let want = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    eventually("all six children", Duration::from_secs(30), || async {
        let c = child_names(&admin, &ns).await;
        c["Deployment"] == want(&["portcullis-orders"])
            && c["Service"].len() == 1
            && c["ConfigMap"].len() == 1
            && c["Secret"] == want(&["portcullis-orders-tls"])
            && c["ServiceAccount"].len() == 1
            && c["RoleBinding"].len() == 1
    })
    .await;
    let db = wait_condition(&dbs, "orders", "Valid", "True", &op).await;
    let status = db.status.clone().unwrap();
    assert_eq!(status.observed_generation, db.metadata.generation);
    assert_eq!(status.proxy_endpoint.as_deref(), Some(format!("portcullis-orders.{ns}.svc:5432").as_str()));
    assert_eq!(status.resolved_region.as_deref(), Some("eu-west-1"));
    let (s, reason, message) = condition(&db, "ProxyAvailable").unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("False", "NoPodsAvailable"), "no kubelet runs the pods: {message}");
    assert!(message.contains(&format!("kubectl -n {ns} describe deployment portcullis-orders")), "{message}");
    assert_eq!(condition(&db, "IamAuthEnabled").unwrap().1, "NotChecked", "localhost is not an RDS host");
    assert_eq!(condition(&db, "Ready").unwrap().0, "False");

    // IRSA annotation, owner references, hardened pods.
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), &ns).get("portcullis-orders").await.unwrap();
    assert_eq!(sa.annotations()["eks.amazonaws.com/role-arn"], "arn:aws:iam::123456789012:role/orders-proxy");
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let dep = deps.get("portcullis-orders").await.unwrap();
    assert_eq!(dep.owner_references()[0].uid, db.uid().unwrap());
    assert_eq!(dep.owner_references()[0].controller, Some(true));
    let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    let managers: Vec<String> = dep.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, vec!["portcullis-operator".to_string()], "one field manager");

    // A spec change rolls the pods (new config hash); the ServiceAccount goes when the spec
    // names an existing one instead.
    let before = pod_hash(&dep);
    let patch = serde_json::json!({"spec": {"proxy": {"iamRoleArn": null, "serviceAccountName": "existing-sa", "replicas": 2}}});
    dbs.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("the Deployment follows the spec", Duration::from_secs(30), || async {
        let d = deps.get("portcullis-orders").await.unwrap();
        pod_hash(&d) != before
            && d.spec.as_ref().unwrap().replicas == Some(2)
            && d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().service_account_name.as_deref() == Some("existing-sa")
    })
    .await;
    eventually("the operator's ServiceAccount is removed", Duration::from_secs(30), || async { child_names(&admin, &ns).await["ServiceAccount"].is_empty() })
        .await;
    let rb = Api::<RoleBinding>::namespaced(admin.clone(), &ns).get("portcullis-orders").await.unwrap();
    assert_eq!(rb.subjects.unwrap()[0].name, "existing-sa");
    assert_eq!(rb.role_ref.name, "portcullis-proxy");

    // Deleting the Database: the real garbage collector removes every child.
    dbs.delete("orders", &DeleteParams::foreground()).await.unwrap();
    eventually("children collected", Duration::from_secs(60), || async { child_names(&admin, &ns).await.values().all(|v| v.is_empty()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_database_gets_valid_false_a_warning_event_and_no_children() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let op = Operator::start(&cp, dir.path(), NO_AWS, "op-invalid");
    // Its own AWS identity, resolved at start: in /readyz and in one log line.
    eventually("the operator's AWS identity in /readyz", Duration::from_secs(15), || async {
        http_get(op.admin_port, "/readyz").contains("ready\naws credentials: environment")
    })
    .await;
    assert!(op.log().contains("the operator's AWS identity: credentials from environment"), "{}", op.log());
    let ns = namespace(&admin, "invalid").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = serde_json::json!({"protocol": "postgres", "endpoint": "localhost:5432", "aws": {"region": "eu-west-1", "externalId": "x"}});
    dbs.create(&PostParams::default(), &database(&ns, "broken", spec)).await.unwrap();
    let db = wait_condition(&dbs, "broken", "Valid", "False", &op).await;
    let (_, reason, message) = condition(&db, "Valid").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.aws.externalId") && message.contains("assumeRoleArn"), "{message}");
    assert_eq!(condition(&db, "Ready").unwrap().0, "False");
    eventually("a Warning Event", Duration::from_secs(10), || async {
        warning_events(&admin, &ns, "broken").await.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("spec.aws.externalId")))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child_names(&admin, &ns).await.values().all(|v| v.is_empty()), "no children for an invalid Database");
    // Fixing the spec brings the children.
    dbs.patch("broken", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"aws": {"externalId": null}}}))).await.unwrap();
    wait_condition(&dbs, "broken", "Valid", "True", &op).await;
    eventually("children after the fix", Duration::from_secs(30), || async { child_names(&admin, &ns).await["Deployment"].len() == 1 }).await;
}

/// What the proxy could not get past is in the status, not only in its refusals: an endpoint
/// outside the admin's allow-list, a CA Secret that is missing or holds no CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_outside_the_allow_list_or_a_missing_ca_secret_is_upstream_configured_false() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let op = Operator::start(&cp, dir.path(), NO_AWS, "op-upstream");
    let ns = namespace(&admin, "upstream").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let private = serde_json::json!({"protocol": "postgres", "endpoint": "db.internal:5432", "aws": {"region": "eu-west-1"}});
    dbs.create(&PostParams::default(), &database(&ns, "private", private)).await.unwrap();
    let noca = serde_json::json!({"protocol": "postgres", "endpoint": "127.0.0.1:5432", "aws": {"region": "eu-west-1"},
        "tls": {"mode": "verify-full", "caSecretRef": {"name": "rds-ca"}}});
    dbs.create(&PostParams::default(), &database(&ns, "noca", noca)).await.unwrap();

    let db = wait_condition(&dbs, "private", "UpstreamConfigured", "False", &op).await;
    let (_, reason, message) = condition(&db, "UpstreamConfigured").unwrap();
    assert_eq!(reason, "EndpointNotAllowed");
    assert!(
        message.contains("\"db.internal\"") && message.contains("--allowed-endpoint db.internal") && message.contains("operator.allowedEndpoints"),
        "{message}"
    );
    assert_eq!(condition(&db, "Ready").map(|c| (c.0, c.1)), Some(("False".into(), "EndpointNotAllowed".into())));
    eventually("a Warning Event", Duration::from_secs(10), || async {
        warning_events(&admin, &ns, "private").await.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("--allowed-endpoint db.internal")))
    })
    .await;

    let db = wait_condition(&dbs, "noca", "UpstreamConfigured", "False", &op).await;
    let (_, reason, message) = condition(&db, "UpstreamConfigured").unwrap();
    assert_eq!(reason, "CaSecretMissing");
    assert!(message.contains(&format!("kubectl -n {ns} create secret generic rds-ca")), "{message}");
    // A Secret without the key, then with a CA: the condition follows (the next reconcile is
    // nudged with an annotation instead of waiting the 30 s re-check).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let secret = serde_json::json!({"metadata": {"name": "rds-ca"}, "stringData": {"bundle.pem": "x"}});
    secrets.create(&PostParams::default(), &serde_json::from_value(secret).unwrap()).await.unwrap();
    let nudge = |n: u32| serde_json::json!({"metadata": {"annotations": {"test/nudge": n.to_string()}}});
    dbs.patch("noca", &PatchParams::default(), &Patch::Merge(nudge(1))).await.unwrap();
    eventually("CaSecretKeyMissing", Duration::from_secs(20), || async {
        condition(&dbs.get("noca").await.unwrap(), "UpstreamConfigured").is_some_and(|c| c.1 == "CaSecretKeyMissing" && c.2.contains("bundle.pem"))
    })
    .await;
    let pg = shared_postgres();
    let fixed = serde_json::json!({"stringData": {"ca.crt": std::fs::read_to_string(&pg.ca_file).unwrap()}});
    secrets.patch("rds-ca", &PatchParams::default(), &Patch::Merge(fixed)).await.unwrap();
    dbs.patch("noca", &PatchParams::default(), &Patch::Merge(nudge(2))).await.unwrap();
    wait_condition(&dbs, "noca", "UpstreamConfigured", "True", &op).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_with_nothing_changed_writes_nothing() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let ns = namespace(&admin, "restart").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    for i in 0..5 {
        let spec = serde_json::json!({"protocol": "postgres", "endpoint": format!("db{i}.internal:5432"), "aws": {"region": "us-east-1"}});
        dbs.create(&PostParams::default(), &database(&ns, &format!("db{i}"), spec)).await.unwrap();
    }
    let bad = serde_json::json!({"protocol": "postgres", "endpoint": "x.internal:5432"});
    dbs.create(&PostParams::default(), &database(&ns, "noregion", bad)).await.unwrap();
    apply_yaml(&admin, &format!("apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {{name: devs, namespace: {ns}}}\nspec: {{subjects: [{{kind: Group, name: dev}}], allow: {{databaseSelector: {{matchLabels: {{env: test}}}}, dbUsers: [app]}}}}\n")).await;

    let mut first = Operator::start(&cp, dir.path(), NO_AWS, "op-restart-1");
    let reconciled = || async {
        let all = dbs.list(&ListParams::default()).await.unwrap().items;
        let roles = Api::<AccessRole>::namespaced(admin.clone(), &ns).list(&ListParams::default()).await.unwrap().items;
        let state = (
            all.iter().filter(|d| condition(d, "Valid").is_some()).count(),
            roles.iter().map(|r| r.status.as_ref().and_then(|s| s.matched_databases)).collect::<Vec<_>>(),
            child_names(&admin, &ns).await["Deployment"].len(),
        );
        (state == (6, vec![Some(6)], 5), state)
    };
    let start = Instant::now();
    loop {
        let (done, state) = reconciled().await;
        if done {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not reconciled: {state:?}\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(first.metric_sum("portcullis_operator_api_writes_total") > 0.0);
    first.stop();
    assert!(first.log().contains("controllers stopped"), "graceful shutdown:\n{}", first.log());

    let versions = || async {
        let mut v = BTreeMap::new();
        for d in dbs.list(&ListParams::default()).await.unwrap().items {
            v.insert(format!("Database/{}", d.name_any()), d.resource_version());
        }
        for (kind, names) in child_names(&admin, &ns).await {
            v.insert(format!("{kind}/count"), Some(names.len().to_string()));
        }
        for s in Api::<Secret>::namespaced(admin.clone(), &ns).list(&ListParams::default()).await.unwrap().items {
            v.insert(format!("Secret/{}", s.name_any()), s.resource_version());
        }
        for d in Api::<Deployment>::namespaced(admin.clone(), &ns).list(&ListParams::default()).await.unwrap().items {
            v.insert(format!("Deployment/{}", d.name_any()), d.resource_version());
        }
        v
    };
    let before = versions().await;
    let second = Operator::start(&cp, dir.path(), NO_AWS, "op-restart-2");
    let start = Instant::now();
    while second.metric_sum("portcullis_operator_reconciles_total") < 7.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the second operator did not reconcile:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = second.metric_sum("portcullis_operator_api_writes_total");
    eprintln!("restart: {} reconciles, {writes} writes", second.metric_sum("portcullis_operator_reconciles_total"));
    assert_eq!(writes, 0.0, "a restart with nothing changed must not write:\n{}", http_get(second.admin_port, "/metrics"));
    assert_eq!(before, versions().await, "no object changed");

    // Right after the restart, a Database goes: the AccessRole's count follows, whichever of
    // its watch and the operator's cache sees the deletion first.
    let name = dbs.list(&ListParams::default()).await.unwrap().items[0].name_any();
    dbs.delete(&name, &DeleteParams::default()).await.unwrap();
    let roles: Api<AccessRole> = Api::namespaced(admin.clone(), &ns);
    eventually("matchedDatabases to drop to 5", Duration::from_secs(20), || async {
        roles.list(&ListParams::default()).await.unwrap().items.iter().all(|r| r.status.as_ref().and_then(|s| s.matched_databases) == Some(5))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_side_is_checked_and_iam_auth_turned_on_when_asked() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let moto = Moto::start();
    let created = run_ok(Command::new("python3").arg("-c").arg(format!(
        r#"
import boto3, json
rds = boto3.client("rds", region_name="us-east-1", endpoint_url="{}", aws_access_key_id="x", aws_secret_access_key="y")
out = {{}}
for name in ["iamoff", "enableme"]:
    i = rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.3", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="password123", EnableIAMDatabaseAuthentication=False)["DBInstance"]
    out[name] = i["Endpoint"]["Address"]
print(json.dumps(out))
"#,
        moto.url()
    )));
    let hosts: BTreeMap<String, String> = serde_json::from_slice(&created.stdout).unwrap();
    let op = Operator::start(&cp, dir.path(), &moto.url(), "op-aws");
    let ns = namespace(&admin, "aws").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let off = serde_json::json!({"protocol": "postgres", "endpoint": format!("{}:5432", hosts["iamoff"])});
    dbs.create(&PostParams::default(), &database(&ns, "iamoff", off)).await.unwrap();
    let enable = serde_json::json!({"protocol": "postgres", "endpoint": format!("{}:5432", hosts["enableme"]), "aws": {"enableIamAuth": true}});
    dbs.create(&PostParams::default(), &database(&ns, "enableme", enable)).await.unwrap();
    let mismatch = serde_json::json!({"protocol": "postgres", "endpoint": format!("{}:5432", hosts["iamoff"]), "aws": {"rds": {"instanceId": "enableme"}}});
    dbs.create(&PostParams::default(), &database(&ns, "mismatch", mismatch)).await.unwrap();

    let db = wait_condition(&dbs, "iamoff", "IamAuthEnabled", "False", &op).await;
    let (_, reason, message) = condition(&db, "IamAuthEnabled").unwrap();
    assert_eq!(reason, "Disabled");
    assert!(message.contains("--enable-iam-database-authentication") && message.contains("enableIamAuth"), "{message}");
    assert_eq!(condition(&db, "Ready").unwrap().0, "False");
    eventually("a Warning Event for IAM auth off", Duration::from_secs(10), || async {
        warning_events(&admin, &ns, "iamoff").await.iter().any(|e| e.reason.as_deref() == Some("Disabled"))
    })
    .await;

    let db = wait_condition(&dbs, "enableme", "IamAuthEnabled", "True", &op).await;
    assert!(db.status.as_ref().unwrap().engine_version.as_deref().is_some_and(|v| v.starts_with("16")), "{:?}", db.status);
    assert!(op.log().contains("ModifyDBInstance") || op.metric_sum("portcullis_operator_reconciles_total") > 0.0);
    let describe = run_ok(Command::new("python3").arg("-c").arg(format!(
        "import boto3;print(boto3.client('rds',region_name='us-east-1',endpoint_url='{}',aws_access_key_id='x',aws_secret_access_key='y').describe_db_instances(DBInstanceIdentifier='enableme')['DBInstances'][0]['IAMDatabaseAuthenticationEnabled'])",
        moto.url()
    )));
    assert_eq!(String::from_utf8_lossy(&describe.stdout).trim(), "True", "the operator turned IAM auth on in AWS");

    let db = wait_condition(&dbs, "mismatch", "IamAuthEnabled", "False", &op).await;
    let (_, reason, message) = condition(&db, "IamAuthEnabled").unwrap();
    assert_eq!(reason, "EndpointMismatch", "{message}");
}

/// `portcullis db login` (or `login`) as a user of the test cluster.
fn login(cp: &ControlPlane, user: &str, groups: &[&str], args: &[&str], out: &Path) -> Output {
    let kubeconfig = cp.kubeconfig(user, groups);
    Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).arg("--out").arg(out).args(["--timeout", "30s"]).env("KUBECONFIG", kubeconfig).output().unwrap()
}

fn cert_lifetime(path: &Path) -> (portcullis::authz::Identity, i64) {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_file(path).unwrap();
    let id = portcullis::authz::identity_from_certificate(&der).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    (id, lifetime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csr_signer_signs_for_allowed_users_capped_by_max_session_ttl_and_denies_others() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let _op = Operator::start(&cp, dir.path(), NO_AWS, "op-csr");
    let ns = namespace(&admin, "csr").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = serde_json::json!({"protocol": "postgres", "endpoint": "localhost:5432", "aws": {"region": "us-east-1"}});
    dbs.create(&PostParams::default(), &database(&ns, "orders", spec)).await.unwrap();
    apply_yaml(&admin, &format!("apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {{name: devs, namespace: {ns}}}\nspec: {{subjects: [{{kind: Group, name: dev}}], allow: {{databases: [orders], dbUsers: [app], dbNames: ['*']}}, maxSessionTtl: 30m}}\n")).await;

    // Allowed: a plain user in group dev, asking for 2h, gets at most 30m.
    let out_dir = dir.path().join("alice");
    let out = login(&cp, "alice", &["dev"], &["db", "login", "orders", "-n", &ns, "--db-user", "app", "--ttl", "2h"], &out_dir);
    assert!(out.status.success(), "{}", text(&out));
    // A readable expiry: UTC to the minute, and how long from now.
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    // (The role caps this one at 30 minutes.)
    assert!(said.contains(" UTC (in 30m)") || said.contains(" UTC (in 29m)"), "{said}");
    let (id, lifetime) = cert_lifetime(&out_dir.join("client.crt"));
    assert_eq!(id.user, "alice");
    assert!(id.groups.contains(&"dev".to_string()), "{:?}", id.groups);
    assert_eq!(id.route.as_ref().and_then(|r| r.database.clone()), Some(format!("{ns}/orders")));
    assert!(lifetime <= 30 * 60 + 60, "lifetime {lifetime}s exceeds maxSessionTtl 30m");
    assert!(lifetime >= 29 * 60, "lifetime {lifetime}s");
    assert!(out_dir.join("ca.crt").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out_dir.join("client.key")).unwrap().permissions().mode() & 0o777, 0o600);

    // A plain `login` (no route) for the same user is allowed too.
    let out = login(&cp, "alice", &["dev"], &["login"], &dir.path().join("alice-any"));
    assert!(out.status.success(), "{}", text(&out));

    // Denied: another group, another db user, an unknown database — with the reason.
    let out = login(&cp, "bob", &["sales"], &["db", "login", "orders", "-n", &ns, "--db-user", "app"], &dir.path().join("bob"));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("refused") && msg.contains("bob") && msg.contains("sales"), "{msg}");
    let out = login(&cp, "alice", &["dev"], &["db", "login", "orders", "-n", &ns, "--db-user", "postgres"], &dir.path().join("alice-pg"));
    assert!(!out.status.success() && text(&out).contains("postgres"), "{}", text(&out));
    let out = login(&cp, "alice", &["dev"], &["db", "login", "nope", "-n", &ns], &dir.path().join("alice-nope"));
    assert!(!out.status.success() && text(&out).contains("no Database"), "{}", text(&out));
    assert!(!dir.path().join("bob/client.crt").exists());

    // The reason is on the CSR itself (kubectl describe csr).
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = Api::all(admin.clone());
    let denied: Vec<_> = csrs.list(&ListParams::default()).await.unwrap().items.into_iter().filter(|c| c.spec.username.as_deref() == Some("bob")).collect();
    let cond = &denied[0].status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
    assert_eq!((cond.type_.as_str(), cond.reason.as_deref()), ("Denied", Some("NoAccessRole")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_the_operators_deployment_run_locally_serves_psql_and_revocation_ends_the_session() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let pg = shared_postgres();
    let dir = scratch();
    let op = Operator::start(&cp, dir.path(), NO_AWS, "op-e2e");
    let ns = namespace(&admin, "e2e").await;
    // The upstream CA as a Secret, as users would create it from the RDS bundle.
    let ca_pem = std::fs::read_to_string(&pg.ca_file).unwrap();
    let ca_secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "rds-ca"}, "stringData": {"ca.crt": ca_pem}})).unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &ca_secret).await.unwrap();
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = serde_json::json!({"protocol": "postgres", "endpoint": format!("127.0.0.1:{}", pg.port), "aws": {"region": REGION},
        "tls": {"mode": "verify-full", "caSecretRef": {"name": "rds-ca"}}});
    dbs.create(&PostParams::default(), &database(&ns, "orders", spec)).await.unwrap();
    let role = format!(
        "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {{name: devs, namespace: {ns}}}\nspec: {{subjects: [{{kind: Group, name: dev}}], allow: {{databases: [orders], dbUsers: [app], dbNames: [orders]}}, maxSessionTtl: 1h}}\n"
    );
    apply_yaml(&admin, &role).await;
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    eventually("the Deployment", Duration::from_secs(30), || async { deps.get_opt("portcullis-orders").await.unwrap().is_some() }).await;

    let port = free_port();
    let pod = LocalPod::start(&cp, &admin, &ns, "orders", dir.path(), port).await;
    let proxy_log = || pod.log();

    // The proxy reports into the Database status under its own field manager.
    let db = wait_condition(&dbs, "orders", "CredentialsResolved", "True", &op).await;
    let db = if condition(&db, "UpstreamReachable").is_some_and(|c| c.0 == "True") {
        db
    } else {
        wait_condition(&dbs, "orders", "UpstreamReachable", "True", &op).await
    };
    assert_eq!(db.status.as_ref().unwrap().credential_source.as_deref(), Some("environment"), "{:?}", db.status);
    assert!(db.managed_fields().iter().any(|m| m.manager.as_deref() == Some("portcullis-proxy") && m.subresource.as_deref() == Some("status")));
    assert!(condition(&db, "Valid").is_some(), "the operator's conditions survive the proxy's apply");

    // A certificate from the CSR flow; psql verifies the proxy by its Service name.
    let certs = dir.path().join("alice");
    let out = login(&cp, "alice", &["dev"], &["db", "login", "orders", "-n", &ns, "--db-user", "app", "--db-name", "orders"], &certs);
    assert!(out.status.success(), "{}", text(&out));
    let conninfo = format!(
        "host=portcullis-orders.{ns}.svc hostaddr=127.0.0.1 port={port} user=app dbname=orders sslmode=verify-full sslrootcert={0}/ca.crt sslcert={0}/client.crt sslkey={0}/client.key connect_timeout=10 gssencmode=disable",
        certs.display()
    );
    let out = psql(&conninfo, &["-c", "select current_user"]);
    assert!(out.status.success(), "{}\n{}", text(&out), proxy_log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");

    // A running session ends within 5 s of the AccessRole's removal; new ones are refused.
    let mut session = Command::new("psql")
        .args(["-X", "-A", "-t"])
        .arg(&conninfo)
        .args(["-c", "select pg_sleep(60)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(session.try_wait().unwrap().is_none(), "the session should be running");
    Api::<AccessRole>::namespaced(admin.clone(), &ns).delete("devs", &DeleteParams::default()).await.unwrap();
    let revoked = Instant::now();
    let status = loop {
        if let Some(s) = session.try_wait().unwrap() {
            break s;
        }
        assert!(revoked.elapsed() < Duration::from_secs(5), "the session outlived the revocation by 5 s:\n{}", proxy_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("session ended {:?} after the AccessRole was deleted", revoked.elapsed());
    assert!(!status.success());
    let out = psql(&conninfo, &["-c", "select 1"]);
    assert!(!out.status.success() && text(&out).contains("no AccessRole"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over_when_it_stops() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let dir = scratch();
    let mut leader = Operator::start(&cp, dir.path(), NO_AWS, "op-leader");
    // The standby is ready (so rolling updates proceed) but does not lead or reconcile.
    let standby = Operator::spawn(&cp, dir.path(), NO_AWS, "op-standby");
    let port = standby.admin_port;
    let standby_log = || standby.log();
    eventually("the standby waits for the Lease", Duration::from_secs(20), || async { standby_log().contains("another instance is the leader") }).await;
    assert!(http_get(port, "/readyz").contains("200 OK"), "a standby is ready to take over");
    assert!(http_get(port, "/metrics").contains("portcullis_operator_leader 0"), "a standby does not lead");
    let ns = namespace(&admin, "leader").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = serde_json::json!({"protocol": "postgres", "endpoint": "localhost:5432", "aws": {"region": "us-east-1"}});
    dbs.create(&PostParams::default(), &database(&ns, "first", spec.clone())).await.unwrap();
    wait_condition(&dbs, "first", "Valid", "True", &leader).await;
    assert!(!standby_log().contains("caches filled"), "the standby must not reconcile:\n{}", standby_log());

    // The leader releases the Lease on shutdown; the standby takes over and reconciles.
    leader.stop();
    let stopped = Instant::now();
    eventually("the standby becomes the leader", Duration::from_secs(20), || async { http_get(port, "/metrics").contains("portcullis_operator_leader 1") })
        .await;
    eprintln!("standby took over {:?} after the leader stopped", stopped.elapsed());
    dbs.create(&PostParams::default(), &database(&ns, "second", spec)).await.unwrap();
    eventually("the new leader reconciles", Duration::from_secs(30), || async {
        dbs.get("second").await.ok().is_some_and(|d| condition(&d, "Valid").is_some_and(|c| c.0 == "True"))
    })
    .await;
    drop(standby);
}

fn db_ls(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["db", "ls"]).args(args).env("KUBECONFIG", kubeconfig).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_ls_shows_a_plain_user_exactly_what_the_access_roles_allow() {
    let _machine = machine_shared();
    // Its Databases must not appear while another test counts an operator's writes.
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let ns = namespace(&admin, "ls").await;
    let other = namespace(&admin, "ls-other").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    for (name, env) in [("orders", "test"), ("ledger", "prod"), ("billing", "test")] {
        let mut db =
            database(&ns, name, serde_json::json!({"protocol": "postgres", "endpoint": format!("{name}.example.com:5432"), "aws": {"region": "eu-west-1"}}));
        db.metadata.labels = Some([("env".to_owned(), env.to_owned())].into());
        dbs.create(&PostParams::default(), &db).await.unwrap();
    }
    let elsewhere =
        database(&other, "billing", serde_json::json!({"protocol": "postgres", "endpoint": "billing.example.com:5432", "aws": {"region": "eu-west-1"}}));
    Api::<Database>::namespaced(admin.clone(), &other).create(&PostParams::default(), &elsewhere).await.unwrap();
    let role = |ns: &str, name: &str, spec: serde_json::Value| -> AccessRole {
        serde_json::from_value(
            serde_json::json!({"apiVersion": "portcullis.io/v1alpha1", "kind": "AccessRole", "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        )
        .unwrap()
    };
    let roles = [
        role(
            &ns,
            "dev-orders",
            serde_json::json!({"subjects": [{"kind": "Group", "name": "dev"}], "allow": {"databases": ["orders"], "dbUsers": ["app", "report"], "dbNames": ["orders", "stats"]}}),
        ),
        role(
            &ns,
            "dev-prod",
            serde_json::json!({"subjects": [{"kind": "Group", "name": "dev"}], "allow": {"databaseSelector": {"matchLabels": {"env": "prod"}}, "dbUsers": ["readonly", "postgres"], "dbNames": ["*"]}, "deny": {"dbUsers": ["postgres"]}}),
        ),
        role(
            &ns,
            "alice-no-stats",
            serde_json::json!({"subjects": [{"kind": "User", "name": "alice"}], "deny": {"databases": ["orders"], "dbNames": ["stats"]}}),
        ),
        role(
            &ns,
            "ops-billing",
            serde_json::json!({"subjects": [{"kind": "Group", "name": "ops"}], "allow": {"databases": ["billing"], "dbUsers": ["admin"], "dbNames": ["*"]}}),
        ),
        role(
            &other,
            "dev-billing-elsewhere",
            serde_json::json!({"subjects": [{"kind": "Group", "name": "dev"}], "allow": {"databases": ["billing"], "dbUsers": ["app"], "dbNames": ["billing"]}}),
        ),
    ];
    for r in &roles {
        Api::<AccessRole>::namespaced(admin.clone(), r.metadata.namespace.as_deref().unwrap()).create(&PostParams::default(), r).await.unwrap();
    }

    // alice (group dev), a plain user with only the chart's portcullis-user role.
    let alice = cp.kubeconfig("alice", &["dev"]);
    let out = db_ls(&alice, &["-n", &ns, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, serde_json::Value)> =
        rows.as_array().unwrap().iter().map(|r| (r["name"].as_str().unwrap().to_owned(), r["access"].clone())).collect();
    assert_eq!(
        seen,
        [
            (
                "ledger".to_owned(),
                serde_json::json!({"roles": [format!("{ns}/dev-prod")], "dbUsers": ["readonly"], "dbNames": ["*"], "denied": ["db user postgres"]})
            ),
            (
                "orders".to_owned(),
                serde_json::json!({"roles": [format!("{ns}/dev-orders")], "dbUsers": ["app", "report"], "dbNames": ["orders"], "denied": ["db name stats"]})
            ),
        ],
        "{}",
        text(&out)
    );
    // The table, and --all with the Database alice cannot reach.
    let out = db_ls(&alice, &["-n", &ns, "--all"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "PROTOCOL", "READY", "DB", "USERS", "DB", "NAMES"], "{table}");
    assert_eq!(
        lines[1..],
        [
            vec!["billing", "postgres", "False", "(no", "access)", "-"],
            vec!["ledger", "postgres", "False", "readonly", "*"],
            vec!["orders", "postgres", "False", "app,report", "orders"]
        ],
        "{table}"
    );
    // Wide: endpoint, labels, the allowing roles and what a deny takes away; YAML is the JSON's data.
    let out = db_ls(&alice, &["-n", &ns, "-o", "wide"]);
    let wide = String::from_utf8_lossy(&out.stdout).into_owned();
    let header: Vec<&str> = wide.lines().next().unwrap().split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["NAME", "PROTOCOL", "READY", "DB USERS", "DB NAMES", "ENDPOINT", "LABELS", "ACCESS ROLES", "DENIED"], "{wide}");
    let ledger = wide.lines().find(|l| l.starts_with("ledger")).unwrap();
    for part in ["ledger.example.com:5432", "env=prod", &format!("{ns}/dev-prod"), "db user postgres"] {
        assert!(ledger.contains(part), "{part:?} in {ledger:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["db", "list", "-n", &ns, "-o", "yaml"]).env("KUBECONFIG", &alice).output().unwrap();
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(yaml, rows, "-o yaml is the same data as -o json");
    // Every namespace: the other namespace's billing appears for dev.
    let out = db_ls(&alice, &["-A", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = rows.as_array().unwrap().iter().map(|r| format!("{}/{}", r["namespace"].as_str().unwrap(), r["name"].as_str().unwrap())).collect();
    let expected: std::collections::BTreeSet<String> = [format!("{other}/billing"), format!("{ns}/ledger"), format!("{ns}/orders")].into();
    assert_eq!(names.iter().cloned().collect::<std::collections::BTreeSet<_>>(), expected, "{rows}");
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by namespace and name: {names:?}");
    // The kubectl plugin: the same binary on the PATH as kubectl-portcullis.
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_portcullis"), plugins.path().join("kubectl-portcullis")).unwrap();
    let path = format!("{}:{}:{}", plugins.path().display(), crate::support::control_plane::testenv_bin().display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| Command::new("kubectl").args(args).env("PATH", &path).env("KUBECONFIG", &alice).output().unwrap();
    let out = kubectl(&["portcullis", "db", "ls", "-n", &ns, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let direct: serde_json::Value = serde_json::from_slice(&db_ls(&alice, &["-n", &ns, "-o", "json"]).stdout).unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), direct, "kubectl portcullis db ls is db ls");
    let out = kubectl(&["plugin", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kubectl-portcullis"), "{}", text(&out));
    let out = kubectl(&["portcullis", "db", "ls", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: kubectl portcullis db ls"), "{}", text(&out));
    // bob (group sales) may reach nothing: an empty list and a line saying so.
    let out = db_ls(&cp.kubeconfig("bob", &["sales"]), &["-n", &ns]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Database in namespace") && text(&out).contains("--all"), "{}", text(&out));
    // A kubeconfig without credentials: one line naming the fix.
    let anonymous = alice.with_extension("anonymous");
    let kc = std::fs::read_to_string(&alice).unwrap();
    let kc = kc.lines().map(|l| if l.starts_with("users:") { "users: [{name: u, user: {}}]" } else { l }).collect::<Vec<_>>().join("\n");
    std::fs::write(&anonymous, kc).unwrap();
    let out = db_ls(&anonymous, &["-n", &ns]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && (err.contains("does not know who you are") || err.contains("may not")), "{err}");
    assert!(err.trim().lines().count() <= 2, "one clear line: {err}");
}

/// `portcullis db connect` as users run it, against the operator's proxies (run locally, reached
/// through the `externalEndpoint` the admin set): psql and mariadb end to end with a
/// certificate from the CSR flow, reused while valid, renewed when expired, gone after logout;
/// and each kind of bad input gets one line naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_connect_runs_psql_and_mariadb_with_a_certificate_it_gets_reuses_and_renews() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    let admin = install(&cp).await;
    let (pg, maria) = (shared_postgres(), crate::support::mariadb::shared_mariadb());
    let dir = scratch();
    let _op = Operator::start(&cp, dir.path(), NO_AWS, "op-connect");
    let ns = namespace(&admin, "connect").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    for (name, file) in [("pg-ca", pg.ca_file.clone()), ("maria-ca", maria.secrets_dir.join("upstream-ca/ca.crt"))] {
        let secret = serde_json::json!({"metadata": {"name": name}, "stringData": {"ca.crt": std::fs::read_to_string(file).unwrap()}});
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).unwrap()).await.unwrap();
    }
    let (pg_port, my_port) = (free_port(), free_port());
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let spec = |protocol: &str, upstream: u16, ca: &str, external: String| {
        serde_json::json!({"protocol": protocol, "endpoint": format!("127.0.0.1:{upstream}"), "aws": {"region": REGION},
            "tls": {"mode": "verify-full", "caSecretRef": {"name": ca}}, "proxy": {"externalEndpoint": external}})
    };
    dbs.create(&PostParams::default(), &database(&ns, "orders", spec("postgres", pg.port, "pg-ca", format!("127.0.0.1:{pg_port}")))).await.unwrap();
    dbs.create(&PostParams::default(), &database(&ns, "shop", spec("mysql", maria.port, "maria-ca", format!("127.0.0.1:{my_port}")))).await.unwrap();
    let idle = serde_json::json!({"protocol": "postgres", "endpoint": format!("127.0.0.1:{}", pg.port), "aws": {"region": REGION}, "proxy": {"replicas": 0}});
    dbs.create(&PostParams::default(), &database(&ns, "idle", idle)).await.unwrap();
    apply_yaml(&admin, &format!(
        "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {{name: devs, namespace: {ns}}}\nspec: {{subjects: [{{kind: Group, name: dev}}], allow: {{databases: [orders, shop, idle], dbUsers: [app], dbNames: [orders]}}, maxSessionTtl: 1h}}\n"
    ))
    .await;
    let orders_pod = LocalPod::start(&cp, &admin, &ns, "orders", dir.path(), pg_port).await;
    let shop_pod = LocalPod::start(&cp, &admin, &ns, "shop", dir.path(), my_port).await;
    let db = wait_condition(&dbs, "orders", "Valid", "True", &_op).await;
    assert_eq!(db.status.unwrap().external_endpoint, Some(format!("127.0.0.1:{pg_port}")));
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let alice = cp.kubeconfig("alice", &["dev"]);
    let portcullis = |args: &[&str], kubeconfig: &Path, path: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(args).env("HOME", &home).env("KUBECONFIG", kubeconfig).env("PGCONNECT_TIMEOUT", "10");
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        cmd.output().unwrap()
    };
    let connect = |args: &[&str]| portcullis(&[&["db", "connect"], args].concat(), &alice, None);
    let psql_args = ["orders", "-n", &ns, "--", "-X", "-A", "-t", "-c", "select current_user"];

    // The first connect asks for a certificate; psql verifies the proxy and logs in.
    let out = connect(&psql_args);
    let logs = || format!("{}\n{}", orders_pod.log(), shop_pod.log());
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested certificate"), "{}", text(&out));
    let stored = home.join(format!(".portcullis/certs/{ns}-orders"));
    let (first, _) = cert_lifetime(&stored.join("client.crt"));
    assert_eq!(first.route.as_ref().and_then(|r| r.db_user.as_deref()), Some("app"), "the default db user is the one the role allows");

    // The second reuses it.
    let out = connect(&psql_args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && err.contains("using the stored certificate") && !err.contains("requested certificate"), "{}", text(&out));

    // kubectl describe prints the route in the request faithfully.
    let describe = Command::new(crate::support::control_plane::testenv_bin().join("kubectl"))
        .args(["describe", "csr"])
        .env("KUBECONFIG", cp.kubeconfig("admin", &["system:masters"]))
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&describe.stdout);
    assert!(described.contains(&format!("database={ns}/orders&dbUser=app&dbName=orders")) && !described.contains("%!"), "{described}");

    // --exec runs another program through a local tunnel, with the tunnel in its environment.
    let out = connect(&["orders", "-n", &ns, "--exec", "psql", "--", "-XAtc", "select current_user || ' ' || current_database()"]);
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app orders", "PGHOST/PGPORT/PGUSER/PGDATABASE point at the tunnel");

    // DynamoDB: the AWS CLI through a local tunnel, with dummy keys (the proxy signs as the
    // certificate's role, at moto).
    let moto = Moto::start();
    let setup = moto.setup_roles("dynamo");
    let ddb_port = free_port();
    let ddb = serde_json::json!({"protocol": "dynamodb", "endpoint": moto.url(), "aws": {"region": REGION, "accountId": "123456789012"},
        "proxy": {"externalEndpoint": format!("127.0.0.1:{ddb_port}")}});
    dbs.create(&PostParams::default(), &database(&ns, "ddb", ddb)).await.unwrap();
    apply_yaml(&admin, &format!(
        "apiVersion: portcullis.io/v1alpha1\nkind: AccessRole\nmetadata: {{name: ddb-writers, namespace: {ns}}}\nspec: {{subjects: [{{kind: Group, name: dev}}], allow: {{databases: [ddb], dbUsers: [dynamo-writer]}}}}\n"
    ))
    .await;
    // (No wait for the operator to see the new role: the signer re-reads before it denies.)
    let ddb_pod = LocalPod::start_with_aws(&cp, &admin, &ns, "ddb", dir.path(), ddb_port, moto.proxy_env(&setup, None)).await;
    let aws_through_connect = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        without_aws_env(&mut cmd);
        cmd.args([&["db", "connect", "ddb", "-n", &ns], args].concat())
            .env("HOME", &home)
            .env("KUBECONFIG", &alice)
            .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-aws-credentials"))
            .output()
            .unwrap()
    };
    for args in [&["--exec", "aws", "--", "dynamodb", "list-tables", "--output", "json"][..], &["--", "dynamodb", "list-tables", "--output", "json"]] {
        let out = aws_through_connect(args);
        assert!(out.status.success(), "{args:?}: {}\n{}", text(&out), ddb_pod.log());
        let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert!(tables["TableNames"].is_array(), "{tables}");
    }
    let log = ddb_pod.log();
    assert!(log.contains("session started") && log.contains("\"db_user\":\"dynamo-writer\""), "the request went through the proxy: {log}");
    assert!(!log.contains("session refused"), "db connect's reachability probe is no refused session: {log}");

    // db login's hint names the real host and port (the external endpoint here).
    let login_dir = dir.path().join("login-hint");
    let out = portcullis(&["db", "login", "orders", "-n", &ns, "--db-user", "app", "--out", login_dir.to_str().unwrap()], &alice, None);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.contains(&format!("host=127.0.0.1 port={pg_port} sslmode=verify-full")), "{}", text(&out));
    assert!(said.contains(&format!("portcullis db connect orders -n {ns}")), "{said}");

    // mariadb, the same way.
    let out = connect(&["shop", "-n", &ns, "--", "--batch", "--skip-column-names", "-e", "select current_user(), database()"]);
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app@%\torders");

    // A certificate at its end (same route; one minute, the shortest the CA issues, is inside
    // the renewal margin) is renewed.
    let route = portcullis::authz::Route { database: Some(format!("{ns}/orders")), db_user: Some("app".into()), db_name: Some("orders".into()) };
    let old = crate::support::pki::ProxyPki::new(&dir.path().join("old")).client("old", "alice", &["dev"], Some(route), Duration::from_secs(60));
    std::fs::copy(old.files.cert(), stored.join("client.crt")).unwrap();
    let out = connect(&psql_args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && err.contains("the stored certificate expires in") && err.contains("requested certificate"), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
    assert!(cert_lifetime(&stored.join("client.crt")).1 > 600, "the renewed certificate is valid");

    // Logout removes it; the next connect asks again.
    let out = portcullis(&["db", "logout", "orders", "-n", &ns], &alice, None);
    assert!(out.status.success() && !stored.exists(), "{}", text(&out));
    let out = connect(&psql_args);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("requested certificate"), "{}", text(&out));

    // Bad input: one line each, naming the fix.
    let one_line = |out: &Output, wanted: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{}", text(out));
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in wanted {
            assert!(err.contains(w), "{w:?} missing from {err}");
        }
    };
    one_line(&connect(&["nope", "-n", &ns]), &["no Database \"nope\"", "portcullis db ls"]);
    one_line(&connect(&["orders", "-n", &ns, "--db-user", "admin"]), &["admin", "portcullis db ls"]);
    one_line(&connect(&["idle", "-n", &ns]), &["no ready proxy", "ScaledToZero"]);
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    one_line(&portcullis(&["db", "connect", "orders", "-n", &ns], &alice, Some(empty.to_str().unwrap())), &["psql is not installed", "postgresql-client"]);
    let anonymous = dir.path().join("anonymous.kubeconfig");
    let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&alice).unwrap()).unwrap();
    let mut kc = kc;
    kc["users"][0]["user"] = serde_yaml::Value::Mapping(Default::default());
    std::fs::write(&anonymous, serde_yaml::to_string(&kc).unwrap()).unwrap();
    one_line(&portcullis(&["db", "connect", "orders", "-n", &ns], &anonymous, None), &["credentials"]);
}

/// Starts a test double (`script` with `args`) that prints its port as the first line of stdout.
fn stand_in(script: &str, args: &[&str]) -> (Proc, u16) {
    use std::io::BufRead;
    let mut child = Command::new("python3").arg(repo().join(script)).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.split("127.0.0.1:").nth(1).and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    (Proc { child }, port.unwrap_or_else(|| panic!("{script}: {line:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_tells_its_credential_source_and_the_imds_verdict() {
    let _machine = machine_shared();
    let _turn = TURN.lock().await;
    let cp = shared_control_plane(&CONTROL_PLANE);
    install(&cp).await;
    let dir = scratch();
    let env = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_REGION".to_owned(), REGION.to_owned()),
            ("AWS_CONFIG_FILE".to_owned(), "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE".to_owned(), "/dev/null".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let readyz_says = |port: u16, expected: String| async move {
        let mut seen = String::new();
        for _ in 0..150 {
            seen = http_get(port, "/readyz");
            if seen.contains(&expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz never said {expected:?}; last: {seen}");
    };

    // EKS Pod Identity: the agent's endpoint and token file, as the webhook sets them.
    let token = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token, "pod-identity-token-1").unwrap();
    let agent_log = dir.path().join("agent.log");
    let (agent, port) = stand_in(
        "tests/support/pod_identity_agent.py",
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--access-key",
            "ASIAPODIDENTITY00001",
            "--secret-key",
            "pod-identity-secret",
            "--session-token",
            "pod-identity-session",
            "--log",
            agent_log.to_str().unwrap(),
        ],
    );
    let mut op = Operator::start_with_env(
        &cp,
        dir.path(),
        NO_AWS,
        "op-pod-identity",
        env(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("http://127.0.0.1:{port}/v1/credentials")),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token.display().to_string()),
        ]),
    );
    readyz_says(op.admin_port, "aws credentials: container (EKS Pod Identity)\nimds: not probed: EKS Pod Identity is configured".into()).await;
    let log = op.log();
    assert!(log.contains("the operator's AWS identity: credentials from container (EKS Pod Identity)"), "{log}");
    assert!(log.contains("instance metadata (IMDS) not probed: EKS Pod Identity is configured"), "{log}");
    assert!(std::fs::read_to_string(&agent_log).unwrap().contains("GET /v1/credentials 200"), "the agent was asked, with the token");
    for secret in ["pod-identity-secret", "pod-identity-session", "pod-identity-token-1"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    op.stop();
    drop(agent);

    // On a node without IRSA or Pod Identity: IMDSv2 gives the credentials, and the verdict says it works.
    let imds_args = |mode: &'static str| {
        vec!["--host", "127.0.0.1", "--port", "0", "--mode", mode, "--role", "node-role", "--access-key", "ASIAIMDSTEST000000001"]
            .into_iter()
            .chain(["--secret-key", "imds-secret", "--session-token", "imds-session"])
            .collect::<Vec<_>>()
    };
    let (imds, port) = stand_in("tests/support/imds_server.py", &imds_args("v2"));
    let mut op =
        Operator::start_with_env(&cp, dir.path(), NO_AWS, "op-imds-v2", env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://127.0.0.1:{port}"))]));
    readyz_says(op.admin_port, "aws credentials: instance metadata (IMDS)\nimds: IMDSv2 answers".into()).await;
    assert!(op.log().contains("instance metadata (IMDS): IMDSv2 answers"), "{}", op.log());
    assert!(!op.log().contains("imds-secret"));
    op.stop();
    drop(imds);

    // IMDSv1 only while the credentials come from elsewhere: a warning, with what to do.
    let (imds, port) = stand_in("tests/support/imds_server.py", &imds_args("v1-only"));
    let mut keys = static_key_env(ACCESS_KEY, SECRET_KEY);
    keys.retain(|(k, _)| k != "AWS_EC2_METADATA_DISABLED");
    keys.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), format!("http://127.0.0.1:{port}")));
    let mut op = Operator::start_with_env(&cp, dir.path(), NO_AWS, "op-imds-v1", keys);
    readyz_says(op.admin_port, "aws credentials: environment\nimds: only IMDSv1 answers".into()).await;
    let warning = op.log().lines().find(|l| l.contains("WARN") && l.contains("instance metadata (IMDS): only IMDSv1 answers")).map(str::to_owned);
    assert!(warning.is_some_and(|w| w.contains("prefer IRSA or EKS Pod Identity")), "{}", op.log());
    op.stop();
    drop(imds);

    // The test environment's default: IMDS disabled, so not probed, and /readyz says why.
    let op = Operator::start(&cp, dir.path(), NO_AWS, "op-no-imds");
    readyz_says(op.admin_port, "aws credentials: environment\nimds: not probed: IMDS is disabled (AWS_EC2_METADATA_DISABLED=true)".into()).await;
}
