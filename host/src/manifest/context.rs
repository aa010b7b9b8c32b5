//! What every section's resolution needs: the text (to turn spans into places), the file (to name
//! it) and its directory (to resolve relative paths), and the checks all sections share.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{Location, ManifestError};
use crate::text_position::line_column;

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a Path,
    pub(super) base_dir: PathBuf,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(text: &'a str, file: &'a Path) -> Self {
        Ctx {
            text,
            file,
            base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    pub(super) fn location(&self, offset: usize) -> Location {
        let (line, column) = line_column(self.text, offset);
        Location {
            file: self.file.to_path_buf(),
            line,
            column,
        }
    }

    /// The 1-based line of a byte offset, for messages that point at a second place.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    pub(super) fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        ManifestError::Invalid {
            at: self.location(span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(super) fn missing(&self, what: &[&str]) -> ManifestError {
        ManifestError::Missing {
            path: self.file.to_path_buf(),
            message: format!(
                "missing {}: a pipeline needs a [source], at least one [[operator]] and a [sink]",
                what.join(", ")
            ),
        }
    }

    /// Runs a value's own check (see `values`) and places its complaint at the value.
    pub(super) fn check<T, U>(
        &self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ManifestError> {
        check(value.get_ref()).map_err(|message| self.invalid(value.span(), field, message))
    }

    /// An optional setting: `default` when absent, else what the value's own check makes of it.
    pub(super) fn setting<T, U>(
        &self,
        value: &Option<Spanned<T>>,
        field: &str,
        default: U,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ManifestError> {
        match value {
            None => Ok(default),
            Some(v) => self.check(v, field, check),
        }
    }

    /// A non-empty path string, resolved against the manifest's directory.
    pub(super) fn path_value(
        &self,
        value: &Spanned<String>,
        field: &str,
    ) -> Result<PathBuf, ManifestError> {
        if value.get_ref().is_empty() {
            return Err(self.invalid(value.span(), field, "path must not be empty"));
        }
        Ok(self.base_dir.join(value.get_ref()))
    }

    /// One of a fixed set of names, as `choices` lists them.
    pub(super) fn choose<T: Copy>(
        &self,
        value: &Spanned<String>,
        field: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ManifestError> {
        let given = value.get_ref();
        choices
            .iter()
            .find(|(name, _)| *name == given)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let expected: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.invalid(
                    value.span(),
                    field,
                    format!(
                        "unknown value {given:?}; expected one of {}",
                        expected.join(", ")
                    ),
                )
            })
    }

    /// Rejects a key that does not belong to the chosen kind, so a typo'd kind is not silently
    /// combined with settings that would be ignored.
    pub(super) fn reject_for_kind<T>(
        &self,
        value: &Option<Spanned<T>>,
        field: &str,
        applies_to: &str,
    ) -> Result<(), ManifestError> {
        match value {
            Some(v) => Err(self.invalid(v.span(), field, format!("applies only to {applies_to}"))),
            None => Ok(()),
        }
    }

    pub(super) fn non_empty_string(
        &self,
        value: Option<Spanned<String>>,
        field: &str,
    ) -> Result<Option<String>, ManifestError> {
        match value {
            Some(v) if v.get_ref().is_empty() => {
                Err(self.invalid(v.span(), field, "must not be empty"))
            }
            Some(v) => Ok(Some(v.into_inner())),
            None => Ok(None),
        }
    }
}
