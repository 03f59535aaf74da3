//! The objects the operator keeps for one `Database`: ServiceAccount, RoleBinding, ConfigMap,
//! server certificate Secret, Deployment and Service. Pure builders, one per kind, no I/O
//! (the proxy's configuration in the ConfigMap is built in [`super::proxy_config`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{Database, Protocol, resolved_region};
use crate::operator::context::{DATABASE_LABEL, MANAGED_BY, Settings};

/// The admin port of proxy pods (`/metrics`, `/healthz`, `/readyz`).
pub const ADMIN_PORT: u16 = 9090;
/// The ClusterRole (from `deploy/`) that proxy pods are bound to in their namespace.
pub const PROXY_CLUSTER_ROLE: &str = "portcullis-proxy";
/// How long a stopping proxy pod keeps accepting before it drains: long enough for every
/// kube-proxy to drop it from the Service, so a rolling update refuses no new connection.
pub const PRE_STOP_DELAY_SECONDS: i64 = 5;
/// How long a stopping proxy pod has in all: the pre-stop delay, the proxy's drain
/// (`limits.drainTimeout`, 30 s) and time to tell the remaining sessions why they end.
pub const TERMINATION_GRACE_SECONDS: i64 = PRE_STOP_DELAY_SECONDS + 30 + 10;
/// Where the proxy finds its configuration inside the pod.
pub const CONFIG_PATH: &str = "/etc/portcullis/config/proxy.yaml";
/// Pod annotation that changes whenever the proxy's configuration does (rolls the pods).
pub const CONFIG_HASH_ANNOTATION: &str = "portcullis.io/config-hash";
/// Secret annotation naming the DNS names its certificate was issued for.
pub const CERT_NAMES_ANNOTATION: &str = "portcullis.io/server-names";

/// Where IRSA's web-identity token is mounted (the path and volume name the EKS pod-identity
/// webhook uses, so the webhook sees the pod as already set up and leaves it alone).
pub const WEB_IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
/// The audience of IRSA's projected token (what STS expects in AssumeRoleWithWebIdentity).
pub const WEB_IDENTITY_AUDIENCE: &str = "sts.amazonaws.com";
const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";

/// Where the proxy's server certificate, key and client CA are mounted.
pub(super) const TLS_DIR: &str = "/etc/portcullis/tls";
/// Where the upstream CA Secrets are mounted (the proxy's `secretsDir`).
pub(super) const UPSTREAM_CA_DIR: &str = "/etc/portcullis/upstream-ca";

/// The name shared by a Database's Deployment, Service, ConfigMap and ServiceAccount.
pub fn proxy_name(db: &Database) -> String {
    format!("portcullis-{}", db.name_any())
}

/// The name of the server certificate Secret.
pub fn tls_secret_name(db: &Database) -> String {
    format!("portcullis-{}-tls", db.name_any())
}

/// The port the proxy container listens on (unprivileged, so it runs as non-root).
pub fn container_port(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Dynamodb => 8443,
        p => p.default_port(),
    }
}

/// The port clients use on the Service.
pub fn service_port(db: &Database) -> u16 {
    db.spec.proxy.service.as_ref().and_then(|s| s.port).and_then(|p| u16::try_from(p).ok()).unwrap_or(db.spec.protocol.default_port())
}

/// The names in the proxy's server certificate: the Service's DNS names and the host of
/// `spec.proxy.externalEndpoint`.
pub fn server_names(db: &Database) -> Vec<String> {
    let (name, ns) = (proxy_name(db), db.namespace().unwrap_or_default());
    let mut names = vec![name.clone(), format!("{name}.{ns}"), format!("{name}.{ns}.svc"), format!("{name}.{ns}.svc.cluster.local")];
    if let Some((host, _)) = external_endpoint(db) {
        names.push(host);
    }
    names
}

/// `spec.proxy.externalEndpoint` as (host, port); the Service's port when it names none.
pub fn external_endpoint(db: &Database) -> Option<(String, u16)> {
    let endpoint = db.spec.proxy.external_endpoint.as_deref()?;
    let (host, port) = crate::crd::endpoint::split_endpoint(endpoint, db.spec.protocol).ok()?;
    let names_a_port = endpoint.rsplit_once(']').map_or(endpoint, |(_, after)| after).contains(':');
    Some((host, if names_a_port { port } else { service_port(db) }))
}

/// `host:port` where clients reach the proxy inside the cluster.
pub fn proxy_endpoint(db: &Database) -> String {
    format!("{}.{}.svc:{}", proxy_name(db), db.namespace().unwrap_or_default(), service_port(db))
}

/// The ServiceAccount the proxy pods run as.
pub fn service_account_name(db: &Database) -> String {
    db.spec.proxy.service_account_name.clone().unwrap_or_else(|| proxy_name(db))
}

/// Labels on every child and selector labels of the pods.
pub fn labels(db: &Database) -> BTreeMap<String, String> {
    let mut labels = selector_labels(db);
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(DATABASE_LABEL.into(), db.name_any());
    labels
}

fn selector_labels(db: &Database) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), "portcullis-proxy".to_owned()), ("app.kubernetes.io/instance".to_owned(), db.name_any())])
}

fn meta(db: &Database, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta { name: Some(name), namespace: db.namespace(), labels: Some(labels(db)), owner_references: Some(vec![owner.clone()]), ..Default::default() }
}

/// The owner reference every child carries (garbage-collected with the Database).
pub fn owner(db: &Database) -> Option<OwnerReference> {
    db.controller_owner_ref(&())
}

/// The ServiceAccount, when the operator makes one (no `serviceAccountName` in the spec).
pub fn service_account(db: &Database, owner: &OwnerReference) -> Option<ServiceAccount> {
    if db.spec.proxy.service_account_name.is_some() {
        return None;
    }
    let mut metadata = meta(db, proxy_name(db), owner);
    if let Some(arn) = &db.spec.proxy.iam_role_arn {
        metadata.annotations = Some(BTreeMap::from([("eks.amazonaws.com/role-arn".to_owned(), arn.clone())]));
    }
    Some(ServiceAccount { metadata, ..Default::default() })
}

/// Binds the proxy ClusterRole to the proxy's ServiceAccount in the Database's namespace.
pub fn role_binding(db: &Database, owner: &OwnerReference) -> RoleBinding {
    RoleBinding {
        metadata: meta(db, proxy_name(db), owner),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: PROXY_CLUSTER_ROLE.into() },
        subjects: Some(vec![Subject { kind: "ServiceAccount".into(), name: service_account_name(db), namespace: db.namespace(), ..Default::default() }]),
    }
}

/// The proxy ConfigMap.
pub fn config_map(db: &Database, owner: &OwnerReference, config: &str) -> ConfigMap {
    ConfigMap { metadata: meta(db, proxy_name(db), owner), data: Some(BTreeMap::from([("proxy.yaml".to_owned(), config.to_owned())])), ..Default::default() }
}

/// The server certificate Secret (`tls.crt`, `tls.key`, and `ca.crt`: the client CA).
pub fn tls_secret(db: &Database, owner: &OwnerReference, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Secret {
    let mut metadata = meta(db, tls_secret_name(db), owner);
    metadata.annotations = Some(BTreeMap::from([(CERT_NAMES_ANNOTATION.to_owned(), server_names(db).join(","))]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(cert_pem.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key_pem.as_bytes().to_vec())),
            ("ca.crt".to_owned(), ByteString(ca_pem.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// A hash of everything a running proxy reads at start-up: its configuration file, the
/// Database spec and the server certificate. A change rolls the pods.
pub fn config_hash(config: &str, db: &Database, cert_pem: &str) -> Result<String, serde_json::Error> {
    let mut h = Sha256::new();
    h.update(config.as_bytes());
    h.update(serde_json::to_vec(&db.spec)?);
    h.update(cert_pem.as_bytes());
    Ok(hex::encode(&h.finalize()[..16]))
}

/// The proxy Deployment: non-root, read-only root filesystem, probes on the admin port.
pub fn deployment(db: &Database, owner: &OwnerReference, settings: &Settings, hash: &str) -> Deployment {
    let port = container_port(db.spec.protocol);
    let mut env = vec![env("PORTCULLIS_LOG_FORMAT", "json"), field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")];
    if let Some(region) = resolved_region(&db.spec) {
        env.push(self::env("AWS_REGION", &region));
    }
    let defaults = &settings.proxy_defaults;
    let mut mounts = vec![
        mount("config", "/etc/portcullis/config"),
        mount("tls", TLS_DIR),
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
    ];
    let mut volumes = vec![
        Volume { name: "config".into(), config_map: Some(ConfigMapVolumeSource { name: proxy_name(db), ..Default::default() }), ..Default::default() },
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(tls_secret_name(db)), default_mode: Some(0o440), ..Default::default() }),
            ..Default::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    // IRSA without the EKS webhook: the same environment and projected token it would inject,
    // so the proxy's credentials come from AssumeRoleWithWebIdentity on any cluster whose
    // issuer AWS trusts.
    if let Some(arn) = &db.spec.proxy.iam_role_arn {
        env.push(self::env("AWS_ROLE_ARN", arn));
        env.push(self::env("AWS_WEB_IDENTITY_TOKEN_FILE", &format!("{WEB_IDENTITY_TOKEN_DIR}/token")));
        env.push(self::env("AWS_STS_REGIONAL_ENDPOINTS", "regional"));
        mounts.push(mount(WEB_IDENTITY_VOLUME, WEB_IDENTITY_TOKEN_DIR));
        volumes.push(Volume {
            name: WEB_IDENTITY_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(WEB_IDENTITY_AUDIENCE.into()),
                        expiration_seconds: Some(86400),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // Extra environment from the proxy defaults, never replacing what the operator sets.
    for extra in &defaults.env {
        if !env.iter().any(|e| e.name == extra.name) {
            env.push(extra.clone());
        }
    }
    if let Some(ca) = &db.spec.tls.ca_secret_ref {
        mounts.push(mount("upstream-ca", &format!("{UPSTREAM_CA_DIR}/{}", ca.name)));
        volumes.push(Volume {
            name: "upstream-ca".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(ca.name.clone()), ..Default::default() }),
            ..Default::default()
        });
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(ADMIN_PORT.into()), ..Default::default() }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let container = Container {
        name: "proxy".into(),
        image: Some(settings.proxy_image.clone()),
        image_pull_policy: defaults.image_pull_policy.clone(),
        args: Some(vec![
            "proxy".into(),
            "--config".into(),
            CONFIG_PATH.into(),
            "--database".into(),
            format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any()),
        ]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort { name: Some("db".into()), container_port: port.into(), ..Default::default() },
            ContainerPort { name: Some("admin".into()), container_port: ADMIN_PORT.into(), ..Default::default() },
        ]),
        readiness_probe: Some(probe("/readyz", 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler { sleep: Some(SleepAction { seconds: PRE_STOP_DELAY_SECONDS }), ..Default::default() }),
            ..Default::default()
        }),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: db.spec.proxy.resources.clone().or_else(|| defaults.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut pod_labels = selector_labels(db);
    pod_labels.insert(DATABASE_LABEL.into(), db.name_any());
    Deployment {
        metadata: meta(db, proxy_name(db), owner),
        spec: Some(DeploymentSpec {
            replicas: Some(db.spec.proxy.replicas.or(defaults.replicas).unwrap_or(1)),
            selector: LabelSelector { match_labels: Some(selector_labels(db)), ..Default::default() },
            // A new pod is Ready before an old one stops.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment { max_surge: Some(IntOrString::Int(1)), max_unavailable: Some(IntOrString::Int(0)) }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name(db)),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: non_empty(&db.spec.proxy.node_selector).or_else(|| non_empty(&defaults.node_selector)),
                    tolerations: non_empty_list(&db.spec.proxy.tolerations).or_else(|| non_empty_list(&defaults.tolerations)),
                    affinity: defaults.affinity.clone(),
                    priority_class_name: defaults.priority_class_name.clone(),
                    image_pull_secrets: non_empty_list(&defaults.image_pull_secrets),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    // Replicas on different nodes where the cluster allows it.
                    topology_spread_constraints: Some(vec![k8s_openapi::api::core::v1::TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".into(),
                        when_unsatisfiable: "ScheduleAnyway".into(),
                        label_selector: Some(LabelSelector { match_labels: Some(selector_labels(db)), ..Default::default() }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service clients connect to.
pub fn service(db: &Database, owner: &OwnerReference) -> Service {
    let type_ = db.spec.proxy.service.as_ref().and_then(|s| s.type_.clone());
    Service {
        metadata: meta(db, proxy_name(db), owner),
        spec: Some(ServiceSpec {
            type_,
            selector: Some(selector_labels(db)),
            ports: Some(vec![ServicePort {
                name: Some(db.spec.protocol.as_str().into()),
                port: service_port(db).into(),
                target_port: Some(IntOrString::String("db".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn non_empty(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

fn non_empty_list<T: Clone>(list: &[T]) -> Option<Vec<T>> {
    (!list.is_empty()).then(|| list.to_vec())
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            // apiVersion as the API server would default it, so applies never see a difference.
            field_ref: Some(ObjectFieldSelector { api_version: Some("v1".into()), field_path: path.into() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::operator::database) fn db(yaml: &str) -> Database {
        let mut db: Database = serde_yaml::from_str(yaml).unwrap();
        db.metadata.uid = Some("uid-1".into());
        db
    }

    pub(in crate::operator::database) fn settings() -> Settings {
        Settings {
            namespace: "portcullis-system".into(),
            proxy_image: "portcullis:test".into(),
            allowed_endpoints: vec![],
            server_cert_ttl: std::time::Duration::from_secs(90 * 86400),
            max_client_cert_ttl: std::time::Duration::from_secs(12 * 3600),
            default_client_cert_ttl: std::time::Duration::from_secs(8 * 3600),
            aws_checks: false,
            aws_recheck: std::time::Duration::from_secs(600),
            watch_namespace: None,
            proxy_defaults: Default::default(),
        }
    }

    pub(in crate::operator::database) const ORDERS: &str = "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {name: orders, namespace: shop}\n\
        spec: {protocol: postgres, endpoint: 'orders.abc.eu-west-1.rds.amazonaws.com:5432', proxy: {iamRoleArn: 'arn:aws:iam::123456789012:role/p'}}\n";

    #[test]
    fn irsa_annotation_and_binding_follow_the_spec() {
        let d = db(ORDERS);
        let o = owner(&d).unwrap();
        let sa = service_account(&d, &o).unwrap();
        assert_eq!(sa.metadata.annotations.unwrap()["eks.amazonaws.com/role-arn"], "arn:aws:iam::123456789012:role/p");
        let mut named = d.clone();
        named.spec.proxy.iam_role_arn = None;
        named.spec.proxy.service_account_name = Some("existing".into());
        assert!(service_account(&named, &o).is_none());
        assert_eq!(role_binding(&named, &o).subjects.unwrap()[0].name, "existing");
    }

    #[test]
    fn deployment_is_hardened_and_points_at_its_database() {
        let d = db(ORDERS);
        let dep = deployment(&d, &owner(&d).unwrap(), &settings(), "h1");
        let pod = dep.spec.unwrap().template;
        assert_eq!(pod.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION], "h1");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.args.as_ref().unwrap().join(" "), format!("proxy --config {CONFIG_PATH} --database shop/orders"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.run_as_non_root, sc.allow_privilege_escalation), (Some(true), Some(true), Some(false)));
        assert!(c.env.as_ref().unwrap().iter().any(|e| e.name == "AWS_REGION" && e.value.as_deref() == Some("eu-west-1")));
    }

    #[test]
    fn an_iam_role_gets_the_web_identity_token_and_environment_as_on_eks() {
        let dep = deployment(&db(ORDERS), &owner(&db(ORDERS)).unwrap(), &settings(), "h");
        let pod = dep.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let env = |n: &str| c.env.as_ref().unwrap().iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(env("AWS_ROLE_ARN").as_deref(), Some("arn:aws:iam::123456789012:role/p"));
        assert_eq!(env("AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(), Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token"));
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "aws-iam-token").expect("token volume");
        let token = volume.projected.unwrap().sources.unwrap()[0].service_account_token.clone().unwrap();
        assert_eq!(token.audience.as_deref(), Some("sts.amazonaws.com"));
        assert!(c.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == "aws-iam-token" && m.read_only == Some(true)));

        let mut named = db(ORDERS);
        named.spec.proxy.iam_role_arn = None;
        let dep = deployment(&named, &owner(&named).unwrap(), &settings(), "h");
        let pod = dep.spec.unwrap().template.spec.unwrap();
        assert!(!pod.containers[0].env.as_ref().unwrap().iter().any(|e| e.name == "AWS_ROLE_ARN"));
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "aws-iam-token"));
    }

    #[test]
    fn proxy_defaults_apply_unless_the_database_sets_its_own() {
        let mut s = settings();
        s.proxy_defaults = serde_yaml::from_str(
            "replicas: 3\nresources: {requests: {cpu: 50m}}\nnodeSelector: {pool: db}\npriorityClassName: high\n\
             imagePullSecrets: [{name: regcred}]\nimagePullPolicy: Never\nenv: [{name: HTTPS_PROXY, value: 'http://p:3128'}, {name: AWS_ROLE_ARN, value: evil}]\n",
        )
        .unwrap();
        let dep = deployment(&db(ORDERS), &owner(&db(ORDERS)).unwrap(), &s, "h");
        let spec = dep.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "db");
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        // Stopping pods drain: the grace period covers the pre-stop delay and the proxy's drain.
        assert!(pod.termination_grace_period_seconds.unwrap() > PRE_STOP_DELAY_SECONDS + crate::proxy::config::default_drain().as_secs() as i64);
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!((spread.topology_key.as_str(), spread.when_unsatisfiable.as_str()), ("kubernetes.io/hostname", "ScheduleAnyway"));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        assert!(c.resources.is_some());
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "HTTPS_PROXY"));
        let arns: Vec<_> = env.iter().filter(|e| e.name == "AWS_ROLE_ARN").map(|e| e.value.clone().unwrap()).collect();
        assert_eq!(arns, ["arn:aws:iam::123456789012:role/p"], "the operator's own variables win");

        let own = db(&ORDERS.replace("proxy: {", "proxy: {replicas: 1, nodeSelector: {pool: mine}, "));
        let spec = deployment(&own, &owner(&own).unwrap(), &s, "h").spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.template.spec.unwrap().node_selector.unwrap()["pool"], "mine");
    }

    #[test]
    fn the_hash_changes_with_the_spec_and_the_certificate() {
        use crate::operator::database::proxy_config::{config_text, proxy_config};
        let d = db(ORDERS);
        let config = config_text(&d, &proxy_config(&d, &settings())).unwrap();
        let base = config_hash(&config, &d, "cert").unwrap();
        let mut changed = d.clone();
        changed.spec.proxy.replicas = Some(3);
        assert_ne!(base, config_hash(&config, &changed, "cert").unwrap());
        assert_ne!(base, config_hash(&config, &d, "cert2").unwrap());
        assert_eq!(base, config_hash(&config, &d, "cert").unwrap());
    }
}
