//! Pack checks against packs written by the `git` CLI (skipped without it, unless CI).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn git(dir: &Path, args: &[&str]) -> bool {
    let Ok(out) = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
    else {
        return false;
    };
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A repository with two commits repacked into one pack (files made writable: git writes them
/// read-only): its git dir, the pack and its index. `None` (and said why) without git.
fn packed() -> Option<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    if !git(&work, &["init", "-q", "-b", "main"]) {
        assert!(std::env::var_os("CI").is_none(), "git is required in CI");
        eprintln!("skipped: git is not installed");
        return None;
    }
    for i in 0..2 {
        for k in 0..20 {
            std::fs::write(
                work.join(format!("f{k}.yaml")),
                format!("cmd: run {i} {k}\n"),
            )
            .unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", &format!("c{i}")]);
    }
    git(&work, &["repack", "-adq"]);
    let git_dir = work.join(".git");
    let dir = git_dir.join("objects/pack");
    let mut files: Vec<PathBuf> = (std::fs::read_dir(&dir).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let find = |ext: &str| {
        let found = files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == ext));
        found.unwrap().clone()
    };
    let (pack, idx) = (find("pack"), find("idx"));
    Some((tmp, git_dir, pack, idx))
}

fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

fn damaged(git_dir: &Path) -> Damage {
    match check(git_dir, &Seal::default()) {
        Ok(c) => panic!("no damage found; seal {:?}", c.seal),
        Err(d) => d,
    }
}

fn cut(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

#[test]
fn a_sound_cache_passes_and_is_checked_again_only_where_it_changed() {
    let Some((_tmp, git_dir, pack, idx)) = packed() else {
        return;
    };
    let first = check(&git_dir, &Seal::default()).unwrap();
    assert_eq!(first.seal.len(), 2, "the pack and its index");
    assert_eq!(first.added, 1);
    let on_disk = std::fs::metadata(&pack).unwrap().len() + std::fs::metadata(&idx).unwrap().len();
    assert_eq!(
        first.bytes_read, on_disk,
        "the whole pack and index read once"
    );

    // Nothing changed: nothing read, the same seal.
    let again = check(&git_dir, &first.seal).unwrap();
    assert_eq!(again.bytes_read, 0);
    assert!(again.altered.is_empty() && again.added == 0);
    assert_eq!(again.seal, first.seal);

    // Replaced by a copy of itself: checked again with its index, and reported as altered.
    let bytes = std::fs::read(&pack).unwrap();
    std::fs::remove_file(&pack).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    let replaced = check(&git_dir, &first.seal).unwrap();
    assert_eq!(replaced.altered, [pack.file_name().unwrap().to_os_string()]);
    assert_eq!(replaced.bytes_read, on_disk);

    // A pack without an index is never read by gix: left alone.
    std::fs::write(git_dir.join("objects/pack/pack-orphan.pack"), b"junk").unwrap();
    assert_eq!(check(&git_dir, &replaced.seal).unwrap().bytes_read, 0);

    // Both gone: nothing to check, both reported.
    std::fs::remove_file(&pack).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let gone = check(&git_dir, &replaced.seal).unwrap();
    assert_eq!(gone.altered.len(), 2);
    assert_eq!(gone.seal.len(), 0);
}

/// Ways a cache gets damaged: a full disk, an operator's `>`, a bad copy.
#[derive(Debug, Clone, Copy)]
enum Harm {
    PackRandom,
    PackHalved,
    PackEmptied,
    PackByteFlipped,
    PackDeleted,
    IndexRandom,
    IndexCut,
    IndexTiny,
}

#[test]
fn every_kind_of_damage_is_found_and_names_its_file() {
    let Some((_tmp, git_dir, pack, idx)) = packed() else {
        return;
    };
    let pristine = (std::fs::read(&pack).unwrap(), std::fs::read(&idx).unwrap());
    let cases = [
        (Harm::PackRandom, &pack, "no PACK header"),
        (Harm::PackHalved, &pack, "its index has an object at offset"),
        (Harm::PackEmptied, &pack, "too short for a pack"),
        (Harm::PackByteFlipped, &pack, "does not match its checksum"),
        (Harm::PackDeleted, &pack, "missing (its index is there)"),
        (Harm::IndexRandom, &idx, "does not match its checksum"),
        (Harm::IndexCut, &idx, "does not match its checksum"),
        (Harm::IndexTiny, &idx, "too short for a pack index"),
    ];
    for (harm, file, says) in cases {
        std::fs::write(&pack, &pristine.0).unwrap();
        std::fs::write(&idx, &pristine.1).unwrap();
        check(&git_dir, &Seal::default()).unwrap_or_else(|d| panic!("{harm:?}: restored: {d}"));
        let (pack_len, idx_len) = (pristine.0.len(), pristine.1.len());
        match harm {
            Harm::PackRandom => std::fs::write(&pack, random_bytes(pack_len)).unwrap(),
            Harm::PackHalved => cut(&pack, pack_len as u64 / 2),
            Harm::PackEmptied => cut(&pack, 0),
            Harm::PackByteFlipped => {
                let mut b = pristine.0.clone();
                b[pack_len / 2] ^= 0x40;
                std::fs::write(&pack, b).unwrap();
            }
            Harm::PackDeleted => std::fs::remove_file(&pack).unwrap(),
            Harm::IndexRandom => std::fs::write(&idx, random_bytes(idx_len)).unwrap(),
            Harm::IndexCut => cut(&idx, idx_len as u64 - 100),
            Harm::IndexTiny => std::fs::write(&idx, b"\xfftOc").unwrap(),
        }
        let found = damaged(&git_dir);
        assert_eq!(&found.file, file, "{harm:?}: {found}");
        assert!(found.reason.contains(says), "{harm:?}: {found}");
    }

    // A multi-pack index that does not match its checksum.
    std::fs::write(&pack, &pristine.0).unwrap();
    std::fs::write(&idx, &pristine.1).unwrap();
    std::fs::write(
        git_dir.join("objects/pack/multi-pack-index"),
        random_bytes(200),
    )
    .unwrap();
    let found = damaged(&git_dir);
    assert!(found.file.ends_with("multi-pack-index"), "{found}");
}

/// Index version 1, and version 2 with its table of 64-bit offsets (`2,1`: every offset above
/// 1 written as 64-bit), as git writes them.
#[test]
fn both_index_versions_and_large_offsets_are_understood() {
    let Some((_tmp, git_dir, pack, idx)) = packed() else {
        return;
    };
    let original = std::fs::metadata(&idx).unwrap().len();
    for version in ["--index-version=1", "--index-version=2,1"] {
        std::fs::remove_file(&idx).unwrap();
        let out = Command::new("git")
            .args(["index-pack", version, "-o"])
            .arg(&idx)
            .arg(&pack)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::metadata(&idx).unwrap().len();
        assert_ne!(
            written, original,
            "{version}: another layout than the default"
        );
        std::fs::set_permissions(&idx, std::fs::Permissions::from_mode(0o644)).unwrap();
        let checked =
            check(&git_dir, &Seal::default()).unwrap_or_else(|d| panic!("{version}: {d}"));
        assert_eq!(checked.seal.len(), 2, "{version}");
        // Cut the pack: the last offsets now lie past its end.
        let bytes = std::fs::read(&pack).unwrap();
        cut(&pack, 100);
        let found = damaged(&git_dir);
        assert!(found.reason.contains("offset"), "{version}: {found}");
        std::fs::write(&pack, bytes).unwrap();
    }
}
