//! {{name}}: a waio enricher. For each record, looks up `/kv/<id>` and stores the answer in
//! `lookup`. Build with `waio plugin build`, run with `waio run --build pipeline.toml`.

use waio_sdk::http::{self, Request};
use waio_sdk::{export_enricher, Config, Enricher, Event, Failure, ResultFuture};

struct Plugin {
    base_url: String,
}

impl Enricher for Plugin {
    fn open(config: Config) -> Result<Self, String> {
        Ok(Plugin {
            base_url: config.str("base_url")?.to_string(),
        })
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        let mut record = match input.json_object() {
            Ok(record) => record,
            Err(failure) => return output.fail(failure),
        };
        let id = match record.get("id") {
            Some(id) => id.to_string().trim_matches('"').to_string(),
            None => return output.fail(Failure::fatal("record has no `id`")),
        };
        http::send(Request::get(format!("{}/kv/{id}", self.base_url)), move |answer| {
            let result = answer
                .map_err(Failure::from)
                .and_then(|response| response.error_for_status())
                .and_then(|response| {
                    let value = response
                        .json()
                        .map_err(|e| Failure::fatal(format!("answer is not JSON: {e}")))?;
                    record.insert("lookup".into(), value);
                    Ok(vec![input.with_json(&record)?])
                });
            output.complete_with(result);
        });
    }
}

export_enricher!(Plugin);
