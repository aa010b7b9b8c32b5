//! A real Kafka-protocol broker for the Kafka tests: `noida-db` (PyPI, a static binary;
//! `scripts/setup-kafka` installs it) on a free 127.0.0.1 port with its own data directory, and
//! librdkafka clients to create topics, produce input and read output as a `read_committed`
//! consumer would.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A record to produce: partition, key, value and headers.
pub type Produced<'a> = (i32, Option<String>, String, Vec<(&'a str, &'a str)>);

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

/// The `noida-db` binary itself (its Python wrapper does not pass SIGTERM on): `$NOIDA_DB`, the
/// link `scripts/setup-kafka` makes, or the one inside an installed `noida_db` package.
pub fn noida_db() -> PathBuf {
    if let Ok(path) = std::env::var("NOIDA_DB") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let linked = PathBuf::from(home).join(".cache/waio/bin/noida-db");
        if linked.exists() {
            return linked;
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))",
        ])
        .output()
        .expect("run python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.exists(),
        "noida-db is not installed: run scripts/setup-kafka (scripts/test does)"
    );
    path
}

impl Broker {
    pub fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut broker = Broker {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        let child = Command::new(noida_db())
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .args(["--kafka-port", &port.to_string()])
            .arg("--data-dir")
            .arg(broker.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start noida-db");
        broker.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "noida-db did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.addr());
        config.set("log_level", "3");
        config
    }

    /// Creates topics with `partitions` partitions each.
    pub fn create_topics(&self, names: &[&str], partitions: i32) {
        create_topics(&self.addr(), names, partitions);
    }
    /// Produces `(partition, key, value)` records and waits for them to be stored.
    pub fn produce(&self, records: &[(i32, Option<String>, String)], topic: &str) {
        self.produce_with_headers(
            &records
                .iter()
                .map(|(p, k, v)| (*p, k.clone(), v.clone(), Vec::new()))
                .collect::<Vec<_>>(),
            topic,
        );
    }

    pub fn produce_with_headers(&self, records: &[Produced<'_>], topic: &str) {
        let producer: BaseProducer = self.config().create().expect("producer");
        for (partition, key, value, headers) in records {
            let mut record = BaseRecord::<str, str>::to(topic)
                .payload(value.as_str())
                .partition(*partition);
            if let Some(key) = key {
                record = record.key(key.as_str());
            }
            if !headers.is_empty() {
                let mut owned = OwnedHeaders::new();
                for (k, v) in headers {
                    owned = owned.insert(rdkafka::message::Header {
                        key: k,
                        value: Some(*v),
                    });
                }
                record = record.headers(owned);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(20));
                        record = back;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every committed record of `topic`, as a `read_committed` consumer sees it (aborted
    /// transactions left out), in partition and offset order.
    pub fn read_committed(&self, topic: &str) -> Vec<Read> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "waio-tests-reader")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut list = TopicPartitionList::new();
        let mut partitions = 0;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("partition");
                partitions += 1;
            }
        }
        consumer.assign(&list).expect("assign");
        let mut ended = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(30);
        while ended.len() < partitions {
            assert!(Instant::now() < until, "reading {topic} took over 30 s");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                _ => {}
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// Stops the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates topics with `partitions` partitions each on the brokers at `addr` (also for the
/// benchmarks: `kafka-topics`).
pub fn create_topics(addr: &str, names: &[&str], partitions: i32) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", addr);
    config.set("log_level", "3");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    std::thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let results = runtime
            .block_on(admin.create_topics(&topics, &AdminOptions::new()))
            .expect("create topics");
        for result in results {
            result.expect("topic created");
        }
    })
    .join()
    .expect("admin thread");
}
