//! Rollout state handed over at a failover: under HA the leader keeps the rollouts in progress
//! and the rolled-back definitions (`State.rollouts`, `AppState.rolled_back`) in one znode,
//! `<path>/rollouts`, written ahead of every rollout write like the state file (and only with a
//! write permit); a replica that is elected reads it before its first cycle or rollout tick, so
//! a new leader resumes each rollout where the old one was (no step replayed from the start, no
//! rollout forgotten, no rolled-back definition rolled out again).
//!
//! Size: one JSON document, bounded by [`MAX_BYTES`] (ZooKeeper refuses a znode over about
//! 1 MB). Above it the timelines are cut to their last entry (a WARN says so); still above it,
//! the write is refused with an error naming both sizes, and the tick that needed it writes
//! nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use super::election::{Handle, ROLLOUTS};
use super::HaError;
use baton_core::cycle::state::{RolledBack, State};
use baton_core::rollout::RolloutState;

/// The most the document may take (ZooKeeper's default `jute.maxbuffer` is 1 MiB, request
/// framing included).
pub const MAX_BYTES: usize = 768 * 1024;
/// The document's format.
pub const VERSION: u32 = 1;

/// What is handed over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutHandoff {
    pub version: u32,
    /// Rollouts in progress, per stable app id.
    pub rollouts: BTreeMap<String, RolloutState>,
    /// The last rolled-back rollout of each app that has one.
    pub rolled_back: BTreeMap<String, RolledBack>,
}

/// Why the handoff could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Ha(#[from] HaError),
    #[error("not writing the rollout state to ZooKeeper: {0}")]
    NotLeader(String),
    #[error("the rollout state is {size} bytes, more than the {max} bytes it may take in ZooKeeper ({path}); finish or abort rollouts")]
    TooLarge {
        path: String,
        size: usize,
        max: usize,
    },
    #[error("the rollout state in ZooKeeper ({path}) is not valid: {message}")]
    Format { path: String, message: String },
}

impl RolloutHandoff {
    /// What of `state` is handed over.
    pub fn of(state: &State) -> Self {
        RolloutHandoff {
            version: VERSION,
            rollouts: state.rollouts.clone(),
            rolled_back: (state.apps.iter())
                .filter_map(|(app, a)| Some((app.clone(), a.rolled_back.clone()?)))
                .collect(),
        }
    }

    /// Replace what `state` knows of rollouts by this (the leader's word).
    pub fn adopt(self, state: &mut State) {
        state.rollouts = self.rollouts;
        for (app, a) in state.apps.iter_mut() {
            a.rolled_back = self.rolled_back.get(app).cloned();
        }
        for (app, rb) in self.rolled_back {
            state.apps.entry(app).or_default().rolled_back = Some(rb);
        }
    }

    /// The bytes to store, within [`MAX_BYTES`] (see the module documentation).
    pub fn encode(&self, path: &str) -> Result<Vec<u8>, HandoffError> {
        let format = |e: serde_json::Error| HandoffError::Format {
            path: path.to_string(),
            message: e.to_string(),
        };
        let bytes = serde_json::to_vec(self).map_err(format)?;
        if bytes.len() <= MAX_BYTES {
            return Ok(bytes);
        }
        let mut cut = self.clone();
        for rs in cut.rollouts.values_mut() {
            let keep = rs.timeline.len().saturating_sub(1);
            rs.timeline.drain(..keep);
        }
        let short = serde_json::to_vec(&cut).map_err(format)?;
        if short.len() <= MAX_BYTES {
            tracing::warn!(
                size = bytes.len(),
                max = MAX_BYTES,
                "HA: the rollout state is too large for ZooKeeper: rollout timelines cut to their last entry there"
            );
            return Ok(short);
        }
        Err(HandoffError::TooLarge {
            path: path.to_string(),
            size: short.len(),
            max: MAX_BYTES,
        })
    }
}

/// The leader's rollout state in ZooKeeper.
#[derive(Debug, Clone)]
pub struct Handoff {
    handle: Handle,
}

impl Handoff {
    pub fn new(handle: Handle) -> Self {
        Handoff { handle }
    }

    /// This replica's election count: a change means a new term (load again).
    pub fn term(&self) -> u64 {
        self.handle.leadership.status().leadership_changes
    }

    /// Whether this replica is the elected leader.
    pub fn leading(&self) -> bool {
        self.handle.leadership.leading()
    }

    fn path(&self) -> String {
        format!("{}/{ROLLOUTS}", self.handle.path)
    }

    fn client(&self) -> Result<zk::Client, HaError> {
        self.handle
            .client
            .borrow()
            .clone()
            .ok_or_else(|| HaError::SessionEnded("no ZooKeeper session".into()))
    }

    /// Write `state`'s rollouts, only with a write permit (a stale leader's session is also
    /// refused by ZooKeeper itself once expired).
    pub async fn save(&self, state: &State) -> Result<(), HandoffError> {
        let path = self.path();
        let bytes = RolloutHandoff::of(state).encode(&path)?;
        self.handle
            .leadership
            .permit()
            .map_err(|e| HandoffError::NotLeader(e.reason))?;
        let client = self.client()?;
        let after = self.handle.request_timeout;
        let zk_err = |op, source| HaError::Zk {
            op,
            path: path.clone(),
            source,
        };
        let timeout = |op| HaError::Timeout {
            op,
            path: path.clone(),
            after,
        };
        match tokio::time::timeout(after, client.set_data(&path, &bytes, None)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(zk::Error::NoNode)) => {}
            Ok(Err(e)) => return Err(zk_err("set", e).into()),
            Err(_) => return Err(timeout("set").into()),
        }
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        match tokio::time::timeout(after, client.create(&path, &bytes, &options)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(zk_err("create", e).into()),
            Err(_) => Err(timeout("create").into()),
        }
    }

    /// The handed-over state; `None` when no leader ever wrote one.
    pub async fn load(&self) -> Result<Option<RolloutHandoff>, HandoffError> {
        let path = self.path();
        let client = self.client()?;
        let after = self.handle.request_timeout;
        let data = match tokio::time::timeout(after, client.get_data(&path)).await {
            Ok(Ok((data, _))) => data,
            Ok(Err(zk::Error::NoNode)) => return Ok(None),
            Ok(Err(source)) => {
                return Err(HaError::Zk {
                    op: "get",
                    path,
                    source,
                }
                .into())
            }
            Err(_) => {
                return Err(HaError::Timeout {
                    op: "get",
                    path,
                    after,
                }
                .into())
            }
        };
        let doc: RolloutHandoff =
            serde_json::from_slice(&data).map_err(|e| HandoffError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if doc.version != VERSION {
            return Err(HandoffError::Format {
                path,
                message: format!("version {} (this baton reads {VERSION})", doc.version),
            });
        }
        Ok(Some(doc))
    }

    /// On takeover: replace `state`'s rollouts by the handed-over ones; when none was ever
    /// handed over (HA just turned on), hand over this replica's own.
    pub async fn take_over(&self, state: &mut State) -> Result<(), HandoffError> {
        match self.load().await? {
            Some(doc) => {
                tracing::info!(
                    rollouts = doc.rollouts.len(),
                    "HA: rollout state taken over from ZooKeeper"
                );
                doc.adopt(state);
                Ok(())
            }
            None => self.save(state).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled(commit: &str) -> RolledBack {
        RolledBack {
            commit: commit.into(),
            digest: "sha256:d".into(),
            reason: baton_core::rollout::Reason::CheckFailed {
                output: "x".repeat(100),
            },
            at_ms: 1,
        }
    }

    #[test]
    fn adopt_replaces_rolled_back_digests_and_keeps_the_rest() {
        let mut mine = State::new();
        mine.record_success("/a", "c1");
        mine.apps.get_mut("/a").unwrap().rolled_back = Some(rolled("stale"));
        let mut theirs = State::new();
        theirs.apps.entry("/b".into()).or_default().rolled_back = Some(rolled("c2"));
        RolloutHandoff::of(&theirs).adopt(&mut mine);
        assert_eq!(mine.apps["/a"].rolled_back, None);
        assert_eq!(mine.apps["/a"].last_applied.as_deref(), Some("c1"));
        assert_eq!(mine.apps["/b"].rolled_back, Some(rolled("c2")));
    }

    #[test]
    fn a_state_over_the_bound_is_refused_with_both_sizes() {
        let mut s = State::new();
        for i in 0..10_000 {
            s.apps.entry(format!("/app-{i}")).or_default().rolled_back = Some(rolled("c"));
        }
        let err = RolloutHandoff::of(&s)
            .encode("/baton/x/rollouts")
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HandoffError::TooLarge { size, .. } if size > MAX_BYTES));
        assert!(
            msg.contains(&MAX_BYTES.to_string()) && msg.contains("/baton/x/rollouts"),
            "{msg}"
        );
    }
}
