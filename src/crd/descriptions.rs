//! Descriptions of the generated CRDs as `kubectl explain` should show them: the hard line
//! breaks that doc comments carry are joined into one line per paragraph.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Reflows every `description` in `crd` (the schema's and the printer columns').
pub fn reflow_crd(crd: CustomResourceDefinition) -> Result<CustomResourceDefinition, serde_json::Error> {
    let mut value = serde_json::to_value(&crd)?;
    reflow_descriptions(&mut value);
    serde_json::from_value(value)
}

/// Reflows every string under a `description` key in `value`. Defaults, examples and enum
/// values are data, not text for people, and are left alone.
pub fn reflow_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v) {
                    ("description", Value::String(text)) => *text = reflow(text),
                    ("default" | "example" | "enum", _) => {}
                    (_, v) => reflow_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph with spaces. Blank lines (paragraph breaks), list items
/// (`- `, `* `, `+ `, `1. `, `1) `), table rows, headings, fenced code and indented code keep
/// their line breaks; a list item's continuation lines join the item.
pub fn reflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_fence = false;
    let mut prev: Option<&str> = None;
    let mut prev_code = false;
    for line in text.split('\n') {
        let Some(before) = prev else {
            out.push_str(line);
            in_fence = is_fence(line);
            prev = Some(line);
            continue;
        };
        let fence = is_fence(line);
        let code = !in_fence && is_indented(line) && (before.trim().is_empty() || prev_code);
        let keep_break = in_fence || fence || is_fence(before) || code || line.trim().is_empty() || before.trim().is_empty() || starts_block(line);
        if keep_break {
            out.push('\n');
            out.push_str(line);
        } else {
            out.truncate(out.trim_end().len());
            out.push(' ');
            out.push_str(line.trim());
        }
        if fence {
            in_fence = !in_fence;
        }
        prev_code = code;
        prev = Some(line);
    }
    out
}

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

fn is_indented(line: &str) -> bool {
    line.starts_with("    ") || line.starts_with('\t')
}

/// Whether `line` starts a list item, a table row or a heading.
pub fn starts_block(line: &str) -> bool {
    let t = line.trim_start();
    if ["- ", "* ", "+ ", "|", "#"].iter().any(|p| t.starts_with(p)) {
        return true;
    }
    let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    digits > 0 && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflow_joins_lines_within_a_paragraph_and_keeps_paragraphs_lists_and_code() {
        assert_eq!(reflow("one line"), "one line");
        assert_eq!(reflow("The database's `host:port`.\nRequired for every protocol."), "The database's `host:port`. Required for every protocol.");
        assert_eq!(reflow("first\nparagraph\n\nsecond\nparagraph"), "first paragraph\n\nsecond paragraph");
        assert_eq!(
            reflow("Values:\n- `a` is the first\n  value\n- `b`\n1. one\n2) two\nafter"),
            "Values:\n- `a` is the first value\n- `b`\n1. one\n2) two after"
        );
        assert_eq!(
            reflow("Example:\n\n    kubectl get db\n    kubectl get dbrole\n\nDone\nhere."),
            "Example:\n\n    kubectl get db\n    kubectl get dbrole\n\nDone here."
        );
        assert_eq!(reflow("Run\n```\na\nb\n```\nthen\nstop"), "Run\n```\na\nb\n```\nthen stop");
        assert_eq!(reflow("trailing space \nnext"), "trailing space next");
    }

    #[test]
    fn reflow_touches_descriptions_only() {
        let mut v = serde_json::json!({
            "description": "a\nb",
            "default": {"description": "keep\nthis"},
            "properties": {"description": {"description": "c\nd", "type": "string"}},
        });
        reflow_descriptions(&mut v);
        assert_eq!(v["description"], "a b");
        assert_eq!(v["default"]["description"], "keep\nthis");
        assert_eq!(v["properties"]["description"]["description"], "c d");
    }
}
