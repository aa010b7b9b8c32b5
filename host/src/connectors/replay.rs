//! Reading dead letters back (`waio dead-letters replay`): each line of a dead-letter file
//! becomes the record that failed again, with the place in the chain where it starts over.
//!
//! A line is what [`super::dead_letter::DeadLetter::encode`] writes. Only `stage`, `reason`,
//! `key`, `timestamp` and `payload` matter here; any other field (`line`, `error`, the attempt
//! counts...) is ignored, so dead letters of newer builds with more fields still replay.

use serde_json::{Map, Value};

/// Where a replayed dead letter starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The source could not parse it (stage "source", reason "parse"): it is parsed again and
    /// enters the first operator.
    Source,
    /// The operator at this chain index. One past the last operator is the sink: an output of
    /// the last operator that was not JSON (reason "output") skips every operator.
    Operator(usize),
}

/// A dead letter read back: the record that failed, and where it starts over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub start: Start,
    pub key: Option<String>,
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
}

/// Why a line cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a dead letter: {0}")]
    NotADeadLetter(String),
    #[error("stage {stage:?} is not an operator of this pipeline (its operators: {known}); replay with the manifest of the run that wrote the dead letters")]
    UnknownStage { stage: String, known: String },
}

/// Reads one dead-letter line (without its newline). `operators` are the pipeline's operator
/// names in chain order.
pub fn decode(text: &[u8], operators: &[String]) -> Result<Letter, DecodeError> {
    let not_one = |why: String| DecodeError::NotADeadLetter(why);
    let fields: Map<String, Value> = match serde_json::from_slice(text) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(not_one("not a JSON object".into())),
        Err(e) => return Err(not_one(format!("invalid JSON: {e}"))),
    };
    let text_field = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(not_one(format!("\"{name}\" must be a string, got {other}"))),
        None => Err(not_one(format!("no \"{name}\" field"))),
    };
    let (stage, reason) = (text_field("stage")?, text_field("reason")?);
    let key = match fields.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(not_one(format!("\"key\" must be a string, got {other}"))),
    };
    let timestamp = match fields.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            not_one(format!(
                "\"timestamp\" must be an integer (ms since the epoch), got {v}"
            ))
        })?),
    };
    let payload = match fields.get("payload") {
        Some(value) => payload_bytes(value),
        None => return Err(not_one("no \"payload\" field".into())),
    };
    Ok(Letter {
        start: start(stage, reason, operators)?,
        key,
        timestamp,
        payload,
    })
}

/// Only the source writes reason "parse"; every other dead letter names the operator that gave
/// up on its input, except an output of the last operator that was not JSON (reason "output"),
/// which that operator had already produced.
fn start(stage: &str, reason: &str, operators: &[String]) -> Result<Start, DecodeError> {
    if stage == "source" && reason == "parse" {
        return Ok(Start::Source);
    }
    match operators.iter().position(|name| name == stage) {
        Some(index) if reason == "output" => Ok(Start::Operator(index + 1)),
        Some(index) => Ok(Start::Operator(index)),
        None => Err(DecodeError::UnknownStage {
            stage: stage.to_string(),
            known: operators.join(", "),
        }),
    }
}

/// The record's bytes. A payload that was JSON was written as that JSON value; one that was not
/// was written as a string of its text. So a string whose text is itself JSON can only have been
/// a JSON string (its text would have been written as that JSON); any other string is taken as
/// the text it holds. (A payload that was a JSON string of text that is not JSON, such as
/// `"hello"`, cannot be told from the text `hello`: it comes back as the text.)
fn payload_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(text) if !is_json(text) => text.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::dead_letter::DeadLetter;
    use crate::record::Record;

    fn operators() -> Vec<String> {
        vec!["triage".into(), "answer".into()]
    }

    /// The line `DeadLetter::encode` writes for `payload` failing at `stage` for `reason`.
    fn encoded(stage: &str, reason: &str, payload: &[u8]) -> Vec<u8> {
        let record = Record {
            key: Some("k7".into()),
            timestamp: Some(-12),
            payload: payload.to_vec(),
            line: 9,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        };
        DeadLetter {
            stage,
            reason,
            error: "it broke",
            retriable: Some(true),
            record: &record,
            plugin: None,
        }
        .encode()
    }

    /// What the operators wrote reads back as the record they failed on, starting at them.
    #[test]
    fn a_dead_letter_reads_back_as_the_record_and_its_operator() {
        for (stage, start) in [("triage", 0), ("answer", 1)] {
            for reason in ["failure", "timeout", "retries_exhausted"] {
                let letter = decode(
                    &encoded(stage, reason, br#"{"b":[1,2],"a":"x"}"#),
                    &operators(),
                )
                .unwrap();
                assert_eq!(
                    letter,
                    Letter {
                        start: Start::Operator(start),
                        key: Some("k7".into()),
                        timestamp: Some(-12),
                        payload: br#"{"a":"x","b":[1,2]}"#.to_vec(),
                    }
                );
            }
        }
        // An output of the last operator that was not JSON: past every operator, as it was.
        let letter = decode(&encoded("answer", "output", b"not json"), &operators()).unwrap();
        assert_eq!(letter.start, Start::Operator(2));
        assert_eq!(letter.payload, b"not json");
        // A line the source could not parse is parsed again.
        let letter = decode(&encoded("source", "parse", b"{oops"), &operators()).unwrap();
        assert_eq!(letter.start, Start::Source);
        assert_eq!(letter.payload, b"{oops");
    }

    /// Payloads come back as the bytes they were, JSON or not; the one case that cannot be told
    /// apart (a JSON string of text that is not JSON) comes back as the text.
    #[test]
    fn payloads_round_trip() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"[1,{\"a\":null}]", b"[1,{\"a\":null}]"),
            (b"42", b"42"),
            (b"null", b"null"),
            (b"plain text", b"plain text"),
            (b"{\"unclosed\":", b"{\"unclosed\":"),
            // A JSON string whose text is JSON stays a JSON string.
            (b"\"42\"", b"\"42\""),
            (b"\"hello\"", b"hello"),
        ];
        for (payload, back) in cases {
            let letter = decode(&encoded("triage", "failure", payload), &operators()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&letter.payload),
                String::from_utf8_lossy(back)
            );
        }
    }

    /// Fields a newer build adds are ignored; absent key and timestamp are none.
    #[test]
    fn other_fields_are_ignored_and_key_and_timestamp_are_optional() {
        let line = br#"{"stage":"answer","reason":"failure","error":"x","attempts":4,"http_status":503,"error_kind":"retriable","line":3,"payload":{"id":1}}"#;
        let letter = decode(line, &operators()).unwrap();
        assert_eq!(letter.start, Start::Operator(1));
        assert_eq!((letter.key, letter.timestamp), (None, None));
        assert_eq!(letter.payload, br#"{"id":1}"#);
    }

    #[test]
    fn lines_that_are_not_dead_letters_say_what_is_wrong() {
        let error = |line: &str| {
            decode(line.as_bytes(), &operators())
                .unwrap_err()
                .to_string()
        };
        assert!(error("{oops").starts_with("not a dead letter: invalid JSON"));
        assert_eq!(error("[1]"), "not a dead letter: not a JSON object");
        assert_eq!(
            error(r#"{"id":1,"text":"an input record"}"#),
            "not a dead letter: no \"stage\" field"
        );
        assert_eq!(
            error(r#"{"stage":"triage","reason":"failure"}"#),
            "not a dead letter: no \"payload\" field"
        );
        assert_eq!(
            error(r#"{"stage":1,"reason":"failure","payload":{}}"#),
            "not a dead letter: \"stage\" must be a string, got 1"
        );
        assert_eq!(
            error(r#"{"stage":"triage","reason":"failure","timestamp":"soon","payload":{}}"#),
            "not a dead letter: \"timestamp\" must be an integer (ms since the epoch), got \"soon\""
        );
        assert_eq!(
            error(r#"{"stage":"triage","reason":"failure","key":[1],"payload":{}}"#),
            "not a dead letter: \"key\" must be a string, got [1]"
        );
    }

    #[test]
    fn a_stage_the_pipeline_does_not_have_is_named() {
        let error = decode(&encoded("summarize", "failure", b"{}"), &operators()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "stage \"summarize\" is not an operator of this pipeline (its operators: triage, answer); replay with the manifest of the run that wrote the dead letters"
        );
        // "source" is the source only for what it wrote (reason "parse").
        assert!(matches!(
            decode(&encoded("source", "failure", b"{}"), &operators()),
            Err(DecodeError::UnknownStage { .. })
        ));
    }
}
