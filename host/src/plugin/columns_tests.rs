use super::*;
use crate::plugin::bindings::{Event, Failure, FailureKind};
use crate::plugin::function::Output;
use crate::record::Record;

fn event(key: Option<&str>, timestamp: Option<i64>, payload: &str) -> Event {
    Event {
        key: key.map(str::to_string),
        timestamp,
        payload: payload.as_bytes().to_vec(),
    }
}

/// What outputs keep of events: key and payload.
fn as_outputs(events: &[Event]) -> Vec<Output> {
    events
        .iter()
        .map(|e| Output {
            key: e.key.clone(),
            payload: e.payload.clone(),
        })
        .collect()
}

fn record(key: Option<&str>, timestamp: Option<i64>, payload: &str) -> Record {
    Record {
        key: key.map(str::to_string),
        timestamp,
        payload: payload.as_bytes().to_vec(),
        ..Record::default()
    }
}

fn columns_of(events: &[Event]) -> EventColumns {
    let mut columns = empty();
    let mut ends = 0;
    for e in events {
        columns.payloads.extend_from_slice(&e.payload);
        ends += e.payload.len() as u32;
        columns.payload_ends.push(ends);
        columns.keys.push(e.key.clone());
        columns.timestamps.push(e.timestamp);
    }
    columns
}

fn members(count: u64) -> Vec<Member> {
    (0..count)
        .map(|i| Member {
            seq: 100 + i,
            attempt: 7,
            origin: None,
        })
        .collect()
}

#[test]
fn a_batch_becomes_columns() {
    let records = [
        record(Some("a"), Some(5), "{\"x\":1}"),
        record(None, None, ""),
        record(Some("ключ"), Some(-1), "tail"),
    ];
    let batch: Vec<Invocation<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, input)| Invocation {
            seq: 100 + i as u64,
            attempt: i as u32,
            input,
        })
        .collect();
    let (mut columns, mut members) = (empty(), Vec::new());
    columns.payloads.extend_from_slice(b"left over");
    fill(&mut columns, &mut members, &batch).unwrap();
    assert_eq!(columns.payloads, b"{\"x\":1}tail");
    assert_eq!(columns.payload_ends, [7, 7, 11]);
    assert_eq!(columns.timestamps, [Some(5), None, Some(-1)]);
    let keys: Vec<Option<&str>> = columns.keys.iter().map(Option::as_deref).collect();
    assert_eq!(keys, [Some("a"), None, Some("ключ")]);
    let seqs: Vec<(u64, u32)> = members.iter().map(|m| (m.seq, m.attempt)).collect();
    assert_eq!(seqs, [(100, 0), (101, 1), (102, 2)]);
}

#[test]
fn completed_records_get_their_outputs_and_failed_ones_their_failure() {
    let outputs = [
        event(Some("k"), None, "one"),
        event(None, None, "two"),
        event(None, Some(3), "three"),
    ];
    let done = BatchCompletions {
        // Record 2 fans out to two outputs, record 0 to one, record 3 is filtered out.
        completed: vec![2, 0, 3],
        output_ends: vec![2, 3, 3],
        outputs: columns_of(&outputs),
        failed: vec![(
            1,
            Failure {
                kind: FailureKind::Fatal,
                message: "bad".into(),
            },
        )],
    };
    let completions = completions(done, &members(4)).unwrap();
    let got: Vec<(u64, Result<Vec<Output>, String>)> = completions
        .into_iter()
        .map(|c| {
            assert_eq!(c.attempt, 7);
            (c.seq, c.result.map(|o| o.to_vec()).map_err(|f| f.message))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (102, Ok(as_outputs(&outputs[..2]))),
            (100, Ok(as_outputs(&outputs[2..]))),
            (103, Ok(vec![])),
            (101, Err("bad".to_string())),
        ]
    );
}

fn completing(completed: Vec<u32>, output_ends: Vec<u32>, outputs: EventColumns) -> String {
    let done = BatchCompletions {
        completed,
        output_ends,
        outputs,
        failed: vec![],
    };
    completions(done, &members(2)).unwrap_err()
}

#[test]
fn a_result_that_does_not_fit_its_batch_is_refused_with_the_reason() {
    let one = || columns_of(&[event(None, None, "x")]);
    assert_eq!(
        completing(vec![2], vec![1], one()),
        "it names record 2 of a batch of 2 records"
    );
    assert_eq!(
        completing(vec![0, 1], vec![1], one()),
        "2 records completed but 1 output-ends"
    );
    assert_eq!(
        completing(vec![0], vec![2], one()),
        "output-ends run past its 1 outputs at record 0"
    );
    // A hostile count is refused, not allocated for.
    assert_eq!(
        completing(vec![0], vec![u32::MAX], one()),
        "output-ends run past its 1 outputs at record 0"
    );
    let two = columns_of(&[event(None, None, "x"), event(None, None, "y")]);
    assert_eq!(
        completing(vec![0, 1], vec![2, 1], two),
        "output-ends decrease (2 then 1) at record 1"
    );
    let mut short = one();
    short.payload_ends = vec![4];
    assert_eq!(
        completing(vec![0], vec![1], short),
        "its outputs: payload-ends 0..4 do not fit its 1 payload bytes"
    );
    let mut ragged = one();
    ragged.keys.clear();
    assert_eq!(
        completing(vec![0], vec![1], ragged),
        "its outputs: 1 payload-ends but 0 keys and 1 timestamps"
    );
    let failed = BatchCompletions {
        completed: vec![],
        output_ends: vec![],
        outputs: empty(),
        failed: vec![(
            9,
            Failure {
                kind: FailureKind::Retriable,
                message: String::new(),
            },
        )],
    };
    assert_eq!(
        completions(failed, &members(2)).unwrap_err(),
        "it names record 9 of a batch of 2 records"
    );
}
