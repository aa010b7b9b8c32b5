//! The scorer itself, free of the SDK: a logistic regression over the words of one text field,
//! and the record path around it (read the field, score, drop or emit the record).
//!
//! The record path is built to be cheap, since it runs for every record of the stream:
//!
//! - The payload is read once, by a visitor that keeps only the input field (borrowed from the
//!   payload unless it holds escapes) and skips every other value without building it.
//! - A record under the threshold with `keep = "flagged"` is dropped right there: nothing is
//!   written.
//! - A record that passes is the input bytes with `,"score":0.9731` (and `,"flagged":true`)
//!   spliced in before the closing `}`: its other fields keep their order and their bytes. Only a
//!   record that already has the output field (or `flagged`) is parsed whole and written again,
//!   so that the field is replaced rather than repeated.
//! - Words are looked up where they lie in the text; only a word with upper-case or non-ASCII
//!   letters is copied, to lower-case it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What a word adds to the sum: its weight once per occurrence, or once if it occurs at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// Bag of words: the weight times the number of times the word occurs (the default).
    Count,
    /// Set of words: the weight once if the word occurs.
    Presence,
}

/// Which records leave the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only records at or above the threshold (the default); the others are filtered out.
    Flagged,
    /// Every record, with a boolean `flagged` field added.
    All,
}

/// The field `keep = "all"` adds.
pub const FLAG_FIELD: &str = "flagged";

/// The trained model and what to do with its answer.
#[derive(Debug, Clone)]
pub struct Scorer {
    input_field: String,
    output_field: String,
    /// `"score":`, the output field as a JSON key, written once.
    output_key: Vec<u8>,
    /// Word -> index into `weights`.
    index: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    weights: Vec<f64>,
    /// Length range (in bytes) of the words in `index`: anything else is not looked up.
    min_len: usize,
    max_len: usize,
    bias: f64,
    threshold: f64,
    keep: Keep,
    features: Features,
}

/// The settings a [`Scorer`] is made from, checked by [`Scorer::new`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub input_field: String,
    pub output_field: String,
    pub weights: Vec<(String, f64)>,
    pub bias: f64,
    pub threshold: f64,
    pub keep: Keep,
    pub features: Features,
}

/// A setting [`Scorer::new`] refuses: the config field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub field: &'static str,
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError {
        field,
        reason: reason.into(),
    }
}

impl Scorer {
    /// Checks `settings` and builds the lookup table. Weight words are lower-cased; a word that
    /// the tokeniser could never produce (empty, or holding a separator such as a space or `-`)
    /// is refused rather than silently never matching.
    pub fn new(settings: Settings) -> Result<Scorer, SettingError> {
        let Settings {
            input_field,
            output_field,
            weights: words,
            bias,
            threshold,
            keep,
            features,
        } = settings;
        if input_field.is_empty() {
            return Err(refuse("input_field", "must not be empty"));
        }
        if output_field.is_empty() {
            return Err(refuse("output_field", "must not be empty"));
        }
        if output_field == input_field {
            return Err(refuse(
                "output_field",
                format!("must differ from input_field (both are `{input_field}`)"),
            ));
        }
        if keep == Keep::All && output_field == FLAG_FIELD {
            return Err(refuse(
                "output_field",
                format!("must not be `{FLAG_FIELD}` with keep = \"all\", which adds that field"),
            ));
        }
        if !bias.is_finite() {
            return Err(refuse("bias", "must be a finite number"));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(refuse(
                "threshold",
                format!("is a probability: expected 0 to 1, got {threshold}"),
            ));
        }
        if words.is_empty() {
            return Err(refuse("weights", "must have at least one word"));
        }
        let mut index = HashMap::with_capacity_and_hasher(words.len(), Default::default());
        let mut weights = Vec::with_capacity(words.len());
        let (mut min_len, mut max_len) = (usize::MAX, 0);
        for (word, weight) in words {
            let lower = lowercase(&word);
            if lower.is_empty() || !lower.chars().all(char::is_alphanumeric) {
                return Err(refuse(
                    "weights",
                    format!(
                        "`{word}` is not one word: text is split on every character that is not \
                         a letter or a digit, so it would never match"
                    ),
                ));
            }
            if !weight.is_finite() {
                return Err(refuse(
                    "weights",
                    format!("`{word}`: weight must be finite"),
                ));
            }
            if index.contains_key(lower.as_str()) {
                return Err(refuse(
                    "weights",
                    format!("`{word}` is given twice (words are compared in lower case)"),
                ));
            }
            min_len = min_len.min(lower.len());
            max_len = max_len.max(lower.len());
            index.insert(lower.into_boxed_str(), weights.len());
            weights.push(weight);
        }
        let output_key = format!("{}:", Value::String(output_field.clone())).into_bytes();
        Ok(Scorer {
            input_field,
            output_field,
            output_key,
            index,
            weights,
            min_len,
            max_len,
            bias,
            threshold,
            keep,
            features,
        })
    }

    /// The probability that `text` is worth flagging: `sigmoid(bias + sum of weights)`.
    pub fn probability(&self, text: &str) -> f64 {
        let mut z = self.bias;
        match self.features {
            Features::Count => tokens(text, |word| {
                if let Some(&i) = self.lookup(word) {
                    z += self.weights[i];
                }
            }),
            Features::Presence => {
                // Few words of a text are weighted: a short list beats a set.
                let mut seen: Vec<usize> = Vec::new();
                tokens(text, |word| {
                    if let Some(&i) = self.lookup(word) {
                        if !seen.contains(&i) {
                            seen.push(i);
                            z += self.weights[i];
                        }
                    }
                });
            }
        }
        sigmoid(z)
    }

    /// The score written to the record: the probability rounded to 4 places. The threshold is
    /// compared with this rounded value, so `flagged` always agrees with the `score` shown.
    pub fn score(&self, text: &str) -> f64 {
        round4(self.probability(text))
    }

    /// Whether a score is at or above the threshold.
    pub fn flags(&self, score: f64) -> bool {
        score >= self.threshold
    }

    fn lookup(&self, word: &str) -> Option<&usize> {
        if word.len() < self.min_len || word.len() > self.max_len {
            return None;
        }
        self.index.get(word)
    }

    /// One record: `Ok(None)` drops it, `Ok(Some(payload))` emits it with its score, `Err` is a
    /// message for a fatal failure of the record.
    pub fn process(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let probe = Probe {
            field: &self.input_field,
            output_field: &self.output_field,
            flag_field: (self.keep == Keep::All).then_some(FLAG_FIELD),
        }
        .deserialize(&mut de)
        .and_then(|probe| de.end().map(|()| probe))
        .map_err(|e| format!("payload is not JSON: {e}"))?;
        let probe = match probe {
            Shape::Object(probe) => probe,
            Shape::Other(kind) => return Err(format!("payload must be a JSON object, got {kind}")),
        };
        let text = match probe.text {
            Some(Field::Text(text)) => text,
            Some(Field::Other(kind)) => {
                return Err(format!(
                    "record field `{}` (input_field) must be a string, got {kind}",
                    self.input_field
                ))
            }
            None => {
                return Err(format!(
                    "record has no field `{}` (input_field)",
                    self.input_field
                ))
            }
        };
        let score = self.score(&text);
        let flagged = self.flags(score);
        if !flagged && self.keep == Keep::Flagged {
            return Ok(None);
        }
        let flag = (self.keep == Keep::All).then_some(flagged);
        if probe.clash {
            return self.rewrite(payload, score, flag).map(Some);
        }
        Ok(Some(self.splice(payload, probe.fields, score, flag)))
    }

    /// The payload with the score (and flag) added before its closing brace.
    fn splice(&self, payload: &[u8], fields: usize, score: f64, flag: Option<bool>) -> Vec<u8> {
        // The payload parsed as an object, so its last byte other than white space is `}`.
        let close = payload
            .iter()
            .rposition(|&b| b == b'}')
            .expect("a JSON object ends with `}`");
        let mut out = Vec::with_capacity(close + self.output_key.len() + 32);
        out.extend_from_slice(&payload[..close]);
        if fields > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&self.output_key);
        write_number(&mut out, score);
        if let Some(flag) = flag {
            out.extend_from_slice(if flag {
                b",\"flagged\":true"
            } else {
                b",\"flagged\":false"
            });
        }
        out.push(b'}');
        out
    }

    /// The slow path, for a record that already has the output field: parse it whole, replace
    /// the field, write it again.
    fn rewrite(&self, payload: &[u8], score: f64, flag: Option<bool>) -> Result<Vec<u8>, String> {
        let mut record: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        record.insert(self.output_field.clone(), number(score));
        if let Some(flag) = flag {
            record.insert(FLAG_FIELD.to_string(), Value::Bool(flag));
        }
        serde_json::to_vec(&record).map_err(|e| format!("cannot write the record: {e}"))
    }
}

/// Calls `f` with each word of `text`, lower-cased: the runs of letters and digits (Unicode
/// `char::is_alphanumeric`) between any other characters.
pub fn tokens(text: &str, mut f: impl FnMut(&str)) {
    let mut lowered = String::new();
    let mut start: Option<usize> = None;
    // Whether the word so far is ASCII with no upper case: then it is looked up in place.
    let mut plain = true;
    for (at, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(at);
                plain = true;
            }
            plain &= c.is_ascii_lowercase() || c.is_ascii_digit();
        } else if let Some(from) = start.take() {
            emit(&text[from..at], plain, &mut lowered, &mut f);
        }
    }
    if let Some(from) = start {
        emit(&text[from..], plain, &mut lowered, &mut f);
    }
}

fn emit(word: &str, plain: bool, lowered: &mut String, f: &mut impl FnMut(&str)) {
    if plain {
        f(word);
    } else {
        lowered.clear();
        lowered.extend(word.chars().flat_map(char::to_lowercase));
        f(lowered);
    }
}

fn lowercase(word: &str) -> String {
    word.chars().flat_map(char::to_lowercase).collect()
}

/// The logistic function, without overflow for large `|z|`.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn round4(p: f64) -> f64 {
    (p * 10_000.0).round() / 10_000.0
}

fn number(score: f64) -> Value {
    serde_json::Number::from_f64(score).map_or(Value::Null, Value::Number)
}

fn write_number(out: &mut Vec<u8>, score: f64) {
    // A probability is finite: serde_json writes it as its shortest form (`0.9731`, `1.0`).
    serde_json::to_writer(&mut *out, &score).expect("writing to a Vec cannot fail");
}

/// FNV-1a: the weight table is small and its keys are short, so a simple hash beats SipHash.
/// The keys are the operator's config, not attacker-chosen input, so flooding is not a concern
/// for the table; lookups of record words only probe it.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

// ---- Reading only what is needed from the payload ----

/// Reads a payload, keeping the input field only.
struct Probe<'f> {
    field: &'f str,
    output_field: &'f str,
    flag_field: Option<&'f str>,
}

enum Shape<'a> {
    Object(Probed<'a>),
    /// Not an object: what it is instead.
    Other(&'static str),
}

struct Probed<'a> {
    text: Option<Field<'a>>,
    /// How many fields the object has (0 or more matters: whether a comma goes before ours).
    fields: usize,
    /// Whether it already has a field the scorer writes.
    clash: bool,
}

enum Field<'a> {
    Text(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Shape<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Shape<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape<'de>, A::Error> {
        let mut probed = Probed {
            text: None,
            fields: 0,
            clash: false,
        };
        while let Some(Str(key)) = map.next_key::<Str>()? {
            probed.fields += 1;
            if key == self.field {
                probed.text = Some(map.next_value_seed(FieldSeed)?);
                continue;
            }
            if key == self.output_field || Some(&*key) == self.flag_field {
                probed.clash = true;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Shape::Object(probed))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape<'de>, E> {
        Ok(Shape::Other("null"))
    }
}

/// A string, borrowed from the payload when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Str<'de>, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The input field's value: its text, or the kind of value it is instead.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(s.to_string())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(s)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            input_field: "text".into(),
            output_field: "score".into(),
            weights: vec![
                ("fraud".into(), 3.0),
                ("stolen".into(), 2.5),
                ("thanks".into(), -1.0),
            ],
            bias: -3.0,
            threshold: 0.5,
            keep: Keep::Flagged,
            features: Features::Count,
        }
    }

    fn scorer() -> Scorer {
        Scorer::new(settings()).unwrap()
    }

    fn with(f: impl FnOnce(&mut Settings)) -> Scorer {
        let mut s = settings();
        f(&mut s);
        Scorer::new(s).unwrap()
    }

    fn refused(f: impl FnOnce(&mut Settings)) -> SettingError {
        let mut s = settings();
        f(&mut s);
        Scorer::new(s).unwrap_err()
    }

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        tokens(text, |w| out.push(w.to_string()));
        out
    }

    fn out(payload: &[u8]) -> Value {
        serde_json::from_slice(payload).unwrap()
    }

    #[test]
    fn tokens_are_lower_cased_runs_of_letters_and_digits() {
        assert_eq!(
            words("FRAUD!! card-stolen, 3x  (Zürich) ÉTÉ_x"),
            ["fraud", "card", "stolen", "3x", "zürich", "été", "x"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("  ...  "), Vec::<String>::new());
        assert_eq!(words("abc"), ["abc"]);
    }

    #[test]
    fn sigmoid_is_stable_at_the_ends() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_077_977_882_3).abs() < 1e-15);
        assert!((sigmoid(-2.0) - 0.119_202_922_022_117_7).abs() < 1e-15);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
    }

    #[test]
    fn score_is_sigmoid_of_bias_plus_weights_counted() {
        let s = scorer();
        // No weighted word: sigmoid(-3).
        assert_eq!(s.score("hello there"), round4(sigmoid(-3.0)));
        // fraud (3) + stolen (2.5) - 3 = 2.5; case does not matter.
        assert_eq!(s.score("Fraud: my card was STOLEN"), round4(sigmoid(2.5)));
        // Counts: fraud twice = 6 - 3.
        assert_eq!(s.score("fraud fraud"), round4(sigmoid(3.0)));
        // Negative weights pull down.
        assert_eq!(s.score("fraud? no, thanks"), round4(sigmoid(-1.0)));
        // Part of a word does not count.
        assert_eq!(s.score("fraudster"), round4(sigmoid(-3.0)));
    }

    #[test]
    fn presence_counts_a_word_once() {
        let s = with(|s| s.features = Features::Presence);
        assert_eq!(s.score("fraud fraud FRAUD"), round4(sigmoid(0.0)));
        assert_eq!(s.score("fraud stolen fraud"), round4(sigmoid(2.5)));
    }

    #[test]
    fn weight_words_are_lower_cased_and_checked() {
        let s = with(|s| s.weights = vec![("Fraud".into(), 4.0)]);
        assert_eq!(s.score("fraud"), round4(sigmoid(1.0)));
        let e = refused(|s| s.weights.push(("wire transfer".into(), 1.0)));
        assert_eq!(e.field, "weights");
        assert!(
            e.reason.starts_with("`wire transfer` is not one word"),
            "{e:?}"
        );
        let e = refused(|s| s.weights.push(("FRAUD".into(), 1.0)));
        assert!(e.reason.contains("given twice"), "{e:?}");
        assert!(refused(|s| s.weights.push(("".into(), 1.0))).field == "weights");
        assert!(refused(|s| s.weights.clear())
            .reason
            .contains("at least one"));
        assert!(refused(|s| s.weights.push(("x".into(), f64::NAN))).field == "weights");
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(refused(|s| s.threshold = 1.5).field, "threshold");
        assert_eq!(refused(|s| s.threshold = -0.1).field, "threshold");
        assert_eq!(refused(|s| s.bias = f64::INFINITY).field, "bias");
        assert_eq!(
            refused(|s| s.output_field = "text".into()).field,
            "output_field"
        );
        assert_eq!(refused(|s| s.input_field.clear()).field, "input_field");
        assert_eq!(
            refused(|s| {
                s.keep = Keep::All;
                s.output_field = "flagged".into();
            })
            .field,
            "output_field"
        );
        // Both ends of the threshold are allowed.
        with(|s| s.threshold = 0.0);
        with(|s| s.threshold = 1.0);
    }

    #[test]
    fn records_under_the_threshold_are_dropped() {
        let s = scorer();
        assert_eq!(s.process(br#"{"id":1,"text":"hi, thanks"}"#), Ok(None));
    }

    #[test]
    fn flagged_records_keep_their_bytes_and_gain_the_score() {
        let s = scorer();
        let payload = br#"{"id": 7, "text": "Fraud, card stolen", "nested": {"text": 1}}"#;
        let got = s.process(payload).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            r#"{"id": 7, "text": "Fraud, card stolen", "nested": {"text": 1},"score":0.9241}"#
        );
    }

    #[test]
    fn the_threshold_compares_with_the_score_written() {
        // sigmoid(0) = 0.5 exactly: at the threshold counts as flagged.
        let s = with(|s| s.weights = vec![("fraud".into(), 3.0)]);
        let got = s.process(br#"{"text":"fraud"}"#).unwrap().unwrap();
        assert_eq!(out(&got), json!({"text": "fraud", "score": 0.5}));
        // 0.49996 rounds to 0.5: flagged, so no record shows a score at the threshold unflagged.
        let z = (0.49996f64 / (1.0 - 0.49996)).ln();
        let s = with(|s| {
            s.weights = vec![("x".into(), z)];
            s.bias = 0.0;
        });
        assert_eq!(s.score("x"), 0.5);
        assert!(s.flags(s.score("x")));
    }

    #[test]
    fn keep_all_adds_the_flag() {
        let s = with(|s| s.keep = Keep::All);
        let low = s.process(br#"{"text":"hello"}"#).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(low).unwrap(),
            r#"{"text":"hello","score":0.0474,"flagged":false}"#
        );
        let high = s.process(br#"{"text":"stolen FRAUD"} "#).unwrap().unwrap();
        assert_eq!(
            out(&high),
            json!({"text": "stolen FRAUD", "score": 0.9241, "flagged": true})
        );
    }

    #[test]
    fn an_existing_output_field_is_replaced_not_repeated() {
        let s = with(|s| s.keep = Keep::All);
        let got = s
            .process(br#"{"score":"old","flagged":1,"text":"fraud stolen"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            out(&got),
            json!({"text": "fraud stolen", "score": 0.9241, "flagged": true})
        );
        let got = s.process(br#"{"flagged":1,"text":"x"}"#).unwrap().unwrap();
        assert_eq!(
            out(&got),
            json!({"text": "x", "score": 0.0474, "flagged": false})
        );
    }

    #[test]
    fn escaped_text_is_read() {
        let s = scorer();
        let got = s
            .process(br#"{"text":"\"FRAUD\"\n\u0073tolen"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(out(&got)["score"], json!(0.9241));
    }

    #[test]
    fn other_fields_are_not_read_but_must_be_json() {
        let s = scorer();
        let big = json!({"text": "fraud stolen", "deep": [[{"a": [1, 2, {"b": null}]}], "s"]});
        assert!(s.process(big.to_string().as_bytes()).unwrap().is_some());
        let err = s.process(br#"{"text":"fraud","x":[1,}"#).unwrap_err();
        assert!(err.starts_with("payload is not JSON:"), "{err}");
    }

    #[test]
    fn bad_records_fail_with_a_message_naming_the_field() {
        let s = scorer();
        assert_eq!(
            s.process(br#"{"id":1}"#).unwrap_err(),
            "record has no field `text` (input_field)"
        );
        assert_eq!(
            s.process(br#"{"text":42}"#).unwrap_err(),
            "record field `text` (input_field) must be a string, got a number"
        );
        assert_eq!(
            s.process(br#"{"text":null}"#).unwrap_err(),
            "record field `text` (input_field) must be a string, got null"
        );
        assert_eq!(
            s.process(br#"{"text":["fraud"]}"#).unwrap_err(),
            "record field `text` (input_field) must be a string, got an array"
        );
        assert_eq!(
            s.process(br#"[1,2]"#).unwrap_err(),
            "payload must be a JSON object, got an array"
        );
        let err = s.process(b"not json").unwrap_err();
        assert!(err.starts_with("payload is not JSON: expected"), "{err}");
        let err = s.process(br#"{"text":"fraud"} {}"#).unwrap_err();
        assert!(err.starts_with("payload is not JSON: trailing"), "{err}");
    }

    #[test]
    fn custom_field_names() {
        let s = with(|s| {
            s.input_field = "message body".into();
            s.output_field = "risk \"p\"".into();
        });
        let got = s
            .process(br#"{"text":"x","message body":"fraud stolen"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            out(&got),
            json!({"text": "x", "message body": "fraud stolen", "risk \"p\"": 0.9241})
        );
    }

    #[test]
    fn an_empty_object_gets_no_stray_comma() {
        let s = with(|s| {
            s.input_field = "t".into();
            s.threshold = 0.0;
        });
        // `{}` has no `t`: fails; an object with only `t` gets `,` once.
        assert!(s.process(b"{}").is_err());
        let got = s.process(br#"{"t":""}"#).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            r#"{"t":"","score":0.0474}"#
        );
    }
}
