//! A load generator for the rollout tests: steady requests over loopback through a load
//! balancer's service port, each on a new connection (so every request is balanced anew, as
//! users' requests are), with a 2 s timeout, bounded in count and in time. Every request is
//! recorded: when it was sent, its status or error, and the `X-Version` header that says which
//! version of the app answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// What one request got.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer: refused, reset, timed out (the error, for failure messages).
    Error(String),
}

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub outcome: Outcome,
    /// The answer's `X-Version`.
    pub version: Option<String>,
}

impl Sample {
    /// A request users would see fail: no answer, or a 5xx.
    pub fn failed(&self) -> bool {
        match self.outcome {
            Outcome::Status(s) => s >= 500,
            Outcome::Error(_) => true,
        }
    }
}

/// Bounds of a load run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests per second.
    pub rate: u32,
    /// At most this many requests in all.
    pub max_requests: usize,
    /// And for at most this long.
    pub max_time: Duration,
    /// Per request (connect to answer).
    pub timeout: Duration,
}

impl Default for Plan {
    /// 40 req/s, at most 4,000 requests or 150 s, 2 s per request.
    fn default() -> Self {
        Plan {
            rate: 40,
            max_requests: 4000,
            max_time: Duration::from_secs(150),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A running load; [`Load::stop`] ends it and returns every sample.
pub struct Load {
    start: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Start sending `GET url` at `plan.rate`.
    pub fn start(url: &str, plan: Plan) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            // A new connection for each request: nothing is kept for reuse.
            .pool_max_idle_per_host(0)
            .timeout(plan.timeout)
            .no_proxy()
            .build()
            .expect("http client");
        let (url, out, token) = (url.to_string(), samples.clone(), stop.clone());
        let start = Instant::now();
        let driver = tokio::spawn(async move {
            let period = Duration::from_secs(1) / plan.rate.max(1);
            let mut tick = tokio::time::interval(period);
            // A stalled test runtime sends late, never in a burst: the rate stays at most `rate`.
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut inflight = tokio::task::JoinSet::new();
            for _ in 0..plan.max_requests {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if start.elapsed() >= plan.max_time {
                    break;
                }
                let (client, url, out) = (client.clone(), url.clone(), out.clone());
                inflight.spawn(async move {
                    let at = start.elapsed();
                    let sample = match client
                        .get(&url)
                        .header(reqwest::header::CONNECTION, "close")
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let version = r
                                .headers()
                                .get("x-version")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let status = r.status().as_u16();
                            // The whole answer, so a reset mid-body counts as a failure.
                            match r.bytes().await {
                                Ok(_) => Sample {
                                    at,
                                    outcome: Outcome::Status(status),
                                    version,
                                },
                                Err(e) => Sample {
                                    at,
                                    outcome: Outcome::Error(format!("body: {e}")),
                                    version,
                                },
                            }
                        }
                        Err(e) => Sample {
                            at,
                            outcome: Outcome::Error(error_chain(&e)),
                            version: None,
                        },
                    };
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                });
                // Reap finished requests as we go (their results are already recorded).
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Load {
            start,
            samples,
            stop,
            driver: Some(driver),
        }
    }

    /// Time since the load started (the clock of [`Sample::at`]).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The samples recorded so far (requests still in flight are not in it yet).
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests recorded so far.
    pub fn count(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the load has ended by itself (its count or time bound).
    pub fn finished(&self) -> bool {
        self.driver.as_ref().is_none_or(|d| d.is_finished())
    }

    /// Wait until the load has ended by itself (its count or time bound) and every request is
    /// answered or timed out; returns every sample in the order they were sent.
    pub async fn wait_done(mut self) -> Vec<Sample> {
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        let mut all = self.samples();
        all.sort_by_key(|s| s.at);
        all
    }

    /// Stop sending, wait for the requests in flight (each has its timeout), and return every
    /// sample in the order they were sent.
    pub async fn stop(mut self) -> Vec<Sample> {
        self.stop.cancel();
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        let mut all = self.samples();
        all.sort_by_key(|s| s.at);
        all
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Counts over a slice of samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub total: usize,
    pub failed: usize,
    /// Answers (any status) by `X-Version` (`"-"` when absent).
    pub by_version: std::collections::BTreeMap<String, usize>,
}

impl Summary {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Summary {
        let mut s = Summary::default();
        for x in samples {
            s.total += 1;
            if x.failed() {
                s.failed += 1;
            }
            if let Outcome::Status(_) = x.outcome {
                *s.by_version
                    .entry(x.version.clone().unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
            }
        }
        s
    }

    /// The share (0..=1) of answered requests that `version` answered.
    pub fn share(&self, version: &str) -> f64 {
        let answered: usize = self.by_version.values().sum();
        if answered == 0 {
            return 0.0;
        }
        self.by_version.get(version).copied().unwrap_or(0) as f64 / answered as f64
    }
}

/// The failed samples, for a failure message (at most `n`).
pub fn failures(samples: &[Sample], n: usize) -> Vec<&Sample> {
    samples.iter().filter(|s| s.failed()).take(n).collect()
}
