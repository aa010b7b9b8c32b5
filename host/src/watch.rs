//! `waio run --watch`: the manifest and every operator's plugin file are watched, and a change
//! asks the running pipeline for a hot reload. With `--build`, the sources of each operator's
//! plugin project are watched too: a change rebuilds the project, and the component the build
//! writes is then picked up like any other plugin file.
//!
//! Each file's parent directory is watched, not the file: editors and build tools replace a
//! file by renaming a new one over it, and a symlink swap is a rename too. Events are debounced
//! (a burst of writes is one change), and a reload that finds nothing changed does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};

use crate::manifest::Manifest;
use crate::pipeline::{PipelineHandle, ReloadScope};
use crate::project::PluginProject;

/// How long a burst of file events may last before it counts as one change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Directories of a project that its build writes, or tools keep: changes there are not edits.
const NOT_SOURCES: &[&str] = &[
    "target",
    "node_modules",
    "__pycache__",
    ".git",
    "dist",
    "build",
];

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("--watch: cannot watch {}: {cause}", path.display())]
    Watch {
        path: PathBuf,
        cause: notify_debouncer_mini::notify::Error,
    },
    #[error("--watch: cannot find {}: {cause}", path.display())]
    Missing {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Project(#[from] crate::project::ProjectError),
}

/// What the watcher reacts to.
#[derive(Debug, Default)]
struct Targets {
    /// Directory -> names of the files in it whose change asks for a reload.
    files: BTreeMap<PathBuf, BTreeSet<OsString>>,
    /// What each watched file was when last seen. Reading a file is an event too (the reload
    /// itself reads them): only a file whose stamp moved counts as changed.
    stamps: BTreeMap<PathBuf, Option<FileStamp>>,
    /// Plugin projects whose source changes ask for a build, with the fingerprint of their
    /// sources at the last build (a build that writes a file among the sources triggers at
    /// most one more build, never a loop).
    projects: Vec<(PluginProject, u64)>,
}

/// A file's identity and last change: a rename over it changes the inode, a write its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

impl Targets {
    fn of(manifest: &Manifest, build: bool) -> Result<Targets, WatchError> {
        let mut targets = Targets::default();
        targets.add_file(&manifest.path)?;
        for operator in &manifest.operators {
            targets.add_file(&operator.plugin)?;
            if let (true, Some(dir)) = (build, &operator.build) {
                let mut project = PluginProject::load(dir)?;
                project.dir = canonical(&project.dir)?;
                let sources = fingerprint(&project.dir);
                targets.projects.push((project, sources));
            }
        }
        Ok(targets)
    }

    /// Watches the file's directory for it; for a symlink, its target's too.
    fn add_file(&mut self, path: &Path) -> Result<(), WatchError> {
        let mut add = |path: &Path| -> Result<(), WatchError> {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Ok(());
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let dir = canonical(dir)?;
            self.stamps.insert(dir.join(name), stamp(path));
            self.files.entry(dir).or_default().insert(name.to_owned());
            Ok(())
        };
        add(path)?;
        if path.is_symlink() {
            if let Ok(target) = std::fs::canonicalize(path) {
                add(&target)?;
            }
        }
        Ok(())
    }

    /// Whether `path` is a watched file.
    fn is_watched_file(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        self.files
            .get(dir)
            .is_some_and(|names| names.contains(name))
    }

    /// Whether a watched file changed since it was last seen (and remembers it as it is now).
    fn changed(&mut self, path: &Path) -> bool {
        if !self.is_watched_file(path) {
            return false;
        }
        let now = stamp(path);
        let before = self.stamps.insert(path.to_path_buf(), now);
        before.flatten() != now
    }

    /// The index of the project whose sources hold `path`.
    fn project_of(&self, path: &Path) -> Option<usize> {
        self.projects
            .iter()
            .position(|(project, _)| path.strip_prefix(&project.dir).is_ok_and(is_source))
    }

    /// Whether the project's sources differ from what its last build saw (and remembers them).
    fn sources_changed(&mut self, index: usize) -> bool {
        let (project, seen) = &mut self.projects[index];
        let now = fingerprint(&project.dir);
        std::mem::replace(seen, now) != now
    }
}

/// Extensions of the files a plugin is built from, in the languages waio builds. Anything else
/// in a project (a log, sample input, a component) is no reason to rebuild.
const SOURCE_EXTENSIONS: &[&str] = &[
    "rs", "toml", "lock", "wit", "py", "js", "mjs", "cjs", "ts", "json", "c", "h",
];

/// Whether a path inside a project is one of its sources, or a directory that may hold some;
/// not something a build or a tool writes (`target/`, `.git/`, `__pycache__/`).
fn is_source(inside: &Path) -> bool {
    let generated = inside.components().any(|c| match c {
        Component::Normal(part) => {
            NOT_SOURCES.iter().any(|n| part == *n) || part.to_string_lossy().starts_with('.')
        }
        _ => false,
    });
    let source = inside
        .extension()
        .and_then(|e| e.to_str())
        .is_none_or(|e| SOURCE_EXTENSIONS.contains(&e));
    !generated && source
}

/// A digest of the names, sizes and modification times of a project's sources.
fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(root: &Path, dir: &Path, hasher: &mut impl Hasher) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Ok(inside) = path.strip_prefix(root) else {
                continue;
            };
            if !is_source(inside) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                walk(root, &path, hasher);
            } else {
                inside.hash(hasher);
                meta.len().hash(hasher);
                meta.modified().ok().hash(hasher);
            }
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    walk(dir, dir, &mut hasher);
    hasher.finish()
}

fn canonical(path: &Path) -> Result<PathBuf, WatchError> {
    std::fs::canonicalize(path).map_err(|cause| WatchError::Missing {
        path: path.to_path_buf(),
        cause,
    })
}

/// Watches until dropped.
pub struct Watching {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Starts watching what `manifest` names (and, with `build`, its plugin projects' sources);
/// changes ask `handle` for reloads.
pub fn start(
    manifest: &Manifest,
    build: bool,
    handle: PipelineHandle,
) -> Result<Watching, WatchError> {
    let mut targets = Targets::of(manifest, build)?;
    // A directory inside a watched project is seen through the project's recursive watch.
    let projects: Vec<PathBuf> = targets
        .projects
        .iter()
        .map(|(p, _)| p.dir.clone())
        .collect();
    let dirs: Vec<(PathBuf, RecursiveMode)> = targets
        .files
        .keys()
        .filter(|dir| !projects.iter().any(|p| dir.starts_with(p)))
        .map(|dir| (dir.clone(), RecursiveMode::NonRecursive))
        .chain(
            projects
                .iter()
                .map(|p| (p.clone(), RecursiveMode::Recursive)),
        )
        .collect();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| match events {
        Ok(events) => react(
            &mut targets,
            &handle,
            events.iter().map(|e| e.path.as_path()),
        ),
        Err(error) => tracing::warn!("--watch: {error}"),
    })
    .map_err(|cause| WatchError::Watch {
        path: manifest.path.clone(),
        cause,
    })?;
    for (dir, mode) in dirs {
        debouncer
            .watcher()
            .watch(&dir, mode)
            .map_err(|cause| WatchError::Watch { path: dir, cause })?;
    }
    tracing::info!("watching the manifest and the plugins: a change reloads them");
    Ok(Watching {
        _debouncer: debouncer,
    })
}

/// Builds the projects whose sources changed (on the watcher's thread: events meanwhile wait),
/// then asks for a reload if a watched file changed.
fn react<'a>(
    targets: &mut Targets,
    handle: &PipelineHandle,
    paths: impl Iterator<Item = &'a Path>,
) {
    let mut reload = false;
    let mut builds: Vec<usize> = Vec::new();
    for path in paths {
        reload |= targets.changed(path);
        if let Some(index) = targets.project_of(path) {
            if !builds.contains(&index) {
                builds.push(index);
            }
        }
    }
    for index in builds {
        if !targets.sources_changed(index) {
            continue;
        }
        let project = targets.projects[index].0.clone();
        tracing::info!(plugin = %project.name, "sources changed: building");
        if let Err(error) = project.build() {
            tracing::warn!("{error}; the running version goes on");
        }
        // The build rewrote the component: reload now rather than on its event.
        reload |= targets.changed(&project.output);
    }
    if reload {
        tracing::info!("a watched file changed: reloading");
        handle.request_reload(ReloadScope::All);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(dir: &Path) -> PluginProject {
        PluginProject {
            dir: dir.to_path_buf(),
            name: "p".into(),
            language: crate::project::Language::Rust,
            build: "true".into(),
            output: dir.join("target/p.wasm"),
        }
    }

    #[test]
    fn only_the_named_files_and_project_sources_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = canonical(dir.path()).expect("canonical");
        std::fs::write(root.join("plugin.wasm"), b"x").expect("write");
        let mut targets = Targets::default();
        targets.add_file(&root.join("plugin.wasm")).expect("add");
        targets.projects.push((project(&root.join("proj")), 0));
        assert!(targets.is_watched_file(&root.join("plugin.wasm")));
        assert!(!targets.is_watched_file(&root.join("plugin.wasm.tmp")));
        // Read, it is unchanged; replaced by a rename, it changed, once.
        let _ = std::fs::read(root.join("plugin.wasm"));
        assert!(!targets.changed(&root.join("plugin.wasm")));
        std::fs::write(root.join("new.wasm"), b"y").expect("write");
        std::fs::rename(root.join("new.wasm"), root.join("plugin.wasm")).expect("rename");
        assert!(targets.changed(&root.join("plugin.wasm")));
        assert!(!targets.changed(&root.join("plugin.wasm")));
        assert!(targets.project_of(&root.join("proj/src/lib.rs")).is_some());
        for generated in [
            "proj/target/x.rs",
            "proj/out.wasm",
            "proj/.git/HEAD",
            "proj/__pycache__/a.pyc",
            "proj/err.log",
        ] {
            assert!(
                targets.project_of(&root.join(generated)).is_none(),
                "{generated}"
            );
        }
        assert!(targets.project_of(&root.join("elsewhere/lib.rs")).is_none());
    }

    #[test]
    fn a_symlinked_plugin_is_watched_where_it_points_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = canonical(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("builds")).expect("mkdir");
        std::fs::write(root.join("builds/v1.wasm"), b"x").expect("write");
        std::os::unix::fs::symlink(root.join("builds/v1.wasm"), root.join("current.wasm"))
            .expect("symlink");
        let mut targets = Targets::default();
        targets.add_file(&root.join("current.wasm")).expect("add");
        assert!(targets.is_watched_file(&root.join("current.wasm")));
        assert!(targets.is_watched_file(&root.join("builds/v1.wasm")));
    }
}
