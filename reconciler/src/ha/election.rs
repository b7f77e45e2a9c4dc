//! The ZooKeeper side of HA: one session per replica, the leader election (the standard
//! recipe: each replica creates an ephemeral sequential znode under `<path>/election`; the
//! lowest leads; every other one watches only its predecessor, so a leader's death wakes one
//! replica, not all), the leader's heartbeat that keeps its write lease
//! ([`super::lease`]), and the push relay (`<path>/push`: a follower that receives a webhook
//! sets its data; the leader watches it and starts a push cycle).
//!
//! A session that expires, or that cannot be opened, demotes the replica at once; the task
//! then opens a new session and joins the election again (a new znode, at the back).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use super::{lease_bound, HaConfig, HaError, Leadership};

/// The election's children live here (`n-<sequence>`, data: the replica's id).
pub const ELECTION: &str = "election";
/// Followers relay pushes here; the leader watches it.
pub const PUSH: &str = "push";
/// Secret zero's granted task ids ([`super::grants`]).
pub const GRANTS: &str = "grants";
/// The leader's rollout state ([`super::handoff`]).
pub const ROLLOUTS: &str = "rollouts";

/// What the election tells the rest of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This replica was just elected: run a full cycle now (takeover is one cycle).
    Elected,
    /// A follower relayed a push (to the leader only): start a push cycle.
    Push(String),
}

type Hooks = mpsc::UnboundedSender<Event>;

/// What the rest of the daemon holds of HA.
#[derive(Debug, Clone)]
pub struct Handle {
    pub leadership: Arc<Leadership>,
    relay: mpsc::Sender<String>,
    /// The current session's client (`None` while there is none): secret zero's grants use it.
    pub(super) client: watch::Receiver<Option<zk::Client>>,
    pub(super) path: String,
    pub(super) request_timeout: Duration,
}

impl Handle {
    /// A follower received a verified push: tell the leader (best effort; the leader's poll is
    /// the safety net). Bounded: pushes beyond the queue are dropped, one is enough to wake it.
    pub fn relay_push(&self, delivery: &str) {
        let _ = self.relay.try_send(delivery.chars().take(200).collect());
    }
}

/// Start the election task; it runs until `shutdown`, then closes its session (its znode goes
/// at once: a clean stop hands over without waiting for a session timeout).
pub fn spawn(
    config: HaConfig,
    shutdown: CancellationToken,
) -> (
    Handle,
    mpsc::UnboundedReceiver<Event>,
    tokio::task::JoinHandle<()>,
) {
    let (hooks, events) = mpsc::unbounded_channel();
    let leadership = Arc::new(Leadership::new(&config));
    let (relay, relay_rx) = mpsc::channel(16);
    let (client_tx, client_rx) = watch::channel(None);
    let handle = Handle {
        leadership: leadership.clone(),
        relay,
        client: client_rx,
        path: config.path.clone(),
        request_timeout: lease_bound(config.session_timeout),
    };
    let task = tokio::spawn(run(
        config, leadership, hooks, relay_rx, client_tx, shutdown,
    ));
    (handle, events, task)
}

async fn run(
    config: HaConfig,
    leadership: Arc<Leadership>,
    hooks: Hooks,
    mut relay: mpsc::Receiver<String>,
    client_slot: watch::Sender<Option<zk::Client>>,
    shutdown: CancellationToken,
) {
    let mut session = Session {
        config: &config,
        leadership: &leadership,
        hooks: &hooks,
        relay: &mut relay,
        client_slot: &client_slot,
        shutdown: &shutdown,
    };
    loop {
        let result = session.run().await;
        client_slot.send_replace(None);
        if shutdown.is_cancelled() {
            leadership.lost("shutting down".into());
            break;
        }
        let reason = match result {
            Ok(()) => "the ZooKeeper session ended".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(reason = %reason, "HA: not leading; joining the election again");
        leadership.lost(reason);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    tracing::info!("HA: election task stopped");
}

struct Session<'a> {
    config: &'a HaConfig,
    leadership: &'a Leadership,
    hooks: &'a Hooks,
    relay: &'a mut mpsc::Receiver<String>,
    client_slot: &'a watch::Sender<Option<zk::Client>>,
    shutdown: &'a CancellationToken,
}

/// One ZooKeeper request, bounded: a request on a dead connection never hangs the task.
async fn bounded<T>(
    op: &'static str,
    path: &str,
    after: Duration,
    fut: impl Future<Output = Result<T, zk::Error>>,
) -> Result<T, HaError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(HaError::Zk {
            op,
            path: path.to_string(),
            source,
        }),
        Err(_) => Err(HaError::Timeout {
            op,
            path: path.to_string(),
            after,
        }),
    }
}

/// Create `path` and its parents as persistent znodes (existing is fine).
pub(super) async fn ensure(
    client: &zk::Client,
    path: &str,
    after: Duration,
) -> Result<(), HaError> {
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match bounded("mkdir", path, after, client.mkdir(path, &options)).await {
        Ok(()) => Ok(()),
        Err(HaError::Zk {
            source: zk::Error::NodeExists,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The sequence number of an election child (`n-0000000042`), for ordering.
fn sequence(child: &str) -> Option<i64> {
    child.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), HaError> {
        let c = self.config;
        let connect = zk::Client::connector()
            .with_session_timeout(c.session_timeout)
            .connect(&c.servers);
        let client = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(c.session_timeout, connect) => match r {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(HaError::Connect { servers: c.servers.clone(), reason: e.to_string() }),
                Err(_) => return Err(HaError::Connect { servers: c.servers.clone(), reason: format!("no session within {:?}", c.session_timeout) }),
            },
        };
        let timeout = client.session_timeout();
        self.leadership.set_session_timeout(timeout);
        let bound = lease_bound(timeout);
        tracing::info!(zookeeper = %c.servers, path = %c.path, session_timeout = ?timeout, lease = ?bound, id = %c.id, "HA: ZooKeeper session open");
        let election = format!("{}/{ELECTION}", c.path);
        for p in [
            &election,
            &format!("{}/{PUSH}", c.path),
            &format!("{}/{GRANTS}", c.path),
        ] {
            ensure(&client, p, bound).await?;
        }
        self.client_slot.send_replace(Some(client.clone()));
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let prefix = format!("{election}/n-");
        let (_, seq) = bounded(
            "create",
            &prefix,
            bound,
            client.create(&prefix, c.id.as_bytes(), &options),
        )
        .await?;
        let me = format!("n-{seq}");
        let result = self.elect(&client, &election, &me, bound).await;
        // Best effort: a clean exit removes the znode now (closing the session would too).
        let mine = format!("{election}/{me}");
        let _ = tokio::time::timeout(Duration::from_secs(1), client.delete(&mine, None)).await;
        result
    }

    /// Look at the election until this replica leads (then lead) or the session ends.
    async fn elect(
        &mut self,
        client: &zk::Client,
        election: &str,
        me: &str,
        bound: Duration,
    ) -> Result<(), HaError> {
        let mut state = client.state_watcher();
        loop {
            let sent = Instant::now();
            let mut children =
                bounded("list", election, bound, client.list_children(election)).await?;
            children.sort_by_key(|k| sequence(k));
            let Some(pos) = children.iter().position(|k| k == me) else {
                return Err(HaError::SessionEnded(
                    "this replica's election znode is gone".into(),
                ));
            };
            if pos == 0 {
                if self.leadership.elected(sent) {
                    tracing::info!(id = %self.config.id, "HA: elected leader");
                    let _ = self.hooks.send(Event::Elected);
                }
                return self
                    .lead(client, &format!("{election}/{me}"), bound, &mut state)
                    .await;
            }
            let leader_path = format!("{election}/{}", children[0]);
            let leader = bounded("get", &leader_path, bound, client.get_data(&leader_path))
                .await
                .ok()
                .map(|(d, _)| String::from_utf8_lossy(&d).into_owned());
            if self.leadership.leading() || self.leadership.status().leader_id != leader {
                tracing::info!(leader = leader.as_deref().unwrap_or("?"), "HA: following");
            }
            self.leadership.follow(leader);
            // Watch the predecessor (the recipe) and the leader (for `leaderId`).
            let pred = format!("{election}/{}", children[pos - 1]);
            let (stat, pred_watch) =
                bounded("watch", &pred, bound, client.check_and_watch_stat(&pred)).await?;
            if stat.is_none() {
                continue;
            }
            let (lstat, leader_watch) = bounded(
                "watch",
                &leader_path,
                bound,
                client.check_and_watch_stat(&leader_path),
            )
            .await?;
            if lstat.is_none() {
                continue;
            }
            let mut pred_changed = Box::pin(pred_watch.changed());
            let mut leader_changed = Box::pin(leader_watch.changed());
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = &mut pred_changed => break,
                    _ = &mut leader_changed => break,
                    s = state.changed() => match s {
                        zk::SessionState::Disconnected => {
                            self.leadership.lost("ZooKeeper is unreachable (disconnected); the leader is not known".into());
                        }
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => break,
                        other => return Err(HaError::SessionEnded(format!("{other:?}"))),
                    },
                    Some(delivery) = self.relay.recv() => {
                        self.relay_push(client, &delivery, bound).await;
                    }
                }
            }
        }
    }

    /// Bump `<path>/push` so that the leader starts a push cycle.
    async fn relay_push(&self, client: &zk::Client, delivery: &str, bound: Duration) {
        let path = format!("{}/{PUSH}", self.config.path);
        let data = format!("{} {delivery}", self.config.id);
        match bounded(
            "set",
            &path,
            bound,
            client.set_data(&path, data.as_bytes(), None),
        )
        .await
        {
            Ok(_) => tracing::info!(delivery, "HA: push relayed to the leader"),
            Err(e) => {
                tracing::warn!(error = %e, "HA: cannot relay the push to the leader (its poll will find it)")
            }
        }
    }

    /// Lead until the session ends or shutdown: confirm the session every quarter of the
    /// lease (each answer extends the lease from when its request was sent), watch the push
    /// relay.
    async fn lead(
        &mut self,
        client: &zk::Client,
        mine: &str,
        bound: Duration,
        state: &mut zk::StateWatcher,
    ) -> Result<(), HaError> {
        let push = format!("{}/{PUSH}", self.config.path);
        let beat = (bound / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, _, w) = bounded("watch", &push, bound, client.get_and_watch_data(&push)).await?;
        let mut push_changed = Box::pin(w.changed());
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let sent = Instant::now();
                    match bounded("heartbeat", mine, bound, client.check_stat(mine)).await {
                        Ok(Some(_)) => self.leadership.confirmed(sent),
                        Ok(None) => return Err(HaError::SessionEnded("the leader's election znode is gone".into())),
                        Err(HaError::Zk { source: zk::Error::SessionExpired, .. }) => {
                            return Err(HaError::SessionEnded("session expired".into()))
                        }
                        Err(e) => {
                            // No answer: the lease runs out by itself.
                            tracing::warn!(error = %e, "HA: leader heartbeat failed");
                            self.leadership.suspend(format!("the leader's ZooKeeper session is not confirmed: {e}"));
                        }
                    }
                }
                s = state.changed() => match s {
                    zk::SessionState::Disconnected => {
                        tracing::warn!("HA: disconnected from ZooKeeper: not writing until the session is confirmed");
                        self.leadership.suspend("ZooKeeper is unreachable (disconnected): the leader stopped writing".into());
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => tick.reset_immediately(),
                    other => return Err(HaError::SessionEnded(format!("{other:?}"))),
                },
                _ = &mut push_changed => {
                    let (data, _, w) = bounded("watch", &push, bound, client.get_and_watch_data(&push)).await?;
                    push_changed = Box::pin(w.changed());
                    let delivery = String::from_utf8_lossy(&data).into_owned();
                    tracing::info!(relayed = %delivery, "HA: a follower relayed a push");
                    let _ = self.hooks.send(Event::Push(delivery));
                }
                Some(_) = self.relay.recv() => {
                    // The leader's own webhook: its loop has the push already.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_sort_by_sequence() {
        let mut c = vec![
            "n-0000000010".to_string(),
            "n-0000000009".into(),
            "n-0000000100".into(),
        ];
        c.sort_by_key(|k| sequence(k));
        assert_eq!(c, ["n-0000000009", "n-0000000010", "n-0000000100"]);
    }
}
