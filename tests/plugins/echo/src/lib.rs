//! Completes every record with itself, inside `async-invoke`: what is left is the cost of waio.

use waio_sdk::{export_enricher, Config, Enricher, Event, ResultFuture};

struct Echo;

impl Enricher for Echo {
    fn open(_config: Config) -> Result<Self, String> {
        Ok(Echo)
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        output.complete_one(input);
    }
}

export_enricher!(Echo);
