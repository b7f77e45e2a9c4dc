//! Secret zero's grant-once across replicas: before a replica mints a secret id for a task,
//! it creates `<path>/grants/<task id>` (persistent). ZooKeeper's create is atomic: of any
//! number of replicas asking at once, exactly one succeeds; the others see `NodeExists` and
//! refuse the task as replayed. No ZooKeeper session: no grant (fail closed).
//!
//! Size: one znode per task served, its name the task id (escaped, at most 3 x 512 bytes) and
//! its data the granting replica's id; kept for the gatekeeper's served retention (24 h) and
//! then deleted by the leader ([`Grants::prune`]).

use std::time::Duration;

use zookeeper_client as zk;

use super::election::{Handle, GRANTS};
use super::HaError;

/// The cluster-wide served set.
#[derive(Debug, Clone)]
pub struct Grants {
    handle: Handle,
}

/// A task id as one znode name: `t-` then the id, bytes outside `[A-Za-z0-9._-]`
/// percent-escaped (a name is never `.`/`..` and never holds `/`).
pub fn node_name(task_id: &str) -> String {
    let mut out = String::with_capacity(task_id.len() + 2);
    out.push_str("t-");
    for b in task_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Grants {
    pub fn new(handle: Handle) -> Self {
        Grants { handle }
    }

    fn client(&self) -> Result<zk::Client, HaError> {
        self.handle
            .client
            .borrow()
            .clone()
            .ok_or_else(|| HaError::SessionEnded("no ZooKeeper session".into()))
    }

    fn path(&self, task_id: &str) -> String {
        format!("{}/{GRANTS}/{}", self.handle.path, node_name(task_id))
    }

    /// Claim `task_id` for this replica: `Ok(true)` when this replica is the first ever to,
    /// `Ok(false)` when some replica claimed it before.
    pub async fn claim(&self, task_id: &str) -> Result<bool, HaError> {
        let client = self.client()?;
        let path = self.path(task_id);
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let after = self.handle.request_timeout;
        let id = self.handle.leadership.id().as_bytes().to_vec();
        match tokio::time::timeout(after, client.create(&path, &id, &options)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(zk::Error::NodeExists)) => Ok(false),
            Ok(Err(source)) => Err(HaError::Zk {
                op: "create",
                path,
                source,
            }),
            Err(_) => Err(HaError::Timeout {
                op: "create",
                path,
                after,
            }),
        }
    }

    /// Give back a claim whose secret id never reached the task (minting failed).
    pub async fn release(&self, task_id: &str) -> Result<(), HaError> {
        let client = self.client()?;
        let path = self.path(task_id);
        let after = self.handle.request_timeout;
        // Only this replica's own claim: never another's (a claim that timed out may have
        // met someone else's znode).
        let version = match tokio::time::timeout(after, client.get_data(&path)).await {
            Ok(Ok((data, stat))) if data == self.handle.leadership.id().as_bytes() => stat.version,
            Ok(Ok(_)) | Ok(Err(zk::Error::NoNode)) => return Ok(()),
            Ok(Err(source)) => {
                return Err(HaError::Zk {
                    op: "get",
                    path,
                    source,
                })
            }
            Err(_) => {
                return Err(HaError::Timeout {
                    op: "get",
                    path,
                    after,
                })
            }
        };
        match tokio::time::timeout(after, client.delete(&path, Some(version))).await {
            Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => Ok(()),
            Ok(Err(source)) => Err(HaError::Zk {
                op: "delete",
                path,
                source,
            }),
            Err(_) => Err(HaError::Timeout {
                op: "delete",
                path,
                after,
            }),
        }
    }

    /// Delete the grants created more than `retention` before `now_ms` (Unix ms, ZooKeeper's
    /// clock stamps `ctime`); the leader does this (every replica would be wasteful, not
    /// wrong). Returns how many went.
    pub async fn prune(&self, retention: Duration, now_ms: i64) -> Result<usize, HaError> {
        if !self.handle.leadership.leading() {
            return Ok(0);
        }
        let client = self.client()?;
        let dir = format!("{}/{GRANTS}", self.handle.path);
        let after = self.handle.request_timeout;
        let zk_err = |op, path: &str, source| HaError::Zk {
            op,
            path: path.to_string(),
            source,
        };
        let children = tokio::time::timeout(after, client.list_children(&dir))
            .await
            .map_err(|_| HaError::Timeout {
                op: "list",
                path: dir.clone(),
                after,
            })?
            .map_err(|e| zk_err("list", &dir, e))?;
        let cutoff = now_ms.saturating_sub(retention.as_millis() as i64);
        let mut pruned = 0;
        for child in children {
            let path = format!("{dir}/{child}");
            let Ok(Ok(Some(stat))) = tokio::time::timeout(after, client.check_stat(&path)).await
            else {
                continue;
            };
            if stat.ctime < cutoff
                && matches!(
                    tokio::time::timeout(after, client.delete(&path, Some(stat.version))).await,
                    Ok(Ok(()))
                )
            {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Prune every `every` while leading, until `shutdown`.
    pub async fn prune_loop(
        self,
        retention: Duration,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            match self.prune(retention, now_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "HA: old secret-zero grants deleted"),
                Err(e) => tracing::warn!(error = %e, "HA: cannot prune secret-zero grants"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_become_safe_znode_names() {
        assert_eq!(node_name("web.1f2e-3d_4c"), "t-web.1f2e-3d_4c");
        assert_eq!(node_name(".."), "t-..");
        assert_eq!(node_name("a/b c"), "t-a%2Fb%20c");
        assert_ne!(
            node_name("a/b"),
            node_name("a%2Fb"),
            "the escape is itself escaped"
        );
    }
}
