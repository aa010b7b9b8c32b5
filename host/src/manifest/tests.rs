//! The manifest as a whole: every section, through `parse_with_env`, as a user writes it.

use std::time::Duration;

use super::syntax::ALIASES;
use super::values::{parse_duration, parse_host_rule, parse_size};
use super::*;

const FILE: &str = "/pipelines/demo/pipeline.toml";

/// `[checkpoint]` and `[event_time]`, on this file's helpers.
#[path = "checkpoint_tests.rs"]
mod checkpoint_tests;

/// Kafka sources, sinks and dead letters, on this file's helpers.
#[path = "kafka_tests.rs"]
mod kafka_tests;

/// Secrets, on this file's helpers.
#[path = "secrets_tests.rs"]
mod secrets_tests;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    parse_with_env(text, Path::new(FILE), &|_| {
        Err(std::env::VarError::NotPresent)
    })
}

fn parse_err(text: &str) -> ManifestError {
    match parse(text) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e,
    }
}

/// 1-based line and column of `needle` inside the first line that contains `line_marker`.
fn pos(text: &str, line_marker: &str, needle: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        if line.contains(line_marker) {
            let col = line.find(needle).expect("needle on marked line");
            return (i + 1, line[..col].chars().count() + 1);
        }
    }
    panic!("no line contains {line_marker:?}");
}

/// (line, column, field) of an `Invalid` error.
fn invalid(e: &ManifestError) -> (usize, usize, &str) {
    match e {
        ManifestError::Invalid { at, field, .. } => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, at.column, field.as_str())
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// (line, column, message) of a `Syntax` error.
fn syntax(e: &ManifestError) -> (usize, usize, String) {
    match e {
        ManifestError::Syntax { at, message } => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, at.column, message.clone())
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
}

/// A small valid manifest with `extra` appended to its only operator.
fn with_operator(extra: &str) -> String {
    format!(
        "[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n{extra}\n\n[sink]\nkind = \"stdout\"\n"
    )
}

const FULL: &str = r#"name = "quickstart"

[source]
kind = "file"
path = "events.jsonl"
key_field = "id"
timestamp_field = "ts"

[[operator]]
name = "classify"
plugin = "../../dist/plugins/openai.wasm"
max_concurrent_requests = 7
request_timeout = "1m 30s"
ordered_output = false
output-mode = "unordered"
on_failure = "dead-letter"
on_timeout = "fail"
instances = 4
allowed_hosts = ["127.0.0.1:18080", "API.OpenAI.com"]
secrets = ["openai", "literal"]
http_timeout = "5s"
http_version = "2"
memory_limit = "96MiB"
call_time_limit = "150ms"
[operator.config]
model = "mock-small"
temperature = 0.5
labels = ["a", "b"]
limits = { max_tokens = 64 }

[[operator]]
plugin = "/opt/plugins/second.wasm"
capacity = 3
timeout = 250
ordered = true
memory_limit = 2097152

[secrets.openai]
env = "WAIO_TEST_OPENAI_KEY"
hosts = ["API.OpenAI.com"]

[secrets.literal]
value = "sk-test-literal"
hosts = ["127.0.0.1:18080", "[::1]"]

[sink]
kind = "file"
path = "out/result.jsonl"
format = "envelope"
watermarks = true

[dead_letter]
path = "/var/dlq.jsonl"

[mock_provider]
listen = "127.0.0.1:18080"
latency = "20ms"
error_rate = 0.1
rate_limit_rate = 0.2
hang_rate = 0
drop_rate = 0.25
seed = 7

[checkpoint]
dir = "state"
interval = "30s"
retained = 2
"#;

#[test]
fn full_manifest_resolves_with_flink_aliases() {
    let env = |name: &str| match name {
        "WAIO_TEST_OPENAI_KEY" => Ok("sk-from-env".to_owned()),
        _ => Err(std::env::VarError::NotPresent),
    };
    let m = parse_with_env(FULL, Path::new(FILE), &env).unwrap();
    assert_eq!(m.path, Path::new(FILE));
    assert_eq!(m.name, "quickstart");
    assert_eq!(
        m.source,
        SourceConfig::File {
            path: PathBuf::from("/pipelines/demo/events.jsonl"),
            path_at: Location {
                file: PathBuf::from(FILE),
                line: 5,
                column: 8
            },
            fields: FieldMapping {
                key_field: Some("id".into()),
                timestamp_field: Some("ts".into()),
            },
        }
    );
    assert_eq!(m.operators.len(), 2);

    let op = &m.operators[0];
    assert_eq!(op.index, 0);
    assert_eq!(op.name, "classify");
    assert_eq!(
        op.plugin,
        PathBuf::from("/pipelines/demo/../../dist/plugins/openai.wasm")
    );
    assert_eq!(
        op.plugin_at,
        Location {
            file: PathBuf::from(FILE),
            line: 11,
            column: 10
        }
    );
    assert_eq!(op.capacity, 7);
    assert_eq!(op.timeout, Some(Duration::from_secs(90)));
    assert!(!op.ordered);
    assert_eq!(op.on_failure, Policy::DeadLetter);
    assert_eq!(op.on_timeout, Policy::Fail);
    assert_eq!(op.instances, 4);
    assert_eq!(
        op.allowed_hosts,
        vec![
            HostRule {
                host: "127.0.0.1".into(),
                port: Some(18080)
            },
            HostRule {
                host: "api.openai.com".into(),
                port: None
            },
        ]
    );
    assert_eq!(
        op.secrets,
        vec![
            Secret {
                name: "openai".into(),
                value: "sk-from-env".into(),
                hosts: vec![HostRule {
                    host: "api.openai.com".into(),
                    port: None
                }],
            },
            Secret {
                name: "literal".into(),
                value: "sk-test-literal".into(),
                hosts: vec![
                    HostRule {
                        host: "127.0.0.1".into(),
                        port: Some(18080)
                    },
                    HostRule {
                        host: "::1".into(),
                        port: None
                    },
                ],
            },
        ]
    );
    assert_eq!(op.http_timeout, Duration::from_secs(5));
    assert_eq!(op.http_version, HttpVersion::Http2);
    assert_eq!(op.memory_limit, 96 * 1024 * 1024);
    assert_eq!(op.call_time_limit, Duration::from_millis(150));
    let config: serde_json::Value = serde_json::from_str(&op.config_json).unwrap();
    assert_eq!(
        config,
        serde_json::json!({
            "model": "mock-small",
            "temperature": 0.5,
            "labels": ["a", "b"],
            "limits": {"max_tokens": 64}
        })
    );

    let op = &m.operators[1];
    assert_eq!(op.index, 1);
    assert_eq!(op.name, "operator-1");
    assert_eq!(op.plugin, PathBuf::from("/opt/plugins/second.wasm"));
    assert_eq!(op.capacity, 3);
    assert_eq!(op.timeout, Some(Duration::from_millis(250)));
    assert!(op.ordered);
    assert_eq!(op.memory_limit, 2 * 1024 * 1024);
    assert_eq!(op.config_json, "{}");
    assert!(op.secrets.is_empty());
    assert!(op.allowed_hosts.is_empty());

    assert_eq!(
        m.sink,
        SinkConfig::File {
            path: PathBuf::from("/pipelines/demo/out/result.jsonl"),
            format: OutputFormat::Envelope,
            watermarks: true,
        }
    );
    assert_eq!(m.dead_letter.path, PathBuf::from("/var/dlq.jsonl"));
    assert_eq!(
        m.mock_provider,
        Some(MockProviderConfig {
            listen: "127.0.0.1:18080".parse().unwrap(),
            latency: Duration::from_millis(20),
            error_rate: 0.1,
            rate_limit_rate: 0.2,
            hang_rate: 0.0,
            drop_rate: 0.25,
            seed: 7,
        })
    );
    assert_eq!(
        m.checkpoint,
        Some(CheckpointConfig {
            dir: PathBuf::from("/pipelines/demo/state"),
            interval: Duration::from_secs(30),
            retained: 2,
        })
    );
    assert_eq!(m.event_time, None);
}

#[test]
fn minimal_manifest_gets_defaults() {
    let m = parse(&with_operator("")).unwrap();
    assert_eq!(m.name, "pipeline", "name defaults to the file stem");
    assert_eq!(
        m.source,
        SourceConfig::Stdin {
            fields: FieldMapping::default()
        }
    );
    let op = &m.operators[0];
    assert_eq!(op.name, "operator-0");
    assert_eq!(op.capacity, 100);
    assert_eq!(op.timeout, Some(Duration::from_secs(30)));
    assert!(op.ordered);
    assert_eq!((op.on_failure, op.on_timeout), (Policy::Fail, Policy::Fail));
    assert_eq!(op.instances, 1);
    assert!(op.allowed_hosts.is_empty());
    assert_eq!(op.http_timeout, Duration::from_secs(30));
    assert_eq!(op.http_version, HttpVersion::Http1);
    assert_eq!(op.memory_limit, 64 * 1024 * 1024);
    assert_eq!(op.call_time_limit, Duration::from_millis(200));
    assert_eq!(op.config_json, "{}");
    assert_eq!(
        m.sink,
        SinkConfig::Stdout {
            format: OutputFormat::Payload,
            watermarks: false
        }
    );
    assert_eq!(
        m.dead_letter.path,
        PathBuf::from("/pipelines/demo/dead-letters.jsonl")
    );
    assert!(m.mock_provider.is_none());
    assert!(m.checkpoint.is_none());
    assert!(m.event_time.is_none());
}

#[test]
fn other_source_and_sink_kinds() {
    let m = parse(
        "[source]\nkind = \"generator\"\ncount = 5\npayload_bytes = 128\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n",
    )
    .unwrap();
    assert_eq!(
        m.source,
        SourceConfig::Generator {
            count: 5,
            payload_bytes: 128
        }
    );
    assert_eq!(m.sink, SinkConfig::Discard);

    let m = parse(
        "[source]\nkind = \"generator\"\ncount = 1\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\nformat = \"envelope\"\n",
    )
    .unwrap();
    assert_eq!(
        m.source,
        SourceConfig::Generator {
            count: 1,
            payload_bytes: 64
        }
    );
    assert_eq!(
        m.sink,
        SinkConfig::Stdout {
            format: OutputFormat::Envelope,
            watermarks: false
        }
    );
}

#[test]
fn zero_or_negative_timeout_means_none() {
    for t in ["\"0s\"", "0", "-1"] {
        let m = parse(&with_operator(&format!("timeout = {t}"))).unwrap();
        assert_eq!(m.operators[0].timeout, None, "timeout = {t}");
    }
    let m = parse(&with_operator("request-timeout = \"1500\"")).unwrap();
    assert_eq!(m.operators[0].timeout, Some(Duration::from_millis(1500)));
}

#[test]
fn unknown_key_names_field_and_place() {
    let text = with_operator("capacty = 5");
    let e = parse_err(&text);
    let (line, column, message) = syntax(&e);
    assert_eq!((line, column), (6, 1));
    assert!(
        message.starts_with("operator[0].capacty: unknown field `capacty`"),
        "{message}"
    );

    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n\n[sinkk]\n";
    let (line, column, message) = syntax(&parse_err(text));
    assert_eq!((line, column), (8, 2));
    assert!(message.starts_with("sinkk: unknown field"), "{message}");
}

#[test]
fn wrong_type_names_field_and_place() {
    let text = format!(
        "{}\n[[operator]]\nplugin = \"q.wasm\"\ncapacity = \"ten\"\n",
        with_operator("")
    );
    let (line, column, message) = syntax(&parse_err(&text));
    assert_eq!((line, column), pos(&text, "capacity = \"ten\"", "\"ten\""));
    assert!(
        message.starts_with("operator[1].capacity: invalid type: string"),
        "{message}"
    );

    let text = with_operator("ordered = \"yes\"");
    let (line, column, message) = syntax(&parse_err(&text));
    assert_eq!((line, column), (6, 11));
    assert!(
        message.starts_with("operator[0].ordered: invalid type"),
        "{message}"
    );
}

#[test]
fn toml_syntax_error_is_located() {
    let text = "[source]\nkind = \"stdin\n";
    let (line, column, _) = syntax(&parse_err(text));
    assert_eq!(line, 2);
    assert!(column > 1);
}

#[test]
fn requests_in_flight_default_to_four_times_capacity_and_must_be_positive() {
    let op = &parse(&with_operator("capacity = 7")).unwrap().operators[0];
    assert_eq!(op.max_requests_in_flight, 28);
    assert_eq!(op.timeout_grace, Duration::from_secs(5));
    let op = &parse(&with_operator(
        "max_requests_in_flight = 3\ntimeout_grace = \"250ms\"",
    ))
    .unwrap()
    .operators[0];
    assert_eq!(op.max_requests_in_flight, 3);
    assert_eq!(op.timeout_grace, Duration::from_millis(250));
    let e = parse_err(&with_operator("max_requests_in_flight = 0"));
    assert_eq!(invalid(&e), (6, 26, "operator[0].max_requests_in_flight"));
    assert!(e.to_string().contains("at least 1, got 0"), "{e}");
}

#[test]
fn capacity_below_one_is_rejected_like_flink() {
    for value in ["0", "-1"] {
        let text = with_operator(&format!("capacity = {value}"));
        let e = parse_err(&text);
        assert_eq!(
            invalid(&e),
            (6, 12, "operator[0].capacity"),
            "capacity = {value}"
        );
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
    // The alias points at the same field.
    let e = parse_err(&with_operator("max-concurrent-requests = 0"));
    assert_eq!(invalid(&e), (6, 27, "operator[0].capacity"));
}

#[test]
fn bad_durations_are_rejected() {
    let text = with_operator("timeout = \"soon\"");
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (6, 11, "operator[0].timeout"));
    assert!(e.to_string().contains("\"soon\""), "{e}");

    let e = parse_err(&with_operator("http_timeout = \"0s\""));
    assert_eq!(invalid(&e), (6, 16, "operator[0].http_timeout"));
    let e = parse_err(&with_operator("http_version = \"3\""));
    assert_eq!(invalid(&e), (6, 16, "operator[0].http_version"));
    assert!(
        e.to_string().contains(r#"expected one of "1.1", "2""#),
        "{e}"
    );
    let e = parse_err(&with_operator("call_time_limit = -5"));
    assert_eq!(invalid(&e), (6, 19, "operator[0].call_time_limit"));
}

#[test]
fn conflicting_ordered_and_output_mode() {
    let text = with_operator("ordered = true\noutput_mode = \"unordered\"");
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (7, 15, "operator[0].output_mode"));
    // Agreeing settings are fine.
    let m = parse(&with_operator(
        "ordered-output = false\noutput_mode = \"unordered\"",
    ))
    .unwrap();
    assert!(!m.operators[0].ordered);
    let e = parse_err(&with_operator("output_mode = \"sorted\""));
    assert_eq!(invalid(&e), (6, 15, "operator[0].output_mode"));
}

#[test]
fn unknown_policy() {
    let e = parse_err(&with_operator("on_timeout = \"retry\""));
    assert_eq!(invalid(&e), (6, 14, "operator[0].on_timeout"));
    assert!(e.to_string().contains("\"dead-letter\""), "{e}");
}

#[test]
fn duplicate_operator_names() {
    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nname = \"a\"\nplugin = \"p.wasm\"\n[[operator]]\nplugin = \"q.wasm\"\nname = \"a\"\n[sink]\nkind = \"stdout\"\n";
    let e = parse_err(text);
    assert_eq!(invalid(&e), (8, 8, "operator[1].name"));
    // An explicit name may also clash with a default one.
    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[[operator]]\nplugin = \"q.wasm\"\nname = \"operator-0\"\n[sink]\nkind = \"stdout\"\n";
    assert_eq!(invalid(&parse_err(text)), (7, 8, "operator[1].name"));
}

#[test]
fn missing_sections_are_named() {
    let e = parse_err("[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n");
    match &e {
        ManifestError::Missing { path, message } => {
            assert_eq!(path, Path::new(FILE));
            assert!(message.starts_with("missing [sink]"), "{message}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let e = parse_err("name = \"x\"\n");
    let message = e.to_string();
    assert!(
        message.contains("missing [source], [[operator]], [sink]"),
        "{message}"
    );
}

#[test]
fn a_serve_source_needs_no_sink_and_takes_no_path() {
    let m = parse(
        "[source]\nkind = \"serve\"\nkey_field = \"id\"\n[[operator]]\nplugin = \"p.wasm\"\n",
    )
    .expect("a serve manifest");
    let SourceConfig::Serve { fields } = &m.source else {
        panic!("expected a serve source, got {:?}", m.source);
    };
    assert_eq!(fields.key_field.as_deref(), Some("id"));
    assert_eq!(m.sink, SinkConfig::Discard);
    let e = parse_err(
        "[source]\nkind = \"serve\"\npath = \"in.jsonl\"\n[[operator]]\nplugin = \"p.wasm\"\n",
    );
    assert_eq!(invalid(&e), (3, 8, "source.path"));
    let e = parse_err(
        "[source]\nkind = \"server\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n",
    );
    assert!(e.to_string().contains("\"serve\""), "{e}");
}

#[test]
fn file_source_without_path() {
    let text = "[[operator]]\nplugin = \"p.wasm\"\n\n[source]\nkind = \"file\"\n[sink]\nkind = \"stdout\"\n";
    let e = parse_err(text);
    assert_eq!(invalid(&e), (4, 1, "source.path"));
}

#[test]
fn settings_of_another_kind_are_rejected() {
    let text = "[source]\nkind = \"stdin\"\ncount = 3\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n";
    assert_eq!(invalid(&parse_err(text)), (3, 9, "source.count"));
    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\npath = \"x\"\n";
    assert_eq!(invalid(&parse_err(text)), (7, 8, "sink.path"));
    let text = "[source]\nkind = \"generator\"\ncount = 0\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n";
    assert_eq!(invalid(&parse_err(text)), (3, 9, "source.count"));
}

#[test]
fn bad_host_rule() {
    let text = with_operator("allowed_hosts = [\"ok.example\", \"https://api.openai.com/v1\"]");
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (6, 32, "operator[0].allowed_hosts[1]"));
    for bad in [
        "",
        "host:0",
        "host:99999",
        "host:x",
        "a b",
        "*.example.com",
        "[::1",
        "1::2::3",
    ] {
        assert!(parse_host_rule(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn host_rules_match_case_insensitively_and_by_port() {
    // The outbound stack matches requests against the rules the manifest parsed.
    let allows = |rule: &HostRule, host: &str, port: u16| {
        crate::outbound::HostPattern::new(rule.host.clone(), rule.port).allows(host, port)
    };
    let any_port = parse_host_rule("API.Example.com").unwrap();
    assert_eq!(any_port.host, "api.example.com");
    assert!(allows(&any_port, "api.example.COM", 443));
    assert!(allows(&any_port, "api.example.com.", 8080));
    assert!(!allows(&any_port, "evil-api.example.com", 443));
    assert!(!allows(&any_port, "api.example.com.evil", 443));

    let one_port = parse_host_rule("127.0.0.1:18080").unwrap();
    assert!(allows(&one_port, "127.0.0.1", 18080));
    assert!(!allows(&one_port, "127.0.0.1", 18081));

    let v6 = parse_host_rule("[::1]:8080").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
    assert!(allows(&v6, "[::1]", 8080));
    assert_eq!(v6.to_string(), "[::1]:8080");
}

#[test]
fn bad_size() {
    let e = parse_err(&with_operator("memory_limit = \"64 potatoes\""));
    assert_eq!(invalid(&e), (6, 16, "operator[0].memory_limit"));
    let e = parse_err(&with_operator("memory_limit = \"512KiB\""));
    assert_eq!(
        invalid(&e),
        (6, 16, "operator[0].memory_limit"),
        "below 1MiB"
    );
    let e = parse_err(&with_operator("memory_limit = -1"));
    assert_eq!(invalid(&e), (6, 16, "operator[0].memory_limit"));
}

#[test]
fn size_and_duration_parsers() {
    assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("64MB"), Ok(64_000_000));
    assert_eq!(parse_size("64 mb"), Ok(64_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("1.5GiB").is_err());
    assert!(parse_size("99999999999TiB").is_err());

    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("750"), Ok(Duration::from_millis(750)));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn relative_paths_resolve_against_the_manifest_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("pipe.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        "[source]\nkind = \"file\"\npath = \"data/in.jsonl\"\n[[operator]]\nplugin = \"../p.wasm\"\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[dead_letter]\npath = \"dl/x.jsonl\"\n",
    )
    .unwrap();
    let m = Manifest::load(&file).unwrap();
    let base = dir.path().join("sub");
    assert_eq!(m.name, "pipe");
    assert_eq!(
        m.source,
        SourceConfig::File {
            path: base.join("data/in.jsonl"),
            path_at: Location {
                file: file.clone(),
                line: 3,
                column: 8
            },
            fields: FieldMapping::default()
        }
    );
    assert_eq!(m.operators[0].plugin, base.join("../p.wasm"));
    assert_eq!(
        m.sink,
        SinkConfig::File {
            path: base.join("out.jsonl"),
            format: OutputFormat::Payload,
            watermarks: false
        }
    );
    assert_eq!(m.dead_letter.path, base.join("dl/x.jsonl"));
    assert_eq!(m.operators[0].plugin_at.file, file);
}

#[test]
fn loading_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope.toml");
    match Manifest::load(&file) {
        Err(e @ ManifestError::Read { .. }) => {
            assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn secret_debug_is_redacted() {
    let s = Secret {
        name: "openai".into(),
        value: "sk-very-secret".into(),
        hosts: vec![],
    };
    let shown = format!("{s:?}");
    assert!(
        shown.contains("openai") && !shown.contains("sk-very-secret"),
        "{shown}"
    );
    let text = format!(
        "{}\n[secrets.k]\nvalue = \"sk-very-secret\"\nhosts = [\"a.example\"]\n",
        with_operator("secrets = [\"k\"]")
    );
    let m = parse(&text).unwrap();
    assert!(!format!("{m:?}").contains("sk-very-secret"));
}

#[test]
fn mock_provider_checks() {
    let base = with_operator("");
    let e = parse_err(&format!(
        "{base}[mock_provider]\nlisten = \"localhost:80\"\n"
    ));
    assert_eq!(invalid(&e).2, "mock_provider.listen");
    let e = parse_err(&format!(
        "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\nerror_rate = 1.5\n"
    ));
    assert_eq!(invalid(&e).2, "mock_provider.error_rate");
    let e = parse_err(&format!("{base}[mock_provider]\nseed = 1\n"));
    assert_eq!(invalid(&e).2, "mock_provider.listen");
    let e = parse_err(&format!(
        "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\nerror_rate = 0.6\ndrop_rate = 0.6\n"
    ));
    assert_eq!(invalid(&e).2, "mock_provider");
    let m = parse(&format!(
        "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\n"
    ))
    .unwrap();
    let mock = m.mock_provider.unwrap();
    assert_eq!(
        (mock.seed, mock.latency, mock.error_rate),
        (42, Duration::ZERO, 0.0)
    );
}

#[test]
fn error_display_reads_file_line_column() {
    let e = parse_err(&with_operator("instances = 65"));
    assert_eq!(
        e.to_string(),
        format!("{FILE}:6:13: operator[0].instances: must be between 1 and 64, got 65")
    );
}

#[test]
fn field_path_survives_datetimes_and_dotted_headers() {
    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[operator.config]\nwhen = 1979-05-27T07:32:00Z\n[sink]\nkind = \"stdout\"\n[secrets.a]\nenv = 5\n";
    let (line, column, message) = syntax(&parse_err(text));
    assert_eq!((line, column), (10, 7));
    assert!(
        message.starts_with("secrets.a.env: invalid type"),
        "{message}"
    );
}
