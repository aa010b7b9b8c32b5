//! Where a byte offset stands in a text, as people count: the one line/column rule of the host,
//! used for every file position an error names (the manifest, `waio-plugin.toml`).

/// 1-based line and column of the byte `offset` in `text`. The column counts characters, not
/// bytes, so a key after `"é" = 1` is reported where an editor shows it. An offset past the end
/// gives the position just after the last character, and so does one inside a multi-byte
/// character for that character (toml never gives such offsets; this only never panics).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn the_first_byte_is_line_1_column_1() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn a_newline_starts_the_next_line_at_column_1() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 4), (1, 5));
        // The newline itself is still on line 1.
        assert_eq!(line_column(text, 5), (1, 6));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes, "→" three: `x` stands at the 5th character.
        let text = "\"é→\"x";
        let x = text.find('x').unwrap();
        assert_eq!(x, 7);
        assert_eq!(line_column(text, x), (1, 5));
    }

    #[test]
    fn an_offset_inside_a_character_or_past_the_end_does_not_panic() {
        let text = "é\n";
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 100), (2, 1));
    }
}
