//! A git smart-HTTP server for the tests: a tiny CGI adapter (axum) in front of the real
//! `git http-backend` that ships with git, behind HTTP basic auth.
//!
//! Every request spawns `git http-backend` with the CGI environment (`GIT_PROJECT_ROOT`,
//! `GIT_HTTP_EXPORT_ALL`, `PATH_INFO`, `QUERY_STRING`, `REQUEST_METHOD`, `CONTENT_TYPE`,
//! `REMOTE_USER`, ...), feeds it the request body and turns its CGI answer (headers, blank line,
//! body) into the HTTP response. When a password is set ([`GitHttp::require_password`], also
//! while running: a host that starts protecting a repo, or rotates its credential), requests
//! without the expected credentials get `401` with a `WWW-Authenticate: Basic` challenge, as a
//! real host does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// URL prefix under which repositories are served: `http://addr/git/<repo>`.
pub const PREFIX: &str = "/git";

struct Inner {
    root: PathBuf,
    user: String,
    /// `None`: anonymous read access.
    password: Mutex<Option<String>>,
    backend: PathBuf,
}

/// A running server; stops (and waits) on [`GitHttp::stop`].
pub struct GitHttp {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Where `git http-backend` is (`git --exec-path`), if git is installed.
pub fn http_backend() -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = Path::new(&dir).join("git-http-backend");
    path.is_file().then_some(path)
}

impl GitHttp {
    /// Serve the repositories under `root` (read-only: `git http-backend` refuses pushes
    /// without `REMOTE_USER` + `http.receivepack`; the tests push over `file://`).
    pub async fn start(root: &Path, user: &str, password: Option<&str>) -> GitHttp {
        let backend = http_backend().expect("git http-backend not found (git --exec-path)");
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            user: user.to_string(),
            password: Mutex::new(password.map(str::to_string)),
            backend,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        GitHttp {
            addr,
            inner,
            stop,
            task,
        }
    }

    /// The clone URL of `repo` (a directory name under the root), without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}{PREFIX}/{repo}", self.addr)
    }

    /// Require basic auth with this password from now on (`None`: anonymous access).
    pub fn require_password(&self, password: Option<&str>) {
        *self.inner.password.lock().unwrap() = password.map(str::to_string);
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(password) = inner.password.lock().unwrap().clone() else {
        return true;
    };
    let Some(value) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
        return false;
    };
    let expected = format!("{}:{password}", inner.user);
    decoded == expected.as_bytes()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::from("authentication required\n"))
            .unwrap();
    }
    let Some(path_info) = uri.path().strip_prefix(PREFIX) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new(&inner.backend);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &inner.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &inner.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let encoding = header("content-encoding");
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    // Protocol v2 is negotiated through this header (as Apache's `SetEnvIf Git-Protocol`).
    let protocol = header("git-protocol");
    if !protocol.is_empty() {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Write the body while the backend's answer is read, so neither side blocks on a full pipe.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let out = child.wait_with_output().await.unwrap();
    let _ = writer.await;
    cgi_response(&out.stdout, &out.stderr)
}

/// A CGI answer (`Header: value` lines, a blank line, the body) as an HTTP response.
fn cgi_response(stdout: &[u8], stderr: &[u8]) -> Response {
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(format!(
                "git http-backend: {}",
                String::from_utf8_lossy(stderr)
            )))
            .unwrap();
    };
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&stdout[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(Body::from(stdout[end + sep..].to_vec()))
        .unwrap()
}
