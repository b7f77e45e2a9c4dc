//! The renewal task: keeps the token and every lease alive per [`schedule`](super::schedule),
//! and tells the supervisor when something can no longer be renewed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::schedule::{Step, Tracked};
use crate::secret::Secret;
use crate::vault::{truncate_id, Lease, VaultApi};

/// The token and leases of one generation of credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub token: Arc<Secret>,
    /// Token TTL; zero = never expires (root tokens, or unknown); `None` = the same
    /// token as before, keep its renewal state.
    pub token_ttl: Option<Duration>,
    pub token_renewable: bool,
    pub leases: Vec<Lease>,
}

/// What the supervisor must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewEvent {
    /// A lease is about to die for good: fetch new secrets (with the same token).
    LeaseEnding { lease: String },
    /// The token is about to die for good: log in again, then fetch new secrets.
    TokenEnding,
}

/// Runs until `replace` is closed. Each message on `replace` swaps in a new generation
/// (after a rotation); the old one is the supervisor's to revoke.
pub async fn run<V: VaultApi>(
    api: Arc<V>,
    creds: Credentials,
    mut replace: mpsc::Receiver<Credentials>,
    events: mpsc::Sender<RenewEvent>,
) {
    let mut state = State::new(creds, Instant::now());
    loop {
        let next = state.next();
        tokio::select! {
            msg = replace.recv() => match msg {
                Some(creds) => state = state.replaced(creds, Instant::now()),
                None => return,
            },
            _ = sleep_until(next.map_or_else(far_future, |(_, at)| at)), if next.is_some() => {
                let Some((index, _)) = next else { continue };
                if let Some(event) = state.act(api.as_ref(), index).await {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

struct State {
    token: Arc<Secret>,
    /// Index 0 is the token (empty id); the rest are leases.
    items: Vec<Tracked>,
}

impl State {
    fn new(creds: Credentials, now: Instant) -> Self {
        let token = Tracked::new(
            String::new(),
            now,
            creds.token_ttl.unwrap_or_default(),
            creds.token_renewable,
        );
        Self::with_token(token, creds, now)
    }

    /// A new generation of leases; the token's state carries over when it is the same.
    fn replaced(self, creds: Credentials, now: Instant) -> Self {
        match (creds.token_ttl, self.items.into_iter().next()) {
            (None, Some(token)) => Self::with_token(token, creds, now),
            _ => Self::new(creds, now),
        }
    }

    fn with_token(token: Tracked, creds: Credentials, now: Instant) -> Self {
        let mut items = vec![token];
        items.extend(
            creds
                .leases
                .into_iter()
                .map(|l| Tracked::new(l.id, now, l.duration, l.renewable)),
        );
        Self {
            token: creds.token,
            items,
        }
    }

    /// The earliest due item.
    fn next(&self) -> Option<(usize, Instant)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.next_step().at().map(|at| (i, at)))
            .min_by_key(|(_, at)| *at)
    }

    async fn act<V: VaultApi>(&mut self, api: &V, index: usize) -> Option<RenewEvent> {
        let now = Instant::now();
        let item = &self.items[index];
        let step = item.next_step();
        let is_token = index == 0;
        if let Step::Renew(_) = step {
            let result = if is_token {
                api.renew_self(&self.token, item.increment)
                    .await
                    .map(|a| (a.lease_duration, a.renewable))
            } else {
                api.renew_lease(&self.token, &item.id, item.increment)
                    .await
                    .map(|l| (l.duration, l.renewable))
            };
            let item = &mut self.items[index];
            match result {
                Ok((ttl, renewable)) => {
                    item.renewed(now, ttl, renewable);
                    tracing::info!(lease = %label(item), ttl_s = ttl.as_secs(), capped = item.capped, "renewed");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(lease = %label(item), error = %e, "renewal failed");
                    if !item.renewal_failed(now, e.is_retryable()) {
                        return None;
                    }
                }
            }
        }
        let item = &mut self.items[index];
        item.rotating = true;
        tracing::info!(lease = %label(item), "cannot be renewed any further; rotating");
        Some(if is_token {
            RenewEvent::TokenEnding
        } else {
            RenewEvent::LeaseEnding {
                lease: truncate_id(&item.id),
            }
        })
    }
}

fn label(item: &Tracked) -> String {
    if item.id.is_empty() {
        "token".into()
    } else {
        truncate_id(&item.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretData;
    use crate::vault::{AuthInfo, MountInfo, ReadResponse, TokenInfo, VaultError, WrappingInfo};
    use std::sync::Mutex;

    /// A Vault whose one lease has a max TTL, and whose token renews without limit.
    struct Fake {
        start: Instant,
        max_ttl: Duration,
        renewals: Mutex<Vec<Duration>>,
    }

    fn unused<T>() -> Result<T, VaultError> {
        Err(VaultError::NotFound {
            path: "unused".into(),
        })
    }

    impl VaultApi for Fake {
        async fn login(&self, _: &str, _: &[(&str, &str)]) -> Result<AuthInfo, VaultError> {
            unused()
        }
        async fn lookup_self(&self, _: &Secret) -> Result<TokenInfo, VaultError> {
            unused()
        }
        async fn renew_self(&self, _: &Secret, inc: Duration) -> Result<AuthInfo, VaultError> {
            Ok(AuthInfo {
                token: Secret::new("t".into()),
                accessor: None,
                lease_duration: inc,
                renewable: true,
                policies: vec![],
            })
        }
        async fn revoke_self(&self, _: &Secret) -> Result<(), VaultError> {
            Ok(())
        }
        async fn mount_info(&self, _: &Secret, _: &str) -> Result<Option<MountInfo>, VaultError> {
            unused()
        }
        async fn read(
            &self,
            _: &Secret,
            _: &str,
            _: Option<u32>,
        ) -> Result<ReadResponse, VaultError> {
            unused()
        }
        async fn renew_lease(
            &self,
            _: &Secret,
            id: &str,
            inc: Duration,
        ) -> Result<Lease, VaultError> {
            let elapsed = self.start.elapsed();
            self.renewals.lock().unwrap().push(elapsed);
            let left = self.max_ttl.saturating_sub(elapsed);
            Ok(Lease {
                id: id.into(),
                duration: inc.min(left),
                renewable: true,
            })
        }
        async fn revoke_lease(&self, _: &Secret, _: &str) -> Result<(), VaultError> {
            Ok(())
        }
        async fn wrapping_lookup(&self, _: &Secret) -> Result<WrappingInfo, VaultError> {
            unused()
        }
        async fn unwrap(&self, _: &Secret) -> Result<SecretData, VaultError> {
            unused()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_two_thirds_and_rotates_before_the_max_ttl() {
        let start = Instant::now();
        let api = Arc::new(Fake {
            start,
            max_ttl: Duration::from_secs(100),
            renewals: Mutex::new(vec![]),
        });
        let creds = Credentials {
            token: Arc::new(Secret::new("t".into())),
            token_ttl: Some(Duration::from_secs(3600)),
            token_renewable: true,
            leases: vec![Lease {
                id: "database/creds/app/abc".into(),
                duration: Duration::from_secs(30),
                renewable: true,
            }],
        };
        let (_tx, rx) = mpsc::channel(1);
        let (ev_tx, mut ev_rx) = mpsc::channel(1);
        tokio::spawn(run(api.clone(), creds, rx, ev_tx));
        let event = ev_rx.recv().await.unwrap();
        let at = start.elapsed();
        assert_eq!(
            event,
            RenewEvent::LeaseEnding {
                lease: "database/creds/app/abc…".into()
            }
        );
        // Renewed at 20 s, 40 s, 60 s, 80 s (20 s left: capped), rotation at 80 + 13.3 s.
        let renewals: Vec<u64> = api
            .renewals
            .lock()
            .unwrap()
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(renewals, [20, 40, 60, 80]);
        assert!(
            at > Duration::from_secs(93) && at < Duration::from_secs(100),
            "{at:?}"
        );
    }
}
