//! Text for `waio checkpoint list DIR` and `waio checkpoint inspect DIR [ID]`. Both open the
//! store read-only, so they work while a run holds the directory.

use std::fmt::Write as _;
use std::path::Path;

use crate::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, OperatorSnapshot, PendingCommit, StoredStatus,
};
use crate::record::Element;

/// How many queue elements `inspect` shows per operator.
const QUEUE_SHOWN: usize = 20;

/// One header line, then one line per checkpoint, ascending.
pub fn list_text(dir: &Path) -> Result<String, CheckpointError> {
    let store = CheckpointStore::open_read_only(dir)?;
    let summaries = store.list()?;
    if summaries.is_empty() {
        return Ok(format!("there are no checkpoints in {}\n", dir.display()));
    }
    let mut rows: Vec<Vec<String>> = vec![[
        "ID",
        "CREATED (UTC)",
        "STATUS",
        "FINISHED",
        "SOURCE LINE",
        "SOURCE OFFSET",
        "IN FLIGHT",
    ]
    .map(String::from)
    .to_vec()];
    for s in &summaries {
        let row = match &s.status {
            StoredStatus::Complete => vec![
                s.id.to_string(),
                format_utc(s.created_at_ms),
                "complete".into(),
                yes_no(s.finished).into(),
                s.source_lines.to_string(),
                s.source_offset.to_string(),
                s.in_flight
                    .iter()
                    .map(|(name, n)| format!("{name}={n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ],
            // Nothing of an unverified checkpoint is shown as if it were true.
            other => {
                let status = match other {
                    StoredStatus::Corrupt(why) => format!("corrupt: {why}"),
                    _ => "partial".into(),
                };
                let mut row = vec![s.id.to_string(), "-".into(), status];
                row.extend(std::iter::repeat_n("-".to_string(), 3));
                row.push(String::new());
                row
            }
        };
        rows.push(row);
    }
    Ok(table(&rows))
}

/// Checkpoint `id`, or the newest complete one, in detail.
pub fn inspect_text(dir: &Path, id: Option<u64>) -> Result<String, CheckpointError> {
    let store = CheckpointStore::open_read_only(dir)?;
    let (cp, warnings) = match id {
        Some(id) => (store.load(id)?, Vec::new()),
        None => store
            .latest()?
            .ok_or_else(|| CheckpointError::NoCheckpoint {
                dir: dir.to_path_buf(),
            })?,
    };
    let mut out = String::new();
    for warning in &warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    write_checkpoint(&mut out, dir, &cp);
    Ok(out)
}

// Writing to a String cannot fail, so the fmt::Results below are ignored.
fn write_checkpoint(out: &mut String, dir: &Path, cp: &Checkpoint) {
    let _ = writeln!(out, "checkpoint {} in {}", cp.id, dir.display());
    let _ = writeln!(out, "  created:   {}", format_utc(cp.created_at_ms));
    let _ = writeln!(out, "  finished:  {}", yes_no(cp.finished));
    let _ = writeln!(
        out,
        "  source:    {} lines, byte offset {}, {} records",
        cp.source.lines, cp.source.offset, cp.source.records
    );
    let _ = writeln!(
        out,
        "  watermark: max event time {}, emitted {}",
        opt(cp.source.watermark.max_timestamp),
        opt(cp.source.watermark.emitted)
    );
    for (index, op) in cp.operators.iter().enumerate() {
        write_operator(out, index, op);
    }
    let sink = &cp.sink;
    if sink.output.is_none() && sink.dead_letters.is_none() {
        let _ = writeln!(out, "sink pending commits: none");
    } else {
        let _ = writeln!(out, "sink pending commits:");
        let _ = writeln!(out, "  output:       {}", commit(sink.output.as_ref()));
        let _ = writeln!(
            out,
            "  dead letters: {}",
            commit(sink.dead_letters.as_ref())
        );
    }
}

fn write_operator(out: &mut String, index: usize, op: &OperatorSnapshot) {
    let watermarks = op
        .elements
        .iter()
        .filter(|e| matches!(e, Element::Watermark(_)))
        .count();
    let _ = writeln!(out, "operator {index}: {}", op.name);
    let _ = writeln!(out, "  plugin:            {}", op.plugin);
    // `get` rather than slicing: a hash that is not ASCII hex must not panic.
    let sha = match op.plugin_sha256.get(..12).unwrap_or(&op.plugin_sha256) {
        "" => "unknown",
        sha => sha,
    };
    let _ = writeln!(out, "  plugin sha256:     {sha}");
    let _ = writeln!(out, "  capacity:          {}", op.capacity);
    let mode = if op.ordered { "ordered" } else { "unordered" };
    let _ = writeln!(out, "  mode:              {mode}");
    let _ = writeln!(out, "  last watermark:    {}", opt(op.watermark));
    let _ = writeln!(out, "  records in flight: {}", op.records_in_flight());
    let _ = writeln!(out, "  watermarks queued: {watermarks}");
    let _ = writeln!(out, "  queue:             {}", queue(&op.elements));
}

/// `R@12 R@13 W(1000) …`, at most [`QUEUE_SHOWN`] items.
fn queue(elements: &[Element]) -> String {
    if elements.is_empty() {
        return "empty".into();
    }
    let mut items: Vec<String> = elements
        .iter()
        .take(QUEUE_SHOWN)
        .map(|e| match e {
            Element::Record(r) => format!("R@{}", r.line),
            Element::Watermark(t) => format!("W({t})"),
            Element::DeadLetter(_) => "D".into(),
        })
        .collect();
    if elements.len() > QUEUE_SHOWN {
        items.push(format!("… and {} more", elements.len() - QUEUE_SHOWN));
    }
    items.join(" ")
}

fn commit(c: Option<&PendingCommit>) -> String {
    match c {
        None => "none".into(),
        Some(c) => format!(
            "{} (committed length {}) <- {} ({} bytes)",
            c.target.display(),
            c.base_len,
            c.pending.display(),
            c.pending_len
        ),
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `ms` since the Unix epoch as RFC 3339 UTC to the second, e.g. `2023-11-14T22:13:20Z`.
/// Instants beyond what a timestamp can hold (years past ±9999) show as its first or last second.
pub(crate) fn format_utc(ms: i64) -> String {
    let ms = ms.clamp(
        jiff::Timestamp::MIN.as_millisecond(),
        jiff::Timestamp::MAX.as_millisecond(),
    );
    let at = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::codec::tests::sample;
    use crate::record::Record;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(999), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(format_utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
        assert_eq!(format_utc(1_709_164_800_000), "2024-02-29T00:00:00Z");
        // Every day from 1969 to 2030 against a day-by-day count.
        let mut day = jiff::civil::date(1969, 1, 1);
        for days in -365..22_000i64 {
            assert_eq!(format_utc(days * 86_400_000), format!("{day}T00:00:00Z"));
            day = day.tomorrow().expect("in range");
        }
        // Extremes do not overflow.
        let _ = format_utc(i64::MIN);
        let _ = format_utc(i64::MAX);
    }

    fn cp(id: u64) -> Checkpoint {
        let mut cp = sample();
        cp.id = id;
        cp.created_at_ms = 1_700_000_000_000 + id as i64 * 1_000;
        cp
    }

    #[test]
    fn list_shows_every_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list_text(tmp.path()).is_err());
        {
            let store = CheckpointStore::open(tmp.path()).unwrap();
            let text = list_text(tmp.path()).unwrap();
            assert_eq!(
                text,
                format!("there are no checkpoints in {}\n", tmp.path().display())
            );
            store.save(&cp(1), 5).unwrap();
            let mut second = cp(2);
            second.finished = true;
            store.save(&second, 5).unwrap();
            store.save(&cp(3), 5).unwrap();
            store.save(&cp(4), 5).unwrap();
            // Damage 3 and 4 through the raw layout.
            let db = store.raw_db();
            db.delete("checkpoint/00000000000000000003/commit").unwrap();
            db.put("checkpoint/00000000000000000004/operator/0000", b"x")
                .unwrap();
        }
        let text = list_text(tmp.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            vec![
                "1",
                "2023-11-14T22:13:21Z",
                "complete",
                "no",
                "120",
                "9876",
                "triage=2",
                "answer=0"
            ],
            "{text}"
        );
        assert!(lines[2].contains(" yes "), "{text}");
        assert!(
            lines[3].starts_with("3 ") && lines[3].contains("partial"),
            "{text}"
        );
        assert!(lines[4].contains("corrupt: checksum mismatch"), "{text}");
    }

    #[test]
    fn inspect_shows_one_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path()).unwrap();
        assert!(matches!(
            inspect_text(tmp.path(), None),
            Err(CheckpointError::NoCheckpoint { .. })
        ));
        let mut big = cp(7);
        big.operators[1].elements = (1..=25)
            .map(|line| {
                Element::Record(Record {
                    key: None,
                    timestamp: None,
                    payload: b"{}".to_vec(),
                    line,
                    enters_at: 0,
                    produced_by: None,
                    origin: None,
                    ticket: None,
                })
            })
            .collect();
        store.save(&cp(6), 5).unwrap();
        store.save(&big, 5).unwrap();
        store.save(&cp(8), 5).unwrap();
        store
            .raw_db()
            .delete("checkpoint/00000000000000000008/commit")
            .unwrap();

        // The writer is still open: inspect reads beside it.
        let text = inspect_text(tmp.path(), None).unwrap();
        assert!(
            text.starts_with(
                "warning: checkpoint 8 is partial (no commit marker): using checkpoint 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("checkpoint 7 in "), "{text}");
        assert!(text.contains("2023-11-14T22:13:27Z"), "{text}");
        assert!(
            text.contains("120 lines, byte offset 9876, 117 records"),
            "{text}"
        );
        assert!(text.contains("max event time -5, emitted none"), "{text}");
        assert!(text.contains("operator 0: triage"), "{text}");
        assert!(text.contains("plugins/triage.wasm"), "{text}");
        assert!(text.contains("plugin sha256:     abababababab\n"), "{text}");
        assert!(text.contains("capacity:          100"), "{text}");
        assert!(text.contains("ordered"), "{text}");
        assert!(text.contains("last watermark:    1000"), "{text}");
        assert!(text.contains("records in flight: 2"), "{text}");
        assert!(text.contains("watermarks queued: 1"), "{text}");
        assert!(
            text.contains("queue:             R@118 W(1001) R@119 D\n"),
            "{text}"
        );
        assert!(text.contains("records in flight: 25"), "{text}");
        assert!(text.contains("unordered"), "{text}");
        assert!(text.contains("R@19 R@20 … and 5 more\n"), "{text}");
        assert!(
            text.contains(
                "output:       out/result.jsonl (committed length 1234) <- \
                 out/.result.jsonl.pending-42 (56 bytes)"
            ),
            "{text}"
        );
        assert!(text.contains("dead letters: none"), "{text}");

        let text = inspect_text(tmp.path(), Some(6)).unwrap();
        assert!(text.starts_with("checkpoint 6 in "), "{text}");
        let err = inspect_text(tmp.path(), Some(8)).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint 8") && err.contains("partial"),
            "{err}"
        );
        let err = inspect_text(tmp.path(), Some(99)).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        let mut none = cp(9);
        none.sink = Default::default();
        store.save(&none, 5).unwrap();
        drop(store);
        let text = inspect_text(tmp.path(), Some(9)).unwrap();
        assert!(text.contains("sink pending commits: none"), "{text}");
    }
}
