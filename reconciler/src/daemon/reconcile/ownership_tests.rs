//! `ownership` of `/api/status`: what it says with and without an explicit owner, and that a
//! broken `baton.yaml` (owner unknown rather than absent) is not reported as a missing owner.

use serde_json::json;

use super::*;
use baton_core::spec::load::{load, parse_config, Snapshot, SourceFile, CONFIG_FILE};

fn repo_with(config: &str) -> Repo {
    let file = SourceFile {
        path: CONFIG_FILE.into(),
        bytes: config.as_bytes().to_vec(),
    };
    let (config, diagnostics) = parse_config(Some(&file));
    let broken = diagnostics
        .iter()
        .any(|d| d.severity == baton_core::spec::Severity::Error);
    load(Snapshot {
        config,
        // A broken config loads no spec, as the sources do.
        files: if broken {
            Vec::new()
        } else {
            vec![SourceFile {
                path: "apps/web.yaml".into(),
                bytes: b"cmd: ./web\n".to_vec(),
            }]
        },
        diagnostics,
        incomplete: broken,
    })
}

fn live() -> Vec<serde_json::Value> {
    vec![json!({"id": "/stale", "cmd": "sleep 1", "labels": {"baton.dev/owner": "baton"}})]
}

#[test]
fn without_an_owner_the_status_warns_and_lists_the_held_deletes() {
    let repo = repo_with("defaults: {labels: {team: a}}\n");
    let plan = plan::plan(&repo, &live(), &Policy::default());
    let s = OwnershipStatus::of(&repo, &plan);
    assert!(!s.explicit);
    assert_eq!(s.warning, Some(plan::no_owner_reason("baton")));
    assert_eq!(s.held_deletes, vec![AppId::parse("/stale").unwrap()]);

    let repo = repo_with("owner: baton\n");
    let plan = plan::plan(&repo, &live(), &Policy::default());
    let s = OwnershipStatus::of(&repo, &plan);
    assert!(s.explicit && s.warning.is_none() && s.held_deletes.is_empty());
    assert_eq!(plan.summary.delete, 1);
}

#[test]
fn a_broken_config_is_not_reported_as_a_missing_owner() {
    let repo = repo_with("owner: team-a\nidPrefixes: [shop]\n");
    assert!(repo.incomplete);
    let plan = plan::plan(&repo, &live(), &Policy::default());
    let s = OwnershipStatus::of(&repo, &plan);
    assert_eq!(
        s.warning, None,
        "the config's own diagnostic says what is wrong"
    );
    assert!(s.held_deletes.is_empty());
    assert!(
        plan.held
            .iter()
            .all(|h| h.reason.contains("could not be read completely")),
        "{:?}",
        plan.held
    );
}
