//! What the proxy reads in a DynamoDB request body before it re-signs it: that it is one
//! unambiguous JSON value (no object names a field twice, at any depth, since AWS's parser
//! and the audit's could pick different values), and the tables it names, for the audit.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Checks `body` is JSON without repeated fields, and returns the tables it names
/// (`TableName`, the keys of `RequestItems`, and the `TableName` of each `TransactItems`
/// entry), sorted. An empty body names none.
pub fn tables(body: &[u8]) -> Result<Vec<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    // One pass: the value is built and checked for repeated fields together.
    let mut de = serde_json::Deserializer::from_slice(body);
    let Unambiguous(value) = Unambiguous::deserialize(&mut de).and_then(|v| de.end().map(|_| v)).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("ambiguous: ") {
            Some(reason) => format!("Portcullis refuses an ambiguous request body: {}", reason.split(" at line").next().unwrap_or(reason)),
            None => format!("the request body is not valid JSON: {text}"),
        }
    })?;
    let table_of = |v: &Value| v.get("TableName").and_then(|n| n.as_str()).map(str::to_owned);
    let mut found: BTreeSet<String> = table_of(&value).into_iter().collect();
    if let Some(items) = value.get("RequestItems").and_then(|r| r.as_object()) {
        found.extend(items.keys().cloned());
    }
    if let Some(items) = value.get("TransactItems").and_then(|t| t.as_array()) {
        found.extend(items.iter().filter_map(|i| i.as_object()).flat_map(|item| item.values().filter_map(table_of)));
    }
    Ok(found.into_iter().collect())
}

/// A JSON value in which no object repeats a field (a repeat is an error).
struct Unambiguous(Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnambiguousVisitor)
    }
}

struct UnambiguousVisitor;

impl<'de> Visitor<'de> for UnambiguousVisitor {
    type Value = Unambiguous;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unambiguous, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unambiguous(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("ambiguous: the field {key:?} appears twice in one object")));
            }
            object.insert(key, value);
        }
        Ok(Unambiguous(Value::Object(object)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unambiguous, A::Error> {
        let mut items = Vec::new();
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Unambiguous(Value::Array(items)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Unambiguous, E> {
        Ok(Unambiguous(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Unambiguous, E> {
        Ok(Unambiguous(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Unambiguous, E> {
        Ok(Unambiguous(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Unambiguous, E> {
        Ok(Unambiguous(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Unambiguous, E> {
        Ok(Unambiguous(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Unambiguous, E> {
        Ok(Unambiguous(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Unambiguous, E> {
        Ok(Unambiguous(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_come_from_every_place_a_request_names_one() {
        assert_eq!(tables(br#"{"TableName":"orders","Key":{"id":{"S":"1"}}}"#).unwrap(), ["orders"]);
        assert_eq!(tables(br#"{"RequestItems":{"b":{"Keys":[]},"a":{"Keys":[]}}}"#).unwrap(), ["a", "b"]);
        let transact = br#"{"TransactItems":[{"Put":{"TableName":"x","Item":{}}},{"ConditionCheck":{"TableName":"y"}}]}"#;
        assert_eq!(tables(transact).unwrap(), ["x", "y"]);
        assert!(tables(b"{}").unwrap().is_empty());
        assert!(tables(b"").unwrap().is_empty());
    }

    #[test]
    fn a_field_twice_at_any_depth_is_refused_with_its_name() {
        for (body, field) in [
            (&br#"{"TableName":"orders","TableName":"secrets"}"#[..], "TableName"),
            (br#"{"TableName":"t","Key":{"id":{"S":"1","S":"2"}}}"#, "S"),
            (br#"{"RequestItems":{"a":{},"a":{}}}"#, "a"),
            (br#"{"TransactItems":[{"Put":{"TableName":"x","TableName":"y"}}]}"#, "TableName"),
        ] {
            let e = tables(body).unwrap_err();
            assert!(e.contains("ambiguous") && e.contains(&format!("{field:?} appears twice")), "{e}");
        }
        assert!(tables(b"{not json").unwrap_err().contains("not valid JSON"));
        assert!(tables(br#"{"a":1} {"b":2}"#).unwrap_err().contains("not valid JSON"));
    }
}
