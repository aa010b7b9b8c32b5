//! The source of `waio serve`: batches of records its callers sent, in the order they came.
//! It ends when asked to stop (what is still queued then is dropped, and each of those records
//! is answered as lost) or when nobody can feed it any more.

use crossbeam_channel::{select, Receiver};

use crate::checkpoint::SourcePosition;
use crate::connectors::source::SourceContext;
use crate::record::{Element, Message, Record};

/// Where `waio serve` puts the batches its callers send.
pub type FeedReceiver = Receiver<Vec<Record>>;

/// Hands each batch on to the first operator until a stop (or the end of the feed).
pub fn run_feed(ctx: SourceContext, feed: FeedReceiver) {
    let SourceContext {
        tx,
        control,
        telemetry,
        ..
    } = ctx;
    loop {
        let records = select! {
            recv(feed) -> batch => match batch {
                Ok(records) => records,
                Err(_) => break,
            },
            // A stop, or the pipeline gone.
            recv(control) -> _ => {
                telemetry.stopped.set();
                break;
            }
        };
        telemetry.records.add(records.len() as u64);
        let batch = records.into_iter().map(Element::Record).collect();
        // No checkpoints here: the callers (Flink) own replay, so the position stays empty.
        let position = SourcePosition::default();
        if tx.send(Message::Read(batch, position)).is_err() {
            return;
        }
    }
    let _ = tx.send(Message::End);
}
