//! `baton serve`'s state directory: private to Baton's user (0700), its files replaced
//! atomically and readable by that user only (0600). The state holds no secret values, but it
//! records what was deployed and which tasks were handed a secret id: nobody else should read
//! it, and nobody else may write it (a forged served-task file would reopen the gatekeeper).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of the state directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Baton writes in it.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (0700, parents too) or tighten it, and every file directly in it, to the owner
/// alone; each change is logged. Subdirectories (the git cache) are left as they are: a
/// private parent already shuts them. Symlinks are not followed.
pub fn prepare(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return create(dir),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    tighten(dir, DIR_MODE)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            tighten(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

/// Create `dir` and its missing parents with mode 0700.
pub fn create(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Take away from `path` what `allowed` does not grant (group and other bits).
fn tighten(path: &Path, allowed: u32) -> io::Result<()> {
    let mode = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let tight = mode & allowed;
    if tight != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(tight))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{mode:04o}"),
            now = format!("{tight:04o}"),
            "state: permissions tightened (the state is for Baton's user only)"
        );
    }
    Ok(())
}

/// Replace `path` with `bytes` atomically, mode 0600: a temp file beside it (created 0600),
/// fsync, rename over the old file, fsync the directory. A crash leaves the old file or the
/// new one, never a torn one. A missing directory is created (0700).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    create(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.unwrap_or_default()))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_are_written_0600_in_a_0700_dir_whatever_was_there() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let file = dir.join("state.json");
        write_atomic(&file, b"one").unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        // A file someone left world-readable is replaced by a private one.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(mode(&file), 0o600);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }

    #[test]
    fn prepare_tightens_the_dir_and_its_files_but_not_subdirs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        fs::create_dir_all(dir.join("git-cache")).unwrap();
        for (p, m) in [(dir.clone(), 0o755), (dir.join("git-cache"), 0o755)] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        fs::write(dir.join("state.json"), b"{}").unwrap();
        fs::set_permissions(dir.join("state.json"), fs::Permissions::from_mode(0o664)).unwrap();
        fs::write(dir.join("ledger.json"), b"{}").unwrap();
        fs::set_permissions(dir.join("ledger.json"), fs::Permissions::from_mode(0o400)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.json")), 0o600);
        assert_eq!(mode(&dir.join("ledger.json")), 0o400, "never loosened");
        assert_eq!(mode(&dir.join("git-cache")), 0o755);

        let fresh = root.path().join("a/b/state");
        prepare(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
