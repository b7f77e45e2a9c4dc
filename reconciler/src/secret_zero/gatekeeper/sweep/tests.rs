use super::*;

const NOW: u64 = 1_700_000_000_000;

fn task(id: &str, state: &str) -> TaskInfo {
    TaskInfo {
        id: id.into(),
        app_id: "/web".into(),
        owner: Some("me".into()),
        state: state.into(),
        staged_at_ms: Some(NOW - 5_000),
        addrs: vec!["10.0.0.7".parse().unwrap()],
        rollout_of: None,
    }
}

fn recorded(at: u64) -> Recorded {
    Recorded {
        accessor: Accessor::new("acc-1234567890"),
        app: "/web".into(),
        at,
    }
}

fn records(tasks: &[(&str, u64)]) -> BTreeMap<String, Recorded> {
    tasks
        .iter()
        .map(|(t, at)| (t.to_string(), recorded(*at)))
        .collect()
}

fn listing(tasks: &[TaskInfo]) -> Listing {
    Listing {
        apps: tasks.iter().map(|t| t.app_id.clone()).collect(),
        tasks: tasks.to_vec(),
    }
}

#[test]
fn tasks_missing_from_the_listing_or_ended_are_due() {
    let rec = records(&[
        ("web.running", NOW - 1),
        ("web.gone", NOW - 1),
        ("web.killed", NOW - 1),
        ("web.failed", NOW - 1),
        ("web.unreachable", NOW - 1),
        ("web.killing", NOW - 1),
    ]);
    let listed = listing(&[
        task("web.running", "TASK_RUNNING"),
        task("web.killed", "TASK_KILLED"),
        task("web.failed", "TASK_FAILED"),
        // May come back: its credentials stay.
        task("web.unreachable", "TASK_UNREACHABLE"),
        // Still running its grace period.
        task("web.killing", "TASK_KILLING"),
        task("other.1", "TASK_RUNNING"),
    ]);
    assert_eq!(
        due(&rec, &listed, &apps(), NOW),
        ["web.failed", "web.gone", "web.killed"]
    );
}

#[test]
fn a_record_newer_than_the_listing_waits_for_the_next_pass() {
    let rec = records(&[("web.new", NOW), ("web.old", NOW - 10)]);
    let listed = Listing {
        apps: ["/web".to_string()].into(),
        tasks: Vec::new(),
    };
    assert_eq!(due(&rec, &listed, &apps(), NOW), ["web.old"]);
}

#[test]
fn an_unlisted_app_is_swept_only_once_baton_stops_serving_it() {
    let rec = records(&[("web.1", NOW - 10)]);
    // The scheduler lists nothing (a leader still loading, or the app deleted by hand) while
    // the repo still has /web: wait, Baton creates it again or the listing was wrong.
    assert!(due(&rec, &Listing::default(), &apps(), NOW).is_empty());
    // The app was deleted from the repo (the gatekeeper no longer serves it): its tasks' tokens go.
    assert_eq!(
        due(&rec, &Listing::default(), &BTreeMap::new(), NOW),
        ["web.1"]
    );
}

fn apps() -> BTreeMap<AppId, AppGate> {
    [(
        AppId::parse("/web").unwrap(),
        AppGate {
            role: "baton-me_web".into(),
            role_id: None,
            instances: 1,
            canary_of: None,
        },
    )]
    .into()
}

fn served(tasks: &[&str]) -> Served {
    Served {
        version: 1,
        served: tasks.iter().map(|t| (t.to_string(), NOW)).collect(),
        accessors: BTreeMap::new(),
    }
}

fn report(task_id: &str, app_id: &str) -> AccessorReport {
    AccessorReport {
        task_id: task_id.into(),
        app_id: app_id.into(),
        accessor: Accessor::new("acc-1234567890"),
    }
}

/// A report, the task listed, the served set, the peer, and the refusal expected.
type Case = (
    AccessorReport,
    Option<TaskInfo>,
    Served,
    Option<IpAddr>,
    ReportRefusal,
);

#[test]
fn a_report_is_judged_like_a_grant() {
    let peer = Some("10.0.0.7".parse().unwrap());
    let t = task("web.1", "TASK_RUNNING");
    let judge = |r: &AccessorReport, t: Option<&TaskInfo>, s: &Served, peer| {
        judge_report(r, peer, t, &apps(), s, "me", true)
    };
    let ok = judge(
        &report("web.1", "/web"),
        Some(&t),
        &served(&["web.1"]),
        peer,
    );
    assert_eq!(
        ok,
        Ok((AppId::parse("/web").unwrap(), "baton-me_web".to_string()))
    );
    use ReportRefusal::*;
    let cases: Vec<Case> = vec![
        (
            report("web.1", "/web"),
            Some(t.clone()),
            served(&[]),
            peer,
            NotServed,
        ),
        (
            report("web.1", "/web"),
            None,
            served(&["web.1"]),
            peer,
            UnknownTask,
        ),
        (
            report("web.1", "/other"),
            Some(t.clone()),
            served(&["web.1"]),
            peer,
            NotOurs,
        ),
        (
            report("web.1", "not an id"),
            Some(t.clone()),
            served(&["web.1"]),
            peer,
            Malformed,
        ),
        (
            report("web.1", "/web"),
            Some(TaskInfo {
                owner: Some("someone-else".into()),
                ..t.clone()
            }),
            served(&["web.1"]),
            peer,
            NotOurs,
        ),
        (
            report("web.1", "/web"),
            Some(t.clone()),
            served(&["web.1"]),
            Some("10.0.0.8".parse().unwrap()),
            WrongHost,
        ),
        (
            report("web.1", "/web"),
            Some(t.clone()),
            served(&["web.1"]),
            None,
            WrongHost,
        ),
    ];
    for (r, t, s, p, want) in cases {
        assert_eq!(judge(&r, t.as_ref(), &s, p), Err(want), "{r:?}");
    }
}

#[test]
fn only_the_tasks_own_approle_login_passes_the_token_check() {
    let info = TokenInfo {
        path: "auth/approle/login".into(),
        role_name: Some("baton-me_web".into()),
        task_id: Some("web.1".into()),
    };
    assert!(check_token(&info, "approle", "baton-me_web", "web.1"));
    assert!(
        !check_token(&info, "approle", "baton-me_web", "web.2"),
        "another task"
    );
    assert!(
        !check_token(&info, "approle", "baton-me_api", "web.1"),
        "another app"
    );
    assert!(
        !check_token(&info, "other-approle", "baton-me_web", "web.1"),
        "another mount"
    );
    let token_made_elsewhere = TokenInfo {
        path: "auth/token/create".into(),
        ..info.clone()
    };
    assert!(!check_token(
        &token_made_elsewhere,
        "approle",
        "baton-me_web",
        "web.1"
    ));
    let no_meta = TokenInfo {
        task_id: None,
        ..info
    };
    assert!(!check_token(&no_meta, "approle", "baton-me_web", "web.1"));
}

#[test]
fn accessors_never_show_in_full() {
    let r = recorded(NOW);
    let text = format!("{r:?} {}", r.accessor);
    assert!(!text.contains("acc-1234567890"), "{text}");
    assert!(text.contains("acc-…"), "{text}");
    // The state file keeps them whole (it is 0600), and reads back the same.
    let s = Served {
        accessors: [("web.1".to_string(), r)].into(),
        ..served(&["web.1"])
    };
    let bytes = serde_json::to_vec(&s).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("acc-1234567890"));
    assert_eq!(serde_json::from_slice::<Served>(&bytes).unwrap(), s);
    // A file of an earlier Baton (no accessors) still reads.
    let old: Served = serde_json::from_str(r#"{"version":1,"served":{"a":1}}"#).unwrap();
    assert!(old.accessors.is_empty());
}

#[test]
fn reports_are_bounded_and_complete() {
    assert!(parse_report(br#"{"task_id":"t","app_id":"/a","accessor":"x"}"#).is_some());
    assert!(parse_report(br#"{"task_id":"t","accessor":"x"}"#).is_none());
    assert!(parse_report(br#"{"task_id":"","app_id":"/a","accessor":"x"}"#).is_none());
    let long = "a".repeat(129);
    let body = format!(r#"{{"task_id":"t","app_id":"/a","accessor":"{long}"}}"#);
    assert!(parse_report(body.as_bytes()).is_none());
}

#[test]
fn old_records_are_forgotten_with_the_served_set() {
    let mut s = served(&["web.1"]);
    s.accessors = records(&[("web.1", NOW - 25 * 3600 * 1000), ("web.2", NOW - 1000)]);
    s.prune(NOW, Duration::from_secs(24 * 3600));
    assert_eq!(s.accessors.keys().collect::<Vec<_>>(), ["web.2"]);
}

#[test]
fn the_sweep_counters_are_in_the_metrics() {
    let c = super::super::Counters::default();
    c.sweep.revoked.fetch_add(2, Ordering::Relaxed);
    let text = c.prometheus();
    assert!(
        text.contains("baton_leases_swept_total{result=\"revoked\"} 2\n"),
        "{text}"
    );
    for line in [
        "baton_leases_swept_total{result=\"failed\"} 0",
        "baton_leases_swept_total{result=\"already_gone\"} 0",
        "baton_secret_zero_accessor_reports_total{decision=\"refused\"} 0",
        "baton_lease_sweep_list_failures_total 0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[test]
fn terminal_status_events_name_their_task() {
    let event = |status: &str| json!({"eventType": "status_update_event", "taskId": "web.1", "taskStatus": status});
    assert_eq!(ended_task(&event("TASK_KILLED")), Some("web.1"));
    assert_eq!(ended_task(&event("TASK_FAILED")), Some("web.1"));
    assert_eq!(ended_task(&event("TASK_RUNNING")), None);
    assert_eq!(ended_task(&event("TASK_KILLING")), None);
    assert_eq!(ended_task(&event("TASK_UNREACHABLE")), None);
    assert_eq!(
        ended_task(
            &json!({"eventType": "api_post_event", "taskStatus": "TASK_KILLED", "taskId": "x"})
        ),
        None
    );
}
