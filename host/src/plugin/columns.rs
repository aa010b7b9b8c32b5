//! `invoke-columns` (contract 0.5.0): a batch goes to the guest as a few columns (one buffer for
//! every payload) and the records it completed at once come back the same way, so that a batch
//! costs a few copies across the boundary instead of a value, an allocation and a resource per
//! record. Records the plugin completes later get their `result-future` from `completion.hold`
//! (see [`super::host`]), which looks them up in the [`Member`]s of the running call.

use std::sync::Arc;

use super::bindings::{BatchCompletions, EventColumns};
use super::function::{Output, OutputList};
use super::host::Completion;
use super::Invocation;
use crate::record::Origin;

/// A record of the running `invoke-columns` call, by its index in the call's inputs.
#[derive(Debug)]
pub struct Member {
    pub seq: u64,
    pub attempt: u32,
    pub origin: Option<Arc<Origin>>,
}

/// An empty set of columns, to be filled by [`fill`] (and reused: its buffers keep their size).
pub fn empty() -> EventColumns {
    EventColumns {
        payloads: Vec::new(),
        payload_ends: Vec::new(),
        keys: Vec::new(),
        timestamps: Vec::new(),
    }
}

/// Puts `batch` into `columns` (cleared first) and its records into `members`: payloads and
/// keys are copied (the records stay where they are).
pub fn fill(
    columns: &mut EventColumns,
    members: &mut Vec<Member>,
    batch: &[Invocation<'_>],
) -> Result<(), String> {
    columns.payloads.clear();
    columns.payload_ends.clear();
    columns.keys.clear();
    columns.timestamps.clear();
    members.clear();
    for item in batch {
        let input = item.input;
        columns.payloads.extend_from_slice(&input.payload);
        let end = u32::try_from(columns.payloads.len()).map_err(|_| {
            format!(
                "the batch's payloads add up to more than 4 GiB ({} records)",
                batch.len()
            )
        })?;
        columns.payload_ends.push(end);
        columns.keys.push(input.key.clone());
        columns.timestamps.push(input.timestamp);
        members.push(Member {
            seq: item.seq,
            attempt: item.attempt,
            origin: input.origin.clone(),
        });
    }
    Ok(())
}

/// The completions a call returned, one per record named, after checking that every index and
/// offset fits; nothing is taken from a result that does not (the caller treats it as a trap).
pub fn completions(done: BatchCompletions, members: &[Member]) -> Result<Vec<Completion>, String> {
    let mut outputs = OutputColumns::new(done.outputs).map_err(|e| format!("its outputs: {e}"))?;
    if done.completed.len() != done.output_ends.len() {
        return Err(format!(
            "{} records completed but {} output-ends",
            done.completed.len(),
            done.output_ends.len()
        ));
    }
    let member = |index: u32| {
        members.get(index as usize).ok_or_else(|| {
            format!(
                "it names record {index} of a batch of {} records",
                members.len()
            )
        })
    };
    let mut completions = Vec::with_capacity(done.completed.len() + done.failed.len());
    let mut start = 0u32;
    for (&index, &end) in done.completed.iter().zip(&done.output_ends) {
        let record = member(index)?;
        let count = end.checked_sub(start).ok_or_else(|| {
            format!("output-ends decrease ({start} then {end}) at record {index}")
        })?;
        // `count` is the guest's word: room for no more outputs than the result holds.
        let mut events = OutputList::with_capacity((count as usize).min(outputs.count));
        for _ in 0..count {
            let output = outputs
                .next()
                .map_err(|e| format!("its outputs: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "output-ends run past its {} outputs at record {index}",
                        outputs.count
                    )
                })?;
            events.push(output);
        }
        start = end;
        completions.push(Completion {
            seq: record.seq,
            attempt: record.attempt,
            result: Ok(events),
        });
    }
    // Outputs no record names are not used, but must fit too.
    while outputs
        .next()
        .map_err(|e| format!("its outputs: {e}"))?
        .is_some()
    {}
    for (index, failure) in done.failed {
        let record = member(index)?;
        completions.push(Completion {
            seq: record.seq,
            attempt: record.attempt,
            result: Err(failure),
        });
    }
    Ok(completions)
}

/// The events of a set of columns as outputs, one at a time (their timestamps are not kept: an
/// output takes its input's).
struct OutputColumns {
    payloads: Vec<u8>,
    ends: std::vec::IntoIter<u32>,
    keys: std::vec::IntoIter<Option<String>>,
    start: usize,
    count: usize,
}

impl OutputColumns {
    /// After checking that the lists agree.
    fn new(columns: EventColumns) -> Result<Self, String> {
        let count = columns.payload_ends.len();
        if columns.keys.len() != count || columns.timestamps.len() != count {
            return Err(format!(
                "{count} payload-ends but {} keys and {} timestamps",
                columns.keys.len(),
                columns.timestamps.len()
            ));
        }
        Ok(OutputColumns {
            payloads: columns.payloads,
            ends: columns.payload_ends.into_iter(),
            keys: columns.keys.into_iter(),
            start: 0,
            count,
        })
    }

    /// The next output, `None` after the last; an error when its payload does not fit.
    fn next(&mut self) -> Result<Option<Output>, String> {
        let (Some(end), Some(key)) = (self.ends.next(), self.keys.next()) else {
            return Ok(None);
        };
        let (start, end) = (self.start, end as usize);
        let payload = self.payloads.get(start..end).ok_or_else(|| {
            format!(
                "payload-ends {start}..{end} do not fit its {} payload bytes",
                self.payloads.len()
            )
        })?;
        self.start = end;
        Ok(Some(Output {
            key,
            payload: crate::record::payload_of(payload),
        }))
    }
}

#[cfg(test)]
#[path = "columns_tests.rs"]
mod tests;
