//! Self-tests of the Kubernetes test control plane, so it cannot silently degrade: the real
//! API server validates schemas, resolves server-side apply conflicts, records the requester
//! of CSRs; the real controller manager collects garbage and deletes namespaces; helm runs;
//! our CRDs become Established; nothing listens beyond 127.0.0.1 and nothing is left behind.

use std::process::Command;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use crate::support::control_plane::{ControlPlane, namespace, shared_control_plane, testenv_bin};
use crate::support::*;

/// This group's control plane (see `shared_control_plane`).
static CONTROL_PLANE: Mutex<Weak<ControlPlane>> = Mutex::new(Weak::new());

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_non_structural_crd_is_rejected_and_our_crds_become_established() {
    let _machine = machine_shared();
    let cp = shared_control_plane(&CONTROL_PLANE);
    rt().block_on(async {
        let crds: Api<CustomResourceDefinition> = Api::all(cp.admin().await);
        let bad: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"properties": {"size": {"type": "integer"}}}}}}}]}
        }))
        .unwrap();
        let err = crds.create(&PostParams::default(), &bad).await.unwrap_err().to_string();
        assert!(err.contains("must not be empty for specified object fields") || err.contains("structural"), "{err}");

        for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(&name, &PatchParams::apply("portcullis-test").force(), &Patch::Apply(&crd)).await.unwrap();
            eventually(&format!("{name} Established"), Duration::from_secs(30), || async {
                crds.get(&name).await.ok().and_then(|c| c.status).and_then(|s| s.conditions).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
            .await;
        }
        // The schema and the CEL rule are enforced by the real API server.
        let admin = cp.admin().await;
        let ns = namespace(&admin, "crd").await;
        let dbs: Api<portcullis::crd::Database> = Api::namespaced(admin, &ns);
        let db = |spec: serde_json::Value| -> portcullis::crd::Database {
            serde_json::from_value(serde_json::json!({"apiVersion": "portcullis.io/v1alpha1", "kind": "Database", "metadata": {"name": "x"}, "spec": spec})).unwrap()
        };
        let pp = PostParams::default();
        eventually("the Database API is served", Duration::from_secs(30), || async { dbs.list(&Default::default()).await.is_ok() }).await;
        let err = dbs.create(&pp, &db(serde_json::json!({"protocol": "postgres"}))).await.unwrap_err().to_string();
        assert!(err.contains("spec.endpoint: Required value: spec.endpoint is required for every protocol but dynamodb"), "the CEL rule's message names the field: {err}");
        dbs.create(&pp, &db(serde_json::json!({"protocol": "dynamodb", "aws": {"region": "us-east-1"}}))).await.unwrap();
        let bad: serde_json::Value = serde_json::json!({"apiVersion": "portcullis.io/v1alpha1", "kind": "Database", "metadata": {"name": "y"}, "spec": {"protocol": "oracle", "endpoint": "h:1"}});
        let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(cp.admin().await, &ns, &kube::api::ApiResource::erase::<portcullis::crd::Database>(&()));
        let err = raw.create(&pp, &serde_json::from_value(bad).unwrap()).await.unwrap_err().to_string();
        assert!(err.contains("spec.protocol") && err.contains("oracle"), "{err}");
    });
}

#[test]
fn server_side_apply_from_two_field_managers_conflicts() {
    let _machine = machine_shared();
    let cp = shared_control_plane(&CONTROL_PLANE);
    rt().block_on(async {
        let client = cp.admin().await;
        let ns = namespace(&client, "ssa").await;
        let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
        let cm = |v: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"key": v}});
        cms.patch("shared", &PatchParams::apply("manager-a"), &Patch::Apply(cm("a"))).await.unwrap();
        let err = cms.patch("shared", &PatchParams::apply("manager-b"), &Patch::Apply(cm("b"))).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err}");
        cms.patch("shared", &PatchParams::apply("manager-b").force(), &Patch::Apply(cm("b"))).await.unwrap();
        assert_eq!(cms.get("shared").await.unwrap().data.unwrap()["key"], "b");
    });
}

#[test]
fn a_csr_created_by_a_plain_user_carries_that_user_and_groups() {
    let _machine = machine_shared();
    let cp = shared_control_plane(&CONTROL_PLANE);
    rt().block_on(async {
        let admin = cp.admin().await;
        // A plain user may create CSRs only with RBAC allowing it; grant that to group dev.
        let rbac = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "csr-creator"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create", "get"]}]
        });
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "csr-creator-dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "csr-creator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"}]
        });
        let pp = PatchParams::apply("portcullis-test").force();
        let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin.clone());
        roles.patch("csr-creator", &pp, &Patch::Apply(rbac)).await.unwrap();
        let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
        bindings.patch("csr-creator-dev", &pp, &Patch::Apply(binding)).await.unwrap();

        let alice = cp.client("alice", &["dev", "oncall"]).await;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        use base64::Engine;
        let name = format!("alice-{}", std::process::id());
        let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": "portcullis.io/client", "usages": ["client auth"]}
        }))
        .unwrap();
        let as_alice: Api<CertificateSigningRequest> = Api::all(alice);
        // RBAC really applies: a user outside group dev may not.
        let bob: Api<CertificateSigningRequest> = Api::all(cp.client("bob", &["sales"]).await);
        let err = bob.create(&PostParams::default(), &csr).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err}");
        as_alice.create(&PostParams::default(), &csr).await.unwrap();
        let stored = Api::<CertificateSigningRequest>::all(admin).get(&name).await.unwrap();
        assert_eq!(stored.spec.username.as_deref(), Some("alice"));
        let groups = stored.spec.groups.unwrap_or_default();
        for g in ["dev", "oncall", "system:authenticated"] {
            assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
        }
    });
}

#[test]
fn owned_objects_are_collected_and_namespaces_finish_deleting() {
    let _machine = machine_shared();
    let cp = shared_control_plane(&CONTROL_PLANE);
    rt().block_on(async {
        let client = cp.admin().await;
        let ns = namespace(&client, "gc").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let owner: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "owner"}})).unwrap();
        let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
        let uid = owner.metadata.uid.unwrap();
        let child: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "child",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}))
        .unwrap();
        cms.create(&PostParams::default(), &child).await.unwrap();
        cms.delete("owner", &DeleteParams::default()).await.unwrap();
        eventually("the garbage collector deletes the child", Duration::from_secs(60), || async { cms.get_opt("child").await.unwrap().is_none() }).await;

        let namespaces: Api<Namespace> = Api::all(client);
        namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
        eventually("the namespace controller finishes the deletion", Duration::from_secs(90), || async { namespaces.get_opt(&ns).await.unwrap().is_none() })
            .await;
    });
}

#[test]
fn helm_lint_and_template_run() {
    let _machine = machine_shared();
    let dir = scratch();
    let helm = testenv_bin().join("helm");
    let home = dir.path().join("helm-home");
    let helm_cmd = || {
        let mut c = Command::new(&helm);
        c.env("HELM_CONFIG_HOME", home.join("config")).env("HELM_CACHE_HOME", home.join("cache")).env("HELM_DATA_HOME", home.join("data"));
        c.current_dir(dir.path());
        c
    };
    run_ok(helm_cmd().args(["create", "demo"]));
    let lint = run_ok(helm_cmd().args(["lint", "demo"]));
    assert!(String::from_utf8_lossy(&lint.stdout).contains("1 chart(s) linted, 0 chart(s) failed"));
    let out = run_ok(helm_cmd().args(["template", "release", "demo"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: Deployment"));
    // A broken chart is reported, so the passes above mean something.
    std::fs::write(dir.path().join("demo/Chart.yaml"), "name: demo\n").unwrap();
    assert!(!helm_cmd().args(["lint", "demo"]).status().unwrap().success());
}

#[test]
fn the_control_plane_listens_only_on_loopback_starts_in_seconds_and_leaves_nothing_behind() {
    let _machine = machine_shared();
    let cp = ControlPlane::start();
    assert!(cp.startup < Duration::from_secs(60), "startup took {:?}", cp.startup);
    let pids = cp.pids();
    let ss = run_ok(Command::new("ss").args(["-ltnpH"]));
    let listening: Vec<String> =
        String::from_utf8_lossy(&ss.stdout).lines().filter(|l| pids.iter().any(|p| l.contains(&format!("pid={p},")))).map(str::to_owned).collect();
    assert!(listening.len() >= 4, "etcd, apiserver and controller manager listen: {listening:?}");
    for line in &listening {
        let local = line.split_whitespace().nth(3).unwrap_or("");
        assert!(local.starts_with("127.0.0.1:"), "listening beyond loopback: {line}");
    }
    drop(cp);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
            "process {pid} is still running"
        );
    }
}
