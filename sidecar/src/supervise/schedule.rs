//! When to renew, and when to give up renewing and rotate. Pure: time is a parameter.
//!
//! Everything is renewed at two thirds of the TTL it was last granted. A renewal that
//! grants less than was asked means the max TTL is near: the lease dies at the end of
//! that grant, so instead of renewing again we rotate at two thirds of it, leaving the
//! last third for fetching new credentials and restarting the app.

use std::time::Duration;

use tokio::time::Instant;

/// Slack for servers that round TTLs down to whole seconds: a grant this much short of
/// the increment is not a cap. At most 1 s, and a tenth of short increments.
fn cap_slack(increment: Duration) -> Duration {
    (increment / 10).min(Duration::from_secs(1))
}
/// Retry delay after a failed renewal that may succeed later (5xx, unreachable).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One thing with a TTL: the token or a secret's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Lease id (empty for the token).
    pub id: String,
    /// When the current grant started.
    pub granted_at: Instant,
    /// Length of the current grant; zero = never expires.
    pub ttl: Duration,
    /// The first grant's length: what every renewal asks for.
    pub increment: Duration,
    /// Issued without a TTL (root tokens): never renewed, never rotated.
    pub infinite: bool,
    pub renewable: bool,
    /// The last renewal came back short (max TTL reached).
    pub capped: bool,
    /// A failed renewal asked to be retried at this time.
    pub retry_at: Option<Instant>,
    /// Rotation was already requested; nothing to do until it is replaced.
    pub rotating: bool,
}

/// What to do next for one tracked item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Renew(Instant),
    Rotate(Instant),
    Never,
}

impl Step {
    pub fn at(self) -> Option<Instant> {
        match self {
            Self::Renew(t) | Self::Rotate(t) => Some(t),
            Self::Never => None,
        }
    }
}

impl Tracked {
    pub fn new(id: String, now: Instant, ttl: Duration, renewable: bool) -> Self {
        Self {
            id,
            granted_at: now,
            ttl,
            increment: ttl,
            infinite: ttl.is_zero(),
            renewable,
            capped: false,
            retry_at: None,
            rotating: false,
        }
    }

    /// The moment the current grant ends.
    pub fn expires_at(&self) -> Instant {
        self.granted_at + self.ttl
    }

    pub fn next_step(&self) -> Step {
        if self.rotating || self.infinite {
            return Step::Never;
        }
        let two_thirds = self.granted_at + self.ttl * 2 / 3;
        if let Some(retry) = self.retry_at {
            return if retry < self.expires_at() {
                Step::Renew(retry)
            } else {
                Step::Rotate(retry.min(self.expires_at()))
            };
        }
        if !self.renewable || self.capped {
            Step::Rotate(two_thirds)
        } else {
            Step::Renew(two_thirds)
        }
    }

    /// A renewal at `now` granted `ttl`.
    pub fn renewed(&mut self, now: Instant, ttl: Duration, renewable: bool) {
        self.capped = ttl + cap_slack(self.increment) < self.increment;
        self.granted_at = now;
        self.ttl = ttl;
        self.renewable = renewable;
        self.retry_at = None;
    }

    /// A renewal at `now` failed; `retryable` = the server may accept it later.
    /// Returns true when the item should be rotated now.
    pub fn renewal_failed(&mut self, now: Instant, retryable: bool) -> bool {
        let retry = now + RETRY_AFTER.min(self.ttl / 6);
        if retryable && retry < self.expires_at() {
            self.retry_at = Some(retry);
            false
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn renews_at_two_thirds_then_rotates_when_capped() {
        let t0 = Instant::now();
        let mut l = Tracked::new("db/1".into(), t0, S(30), true);
        assert_eq!(l.next_step(), Step::Renew(t0 + S(20)));
        // Max TTL 60 s: the renewal at 20 s still gets the full 30 s ...
        l.renewed(t0 + S(20), S(30), true);
        assert!(!l.capped);
        assert_eq!(l.next_step(), Step::Renew(t0 + S(40)));
        // ... the one at 40 s only the 20 s left: rotate at two thirds of those.
        l.renewed(t0 + S(40), S(20), true);
        assert!(l.capped);
        assert_eq!(l.next_step(), Step::Rotate(t0 + S(40) + S(20) * 2 / 3));
    }

    #[test]
    fn non_renewable_and_infinite() {
        let t0 = Instant::now();
        assert_eq!(
            Tracked::new("x".into(), t0, S(60), false).next_step(),
            Step::Rotate(t0 + S(40))
        );
        assert_eq!(
            Tracked::new("root".into(), t0, S(0), true).next_step(),
            Step::Never
        );
        let mut r = Tracked::new("x".into(), t0, S(60), true);
        // A renewal granting 0 s (the max TTL is reached) rotates now, not "never".
        r.renewed(t0 + S(40), S(0), true);
        assert_eq!(r.next_step(), Step::Rotate(t0 + S(40)));
        // Whole-second rounding of short leases still counts as capped.
        let mut short = Tracked::new("x".into(), t0, S(2), true);
        short.renewed(t0 + S(1), S(1), true);
        assert!(short.capped);
        r.rotating = true;
        assert_eq!(r.next_step(), Step::Never);
    }

    #[test]
    fn failed_renewals_retry_until_the_lease_would_expire() {
        let t0 = Instant::now();
        let mut l = Tracked::new("x".into(), t0, S(60), true);
        assert!(!l.renewal_failed(t0 + S(40), true));
        assert_eq!(l.next_step(), Step::Renew(t0 + S(45)));
        assert!(l.renewal_failed(t0 + S(58), true));
        assert!(l.renewal_failed(t0 + S(41), false));
    }
}
