use super::*;

const NOW: u64 = 1_700_000_000_000;

fn config() -> GateConfig {
    GateConfig {
        owner: "me".into(),
        ..Default::default()
    }
}

fn apps() -> BTreeMap<AppId, AppGate> {
    [(
        AppId::parse("/web").unwrap(),
        AppGate {
            role: "baton-web".into(),
            role_id: Some("rid".into()),
            instances: 2,
            canary_of: None,
        },
    )]
    .into()
}

fn task() -> TaskInfo {
    TaskInfo {
        id: "web.1".into(),
        app_id: "/web".into(),
        owner: Some("me".into()),
        state: "TASK_RUNNING".into(),
        staged_at_ms: Some(NOW - 5_000),
        addrs: vec!["10.0.0.7".parse().unwrap()],
        rollout_of: None,
    }
}

fn req(task_id: &str, app_id: &str) -> SecretZeroRequest {
    SecretZeroRequest {
        task_id: task_id.into(),
        app_id: app_id.into(),
    }
}

fn peer() -> Option<IpAddr> {
    Some("10.0.0.7".parse().unwrap())
}

fn check(r: &SecretZeroRequest, t: Option<&TaskInfo>, peer: Option<IpAddr>) -> Decision {
    decide(
        r,
        peer,
        t,
        &apps(),
        &Served::default(),
        &mut RateLimiter::default(),
        NOW,
        &config(),
    )
}

#[test]
fn a_fresh_task_of_a_secret_app_from_its_host_is_granted() {
    assert_eq!(
        check(&req("web.1", "/web"), Some(&task()), peer()),
        Decision::Grant {
            role: "baton-web".into()
        }
    );
    // IPv4-mapped IPv6 peers are the same host.
    assert!(matches!(
        check(
            &req("web.1", "/web"),
            Some(&task()),
            Some("::ffff:10.0.0.7".parse().unwrap())
        ),
        Decision::Grant { .. }
    ));
    // Staging tasks may ask too (baton-env runs before the app is up).
    let mut t = task();
    t.state = "TASK_STAGING".into();
    assert!(matches!(
        check(&req("web.1", "/web"), Some(&t), peer()),
        Decision::Grant { .. }
    ));
}

#[test]
fn each_check_denies_with_its_reason() {
    use DenyReason::*;
    let r = req("web.1", "/web");
    assert_eq!(
        check(&req("web.1", "web"), Some(&task()), peer()),
        Decision::Deny(Malformed)
    );
    assert_eq!(
        check(&req("", "/web"), Some(&task()), peer()),
        Decision::Deny(Malformed)
    );
    assert_eq!(
        check(&req("x.1", "/other"), None, peer()),
        Decision::Deny(UnknownApp)
    );
    assert_eq!(check(&r, None, peer()), Decision::Deny(UnknownTask));
    let mut t = task();
    t.app_id = "/db".into();
    assert_eq!(check(&r, Some(&t), peer()), Decision::Deny(AppMismatch));
    let mut t = task();
    t.owner = Some("someone-else".into());
    assert_eq!(check(&r, Some(&t), peer()), Decision::Deny(NotOwned));
    let mut t = task();
    t.state = "TASK_FINISHED".into();
    assert_eq!(check(&r, Some(&t), peer()), Decision::Deny(NotActive));
    let mut t = task();
    t.staged_at_ms = Some(NOW - 121_000);
    assert_eq!(check(&r, Some(&t), peer()), Decision::Deny(TooOld));
    t.staged_at_ms = None;
    assert_eq!(check(&r, Some(&t), peer()), Decision::Deny(TooOld));
    assert_eq!(
        check(&r, Some(&task()), Some("10.0.0.8".parse().unwrap())),
        Decision::Deny(WrongHost)
    );
    assert_eq!(check(&r, Some(&task()), None), Decision::Deny(WrongHost));
}

#[test]
fn host_check_can_be_disabled() {
    let mut c = config();
    c.check_host = false;
    let d = decide(
        &req("web.1", "/web"),
        None,
        Some(&task()),
        &apps(),
        &Served::default(),
        &mut RateLimiter::default(),
        NOW,
        &c,
    );
    assert!(matches!(d, Decision::Grant { .. }));
}

#[test]
fn a_served_task_is_a_replay() {
    let mut served = Served::default();
    served.served.insert("web.1".into(), NOW - 1000);
    let d = decide(
        &req("web.1", "/web"),
        peer(),
        Some(&task()),
        &apps(),
        &served,
        &mut RateLimiter::default(),
        NOW,
        &config(),
    );
    assert_eq!(d, Decision::Deny(DenyReason::Replayed));
}

#[test]
fn rate_limit_is_per_app_and_spent_only_by_otherwise_valid_requests() {
    let mut c = config();
    c.rate = RateConfig {
        burst: 3,
        per_second: 1.0,
    };
    let mut limiter = RateLimiter::default();
    let served = Served::default();
    // Forged task ids never spend the budget.
    for i in 0..50 {
        let d = decide(
            &req(&format!("forged.{i}"), "/web"),
            peer(),
            None,
            &apps(),
            &served,
            &mut limiter,
            NOW,
            &c,
        );
        assert_eq!(d, Decision::Deny(DenyReason::UnknownTask));
    }
    let mut granted = 0;
    for _ in 0..5 {
        if let Decision::Grant { .. } = decide(
            &req("web.1", "/web"),
            peer(),
            Some(&task()),
            &apps(),
            &served,
            &mut limiter,
            NOW,
            &c,
        ) {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    // One second later, one more token.
    let d = decide(
        &req("web.1", "/web"),
        peer(),
        Some(&task()),
        &apps(),
        &served,
        &mut limiter,
        NOW + 1000,
        &c,
    );
    assert!(matches!(d, Decision::Grant { .. }));
    let d = decide(
        &req("web.1", "/web"),
        peer(),
        Some(&task()),
        &apps(),
        &served,
        &mut limiter,
        NOW + 1000,
        &c,
    );
    assert_eq!(d, Decision::Deny(DenyReason::RateLimited));
}

#[test]
fn burst_is_at_least_the_instance_count() {
    let mut c = config();
    c.rate = RateConfig {
        burst: 1,
        per_second: 0.0,
    };
    let mut a = apps();
    a.values_mut().for_each(|g| g.instances = 1000);
    let mut limiter = RateLimiter::default();
    let served = Served::default();
    let n = (0..1200)
        .filter(|_| {
            matches!(
                decide(
                    &req("web.1", "/web"),
                    peer(),
                    Some(&task()),
                    &a,
                    &served,
                    &mut limiter,
                    NOW,
                    &c
                ),
                Decision::Grant { .. }
            )
        })
        .count();
    assert_eq!(n, 1000);
}

#[test]
fn tasks_are_read_from_marathon_app_json() {
    let app = serde_json::json!({
        "id": "/web",
        "labels": {"baton.dev/owner": "me"},
        "tasks": [{
            "id": "web.abc", "appId": "/web", "host": "agent-1",
            "ipAddresses": [{"ipAddress": "10.1.2.3", "protocol": "IPv4"}],
            "state": "TASK_RUNNING", "stagedAt": "2023-11-14T22:13:20.000Z"
        }]
    });
    let t = tasks_of(&app);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].owner.as_deref(), Some("me"));
    assert_eq!(t[0].staged_at_ms, Some(1_700_000_000_000));
    assert_eq!(t[0].addrs, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
    assert_eq!(host_of(&app, "web.abc").as_deref(), Some("agent-1"));
}

#[test]
fn served_set_round_trips_atomically_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let path = served_path(dir.path());
    assert!(load_served(&path).unwrap().served.is_empty());
    let mut s = Served {
        version: 1,
        ..Default::default()
    };
    s.served.insert("old".into(), NOW - 100_000_000);
    s.served.insert("new".into(), NOW);
    save_served(&path, &s).unwrap();
    let mut back = load_served(&path).unwrap();
    assert_eq!(back, s);
    back.prune(NOW, Duration::from_secs(3600));
    assert!(back.contains("new") && !back.contains("old"));
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A corrupt file is an error, not an empty set (that would reopen the door).
    std::fs::write(&path, b"{not json").unwrap();
    assert!(load_served(&path).is_err());
}

#[test]
fn reserving_forgets_what_is_past_retention() {
    let day = Duration::from_secs(24 * 3600);
    let mut s = Served::default();
    s.reserve("web.1", NOW, day);
    s.reserve("web.2", NOW + 1000, day);
    assert!(s.contains("web.1") && s.contains("web.2"));
    // A day and a bit later: web.1 is forgotten, web.2 (served a second later) is not yet.
    s.reserve("web.3", NOW + day.as_millis() as u64 + 500, day);
    assert!(!s.contains("web.1") && s.contains("web.2") && s.contains("web.3"));
    assert_eq!(s.served.len(), 2);
}

#[test]
fn metrics_list_every_reason() {
    let c = Counters::default();
    c.deny(DenyReason::Replayed);
    let text = c.prometheus();
    assert!(text.contains("reason=\"replayed\"} 1"), "{text}");
    assert!(text.contains("reason=\"too_old\"} 0"), "{text}");
}

/// A gatekeeper whose Vault is never reached in these tests (nothing is granted).
fn offline_gatekeeper(state_dir: Option<PathBuf>) -> Result<Gatekeeper<StaticTasks>, GateError> {
    let vault = VaultAdmin::new(crate::secret_zero::vault_admin::VaultAdminConfig {
        addr: "http://127.0.0.1:9".into(),
        token: secrecy::SecretString::from("t".to_string()),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let tasks = StaticTasks::default();
    tasks.insert(task());
    Gatekeeper::new(
        tasks,
        vault,
        GateConfig {
            state_dir,
            ..config()
        },
        Arc::new(|| NOW),
    )
}

/// A served-task file of a version this Baton does not know stops the start, like a corrupt
/// one: reading it as empty would reopen replay for every task it lists.
#[test]
fn a_served_file_of_an_unknown_version_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = served_path(dir.path());
    for version in [0, 2, 99] {
        std::fs::write(
            &path,
            format!(r#"{{"version": {version}, "served": {{"web.1": {NOW}}}}}"#),
        )
        .unwrap();
        let e = load_served(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("unknown version {version}")), "{e}");
        assert!(
            offline_gatekeeper(Some(dir.path().to_owned())).is_err(),
            "version {version}"
        );
    }
    std::fs::write(
        &path,
        format!(r#"{{"version": 1, "served": {{"web.1": {NOW}}}}}"#),
    )
    .unwrap();
    let gk = offline_gatekeeper(Some(dir.path().to_owned())).unwrap();
    assert_eq!(gk.served_count(), 1);
}

/// Before the loop has told it its apps (Vault down at start, a slow first cycle), every
/// request is "not ready": 503 with Retry-After, which baton-env retries, where a 403 would
/// have been final. Once it knows its apps, an unknown app is refused as always.
#[tokio::test]
async fn before_its_first_apps_the_gatekeeper_answers_503_with_retry_after() {
    use axum::body::Body;
    use tower::ServiceExt;
    let gk = Arc::new(offline_gatekeeper(None).unwrap());
    let app = router(gk.clone());
    let ask = |app_id: &str| {
        let mut r = axum::http::Request::post(PATH)
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::to_vec(&json!({"task_id": "web.1", "app_id": app_id})).unwrap(),
            ))
            .unwrap();
        let peer: SocketAddr = "10.0.0.7:4000".parse().unwrap();
        r.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(r)
    };
    for app_id in ["/web", "/other"] {
        let r = ask(app_id).await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{app_id}");
        assert_eq!(
            r.headers()[header::RETRY_AFTER].to_str().unwrap(),
            NOT_READY_RETRY_AFTER.to_string()
        );
    }
    assert_eq!(gk.counters.not_ready.load(Ordering::Relaxed), 2);
    assert_eq!(gk.counters.denied(DenyReason::UnknownApp), 0);
    assert!(gk
        .counters
        .prometheus()
        .contains("decision=\"not_ready\"} 2"));
    // The first cycle: now the gatekeeper judges (an app it does not serve is refused).
    gk.serve_apps("me", BTreeMap::new());
    assert_eq!(ask("/other").await.unwrap().status().as_u16(), 403);
    assert_eq!(gk.counters.denied(DenyReason::UnknownApp), 1);
}

/// A rollout's canary (`<id>-canary`, issue 15) runs the new definition with the app's secrets:
/// its gate serves the stable's role, and only to a task of the app Baton labelled as that
/// stable's canary.
#[test]
fn a_rollouts_canary_gets_its_stables_role_and_nothing_else_does() {
    let mut gates = apps();
    gates.insert(
        AppId::parse("/web-canary").unwrap(),
        AppGate {
            canary_of: Some(AppId::parse("/web").unwrap()),
            ..gates[&AppId::parse("/web").unwrap()].clone()
        },
    );
    let decide_with = |t: &TaskInfo| {
        decide(
            &req("web-canary.1", "/web-canary"),
            peer(),
            Some(t),
            &gates,
            &Served::default(),
            &mut RateLimiter::default(),
            NOW,
            &config(),
        )
    };
    let mut canary = task();
    canary.id = "web-canary.1".into();
    canary.app_id = "/web-canary".into();
    canary.rollout_of = Some("/web".into());
    assert_eq!(
        decide_with(&canary),
        Decision::Grant {
            role: "baton-web".into()
        }
    );
    // An app at the canary's id that is not Baton's canary of /web gets nothing.
    for other in [None, Some("/db".to_string())] {
        let mut t = canary.clone();
        t.rollout_of = other;
        assert_eq!(decide_with(&t), Decision::Deny(DenyReason::AppMismatch));
    }
    let mut t = canary.clone();
    t.owner = Some("someone-else".into());
    assert_eq!(decide_with(&t), Decision::Deny(DenyReason::NotOwned));
    // Without the canary gate (the app has no rollout) the canary is an unknown app.
    assert_eq!(
        check(&req("web-canary.1", "/web-canary"), Some(&canary), peer()),
        Decision::Deny(DenyReason::UnknownApp)
    );
}

/// `apps_from` opens the canary's gate exactly for the apps with a `baton.rollout` block.
#[test]
fn only_apps_with_a_rollout_get_a_canary_gate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("baton.yaml", "owner: shop\n");
    let app = "cmd: ./serve\ninstances: 3\nlabels: {HAPROXY_GROUP: external}\n\
               portDefinitions: [{port: 10100}]\n\
               healthChecks: [{protocol: HTTP, path: /health, portIndex: 0}]\n\
               env: {TOKEN: 'vault:secret/data/shop#token'}\n";
    write(
        "apps/shop/api.yaml",
        &format!("{app}baton:\n  rollout: {{}}\n"),
    );
    write("apps/shop/web.yaml", app);
    let repo = crate::commands::load_repo(dir.path()).unwrap();
    assert!(repo.invalid.is_empty(), "{:?}", repo.diagnostics);
    let desired = baton_core::secrets::desired(&repo, &Default::default());
    let gates = apps_from(&repo, &desired, &BTreeMap::new());
    let ids: Vec<&str> = gates.keys().map(AppId::as_str).collect();
    assert_eq!(ids, ["/shop/api", "/shop/api-canary", "/shop/web"]);
    let canary = &gates[&AppId::parse("/shop/api-canary").unwrap()];
    let stable = &gates[&AppId::parse("/shop/api").unwrap()];
    assert_eq!(
        canary.canary_of.as_ref().map(AppId::as_str),
        Some("/shop/api")
    );
    assert_eq!(canary.role, stable.role);
    assert_eq!(stable.canary_of, None);
}
