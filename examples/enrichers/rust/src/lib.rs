//! Classifies support tickets with an OpenAI-compatible chat model: the Rust twin of
//! examples/enrichers/{python,js,c}. Each record is a ticket (`{"id", "text", ...}`); the answer,
//! one of the labels, goes into `label`. Config: `base_url` (e.g. "http://127.0.0.1:18081/v1"),
//! `model`. The API key never enters the plugin: the header names the secret `openai` and the host
//! fills it in.

use serde::{Deserialize, Serialize};
use waio_sdk::http::{self, Request};
use waio_sdk::{export_enricher, report_usage, Config, Enricher, Event, Failure, ResultFuture};

const SYSTEM_PROMPT: &str =
    "You triage customer support tickets. Answer with exactly one label and nothing else.\n\
urgent: outage, data loss or a security problem. billing: charges, invoices, refunds, plans.\n\
bug: something works incorrectly. other: everything else.\n\
Labels: urgent, billing, bug, other";

struct Classify {
    url: String,
    model: String,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    temperature: f32,
    max_tokens: u32,
    messages: [Message<'a>; 2],
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatAnswer {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: String,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl Enricher for Classify {
    fn open(config: Config) -> Result<Self, String> {
        Ok(Classify {
            url: format!(
                "{}/chat/completions",
                config.str("base_url")?.trim_end_matches('/')
            ),
            model: config.str("model")?.to_string(),
        })
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        let mut ticket = match input.json_object() {
            Ok(ticket) => ticket,
            Err(failure) => return output.fail(failure),
        };
        let Some(text) = ticket.get("text").and_then(|t| t.as_str()) else {
            return output.fail(Failure::fatal("ticket has no string field `text`"));
        };
        let body = ChatRequest {
            model: &self.model,
            temperature: 0.0,
            max_tokens: 3,
            messages: [
                Message {
                    role: "system",
                    content: SYSTEM_PROMPT,
                },
                Message {
                    role: "user",
                    content: text,
                },
            ],
        };
        let request = match Request::post(&self.url)
            .header("authorization", "Bearer ${secret:openai}")
            .json(&body)
        {
            Ok(request) => request,
            Err(failure) => return output.fail(failure),
        };
        let model = self.model.clone();
        http::send(request, move |answer| {
            let result = answer
                .map_err(Failure::from) // timeout, connection: retriable
                .and_then(|response| response.error_for_status()) // 429/5xx retriable, other 4xx fatal
                .and_then(|response| {
                    let answer: ChatAnswer = response.json().map_err(|e| {
                        Failure::fatal(format!("answer is not a chat completion: {e}"))
                    })?;
                    if let Some(usage) = &answer.usage {
                        report_usage(&model, usage.prompt_tokens, usage.completion_tokens);
                    }
                    let label = answer
                        .choices
                        .first()
                        .map(|c| c.message.content.trim().to_string())
                        .ok_or_else(|| Failure::fatal("answer has no choices"))?;
                    ticket.insert("label".into(), label.into());
                    Ok(vec![input.with_json(&ticket)?])
                });
            output.complete_with(result);
        });
    }
}

export_enricher!(Classify);
