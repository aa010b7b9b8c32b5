//! `{field}` templates filled from a record's top-level fields, for URLs and prompts.
//!
//! `"http://kv/{user_id}"` takes the record's `user_id`. Strings are inserted as they are,
//! numbers and booleans as written in JSON, objects and arrays as compact JSON. A field that is
//! missing or null fails the record. Write `{{` and `}}` for literal braces.

use serde_json::{Map, Value};

use crate::Failure;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("`{{` at character {0} is not closed (write `{{{{` for a literal brace)")]
    Unclosed(usize),
    /// A `}` without its `{`.
    #[error("`}}` at character {0} has no opening `{{` (write `}}}}` for a literal brace)")]
    Unopened(usize),
    /// `{}` or a name holding `{`.
    #[error("bad placeholder at character {0}: expected `{{field}}`")]
    BadPlaceholder(usize),
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(TemplateError::Unopened(at)),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(TemplateError::Unclosed(at)),
                            Some((_, '}')) => break,
                            Some((_, '{')) => return Err(TemplateError::BadPlaceholder(at)),
                            Some((_, c)) => name.push(c),
                        }
                    }
                    if name.is_empty() {
                        return Err(TemplateError::BadPlaceholder(at));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(name));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The field names the template uses, in order of appearance.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the placeholders from `record`. A missing or null field is a fatal failure naming
    /// the field.
    pub fn render(&self, record: &Map<String, Value>) -> Result<String, Failure> {
        self.render_with(record, str::to_string)
    }

    /// Like [`Template::render`], passing each field's text through `encode` (to percent-encode
    /// URL parts, for instance). Literal text is kept as written.
    pub fn render_with(
        &self,
        record: &Map<String, Value>,
        encode: impl Fn(&str) -> String,
    ) -> Result<String, Failure> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(name) => match record.get(name) {
                    None | Some(Value::Null) => {
                        return Err(Failure::fatal(format!("record has no field `{name}`")))
                    }
                    Some(Value::String(s)) => out.push_str(&encode(s)),
                    Some(other) => out.push_str(&encode(&other.to_string())),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fills_fields() {
        let t = Template::parse("Classify {text} for user {id} ({vip}) {tags}").unwrap();
        let r = record(json!({"text": "hi there", "id": 7, "vip": true, "tags": ["a", "b"]}));
        assert_eq!(
            t.render(&r).unwrap(),
            r#"Classify hi there for user 7 (true) ["a","b"]"#
        );
        assert_eq!(
            t.fields().collect::<Vec<_>>(),
            ["text", "id", "vip", "tags"]
        );
    }

    #[test]
    fn literal_braces() {
        let t = Template::parse("{{\"q\": \"{q}\"}}").unwrap();
        assert_eq!(
            t.render(&record(json!({"q": "x"}))).unwrap(),
            "{\"q\": \"x\"}"
        );
    }

    #[test]
    fn missing_or_null_field_fails() {
        let t = Template::parse("/kv/{user_id}").unwrap();
        for r in [json!({}), json!({"user_id": null})] {
            let f = t.render(&record(r)).unwrap_err();
            assert!(!f.is_retriable());
            assert_eq!(f.message, "record has no field `user_id`");
        }
    }

    #[test]
    fn encoder_applies_to_fields_only() {
        let t = Template::parse("/a b/{x}").unwrap();
        let out = t
            .render_with(&record(json!({"x": "c d"})), |s| s.replace(' ', "%20"))
            .unwrap();
        assert_eq!(out, "/a b/c%20d");
    }

    #[test]
    fn bad_templates() {
        assert_eq!(
            Template::parse("a {b").unwrap_err(),
            TemplateError::Unclosed(2)
        );
        assert_eq!(
            Template::parse("a }").unwrap_err(),
            TemplateError::Unopened(2)
        );
        assert_eq!(
            Template::parse("{}").unwrap_err(),
            TemplateError::BadPlaceholder(0)
        );
        assert_eq!(
            Template::parse("{a{b}").unwrap_err(),
            TemplateError::BadPlaceholder(0)
        );
        assert!(Template::parse("plain").unwrap().fields().next().is_none());
    }
}
