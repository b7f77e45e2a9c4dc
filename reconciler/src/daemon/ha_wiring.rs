//! `baton serve --ha-zookeeper`: the election's handle joined to the daemon: `/api/status`
//! and `/metrics` show it, an election starts a full cycle (a takeover is one cycle of a warm
//! cache), a push a follower relayed starts the leader's push cycle, and the leader prunes
//! old secret-zero grants.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::daemon::dashboard::MetricsSource;
use crate::daemon::reconcile::{Shared, Trigger};
use crate::ha::{Event, Handle};

/// How long a granted task id is kept in ZooKeeper (the gatekeeper's served retention).
const GRANT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the leader looks for old grants.
const GRANT_PRUNE_EVERY: Duration = Duration::from_secs(600);

pub fn wire(
    shared: &Arc<Shared>,
    handle: Handle,
    mut events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let leadership = handle.leadership.clone();
    (shared.dashboard).add_metrics_source(MetricsSource(Arc::new(move || leadership.prometheus())));
    let grants = crate::ha::grants::Grants::new(handle.clone());
    tracker.spawn(grants.prune_loop(GRANT_RETENTION, GRANT_PRUNE_EVERY, shutdown.child_token()));
    let _ = shared.ha.set(handle);
    tracker.spawn(async move {
        let _ = task.await;
    });
    let s = shared.clone();
    tracker.spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                Event::Elected => s.trigger(Trigger::Poll),
                Event::Push(from) => s.trigger(Trigger::Webhook {
                    delivery: format!("relayed: {from}"),
                }),
            }
        }
    });
}
