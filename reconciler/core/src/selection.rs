//! `--app APP` (repeatable) of `baton plan` and `baton apply`: which apps a command acts on.
//! Pure: the plan of the whole repo is made as always (ownership, the delete budget, invalid
//! specs held: the same safety rules), then narrowed to the apps named, so a selection can
//! only ever do less than the whole plan.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::plan::Plan;
use crate::spec::{AppId, Repo};

/// The ids named that are neither in the repo (valid or not) nor among the live apps: a
/// mistake to report before anything is written.
pub fn unknown(apps: &BTreeSet<AppId>, repo: &Repo, live: &[Value]) -> Vec<AppId> {
    let live_ids: BTreeSet<&str> = live.iter().filter_map(|a| a.get("id")?.as_str()).collect();
    apps.iter()
        .filter(|a| {
            !repo.specs.contains_key(*a)
                && !repo.invalid.contains(*a)
                && !live_ids.contains(a.as_str())
        })
        .cloned()
        .collect()
}

/// Narrow `plan` to `apps`: only their changes stay (waves and counts recomputed), and the
/// report's lists (unchanged, invalid, held, unmanaged, moves, conflicts, out of scope) only
/// name them. An app named whose dependency (`dependsOn`) also changes is applied without it.
pub fn restrict(plan: &mut Plan, apps: &BTreeSet<AppId>) {
    crate::cycle::retain_changes(plan, |c| apps.contains(&c.app));
    plan.unchanged.retain(|a| apps.contains(a));
    plan.invalid.retain(|a| apps.contains(a));
    plan.unmanaged.retain(|a| apps.contains(a));
    plan.held.retain(|h| apps.contains(&h.app));
    plan.moves
        .retain(|m| apps.contains(&m.from) || apps.contains(&m.to));
    plan.conflicts.retain(|c| apps.contains(&c.app));
    plan.out_of_scope.retain(|a| apps.contains(a));
    plan.summary.unchanged = plan.unchanged.len();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, Action, Policy};
    use crate::spec::load::{load, RepoConfig, Snapshot, SourceFile};

    fn repo(files: &[(&str, &str)]) -> Repo {
        load(Snapshot {
            config: RepoConfig {
                owner: "me".into(),
                owner_explicit: true,
                ..RepoConfig::default()
            },
            files: (files.iter())
                .map(|(p, t)| SourceFile {
                    path: std::path::PathBuf::from(p),
                    bytes: t.as_bytes().to_vec(),
                })
                .collect(),
            ..Snapshot::default()
        })
    }

    fn ids(v: &[&str]) -> BTreeSet<AppId> {
        v.iter().map(|a| AppId::parse(a).unwrap()).collect()
    }

    /// Three apps to create and owned live apps gone from git: `--app /a --app /gone1` keeps
    /// exactly their changes, the deletion as the whole plan decided it (the delete budget is
    /// the whole plan's); names neither in git nor live are reported.
    #[test]
    fn a_selection_keeps_only_the_named_apps_changes() {
        let spec = "cmd: sleep 1\ncpus: 0.1\nmem: 16\n";
        let r = repo(&[
            ("apps/a.yaml", spec),
            ("apps/b.yaml", spec),
            ("apps/c.yaml", spec),
        ]);
        let live: Vec<Value> = (1..=4)
            .map(|i| {
                serde_json::json!({
                    "id": format!("/gone{i}"), "cmd": "sleep 1", "cpus": 0.1, "mem": 16,
                    "instances": 1, "labels": {"baton.dev/owner": "me"}
                })
            })
            .collect();
        let policy = Policy {
            commit: "c1".into(),
            allow_deletes: None,
        };
        let whole = plan(&r, &live, &policy);
        let gone1 = |p: &Plan| {
            let change = p
                .changes()
                .any(|c| c.app.as_str() == "/gone1" && c.action == Action::Delete);
            let held = p.held.iter().any(|h| h.app.as_str() == "/gone1");
            (change, held)
        };
        let named = ids(&["/a", "/gone1"]);
        assert!(unknown(&named, &r, &live).is_empty());
        assert_eq!(
            unknown(&ids(&["/a", "/nope"]), &r, &live),
            vec![AppId::parse("/nope").unwrap()]
        );
        let mut p = whole.clone();
        restrict(&mut p, &named);
        let mut kept: Vec<String> = p.changes().map(|c| c.app.to_string()).collect();
        kept.sort();
        let want: Vec<&str> = if gone1(&whole).0 {
            vec!["/a", "/gone1"]
        } else {
            vec!["/a"]
        };
        assert_eq!(kept, want);
        assert_eq!(
            gone1(&p),
            gone1(&whole),
            "the deletion as the whole plan had it"
        );
        assert_eq!(p.summary.create, 1);
        assert!(
            p.held.iter().all(|h| named.contains(&h.app)),
            "{:?}",
            p.held
        );
    }
}
