//! Blanking secrets out of answers: every form in which an echoing server hands a secret back
//! (raw, JSON-escaped, percent-encoded), found in one pass with Aho-Corasick.

use aho_corasick::{AhoCorasick, MatchKind};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{OutboundError, Response};

const REDACTED: &[u8] = b"[redacted]";

/// Blanks out, in one pass over an answer, every form of every secret that an echo hands back.
pub(super) enum Redactor {
    /// The operator has no secrets.
    Inactive,
    Active(AhoCorasick),
    /// Building the matcher failed (only for absurdly large secrets): answers are withheld.
    Broken(String),
}

impl Redactor {
    /// A redactor for the secret values `values`.
    pub(super) fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            for form in echoed_forms(value) {
                if !form.is_empty() && !patterns.contains(&form) {
                    patterns.push(form);
                }
            }
        }
        if patterns.is_empty() {
            return Redactor::Inactive;
        }
        // Leftmost-longest: where one form is a prefix of another, the longer one is blanked.
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
        {
            Ok(matcher) => Redactor::Active(matcher),
            Err(e) => Redactor::Broken(e.to_string()),
        }
    }

    pub(super) fn is_active(&self) -> bool {
        !matches!(self, Redactor::Inactive)
    }

    pub(super) fn redact(&self, answer: &mut Response) -> Result<(), OutboundError> {
        let matcher = match self {
            Redactor::Inactive => return Ok(()),
            Redactor::Active(matcher) => matcher,
            // `prepare` refuses every request first; kept for safety.
            Redactor::Broken(why) => {
                return Err(OutboundError::Connection(format!(
                    "answer withheld: the host could not prepare secret redaction ({why})"
                )))
            }
        };
        if let Some(body) = replace_all(matcher, &answer.body) {
            answer.body = body;
        }
        for (name, value) in answer.headers.iter_mut() {
            for text in [name, value] {
                if let Some(replaced) = replace_all(matcher, text.as_bytes()) {
                    // Patterns are UTF-8, so matches start and end on character boundaries.
                    *text = String::from_utf8_lossy(&replaced).into_owned();
                }
            }
        }
        Ok(())
    }
}

/// `haystack` with every match blanked, or `None` if nothing matched.
fn replace_all(matcher: &AhoCorasick, haystack: &[u8]) -> Option<Vec<u8>> {
    let mut matches = matcher.find_iter(haystack).peekable();
    matches.peek()?;
    let mut out = Vec::with_capacity(haystack.len());
    let mut copied = 0;
    for found in matches {
        out.extend_from_slice(&haystack[copied..found.start()]);
        out.extend_from_slice(REDACTED);
        copied = found.end();
    }
    out.extend_from_slice(&haystack[copied..]);
    Some(out)
}

/// RFC 3986 percent-encoding: all but the unreserved characters (Python's `quote(safe='')`).
const URI_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &URI_UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The forms in which an echoing server hands a header value back without meaning to transform
/// it: as is, inside a JSON string (as serde, JavaScript, Python, Go and PHP escape it), and
/// percent-encoded in a URL or form. Duplicates are left to the caller.
fn echoed_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    // Every combination of the escaping choices JSON encoders make.
    for bits in 0u8..16 {
        let style = JsonStyle {
            ascii_only: bits & 1 != 0,
            escape_slash: bits & 2 != 0,
            escape_html: bits & 4 != 0,
            upper_hex: bits & 8 != 0,
        };
        forms.push(json_escaped(value, style));
    }
    forms.push(utf8_percent_encode(value, URI_UNRESERVED).to_string());
    forms.push(utf8_percent_encode(value, URI_COMPONENT).to_string());
    forms.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    forms
}

/// Choices JSON encoders make beyond the required escapes (`"`, `\`, control characters).
#[derive(Clone, Copy, Default)]
struct JsonStyle {
    /// Everything past `~` as `\uXXXX` (Python's default).
    ascii_only: bool,
    /// `/` as `\/` (PHP's default).
    escape_slash: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go's default).
    escape_html: bool,
    /// `\u00E9` rather than `\u00e9`.
    upper_hex: bool,
}

/// `value` as it stands between the quotes of a JSON string written in `style`.
fn json_escaped(value: &str, style: JsonStyle) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let unicode = |out: &mut String, c: char| {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let escaped = if style.upper_hex {
                format!("\\u{unit:04X}")
            } else {
                format!("\\u{unit:04x}")
            };
            out.push_str(&escaped);
        }
    };
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style.escape_slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.escape_html => unicode(&mut out, c),
            c if c < ' ' || (style.ascii_only && c > '~') => unicode(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-very-secret";

    /// The answer body after redaction by `r`.
    fn redacted(r: &Redactor, body: &str) -> String {
        let mut answer = Response {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            from_cache: false,
        };
        r.redact(&mut answer).unwrap();
        String::from_utf8(answer.body).unwrap()
    }

    #[test]
    fn redacts_secret_values_from_answers() {
        let r = Redactor::new([KEY]);
        let mut answer = Response {
            status: 200,
            headers: vec![
                ("echo".into(), "Bearer sk-very-secret".into()),
                ("x-sk-very-secret".into(), "1".into()),
            ],
            body: b"{\"auth\":\"Bearer sk-very-secret\",\"again\":\"sk-very-secret\"}".to_vec(),
            from_cache: false,
        };
        r.redact(&mut answer).unwrap();
        let body = String::from_utf8(answer.body).unwrap();
        assert_eq!(
            body,
            "{\"auth\":\"Bearer [redacted]\",\"again\":\"[redacted]\"}"
        );
        assert_eq!(answer.headers[0].1, "Bearer [redacted]");
        assert_eq!(answer.headers[1].0, "x-[redacted]");
    }

    #[test]
    fn redacts_the_json_escaped_forms_of_a_secret() {
        let value = "sk-\"quoted\"\\back/slash\n\u{1}é<&>";
        let r = Redactor::new([value]);
        // As serde (and JavaScript) write it.
        let serde = serde_json::to_string(value).unwrap();
        let inner = &serde[1..serde.len() - 1];
        assert_eq!(inner, json_escaped(value, JsonStyle::default()));
        assert_eq!(
            redacted(&r, &format!("{{\"a\":{serde}}}")),
            "{\"a\":\"[redacted]\"}"
        );
        // Python's json.dumps (ASCII only), PHP's (\/), Go's (<&> escaped), and upper-case
        // \u escapes.
        for form in [
            r#"sk-\"quoted\"\\back/slash\n\u0001\u00e9<&>"#,
            r#"sk-\"quoted\"\\back\/slash\n\u0001é<&>"#,
            r#"sk-\"quoted\"\\back/slash\n\u0001é\u003c\u0026\u003e"#,
            r#"sk-\"quoted\"\\back/slash\n\u0001\u00E9<&>"#,
        ] {
            assert_eq!(redacted(&r, &format!("<{form}>")), "<[redacted]>", "{form}");
        }
        // And still the raw form.
        assert_eq!(redacted(&r, &format!("<{value}>")), "<[redacted]>");
    }

    #[test]
    fn redacts_the_percent_encoded_forms_of_a_secret() {
        let r = Redactor::new(["sk key/with+signs!"]);
        for form in [
            "sk%20key%2Fwith%2Bsigns%21",
            "sk%20key%2Fwith%2Bsigns!",
            "sk+key%2Fwith%2Bsigns%21",
        ] {
            assert_eq!(
                redacted(&r, &format!("?q={form}&x")),
                "?q=[redacted]&x",
                "{form}"
            );
        }
    }

    #[test]
    fn redaction_blanks_every_secret_in_one_pass_and_nothing_else() {
        let r = Redactor::new(["secret-one", "secret-one-longer"]);
        assert_eq!(
            redacted(&r, "secret-one-longer secret-one secret-on"),
            "[redacted] [redacted] secret-on"
        );
        // A big answer with no secret comes back unchanged.
        let big = "a harmless answer; ".repeat(100_000);
        assert_eq!(redacted(&r, &big), big);
        // Without secrets there is nothing to do.
        assert!(!Redactor::new([]).is_active());
    }
}
