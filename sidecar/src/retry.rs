//! Retrying Vault calls at start while Vault is unreachable, sealed or failing (5xx).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::vault::VaultError;

/// How long to keep trying. Only errors with [`VaultError::is_retryable`] are retried;
/// permission denied, not found and other 4xx answers return at once.
///
/// The policy carries one absolute `deadline`, so every call that retries under the same
/// policy shares one budget: `run` builds the policy once at start, and the whole start-up
/// (gatekeeper, wrapping lookup, login, token lookup, mount lookups and reads) is bounded
/// by `--max-wait`, not each call on its own.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The budget: what [`RetryPolicy::restarted`] measures a fresh deadline with.
    pub max_wait: Duration,
    /// No attempt starts, and no backoff sleeps, past this instant.
    pub deadline: Instant,
    /// First delay; doubles after every failure ...
    pub base: Duration,
    /// ... up to this.
    pub cap: Duration,
}

impl RetryPolicy {
    /// A policy whose deadline is `max_wait` from now.
    pub fn new(max_wait: Duration) -> Self {
        Self::until(Instant::now() + max_wait, max_wait)
    }

    /// A policy with the given deadline (e.g. one computed when the program started).
    pub fn until(deadline: Instant, max_wait: Duration) -> Self {
        Self {
            max_wait,
            deadline,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }

    /// The same policy with a fresh deadline `max_wait` from now (each credential
    /// rotation gets its own budget).
    pub fn restarted(&self) -> Self {
        Self {
            deadline: Instant::now() + self.max_wait,
            ..*self
        }
    }

    /// Never retry (renewal loops that have their own schedule).
    pub fn once() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The nominal delay before attempt `n + 1` (exponential, capped), before jitter.
    pub fn delay(&self, n: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(n.min(20)))
            .min(self.cap)
    }

    /// The jittered delay before attempt `n + 1`: drawn uniformly from [d/2, d].
    pub fn jittered(&self, n: u32) -> Duration {
        let half = self.delay(n) / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// Whether sleeping `delay` from now would still leave time for another attempt
    /// before the deadline.
    pub fn allows(&self, delay: Duration) -> bool {
        Instant::now() + delay <= self.deadline
    }
}

/// Runs `f` until it succeeds, fails for good, or `policy.deadline` would be passed.
///
/// Backoff: exponential from `base` (100 ms) doubling to `cap` (5 s), each delay drawn
/// uniformly from [delay/2, delay] ("equal jitter", so restarted fleets spread out).
/// The first attempt always runs; no later attempt starts after the deadline (a request
/// in flight at the deadline may still take up to the client's request timeout).
/// Returns the last error; the caller tells "gave up waiting" from "refused" by
/// [`VaultError::is_retryable`].
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut f: F) -> Result<T, VaultError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, VaultError>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                let delay = policy.jittered(attempt);
                if !policy.allows(delay) {
                    return Err(e);
                }
                tracing::warn!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "Vault not ready, retrying");
                attempt += 1;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> VaultError {
        VaultError::Unavailable {
            path: "p".into(),
            status: 503,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy::new(Duration::from_secs(60));
        let got: Vec<u64> = (0..8).map(|n| p.delay(n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let got = retry(&RetryPolicy::new(Duration::from_secs(60)), "t", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(unavailable())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_wait() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(&RetryPolicy::new(Duration::from_secs(10)), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unavailable())
        })
        .await;
        assert!(got.unwrap_err().is_retryable());
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permission_denied_is_not_retried() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(&RetryPolicy::new(Duration::from_secs(60)), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(VaultError::PermissionDenied { path: "p".into() })
        })
        .await;
        assert!(matches!(got, Err(VaultError::PermissionDenied { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_deadline_bounds_every_call_under_the_policy() {
        let start = Instant::now();
        let policy = RetryPolicy::new(Duration::from_secs(10));
        let calls = AtomicU32::new(0);
        // Three calls in a row (as gatekeeper, lookup, login would be): together they
        // take no longer than max_wait, not three times max_wait.
        for _ in 0..3 {
            let got: Result<(), _> = retry(&policy, "t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable())
            })
            .await;
            assert!(got.is_err());
        }
        assert!(
            start.elapsed() <= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) > 3);
        // Past the deadline, a call gets its one attempt and no retry.
        tokio::time::advance(Duration::from_secs(1)).await;
        let before = calls.load(Ordering::SeqCst);
        let got: Result<(), _> = retry(&policy, "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unavailable())
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), before + 1);
        // A restarted policy has a fresh budget.
        let fresh = policy.restarted();
        assert!(fresh.deadline >= Instant::now() + Duration::from_secs(10));
    }
}
