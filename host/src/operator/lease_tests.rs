use std::sync::Arc;

use super::*;
use crate::record::{Lease, Origin};

fn kafka_record(payload: &str, offset: i64, lease: &Arc<Lease>) -> Element {
    Element::Record(Record {
        payload: payload.as_bytes().to_vec(),
        line: offset as u64 + 1,
        origin: Some(Arc::new(Origin {
            topic: Arc::from("in"),
            partition: 0,
            offset,
            lease: Arc::clone(lease),
            headers: Vec::new(),
        })),
        ..Record::default()
    })
}

/// A partition revoked at checkpoint 5: its records are invoked until barrier 5 has passed the
/// operator (they belong to the checkpoint, which commits them or leaves them pending), and
/// dropped after it, uninvoked (the new owner reads them again); the outputs keep the origin.
#[test]
fn records_of_a_revoked_partition_are_not_invoked_after_its_barrier() {
    let mut h = Harness::with(config());
    let lease = Arc::new(Lease::new(1));
    lease.revoke_at(5);
    h.admit(kafka_record("now-a", 0, &lease)).unwrap();
    h.core.passed_barrier(4);
    h.admit(kafka_record("now-b", 1, &lease)).unwrap();
    h.core.passed_barrier(5);
    h.admit(kafka_record("now-c", 2, &lease)).unwrap();
    assert_eq!(h.function().calls_of(Kind::Invoke), ["now-a", "now-b"]);
    assert_eq!(h.telemetry.abandoned.get(), 1);
    let origins: Vec<i64> = h
        .out
        .iter()
        .filter_map(|e| match e {
            Element::Record(r) => r.origin.as_ref().map(|o| o.offset),
            _ => None,
        })
        .collect();
    assert_eq!(origins, [0, 1]);
    // Another partition's records go on.
    let kept = Arc::new(Lease::new(2));
    h.admit(kafka_record("now-d", 3, &kept)).unwrap();
    assert_eq!(h.function().calls_of(Kind::Invoke).len(), 3);
}
