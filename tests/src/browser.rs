//! A headless Chromium driven over WebDriver (HTTP, JSON) from the tests: Debian's `chromium`
//! and `chromium-driver` (`apt-get install -y chromium chromium-driver`).
//!
//! [`Browser::start`] returns `None` after printing why when either is missing, unless `CI` is
//! set: then a missing browser fails the test (CI must install it).
// Test support: a browser that does not start is a failed test, loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A WebDriver session on a chromedriver this process started.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Start chromedriver and open a headless Chromium session with a fresh profile.
    pub async fn start(test: &str) -> Option<Browser> {
        let (Some(driver_bin), Some(chromium)) = (
            find(&["chromedriver", "chromium-driver"]),
            find(&["chromium", "chromium-browser"]),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: chromium and chromedriver are required in CI (apt-get install -y chromium chromium-driver)"
            );
            std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skipped {test}: chromium or chromedriver is not installed (apt-get install -y chromium chromium-driver)\n")).ok();
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("bound").port()
        };
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: tempfile::tempdir().expect("temp dir"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()));
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", b._profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let r: Value = b
            .http
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        b.session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Some(b)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let r: Value = request
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver JSON");
        r["value"].clone()
    }

    /// Open `url`; returns when the document has loaded.
    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
        assert!(v.is_null(), "navigation failed: {v}");
    }

    /// Run `script` (a function body: `return ...`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Evaluate `script` until it returns something other than `null`/`false`, or panic after
    /// `timeout` with `what`.
    pub async fn wait_for(&self, script: &str, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == json!(false)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click the first element matching `css` (a real WebDriver click). The status page
    /// re-renders its rows on its own every few seconds: an element replaced between finding
    /// and clicking it ("stale element reference") is found again.
    pub async fn click(&self, css: &str) {
        let mut attempts = 0;
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            let id = found
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no element {css}: {found}"))
                .to_string();
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    json!({}),
                )
                .await;
            attempts += 1;
            if v["error"] == "stale element reference" && attempts < 3 {
                continue;
            }
            assert!(v.is_null(), "click on {css} failed: {v}");
            return;
        }
    }

    /// Click the status page row of `app` and wait for its detail view: the text of the diff,
    /// and of the whole detail panel.
    pub async fn open_detail(&self, app: &str) -> (String, String) {
        self.click(&format!("#rows tr[data-app='{app}']")).await;
        let diff = self
            .wait_for(
                "const d = document.querySelector('#detail #diff'); return d && d.innerText",
                Duration::from_secs(10),
                "the detail view",
            )
            .await;
        let detail = self
            .eval("return document.querySelector('#detail').innerText")
            .await;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        (text(&diff), text(&detail))
    }

    /// The browser's cookies for the current page, as WebDriver sees them (HttpOnly ones too,
    /// with their `httpOnly` and `sameSite` attributes).
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self
            .call(reqwest::Method::GET, "/cookie", Value::Null)
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Resize the browser window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Run a Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// Set `value` into the input `css` (by script) and fire its `input` event.
    pub async fn fill(&self, css: &str, value: &str) {
        let script = format!(
            "const e = document.querySelector({}); e.value = {}; e.dispatchEvent(new Event('input')); return true",
            json!(css),
            json!(value)
        );
        assert_eq!(self.eval(&script).await, json!(true), "no input {css}");
    }

    /// End the session (chromedriver quits Chromium) and stop chromedriver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never gets to close(): end the session synchronously (so chromedriver
        // quits its Chromium), then stop our chromedriver by its handle.
        if let Some(addr) = self.base.strip_prefix("http://") {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
