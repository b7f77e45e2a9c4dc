//! Metrics of `baton serve` in the Prometheus text exposition format (version 0.0.4), served at
//! `/metrics`. A small hand-written registry: a fixed set of named metrics, updated by the loop,
//! the webhook handler, the git source and the notifier, rendered on scrape.
//!
//! Metric names (all prefixed `baton_`):
//! - `syncs_total{outcome}` counter, `sync_duration_seconds` histogram: every reconcile cycle;
//!   `outcome` is the sync record's (`synced`, `partial`, `failed`, `planned`, `abandoned`) or
//!   `noop` for a cycle with nothing new to apply (a poll or scheduler event at the same commit)
//! - `apps{state}` gauge (every drift state, zeros included)
//! - `drifted_apps` gauge, `drift_oldest_seconds` gauge (age of the oldest open drift)
//! - `webhook_deliveries_total{outcome}` counter
//! - `git_fetch_duration_seconds` histogram
//! - `push_to_deployed_seconds` histogram (webhook received -> deployment finished)
//! - `corrections_total` counter, `notifications_total{outcome}` counter
//! - `held_deletes` gauge, `invalid_specs` gauge: work the last full cycle held back
//! - `rollouts_total{outcome}` counter (`completed`, `rolled_back`); per rollout in progress
//!   `rollout_step{app}` (the traffic step's index; -1 before the first),
//!   `rollout_traffic_percent{app}` (the canary's share now) and
//!   `rollout_error_rate{app,version}` (`canary`, `stable`: 5xx share of the current window,
//!   once it has responses)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use baton_core::drift::{DriftReport, DriftState};

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) for syncs and deployments: seconds to tens of minutes.
const SLOW_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Buckets (seconds) for git fetches.
const FAST_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone)]
struct Inner {
    syncs: BTreeMap<String, u64>,
    sync_duration: Histogram,
    apps: BTreeMap<DriftState, u64>,
    drifted: u64,
    drift_oldest: f64,
    webhooks: BTreeMap<String, u64>,
    git_fetch: Histogram,
    push_to_deployed: Histogram,
    corrections: u64,
    notifications: BTreeMap<String, u64>,
    held_deletes: u64,
    invalid_specs: u64,
    rollouts: BTreeMap<String, u64>,
    /// Per app in a rollout: (step, traffic percent, canary error rate, stable error rate).
    rollout: BTreeMap<String, RolloutGauges>,
}

#[derive(Debug, Clone, Copy)]
struct RolloutGauges {
    step: f64,
    traffic: f64,
    canary_rate: Option<f64>,
    stable_rate: Option<f64>,
}

/// The registry. Cheap to update from any task (one short lock per update).
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                syncs: BTreeMap::new(),
                sync_duration: Histogram::new(SLOW_BUCKETS),
                apps: DriftState::ALL.iter().map(|s| (*s, 0)).collect(),
                drifted: 0,
                drift_oldest: 0.0,
                webhooks: BTreeMap::new(),
                git_fetch: Histogram::new(FAST_BUCKETS),
                push_to_deployed: Histogram::new(SLOW_BUCKETS),
                corrections: 0,
                notifications: BTreeMap::new(),
                held_deletes: 0,
                invalid_specs: 0,
                rollouts: BTreeMap::new(),
                rollout: BTreeMap::new(),
            }),
        }
    }
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        // A panic elsewhere cannot leave the counters inconsistent: each update is one step.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }

    /// A sync ended with `outcome` (`synced`, `partial`, `failed`, ...) after `took`.
    pub fn sync_finished(&self, outcome: &str, took: Duration) {
        self.with(|m| {
            *m.syncs.entry(outcome.to_string()).or_default() += 1;
            m.sync_duration.observe(took.as_secs_f64());
        });
    }

    /// Apps by state, drift count and the oldest drift's age, from a fresh report.
    pub fn set_drift(&self, report: &DriftReport, now: u64) {
        self.with(|m| {
            for s in DriftState::ALL {
                m.apps.insert(s, report.summary.get(s) as u64);
            }
            m.drifted = report.apps.iter().filter(|a| a.disagrees()).count() as u64;
            m.drift_oldest = report.oldest_drift(now).map_or(0.0, |d| d.as_secs_f64());
        });
    }

    /// Work the last full cycle held back: deletions withheld, apps whose spec is invalid.
    pub fn set_held_work(&self, held_deletes: usize, invalid_specs: usize) {
        self.with(|m| {
            m.held_deletes = held_deletes as u64;
            m.invalid_specs = invalid_specs as u64;
        });
    }

    /// A webhook delivery was answered: `accepted`, `ignored`, `duplicate`, `rejected`,
    /// `malformed`, `too_large`, `unknown_provider`, `disabled` (see the README's table).
    pub fn webhook_delivery(&self, outcome: &str) {
        self.with(|m| *m.webhooks.entry(outcome.to_string()).or_default() += 1);
    }

    pub fn git_fetch(&self, took: Duration) {
        self.with(|m| m.git_fetch.observe(took.as_secs_f64()));
    }

    /// From the push (webhook received) to its deployment finished.
    pub fn push_to_deployed(&self, took: Duration) {
        self.with(|m| m.push_to_deployed.observe(took.as_secs_f64()));
    }

    /// Drifted apps put back by a `correct` policy.
    pub fn corrected(&self, apps: usize) {
        self.with(|m| m.corrections += apps as u64);
    }

    /// A notification was `sent`, `failed` (after its retries) or `dropped` (queue full).
    pub fn notification(&self, outcome: &str) {
        self.with(|m| *m.notifications.entry(outcome.to_string()).or_default() += 1);
    }

    /// A rollout ended: `completed` or `rolled_back`.
    pub fn rollout_finished(&self, outcome: &str) {
        self.with(|m| *m.rollouts.entry(outcome.to_string()).or_default() += 1);
    }

    /// The gauges of `app`'s rollout (`None`: it ended, its series go).
    pub fn set_rollout(&self, app: &str, status: Option<&baton_core::rollout::RolloutStatus>) {
        let rate = |c: &baton_core::rollout::Counters| {
            (c.responses > 0).then(|| c.errors as f64 / c.responses as f64)
        };
        self.with(|m| match status {
            None => {
                m.rollout.remove(app);
            }
            Some(s) => {
                let g = RolloutGauges {
                    step: s.step.map_or(-1.0, |i| i as f64),
                    traffic: s.traffic_percent,
                    canary_rate: s.window.as_ref().and_then(|w| rate(&w.canary)),
                    stable_rate: s.window.as_ref().and_then(|w| rate(&w.stable)),
                };
                m.rollout.insert(app.to_string(), g);
            }
        });
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = String::with_capacity(4096);
        counter_vec(
            &mut out,
            "baton_syncs_total",
            "Syncs by outcome.",
            "outcome",
            &m.syncs,
        );
        histogram(
            &mut out,
            "baton_sync_duration_seconds",
            "Duration of syncs.",
            &m.sync_duration,
        );
        head(&mut out, "baton_apps", "Apps by drift state.", "gauge");
        for (s, n) in &m.apps {
            let _ = writeln!(out, "baton_apps{{state=\"{}\"}} {n}", state_label(*s));
        }
        gauge(
            &mut out,
            "baton_drifted_apps",
            "Apps that disagree with git (drifted, missing, failed with differences).",
            m.drifted as f64,
        );
        gauge(
            &mut out,
            "baton_drift_oldest_seconds",
            "Age of the oldest open drift (0 when none).",
            m.drift_oldest,
        );
        counter_vec(
            &mut out,
            "baton_webhook_deliveries_total",
            "Webhook deliveries by outcome.",
            "outcome",
            &m.webhooks,
        );
        histogram(
            &mut out,
            "baton_git_fetch_duration_seconds",
            "Duration of git fetches.",
            &m.git_fetch,
        );
        histogram(
            &mut out,
            "baton_push_to_deployed_seconds",
            "From a push webhook to its deployment finished.",
            &m.push_to_deployed,
        );
        head(
            &mut out,
            "baton_corrections_total",
            "Drifted apps put back to git's definition.",
            "counter",
        );
        let _ = writeln!(out, "baton_corrections_total {}", m.corrections);
        counter_vec(
            &mut out,
            "baton_notifications_total",
            "Notifications by outcome (sent, failed, dropped).",
            "outcome",
            &m.notifications,
        );
        gauge(
            &mut out,
            "baton_held_deletes",
            "Deletions the last full cycle withheld (delete budget, empty or incomplete repo, prune: false).",
            m.held_deletes as f64,
        );
        gauge(
            &mut out,
            "baton_invalid_specs",
            "Apps whose spec is invalid, left untouched (last full cycle).",
            m.invalid_specs as f64,
        );
        counter_vec(
            &mut out,
            "baton_rollouts_total",
            "Rollouts ended, by outcome (completed, rolled_back).",
            "outcome",
            &m.rollouts,
        );
        head(
            &mut out,
            "baton_rollout_step",
            "The traffic step a rollout is in (-1: before its first).",
            "gauge",
        );
        for (app, g) in &m.rollout {
            let _ = writeln!(
                out,
                "baton_rollout_step{{app=\"{}\"}} {}",
                label_value(app),
                g.step
            );
        }
        head(
            &mut out,
            "baton_rollout_traffic_percent",
            "The share of the app's traffic on its canary now, in percent.",
            "gauge",
        );
        for (app, g) in &m.rollout {
            let _ = writeln!(
                out,
                "baton_rollout_traffic_percent{{app=\"{}\"}} {}",
                label_value(app),
                g.traffic
            );
        }
        head(
            &mut out,
            "baton_rollout_error_rate",
            "5xx share of the responses in the rollout's current analysis window, per version.",
            "gauge",
        );
        for (app, g) in &m.rollout {
            for (version, r) in [("canary", g.canary_rate), ("stable", g.stable_rate)] {
                if let Some(r) = r {
                    let _ = writeln!(
                        out,
                        "baton_rollout_error_rate{{app=\"{}\",version=\"{version}\"}} {r}",
                        label_value(app)
                    );
                }
            }
        }
        out
    }
}

fn state_label(s: DriftState) -> &'static str {
    match s {
        DriftState::InSync => "in_sync",
        DriftState::Drifted => "drifted",
        DriftState::Pending => "pending",
        DriftState::Missing => "missing",
        DriftState::Unmanaged => "unmanaged",
        DriftState::Failed => "failed",
        DriftState::Invalid => "invalid",
    }
}

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the format wants it: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counter_vec(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<String, u64>,
) {
    head(out, name, help, "counter");
    for (k, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", label_value(k));
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    head(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {v}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    head(out, name, help, "histogram");
    let mut cumulative = 0;
    for (b, c) in h.bounds.iter().zip(&h.counts) {
        cumulative += c;
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_histograms_and_gauges_render() {
        let m = Metrics::default();
        m.sync_finished("synced", Duration::from_millis(300));
        m.sync_finished("synced", Duration::from_secs(7));
        m.sync_finished("failed", Duration::from_secs(4000));
        m.webhook_delivery("accepted");
        m.git_fetch(Duration::from_millis(20));
        m.notification("dropped");
        let t = m.render();
        assert_eq!(
            sample(&t, "baton_syncs_total{outcome=\"synced\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "baton_sync_duration_seconds_bucket{le=\"0.5\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "baton_sync_duration_seconds_bucket{le=\"10\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "baton_sync_duration_seconds_bucket{le=\"1800\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "baton_sync_duration_seconds_bucket{le=\"+Inf\"}"),
            Some(3.0)
        );
        assert_eq!(sample(&t, "baton_sync_duration_seconds_count"), Some(3.0));
        assert_eq!(sample(&t, "baton_sync_duration_seconds_sum"), Some(4007.3));
        assert_eq!(
            sample(&t, "baton_git_fetch_duration_seconds_bucket{le=\"0.01\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "baton_git_fetch_duration_seconds_bucket{le=\"0.05\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&t, "baton_apps{state=\"drifted\"}"), Some(0.0));
        assert_eq!(
            sample(&t, "baton_webhook_deliveries_total{outcome=\"accepted\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "baton_notifications_total{outcome=\"dropped\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let t = Metrics::default().render();
        let mut typed = std::collections::BTreeSet::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "{name} typed twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "sample before TYPE: {line}");
            }
        }
        for required in [
            "baton_syncs_total",
            "baton_sync_duration_seconds",
            "baton_apps",
            "baton_drifted_apps",
            "baton_drift_oldest_seconds",
            "baton_webhook_deliveries_total",
            "baton_git_fetch_duration_seconds",
            "baton_push_to_deployed_seconds",
            "baton_held_deletes",
            "baton_invalid_specs",
            "baton_rollouts_total",
            "baton_rollout_step",
            "baton_rollout_traffic_percent",
            "baton_rollout_error_rate",
        ] {
            assert!(typed.contains(required), "{required} missing");
        }
    }

    /// A rollout's gauges while it runs (error rates once its window has responses), gone
    /// when it ends; the counter by outcome.
    #[test]
    fn rollout_series_follow_the_rollouts() {
        use baton_core::rollout::{Counters, RolloutStatus, Strategy, Window};
        let m = Metrics::default();
        let mut status = RolloutStatus {
            strategy: Strategy::Canary,
            commit: "c".into(),
            phase: "step".into(),
            step: Some(1),
            traffic_percent: 10.0,
            canary_app: "/a-canary".into(),
            window: None,
            waiting_for: None,
            timeline: Vec::new(),
        };
        m.set_rollout("/a", Some(&status));
        let t = m.render();
        assert_eq!(sample(&t, "baton_rollout_step{app=\"/a\"}"), Some(1.0));
        assert_eq!(
            sample(&t, "baton_rollout_traffic_percent{app=\"/a\"}"),
            Some(10.0)
        );
        assert!(!t.contains("baton_rollout_error_rate{"), "{t}");
        status.window = Some(Window {
            since_ms: 0,
            last: Default::default(),
            canary: Counters {
                responses: 200,
                errors: 4,
            },
            stable: Counters {
                responses: 0,
                errors: 0,
            },
        });
        m.set_rollout("/a", Some(&status));
        let t = m.render();
        assert_eq!(
            sample(
                &t,
                "baton_rollout_error_rate{app=\"/a\",version=\"canary\"}"
            ),
            Some(0.02)
        );
        assert!(
            !t.contains("version=\"stable\""),
            "no responses, no rate: {t}"
        );
        m.set_rollout("/a", None);
        m.rollout_finished("rolled_back");
        let t = m.render();
        assert!(!t.contains("app=\"/a\""), "{t}");
        assert_eq!(
            sample(&t, "baton_rollouts_total{outcome=\"rolled_back\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
