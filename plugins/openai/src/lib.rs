//! waio plugin for OpenAI-compatible APIs: chat completions (classify, summarise, extract) and
//! embeddings. One request per record (embeddings: one per batch the host hands over); the host handles rate limits, retries, caching and the
//! API key (the plugin only names the secret).
//!
//! Config (the operator's `config` table):
//!
//! | field | default | meaning |
//! | --- | --- | --- |
//! | `base_url` | required | e.g. `http://127.0.0.1:18080/v1` |
//! | `mode` | `"chat"` | `"chat"` or `"embeddings"` |
//! | `model` | required | model name sent with every request |
//! | `api_key_secret` | none | secret NAME; adds `Authorization: Bearer ${secret:NAME}` |
//! | `input_field` | `"text"` | record field holding the text |
//! | `output_field` | `"label"` / `"embedding"` | record field the answer goes to |
//! | `system_prompt` | none | chat only: the system message |
//! | `prompt_template` | none | user text with `{field}` placeholders; replaces `input_field` |
//! | `max_tokens` | 1024 | chat only: sent with every request, so no answer runs on unbounded |
//! | `temperature`, `seed` | none | chat only: passed through (`temperature = 0` and a fixed `seed` make answers repeatable, so they cache well) |
//! | `max_input_chars` | none | the longest input sent, in characters: a longer one is cut and ends with the marker; the records cut are counted, the first logged at once, the count at close |
//! | `truncation_marker` | `" [truncated]"` | with `max_input_chars`: what a cut input ends with (counted in the limit) |
//! | `timeout_ms` | host default | time limit per request |
//! | `when_field`, `when_equals` | none | give both or neither: only records whose top-level field `when_field` equals the JSON value `when_equals` are sent to the model; the others pass through unchanged |
//! | `fallback` | none | a table `{ base_url, model, api_key_secret }` (model defaults to the primary's): the provider asked when the primary's answer is a passing fault (its circuit breaker is open, its retries ran out: 408, 429, 5xx, a timeout, a failed connection) |
//! | `model_field` | `"model"` with a fallback, else none | record field that says which model answered |
//! | `batch_requests` | `true` | embeddings only: the records of a batch (the operator's `batch.max_size`, filled for up to `batch.max_wait`) go in one request with a list of inputs, and each gets its vector back; `false`: one request per record |
//!
//! With a `fallback`, a record the primary cannot serve goes to the fallback with the same
//! request (its own model and key); a fatal answer (400, 404, a bad key) does not, since the
//! fallback would be asked the same wrong question. If the fallback fails too, its failure is
//! the record's, for the operator's `on_failure` to decide. The fallback's host must be in the
//! operator's `allowed_hosts` and its secret granted, like the primary's.
//!
//! The condition lets a chain run a cheap model on everything and an expensive one only on the
//! records the first flagged. A record without the field does not match. Numbers compare by
//! value (`1` equals `1.0`); other values must be equal JSON.

use std::borrow::Cow;
use std::rc::Rc;

mod batch;
mod guards;

use serde::{Deserialize, Serialize};
use waio_sdk::http::{self, HttpError, Request, Response};
use waio_sdk::serde_json::{Map, Value};
use waio_sdk::template::Template;
use waio_sdk::{
    export_enricher, report_usage, Config, ConfigError, Enricher, Event, Failure, ResultFuture,
};

const KNOWN_FIELDS: &[&str] = &[
    "base_url",
    "mode",
    "model",
    "api_key_secret",
    "input_field",
    "output_field",
    "system_prompt",
    "prompt_template",
    "max_tokens",
    "temperature",
    "seed",
    "max_input_chars",
    "truncation_marker",
    "timeout_ms",
    "when_field",
    "when_equals",
    "fallback",
    "model_field",
    "batch_requests",
];

const FALLBACK_FIELDS: &[&str] = &["base_url", "model", "api_key_secret"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Chat,
    Embeddings,
}

/// Tokens of one answer, from its `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    input: u32,
    output: u32,
}

/// `when_field` / `when_equals`: which records go to the model.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: String,
    equals: Value,
}

impl Condition {
    fn from_config(config: &Config) -> Result<Option<Condition>, ConfigError> {
        let field = config.opt_str("when_field")?;
        match (field, config.value("when_equals")) {
            (None, None) => Ok(None),
            (Some(""), _) => Err(ConfigError::invalid("when_field", "must not be empty")),
            (Some(field), Some(equals)) => Ok(Some(Condition {
                field: field.to_string(),
                equals: equals.clone(),
            })),
            (Some(_), None) => Err(ConfigError::invalid(
                "when_equals",
                "is required with `when_field`: give both `when_field` and `when_equals` or neither",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "when_field",
                "is required with `when_equals`: give both `when_field` and `when_equals` or neither",
            )),
        }
    }

    fn matches(&self, record: &Map<String, Value>) -> bool {
        record
            .get(&self.field)
            .is_some_and(|value| same_value(value, &self.equals))
    }
}

/// JSON equality, except that numbers compare by value: TOML and JSON writers disagree on
/// whether `1` is written `1` or `1.0`.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

/// What to do with one record.
#[derive(Debug)]
enum Step {
    /// The condition does not hold: emit the input unchanged, without a request.
    PassThrough,
    /// Send `request`; the answer is added to `record`.
    Call {
        record: Map<String, Value>,
        request: Request,
        /// Whether the input was cut to `max_input_chars`.
        cut: bool,
    },
}

/// Where requests go: the endpoint, the model asked for and the key.
#[derive(Debug, Clone, PartialEq)]
struct Provider {
    url: String,
    model: String,
    authorization: Option<String>,
}

impl Provider {
    /// Reads `base_url`, `model` and `api_key_secret` from `config`; `prefix` names the
    /// table they stand in for errors (`""` or `"fallback."`).
    fn from_config(
        config: &Config,
        prefix: &str,
        path: &str,
        default_model: Option<&str>,
    ) -> Result<Provider, ConfigError> {
        let field = |name: &str| format!("{prefix}{name}");
        let renamed = |e: ConfigError| match e {
            ConfigError::Invalid { field: f, reason } if !prefix.is_empty() => {
                ConfigError::invalid(format!("{prefix}{f}"), reason)
            }
            ConfigError::Missing { field: f } if !prefix.is_empty() => ConfigError::Missing {
                field: format!("{prefix}{f}"),
            },
            other => other,
        };
        let base_url = config
            .str("base_url")
            .map_err(renamed)?
            .trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                field("base_url"),
                format!("expected an http:// or https:// URL, got `{base_url}`"),
            ));
        }
        let model = match (config.opt_str("model").map_err(renamed)?, default_model) {
            (Some(model), _) => model.to_string(),
            (None, Some(model)) => model.to_string(),
            (None, None) => config.str("model").map_err(renamed)?.to_string(),
        };
        let authorization = match config.opt_str("api_key_secret").map_err(renamed)? {
            None => None,
            Some(name) if is_secret_name(name) => Some(format!("Bearer ${{secret:{name}}}")),
            Some(name) => {
                return Err(ConfigError::invalid(
                    field("api_key_secret"),
                    format!("`{name}` is not a secret name (letters, digits, `_`, `-`, `.`)"),
                ))
            }
        };
        Ok(Provider {
            url: format!("{base_url}/{path}"),
            model,
            authorization,
        })
    }
}

/// The `fallback` table, checked like the top level.
fn fallback(
    config: &Config,
    path: &str,
    primary: &Provider,
) -> Result<Option<Provider>, ConfigError> {
    let table = match config.value("fallback") {
        None => return Ok(None),
        Some(Value::Object(table)) => table.clone(),
        Some(_) => {
            return Err(ConfigError::invalid(
                "fallback",
                "expected a table { base_url, model, api_key_secret }",
            ))
        }
    };
    let table = Config::from_map(table);
    if let Some(unknown) = table
        .fields()
        .keys()
        .find(|k| !FALLBACK_FIELDS.contains(&k.as_str()))
    {
        return Err(ConfigError::Unknown {
            field: format!("fallback.{unknown}"),
            known: FALLBACK_FIELDS.join(", "),
        });
    }
    Provider::from_config(&table, "fallback.", path, Some(&primary.model)).map(Some)
}

#[derive(Debug)]
struct Settings {
    mode: Mode,
    primary: Provider,
    fallback: Option<Provider>,
    /// Where outputs say which model answered.
    model_field: Option<String>,
    input_field: String,
    output_field: String,
    system_prompt: Option<String>,
    template: Option<Template>,
    max_tokens: u32,
    temperature: Option<f64>,
    seed: Option<i64>,
    input_limit: Option<guards::InputLimit>,
    timeout_ms: Option<u32>,
    condition: Option<Condition>,
    /// Embeddings mode: one request for all the records of a batch (`batch_requests`, on by
    /// default).
    batch_requests: bool,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        config.deny_unknown(KNOWN_FIELDS)?;
        let mode = match config.opt_str("mode")?.unwrap_or("chat") {
            "chat" => Mode::Chat,
            "embeddings" => Mode::Embeddings,
            other => {
                return Err(ConfigError::invalid(
                    "mode",
                    format!("expected \"chat\" or \"embeddings\", got \"{other}\""),
                ))
            }
        };
        if mode == Mode::Embeddings {
            // Silently ignoring them would hide a misunderstanding of the config.
            for field in ["system_prompt", "max_tokens", "temperature", "seed"] {
                if config.value(field).is_some() {
                    return Err(ConfigError::invalid(field, "only applies to mode \"chat\""));
                }
            }
        }
        let template = match config.opt_str("prompt_template")? {
            None => None,
            Some(src) => Some(
                Template::parse(src)
                    .map_err(|e| ConfigError::invalid("prompt_template", e.to_string()))?,
            ),
        };
        let max_tokens: u32 = config.get_or("max_tokens", guards::DEFAULT_MAX_TOKENS)?;
        if max_tokens == 0 {
            return Err(ConfigError::invalid("max_tokens", "must be above 0"));
        }
        let timeout_ms: Option<u32> = config.opt("timeout_ms")?;
        if timeout_ms == Some(0) {
            return Err(ConfigError::invalid("timeout_ms", "must be above 0"));
        }
        let (path, default_output) = match mode {
            Mode::Chat => ("chat/completions", "label"),
            Mode::Embeddings => ("embeddings", "embedding"),
        };
        let primary = Provider::from_config(config, "", path, None)?;
        let fallback = fallback(config, path, &primary)?;
        let model_field = match config.opt_str("model_field")? {
            Some(field) => Some(field.to_string()),
            None if fallback.is_some() => Some("model".to_string()),
            None => None,
        };
        Ok(Settings {
            mode,
            primary,
            fallback,
            model_field,
            input_field: config.get_or("input_field", "text".to_string())?,
            output_field: config.get_or("output_field", default_output.to_string())?,
            system_prompt: config.opt("system_prompt")?,
            template,
            max_tokens,
            temperature: config.opt("temperature")?,
            seed: config.opt("seed")?,
            input_limit: guards::InputLimit::from_config(config)?,
            timeout_ms,
            condition: Condition::from_config(config)?,
            batch_requests: config.get_or("batch_requests", true)?,
        })
    }

    /// Checks the condition first, so records it skips cannot fail on a missing input field.
    fn step(&self, record: Map<String, Value>) -> Result<Step, Failure> {
        if let Some(condition) = &self.condition {
            if !condition.matches(&record) {
                return Ok(Step::PassThrough);
            }
        }
        let (request, cut) = self.request(&self.primary, &record)?;
        Ok(Step::Call {
            record,
            request,
            cut,
        })
    }

    /// The text sent for `record`: the rendered template, or the input field.
    fn text<'r>(&self, record: &'r Map<String, Value>) -> Result<Cow<'r, str>, Failure> {
        if let Some(template) = &self.template {
            return template
                .render(record)
                .map(Cow::Owned)
                .map_err(|f| f.context("prompt_template"));
        }
        match record.get(&self.input_field) {
            None | Some(Value::Null) => Err(Failure::fatal(format!(
                "record has no field `{}` (input_field)",
                self.input_field
            ))),
            Some(Value::String(text)) => Ok(Cow::Borrowed(text)),
            Some(other) => Ok(Cow::Owned(other.to_string())),
        }
    }

    /// The text sent for `record`, cut to `max_input_chars` (and the cut counted) if need be.
    fn input_text(&self, record: &Map<String, Value>) -> Result<String, Failure> {
        let text = self.text(record)?;
        let Some(limit) = &self.input_limit else {
            return Ok(text.into_owned());
        };
        let (text, cut) = limit.apply(text);
        if cut && limit.count_cut() == 1 {
            limit.log_first_cut();
        }
        Ok(text.into_owned())
    }

    /// A POST of `body` to `to`, with its key and the request time limit.
    fn with_headers(&self, to: &Provider, body: impl Serialize) -> Result<Request, Failure> {
        let mut request = Request::post(&to.url)
            .header("accept", "application/json")
            .json(&body)?
            .timeout_ms(self.timeout_ms);
        if let Some(authorization) = &to.authorization {
            request = request.header("authorization", authorization);
        }
        Ok(request)
    }

    /// The request for `record` to `to`, and whether its input was cut to `max_input_chars`.
    fn request(
        &self,
        to: &Provider,
        record: &Map<String, Value>,
    ) -> Result<(Request, bool), Failure> {
        let text = self.text(record)?;
        let (text, cut) = match &self.input_limit {
            Some(limit) => limit.apply(text),
            None => (text, false),
        };
        let request = Request::post(&to.url).header("accept", "application/json");
        let mut request = match self.mode {
            Mode::Chat => {
                let user = ChatMessage {
                    content: &text,
                    role: "user",
                };
                let messages = match &self.system_prompt {
                    Some(system) => vec![
                        ChatMessage {
                            content: system,
                            role: "system",
                        },
                        user,
                    ],
                    None => vec![user],
                };
                request.json(&ChatRequest {
                    max_tokens: self.max_tokens,
                    messages,
                    model: &to.model,
                    seed: self.seed,
                    temperature: self.temperature,
                })?
            }
            Mode::Embeddings => request.json(&EmbeddingsRequest {
                input: &text,
                model: &to.model,
            })?,
        }
        .timeout_ms(self.timeout_ms);
        if let Some(authorization) = &to.authorization {
            request = request.header("authorization", authorization);
        }
        Ok((request, cut))
    }

    /// Turns the answer into the enriched record. `report` gets the token usage of any answer
    /// that carries one, even if the rest of it is unusable: the tokens were spent.
    fn finish(
        &self,
        from: &Provider,
        input: &Event,
        mut record: Map<String, Value>,
        answer: Result<Response, HttpError>,
        report: impl FnOnce(Usage),
    ) -> Result<Vec<Event>, Failure> {
        let context = || format!("POST {}", from.url);
        if let Some(field) = &self.model_field {
            record.insert(field.clone(), Value::String(from.model.clone()));
        }
        let response = answer
            .map_err(Failure::from)
            .and_then(Response::error_for_status)
            .map_err(|f| f.context(context()))?;
        // The usual answer takes the typed path; anything unusual goes through `Value`, whose
        // checks name what is missing.
        if let Some((usage, value)) = self.typed_answer(&response.body) {
            report(usage);
            record.insert(self.output_field.clone(), value);
            return Ok(vec![input.with_json(&record)?]);
        }
        let body: Value = response.json().map_err(|e| {
            Failure::fatal(format!(
                "answer is not JSON ({e}): {}",
                response.body_excerpt()
            ))
            .context(context())
        })?;
        if let Some(usage) = usage(&body) {
            report(usage);
        }
        let value = match self.mode {
            Mode::Chat => chat_content(&body),
            Mode::Embeddings => embedding(&body),
        }
        .map_err(|f| f.context(context()))?;
        record.insert(self.output_field.clone(), value);
        Ok(vec![input.with_json(&record)?])
    }
}

impl Settings {
    /// Reads a well-formed answer (usage with integer counts, the text or the embedding where
    /// expected) without building a `serde_json::Value` of it: fewer allocations in the guest,
    /// which is what a plugin spends most of its time on. `None` for anything else.
    fn typed_answer(&self, body: &[u8]) -> Option<(Usage, Value)> {
        let answer: TypedAnswer = serde_json::from_slice(body).ok()?;
        let usage = answer.usage?;
        let value = match self.mode {
            Mode::Chat => {
                Value::String(answer.choices?.first()?.message.content.trim().to_string())
            }
            Mode::Embeddings => Value::Array(
                answer
                    .data?
                    .into_iter()
                    .next()?
                    .embedding
                    .into_iter()
                    .map(Value::Number)
                    .collect(),
            ),
        };
        let usage = Usage {
            input: token_count(usage.prompt_tokens),
            output: token_count(usage.completion_tokens),
        };
        Some((usage, value))
    }
}

/// A chat completions request body. Fields in alphabetical order, as `serde_json::Map` writes
/// them, so the bytes sent do not depend on which way a body is built.
#[derive(Serialize)]
struct ChatRequest<'a> {
    max_tokens: u32,
    messages: Vec<ChatMessage<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    content: &'a str,
    role: &'static str,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    input: &'a str,
    model: &'a str,
}

/// An embeddings request for several inputs at once (see `batch`).
#[derive(Serialize)]
struct EmbeddingsBatchRequest<'a> {
    input: &'a [String],
    model: &'a str,
}

/// The parts of a chat or embeddings answer the plugin uses; other fields are skipped.
#[derive(Deserialize)]
struct TypedAnswer<'a> {
    #[serde(borrow)]
    choices: Option<Vec<TypedChoice<'a>>>,
    data: Option<Vec<TypedEmbedding>>,
    usage: Option<TypedUsage>,
}

#[derive(Deserialize)]
struct TypedChoice<'a> {
    #[serde(borrow)]
    message: TypedMessage<'a>,
}

#[derive(Deserialize)]
struct TypedMessage<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct TypedEmbedding {
    embedding: Vec<serde_json::Number>,
}

#[derive(Deserialize)]
struct TypedUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A reported token count as the host takes it: missing is 0, beyond `u32` saturates.
fn token_count(reported: Option<u64>) -> u32 {
    reported.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn usage(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    let tokens = |field: &str| token_count(usage.get(field).and_then(Value::as_u64));
    Some(Usage {
        input: tokens("prompt_tokens"),
        output: tokens("completion_tokens"),
    })
}

/// `choices[0].message.content`, trimmed.
fn chat_content(body: &Value) -> Result<Value, Failure> {
    body.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(|text| Value::String(text.trim().to_string()))
        .ok_or_else(|| Failure::fatal("answer has no text at choices[0].message.content"))
}

/// `data[0].embedding`, a list of numbers.
fn embedding(body: &Value) -> Result<Value, Failure> {
    match body.pointer("/data/0/embedding") {
        Some(Value::Array(values)) if values.iter().all(Value::is_number) => {
            Ok(Value::Array(values.clone()))
        }
        _ => Err(Failure::fatal(
            "answer has no list of numbers at data[0].embedding",
        )),
    }
}

struct OpenAi {
    settings: Rc<Settings>,
}

impl Enricher for OpenAi {
    fn open(config: Config) -> Result<Self, String> {
        Ok(OpenAi {
            settings: Rc::new(Settings::from_config(&config)?),
        })
    }

    fn close(&self) {
        if let Some(limit) = &self.settings.input_limit {
            limit.report();
        }
    }

    /// Embeddings for a batch go in one request (unless `batch_requests = false`); chat
    /// completions take one request per record.
    fn invoke_batch(&self, batch: Vec<(Event, ResultFuture)>) {
        if self.settings.mode == Mode::Embeddings && self.settings.batch_requests && batch.len() > 1
        {
            batch::embed(&self.settings, batch)
        } else {
            waio_sdk::invoke_each(self, batch)
        }
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        let step = input
            .json_object()
            .and_then(|record| self.settings.step(record));
        let (record, request) = match step {
            Ok(Step::Call {
                record,
                request,
                cut,
            }) => {
                if let (true, Some(limit)) = (cut, &self.settings.input_limit) {
                    if limit.count_cut() == 1 {
                        limit.log_first_cut();
                    }
                }
                (record, request)
            }
            Ok(Step::PassThrough) => return output.complete_one(input),
            Err(failure) => return output.fail(failure),
        };
        let settings = Rc::clone(&self.settings);
        http::send(request, move |answer| {
            match (&settings.fallback, passing_fault(&answer)) {
                (Some(fallback), true) => {
                    ask_fallback(settings.clone(), fallback, input, record, output)
                }
                _ => finish_from(&settings, &settings.primary, input, record, answer, output),
            }
        });
    }
}

/// Whether the answer is a fault that another provider may not have: the breaker is open, the
/// host's retries ran out on a retriable status, a timeout or a broken connection.
fn passing_fault(answer: &Result<Response, HttpError>) -> bool {
    match answer {
        Ok(response) => http::is_retriable_status(response.status),
        Err(error) => error.is_retriable(),
    }
}

/// Sends the record's request to the fallback provider and completes from its answer.
fn ask_fallback(
    settings: Rc<Settings>,
    fallback: &Provider,
    input: Event,
    record: Map<String, Value>,
    output: ResultFuture,
) {
    let request = match settings.request(fallback, &record) {
        Ok((request, _cut)) => request,
        Err(failure) => return output.fail(failure),
    };
    http::send(request, move |answer| {
        if let Some(fallback) = &settings.fallback {
            finish_from(&settings, fallback, input, record, answer, output);
        }
    });
}

fn finish_from(
    settings: &Settings,
    from: &Provider,
    input: Event,
    record: Map<String, Value>,
    answer: Result<Response, HttpError>,
    output: ResultFuture,
) {
    let result = settings.finish(from, &input, record, answer, |usage| {
        report_usage(&from.model, usage.input, usage.output)
    });
    output.complete_with(result);
}

export_enricher!(OpenAi);

#[cfg(test)]
mod tests {
    use super::*;
    use waio_sdk::serde_json::json;
    use waio_sdk::FailureKind;

    fn settings(config: Value) -> Settings {
        Settings::from_config(&config_of(config)).unwrap()
    }

    fn config_of(config: Value) -> Config {
        match config {
            Value::Object(map) => Config::from_map(map),
            _ => unreachable!(),
        }
    }

    fn config_error(config: Value) -> String {
        Settings::from_config(&config_of(config))
            .unwrap_err()
            .to_string()
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn ok(status: u16, body: Value) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        })
    }

    fn input() -> Event {
        Event {
            key: Some("k1".into()),
            timestamp: Some(1000),
            payload: br#"{"text":"I love it","id":3}"#.to_vec(),
        }
    }

    fn chat() -> Settings {
        settings(json!({"base_url": "http://127.0.0.1:18080/v1/", "model": "m1"}))
    }

    #[test]
    fn chat_request() {
        let s = settings(json!({
            "base_url": "http://127.0.0.1:18080/v1",
            "model": "m1",
            "api_key_secret": "OPENAI_KEY",
            "system_prompt": "Answer positive or negative.",
            "max_tokens": 5,
            "temperature": 0.0,
            "timeout_ms": 2500,
        }));
        let r = s
            .request(&s.primary, &object(json!({"text": "I love it"})))
            .unwrap()
            .0;
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "http://127.0.0.1:18080/v1/chat/completions");
        assert_eq!(r.timeout_ms, Some(2500));
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer ${secret:OPENAI_KEY}".into())));
        let body: Value = serde_json_from(&r.body);
        assert_eq!(
            body,
            json!({
                "model": "m1",
                "messages": [
                    {"role": "system", "content": "Answer positive or negative."},
                    {"role": "user", "content": "I love it"},
                ],
                "max_tokens": 5,
                "temperature": 0.0,
            })
        );
    }

    #[test]
    fn every_chat_request_carries_max_tokens_and_a_given_seed() {
        let s =
            settings(json!({"base_url": "http://x/v1", "model": "m", "seed": 7, "temperature": 0}));
        let (r, _) = s
            .request(&s.primary, &object(json!({"text": "hi"})))
            .unwrap();
        let body = serde_json_from(&r.body);
        assert_eq!(body["max_tokens"], json!(guards::DEFAULT_MAX_TOKENS));
        assert_eq!(body["seed"], json!(7));
        assert_eq!(body["temperature"], json!(0.0));
        assert!(
            config_error(json!({"base_url": "http://x", "model": "m", "max_tokens": 0}))
                .contains("`max_tokens`")
        );
        assert!(config_error(
            json!({"base_url": "http://x", "model": "m", "mode": "embeddings", "seed": 1})
        )
        .contains("`seed`"));
    }

    #[test]
    fn a_long_input_is_sent_cut_to_the_primary_and_the_fallback() {
        let s = settings(json!({
            "base_url": "http://x/v1", "model": "m", "max_input_chars": 16,
            "fallback": {"base_url": "http://y/v1"},
        }));
        let long = object(json!({"text": "a rather long complaint about a parcel"}));
        let Ok(Step::Call { request, cut, .. }) = s.step(long.clone()) else {
            panic!("expected a call");
        };
        assert!(cut);
        let body = serde_json_from(&request.body);
        assert_eq!(body["messages"][0]["content"], json!("a ra [truncated]"));
        // The fallback is sent the same cut text.
        let fallback = s.fallback.clone().unwrap();
        let (request, _) = s.request(&fallback, &long).unwrap();
        assert_eq!(
            serde_json_from(&request.body)["messages"][0]["content"],
            json!("a ra [truncated]")
        );
        let short = object(json!({"text": "fine"}));
        assert!(matches!(s.step(short), Ok(Step::Call { cut: false, .. })));
    }

    fn serde_json_from(bytes: &[u8]) -> Value {
        waio_sdk::serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn template_fills_record_fields() {
        let s = settings(json!({
            "base_url": "http://x/v1", "model": "m",
            "prompt_template": "Ticket {id}: {subject}",
        }));
        let r = s
            .request(&s.primary, &object(json!({"id": 12, "subject": "refund"})))
            .unwrap()
            .0;
        let body = serde_json_from(&r.body);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Ticket 12: refund"}])
        );
        assert!(r.headers.iter().all(|(n, _)| n != "authorization"));

        let f = s
            .request(&s.primary, &object(json!({"id": 12})))
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Fatal);
        assert_eq!(f.message, "prompt_template: record has no field `subject`");
    }

    #[test]
    fn missing_input_field_is_fatal_and_named() {
        let s = settings(json!({"base_url": "http://x", "model": "m", "input_field": "body"}));
        let f = s
            .request(&s.primary, &object(json!({"text": "x"})))
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(f.message.contains("`body`"), "{}", f.message);
    }

    #[test]
    fn embeddings_request() {
        let s = settings(json!({"base_url": "http://x/v1", "model": "e", "mode": "embeddings"}));
        assert_eq!(s.output_field, "embedding");
        let r = s
            .request(&s.primary, &object(json!({"text": "hello"})))
            .unwrap()
            .0;
        assert_eq!(r.url, "http://x/v1/embeddings");
        assert_eq!(
            serde_json_from(&r.body),
            json!({"model": "e", "input": "hello"})
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        assert_eq!(
            config_error(json!({"model": "m"})),
            "config field `base_url` is missing"
        );
        assert_eq!(
            config_error(json!({"base_url": "http://x"})),
            "config field `model` is missing"
        );
        assert!(config_error(json!({"base_url": "x", "model": "m"})).contains("`base_url`"));
        assert!(
            config_error(json!({"base_url": "http://x", "model": "m", "mode": "chatt"}))
                .contains("`mode`")
        );
        assert!(
            config_error(json!({"base_url": "http://x", "model": "m", "modle": 1}))
                .starts_with("unknown config field `modle`")
        );
        assert!(config_error(json!({
            "base_url": "http://x", "model": "m", "mode": "embeddings", "system_prompt": "x"
        }))
        .contains("`system_prompt`"));
        assert!(config_error(
            json!({"base_url": "http://x", "model": "m", "api_key_secret": "a}b"})
        )
        .contains("`api_key_secret`"));
        assert!(
            config_error(json!({"base_url": "http://x", "model": "m", "max_tokens": "5"}))
                .contains("`max_tokens`")
        );
    }

    #[test]
    fn chat_answer_becomes_label() {
        let s = chat();
        let mut reported = None;
        let out = s
            .finish(
                &s.primary,
                &input(),
                input().json_object().unwrap(),
                ok(
                    200,
                    json!({
                        "choices": [{"message": {"role": "assistant", "content": " positive\n"}}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
                    }),
                ),
                |u| reported = Some(u),
            )
            .unwrap();
        assert_eq!(
            reported,
            Some(Usage {
                input: 12,
                output: 1
            })
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.as_deref(), Some("k1"));
        assert_eq!(out[0].timestamp, Some(1000));
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"text": "I love it", "id": 3, "label": "positive"})
        );
    }

    /// The typed reading of an answer and the `Value` one agree; the odd answers the typed one
    /// leaves to `Value` keep their results.
    #[test]
    fn typed_and_value_readings_of_answers_agree() {
        let chat_answer = |usage: Value| {
            json!({
                "id": "c1", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " bug\n"}}],
                "usage": usage,
            })
        };
        let s = chat();
        let by_value = |body: &Value| {
            let mut used = None;
            let out = s.finish(
                &s.primary,
                &input(),
                object(json!({"id": 3})),
                ok(200, body.clone()),
                |u| used = Some(u),
            );
            (out.map(|events| events[0].payload.clone()), used)
        };
        let usual = chat_answer(json!({"prompt_tokens": 7, "completion_tokens": 1}));
        let bytes = usual.to_string().into_bytes();
        let (usage, label) = s.typed_answer(&bytes).expect("the usual answer is typed");
        assert_eq!(label, json!("bug"));
        assert_eq!(
            usage,
            Usage {
                input: 7,
                output: 1
            }
        );
        let (payload, used) = by_value(&usual);
        assert_eq!(serde_json_from(&payload.unwrap())["label"], "bug");
        assert_eq!(used, Some(usage));

        // No usage, or counts that are not integers: not typed, still read.
        for odd in [json!(null), json!({"prompt_tokens": 1.5})] {
            let body = chat_answer(odd.clone());
            assert!(
                s.typed_answer(body.to_string().as_bytes()).is_none(),
                "{odd}"
            );
            let (payload, _) = by_value(&body);
            assert_eq!(serde_json_from(&payload.unwrap())["label"], "bug");
        }
        // A content that is not text: not typed, and the failure names the place.
        let body = json!({"choices": [{"message": {"content": 5}}], "usage": {}});
        assert!(s.typed_answer(body.to_string().as_bytes()).is_none());
        let (payload, used) = by_value(&body);
        assert!(payload
            .unwrap_err()
            .message
            .contains("choices[0].message.content"));
        assert_eq!(
            used,
            Some(Usage {
                input: 0,
                output: 0
            })
        );
    }

    #[test]
    fn embedding_answer_is_stored() {
        let s = settings(json!({"base_url": "http://x/v1", "model": "e", "mode": "embeddings"}));
        let mut reported = None;
        let out = s
            .finish(
                &s.primary,
                &input(),
                input().json_object().unwrap(),
                ok(
                    200,
                    json!({
                        "data": [{"index": 0, "embedding": [0.25, -1.5, 3]}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3},
                    }),
                ),
                |u| reported = Some(u),
            )
            .unwrap();
        assert_eq!(
            reported,
            Some(Usage {
                input: 3,
                output: 0
            })
        );
        assert_eq!(
            out[0].json::<Value>().unwrap()["embedding"],
            json!([0.25, -1.5, 3])
        );
    }

    fn flagged() -> Settings {
        settings(json!({
            "base_url": "http://x/v1", "model": "big",
            "when_field": "label", "when_equals": "urgent",
        }))
    }

    #[test]
    fn condition_sends_only_matching_records() {
        let s = flagged();
        match s
            .step(object(json!({"text": "site down", "label": "urgent"})))
            .unwrap()
        {
            Step::Call {
                record, request, ..
            } => {
                assert_eq!(record["text"], json!("site down"));
                assert_eq!(
                    serde_json_from(&request.body)["messages"],
                    json!([{"role": "user", "content": "site down"}])
                );
            }
            Step::PassThrough => panic!("a matching record must be sent"),
        }
        for record in [
            json!({"text": "refund please", "label": "billing"}),
            json!({"text": "case differs", "label": "Urgent"}),
            json!({"text": "not labelled yet"}),
            json!({"text": "null label", "label": null}),
            json!({"text": "wrong type", "label": ["urgent"]}),
            // Skipped records are not rendered, so a missing input field cannot fail them.
            json!({"label": "other"}),
        ] {
            assert!(
                matches!(s.step(object(record.clone())).unwrap(), Step::PassThrough),
                "{record}"
            );
        }
        let f = s.step(object(json!({"label": "urgent"}))).unwrap_err();
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(f.message.contains("`text`"), "{}", f.message);
    }

    #[test]
    fn without_condition_every_record_is_sent() {
        let s = chat();
        assert!(matches!(
            s.step(object(json!({"text": "a", "label": "billing"})))
                .unwrap(),
            Step::Call { .. }
        ));
    }

    #[test]
    fn condition_values_of_other_types() {
        let when = |equals: Value| {
            settings(json!({
                "base_url": "http://x/v1", "model": "m",
                "when_field": "f", "when_equals": equals,
            }))
        };
        let sent = |s: &Settings, f: Value| {
            matches!(
                s.step(object(json!({"text": "t", "f": f}))).unwrap(),
                Step::Call { .. }
            )
        };
        let flag = when(json!(true));
        assert!(sent(&flag, json!(true)));
        assert!(!sent(&flag, json!(false)));
        assert!(!sent(&flag, json!("true")));

        let three = when(json!(3));
        assert!(sent(&three, json!(3)));
        assert!(sent(&three, json!(3.0)));
        assert!(!sent(&three, json!(3.5)));
        assert!(!sent(&three, json!(-3)));
        assert!(!sent(&three, json!("3")));

        let big = when(json!(u64::MAX));
        assert!(sent(&big, json!(u64::MAX)));
        assert!(!sent(&big, json!(-1)));

        let obj = when(json!({"tier": "gold"}));
        assert!(sent(&obj, json!({"tier": "gold"})));
        assert!(!sent(&obj, json!({"tier": "gold", "x": 1})));
    }

    #[test]
    fn condition_needs_both_fields() {
        let base = || json!({"base_url": "http://x", "model": "m"});
        let mut only_field = base();
        only_field["when_field"] = json!("label");
        let e = config_error(only_field);
        assert!(
            e.contains("`when_equals`") && e.contains("`when_field`"),
            "{e}"
        );

        let mut only_value = base();
        only_value["when_equals"] = json!("urgent");
        let e = config_error(only_value);
        assert!(
            e.contains("`when_field`") && e.contains("`when_equals`"),
            "{e}"
        );

        let mut empty = base();
        empty["when_field"] = json!("");
        empty["when_equals"] = json!("x");
        assert!(config_error(empty).contains("`when_field`"));

        let mut not_a_string = base();
        not_a_string["when_field"] = json!(3);
        not_a_string["when_equals"] = json!("x");
        assert!(config_error(not_a_string).contains("`when_field`"));

        assert_eq!(
            flagged().condition,
            Some(Condition {
                field: "label".into(),
                equals: json!("urgent")
            })
        );
        assert_eq!(chat().condition, None);
    }

    fn failure(s: &Settings, answer: Result<Response, HttpError>) -> Failure {
        s.finish(&s.primary, &input(), Map::new(), answer, |_| {})
            .unwrap_err()
    }

    #[test]
    fn error_answers() {
        let s = chat();
        let f = failure(&s, ok(429, json!({"error": {"message": "rate limited"}})));
        assert_eq!(f.kind, FailureKind::Retriable);
        assert!(f.message.contains("HTTP 429"), "{}", f.message);
        assert!(f.message.contains("rate limited"), "{}", f.message);
        assert!(f
            .message
            .starts_with("POST http://127.0.0.1:18080/v1/chat/completions"));

        assert_eq!(
            failure(&s, ok(503, json!("busy"))).kind,
            FailureKind::Retriable
        );
        assert_eq!(failure(&s, ok(400, json!("bad"))).kind, FailureKind::Fatal);
        assert_eq!(
            failure(&s, ok(401, json!("no key"))).kind,
            FailureKind::Fatal
        );
        assert_eq!(
            failure(&s, Err(HttpError::Timeout)).kind,
            FailureKind::Retriable
        );
        assert_eq!(
            failure(&s, Err(HttpError::Connection("refused".into()))).kind,
            FailureKind::Retriable
        );
        assert_eq!(
            failure(&s, Err(HttpError::Denied("not allowed".into()))).kind,
            FailureKind::Fatal
        );

        let f = failure(
            &s,
            Ok(Response {
                status: 200,
                headers: vec![],
                body: b"<html>oops".to_vec(),
            }),
        );
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(f.message.contains("not JSON"), "{}", f.message);

        let f = failure(&s, ok(200, json!({"choices": []})));
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(f.message.contains("choices[0].message.content"));
    }

    #[test]
    fn fallback_takes_its_own_url_model_and_key_and_outputs_name_the_model() {
        let s = settings(json!({
            "base_url": "http://primary/v1", "model": "big", "api_key_secret": "main",
            "fallback": {"base_url": "http://backup/v1/", "api_key_secret": "spare"},
        }));
        let fallback = s.fallback.clone().unwrap();
        assert_eq!(fallback.url, "http://backup/v1/chat/completions");
        // The model defaults to the primary's.
        assert_eq!(fallback.model, "big");
        let r = s
            .request(&fallback, &object(json!({"text": "hi"})))
            .unwrap()
            .0;
        assert_eq!(r.url, "http://backup/v1/chat/completions");
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer ${secret:spare}".into())));
        let answer = json!({
            "choices": [{"message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        });
        for (from, model) in [(&s.primary, "big"), (&fallback, "big")] {
            let out = s
                .finish(
                    from,
                    &input(),
                    object(json!({"id": 1})),
                    ok(200, answer.clone()),
                    |_| {},
                )
                .unwrap();
            let record: Value = serde_json::from_slice(&out[0].payload).unwrap();
            assert_eq!(record["model"], model);
        }
        // Without a fallback, outputs are as before unless model_field is set.
        let plain = chat();
        let out = plain
            .finish(
                &plain.primary,
                &input(),
                object(json!({"id": 1})),
                ok(200, answer),
                |_| {},
            )
            .unwrap();
        let record: Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert!(record.get("model").is_none());
    }

    #[test]
    fn fallback_config_errors_name_the_nested_field() {
        let base = |fallback: Value| {
            config_error(json!({"base_url": "http://x/v1", "model": "m", "fallback": fallback}))
        };
        assert!(base(json!("http://y")).contains("`fallback`"));
        assert!(base(json!({"model": "m"})).contains("fallback.base_url"));
        assert!(base(json!({"base_url": "ftp://y"})).contains("fallback.base_url"));
        assert!(
            base(json!({"base_url": "http://y", "api_key_secret": "a b"}))
                .contains("fallback.api_key_secret")
        );
        let unknown = base(json!({"base_url": "http://y", "modle": "m"}));
        assert!(unknown.contains("fallback.modle"), "{unknown}");
    }

    #[test]
    fn only_passing_faults_go_to_the_fallback() {
        let status = |code| ok(code, json!({}));
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(passing_fault(&status(code)), "{code}");
        }
        for code in [200, 400, 401, 404, 422] {
            assert!(!passing_fault(&status(code)), "{code}");
        }
        assert!(passing_fault(&Err(HttpError::Timeout)));
        assert!(passing_fault(&Err(HttpError::Connection("reset".into()))));
        assert!(!passing_fault(&Err(HttpError::Denied("no".into()))));
    }
}
