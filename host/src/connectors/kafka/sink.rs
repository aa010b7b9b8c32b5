//! The Kafka sink: outputs to a topic (key from the record, headers carried over from its
//! Kafka input), dead letters to another, on the sink thread.
//!
//! With a Kafka source, each checkpoint barrier ends a commit: the sink flushes what it produced,
//! reports, and waits for the coordinator to hand it the source's offsets (see `progress`). Under
//! `[checkpoint]` they go into the open transaction (`send_offsets_to_transaction`, with the
//! consumer group's metadata, so a fenced zombie cannot commit), which then commits; without it
//! the consumer commits them after the flush (at-least-once). Records of partitions this process
//! no longer owns are dropped: their new owner reads them again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::source::KafkaInput;
use super::{check_topics, client_config, KafkaError};
use crate::checkpoint::coordinator::{Report, ReportSender};
use crate::checkpoint::kafka::{CommitInbox, PartitionCommit};
use crate::checkpoint::SinkTransaction;
use crate::connectors::sink::SinkError;
use crate::manifest::{KafkaSinkConfig, Location};
use crate::record::Partition;
use crate::record::{Element, Message, Record, StageReceiver};
use crate::telemetry::SinkTelemetry;

/// How long a flush or a transaction step may take before the run fails.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(60);

/// Delivery failures, noticed at the next flush.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    /// librdkafka retries what it reports here by itself: warnings, not errors.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!("kafka producer: {error}: {reason}");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, message)) = result {
            use rdkafka::Message as _;
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| {
                format!("cannot deliver to topic {}: {error}", message.topic())
            });
        }
    }
}

/// The producer and what the sink commits with.
pub struct KafkaOutput {
    producer: BaseProducer<Deliveries>,
    topic: String,
    dead_letter_topic: String,
    /// The Kafka source whose offsets commit here, and the commits' inbox.
    input: Option<(Arc<KafkaInput>, CommitInbox)>,
    /// The producer's `transactional.id`, when it commits in transactions.
    transactional_id: Option<String>,
}

impl KafkaOutput {
    /// Connects; transactional when `transactional_id` is given (a Kafka source under
    /// `[checkpoint]`).
    pub fn connect(
        config: &KafkaSinkConfig,
        dead_letter_topic: &str,
        transactional_id: Option<&str>,
        input: Option<(Arc<KafkaInput>, CommitInbox)>,
    ) -> Result<KafkaOutput, KafkaError> {
        let mut ours = vec![("enable.idempotence", "true")];
        if let Some(id) = transactional_id {
            ours.push(("transactional.id", id));
        }
        let producer: BaseProducer<Deliveries> =
            client_config(&config.brokers, &ours, &config.options)
                .create_with_context(Deliveries::default())
                .map_err(|cause| config_error(&config.at, cause))?;
        let topics = [config.topic.clone(), dead_letter_topic.to_string()];
        check_topics(
            producer.client(),
            &config.brokers,
            &topics,
            &config.at,
            "sink.topic",
        )?;
        if let Some(id) = transactional_id {
            // Fences an earlier producer with the same id and aborts what it left open.
            producer
                .init_transactions(KAFKA_TIMEOUT)
                .map_err(KafkaError::transaction("init transactions", id))?;
        }
        Ok(KafkaOutput {
            producer,
            topic: config.topic.clone(),
            dead_letter_topic: dead_letter_topic.to_string(),
            input,
            transactional_id: transactional_id.map(str::to_string),
        })
    }
}

fn config_error(at: &Location, cause: rdkafka::error::KafkaError) -> KafkaError {
    KafkaError::Config {
        at: at.clone(),
        field: "sink.kafka",
        cause: cause.to_string(),
    }
}

/// Writes everything that arrives until the end of the stream (see the module's comment).
pub fn run(
    mut out: KafkaOutput,
    producer_name: &str,
    rx: StageReceiver,
    reports: Option<ReportSender>,
    telemetry: &SinkTelemetry,
) -> Result<(), SinkError> {
    out.begin()?;
    // The last checkpoint barrier that reached the sink.
    let mut barrier = 0;
    loop {
        let batch = match rx.recv() {
            Ok(Message::Batch(batch)) | Ok(Message::Read(batch, _)) => batch,
            Ok(Message::Barrier(id)) => {
                barrier = id;
                out.flush()?;
                if let Some(reports) = &reports {
                    let transaction = SinkTransaction::default();
                    reports
                        .send(Report::Sink { id, transaction })
                        .map_err(|_| SinkError::CoordinatorGone)?;
                }
                out.commit(true)?;
                continue;
            }
            Ok(Message::End) => break,
            Err(_) => {
                // Whatever is in the open transaction aborts with the producer.
                return Err(SinkError::UpstreamFailed);
            }
        };
        for element in &batch {
            match element {
                Element::Record(record) => {
                    if stale(record, barrier) {
                        continue;
                    }
                    if let Err(error) =
                        serde_json::from_slice::<serde::de::IgnoredAny>(&record.payload)
                    {
                        let line = crate::connectors::sink::not_json_letter(
                            producer_name,
                            record,
                            &error,
                            telemetry,
                        );
                        out.produce(Target::DeadLetters, None, &line, None)?;
                        continue;
                    }
                    let headers = record.origin.as_ref().map(|o| o.headers.as_slice());
                    out.produce(
                        Target::Output,
                        record.key.as_deref(),
                        &record.payload,
                        headers,
                    )?;
                    telemetry.records.inc();
                    if telemetry.first_output_at.get().is_none() {
                        let _ = telemetry.first_output_at.set(std::time::Instant::now());
                    }
                }
                Element::Watermark(_) => telemetry.watermarks.inc(),
                Element::DeadLetter(letter) => {
                    if stale_letter(letter, &out) {
                        continue;
                    }
                    telemetry.dead_letters.inc();
                    out.produce(Target::DeadLetters, None, letter, None)?;
                }
            }
        }
        // The producer has copied what it needs: the vector goes round (`record::new_batch`).
        crate::record::recycle_batch(batch);
    }
    out.flush()?;
    if let Some(reports) = &reports {
        reports
            .send(Report::SinkEnd {
                transaction: SinkTransaction::default(),
            })
            .map_err(|_| SinkError::CoordinatorGone)?;
    }
    out.commit(false)
}

/// A record whose partition this process gave up at a checkpoint the sink has committed (or at
/// once): its partition's new owner reads it again.
fn stale(record: &Record, barrier: u64) -> bool {
    record
        .origin
        .as_ref()
        .is_some_and(|o| o.lease.revoked_by(barrier))
}

/// The same for a dead letter, which carries its place as JSON.
fn stale_letter(letter: &[u8], out: &KafkaOutput) -> bool {
    let Some((input, _)) = &out.input else {
        return false;
    };
    #[derive(serde::Deserialize)]
    struct Place {
        kafka: Option<KafkaPlace>,
    }
    #[derive(serde::Deserialize)]
    struct KafkaPlace {
        topic: String,
        partition: i32,
        generation: u64,
    }
    let Ok(Place { kafka: Some(place) }) = serde_json::from_slice::<Place>(letter) else {
        return false;
    };
    let partition: Partition = (Arc::from(place.topic), place.partition);
    !input.assignments.is_current(&partition, place.generation)
}

#[derive(Clone, Copy)]
enum Target {
    Output,
    DeadLetters,
}

impl KafkaOutput {
    fn produce(
        &mut self,
        target: Target,
        key: Option<&str>,
        payload: &[u8],
        headers: Option<&[(String, Vec<u8>)]>,
    ) -> Result<(), SinkError> {
        let topic = match target {
            Target::Output => self.topic.as_str(),
            Target::DeadLetters => self.dead_letter_topic.as_str(),
        };
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers.filter(|h| !h.is_empty()) {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            record = record.headers(owned);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    // The local queue is full: serve delivery reports until there is room.
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((cause, _)) => return Err(self.fenced_or("produce", cause).into()),
            }
        }
    }

    /// A fatal error of a transactional producer that was fenced says so; anything else comes
    /// as it is.
    fn fenced_or(&self, what: &'static str, cause: rdkafka::error::KafkaError) -> KafkaError {
        let fatal = self.producer.client().fatal_error();
        match (&self.transactional_id, fatal) {
            (Some(id), Some((RDKafkaErrorCode::Fenced, reason))) => KafkaError::Fenced {
                id: id.clone(),
                cause: reason,
            },
            _ => KafkaError::Client { what, cause },
        }
    }

    /// Waits until everything produced is acknowledged.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(KAFKA_TIMEOUT)
            .map_err(|cause| self.fenced_or("flush", cause))?;
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failed {
            Some(message) => {
                let fenced = self.fenced_or("flush", rdkafka::error::KafkaError::Canceled);
                Err(match fenced {
                    KafkaError::Fenced { .. } => fenced,
                    _ => KafkaError::Delivery(message),
                }
                .into())
            }
            None => Ok(()),
        }
    }

    /// Takes the coordinator's offsets and commits them with what was produced (when a Kafka
    /// source commits here); `then_begin`: a next transaction follows.
    fn commit(&mut self, then_begin: bool) -> Result<(), SinkError> {
        let Some((input, inbox)) = &self.input else {
            return Ok(());
        };
        let Ok(commit) = inbox.commits.recv() else {
            return Err(SinkError::CoordinatorGone);
        };
        let result = self.commit_offsets(input, &commit.commits);
        if result.is_ok() && !commit.revoking.is_empty() {
            // Nothing after this barrier is written for them: the new owner does it.
            input.assignments.revoke(&commit.revoking);
        }
        let _ = inbox
            .done
            .send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        result?;
        if then_begin {
            self.begin()?;
        }
        Ok(())
    }

    fn begin(&self) -> Result<(), KafkaError> {
        match &self.transactional_id {
            Some(id) => self
                .producer
                .begin_transaction()
                .map_err(KafkaError::transaction("begin transaction", id)),
            None => Ok(()),
        }
    }

    fn commit_offsets(
        &self,
        input: &KafkaInput,
        commits: &[PartitionCommit],
    ) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for c in commits {
            list.add_partition_offset(&c.topic, c.partition, Offset::Offset(c.offset))
                .map_err(KafkaError::client("offsets"))?;
            if let Some(mut element) = list.find_partition(&c.topic, c.partition) {
                element.set_metadata(c.metadata.as_str());
            }
        }
        let Some(id) = &self.transactional_id else {
            if list.count() > 0 {
                input
                    .consumer
                    .commit(&list, CommitMode::Sync)
                    .map_err(KafkaError::client("commit offsets"))?;
            }
            return Ok(());
        };
        if list.count() > 0 {
            let group = input
                .consumer
                .group_metadata()
                .ok_or_else(|| KafkaError::Delivery("the consumer is in no group".into()))?;
            self.producer
                .send_offsets_to_transaction(&list, &group, KAFKA_TIMEOUT)
                .map_err(KafkaError::transaction(
                    "send offsets to the transaction",
                    id,
                ))?;
        }
        self.producer
            .commit_transaction(KAFKA_TIMEOUT)
            .map_err(KafkaError::transaction("commit transaction", id))
    }
}
