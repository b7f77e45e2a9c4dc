//! A real ZooKeeper (Debian's `zookeeper` 3.8 package, run with `java`) for the HA tests: a
//! standalone server on a free loopback port with a temp data dir, ready once the four-letter
//! word `ruok` answers `imok`; stopped (SIGKILL) on drop. Stop and start it again on the same
//! port and data dir to test an outage: its sessions survive in the data dir, as in a real
//! restart.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian's package puts the jars, and its log4j config.
const CLASSPATH: &str = "/usr/share/java/*:/etc/zookeeper/conf";
const MAIN: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Why ZooKeeper cannot run here (`None`: it can). Tests skip with this reason.
pub fn unavailable() -> Option<String> {
    let java = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("java").is_file()))
        .unwrap_or(false);
    if !java {
        return Some("no `java` on PATH (scripts/install-deps.sh installs zookeeper)".into());
    }
    let jar = std::fs::read_dir("/usr/share/java").ok().is_some_and(|d| {
        d.filter_map(Result::ok).any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("zookeeper-3") && n.ends_with(".jar")
        })
    });
    if !jar {
        return Some(
            "no ZooKeeper jar in /usr/share/java (scripts/install-deps.sh: apt-get install zookeeper)"
                .into(),
        );
    }
    None
}

/// A running ZooKeeper.
pub struct ZooKeeper {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Start one on a free port (with a 1 s tick, so sessions of 2 s to 20 s are granted);
    /// waits (up to 60 s) for `imok`.
    pub async fn start() -> ZooKeeper {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::mlb::free_port();
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=1000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,stat,srvr\nmaxSessionTimeout=20000\nminSessionTimeout=2000\n",
                dir.path().join("data").display()
            ),
        )
        .expect("zoo.cfg");
        let mut zk = ZooKeeper {
            port,
            dir,
            child: None,
        };
        zk.resume().await;
        zk
    }

    /// `127.0.0.1:<port>`: the connect string.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    /// Start again after [`ZooKeeper::stop`] (same port, same data: sessions survive).
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "ZooKeeper is running already");
        let log = std::fs::File::create(self.dir.path().join("server.out")).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new("java")
            .arg("-cp")
            .arg(CLASSPATH)
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.path().display()))
            .arg("-Xmx256m")
            .arg(MAIN)
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start java");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.ruok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("ZooKeeper exited ({status}):\n{}", self.log());
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ZooKeeper did not answer imok within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server's `Received:` packet count (four-letter word `srvr`): requests and pings of
    /// every client so far.
    pub fn received(&self) -> Option<u64> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(b"srvr").ok()?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines()
            .find_map(|l| l.strip_prefix("Received: "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Whether `ruok` answers `imok` now.
    pub fn ruok(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"ruok").is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out == "imok"
    }

    /// Kill the server (SIGKILL: as a crash; its data dir stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}
