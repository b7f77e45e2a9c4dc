//! The scheduler seam: everything Baton needs from Marathon (or, later, Nomad).
//!
//! - [`live`]: reading apps out of Marathon responses (and saved `--live` files).
//! - [`marathon`]: the Marathon REST client.
//! - [`dev`]: the dev scheduler, a Marathon-compatible server that runs apps as local processes.

pub mod dev;
pub mod live;
pub mod marathon;

/// Errors talking to a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler client configuration: {0}")]
    Config(String),
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}
