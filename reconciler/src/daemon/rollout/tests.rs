//! The rollout driver's I/O pieces on their own: stats sources and fetches, checks (HTTP and
//! command), the write guard, the tick's timing.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::json;

use super::*;
use baton_core::plan::{Change, Summary, Wave};

/// Serve `router` on a free loopback port until the test ends.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[test]
fn stats_sources_take_credentials_out_of_the_url() {
    let s = StatsSource::parse("http://admin:s3cr%40t@lb:9090/haproxy?stats;csv").unwrap();
    assert_eq!(s.url, "http://lb:9090/haproxy?stats;csv");
    let (user, password) = s.auth.clone().unwrap();
    assert_eq!(
        (user.as_str(), password.expose_secret()),
        ("admin", "s3cr@t")
    );
    let debug = format!("{s:?}");
    assert!(!debug.contains("s3cr"), "{debug}");
    assert!(StatsSource::parse("http://lb:9090/stats")
        .unwrap()
        .auth
        .is_none());
    for bad in ["ftp://u:pw@lb/x", "lb:9090", "http://"] {
        let e = StatsSource::parse(bad).unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }
}

/// A fetch sends the URL's credentials as basic auth; an error names the URL without them;
/// a body over the cap is refused, also without a Content-Length; a failing source makes the
/// whole sample `None` (nothing judged), no source an empty one.
#[tokio::test]
async fn stats_fetches_are_authenticated_bounded_and_all_or_nothing() {
    let router = axum::Router::new()
        .route(
            "/stats",
            get(|h: HeaderMap| async move {
                // "admin:pw" in base64.
                let ok = h.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Basic YWRtaW46cHc=");
                if ok {
                    (StatusCode::OK, "# pxname,svname\n".to_string())
                } else {
                    (StatusCode::UNAUTHORIZED, String::new())
                }
            }),
        )
        .route(
            "/huge",
            get(|| async {
                let chunk = vec![b'x'; 1024 * 1024];
                let stream = futures::stream::iter(
                    (0..5).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                axum::body::Body::from_stream(stream)
            }),
        )
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let addr = serve(router).await;
    let client = http_client();
    let with_auth = StatsSource::parse(&format!("http://admin:pw@{addr}/stats")).unwrap();
    let body = fetch(&client, &with_auth).await.unwrap();
    assert_eq!(body, b"# pxname,svname\n");
    let without = StatsSource::parse(&format!("http://{addr}/stats")).unwrap();
    let e = fetch(&client, &without).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 401"), "{e}");

    let huge = StatsSource::parse(&format!("http://{addr}/huge")).unwrap();
    let e = fetch(&client, &huge).await.unwrap_err();
    assert_eq!(
        e,
        StatsError::TooLarge {
            url: huge.url.clone()
        }
    );

    let down = StatsSource::parse(&format!("http://admin:pw@{addr}/down")).unwrap();
    let e = fetch(&client, &down).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert!(!e.to_string().contains("pw@"), "{e}");

    // One source down: no sample at all (the good one is not even parsed).
    assert_eq!(sample(&client, &[down.clone(), down]).await, None);
    assert_eq!(sample(&client, &[]).await, Some(Sample::default()));
}

fn run(check: rollout::Check, port: u16) -> CheckRun {
    CheckRun {
        check,
        app: "/shop/api-canary".into(),
        host: "127.0.0.1".into(),
        ports: vec![port, 4321],
    }
}

fn allowed() -> RolloutConfig {
    RolloutConfig {
        allow_check_commands: true,
        ..RolloutConfig::default()
    }
}

#[tokio::test]
async fn http_checks_compare_the_status_of_the_tasks_port() {
    let router = axum::Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/ready", get(|| async { StatusCode::NO_CONTENT }));
    let addr = serve(router).await;
    let http = http_client();
    let check = |path: &str, expect| {
        run(
            rollout::Check::Http {
                path: path.into(),
                expect,
            },
            addr.port(),
        )
    };
    let cfg = RolloutConfig::default();
    assert_eq!(
        run_check(&check("/health", 200), &cfg, &http).await,
        CheckOutcome::Passed
    );
    assert_eq!(
        run_check(&check("ready", 204), &cfg, &http).await,
        CheckOutcome::Passed
    );
    match run_check(&check("/ready", 200), &cfg, &http).await {
        CheckOutcome::Failed { output } => {
            assert!(output.contains("answered 204, expected 200"), "{output}")
        }
        o => panic!("{o:?}"),
    }
    // Nothing listens: failed, with the URL.
    let closed = run(
        rollout::Check::Http {
            path: "/health".into(),
            expect: 200,
        },
        1,
    );
    match run_check(&closed, &cfg, &http).await {
        CheckOutcome::Failed { output } => {
            assert!(
                output.starts_with("GET http://127.0.0.1:1/health"),
                "{output}"
            )
        }
        o => panic!("{o:?}"),
    }
}

fn command(cmd: &str, timeout: Duration) -> CheckRun {
    run(
        rollout::Check::Command {
            cmd: cmd.into(),
            timeout,
        },
        8080,
    )
}

/// A command check sees the task in `BATON_CHECK_*` and nothing of Baton's environment; exit 0
/// passes, anything else fails with the end of what it printed.
#[tokio::test]
async fn command_checks_get_only_the_task_in_their_env() {
    let http = http_client();
    let env = command("env", Duration::from_secs(20));
    let CheckOutcome::Failed { output } = run_check(
        &command("env; exit 3", Duration::from_secs(20)),
        &allowed(),
        &http,
    )
    .await
    else {
        panic!("exit 3 passed")
    };
    assert!(output.starts_with("exit 3;"), "{output}");
    for want in [
        "BATON_CHECK_HOST=127.0.0.1",
        "BATON_CHECK_PORT=8080",
        "BATON_CHECK_PORTS=8080,4321",
        "BATON_CHECK_URL=http://127.0.0.1:8080",
        "BATON_CHECK_APP=/shop/api-canary",
    ] {
        assert!(output.contains(want), "{want} in {output}");
    }
    // Only what sh itself sets besides ours: no variable of this process leaks in.
    for line in output.lines().skip(1) {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            name.starts_with("BATON_CHECK_")
                || ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "{name} leaked into the check's env: {output}"
        );
    }
    assert_eq!(
        run_check(&env, &allowed(), &http).await,
        CheckOutcome::Passed
    );
    // Off unless allowed.
    match run_check(&env, &RolloutConfig::default(), &http).await {
        CheckOutcome::Failed { output } => {
            assert!(output.contains("--allow-check-commands"), "{output}")
        }
        o => panic!("{o:?}"),
    }
}

/// Past its timeout the check's whole process group is killed (also what it put in the
/// background), and only the end of a long output is kept.
#[tokio::test]
async fn command_checks_are_killed_at_their_timeout_and_their_output_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RolloutConfig {
        check_dir: Some(dir.path().to_path_buf()),
        ..allowed()
    };
    let http = http_client();
    let slow = command(
        "sleep 600 & echo $! > bg.pid; echo started; sleep 600",
        Duration::from_millis(500),
    );
    // Generous for a loaded machine, far below the command's own 600 s.
    let ran = tokio::time::timeout(Duration::from_secs(30), run_check(&slow, &cfg, &http));
    match ran.await.expect("the check outlived its timeout") {
        CheckOutcome::Failed { output } => {
            assert!(output.starts_with("timed out after 500ms"), "{output}");
            assert!(output.contains("started"), "{output}");
        }
        o => panic!("{o:?}"),
    }
    // The background sleep ran in the check's cwd and went with its group.
    let pid: i32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Gone, or a zombie waiting for its reaper: not running either way.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} still runs: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let loud = command(
        "head -c 100000 /dev/zero | tr '\\0' x; echo END; exit 1",
        Duration::from_secs(20),
    );
    match run_check(&loud, &cfg, &http).await {
        CheckOutcome::Failed { output } => {
            assert!(
                output.len() <= CHECK_OUTPUT_TAIL + 40,
                "{} bytes",
                output.len()
            );
            assert!(output.ends_with("END"), "{}", &output[output.len() - 10..]);
        }
        o => panic!("{o:?}"),
    }
}

fn plan_of(changes: Vec<Change>) -> Plan {
    Plan {
        owner: "team".into(),
        owner_explicit: true,
        id_prefixes: None,
        commit: "c".into(),
        summary: Summary::default(),
        waves: vec![Wave { changes }],
        unchanged: Vec::new(),
        invalid: Vec::new(),
        unmanaged: Vec::new(),
        held: Vec::new(),
        moves: Vec::new(),
        conflicts: Vec::new(),
        out_of_scope: Vec::new(),
    }
}

fn change(app: &str, action: PlanAction, body: Option<Value>) -> Change {
    Change {
        app: AppId::parse(app).unwrap(),
        action,
        file: None,
        fields: Vec::new(),
        adopt: false,
        deadline_seconds: 60,
        depends_on: Vec::new(),
        body,
    }
}

/// A rollout writes only its canary (ours, naming its stable) and updates its stable; nothing
/// else, never a delete of the stable, never someone else's app at the canary's id.
#[test]
fn the_guard_lets_a_rollout_write_only_its_own_two_apps() {
    let (stable, canary) = (
        AppId::parse("/a").unwrap(),
        AppId::parse("/a-canary").unwrap(),
    );
    let ours = json!({"id": "/a-canary", "labels": {
        baton_core::ownership::OWNER: "team", rollout::ROLLOUT_OF: "/a"}});
    let body = Some(ours.clone());
    let ok = plan_of(vec![
        change("/a-canary", PlanAction::Update, body.clone()),
        change("/a", PlanAction::Update, Some(json!({"id": "/a"}))),
    ]);
    let stable_ours = json!({"id": "/a", "labels": {baton_core::ownership::OWNER: "team"}});
    let guard = |plan: &Plan, s: Option<&Value>, c: Option<&Value>| {
        guard_plan(plan, &stable, &canary, "team", (s, c))
    };
    assert_eq!(guard(&ok, Some(&stable_ours), Some(&ours)), Ok(()));
    let delete = plan_of(vec![change("/a-canary", PlanAction::Delete, None)]);
    assert_eq!(guard(&delete, None, Some(&ours)), Ok(()));
    assert_eq!(guard(&delete, None, None), Ok(()));
    let stable_theirs = json!({"id": "/a", "labels": {baton_core::ownership::OWNER: "other"}});
    let e = guard(&ok, Some(&stable_theirs), Some(&ours)).unwrap_err();
    assert!(e.contains("owned by another Baton"), "{e}");

    let theirs = json!({"id": "/a-canary", "labels": {baton_core::ownership::OWNER: "other"}});
    let e = guard(&delete, None, Some(&theirs)).unwrap_err();
    assert!(e.contains("not this Baton's canary"), "{e}");
    let stray = plan_of(vec![change("/b", PlanAction::Update, body.clone())]);
    assert!(guard(&stray, None, None).is_err());
    let kill_stable = plan_of(vec![change("/a", PlanAction::Delete, None)]);
    assert!(guard(&kill_stable, None, None).is_err());
    let unlabelled = plan_of(vec![change(
        "/a-canary",
        PlanAction::Create,
        Some(json!({"id": "/a-canary"})),
    )]);
    assert!(guard(&unlabelled, None, None).is_err());
}

#[test]
fn the_next_tick_is_the_earliest_wake_within_bounds() {
    let tick = Duration::from_secs(5);
    let wake = |v: &[u64]| -> BTreeMap<String, u64> {
        v.iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), *w))
            .collect()
    };
    assert_eq!(next_tick(&wake(&[]), tick, 1000), tick);
    assert_eq!(
        next_tick(&wake(&[3000, 9000]), tick, 1000),
        Duration::from_secs(2)
    );
    assert_eq!(
        next_tick(&wake(&[500]), tick, 1000),
        Duration::from_secs(1),
        "due: not a spin"
    );
    assert_eq!(
        next_tick(&wake(&[60_000]), tick, 1000),
        tick,
        "never staler than a tick"
    );
    assert_eq!(
        next_tick(&wake(&[0]), Duration::from_millis(200), 1000),
        Duration::from_millis(200)
    );
}

/// `baton apply` / `baton dev` write a rolled-out app's update in place and say so: the
/// updates whose spec has `rollout`, not creates, not other apps.
#[test]
fn one_shot_commands_name_the_rollouts_they_update_in_place() {
    use baton_core::spec::load::{load, Snapshot, SourceFile};
    let files = [
        ("apps/a.yaml", "cmd: a\nlabels: {HAPROXY_GROUP: external}\nportDefinitions: [{port: 10100}]\nhealthChecks: [{protocol: HTTP, path: /health, portIndex: 0}]\ninstances: 10\nbaton:\n  rollout: {}\n"),
        ("apps/b.yaml", "cmd: b\n"),
        ("apps/c.yaml", "cmd: c\nlabels: {HAPROXY_GROUP: external}\nportDefinitions: [{port: 10101}]\nhealthChecks: [{protocol: HTTP, path: /health, portIndex: 0}]\ninstances: 10\nbaton:\n  rollout: {}\n"),
    ];
    let repo = load(Snapshot {
        files: files
            .iter()
            .map(|(p, t)| SourceFile {
                path: PathBuf::from(p),
                bytes: t.as_bytes().to_vec(),
            })
            .collect(),
        ..Snapshot::default()
    });
    assert!(repo.is_valid(), "{:?}", repo.diagnostics);
    let plan = plan_of(vec![
        change("/a", PlanAction::Update, Some(json!({"id": "/a"}))),
        change("/b", PlanAction::Update, Some(json!({"id": "/b"}))),
        change("/c", PlanAction::Create, Some(json!({"id": "/c"}))),
    ]);
    assert_eq!(
        updated_in_place(&repo, &plan),
        [AppId::parse("/a").unwrap()]
    );
}
