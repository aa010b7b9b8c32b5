//! Errors serde and toml raise while reading the file (bad TOML, unknown keys, wrong types),
//! located and named by the field they concern: toml's error gives only a span, so the field
//! path (`operator[1].capacity`) is found in the document that `toml_edit` parses with spans.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::context::Ctx;
use super::error::ManifestError;

/// The names of each field that has aliases (the serde aliases of the sections; the first name
/// is the field's own), by top-level table: a table that sets two of them gets an error naming
/// both.
pub(super) const ALIASES: &[(&str, &[&str])] = &[
    (
        "operator",
        &[
            "capacity",
            "max_concurrent_requests",
            "max-concurrent-requests",
        ],
    ),
    (
        "operator",
        &["timeout", "request_timeout", "request-timeout"],
    ),
    ("operator", &["ordered", "ordered_output", "ordered-output"]),
    ("operator", &["output_mode", "output-mode"]),
    ("event_time", &["max_out_of_orderness", "out_of_orderness"]),
    (
        "event_time",
        &["watermark_interval", "auto_watermark_interval"],
    ),
];

/// The error for a file serde could not read into the raw sections.
pub(super) fn syntax_error(ctx: &Ctx<'_>, err: &toml::de::Error) -> ManifestError {
    // toml messages may span lines; one line reads better after "file:line:col: ".
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // serde says "duplicate field `capacity`" at the table for a key and its alias: name both.
    if err.message().starts_with("duplicate field") {
        if let Some(conflict) = alias_conflict(ctx) {
            return conflict;
        }
    }
    let Some(span) = err.span() else {
        return ManifestError::Syntax {
            at: ctx.location(0),
            message,
        };
    };
    let message = match field_path_at(ctx.text, span.start) {
        Some(field) if !field.is_empty() => format!("{field}: {message}"),
        _ => message,
    };
    ManifestError::Syntax {
        at: ctx.location(span.start),
        message,
    }
}

/// A key as written in the file, with where it starts.
type Given<'a> = (&'a str, usize);

/// The first table, in file order, that sets a field under two of its names (`ALIASES`).
fn alias_conflict(ctx: &Ctx<'_>) -> Option<ManifestError> {
    let doc = ImDocument::parse(ctx.text).ok()?;
    // (field path, the first key, the second key), the earliest second key wins.
    let mut found: Option<(String, Given<'_>, Given<'_>)> = None;
    for (name, item) in doc.as_table().iter() {
        let groups = ALIASES.iter().filter(|(table, _)| *table == name);
        for (_, names) in groups {
            for (table, entries) in tables_of(name, item) {
                let Some((first, second)) = first_two_given(entries, names) else {
                    continue;
                };
                if found.as_ref().is_none_or(|f| second.1 < f.2 .1) {
                    found = Some((format!("{table}.{}", names[0]), first, second));
                }
            }
        }
    }
    let (field, (first, first_at), (second, second_at)) = found?;
    let (first_line, first_column) = crate::text_position::line_column(ctx.text, first_at);
    let (line, column) = crate::text_position::line_column(ctx.text, second_at);
    Some(ctx.invalid(
        second_at..second_at,
        field,
        format!(
            "set twice, by `{first}` (line {first_line}, column {first_column}) and `{second}` (line {line}, column {column}), which name the same setting; keep one"
        ),
    ))
}

/// The tables a top-level item holds, with their paths: `[event_time]` is one table,
/// `[[operator]]` an array of them (`operator[N]`).
fn tables_of<'a>(name: &str, item: &'a Item) -> Vec<(String, &'a dyn TableLike)> {
    if let Some(table) = item.as_table_like() {
        return vec![(name.to_owned(), table)];
    }
    if let Some(tables) = item.as_array_of_tables() {
        return tables
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{name}[{i}]"), t as &dyn TableLike))
            .collect();
    }
    match item.as_array() {
        Some(values) => values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let table = v.as_inline_table()?;
                Some((format!("{name}[{i}]"), table as &dyn TableLike))
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The first two keys of `table`, in file order, that are among `names`.
fn first_two_given<'a>(table: &'a dyn TableLike, names: &[&str]) -> Option<(Given<'a>, Given<'a>)> {
    let mut given: Vec<Given<'a>> = table
        .iter()
        .filter(|(name, _)| names.contains(name))
        .filter_map(|(name, _)| {
            let (key, _) = table.get_key_value(name)?;
            Some((key.get(), key.span()?.start))
        })
        .collect();
    given.sort_by_key(|(_, start)| *start);
    match given[..] {
        [first, second, ..] => Some((first, second)),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path (`operator[1].capacity`) of the narrowest key or value whose span holds `offset`.
fn field_path_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut search = PathSearch {
        offset,
        trail: Vec::new(),
        best: None,
    };
    search.table(doc.as_table());
    let (_, segments) = search.best?;
    let mut path = String::new();
    for seg in segments {
        match seg {
            Segment::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key_segment(k));
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    Some(path)
}

/// A walk of the document that keeps the narrowest span holding `offset`, with its path.
struct PathSearch<'a> {
    offset: usize,
    trail: Vec<Segment<'a>>,
    /// (span width, path) of the best hit so far.
    best: Option<(usize, Vec<Segment<'a>>)>,
}

impl<'a> PathSearch<'a> {
    fn consider(&mut self, span: Option<Range<usize>>) {
        let Some(span) = span else { return };
        let offset = self.offset;
        // Empty spans (toml gives some at end of input) still count at their start.
        let hit = span.contains(&offset) || (span.is_empty() && span.start == offset);
        let width = span.end - span.start;
        // `<=`: on a tie the deeper entry, visited later, wins.
        if hit && self.best.as_ref().is_none_or(|(w, _)| width <= *w) {
            self.best = Some((width, self.trail.clone()));
        }
    }

    fn table(&mut self, table: &'a dyn TableLike) {
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            self.trail.push(Segment::Key(key.get()));
            self.consider(key.span());
            self.consider(item.span());
            self.item(item);
            self.trail.pop();
        }
    }

    fn item(&mut self, item: &'a Item) {
        match item {
            Item::None => {}
            Item::Value(value) => self.value(value),
            Item::Table(table) => self.table(table),
            Item::ArrayOfTables(tables) => {
                for (i, table) in tables.iter().enumerate() {
                    self.trail.push(Segment::Index(i));
                    self.consider(table.span());
                    self.table(table);
                    self.trail.pop();
                }
            }
        }
    }

    fn value(&mut self, value: &'a Value) {
        match value {
            Value::Array(values) => {
                for (i, value) in values.iter().enumerate() {
                    self.trail.push(Segment::Index(i));
                    self.consider(value.span());
                    self.value(value);
                    self.trail.pop();
                }
            }
            Value::InlineTable(table) => self.table(table),
            _ => {}
        }
    }
}

/// A key as it would be written in a dotted TOML path: bare when possible, quoted otherwise.
pub(super) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn at(text: &str, needle: &str) -> usize {
        text.find(needle).expect("needle in text")
    }

    #[test]
    fn the_path_goes_through_inline_tables_arrays_and_quoted_keys() {
        let text = "operator = [{ plugin = \"a\" }, { plugin = \"b\", config = { \"my key\" = [1, { x = 2 }] } }]\n";
        assert_eq!(
            field_path_at(text, at(text, "x =")).as_deref(),
            Some("operator[1].config.\"my key\"[1].x")
        );
        // On the value the path is the key's too; on the array brackets, the array's.
        assert_eq!(
            field_path_at(text, at(text, "\"b\"")).as_deref(),
            Some("operator[1].plugin")
        );
        assert_eq!(
            field_path_at(text, at(text, "[1,")).as_deref(),
            Some("operator[1].config.\"my key\"")
        );
    }

    #[test]
    fn the_path_names_the_entry_of_an_array_of_tables() {
        let text = "[[operator]]\nplugin = \"a\"\n\n[[operator]]\nplugin = \"b\"\n[operator.config]\nlimits = { max = 3 }\n";
        assert_eq!(
            field_path_at(text, at(text, "max")).as_deref(),
            Some("operator[1].config.limits.max")
        );
        assert_eq!(
            field_path_at(text, at(text, "plugin = \"b\"")).as_deref(),
            Some("operator[1].plugin")
        );
    }

    #[test]
    fn text_that_is_not_toml_has_no_path() {
        assert_eq!(field_path_at("[source\nkind = 1", 3), None);
    }

    /// (line, column, field) of the alias conflict in `text`, if any.
    fn conflict(text: &str) -> Option<(usize, usize, String)> {
        match alias_conflict(&Ctx::new(text, Path::new("m.toml")))? {
            ManifestError::Invalid { at, field, .. } => Some((at.line, at.column, field)),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_alias_conflict_is_found_in_inline_tables_too() {
        let text =
            "operator = [{ plugin = \"a\" }, { capacity = 1, max_concurrent_requests = 2 }]\n";
        let column = at(text, "max_concurrent") + 1;
        assert_eq!(
            conflict(text),
            Some((1, column, "operator[1].capacity".to_owned()))
        );
        assert_eq!(
            conflict("operator = [{ capacity = 1, timeout = 2 }]\n"),
            None
        );
    }

    #[test]
    fn the_conflict_whose_second_key_comes_first_in_the_file_is_named() {
        let text = "[event_time]\nfield = \"t\"\nout_of_orderness = 1\nmax_out_of_orderness = 2\n\n[[operator]]\nplugin = \"p\"\nordered = true\nordered-output = true\n";
        assert_eq!(
            conflict(text),
            Some((4, 1, "event_time.max_out_of_orderness".to_owned()))
        );
    }
}
