//! Who leads, as this replica knows it, and the write permit.
//!
//! **Fencing invariant: a replica writes only while it holds a permit, and it holds one only
//! while it is the elected leader and ZooKeeper answered it, on its session, less than
//! [`lease_bound`] (two thirds of the session timeout) after the request was sent.** ZooKeeper
//! expires a session only after a full session timeout without hearing from its client, and
//! the next leader is elected only after that expiry deleted the old leader's znode; so a
//! leader that is frozen, partitioned or cut off from ZooKeeper stops writing at least a third
//! of a session timeout before anyone else can start. (The third is the margin for the write
//! already in flight and for clock-rate differences; the times here are monotonic.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long one confirmation of the session lets the leader write: two thirds of the
/// negotiated session timeout.
pub fn lease_bound(session_timeout: Duration) -> Duration {
    session_timeout.saturating_mul(2) / 3
}

/// This replica's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No `--ha-zookeeper`: the only replica, always writing.
    Standalone,
    Leader,
    /// Elected elsewhere, or not (yet) elected, or ZooKeeper cannot be reached.
    Follower,
}

/// Proof that a write may go out now: only [`Leadership::permit`] makes one. Ask for it right
/// before each write, never keep it.
#[derive(Debug)]
pub struct WritePermit {
    _private: (),
}

/// Why no permit: shown in errors and in `/api/status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not written: this replica does not hold the write lease ({reason})")]
pub struct NotLeader {
    pub reason: String,
}

/// `ha` in `/api/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaStatus {
    pub role: Role,
    /// The elected leader's id, as the last look at the election saw it (`None`: standalone,
    /// or unknown while ZooKeeper cannot be reached).
    pub leader_id: Option<String>,
    /// This replica's id (`None`: standalone).
    pub id: Option<String>,
    /// Whether this replica may write now (the permit, see the module doc).
    pub writing: bool,
    /// Why it may not, when it may not (follower, lease expired, ZooKeeper unreachable).
    pub reason: Option<String>,
    /// The ZooKeeper connect string and the group's path (`None`: standalone).
    pub zookeeper: Option<String>,
    pub path: Option<String>,
    /// The negotiated session timeout and the write lease derived from it (ms).
    pub session_timeout_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    /// Times this replica became leader or stopped being leader.
    pub leadership_changes: u64,
    /// Milliseconds since this replica last saw an election (its own role changed, or another
    /// replica became leader; `None`: never).
    pub since_last_election_ms: Option<u64>,
}

impl HaStatus {
    pub fn standalone() -> Self {
        HaStatus {
            role: Role::Standalone,
            leader_id: None,
            id: None,
            writing: true,
            reason: None,
            zookeeper: None,
            path: None,
            session_timeout_ms: None,
            lease_ms: None,
            leadership_changes: 0,
            since_last_election_ms: None,
        }
    }
}

impl Default for HaStatus {
    fn default() -> Self {
        HaStatus::standalone()
    }
}

#[derive(Debug)]
struct State {
    leading: bool,
    leader_id: Option<String>,
    /// When the last request ZooKeeper answered on this session was sent (leader only).
    confirmed_sent_at: Option<Instant>,
    reason: Option<String>,
    session_timeout: Duration,
    changes: u64,
    last_change: Option<Instant>,
}

/// The shared leadership record: written by the election task, read by every writer (the
/// permit), the status and the metrics.
#[derive(Debug)]
pub struct Leadership {
    id: String,
    zookeeper: String,
    path: String,
    state: Mutex<State>,
}

impl Leadership {
    pub fn new(config: &super::HaConfig) -> Self {
        Leadership {
            id: config.id.clone(),
            zookeeper: config.servers.clone(),
            path: config.path.clone(),
            state: Mutex::new(State {
                leading: false,
                leader_id: None,
                confirmed_sent_at: None,
                reason: Some("not elected yet: connecting to ZooKeeper".into()),
                session_timeout: config.session_timeout,
                changes: 0,
                last_change: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A permit to write now, or why not.
    pub fn permit(&self) -> Result<WritePermit, NotLeader> {
        self.permit_at(Instant::now())
    }

    /// [`Leadership::permit`] at `now`.
    pub fn permit_at(&self, now: Instant) -> Result<WritePermit, NotLeader> {
        let s = self.lock();
        let why = |reason: &str| NotLeader {
            reason: reason.to_string(),
        };
        if !s.leading {
            return Err(why(s.reason.as_deref().unwrap_or("a follower")));
        }
        let bound = lease_bound(s.session_timeout);
        match s.confirmed_sent_at {
            Some(t) if now.saturating_duration_since(t) < bound => Ok(WritePermit { _private: () }),
            _ => Err(why(&format!(
                "the leader's ZooKeeper session was not confirmed within {bound:?}"
            ))),
        }
    }

    /// Whether this replica is the elected leader (lease or not): the loop runs a writing
    /// cycle only then, and every write still asks for a permit.
    pub fn leading(&self) -> bool {
        self.lock().leading
    }

    /// The session's negotiated timeout.
    pub fn set_session_timeout(&self, timeout: Duration) {
        self.lock().session_timeout = timeout;
    }

    /// Elected: the look at the election sent at `sent_at` showed this replica first.
    /// `true` when this is a change.
    pub fn elected(&self, sent_at: Instant) -> bool {
        let mut s = self.lock();
        s.leader_id = Some(self.id.clone());
        s.reason = None;
        s.confirmed_sent_at = Some(sent_at);
        let changed = !s.leading;
        if changed {
            s.leading = true;
            s.changes += 1;
            s.last_change = Some(Instant::now());
        }
        changed
    }

    /// ZooKeeper answered a request of the leader's session sent at `sent_at`.
    pub fn confirmed(&self, sent_at: Instant) {
        let mut s = self.lock();
        if s.leading && s.confirmed_sent_at.is_none_or(|t| t < sent_at) {
            s.confirmed_sent_at = Some(sent_at);
        }
    }

    /// Someone else leads (`leader`, when known).
    pub fn follow(&self, leader: Option<String>) {
        let mut s = self.lock();
        let reason = match &leader {
            Some(l) => format!("a follower: {l} leads"),
            None => "a follower: the leader is not known yet".to_string(),
        };
        self.demote(&mut s, reason);
        if leader.is_some() && s.leader_id != leader {
            // Another replica was elected: the time since the last election restarts.
            s.last_change = Some(Instant::now());
        }
        s.leader_id = leader;
    }

    /// This replica cannot tell who leads (ZooKeeper unreachable, session lost): it stops
    /// writing at once.
    pub fn lost(&self, reason: String) {
        let mut s = self.lock();
        self.demote(&mut s, reason);
        s.leader_id = None;
    }

    /// The session is disconnected but may come back: a leader stops writing now (it may
    /// resume once its session is confirmed again, if it still leads).
    pub fn suspend(&self, reason: String) {
        let mut s = self.lock();
        s.confirmed_sent_at = None;
        s.reason = Some(reason);
    }

    fn demote(&self, s: &mut State, reason: String) {
        if s.leading {
            s.leading = false;
            s.changes += 1;
            s.last_change = Some(Instant::now());
        }
        s.confirmed_sent_at = None;
        s.reason = Some(reason);
    }

    pub fn status(&self) -> HaStatus {
        let now = Instant::now();
        let writing = self.permit_at(now);
        let s = self.lock();
        let role = if s.leading {
            Role::Leader
        } else {
            Role::Follower
        };
        HaStatus {
            role,
            leader_id: s.leader_id.clone(),
            id: Some(self.id.clone()),
            writing: writing.is_ok(),
            reason: writing.err().map(|e| e.reason),
            zookeeper: Some(self.zookeeper.clone()),
            path: Some(self.path.clone()),
            session_timeout_ms: Some(s.session_timeout.as_millis() as u64),
            lease_ms: Some(lease_bound(s.session_timeout).as_millis() as u64),
            leadership_changes: s.changes,
            since_last_election_ms: s
                .last_change
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
        }
    }

    /// `/metrics` lines: `baton_leader`, `baton_leadership_changes_total`,
    /// `baton_seconds_since_last_election`.
    pub fn prometheus(&self) -> String {
        let st = self.status();
        let mut out = String::new();
        out.push_str("# HELP baton_leader 1 while this replica is the elected leader and holds the write lease.\n# TYPE baton_leader gauge\n");
        out.push_str(&format!("baton_leader {}\n", u8::from(st.writing)));
        out.push_str("# HELP baton_leadership_changes_total Times this replica became or stopped being the leader.\n# TYPE baton_leadership_changes_total counter\n");
        out.push_str(&format!(
            "baton_leadership_changes_total {}\n",
            st.leadership_changes
        ));
        if let Some(ms) = st.since_last_election_ms {
            out.push_str("# HELP baton_seconds_since_last_election Seconds since this replica last saw an election.\n# TYPE baton_seconds_since_last_election gauge\n");
            out.push_str(&format!(
                "baton_seconds_since_last_election {:.3}\n",
                ms as f64 / 1e3
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(timeout: Duration) -> Leadership {
        Leadership::new(&crate::ha::HaConfig {
            servers: "127.0.0.1:2181".into(),
            path: "/baton/t".into(),
            session_timeout: timeout,
            id: "a".into(),
        })
    }

    #[test]
    fn the_lease_is_two_thirds_of_the_session_timeout() {
        assert_eq!(lease_bound(Duration::from_secs(6)), Duration::from_secs(4));
        assert_eq!(
            lease_bound(Duration::from_secs(30)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn a_follower_has_no_permit() {
        let l = leadership(Duration::from_secs(6));
        assert!(l.permit().is_err());
        l.follow(Some("b".into()));
        let e = l.permit().unwrap_err();
        assert!(e.reason.contains("b leads"), "{e}");
        assert!(
            l.status().since_last_election_ms.is_some(),
            "a follower saw an election"
        );
        assert_eq!(
            l.status().leadership_changes,
            0,
            "but did not change its own role"
        );
        assert_eq!(l.status().role, Role::Follower);
        assert_eq!(l.status().leader_id.as_deref(), Some("b"));
    }

    #[test]
    fn a_leader_writes_only_within_the_lease_of_its_last_confirmation() {
        let l = leadership(Duration::from_secs(6));
        let t0 = Instant::now();
        assert!(l.elected(t0));
        assert!(l.permit_at(t0 + Duration::from_millis(3_999)).is_ok());
        // No confirmation for two thirds of the session timeout: no permit, though it still
        // believes it leads (the server has not expired the session yet).
        assert!(l.permit_at(t0 + Duration::from_secs(4)).is_err());
        assert!(l.leading());
        l.confirmed(t0 + Duration::from_secs(3));
        assert!(l.permit_at(t0 + Duration::from_millis(6_999)).is_ok());
        // An older answer never extends the lease.
        l.confirmed(t0);
        assert!(l.permit_at(t0 + Duration::from_millis(6_999)).is_ok());
        assert!(l.permit_at(t0 + Duration::from_secs(7)).is_err());
    }

    #[test]
    fn a_disconnected_leader_stops_at_once_and_resumes_when_confirmed() {
        let l = leadership(Duration::from_secs(6));
        let t0 = Instant::now();
        l.elected(t0);
        l.suspend("ZooKeeper disconnected".into());
        let e = l.permit_at(t0).unwrap_err();
        assert!(e.reason.contains("not confirmed"), "{e}");
        l.confirmed(t0 + Duration::from_secs(1));
        assert!(l.permit_at(t0 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn losing_the_session_demotes_and_counts_a_change() {
        let l = leadership(Duration::from_secs(6));
        let t0 = Instant::now();
        l.elected(t0);
        assert!(!l.elected(t0), "re-electing the leader is no change");
        l.lost("session expired".into());
        assert!(!l.leading());
        let st = l.status();
        assert_eq!((st.role, st.leadership_changes), (Role::Follower, 2));
        assert_eq!(st.reason.as_deref(), Some("session expired"));
        assert!(l.prometheus().contains("baton_leader 0\n"));
        assert!(l
            .prometheus()
            .contains("baton_leadership_changes_total 2\n"));
        // A confirmation after the loss gives nothing.
        l.confirmed(t0 + Duration::from_secs(1));
        assert!(l.permit_at(t0 + Duration::from_secs(2)).is_err());
    }
}
