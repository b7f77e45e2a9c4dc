//! The fast path of a push: which apps it picks (pure), that it never deletes, and that in the
//! loop the changed app is written before the full listing while deletions still go through
//! the full plan.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use baton_core::spec::load::{load, RepoConfig, Snapshot, SourceFile};
use baton_marathon::fake::{Call, Fake};

pub(super) fn repo(files: &[(&str, &str)]) -> Repo {
    load(Snapshot {
        // An explicit owner: the loop's deletions are part of what these tests follow.
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

pub(super) fn app(cmd: &str) -> String {
    format!("cmd: \"{cmd}\"\ninstances: 1\n")
}

fn ids(v: &[AppId]) -> Vec<&str> {
    v.iter().map(AppId::as_str).collect()
}

pub(super) fn paths(p: &[&str]) -> Vec<PathBuf> {
    p.iter().map(PathBuf::from).collect()
}

#[test]
fn picks_changed_valid_apps_without_dependencies() {
    let r = repo(&[
        ("apps/a.yaml", &app("a")),
        ("apps/b.yaml", "cmd: b\nbaton:\n  dependsOn: [/a]\n"),
        ("apps/g/c.json", "{\"cmd\": \"c\"}"),
        ("apps/bad.yaml", "cmd: [unclosed"),
        ("apps/d.yaml", &app("d")),
    ]);
    let changed = paths(&[
        "apps/a.yaml",
        "apps/b.yaml",
        "apps/g/c.json",
        "apps/bad.yaml",
        "apps/gone.yaml",
    ]);
    // b depends on a (wave order matters): full plan. bad is invalid: never touched. gone.yaml
    // is not in the repo (a removed file): deletions are the full plan's.
    assert_eq!(ids(&fast_sync_candidates(&changed, &r)), ["/a", "/g/c"]);
    assert!(fast_sync_candidates(&[], &r).is_empty());
    assert!(fast_sync_candidates(&paths(&["apps/gone.yaml"]), &r).is_empty());
}

/// An app with a `baton.secrets` block goes through the full cycle even without a `vault:`
/// reference: only there are its secrets checked (an extra policy the operator did not allow
/// blocks it); the fast path would deploy it unchecked.
#[test]
fn apps_with_a_secrets_block_take_the_full_path() {
    let r = repo(&[
        ("apps/a.yaml", &app("a")),
        (
            "apps/greedy.yaml",
            "cmd: g\nbaton:\n  secrets:\n    policies: [\" Root\"]\n",
        ),
        ("apps/reads.yaml", "cmd: r\nenv:\n  P: \"vault:kv/r#p\"\n"),
    ]);
    assert!(r.invalid.is_empty(), "{:?}", r.diagnostics);
    let changed = paths(&["apps/a.yaml", "apps/greedy.yaml", "apps/reads.yaml"]);
    assert_eq!(ids(&fast_sync_candidates(&changed, &r)), ["/a"]);
}

#[test]
fn a_large_push_takes_the_full_path() {
    let files: Vec<(String, String)> = (0..=FAST_SYNC_MAX)
        .map(|i| (format!("apps/a{i}.yaml"), app(&format!("a{i}"))))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let r = repo(&refs);
    let all: Vec<PathBuf> = files.iter().map(|(p, _)| PathBuf::from(p)).collect();
    assert!(fast_sync_candidates(&all, &r).is_empty());
    assert_eq!(
        fast_sync_candidates(&all[..FAST_SYNC_MAX], &r).len(),
        FAST_SYNC_MAX
    );
}

#[test]
fn the_fast_repo_never_deletes() {
    let r = repo(&[("apps/a.yaml", &app("a")), ("apps/b.yaml", &app("b"))]);
    let a = AppId::parse("/a").unwrap();
    let sub = fast_sync_repo(&r, std::slice::from_ref(&a));
    assert_eq!(sub.specs.keys().collect::<Vec<_>>(), [&a]);
    // Even if an owned app without a spec slipped into `live`, the plan holds it.
    let live = vec![json!({"id": "/b", "cmd": "b", "labels": {"baton.dev/owner": "baton"}})];
    let p = plan::plan(
        &sub,
        &live,
        &Policy {
            commit: "c1".into(),
            allow_deletes: Some(100),
        },
    );
    assert_eq!(p.summary.delete, 0);
    assert_eq!(p.summary.create, 1);
}

/// A scripted revision: id, repo, the paths its load reports as changed.
pub(super) type Rev = (String, Repo, Option<Vec<PathBuf>>);

/// A source whose revisions are scripted.
pub(super) struct Scripted {
    pub(super) revs: Arc<std::sync::Mutex<Vec<Rev>>>,
    pub(super) changed: Option<(String, Vec<PathBuf>)>,
}

impl SpecSource for Scripted {
    fn fetch(&mut self) -> Result<String, SourceError> {
        let revs = self.revs.lock().unwrap();
        Ok(revs.last().map(|r| r.0.clone()).unwrap_or_default())
    }

    fn load(&mut self, rev: &str) -> Result<Repo, SourceError> {
        let revs = self.revs.lock().unwrap();
        let (_, repo, changed) = revs.iter().find(|r| r.0 == rev).unwrap();
        self.changed = changed.clone().map(|c| (rev.to_string(), c));
        Ok(repo.clone())
    }

    fn describe(&self) -> String {
        "scripted".into()
    }

    fn changed_last(&self) -> Option<(String, Vec<PathBuf>)> {
        self.changed.clone()
    }
}

#[tokio::test]
async fn push_writes_the_changed_app_before_listing_and_prunes_in_the_full_cycle() {
    let v1 = repo(&[
        ("apps/a.yaml", &app("a1")),
        ("apps/b.yaml", &app("b")),
        ("apps/c.yaml", &app("c")),
    ]);
    let v2 = repo(&[("apps/a.yaml", &app("a2")), ("apps/b.yaml", &app("b"))]);
    let revs = Arc::new(std::sync::Mutex::new(vec![("r1".to_string(), v1, None)]));
    let source = Scripted {
        revs: revs.clone(),
        changed: None,
    };
    let fake = Arc::new(Fake::new(Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let config = LoopConfig {
        sync: SyncMode::Auto,
        poll_interval: Duration::from_secs(3600),
        state_dir: dir.path().to_path_buf(),
        allow_deletes: None,
        apply: ApplyOptions::default(),
        secrets: None,
        notifier: None,
        rollout: Default::default(),
    };
    let (shared, rx) = Shared::new("scripted".into(), SyncMode::Auto);
    let (notifier, mut notes) =
        crate::daemon::notifications::channel(16, shared.dashboard.metrics.clone());
    let config = LoopConfig {
        notifier: Some(notifier),
        ..config
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        source,
        fake.clone(),
        config,
        shared.clone(),
        rx,
        stop.clone(),
    ));
    let synced = |rev: &'static str| {
        let shared = shared.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while shared.status().last_synced.as_deref() != Some(rev) {
                assert!(Instant::now() < deadline, "{rev} not synced");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    synced("r1").await;
    assert!(fake.app("/c").is_some());
    let before = fake.calls().len();

    revs.lock()
        .unwrap()
        .push(("r2".into(), v2, Some(paths(&["apps/a.yaml"]))));
    shared.trigger(Trigger::Webhook {
        delivery: "d".into(),
    });
    synced("r2").await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let calls: Vec<Call> = fake.calls().split_off(before);
    let pos = |c: &Call| calls.iter().position(|x| x == c);
    let get_a = pos(&Call::GetApp("/a".into())).expect("a read by id");
    let put_a = pos(&Call::PutApp("/a".into())).expect("a written");
    let list = pos(&Call::ListApps).expect("the full cycle lists");
    let del_c = pos(&Call::DeleteApp {
        id: "/c".into(),
        force: false,
    })
    .expect("c pruned by the full plan");
    assert!(get_a < put_a && put_a < list && list < del_c, "{calls:?}");
    // a is written once (the full plan finds it in sync), nothing else by the fast path.
    assert_eq!(
        calls.iter().filter(|c| c.is_write()).count(),
        2,
        "{calls:?}"
    );
    assert_eq!(fake.app("/a").unwrap()["cmd"], "a2");
    assert!(fake.app("/c").is_none());

    // What the fast path deployed is announced with the rest of the cycle: one
    // `deployment_finished` for r2 naming both the fast-synced and the pruned app.
    let mut finished = Vec::new();
    while let Ok(n) = notes.try_recv() {
        if let crate::daemon::notifications::Notification::DeploymentFinished {
            commit, apps, ..
        } = n
        {
            finished.push((commit, ids(&apps).join(",")));
        }
    }
    assert_eq!(
        finished,
        [
            (Some("r1".to_string()), "/a,/b,/c".to_string()),
            (Some("r2".to_string()), "/a,/c".to_string())
        ]
    );
}
