//! Custom resource types (`portcullis.io`), one module per API version, CRD generation, and
//! the model rules every mode shares: reading an endpoint, validating a `Database`, conditions.

pub mod conditions;
pub mod descriptions;
pub mod endpoint;
pub mod v1alpha1;
pub mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use endpoint::{region_from_rds_host, resolved_region, split_endpoint, split_url};
pub use v1alpha1::{AccessRole, AccessRoleSpec, Database, DatabaseDiscovery, DatabaseSpec, Protocol};
pub use validate::{FieldError, validate_database, validate_for_operator};

/// The API group of every Portcullis resource.
pub const GROUP: &str = "portcullis.io";

/// Every CRD as applied: descriptions reflowed to one line per paragraph, for `kubectl explain`.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    [Database::crd(), AccessRole::crd(), DatabaseDiscovery::crd()].into_iter().map(descriptions::reflow_crd).collect()
}

/// The file name under `crds/` for each CRD, with its YAML.
pub fn crd_files() -> anyhow::Result<Vec<(String, String)>> {
    crds()?
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            Ok((name, serde_yaml::to_string(&crd)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each<'a>(value: &'a serde_json::Value, key: &str, found: &mut Vec<&'a serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == key {
                        found.push(v);
                    }
                    each(v, key, found);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| each(v, key, found)),
            _ => {}
        }
    }

    fn generated() -> Vec<serde_json::Value> {
        crds().unwrap().iter().map(|crd| serde_json::to_value(crd).unwrap()).collect()
    }

    #[test]
    fn crd_descriptions_are_written_for_people_with_one_line_per_paragraph() {
        for crd in generated() {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            let top = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"].as_str().unwrap_or_default();
            assert!(top.len() > 40, "{kind} has a real description: {top:?}");
            let mut found = Vec::new();
            each(&crd, "description", &mut found);
            for text in found.iter().filter_map(|d| d.as_str()) {
                assert!(!text.contains("Auto-generated"), "{kind}: {text:?}");
                for pair in text.split('\n').collect::<Vec<_>>().windows(2) {
                    let broken = !pair[0].trim().is_empty() && !pair[1].trim().is_empty() && !descriptions::starts_block(pair[1]);
                    assert!(!broken, "{kind}: a hard line break inside a paragraph: {text:?}");
                }
            }
        }
    }

    #[test]
    fn every_cel_rule_has_a_message() {
        let mut rules = 0;
        for crd in generated() {
            let mut found = Vec::new();
            each(&crd, "x-kubernetes-validations", &mut found);
            for rule in found.iter().flat_map(|list| list.as_array().unwrap()) {
                rules += 1;
                let message = rule.get("message").or_else(|| rule.get("messageExpression")).and_then(|m| m.as_str()).unwrap_or_default();
                assert!(!message.trim().is_empty() && !message.contains('\n'), "the rule {} has a one-line message", rule["rule"]);
            }
        }
        assert!(rules > 0, "the endpoint rule is found");
    }
}
