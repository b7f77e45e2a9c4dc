//! The connection limits against real loopback connections (127.0.0.1 and 127.0.0.2 are two
//! client addresses on Linux).

use std::time::Duration;

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Bound on every wait for something that should happen (generous: a loaded CI machine).
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn limits_follow_the_open_files_limit() {
    let l = |n| {
        let l = Limits::for_open_files(n, 1000);
        (l.max_connections, l.per_client)
    };
    assert_eq!(l(256), (192, 24), "64 kept for the process");
    assert_eq!(l(1024), (768, 96), "a quarter kept");
    assert_eq!(l(100), (50, 6), "at most half kept");
    assert_eq!(l(8), (4, 4));
    assert_eq!(l(1), (1, 1), "never zero");
    assert_eq!(l(1 << 20), (MAX_CONNECTIONS, MAX_CONNECTIONS / 8));
    let mine = Limits::from_rlimit(1000);
    assert!(mine.max_connections >= 1 && mine.per_client <= mine.max_connections);
}

#[test]
fn clients_are_told_apart_by_address_and_ipv6_by_prefix() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(client_key(ip("10.1.2.3")), ip("10.1.2.3"));
    assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
    assert_eq!(
        client_key(ip("2001:db8:1:2:ffff::9")),
        client_key(ip("2001:db8:1:2::1"))
    );
    assert_ne!(
        client_key(ip("2001:db8:1:3::1")),
        client_key(ip("2001:db8:1:2::1"))
    );
}

/// A server on a loopback port with `limits`: its address, counters and stop handle.
async fn start(
    limits: Limits,
) -> (
    SocketAddr,
    Arc<Stats>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { body.len().to_string() })
                .layer(axum::extract::DefaultBodyLimit::max(1000)),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let (s, t) = (stats.clone(), stop.clone());
    let task = tokio::spawn(async move {
        serve(listener, app, limits, s, t).await.unwrap();
    });
    (addr, stats, stop, task)
}

fn limits(header_timeout: Duration, max_connections: usize, per_client: usize) -> Limits {
    Limits {
        max_connections,
        per_client,
        header_timeout,
        body_timeout: Duration::from_secs(60),
        max_body_bytes: 1000,
    }
}

/// A connection to `addr` from the loopback address `from` (`[127, 0, 0, x]`).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `stream` within `within` (end of stream or a reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Send `request` on `stream` and read one response: status and body (`Content-Length` bodies).
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before a response: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = (head.lines())
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, body[..len].to_string());
                }
            }
        }
    })
    .await
    .expect("a response in time")
}

async fn get_from(from: [u8; 4], addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect_from(from, addr).await;
    exchange(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await
}

#[tokio::test]
async fn half_a_request_line_is_dropped_after_the_header_timeout() {
    let (addr, stats, stop, task) = start(limits(Duration::from_millis(300), 100, 100)).await;
    let mut slow = connect_from([127, 0, 0, 1], addr).await;
    slow.write_all(b"GET / HT").await.unwrap();
    assert!(closed_within(&mut slow, PATIENCE).await, "still open");
    assert_eq!(stats.header_timeouts(), 1);
    // A client that sent nothing at all goes the same way.
    let mut silent = connect_from([127, 0, 0, 1], addr).await;
    assert!(closed_within(&mut silent, PATIENCE).await);
    assert_eq!(stats.header_timeouts(), 2);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let (addr, stats, stop, task) = start(limits(Duration::from_millis(300), 100, 100)).await;
    let mut s = connect_from([127, 0, 0, 1], addr).await;
    let ask = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(exchange(&mut s, ask).await, (200, "ok".into()));
    // Kept alive: a second request on it is served.
    assert_eq!(exchange(&mut s, ask).await, (200, "ok".into()));
    assert!(
        closed_within(&mut s, PATIENCE).await,
        "idle connection kept"
    );
    assert_eq!(stats.open(), 0);
    stop.cancel();
    task.await.unwrap();
}

/// One address at its limit is refused at once; another address, and the same one after a
/// connection closes, is served; handlers see the peer.
#[tokio::test]
async fn a_client_at_its_limit_is_refused_while_others_are_served() {
    let (addr, stats, stop, task) = start(limits(Duration::from_secs(60), 100, 3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        s.write_all(b"GET / HT").await.unwrap();
        held.push(s);
    }
    let mut fourth = connect_from([127, 0, 0, 1], addr).await;
    assert!(
        closed_within(&mut fourth, PATIENCE).await,
        "over the per-client limit"
    );
    assert_eq!(stats.refused(), (0, 1));
    assert_eq!(
        get_from([127, 0, 0, 2], addr, "/peer").await,
        (200, "127.0.0.2".into())
    );
    drop(held.pop());
    // The slot comes back when the server notices the close.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stats.open() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get_from([127, 0, 0, 1], addr, "/").await,
        (200, "ok".into())
    );
    // (A connection halfway through its headers holds a shutdown until its header timeout.)
    drop(held);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_full_server_refuses_new_connections_and_recovers() {
    let (addr, stats, stop, task) = start(limits(Duration::from_secs(60), 2, 2)).await;
    let mut a = connect_from([127, 0, 0, 1], addr).await;
    a.write_all(b"GET / HT").await.unwrap();
    let mut b = connect_from([127, 0, 0, 2], addr).await;
    b.write_all(b"GET / HT").await.unwrap();
    let mut c = connect_from([127, 0, 0, 3], addr).await;
    assert!(
        closed_within(&mut c, PATIENCE).await,
        "over the server's limit"
    );
    assert_eq!(stats.refused(), (1, 0));
    // Finishing a's request frees its slot once the response is sent and the connection closes.
    let (status, _) = exchange(&mut a, "TP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stats.open() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get_from([127, 0, 0, 3], addr, "/").await,
        (200, "ok".into())
    );
    assert!(stats
        .prometheus()
        .contains("baton_http_connections_refused_total{reason=\"server_full\"} 1"));
    drop(b);
    stop.cancel();
    task.await.unwrap();
}

/// A body that does not arrive whole in time is a 408 and the connection is closed; a body over
/// the route's own limit is the route's 413.
#[tokio::test]
async fn request_bodies_are_bounded_in_time_and_size() {
    let mut l = limits(Duration::from_secs(60), 100, 100);
    l.body_timeout = Duration::from_millis(300);
    let (addr, stats, stop, task) = start(l).await;
    let mut s = connect_from([127, 0, 0, 1], addr).await;
    let (status, body) = exchange(
        &mut s,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(closed_within(&mut s, PATIENCE).await);
    assert!(stats
        .prometheus()
        .contains("baton_http_timeouts_total{phase=\"body\"} 1"));

    let mut s = connect_from([127, 0, 0, 1], addr).await;
    let ok = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(exchange(&mut s, ok).await, (200, "5".into()));
    let big = "x".repeat(5000);
    let over = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n{big}");
    let (status, _) = exchange(&mut s, &over).await;
    assert_eq!(status, 413);
    stop.cancel();
    task.await.unwrap();
}

/// Shutdown: the server stops accepting and returns once its connections are done.
#[tokio::test]
async fn shutdown_ends_the_server_with_its_idle_connections() {
    let (addr, _stats, stop, task) = start(limits(Duration::from_secs(60), 100, 100)).await;
    let mut idle = connect_from([127, 0, 0, 1], addr).await;
    assert_eq!(
        exchange(&mut idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .0,
        200
    );
    stop.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stopped")
        .unwrap();
    assert!(closed_within(&mut idle, PATIENCE).await);
}
