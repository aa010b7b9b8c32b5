//! One JSON line into a record: the host needs only the key, the event time and the bytes, so
//! it reads the line once, takes those two fields and skips the rest without building a JSON
//! tree (a tree costs an allocation per field and value; most lines never need one). The line
//! is still checked to be one whole JSON document. Event time from `[event_time]` (JSON
//! pointers, text formats) takes the full tree, as does a `$watermark` line.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::event_time::extract_timestamp;
use crate::manifest::{EventTimeConfig, FieldMapping};
use crate::record::{Element, Record};

/// Parses one line into a record or a watermark; the error says what is wrong.
pub fn parse_line(
    text: &[u8],
    line: u64,
    fields: &FieldMapping,
    event_time: Option<&EventTimeConfig>,
) -> Result<Element, String> {
    if event_time.is_some() {
        return parse_with_tree(text, line, fields, event_time);
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let probe = Probe { fields };
    let found = de
        .deserialize_any(probe)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| format!("invalid JSON: {e}"))?;
    if found.watermark_key {
        // `{"$watermark": N}` alone is a watermark; read it the long way (rare).
        return parse_with_tree(text, line, fields, event_time);
    }
    let timestamp = match (&fields.timestamp_field, found.timestamp) {
        (Some(field), Some(v)) if !v.is_null() => Some(v.as_i64().ok_or_else(|| {
            format!("field {field:?} must be an integer timestamp (ms since epoch), got {v}")
        })?),
        _ => None,
    };
    Ok(Element::Record(Record {
        key: found.key.and_then(key_text),
        timestamp,
        payload: text.to_vec(),
        line,
        enters_at: 0,
        produced_by: None,
        origin: None,
        ticket: None,
    }))
}

/// The record's key: a string as it is, any other value as its JSON text; none for null.
fn key_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// The same, through a `serde_json::Value` of the whole line.
fn parse_with_tree(
    text: &[u8],
    line: u64,
    fields: &FieldMapping,
    event_time: Option<&EventTimeConfig>,
) -> Result<Element, String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if let Some(object) = value.as_object() {
        if let Some(mark) = object.get("$watermark") {
            if object.len() == 1 {
                return mark.as_i64().map(Element::Watermark).ok_or_else(|| {
                    format!("\"$watermark\" must be an integer (ms since epoch), got {mark}")
                });
            }
        }
    }
    let key = fields
        .key_field
        .as_ref()
        .and_then(|field| value.get(field).cloned())
        .and_then(key_text);
    let timestamp = match (&fields.timestamp_field, event_time) {
        (_, Some(config)) => Some(extract_timestamp(&value, config)?),
        (None, None) => None,
        (Some(field), None) => match value.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                format!("field {field:?} must be an integer timestamp (ms since epoch), got {v}")
            })?),
        },
    };
    Ok(Element::Record(Record {
        key,
        timestamp,
        payload: text.to_vec(),
        line,
        enters_at: 0,
        produced_by: None,
        origin: None,
        ticket: None,
    }))
}

/// What a line holds of interest to the host (the last value wins for a repeated key, as in a
/// JSON tree).
#[derive(Default)]
struct Found {
    key: Option<Value>,
    timestamp: Option<Value>,
    /// The top-level object has a `$watermark` key.
    watermark_key: bool,
}

/// Reads a JSON document, keeping only the key and timestamp fields of a top-level object.
struct Probe<'f> {
    fields: &'f FieldMapping,
}

/// Which of the fields of interest an object key is.
enum Field {
    Key,
    Timestamp,
    Both,
    Watermark,
    Other,
}

struct FieldSeed<'f>(&'f FieldMapping);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldSeed<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    // Keys without escapes arrive borrowed: no allocation to compare them.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
        let is = |field: &Option<String>| field.as_deref() == Some(key);
        Ok(match (is(&self.0.key_field), is(&self.0.timestamp_field)) {
            (true, true) => Field::Both,
            (true, false) => Field::Key,
            (false, true) => Field::Timestamp,
            (false, false) if key == "$watermark" => Field::Watermark,
            (false, false) => Field::Other,
        })
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(field) = map.next_key_seed(FieldSeed(self.fields))? {
            match field {
                Field::Key => found.key = Some(map.next_value()?),
                Field::Timestamp => found.timestamp = Some(map.next_value()?),
                Field::Both => {
                    let value: Value = map.next_value()?;
                    found.key = Some(value.clone());
                    found.timestamp = Some(value);
                }
                Field::Watermark => {
                    found.watermark_key = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    // Any other document is a record with neither key nor timestamp.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
        Ok(Found::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(key: Option<&str>, ts: Option<&str>) -> FieldMapping {
        FieldMapping {
            key_field: key.map(String::from),
            timestamp_field: ts.map(String::from),
        }
    }

    /// The probe and the tree agree on every kind of line, errors included.
    #[test]
    fn the_probe_reads_lines_as_the_json_tree_does() {
        let mapping = fields(Some("id"), Some("ts"));
        let lines: &[&[u8]] = &[
            br#"{"id":"a","ts":1000,"text":"hi"}"#,
            br#"{"text":{"nested":[1,2,{"id":"inner"}]},"id":7,"ts":null}"#,
            br#"{"id":{"x":1},"ts":5}"#,
            br#"{"id":null,"other":true}"#,
            br#"{"i\u0064":"escaped key","ts":3}"#,
            br#"{"id":"first","id":"last"}"#,
            br#"{"$watermark":5}"#,
            br#"{"$watermark":5,"id":"not a watermark"}"#,
            br#"{"$watermark":"soon"}"#,
            br#"[1,2,3]"#,
            br#""just a string""#,
            b"42",
            b"null",
            br#"{"id":1,"ts":"soon"}"#,
            br#"{"id":1,"ts":1.5}"#,
            b"{not json",
            br#"{"id":1} trailing"#,
            br#"{"id":1,}"#,
        ];
        for line in lines {
            let probed = parse_line(line, 1, &mapping, None);
            let tree = parse_with_tree(line, 1, &mapping, None);
            assert_eq!(probed, tree, "{}", String::from_utf8_lossy(line));
        }
        let same = fields(Some("n"), Some("n"));
        assert_eq!(
            parse_line(br#"{"n":12}"#, 1, &same, None),
            parse_with_tree(br#"{"n":12}"#, 1, &same, None)
        );
        let none = fields(None, None);
        assert_eq!(
            parse_line(br#"{"id":"a","ts":1}"#, 1, &none, None),
            parse_with_tree(br#"{"id":"a","ts":1}"#, 1, &none, None)
        );
    }
}
