//! Feeds [`Attributions`] from a scheduler's `/v2/events` stream (`api_post_event` only): the
//! I/O shell around the pure [`baton_core::drift::parse_api_post`]. [`follow_events`] follows
//! other event types the same way (the lease sweep's terminal task statuses). Reconnects with backoff (1 s
//! doubling to 60 s) until `shutdown`, and reopens a stream silent for [`STREAM_IDLE`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use baton_core::app::sse;
use baton_core::drift::Attributions;
use baton_marathon::marathon::Marathon;

/// A stream that delivers nothing (not even a keep-alive comment) this long is reopened: a
/// stalled connection (a frozen or vanished scheduler, a proxy that stopped forwarding) would
/// otherwise be followed forever. The dev scheduler sends a keep-alive every 15 s; reopening a
/// stream that was only quiet costs one request.
pub const STREAM_IDLE: Duration = Duration::from_secs(120);

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
/// backoff (1 s doubling to 60 s); `opened` is called each time the stream is (re)opened. A
/// stream silent for [`STREAM_IDLE`] is reopened.
pub async fn follow_api_posts(
    marathon: &Marathon,
    shutdown: &CancellationToken,
    opened: impl FnMut(),
    event: impl FnMut(&sse::RawEvent),
) {
    follow_api_posts_idle(marathon, shutdown, STREAM_IDLE, opened, event).await
}

/// [`follow_api_posts`] with the idle bound given.
pub async fn follow_api_posts_idle(
    marathon: &Marathon,
    shutdown: &CancellationToken,
    idle: Duration,
    opened: impl FnMut(),
    event: impl FnMut(&sse::RawEvent),
) {
    follow_events_idle(
        marathon,
        shutdown,
        "event_type=api_post_event",
        idle,
        opened,
        event,
    )
    .await
}

/// Hand every event `query` selects (e.g. `event_type=status_update_event`) to `event` until
/// `shutdown`, as [`follow_api_posts`] does for `api_post_event`.
pub async fn follow_events(
    marathon: &Marathon,
    shutdown: &CancellationToken,
    query: &str,
    event: impl FnMut(&sse::RawEvent),
) {
    follow_events_idle(marathon, shutdown, query, STREAM_IDLE, || {}, event).await
}

async fn follow_events_idle(
    marathon: &Marathon,
    shutdown: &CancellationToken,
    query: &str,
    idle: Duration,
    mut opened: impl FnMut(),
    mut event: impl FnMut(&sse::RawEvent),
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let resp = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = marathon.event_stream(query) => r,
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
                        c = tokio::time::timeout(idle, body.next()) => c,
                    };
                    let Ok(chunk) = chunk else {
                        tracing::warn!(
                            idle = %humantime::format_duration(idle),
                            "the scheduler's event stream delivered nothing for too long: reopening it"
                        );
                        break;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use baton_marathon::marathon::MarathonConfig;

    /// A scheduler whose event stream answers its headers, then never sends a byte (a frozen
    /// scheduler, a proxy that stopped forwarding): the follower reopens it after the idle bound
    /// instead of following a dead stream forever.
    #[tokio::test]
    async fn a_stalled_event_stream_is_reopened() {
        let opened_by_server = Arc::new(AtomicUsize::new(0));
        let count = opened_by_server.clone();
        let app = axum::Router::new().route(
            "/v2/events",
            axum::routing::get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                async {
                    let never = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        axum::body::Body::from_stream(never),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let marathon = Marathon::new(MarathonConfig::new(url)).unwrap();
        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicUsize::new(0));
        let o = opened.clone();
        let follow = {
            let stop = stop.clone();
            tokio::spawn(async move {
                follow_api_posts_idle(
                    &marathon,
                    &stop,
                    Duration::from_millis(200),
                    move || {
                        o.fetch_add(1, Ordering::SeqCst);
                    },
                    |_| {},
                )
                .await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while opened.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stalled stream was never reopened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(opened_by_server.load(Ordering::SeqCst) >= 2);
        stop.cancel();
        follow.await.unwrap();
        server.abort();
    }
}
