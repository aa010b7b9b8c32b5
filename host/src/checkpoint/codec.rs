//! The binary encoding of checkpoints, hand-written so the format is explicit and stable.
//!
//! Every buffer starts with a format version byte ([`FORMAT_VERSION`]). Integers are fixed-width
//! little-endian; lengths and counts are `u64` (so encoding can never fail, whatever the size);
//! byte strings are a length followed by the bytes; text is a UTF-8 byte string; paths are the
//! platform's raw bytes on Unix. `Option<T>` is a tag byte (0 none, 1 some) then `T`; `bool` is
//! one byte, 0 or 1.
//!
//! Meta (`encode_meta`): version, id u64, created_at_ms i64, finished bool, source (lines u64,
//! offset u64, records u64, max_timestamp Option<i64>, emitted Option<i64>), operator count,
//! then per operator: name, plugin, plugin_sha256 (text), capacity u64, ordered bool,
//! watermark Option<i64>; then the sink: output Option<PendingCommit>, dead_letters
//! Option<PendingCommit>, where PendingCommit is target path, base_len u64, pending path,
//! pending_len u64. Operator elements are stored separately (`encode_elements`): version,
//! count, then per element a tag (0 record: key Option<text>, timestamp Option<i64>, payload
//! bytes, line u64; 1 watermark: i64; 2 dead letter: bytes; 3 replayed record: a record as
//! tag 0, then enters_at u64). Tag 3 is only written for a record with a non-zero `enters_at`,
//! so checkpoints without replayed records keep the format of earlier builds.
//!
//! The spend (`Checkpoint::spend`) follows the sink in a meta of version [`META_WITH_SPEND`],
//! written only when something was spent: total f64, last hour f64 (IEEE 754 bits as u64). A
//! meta of version 1 has no spend (zero), so checkpoints of runs that spent nothing keep the
//! format of earlier builds, and checkpoints of earlier builds are read as before.
//!
//! Decoding treats its input as untrusted: any truncation, unknown version or tag, invalid
//! UTF-8 or trailing byte is a [`CodecError`], never a panic.

use std::path::PathBuf;

use crate::checkpoint::{
    Checkpoint, OperatorSnapshot, PendingCommit, SinkTransaction, SourcePosition, SpendState,
    WatermarkState,
};
use crate::record::{Element, Record};

/// The format version written by this build; decoders accept only this one.
pub const FORMAT_VERSION: u8 = 1;

/// The version of a meta that ends with the run's spend.
pub const META_WITH_SPEND: u8 = 2;

const TAG_RECORD: u8 = 0;
const TAG_WATERMARK: u8 = 1;
const TAG_DEAD_LETTER: u8 = 2;
const TAG_REPLAYED_RECORD: u8 = 3;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated: {what} needs {needed} bytes but only {remaining} remain")]
    Truncated {
        what: &'static str,
        needed: u64,
        remaining: usize,
    },
    #[error("unsupported format version {found} (this build reads version {FORMAT_VERSION}, and {META_WITH_SPEND} for a checkpoint's meta)")]
    UnsupportedVersion { found: u8 },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{count} unexpected bytes after the end of the data")]
    TrailingBytes { count: usize },
}

/// Encodes everything in `cp` except each operator's `elements`.
pub fn encode_meta(cp: &Checkpoint) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(cp.id);
    w.i64(cp.created_at_ms);
    w.bool(cp.finished);
    w.u64(cp.source.lines);
    w.u64(cp.source.offset);
    w.u64(cp.source.records);
    w.opt_i64(cp.source.watermark.max_timestamp);
    w.opt_i64(cp.source.watermark.emitted);
    w.len(cp.operators.len());
    for op in &cp.operators {
        w.bytes(op.name.as_bytes());
        w.bytes(op.plugin.as_bytes());
        w.bytes(op.plugin_sha256.as_bytes());
        w.u64(op.capacity);
        w.bool(op.ordered);
        w.opt_i64(op.watermark);
    }
    w.opt_commit(cp.sink.output.as_ref());
    w.opt_commit(cp.sink.dead_letters.as_ref());
    if cp.spend != SpendState::default() {
        w.buf[0] = META_WITH_SPEND;
        w.f64(cp.spend.total_usd);
        w.f64(cp.spend.last_hour_usd);
    }
    w.buf
}

/// Decodes an `encode_meta` buffer; every operator's `elements` is empty.
pub fn decode_meta(buf: &[u8]) -> Result<Checkpoint, CodecError> {
    let with_spend = buf.first() == Some(&META_WITH_SPEND);
    let mut r = Reader::new(
        buf,
        if with_spend {
            META_WITH_SPEND
        } else {
            FORMAT_VERSION
        },
    )?;
    let id = r.u64("checkpoint id")?;
    let created_at_ms = r.i64("creation time")?;
    let finished = r.bool("finished flag")?;
    let source = SourcePosition {
        lines: r.u64("source lines")?,
        offset: r.u64("source offset")?,
        records: r.u64("source records")?,
        watermark: WatermarkState {
            max_timestamp: r.opt_i64("max timestamp")?,
            emitted: r.opt_i64("emitted watermark")?,
        },
        kafka: None,
    };
    // Each operator takes at least 3 length prefixes, 8 + 1 + 1 bytes.
    let count = r.count("operator count", 3 * 8 + 10)?;
    let mut operators = Vec::with_capacity(count);
    for _ in 0..count {
        operators.push(OperatorSnapshot {
            name: r.text("operator name")?,
            plugin: r.text("plugin path")?,
            plugin_sha256: r.text("plugin sha256")?,
            capacity: r.u64("capacity")?,
            ordered: r.bool("ordered flag")?,
            watermark: r.opt_i64("operator watermark")?,
            elements: Vec::new(),
        });
    }
    let sink = SinkTransaction {
        output: r.opt_commit("output commit")?,
        dead_letters: r.opt_commit("dead-letter commit")?,
    };
    let spend = if !with_spend {
        SpendState::default()
    } else {
        SpendState {
            total_usd: r.f64("spend total")?,
            last_hour_usd: r.f64("spend in the last hour")?,
        }
    };
    r.finish()?;
    Ok(Checkpoint {
        id,
        created_at_ms,
        finished,
        source,
        operators,
        sink,
        spend,
    })
}

/// Encodes one operator's queue.
pub fn encode_elements(elements: &[Element]) -> Vec<u8> {
    let mut w = Writer::new();
    w.len(elements.len());
    for element in elements {
        match element {
            Element::Record(record) => {
                let replayed = record.enters_at != 0;
                w.u8(if replayed {
                    TAG_REPLAYED_RECORD
                } else {
                    TAG_RECORD
                });
                match &record.key {
                    None => w.u8(0),
                    Some(key) => {
                        w.u8(1);
                        w.bytes(key.as_bytes());
                    }
                }
                w.opt_i64(record.timestamp);
                w.bytes(&record.payload);
                w.u64(record.line);
                if replayed {
                    w.u64(record.enters_at as u64);
                }
            }
            Element::Watermark(t) => {
                w.u8(TAG_WATERMARK);
                w.i64(*t);
            }
            Element::DeadLetter(line) => {
                w.u8(TAG_DEAD_LETTER);
                w.bytes(line);
            }
        }
    }
    w.buf
}

/// Decodes an `encode_elements` buffer.
pub fn decode_elements(buf: &[u8]) -> Result<Vec<Element>, CodecError> {
    let mut r = Reader::new(buf, FORMAT_VERSION)?;
    // The smallest element is a dead letter with an empty line: tag + length.
    let count = r.count("element count", 1 + 8)?;
    let mut elements = Vec::with_capacity(count);
    for _ in 0..count {
        let element = match r.u8("element tag")? {
            tag @ (TAG_RECORD | TAG_REPLAYED_RECORD) => {
                let key = match r.u8("record key option")? {
                    0 => None,
                    1 => Some(r.text("record key")?),
                    tag => {
                        return Err(CodecError::UnknownTag {
                            what: "option",
                            tag,
                        })
                    }
                };
                let mut record = Record {
                    key,
                    timestamp: r.opt_i64("record timestamp")?,
                    payload: r.bytes("record payload")?.to_vec(),
                    line: r.u64("record line")?,
                    enters_at: 0,
                    produced_by: None,
                    origin: None,
                    ticket: None,
                };
                if tag == TAG_REPLAYED_RECORD {
                    // An index beyond usize cannot name an operator: it passes every one.
                    let enters_at = r.u64("record enters_at")?;
                    record.enters_at = usize::try_from(enters_at).unwrap_or(usize::MAX);
                }
                Element::Record(record)
            }
            TAG_WATERMARK => Element::Watermark(r.i64("watermark")?),
            TAG_DEAD_LETTER => Element::DeadLetter(r.bytes("dead letter")?.to_vec()),
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "element",
                    tag,
                })
            }
        };
        elements.push(element);
    }
    r.finish()?;
    Ok(elements)
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            buf: vec![FORMAT_VERSION],
        }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    fn len(&mut self, n: usize) {
        // usize is at most 64 bits on every supported target, so this is lossless.
        self.u64(n as u64);
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }

    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }

    fn path(&mut self, p: &std::path::Path) {
        self.bytes(&path_to_bytes(p));
    }

    fn opt_commit(&mut self, c: Option<&PendingCommit>) {
        match c {
            None => self.u8(0),
            Some(c) => {
                self.u8(1);
                self.path(&c.target);
                self.u64(c.base_len);
                self.path(&c.pending);
                self.u64(c.pending_len);
            }
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte.
    fn new(buf: &'a [u8], version: u8) -> Result<Self, CodecError> {
        let mut r = Reader { rest: buf };
        let found = r.u8("format version")?;
        if found != version {
            return Err(CodecError::UnsupportedVersion { found });
        }
        Ok(r)
    }

    fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], CodecError> {
        let truncated = CodecError::Truncated {
            what,
            needed: n,
            remaining: self.rest.len(),
        };
        let n = usize::try_from(n).map_err(|_| truncated.clone())?;
        if n > self.rest.len() {
            return Err(truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(what, N as u64)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::UnknownTag { what: "bool", tag }),
        }
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, CodecError> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    /// A count of items of at least `min_size` bytes each: a count the remaining bytes cannot
    /// hold is rejected up front, so a corrupt count cannot make us allocate a huge vector.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<usize, CodecError> {
        let n = self.u64(what)?;
        let needed = n.saturating_mul(min_size);
        if needed > self.rest.len() as u64 {
            return Err(CodecError::Truncated {
                what,
                needed,
                remaining: self.rest.len(),
            });
        }
        // Bounded by the buffer length just above, so it fits in usize.
        usize::try_from(n).map_err(|_| CodecError::Truncated {
            what,
            needed,
            remaining: self.rest.len(),
        })
    }

    fn opt_tag(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::UnknownTag {
                what: "option",
                tag,
            }),
        }
    }

    fn opt_i64(&mut self, what: &'static str) -> Result<Option<i64>, CodecError> {
        if self.opt_tag(what)? {
            Ok(Some(self.i64(what)?))
        } else {
            Ok(None)
        }
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let n = self.u64(what)?;
        self.take(what, n)
    }

    fn text(&mut self, what: &'static str) -> Result<String, CodecError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::InvalidUtf8 { what })
    }

    fn path(&mut self, what: &'static str) -> Result<PathBuf, CodecError> {
        let bytes = self.bytes(what)?;
        path_from_bytes(bytes, what)
    }

    fn opt_commit(&mut self, what: &'static str) -> Result<Option<PendingCommit>, CodecError> {
        if !self.opt_tag(what)? {
            return Ok(None);
        }
        Ok(Some(PendingCommit {
            target: self.path("commit target")?,
            base_len: self.u64("commit base length")?,
            pending: self.path("pending file")?,
            pending_len: self.u64("pending length")?,
        }))
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

// Paths keep their exact bytes on Unix (they need not be UTF-8); elsewhere they must be text.
#[cfg(unix)]
fn path_to_bytes(p: &std::path::Path) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(p.as_os_str().as_bytes())
}

#[cfg(not(unix))]
fn path_to_bytes(p: &std::path::Path) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(p.to_string_lossy().into_owned().into_bytes())
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8], _what: &'static str) -> Result<PathBuf, CodecError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8], what: &'static str) -> Result<PathBuf, CodecError> {
    std::str::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| CodecError::InvalidUtf8 { what })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Checkpoint {
        Checkpoint {
            id: 42,
            created_at_ms: 1_700_000_123_456,
            finished: false,
            source: SourcePosition {
                lines: 120,
                offset: 9_876,
                records: 117,
                watermark: WatermarkState {
                    max_timestamp: Some(-5),
                    emitted: None,
                },
                kafka: None,
            },
            operators: vec![
                OperatorSnapshot {
                    name: "triage".into(),
                    plugin: "plugins/triage.wasm".into(),
                    plugin_sha256: "ab".repeat(32),
                    capacity: 100,
                    ordered: true,
                    watermark: Some(1_000),
                    elements: vec![
                        Element::Record(Record {
                            key: Some("k1".into()),
                            timestamp: Some(i64::MIN),
                            payload: vec![0xff, 0xfe, 0x00, 0x80],
                            line: 118,
                            enters_at: 0,
                            produced_by: None,
                            origin: None,
                            ticket: None,
                        }),
                        Element::Watermark(1_001),
                        Element::Record(Record {
                            key: None,
                            timestamp: None,
                            payload: Vec::new(),
                            line: 119,
                            // A replayed dead letter that starts at the third operator.
                            enters_at: 2,
                            produced_by: None,
                            origin: None,
                            ticket: None,
                        }),
                        Element::DeadLetter(b"{\"line\":7}".to_vec()),
                    ],
                },
                OperatorSnapshot {
                    name: "answer".into(),
                    plugin: "plugins/answer.wasm".into(),
                    plugin_sha256: String::new(),
                    capacity: 1,
                    ordered: false,
                    watermark: None,
                    elements: Vec::new(),
                },
            ],
            sink: SinkTransaction {
                output: Some(PendingCommit {
                    target: PathBuf::from("out/result.jsonl"),
                    base_len: 1_234,
                    pending: PathBuf::from("out/.result.jsonl.pending-42"),
                    pending_len: 56,
                }),
                dead_letters: None,
            },
            spend: SpendState::default(),
        }
    }

    /// A run that spent nothing writes the meta of earlier builds, which reads as no spend.
    #[test]
    fn the_spend_is_kept_only_when_there_is_one() {
        let mut cp = without_elements(&sample());
        let without = encode_meta(&cp);
        assert_eq!(without[0], FORMAT_VERSION);
        cp.spend = SpendState {
            total_usd: 1.25,
            last_hour_usd: 0.5,
        };
        let with_spend = encode_meta(&cp);
        assert_eq!(with_spend[0], META_WITH_SPEND);
        assert_eq!(with_spend.len(), without.len() + 16);
        assert_eq!(decode_meta(&without).unwrap().spend, SpendState::default());
        assert_eq!(decode_meta(&with_spend).unwrap(), cp);
        for n in 0..with_spend.len() {
            assert!(
                decode_meta(&with_spend[..n]).is_err(),
                "meta truncated to {n}"
            );
        }
    }

    fn without_elements(cp: &Checkpoint) -> Checkpoint {
        let mut cp = cp.clone();
        for op in &mut cp.operators {
            op.elements.clear();
        }
        cp
    }

    #[test]
    fn round_trip_full_checkpoint() {
        let mut cp = sample();
        let meta = encode_meta(&cp);
        assert_eq!(meta[0], FORMAT_VERSION);
        assert_eq!(decode_meta(&meta).unwrap(), without_elements(&cp));
        for op in &cp.operators {
            let buf = encode_elements(&op.elements);
            assert_eq!(decode_elements(&buf).unwrap(), op.elements);
        }
        // The other Option variants.
        cp.finished = true;
        cp.source.watermark = WatermarkState {
            max_timestamp: None,
            emitted: Some(i64::MAX),
        };
        cp.sink = SinkTransaction {
            output: None,
            dead_letters: Some(PendingCommit {
                target: PathBuf::from("dead.jsonl"),
                base_len: 0,
                pending: PathBuf::from("dead.jsonl.pending"),
                pending_len: u64::MAX,
            }),
        };
        cp.operators.clear();
        assert_eq!(decode_meta(&encode_meta(&cp)).unwrap(), cp);
    }

    /// A record's tag says whether it carries `enters_at`: a checkpoint without replayed records
    /// is byte for byte what earlier builds wrote and read.
    #[test]
    fn only_replayed_records_carry_where_they_enter() {
        let elements = &sample().operators[0].elements;
        let (plain, replayed) = (&elements[0..1], &elements[2..3]);
        // Version byte and element count come first.
        assert_eq!(encode_elements(plain)[9], TAG_RECORD);
        assert_eq!(encode_elements(replayed)[9], TAG_REPLAYED_RECORD);
        let back = decode_elements(&encode_elements(replayed)).unwrap();
        assert!(matches!(&back[0], Element::Record(r) if r.enters_at == 2));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let mut cp = sample();
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"out/\xff\xfe.jsonl"));
        if let Some(out) = cp.sink.output.as_mut() {
            out.target = odd.clone();
        }
        let back = decode_meta(&encode_meta(&cp)).unwrap();
        assert_eq!(back.sink.output.unwrap().target, odd);
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let cp = sample();
        let meta = encode_meta(&cp);
        for n in 0..meta.len() {
            assert!(decode_meta(&meta[..n]).is_err(), "meta truncated to {n}");
        }
        let elements = encode_elements(&cp.operators[0].elements);
        for n in 0..elements.len() {
            assert!(
                decode_elements(&elements[..n]).is_err(),
                "elements truncated to {n}"
            );
        }
    }

    #[test]
    fn malformed_buffers_are_errors() {
        let cp = sample();
        let mut meta = encode_meta(&cp);
        meta[0] = 9;
        assert_eq!(
            decode_meta(&meta),
            Err(CodecError::UnsupportedVersion { found: 9 })
        );

        let mut trailing = encode_meta(&cp);
        trailing.push(0);
        assert_eq!(
            decode_meta(&trailing),
            Err(CodecError::TrailingBytes { count: 1 })
        );

        // Version, count 1, then an unknown element tag.
        let mut bad_tag = vec![FORMAT_VERSION];
        bad_tag.extend_from_slice(&1u64.to_le_bytes());
        bad_tag.push(7);
        bad_tag.extend_from_slice(&[0; 8]); // enough bytes for the count check
        assert_eq!(
            decode_elements(&bad_tag),
            Err(CodecError::UnknownTag {
                what: "element",
                tag: 7
            })
        );

        // A huge count must be rejected without allocating.
        let mut huge = vec![FORMAT_VERSION];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_elements(&huge),
            Err(CodecError::Truncated { .. })
        ));

        // A huge byte-string length.
        let mut long = vec![FORMAT_VERSION];
        long.extend_from_slice(&1u64.to_le_bytes());
        long.push(TAG_DEAD_LETTER);
        long.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_elements(&long),
            Err(CodecError::Truncated { .. })
        ));

        // An operator name that is not UTF-8.
        let mut cp2 = sample();
        cp2.operators.truncate(1);
        cp2.operators[0].name = "\u{1}".into();
        let mut buf = encode_meta(&cp2);
        // Offset of the one-byte name: version, id, created, finished, three source counters,
        // Some(max_timestamp), None emitted, operator count, name length.
        let name_at = 1 + 8 + 8 + 1 + 8 * 3 + (1 + 8) + 1 + 8 + 8;
        assert_eq!(buf[name_at], 1);
        buf[name_at] = 0xff;
        assert_eq!(
            decode_meta(&buf),
            Err(CodecError::InvalidUtf8 {
                what: "operator name"
            })
        );
    }

    #[test]
    fn every_single_byte_corruption_is_an_error_or_a_value() {
        // Flipping any byte must never panic (the value may still decode).
        let cp = sample();
        let meta = encode_meta(&cp);
        for i in 0..meta.len() {
            let mut b = meta.clone();
            b[i] ^= 0xff;
            let _ = decode_meta(&b);
        }
        let elements = encode_elements(&cp.operators[0].elements);
        for i in 0..elements.len() {
            let mut b = elements.clone();
            b[i] ^= 0xff;
            let _ = decode_elements(&b);
        }
    }
}
