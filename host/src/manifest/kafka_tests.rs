//! `kind = "kafka"` in `[source]`, `[sink]` and `[dead_letter]`: what resolves, the defaults, and
//! refusals that name the line and field.

use super::*;

const OPERATOR: &str = "[[operator]]\nname = \"enrich\"\nplugin = \"e.wasm\"\n";

fn kafka(source: &str, sink: &str, dead_letter: &str) -> String {
    format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n{source}\n\n{OPERATOR}\n[sink]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"out\"\n{sink}\n\n[dead_letter]\n{dead_letter}\n"
    )
}

#[test]
fn a_kafka_pipeline_resolves_with_its_defaults_and_options() {
    let text = kafka(
        "topic = \"in\"\ngroup_id = \"g\"\n[source.kafka]\n\"group.instance.id\" = \"one\"\n\"fetch.min.bytes\" = 1024\n",
        "transactional_id = \"t1\"",
        "kind = \"kafka\"\ntopic = \"dlq\"",
    );
    let m = parse(&text).unwrap();
    let SourceConfig::Kafka(source) = &m.source else {
        panic!("{:?}", m.source);
    };
    assert_eq!(source.topics, ["in"]);
    assert_eq!(source.group_id, "g");
    assert_eq!(source.start, KafkaStart::Earliest);
    assert!(!source.bounded);
    assert_eq!(source.idle_timeout, None);
    assert_eq!(source.commit_interval, Duration::from_secs(5));
    assert_eq!(source.options["group.instance.id"], "one");
    assert_eq!(source.options["fetch.min.bytes"], "1024");
    let SinkConfig::Kafka(sink) = &m.sink else {
        panic!("{:?}", m.sink);
    };
    assert_eq!(sink.topic, "out");
    assert_eq!(sink.transactional_id.as_deref(), Some("t1"));
    assert_eq!(
        m.dead_letter.kafka.as_ref().map(|d| d.topic.as_str()),
        Some("dlq")
    );

    let text = kafka(
        "topics = [\"a\", \"b\"]\ngroup_id = \"g\"\nstart = \"latest\"\nbounded = true\nidle_timeout = \"30s\"\ncommit_interval = \"1s\"",
        "",
        "kind = \"kafka\"\ntopic = \"dlq\"",
    );
    let SourceConfig::Kafka(source) = parse(&text).unwrap().source else {
        panic!();
    };
    assert_eq!(source.topics, ["a", "b"]);
    assert_eq!(source.start, KafkaStart::Latest);
    assert!(source.bounded);
    assert_eq!(source.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(source.commit_interval, Duration::from_secs(1));
}

#[test]
fn kafka_settings_are_refused_with_their_place() {
    let dlq = "kind = \"kafka\"\ntopic = \"dlq\"";
    // Missing fields point at the section.
    let e = parse_err(&kafka("group_id = \"g\"", "", dlq));
    assert_eq!(invalid(&e), (1, 1, "source.topic"));
    let e = parse_err(&kafka("topic = \"in\"", "", dlq));
    assert_eq!(invalid(&e), (1, 1, "source.group_id"));
    // Bad values point at themselves.
    let text = kafka(
        "topic = \"in\"\ngroup_id = \"g\"\nstart = \"beginning\"",
        "",
        dlq,
    );
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (6, 9, "source.start"));
    assert!(e.to_string().contains("\"earliest\", \"latest\""), "{e}");
    let text = kafka(
        "topic = \"in\"\ntopics = [\"x\"]\ngroup_id = \"g\"",
        "",
        dlq,
    );
    assert_eq!(invalid(&parse_err(&text)).2, "source.topics");
    let text = kafka(
        "topic = \"in\"\ngroup_id = \"g\"\n[source.kafka]\n\"socket.timeout.ms\" = [1]",
        "",
        dlq,
    );
    let e = parse_err(&text);
    assert_eq!(invalid(&e).2, "source.kafka.socket.timeout.ms");
    // Fields of other kinds.
    let text = kafka(
        "topic = \"in\"\ngroup_id = \"g\"\npath = \"in.jsonl\"",
        "",
        dlq,
    );
    assert_eq!(invalid(&parse_err(&text)).2, "source.path");
    let text = "[source]\nkind = \"file\"\npath = \"in.jsonl\"\ngroup_id = \"g\"\n".to_string()
        + OPERATOR
        + "[sink]\nkind = \"stdout\"\n";
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (4, 12, "source.group_id"));
    assert!(
        e.to_string().contains("applies only to kafka sources"),
        "{e}"
    );
}

/// Kafka in needs Kafka out, and a Kafka sink needs a dead-letter topic: their commits are one
/// transaction.
#[test]
fn kafka_source_sink_and_dead_letters_go_together() {
    let source = "topic = \"in\"\ngroup_id = \"g\"";
    let e = parse_err(&kafka(source, "", "path = \"dead.jsonl\""));
    assert_eq!(invalid(&e).2, "dead_letter.kind");
    assert!(
        e.to_string()
            .contains("a kafka sink writes dead letters to a topic"),
        "{e}"
    );

    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"b:9092\"\n{source}\n{OPERATOR}[sink]\nkind = \"stdout\"\n"
    );
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (1, 1, "sink.kind"));
    assert!(
        e.to_string().contains("a kafka source needs a kafka sink"),
        "{e}"
    );

    let text = format!(
        "[source]\nkind = \"stdin\"\n{OPERATOR}[sink]\nkind = \"stdout\"\n[dead_letter]\nkind = \"kafka\"\ntopic = \"d\"\n"
    );
    assert_eq!(invalid(&parse_err(&text)).2, "dead_letter.kind");

    // A file source may write to Kafka (at-least-once: no transaction covers the file).
    let text = format!(
        "[source]\nkind = \"stdin\"\n{OPERATOR}[sink]\nkind = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"out\"\n[dead_letter]\nkind = \"kafka\"\ntopic = \"d\"\n"
    );
    assert!(matches!(parse(&text).unwrap().sink, SinkConfig::Kafka(_)));
}
