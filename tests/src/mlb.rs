//! The real traffic path of the rollout tests: **unmodified marathon-lb** (run in place from
//! `../shared/marathon-lb/upstream`, never copied) reading a Marathon-compatible scheduler and
//! driving Debian's **HAProxy**.
//!
//! Everything lives in one temp dir `$T` (also marathon-lb's working and temp dir, with
//! `PYTHONDONTWRITEBYTECODE=1` so `../shared` stays unwritten): the generated `haproxy.cfg`, the
//! `reload.sh` marathon-lb runs after each change (start HAProxy, or replace it seamlessly: the
//! listening sockets are passed over the stats socket with `-x`, the old process finishes its
//! connections with `-sf`), HAProxy's pid file and stats socket, marathon-lb's log. marathon-lb
//! runs with `--sse --group external --health-check --dont-bind-http-https`; its `HAPROXY_HEAD`
//! is upstream's minus what a test machine cannot have (Lua files under `/marathon-lb`, syslog,
//! `maxconn 50000`, state files under `/var`), plus a `listen stats` on a free loopback port
//! (`stats uri /haproxy?stats`, so the CSV is at `/haproxy?stats;csv`, the URL `baton serve
//! --haproxy-stats` takes).
//!
//! Teardown (on drop, also when a test panics) kills marathon-lb's process group (it and any
//! `reload.sh` it runs) and then only the HAProxy processes whose command line names this
//! `$T/haproxy.cfg` (HAProxy daemonizes out of the group).
//!
//! marathon-lb also copies each config it writes to `/tmp/hap_cfg.{1..5}` (hard-coded upstream,
//! shared by every marathon-lb on the machine); those copies are left alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What the harness runs; found by [`Tools::find`].
#[derive(Debug, Clone)]
pub struct Tools {
    /// `../shared/marathon-lb/upstream/marathon_lb.py`.
    pub marathon_lb: PathBuf,
    /// The Python of `target/mlb-python` (marathon-lb's dependencies).
    pub python: PathBuf,
    /// Debian's `haproxy`.
    pub haproxy: PathBuf,
}

impl Tools {
    /// Everything the real traffic path needs, or why it cannot run (`scripts/install-deps.sh`
    /// installs HAProxy and the virtualenv; `../shared` is beside the project on developer
    /// machines and in CI).
    pub fn find() -> Result<Tools, String> {
        let shared = crate::shared_dir();
        let marathon_lb = shared.join("marathon-lb/upstream/marathon_lb.py");
        if !marathon_lb.is_file() {
            return Err(format!(
                "{} is absent (marathon-lb's source lives beside the project on developer machines and in CI)",
                marathon_lb.display()
            ));
        }
        let python = crate::repo_root().join("target/mlb-python/bin/python3");
        if !python.is_file() {
            return Err(format!(
                "{} is absent (scripts/install-deps.sh creates it)",
                python.display()
            ));
        }
        let haproxy = which("haproxy")
            .ok_or("haproxy is not installed (scripts/install-deps.sh installs it)")?;
        Ok(Tools {
            marathon_lb,
            python,
            haproxy,
        })
    }

    /// [`Tools::find`], printing `skipped <test>: <why>` when something is missing.
    pub fn or_skip(test: &str) -> Option<Tools> {
        match Tools::find() {
            Ok(t) => Some(t),
            Err(why) => {
                eprintln!("skipped {test}: {why}");
                None
            }
        }
    }
}

/// `name` on `PATH`, or in the sbin directories a non-root `PATH` may lack.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller's server).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// One row of HAProxy's stats CSV, by column name (columns differ between versions; 2.6 even
/// has one named `-`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow(pub BTreeMap<String, String>);

impl StatRow {
    pub fn get(&self, column: &str) -> &str {
        self.0.get(column).map_or("", String::as_str)
    }

    /// A numeric column; empty is 0.
    pub fn num(&self, column: &str) -> u64 {
        self.get(column).parse().unwrap_or(0)
    }

    /// A server row (not the `FRONTEND`/`BACKEND` summary of a proxy).
    pub fn is_server(&self) -> bool {
        !matches!(self.get("svname"), "FRONTEND" | "BACKEND")
    }

    /// Responses the server sent, from the `hrsp_*` columns.
    pub fn responses(&self) -> u64 {
        [
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
        ]
        .iter()
        .map(|c| self.num(c))
        .sum()
    }
}

/// Parse the stats CSV: the header line `# pxname,svname,...`, then one row per line.
pub fn parse_stats(csv: &str) -> Vec<StatRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(',').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            StatRow(
                names
                    .iter()
                    .zip(l.split(','))
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect()
}

/// marathon-lb and the HAProxy it drives, for one test.
pub struct MarathonLb {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The HAProxy stats listener (`127.0.0.1:<port>`).
    pub stats_port: u16,
    http: reqwest::Client,
}

/// How long a test waits for the load balancer (a loaded 2-core machine: marathon-lb
/// regenerates and checks the config with `haproxy -c` on every relevant event).
pub const DEADLINE: Duration = Duration::from_secs(120);

impl MarathonLb {
    /// Start marathon-lb against the Marathon API at `marathon` (e.g. a dev scheduler's URL).
    pub fn start(tools: &Tools, marathon: &str) -> MarathonLb {
        MarathonLb::start_with(tools, marathon, false)
    }

    /// [`MarathonLb::start`], and with `getpids` upstream's Lua service `/_haproxy_getpids` on the
    /// stats port (`getpids.lua`, loaded in place), which marathon-lb's `zdd.py` polls.
    pub fn start_with(tools: &Tools, marathon: &str, getpids: bool) -> MarathonLb {
        let dir = tempfile::Builder::new()
            .prefix("baton-mlb-")
            .tempdir()
            .expect("temp dir");
        let t = dir.path();
        let stats_port = free_port();
        let haproxy = tools.haproxy.display().to_string();
        let cfg = t.join("haproxy.cfg");
        let pid = t.join("haproxy.pid");
        let sock = t.join("stats.sock");
        // Started, or replaced with the listening sockets handed over (no connection refused
        // during a reload) while the old process finishes what it serves.
        let reload = format!(
            "#!/bin/sh\n\
             set -e\n\
             OLD=$(cat '{pid}' 2>/dev/null || true)\n\
             if [ -n \"$OLD\" ] && kill -0 $OLD 2>/dev/null; then\n\
             \x20 exec '{haproxy}' -f '{cfg}' -p '{pid}' -D -x '{sock}' -sf $OLD\n\
             fi\n\
             exec '{haproxy}' -f '{cfg}' -p '{pid}' -D\n",
            pid = pid.display(),
            cfg = cfg.display(),
            sock = sock.display(),
        );
        let script = t.join("reload.sh");
        std::fs::write(&script, reload).expect("write reload.sh");
        make_executable(&script);
        let mut head = haproxy_head(&sock, stats_port);
        if getpids {
            let lua = tools.marathon_lb.with_file_name("getpids.lua");
            head = head
                .replacen(
                    "global\n",
                    &format!("global\n  lua-load {}\n", lua.display()),
                    1,
                )
                .replacen(
                    "  stats enable\n",
                    "  stats enable\n  http-request use-service lua.getpids if { path /_haproxy_getpids }\n",
                    1,
                );
        }
        let log = File::create(t.join("marathon-lb.log")).expect("marathon-lb.log");
        let log2 = log.try_clone().expect("log handle");
        // marathon-lb calls `haproxy -c` and `pidof haproxy` through PATH.
        let mut path = vec![tools
            .haproxy
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut cmd = Command::new(&tools.python);
        cmd.arg(&tools.marathon_lb)
            .args(["--marathon", marathon])
            .args(["--sse", "--group", "external", "--health-check"])
            .arg("--dont-bind-http-https")
            .arg("--haproxy-config")
            .arg(&cfg)
            .arg("--command")
            .arg(&script)
            .args(["--syslog-socket", "/dev/null"])
            .current_dir(t)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("TMPDIR", t)
            .env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("HAPROXY_HEAD", head)
            // Upstream binds this frontend to `*:9091` even with --dont-bind-http-https.
            .env(
                "HAPROXY_HTTP_FRONTEND_APPID_HEAD",
                format!(
                    "\nfrontend marathon_http_appid_in\n  bind 127.0.0.1:{}\n  mode http\n",
                    free_port()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Its own process group: teardown ends it and any reload.sh it is running.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start marathon-lb");
        MarathonLb {
            dir,
            child: Some(child),
            stats_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        }
    }

    /// The stats CSV URL (what `baton serve --haproxy-stats` takes).
    pub fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/haproxy?stats;csv", self.stats_port)
    }

    /// The stats CSV, or `None` while HAProxy is not (yet) up.
    pub async fn stats_csv(&self) -> Option<String> {
        let r = self.http.get(self.stats_url()).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    }

    /// The parsed stats (empty while HAProxy is not up).
    pub async fn stats(&self) -> Vec<StatRow> {
        self.stats_csv()
            .await
            .map(|c| parse_stats(&c))
            .unwrap_or_default()
    }

    /// The server rows of `backend`.
    pub async fn servers(&self, backend: &str) -> Vec<StatRow> {
        self.stats()
            .await
            .into_iter()
            .filter(|r| r.get("pxname") == backend && r.is_server())
            .collect()
    }

    /// Wait until `backend` has exactly `up` servers whose status is UP (and, when given,
    /// exactly `total` servers in all, e.g. the drained ones in MAINT); returns its rows.
    /// Panics with marathon-lb's log after [`DEADLINE`].
    pub async fn wait_servers(
        &mut self,
        backend: &str,
        up: usize,
        total: Option<usize>,
    ) -> Vec<StatRow> {
        let what = format!(
            "{up} servers UP{} in backend {backend}",
            total.map(|t| format!(" of {t}")).unwrap_or_default()
        );
        self.wait_stats(&what, |rows| {
            let servers: Vec<&StatRow> = rows
                .iter()
                .filter(|r| r.get("pxname") == backend && r.is_server())
                .collect();
            let n_up = servers
                .iter()
                .filter(|r| r.get("status").starts_with("UP"))
                .count();
            n_up == up && total.is_none_or(|t| servers.len() == t)
        })
        .await
        .into_iter()
        .filter(|r| r.get("pxname") == backend && r.is_server())
        .collect()
    }

    /// Poll the stats until `check` holds; returns those rows. Panics with the last rows and
    /// marathon-lb's log after [`DEADLINE`], or at once when marathon-lb has exited.
    pub async fn wait_stats(
        &mut self,
        what: &str,
        check: impl Fn(&[StatRow]) -> bool,
    ) -> Vec<StatRow> {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let rows = self.stats().await;
            if check(&rows) {
                return rows;
            }
            self.assert_running(what);
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}; stats:\n{}\nmarathon-lb:\n{}",
                self.stats_csv().await.unwrap_or_default(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Panic with its log if marathon-lb has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what}: marathon-lb exited ({status}):\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// The last lines of marathon-lb's log (it logs at DEBUG: each config it writes and why).
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("marathon-lb.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// The HAProxy config marathon-lb wrote last.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
    }

    /// The temp dir (config, pid file, stats socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The HAProxy processes of this load balancer still alive (the current one, and old ones
    /// finishing their connections after a reload).
    pub fn haproxy_pids(&self) -> Vec<i32> {
        processes_naming(&self.dir.path().join("haproxy.cfg"))
    }
}

impl Drop for MarathonLb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // The group: marathon-lb and a reload.sh it may be running.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // HAProxy left the group when it daemonized: only processes naming our own config die.
        // A reload.sh killed mid-way may have started one just now, hence the few rounds.
        let cfg = self.dir.path().join("haproxy.cfg");
        for _ in 0..20 {
            let pids = processes_naming(&cfg);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Live processes (not zombies) whose command line has `path` as an argument.
fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie && cmdline.split(|b| *b == 0).any(|arg| arg == needle)
        })
        .collect()
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).expect("stat").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}

/// Upstream's `HAPROXY_HEAD` (config.py) without what needs files outside the temp dir or
/// raised limits: no Lua services, syslog, SSL defaults or server-state files; `maxconn` 256
/// instead of 50,000. The defaults that make reloads and task kills lose no request are
/// upstream's: `retries 3`, `option redispatch`, `option http-server-close`, its timeouts.
fn haproxy_head(sock: &Path, stats_port: u16) -> String {
    format!(
        "global\n\
         \x20 maxconn 256\n\
         \x20 stats socket {sock} mode 600 level admin expose-fd listeners\n\
         \x20 hard-stop-after 60s\n\
         defaults\n\
         \x20 retries                   3\n\
         \x20 backlog                 256\n\
         \x20 maxconn                 256\n\
         \x20 timeout connect          3s\n\
         \x20 timeout client          30s\n\
         \x20 timeout server          30s\n\
         \x20 timeout tunnel        3600s\n\
         \x20 timeout http-keep-alive  1s\n\
         \x20 timeout http-request    15s\n\
         \x20 timeout queue           30s\n\
         \x20 timeout tarpit          60s\n\
         \x20 option            dontlognull\n\
         \x20 option            http-server-close\n\
         \x20 option            redispatch\n\
         listen stats\n\
         \x20 bind 127.0.0.1:{stats_port}\n\
         \x20 balance\n\
         \x20 mode http\n\
         \x20 stats enable\n\
         \x20 stats uri /haproxy?stats\n\
         \x20 monitor-uri /_haproxy_health_check\n",
        sock = sock.display()
    )
}
