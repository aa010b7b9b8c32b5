//! What the hot-reload tests use: distinct versions of a built plugin, files replaced the way a
//! deploy does (written beside, then renamed over), digests, the run's log, and a plain HTTP POST
//! for the admin server's reload endpoint.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` in lower-case hex: what the host calls a plugin's digest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of a file, as [`sha256_hex`].
pub fn file_sha256(path: &Path) -> String {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    sha256_hex(&bytes)
}

/// Unsigned LEB128, the integer encoding of WebAssembly binaries.
pub fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a custom section `name` holding `payload` appended at its end: the same
/// plugin, another file, another digest. (A custom section is id 0, then the section's size,
/// then the name as a length-prefixed string, then the payload.)
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let name_len = leb128(name.len());
    let size = name_len.len() + name.len() + payload.len();
    let mut out = component.to_vec();
    out.push(0x00);
    out.extend(leb128(size));
    out.extend(name_len);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A distinct version of the plugin at `path`: its bytes with a custom section naming `tag`.
pub fn variant(path: &Path, tag: &str) -> Vec<u8> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    with_custom_section(&bytes, "waio-test-variant", tag.as_bytes())
}

/// Replaces `path` with `bytes` as a deploy does: written to a temporary file in the same
/// directory, then renamed over it (so nobody ever reads a half-written file).
pub fn replace_file(path: &Path, bytes: &[u8]) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = path.parent().expect("a file in a directory");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&temp, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
    std::fs::rename(&temp, path).unwrap_or_else(|e| {
        panic!(
            "cannot rename {} over {}: {e}",
            temp.display(),
            path.display()
        )
    });
}

/// What the run in `dir` logged so far (`stderr.log`, as [`crate::spawn_waio`] writes it).
pub fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// The lines of the run's log that contain `needle`, in order.
pub fn log_lines(dir: &Path, needle: &str) -> Vec<String> {
    log(dir)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Polls `condition` every 20 ms until it holds, while the run of `child` in `dir` goes on:
/// fails at once, with the run's log, when the run ends first, and after `limit` (a hang guard).
pub fn wait_while_running(
    child: &mut Child,
    dir: &Path,
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let until = Instant::now() + limit;
    while !condition() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "waio ended ({status}) while waiting for {what}:\n{}",
                log(dir)
            );
        }
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}:\n{}",
            log(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the log of the run in `dir` has at least `count` lines containing `needle`
/// (as [`wait_while_running`]).
pub fn wait_for_log(child: &mut Child, dir: &Path, needle: &str, count: usize, limit: Duration) {
    let what = format!("{count} log lines with {needle:?}");
    wait_while_running(child, dir, &what, limit, || {
        log_lines(dir, needle).len() >= count
    });
}

/// Complete lines in a file (those ending with a newline): a count that a line being written
/// at the moment does not disturb.
pub fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count())
        .unwrap_or(0)
}

/// Asserts that `ids` is `1..=n`: every record exactly once, in input order. Says briefly what
/// is wrong (a diff of thousands of ids would not).
pub fn assert_once_in_order(ids: &[u64], n: u64) {
    if ids.iter().copied().eq(1..=n) {
        return;
    }
    let mut seen = std::collections::HashMap::new();
    for id in ids {
        *seen.entry(*id).or_insert(0usize) += 1;
    }
    let mut duplicated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    duplicated.sort_unstable();
    let missing: Vec<u64> = (1..=n).filter(|id| !seen.contains_key(id)).collect();
    let disorder = ids.windows(2).position(|w| w[0] >= w[1]);
    panic!(
        "{} ids for {n} records: {} duplicated (first {:?}), {} missing (first {:?}), first out of order at position {disorder:?}",
        ids.len(),
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)],
        missing.len(),
        &missing[..missing.len().min(10)],
    );
}

/// Consecutive equal items, with how many there are of each: `[a, a, b, a]` is
/// `[(a, 2), (b, 1), (a, 1)]`.
pub fn runs<T: PartialEq + Clone>(items: &[T]) -> Vec<(T, usize)> {
    let mut out: Vec<(T, usize)> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some((last, n)) if last == item => *n += 1,
            _ => out.push((item.clone(), 1)),
        }
    }
    out
}

/// The summary JSON `waio run --summary-json summary.json` wrote in `dir`.
pub fn summary_json(dir: &Path) -> Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary.json is not JSON ({e}): {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes_like_the_spec() {
        assert_eq!(leb128(0), [0x00]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn a_custom_section_is_id_size_name_payload() {
        let out = with_custom_section(b"base", "ab", b"xyz");
        assert_eq!(out, b"base\x00\x06\x02abxyz");
    }

    #[test]
    fn runs_count_consecutive_items() {
        assert_eq!(runs(&["a", "a", "b", "a"]), [("a", 2), ("b", 1), ("a", 1)]);
        assert!(runs::<u8>(&[]).is_empty());
    }

    #[test]
    fn sha256_of_nothing() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
