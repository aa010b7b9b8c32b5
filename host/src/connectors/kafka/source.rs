//! The Kafka source: a consumer in a group, on the source thread. Each Kafka record becomes a
//! waio record: its key the Kafka key, its event time the Kafka timestamp (or the `[event_time]`
//! field), its payload the value, its origin (topic, partition, offset, headers) kept for the
//! commit, the dead letters and the sink. A value that is not JSON is a dead letter naming topic,
//! partition and offset. Watermarks are per partition, combined (see `watermarks`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message as _, Offset};

use super::assignments::{Assignments, Change, CommitBeforeRevoke, SourceContext as Callbacks};
use super::watermarks::PartitionWatermarks;
use super::{check_topics, client_config, KafkaError, CONNECT_TIMEOUT};
use crate::checkpoint::coordinator::Command;
use crate::checkpoint::coordinator::Control;
use crate::connectors::dead_letter::DeadLetter;
use crate::connectors::line::parse_line;
use crate::connectors::source::{trim, SourceContext, SourceError};
use crate::manifest::{FieldMapping, KafkaSourceConfig, KafkaStart};
use crate::record::{
    batch_is_full, new_batch, Element, KafkaPosition, Message, Origin, Partition, PartitionRead,
    Record, SourcePosition,
};
use crossbeam_channel::Sender;

pub type KafkaConsumer = BaseConsumer<Callbacks>;

/// The consumer, made before the run starts (so unreachable brokers and unknown topics fail
/// it at once), and the partitions it owns.
pub struct KafkaInput {
    pub consumer: Arc<KafkaConsumer>,
    pub assignments: Arc<Assignments>,
}

impl KafkaInput {
    pub fn connect(config: &KafkaSourceConfig) -> Result<KafkaInput, KafkaError> {
        let assignments = Arc::new(Assignments::default());
        let callbacks = Callbacks {
            assignments: Arc::clone(&assignments),
            before_revoke: Mutex::new(None),
        };
        let start = match config.start {
            KafkaStart::Earliest => "earliest",
            KafkaStart::Latest => "latest",
        };
        let consumer: KafkaConsumer = client_config(
            &config.brokers,
            &[
                ("group.id", &config.group_id),
                // Offsets commit with the output (see `progress`), never on their own.
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", start),
                // Only committed input: an upstream transaction that aborts is never read.
                ("isolation.level", "read_committed"),
                // A bounded source learns it has reached the end of a partition.
                ("enable.partition.eof", "true"),
            ],
            &config.options,
        )
        .create_with_context(callbacks)
        .map_err(|cause| KafkaError::Config {
            at: config.at.clone(),
            field: "source.kafka",
            cause: cause.to_string(),
        })?;
        check_topics(
            consumer.client(),
            &config.brokers,
            &config.topics,
            &config.at,
            "source.topic",
        )?;
        Ok(KafkaInput {
            consumer: Arc::new(consumer),
            assignments,
        })
    }

    /// Before partitions are revoked, a checkpoint commits what was done for them (see
    /// `assignments`): asked of the coordinator on `commands`.
    pub fn commit_before_revoke(&self, commands: Sender<Command>) {
        let hook: CommitBeforeRevoke = Box::new(move |partitions, leases| {
            let (done, answer) = crossbeam_channel::bounded(1);
            if commands
                .send(Command::CommitBeforeRevoke {
                    partitions,
                    leases,
                    done,
                })
                .is_ok()
            {
                // Dropped unanswered when no checkpoint could be taken (the run is ending).
                let _ = answer.recv_timeout(REVOKE_COMMIT_TIMEOUT);
            }
        });
        let callbacks = self.consumer.context();
        *callbacks
            .before_revoke
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }
}

/// How long a rebalance waits for the commit of the partitions it takes away.
const REVOKE_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads until stopped, or (bounded) until every assigned partition has reached the end offset
/// it had at start.
pub fn run(
    config: &KafkaSourceConfig,
    input: &KafkaInput,
    ctx: SourceContext,
) -> Result<(), SourceError> {
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    input
        .consumer
        .subscribe(&topics)
        .map_err(KafkaError::client("subscribe"))?;
    let bounds = match config.bounded {
        true => end_offsets(config, &input.consumer)?,
        false => BTreeMap::new(),
    };
    let mut reader = Reader {
        watermarks: ctx
            .event_time
            .as_ref()
            .map(|et| PartitionWatermarks::new(et, config.idle_timeout)),
        ctx,
        position: KafkaPosition::new(),
        owned: BTreeMap::new(),
        topics: HashMap::new(),
        batch: new_batch(),
        batch_bytes: 0,
        bounds,
        finished: BTreeSet::new(),
        records: 0,
        assigned_once: false,
    };
    reader.run(config, input)
}

/// The high watermark of every partition of the topics: a bounded source reads up to there.
fn end_offsets(
    config: &KafkaSourceConfig,
    consumer: &KafkaConsumer,
) -> Result<BTreeMap<Partition, i64>, SourceError> {
    let mut bounds = BTreeMap::new();
    for topic in &config.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
            .map_err(KafkaError::client("metadata"))?;
        let topic_arc: Arc<str> = Arc::from(topic.as_str());
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), CONNECT_TIMEOUT)
                    .map_err(KafkaError::client("end offsets"))?;
                bounds.insert((Arc::clone(&topic_arc), p.id()), high);
            }
        }
    }
    Ok(bounds)
}

struct Reader {
    ctx: SourceContext,
    /// The next offset of each owned partition that has a position.
    position: KafkaPosition,
    /// What each owned partition's assignment said.
    owned: BTreeMap<Partition, super::assignments::Owned>,
    /// Topic names shared by every record's origin.
    topics: HashMap<String, Arc<str>>,
    watermarks: Option<PartitionWatermarks>,
    batch: Vec<Element>,
    /// The payload bytes of the records in `batch`.
    batch_bytes: usize,
    /// Bounded: the end offset of each partition, and the partitions that reached it.
    bounds: BTreeMap<Partition, i64>,
    finished: BTreeSet<Partition>,
    /// Records read, for `line`.
    records: u64,
    assigned_once: bool,
}

impl Reader {
    fn run(&mut self, config: &KafkaSourceConfig, input: &KafkaInput) -> Result<(), SourceError> {
        loop {
            if let Ok(Control::Stop) = self.ctx.control.try_recv() {
                tracing::debug!("kafka source: no more input is read");
                self.ctx.telemetry.stopped.set();
                return self.finish(false);
            }
            let wait = match self.batch.is_empty() {
                true => Duration::from_millis(100),
                false => Duration::ZERO,
            };
            let polled = input.consumer.poll(wait);
            self.apply_changes(&input.assignments);
            match polled {
                Some(Ok(message)) => self.message(&message),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                    self.check_ends(&input.consumer)
                }
                Some(Err(error)) => {
                    // librdkafka reconnects by itself; a fatal error ends the run.
                    if matches!(
                        error.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
                    ) {
                        return Err(KafkaError::Client {
                            what: "consumer",
                            cause: error,
                        }
                        .into());
                    }
                    tracing::warn!("kafka source: {error}");
                }
                None => {
                    if let Some(ts) = self
                        .watermarks
                        .as_mut()
                        .and_then(|w| w.poll(Instant::now()))
                    {
                        self.push(Element::Watermark(ts));
                    }
                    if self.send().is_err() {
                        return Ok(());
                    }
                    if config.bounded && self.all_finished() {
                        return self.finish(true);
                    }
                    continue;
                }
            }
            if batch_is_full(self.batch.len(), self.batch_bytes) && self.send().is_err() {
                return Ok(());
            }
            if config.bounded && self.all_finished() {
                return self.finish(true);
            }
        }
    }

    /// Rebalances happen inside `poll`: pick up what they changed.
    fn apply_changes(&mut self, assignments: &Assignments) {
        for change in assignments.take_changes() {
            let now = Instant::now();
            match change {
                Change::Assigned(partition, owned) => {
                    self.assigned_once = true;
                    self.position.remove(&partition);
                    if let Some(next) = owned.committed {
                        self.position.insert(
                            partition.clone(),
                            PartitionRead {
                                next,
                                generation: owned.lease.generation,
                                resume: owned.resume.clone(),
                            },
                        );
                        if self.bounds.get(&partition).is_some_and(|&end| next >= end) {
                            self.finished.insert(partition.clone());
                        }
                    }
                    if let Some(w) = self.watermarks.as_mut() {
                        w.assign(partition.clone(), now);
                    }
                    self.owned.insert(partition, owned);
                }
                Change::Revoked(partition) => {
                    self.position.remove(&partition);
                    self.owned.remove(&partition);
                    self.finished.remove(&partition);
                    if let Some(w) = self.watermarks.as_mut() {
                        w.revoke(&partition);
                    }
                }
            }
        }
    }

    fn message(&mut self, message: &BorrowedMessage<'_>) {
        let topic = match self.topics.get(message.topic()) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = Arc::from(message.topic());
                self.topics
                    .insert(message.topic().to_string(), Arc::clone(&t));
                t
            }
        };
        let partition = (topic, message.partition());
        let offset = message.offset();
        let Some(owned) = self.owned.get(&partition) else {
            return; // Not ours (any more): the new owner reads it.
        };
        let end = self.bounds.get(&partition).copied();
        if end.is_some_and(|end| offset >= end) {
            // Written after the start of a bounded run: left for the next one.
            self.finished.insert(partition);
            return;
        }
        let lease = Arc::clone(&owned.lease);
        let skip = owned.resume.as_ref().is_some_and(|r| r.done(offset));
        let read = self
            .position
            .entry(partition.clone())
            .or_insert_with(|| PartitionRead {
                next: offset,
                generation: lease.generation,
                resume: owned.resume.clone(),
            });
        read.next = offset + 1;
        if end.is_some_and(|end| offset + 1 >= end) {
            self.finished.insert(partition.clone());
        }
        if skip {
            // Done before the commit this run resumed from: its output is committed.
            tracing::trace!(topic = %partition.0, partition = partition.1, offset, "kafka source: skipped (done before)");
            return;
        }
        self.records += 1;
        let origin = Arc::new(Origin {
            topic: Arc::clone(&partition.0),
            partition: partition.1,
            offset,
            lease,
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        });
        let value = message.payload().unwrap_or_default();
        let parsed = parse_line(
            trim(value),
            self.records,
            &FieldMapping::default(),
            self.ctx.event_time.as_ref(),
        );
        let now = Instant::now();
        match parsed {
            Ok(Element::Record(mut record)) => {
                record.key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                if self.ctx.event_time.is_none() {
                    record.timestamp = message.timestamp().to_millis();
                }
                record.origin = Some(origin);
                let watermark = match (self.watermarks.as_mut(), record.timestamp) {
                    (Some(w), Some(ts)) => w.on_record(&partition, ts, now),
                    _ => None,
                };
                self.push(Element::Record(record));
                if let Some(ts) = watermark {
                    self.push(Element::Watermark(ts));
                }
            }
            Ok(Element::Watermark(ts)) => {
                if let Some(ts) = self
                    .watermarks
                    .as_mut()
                    .and_then(|w| w.on_input_watermark(&partition, ts, now))
                {
                    self.push(Element::Watermark(ts));
                }
            }
            Ok(Element::DeadLetter(letter)) => self.push(Element::DeadLetter(letter)),
            Err(error) => self.unparsed(value, origin, &error),
        }
    }

    /// A value that is not JSON (or has no usable event time) is the source's dead letter.
    fn unparsed(&mut self, value: &[u8], origin: Arc<Origin>, error: &str) {
        let message = format!(
            "kafka topic {} partition {} offset {}: {error}",
            origin.topic, origin.partition, origin.offset
        );
        tracing::warn!("{message} (sent to the dead-letter output)");
        let record = Record {
            key: None,
            timestamp: None,
            payload: value.to_vec(),
            line: self.records,
            enters_at: 0,
            produced_by: None,
            origin: Some(origin),
            ticket: None,
        };
        let letter = DeadLetter {
            stage: "source",
            reason: "parse",
            error: &message,
            retriable: None,
            record: &record,
            plugin: None,
        };
        self.ctx.telemetry.malformed.inc();
        self.push(Element::DeadLetter(letter.encode()));
    }

    /// After an end-of-partition event: which partitions have reached their bound.
    fn check_ends(&mut self, consumer: &KafkaConsumer) {
        if self.bounds.is_empty() {
            return;
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let partition: Partition = (Arc::from(element.topic()), element.partition());
            if let (Offset::Offset(at), Some(&end)) =
                (element.offset(), self.bounds.get(&partition))
            {
                if at >= end {
                    self.finished.insert(partition);
                }
            }
        }
    }

    fn all_finished(&self) -> bool {
        self.assigned_once
            && !self.owned.is_empty()
            && self.owned.keys().all(|p| {
                self.finished.contains(p) || self.bounds.get(p).is_some_and(|&end| end == 0)
            })
    }

    fn push(&mut self, element: Element) {
        match &element {
            Element::Watermark(_) => self.ctx.telemetry.watermarks.inc(),
            Element::Record(record) => {
                self.batch_bytes += record.payload.len();
                self.ctx.telemetry.records.inc();
            }
            Element::DeadLetter(_) => self.ctx.telemetry.records.inc(),
        }
        self.batch.push(element);
    }

    fn position(&self) -> SourcePosition {
        SourcePosition {
            lines: self.records,
            offset: 0,
            records: self.records,
            watermark: Default::default(),
            kafka: Some(Arc::new(self.position.clone())),
        }
    }

    /// Hands over the batch (if any) with the position after it.
    fn send(&mut self) -> Result<(), ()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, new_batch());
        self.batch_bytes = 0;
        let position = self.position();
        self.ctx
            .tx
            .send(Message::Read(batch, position))
            .map_err(|_| ())
    }

    fn finish(&mut self, exhausted: bool) -> Result<(), SourceError> {
        if exhausted {
            if let Some(ts) = self.watermarks.as_mut().and_then(|w| w.flush()) {
                self.push(Element::Watermark(ts));
            }
        }
        let batch = std::mem::take(&mut self.batch);
        let position = self.position();
        if self.ctx.tx.send(Message::Read(batch, position)).is_ok() {
            let _ = self.ctx.tx.send(Message::End);
        }
        Ok(())
    }
}
