//! `waio dead-letters replay`: a manifest's pipeline run again over one of its dead-letter files.
//!
//! The replay is an ordinary run of the pipeline with four things changed, so that it has the
//! same ordering, backpressure, checkpoints and exactly-once outputs as `waio run`:
//! - the source is the dead-letter file: each line's record starts over at the operator where it
//!   failed (earlier operators pass it on unchanged); a line the source could not parse is
//!   parsed again (see `connectors::replay`);
//! - the outputs are new files (by default beside the dead-letter file): the output, and the
//!   dead letters of records that fail again. Nothing the original run wrote is touched, and the
//!   dead-letter file being replayed is only read;
//! - every operator dead-letters what fails again, whatever its `on_failure` / `on_timeout`: a
//!   replay goes through every record instead of stopping at the first that still fails;
//! - checkpoints, when the manifest has `[checkpoint]` or `--checkpoint-dir` is given, go to a
//!   directory of the replay's own, so an interrupted replay resumes where it stopped. Without
//!   them a replay run again starts over and rewrites its outputs.
//!
//! Every line is read and checked before anything runs: one that is not a dead letter, or names
//! a stage the manifest does not have, is an error naming the file and the line.

use std::io::BufRead;
use std::path::{Component, Path, PathBuf};

use crate::connectors::replay::decode;
use crate::connectors::source::{open_dead_letters, SourceError};
use crate::manifest::{
    CheckpointConfig, FieldMapping, Manifest, OutputFormat, Policy, SinkConfig, SourceConfig,
};

/// What the command line says; a path left `None` takes its default beside the dead letters.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The dead-letter file to replay.
    pub dead_letters: PathBuf,
    /// The replay's output (default `NAME.replayed.jsonl`).
    pub output: Option<PathBuf>,
    /// Where records that fail again go (default `NAME.again.jsonl`).
    pub again: Option<PathBuf>,
    /// The replay's checkpoints (default `NAME.replay-checkpoints` when the manifest has
    /// `[checkpoint]`; giving it turns checkpoints on).
    pub checkpoint_dir: Option<PathBuf>,
}

/// A replay ready to run.
#[derive(Debug)]
pub struct Replay {
    /// The pipeline to run: the manifest's, reading the dead letters and writing the new files.
    pub manifest: Manifest,
    /// Dead letters in the file.
    pub letters: u64,
    pub output: PathBuf,
    pub again: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{what} {} would overwrite {other}; a replay never writes there: choose another path with {flag}", path.display())]
    Overwrite {
        what: &'static str,
        path: PathBuf,
        other: String,
        flag: &'static str,
    },
}

/// Checks the dead-letter file (every line) and the paths, and makes the pipeline to run.
pub fn plan(manifest: &Manifest, options: &ReplayOptions) -> Result<Replay, ReplayError> {
    let input = &options.dead_letters;
    let operators: Vec<String> = manifest.operators.iter().map(|o| o.name.clone()).collect();
    let letters = check_letters(input, &operators)?;
    let beside = |suffix: &str| {
        let stem = input.file_stem().map_or_else(
            || "dead-letters".into(),
            |s| s.to_string_lossy().into_owned(),
        );
        input.with_file_name(format!("{stem}.{suffix}"))
    };
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| beside("replayed.jsonl"));
    let again = options
        .again
        .clone()
        .unwrap_or_else(|| beside("again.jsonl"));
    check_paths(manifest, input, &output, &again)?;
    let checkpoint = match (&options.checkpoint_dir, &manifest.checkpoint) {
        (Some(dir), Some(own)) => Some(CheckpointConfig {
            dir: dir.clone(),
            ..own.clone()
        }),
        (Some(dir), None) => Some(CheckpointConfig::in_dir(dir.clone())),
        (None, Some(own)) => Some(CheckpointConfig {
            dir: beside("replay-checkpoints"),
            ..own.clone()
        }),
        (None, None) => None,
    };
    if let (Some(replay), Some(own)) = (&checkpoint, &manifest.checkpoint) {
        if same_path(&replay.dir, &own.dir) {
            return Err(ReplayError::Overwrite {
                what: "the replay's checkpoint directory",
                path: replay.dir.clone(),
                other: "the pipeline's own checkpoints".into(),
                flag: "--checkpoint-dir",
            });
        }
    }
    let mut replay = manifest.clone();
    replay.source = SourceConfig::DeadLetters {
        path: input.clone(),
        operators,
        fields: match &manifest.source {
            SourceConfig::File { fields, .. } | SourceConfig::Stdin { fields } => fields.clone(),
            SourceConfig::DeadLetters { fields, .. } | SourceConfig::Serve { fields } => {
                fields.clone()
            }
            SourceConfig::Generator { .. } | SourceConfig::Kafka(_) => FieldMapping::default(),
        },
        event_time: manifest.event_time.clone(),
    };
    // Replayed records keep their event time, but there is no stream of event time to follow:
    // the replay generates no watermarks.
    replay.event_time = None;
    let (format, watermarks) = match &manifest.sink {
        SinkConfig::File {
            format, watermarks, ..
        }
        | SinkConfig::Stdout { format, watermarks } => (*format, *watermarks),
        SinkConfig::Discard | SinkConfig::Kafka(_) => (OutputFormat::Payload, false),
    };
    replay.sink = SinkConfig::File {
        path: output.clone(),
        format,
        watermarks,
    };
    replay.dead_letter.path = again.clone();
    // A replay reads a dead-letter file and writes files, whatever the pipeline's connectors.
    replay.dead_letter.kafka = None;
    for operator in &mut replay.operators {
        operator.on_failure = Policy::DeadLetter;
        operator.on_timeout = Policy::DeadLetter;
    }
    replay.checkpoint = checkpoint;
    Ok(Replay {
        manifest: replay,
        letters,
        output,
        again,
    })
}

/// Reads every line as the replay will: the number of dead letters, or the first line that
/// cannot be replayed. Blank lines are skipped, as the source skips them.
fn check_letters(path: &Path, operators: &[String]) -> Result<u64, SourceError> {
    let (file, _) = open_dead_letters(path)?;
    let label = path.display().to_string();
    let mut letters = 0;
    for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|cause| SourceError::Read {
            path: label.clone(),
            line: number,
            cause,
        })?;
        // As the source reads: a byte order mark at the start is skipped.
        let line = match number {
            1 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line),
            _ => &line,
        };
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        decode(text, operators).map_err(|cause| SourceError::DeadLetter {
            path: label.clone(),
            line: number,
            cause,
        })?;
        letters += 1;
    }
    Ok(letters)
}

/// The replay writes new files only: never onto the dead letters it reads, the pipeline's own
/// input and outputs, or one output onto the other.
fn check_paths(
    manifest: &Manifest,
    input: &Path,
    output: &Path,
    again: &Path,
) -> Result<(), ReplayError> {
    let mut taken: Vec<(&Path, String)> = vec![(
        input,
        format!("the dead letters being replayed ({})", input.display()),
    )];
    if let SourceConfig::File { path, .. } = &manifest.source {
        taken.push((path, format!("the pipeline's input ({})", path.display())));
    }
    if let SinkConfig::File { path, .. } = &manifest.sink {
        taken.push((path, format!("the pipeline's output ({})", path.display())));
    }
    let dead = &manifest.dead_letter.path;
    taken.push((
        dead,
        format!("the pipeline's dead letters ({})", dead.display()),
    ));
    let outputs = [
        ("the replay's output", output, "--output"),
        ("the replay's dead-letter file", again, "--dead-letters"),
    ];
    for (what, path, flag) in outputs {
        if let Some((_, other)) = taken.iter().find(|(p, _)| same_path(p, path)) {
            return Err(ReplayError::Overwrite {
                what,
                path: path.to_path_buf(),
                other: other.clone(),
                flag,
            });
        }
        taken.push((path, format!("{what} ({})", path.display())));
    }
    Ok(())
}

/// Whether two paths name the same file, also when it does not exist yet.
fn same_path(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b)
}

/// The absolute path without `.` and `..`, its longest existing part with symlinks resolved.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    for existing in normal.ancestors() {
        if let (Ok(real), Ok(rest)) = (
            std::fs::canonicalize(existing),
            normal.strip_prefix(existing),
        ) {
            return real.join(rest);
        }
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, checkpoint: &str) -> Manifest {
        let text = format!(
            r#"
[source]
kind = "file"
path = "in.jsonl"
key_field = "id"

[[operator]]
name = "triage"
plugin = "p.wasm"

[[operator]]
name = "answer"
plugin = "p.wasm"
on_failure = "fail"

[sink]
kind = "file"
path = "out.jsonl"
format = "envelope"

[dead_letter]
path = "dead.jsonl"
{checkpoint}
"#
        );
        Manifest::parse(&text, &dir.join("pipeline.toml")).unwrap()
    }

    fn options(dir: &Path) -> ReplayOptions {
        ReplayOptions {
            dead_letters: dir.join("dead.jsonl"),
            ..ReplayOptions::default()
        }
    }

    fn write_letters(dir: &Path, lines: &[&str]) {
        std::fs::write(dir.join("dead.jsonl"), lines.join("\n")).unwrap();
    }

    const LETTER: &str =
        r#"{"stage":"answer","reason":"failure","error":"x","line":1,"payload":{"id":1}}"#;

    /// The replay reads the dead letters, writes new files beside them, dead-letters whatever
    /// fails again and checkpoints into a directory of its own.
    #[test]
    fn a_replay_writes_new_files_and_dead_letters_what_fails_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_letters(dir, &[LETTER, "", LETTER]);
        let replay = plan(&manifest(dir, ""), &options(dir)).unwrap();
        assert_eq!(replay.letters, 2);
        assert_eq!(replay.output, dir.join("dead.replayed.jsonl"));
        assert_eq!(replay.again, dir.join("dead.again.jsonl"));
        let m = &replay.manifest;
        assert!(
            matches!(&m.source, SourceConfig::DeadLetters { path, operators, fields, .. }
            if *path == dir.join("dead.jsonl") && operators == &["triage", "answer"]
                && fields.key_field.as_deref() == Some("id"))
        );
        assert_eq!(
            m.sink,
            SinkConfig::File {
                path: dir.join("dead.replayed.jsonl"),
                format: OutputFormat::Envelope,
                watermarks: false
            }
        );
        assert_eq!(m.dead_letter.path, dir.join("dead.again.jsonl"));
        assert!(m
            .operators
            .iter()
            .all(|o| o.on_failure == Policy::DeadLetter && o.on_timeout == Policy::DeadLetter));
        assert_eq!(m.checkpoint, None);

        let with = manifest(dir, "[checkpoint]\ndir = \"state\"\ninterval = \"1s\"");
        let replay = plan(&with, &options(dir)).unwrap();
        let checkpoint = replay.manifest.checkpoint.unwrap();
        assert_eq!(checkpoint.dir, dir.join("dead.replay-checkpoints"));
        assert_eq!(checkpoint.interval, std::time::Duration::from_secs(1));
        let chosen = ReplayOptions {
            checkpoint_dir: Some(dir.join("mine")),
            ..options(dir)
        };
        let replay = plan(&manifest(dir, ""), &chosen).unwrap();
        assert_eq!(replay.manifest.checkpoint.unwrap().dir, dir.join("mine"));
    }

    #[test]
    fn a_replay_never_writes_onto_what_it_reads_or_the_pipeline_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_letters(dir, &[LETTER]);
        let m = manifest(dir, "[checkpoint]\ndir = \"state\"");
        let refused = |options: ReplayOptions| plan(&m, &options).unwrap_err().to_string();
        let error = refused(ReplayOptions {
            // The same file, named another way.
            output: Some(dir.join("sub/../dead.jsonl")),
            ..options(dir)
        });
        std::fs::create_dir(dir.join("sub")).unwrap();
        let error_existing = refused(ReplayOptions {
            output: Some(dir.join("sub/../dead.jsonl")),
            ..options(dir)
        });
        for error in [error, error_existing] {
            assert!(
                error.starts_with("the replay's output ")
                    && error.contains("would overwrite the dead letters being replayed")
                    && error.ends_with("choose another path with --output"),
                "{error}"
            );
        }
        let error = refused(ReplayOptions {
            again: Some(dir.join("out.jsonl")),
            ..options(dir)
        });
        assert!(
            error.contains("would overwrite the pipeline's output")
                && error.ends_with("--dead-letters"),
            "{error}"
        );
        let error = refused(ReplayOptions {
            output: Some(dir.join("in.jsonl")),
            ..options(dir)
        });
        assert!(error.contains("the pipeline's input"), "{error}");
        let error = refused(ReplayOptions {
            output: Some(dir.join("x.jsonl")),
            again: Some(dir.join("x.jsonl")),
            ..options(dir)
        });
        assert!(
            error.contains("would overwrite the replay's output"),
            "{error}"
        );
        let error = refused(ReplayOptions {
            checkpoint_dir: Some(dir.join("state")),
            ..options(dir)
        });
        assert!(error.contains("the pipeline's own checkpoints"), "{error}");
    }

    /// Every line is checked before anything runs; the error names the file and the line.
    #[test]
    fn a_line_that_cannot_be_replayed_is_named_before_anything_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let m = manifest(dir, "");
        let path = dir.join("dead.jsonl").display().to_string();
        write_letters(dir, &[LETTER, "", r#"{"id":1}"#]);
        let error = plan(&m, &options(dir)).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("{path}:3: not a dead letter: no \"stage\" field")
        );
        let unknown = LETTER.replace("answer", "summarize");
        write_letters(dir, &[LETTER, &unknown]);
        let error = plan(&m, &options(dir)).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{path}:2: stage \"summarize\" is not an operator")),
            "{error}"
        );
        std::fs::remove_file(dir.join("dead.jsonl")).unwrap();
        let error = plan(&m, &options(dir)).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot open dead letters {path}: ")),
            "{error}"
        );
        assert!(!dir.join("dead.again.jsonl").exists());
    }
}
