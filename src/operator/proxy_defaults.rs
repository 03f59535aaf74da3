//! Defaults the operator applies to every proxy Deployment (`--proxy-defaults FILE`, written by
//! the Helm chart from its `proxy` values); a Database's own `spec.proxy` settings win.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration};
use serde::{Deserialize, Serialize};

/// The proxy-defaults file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyDefaults {
    /// Proxy pods per Database when `spec.proxy.replicas` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Container resources when `spec.proxy.resources` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector when `spec.proxy.nodeSelector` is empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations when `spec.proxy.tolerations` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets to pull the proxy image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Extra environment of the proxy container (e.g. `HTTPS_PROXY`, `AWS_STS_REGIONAL_ENDPOINTS`).
    /// Variables the operator sets itself (`POD_NAME`, `AWS_ROLE_ARN`, …) cannot be overridden.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Why the proxy-defaults file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyDefaultsError {
    /// The file cannot be read.
    #[error("cannot read the proxy defaults {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The file is not valid (unknown field, wrong type).
    #[error(
        "invalid proxy defaults in {0} (fields: replicas, resources, nodeSelector, tolerations, affinity, priorityClassName, imagePullSecrets, imagePullPolicy, env)"
    )]
    Parse(PathBuf, #[source] serde_yaml::Error),
    /// A value is out of range.
    #[error("invalid proxy defaults in {0}: {1}")]
    Invalid(PathBuf, &'static str),
}

impl ProxyDefaults {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<ProxyDefaults, ProxyDefaultsError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProxyDefaultsError::Read(path.to_owned(), e))?;
        let defaults: ProxyDefaults = if text.trim().is_empty() {
            ProxyDefaults::default()
        } else {
            serde_yaml::from_str(&text).map_err(|e| ProxyDefaultsError::Parse(path.to_owned(), e))?
        };
        if defaults.replicas.is_some_and(|r| r < 0) {
            return Err(ProxyDefaultsError::Invalid(path.to_owned(), "replicas must be 0 or more"));
        }
        if let Some(p) = &defaults.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&p.as_str())
        {
            return Err(ProxyDefaultsError::Invalid(path.to_owned(), "imagePullPolicy must be Always, IfNotPresent or Never"));
        }
        Ok(defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ProxyDefaults, ProxyDefaultsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy-defaults.yaml");
        std::fs::write(&path, text).unwrap();
        ProxyDefaults::load(&path)
    }

    #[test]
    fn a_full_file_is_read() {
        let d = load(
            "replicas: 2\nresources: {requests: {cpu: 50m}}\nnodeSelector: {pool: db}\ntolerations: [{key: db, operator: Exists}]\n\
             affinity: {podAntiAffinity: {}}\npriorityClassName: high\nimagePullSecrets: [{name: regcred}]\nimagePullPolicy: Never\n\
             env: [{name: HTTPS_PROXY, value: 'http://proxy:3128'}]\n",
        )
        .unwrap();
        assert_eq!(d.replicas, Some(2));
        assert_eq!(d.node_selector["pool"], "db");
        assert_eq!(d.image_pull_secrets[0].name, "regcred");
        assert_eq!(d.env[0].name, "HTTPS_PROXY");
    }

    #[test]
    fn an_empty_file_means_no_defaults() {
        assert_eq!(load("").unwrap(), ProxyDefaults::default());
        assert_eq!(load("{}\n").unwrap(), ProxyDefaults::default());
    }

    #[test]
    fn a_typo_is_refused_with_the_field_name() {
        let e = load("replica: 2\n").unwrap_err();
        let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(text.contains("unknown field `replica`"), "{text}");
    }

    #[test]
    fn a_bad_pull_policy_is_refused() {
        assert!(matches!(load("imagePullPolicy: Sometimes\n"), Err(ProxyDefaultsError::Invalid(..))));
    }
}
