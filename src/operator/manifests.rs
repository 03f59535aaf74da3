//! The install manifests in `deploy/`: the operator's Deployment and its least-privilege RBAC,
//! and the ClusterRole proxy pods are bound to. Generated here, checked for drift in CI.

use serde_json::{Value, json};

use super::ca::CA_SECRET;
use super::csr::SIGNER_NAME;
use super::database::children::PROXY_CLUSTER_ROLE;
use super::leader::LEASE_NAME;

/// The namespace the manifests install the operator into.
pub const NAMESPACE: &str = "portcullis-system";
/// The operator's ServiceAccount and ClusterRole name.
pub const OPERATOR: &str = "portcullis-operator";

/// What the operator may do, cluster-wide. Nothing beyond what it reconciles: its two
/// resources and their status, the five child kinds plus RoleBindings, Events, CSR approval
/// and signing for its own signer only, and `bind` on the proxy ClusterRole only.
pub fn operator_cluster_role() -> Value {
    let rw = ["get", "list", "watch", "create", "update", "patch", "delete"];
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": OPERATOR, "labels": labels()},
        "rules": [
            {"apiGroups": ["portcullis.io"], "resources": ["databases", "accessroles"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["portcullis.io"], "resources": ["databases/status", "accessroles/status"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": [""], "resources": ["serviceaccounts", "configmaps", "secrets", "services"], "verbs": rw},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": rw},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": rw},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": [PROXY_CLUSTER_ROLE]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval", "certificatesigningrequests/status"], "verbs": ["update", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["approve", "sign"], "resourceNames": [SIGNER_NAME]},
        ],
    })
}

/// What a proxy pod may do in its Database's namespace (bound there by the operator): read
/// Databases and AccessRoles, write its part of the Database status, publish Events.
pub fn proxy_cluster_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": PROXY_CLUSTER_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": ["portcullis.io"], "resources": ["databases", "accessroles"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["portcullis.io"], "resources": ["databases/status"], "verbs": ["get", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    })
}

/// What `portcullis login` needs: create a CertificateSigningRequest and read it back. Bound
/// to every authenticated user; the operator decides who gets a certificate.
pub fn login_objects() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "portcullis-login", "labels": labels()},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create", "get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "portcullis-login", "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "portcullis-login"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
        }),
    ]
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": "portcullis", "app.kubernetes.io/part-of": "portcullis"})
}

/// The operator's objects: namespace, ServiceAccount, RBAC, leader-election Role, Deployment.
pub fn operator_objects(image: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR, "namespace": NAMESPACE, "labels": labels()}}),
        operator_cluster_role(),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": OPERATOR, "namespace": NAMESPACE, "labels": labels()},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"], "resourceNames": [LEASE_NAME]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": OPERATOR, "namespace": NAMESPACE, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}],
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": OPERATOR, "namespace": NAMESPACE, "labels": labels()},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": OPERATOR}},
                    "spec": {
                        "serviceAccountName": OPERATOR,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "operator",
                            "image": image,
                            "args": ["operator", "--proxy-image", image],
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "PORTCULLIS_LOG_FORMAT", "value": "json"},
                            ],
                            "ports": [{"name": "admin", "containerPort": 9090}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        }],
                    },
                },
            },
        }),
    ]
}

/// The files of `deploy/` with their contents.
pub fn files(image: &str) -> Vec<(String, String)> {
    let header = |what: &str| format!("# {what}\n# Generated by `portcullis manifests --out-dir deploy`; do not edit. The CA lives in Secret {NAMESPACE}/{CA_SECRET}.\n");
    let render = |objects: &[Value]| objects.iter().map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap_or_default())).collect::<String>();
    vec![
        ("operator.yaml".into(), format!("{}{}", header("The Portcullis operator: namespace, ServiceAccount, least-privilege RBAC, leader election, Deployment."), render(&operator_objects(image)))),
        ("proxy-rbac.yaml".into(), format!("{}{}", header("What proxy pods may do; the operator binds it per Database namespace."), render(&[proxy_cluster_role()]))),
        ("login-rbac.yaml".into(), format!("{}{}", header("Lets every authenticated user request a client certificate (`portcullis login`)."), render(&login_objects()))),
    ]
}
