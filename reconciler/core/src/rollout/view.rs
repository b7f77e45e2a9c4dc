//! What the cycle rule needs to know of rollouts ([`RolloutView`]), worked out from the repo, the
//! live apps, the persisted state and what this Baton was started with. Pure.

use std::collections::HashMap;

use serde_json::Value;

use super::{Check, Rollout, Step, DEPLOYMENT_GROUP};
use crate::cycle::state::State;
use crate::cycle::RolloutView;
use crate::ownership;
use crate::spec::{AppId, Repo, Spec};

/// What of `baton serve`'s configuration a rollout depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolloutSettings {
    /// How many `--haproxy-stats` sources there are (traffic steps are judged by them).
    pub stats_sources: usize,
    /// `--allow-check-commands`: `command` checks may run (code from git on Baton's host).
    pub allow_check_commands: bool,
}

/// The view of rollouts for one cycle:
/// - `active`: the apps of `state.rollouts`;
/// - `eligible`: apps whose spec has a rollout and whose live app (owned by this repo's owner)
///   carries the deployment-group label naming it; without the label a canary could not join
///   its backend, so the update is a plain one, which lands the label;
/// - `blocked`: rollout specs that cannot run with `settings` ([`blocked_why`]);
/// - `rolled_back`: apps whose last rolled-back definition ([`State`]'s `rolled_back.digest`) is
///   the spec's current one ([`spec_digest`]).
pub fn view(repo: &Repo, live: &[Value], state: &State, settings: &RolloutSettings) -> RolloutView {
    let owner = repo.config.owner.as_str();
    let with_rollout: Vec<(&AppId, &Spec, &Rollout)> = repo
        .specs
        .iter()
        .filter_map(|(id, spec)| spec.baton.rollout.as_ref().map(|r| (id, &**spec, r)))
        .collect();
    let mut v = RolloutView {
        active: state
            .rollouts
            .keys()
            .filter_map(|k| AppId::parse(k).ok())
            .collect(),
        ..RolloutView::default()
    };
    if with_rollout.is_empty() {
        return v;
    }
    let live_by_id: HashMap<&str, &Value> = live
        .iter()
        .filter_map(|a| Some((a.get("id")?.as_str()?, a)))
        .collect();
    for (id, spec, rollout) in with_rollout {
        let grouped = live_by_id.get(id.as_str()).is_some_and(|l| {
            ownership::owner_of(l) == Some(owner)
                && l.pointer("/labels")
                    .and_then(|labels| labels.get(DEPLOYMENT_GROUP))
                    .and_then(Value::as_str)
                    == Some(id.as_str())
        });
        if grouped {
            v.eligible.insert(id.clone());
        }
        if let Some(why) = blocked_why(rollout, settings) {
            v.blocked.insert(id.clone(), why);
        }
        let rolled_back = (state.apps.get(id.as_str()))
            .and_then(|a| a.rolled_back.as_ref())
            .is_some_and(|r| r.digest == spec_digest(spec, owner));
        if rolled_back {
            v.rolled_back.insert(id.clone());
        }
    }
    v
}

/// Why `rollout` cannot run with `settings`, if it cannot: traffic steps need HAProxy's numbers
/// (blueGreen's switch too: its grace is judged), a `command` check needs
/// `--allow-check-commands`.
pub fn blocked_why(rollout: &Rollout, settings: &RolloutSettings) -> Option<String> {
    let mut why = Vec::new();
    let traffic = (rollout.steps.iter()).any(|s| matches!(s, Step::Traffic { .. }));
    if traffic && settings.stats_sources == 0 {
        why.push("its traffic steps are judged by HAProxy's numbers, and `baton serve` has no `--haproxy-stats`");
    }
    let command =
        (rollout.steps.iter()).any(|s| matches!(s, Step::Isolated(Check::Command { .. })));
    if command && !settings.allow_check_commands {
        why.push("its check runs a command from git on Baton's host, which `baton serve` allows only with `--allow-check-commands`");
    }
    (!why.is_empty()).then(|| why.join("; "))
}

pub use super::machine::{phase_name, spec_digest};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cycle::state::RolledBack;
    use crate::rollout::{Phase, Reason, RolloutState, Strategy};
    use crate::spec::load::from_texts;
    use serde_json::json;
    use std::collections::BTreeSet;

    const OWNER: &str = "team";

    fn spec_text(rollout: &str, image: &str) -> String {
        format!(
            "cmd: ./serve {image}\ninstances: 10\nlabels: {{HAPROXY_GROUP: external}}\nportDefinitions: [{{port: 10100}}]\nhealthChecks: [{{protocol: HTTP, path: /health, portIndex: 0}}]\nbaton:\n  rollout: {rollout}\n"
        )
    }

    fn repo() -> Repo {
        let api = spec_text("{}", "v2");
        let checked = spec_text(
            "{steps: [{isolated: {check: {command: ./smoke.sh}}}, {traffic: 50}]}",
            "v2",
        );
        let r = from_texts(&[
            ("baton.yaml", "owner: team\n"),
            ("apps/api.yaml", &api),
            ("apps/checked.yaml", &checked),
            ("apps/plain.yaml", "cmd: ./plain\n"),
        ]);
        assert!(r.invalid.is_empty(), "{:?}", r.diagnostics);
        r
    }

    fn live_app(id: &str, group: Option<&str>, owner: &str) -> Value {
        let mut labels = json!({"baton.dev/owner": owner});
        if let Some(g) = group {
            labels[DEPLOYMENT_GROUP] = json!(g);
        }
        json!({"id": id, "cmd": "./serve v1", "labels": labels})
    }

    fn ids(set: &BTreeSet<AppId>) -> Vec<&str> {
        set.iter().map(AppId::as_str).collect()
    }

    #[test]
    fn eligible_means_a_rollout_spec_and_a_grouped_live_stable_of_ours() {
        let repo = repo();
        let live = vec![
            live_app("/api", Some("/api"), OWNER),
            live_app("/checked", None, OWNER), // the label lands with a plain update first
            live_app("/plain", Some("/plain"), OWNER), // no rollout in its spec
        ];
        let settings = RolloutSettings {
            stats_sources: 1,
            allow_check_commands: true,
        };
        let v = view(&repo, &live, &State::new(), &settings);
        assert_eq!(ids(&v.eligible), ["/api"]);
        assert!(v.active.is_empty() && v.blocked.is_empty() && v.rolled_back.is_empty());
        // Another group name, or another owner's app: not eligible.
        for l in [
            live_app("/api", Some("/other"), OWNER),
            live_app("/api", Some("/api"), "someone-else"),
        ] {
            let v = view(&repo, &[l], &State::new(), &settings);
            assert!(v.eligible.is_empty(), "{v:?}");
        }
    }

    #[test]
    fn blocked_without_stats_or_without_allowed_commands() {
        let repo = repo();
        let none = RolloutSettings::default();
        let v = view(&repo, &[], &State::new(), &none);
        assert_eq!(
            v.blocked.keys().map(AppId::as_str).collect::<Vec<_>>(),
            ["/api", "/checked"]
        );
        assert!(v.blocked[&AppId::parse("/api").unwrap()].contains("--haproxy-stats"));
        let both = &v.blocked[&AppId::parse("/checked").unwrap()];
        assert!(
            both.contains("--haproxy-stats") && both.contains("--allow-check-commands"),
            "{both}"
        );
        let stats = RolloutSettings {
            stats_sources: 2,
            ..none
        };
        let v = view(&repo, &[], &State::new(), &stats);
        assert_eq!(
            v.blocked.keys().map(AppId::as_str).collect::<Vec<_>>(),
            ["/checked"]
        );
        assert!(!v.blocked.values().any(|w| w.contains("--haproxy-stats")));
        // A canary with only a check needs no stats; blueGreen's switch does.
        let only_check = crate::rollout::spec::parse(
            &json!({"steps": [{"isolated": {"check": {"http": "/"}}}]}),
        )
        .unwrap();
        assert_eq!(blocked_why(&only_check, &none), None);
        let blue = crate::rollout::spec::parse(&json!({"strategy": "blueGreen"})).unwrap();
        assert!(blocked_why(&blue, &none).is_some());
    }

    #[test]
    fn active_is_the_states_rollouts_and_rolled_back_needs_the_same_digest() {
        let repo = repo();
        let api = AppId::parse("/api").unwrap();
        let digest = spec_digest(&repo.specs[&api], OWNER);
        let mut state = State::new();
        state.rollouts.insert(
            "/checked".into(),
            RolloutState {
                commit: "c1".into(),
                digest: "sha256:x".into(),
                strategy: Strategy::Canary,
                canary: "/checked-canary".into(),
                started_at: "2026-01-01T00:00:00.000000".into(),
                phase: Phase::Step { index: 1 },
                entered_ms: 0,
                window: None,
                timeline: Vec::new(),
                analysis: None,
            },
        );
        let rolled = |digest: &str| RolledBack {
            commit: "c1".into(),
            digest: digest.into(),
            reason: Reason::Aborted,
            at_ms: 0,
        };
        state.apps.entry("/api".into()).or_default().rolled_back = Some(rolled(&digest));
        let v = view(&repo, &[], &state, &RolloutSettings::default());
        assert_eq!(ids(&v.active), ["/checked"]);
        assert_eq!(ids(&v.rolled_back), ["/api"]);
        // The definition changed since (another digest): no longer held.
        state.apps.entry("/api".into()).or_default().rolled_back = Some(rolled("sha256:older"));
        let v = view(&repo, &[], &state, &RolloutSettings::default());
        assert!(v.rolled_back.is_empty());
        // The digest is the one Baton labels the app with.
        let body = ownership::labelled(&repo.specs[&api], OWNER, "c1");
        assert_eq!(body["labels"][ownership::DIGEST], json!(digest));
    }
}
