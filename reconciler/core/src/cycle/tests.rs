//! The cycle rule as tables: trigger x mode x view x state x plan -> decision, and the loop's
//! next step. Every branch the three loops of the daemon used to decide inline has a row.

use std::path::PathBuf;

use super::scope::{event_scope, fast_path_apps, fast_path_open, EventScope, EVENT_CYCLE_MAX};
use super::state::{Failure, State};
use super::*;
use crate::plan::{Summary, Wave};
use crate::spec::load::{load, RepoConfig, Snapshot, SourceFile};

use HoldReason::{Backoff, Drift, Manual, PartialView, RewriteBackoff};
use PlanAction::{Create, Delete, Update};

/// The revision every case plans.
const REV: &str = "r2";

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn ids<'a>(v: impl IntoIterator<Item = &'a AppId>) -> Vec<String> {
    v.into_iter().map(|a| a.to_string()).collect()
}

/// A plan of `changes` in one wave, plus one withheld deletion of the plan's own (`/kept`):
/// the rule leaves the plan's own holds as they are.
fn plan_of(changes: &[(&str, PlanAction)]) -> Plan {
    let changes: Vec<Change> = changes
        .iter()
        .map(|(app, action)| Change {
            app: id(app),
            action: *action,
            file: None,
            fields: Vec::new(),
            adopt: false,
            deadline_seconds: 600,
            depends_on: Vec::new(),
            body: None,
        })
        .collect();
    let n = |a: PlanAction| changes.iter().filter(|c| c.action == a).count();
    Plan {
        owner: "o".into(),
        owner_explicit: true,
        id_prefixes: None,
        commit: REV.into(),
        summary: Summary {
            create: n(Create),
            update: n(Update),
            delete: n(Delete),
            ..Summary::default()
        },
        waves: if changes.is_empty() {
            Vec::new()
        } else {
            vec![Wave { changes }]
        },
        unchanged: vec![id("/same")],
        invalid: Vec::new(),
        unmanaged: Vec::new(),
        held: vec![plan::Held {
            app: id("/kept"),
            reason: "over the delete budget".into(),
        }],
        moves: Vec::new(),
        conflicts: Vec::new(),
        out_of_scope: Vec::new(),
    }
}

/// Backoff bookkeeping: (app, commit, retry at ms).
type Backoffs = &'static [(&'static str, &'static str, u64)];

/// One row: the input, and what the rule must decide.
struct Case {
    name: &'static str,
    trigger: Trigger,
    mode: SyncMode,
    view: View,
    /// `state.last_synced`.
    synced: Option<&'static str>,
    /// Failed applies backing off.
    failed: Backoffs,
    /// Lost writes written again, backing off.
    rewritten: Backoffs,
    changes: &'static [(&'static str, PlanAction)],
    corrections: &'static [&'static str],
    lost: &'static [&'static str],
    now: u64,
    // What the rule decides.
    apply: &'static [&'static str],
    held: &'static [(&'static str, HoldReason)],
    rewrites: &'static [&'static str],
    /// (completes_revision, vault_writes, record, planned_only)
    flags: (bool, bool, bool, bool),
    /// The writes counted as corrections.
    counted: &'static [&'static str],
}

const AUTO: SyncMode = SyncMode::Auto;
const MANUAL: SyncMode = SyncMode::Manual;
const NEW: Option<&str> = Some("r1");
const APPLIED: Option<&str> = Some(REV);
const ALL3: &[(&str, PlanAction)] = &[("/c", Create), ("/u", Update), ("/d", Delete)];
const UPD: &[(&str, PlanAction)] = &[("/u", Update)];

fn push() -> Trigger {
    Trigger::Webhook {
        delivery: "x".into(),
    }
}

fn event() -> Trigger {
    Trigger::SchedulerEvent {
        app: "/u".into(),
        version: None,
    }
}

/// Defaults of a row: nothing failed, nothing corrected or lost, at 100 s.
fn case(name: &'static str, trigger: Trigger, mode: SyncMode, view: View) -> Case {
    Case {
        name,
        trigger,
        mode,
        view,
        synced: APPLIED,
        failed: &[],
        rewritten: &[],
        changes: &[],
        corrections: &[],
        lost: &[],
        now: 100_000,
        apply: &[],
        held: &[],
        rewrites: &[],
        flags: (false, false, false, false),
        counted: &[],
    }
}

fn cases() -> Vec<Case> {
    use View::{All, Apps};
    vec![
        // A new revision in auto mode applies as a whole, whatever woke the cycle.
        Case {
            synced: NEW,
            changes: ALL3,
            apply: &["/c", "/u", "/d"],
            flags: (true, true, true, false),
            ..case(
                "auto_new_revision_push_applies_everything",
                push(),
                AUTO,
                All,
            )
        },
        Case {
            synced: None,
            changes: ALL3,
            apply: &["/c", "/u", "/d"],
            flags: (true, true, true, false),
            ..case(
                "auto_first_start_applies_everything",
                Trigger::Startup,
                AUTO,
                All,
            )
        },
        Case {
            synced: NEW,
            changes: UPD,
            apply: &["/u"],
            flags: (true, true, true, false),
            ..case(
                "auto_new_revision_found_by_poll_applies",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            synced: NEW,
            changes: &[],
            flags: (true, true, true, false),
            ..case(
                "auto_new_revision_nothing_to_do_is_recorded",
                push(),
                AUTO,
                All,
            )
        },
        // Retry backoff: a failure of this very commit holds its app, a newer commit does not.
        Case {
            synced: NEW,
            changes: &[("/c", Create), ("/u", Update)],
            failed: &[("/u", REV, 150_000)],
            apply: &["/c"],
            held: &[(
                "/u",
                Backoff {
                    retry_at_ms: 150_000,
                },
            )],
            flags: (true, true, true, false),
            ..case(
                "auto_new_revision_failed_commit_backs_off",
                push(),
                AUTO,
                All,
            )
        },
        Case {
            synced: NEW,
            changes: UPD,
            failed: &[("/u", "r1", 150_000)],
            apply: &["/u"],
            flags: (true, true, true, false),
            ..case("auto_newer_commit_supersedes_a_failure", push(), AUTO, All)
        },
        // At an applied revision: only drift, retries due, corrections and lost writes.
        Case {
            changes: ALL3,
            held: &[("/c", Drift), ("/u", Drift), ("/d", Drift)],
            flags: (false, true, false, false),
            ..case(
                "auto_applied_revision_poll_holds_drift",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            failed: &[("/u", REV, 100_000)],
            apply: &["/u"],
            flags: (false, true, true, false),
            ..case(
                "auto_applied_revision_retry_due_applies",
                Trigger::Retry,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            failed: &[("/u", REV, 100_001)],
            held: &[(
                "/u",
                Backoff {
                    retry_at_ms: 100_001,
                },
            )],
            flags: (false, true, false, false),
            ..case(
                "auto_applied_revision_retry_not_due_backs_off",
                Trigger::Retry,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            failed: &[("/u", "r1", 0)],
            held: &[("/u", Drift)],
            flags: (false, true, false, false),
            ..case(
                "auto_applied_revision_old_failure_is_no_retry",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: &[("/u", Update), ("/c", Create), ("/d", Delete)],
            corrections: &["/u", "/c", "/d"],
            apply: &["/u", "/c"],
            held: &[("/d", Drift)],
            flags: (false, true, true, false),
            counted: &["/c", "/d", "/u"],
            ..case(
                "auto_corrections_apply_but_never_delete",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            corrections: &["/u"],
            failed: &[("/u", REV, 200_000)],
            held: &[(
                "/u",
                Backoff {
                    retry_at_ms: 200_000,
                },
            )],
            flags: (false, true, false, false),
            counted: &["/u"],
            ..case(
                "auto_correction_waits_for_a_failure_backoff",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: &[("/u", Update), ("/v", Update)],
            lost: &["/u"],
            apply: &["/u"],
            held: &[("/v", Drift)],
            rewrites: &["/u"],
            flags: (false, true, true, false),
            ..case("auto_lost_write_is_written_again", Trigger::Poll, AUTO, All)
        },
        Case {
            changes: UPD,
            lost: &["/u"],
            rewritten: &[("/u", REV, 100_001)],
            held: &[(
                "/u",
                RewriteBackoff {
                    retry_at_ms: 100_001,
                },
            )],
            flags: (false, true, false, false),
            ..case("auto_lost_write_again_backs_off", Trigger::Poll, AUTO, All)
        },
        Case {
            changes: UPD,
            lost: &["/u"],
            rewritten: &[("/u", REV, 100_000)],
            apply: &["/u"],
            rewrites: &["/u"],
            flags: (false, true, true, false),
            ..case(
                "auto_lost_write_after_its_backoff",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            lost: &["/u"],
            rewritten: &[("/u", "r1", 900_000)],
            apply: &["/u"],
            rewrites: &["/u"],
            flags: (false, true, true, false),
            ..case(
                "auto_lost_write_backoff_is_per_commit",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            lost: &["/u"],
            corrections: &["/u"],
            apply: &["/u"],
            rewrites: &["/u"],
            flags: (false, true, true, false),
            counted: &["/u"],
            ..case(
                "auto_lost_write_also_corrected_is_one_rewrite",
                Trigger::Poll,
                AUTO,
                All,
            )
        },
        // POST /api/sync applies everything, also at an applied revision.
        Case {
            changes: ALL3,
            lost: &["/u"],
            corrections: &["/u"],
            apply: &["/c", "/u", "/d"],
            flags: (true, true, true, false),
            ..case(
                "auto_manual_sync_applies_everything_as_a_deployment",
                Trigger::ManualSync,
                AUTO,
                All,
            )
        },
        Case {
            changes: UPD,
            failed: &[("/u", REV, 200_000)],
            held: &[(
                "/u",
                Backoff {
                    retry_at_ms: 200_000,
                },
            )],
            flags: (true, true, true, false),
            ..case(
                "auto_manual_sync_still_waits_for_a_backoff",
                Trigger::ManualSync,
                AUTO,
                All,
            )
        },
        // Manual mode: nothing but POST /api/sync writes.
        Case {
            synced: NEW,
            changes: ALL3,
            held: &[("/c", Manual), ("/u", Manual), ("/d", Manual)],
            flags: (false, false, true, true),
            ..case("manual_new_revision_is_planned_only", push(), MANUAL, All)
        },
        Case {
            synced: NEW,
            flags: (false, false, true, false),
            ..case(
                "manual_new_revision_without_changes_is_recorded",
                Trigger::Poll,
                MANUAL,
                All,
            )
        },
        Case {
            changes: &[("/u", Update), ("/v", Update), ("/w", Update)],
            failed: &[("/u", REV, 0)],
            corrections: &["/v"],
            lost: &["/w"],
            held: &[("/u", Manual), ("/v", Manual), ("/w", Manual)],
            flags: (false, false, false, true),
            counted: &["/v"],
            ..case(
                "manual_no_retry_correction_or_rewrite",
                Trigger::Retry,
                MANUAL,
                All,
            )
        },
        Case {
            changes: ALL3,
            failed: &[("/d", REV, 200_000)],
            apply: &["/c", "/u"],
            held: &[(
                "/d",
                Backoff {
                    retry_at_ms: 200_000,
                },
            )],
            flags: (true, true, true, false),
            ..case(
                "manual_sync_applies_all_but_backoffs",
                Trigger::ManualSync,
                MANUAL,
                All,
            )
        },
        // Some apps only (the fast path of a push, scheduler events): never a deletion, never
        // the revision as a whole.
        Case {
            synced: NEW,
            changes: ALL3,
            apply: &["/c", "/u"],
            held: &[("/d", PartialView)],
            flags: (false, true, true, false),
            ..case(
                "apps_view_fast_path_applies_but_never_deletes",
                push(),
                AUTO,
                Apps,
            )
        },
        Case {
            synced: NEW,
            changes: UPD,
            failed: &[("/u", REV, 200_000)],
            held: &[(
                "/u",
                Backoff {
                    retry_at_ms: 200_000,
                },
            )],
            flags: (false, true, false, false),
            ..case("apps_view_fast_path_skips_a_backoff", push(), AUTO, Apps)
        },
        Case {
            changes: &[
                ("/u", Update),
                ("/v", Update),
                ("/w", Update),
                ("/x", Update),
            ],
            corrections: &["/u"],
            failed: &[("/v", REV, 100_000)],
            lost: &["/w"],
            apply: &["/u", "/v", "/w"],
            held: &[("/x", Drift)],
            rewrites: &["/w"],
            flags: (false, true, true, false),
            counted: &["/u"],
            ..case(
                "apps_view_event_applies_what_a_full_cycle_would",
                event(),
                AUTO,
                Apps,
            )
        },
        Case {
            changes: UPD,
            held: &[("/u", Drift)],
            flags: (false, true, false, false),
            ..case(
                "apps_view_event_with_drift_only_is_no_record",
                event(),
                AUTO,
                Apps,
            )
        },
        Case {
            synced: NEW,
            changes: UPD,
            corrections: &["/u"],
            held: &[("/u", Manual)],
            flags: (false, false, false, true),
            counted: &["/u"],
            ..case(
                "apps_view_event_in_manual_mode_writes_nothing",
                event(),
                MANUAL,
                Apps,
            )
        },
    ]
}

#[test]
fn the_cycle_rule_decides_per_table() {
    let set = |v: &[&str]| v.iter().map(|a| id(a)).collect::<BTreeSet<AppId>>();
    let backoffs = |v: Backoffs| {
        v.iter().map(|(app, commit, at)| {
            let f = Failure {
                commit: commit.to_string(),
                attempts: 1,
                retry_at_ms: *at,
            };
            (app.to_string(), f)
        })
    };
    let mut names = BTreeSet::new();
    for c in cases() {
        assert!(names.insert(c.name), "two rows named {}", c.name);
        let mut state = State::new();
        state.last_synced = c.synced.map(str::to_string);
        for (app, f) in backoffs(c.failed) {
            let a = state.apps.entry(app).or_default();
            a.failure = Some(f);
            a.last_error = Some("boom".into());
        }
        for (app, f) in backoffs(c.rewritten) {
            state.apps.entry(app).or_default().rewrite = Some(f);
        }
        let (corrections, lost) = (set(c.corrections), set(c.lost));
        let input = Input {
            trigger: &c.trigger,
            mode: c.mode,
            view: c.view,
            rev: REV,
            state: &state,
            corrections: &corrections,
            lost_writes: &lost,
            rollouts: &Default::default(),
            now_ms: c.now,
            only: None,
        };
        let d = decide(&input, plan_of(c.changes));
        let name = c.name;
        let applied: Vec<String> = ids(d.plan.changes().map(|ch| &ch.app));
        assert_eq!(applied, c.apply, "{name}: applied");
        let held: Vec<(String, HoldReason)> = (d.held.iter())
            .map(|h| (h.app.to_string(), h.reason.clone()))
            .collect();
        let want: Vec<(String, HoldReason)> = (c.held.iter())
            .map(|(a, r)| (a.to_string(), r.clone()))
            .collect();
        assert_eq!(held, want, "{name}: held");
        assert_eq!(ids(&d.rewrites), c.rewrites, "{name}: rewrites");
        let flags = (
            d.completes_revision,
            d.vault_writes,
            d.record,
            d.planned_only,
        );
        assert_eq!(
            flags, c.flags,
            "{name}: (completes_revision, vault_writes, record, planned_only)"
        );
        assert_eq!(
            ids(&d.corrections),
            c.counted,
            "{name}: corrections counted"
        );
        assert_eq!(
            d.new_revision,
            c.synced != Some(REV),
            "{name}: new revision"
        );
        // Nothing is lost: every change is applied or held, with its action.
        let planned = plan_of(c.changes);
        assert_eq!(
            planned.changes().count(),
            d.plan.changes().count() + d.held.len(),
            "{name}"
        );
        for h in &d.held {
            assert!(
                planned
                    .changes()
                    .any(|ch| ch.app == h.app && ch.action == h.action),
                "{name}: {h:?}"
            );
        }
        // The plan's own findings pass through; the summary counts what is applied.
        assert_eq!(
            (d.plan.held.len(), d.plan.unchanged.len()),
            (1, 1),
            "{name}"
        );
        let s = &d.plan.summary;
        assert_eq!(
            s.create + s.update + s.delete,
            applied.len(),
            "{name}: summary"
        );
        let pending = d.pending();
        assert_eq!(
            pending.map(|p| p.create + p.update + p.delete),
            (!d.held.is_empty()).then_some(d.held.len()),
            "{name}: pending"
        );
    }
}

/// A per-app `POST /api/sync?app=`: only the named apps' changes apply (a create, an update
/// at an applied revision, a delete within the plan's own budget), in manual and auto mode;
/// every other change is held as `NotAsked`; the plan's own holds stay; the revision is not
/// complete, and the outcome is not "planned" for the apps nobody asked for.
#[test]
fn a_per_app_sync_applies_only_the_apps_it_names() {
    let changes = [
        ("/shop/web", Update),
        ("/shop/new", Create),
        ("/shop/old", Delete),
        ("/other", Update),
    ];
    let only: BTreeSet<AppId> = ["/shop/web", "/shop/new", "/shop/old"]
        .iter()
        .map(|a| id(a))
        .collect();
    for (mode, synced) in [
        (SyncMode::Manual, Some(REV)),
        (SyncMode::Manual, None),
        (SyncMode::Auto, Some(REV)),
        (SyncMode::Auto, None),
    ] {
        let mut state = State::new();
        state.last_synced = synced.map(str::to_string);
        let none = BTreeSet::new();
        let input = Input {
            trigger: &Trigger::ManualSync,
            mode,
            view: View::All,
            rev: REV,
            state: &state,
            corrections: &none,
            lost_writes: &none,
            rollouts: &Default::default(),
            now_ms: 1,
            only: Some(&only),
        };
        let d = decide(&input, plan_of(&changes));
        let what = format!("{mode:?} synced={synced:?}");
        let mut applied = ids(d.plan.changes().map(|c| &c.app));
        applied.sort();
        assert_eq!(applied, ["/shop/new", "/shop/old", "/shop/web"], "{what}");
        let held: Vec<(String, HoldReason)> = (d.held.iter())
            .map(|h| (h.app.to_string(), h.reason.clone()))
            .collect();
        assert_eq!(
            held,
            [("/other".to_string(), HoldReason::NotAsked)],
            "{what}"
        );
        assert_eq!(ids(d.plan.held.iter().map(|h| &h.app)), ["/kept"], "{what}");
        assert!(!d.completes_revision, "{what}");
        assert!(d.record && !d.planned_only, "{what}");
    }
    // Naming an app with no change: nothing is written, and in manual mode the cycle is not
    // "planned" on account of the others.
    let state = State::new();
    let none = BTreeSet::new();
    let just: BTreeSet<AppId> = [id("/same")].into();
    let input = Input {
        trigger: &Trigger::ManualSync,
        mode: SyncMode::Manual,
        view: View::All,
        rev: REV,
        state: &state,
        corrections: &none,
        lost_writes: &none,
        rollouts: &Default::default(),
        now_ms: 1,
        only: Some(&just),
    };
    let d = decide(&input, plan_of(&changes));
    assert!(d.plan.is_empty());
    assert_eq!(d.held.len(), changes.len());
    assert!(!d.planned_only && !d.completes_revision);
}

#[test]
fn the_next_action_is_the_earliest_wake_up_and_at_least_a_second_away() {
    let fresh = State::new();
    let secs = |s: u64| Some(Duration::from_secs(s));
    let mut failed = State::new();
    failed.record_failure("/a", REV, "boom", 0); // retry at 10 s
                                                 // (state, correction at, now) -> requeue after
    let rows = vec![
        ("nothing pending waits", &fresh, None, 0, None),
        ("a failed app's retry", &failed, None, 4_000, secs(6)),
        (
            "a correction's grace period",
            &fresh,
            Some(30_000),
            0,
            secs(30),
        ),
        ("the earlier of both", &failed, Some(8_000), 0, secs(8)),
        (
            "the earlier of both, retry",
            &failed,
            Some(90_000),
            0,
            secs(10),
        ),
        ("due already: one second", &failed, None, 50_000, secs(1)),
        ("nearly due: one second", &failed, None, 9_900, secs(1)),
    ];
    for (name, state, correction, now, want) in rows {
        let got = next_action(state, correction, None, now).requeue_after();
        assert_eq!(got, want, "{name}");
    }
    // A rollout's next look joins the others: (state, correction at, rollout wake, now).
    let rows = vec![
        (
            "a rollout's wake alone",
            &fresh,
            None,
            Some(5_000),
            0,
            secs(5),
        ),
        (
            "a rollout before a retry",
            &failed,
            None,
            Some(3_000),
            0,
            secs(3),
        ),
        (
            "a retry before a rollout",
            &failed,
            None,
            Some(60_000),
            0,
            secs(10),
        ),
        (
            "a correction first",
            &fresh,
            Some(2_000),
            Some(7_000),
            0,
            secs(2),
        ),
        (
            "a rollout overdue: one second",
            &fresh,
            None,
            Some(1),
            9_000,
            secs(1),
        ),
    ];
    for (name, state, correction, wake, now, want) in rows {
        let got = next_action(state, correction, wake, now).requeue_after();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_scheduler_event_cycle_keeps_an_earlier_requeue() {
    let poll = Trigger::Poll;
    let ev = event();
    let rows = vec![
        ("full cycle replaces", &poll, Some(1), Some(5), Some(5)),
        ("full cycle clears", &poll, Some(1), None, None),
        ("event keeps the earlier", &ev, Some(1), Some(5), Some(1)),
        ("event takes the earlier", &ev, Some(9), Some(5), Some(5)),
        ("event keeps a pending one", &ev, Some(9), None, Some(9)),
        ("event adds its own", &ev, None, Some(5), Some(5)),
    ];
    for (name, trigger, kept, next, want) in rows {
        assert_eq!(next_requeue(trigger, kept, next), want, "{name}");
    }
}

#[test]
fn failed_cycles_back_off_doubling_to_a_cap() {
    let rows = [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 4),
        (9, 256),
        (10, 300),
        (u32::MAX, 300),
    ];
    for (n, secs) in rows {
        assert_eq!(error_backoff(n), Duration::from_secs(secs), "failure {n}");
    }
}

#[test]
fn triggers_rank_preempt_and_fetch() {
    // (trigger, rank, fetches, preemptible, preempts)
    let rows = [
        (Trigger::Shutdown, 8, true, false, false),
        (Trigger::ManualSync, 7, true, false, true),
        (push(), 6, true, false, true),
        (Trigger::FileChange, 5, true, false, false),
        (Trigger::Startup, 4, true, false, false),
        (Trigger::Retry, 3, true, true, false),
        (Trigger::Rollout, 2, true, true, false),
        (Trigger::Poll, 1, true, true, false),
        (event(), 0, false, true, false),
    ];
    for (t, rank, fetches, preemptible, preempts) in rows {
        assert_eq!(
            (t.rank(), t.fetches(), t.preemptible(), t.preempts()),
            (rank, fetches, preemptible, preempts),
            "{}",
            t.name()
        );
    }
}

fn repo(files: &[(&str, &str)]) -> Repo {
    load(Snapshot {
        config: RepoConfig {
            owner_explicit: true,
            ..RepoConfig::default()
        },
        files: files
            .iter()
            .map(|(p, t)| SourceFile {
                path: PathBuf::from(p),
                bytes: t.as_bytes().to_vec(),
            })
            .collect(),
        ..Snapshot::default()
    })
}

#[test]
fn the_fast_path_opens_for_a_new_revision_in_auto_mode_only() {
    let fresh = State::new();
    let mut synced = State::new();
    synced.last_synced = Some(REV.into());
    let mut behind = State::new();
    behind.last_synced = Some("r1".into());
    let rows = vec![
        ("push of a new revision", push(), AUTO, &behind, true),
        ("first start", Trigger::Startup, AUTO, &fresh, true),
        (
            "poll finding a new revision",
            Trigger::Poll,
            AUTO,
            &behind,
            true,
        ),
        ("manual mode", push(), MANUAL, &behind, false),
        (
            "manual sync in manual mode",
            Trigger::ManualSync,
            MANUAL,
            &behind,
            false,
        ),
        ("revision applied already", push(), AUTO, &synced, false),
        (
            "a scheduler event fetches nothing",
            event(),
            AUTO,
            &behind,
            false,
        ),
    ];
    for (name, trigger, mode, state, open) in rows {
        assert_eq!(fast_path_open(&trigger, mode, state, REV), open, "{name}");
    }

    let r = repo(&[("apps/a.yaml", "cmd: a\n"), ("apps/b.yaml", "cmd: b\n")]);
    let changed = |rev: &str| {
        Some((
            rev.to_string(),
            vec![PathBuf::from("apps/a.yaml"), PathBuf::from("apps/b.yaml")],
        ))
    };
    let mut failed = State::new();
    failed.record_failure("/b", REV, "boom", 0);
    let rows = vec![
        (
            "the changed apps",
            changed(REV),
            &fresh,
            0,
            vec!["/a", "/b"],
        ),
        ("no change known", None, &fresh, 0, vec![]),
        (
            "changes of another revision",
            changed("r1"),
            &fresh,
            0,
            vec![],
        ),
        (
            "not an app backing off",
            changed(REV),
            &failed,
            0,
            vec!["/a"],
        ),
        (
            "an app whose backoff ended",
            changed(REV),
            &failed,
            10_000,
            vec!["/a", "/b"],
        ),
    ];
    for (name, changed, state, now, want) in rows {
        let got = fast_path_apps(changed, REV, &r, state, now);
        assert_eq!(ids(&got), want, "{name}");
    }
}

#[test]
fn scheduler_events_look_at_their_apps_unless_only_a_full_cycle_can_decide() {
    let r = repo(&[
        ("apps/a.yaml", "cmd: a\n"),
        ("apps/v.yaml", "cmd: v\nenv:\n  X: vault:secret/x#y\n"),
    ]);
    let names = |v: &[&str]| v.iter().map(|a| id(a)).collect::<BTreeSet<AppId>>();
    let many: BTreeSet<AppId> = (0..=EVENT_CYCLE_MAX)
        .map(|i| id(&format!("/x{i}")))
        .collect();
    let mut synced = State::new();
    synced.last_synced = Some(REV.into());
    let fresh = State::new();
    let loaded = Some((REV, &r));
    let rows = vec![
        (
            "only own writes",
            names(&[]),
            loaded,
            AUTO,
            &synced,
            EventScope::Nothing,
        ),
        (
            "nothing loaded yet",
            names(&["/a"]),
            None,
            AUTO,
            &synced,
            EventScope::Full,
        ),
        (
            "the apps named",
            names(&["/a", "/n"]),
            loaded,
            AUTO,
            &synced,
            EventScope::Apps(names(&["/a", "/n"])),
        ),
        (
            "too many apps",
            many,
            loaded,
            AUTO,
            &synced,
            EventScope::Full,
        ),
        (
            "an app reading Vault",
            names(&["/a", "/v"]),
            loaded,
            AUTO,
            &synced,
            EventScope::Full,
        ),
        (
            "a revision to apply as a whole",
            names(&["/a"]),
            loaded,
            AUTO,
            &fresh,
            EventScope::Full,
        ),
        (
            "manual mode at a new revision",
            names(&["/a"]),
            loaded,
            MANUAL,
            &fresh,
            EventScope::Apps(names(&["/a"])),
        ),
    ];
    for (name, ids, loaded, mode, state, want) in rows {
        assert_eq!(event_scope(ids, loaded, mode, state), want, "{name}");
    }
}

// The rollout part of the rule (`crate::rollout`): which updates start a rollout instead, which
// are held by one.

/// One row of the rollout rule: the view of rollouts and the rest of the input, and what the
/// rule must decide.
struct RolloutCase {
    name: &'static str,
    trigger: Trigger,
    mode: SyncMode,
    synced: Option<&'static str>,
    /// (app, action, adopt)
    changes: Vec<(&'static str, PlanAction, bool)>,
    corrections: &'static [&'static str],
    lost: &'static [&'static str],
    failed: Backoffs,
    active: &'static [&'static str],
    eligible: &'static [&'static str],
    blocked: &'static [&'static str],
    rolled_back: &'static [&'static str],
    // What the rule decides.
    apply: &'static [&'static str],
    starts: &'static [&'static str],
    held: Vec<(&'static str, HoldReason)>,
    rewrites: &'static [&'static str],
    /// (record, planned_only)
    flags: (bool, bool),
}

fn rollout_case(name: &'static str) -> RolloutCase {
    RolloutCase {
        name,
        trigger: push(),
        mode: AUTO,
        synced: NEW,
        changes: vec![("/u", Update, false)],
        corrections: &[],
        lost: &[],
        failed: &[],
        active: &[],
        eligible: &["/u"],
        blocked: &[],
        rolled_back: &[],
        apply: &[],
        starts: &[],
        held: Vec::new(),
        rewrites: &[],
        flags: (true, false),
    }
}

fn rolling_out() -> HoldReason {
    HoldReason::RollingOut {
        phase: "step".into(),
    }
}

fn rollout_cases() -> Vec<RolloutCase> {
    vec![
        RolloutCase {
            starts: &["/u"],
            ..rollout_case("an_eligible_update_starts_a_rollout_instead")
        },
        RolloutCase {
            changes: vec![
                ("/u", Update, false),
                ("/c", Create, false),
                ("/d", Delete, false),
                ("/adopted", Update, true),
            ],
            eligible: &["/u", "/c", "/d", "/adopted"],
            apply: &["/c", "/d", "/adopted"],
            starts: &["/u"],
            ..rollout_case("creates_deletes_and_adoptions_are_never_rolled_out")
        },
        RolloutCase {
            eligible: &[],
            apply: &["/u"],
            ..rollout_case("a_stable_without_the_group_label_is_a_plain_update")
        },
        RolloutCase {
            active: &["/u"],
            held: vec![("/u", rolling_out())],
            ..rollout_case("an_update_during_a_rollout_is_held")
        },
        RolloutCase {
            changes: vec![
                ("/u", Update, false),
                ("/c", Create, false),
                ("/d", Delete, false),
            ],
            active: &["/u", "/c", "/d"],
            eligible: &[],
            apply: &["/d"],
            held: vec![("/u", rolling_out()), ("/c", rolling_out())],
            ..rollout_case("a_rollout_holds_every_write_of_its_stable_but_a_delete")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            corrections: &["/u"],
            active: &["/u"],
            held: vec![("/u", rolling_out())],
            flags: (false, false),
            ..rollout_case("a_drift_correction_during_a_rollout_is_held")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            lost: &["/u"],
            active: &["/u"],
            held: vec![("/u", rolling_out())],
            flags: (false, false),
            ..rollout_case("a_lost_write_during_a_rollout_is_not_written_again")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            active: &["/u"],
            held: vec![("/u", rolling_out())],
            flags: (false, false),
            ..rollout_case("drift_during_a_rollout_shows_as_the_rollout")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            corrections: &["/u"],
            starts: &["/u"],
            ..rollout_case("a_drift_correction_of_an_eligible_app_rolls_out")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            held: vec![("/u", Drift)],
            flags: (false, false),
            ..rollout_case("drift_not_corrected_starts_nothing")
        },
        RolloutCase {
            rolled_back: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolledBack {
                    commit: "r0".into(),
                },
            )],
            ..rollout_case("a_rolled_back_definition_is_held")
        },
        // A stable that lost its group label behind Baton's back (a hand edit) is not
        // eligible, and its drift correction would write the definition that was rolled back
        // in place, in front of all the traffic.
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            corrections: &["/u"],
            eligible: &[],
            rolled_back: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolledBack {
                    commit: "r0".into(),
                },
            )],
            flags: (false, false),
            ..rollout_case("a_rolled_back_definition_is_never_written_in_place")
        },
        RolloutCase {
            eligible: &[],
            rolled_back: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolledBack {
                    commit: "r0".into(),
                },
            )],
            ..rollout_case("a_rolled_back_definition_is_held_when_the_stable_lost_its_label")
        },
        RolloutCase {
            blocked: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolloutBlocked {
                    why: "no stats".into(),
                },
            )],
            ..rollout_case("a_blocked_rollout_is_held_not_done_in_place")
        },
        // At an applied revision a stable the rollout never wrote stands behind git (a lost
        // write, to the rule): its hold stays visible, and it starts once it may.
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            lost: &["/u"],
            blocked: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolloutBlocked {
                    why: "no stats".into(),
                },
            )],
            flags: (false, false),
            ..rollout_case("a_blocked_rollout_stays_held_at_an_applied_revision")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            lost: &["/u"],
            starts: &["/u"],
            ..rollout_case("an_unblocked_rollout_starts_at_an_applied_revision")
        },
        RolloutCase {
            trigger: Trigger::Poll,
            synced: APPLIED,
            lost: &["/u"],
            rolled_back: &["/u"],
            held: vec![(
                "/u",
                HoldReason::RolledBack {
                    commit: "r0".into(),
                },
            )],
            flags: (false, false),
            ..rollout_case("a_rolled_back_definition_stays_held_at_an_applied_revision")
        },
        RolloutCase {
            mode: MANUAL,
            active: &["/u"],
            held: vec![("/u", Manual)],
            flags: (true, true),
            ..rollout_case("manual_mode_keeps_priority_over_a_rollout")
        },
        RolloutCase {
            mode: MANUAL,
            held: vec![("/u", Manual)],
            flags: (true, true),
            ..rollout_case("manual_mode_starts_no_rollout")
        },
        RolloutCase {
            trigger: Trigger::ManualSync,
            mode: MANUAL,
            starts: &["/u"],
            ..rollout_case("a_manual_sync_starts_the_rollout")
        },
        RolloutCase {
            failed: &[("/u", REV, 150_000)],
            active: &["/u"],
            held: vec![(
                "/u",
                Backoff {
                    retry_at_ms: 150_000,
                },
            )],
            ..rollout_case("a_failure_backoff_keeps_priority_over_a_rollout")
        },
    ]
}

#[test]
fn the_rollout_rule_decides_per_table() {
    let set = |v: &[&str]| v.iter().map(|a| id(a)).collect::<BTreeSet<AppId>>();
    let mut names = BTreeSet::new();
    for c in rollout_cases() {
        let name = c.name;
        assert!(names.insert(name), "two rows named {name}");
        let mut state = State::new();
        state.last_synced = c.synced.map(str::to_string);
        for (app, commit, at) in c.failed {
            state.apps.entry(app.to_string()).or_default().failure = Some(Failure {
                commit: commit.to_string(),
                attempts: 1,
                retry_at_ms: *at,
            });
        }
        for app in c.active {
            state.rollouts.insert(
                app.to_string(),
                rollout_state(crate::rollout::Phase::Step { index: 0 }),
            );
        }
        for app in c.rolled_back {
            state.apps.entry(app.to_string()).or_default().rolled_back = Some(state::RolledBack {
                commit: "r0".into(),
                digest: "sha256:d".into(),
                reason: crate::rollout::Reason::Aborted,
                at_ms: 0,
            });
        }
        let rollouts = RolloutView {
            active: set(c.active),
            eligible: set(c.eligible),
            blocked: c
                .blocked
                .iter()
                .map(|a| (id(a), "no stats".to_string()))
                .collect(),
            rolled_back: set(c.rolled_back),
        };
        let (corrections, lost) = (set(c.corrections), set(c.lost));
        let input = Input {
            trigger: &c.trigger,
            mode: c.mode,
            view: View::All,
            rev: REV,
            state: &state,
            corrections: &corrections,
            lost_writes: &lost,
            rollouts: &rollouts,
            now_ms: 100_000,
            only: None,
        };
        let planned = plan_with_adoptions(&c.changes);
        let d = decide(&input, planned.clone());
        let applied: Vec<String> = ids(d.plan.changes().map(|ch| &ch.app));
        assert_eq!(applied, c.apply, "{name}: applied");
        assert_eq!(ids(&d.rollout_starts), c.starts, "{name}: rollout starts");
        let held: Vec<(String, HoldReason)> = (d.held.iter())
            .map(|h| (h.app.to_string(), h.reason.clone()))
            .collect();
        let want: Vec<(String, HoldReason)> = (c.held.iter())
            .map(|(a, r)| (a.to_string(), r.clone()))
            .collect();
        assert_eq!(held, want, "{name}: held");
        assert_eq!(ids(&d.rewrites), c.rewrites, "{name}: rewrites");
        assert_eq!(
            (d.record, d.planned_only),
            c.flags,
            "{name}: (record, planned_only)"
        );
        // Nothing is lost: every change is applied, held or rolled out.
        assert_eq!(
            planned.changes().count(),
            d.plan.changes().count() + d.held.len() + d.rollout_starts.len(),
            "{name}"
        );
        let s = &d.plan.summary;
        assert_eq!(
            s.create + s.update + s.delete,
            applied.len(),
            "{name}: summary"
        );
    }
}

/// [`plan_of`] with some changes marked as adoptions.
fn plan_with_adoptions(changes: &[(&str, PlanAction, bool)]) -> Plan {
    let plain: Vec<(&str, PlanAction)> = changes.iter().map(|(a, act, _)| (*a, *act)).collect();
    let mut p = plan_of(&plain);
    for wave in &mut p.waves {
        for c in &mut wave.changes {
            c.adopt = changes
                .iter()
                .any(|(a, _, adopt)| *adopt && c.app.as_str() == *a);
        }
    }
    p
}

fn rollout_state(phase: crate::rollout::Phase) -> crate::rollout::RolloutState {
    crate::rollout::RolloutState {
        commit: REV.into(),
        digest: "sha256:d".into(),
        strategy: crate::rollout::Strategy::Canary,
        canary: "/u-canary".into(),
        started_at: "2026-01-01T00:00:00.000000".into(),
        phase,
        entered_ms: 0,
        window: None,
        timeline: Vec::new(),
        analysis: None,
    }
}

#[test]
fn hold_reasons_of_rollouts_say_why_in_words() {
    let rows = [
        (rolling_out(), "a rollout is in progress (step)"),
        (
            HoldReason::RolloutBlocked {
                why: "no `--haproxy-stats`".into(),
            },
            "the rollout cannot run: no `--haproxy-stats`",
        ),
        (
            HoldReason::RolledBack {
                commit: "abc".into(),
            },
            "this definition was rolled back (commit abc); a commit that changes it rolls it out again",
        ),
    ];
    for (reason, words) in rows {
        assert_eq!(reason.to_string(), words);
    }
}
