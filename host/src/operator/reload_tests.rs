//! Hot reload on the operator's core, with the fake function and fake clock of `tests`: records
//! invoked before a swap finish on the old version (answers, timeouts and re-invocations go
//! there), records admitted after it go to the new one, every output names the version that
//! made it, and an old slot is closed only once its last record has left.

use std::time::Duration;

use super::*;

/// The digest on each output record, in output order.
fn digests(out: &[Element]) -> Vec<String> {
    out.iter()
        .filter_map(|e| match e {
            Element::Record(r) => r.produced_by.map(str::to_string),
            _ => None,
        })
        .collect()
}

fn payloads(out: &[Element]) -> Vec<String> {
    out.iter()
        .filter_map(|e| match e {
            Element::Record(r) => Some(String::from_utf8_lossy(&r.payload).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn records_in_flight_finish_on_the_old_version_and_new_ones_go_to_the_new_one() {
    let mut h = Harness::with(config());
    h.record("send-a").unwrap();
    h.record("send-b").unwrap();
    let swapped = h.core.swap(Some(("v2", 2)), config());
    assert_eq!((&*swapped.old, &*swapped.new), ("fake", "v2"));
    assert_eq!(swapped.draining, 2);
    h.record("send-c").unwrap();
    h.record("now-d").unwrap();
    // The new records went to the new slots (1 and 2, round robin), not to slot 0.
    let invoked: Vec<(String, usize)> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke)
        .map(|l| (l.payload.clone(), l.slot))
        .collect();
    assert_eq!(
        invoked,
        [
            ("send-a".into(), 0),
            ("send-b".into(), 0),
            ("send-c".into(), 1),
            ("now-d".into(), 2)
        ]
    );
    // Answers for the old records reach the old slot, which is still open.
    h.answer("send-a").unwrap();
    assert!(h.function().closed_slots.is_empty());
    h.answer("send-b").unwrap();
    let responses: Vec<usize> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Response)
        .map(|l| l.slot)
        .collect();
    assert_eq!(responses, [0, 0]);
    // Both old records have left: the old slot is closed, the new ones are not.
    assert_eq!(h.function().closed_slots, [0]);
    h.answer("send-c").unwrap();
    assert_eq!(payloads(&h.out), ["send-a", "send-b", "send-c", "now-d"]);
    assert_eq!(digests(&h.out), ["fake", "fake", "v2", "v2"]);
    assert_eq!(h.core.open_slots(), 2);
}

#[test]
fn an_old_slot_with_nothing_in_it_is_closed_at_the_swap() {
    let mut h = Harness::with(config());
    h.record("now-a").unwrap();
    let swapped = h.core.swap(Some(("v2", 1)), config());
    assert_eq!(swapped.draining, 0);
    assert_eq!(h.function().closed_slots, [0]);
    h.record("now-b").unwrap();
    assert_eq!(digests(&h.out), ["fake", "v2"]);
}

#[test]
fn a_trap_in_an_old_slot_reinvokes_its_records_there() {
    let script = |kind: Kind, p: &str| match kind {
        Kind::Invoke if p.starts_with("send") => vec![Act::Send],
        Kind::Response if p == "send-a" => vec![Act::Trap("crash while answering")],
        Kind::Response => vec![Act::Complete(vec![p.to_string()])],
        _ => vec![],
    };
    let mut h = Harness::new(config_with_dead_letters(), FakeFunction::new(1, script));
    h.record("send-a").unwrap();
    h.record("send-b").unwrap();
    h.core.swap(Some(("v2", 1)), config_with_dead_letters());
    h.answer("send-a").unwrap();
    // The trap replaced slot 0 with a fresh instance of the old version; send-b was invoked
    // again there, not on the new version's slot.
    assert_eq!(h.function().replaced, [0]);
    let reinvoked: Vec<usize> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke && l.payload == "send-b")
        .map(|l| l.slot)
        .collect();
    assert_eq!(reinvoked, [0, 0]);
    // The first request's answer is for the trapped instance: dropped. The second's completes.
    h.answer("send-b").unwrap();
    assert!(payloads(&h.out).is_empty());
    h.answer("send-b").unwrap();
    assert_eq!(payloads(&h.out), ["send-b"]);
    assert_eq!(digests(&h.out), ["fake"]);
    assert_eq!(h.function().closed_slots, [0]);
}

#[test]
fn a_settings_only_reload_keeps_the_instances_and_applies_capacity_and_timeout() {
    let mut h = Harness::with(config());
    let mut next = config();
    next.capacity = 2;
    next.timeout = Some(Duration::from_millis(50));
    let swapped = h.core.swap(None, next);
    assert!(swapped.settings_only);
    assert_eq!(swapped.old, swapped.new);
    assert!(h.function().closed_slots.is_empty());
    h.record("wait-a").unwrap();
    h.record("wait-b").unwrap();
    assert!(h.core.is_full(), "the new capacity holds");
    assert_eq!(h.telemetry.capacity.get(), 2);
    // The new timeout applies to records admitted after the reload.
    h.now += Duration::from_millis(60);
    let failed = h.core.fire_timers(h.now);
    assert!(
        matches!(failed, Err(OperatorError::TimedOut { .. })),
        "{failed:?}"
    );
}

#[test]
fn the_name_position_and_ordering_stay_as_they_were() {
    let mut h = Harness::with(config());
    let mut next = unordered();
    next.name = "renamed".into();
    next.index = 4;
    h.core.swap(Some(("v2", 1)), next);
    assert_eq!(h.core.name(), "enrich");
    h.record("send-a").unwrap();
    h.record("now-b").unwrap();
    // Still ordered: now-b waits for send-a.
    assert!(payloads(&h.out).is_empty());
    h.answer("send-a").unwrap();
    assert_eq!(payloads(&h.out), ["send-a", "now-b"]);
}

fn config_with_dead_letters() -> OperatorConfig {
    let mut c = config();
    c.on_failure = Policy::DeadLetter;
    c
}
