//! Label selectors (the Kubernetes shape), with a pure matcher.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects resources by their labels, as in Kubernetes: every `matchLabels` entry and every
/// `matchExpressions` requirement must hold. An empty selector selects everything.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement: `key` `operator` `values`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::allow_unknown_in_schema)]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operators of a set-based label requirement.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) && self.match_expressions.iter().all(|req| req.matches(labels))
    }
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfy this one requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let sel = LabelSelector { match_labels: labels(&[("env", "prod"), ("team", "a")]), ..Default::default() };
        assert!(sel.matches(&labels(&[("env", "prod"), ("team", "a"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        assert!(!sel.matches(&labels(&[("env", "dev"), ("team", "a")])));
    }

    #[test]
    fn each_operator_behaves_like_kubernetes() {
        use SelectorOperator::*;
        let prod = labels(&[("env", "prod")]);
        let none = labels(&[]);
        let cases = [
            (req("env", In, &["prod", "stage"]), true, false),
            (req("env", NotIn, &["prod"]), false, true),
            (req("env", NotIn, &["dev"]), true, true),
            (req("env", Exists, &[]), true, false),
            (req("env", DoesNotExist, &[]), false, true),
        ];
        for (r, on_prod, on_none) in cases {
            assert_eq!(r.matches(&prod), on_prod, "{r:?} on prod");
            assert_eq!(r.matches(&none), on_none, "{r:?} on no labels");
        }
    }
}
