//! A repo that is a plain directory on disk.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use super::SourceError;
use crate::spec::load::{parse_config, Snapshot, SourceFile, CONFIG_FILE};
use crate::spec::{AppId, Diagnostic, Severity};

/// Spec file extensions; anything else under the apps dir (READMEs, ...) is ignored.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Read `baton.yaml` and every spec file under the apps dir. Files over the size limit are not
/// read; symlinks that resolve outside the repo are refused. Both become diagnostics.
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
    let mut diagnostics = Vec::new();
    let mut incomplete = false;
    let config_path = root.join(CONFIG_FILE);
    let config_file = match read_limited(&config_path, 1024 * 1024) {
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

    let apps_root = root.join(&config.apps_dir);
    let mut files = Vec::new();
    let mut to_read = Vec::new();
    if apps_root.is_dir() {
        for entry in WalkDir::new(&apps_root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e
                        .path()
                        .and_then(|p| p.strip_prefix(&root).ok())
                        .unwrap_or(Path::new(""))
                        .to_path_buf();
                    diagnostics.push(problem(&path, None, format!("cannot read: {e}")));
                    incomplete = true;
                    continue;
                }
            };
            let path = entry.path();
            let rel = path.strip_prefix(&root).unwrap_or(path).to_path_buf();
            let name = entry.file_name().to_string_lossy();
            if name.starts_with('.') && entry.depth() > 0 {
                continue;
            }
            let is_spec = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
            if !is_spec || entry.file_type().is_dir() {
                continue;
            }
            let app = rel
                .strip_prefix(&config.apps_dir)
                .ok()
                .and_then(|r| AppId::from_path(r).ok());
            if entry.path_is_symlink() {
                match fs::canonicalize(path) {
                    Ok(target) if target.starts_with(&root) => {}
                    Ok(target) => {
                        diagnostics.push(problem(
                            &rel,
                            app,
                            format!(
                                "symlink leaves the repo (points to {}); not followed",
                                target.display()
                            ),
                        ));
                        continue;
                    }
                    Err(e) => {
                        diagnostics.push(problem(&rel, app, format!("broken symlink: {e}")));
                        continue;
                    }
                }
            }
            to_read.push((path.to_path_buf(), rel, app));
        }
    }
    // The files are read in parallel (opening and reading thousands of small files is mostly
    // system-call time), then taken in walk order.
    let limit = config.max_file_bytes;
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
    Ok(Snapshot {
        config,
        files,
        diagnostics,
        incomplete,
    })
}

/// Read a file unless it is larger than `limit` (checked before and while reading, so a file that
/// grows meanwhile is still bounded). `Ok(None)` when it does not exist.
fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let too_big = |n: u64| {
        format!("the file is {n} bytes, over the limit of {limit} (maxFileBytes in baton.yaml)")
    };
    let mut expected = 0;
    if let Ok(meta) = file.metadata() {
        if meta.len() > limit {
            return Err(too_big(meta.len()));
        }
        expected = meta.len();
    }
    // Sized from the metadata so the file is read in one go (plus the read that sees its end),
    // not in growing chunks.
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).saturating_add(1));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(Some(bytes))
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
