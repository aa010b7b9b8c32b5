//! Kafka in and out: a consumer-group source, a transactional sink, and the offsets that commit
//! with the output.
//!
//! State lives in Kafka, not in the checkpoint directory: each checkpoint is one transaction
//! holding the outputs and dead letters that reached the sink before its barrier, and per
//! partition the offset of the first record still in the operators, with metadata naming the
//! records after it that were already done (see `checkpoint::kafka`). A restarted process, or the new
//! owner of a partition after a rebalance, reads from there and skips what was done, so a
//! `read_committed` consumer of the output sees each result once. Without `[checkpoint]` the
//! same commits happen every `commit_interval` outside transactions: at-least-once.

pub mod assignments;
pub mod sink;
pub mod source;
pub mod watermarks;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::manifest::Location;

/// How long a client waits for the brokers before a run gives up at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("{at}: {field}: cannot reach the kafka brokers {brokers:?}: {cause}")]
    Unreachable {
        at: Location,
        field: &'static str,
        brokers: String,
        cause: String,
    },
    #[error("{at}: {field}: kafka topic {topic:?} does not exist on {brokers:?}")]
    UnknownTopic {
        at: Location,
        field: &'static str,
        topic: String,
        brokers: String,
    },
    #[error("{at}: {field}: {cause}")]
    Config {
        at: Location,
        field: &'static str,
        cause: String,
    },
    #[error("kafka {what}: {cause}")]
    Client {
        what: &'static str,
        cause: rdkafka::error::KafkaError,
    },
    #[error("kafka: {0}")]
    Delivery(String),
    #[error("kafka: this process was fenced ({cause}): another producer took over its transactional.id {id:?}, or the consumer group moved on without it; its open transaction is aborted and it commits nothing more (processes sharing a group need distinct sink.transactional_id)")]
    Fenced { id: String, cause: String },
}

impl KafkaError {
    /// A transaction step's error: fencing said in words, anything else as it came.
    pub fn transaction<'a>(
        what: &'static str,
        id: &'a str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError + 'a {
        use rdkafka::types::RDKafkaErrorCode as Code;
        move |cause| match cause.rdkafka_error_code() {
            Some(
                Code::Fenced
                | Code::ProducerFenced
                | Code::InvalidProducerEpoch
                | Code::IllegalGeneration
                | Code::UnknownMemberId
                | Code::FencedInstanceId,
            ) => KafkaError::Fenced {
                id: id.to_string(),
                cause: cause.to_string(),
            },
            _ => KafkaError::Client { what, cause },
        }
    }

    pub fn client(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
        move |cause| KafkaError::Client { what, cause }
    }
}

/// A client config from the brokers, waio's settings and then the user's (which win).
pub fn client_config(
    brokers: &str,
    ours: &[(&str, &str)],
    theirs: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // librdkafka logs through its own callback; errors that matter come back as results.
    config.set("log_level", "3");
    for (key, value) in ours {
        config.set(*key, *value);
    }
    for (key, value) in theirs {
        config.set(key, value);
    }
    config
}

/// Checks that the brokers answer and the topics exist, naming the manifest's place when not.
pub fn check_topics<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    brokers: &str,
    topics: &[String],
    at: &Location,
    field: &'static str,
) -> Result<(), KafkaError> {
    let metadata = client
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(|cause| KafkaError::Unreachable {
            at: at.clone(),
            field: if field.starts_with("sink") {
                "sink.brokers"
            } else {
                "source.brokers"
            },
            brokers: brokers.to_string(),
            cause: cause.to_string(),
        })?;
    for topic in topics {
        let found = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !found {
            return Err(KafkaError::UnknownTopic {
                at: at.clone(),
                field,
                topic: topic.clone(),
                brokers: brokers.to_string(),
            });
        }
    }
    Ok(())
}
