//! The audit schema as `docs/audit.md` documents it (its event and field tables, read from the
//! doc itself), and the check every test's audit events go through (`Proxy::audit`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use super::repo;

/// One documented field.
struct Field {
    kind: &'static str,
    shapes: BTreeSet<String>,
    required: bool,
}

struct Schema {
    /// (event, code) → shape.
    events: BTreeMap<(String, String), BTreeSet<String>>,
    fields: BTreeMap<String, Field>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_owned()).collect()
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let doc = std::fs::read_to_string(repo().join("docs/audit.md")).expect("docs/audit.md");
        let (mut events, mut fields) = (BTreeMap::new(), BTreeMap::new());
        let mut table = "";
        for line in doc.lines() {
            if line.starts_with("| event | code |") {
                table = "events";
            } else if line.starts_with("| field | type |") {
                table = "fields";
            } else if !line.starts_with('|') {
                table = "";
            } else if !line.starts_with("|---") {
                let c = cells(line);
                match table {
                    "events" => {
                        events.entry((c[0].clone(), c[1].clone())).or_insert_with(BTreeSet::new).insert(c[3].clone());
                    }
                    "fields" => {
                        let kind = match c[1].as_str() {
                            "string" => "string",
                            "number" => "number",
                            "boolean" => "boolean",
                            "array" => "array",
                            other => panic!("docs/audit.md: type {other:?} of {}", c[0]),
                        };
                        let shapes = c[2].split(',').map(|s| s.trim().to_owned()).collect();
                        fields.insert(c[0].clone(), Field { kind, shapes, required: c[3] == "yes" });
                    }
                    _ => {}
                }
            }
        }
        assert!(events.len() >= 5 && fields.len() >= 30, "docs/audit.md: the tables were not found");
        Schema { events, fields }
    })
}

fn type_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Null => "null",
    }
}

/// Checks one event against the documented schema.
pub fn check(event: &serde_json::Value) -> Result<(), String> {
    let schema = schema();
    let object = event.as_object().ok_or("not a JSON object")?;
    let name = object.get("event").and_then(|v| v.as_str()).unwrap_or_default();
    let code = object.get("code").and_then(|v| v.as_str()).unwrap_or_default();
    let shapes = schema.events.get(&(name.to_owned(), code.to_owned())).ok_or_else(|| format!("event {name:?} with code {code:?} is not documented"))?;
    let shape = match name {
        "db.session.query" if object.contains_key("command") => "command",
        "db.session.query" => "statement",
        _ => shapes.iter().next().map(String::as_str).unwrap_or(""),
    };
    if !shapes.contains(shape) {
        return Err(format!("a {name} event of shape {shape} is not documented with code {code}"));
    }
    for (key, value) in object {
        let field = schema.fields.get(key).ok_or_else(|| format!("field {key:?} is not documented"))?;
        if !(field.shapes.contains("all") || field.shapes.contains(shape)) {
            return Err(format!("field {key:?} is not documented for {shape} events"));
        }
        if type_of(value) != field.kind {
            return Err(format!("field {key:?} is a {} but documented as a {}", type_of(value), field.kind));
        }
    }
    for (key, field) in &schema.fields {
        if field.required && (field.shapes.contains("all") || field.shapes.contains(shape)) && !object.contains_key(key) {
            return Err(format!("required field {key:?} is missing from a {shape} event"));
        }
    }
    Ok(())
}

#[test]
fn the_documented_examples_match_the_documented_schema() {
    let doc = std::fs::read_to_string(repo().join("docs/audit.md")).unwrap();
    let mut checked = BTreeSet::new();
    for block in doc.split("```json").skip(1) {
        for line in block.split("```").next().unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            check(&event).unwrap_or_else(|e| panic!("{e}: {line}"));
            checked.insert(event["protocol"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(checked.len(), 4, "an example per engine: {checked:?}");
    // The check has teeth: an undocumented field, a wrong type and a missing field are caught.
    let good: serde_json::Value = serde_json::from_str(doc.split("```json").nth(1).unwrap().lines().nth(1).unwrap()).unwrap();
    for broken in [
        {
            let mut e = good.clone();
            e["invented"] = 1.into();
            e
        },
        {
            let mut e = good.clone();
            e["success"] = "yes".into();
            e
        },
        {
            let mut e = good.clone();
            e.as_object_mut().unwrap().remove("db_name");
            e
        },
        {
            let mut e = good.clone();
            e["collection"] = "items".into();
            e
        },
    ] {
        assert!(check(&broken).is_err(), "{broken}");
    }
}
