//! The scheduler handle of an HA replica: reads pass through; every write (`put_app`,
//! `delete_app`, `rollback`) first takes a [`WritePermit`](super::WritePermit), right before
//! the request is sent, so no code path of the loop (a cycle, the push fast path, a rollout
//! tick, a drift correction) can write without holding the leader's lease at that moment.

use std::sync::Arc;

use serde_json::Value;

use baton_core::spec::AppId;
use baton_marathon::{Deployment, EventStream, Scheduler, SchedulerError, Written};

use super::Leadership;

/// `inner`, fenced by `leadership` (`None`: standalone, nothing to fence).
#[derive(Debug, Clone)]
pub struct Fenced<S> {
    inner: S,
    leadership: Option<Arc<Leadership>>,
}

impl<S> Fenced<S> {
    pub fn new(inner: S, leadership: Option<Arc<Leadership>>) -> Self {
        Fenced { inner, leadership }
    }

    fn permit(&self) -> Result<(), SchedulerError> {
        match &self.leadership {
            None => Ok(()),
            Some(l) => l.permit().map(drop).map_err(|e| {
                tracing::warn!(reason = %e.reason, "scheduler write not sent: no write lease");
                SchedulerError::Fenced { reason: e.reason }
            }),
        }
    }
}

impl<S: Scheduler> Scheduler for Fenced<S> {
    async fn list_apps(&self) -> Result<Vec<Value>, SchedulerError> {
        self.inner.list_apps().await
    }

    async fn put_app(&self, id: &AppId, body: &Value) -> Result<Written, SchedulerError> {
        self.permit()?;
        self.inner.put_app(id, body).await
    }

    async fn delete_app(&self, id: &AppId, force: bool) -> Result<Written, SchedulerError> {
        self.permit()?;
        self.inner.delete_app(id, force).await
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, SchedulerError> {
        self.inner.deployments().await
    }

    async fn rollback(&self, deployment_id: &str) -> Result<Written, SchedulerError> {
        self.permit()?;
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
    use crate::ha::HaConfig;
    use baton_marathon::fake::Fake;
    use std::time::{Duration, Instant};

    fn leadership() -> Arc<Leadership> {
        Arc::new(Leadership::new(&HaConfig {
            servers: "127.0.0.1:2181".into(),
            path: "/baton/t".into(),
            session_timeout: Duration::from_secs(30),
            id: "a".into(),
        }))
    }

    #[tokio::test]
    async fn writes_need_the_lease_reads_do_not() {
        let l = leadership();
        let fake = Fake::default();
        let s = Fenced::new(fake.clone(), Some(l.clone()));
        let id = AppId::parse("/a").unwrap();
        let body = serde_json::json!({"id": "/a", "cmd": "sleep 1", "instances": 1});
        let e = s.put_app(&id, &body).await.unwrap_err();
        assert!(matches!(e, SchedulerError::Fenced { .. }), "{e}");
        assert!(matches!(
            s.delete_app(&id, false).await,
            Err(SchedulerError::Fenced { .. })
        ));
        assert!(matches!(
            s.rollback("d1").await,
            Err(SchedulerError::Fenced { .. })
        ));
        assert!(
            s.list_apps().await.unwrap().is_empty(),
            "nothing was written"
        );
        l.elected(Instant::now());
        s.put_app(&id, &body).await.unwrap();
        assert_eq!(s.list_apps().await.unwrap().len(), 1);
        l.lost("session expired".into());
        assert!(matches!(
            s.delete_app(&id, false).await,
            Err(SchedulerError::Fenced { .. })
        ));
        assert_eq!(
            s.list_apps().await.unwrap().len(),
            1,
            "the delete was not sent"
        );
    }

    #[tokio::test]
    async fn standalone_is_not_fenced() {
        let s = Fenced::new(Fake::default(), None);
        let id = AppId::parse("/a").unwrap();
        let body = serde_json::json!({"id": "/a", "cmd": "sleep 1", "instances": 1});
        s.put_app(&id, &body).await.unwrap();
    }
}
