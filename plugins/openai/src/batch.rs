//! Embeddings for many records in one request. OpenAI's embeddings API takes a list of inputs
//! and answers with one vector per input (`data[i].index` says whose), so a batch the host hands
//! over (`batch.max_size`, and `batch.max_wait` to fill it) costs one request instead of one per
//! record. Each record still completes on its own: one without the input field fails alone, one
//! the condition skips passes through at once.
//!
//! The request is on no single record's behalf: its usage is reported once for the batch, and a
//! dead letter does not name its HTTP status. With a fallback provider, a passing fault sends
//! each record to the fallback on its own (the path a single record takes).

use std::rc::Rc;

use serde::Deserialize;
use waio_sdk::http::{self, HttpError, Response};
use waio_sdk::serde_json::{Map, Number, Value};
use waio_sdk::{report_usage, Event, Failure, ResultFuture};

use super::{ask_fallback, passing_fault, EmbeddingsBatchRequest, Settings, TypedUsage};

/// A record waiting for its vector.
struct Waiting {
    input: Event,
    record: Map<String, Value>,
    output: ResultFuture,
}

/// Sends one embeddings request for every record of `batch` that needs one.
pub(crate) fn embed(settings: &Rc<Settings>, batch: Vec<(Event, ResultFuture)>) {
    let mut texts = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    for (input, output) in batch {
        let record = match input.json_object() {
            Ok(record) => record,
            Err(failure) => {
                output.fail(failure);
                continue;
            }
        };
        if let Some(condition) = &settings.condition {
            if !condition.matches(&record) {
                output.complete_one(input);
                continue;
            }
        }
        match settings.input_text(&record) {
            Ok(text) => texts.push(text),
            Err(failure) => {
                output.fail(failure);
                continue;
            }
        }
        waiting.push(Waiting {
            input,
            record,
            output,
        });
    }
    if waiting.is_empty() {
        return;
    }
    let request = settings.with_headers(
        &settings.primary,
        EmbeddingsBatchRequest {
            input: &texts,
            model: &settings.primary.model,
        },
    );
    let request = match request {
        Ok(request) => request,
        Err(failure) => return fail_all(waiting, &failure),
    };
    let settings = Rc::clone(settings);
    http::send(request, move |answer| {
        if let (Some(fallback), true) = (&settings.fallback, passing_fault(&answer)) {
            for w in waiting {
                ask_fallback(Rc::clone(&settings), fallback, w.input, w.record, w.output);
            }
            return;
        }
        finish(&settings, waiting, answer);
    });
}

fn fail_all(waiting: Vec<Waiting>, failure: &Failure) {
    for w in waiting {
        w.output.fail(failure.clone());
    }
}

#[derive(Deserialize)]
struct BatchAnswer {
    data: Vec<IndexedEmbedding>,
    usage: Option<TypedUsage>,
}

#[derive(Deserialize)]
struct IndexedEmbedding {
    index: Option<usize>,
    embedding: Vec<Number>,
}

/// The answer's vectors in input order: by `index`, by position when the answer gives none.
/// An answer with another count, an index out of range or twice is refused whole: the vectors
/// could not be told apart.
fn by_input(data: Vec<IndexedEmbedding>, inputs: usize) -> Result<Vec<Vec<Number>>, String> {
    if data.len() != inputs {
        return Err(format!(
            "answer has {} embeddings for {inputs} inputs",
            data.len()
        ));
    }
    let mut vectors: Vec<Option<Vec<Number>>> = vec![None; inputs];
    for (position, item) in data.into_iter().enumerate() {
        let at = item.index.unwrap_or(position);
        match vectors.get_mut(at) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => return Err(format!("answer has two embeddings with index {at}")),
            None => {
                return Err(format!(
                    "answer has an embedding with index {at} for {inputs} inputs"
                ))
            }
        }
    }
    // Every slot is filled: as many items as slots, none twice.
    Ok(vectors.into_iter().flatten().collect())
}

/// Puts each vector into its record.
fn finish(settings: &Settings, waiting: Vec<Waiting>, answer: Result<Response, HttpError>) {
    let from = &settings.primary;
    let context = || format!("POST {}", from.url);
    let response = answer
        .map_err(Failure::from)
        .and_then(Response::error_for_status)
        .map_err(|f| f.context(context()));
    let response = match response {
        Ok(response) => response,
        Err(failure) => return fail_all(waiting, &failure),
    };
    let answer: BatchAnswer = match waio_sdk::serde_json::from_slice(&response.body) {
        Ok(answer) => answer,
        Err(e) => {
            let failure = Failure::fatal(format!(
                "answer has no list of embeddings at data ({e}): {}",
                response.body_excerpt()
            ))
            .context(context());
            return fail_all(waiting, &failure);
        }
    };
    if let Some(usage) = &answer.usage {
        report_usage(
            &from.model,
            super::token_count(usage.prompt_tokens),
            super::token_count(usage.completion_tokens),
        );
    }
    let vectors = match by_input(answer.data, waiting.len()) {
        Ok(vectors) => vectors,
        Err(why) => return fail_all(waiting, &Failure::fatal(why).context(context())),
    };
    for (w, vector) in waiting.into_iter().zip(vectors) {
        let Waiting {
            input,
            mut record,
            output,
        } = w;
        if let Some(field) = &settings.model_field {
            record.insert(field.clone(), Value::String(from.model.clone()));
        }
        let values = vector.into_iter().map(Value::Number).collect();
        record.insert(settings.output_field.clone(), Value::Array(values));
        output.complete_with(input.with_json(&record).map(|event| vec![event]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: Option<usize>, value: i64) -> IndexedEmbedding {
        IndexedEmbedding {
            index,
            embedding: vec![Number::from(value)],
        }
    }

    fn firsts(vectors: Vec<Vec<Number>>) -> Vec<i64> {
        vectors.iter().map(|v| v[0].as_i64().unwrap()).collect()
    }

    #[test]
    fn vectors_go_back_to_their_inputs_by_index_or_by_position() {
        let shuffled = vec![item(Some(2), 20), item(Some(0), 0), item(Some(1), 10)];
        assert_eq!(firsts(by_input(shuffled, 3).unwrap()), [0, 10, 20]);
        let unindexed = vec![item(None, 0), item(None, 10)];
        assert_eq!(firsts(by_input(unindexed, 2).unwrap()), [0, 10]);
    }

    #[test]
    fn an_answer_whose_vectors_cannot_be_told_apart_is_refused() {
        assert_eq!(
            by_input(vec![item(Some(0), 0)], 2).err().unwrap(),
            "answer has 1 embeddings for 2 inputs"
        );
        assert_eq!(
            by_input(vec![item(Some(0), 0), item(Some(0), 1)], 2)
                .err()
                .unwrap(),
            "answer has two embeddings with index 0"
        );
        assert_eq!(
            by_input(vec![item(Some(0), 0), item(Some(5), 1)], 2)
                .err()
                .unwrap(),
            "answer has an embedding with index 5 for 2 inputs"
        );
    }
}
