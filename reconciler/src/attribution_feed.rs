//! Feeds [`Attributions`] from a scheduler's `/v2/events` stream (`api_post_event` only): the
//! I/O shell around the pure [`crate::drift::parse_api_post`]. Reconnects with backoff (1 s
//! doubling to 60 s) until `shutdown`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::drift::Attributions;
use crate::scheduler::marathon::Marathon;
use crate::scheduler::sse;

/// Record every `api_post_event` of `marathon` into `into` until `shutdown`. `connected` is
/// notified each time the stream is (re)opened, so callers can wait for it instead of sleeping.
pub async fn follow(
    marathon: Marathon,
    into: Arc<Mutex<Attributions>>,
    connected: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    follow_api_posts(
        &marathon,
        &shutdown,
        || connected.notify_waiters(),
        |raw| {
            if let Ok(data) = serde_json::from_str::<serde_json::Value>(&raw.data) {
                into.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ingest(&raw.event, &data);
            }
        },
    )
    .await;
}

/// Hand every `api_post_event` of `marathon` to `event` until `shutdown`, reconnecting with
/// backoff (1 s doubling to 60 s); `opened` is called each time the stream is (re)opened.
pub async fn follow_api_posts(
    marathon: &Marathon,
    shutdown: &CancellationToken,
    mut opened: impl FnMut(),
    mut event: impl FnMut(&sse::RawEvent),
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let resp = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = marathon.event_stream("event_type=api_post_event") => r,
        };
        match resp {
            Ok(resp) => {
                delay = Duration::from_secs(1);
                opened();
                let mut body = resp.bytes_stream();
                let mut parser = sse::Parser::default();
                loop {
                    let chunk = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = body.next() => c,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    for raw in parser.feed(&chunk) {
                        event(&raw);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "event stream not open"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
