//! waio: a Flink-compatible async I/O operator runtime whose user functions are WebAssembly
//! components. Data flows one way: source -> operator chain -> sink, with a dead-letter side output.
//!
//! Errors: a message includes its cause, and then the error does not also return that cause from
//! `source()` (no field named `source`, no `#[source]` or `#[from]` beside a `{0}`): the binary
//! prints the whole chain (`{:#}`), which would say the cause twice.

pub mod admin;
pub mod answers;
pub mod cache;
pub mod checkpoint;
pub mod connectors;
pub mod cost;
pub mod counters;
pub mod event_time;
pub mod histogram;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod outbound;
pub mod pipeline;
pub mod plugin;
pub mod progress;
pub mod project;
pub mod record;
pub mod redis_url;
pub mod replay;
pub mod serve;
pub mod telemetry;
pub mod text_position;
pub mod watch;

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use crate::checkpoint::codec::CodecError;
    use crate::checkpoint::commit::CommitError;
    use crate::checkpoint::coordinator::CoordinatorError;
    use crate::checkpoint::store::CheckpointError;
    use crate::connectors::source::SourceError;
    use crate::manifest::{Location, ManifestError};
    use crate::operator::OperatorError;
    use crate::pipeline::PipelineError;
    use crate::plugin::PluginError;
    use crate::project::ProjectError;

    const CAUSE: &str = "disk on fire";

    fn cause() -> io::Error {
        io::Error::other(CAUSE)
    }

    fn at() -> Location {
        Location {
            file: PathBuf::from("pipeline.toml"),
            line: 5,
            column: 8,
        }
    }

    fn commit_error() -> CommitError {
        CommitError::Io {
            action: "cannot write",
            path: PathBuf::from("out.jsonl"),
            cause: cause(),
        }
    }

    /// The error as `waio` prints it: anyhow's `{:#}`, the message and then every `source()`.
    fn printed(error: impl std::error::Error + Send + Sync + 'static) -> String {
        format!("{:#}", anyhow::Error::new(error))
    }

    #[track_caller]
    fn assert_once(printed: String, cause: &str) {
        assert_eq!(printed.matches(cause).count(), 1, "{printed}");
    }

    /// Every error whose message includes its cause, as the binary prints it: the cause once
    /// (it used to come twice, e.g. "open failed: X: plugin p: open failed: X").
    #[test]
    fn printed_errors_give_their_cause_once() {
        assert_once(
            printed(ManifestError::Read {
                path: "pipeline.toml".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(SourceError::Open {
                at: at(),
                path: "in.jsonl".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(SourceError::Read {
                path: "in.jsonl".into(),
                line: 3,
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(PluginError::Read {
                path: "p.wasm".into(),
                at: at(),
                cause: cause(),
            }),
            CAUSE,
        );
        let open_failed = || OperatorError::Plugin {
            operator: "op".into(),
            cause: PluginError::Open {
                plugin: "p".into(),
                message: "unknown key bogus".into(),
            },
        };
        assert_once(printed(open_failed()), "open failed: unknown key bogus");
        assert_once(
            printed(PipelineError::Operator(open_failed())),
            "open failed: unknown key bogus",
        );
        assert_once(printed(commit_error()), CAUSE);
        assert_once(
            printed(CoordinatorError::Commit {
                id: 4,
                cause: commit_error(),
            }),
            CAUSE,
        );
        assert_once(printed(PipelineError::from(commit_error())), CAUSE);
        assert_once(
            printed(ProjectError::Read {
                path: "waio-plugin.toml".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(ProjectError::Spawn {
                name: "p".into(),
                command: "cargo".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(ProjectError::Write {
                path: "src/lib.rs".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        assert_once(
            printed(CheckpointError::CreateDir {
                dir: "state".into(),
                cause: cause(),
            }),
            CAUSE,
        );
        // A real RocksDB error: its type cannot be built otherwise.
        let rocks = match rocksdb::DB::open_default("/dev/null/waio-test") {
            Ok(_) => panic!("RocksDB opened a database under /dev/null"),
            Err(e) => e,
        };
        let text = rocks.to_string();
        for error in [
            CheckpointError::Open {
                dir: "state".into(),
                cause: rocks.clone(),
            },
            CheckpointError::Read {
                dir: "state".into(),
                cause: rocks.clone(),
            },
            CheckpointError::Write {
                dir: "state".into(),
                id: 3,
                cause: rocks.clone(),
            },
            CheckpointError::Prune {
                dir: "state".into(),
                cause: rocks.clone(),
            },
        ] {
            assert_once(printed(error), &text);
        }
        assert_once(
            printed(CheckpointError::Codec {
                dir: "state".into(),
                id: 2,
                part: "meta".into(),
                cause: CodecError::InvalidUtf8 { what: "name" },
            }),
            "name is not valid UTF-8",
        );
        assert_once(
            printed(waio_mock_provider::MockError::Bind {
                addr: ([127, 0, 0, 1], 9).into(),
                cause: cause(),
            }),
            CAUSE,
        );
    }
}
