//! Plugin projects: `waio-plugin.toml` names how a plugin is built (as Spin's manifest does), so
//! `waio plugin build` and `waio run --build` work the same for every language.
//!
//! ```toml
//! name = "classify"
//! language = "python"        # rust | python | js | c
//! build = "sh build.sh"      # run with `sh -c` in the project directory
//! output = "classify.wasm"   # what the build produces, relative to the project directory
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::text_position::line_column;

pub const PROJECT_FILE: &str = "waio-plugin.toml";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot start the build of {name} (`{command}`): {cause}")]
    Spawn {
        name: String,
        command: String,
        cause: std::io::Error,
    },
    #[error("the build of {name} failed ({status}): `{command}` in {}", dir.display())]
    BuildFailed {
        name: String,
        command: String,
        dir: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("the build of {name} succeeded but did not produce {}", output.display())]
    NoOutput { name: String, output: PathBuf },
    #[error("unknown language {0:?}: choose rust, python, js or c")]
    UnknownLanguage(String),
    #[error("invalid plugin name {0:?}: use lowercase letters, digits and dashes, starting with a letter")]
    BadName(String),
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
    Js,
    C,
}

impl std::str::FromStr for Language {
    type Err = ProjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Language::Rust),
            "python" | "py" => Ok(Language::Python),
            "js" | "javascript" => Ok(Language::Js),
            "c" => Ok(Language::C),
            other => Err(ProjectError::UnknownLanguage(other.to_string())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: String,
    language: Language,
    build: String,
    output: String,
}

#[derive(Debug, Clone)]
pub struct PluginProject {
    pub dir: PathBuf,
    pub name: String,
    pub language: Language,
    pub build: String,
    /// Absolute (or relative to the cwd) path of the built component.
    pub output: PathBuf,
}

impl PluginProject {
    /// Reads `DIR/waio-plugin.toml`.
    pub fn load(dir: &Path) -> Result<Self, ProjectError> {
        let path = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
            path: path.clone(),
            cause: source,
        })?;
        let raw: RawProject = toml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(&text, s.start))
                .unwrap_or((1, 1));
            ProjectError::Invalid {
                path: path.clone(),
                line,
                column,
                message: e.message().replace('\n', " "),
            }
        })?;
        Ok(PluginProject {
            dir: dir.to_path_buf(),
            name: raw.name,
            language: raw.language,
            build: raw.build,
            output: dir.join(raw.output),
        })
    }

    /// Runs the build command in the project directory; returns the component's path.
    pub fn build(&self) -> Result<PathBuf, ProjectError> {
        tracing::info!(plugin = %self.name, "building: {}", self.build);
        let status = Command::new("sh")
            .arg("-c")
            .arg(&self.build)
            .current_dir(&self.dir)
            .status()
            .map_err(|source| ProjectError::Spawn {
                name: self.name.clone(),
                command: self.build.clone(),
                cause: source,
            })?;
        if !status.success() {
            return Err(ProjectError::BuildFailed {
                name: self.name.clone(),
                command: self.build.clone(),
                dir: self.dir.clone(),
                status,
            });
        }
        if !self.output.exists() {
            return Err(ProjectError::NoOutput {
                name: self.name.clone(),
                output: self.output.clone(),
            });
        }
        Ok(self.output.clone())
    }
}

/// One file of a project template; `{{name}}`, `{{crate_name}}` and `{{repo}}` are filled in.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
}

/// Files every project gets: a pipeline that runs it against the built-in mock, and sample events.
const COMMON_FILES: &[TemplateFile] = &[
    TemplateFile {
        path: "pipeline.toml",
        text: include_str!("../templates/pipeline.toml"),
    },
    TemplateFile {
        path: "events.jsonl",
        text: include_str!("../templates/events.jsonl"),
    },
];

/// The language's own files.
fn template(language: Language) -> &'static [TemplateFile] {
    match language {
        Language::Rust => &[
            TemplateFile {
                path: "waio-plugin.toml",
                text: include_str!("../templates/rust/waio-plugin.toml"),
            },
            TemplateFile {
                path: "Cargo.toml",
                text: include_str!("../templates/rust/Cargo.toml.template"),
            },
            TemplateFile {
                path: "src/lib.rs",
                text: include_str!("../templates/rust/lib.rs"),
            },
        ],
        Language::Python => &[
            TemplateFile {
                path: "waio-plugin.toml",
                text: include_str!("../templates/python/waio-plugin.toml"),
            },
            TemplateFile {
                path: "app.py",
                text: include_str!("../templates/python/app.py"),
            },
        ],
        Language::Js => &[
            TemplateFile {
                path: "waio-plugin.toml",
                text: include_str!("../templates/js/waio-plugin.toml"),
            },
            TemplateFile {
                path: "plugin.js",
                text: include_str!("../templates/js/plugin.js"),
            },
        ],
        Language::C => &[
            TemplateFile {
                path: "waio-plugin.toml",
                text: include_str!("../templates/c/waio-plugin.toml"),
            },
            TemplateFile {
                path: "plugin.c",
                text: include_str!("../templates/c/plugin.c"),
            },
        ],
    }
}

/// The repository the SDKs live in: `$WAIO_HOME`, else where this binary was built from.
pub fn waio_home() -> PathBuf {
    std::env::var_os("WAIO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Creates `dest` (a new directory) with a buildable plugin project named `name`.
pub fn scaffold(name: &str, language: Language, dest: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ProjectError::BadName(name.to_string()));
    }
    if dest.exists() {
        return Err(ProjectError::Exists(dest.to_path_buf()));
    }
    let files = template(language);
    if files.is_empty() {
        return Err(ProjectError::UnknownLanguage(format!(
            "{language:?} (no template yet)"
        )));
    }
    let repo = waio_home();
    let repo = repo.canonicalize().unwrap_or(repo);
    let render = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate_name}}", &name.replace('-', "_"))
            .replace("{{repo}}", &repo.display().to_string())
    };
    // The pipeline names the component the project's build produces.
    let output = files
        .iter()
        .find(|f| f.path == PROJECT_FILE)
        .and_then(|f| toml::from_str::<RawProject>(&render(f.text)).ok())
        .map(|p| p.output)
        .unwrap_or_default();
    let mut written = Vec::new();
    for file in files.iter().chain(COMMON_FILES) {
        let path = dest.join(file.path);
        let text = render(file.text).replace("{{output}}", &output);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ProjectError::Write {
                path: parent.to_path_buf(),
                cause: source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ProjectError::Write {
            path: path.clone(),
            cause: source,
        })?;
        written.push(path);
    }
    Ok(written)
}
