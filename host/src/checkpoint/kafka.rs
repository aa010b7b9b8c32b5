//! What a Kafka source commits per partition at a checkpoint, what a resumed reader skips, and the
//! hand-off of those commits from the coordinator to the Kafka sink.
//!
//! A checkpoint commits, per partition, the offset of the first record that has not left the
//! operators (the contiguous completed prefix), so a restarted or new owner re-reads from there.
//! Records after it may have completed out of order and had their outputs committed already; the
//! offset's metadata says which: `next` (everything before it was read) and the offsets still
//! pending (in flight at the checkpoint). A reader skips the offsets in `[committed, next)` that
//! are not pending, so each record's output is committed exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

pub use crate::record::Resume;
use crate::record::{KafkaPosition, Origin, Partition};

/// The version tag of the metadata format.
const TAG: &str = "waio1";

impl Resume {
    /// Whether the record at `offset` was done before the commit (its output is committed).
    pub fn done(&self, offset: i64) -> bool {
        offset < self.next && self.pending.binary_search(&offset).is_err()
    }

    /// `waio1;next=N;pending=a,b-c`: ranges keep the text short (Kafka's default limit for
    /// offset metadata is 4096 bytes).
    pub fn encode(&self) -> String {
        let mut text = format!("{TAG};next={};pending=", self.next);
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &offset in &self.pending {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == offset => *end = offset,
                _ => ranges.push((offset, offset)),
            }
        }
        for (i, (start, end)) in ranges.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            if start == end {
                text.push_str(&start.to_string());
            } else {
                text.push_str(&format!("{start}-{end}"));
            }
        }
        text
    }

    /// `None` for metadata waio did not write (another client's commit, or none).
    pub fn decode(text: &str) -> Option<Resume> {
        let mut parts = text.split(';');
        if parts.next()? != TAG {
            return None;
        }
        let next = parts.next()?.strip_prefix("next=")?.parse().ok()?;
        let list = parts.next()?.strip_prefix("pending=")?;
        let mut pending = Vec::new();
        for item in list.split(',').filter(|s| !s.is_empty()) {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
                    if b < a || b - a > 1_000_000 {
                        return None;
                    }
                    pending.extend(a..=b);
                }
                None => pending.push(item.parse().ok()?),
            }
        }
        pending.sort_unstable();
        pending.dedup();
        Some(Resume { next, pending })
    }
}

/// One partition's commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionCommit {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

/// The commits of a checkpoint: `position` is where the source had read to at the cut, `in_flight`
/// the origins of the records the operators still held. Records of a partition's older
/// generation (before a rebalance took it away) are not this reader's to commit.
pub fn commits<'a>(
    position: &KafkaPosition,
    in_flight: impl IntoIterator<Item = &'a Origin>,
) -> Vec<PartitionCommit> {
    let mut pending: BTreeMap<(&str, i32), Vec<i64>> = BTreeMap::new();
    for origin in in_flight {
        let current = position
            .get(&(Arc::clone(&origin.topic), origin.partition))
            .is_some_and(|read| read.generation == origin.lease.generation);
        if current {
            pending
                .entry((&origin.topic, origin.partition))
                .or_default()
                .push(origin.offset);
        }
    }
    position
        .iter()
        .map(|((topic, partition), read)| {
            let mut offsets = pending
                .remove(&(topic.as_ref(), *partition))
                .unwrap_or_default();
            let mut next = read.next;
            // What an earlier commit left pending beyond this reader's position is still
            // pending, and what it had done there is still done.
            if let Some(earlier) = &read.resume {
                if earlier.next > next {
                    offsets.extend(earlier.pending.iter().filter(|&&o| o >= read.next));
                    next = earlier.next;
                }
            }
            offsets.sort_unstable();
            offsets.dedup();
            let offset = offsets.first().copied().unwrap_or(next).min(next);
            PartitionCommit {
                topic: Arc::clone(topic),
                partition: *partition,
                offset,
                metadata: Resume {
                    next,
                    pending: offsets,
                }
                .encode(),
            }
        })
        .collect()
}

/// A checkpoint's commit, from the coordinator to the Kafka sink.
#[derive(Debug)]
pub struct KafkaCommit {
    pub commits: Vec<PartitionCommit>,
    /// Partitions being revoked: the sink lets them go right after this commit.
    pub revoking: Vec<Partition>,
}

/// The coordinator's end of the commit hand-off.
pub struct CommitChannel {
    pub commits: Sender<KafkaCommit>,
    pub done: Receiver<Result<(), String>>,
}

/// The sink's end.
pub struct CommitInbox {
    pub commits: Receiver<KafkaCommit>,
    pub done: Sender<Result<(), String>>,
}

pub fn commit_channel() -> (CommitChannel, CommitInbox) {
    let (commits_tx, commits) = crossbeam_channel::bounded(1);
    let (done, done_rx) = crossbeam_channel::bounded(1);
    (
        CommitChannel {
            commits: commits_tx,
            done: done_rx,
        },
        CommitInbox { commits, done },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PartitionRead;

    fn origin(partition: i32, offset: i64, generation: u64) -> Origin {
        Origin {
            topic: Arc::from("in"),
            partition,
            offset,
            lease: Arc::new(crate::record::Lease::new(generation)),
            headers: Vec::new(),
        }
    }

    fn position(reads: &[(i32, i64, u64, Option<Resume>)]) -> KafkaPosition {
        reads
            .iter()
            .map(|(p, next, generation, resume)| {
                (
                    (Arc::from("in"), *p),
                    PartitionRead {
                        next: *next,
                        generation: *generation,
                        resume: resume.clone().map(Arc::new),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn metadata_round_trips_with_ranges() {
        let resume = Resume {
            next: 40,
            pending: vec![3, 4, 5, 9, 20, 21],
        };
        let text = resume.encode();
        assert_eq!(text, "waio1;next=40;pending=3-5,9,20-21");
        assert_eq!(Resume::decode(&text), Some(resume.clone()));
        assert!(!resume.done(4) && resume.done(6) && !resume.done(40) && resume.done(39));
        let empty = Resume {
            next: 7,
            pending: vec![],
        };
        assert_eq!(Resume::decode(&empty.encode()), Some(empty));
        for foreign in [
            "",
            "hello",
            "waio1;next=x;pending=",
            "waio1;next=5;pending=9-3",
        ] {
            assert_eq!(Resume::decode(foreign), None, "{foreign}");
        }
    }

    /// Out-of-order completion commits the contiguous completed prefix; the metadata keeps what
    /// completed after it, so nothing is redone and nothing lost.
    #[test]
    fn the_commit_is_the_first_record_still_in_flight() {
        let read = position(&[(0, 10, 1, None), (1, 5, 1, None)]);
        let held = [origin(0, 6, 1), origin(0, 8, 1), origin(0, 3, 0)];
        let commits = super::commits(&read, &held);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].offset, 6);
        assert_eq!(commits[0].metadata, "waio1;next=10;pending=6,8");
        // Nothing in flight: everything read is done.
        assert_eq!(commits[1].offset, 5);
        assert_eq!(commits[1].metadata, "waio1;next=5;pending=");
        // The older generation's record (offset 3) is not this reader's.
        let resume = Resume::decode(&commits[0].metadata).unwrap();
        assert!(resume.done(7) && resume.done(9) && !resume.done(6) && !resume.done(8));
    }

    /// A reader that resumed from such a commit and has not read past the old `next` yet keeps
    /// what the old commit knew: a second crash then redoes nothing either.
    #[test]
    fn a_resumed_reader_keeps_the_earlier_commits_knowledge() {
        let earlier = Resume {
            next: 10,
            pending: vec![6, 8],
        };
        // It re-read 6 (in flight again) and skipped 7; 8 is not read yet.
        let read = position(&[(0, 8, 2, Some(earlier.clone()))]);
        let commits = super::commits(&read, &[origin(0, 6, 2)]);
        assert_eq!(commits[0].offset, 6);
        assert_eq!(commits[0].metadata, "waio1;next=10;pending=6,8");
        // Once it has read past the old `next`, its own position is what counts.
        let read = position(&[(0, 12, 2, Some(earlier))]);
        let commits = super::commits(&read, &[]);
        assert_eq!(commits[0].offset, 12);
        assert_eq!(commits[0].metadata, "waio1;next=12;pending=");
    }
}
