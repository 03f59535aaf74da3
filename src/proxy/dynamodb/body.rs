//! What the proxy reads in a DynamoDB request body before it re-signs it: that it is one
//! unambiguous JSON value (no object names a field twice, at any depth, since AWS's parser
//! and the audit's could pick different values), and the tables it names, for the audit.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks `body` is JSON without repeated fields, and returns the tables it names
/// (`TableName`, the keys of `RequestItems`, and the `TableName` of each `TransactItems`
/// entry), sorted. An empty body names none.
pub fn tables(body: &[u8]) -> Result<Vec<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    Unambiguous::deserialize(&mut de).and_then(|_| de.end()).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("ambiguous: ") {
            Some(reason) => format!("Portcullis refuses an ambiguous request body: {}", reason.split(" at line").next().unwrap_or(reason)),
            None => format!("the request body is not valid JSON: {text}"),
        }
    })?;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let table_of = |v: &serde_json::Value| v.get("TableName").and_then(|n| n.as_str()).map(str::to_owned);
    let mut found: BTreeSet<String> = table_of(&value).into_iter().collect();
    if let Some(items) = value.get("RequestItems").and_then(|r| r.as_object()) {
        found.extend(items.keys().cloned());
    }
    if let Some(items) = value.get("TransactItems").and_then(|t| t.as_array()) {
        found.extend(items.iter().filter_map(|i| i.as_object()).flat_map(|item| item.values().filter_map(table_of)));
    }
    Ok(found.into_iter().collect())
}

/// A JSON value read only to prove no object in it repeats a field.
struct Unambiguous;

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
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<Unambiguous>()?;
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("ambiguous: the field {key:?} appears twice in one object")));
            }
        }
        Ok(Unambiguous)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unambiguous, A::Error> {
        while seq.next_element::<Unambiguous>()?.is_some() {}
        Ok(Unambiguous)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
    }
    fn visit_unit<E>(self) -> Result<Unambiguous, E> {
        Ok(Unambiguous)
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
