//! Build: every child object of one `Database`, from its spec, the operator's settings and the
//! server certificate. Pure: no API calls, no clock; the apply stage writes what this returns.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use tracing::instrument;

use super::certificate::ServerCertificate;
use super::proxy_config::{config_text, proxy_config};
use super::{children, key};
use crate::crd::Database;
use crate::operator::context::Settings;

/// One child object, of any kind the operator keeps.
#[allow(clippy::large_enum_variant, reason = "a handful of children per reconcile; boxing the Deployment buys nothing")]
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    /// The proxy's ServiceAccount (only when the spec names none).
    ServiceAccount(ServiceAccount),
    /// Binds the proxy ClusterRole to the proxy's ServiceAccount.
    RoleBinding(RoleBinding),
    /// The proxy's server certificate.
    Secret(Secret),
    /// The proxy's configuration.
    ConfigMap(ConfigMap),
    /// The proxy pods.
    Deployment(Deployment),
    /// Where clients connect.
    Service(Service),
}

impl Child {
    /// The kind, e.g. `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Child::ServiceAccount(_) => "ServiceAccount",
            Child::RoleBinding(_) => "RoleBinding",
            Child::Secret(_) => "Secret",
            Child::ConfigMap(_) => "ConfigMap",
            Child::Deployment(_) => "Deployment",
            Child::Service(_) => "Service",
        }
    }

    /// The object's name.
    pub fn name(&self) -> String {
        match self {
            Child::ServiceAccount(o) => o.name_any(),
            Child::RoleBinding(o) => o.name_any(),
            Child::Secret(o) => o.name_any(),
            Child::ConfigMap(o) => o.name_any(),
            Child::Deployment(o) => o.name_any(),
            Child::Service(o) => o.name_any(),
        }
    }
}

/// Why the children cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Database has no name or uid, so children cannot point at their owner.
    #[error("the Database has no name or uid for its children's owner reference")]
    NoOwner,
    /// The proxy's configuration cannot be written as YAML.
    #[error("cannot write the proxy configuration")]
    ProxyConfig(#[source] serde_yaml::Error),
    /// The spec cannot be hashed for the pods' config-hash annotation.
    #[error("cannot hash the Database spec for the pods' config hash")]
    SpecHash(#[source] serde_json::Error),
}

/// Every child of `db`, in the order they are applied (the Deployment after what its pods
/// mount, the Service last).
#[instrument(skip_all, fields(database = %key(db)))]
pub fn build(db: &Database, settings: &Settings, certificate: &ServerCertificate, client_ca_pem: &str) -> Result<Vec<Child>, BuildError> {
    let owner = children::owner(db).ok_or(BuildError::NoOwner)?;
    let config = config_text(db, &proxy_config(db, settings)).map_err(BuildError::ProxyConfig)?;
    let hash = children::config_hash(&config, db, &certificate.cert_pem).map_err(BuildError::SpecHash)?;
    let mut out = Vec::with_capacity(6);
    out.extend(children::service_account(db, &owner).map(Child::ServiceAccount));
    out.push(Child::RoleBinding(children::role_binding(db, &owner)));
    out.push(Child::Secret(children::tls_secret(db, &owner, &certificate.cert_pem, &certificate.key_pem, client_ca_pem)));
    out.push(Child::ConfigMap(children::config_map(db, &owner, &config)));
    out.push(Child::Deployment(children::deployment(db, &owner, settings, &hash)));
    out.push(Child::Service(children::service(db, &owner)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::database::children::tests::{ORDERS, db, settings};
    use crate::operator::database::children::{CONFIG_HASH_ANNOTATION, config_hash};

    fn cert() -> ServerCertificate {
        ServerCertificate { cert_pem: "CERT".into(), key_pem: "KEY".into() }
    }

    fn kinds_and_names(children: &[Child]) -> Vec<(&'static str, String)> {
        children.iter().map(|c| (c.kind(), c.name())).collect()
    }

    #[test]
    fn build_returns_every_child_of_a_database_in_apply_order() {
        let d = db(ORDERS);
        let children = build(&d, &settings(), &cert(), "CA").unwrap();
        let expected = [
            ("ServiceAccount", "portcullis-orders"),
            ("RoleBinding", "portcullis-orders"),
            ("Secret", "portcullis-orders-tls"),
            ("ConfigMap", "portcullis-orders"),
            ("Deployment", "portcullis-orders"),
            ("Service", "portcullis-orders"),
        ]
        .map(|(k, n)| (k, n.to_owned()));
        assert_eq!(kinds_and_names(&children), expected);
        for child in &children {
            let meta = match child {
                Child::ServiceAccount(o) => &o.metadata,
                Child::RoleBinding(o) => &o.metadata,
                Child::Secret(o) => &o.metadata,
                Child::ConfigMap(o) => &o.metadata,
                Child::Deployment(o) => &o.metadata,
                Child::Service(o) => &o.metadata,
            };
            assert_eq!(meta.namespace.as_deref(), Some("shop"), "{}", child.kind());
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "uid-1", "{} is collected with its Database", child.kind());
            assert_eq!(meta.labels.as_ref().unwrap()["portcullis.io/database"], "orders", "{}", child.kind());
        }
    }

    #[test]
    fn the_pods_hash_covers_the_config_map_the_spec_and_the_certificate() {
        let d = db(ORDERS);
        let children = build(&d, &settings(), &cert(), "CA").unwrap();
        let config = children.iter().find_map(|c| if let Child::ConfigMap(cm) = c { cm.data.clone() } else { None }).unwrap();
        let dep = children.iter().find_map(|c| if let Child::Deployment(d) = c { Some(d.clone()) } else { None }).unwrap();
        let annotations = dep.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], config_hash(&config["proxy.yaml"], &d, "CERT").unwrap());
        let secret = children.iter().find_map(|c| if let Child::Secret(s) = c { s.data.clone() } else { None }).unwrap();
        assert_eq!((secret["tls.crt"].0.as_slice(), secret["tls.key"].0.as_slice(), secret["ca.crt"].0.as_slice()), (&b"CERT"[..], &b"KEY"[..], &b"CA"[..]));
    }

    #[test]
    fn a_named_service_account_means_no_service_account_child() {
        let mut d = db(ORDERS);
        d.spec.proxy.iam_role_arn = None;
        d.spec.proxy.service_account_name = Some("existing".into());
        let children = build(&d, &settings(), &cert(), "CA").unwrap();
        assert_eq!(children.len(), 5);
        assert!(!children.iter().any(|c| c.kind() == "ServiceAccount"));
    }

    #[test]
    fn a_database_not_from_the_api_server_has_no_owner_to_build_for() {
        let mut d = db(ORDERS);
        d.metadata.uid = None;
        assert!(matches!(build(&d, &settings(), &cert(), "CA"), Err(BuildError::NoOwner)));
    }
}
