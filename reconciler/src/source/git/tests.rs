//! Git source tests against real repos made with the `git` CLI (skipped without it, unless CI).

use std::path::Path;
use std::process::Command;

use super::*;
use baton_core::spec::load::load;

fn have_git() -> bool {
    let ok = Command::new("git").arg("--version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "git is required in CI");
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: git is not installed\n"),
        )
        .ok();
    }
    ok
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn commit_all(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
}

fn work_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    write(dir, "baton.yaml", "owner: team\n");
    for i in 0..5 {
        write(
            dir,
            &format!("apps/a{i}.yaml"),
            &format!("cmd: \"run {i}\"\ninstances: 1\n"),
        );
    }
    write(dir, "apps/g/b.json", "{\"cmd\": \"b\"}");
    write(dir, "apps/README.md", "not a spec");
    write(dir, "apps/broken.yaml", "cmd: [");
    write(dir, "other/x.yaml", "ignored: true");
    commit_all(dir, "one");
}

/// A temp dir with a work repo ([`work_repo`]) in its `work/`; `None` (skipped, and said why)
/// where git is not installed.
fn work_setup() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !have_git() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    work_repo(&work);
    Some((tmp, work))
}

fn source(remote: &Path, cache: &Path, reference: &str) -> GitSource {
    GitSource::open(GitConfig {
        url: remote.display().to_string(),
        reference: reference.into(),
        cache_dir: cache.to_path_buf(),
        auth: None,
    })
    .unwrap()
}

fn assert_same(a: &Repo, b: &Repo) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.specs, b.specs);
    assert_eq!(a.invalid, b.invalid);
    assert_eq!(a.incomplete, b.incomplete);
    assert_eq!(a.diagnostics, b.diagnostics);
}

#[test]
fn git_source_matches_directory_source_and_loads_incrementally() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };

    let mut src = source(&work, &tmp.path().join("cache"), "main");
    let f = src.fetch().unwrap();
    assert!(f.received && !f.forced);
    let repo = src.load(&f.commit).unwrap();
    assert_same(&repo, &load(crate::source::read_dir(&work).unwrap()));
    assert_eq!(repo.specs.len(), 6);
    assert_eq!(src.parsed_last(), 7);

    // Nothing changed: no pack.
    let again = src.fetch().unwrap();
    assert_eq!(again.commit, f.commit);
    assert!(!again.received);

    // One file changed, one removed, one added: three entries touched, two parsed.
    write(&work, "apps/a1.yaml", "cmd: \"changed\"\ninstances: 2\n");
    std::fs::remove_file(work.join("apps/a2.yaml")).unwrap();
    write(&work, "apps/new.yml", "cmd: new\n");
    commit_all(&work, "two");
    let f2 = src.fetch().unwrap();
    assert!(f2.received && !f2.forced);
    let repo2 = src.load(&f2.commit).unwrap();
    assert_eq!(src.parsed_last(), 2);
    assert_same(&repo2, &load(crate::source::read_dir(&work).unwrap()));

    // A fresh source (full load) agrees with the incremental one.
    let mut fresh = source(&work, &tmp.path().join("cache2"), "main");
    let ff = fresh.fetch().unwrap();
    assert_same(&repo2, &fresh.load(&ff.commit).unwrap());

    // Changes below subdirectories: a nested file modified, a new directory; the changed
    // paths (what the fast path picks from) are exactly those.
    write(&work, "apps/g/b.json", "{\"cmd\": \"b2\"}");
    write(&work, "apps/team/x.yaml", "cmd: x\n");
    commit_all(&work, "nested");
    let fnested = src.fetch().unwrap();
    let nested = src.load(&fnested.commit).unwrap();
    assert_eq!(src.parsed_last(), 2);
    let (rev, mut changed) = src.changed.clone().unwrap();
    changed.sort();
    assert_eq!(rev, fnested.commit);
    assert_eq!(
        changed,
        [
            PathBuf::from("apps/g/b.json"),
            PathBuf::from("apps/team/x.yaml")
        ]
    );
    assert_same(&nested, &load(crate::source::read_dir(&work).unwrap()));

    // Config change: everything reloads.
    write(&work, "baton.yaml", "owner: other\n");
    commit_all(&work, "three");
    let f3 = src.fetch().unwrap();
    let repo3 = src.load(&f3.commit).unwrap();
    assert_eq!(repo3.config.owner, "other");
    assert_same(&repo3, &load(crate::source::read_dir(&work).unwrap()));

    // Force-push: followed, flagged.
    git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
    write(&work, "apps/a0.yaml", "cmd: \"rewritten\"\n");
    commit_all(&work, "rewritten");
    let f4 = src.fetch().unwrap();
    assert!(f4.forced);
    let repo4 = src.load(&f4.commit).unwrap();
    assert_same(&repo4, &load(crate::source::read_dir(&work).unwrap()));
}

#[test]
fn deleted_branch_and_missing_remote_are_errors() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    git(&work, &["branch", "feature"]);
    let mut src = source(&work, &tmp.path().join("cache"), "feature");
    src.fetch().unwrap();
    git(&work, &["branch", "-D", "feature"]);
    let e = src.fetch().unwrap_err();
    assert!(matches!(e, SourceError::RefNotFound { .. }), "{e}");

    let mut gone = source(&tmp.path().join("nope"), &tmp.path().join("cache2"), "main");
    let e = gone.fetch().unwrap_err();
    assert!(matches!(e, SourceError::Unreachable { .. }), "{e}");
}

#[test]
fn tags_and_commits_can_be_followed() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    let mut by_tag = source(&work, &tmp.path().join("c1"), "v1");
    let t = by_tag.fetch().unwrap();
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&work)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(t.commit, head.trim());
    let mut by_commit = source(&work, &tmp.path().join("c2"), head.trim());
    assert_eq!(by_commit.fetch().unwrap().commit, head.trim());
    assert_eq!(by_commit.load(head.trim()).unwrap().specs.len(), 6);
}

/// A token written into the URL never shows in an error: the transports print the URL they
/// were given, so the URL gix gets has none.
#[test]
fn a_token_in_the_url_stays_out_of_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused.
    let token = "glpat-very-secret-token";
    let mut src = GitSource::open(GitConfig {
        url: format!("http://oauth2:{token}@127.0.0.1:1/team/ops.git"),
        reference: "main".into(),
        cache_dir: tmp.path().join("cache"),
        auth: None,
    })
    .unwrap();
    let err = src.fetch().unwrap_err();
    let shown = format!("{err} / {err:?} / {src:?}");
    assert!(!shown.contains(token), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(matches!(err, SourceError::Unreachable { .. }), "{shown}");
    let auth = src.config.auth.as_ref().unwrap();
    assert_eq!(auth.user, "oauth2");
    assert_eq!(auth.password.expose_secret(), token);
    assert_eq!(
        scrub(format!("GET http://oauth2:{token}@h/ failed"), Some(auth)),
        "GET http://[redacted]:[redacted]@h/ failed"
    );
}

/// `/a0` changed and pushed (push number `i`), fetched and loaded: whether the fetch received
/// a pack, and the loaded repo, checked to have the pushed `/a0`.
fn push_and_load(work: &Path, src: &mut GitSource, i: usize) -> (bool, Repo) {
    write(
        work,
        "apps/a0.yaml",
        &format!("cmd: \"push {i}\"\ninstances: 1\n"),
    );
    commit_all(work, &format!("push {i}"));
    let f = src.fetch().unwrap_or_else(|e| panic!("fetch {i}: {e}"));
    let repo = src.load(&f.commit).unwrap();
    let a0 = &repo.specs[&baton_core::spec::AppId::parse("/a0").unwrap()];
    assert_eq!(a0.app["cmd"], format!("push {i}"));
    (f.received, repo)
}

/// Past its threshold of packs the cache is rebuilt by one full fetch: the packs stay few, every
/// push still loads, and nothing is left beside the cache.
#[test]
fn a_cache_with_many_packs_is_rebuilt_by_one_full_fetch() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let cache = tmp.path().join("cache");
    let mut src = source(&work, &cache, "main");
    src.compact_at = 6;
    let first = src.fetch().unwrap();
    src.load(&first.commit).unwrap();
    let mut most = 0;
    for i in 0..15 {
        let (_, repo) = push_and_load(&work, &mut src, i);
        assert!(repo.specs.len() > 1, "a full set of specs after push {i}");
        most = most.max(packs_in(&cache));
    }
    // Without the rebuild there would be 16 packs; it keeps them under the threshold (+1 for
    // the fetch right after a rebuild), and leaves nothing beside the cache.
    assert!(most <= 7, "at most 7 packs at a time, saw {most}");
    assert!(packs_in(&cache) < 16);
    assert!(!cache.with_extension("compact").exists());
    assert!(!cache.with_extension("old").exists());
}

/// A rebuild that cannot happen (here: a directory that is not Baton's where the new cache
/// would go) changes nothing: fetches go on in the old cache, and the directory is left alone.
#[test]
fn a_failed_cache_rebuild_keeps_the_cache_and_touches_nothing_else() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let cache = tmp.path().join("cache");
    let theirs = cache.with_extension("compact");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("keep.txt"), "not Baton's").unwrap();
    let mut src = source(&work, &cache, "main");
    src.compact_at = 3;
    for i in 0..6 {
        push_and_load(&work, &mut src, i);
    }
    assert_eq!(packs_in(&cache), 6, "no rebuild: one pack per fetch");
    assert_eq!(
        std::fs::read_to_string(theirs.join("keep.txt")).unwrap(),
        "not Baton's"
    );
    assert!(src.compact_at > 3, "the next attempt is put off");
}

/// Each fetch adds a pack to the cache; many pushes in a row must keep fetching (gix's pack
/// table is sized when the cache is opened).
#[test]
fn many_fetches_in_a_row_keep_working() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let mut src = source(&work, &tmp.path().join("cache"), "main");
    let first = src.fetch().unwrap();
    src.load(&first.commit).unwrap();
    // More fetches than fit the pack table of one opening: the cache is reopened on the way.
    for i in 0..(2 * PACKS_BETWEEN_REOPENS + 5) {
        let (received, _) = push_and_load(&work, &mut src, i);
        assert!(received, "push {i} brought a pack");
    }
}

/// A damaged cache (packs truncated, say by a full disk) is set aside and fetched afresh: the
/// source recovers on its own instead of failing every cycle.
#[test]
fn a_damaged_cache_is_fetched_afresh() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let cache = tmp.path().join("cache");
    let mut src = source(&work, &cache, "main");
    let first = src.fetch().unwrap();
    assert_eq!(src.load(&first.commit).unwrap().specs.len(), 6);
    drop(src);

    // Damage every pack (the index still says the objects are there).
    let packs = cache.join("objects/pack");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&packs).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "pack") {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())
                .unwrap();
            f.set_len(40).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the fetch left a pack");

    // A restart on the damaged cache: the fetch notices, starts afresh, and loads.
    let mut src = source(&work, &cache, "main");
    let again = src.fetch().unwrap();
    assert_eq!(again.commit, first.commit);
    assert!(again.received, "everything was fetched again");
    assert_eq!(src.load(&again.commit).unwrap().specs.len(), 6);
    assert!(
        cache.with_extension("damaged").join("HEAD").exists(),
        "set aside, not deleted"
    );
}

fn has_diag(repo: &Repo, file: &str, text: &str) -> bool {
    repo.diagnostics
        .iter()
        .any(|d| d.file == Path::new(file) && d.message.contains(text))
}

/// The bad input of issue 12 (item 11) as a git tree can hold it: symlinks to a file outside, to
/// a directory outside and in a loop, a submodule entry, and spec texts the parser refuses (a
/// repeated JSON key, a NUL character, a `!!binary` tag), beside a file with a BOM that loads.
/// All of it loads promptly to diagnostics; nothing outside the tree is read.
#[test]
fn hostile_tree_entries_and_texts_load_to_diagnostics() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let outside = tmp.path().join("outside");
    write(&outside, "x.yaml", "cmd: outside\n");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, work.join(name)).unwrap();
    };
    link(&outside.join("x.yaml"), "apps/out.yaml");
    link(&outside, "apps/outdir");
    link(Path::new("loop.yaml"), "apps/loop.yaml");
    link(Path::new(".."), "apps/up");
    write(&work, "apps/dup.json", "{\"cmd\": \"a\",\n \"cmd\": \"b\"}");
    write(&work, "apps/nul.yaml", "cmd: \"run\\0 --evil\"\n");
    write(&work, "apps/tag.yaml", "cmd: !!binary aGVsbG8=\n");
    write(&work, "apps/bom.yaml", "\u{feff}cmd: sleep 1\n");
    commit_all(&work, "hostile");
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&work)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let gitlink = format!("160000,{},apps/sub.yaml", head.trim());
    git(&work, &["update-index", "--add", "--cacheinfo", &gitlink]);
    git(&work, &["commit", "-q", "-m", "gitlink"]);

    let mut src = source(&work, &tmp.path().join("cache"), "main");
    let f = src.fetch().unwrap();
    let repo = src.load(&f.commit).unwrap();
    for (file, text) in [
        ("apps/out.yaml", "symlinks are not followed"),
        ("apps/loop.yaml", "symlinks are not followed"),
        ("apps/dup.json", "duplicate key `cmd`"),
        ("apps/nul.yaml", "NUL character"),
        ("apps/tag.yaml", "`!!binary`"),
        ("apps/sub.yaml", "a submodule"),
    ] {
        assert!(
            has_diag(&repo, file, text),
            "{file}: {:#?}",
            repo.diagnostics
        );
        let id = AppId::from_path(Path::new(file).strip_prefix("apps").unwrap()).unwrap();
        assert!(repo.invalid.contains(&id), "{file} must be invalid");
    }
    let line = |file: &str| {
        repo.diagnostics
            .iter()
            .find(|d| d.file == Path::new(file))
            .and_then(|d| d.line)
    };
    assert_eq!(line("apps/dup.json"), Some(2));
    // Links to directories are not walked: nothing from outside (or twice from inside) loads.
    assert!(!repo
        .specs
        .keys()
        .any(|id| id.as_str().starts_with("/outdir") || id.as_str().starts_with("/up")));
    let bom = AppId::from_path(Path::new("bom.yaml")).unwrap();
    assert_eq!(repo.specs[&bom].app["cmd"], "sleep 1");
}

/// `baton.yaml` that is not a file (here a symlink) is a config error, never "no config": the
/// defaults (another owner, another apps dir) would otherwise apply silently.
#[test]
fn a_config_that_is_a_symlink_is_an_error_not_the_defaults() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    std::fs::remove_file(work.join("baton.yaml")).unwrap();
    write(&work, "conf/real.yaml", "owner: team\n");
    std::os::unix::fs::symlink("conf/real.yaml", work.join("baton.yaml")).unwrap();
    commit_all(&work, "config as a symlink");
    let mut src = source(&work, &tmp.path().join("cache"), "main");
    let f = src.fetch().unwrap();
    let repo = src.load(&f.commit).unwrap();
    assert!(
        has_diag(&repo, "baton.yaml", "symlinks are not followed"),
        "{:#?}",
        repo.diagnostics
    );
    assert!(repo.incomplete && repo.specs.is_empty());
}

/// Ways a cache gets damaged (issue 12): a full disk, an operator's `>`, a bad restore.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Harm {
    /// Every pack overwritten with random bytes of its size.
    PacksRandom,
    /// Packs and indices overwritten with random bytes of their size.
    PacksAndIndicesRandom,
    /// Every pack cut to half its size.
    PacksHalved,
    /// Every pack emptied (`> file`).
    PacksEmptied,
    /// The packs deleted, their indices left.
    PacksDeleted,
    /// Packs and indices deleted: the followed ref names a commit the cache no longer has.
    PacksAndIndicesDeleted,
    /// The followed ref set to a commit that was never there.
    RefToLostCommit,
    /// The whole cache directory removed.
    CacheRemoved,
}

const HARMS: [Harm; 8] = [
    Harm::PacksRandom,
    Harm::PacksAndIndicesRandom,
    Harm::PacksHalved,
    Harm::PacksEmptied,
    Harm::PacksDeleted,
    Harm::PacksAndIndicesDeleted,
    Harm::RefToLostCommit,
    Harm::CacheRemoved,
];

fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// Do `harm` to the cache at `cache`; how many files it touched.
fn damage(cache: &Path, harm: Harm) -> usize {
    if harm == Harm::CacheRemoved {
        std::fs::remove_dir_all(cache).unwrap();
        return 1;
    }
    if harm == Harm::RefToLostCommit {
        let lost = "0123456789abcdef0123456789abcdef01234567\n";
        std::fs::write(cache.join("refs/baton/heads/main"), lost).unwrap();
        return 1;
    }
    let mut touched = 0;
    for entry in std::fs::read_dir(cache.join("objects/pack")).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let len = std::fs::metadata(&path).unwrap().len();
        let pack = ext == "pack";
        let index = ext == "idx";
        match harm {
            Harm::PacksRandom if pack => std::fs::write(&path, random_bytes(len as usize)),
            Harm::PacksAndIndicesRandom if pack || index => {
                std::fs::write(&path, random_bytes(len as usize))
            }
            Harm::PacksHalved if pack => std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len / 2)),
            Harm::PacksEmptied if pack => std::fs::write(&path, b""),
            Harm::PacksDeleted if pack => std::fs::remove_file(&path),
            Harm::PacksAndIndicesDeleted if pack || index => std::fs::remove_file(&path),
            _ => continue,
        }
        .unwrap();
        touched += 1;
    }
    touched
}

/// Every kind of damage, found on a restart and under a running source between two fetches:
/// the fetch after it succeeds (the cache set aside and fetched afresh in that one call) and
/// loads the pushed commit, and the damaged cache is kept beside the new one.
#[test]
fn every_kind_of_damage_heals_on_restart_and_while_running() {
    for harm in HARMS {
        for running in [false, true] {
            let Some((tmp, work)) = work_setup() else {
                return;
            };
            let cache = tmp.path().join("cache");
            let mut src = source(&work, &cache, "main");
            let first = src.fetch().unwrap();
            assert_eq!(src.load(&first.commit).unwrap().specs.len(), 6);
            assert!(damage(&cache, harm) > 0, "{harm:?}: nothing to damage");
            if !running {
                drop(src);
                src = source(&work, &cache, "main");
            }
            let case = format!("{harm:?}, running: {running}");
            let (received, repo) = push_and_load(&work, &mut src, 1);
            assert!(received, "{case}: fetched afresh");
            assert_eq!(repo.specs.len(), 6, "{case}");
            let aside = cache.with_extension("damaged");
            if harm == Harm::CacheRemoved {
                // Nothing left to set aside; a fresh cache all the same.
                assert!(!aside.exists(), "{case}");
            } else {
                assert!(
                    aside.join("HEAD").exists(),
                    "{case}: set aside, not deleted"
                );
                let why = src.last_damage.clone().unwrap_or_default();
                assert!(!why.is_empty(), "{case}: the damage was named");
            }
            // Healed: the next push is an ordinary incremental fetch.
            let (received, _) = push_and_load(&work, &mut src, 2);
            assert!(received, "{case}");
        }
    }
}

/// A pack cut to nothing under a running source, then read through the handles gix already
/// has: gix holds its packs in memory (the `third_party/gix-pack` patch), so this is no SIGBUS
/// (which would end the whole test binary); the next fetch notices the file and heals.
#[test]
fn a_pack_cut_short_under_a_running_source_is_no_signal() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let cache = tmp.path().join("cache");
    let mut src = source(&work, &cache, "main");
    let first = src.fetch().unwrap();
    src.load(&first.commit).unwrap();
    assert!(damage(&cache, Harm::PacksEmptied) > 0);
    // Every object of the commit read again through a new handle on the same object store.
    let repo = src.repo.to_thread_local();
    let id = ObjectId::from_hex(first.commit.as_bytes()).unwrap();
    let tree = repo.find_commit(id).unwrap().tree().unwrap();
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse().breadthfirst(&mut recorder).unwrap();
    let mut blobs = 0;
    for r in recorder.records.iter().filter(|r| r.mode.is_blob()) {
        repo.find_blob(r.oid).unwrap();
        blobs += 1;
    }
    assert!(blobs >= 8, "read {blobs} blobs");
    drop(tree);
    drop(repo);
    let (received, _) = push_and_load(&work, &mut src, 1);
    assert!(received);
    assert!(cache.with_extension("damaged").join("HEAD").exists());
}

/// Point every object of every index past the end of its pack (the index stays well formed).
fn offsets_past_the_end(cache: &Path) {
    for entry in std::fs::read_dir(cache.join("objects/pack")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "idx") {
            let mut idx = std::fs::read(&path).unwrap();
            // Version 2: magic, version, fan-out (the last entry is the count), ids, CRCs, offsets.
            let n = u32::from_be_bytes(idx[8 + 255 * 4..8 + 256 * 4].try_into().unwrap()) as usize;
            let offsets = 8 + 256 * 4 + n * 24;
            for i in 0..n {
                idx[offsets + 4 * i..offsets + 4 * i + 4]
                    .copy_from_slice(&0x7fff_0000u32.to_be_bytes());
            }
            std::fs::write(&path, idx).unwrap();
        }
    }
}

/// With the pack checks off, gix meets the damaged index itself and panics (an object offset
/// past the end of its pack): the panic is caught at this boundary and is damage like any
/// other; the cache is set aside and fetched afresh.
#[test]
fn a_panic_inside_gix_is_damage_not_a_crash() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    let cache = tmp.path().join("cache");
    let mut src = source(&work, &cache, "main");
    src.fetch().unwrap();
    drop(src);
    offsets_past_the_end(&cache);
    let mut src = source(&work, &cache, "main");
    src.checks = false;
    let fetched = src.fetch().unwrap();
    assert!(fetched.received, "fetched afresh");
    let why = src.last_damage.clone().unwrap_or_default();
    assert!(why.contains("reading it panicked"), "{why}");
    assert!(cache.with_extension("damaged").join("HEAD").exists());
    assert_eq!(src.load(&fetched.commit).unwrap().specs.len(), 6);
}

#[test]
fn an_environment_loads_from_git_as_from_the_directory() {
    let Some((tmp, work)) = work_setup() else {
        return;
    };
    write(
        &work,
        "baton.yaml",
        "owner: team\nenvironments:\n  qa: {marathon: 'http://qa:8080'}\n  prod: {marathon: 'http://prod:8080'}\n",
    );
    write(&work, "environments/qa/apps/a1.yaml", "instances: 3\n");
    write(
        &work,
        "environments/qa/apps/a2.yaml",
        "baton: {exclude: true}\n",
    );
    write(&work, "environments/qa/apps/only-qa.yaml", "cmd: q\n");
    write(&work, "environments/qa/apps/a3.yaml", "instances: many\n");
    commit_all(&work, "environments");
    let dir = |env: &str| {
        crate::environment::read(
            &crate::environment::RepoDir {
                path: work.clone(),
                environment: Some(env.into()),
            },
            baton_core::spec::load::Keep::Definitions,
        )
        .unwrap()
    };
    let mut src = source(&work, &tmp.path().join("cache"), "main");
    src.set_environment(Some("qa".into()));
    let f = src.fetch().unwrap();
    let qa = src.load(&f.commit).unwrap();
    assert_same(&qa, &dir("qa"));
    assert_eq!(qa.config.owner, "team.qa");
    assert_eq!(qa.specs[&AppId::parse("/a1").unwrap()].app["instances"], 3);
    assert!(qa.specs.contains_key(&AppId::parse("/only-qa").unwrap()));
    assert!(!qa.specs.contains_key(&AppId::parse("/a2").unwrap()));
    assert!(qa.invalid.contains(&AppId::parse("/a3").unwrap()));
    assert!(has_diag(
        &qa,
        "environments/qa/apps/a3.yaml",
        "expected integer"
    ));
    // A later commit changing only the overlay is loaded (whole) too.
    write(&work, "environments/qa/apps/a1.yaml", "instances: 4\n");
    commit_all(&work, "qa scales a1");
    let f = src.fetch().unwrap();
    let qa = src.load(&f.commit).unwrap();
    assert_eq!(qa.specs[&AppId::parse("/a1").unwrap()].app["instances"], 4);
    assert_same(&qa, &dir("qa"));
    // prod sees none of qa's overlay.
    let mut prod = source(&work, &tmp.path().join("cache-prod"), "main");
    prod.set_environment(Some("prod".into()));
    let f = prod.fetch().unwrap();
    let p = prod.load(&f.commit).unwrap();
    assert_same(&p, &dir("prod"));
    assert!(p.specs.contains_key(&AppId::parse("/a2").unwrap()));
    // An environment baton.yaml does not declare: nothing loaded, nothing deletable.
    let mut gone = source(&work, &tmp.path().join("cache-gone"), "main");
    gone.set_environment(Some("perf".into()));
    let f = gone.fetch().unwrap();
    let g = gone.load(&f.commit).unwrap();
    assert!(g.specs.is_empty() && g.incomplete);
}
