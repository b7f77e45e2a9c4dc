//! Baton's own writes, so the scheduler's event stream does not wake the loop for them.
//!
//! Every create or update Baton sends is answered with the new `version` of the app; the
//! scheduler then announces the change with an `api_post_event` carrying that version. Events
//! whose (app, version) Baton wrote itself are not changes made outside Baton. The event may
//! reach the watcher before the loop has the write's answer; the loop checks again when it
//! handles the event ([`super::Reconciler`]'s event cycle runs after the cycle that wrote), so
//! that race only costs the check, never a cycle.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use baton_core::spec::AppId;
use baton_marathon::{Deployment, EventStream, Scheduler, SchedulerError, Written};

/// Writes remembered; an event that never comes (a watcher that was disconnected) is forgotten
/// after this many newer writes.
pub const KEPT: usize = 4096;

/// The (app id, version) pairs of Baton's recent writes whose events have not been seen yet.
#[derive(Debug, Default)]
pub struct OwnWrites {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl OwnWrites {
    /// Baton wrote `app`, which is now at `version`.
    pub fn record(&self, app: &str, version: &str) {
        if version.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (app.to_string(), version.to_string());
        if inner.set.insert(key.clone()) {
            inner.order.push_back(key);
        }
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
    }

    /// Whether Baton wrote `app` at `version`; the entry is used up (one event per write).
    pub fn take(&self, app: &str, version: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (app.to_string(), version.to_string());
        if !inner.set.remove(&key) {
            return false;
        }
        if let Some(i) = inner.order.iter().position(|k| *k == key) {
            inner.order.remove(i);
        }
        true
    }

    /// How many writes wait for their event.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scheduler that records the versions its creates and updates produced in an [`OwnWrites`].
/// The reconcile loop writes through it; nothing else changes.
pub struct Recording<S> {
    pub inner: Arc<S>,
    pub own: Arc<OwnWrites>,
}

impl<S: Scheduler> Scheduler for Recording<S> {
    async fn list_apps(&self) -> Result<Vec<Value>, SchedulerError> {
        self.inner.list_apps().await
    }

    async fn put_app(&self, id: &AppId, body: &Value) -> Result<Written, SchedulerError> {
        let written = self.inner.put_app(id, body).await?;
        self.own.record(id.as_str(), &written.version);
        Ok(written)
    }

    async fn delete_app(&self, id: &AppId, force: bool) -> Result<Written, SchedulerError> {
        self.inner.delete_app(id, force).await
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, SchedulerError> {
        self.inner.deployments().await
    }

    async fn rollback(&self, deployment_id: &str) -> Result<Written, SchedulerError> {
        self.inner.rollback(deployment_id).await
    }

    async fn diagnose(&self, id: &AppId) -> Option<String> {
        self.inner.diagnose(id).await
    }

    async fn events(&self) -> Result<EventStream, SchedulerError> {
        self.inner.events().await
    }

    async fn get_app(&self, id: &AppId) -> Result<Option<Value>, SchedulerError> {
        self.inner.get_app(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_matches_its_event_once() {
        let own = OwnWrites::default();
        own.record("/a", "2026-01-01T00:00:00.000Z");
        assert!(
            !own.take("/a", "2026-01-01T00:00:00.001Z"),
            "another version"
        );
        assert!(!own.take("/b", "2026-01-01T00:00:00.000Z"), "another app");
        assert!(own.take("/a", "2026-01-01T00:00:00.000Z"));
        assert!(!own.take("/a", "2026-01-01T00:00:00.000Z"), "used up");
        assert!(own.is_empty());
    }

    #[test]
    fn old_writes_are_forgotten() {
        let own = OwnWrites::default();
        for i in 0..=KEPT {
            own.record("/a", &format!("v{i}"));
        }
        assert_eq!(own.len(), KEPT);
        assert!(!own.take("/a", "v0"), "the oldest was dropped");
        assert!(own.take("/a", &format!("v{KEPT}")));
    }
}
