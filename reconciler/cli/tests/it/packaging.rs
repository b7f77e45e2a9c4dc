//! What users install (docs/install.md): the README's install commands and the Dockerfile
//! agree, the systemd unit is hardened and loads, Baton's own Marathon app validates, the
//! completions parse and complete, the man pages render, `--version` names the commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::repo_root;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn baton(args: &[&str]) -> Output {
    let out = Command::new(BATON).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "baton {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// Printed past libtest's capture, as the suite's other skip notes.
fn skip(test: &str, why: &str) {
    std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skipped {test}: {why}\n"),
    )
    .ok();
}

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program` with `input` on stdin.
fn run_with_input(program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// The `cargo install` commands of the README's "Installing" section, comments dropped.
fn readme_installs() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Installing")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Installing section");
    section
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.starts_with("cargo install "))
        .collect()
}

/// The `cargo install` commands of the Dockerfile's RUN instructions (continuation lines
/// joined, BuildKit's `--mount` options and the image's `--root /out` dropped).
fn dockerfile_installs(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RUN "))
        .map(|run| {
            run.split_whitespace()
                .filter(|w| !w.starts_with("--mount="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter_map(|run| {
            let install = run.strip_prefix("cargo install ")?;
            Some(format!(
                "cargo install {}",
                install.replace(" --root /out", "")
            ))
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_what_the_readme_installs() {
    let readme = readme_installs();
    assert_eq!(readme.len(), 2, "{readme:#?}");
    assert!(readme.iter().any(|c| c.contains("--path reconciler/cli")));
    assert!(readme
        .iter()
        .any(|c| c.contains("--path sidecar") && c.contains("-unknown-linux-musl")));
    let dockerfile = std::fs::read_to_string(repo_root().join("packaging/Dockerfile")).unwrap();
    assert_eq!(dockerfile_installs(&dockerfile), readme);
    // The images copy what those commands installed under --root /out.
    assert!(dockerfile
        .contains("FROM scratch AS baton-env\nCOPY --from=build /out/bin/baton-env /baton-env\n"));
    assert!(dockerfile.contains("COPY --from=build /out/bin/baton /usr/local/bin/baton\n"));
    // A drifted README fails the comparison (the check is not vacuous).
    let drifted = dockerfile.replace("--path sidecar", "--path sidecar --features x");
    assert_ne!(dockerfile_installs(&drifted), readme);
}

/// The unit with `ExecStart` pointing at this build (systemd checks that it exists).
fn unit_for_test(dir: &Path, unit: &str) -> PathBuf {
    let path = dir.join("baton.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/baton ", &format!("{BATON} ")),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_is_hardened_and_loads() {
    let unit =
        std::fs::read_to_string(repo_root().join("packaging/systemd/baton.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/baton serve ",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=baton",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "Environment=BATON_STATE_DIR=%S/baton",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
    let Some(analyze) = tool("systemd-analyze") else {
        return skip(
            "the_systemd_unit_is_hardened_and_loads (systemd-analyze part)",
            "systemd-analyze is not installed",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_test(dir.path(), &unit);
    let verify = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert_eq!(text(&verify.stderr), "", "systemd-analyze verify warned");
    // The exposure score systemd computes from the unit (0 best .. 10 worst): at most 2.0.
    let security = |path: &Path| {
        Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = security(&path);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The same check fails a unit without the hardening.
    let bare = dir.path().join("bare.service");
    std::fs::write(&bare, format!("[Service]\nExecStart={BATON} serve\n")).unwrap();
    assert!(!security(&bare).status.success());
}

#[test]
fn batons_own_marathon_app_validates() {
    let repo = repo_root().join("packaging/marathon");
    let out = Command::new(BATON)
        .args(["validate", "--format", "json"])
        .arg(&repo)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["apps"], 1, "{report:#}");
    assert_eq!(report["diagnostics"], serde_json::json!([]), "{report:#}");
    let text = std::fs::read_to_string(repo.join("apps/ops/baton.json")).unwrap();
    let app: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(app["cmd"]
        .as_str()
        .unwrap()
        .starts_with("exec baton serve "));
    let health = &app["healthChecks"][0];
    assert_eq!(
        (&health["path"], &health["portIndex"]),
        (&"/healthz".into(), &0.into())
    );
    // The state dir is the persistent volume.
    let volume = &app["container"]["volumes"][0];
    assert!(
        volume["persistent"]["size"].as_u64().unwrap() > 0,
        "{volume}"
    );
    let state = format!(
        "--state-dir \"$MESOS_SANDBOX/{}\"",
        volume["containerPath"].as_str().unwrap()
    );
    assert!(
        app["cmd"].as_str().unwrap().contains(&state),
        "{}",
        app["cmd"]
    );
}

#[test]
fn bash_completion_parses_and_completes_commands() {
    let script = baton(&["completions", "bash"]).stdout;
    let Some(bash) = tool("bash") else {
        return skip(
            "bash_completion_parses_and_completes_commands",
            "bash is absent",
        );
    };
    let syntax = run_with_input(&bash, &["-n"], &script);
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    // Source it and ask what `baton va<TAB>` and `baton plan --for<TAB>` complete to.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baton.bash");
    std::fs::write(&file, &script).unwrap();
    let probe = format!(
        "source {}\n\
         COMP_WORDS=(baton va); COMP_CWORD=1; _baton baton va baton; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(baton plan --for); COMP_CWORD=2; _baton baton --for plan; echo \"${{COMPREPLY[*]}}\"\n",
        file.display()
    );
    let out = run_with_input(&bash, &[], probe.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "validate\n--format\n");
}

#[test]
fn zsh_and_fish_completions_parse() {
    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        let script = baton(&["completions", shell]).stdout;
        assert!(text(&script).contains("validate"), "{shell}");
        let Some(program) = tool(shell) else {
            skip(
                "zsh_and_fish_completions_parse",
                &format!("{shell} is absent"),
            );
            continue;
        };
        let out = run_with_input(&program, &check, &script);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
    }
}

#[test]
fn the_man_pages_render() {
    let page = baton(&["man"]).stdout;
    let roff = text(&page);
    assert!(roff.contains(".TH baton 1"), "{roff}");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    baton(&["man", "--dir", pages.to_str().unwrap()]);
    for name in [
        "baton.1",
        "baton-serve.1",
        "baton-completions.1",
        "baton-man.1",
    ] {
        assert!(pages.join(name).is_file(), "{name} missing");
    }
    let Some(groff) = tool("groff") else {
        return skip("the_man_pages_render (rendering)", "groff is absent");
    };
    // -ww: every warning; -z: no output, only the check; then a rendering to read.
    let warnings = run_with_input(&groff, &["-man", "-ww", "-z"], &page);
    assert!(warnings.status.success());
    assert_eq!(text(&warnings.stderr), "", "groff warns about baton.1");
    let rendered = run_with_input(&groff, &["-man", "-Tutf8", "-P-cbou"], &page);
    let rendered = text(&rendered.stdout);
    for part in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "completions",
        "dev-scheduler",
    ] {
        assert!(rendered.contains(part), "{part} not in:\n{rendered}");
    }
    let serve = std::fs::read(pages.join("baton-serve.1")).unwrap();
    let rendered = text(&run_with_input(&groff, &["-man", "-Tutf8", "-P-cbou"], &serve).stdout);
    assert!(rendered.contains("--state-dir"), "{rendered}");
}

/// The commit of the checkout, or `None` (skipped) for a source tree without git.
fn head_commit(test: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output();
    match out {
        Ok(out) if out.status.success() => Some(text(&out.stdout).trim().to_owned()),
        _ => {
            skip(test, "the source is not a git checkout");
            None
        }
    }
}

#[test]
fn version_names_the_commit() {
    let Some(commit) = head_commit("version_names_the_commit") else {
        return;
    };
    let version = text(&baton(&["--version"]).stdout);
    assert_eq!(
        version,
        format!("baton {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The build script's fallbacks, run as a program: outside a checkout the version alone
/// (a tarball), `BATON_COMMIT` when given, and a `BATON_COMMIT` that is no commit id ignored.
#[test]
fn the_version_script_falls_back_without_git() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("build_version");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args(["--edition", "2021", "-o"])
        .arg(&exe)
        .arg(repo_root().join("scripts/build_version.rs"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let outside = dir.path().join("tarball");
    std::fs::create_dir(&outside).unwrap();
    let run = |commit: Option<&str>| {
        let mut cmd = Command::new(&exe);
        cmd.current_dir(&outside)
            .env("CARGO_PKG_VERSION", "9.8.7")
            // git must not find a repository above the temp dir.
            .env("GIT_CEILING_DIRECTORIES", dir.path())
            .env_remove("BATON_COMMIT");
        if let Some(c) = commit {
            cmd.env("BATON_COMMIT", c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let stdout = text(&out.stdout);
        let version = stdout
            .lines()
            .find_map(|l| l.strip_prefix("cargo:rustc-env=BATON_VERSION="))
            .unwrap()
            .to_owned();
        (version, stdout.contains("cargo:warning="))
    };
    assert_eq!(run(None), ("9.8.7".to_owned(), false));
    assert_eq!(
        run(Some("0123456789ab")),
        ("9.8.7 (0123456789ab)".to_owned(), false)
    );
    assert_eq!(run(Some("v1; rm -rf /")), ("9.8.7".to_owned(), true));
}
