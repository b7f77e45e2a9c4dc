//! Loading and validating repos: every kind of bad input gets a clear diagnostic (file, pointer,
//! line) and leaves its app invalid (never changed or deleted), and one bad file hides nothing.

use std::path::Path;

use baton::commands::load_repo;
use baton_core::spec::{AppId, Severity};

use crate::support::{diagnostics_lines, fixture};

fn invalid_case(case: &str) -> baton_core::spec::Repo {
    let repo = load_repo(&fixture(&format!("specs/invalid/{case}"))).unwrap();
    assert!(!repo.is_valid(), "{case} should be invalid");
    insta::assert_snapshot!(
        format!("invalid_{}", case.replace('-', "_")),
        diagnostics_lines(&repo)
    );
    repo
}

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

#[test]
fn malformed_yaml_names_the_line_and_spares_other_files() {
    let repo = invalid_case("malformed-yaml");
    let d = &repo.diagnostics[0];
    assert_eq!(d.file, Path::new("apps/web.yaml"));
    assert!(d.line.is_some());
    assert!(repo.invalid.contains(&id("/web")));
    assert!(
        repo.specs.contains_key(&id("/ok")),
        "a good file beside a bad one still loads"
    );
}

#[test]
fn malformed_json_names_line_and_column() {
    let repo = invalid_case("malformed-json");
    assert_eq!(repo.diagnostics[0].line, Some(4));
    assert!(repo.invalid.contains(&id("/api")));
}

#[test]
fn wrong_types_name_pointer_and_line() {
    let repo = invalid_case("wrong-types");
    let find = |p: &str| {
        repo.diagnostics
            .iter()
            .find(|d| d.pointer == p)
            .unwrap_or_else(|| panic!("no diagnostic at {p}"))
    };
    assert_eq!(find("/instances").line, Some(2));
    assert_eq!(find("/cpus").line, Some(3));
    assert_eq!(find("/env/DEBUG").line, Some(5));
    assert_eq!(find("/healthChecks/0/intervalSeconds").line, Some(8));
}

#[test]
fn unknown_fields_suggest_the_right_name() {
    let repo = invalid_case("unknown-fields");
    let messages: Vec<&str> = repo
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`instance` (did you mean `instances`?)")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`dependson` (did you mean `dependsOn`?)")),
        "{messages:?}"
    );
    let nested = repo
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/container/docker/forcePull")
        .unwrap();
    assert_eq!(
        nested.severity,
        Severity::Warning,
        "Marathon ignores unknown nested fields: a warning"
    );
}

#[test]
fn duplicate_ids_make_both_files_invalid() {
    let repo = invalid_case("duplicate-ids");
    assert!(repo.specs.is_empty());
    assert!(repo.invalid.contains(&id("/web")));
    assert_eq!(
        repo.diagnostics
            .iter()
            .filter(|d| d.message.contains("duplicate app id"))
            .count(),
        2
    );
}

#[test]
fn ids_differing_only_in_case_are_duplicates() {
    let repo = invalid_case("case-duplicates");
    assert!(repo
        .diagnostics
        .iter()
        .any(|d| d.message.contains("differs only in case")));
    assert!(
        repo.invalid.contains(&id("/api")),
        "the valid-looking twin is invalid too"
    );
}

#[test]
fn dependency_cycles_are_named() {
    let repo = invalid_case("dependency-cycle");
    let cycle = repo
        .diagnostics
        .iter()
        .find(|d| d.message.contains("dependency cycle"))
        .unwrap();
    assert!(
        cycle.message.contains("/a -> /b -> /c -> /a"),
        "{}",
        cycle.message
    );
    for app in ["/a", "/b", "/c", "/d"] {
        assert!(repo.invalid.contains(&id(app)), "{app}");
    }
    assert!(repo
        .diagnostics
        .iter()
        .any(|d| d.message.contains("`/nowhere` is not an app of this repo")));
}

#[test]
fn id_field_must_agree_with_the_path() {
    let repo = invalid_case("id-mismatch");
    let d = &repo.diagnostics[0];
    assert!(
        d.message.contains("/staging/api") && d.message.contains("/prod/api"),
        "{}",
        d.message
    );
    assert_eq!((d.pointer.as_str(), d.line), ("/id", Some(1)));
}

#[test]
fn baton_block_values_are_checked() {
    let repo = invalid_case("bad-baton-block");
    let pointers: Vec<&str> = repo
        .diagnostics
        .iter()
        .map(|d| d.pointer.as_str())
        .collect();
    for p in [
        "/baton/deadline",
        "/baton/ignore/0",
        "/baton/prune",
        "/baton/drift",
    ] {
        assert!(pointers.contains(&p), "{p} missing in {pointers:?}");
    }
}

#[test]
fn empty_files_are_errors_not_deletions() {
    let repo = invalid_case("empty-file");
    assert!(repo.invalid.contains(&id("/web")) && repo.invalid.contains(&id("/blank")));
}

#[test]
fn a_spec_must_be_a_mapping() {
    invalid_case("not-a-mapping");
}

#[test]
fn a_path_that_cannot_be_an_id_makes_the_repo_incomplete() {
    let repo = invalid_case("bad-path");
    assert!(
        repo.incomplete,
        "an app we cannot name may be a live one: no deletes"
    );
}

#[test]
fn files_over_the_size_limit_are_refused_unread() {
    let repo = invalid_case("too-large");
    assert!(repo.diagnostics[0].message.contains("over the limit of 64"));
    assert!(repo.invalid.contains(&id("/web")));
}

#[test]
fn a_broken_config_loads_nothing_and_deletes_nothing() {
    let repo = invalid_case("bad-config");
    assert!(repo.incomplete && repo.specs.is_empty());
    assert!(
        repo.diagnostics[0].message.contains("did you mean `owner`"),
        "{}",
        repo.diagnostics[0].message
    );
}

#[test]
fn bad_id_prefixes_name_each_item_and_load_nothing() {
    let repo = invalid_case("bad-id-prefixes");
    assert!(repo.incomplete && repo.specs.is_empty());
    let at: Vec<(&str, Option<usize>)> = repo
        .diagnostics
        .iter()
        .map(|d| (d.pointer.as_str(), d.line))
        .collect();
    assert_eq!(
        at,
        [
            ("/idPrefixes/0", Some(3)),
            ("/idPrefixes/1", Some(4)),
            ("/idPrefixes/2", Some(5))
        ],
        "the good item `/ok/` is not reported"
    );
}

#[test]
fn id_prefixes_typos_and_empty_lists_are_explained() {
    let load = |config: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        std::fs::write(dir.path().join("apps/web.yaml"), "cmd: x\n").unwrap();
        std::fs::write(dir.path().join("baton.yaml"), config).unwrap();
        load_repo(dir.path()).unwrap()
    };
    let repo = load("idPrefix: [/shop]\n");
    assert!(repo.incomplete && repo.specs.is_empty());
    assert!(
        repo.diagnostics[0]
            .message
            .contains("unknown field `idPrefix` (did you mean `idPrefixes`?)"),
        "{}",
        diagnostics_lines(&repo)
    );
    let repo = load("owner: a\nidPrefixes: []\n");
    assert!(repo.incomplete && repo.specs.is_empty());
    assert_eq!(repo.diagnostics[0].pointer, "/idPrefixes");
    assert!(
        repo.diagnostics[0].message.contains("remove `idPrefixes`"),
        "{}",
        diagnostics_lines(&repo)
    );
    let repo = load("idPrefixes: /shop\n");
    assert!(
        repo.diagnostics[0].message.contains("expected array"),
        "{}",
        diagnostics_lines(&repo)
    );
    // `/` allows every id; without `owner` the config is valid and the owner is implicit.
    let repo = load("idPrefixes: [/]\n");
    assert!(repo.is_valid(), "{}", diagnostics_lines(&repo));
    assert!(repo.specs.contains_key(&id("/web")));
    assert!(!repo.config.owner_explicit);
    assert!(load("owner: baton\n").config.owner_explicit);
}

#[test]
fn alias_bombs_are_bounded() {
    let repo = invalid_case("alias-bomb");
    assert!(repo.diagnostics[0].message.contains("alias bomb"));
}

#[test]
fn deep_nesting_is_bounded() {
    let repo = invalid_case("deep-nesting");
    assert!(repo.diagnostics[0]
        .message
        .contains("nesting deeper than 64"));
}

#[test]
fn non_utf8_is_refused() {
    let repo = invalid_case("non-utf8");
    assert!(repo.diagnostics[0].message.contains("not valid UTF-8"));
}

#[test]
fn default_size_limit_is_one_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let big = format!(
        "cmd: sleep 1\nlabels: {{a: \"{}\"}}\n",
        "x".repeat(1024 * 1024)
    );
    std::fs::write(dir.path().join("apps/big.yaml"), big).unwrap();
    std::fs::write(dir.path().join("apps/small.yaml"), "cmd: sleep 1\n").unwrap();
    let repo = load_repo(dir.path()).unwrap();
    assert!(repo.diagnostics[0]
        .message
        .contains("over the limit of 1048576"));
    assert!(repo.specs.contains_key(&id("/small")));
}

#[test]
fn symlinks_leaving_the_repo_are_refused_and_inside_ones_followed() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yaml"), "cmd: cat /etc/shadow\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::write(dir.path().join("shared/base.yaml"), "cmd: sleep 1\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("apps/evil.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("shared/base.yaml"),
        dir.path().join("apps/linked.yaml"),
    )
    .unwrap();
    let repo = load_repo(dir.path()).unwrap();
    let d = repo
        .diagnostics
        .iter()
        .find(|d| d.file == Path::new("apps/evil.yaml"))
        .unwrap();
    assert!(
        d.message.contains("symlink leaves the repo"),
        "{}",
        d.message
    );
    assert!(repo.invalid.contains(&id("/evil")));
    assert!(repo.specs.contains_key(&id("/linked")));
}

#[test]
fn a_valid_repo_loads_with_defaults_merged_and_the_baton_block_read() {
    let repo = load_repo(&fixture("specs/valid")).unwrap();
    assert!(repo.is_valid(), "{}", diagnostics_lines(&repo));
    assert_eq!(repo.config.owner, "platform");
    let api = &repo.specs[&id("/prod/web/api")];
    assert_eq!(api.app["id"], "/prod/web/api");
    assert_eq!(
        api.app["labels"]["team"], "platform",
        "repo defaults are merged"
    );
    assert_eq!(
        api.app["labels"]["tier"], "frontend",
        "the spec's own labels stay"
    );
    assert!(
        api.app.get("baton").is_none(),
        "the baton block is never sent"
    );
    assert_eq!(api.baton.ignore, vec!["/instances".to_string()]);
    assert_eq!(api.baton.deadline.as_secs(), 300);
    assert_eq!(api.baton.depends_on, vec![id("/prod/db")]);
    let db = &repo.specs[&id("/prod/db")];
    assert!(!db.baton.prune);
    assert_eq!(
        db.baton.drift,
        baton_core::spec::DriftPolicy::CorrectAfter(std::time::Duration::from_secs(600))
    );
}

#[test]
fn validate_json_output_matches_its_schema() {
    let mut out = Vec::new();
    let style = baton_core::report::Style { color: false };
    let code = baton::commands::validate(
        &fixture("specs/invalid/unknown-fields"),
        baton::commands::Format::Json,
        style,
        &mut out,
    )
    .unwrap();
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    crate::support::assert_matches_schema("validate.schema.json", &doc);
    assert_eq!(doc["valid"], false);
}

/// `baton validate` loads keeping no definitions (`Keep::Diagnostics`): for every fixture repo,
/// valid and invalid, that finds exactly what a full load finds (diagnostics, specs, invalid
/// apps, `baton:` blocks), and keeps no definition.
#[test]
fn loading_for_diagnostics_only_finds_what_a_full_load_finds() {
    use baton_core::spec::load::{load_with, Keep};
    let mut cases = vec![fixture("specs/valid")];
    let invalid = std::fs::read_dir(fixture("specs/invalid")).unwrap();
    cases.extend(invalid.map(|e| e.unwrap().path()));
    assert!(cases.len() > 10, "the fixtures are where they should be");
    for dir in cases {
        let read = || baton::source::read_dir(&dir).unwrap();
        let full = load_with(read(), Keep::Definitions);
        let checked = load_with(read(), Keep::Diagnostics);
        assert_eq!(checked.diagnostics, full.diagnostics, "{}", dir.display());
        assert_eq!(checked.invalid, full.invalid, "{}", dir.display());
        assert_eq!(checked.incomplete, full.incomplete, "{}", dir.display());
        assert_eq!(
            checked.specs.keys().collect::<Vec<_>>(),
            full.specs.keys().collect::<Vec<_>>(),
            "{}",
            dir.display()
        );
        for (id, spec) in &checked.specs {
            assert_eq!(spec.baton, full.specs[id].baton, "{id}");
            assert!(spec.app.is_null(), "{id} kept its definition");
        }
    }
}

// Issue 12, item 11: bad input that used to get through.

#[test]
fn json_duplicate_keys_are_refused_with_their_line() {
    let repo = invalid_case("json-duplicate-keys");
    let find = |file: &str| {
        repo.diagnostics
            .iter()
            .find(|d| d.file == Path::new(file))
            .unwrap_or_else(|| panic!("no diagnostic for {file}"))
    };
    let api = find("apps/api.json");
    assert_eq!(
        (api.message.as_str(), api.line),
        ("duplicate key `cmd`", Some(4))
    );
    let env = find("apps/env.json");
    assert_eq!(
        (env.message.as_str(), env.line),
        ("duplicate key `MODE`", Some(5))
    );
    assert!(repo.invalid.contains(&id("/api")) && repo.invalid.contains(&id("/env")));
    assert!(
        repo.specs.contains_key(&id("/ok")),
        "equal keys in different mappings are no duplicates"
    );
}

#[test]
fn nul_characters_are_refused_in_keys_and_values() {
    let repo = invalid_case("nul-characters");
    for (file, line) in [("apps/web.yaml", 1), ("apps/api.json", 4)] {
        let d = repo
            .diagnostics
            .iter()
            .find(|d| d.file == Path::new(file))
            .unwrap_or_else(|| panic!("no diagnostic for {file}"));
        assert!(d.message.contains("NUL character"), "{}", d.message);
        assert_eq!(d.line, Some(line), "{file}");
    }
    assert!(repo.invalid.contains(&id("/web")) && repo.invalid.contains(&id("/api")));
    assert!(repo.specs.contains_key(&id("/ok")));
}

#[test]
fn yaml_tags_outside_the_core_schema_are_refused_by_name() {
    let repo = invalid_case("yaml-tags");
    for (file, tag, line) in [
        ("apps/blob.yaml", "`!!binary`", 3),
        ("apps/stamp.yaml", "`!!timestamp`", 3),
        ("apps/custom.yaml", "`!vault`", 1),
    ] {
        let d = repo
            .diagnostics
            .iter()
            .find(|d| d.file == Path::new(file))
            .unwrap_or_else(|| panic!("no diagnostic for {file}"));
        assert!(d.message.contains(tag), "{}", d.message);
        assert_eq!(d.line, Some(line), "{file}");
    }
    // Core tags are read as the tag says.
    let ok = &repo.specs[&id("/ok")];
    assert_eq!(ok.app["instances"], 2);
    assert_eq!(ok.app["cmd"], "sleep 1");
}

#[test]
fn a_leading_bom_is_accepted_in_specs_and_config() {
    let repo = load_repo(&fixture("specs/bom")).unwrap();
    assert!(repo.is_valid(), "{}", diagnostics_lines(&repo));
    assert_eq!(repo.config.owner, "bom");
    assert_eq!(repo.specs[&id("/web")].app["instances"], 2);
    assert_eq!(repo.specs[&id("/api")].app["cmd"], "sleep 2");
}

/// Loads a directory on another thread; a load that blocks (on a FIFO, say) fails the test
/// after a generous bound instead of hanging it.
fn load_within(dir: &Path) -> baton_core::spec::Repo {
    let dir = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load_repo(&dir));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("loading the repo blocked (a special file was opened?)")
        .unwrap()
}

fn diag<'a>(repo: &'a baton_core::spec::Repo, file: &str) -> &'a baton_core::spec::Diagnostic {
    repo.diagnostics
        .iter()
        .find(|d| d.file == Path::new(file))
        .unwrap_or_else(|| panic!("no diagnostic for {file}: {}", diagnostics_lines(repo)))
}

#[test]
fn directory_symlinks_leaving_the_repo_are_refused_and_delete_nothing() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.yaml"), "cmd: cat /etc/shadow\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::create_dir_all(dir.path().join("shared/team")).unwrap();
    std::fs::write(dir.path().join("shared/team/base.yaml"), "cmd: sleep 1\n").unwrap();
    std::fs::write(dir.path().join("apps/web.yaml"), "cmd: sleep 1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("apps/ext")).unwrap();
    std::os::unix::fs::symlink("../shared/team", dir.path().join("apps/team")).unwrap();
    let repo = load_within(dir.path());
    let d = diag(&repo, "apps/ext");
    assert!(
        d.message.contains("symlink leaves the repo"),
        "{}",
        d.message
    );
    assert!(
        !repo.specs.contains_key(&id("/ext/x")),
        "nothing outside is read"
    );
    assert!(
        repo.incomplete,
        "the apps behind a refused folder are unknown: nothing may be deleted"
    );
    assert!(
        repo.specs.contains_key(&id("/team/base")),
        "links inside are followed"
    );
    assert!(repo.specs.contains_key(&id("/web")));

    // The apps dir itself as a link out of the repo.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("apps")).unwrap();
    let repo = load_within(dir.path());
    assert!(diag(&repo, "apps")
        .message
        .contains("symlink leaves the repo"));
    assert!(repo.specs.is_empty() && repo.incomplete);

    // baton.yaml as a link out of the repo: not read, a config error.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("baton.yaml"),
        "owner: someone-else
",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(
        dir.path().join("apps/web.yaml"),
        "cmd: sleep 1
",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("baton.yaml"),
        dir.path().join("baton.yaml"),
    )
    .unwrap();
    let repo = load_within(dir.path());
    assert!(diag(&repo, "baton.yaml")
        .message
        .contains("symlink leaves the repo"));
    assert!(repo.specs.is_empty() && repo.incomplete);
}

#[test]
fn symlink_loops_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps/a")).unwrap();
    std::fs::write(dir.path().join("apps/a/web.yaml"), "cmd: sleep 1\n").unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("apps/a/up")).unwrap();
    std::os::unix::fs::symlink("self.yaml", dir.path().join("apps/self.yaml")).unwrap();
    let repo = load_within(dir.path());
    let d = diag(&repo, "apps/a/up");
    assert!(d.message.contains("symlink loop"), "{}", d.message);
    assert!(diag(&repo, "apps/self.yaml").message.contains("symlink"));
    assert!(repo.invalid.contains(&id("/self")));
    assert!(repo.incomplete);
    assert!(repo.specs.contains_key(&id("/a/web")));
    assert_eq!(
        repo.specs.len(),
        1,
        "nothing is loaded twice through the loop"
    );
}

#[test]
fn special_files_are_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(apps.join("ok.yaml"), "cmd: sleep 1\n").unwrap();
    nix::unistd::mkfifo(&apps.join("pipe.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(apps.join("sock.json")).unwrap();
    // A character device (like /dev/zero: endless bytes) needs CAP_MKNOD; tested where allowed.
    let device = nix::sys::stat::mknod(
        &apps.join("zero.yaml"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::S_IRUSR,
        nix::sys::stat::makedev(1, 5),
    )
    .is_ok();
    if !device {
        eprintln!("skipped the device case: mknod is not permitted here");
    }
    let repo = load_within(dir.path());
    assert!(diag(&repo, "apps/pipe.yaml")
        .message
        .contains("a FIFO (named pipe), not a regular file"));
    assert!(diag(&repo, "apps/sock.json")
        .message
        .contains("a socket, not a regular file"));
    assert!(repo.invalid.contains(&id("/pipe")) && repo.invalid.contains(&id("/sock")));
    if device {
        assert!(diag(&repo, "apps/zero.yaml")
            .message
            .contains("a character device"));
    }
    assert!(repo.specs.contains_key(&id("/ok")));

    // baton.yaml as a FIFO: a config error (nothing loads, nothing is deleted), not a hang.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/ok.yaml"), "cmd: sleep 1\n").unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("baton.yaml"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let repo = load_within(dir.path());
    assert!(diag(&repo, "baton.yaml").message.contains("a FIFO"));
    assert!(repo.incomplete && repo.specs.is_empty());
}

/// Each diagnostic is placed by parsing its file again: thousands of findings in one file cost
/// thousands of parses (a megabyte of unknown fields kept `validate` busy for many minutes).
/// At most 100 per file are shown, errors first, the rest counted in one more.
#[test]
fn findings_per_file_are_capped_errors_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    let mut spec = String::from("cmd: sleep 1\ncontainer:\n  docker:\n    image: nginx\n");
    for i in 0..3000 {
        spec.push_str(&format!("    unknownNested{i}: 1\n")); // warnings
    }
    spec.push_str("instances: many\n"); // the one error, last in the file
    std::fs::write(dir.path().join("apps/web.yaml"), &spec).unwrap();
    let nulls: String = (0..3000).map(|i| format!("k{i}: null\n")).collect();
    std::fs::write(
        dir.path().join("apps/nulls.yaml"),
        format!("cmd: x\n{nulls}"),
    )
    .unwrap();
    let repo = load_within(dir.path());
    let of = |file: &str| -> Vec<&baton_core::spec::Diagnostic> {
        repo.diagnostics
            .iter()
            .filter(|d| d.file == Path::new(file))
            .collect()
    };
    let web = of("apps/web.yaml");
    assert_eq!(web.len(), 101, "100 shown and one that counts the rest");
    assert!(
        web.iter()
            .any(|d| d.pointer == "/instances" && d.severity == Severity::Error),
        "the error is shown though it comes after thousands of warnings"
    );
    assert!(web.iter().any(|d| d.message
        == "2901 more like these not shown (at most 100 per file)"
        && d.severity == Severity::Warning));
    let nulls = of("apps/nulls.yaml");
    assert_eq!(nulls.len(), 101);
    assert!(nulls
        .iter()
        .any(|d| d.message.starts_with("2900 more like these not shown")));
    assert!(
        repo.specs.contains_key(&id("/nulls")),
        "null fields are only warnings"
    );
    assert!(repo.invalid.contains(&id("/web")));
}

/// Found while writing the fuzz targets: a `deadline` whose parts add up past what a duration
/// holds panicked the whole load (`validate` exited 101; a 660 kB string of `4294967295d`), and
/// a part over 2^32 wrapped around (`4294967296s` was `0s`).
#[test]
fn durations_that_overflow_are_errors_not_panics() {
    use baton_core::spec::load::parse_duration;
    assert_eq!(
        parse_duration("1h30m"),
        Ok(std::time::Duration::from_secs(5400))
    );
    for s in [
        "4294967296s",
        "18446744073709551615d",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(s).is_err(), "{s}");
    }
    let long = "4294967295d".repeat(60_000);
    let e = parse_duration(&long).unwrap_err();
    assert!(e.len() < 200, "the message does not echo the whole value");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(
        dir.path().join("apps/web.yaml"),
        format!("cmd: x\nbaton:\n  deadline: \"{long}\"\n"),
    )
    .unwrap();
    let repo = load_within(dir.path());
    assert_eq!(diag(&repo, "apps/web.yaml").pointer, "/baton/deadline");
    assert!(repo.invalid.contains(&id("/web")));
}

// Issue 15: the `baton.rollout` block.

fn messages_at<'a>(repo: &'a baton_core::spec::Repo, pointer: &str) -> Vec<&'a str> {
    repo.diagnostics
        .iter()
        .filter(|d| d.pointer == pointer)
        .map(|d| d.message.as_str())
        .collect()
}

#[test]
fn rollout_typos_suggest_the_right_key() {
    let repo = invalid_case("rollout-typo");
    let at = |p: &str| messages_at(&repo, p);
    assert_eq!(
        at("/baton/rollout/stpes"),
        ["unknown field `stpes` (did you mean `steps`?)"]
    );
    assert_eq!(
        at("/baton/rollout/steps/1/trafic"),
        ["unknown field `trafic` (did you mean `traffic`?)"]
    );
    assert_eq!(
        at("/baton/rollout/steps/0/isolated/check/expct"),
        ["unknown field `expct` (did you mean `expect`?)"]
    );
    assert_eq!(
        at("/baton/rollout/analysis/minRequest"),
        ["unknown field `minRequest` (did you mean `minRequests`?)"]
    );
    let stpes = repo
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/baton/rollout/stpes")
        .unwrap();
    assert_eq!(stpes.line, Some(9));
    assert!(repo.invalid.contains(&id("/shop/api")) && repo.invalid.contains(&id("/shop/cart")));
}

#[test]
fn rollout_steps_out_of_order_are_refused_at_the_step() {
    let repo = invalid_case("rollout-order");
    let find = |p: &str| {
        repo.diagnostics
            .iter()
            .find(|d| d.pointer == p)
            .unwrap_or_else(|| panic!("no diagnostic at {p}: {:?}", repo.diagnostics))
    };
    let iso = find("/baton/rollout/steps/1");
    assert_eq!(iso.file, Path::new("apps/shop/api.yaml"));
    assert_eq!(iso.line, Some(11));
    assert!(iso.message.contains("`isolated` must be the first step"));
    let cart = find("/baton/rollout/steps/1/traffic");
    assert_eq!(cart.file, Path::new("apps/shop/cart.yaml"));
    assert!(cart.message.contains("20% follows 50%"), "{}", cart.message);
    assert!(repo
        .diagnostics
        .iter()
        .any(|d| d.file == Path::new("apps/shop/web.yaml")
            && d.pointer == "/baton/rollout/steps/1/traffic"
            && d.message.contains("blueGreen switches all traffic at once")));
    for app in ["/shop/api", "/shop/cart", "/shop/web"] {
        assert!(repo.invalid.contains(&id(app)), "{app}");
    }
}

#[test]
fn rollout_refuses_marathon_lb_labels_the_user_set() {
    let repo = invalid_case("rollout-labels");
    let started = messages_at(&repo, "/labels/HAPROXY_DEPLOYMENT_STARTED_AT");
    assert_eq!(started.len(), 1);
    assert!(started[0].contains("remove the label"), "{started:?}");
    assert_eq!(
        messages_at(&repo, "/labels/HAPROXY_DEPLOYMENT_COLOUR").len(),
        1
    );
    let block = messages_at(&repo, "/baton/rollout");
    assert!(
        block.iter().any(|m| m.contains("`HAPROXY_GROUP`")),
        "{block:?}"
    );
    let line = repo
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/labels/HAPROXY_DEPLOYMENT_STARTED_AT")
        .and_then(|d| d.line);
    assert_eq!(line, Some(5));
    assert!(repo.invalid.contains(&id("/shop/api")));
}

#[test]
fn rollout_needs_http_mode_and_a_fixed_service_port() {
    let repo = invalid_case("rollout-tcp-mode");
    let block = messages_at(&repo, "/baton/rollout");
    assert!(block.iter().any(|m| m.contains("http mode")), "{block:?}");
    let port = messages_at(&repo, "/portDefinitions/0/port");
    assert!(
        port.iter().any(|m| m.contains("fixed service port")),
        "{port:?}"
    );
    assert!(repo.invalid.contains(&id("/shop/api")));
}

#[test]
fn a_spec_named_like_a_canary_makes_the_rollout_app_invalid() {
    let repo = invalid_case("rollout-canary-spec");
    let api = repo
        .diagnostics
        .iter()
        .find(|d| d.file == Path::new("apps/shop/api.yaml"))
        .unwrap();
    assert_eq!(api.pointer, "/baton/rollout");
    assert_eq!(api.line, Some(7));
    assert!(api
        .message
        .contains("`/shop/api-canary` is an app of this repo too"));
    assert!(repo.invalid.contains(&id("/shop/api")));
    assert!(
        repo.specs.contains_key(&id("/shop/api-canary")),
        "the other app is fine"
    );
    // A warning leaves its app valid: 3 instances cannot give 10% (33%) or 50% (67%).
    let web: Vec<_> = repo
        .diagnostics
        .iter()
        .filter(|d| d.file == Path::new("apps/shop/web.yaml"))
        .collect();
    assert_eq!(web.len(), 2, "{web:?}");
    assert!(web.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!(web[0].pointer, "/baton/rollout/steps/0/traffic");
    assert!(web[0]
        .message
        .contains("with 3 instances the 10% step gives the new version 33%"));
    let spec = &repo.specs[&id("/shop/web")];
    assert_eq!(
        spec.app["labels"]["HAPROXY_DEPLOYMENT_GROUP"], "/shop/web",
        "a rollout app's definition carries its deployment group"
    );
    assert!(spec.baton.rollout.is_some());
}

/// Issue 16: a DC/OS secret reference must name a secret the app declares, as Marathon checks
/// ("references an undefined secret"); the error names the reference's pointer and line, and
/// the app beside it with a declared secret loads.
#[test]
fn an_env_secret_reference_must_name_a_declared_secret() {
    let repo = invalid_case("undeclared-secret");
    let d = repo
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/env/DB_PASSWORD/secret")
        .expect("a diagnostic at the reference");
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.file, Path::new("apps/api.yaml"));
    assert_eq!(d.line, Some(4));
    assert!(
        d.message.contains("`db-pasword`") && d.message.contains("did you mean `db-password`?"),
        "{}",
        d.message
    );
    assert!(repo.invalid.contains(&id("/api")));
    assert!(
        repo.specs.contains_key(&id("/ok")),
        "a declared secret reference is valid"
    );
    assert_eq!(
        repo.specs[&id("/ok")].app["env"]["DB_PASSWORD"],
        serde_json::json!({"secret": "db"}),
        "the reference is sent as written"
    );
}

/// Issue 16: fields older Marathons served in every app (`storeUrls`, the status counts) and
/// the current one ignores are warnings that name them, not errors; those Marathon ignores are
/// left out of the definition; an unknown field (a typo of one) is still an error.
#[test]
fn fields_marathon_once_served_are_warnings_and_unknown_ones_errors() {
    let repo = load_repo(&crate::support::fixture("specs/retired-fields")).unwrap();
    insta::assert_snapshot!("retired_fields", crate::support::diagnostics_lines(&repo));
    let legacy = &repo.specs[&id("/legacy")];
    for field in ["storeUrls", "tasksRunning", "tasksStaged", "deployments"] {
        let d = repo
            .diagnostics
            .iter()
            .find(|d| d.pointer == format!("/{field}"))
            .unwrap_or_else(|| panic!("no diagnostic for {field}"));
        assert_eq!(d.severity, Severity::Warning, "{field}");
        assert!(d.message.contains(&format!("`{field}`")), "{}", d.message);
        assert!(d.line.is_some(), "{field}: the line is told");
        assert!(
            legacy.app.get(field).is_none(),
            "{field} is not sent to Marathon"
        );
    }
    assert!(
        legacy.app.get("residency").is_some(),
        "Marathon still reads residency"
    );
    assert!(repo.invalid.contains(&id("/typo")));
    assert!(repo.diagnostics.iter().any(|d| d.pointer == "/storeUrl"
        && d.severity == Severity::Error
        && d.message.contains("unknown field `storeUrl`")));
}
