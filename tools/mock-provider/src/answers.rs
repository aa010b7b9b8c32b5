//! Deterministic answer logic, kept free of I/O so it is cheap and unit-testable.

/// 64-bit FNV-1a: stable across runs and platforms, unlike `std`'s hasher.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whitespace-separated words: the mock's notion of a token.
pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// If `line` is a `Labels: a, b, c` line (prefix case-insensitive), its labels.
fn parse_labels_line(line: &str) -> Option<Vec<&str>> {
    const PREFIX: &[u8] = b"labels:";
    let line = line.trim_start();
    let head = line.as_bytes().get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    // The matched prefix is ASCII, so slicing after it stays on a char boundary.
    let labels: Vec<&str> = line[PREFIX.len()..]
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    (!labels.is_empty()).then_some(labels)
}

fn is_labels_line(line: &str) -> bool {
    parse_labels_line(line).is_some()
}

/// The first `Labels:` line found in any message, in message order.
fn find_labels<'a>(contents: &[&'a str]) -> Option<Vec<&'a str>> {
    contents
        .iter()
        .flat_map(|c| c.lines())
        .find_map(parse_labels_line)
}

/// The answer of the mock chat model for `(role, content)` messages.
///
/// The text searched for label names (and hashed) is the last user message, or the last message
/// when no message has the role `user`. `Labels:` lines are left out of that text, otherwise a
/// prompt carrying its labels in the user message would always match the first label.
pub fn chat_answer(messages: &[(&str, &str)]) -> String {
    let user = messages
        .iter()
        .rev()
        .find(|(role, _)| *role == "user")
        .or(messages.last())
        .map_or("", |(_, content)| *content);
    let contents: Vec<&str> = messages.iter().map(|(_, content)| *content).collect();
    match find_labels(&contents) {
        Some(labels) => {
            let text: String = if user.lines().any(is_labels_line) {
                user.lines()
                    .filter(|l| !is_labels_line(l))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                user.to_owned()
            };
            let lower = text.to_lowercase();
            let hit = labels
                .iter()
                .find(|label| lower.contains(&label.to_lowercase()));
            match hit {
                Some(label) => (*label).to_owned(),
                None => {
                    let idx = fnv1a64(text.as_bytes()) % labels.len() as u64;
                    // idx < labels.len(), which fits in usize.
                    labels[idx as usize].to_owned()
                }
            }
        }
        None => format!("mock answer {:08x}", fnv1a64(user.as_bytes()) as u32),
    }
}

/// A deterministic unit-length vector for `text`, independent of the server seed so that
/// separate runs (and separate servers) agree.
pub fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(fnv1a64(text.as_bytes()));
    let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        // Degenerate draw: fall back to a basis vector so the result is still unit length.
        *first = 1.0;
    }
    v
}

/// Standard base64 (with padding) of the little-endian f32 bytes, as OpenAI returns for
/// `encoding_format: "base64"`.
pub fn embedding_base64(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn labels_in_system_message_pick_the_named_label() {
        let msgs = [
            ("system", "Classify.\nlabels: Positive, Negative"),
            ("user", "this is NEGATIVE stuff"),
            ("assistant", "positive"),
        ];
        assert_eq!(chat_answer(&msgs), "Negative");
    }

    #[test]
    fn labels_line_in_the_user_message_is_not_searched() {
        let msgs = [("user", "Labels: spam, ham\nText: buy cheap ham now")];
        assert_eq!(chat_answer(&msgs), "ham");
    }

    #[test]
    fn unmatched_labels_fall_back_to_a_stable_hash() {
        let msgs = [
            ("system", "Labels: a1, b2, c3"),
            ("user", "nothing matches here"),
        ];
        let first = chat_answer(&msgs);
        assert!(["a1", "b2", "c3"].contains(&first.as_str()));
        assert_eq!(chat_answer(&msgs), first);
    }

    #[test]
    fn without_labels_the_answer_carries_the_hash() {
        let answer = chat_answer(&[("user", "hello")]);
        assert_eq!(
            answer,
            format!("mock answer {:08x}", fnv1a64(b"hello") as u32)
        );
        assert_ne!(answer, chat_answer(&[("user", "hello!")]));
        assert_eq!(
            chat_answer(&[]),
            format!("mock answer {:08x}", fnv1a64(b"") as u32)
        );
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        let a = embedding("abc", 32);
        assert_eq!(a.len(), 32);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(a, embedding("abc", 32));
        assert_ne!(a, embedding("abd", 32));
        assert!(embedding("abc", 0).is_empty());
    }

    #[test]
    fn base64_matches_reference() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(embedding_base64(&[1.0]), "AACAPw==");
        assert_eq!(embedding_base64(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
        assert_eq!(embedding_base64(&[]), "");
    }

    #[test]
    fn words_are_whitespace_separated() {
        assert_eq!(word_count("  one two\nthree\t"), 3);
        assert_eq!(word_count(""), 0);
    }
}
