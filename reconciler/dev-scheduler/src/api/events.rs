//! `GET /v2/events`: the server-sent event stream of the [`EventBus`](crate::events::EventBus).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::Method;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde_json::json;

use super::query::Query;
use super::{client_ip, Ctx};
use crate::events::make_event;

/// `GET /v2/events`: the SSE stream, optionally filtered by `event_type` (repeatable). The stream
/// ends when the server shuts down.
pub(super) async fn stream(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(q): RawQuery,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let _ = method;
    let q = Query::parse(q.as_deref());
    let wanted: Vec<String> = q.all("event_type").map(str::to_string).collect();
    let rx = shared.bus.subscribe();
    // The attach event goes to this subscriber first, then to everybody (as in Marathon).
    let attached = make_event(
        "event_stream_attached",
        json!({"remoteAddress": client_ip(&addr)}),
    );
    shared.bus.publish(
        "event_stream_attached",
        json!({"remoteAddress": client_ip(&addr)}),
    );
    let stop = shared.http_stop.clone();
    let live = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    // Our own attach event was sent first already.
    .filter({
        let mut skipped_own = false;
        move |e| {
            let skip = !skipped_own && e.event_type == "event_stream_attached";
            if skip {
                skipped_own = true;
            }
            futures::future::ready(!skip)
        }
    });
    let all = stream::once(futures::future::ready(attached))
        .chain(live)
        .filter(move |e| {
            futures::future::ready(wanted.is_empty() || wanted.contains(&e.event_type))
        })
        .map(|e| {
            Ok(SseEvent::default()
                .event(e.event_type)
                .data(e.body.to_string()))
        })
        .take_until(async move { stop.cancelled().await });
    Sse::new(all).keep_alive(KeepAlive::default())
}
