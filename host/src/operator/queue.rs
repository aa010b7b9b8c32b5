//! The operator's element queues, after Flink's `OrderedStreamElementQueue` and
//! `UnorderedStreamElementQueue`.
//!
//! A queue holds every element that entered the operator and has not left it yet: records in
//! flight, records completed but not yet emitted, and watermarks. Its length is what capacity
//! bounds. Elements are identified by a sequence number the operator gives them on entry,
//! consecutive over records and watermarks.

use std::collections::VecDeque;

use crate::record::Outputs;

/// What leaves the queue, in emission order.
#[derive(Debug, PartialEq, Eq)]
pub enum Emitted {
    /// The record that entered with `seq` produced `outputs` (maybe none).
    Record {
        seq: u64,
        outputs: Outputs,
    },
    Watermark(i64),
}

pub enum ElementQueue {
    Ordered(OrderedQueue),
    Unordered(UnorderedQueue),
}

impl ElementQueue {
    pub fn new(ordered: bool) -> Self {
        if ordered {
            ElementQueue::Ordered(OrderedQueue::default())
        } else {
            ElementQueue::Unordered(UnorderedQueue::default())
        }
    }

    /// Elements in the queue (in flight plus completed-not-emitted plus watermarks).
    pub fn len(&self) -> usize {
        match self {
            ElementQueue::Ordered(q) => q.items.len(),
            ElementQueue::Unordered(q) => q.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A record enters; `seq` must be one more than the previous element's.
    pub fn push_record(&mut self, seq: u64) {
        match self {
            ElementQueue::Ordered(q) => q.push(seq, Item::Pending),
            ElementQueue::Unordered(q) => q.push_record(),
        }
    }

    pub fn push_watermark(&mut self, seq: u64, timestamp: i64) {
        match self {
            ElementQueue::Ordered(q) => q.push(seq, Item::Watermark(timestamp)),
            ElementQueue::Unordered(q) => q.push_watermark(timestamp),
        }
    }

    /// The record `seq`, which entered in segment `segment` (see [`UnorderedQueue::segment_of_next`];
    /// ignored in ordered mode), is complete. The caller guarantees each record completes once.
    pub fn complete(&mut self, seq: u64, segment: u64, outputs: Outputs) {
        match self {
            ElementQueue::Ordered(q) => q.complete(seq, outputs),
            ElementQueue::Unordered(q) => q.complete(seq, segment, outputs),
        }
    }

    /// Moves everything that may leave now to `out`, in order.
    pub fn drain_ready(&mut self, out: &mut Vec<Emitted>) {
        match self {
            ElementQueue::Ordered(q) => q.drain_ready(out),
            ElementQueue::Unordered(q) => q.drain_ready(out),
        }
    }

    /// The segment the next pushed record will belong to (always 0 in ordered mode).
    pub fn segment_of_next(&self) -> u64 {
        match self {
            ElementQueue::Ordered(_) => 0,
            ElementQueue::Unordered(q) => q.back_segment_id(),
        }
    }
}

enum Item {
    Pending,
    Done(Outputs),
    Watermark(i64),
}

/// Only the head may leave: results are emitted in input order.
#[derive(Default)]
pub struct OrderedQueue {
    items: VecDeque<Item>,
    /// Sequence number of `items[0]`.
    head_seq: u64,
}

impl OrderedQueue {
    fn push(&mut self, seq: u64, item: Item) {
        if self.items.is_empty() {
            self.head_seq = seq;
        }
        debug_assert_eq!(seq, self.head_seq + self.items.len() as u64);
        self.items.push_back(item);
    }

    fn complete(&mut self, seq: u64, outputs: Outputs) {
        let Some(index) = seq.checked_sub(self.head_seq) else {
            return;
        };
        if let Some(item @ Item::Pending) = self.items.get_mut(index as usize) {
            *item = Item::Done(outputs);
        }
    }

    fn drain_ready(&mut self, out: &mut Vec<Emitted>) {
        loop {
            match self.items.front() {
                Some(Item::Done(_)) | Some(Item::Watermark(_)) => {}
                _ => return,
            }
            let seq = self.head_seq;
            self.head_seq += 1;
            match self.items.pop_front() {
                Some(Item::Done(outputs)) => out.push(Emitted::Record { seq, outputs }),
                Some(Item::Watermark(ts)) => out.push(Emitted::Watermark(ts)),
                _ => return,
            }
        }
    }
}

/// Records leave in completion order, but never across a watermark: the queue is a list of
/// segments, each closed by the watermark that followed its records.
#[derive(Default)]
pub struct UnorderedQueue {
    segments: VecDeque<Segment>,
    /// Id of `segments[0]`; ids grow by one per segment.
    front_id: u64,
    len: usize,
}

#[derive(Default)]
struct Segment {
    /// Records of this segment not completed yet.
    open: usize,
    /// Completed records waiting for earlier segments to drain.
    ready: Vec<(u64, Outputs)>,
    /// The watermark that closed this segment.
    closed_by: Option<i64>,
}

impl UnorderedQueue {
    fn back_segment_id(&self) -> u64 {
        match self.segments.back() {
            Some(s) if s.closed_by.is_none() => self.front_id + self.segments.len() as u64 - 1,
            _ => self.front_id + self.segments.len() as u64,
        }
    }

    fn open_segment(&mut self) -> &mut Segment {
        let needs_new = self.segments.back().is_none_or(|s| s.closed_by.is_some());
        if needs_new {
            if self.segments.is_empty() {
                // Keep ids consistent with `back_segment_id` when the queue ran empty.
                self.front_id = self.back_segment_id();
            }
            self.segments.push_back(Segment::default());
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn push_record(&mut self) {
        self.open_segment().open += 1;
        self.len += 1;
    }

    fn push_watermark(&mut self, timestamp: i64) {
        self.open_segment().closed_by = Some(timestamp);
        self.len += 1;
    }

    fn complete(&mut self, seq: u64, segment: u64, outputs: Outputs) {
        let Some(index) = segment.checked_sub(self.front_id) else {
            return;
        };
        if let Some(s) = self.segments.get_mut(index as usize) {
            s.open = s.open.saturating_sub(1);
            s.ready.push((seq, outputs));
        }
    }

    fn drain_ready(&mut self, out: &mut Vec<Emitted>) {
        while let Some(front) = self.segments.front_mut() {
            for (seq, outputs) in front.ready.drain(..) {
                out.push(Emitted::Record { seq, outputs });
                self.len -= 1;
            }
            match front.closed_by {
                Some(ts) if front.open == 0 => {
                    out.push(Emitted::Watermark(ts));
                    self.len -= 1;
                    self.segments.pop_front();
                    self.front_id += 1;
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use smallvec::smallvec;

    fn rec(n: u64) -> Record {
        Record {
            key: None,
            timestamp: None,
            payload: n.to_string().into_bytes(),
            line: n,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        }
    }

    fn drain(q: &mut ElementQueue) -> Vec<String> {
        let mut out = Vec::new();
        q.drain_ready(&mut out);
        out.into_iter()
            .map(|e| match e {
                Emitted::Record { seq, .. } => format!("R{seq}"),
                Emitted::Watermark(ts) => format!("W{ts}"),
            })
            .collect()
    }

    #[test]
    fn ordered_emits_in_input_order_only_from_the_head() {
        let mut q = ElementQueue::new(true);
        for seq in 1..=4 {
            q.push_record(seq);
        }
        q.complete(2, 0, smallvec![rec(2)]);
        q.complete(4, 0, smallvec![rec(4)]);
        assert!(
            drain(&mut q).is_empty(),
            "head R1 pending: nothing may leave"
        );
        assert_eq!(q.len(), 4);
        q.complete(1, 0, smallvec![rec(1)]);
        assert_eq!(drain(&mut q), ["R1", "R2"]);
        q.complete(3, 0, smallvec![]);
        assert_eq!(drain(&mut q), ["R3", "R4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn ordered_watermark_waits_for_records_before_it() {
        let mut q = ElementQueue::new(true);
        q.push_record(1);
        q.push_watermark(2, 100);
        q.push_record(3);
        q.complete(3, 0, smallvec![rec(3)]);
        assert!(drain(&mut q).is_empty());
        q.complete(1, 0, smallvec![rec(1)]);
        assert_eq!(drain(&mut q), ["R1", "W100", "R3"]);
    }

    #[test]
    fn unordered_emits_in_completion_order_within_a_segment() {
        let mut q = ElementQueue::new(false);
        let s = q.segment_of_next();
        q.push_record(1);
        q.push_record(2);
        q.complete(2, s, smallvec![rec(2)]);
        assert_eq!(drain(&mut q), ["R2"]);
        q.complete(1, s, smallvec![rec(1)]);
        assert_eq!(drain(&mut q), ["R1"]);
        assert!(q.is_empty());
    }

    #[test]
    fn unordered_never_crosses_a_watermark() {
        // R1 R2 W R3: R3 done first waits for R1, R2 and W.
        let mut q = ElementQueue::new(false);
        let s0 = q.segment_of_next();
        q.push_record(1);
        q.push_record(2);
        q.push_watermark(3, 10);
        let s1 = q.segment_of_next();
        assert_ne!(s0, s1);
        q.push_record(4);
        q.complete(4, s1, smallvec![rec(4)]);
        assert!(drain(&mut q).is_empty());
        q.complete(2, s0, smallvec![rec(2)]);
        assert_eq!(drain(&mut q), ["R2"]);
        q.complete(1, s0, smallvec![rec(1)]);
        assert_eq!(drain(&mut q), ["R1", "W10", "R4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn unordered_several_segments_drain_in_one_go() {
        let mut q = ElementQueue::new(false);
        let s0 = q.segment_of_next();
        q.push_record(1);
        q.push_watermark(2, 1);
        let s1 = q.segment_of_next();
        q.push_record(3);
        q.push_watermark(4, 2);
        let s2 = q.segment_of_next();
        q.push_record(5);
        q.complete(5, s2, smallvec![rec(5)]);
        q.complete(3, s1, smallvec![rec(3)]);
        assert!(drain(&mut q).is_empty());
        q.complete(1, s0, smallvec![rec(1)]);
        assert_eq!(drain(&mut q), ["R1", "W1", "R3", "W2", "R5"]);
    }

    #[test]
    fn watermarks_alone_leave_at_once_and_in_order() {
        for ordered in [true, false] {
            let mut q = ElementQueue::new(ordered);
            q.push_watermark(1, 5);
            q.push_watermark(2, 6);
            assert_eq!(q.len(), 2, "a watermark takes a slot");
            assert_eq!(drain(&mut q), ["W5", "W6"]);
            // The queue keeps working after running empty.
            let s = q.segment_of_next();
            q.push_record(3);
            q.complete(3, s, smallvec![]);
            assert_eq!(drain(&mut q), ["R3"]);
        }
    }
}
