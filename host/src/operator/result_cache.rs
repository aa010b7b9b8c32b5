//! The result cache in front of the plugin (`cache.*`): a record whose input was seen
//! completes with the outputs it had then, without a call; a record whose input is being
//! computed right now waits for that call instead of making its own (as moka's `get_with`
//! does), so a burst of repeats costs one call.
//!
//! The key is the digest of the plugin's identity (its component digest, unless
//! `share_across_versions`, and its config) and of the input (the payload, or the values at
//! the `cache.key` JSON pointers). An entry holds the outputs, each output's key as "the
//! input's key" when it was (so a hit carries its own input's key), and the tokens the call
//! used, which a hit counts as saved. Fatal failures are kept as negative entries for
//! `negative_ttl`.
//!
//! With `cache.key` naming fields, two records with the same key may differ elsewhere (an
//! `id`): an output that is the input object enriched is then kept as the change the plugin
//! made (fields set, fields removed), and a hit applies that change to its own input, so it
//! keeps its own other fields. (Objects come out with their keys in sorted order then.)
//!
//! This is the bookkeeping only; the operator core decides when to look up, store and wake
//! (`semantics.rs`), so that ordering, timeouts and checkpoints stay the core's.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::cache::{Cache, CacheError, CacheKey, CacheKind, DigestHasher, Lookup, Reader, Writer};
use crate::cost::CostControl;
use crate::manifest::{ResultCacheConfig, ResultKey};
use crate::plugin::function::{Output, TokenUsage};
use crate::record::Record;
use crate::telemetry::CacheStats;

/// What to do with a record just admitted.
pub enum Admitted {
    /// Complete it with these outputs.
    Hit(Vec<Output>),
    /// Fail it (fatally) with this message: the same input failed so before.
    Failed(String),
    /// Invoke it: it makes the call for `key`, others may wait for it.
    Lead(CacheKey),
    /// Do not invoke it: a call for `key` is in flight; it completes with that call's result.
    Wait(CacheKey),
}

/// Usage of one model by a record, kept with its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Used {
    model: String,
    input: u64,
    output: u64,
}

pub struct ResultCache {
    cache: Cache,
    identity: CacheKey,
    key: ResultKey,
    /// Per key with a call in flight: the records waiting for it, in the order they came.
    waiting: HashMap<CacheKey, Vec<u64>, BuildHasherDefault<DigestHasher>>,
    cost: Arc<CostControl>,
}

/// What a key is made of besides the input: the plugin version (unless shared across
/// versions), its config and the key rule.
fn identity(config: &ResultCacheConfig, digest: &str, config_json: &str) -> CacheKey {
    let version = if config.share_across_versions {
        ""
    } else {
        digest
    };
    let rule = match &config.key {
        ResultKey::Payload => String::new(),
        ResultKey::Pointers(pointers) => pointers.join("\n"),
    };
    CacheKey::of(&[version.as_bytes(), config_json.as_bytes(), rule.as_bytes()])
}

/// How an output's key is kept.
const NO_KEY: u8 = 0;
const INPUT_KEY: u8 = 1;
const OWN_KEY: u8 = 2;
/// How an output's payload is kept: as it was, or as the change made to the input object.
const WHOLE: u8 = 0;
const CHANGE: u8 = 1;

impl ResultCache {
    /// The cache of an operator whose plugin has component digest `digest` and config
    /// `config_json`.
    pub fn open(
        config: &ResultCacheConfig,
        digest: &str,
        config_json: &str,
        stats: Arc<CacheStats>,
    ) -> Result<Self, CacheError> {
        Ok(ResultCache {
            cache: Cache::open(config.options.clone(), CacheKind::Result, stats)?,
            identity: identity(config, digest, config_json),
            key: config.key.clone(),
            waiting: HashMap::default(),
            cost: Arc::default(),
        })
    }

    /// After a hot reload: records admitted from now on are keyed by the new version's digest
    /// and config (`config.key` and `share_across_versions` cannot change in a reload). Records
    /// admitted before keep the key they were given, so what the old version computes is
    /// kept under the old identity.
    pub fn rekey(&mut self, config: &ResultCacheConfig, digest: &str, config_json: &str) {
        self.identity = identity(config, digest, config_json);
    }

    /// Prices the tokens a hit saves.
    pub fn price_with(&mut self, cost: Arc<CostControl>) {
        self.cost = cost;
    }

    /// The key of a record's input.
    fn key_of(&self, payload: &[u8]) -> CacheKey {
        match &self.key {
            ResultKey::Payload => CacheKey::of(&[&self.identity.0, payload]),
            ResultKey::Pointers(pointers) => {
                // A payload that is not JSON has no fields: it is keyed whole.
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    return CacheKey::of(&[&self.identity.0, b"raw", payload]);
                };
                let picked: Vec<&serde_json::Value> = pointers
                    .iter()
                    .map(|p| value.pointer(p).unwrap_or(&serde_json::Value::Null))
                    .collect();
                let text = serde_json::to_vec(&picked).unwrap_or_default();
                CacheKey::of(&[&self.identity.0, b"fields", &text])
            }
        }
    }

    /// Looks `input` up for record `seq`.
    pub fn admit(&mut self, seq: u64, input: &Record, now_ms: u64) -> Admitted {
        let key = self.key_of(&input.payload);
        if let Some(waiters) = self.waiting.get_mut(&key) {
            waiters.push(seq);
            self.cache.stats().misses.inc();
            self.cache.stats().coalesced.inc();
            return Admitted::Wait(key);
        }
        match self.cache.get(&key, now_ms) {
            Lookup::Hit(bytes) => match self.decode_hit(&bytes, input) {
                Some(outputs) => Admitted::Hit(outputs),
                None => self.lead(key),
            },
            Lookup::Negative(bytes) => match Reader::new(&bytes).string() {
                Ok(message) => {
                    Admitted::Failed(format!("{message} (remembered by the result cache)"))
                }
                Err(_) => self.lead(key),
            },
            Lookup::Miss => self.lead(key),
        }
    }

    fn lead(&mut self, key: CacheKey) -> Admitted {
        self.waiting.insert(key, Vec::new());
        Admitted::Lead(key)
    }

    /// The outputs of a kept entry for `input`, and its usage counted as saved; `None` if the
    /// entry cannot be read (then it is a miss).
    fn decode_hit(&self, bytes: &[u8], input: &Record) -> Option<Vec<Output>> {
        let mut r = Reader::new(bytes);
        let outputs = read_outputs(&mut r, input).ok()?;
        let used = read_usage(&mut r).ok()?;
        r.end().ok()?;
        let stats = self.cache.stats();
        for u in used {
            stats.tokens_saved.add(u.input.saturating_add(u.output));
            if let Some(usd) = self.cost.price(&u.model, u.input, u.output) {
                stats.add_cost_saved(usd);
            }
        }
        Some(outputs)
    }

    /// The call for `key`, made for a record whose input was `input`, ended with `outputs`
    /// (having used `usage`): kept, and the records that waited for it are returned.
    pub fn completed(
        &mut self,
        key: &CacheKey,
        input: &Record,
        outputs: &[Output],
        usage: &[TokenUsage],
        now_ms: u64,
    ) -> Vec<u64> {
        let mut w = Writer::new();
        w.u32(outputs.len() as u32);
        for output in outputs {
            match &output.key {
                None => w.u8(NO_KEY),
                Some(k) if input.key.as_ref() == Some(k) => w.u8(INPUT_KEY),
                Some(k) => w.u8(OWN_KEY).bytes(k.as_bytes()),
            };
            match self.change_of(&input.payload, &output.payload) {
                Some(change) => w.u8(CHANGE).bytes(&change),
                None => w.u8(WHOLE).bytes(&output.payload),
            };
        }
        w.u32(usage.len() as u32);
        for u in usage {
            w.bytes(u.model.as_bytes())
                .u64(u.input_tokens)
                .u64(u.output_tokens);
        }
        self.cache.put(key, w.finish(), now_ms);
        self.waiting.remove(key).unwrap_or_default()
    }

    /// The call for `key` failed fatally with `message`: kept as a negative entry (for
    /// `negative_ttl`), and the records that waited for it are returned, to fail alike.
    pub fn failed(&mut self, key: &CacheKey, message: &str, now_ms: u64) -> Vec<u64> {
        let value = Writer::new().bytes(message.as_bytes()).finish();
        self.cache.put_negative(key, value, now_ms);
        self.waiting.remove(key).unwrap_or_default()
    }

    /// The record making the call for `key` ended without a result worth keeping (a timeout,
    /// a retriable failure): the first record still waiting makes the call instead; `None`
    /// when none waits (and the key is free again). `still_waiting` says whether a record
    /// still needs the result (one may have timed out meanwhile).
    pub fn next_leader(
        &mut self,
        key: &CacheKey,
        still_waiting: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let waiters = self.waiting.get_mut(key)?;
        waiters.retain(|seq| still_waiting(*seq));
        if waiters.is_empty() {
            self.waiting.remove(key);
            return None;
        }
        Some(waiters.remove(0))
    }

    /// The outputs a waiting record gets from its leader's: each output's key is the waiting
    /// record's own where the leader's output carried the leader's, and (with field keys) the
    /// leader's change applied to the waiting record's own input.
    pub fn outputs_for(
        &self,
        leader_input: &Record,
        outputs: &[Output],
        input: &Record,
    ) -> Vec<Output> {
        outputs
            .iter()
            .map(|o| Output {
                key: match &o.key {
                    Some(k) if leader_input.key.as_ref() == Some(k) => input.key.clone(),
                    other => other.clone(),
                },
                payload: self
                    .change_of(&leader_input.payload, &o.payload)
                    .and_then(|change| apply_change(&change, &input.payload))
                    .unwrap_or_else(|| o.payload.clone()),
            })
            .collect()
    }

    /// With field keys, an output that is the input object changed: the change, as
    /// `{"set": {...}, "removed": [...]}`. `None`: the output is kept whole.
    fn change_of(&self, input: &[u8], output: &[u8]) -> Option<Vec<u8>> {
        if self.key == ResultKey::Payload {
            return None;
        }
        use serde_json::{Map, Value};
        let Ok(Value::Object(before)) = serde_json::from_slice::<Value>(input) else {
            return None;
        };
        let Ok(Value::Object(after)) = serde_json::from_slice::<Value>(output) else {
            return None;
        };
        let set: Map<String, Value> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        serde_json::to_vec(&serde_json::json!({"set": set, "removed": removed})).ok()
    }
}

fn read_outputs(r: &mut Reader<'_>, input: &Record) -> Result<Vec<Output>, crate::cache::Damaged> {
    let n = r.u32()? as usize;
    let mut outputs = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let key = match r.u8()? {
            NO_KEY => None,
            INPUT_KEY => input.key.clone(),
            OWN_KEY => Some(r.string()?),
            _ => return Err(crate::cache::Damaged("an output key of no known kind")),
        };
        let payload = match r.u8()? {
            WHOLE => r.bytes()?.to_vec(),
            CHANGE => apply_change(r.bytes()?, &input.payload).ok_or(crate::cache::Damaged(
                "a change that does not apply to the input",
            ))?,
            _ => return Err(crate::cache::Damaged("an output of no known kind")),
        };
        outputs.push(Output { key, payload });
    }
    Ok(outputs)
}

fn read_usage(r: &mut Reader<'_>) -> Result<Vec<Used>, crate::cache::Damaged> {
    let n = r.u32()? as usize;
    let mut used = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        used.push(Used {
            model: r.string()?,
            input: r.u64()?,
            output: r.u64()?,
        });
    }
    Ok(used)
}

/// `input` (a JSON object) with `change` (see [`ResultCache::change_of`]) applied.
fn apply_change(change: &[u8], input: &[u8]) -> Option<Vec<u8>> {
    use serde_json::Value;
    let change: Value = serde_json::from_slice(change).ok()?;
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(input) else {
        return None;
    };
    for removed in change.get("removed")?.as_array()? {
        object.remove(removed.as_str()?);
    }
    for (k, v) in change.get("set")?.as_object()? {
        object.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&Value::Object(object)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheOptions, Eviction, Storage};
    use std::time::Duration;

    fn cache(key: ResultKey) -> ResultCache {
        let config = ResultCacheConfig {
            options: CacheOptions {
                storage: Storage::Heap {
                    eviction: Eviction::Lru,
                },
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(60),
                max_entries: 10,
                max_bytes: None,
            },
            key,
            share_across_versions: false,
        };
        ResultCache::open(&config, "digest", "{}", Arc::default()).unwrap()
    }

    fn record(key: &str, payload: &str) -> Record {
        Record {
            key: Some(key.into()),
            timestamp: Some(1),
            payload: payload.as_bytes().to_vec(),
            line: 1,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        }
    }

    #[test]
    fn a_hit_by_fields_applies_the_plugins_change_to_its_own_record() {
        let mut c = cache(ResultKey::Pointers(vec!["/text".into()]));
        let first = record("a", r#"{"id":1,"text":"hi","tmp":0}"#);
        let Admitted::Lead(key) = c.admit(0, &first, 0) else {
            panic!("a miss leads")
        };
        let waiting = record("b", r#"{"id":2,"text":"hi","tmp":5}"#);
        assert!(matches!(c.admit(1, &waiting, 0), Admitted::Wait(_)));
        let outputs = vec![Output {
            key: Some("a".into()),
            payload: br#"{"id":1,"text":"hi","vec":[1,2]}"#.to_vec(),
        }];
        assert_eq!(c.completed(&key, &first, &outputs, &[], 0), vec![1]);
        let shared = c.outputs_for(&first, &outputs, &waiting);
        assert_eq!(shared[0].key.as_deref(), Some("b"));
        assert_eq!(
            shared[0].payload,
            br#"{"id":2,"text":"hi","vec":[1,2]}"#.to_vec()
        );
        let later = record("c", r#"{"id":3,"text":"hi"}"#);
        let Admitted::Hit(hit) = c.admit(2, &later, 1) else {
            panic!("kept")
        };
        assert_eq!(hit[0].key.as_deref(), Some("c"));
        assert_eq!(
            hit[0].payload,
            br#"{"id":3,"text":"hi","vec":[1,2]}"#.to_vec()
        );
        let other = record("d", r#"{"id":4,"text":"ho"}"#);
        assert!(matches!(c.admit(3, &other, 1), Admitted::Lead(_)));
    }

    #[test]
    fn a_whole_payload_key_keeps_outputs_as_they_were_and_failures_as_failures() {
        let mut c = cache(ResultKey::Payload);
        let input = record("k", r#"{"text":"x"}"#);
        let Admitted::Lead(key) = c.admit(0, &input, 0) else {
            panic!("a miss leads")
        };
        c.failed(&key, "HTTP 400", 0);
        let Admitted::Failed(message) = c.admit(1, &input, 1) else {
            panic!("remembered")
        };
        assert!(message.starts_with("HTTP 400"), "{message}");
        // Another build of the plugin does not see it.
        let config = ResultCacheConfig {
            options: c.cache.options().clone(),
            key: ResultKey::Payload,
            share_across_versions: false,
        };
        let other = ResultCache::open(&config, "other-digest", "{}", Arc::default()).unwrap();
        assert_ne!(other.key_of(&input.payload), c.key_of(&input.payload));
    }
}
