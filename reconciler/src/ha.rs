//! High availability on ZooKeeper (`baton serve --ha-zookeeper`, docs/ha.md): several replicas,
//! one writer.
//!
//! - [`lease`]: who leads as this replica knows it, and the **write permit**: a leader may
//!   write only while ZooKeeper confirmed its session less than [`lease_bound`] ago. Pure
//!   bookkeeping (the clock comes in as an argument where it matters).
//! - [`election`]: the ZooKeeper side: the standard recipe (an ephemeral sequential znode
//!   each, the lowest leads, each other watches its predecessor), the heartbeat that confirms
//!   the leader's session, the push relay (a follower's webhook bumps a znode the leader
//!   watches).
//! - [`fenced`]: the scheduler handle the loop writes through: every write asks for a permit
//!   right before it is sent.
//! - [`grants`]: secret zero's grant-once across replicas (an atomic create per task id).
//! - [`handoff`]: the rollout state, kept in ZooKeeper so that a new leader resumes it.
//!
//! Without `--ha-zookeeper` none of this runs: the replica is `standalone` and always holds a
//! permit.

pub mod election;
pub mod fenced;
pub mod grants;
pub mod handoff;
pub mod lease;

use std::time::Duration;

pub use election::{spawn, Event, Handle};
pub use fenced::Fenced;
pub use lease::{lease_bound, HaStatus, Leadership, NotLeader, Role, WritePermit};

/// `--ha-zookeeper` and friends, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// ZooKeeper's connect string, `HOST:PORT[,HOST:PORT...]`.
    pub servers: String,
    /// The group's root znode (`/baton/<name>`): replicas of one group share it.
    pub path: String,
    /// The session timeout asked of ZooKeeper (the server may bound it: 2 to 20 ticks).
    pub session_timeout: Duration,
    /// This replica's name in the election (shown as `leaderId`).
    pub id: String,
}

/// Why the HA machinery could not do something.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("cannot connect to ZooKeeper at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    #[error("ZooKeeper {op} {path}: {source}")]
    Zk {
        op: &'static str,
        path: String,
        #[source]
        source: zookeeper_client::Error,
    },
    #[error("ZooKeeper {op} {path}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        path: String,
        after: Duration,
    },
    #[error("the ZooKeeper session ended ({0})")]
    SessionEnded(String),
}

/// Check `--ha-zookeeper` (`HOST:PORT[,...]`, no chroot) and `--ha-path` (absolute, no
/// trailing slash, no empty or dot segments): a typo is an error at start, not a replica that
/// elects itself alone under another path.
pub fn check(servers: &str, path: &str) -> Result<(), String> {
    if servers.trim().is_empty() {
        return Err("empty ZooKeeper connect string".into());
    }
    for s in servers.split(',') {
        let s = s.trim();
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("`{s}` is not HOST:PORT"));
        };
        if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{s}` is not HOST:PORT"));
        }
    }
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
        return Err(format!(
            "`{path}` must be an absolute znode path like /baton/<owner>, without a trailing slash"
        ));
    }
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg == "zookeeper")
    {
        return Err(format!(
            "`{path}` has an empty, `.`, `..` or reserved (`zookeeper`) segment"
        ));
    }
    Ok(())
}

/// The default `--ha-path`: `/baton/<12 hex of SHA-256(repo + "#" + ref)>`, so replicas
/// of one repo and ref find each other and two groups on one ZooKeeper never share a leader
/// by accident. Set `--ha-path` when replicas spell the repo differently.
pub fn default_path(repo: &str, reference: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{repo}#{reference}").as_bytes(),
    );
    format!("/baton/{}", &hex::encode(digest.as_ref())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_strings_and_paths_are_checked() {
        assert!(check("127.0.0.1:2181", "/baton/team").is_ok());
        assert!(check("a:1,b:2, c:3", "/baton/x").is_ok());
        for bad in [
            "",
            "host",
            "host:",
            ":2181",
            "h:0",
            "h:99999",
            "h:2181/chroot",
        ] {
            assert!(check(bad, "/baton/x").is_err(), "{bad}");
        }
        for bad in [
            "baton",
            "/",
            "/baton/",
            "/baton//x",
            "/baton/../x",
            "/zookeeper/x",
        ] {
            assert!(check("h:1", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_path_depends_on_repo_and_ref() {
        let a = default_path("https://git/x.git", "main");
        assert!(a.starts_with("/baton/") && a.len() == "/baton/".len() + 12);
        assert!(check("h:1", &a).is_ok());
        assert_eq!(a, default_path("https://git/x.git", "main"));
        assert_ne!(a, default_path("https://git/x.git", "prod"));
    }
}
