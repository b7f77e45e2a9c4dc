//! How Baton's HTTP servers (`baton serve`, the dev scheduler) accept and hold connections, so
//! that no client holds more than its share of the process:
//!
//! - HTTP/1.1 (hyper): a request's headers must arrive within [`Limits::header_timeout`] of the
//!   connection opening or of the previous response, so a client that sends half a request line,
//!   and an idle keep-alive connection, are closed then.
//! - A request body must arrive whole within [`Limits::body_timeout`] of its headers (no tower
//!   layer bounds a body's total time, only the gap between its chunks): read here, at most
//!   [`Limits::max_body_bytes`] plus one chunk, then handed on in memory. The routes' own body
//!   limits (never above `max_body_bytes`) still answer 413.
//! - At most [`Limits::max_connections`] connections at once, derived from the open-files limit
//!   (`RLIMIT_NOFILE`) with room left for the process's own files and outgoing connections, and at
//!   most [`Limits::per_client`] from one client address (IPv6: one /64), so one source cannot take
//!   every slot. A connection over either limit is closed at once (the server never stops
//!   accepting, so a health check never waits behind a flood), logged (the first at once, then a
//!   count at most every 10 s) and counted ([`Stats`]).
//! - Shutdown: no new connections; requests in flight finish, idle connections close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time for a request's headers (and for the next request on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request body, from its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most connections any server takes, however high the open-files limit (each holds buffers).
pub const MAX_CONNECTIONS: usize = 16_384;
/// How often refused connections are summed up in the log while they go on.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one server lets its clients hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64).
    pub per_client: usize,
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// The largest request body read; at least every route's own body limit.
    pub max_body_bytes: usize,
}

impl Limits {
    /// Limits for a process allowed `open_files` descriptors (the soft `RLIMIT_NOFILE`): a
    /// quarter of them (at least 64, at most half) is left for the process's own files, its
    /// outgoing connections (scheduler, Vault, git, notifications) and the runtime; the rest, up
    /// to [`MAX_CONNECTIONS`], is for clients, an eighth of it (at least 4) per client address.
    pub fn for_open_files(open_files: u64, max_body_bytes: usize) -> Limits {
        let open = usize::try_from(open_files).unwrap_or(usize::MAX);
        let reserve = (open / 4).max(64).min(open / 2);
        let max_connections = open.saturating_sub(reserve).clamp(1, MAX_CONNECTIONS);
        Limits {
            max_connections,
            per_client: (max_connections / 8).max(4).min(max_connections),
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_body_bytes,
        }
    }

    /// [`for_open_files`](Self::for_open_files) with this process's soft open-files limit
    /// (1,024 when it cannot be read).
    pub fn from_rlimit(max_body_bytes: usize) -> Limits {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _hard)| soft)
            .unwrap_or(1024);
        Limits::for_open_files(soft, max_body_bytes)
    }
}

/// A server's connection counters (`baton serve` shows them in `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    max_connections: AtomicU64,
    per_client: AtomicU64,
    open: AtomicU64,
    accepted: AtomicU64,
    refused_server_full: AtomicU64,
    refused_client_full: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    accept_errors: AtomicU64,
}

/// Why a connection was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// [`Limits::max_connections`] were open.
    ServerFull,
    /// The client's address held [`Limits::per_client`] connections.
    ClientFull,
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed unserved because the server (`server_full`) or the client's address
    /// (`client_full`) was at its limit.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_server_full.load(Ordering::Relaxed),
            self.refused_client_full.load(Ordering::Relaxed),
        )
    }

    /// Connections closed because their headers, or the next request, did not come in time.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format (`baton_http_*`).
    pub fn prometheus(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (server_full, client_full) = self.refused();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in lines {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "baton_http_connections_max",
            "gauge",
            "connections the HTTP server takes at once (all clients, and per client address)",
            &[
                ("{scope=\"server\"}", get(&self.max_connections)),
                ("{scope=\"client\"}", get(&self.per_client)),
            ],
        );
        metric(
            "baton_http_connections_open",
            "gauge",
            "connections open now",
            &[("", self.open())],
        );
        metric(
            "baton_http_connections_accepted_total",
            "counter",
            "connections accepted and served",
            &[("", get(&self.accepted))],
        );
        metric(
            "baton_http_connections_refused_total",
            "counter",
            "connections closed unserved: the server or the client's address at its limit",
            &[
                ("{reason=\"server_full\"}", server_full),
                ("{reason=\"client_full\"}", client_full),
            ],
        );
        metric(
            "baton_http_timeouts_total",
            "counter",
            "connections closed because the request headers (or the next request) or the whole body did not arrive in time",
            &[
                ("{phase=\"headers\"}", self.header_timeouts()),
                ("{phase=\"body\"}", get(&self.body_timeouts)),
            ],
        );
        metric(
            "baton_http_accept_errors_total",
            "counter",
            "failed accepts (e.g. the process out of file descriptors)",
            &[("", get(&self.accept_errors))],
        );
        out
    }
}

/// Serve `app` on `listener` within `limits` until `shutdown`, then let requests in flight
/// finish. Handlers see the peer as `ConnectInfo<SocketAddr>`. Accept errors (out of file
/// descriptors) are logged, counted and retried after 100 ms; they never end the server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    stats
        .max_connections
        .store(limits.max_connections as u64, Ordering::Relaxed);
    stats
        .per_client
        .store(limits.per_client as u64, Ordering::Relaxed);
    tracing::info!(
        max_connections = limits.max_connections,
        per_client = limits.per_client,
        header_timeout_s = limits.header_timeout.as_secs(),
        body_timeout_s = limits.body_timeout.as_secs(),
        "HTTP connection limits"
    );
    let app = app.layer(axum::middleware::from_fn_with_state(
        BodyLimits {
            timeout: limits.body_timeout,
            max_bytes: limits.max_body_bytes,
            stats: stats.clone(),
        },
        whole_body_in_time,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let mut refusals = RefusalLog::default();
    let mut tick = tokio::time::interval(REFUSAL_LOG_EVERY);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                refusals.flush(false);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                refusals.accept_error(&e);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let admitted = match slots.clone().try_acquire_owned() {
            Err(_) => Err(Refusal::ServerFull),
            Ok(slot) => ClientSlot::take(&clients, peer.ip(), limits.per_client)
                .map(|client| (slot, client))
                .ok_or(Refusal::ClientFull),
        };
        let (slot, client) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                // Dropped: closed at once (a reset, as the client's bytes are unread).
                drop(stream);
                match why {
                    Refusal::ServerFull => &stats.refused_server_full,
                    Refusal::ClientFull => &stats.refused_client_full,
                }
                .fetch_add(1, Ordering::Relaxed);
                refusals.refused(why, peer, &limits);
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            http.clone(),
            Held {
                _slot: slot,
                _client: client,
                stats: stats.clone(),
            },
            shutdown.clone(),
        ));
    }
    refusals.flush(true);
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, served until the client or the server ends it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    held: Held,
    shutdown: CancellationToken,
) {
    let service =
        tower::ServiceExt::map_request(app, move |request: Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut conn =
        std::pin::pin!(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            held.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(%peer, error = %e, "connection ended");
    }
    drop(held);
}

/// What an open connection holds; given back when it closes.
struct Held {
    _slot: OwnedSemaphorePermit,
    _client: ClientSlot,
    stats: Arc<Stats>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The key one client's connections are counted under: its address, IPv6 by /64 (one host or
/// site usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One connection counted against its client's address.
struct ClientSlot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl ClientSlot {
    /// A slot for `ip`, unless it already holds `limit` connections.
    fn take(
        clients: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut held = clients.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: clients.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Refused connections and accept errors in the log: the first at once (WARN), the rest summed
/// up at most every [`REFUSAL_LOG_EVERY`], so a flood cannot flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    server_full: u64,
    client_full: u64,
    accept_errors: u64,
}

impl RefusalLog {
    fn quiet(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY)
    }

    fn refused(&mut self, why: Refusal, peer: SocketAddr, limits: &Limits) {
        if self.quiet() && self.server_full + self.client_full + self.accept_errors == 0 {
            self.last = Some(Instant::now());
            match why {
                Refusal::ServerFull => tracing::warn!(
                    %peer,
                    limit = limits.max_connections,
                    "connection refused: the server holds its limit of connections (set by the open-files limit)"
                ),
                Refusal::ClientFull => tracing::warn!(
                    %peer,
                    limit = limits.per_client,
                    "connection refused: this client address holds its limit of connections"
                ),
            }
            return;
        }
        match why {
            Refusal::ServerFull => self.server_full += 1,
            Refusal::ClientFull => self.client_full += 1,
        }
        self.flush(false);
    }

    fn accept_error(&mut self, e: &std::io::Error) {
        if self.quiet() && self.server_full + self.client_full + self.accept_errors == 0 {
            self.last = Some(Instant::now());
            tracing::warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
            return;
        }
        self.accept_errors += 1;
        self.flush(false);
    }

    /// Log what was counted since the last line, if the last line is old enough (or `now`).
    fn flush(&mut self, now: bool) {
        let (server_full, client_full, accept_errors) =
            (self.server_full, self.client_full, self.accept_errors);
        if server_full + client_full + accept_errors == 0 || !(now || self.quiet()) {
            return;
        }
        tracing::warn!(
            server_full,
            client_full,
            accept_errors,
            "connections refused (server or client address at its limit) and failed accepts since the last report"
        );
        *self = RefusalLog {
            last: Some(Instant::now()),
            ..RefusalLog::default()
        };
    }
}

#[derive(Clone)]
struct BodyLimits {
    timeout: Duration,
    max_bytes: usize,
    stats: Arc<Stats>,
}

/// Read the request body whole within `timeout` (at most `max_bytes` and one more chunk: a route
/// whose own limit it passes answers 413 itself), then run the route on it. Too slow: 408 and the
/// connection closed.
async fn whole_body_in_time(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut data = body.into_data_stream();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(limits.timeout, async {
        while let Some(chunk) = data.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > limits.max_bytes {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    })
    .await;
    match read {
        Ok(Ok(())) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => (
            StatusCode::BAD_REQUEST,
            [(header::CONNECTION, "close")],
            "the request body could not be read",
        )
            .into_response(),
        Err(_) => {
            limits.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                format!(
                    "the request body did not arrive within {} s",
                    limits.timeout.as_secs()
                ),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
