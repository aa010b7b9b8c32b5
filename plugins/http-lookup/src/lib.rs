//! waio plugin for generic REST enrichment: one request per record to a URL built from the
//! record, the JSON answer stored in a field of the record.
//!
//! Config (the operator's `config` table):
//!
//! | field | default | meaning |
//! | --- | --- | --- |
//! | `url` | required | template such as `http://127.0.0.1:18080/kv/{user_id}`; fields are percent-encoded |
//! | `method` | `"GET"` | HTTP method |
//! | `headers` | none | object of header values; values may use `${secret:NAME}` |
//! | `output_field` | `"lookup"` | record field the answer goes to |
//! | `on_not_found` | `"null"` | on 404: `"null"` stores null, `"skip"` emits nothing, `"fail"` fails the record |
//! | `timeout_ms` | host default | time limit per request |
//!
//! A 2xx body that is JSON is stored as JSON, any other body as a string, an empty body as null.
//! 429, 5xx, timeouts and connection failures are retriable; other statuses fail the record.

use std::rc::Rc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use waio_sdk::http::{self, HttpError, Request, Response};
use waio_sdk::serde_json::{Map, Value};
use waio_sdk::template::Template;
use waio_sdk::{export_enricher, Config, ConfigError, Enricher, Event, Failure, ResultFuture};

const KNOWN_FIELDS: &[&str] = &[
    "url",
    "method",
    "headers",
    "output_field",
    "on_not_found",
    "timeout_ms",
];

/// Everything but RFC 3986's unreserved characters, so a field value stays one path segment
/// or one query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotFound {
    Null,
    Skip,
    Fail,
}

#[derive(Debug)]
struct Settings {
    url: Template,
    method: String,
    headers: Vec<(String, String)>,
    output_field: String,
    on_not_found: NotFound,
    timeout_ms: Option<u32>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        config.deny_unknown(KNOWN_FIELDS)?;
        let url_source = config.str("url")?;
        if !(url_source.starts_with("http://") || url_source.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "url",
                format!("expected an http:// or https:// URL, got `{url_source}`"),
            ));
        }
        let url =
            Template::parse(url_source).map_err(|e| ConfigError::invalid("url", e.to_string()))?;
        let method = config
            .opt_str("method")?
            .unwrap_or("GET")
            .to_ascii_uppercase();
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ConfigError::invalid(
                "method",
                format!("`{method}` is not an HTTP method"),
            ));
        }
        let headers = match config.value("headers") {
            None => Vec::new(),
            Some(Value::Object(headers)) => headers
                .iter()
                .map(|(name, value)| match value {
                    Value::String(value) => Ok((name.clone(), value.clone())),
                    _ => Err(ConfigError::invalid(
                        "headers",
                        format!("the value of header `{name}` must be a string"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::invalid(
                    "headers",
                    "expected an object of header names and values",
                ))
            }
        };
        let on_not_found = match config.opt_str("on_not_found")?.unwrap_or("null") {
            "null" => NotFound::Null,
            "skip" => NotFound::Skip,
            "fail" => NotFound::Fail,
            other => {
                return Err(ConfigError::invalid(
                    "on_not_found",
                    format!("expected \"null\", \"skip\" or \"fail\", got \"{other}\""),
                ))
            }
        };
        let timeout_ms: Option<u32> = config.opt("timeout_ms")?;
        if timeout_ms == Some(0) {
            return Err(ConfigError::invalid("timeout_ms", "must be above 0"));
        }
        Ok(Settings {
            url,
            method,
            headers,
            output_field: config.get_or("output_field", "lookup".to_string())?,
            on_not_found,
            timeout_ms,
        })
    }

    fn request(&self, record: &Map<String, Value>) -> Result<Request, Failure> {
        let url = self
            .url
            .render_with(record, |value| {
                utf8_percent_encode(value, COMPONENT).to_string()
            })
            .map_err(|f| f.context("url"))?;
        let mut request = Request::new(&self.method, url).timeout_ms(self.timeout_ms);
        request.headers = self.headers.clone();
        Ok(request)
    }

    /// Turns the answer into the outputs of the record.
    fn finish(
        &self,
        input: &Event,
        mut record: Map<String, Value>,
        context: &str,
        answer: Result<Response, HttpError>,
    ) -> Result<Vec<Event>, Failure> {
        let response = answer.map_err(|e| Failure::from(e).context(context))?;
        let value = if response.status == 404 {
            match self.on_not_found {
                NotFound::Null => Value::Null,
                NotFound::Skip => return Ok(Vec::new()),
                NotFound::Fail => {
                    return Err(Failure::fatal(format!(
                        "{context}: HTTP 404 (not found): {}",
                        response.body_excerpt()
                    )))
                }
            }
        } else {
            body_value(
                response
                    .error_for_status()
                    .map_err(|f| f.context(context))?,
            )
        };
        record.insert(self.output_field.clone(), value);
        Ok(vec![input.with_json(&record)?])
    }
}

/// The body as JSON if it is JSON, else as a string; an empty body is null.
fn body_value(response: Response) -> Value {
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    match response.json::<Value>() {
        Ok(value) => value,
        Err(_) => Value::String(response.text()),
    }
}

struct Lookup {
    settings: Rc<Settings>,
}

impl Enricher for Lookup {
    fn open(config: Config) -> Result<Self, String> {
        Ok(Lookup {
            settings: Rc::new(Settings::from_config(&config)?),
        })
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        let prepared = input.json_object().and_then(|record| {
            let request = self.settings.request(&record)?;
            Ok((record, request))
        });
        let (record, request) = match prepared {
            Ok(prepared) => prepared,
            Err(failure) => return output.fail(failure),
        };
        let context = format!("{} {}", request.method, request.url);
        let settings = Rc::clone(&self.settings);
        http::send(request, move |answer| {
            output.complete_with(settings.finish(&input, record, &context, answer));
        });
    }
}

export_enricher!(Lookup);

#[cfg(test)]
mod tests {
    use super::*;
    use waio_sdk::serde_json::json;
    use waio_sdk::FailureKind;

    fn config_of(config: Value) -> Config {
        match config {
            Value::Object(map) => Config::from_map(map),
            _ => unreachable!(),
        }
    }

    fn settings(config: Value) -> Settings {
        Settings::from_config(&config_of(config)).unwrap()
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    fn input() -> Event {
        Event {
            key: Some("u/1".into()),
            timestamp: Some(5),
            payload: br#"{"user_id":"u/1 x"}"#.to_vec(),
        }
    }

    fn run(s: &Settings, reply: Result<Response, HttpError>) -> Result<Vec<Event>, Failure> {
        s.finish(&input(), input().json_object().unwrap(), "GET u", reply)
    }

    #[test]
    fn url_fields_are_percent_encoded() {
        let s = settings(json!({
            "url": "http://127.0.0.1:18080/kv/{user_id}?v={n}",
            "headers": {"x-api-key": "${secret:KV}"},
            "timeout_ms": 300,
        }));
        let r = s
            .request(&object(json!({"user_id": "a/b c?é", "n": 2})))
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.url, "http://127.0.0.1:18080/kv/a%2Fb%20c%3F%C3%A9?v=2");
        assert_eq!(r.headers, vec![("x-api-key".into(), "${secret:KV}".into())]);
        assert_eq!(r.timeout_ms, Some(300));
    }

    #[test]
    fn missing_url_field_is_fatal_and_named() {
        let s = settings(json!({"url": "http://h/kv/{user_id}"}));
        let f = s.request(&object(json!({"id": 1}))).unwrap_err();
        assert_eq!(f.kind, FailureKind::Fatal);
        assert_eq!(f.message, "url: record has no field `user_id`");
    }

    #[test]
    fn json_answer_is_stored() {
        let s = settings(json!({"url": "http://h/{user_id}", "output_field": "profile"}));
        let out = run(&s, answer(200, r#"{"tier":"gold"}"#)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.as_deref(), Some("u/1"));
        assert_eq!(out[0].timestamp, Some(5));
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"user_id": "u/1 x", "profile": {"tier": "gold"}})
        );
    }

    #[test]
    fn other_bodies() {
        let s = settings(json!({"url": "http://h/{user_id}"}));
        let text = run(&s, answer(200, "plain words")).unwrap();
        assert_eq!(
            text[0].json::<Value>().unwrap()["lookup"],
            json!("plain words")
        );
        let empty = run(&s, answer(204, "")).unwrap();
        assert_eq!(empty[0].json::<Value>().unwrap()["lookup"], Value::Null);
    }

    #[test]
    fn not_found_policies() {
        let null = settings(json!({"url": "http://h/{user_id}"}));
        let out = run(&null, answer(404, "nope")).unwrap();
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"user_id": "u/1 x", "lookup": null})
        );

        let skip = settings(json!({"url": "http://h/{user_id}", "on_not_found": "skip"}));
        assert!(run(&skip, answer(404, "")).unwrap().is_empty());

        let fail = settings(json!({"url": "http://h/{user_id}", "on_not_found": "fail"}));
        let f = run(&fail, answer(404, "")).unwrap_err();
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(f.message.contains("404"), "{}", f.message);
    }

    #[test]
    fn error_classification() {
        let s = settings(json!({"url": "http://h/{user_id}"}));
        let kind = |reply| run(&s, reply).unwrap_err().kind;
        assert_eq!(kind(answer(429, "")), FailureKind::Retriable);
        assert_eq!(kind(answer(500, "")), FailureKind::Retriable);
        assert_eq!(kind(answer(502, "")), FailureKind::Retriable);
        assert_eq!(kind(answer(400, "")), FailureKind::Fatal);
        assert_eq!(kind(answer(403, "")), FailureKind::Fatal);
        assert_eq!(kind(Err(HttpError::Timeout)), FailureKind::Retriable);
        assert_eq!(
            kind(Err(HttpError::Connection("refused".into()))),
            FailureKind::Retriable
        );
        assert_eq!(
            kind(Err(HttpError::Denied("host".into()))),
            FailureKind::Fatal
        );
        let f = run(&s, answer(503, "down for maintenance")).unwrap_err();
        assert_eq!(f.message, "GET u: HTTP 503: down for maintenance");
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c| {
            Settings::from_config(&config_of(c))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(json!({})), "config field `url` is missing");
        assert!(err(json!({"url": "http://h/{x"})).contains("`url`"));
        assert!(err(json!({"url": "ftp://h/"})).contains("`url`"));
        assert!(
            err(json!({"url": "http://h/", "on_not_found": "ignore"})).contains("`on_not_found`")
        );
        assert!(err(json!({"url": "http://h/", "headers": {"a": 1}})).contains("`headers`"));
        assert!(err(json!({"url": "http://h/", "method": "GE T"})).contains("`method`"));
        assert!(err(json!({"url": "http://h/", "output": "x"}))
            .starts_with("unknown config field `output`"));
        assert_eq!(
            settings(json!({"url": "http://h/", "method": "post"})).method,
            "POST"
        );
    }
}
