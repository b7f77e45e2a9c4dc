//! A repo that is a plain directory on disk.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use super::SourceError;
use baton_core::spec::load::{parse_config, RepoConfig, Snapshot, SourceFile, CONFIG_FILE};
use baton_core::spec::{AppId, Diagnostic, Severity};

/// Spec file extensions; anything else under the apps dir (READMEs, ...) is ignored.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Read `baton.yaml` and every spec file under the apps dir. Files over the size limit are not
/// read; symlinks (to files or directories) that resolve outside the repo are refused, and so
/// are symlink loops and anything that is not a regular file (a FIFO, socket or device would
/// block or feed endless bytes: their type is checked before they are opened). All of these
/// become diagnostics; a directory that could not be walked makes the repo incomplete (the apps
/// in it are unknown, so nothing is deleted).
pub fn read_dir(root: &Path) -> Result<Snapshot, SourceError> {
    let unreadable = |source| SourceError::Unreadable {
        path: root.to_path_buf(),
        source,
    };
    let root = fs::canonicalize(root).map_err(unreadable)?;
    if !root.is_dir() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let (config, config_diags, mut diagnostics) = config_of(&root);
    if config_diags.iter().any(|d| d.severity == Severity::Error) || !diagnostics.is_empty() {
        // Without a trustworthy config we do not know where the apps are or who owns them.
        diagnostics.extend(config_diags);
        return Ok(Snapshot {
            config,
            files: Vec::new(),
            diagnostics,
            incomplete: true,
        });
    }
    diagnostics.extend(config_diags);

    let (files, found, incomplete) = walk_specs(&root, &config.apps_dir, config.max_file_bytes);
    diagnostics.extend(found);
    Ok(Snapshot {
        config,
        files,
        diagnostics,
        incomplete,
    })
}

/// Read and parse only `baton.yaml` of the repo at `root` (absent: the defaults), with its
/// problems: what a command needs to find an environment's settings without reading the specs.
pub fn read_config(root: &Path) -> Result<(RepoConfig, Vec<Diagnostic>), SourceError> {
    let root = fs::canonicalize(root).map_err(|source| SourceError::Unreadable {
        path: root.to_path_buf(),
        source,
    })?;
    let (config, mut found, unreadable) = config_of(&root);
    found.extend(unreadable);
    Ok((config, found))
}

/// `baton.yaml` of the canonical `root`: the config, its parse problems, and the problem of
/// reading it (too large, a symlink out of the repo, ...) apart.
fn config_of(root: &Path) -> (RepoConfig, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let config_path = root.join(CONFIG_FILE);
    let config_file =
        match inside(root, &config_path).and_then(|()| read_limited(&config_path, 1024 * 1024)) {
            Ok(Some(bytes)) => Some(SourceFile {
                path: PathBuf::from(CONFIG_FILE),
                bytes,
            }),
            Ok(None) => None,
            Err(message) => {
                diagnostics.push(problem(Path::new(CONFIG_FILE), None, message));
                None
            }
        };
    let (config, config_diags) = parse_config(config_file.as_ref());
    (config, config_diags, diagnostics)
}

/// Every spec file under `dir` (relative to `root`), with the problems met; `true` when a
/// directory could not be walked (the apps below it are unknown). App ids in diagnostics are
/// the paths below `dir`.
fn walk_specs(
    root: &Path,
    dir: &Path,
    max_file_bytes: u64,
) -> (Vec<SourceFile>, Vec<Diagnostic>, bool) {
    let root = root.to_path_buf();
    let mut diagnostics = Vec::new();
    let mut incomplete = false;
    let apps_root = root.join(dir);
    let mut files = Vec::new();
    let mut to_read = Vec::new();
    // The apps dir (or a folder on its way) may itself be a symlink: it must stay in the repo.
    let apps_ok = match fs::canonicalize(&apps_root) {
        Ok(real) if !real.starts_with(&root) => {
            diagnostics.push(problem(
                dir,
                None,
                format!(
                    "symlink leaves the repo (points to {}); not followed",
                    real.display()
                ),
            ));
            incomplete = true;
            false
        }
        Ok(real) => real.is_dir(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            diagnostics.push(problem(dir, None, format!("cannot read: {e}")));
            incomplete = true;
            false
        }
    };
    let mut walk = WalkDir::new(&apps_root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = apps_ok.then(|| walk.next()).flatten() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel = |p: &Path| p.strip_prefix(&root).unwrap_or(p).to_path_buf();
                let path = e.path().map(rel).unwrap_or_default();
                let looped = e
                    .io_error()
                    .and_then(std::io::Error::raw_os_error)
                    .is_some_and(|n| n == nix::libc::ELOOP);
                let message = match e.loop_ancestor() {
                    Some(ancestor) => format!(
                        "symlink loop (points back to {}); not followed",
                        rel(ancestor).display()
                    ),
                    None if looped => "symlink loop (it resolves to itself); not followed".into(),
                    None => format!("cannot read: {e}"),
                };
                // A spec file names its app (invalid now); for anything else the apps below it
                // are unknown: the repo is incomplete, no deletes.
                let app = path
                    .extension()
                    .and_then(|x| x.to_str())
                    .filter(|x| EXTENSIONS.contains(x))
                    .and_then(|_| path.strip_prefix(dir).ok())
                    .and_then(|r| AppId::from_path(r).ok());
                incomplete |= app.is_none();
                diagnostics.push(problem(&path, app, message));
                continue;
            }
        };
        let path = entry.path();
        let rel = path.strip_prefix(&root).unwrap_or(path).to_path_buf();
        let name = entry.file_name().to_string_lossy();
        let is_dir = entry.file_type().is_dir();
        if name.starts_with('.') && entry.depth() > 0 && !is_dir {
            continue;
        }
        let is_spec = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        if !is_spec && !is_dir {
            continue;
        }
        // A directory names no app; a spec file does.
        let app = if is_dir {
            None
        } else {
            rel.strip_prefix(dir)
                .ok()
                .and_then(|r| AppId::from_path(r).ok())
        };
        if entry.path_is_symlink() && entry.depth() > 0 {
            let refused = match fs::canonicalize(path) {
                Ok(target) if target.starts_with(&root) => None,
                Ok(target) => Some(format!(
                    "symlink leaves the repo (points to {}); not followed",
                    target.display()
                )),
                Err(e) => Some(format!("broken symlink: {e}")),
            };
            if let Some(message) = refused {
                // Walkdir has opened a directory it yields, but nothing below it is read.
                if is_dir {
                    walk.skip_current_dir();
                    incomplete = true;
                }
                diagnostics.push(problem(&rel, app, message));
                continue;
            }
        }
        if is_dir {
            continue;
        }
        // The type as walkdir saw it (the target's, for a symlink), before anything is opened.
        if !entry.file_type().is_file() {
            diagnostics.push(problem(&rel, app, not_regular(entry.file_type())));
            continue;
        }
        to_read.push((path.to_path_buf(), rel, app));
    }
    // The files are read in parallel (opening and reading thousands of small files is mostly
    // system-call time), then taken in walk order.
    let limit = max_file_bytes;
    let read: Vec<_> = to_read
        .into_par_iter()
        .map(|(path, rel, app)| (read_limited(&path, limit), rel, app))
        .collect();
    for (result, rel, app) in read {
        match result {
            Ok(Some(bytes)) => files.push(SourceFile { path: rel, bytes }),
            Ok(None) => {}
            Err(message) => diagnostics.push(problem(&rel, app, message)),
        }
    }
    (files, diagnostics, incomplete)
}

/// The overlay spec files of environment `env` (`environments/<env>/<appsDir>/...`), read with
/// the same rules as the base specs (size limit, symlinks kept inside the repo, regular files
/// only): the files, the problems met, and whether some folder could not be walked.
pub fn read_overlays(
    root: &Path,
    config: &baton_core::spec::RepoConfig,
    env: &str,
) -> Result<(Vec<SourceFile>, Vec<Diagnostic>, bool), SourceError> {
    let root = fs::canonicalize(root).map_err(|source| SourceError::Unreadable {
        path: root.to_path_buf(),
        source,
    })?;
    let dir = baton_core::environment::overlay::apps_dir(env, &config.apps_dir);
    Ok(walk_specs(&root, &dir, config.max_file_bytes))
}

/// `Err` when `path` is a symlink that resolves outside `root` (or nowhere).
fn inside(root: &Path, path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(path) {
            Ok(target) if target.starts_with(root) => Ok(()),
            Ok(target) => Err(format!(
                "symlink leaves the repo (points to {}); not followed",
                target.display()
            )),
            Err(e) => Err(format!("broken symlink: {e}")),
        },
        _ => Ok(()),
    }
}

/// Read a file unless it is larger than `limit` (checked before and while reading, so a file that
/// grows meanwhile is still bounded). `Ok(None)` when it does not exist. Only a regular file is
/// read: the type is checked from its metadata before it is opened, and again on the open file
/// (opened non-blocking, so a FIFO swapped in meanwhile cannot hang the open either).
fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    match fs::metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular(m.file_type())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let too_big = |n: u64| {
        format!("the file is {n} bytes, over the limit of {limit} (maxFileBytes in baton.yaml)")
    };
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    // Sized from the metadata so the file is read in one go (plus the read that sees its end),
    // not in growing chunks.
    let expected = meta.len();
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).saturating_add(1));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// The diagnostic for a spec path that is not a regular file.
fn not_regular(t: fs::FileType) -> String {
    let what = if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    };
    format!("{what}, not a regular file; not read")
}

fn problem(path: &Path, app: Option<AppId>, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        pointer: String::new(),
        line: None,
        column: None,
        message,
        app,
    }
}
