use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::spec::marathon_form;
use ledger::KEEP_CLOSED;

const T0: u64 = 1_795_000_000_000; // a fixed "now": 2026-11-18T11:06:40Z
const MIN: u64 = 60_000;

/// A repo from `(relative path, text)` files, loaded as a plain directory holding them loads.
fn repo(files: &[(&str, &str)]) -> Repo {
    crate::spec::load::from_texts(files)
}

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

/// What the scheduler serves after creating `id` from what Baton sends: Marathon's padded form,
/// assigned service ports, status fields.
fn as_served(repo: &Repo, app: &str) -> Value {
    let spec = &repo.specs[&id(app)];
    let mut live = ownership::labelled(spec, &repo.config.owner, "0123abcd");
    marathon_form(&mut live);
    if let Some(defs) = live
        .get_mut("portDefinitions")
        .and_then(Value::as_array_mut)
    {
        for (i, d) in defs.iter_mut().enumerate() {
            d["port"] = json!(10_000 + i);
            d["name"] = json!("default");
        }
    }
    let m = live.as_object_mut().unwrap();
    m.insert("version".into(), json!("2026-11-18T10:00:00.000Z"));
    m.insert(
        "versionInfo".into(),
        json!({"lastScalingAt": "2026-11-18T10:00:00.000Z", "lastConfigChangeAt": "2026-11-18T10:00:00.000Z"}),
    );
    m.insert("tasksRunning".into(), m["instances"].clone());
    m.insert("tasksStaged".into(), json!(0));
    m.insert("deployments".into(), json!([]));
    live
}

fn web_repo(extra_baton: &str) -> Repo {
    repo(&[(
        "apps/web.yaml",
        &format!("cmd: ./web\ninstances: 2\nenv: {{COLOR: blue}}\nbaton:\n  {extra_baton}\n"),
    )])
}

#[test]
fn freshly_synced_app_shows_no_drift() {
    let r = web_repo("prune: true");
    let live = vec![as_served(&r, "/web")];
    let report = drift(&r, &live, &Attributions::default(), T0);
    assert_eq!(report.apps.len(), 1);
    let a = &report.apps[0];
    assert_eq!(a.state, DriftState::InSync, "{:#?}", a.fields);
    assert!(a.fields.is_empty());
    assert_eq!(a.commit.as_deref(), Some("0123abcd"));
    assert_eq!(a.tasks.as_ref().map(|t| t.up), Some(true));
    assert!(!report.has_drift());
}

#[test]
fn normalisation_corpus_shows_no_drift() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/normalize");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(case) = name.strip_suffix(".returned.json") else {
            continue;
        };
        let submitted = ["yaml", "json"]
            .iter()
            .map(|ext| dir.join(format!("{case}.submitted.{ext}")))
            .find(|p| p.exists())
            .unwrap();
        let ext = submitted.extension().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&submitted).unwrap();
        let r = repo(&[(&format!("apps/{case}.{ext}"), &text)]);
        assert!(r.is_valid(), "{case}: {:?}", r.diagnostics);
        // Marathon's answer, plus the labels Baton sent (the corpus answers have none).
        let mut returned: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let spec = r.specs.values().next().unwrap();
        let sent = ownership::labelled(spec, &r.config.owner, "c1");
        returned["labels"] = sent["labels"].clone();
        let report = drift(&r, &[returned], &Attributions::default(), T0);
        assert_eq!(
            report.apps[0].state,
            DriftState::InSync,
            "{case}: {:#?}",
            report.apps[0].fields
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} corpus pairs");
}

#[test]
fn out_of_band_scale_and_env_change_are_named_and_attributed() {
    let r = web_repo("prune: true");
    let baton_write = as_served(&r, "/web");
    let mut live = baton_write.clone();
    live["instances"] = json!(5);
    live["env"]["COLOR"] = json!("green");
    live["version"] = json!("2026-11-18T10:05:00.000Z");

    let mut attributions = Attributions::default();
    // Baton's own sync, then two out-of-band changes: the run of disagreeing changes starts at
    // the first of them.
    attributions.record(
        id("/web"),
        Attribution {
            client_ip: "10.0.0.1".into(),
            uri: "/v2/apps/web".into(),
            at: T0 - 10 * MIN,
        },
        Some(baton_write.clone()),
    );
    let mut scaled = baton_write.clone();
    scaled["instances"] = json!(5);
    attributions.record(
        id("/web"),
        Attribution {
            client_ip: "10.0.0.7".into(),
            uri: "/v2/apps/web".into(),
            at: T0 - 5 * MIN,
        },
        Some(scaled),
    );
    attributions.record(
        id("/web"),
        Attribution {
            client_ip: "10.0.0.8".into(),
            uri: "/v2/apps//web".into(),
            at: T0 - 2 * MIN,
        },
        Some(live.clone()),
    );

    let report = drift(&r, &[live], &attributions, T0);
    let a = &report.apps[0];
    assert_eq!(a.state, DriftState::Drifted);
    let fields: Vec<(&str, Option<&Value>, Option<&Value>)> = a
        .fields
        .iter()
        .map(|f| (f.pointer.as_str(), f.desired.as_ref(), f.live.as_ref()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("/env/COLOR", Some(&json!("blue")), Some(&json!("green"))),
            ("/instances", Some(&json!(2)), Some(&json!(5))),
        ]
    );
    let by = a.changed_by.as_ref().unwrap();
    assert_eq!((by.client_ip.as_str(), by.at), ("10.0.0.8", T0 - 2 * MIN));
    assert_eq!(a.since, Some(T0 - 5 * MIN));
    assert_eq!(a.policy, Some(DriftPolicy::Report));
    assert!(report.has_drift());
    assert_eq!(report.summary.drifted, 1);
}

#[test]
fn without_attribution_since_is_the_live_version() {
    let r = web_repo("prune: true");
    let mut live = as_served(&r, "/web");
    live["cmd"] = json!("./web --debug");
    live["version"] = json!("2026-11-18T09:00:00.000Z");
    let report = drift(&r, &[live], &Attributions::default(), T0);
    let a = &report.apps[0];
    assert_eq!(a.state, DriftState::Drifted);
    assert!(a.changed_by.is_none());
    assert_eq!(a.since, parse_rfc3339("2026-11-18T09:00:00.000Z"));
}

#[test]
fn a_change_that_agrees_with_git_names_nobody() {
    let r = web_repo("prune: true");
    let synced = as_served(&r, "/web");
    let mut live = synced.clone();
    live["instances"] = json!(3); // e.g. scaled through a path that sends no api_post_event
    let mut att = Attributions::default();
    att.record(
        id("/web"),
        Attribution {
            client_ip: "10.0.0.1".into(),
            uri: "/v2/apps/web".into(),
            at: T0 - MIN,
        },
        Some(synced),
    );
    let a = drift(&r, &[live], &att, T0).apps.remove(0);
    assert_eq!(a.state, DriftState::Drifted);
    assert!(a.changed_by.is_none());
}

#[test]
fn ignored_fields_never_drift() {
    let r = web_repo("ignore: [/instances]");
    let mut live = as_served(&r, "/web");
    live["instances"] = json!(9); // the autoscaler's business
    let a = drift(&r, &[live.clone()], &Attributions::default(), T0)
        .apps
        .remove(0);
    assert_eq!(a.state, DriftState::InSync, "{:#?}", a.fields);
    live["env"]["COLOR"] = json!("red");
    let a = drift(&r, &[live], &Attributions::default(), T0)
        .apps
        .remove(0);
    let pointers: Vec<&str> = a.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(pointers, ["/env/COLOR"]);
}

#[test]
fn tolerated_differences_are_not_drift() {
    let r = repo(&[(
        "apps/api.yaml",
        "cmd: ./api\nportDefinitions: [{port: 0}]\n",
    )]);
    let mut live = as_served(&r, "/api");
    live["portDefinitions"][0]["port"] = json!(10_107); // assigned by the scheduler
    live["role"] = json!("*");
    live["maxLaunchDelaySeconds"] = json!(3600); // an older Marathon's default
    let a = drift(&r, &[live.clone()], &Attributions::default(), T0)
        .apps
        .remove(0);
    assert_eq!(a.state, DriftState::InSync, "{:#?}", a.fields);
    live["maxLaunchDelaySeconds"] = json!(60);
    let a = drift(&r, &[live], &Attributions::default(), T0)
        .apps
        .remove(0);
    assert_eq!(a.state, DriftState::Drifted);
}

#[test]
fn every_state_is_told_apart() {
    let r = repo(&[
        ("apps/web.yaml", "cmd: ./web\n"),
        ("apps/gone.yaml", "cmd: ./gone\n"),
        ("apps/broken.yaml", "cmd: ./x\nmem: lots\n"),
        ("apps/theirs.yaml", "cmd: ./theirs\n"),
        ("apps/behind.yaml", "cmd: ./behind --v2\n"),
        ("apps/edited.yaml", "cmd: ./edited --v2\n"),
    ]);
    assert!(r.invalid.contains(&id("/broken")));
    let web = as_served(&r, "/web");
    let mut theirs = as_served(&r, "/theirs");
    theirs["labels"]["baton.dev/owner"] = json!("other-team");
    let mut orphan = web.clone();
    orphan["id"] = json!("/orphan");
    let mut kept = web.clone();
    kept["id"] = json!("/kept");
    kept["labels"]["baton.dev/prune"] = json!("false");
    let stranger = json!({"id": "/stranger", "cmd": "x", "instances": 1});
    let broken_live =
        json!({"id": "/broken", "cmd": "./x", "labels": {"baton.dev/owner": "baton"}});
    // Served at an older commit: as Baton wrote it then (a deploy not made yet, or lost), and
    // the same edited by hand since.
    let old = repo(&[
        ("apps/behind.yaml", "cmd: ./behind --v1\n"),
        ("apps/edited.yaml", "cmd: ./edited --v1\n"),
    ]);
    let behind = as_served(&old, "/behind");
    let mut edited = as_served(&old, "/edited");
    edited["instances"] = json!(4);
    let report = drift(
        &r,
        &[
            web,
            theirs,
            orphan,
            kept,
            stranger,
            broken_live,
            behind,
            edited,
        ],
        &Attributions::default(),
        T0,
    );
    let states: Vec<(&str, DriftState)> = report
        .apps
        .iter()
        .map(|a| (a.app.as_str(), a.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("/behind", DriftState::Pending),
            ("/broken", DriftState::Invalid),
            ("/edited", DriftState::Drifted),
            ("/gone", DriftState::Missing),
            ("/kept", DriftState::Drifted),
            ("/orphan", DriftState::Pending),
            ("/stranger", DriftState::Unmanaged),
            ("/theirs", DriftState::Unmanaged),
            ("/web", DriftState::InSync),
        ]
    );
    assert!(
        !get_state(&report, "/behind").disagrees() && !get_state(&report, "/orphan").disagrees(),
        "a pending deploy is not drift"
    );
    assert!(get_state(&report, "/kept")
        .note
        .as_deref()
        .unwrap()
        .contains("prune: false"));
    let get = |s: &str| report.app(&id(s)).unwrap();
    assert!(
        get("/broken").note.as_deref().unwrap().contains("mem"),
        "{:?}",
        get("/broken").note
    );
    assert!(get("/orphan")
        .note
        .as_deref()
        .unwrap()
        .contains("no longer in git"));
    assert!(get("/theirs")
        .note
        .as_deref()
        .unwrap()
        .contains("other-team"));
    assert_eq!(
        report.summary,
        DriftSummary {
            in_sync: 1,
            drifted: 2,
            pending: 2,
            missing: 1,
            unmanaged: 2,
            failed: 0,
            invalid: 1
        }
    );
    assert!(report.has_drift());

    // The daemon knows which apps it never deployed: missing ones of those are pending creates.
    let mut report = report;
    report.mark_never_deployed(|a| a.as_str() == "/gone");
    assert_eq!(get_state(&report, "/gone").state, DriftState::Missing);
    report.mark_never_deployed(|_| false);
    assert_eq!(get_state(&report, "/gone").state, DriftState::Pending);
    assert_eq!((report.summary.missing, report.summary.pending), (0, 3));
}

fn get_state<'a>(report: &'a DriftReport, app: &str) -> &'a AppDrift {
    report.app(&id(app)).unwrap()
}

#[test]
fn failures_from_the_daemon_mark_apps_failed() {
    let r = web_repo("prune: true");
    let mut report = drift(&r, &[as_served(&r, "/web")], &Attributions::default(), T0);
    let web = id("/web");
    report.mark_failed([(&web, "rejected: cpus must be positive")]);
    assert_eq!(report.apps[0].state, DriftState::Failed);
    assert_eq!(report.summary.failed, 1);
    assert!(report.apps[0].note.as_deref().unwrap().contains("cpus"));
    assert!(
        !report.apps[0].disagrees(),
        "a failure without differences is not drift"
    );
}

#[test]
fn secret_looking_env_values_are_redacted() {
    let r = repo(&[(
        "apps/db.yaml",
        "cmd: ./db\nenv: {DB_PASSWORD: from-vault-ref, MODE: a}\n",
    )]);
    let mut live = as_served(&r, "/db");
    live["env"]["DB_PASSWORD"] = json!("hunter2");
    live["env"]["MODE"] = json!("b");
    let a = drift(&r, &[live], &Attributions::default(), T0)
        .apps
        .remove(0);
    let text = serde_json::to_string(&a).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("from-vault-ref"),
        "{text}"
    );
    assert!(text.contains("(redacted)") && text.contains("\"b\""));

    // An env added whole out of band is one change at `/env`: redacted key by key.
    let r = repo(&[("apps/db.yaml", "cmd: ./db\n")]);
    let mut live = as_served(&r, "/db");
    live["env"] = json!({"API_TOKEN": "tok-live-123", "MODE": "b"});
    let a = drift(&r, &[live], &Attributions::default(), T0)
        .apps
        .remove(0);
    let text = serde_json::to_string(&a).unwrap();
    assert!(!text.contains("tok-live-123"), "{text}");
    assert!(
        text.contains("(redacted)") && text.contains("\"MODE\""),
        "{text}"
    );
}

#[test]
fn api_post_events_parse_as_marathon_and_the_dev_scheduler_send_them() {
    let data = json!({
        "eventType": "api_post_event", "timestamp": "2014-03-01T23:29:30.158Z",
        "clientIp": "0:0:0:0:0:0:0:1", "uri": "/v2/apps/my-app",
        "appDefinition": {"id": "/my-app", "cmd": "sleep 30", "instances": 2}
    });
    let (app, a, def) = parse_api_post("api_post_event", &data).unwrap();
    assert_eq!(app, id("/my-app"));
    assert_eq!(a.client_ip, "0:0:0:0:0:0:0:1");
    assert_eq!(a.uri, "/v2/apps/my-app");
    assert_eq!(rfc3339(a.at), "2014-03-01T23:29:30.158Z");
    assert_eq!(def.unwrap()["instances"], 2);
    // Other events, and broken ones, are not attributions.
    assert!(parse_api_post(
        "status_update_event",
        &json!({"eventType": "status_update_event", "appId": "/a"})
    )
    .is_none());
    assert!(parse_api_post(
        "api_post_event",
        &json!({"eventType": "api_post_event", "timestamp": "x", "appDefinition": {"id": "/a"}})
    )
    .is_none());
    let mut att = Attributions::default();
    assert!(att.ingest("api_post_event", &data));
    assert_eq!(
        att.latest(&id("/my-app")).unwrap().client_ip,
        "0:0:0:0:0:0:0:1"
    );
}

#[test]
fn only_a_few_changes_are_kept_per_app() {
    let mut att = Attributions::default();
    for i in 0..10 {
        att.record(
            id("/a"),
            Attribution {
                client_ip: format!("ip{i}"),
                uri: "/".into(),
                at: i,
            },
            None,
        );
    }
    assert_eq!(att.by_app[&id("/a")].len(), KEPT_PER_APP);
    assert_eq!(att.latest(&id("/a")).unwrap().client_ip, "ip9");
}

fn drifted_with(policy: &str, since: u64) -> (Repo, DriftReport) {
    let r = web_repo(&format!("drift: {policy}"));
    let mut live = as_served(&r, "/web");
    live["instances"] = json!(4);
    let mut att = Attributions::default();
    att.record(
        id("/web"),
        Attribution {
            client_ip: "10.0.0.9".into(),
            uri: "/v2/apps/web".into(),
            at: since,
        },
        Some(live.clone()),
    );
    let report = drift(&r, &[live], &att, T0);
    (r, report)
}

#[test]
fn policies_decide_what_is_corrected_and_when() {
    let ledger = Ledger::default();
    let (_, report) = drifted_with("report", T0 - 60 * MIN);
    assert!(
        corrections(&report, &ledger, T0).is_empty(),
        "report never corrects"
    );
    let (_, report) = drifted_with("correct", T0);
    assert_eq!(corrections(&report, &ledger, T0), vec![id("/web")]);

    let (_, report) = drifted_with("{correctAfter: 10m}", T0 - 4 * MIN);
    assert_eq!(
        report.apps[0].policy,
        Some(DriftPolicy::CorrectAfter(Duration::from_secs(600)))
    );
    assert!(
        corrections(&report, &ledger, T0).is_empty(),
        "within the grace period"
    );
    assert_eq!(next_correction_at(&report, &ledger, T0), Some(T0 + 6 * MIN));
    assert!(corrections(&report, &ledger, T0 + 6 * MIN - 1).is_empty());
    assert_eq!(
        corrections(&report, &ledger, T0 + 6 * MIN),
        vec![id("/web")]
    );
    assert_eq!(next_correction_at(&report, &ledger, T0 + 6 * MIN), None);
}

#[test]
fn the_ledger_start_counts_for_the_grace_period() {
    // No attribution: the drift is first seen by the ledger.
    let r = web_repo("drift: {correctAfter: 10m}");
    let mut live = as_served(&r, "/web");
    live["instances"] = json!(4);
    live.as_object_mut().unwrap().remove("version");
    let mut ledger = Ledger::default();
    let mut report = drift(
        &r,
        std::slice::from_ref(&live),
        &Attributions::default(),
        T0,
    );
    assert_eq!(report.apps[0].since, None);
    ledger.observe(&mut report, &BTreeSet::new(), T0);
    let mut later = drift(&r, &[live], &Attributions::default(), T0 + 11 * MIN);
    ledger.observe(&mut later, &BTreeSet::new(), T0 + 11 * MIN);
    assert_eq!(later.apps[0].since, Some(T0));
    assert_eq!(
        corrections(&later, &ledger, T0 + 11 * MIN),
        vec![id("/web")]
    );
}

/// An owned app git no longer has is reported as what the next sync really does with it: held
/// without an explicit owner, left alone outside `idPrefixes`.
#[test]
fn orphans_say_what_ownership_settings_do_with_them() {
    let files = |config: &str| {
        repo(&[
            ("baton.yaml", config),
            ("apps/shop/web.yaml", "cmd: ./web\n"),
        ])
    };
    let orphans = |r: &Repo| {
        let mut stale = as_served(r, "/shop/web");
        stale["id"] = json!("/shop/stale");
        let mut outside = as_served(r, "/shop/web");
        outside["id"] = json!("/legacy/batch");
        drift(
            r,
            &[as_served(r, "/shop/web"), stale, outside],
            &Attributions::default(),
            T0,
        )
    };
    let note = |report: &DriftReport, app: &str| {
        let a = report.app(&id(app)).unwrap();
        (a.state, a.note.clone().unwrap_or_default())
    };

    let report = orphans(&files("defaults: {labels: {team: shop}}\n"));
    // Git dropped it and nobody changed it: a deletion due or held is pending, not drift.
    let (state, text) = note(&report, "/shop/stale");
    assert_eq!(state, DriftState::Pending);
    assert!(text.contains("kept: no `owner:` in baton.yaml"), "{text}");

    let report = orphans(&files("owner: shop\nidPrefixes: [/shop]\n"));
    let (state, text) = note(&report, "/shop/stale");
    assert_eq!(state, DriftState::Pending);
    assert!(text.contains("the next sync deletes it"), "{text}");
    let (state, text) = note(&report, "/legacy/batch");
    assert_eq!(
        state,
        DriftState::Unmanaged,
        "outside idPrefixes: not drift"
    );
    assert!(
        text.contains("labelled `shop`, but outside idPrefixes (`/shop`); left alone"),
        "{text}"
    );
    assert!(corrections(&report, &Ledger::default(), T0).is_empty());
}

#[test]
fn failed_and_orphaned_apps_are_never_self_healed() {
    let (r, mut report) = drifted_with("correct", T0);
    report.mark_failed([(&id("/web"), "boom")]);
    assert!(corrections(&report, &Ledger::default(), T0).is_empty());
    let mut orphan = as_served(&r, "/web");
    orphan["id"] = json!("/orphan");
    let report = drift(
        &r,
        &[as_served(&r, "/web"), orphan],
        &Attributions::default(),
        T0,
    );
    assert_eq!(
        report.app(&id("/orphan")).unwrap().state,
        DriftState::Pending
    );
    assert!(corrections(&report, &Ledger::default(), T0).is_empty());
}

#[test]
fn a_correction_plan_only_touches_the_chosen_apps() {
    let r = repo(&[
        ("baton.yaml", "owner: baton\n"), // the orphan's delete needs an explicit owner
        ("apps/a.yaml", "cmd: ./a\n"),
        ("apps/b.yaml", "cmd: ./b\n"),
    ]);
    let mut a = as_served(&r, "/a");
    a["cmd"] = json!("./a --hot");
    let mut b = as_served(&r, "/b");
    b["cmd"] = json!("./b --hot");
    let mut orphan = as_served(&r, "/a");
    orphan["id"] = json!("/orphan");
    let full = crate::plan::plan(&r, &[a, b, orphan], &crate::plan::Policy::default());
    assert_eq!(full.changes().count(), 3);
    let only_a = restrict(&full, &[id("/a")]);
    let apps: Vec<&str> = only_a.changes().map(|c| c.app.as_str()).collect();
    assert_eq!(apps, ["/a"]);
    assert_eq!((only_a.summary.update, only_a.summary.delete), (1, 0));
}

#[test]
fn ledger_tracks_episodes_and_how_they_end() {
    let r = web_repo("prune: true");
    let synced = as_served(&r, "/web");
    let mut drifted = synced.clone();
    drifted["instances"] = json!(7);
    let none = BTreeSet::new();
    let mut ledger = Ledger::default();

    let mut rep = drift(
        &r,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0,
    );
    let ev = ledger.observe(&mut rep, &none, T0);
    assert!(matches!(ev.as_slice(), [LedgerEvent::Detected(e)] if e.app == id("/web")));
    let since = rep.apps[0].since.unwrap();
    assert!(since <= T0);

    // Still drifted later, with one more field: extended, nothing new to tell.
    drifted["cmd"] = json!("./web2");
    let mut rep = drift(
        &r,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0 + 3 * MIN,
    );
    assert!(ledger.observe(&mut rep, &none, T0 + 3 * MIN).is_empty());
    let e = ledger.open(&id("/web")).unwrap();
    assert_eq!(e.fields, ["/instances", "/cmd"]);
    assert_eq!(e.last_seen, T0 + 3 * MIN);
    assert_eq!(e.duration_seconds, (T0 + 3 * MIN - since) / 1000);

    // Put back by hand: resolved out of band.
    let mut rep = drift(
        &r,
        std::slice::from_ref(&synced),
        &Attributions::default(),
        T0 + 4 * MIN,
    );
    let ev = ledger.observe(&mut rep, &none, T0 + 4 * MIN);
    assert!(
        matches!(ev.as_slice(), [LedgerEvent::Resolved(e)] if e.resolution == Some(Resolution::OutOfBand))
    );
    assert!(ledger.open(&id("/web")).is_none());

    // A second episode, corrected by Baton.
    let mut rep = drift(
        &r,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0 + 5 * MIN,
    );
    ledger.observe(&mut rep, &none, T0 + 5 * MIN);
    let mut rep = drift(
        &r,
        std::slice::from_ref(&synced),
        &Attributions::default(),
        T0 + 6 * MIN,
    );
    let ev = ledger.observe(&mut rep, &BTreeSet::from([id("/web")]), T0 + 6 * MIN);
    assert!(
        matches!(ev.as_slice(), [LedgerEvent::Resolved(e)] if e.resolution == Some(Resolution::Corrected))
    );

    // A third, ended by git adopting the live value.
    let mut rep = drift(
        &r,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0 + 7 * MIN,
    );
    ledger.observe(&mut rep, &none, T0 + 7 * MIN);
    let adopted = repo(&[(
        "apps/web.yaml",
        "cmd: ./web2\ninstances: 7\nenv: {COLOR: blue}\n",
    )]);
    let mut rep = drift(
        &adopted,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0 + 8 * MIN,
    );
    assert_eq!(rep.apps[0].state, DriftState::InSync);
    let ev = ledger.observe(&mut rep, &none, T0 + 8 * MIN);
    assert!(
        matches!(ev.as_slice(), [LedgerEvent::Resolved(e)] if e.resolution == Some(Resolution::ChangedInGit))
    );

    // A fourth, ended by the app leaving git and the scheduler.
    let mut rep = drift(
        &r,
        std::slice::from_ref(&drifted),
        &Attributions::default(),
        T0 + 9 * MIN,
    );
    ledger.observe(&mut rep, &none, T0 + 9 * MIN);
    let empty = repo(&[("apps/other.yaml", "cmd: ./o\n")]);
    let mut rep = drift(&empty, &[], &Attributions::default(), T0 + 10 * MIN);
    let ev = ledger.observe(&mut rep, &none, T0 + 10 * MIN);
    assert!(ev.iter().any(
        |e| matches!(e, LedgerEvent::Resolved(e) if e.resolution == Some(Resolution::Removed))
    ));
    assert_eq!(ledger.of(&id("/web")).count(), 4);
}

#[test]
fn ledger_keeps_a_bounded_history_and_survives_a_restart() {
    let mut ledger = Ledger::default();
    for i in 0..(KEEP_CLOSED as u64 + 5) {
        ledger.entries.push(LedgerEntry {
            app: id("/a"),
            state: DriftState::Drifted,
            first_seen: i,
            last_seen: i,
            duration_seconds: 0,
            fields: vec!["/cmd".into()],
            changed_by: None,
            resolution: Some(Resolution::OutOfBand),
            resolved_at: Some(i),
            git_digest: None,
        });
    }
    let mut report = DriftReport {
        owner: "baton".into(),
        generated_at: T0,
        summary: DriftSummary::default(),
        apps: vec![],
        ledger: vec![],
    };
    ledger.observe(&mut report, &BTreeSet::new(), T0);
    assert_eq!(ledger.entries.len(), KEEP_CLOSED);
    assert_eq!(ledger.entries[0].first_seen, 5, "the oldest go first");
}

#[test]
fn times_and_durations_read_well() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        parse_rfc3339("2026-11-19T10:00:00.250Z")
            .map(rfc3339)
            .as_deref(),
        Some("2026-11-19T10:00:00.250Z")
    );
    assert_eq!(human(Duration::from_secs(42)), "42s");
    assert_eq!(human(Duration::from_secs(5 * 60)), "5m");
    assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3h2m");
    assert_eq!(human(Duration::from_secs(2 * 86_400 + 3600)), "2d1h");
    assert_eq!(
        policy_word(&DriftPolicy::CorrectAfter(Duration::from_secs(600))),
        "correct-after:600s"
    );
}

/// A report patched with the entries of the apps that changed equals the report computed from
/// scratch, and a ledger observing just those apps ends where observing all of them ends:
/// what a scheduler-event cycle relies on.
#[test]
fn patching_the_changed_apps_equals_a_full_observation() {
    let r = repo(&[
        ("apps/web.yaml", "cmd: ./web\n"),
        ("apps/db.yaml", "cmd: ./db\nbaton:\n  drift: correct\n"),
        ("apps/gone.yaml", "cmd: ./gone\n"),
        ("apps/broken.yaml", "cmd: ./x\nmem: lots\n"),
    ]);
    let (web, db) = (as_served(&r, "/web"), as_served(&r, "/db"));
    let mut orphan = web.clone();
    orphan["id"] = json!("/orphan");
    let before = vec![web.clone(), db.clone(), orphan.clone()];
    let att = Attributions::default();
    let mut ledger = Ledger::default();
    let mut patched = drift(&r, &before, &att, T0);
    ledger.observe(&mut patched, &BTreeSet::new(), T0);
    let mut full_ledger = ledger.clone();

    // Out of band: /web scaled, /db deleted, /orphan deleted, /stranger created; /gone
    // untouched. Each step re-reads the apps it names only.
    let mut scaled = web.clone();
    scaled["instances"] = json!(3);
    let stranger = json!({"id": "/stranger", "cmd": "x", "instances": 1});
    let steps: Vec<(Vec<&str>, Vec<Value>)> = vec![
        (
            vec!["/web"],
            vec![scaled.clone(), db.clone(), orphan.clone()],
        ),
        (vec!["/db", "/orphan"], vec![scaled.clone()]),
        (
            vec!["/stranger", "/gone"],
            vec![scaled.clone(), stranger.clone()],
        ),
        (
            vec!["/web", "/db"],
            vec![web.clone(), db.clone(), stranger.clone()],
        ),
    ];
    for (i, (names, live)) in steps.into_iter().enumerate() {
        let now = T0 + (i as u64 + 1) * MIN;
        let ids: BTreeSet<AppId> = names.iter().map(|n| id(n)).collect();
        let list: Vec<AppId> = ids.iter().cloned().collect();
        let named: Vec<Value> = (live.iter())
            .filter(|a| ids.contains(&id(a["id"].as_str().unwrap())))
            .cloned()
            .collect();
        patched.patch(drift_apps(&r, &named, &list, &att, now), now);
        let events = ledger.observe_apps(&mut patched, &BTreeSet::new(), &ids, now);

        let mut full = drift(&r, &live, &att, now);
        let full_events = full_ledger.observe(&mut full, &BTreeSet::new(), now);
        // Entries of apps not named keep their earlier observation (same state and fields).
        let strip = |rep: &DriftReport| -> Vec<(AppId, DriftState, Vec<String>)> {
            rep.apps
                .iter()
                .map(|a| {
                    (
                        a.app.clone(),
                        a.state,
                        a.fields.iter().map(|f| f.pointer.clone()).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(&patched), strip(&full), "step {i}");
        assert_eq!(patched.summary, full.summary, "step {i}");
        for name in &names {
            assert_eq!(
                patched.app(&id(name)),
                full.app(&id(name)),
                "step {i}: {name}"
            );
        }
        // The same episodes opened and closed. Only `last_seen` may differ: a full
        // observation also sees the apps not named (their open episodes are extended).
        let unseen = |evs: Vec<LedgerEvent>| -> Vec<LedgerEvent> {
            evs.into_iter()
                .map(|ev| match ev {
                    LedgerEvent::Detected(mut e) => {
                        e.last_seen = 0;
                        LedgerEvent::Detected(e)
                    }
                    LedgerEvent::Resolved(mut e) => {
                        e.last_seen = 0;
                        LedgerEvent::Resolved(e)
                    }
                })
                .collect()
        };
        assert!(
            !full_events.is_empty() || i == 2,
            "step {i} changes something"
        );
        assert_eq!(unseen(events), unseen(full_events), "step {i}");
        let open = |l: &Ledger| -> Vec<AppId> {
            l.entries
                .iter()
                .filter(|e| e.is_open())
                .map(|e| e.app.clone())
                .collect()
        };
        assert_eq!(open(&ledger), open(&full_ledger), "step {i}");
    }
    assert!(
        patched.app(&id("/orphan")).is_none(),
        "gone from the report"
    );
    assert_eq!(
        patched.app(&id("/stranger")).unwrap().state,
        DriftState::Unmanaged
    );
    assert_eq!(
        patched.app(&id("/gone")).unwrap().state,
        DriftState::Missing
    );
}

/// Issue 15: a rollout's canary is where its rollout wants it, not an owned app git dropped
/// ("pending" deletion); an orphan canary still is.
#[test]
fn a_rollouts_canary_is_not_reported_as_pending_deletion() {
    let api = "cmd: ./api\ninstances: 10\nlabels: {HAPROXY_GROUP: external}\nportDefinitions: [{port: 10100}]\nhealthChecks: [{protocol: HTTP, path: /health, portIndex: 0}]\nbaton:\n  rollout: {}\n";
    let r = repo(&[
        ("baton.yaml", "owner: shop\n"),
        ("apps/api.yaml", api),
        ("apps/web.yaml", "cmd: ./web\n"),
    ]);
    assert!(r.invalid.is_empty(), "{:?}", r.diagnostics);
    let canary = |id: &str, of: &str| json!({"id": id, "cmd": "./api v2", "labels": {"baton.dev/owner": "shop", "baton.dev/rollout-of": of}});
    let live = vec![
        as_served(&r, "/api"),
        canary("/api-canary", "/api"),
        as_served(&r, "/web"),
        canary("/web-canary", "/web"),
    ];
    let report = drift(&r, &live, &Attributions::default(), T0);
    let c = get_state(&report, "/api-canary");
    assert_eq!(c.state, DriftState::InSync, "{c:?}");
    assert_eq!(
        get_state(&report, "/web-canary").state,
        DriftState::Pending,
        "an orphan is pruned by the next sync"
    );
}

/// The plan of the same change shows the same redaction: a plan report travels as far as a
/// drift report (a live value set by hand under a secret-looking name never shows).
#[test]
fn plans_redact_secret_looking_env_values_too() {
    let r = repo(&[(
        "apps/db.yaml",
        "cmd: ./db\nenv: {DB_PASSWORD: from-vault-ref, MODE: a}\n",
    )]);
    let mut live = as_served(&r, "/db");
    live["env"]["DB_PASSWORD"] = json!("hunter2");
    live["env"]["MODE"] = json!("b");
    let p = crate::plan::plan(&r, &[live], &crate::plan::Policy::default());
    let c = p.changes().next().expect("an update");
    let text = serde_json::to_string(&c).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("from-vault-ref"),
        "{text}"
    );
    assert!(
        text.contains("(redacted)") && text.contains("\"b\""),
        "{text}"
    );
    // What is written is git's definition, not the redacted report.
    assert_eq!(
        c.body.as_ref().unwrap()["env"]["DB_PASSWORD"],
        "from-vault-ref"
    );
}

/// The status page's task words: an app mid-deployment is "deploying", not "down"; an app
/// without health checks counts running tasks, not "0 healthy"; with health checks, healthy
/// ones.
#[test]
fn task_summary_says_deploying_and_counts_running_without_health_checks() {
    let app = |extra: Value| {
        let mut a = json!({"id": "/web", "instances": 3, "tasksRunning": 2, "tasksHealthy": 0});
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        tasks_of(&a).summary
    };
    assert_eq!(
        app(json!({"deployments": [{"id": "d-1"}]})),
        "deploying 2/3 running"
    );
    assert_eq!(app(json!({"deployments": []})), "down 2/3 running");
    assert_eq!(app(json!({"tasksRunning": 3})), "up 3/3 running");
    let checked = json!([{"protocol": "HTTP", "path": "/"}]);
    assert_eq!(
        app(json!({"healthChecks": checked, "tasksRunning": 3, "tasksHealthy": 1})),
        "down 1/3 healthy"
    );
    assert_eq!(
        app(json!({"healthChecks": checked, "tasksRunning": 3, "tasksHealthy": 3})),
        "up 3/3 healthy"
    );
}

/// The ledger records only real drift: a git deploy whose write failed (the app still at the
/// definition Baton wrote before, nobody changed it) and a create are not drift episodes, so a
/// later successful write does not show as "drifted -> corrected". An app someone edited whose
/// correction failed still is one.
#[test]
fn failed_git_deploys_and_creates_open_no_ledger_episode() {
    let old = repo(&[("apps/web.yaml", "cmd: ./web\ninstances: 2\n")]);
    let new = repo(&[
        ("apps/web.yaml", "cmd: ./web\ninstances: 3\n"),
        ("apps/api.yaml", "cmd: ./api\n"),
        ("apps/edited.yaml", "cmd: ./edited\n"),
    ]);
    let behind = as_served(&old, "/web");
    let mut edited = as_served(&new, "/edited");
    edited["cmd"] = json!("./by-hand");
    let mut report = drift(&new, &[behind, edited], &Attributions::default(), T0);
    report.mark_never_deployed(|a| a.as_str() != "/api");
    let (web, api, ed) = (id("/web"), id("/api"), id("/edited"));
    report.mark_failed([
        (&web, "deployment failed"),
        (&api, "create refused"),
        (&ed, "deployment failed"),
    ]);
    assert_eq!(report.app(&web).unwrap().state, DriftState::Failed);
    let mut ledger = ledger::Ledger::default();
    let events = ledger.observe(&mut report, &BTreeSet::new(), T0);
    let opened: Vec<&str> = ledger.entries.iter().map(|e| e.app.as_str()).collect();
    assert_eq!(opened, ["/edited"], "{events:?}");

    // The retry succeeds: nothing is resolved as corrected for /web or /api.
    let mut served = vec![as_served(&new, "/web"), as_served(&new, "/api")];
    served.push(as_served(&new, "/edited"));
    let mut report = drift(&new, &served, &Attributions::default(), T0 + MIN);
    let written: BTreeSet<AppId> = [web.clone(), api.clone(), ed.clone()].into();
    ledger.observe(&mut report, &written, T0 + MIN);
    let closed: Vec<(&str, Option<ledger::Resolution>)> = (ledger.entries.iter())
        .map(|e| (e.app.as_str(), e.resolution))
        .collect();
    assert_eq!(closed, [("/edited", Some(ledger::Resolution::Corrected))]);
}
