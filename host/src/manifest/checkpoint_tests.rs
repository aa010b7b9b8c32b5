//! `[checkpoint]` and `[event_time]` as a user writes them: defaults, aliases, refusals.

use super::*;

#[test]
fn checkpoint_section_resolves() {
    let text = format!(
        "{}[checkpoint]\ndir = \"state\"\ninterval = \"1s\"\nretained = 5\n",
        with_operator("")
    );
    let m = parse(&text).unwrap();
    assert_eq!(
        m.checkpoint,
        Some(CheckpointConfig {
            dir: PathBuf::from("/pipelines/demo/state"),
            interval: Duration::from_secs(1),
            retained: 5,
        })
    );
}

#[test]
fn checkpoint_defaults() {
    let text = format!("{}[checkpoint]\ndir = \"/var/waio\"\n", with_operator(""));
    let m = parse(&text).unwrap();
    assert_eq!(
        m.checkpoint,
        Some(CheckpointConfig {
            dir: PathBuf::from("/var/waio"),
            interval: Duration::from_secs(10),
            retained: 3,
        })
    );
    // Integer milliseconds, like every other duration.
    let text = format!(
        "{}[checkpoint]\ndir = \"s\"\ninterval = 1500\n",
        with_operator("")
    );
    let m = parse(&text).unwrap();
    assert_eq!(
        m.checkpoint.map(|c| c.interval),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn checkpoint_needs_a_dir() {
    let text = format!("{}[checkpoint]\ninterval = \"1s\"\n", with_operator(""));
    let e = parse_err(&text);
    let (line, _) = pos(&text, "[checkpoint]", "[");
    assert_eq!(invalid(&e), (line, 1, "checkpoint.dir"));
    let text = format!("{}[checkpoint]\ndir = \"\"\n", with_operator(""));
    let e = parse_err(&text);
    assert_eq!(
        invalid(&e),
        (pos(&text, "dir =", "\"\"").0, 7, "checkpoint.dir")
    );
}

#[test]
fn zero_checkpoint_interval_or_retained_is_rejected() {
    for value in ["\"0s\"", "0"] {
        let text = format!(
            "{}[checkpoint]\ndir = \"s\"\ninterval = {value}\n",
            with_operator("")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "interval =", value);
        assert_eq!(
            invalid(&e),
            (line, column, "checkpoint.interval"),
            "{value}"
        );
        assert!(e.to_string().contains("greater than 0"), "{e}");
    }
    let text = format!(
        "{}[checkpoint]\ndir = \"s\"\ninterval = -5\n",
        with_operator("")
    );
    assert_eq!(invalid(&parse_err(&text)).2, "checkpoint.interval");
    for value in ["0", "-1"] {
        let text = format!(
            "{}[checkpoint]\ndir = \"s\"\nretained = {value}\n",
            with_operator("")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "retained =", value);
        assert_eq!(
            invalid(&e),
            (line, column, "checkpoint.retained"),
            "{value}"
        );
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}

#[test]
fn unknown_key_in_checkpoint_or_event_time() {
    let text = format!(
        "{}[checkpoint]\ndir = \"s\"\ninterval_ms = 5\n",
        with_operator("")
    );
    let (line, column, message) = syntax(&parse_err(&text));
    assert_eq!((line, column), pos(&text, "interval_ms", "interval_ms"));
    assert!(
        message.starts_with("checkpoint.interval_ms: unknown field `interval_ms`"),
        "{message}"
    );
    let text = format!(
        "{}[event_time]\nfield = \"ts\"\nlateness = \"1s\"\n",
        with_operator("")
    );
    let (line, column, message) = syntax(&parse_err(&text));
    assert_eq!((line, column), pos(&text, "lateness", "lateness"));
    assert!(
        message.starts_with("event_time.lateness: unknown field `lateness`"),
        "{message}"
    );
}

#[test]
fn event_time_section_resolves_with_aliases() {
    let text = format!(
        "{}[event_time]\nfield = \"created_at\"\nformat = \"rfc3339\"\nmax_out_of_orderness = \"5s\"\nwatermark_interval = \"1s\"\n",
        with_operator("")
    );
    let m = parse(&text).unwrap();
    assert_eq!(
        m.event_time,
        Some(EventTimeConfig {
            field: "created_at".into(),
            format: TimestampFormat::Rfc3339,
            max_out_of_orderness: Duration::from_secs(5),
            watermark_interval: Duration::from_secs(1),
        })
    );
    let text = format!(
        "{}[event_time]\nfield = \"t\"\nformat = \"iso8601\"\nout_of_orderness = 250\nauto_watermark_interval = \"0s\"\n",
        with_operator("")
    );
    let et = parse(&text).unwrap().event_time.unwrap();
    assert_eq!(et.format, TimestampFormat::Rfc3339);
    assert_eq!(et.max_out_of_orderness, Duration::from_millis(250));
    assert_eq!(et.watermark_interval, Duration::ZERO);
    let text = format!(
        "{}[event_time]\nfield = \"t\"\nformat = \"epoch_seconds\"\n",
        with_operator("")
    );
    let et = parse(&text).unwrap().event_time.unwrap();
    assert_eq!(et.format, TimestampFormat::EpochSeconds);
    // A key and its alias together are ambiguous (every pair: `a_key_and_its_alias_...`).
    let text = format!(
        "{}[event_time]\nfield = \"t\"\nmax_out_of_orderness = \"1s\"\nout_of_orderness = \"2s\"\n",
        with_operator("")
    );
    assert_eq!(
        invalid(&parse_err(&text)).2,
        "event_time.max_out_of_orderness"
    );
}

/// serde alone says "duplicate field `capacity`" at the table header; the error names both
/// keys where they stand, for every pair of names of every aliased field, in either order.
#[test]
fn a_key_and_its_alias_together_are_an_error_naming_both() {
    let value = |field: &str| match field {
        "capacity" => "3",
        "ordered" => "true",
        "output_mode" => "\"ordered\"",
        _ => "\"1s\"",
    };
    let mut checked = 0;
    for (table, names) in ALIASES {
        for first in names.iter() {
            for second in names.iter().filter(|n| *n != first) {
                let v = value(names[0]);
                // Another key between the two, and the second indented: lines and columns
                // must be each key's own.
                let (text, field) = match *table {
                    "operator" => (
                        format!(
                            "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"a.wasm\"\n[[operator]]\nplugin = \"p.wasm\"\n{first} = {v}\nname = \"x\"\n  {second} = {v}\n[sink]\nkind = \"stdout\"\n"
                        ),
                        format!("operator[1].{}", names[0]),
                    ),
                    "event_time" => (
                        format!(
                            "{}[event_time]\nfield = \"t\"\n{first} = {v}\nformat = \"epoch_millis\"\n  {second} = {v}\n",
                            with_operator("")
                        ),
                        format!("event_time.{}", names[0]),
                    ),
                    other => panic!("no test text for table {other}"),
                };
                let error = parse_err(&text);
                let (line, column) = pos(&text, &format!("  {second} ="), second);
                assert_eq!(invalid(&error), (line, column, field.as_str()), "{error}");
                let (first_line, first_column) = pos(&text, &format!("{first} ="), first);
                let message = error.to_string();
                assert!(
                    message.contains(&format!(
                        "`{first}` (line {first_line}, column {first_column}) and `{second}` (line {line}, column {column})"
                    )),
                    "{message}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24, "every ordered pair of names");
}

#[test]
fn event_time_defaults() {
    let text = format!("{}[event_time]\nfield = \"ts\"\n", with_operator(""));
    let m = parse(&text).unwrap();
    assert_eq!(
        m.event_time,
        Some(EventTimeConfig {
            field: "ts".into(),
            format: TimestampFormat::EpochMillis,
            max_out_of_orderness: Duration::ZERO,
            watermark_interval: Duration::from_millis(200),
        })
    );
    assert_eq!(
        m.source,
        SourceConfig::Stdin {
            fields: FieldMapping::default()
        }
    );
}

#[test]
fn event_time_needs_a_field() {
    let text = format!(
        "{}[event_time]\nformat = \"epoch_millis\"\n",
        with_operator("")
    );
    let e = parse_err(&text);
    assert_eq!(
        invalid(&e),
        (pos(&text, "[event_time]", "[").0, 1, "event_time.field")
    );
    let text = format!("{}[event_time]\nfield = \"\"\n", with_operator(""));
    let e = parse_err(&text);
    assert_eq!(
        invalid(&e),
        (pos(&text, "field =", "\"\"").0, 9, "event_time.field")
    );
}

#[test]
fn bad_event_time_values() {
    let text = format!(
        "{}[event_time]\nfield = \"ts\"\nformat = \"unix\"\n",
        with_operator("")
    );
    let e = parse_err(&text);
    let (line, column) = pos(&text, "format =", "\"unix\"");
    assert_eq!(invalid(&e), (line, column, "event_time.format"));
    let message = e.to_string();
    assert!(
        message.contains("\"unix\"")
            && message.contains("\"epoch_millis\"")
            && message.contains("\"rfc3339\""),
        "{message}"
    );
    let text = format!(
        "{}[event_time]\nfield = \"ts\"\nmax_out_of_orderness = \"a while\"\n",
        with_operator("")
    );
    let e = parse_err(&text);
    let (line, column) = pos(&text, "max_out_of_orderness", "\"a while\"");
    assert_eq!(
        invalid(&e),
        (line, column, "event_time.max_out_of_orderness")
    );
    let text = format!(
        "{}[event_time]\nfield = \"ts\"\nauto_watermark_interval = -1\n",
        with_operator("")
    );
    let e = parse_err(&text);
    let (line, column) = pos(&text, "auto_watermark_interval", "-1");
    assert_eq!(invalid(&e), (line, column, "event_time.watermark_interval"));
}

#[test]
fn event_time_conflicts_with_timestamp_field() {
    let text = "[source]\nkind = \"file\"\npath = \"in.jsonl\"\ntimestamp_field = \"ts\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n[event_time]\nfield = \"ts\"\n";
    let e = parse_err(text);
    assert_eq!(invalid(&e), (4, 19, "source.timestamp_field"));
    let message = e.to_string();
    assert!(
        message.contains("event_time.field") && message.contains("line 9"),
        "{message}"
    );
    // key_field is unrelated and stays allowed.
    let text = "[source]\nkind = \"stdin\"\nkey_field = \"id\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n[event_time]\nfield = \"ts\"\n";
    let m = parse(text).unwrap();
    assert_eq!(m.event_time.map(|e| e.field), Some("ts".to_owned()));
}

#[test]
fn event_time_conflicts_with_generator_source() {
    let text = "[source]\nkind = \"generator\"\ncount = 3\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n\n[event_time]\nfield = \"ts\"\n";
    let e = parse_err(text);
    assert_eq!(invalid(&e), (9, 1, "event_time"));
    assert!(e.to_string().contains("generator"), "{e}");
}
