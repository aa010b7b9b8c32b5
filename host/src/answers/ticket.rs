//! A caller's record on its way through the operators, and its answer line.
//!
//! `waio serve` answers each record of a batch as soon as it is done, whatever the operators did
//! with it: fanned it out, filtered it, failed it, or (at a forced stop) lost it. Rather than
//! teaching every stage to report that, the record carries a [`Ticket`] that every record derived
//! from it shares. The last operator's outputs are added to it at the sink, a failure is noted by
//! the operator that gave up, and the answer goes out when the last copy is dropped: then nothing
//! can add to it any more.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use super::callers::{Answer, CallerStats};

/// Why a record failed, as the answer line names it (`error.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider failed in a way worth trying again (after waio's own retries).
    Retriable,
    /// The plugin says trying again is pointless.
    Fatal,
    /// The operator's per-record timeout passed.
    Timeout,
    /// The record or one of its outputs was not JSON.
    Invalid,
}

impl FailureKind {
    fn answer(self) -> Answer {
        match self {
            FailureKind::Retriable => Answer::Retriable,
            FailureKind::Fatal => Answer::Fatal,
            FailureKind::Timeout => Answer::Timeout,
            FailureKind::Invalid => Answer::Invalid,
        }
    }
}

/// What the ticket has gathered so far.
#[derive(Default)]
struct Gathered {
    /// The last operator's outputs, compact JSON each.
    outputs: Vec<Vec<u8>>,
    /// An operator completed the record or one derived from it (with or without outputs).
    completed: bool,
    /// The first failure wins: the caller retries the whole record.
    failure: Option<(FailureKind, String)>,
}

/// One record of a caller's batch: its index in the batch and where its answer goes.
pub struct Ticket {
    index: usize,
    gathered: Mutex<Gathered>,
    reply: UnboundedSender<Bytes>,
    caller: Arc<CallerStats>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("index", &self.index)
            .finish()
    }
}

/// Two records share a ticket when they derive from the same caller's record.
impl PartialEq for Ticket {
    fn eq(&self, other: &Ticket) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Ticket {}

impl Ticket {
    pub fn new(index: usize, reply: UnboundedSender<Bytes>, caller: Arc<CallerStats>) -> Arc<Self> {
        caller.in_flight.add(1);
        Arc::new(Ticket {
            index,
            gathered: Mutex::default(),
            reply,
            caller,
        })
    }

    /// An operator completed the record (its outputs, if any, follow to the sink).
    pub fn completed(&self) {
        self.with(|g| g.completed = true);
    }

    /// One of the last operator's outputs reached the sink.
    pub fn output(&self, payload: &[u8]) {
        match compact_json(payload) {
            Ok(json) => self.with(|g| g.outputs.push(json)),
            Err(error) => self.fail(
                FailureKind::Invalid,
                format!("an output is not JSON ({error})"),
            ),
        }
    }

    /// The record (or one derived from it) failed for good.
    pub fn fail(&self, kind: FailureKind, message: String) {
        self.with(|g| {
            g.failure.get_or_insert((kind, message));
        });
    }

    fn with(&self, f: impl FnOnce(&mut Gathered)) {
        // A poisoned lock only means another thread panicked mid-update: the data is still
        // the best answer there is.
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut gathered);
    }

    /// The answer line, with its newline, and how it is counted.
    fn answer(&self) -> (Vec<u8>, Answer) {
        let gathered =
            std::mem::take(&mut *self.gathered.lock().unwrap_or_else(|p| p.into_inner()));
        let (kind, message) = match gathered.failure {
            Some(failure) => failure,
            None if gathered.completed => {
                return (outputs_line(self.index, &gathered.outputs), Answer::Ok)
            }
            None => {
                return (
                    error_line(
                        self.index,
                        "lost",
                        "waio stopped before the record was done",
                    ),
                    Answer::Lost,
                )
            }
        };
        let answer = kind.answer();
        (error_line(self.index, answer.name(), &message), answer)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let (line, answer) = self.answer();
        self.caller.answered(answer);
        self.caller.in_flight.add(-1);
        // A caller that hung up gets nothing; the record was done all the same.
        let _ = self.reply.send(Bytes::from(line));
    }
}

/// `{"i":N,"outputs":[...]}` and a newline.
fn outputs_line(index: usize, outputs: &[Vec<u8>]) -> Vec<u8> {
    let size: usize = outputs.iter().map(|o| o.len() + 1).sum();
    let mut line = Vec::with_capacity(32 + size);
    line.extend_from_slice(format!("{{\"i\":{index},\"outputs\":[").as_bytes());
    for (n, output) in outputs.iter().enumerate() {
        if n > 0 {
            line.push(b',');
        }
        line.extend_from_slice(output);
    }
    line.extend_from_slice(b"]}\n");
    line
}

/// `{"i":N,"error":{"kind":...,"message":...}}` and a newline.
pub fn error_line(index: usize, kind: &str, message: &str) -> Vec<u8> {
    let mut line = serde_json::json!({"i": index, "error": {"kind": kind, "message": message}})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// The payload as one line of JSON. A raw line break in JSON can only be whitespace (strings
/// escape theirs), so replacing it keeps the value and the line protocol.
fn compact_json(payload: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)?;
    Ok(payload
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(
        index: usize,
    ) -> (
        Arc<Ticket>,
        tokio::sync::mpsc::UnboundedReceiver<Bytes>,
        Arc<CallerStats>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let caller = Arc::new(CallerStats::default());
        (Ticket::new(index, tx, Arc::clone(&caller)), rx, caller)
    }

    fn line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> serde_json::Value {
        let bytes = rx.try_recv().expect("an answer line");
        assert!(bytes.ends_with(b"\n") && !bytes[..bytes.len() - 1].contains(&b'\n'));
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn the_answer_goes_out_when_the_last_copy_is_dropped() {
        let (t, mut rx, caller) = ticket(3);
        let copy = Arc::clone(&t);
        t.completed();
        copy.output(b"{\"a\":\n1}");
        drop(t);
        assert!(
            rx.try_recv().is_err(),
            "no answer while a copy is on its way"
        );
        copy.output(b"[2]");
        drop(copy);
        assert_eq!(
            line(&mut rx),
            serde_json::json!({"i": 3, "outputs": [{"a": 1}, [2]]})
        );
        assert_eq!(caller.in_flight.get(), 0);
        assert_eq!(caller.count(Answer::Ok), 1);
    }

    #[test]
    fn a_filtered_record_is_answered_with_no_outputs() {
        let (t, mut rx, _) = ticket(0);
        t.completed();
        drop(t);
        assert_eq!(line(&mut rx), serde_json::json!({"i": 0, "outputs": []}));
    }

    #[test]
    fn the_first_failure_wins_over_outputs() {
        let (t, mut rx, caller) = ticket(1);
        t.completed();
        t.output(b"{}");
        t.fail(FailureKind::Retriable, "HTTP 503".into());
        t.fail(FailureKind::Fatal, "later".into());
        drop(t);
        let answer = line(&mut rx);
        assert_eq!(answer["error"]["kind"], "retriable");
        assert_eq!(answer["error"]["message"], "HTTP 503");
        assert_eq!(caller.count(Answer::Retriable), 1);
    }

    #[test]
    fn an_output_that_is_not_json_fails_the_record() {
        let (t, mut rx, _) = ticket(2);
        t.completed();
        t.output(b"not json");
        drop(t);
        assert_eq!(line(&mut rx)["error"]["kind"], "invalid");
    }

    #[test]
    fn a_record_dropped_unfinished_is_lost() {
        let (t, mut rx, caller) = ticket(4);
        drop(t);
        assert_eq!(line(&mut rx)["error"]["kind"], "lost");
        assert_eq!(caller.count(Answer::Lost), 1);
    }
}
