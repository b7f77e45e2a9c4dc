//! HA on a real ZooKeeper (Debian's `zookeeper` 3.8, started per test on a free port): three
//! `baton serve` replicas on one git repo and one dev scheduler, each reaching the scheduler
//! through its own proxy, which counts that replica's writes. Sessions of 4 s keep the tests
//! short. Skipped, with the reason printed, where java or ZooKeeper is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use baton_e2e::daemon::{sample, Daemon, DEADLINE};
use baton_e2e::devsched::DevScheduler;
use baton_e2e::freeze::FreezableProxy;
use baton_e2e::zookeeper::{self, ZooKeeper};
use nix::sys::signal::Signal;
use serde_json::Value;

const SECRET: &str = "e2e-ha";
/// The session timeout the replicas ask for (the write lease is 2/3 of it).
const SESSION: &str = "4s";

fn skip() -> bool {
    if let Some(why) = zookeeper::unavailable() {
        eprintln!("skipped: {why}");
        return true;
    }
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipped: git is not installed");
        return true;
    }
    false
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One replica: its daemon, its counting proxy, its state dir.
struct Replica {
    id: String,
    daemon: Option<Daemon>,
    proxy: FreezableProxy,
    _state: tempfile::TempDir,
}

impl Replica {
    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("replica running")
    }
}

struct Cluster {
    zk: ZooKeeper,
    sched: DevScheduler,
    tmp: tempfile::TempDir,
    replicas: Vec<Replica>,
    http: reqwest::Client,
    path: String,
}

impl Cluster {
    fn remote(&self) -> PathBuf {
        self.tmp.path().join("remote.git")
    }
    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    async fn start(replicas: usize) -> Cluster {
        let zk = ZooKeeper::start().await;
        let sched = DevScheduler::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(work.join("apps")).unwrap();
        git(
            tmp.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                remote.to_str().unwrap(),
            ],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        std::fs::write(work.join("baton.yaml"), "owner: e2e-ha\n").unwrap();
        let mut c = Cluster {
            zk,
            sched,
            tmp,
            replicas: Vec::new(),
            http: reqwest::Client::new(),
            path: format!("/baton/e2e-{}", std::process::id()),
        };
        c.commit_app("web", "sleep 600");
        for i in 0..replicas {
            let r = c.replica(&format!("r{i}")).await;
            c.replicas.push(r);
        }
        c
    }

    async fn replica(&self, id: &str) -> Replica {
        let proxy = FreezableProxy::start(&self.sched.url).await;
        let state = tempfile::tempdir().unwrap();
        let remote = self.remote();
        let zk = self.zk.connect();
        let daemon = Daemon::start(
            &[
                "--marathon".as_ref(),
                proxy.url.as_ref(),
                "--repo".as_ref(),
                remote.as_os_str(),
                "--state-dir".as_ref(),
                state.path().as_os_str(),
                // Pushes reach Baton by webhook only: a write after a push proves the hook
                // (or its relay) got to the leader.
                "--poll-interval".as_ref(),
                "1h".as_ref(),
                "--ha-zookeeper".as_ref(),
                zk.as_ref(),
                "--ha-path".as_ref(),
                self.path.as_ref(),
                "--ha-session-timeout".as_ref(),
                SESSION.as_ref(),
                "--ha-id".as_ref(),
                id.as_ref(),
            ],
            &[("BATON_WEBHOOK_SECRET", SECRET)],
        )
        .await;
        Replica {
            id: id.to_string(),
            daemon: Some(daemon),
            proxy,
            _state: state,
        }
    }

    /// Write `apps/<name>.yaml`, commit and push; returns the commit.
    fn commit_app(&self, name: &str, cmd: &str) -> String {
        let work = self.work();
        std::fs::write(
            work.join(format!("apps/{name}.yaml")),
            format!("cmd: \"{cmd}\"\ncpus: 0.01\nmem: 16\ninstances: 1\n"),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", name]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    /// A signed GitHub push hook for `commit` to replica `i`; its HTTP status.
    async fn push_hook(&self, i: usize, commit: &str, delivery: &str) -> u16 {
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        let sig = baton::daemon::hooks::sign_sha256(SECRET.as_bytes(), body.as_bytes());
        self.http
            .post(format!("{}/hooks/github", self.replicas[i].d().api))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sig)
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// `ha` of each running replica (`None` for a stopped or frozen one, or no answer).
    async fn roles(&self, skip: &[usize]) -> Vec<Option<Value>> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if skip.contains(&i) || r.daemon.is_none() {
                out.push(None);
                continue;
            }
            let st = self
                .http
                .get(format!("{}/api/status", r.d().api))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let ha = match st {
                Ok(resp) => resp.json::<Value>().await.ok().map(|v| v["ha"].clone()),
                Err(_) => None,
            };
            out.push(ha);
        }
        out
    }

    /// Wait until exactly one of the replicas not in `skip` leads and writes, and every other
    /// one of them follows it; returns the leader's index.
    async fn leader(&self, skip: &[usize]) -> usize {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let roles = self.roles(skip).await;
            let leaders: Vec<usize> = (roles.iter().enumerate())
                .filter(|(_, h)| {
                    h.as_ref()
                        .is_some_and(|h| h["role"] == "leader" && h["writing"] == true)
                })
                .map(|(i, _)| i)
                .collect();
            if let [l] = leaders[..] {
                let id = &self.replicas[l].id;
                let followers_agree = (roles.iter().enumerate())
                    .filter(|(i, _)| *i != l && !skip.contains(i))
                    .all(|(_, h)| {
                        h.as_ref().is_some_and(|h| {
                            h["role"] == "follower"
                                && h["writing"] == false
                                && h["leaderId"] == id.as_str()
                        })
                    });
                if followers_agree {
                    return l;
                }
            }
            assert!(
                tokio::time::Instant::now() < end,
                "no single leader among the replicas: {roles:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the scheduler's `/<app>` runs `cmd`.
    async fn deployed(&self, app: &str, cmd: &str) {
        let want = format!("/{app}");
        self.sched
            .wait_for(&format!("{want} running `{cmd}`"), |apps| {
                apps.iter()
                    .any(|a| a["id"] == want.as_str() && a["cmd"] == cmd)
            })
            .await;
    }

    fn writes(&self, i: usize) -> u64 {
        self.replicas[i].proxy.writes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_followers_write_nothing_and_a_follower_relays_pushes() {
    if skip() {
        return;
    }
    let c = Cluster::start(3).await;
    let l = c.leader(&[]).await;
    // The leader's takeover cycle deploys what git holds.
    c.deployed("web", "sleep 600").await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();

    // A push delivered to a follower only: the leader deploys it (the poll is hourly, so only
    // the relay through ZooKeeper can have told it).
    let commit = c.commit_app("web", "sleep 601");
    assert_eq!(c.push_hook(followers[0], &commit, "d-1").await, 202);
    c.deployed("web", "sleep 601").await;

    // The follower that received the push keeps its repo warm: it fetched the commit too.
    c.replicas[followers[0]]
        .d()
        .until_status("the follower fetched the push", |st| {
            st["lastFetched"] == commit.as_str() && st["ha"]["role"] == "follower"
        })
        .await;
    for f in &followers {
        assert_eq!(c.writes(*f), 0, "follower {} wrote", c.replicas[*f].id);
        let m = c.replicas[*f].d().metrics().await;
        assert_eq!(sample(&m, "baton_leader"), Some(0.0), "{m}");
    }
    assert!(c.writes(l) >= 2, "the leader wrote both deployments");
    let m = c.replicas[l].d().metrics().await;
    assert_eq!(sample(&m, "baton_leader"), Some(1.0), "{m}");
    assert!(
        sample(&m, "baton_leadership_changes_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "baton_seconds_since_last_election").is_some(),
        "{m}"
    );
    let st = c.replicas[l].d().status().await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    baton_e2e::assert_matches_schema(
        "status.schema.json",
        &c.replicas[followers[1]].d().status().await,
    );
    assert_eq!(st["ha"]["leaderId"], c.replicas[l].id.as_str());
    assert_eq!(st["ha"]["leaseMs"], 2666, "{st:#}");
}

/// Pushes in the kill -9 test: one every [`PUSH_EVERY`] for a minute.
const PUSHES: usize = 30;
const PUSH_EVERY: Duration = Duration::from_secs(2);
/// The leader is killed right after this push (the middle of the stream).
const KILL_AFTER: usize = PUSHES / 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_leader_during_pushes_fails_over_and_deploys_every_commit() {
    if skip() {
        return;
    }
    let mut c = Cluster::start(3).await;
    let first = c.leader(&[]).await;
    c.deployed("web", "sleep 600").await;
    // Push k adds the app `p<k>`: commit k is deployed once `p<k>` runs, labelled with commit k
    // (or a later one, when pushes arrived together and one cycle deployed them).
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<Instant>();
    let stream = async {
        let mut killed_tx = Some(killed_tx);
        let mut commits = Vec::new();
        let t0 = tokio::time::Instant::now();
        for k in 0..PUSHES {
            let commit = c.commit_app(&format!("p{k}"), "sleep 600");
            commits.push(commit.clone());
            // Delivered to every living replica, as a forge's hook behind a load balancer
            // retried on each would be.
            for i in 0..3 {
                if !(k > KILL_AFTER && i == first) {
                    c.push_hook(i, &commit, &format!("k{k}-{i}")).await;
                }
            }
            if k == KILL_AFTER {
                c.replicas[first].d().signal(Signal::SIGKILL);
                if let Some(tx) = killed_tx.take() {
                    let _ = tx.send(Instant::now());
                }
            }
            tokio::time::sleep_until(t0 + PUSH_EVERY * (k as u32 + 1)).await;
        }
        commits
    };
    // The pushes go on while the replicas fail over.
    let failover = async {
        let killed = killed_rx.await.expect("the leader was killed");
        let next = c.leader(&[first]).await;
        (next, killed.elapsed())
    };
    let began = Instant::now();
    let (commits, (next, took)) = tokio::join!(stream, failover);
    eprintln!("failover (kill -9 -> a new leader holding the lease): {took:?}");
    eprintln!("{PUSHES} pushes took {:?}", began.elapsed());
    assert_ne!(next, first);
    assert!(took < Duration::from_secs(10), "failover took {took:?}");

    // Every pushed commit deployed.
    for k in 0..PUSHES {
        c.deployed(&format!("p{k}"), "sleep 600").await;
    }
    eprintln!("all deployed {:?} after the first push", began.elapsed());
    let apps = c.sched.apps().await;
    let label = |id: &str| {
        (apps.iter().find(|a| a["id"] == id))
            .and_then(|a| a["labels"]["baton.dev/commit"].as_str())
            .map(str::to_string)
    };
    let mut exact = 0;
    for (k, commit) in commits.iter().enumerate() {
        let got = label(&format!("/p{k}"));
        let at = got
            .as_ref()
            .and_then(|g| commits.iter().position(|c| c == g));
        assert!(
            at.is_some_and(|j| j >= k),
            "/p{k} (added by commit {k}, {commit}) is labelled {got:?}, not commit {k} or later"
        );
        exact += usize::from(at == Some(k));
    }
    eprintln!("{exact} of {PUSHES} commits deployed by a cycle of their own");

    // Writes per (app, commit), over every replica: one each, but for at most one pair
    // written twice (the write in flight at the kill).
    let mut per: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for i in 0..3 {
        for w in c.replicas[i].proxy.write_log() {
            assert!(
                w.method == "PUT" && !w.apps.is_empty(),
                "replica {i} made an unexpected write: {w:?}"
            );
            for (id, commit) in w.apps {
                let key = (id.unwrap_or_default(), commit.unwrap_or_default());
                *per.entry(key).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        per.values().all(|n| *n <= 2) && twice.len() <= 1,
        "apps written more than once for one commit: {twice:?}"
    );
    for k in 0..PUSHES {
        let id = format!("/p{k}");
        assert!(
            per.keys().any(|(a, _)| *a == id),
            "no write of {id} was seen: {per:?}"
        );
    }
    assert_eq!(
        c.writes(next) + c.writes(first) + c.writes(3 - next - first),
        per.values().sum::<usize>() as u64,
        "every write was one app"
    );
    c.replicas[first].daemon = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_frozen_past_its_session_writes_nothing_when_resumed() {
    if skip() {
        return;
    }
    let c = Cluster::start(3).await;
    let old = c.leader(&[]).await;
    c.deployed("web", "sleep 600").await;
    c.replicas[old].d().signal(Signal::SIGSTOP);
    let next = c.leader(&[old]).await;
    let before = c.writes(old);
    // The new leader deploys a push (sent to it and to the frozen one, which hears it later).
    let commit = c.commit_app("web", "sleep 602");
    let status = c.push_hook(next, &commit, "f-1").await;
    assert_eq!(status, 202);
    c.deployed("web", "sleep 602").await;
    c.replicas[old].d().signal(Signal::SIGCONT);
    // Resumed, the old leader finds its session expired and follows; a push sent to it now is
    // relayed, and deployed by the new leader.
    c.replicas[old]
        .d()
        .until_status("the resumed leader follows", |st| {
            st["ha"]["role"] == "follower" && st["ha"]["leaderId"] == c.replicas[next].id.as_str()
        })
        .await;
    let commit = c.commit_app("web", "sleep 603");
    assert_eq!(c.push_hook(old, &commit, "f-2").await, 202);
    c.deployed("web", "sleep 603").await;
    assert_eq!(c.writes(old), before, "the resumed old leader wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_down_stops_every_writer_and_writing_resumes_when_it_is_back() {
    if skip() {
        return;
    }
    let mut c = Cluster::start(3).await;
    c.leader(&[]).await;
    c.deployed("web", "sleep 600").await;
    let before: Vec<u64> = (0..3).map(|i| c.writes(i)).collect();
    c.zk.stop();
    // Every replica says it does not write, and why.
    for r in &c.replicas {
        r.d()
            .until_status("no replica writes without ZooKeeper", |st| {
                st["ha"]["writing"] == false && st["ha"]["reason"].is_string()
            })
            .await;
    }
    // A push reaches every replica; each fetches it and none writes it.
    let commit = c.commit_app("web", "sleep 604");
    for i in 0..3 {
        assert_eq!(c.push_hook(i, &commit, &format!("z-{i}")).await, 202);
    }
    for r in &c.replicas {
        r.d()
            .until_status("the push was fetched", |st| {
                st["lastFetched"] == commit.as_str() && st["ha"]["writing"] == false
            })
            .await;
    }
    let during: Vec<u64> = (0..3).map(|i| c.writes(i)).collect();
    assert_eq!(during, before, "a replica wrote while ZooKeeper was down");
    assert_eq!(
        c.sched.app("/web").await.unwrap()["cmd"],
        "sleep 600",
        "the push was deployed without a leader"
    );
    c.zk.resume().await;
    let l = c.leader(&[]).await;
    // The leader's takeover (or resumed) cycle deploys what it holds.
    c.deployed("web", "sleep 604").await;
    assert!(c.writes(l) > before[l]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_claims_over_three_sessions_grant_a_task_once() {
    if zookeeper::unavailable().is_some() {
        eprintln!("skipped: {}", zookeeper::unavailable().unwrap_or_default());
        return;
    }
    let zk = ZooKeeper::start().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut grants = Vec::new();
    let mut handles = Vec::new();
    for i in 0..3 {
        let (h, _events, _task) = baton::ha::spawn(
            baton::ha::HaConfig {
                servers: zk.connect(),
                path: "/baton/grants-test".into(),
                session_timeout: Duration::from_secs(4),
                id: format!("g{i}"),
            },
            stop.child_token(),
        );
        handles.push(h.clone());
        grants.push(baton::ha::grants::Grants::new(h));
    }
    // Every session is open once each replica knows the leader.
    baton_e2e::wait_until("three sessions", DEADLINE, || {
        let hs = handles.clone();
        async move { hs.iter().all(|h| h.leadership.status().leader_id.is_some()) }
    })
    .await;
    let mut tasks = Vec::new();
    for k in 0..30 {
        let g = grants[k % 3].clone();
        tasks.push(tokio::spawn(async move { g.claim("web.task-1").await }));
    }
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap().expect("claim answered") {
            granted += 1;
        }
    }
    assert_eq!(granted, 1, "a task granted {granted} times");
    // Another task is its own claim; a released claim can be taken again, once.
    assert!(grants[1].claim("web.task-2").await.unwrap());
    assert!(!grants[2].claim("web.task-2").await.unwrap());
    grants[2].release("web.task-2").await.unwrap();
    assert!(
        !grants[0].claim("web.task-2").await.unwrap(),
        "g2 released a claim it did not hold"
    );
    grants[1].release("web.task-2").await.unwrap();
    assert!(grants[0].claim("web.task-2").await.unwrap());
    stop.cancel();
}

/// A rollout in progress at a failover (issue 18: a new leader neither replays nor forgets): the
/// state the leader wrote ahead to ZooKeeper is what the next leader resumes from, not the
/// (stale) state in its own state dir; rolled-back digests go with it; a follower cannot write it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_resumes_the_rollout_state_the_old_leader_wrote_ahead() {
    use baton::daemon::state::{RolledBack, State};
    use baton::ha::handoff::{Handoff, HandoffError};
    use baton_core::rollout::{Phase, Reason, RolloutState, Strategy, TimelineEntry};

    if let Some(why) = zookeeper::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let zk = ZooKeeper::start().await;
    let path = format!("/baton/handoff-{}", std::process::id());
    let join = |id: &str, stop: &tokio_util::sync::CancellationToken| {
        baton::ha::spawn(
            baton::ha::HaConfig {
                servers: zk.connect(),
                path: path.clone(),
                session_timeout: Duration::from_secs(4),
                id: id.to_string(),
            },
            stop.child_token(),
        )
    };
    let rollout = |commit: &str, phase: Phase| RolloutState {
        commit: commit.into(),
        digest: format!("sha256:{commit}"),
        strategy: Strategy::Canary,
        canary: "/api-canary".into(),
        started_at: "2026-01-02T03:04:05.000000".into(),
        phase,
        entered_ms: 1_000,
        window: None,
        timeline: vec![TimelineEntry {
            at_ms: 900,
            event: "canary healthy".into(),
        }],
        analysis: None,
    };
    let leading = |h: baton::ha::Handle| async move {
        baton_e2e::wait_until("a leader", DEADLINE, || {
            let h = h.clone();
            async move { h.leadership.permit().is_ok() }
        })
        .await;
    };

    let stop1 = tokio_util::sync::CancellationToken::new();
    let (h1, _e1, t1) = join("r1", &stop1);
    leading(h1.clone()).await;
    let stop2 = tokio_util::sync::CancellationToken::new();
    let (h2, _e2, _t2) = join("r2", &stop2);
    baton_e2e::wait_until("r2 follows r1", DEADLINE, || {
        let h = h2.clone();
        async move { h.leadership.status().leader_id.as_deref() == Some("r1") }
    })
    .await;

    // Replica 1 leads a rollout to its second traffic step and remembers a rolled-back digest.
    let mut ahead = State::new();
    ahead.record_success("/api", "c1");
    ahead
        .rollouts
        .insert("/api".into(), rollout("c2", Phase::Step { index: 1 }));
    ahead.apps.entry("/web".into()).or_default().rolled_back = Some(RolledBack {
        commit: "c3".into(),
        digest: "sha256:c3".into(),
        reason: Reason::CheckFailed {
            output: "HTTP 500".into(),
        },
        at_ms: 2_000,
    });
    Handoff::new(h1.clone())
        .save(&ahead)
        .await
        .expect("the leader writes ahead");

    // Replica 2's own state dir is stale: the rollout at its launch, an old rolled-back digest.
    let mut stale = State::new();
    stale
        .rollouts
        .insert("/api".into(), rollout("c2", Phase::Launch));
    stale
        .rollouts
        .insert("/gone".into(), rollout("c0", Phase::Switch));
    stale.apps.entry("/api".into()).or_default().rolled_back = Some(RolledBack {
        commit: "c0".into(),
        digest: "sha256:c0".into(),
        reason: Reason::CheckFailed {
            output: String::new(),
        },
        at_ms: 1,
    });
    let follower = Handoff::new(h2.clone());
    let refused = follower.save(&stale).await;
    assert!(
        matches!(refused, Err(HandoffError::NotLeader(_))),
        "a follower wrote the rollout state: {refused:?}"
    );

    // Replica 1 stops; replica 2 leads and takes the rollouts over.
    stop1.cancel();
    let _ = t1.await;
    leading(h2.clone()).await;
    follower
        .take_over(&mut stale)
        .await
        .expect("takeover reads ZooKeeper");
    assert_eq!(
        stale.rollouts, ahead.rollouts,
        "the new leader resumes where r1 was"
    );
    assert_eq!(
        stale.apps["/web"].rolled_back,
        ahead.apps["/web"].rolled_back
    );
    assert_eq!(
        stale.apps["/api"].rolled_back, None,
        "a stale rolled-back digest stays"
    );
    stop2.cancel();
}

/// The numbers of docs/benchmarks.md ("HA on ZooKeeper"): failover over 10 kills (kill -9 of
/// the leader -> the new leader's first write), push -> deployed through a follower and through
/// the leader, and ZooKeeper requests. `cargo test -p baton-e2e --test e2e ha::bench --
/// --ignored --nocapture` (scripts/bench-ha.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by scripts/bench-ha.sh"]
async fn bench() {
    if skip() {
        return;
    }
    let mut c = Cluster::start(3).await;
    c.leader(&[]).await;
    c.deployed("web", "sleep 600").await;
    let mut n = 0u32;
    let mut next_cmd = || {
        n += 1;
        format!("sleep {}", 700 + n)
    };

    // ZooKeeper requests: idle (heartbeats and pings of three replicas), then per push cycle.
    let r0 = c.zk.received().unwrap();
    let idle = Duration::from_secs(20);
    tokio::time::sleep(idle).await;
    let r1 = c.zk.received().unwrap();
    let l = c.leader(&[]).await;
    let f = (l + 1) % 3;
    let pushes = 5;
    let mut via_leader = Vec::new();
    for k in 0..pushes {
        let cmd = next_cmd();
        let commit = c.commit_app("web", &cmd);
        let t = Instant::now();
        c.push_hook(l, &commit, &format!("bl-{k}")).await;
        c.deployed("web", &cmd).await;
        via_leader.push(t.elapsed());
    }
    let r2 = c.zk.received().unwrap();
    let mut via_follower = Vec::new();
    for k in 0..pushes {
        let cmd = next_cmd();
        let commit = c.commit_app("web", &cmd);
        let t = Instant::now();
        c.push_hook(f, &commit, &format!("bf-{k}")).await;
        c.deployed("web", &cmd).await;
        via_follower.push(t.elapsed());
    }
    let r3 = c.zk.received().unwrap();
    eprintln!(
        "zookeeper packets: idle {:.2}/s for 3 replicas; {:.1} per push cycle through the leader (incl. idle traffic), {:.1} through a follower",
        (r1 - r0) as f64 / idle.as_secs_f64(),
        (r2 - r1) as f64 / pushes as f64,
        (r3 - r2) as f64 / pushes as f64
    );
    eprintln!("push -> deployed via the leader: {via_leader:?}");
    eprintln!("push -> deployed via a follower: {via_follower:?}");

    // Failover: kill -9 the leader right after a push; measure until the new leader's first
    // write (it deploys the push). A fresh replica replaces the dead one each round.
    let mut failovers = Vec::new();
    for round in 0..10 {
        let l = c.leader(&[]).await;
        let before: Vec<u64> = (0..3).map(|i| c.writes(i)).collect();
        let cmd = next_cmd();
        let commit = c.commit_app("web", &cmd);
        c.replicas[l].d().signal(Signal::SIGKILL);
        let killed = Instant::now();
        for i in (0..3).filter(|i| *i != l) {
            c.push_hook(i, &commit, &format!("kill-{round}-{i}")).await;
        }
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if (0..3).any(|i| i != l && c.writes(i) > before[i]) {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "no write after the kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failovers.push(killed.elapsed());
        c.deployed("web", &cmd).await;
        let id = format!("r{}", 3 + round);
        c.replicas[l].daemon = None;
        let fresh = c.replica(&id).await;
        c.replicas[l] = fresh;
    }
    failovers.sort();
    eprintln!("failover kill -9 -> first write by the new leader, sorted: {failovers:?}");
    eprintln!(
        "failover min {:?} median {:?} max {:?}",
        failovers[0],
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
}
