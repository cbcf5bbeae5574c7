//! How frames read in the pictures people look at (flamegraphs, the memory plot, the summary):
//! unless asked for, the import system is folded into one `<import system>` frame (from a
//! stack's first frozen-importlib frame to its last, with the modules imported on the way, so
//! a chain of nested imports is one frame over the module that allocated), and file paths
//! are shortened to what follows the package root (`http/server.py`,
//! `numpy/core/numeric.py`, `views/index.py`), with the full text kept for tooltips.
//!
//! Owns: which frames are the import system's, and the short form of a path.
//! Must not touch: the profile's frame table (it only reads it) or any file format; the
//! machine-read outputs (folded stacks, pprof, speedscope, JSON) keep the exact text.

use crate::profile::{FrameInfo, Profile};
use crate::sample::PageKind;
use std::collections::HashMap;

/// How frames are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStyle {
    /// Keep the import system's frames (`<frozen importlib._bootstrap>` and friends).
    pub show_imports: bool,
    /// Print file paths whole instead of package-relative.
    pub full_paths: bool,
}

impl FrameStyle {
    /// Every frame, paths whole: the text the machine-read outputs use.
    pub const EXACT: FrameStyle = FrameStyle {
        show_imports: true,
        full_paths: true,
    };
    /// The default of the pictures: import frames folded away, short paths.
    pub const READABLE: FrameStyle = FrameStyle {
        show_imports: false,
        full_paths: false,
    };
}

/// Whether `filename` belongs to the import system: the frozen bootstrap modules (3.3+), their
/// source files where they are not frozen, and zipimport.
pub fn is_import_system(filename: &str) -> bool {
    filename.starts_with("<frozen importlib")
        || filename == "<frozen zipimport>"
        || filename.ends_with("/importlib/_bootstrap.py")
        || filename.ends_with("/importlib/_bootstrap_external.py")
}

/// The package-relative form of `path`: what follows the last `site-packages/` or
/// `dist-packages/`, else what follows `lib/pythonX.Y/` (the standard library), else the path
/// relative to `project` (the directory the run's other files share). Pseudo-files
/// (`<string>`, `<frozen …>`) are unchanged.
pub fn short_path<'a>(path: &'a str, project: &str) -> &'a str {
    if !path.starts_with('/') {
        return path;
    }
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(at) = path.rfind(marker) {
            return &path[at + marker.len()..];
        }
    }
    if let Some(rest) = stdlib_relative(path) {
        return rest;
    }
    match path.strip_prefix(project) {
        Some(rest) if !project.is_empty() && rest.starts_with('/') => &rest[1..],
        _ => path,
    }
}

/// What follows `/lib/pythonX.Y/` (or `/lib/pythonX.Yt/`, `/lib/python3/`) in `path`.
fn stdlib_relative(path: &str) -> Option<&str> {
    let mut search = 0;
    while let Some(found) = path[search..].find("/lib/python") {
        let start = search + found + "/lib/python".len();
        let rest = &path[start..];
        let version_len = rest.find('/').filter(|&n| {
            rest[..n]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == 't')
        })?;
        if version_len > 0 {
            return Some(&rest[version_len + 1..]);
        }
        search = start;
    }
    None
}

/// [`project_root`] of a profile's frames: their source files, not the mapped files that
/// [`PageKind`] leaf frames name.
pub fn project_root_of(frames: &[FrameInfo]) -> String {
    project_root(
        frames
            .iter()
            .filter(|f| PageKind::of_frame(&f.function).is_none())
            .map(|f| f.filename.as_str()),
    )
}

/// The directory that the run's own files (absolute, neither installed packages, the
/// standard library nor a `bin/` directory's launcher scripts such as a venv's
/// `bin/gunicorn`) have in common: the script's directory for a one-file program.
pub fn project_root<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for path in paths {
        if !path.starts_with('/')
            || crate::memory::heap_hook::is_loader_file(path)
            || path.contains("/site-packages/")
            || path.contains("/dist-packages/")
            || stdlib_relative(path).is_some()
            || path.rsplit('/').nth(1) == Some("bin")
        {
            continue;
        }
        let dirs: Vec<&str> = match path.rsplit_once('/') {
            Some((dir, _)) => dir.split('/').collect(),
            None => continue,
        };
        common = Some(match common {
            None => dirs,
            Some(prev) => prev
                .iter()
                .zip(&dirs)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    common.map(|dirs| dirs.join("/")).unwrap_or_default()
}

/// The frame that stands for a folded import chain.
pub const IMPORT_SYSTEM: &str = "<import system>";

/// The label of every frame of one profile in one style.
#[derive(Debug, Clone)]
pub struct FrameLabels {
    /// Per frame id: its label, or `None` for a frame of the import system when folded.
    labels: Vec<Option<String>>,
    /// Short label → full label, for the labels that differ.
    full: HashMap<String, String>,
}

impl FrameLabels {
    /// Labels the frames of `profile` in `style`. Two files that shorten alike keep their
    /// full paths, so that a label never stands for two places.
    pub fn new(profile: &Profile, style: FrameStyle) -> FrameLabels {
        let frames = profile.frames();
        let project = project_root_of(frames);
        let shorten = |f: &FrameInfo| -> String {
            if style.full_paths {
                f.filename.clone()
            } else {
                short_path(&f.filename, &project).to_string()
            }
        };
        let mut owners: HashMap<String, &str> = HashMap::new();
        let mut ambiguous: Vec<String> = Vec::new();
        for frame in frames {
            let short = shorten(frame);
            match owners.get(&short) {
                Some(&owner) if owner != frame.filename => ambiguous.push(short),
                Some(_) => {}
                None => {
                    owners.insert(short, &frame.filename);
                }
            }
        }
        let mut labels = Vec::with_capacity(frames.len());
        let mut full = HashMap::new();
        for frame in frames {
            if !style.show_imports && is_import_system(&frame.filename) {
                labels.push(None);
                continue;
            }
            let short = shorten(frame);
            let file = if ambiguous.contains(&short) {
                frame.filename.as_str()
            } else {
                short.as_str()
            };
            let label = if frame.filename.is_empty() {
                frame.function.clone()
            } else {
                format!("{} ({file}:{})", frame.function, frame.line)
            };
            let whole = frame.to_string();
            if label != whole {
                full.insert(label.clone(), whole);
            }
            labels.push(Some(label));
        }
        FrameLabels { labels, full }
    }

    /// The label of frame `id`; `None` when it is folded away (or unknown).
    pub fn label(&self, id: u32) -> Option<&str> {
        self.labels.get(id as usize)?.as_deref()
    }

    /// The labels of a root-first stack of frame ids; with imports folded, the span from the
    /// first to the last import-system frame is one [`IMPORT_SYSTEM`] frame.
    pub fn stack(&self, ids: &[u32]) -> Vec<String> {
        let folded = |&id: &u32| self.labels.get(id as usize).is_some_and(Option::is_none);
        let label = |&id: &u32| self.label(id).unwrap_or("?").to_string();
        match (ids.iter().position(folded), ids.iter().rposition(folded)) {
            (Some(first), Some(last)) => {
                let mut stack: Vec<String> = ids[..first].iter().map(label).collect();
                stack.push(IMPORT_SYSTEM.to_string());
                stack.extend(ids[last + 1..].iter().map(label));
                stack
            }
            _ => ids.iter().map(label).collect(),
        }
    }

    /// The full text of a frame shown as `label`, where the two differ.
    pub fn full_text(&self, label: &str) -> Option<&str> {
        self.full.get(label).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_shorten_to_the_package() {
        let project = "/home/me/app";
        for (path, short) in [
            (
                "/root/.pyenv/versions/3.11.7/lib/python3.11/http/server.py",
                "http/server.py",
            ),
            (
                "/v/lib/python3.12/site-packages/numpy/core/numeric.py",
                "numpy/core/numeric.py",
            ),
            ("/usr/lib/python3/dist-packages/yaml/a.py", "yaml/a.py"),
            ("/usr/lib/python3.13t/json/decoder.py", "json/decoder.py"),
            ("/home/me/app/views/index.py", "views/index.py"),
            ("/srv/other.py", "/srv/other.py"),
            (
                "<frozen importlib._bootstrap>",
                "<frozen importlib._bootstrap>",
            ),
            ("<string>", "<string>"),
        ] {
            assert_eq!(short_path(path, project), short, "{path}");
        }
    }

    #[test]
    fn mapped_files_of_page_kind_frames_are_not_the_projects() {
        let frame = |function: &str, filename: &str| FrameInfo {
            function: function.to_string(),
            filename: filename.to_string(),
            line: 1,
            first_line: 1,
        };
        let frames = [
            frame("main", "/home/me/app/main.py"),
            frame("load", "/home/me/app/io/load.py"),
            frame(PageKind::FileBacked.frame_name(), "/data/big.bin"),
        ];
        assert_eq!(project_root_of(&frames), "/home/me/app");
    }

    #[test]
    fn the_project_is_what_its_own_files_share() {
        let paths = [
            "/home/me/app/main.py",
            "/home/me/app/views/index.py",
            "/usr/lib/python3.11/json/decoder.py",
            "<frozen importlib._bootstrap>",
        ];
        assert_eq!(project_root(paths.into_iter()), "/home/me/app");
        assert_eq!(project_root(["/a/b/x.py"].into_iter()), "/a/b");
        // A server started by its venv's launcher script: the script is not the project's.
        let served = ["/srv/site/app.py", "/opt/venv/bin/gunicorn"];
        assert_eq!(project_root(served.into_iter()), "/srv/site");
    }

    #[test]
    fn import_machinery_is_recognised() {
        assert!(is_import_system("<frozen importlib._bootstrap>"));
        assert!(is_import_system("<frozen importlib._bootstrap_external>"));
        assert!(is_import_system(
            "/usr/lib/python3.6/importlib/_bootstrap.py"
        ));
        assert!(!is_import_system("<frozen runpy>"));
        assert!(!is_import_system("/app/importlib_helpers.py"));
    }
}
