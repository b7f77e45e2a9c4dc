//! A throwaway PostgreSQL cluster per test: `initdb` into a temp dir, `postgres` on a free
//! loopback port (its unix socket in the temp dir too), a superuser with a password and a
//! database `app`, stopped and removed on drop. For the database secrets engine tests: OpenBao
//! connects over TCP with the superuser and creates short-lived users; the tests check them with
//! [`Postgres::sql`] and [`Postgres::can_login`].
//!
//! TCP logins need a password (`scram-sha-256`), so a dynamic user's password is really checked;
//! the unix socket trusts the local superuser (the harness's own queries).
//!
//! Binaries: `BATON_PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. Missing, a test fails and says how to install them. PostgreSQL
//! refuses to run as root: as root, the cluster runs as the `postgres` user (Debian's package
//! creates it).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The superuser OpenBao's database engine connects as.
pub const SUPERUSER: &str = "baton_admin";
/// Its password (a loopback cluster that lives as long as one test).
pub const SUPERUSER_PASSWORD: &str = "baton-test-admin";
/// The database every cluster has.
pub const DATABASE: &str = "app";

/// How long a fresh cluster may take to accept connections (a second when idle).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Where the PostgreSQL server binaries are (`initdb`, `postgres`, `psql`).
pub fn bindir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "psql"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os("BATON_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_all(&d) {
            Ok(d)
        } else {
            Err(format!(
                "BATON_PG_BINDIR={} holds no initdb, postgres and psql",
                d.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_all(&d) {
            return Ok(d);
        }
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin (pg_config on PATH may be the client's).
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d).ok_or_else(|| {
        "PostgreSQL's server binaries (initdb, postgres, psql) were not found: run \
         scripts/install-deps.sh (it installs Debian's `postgresql`), or set BATON_PG_BINDIR to \
         their directory"
            .to_owned()
    })
}

/// The uid and gid to run the cluster as: ours, or `postgres`'s when we are root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| e.to_string())?
        .ok_or("running as root, and there is no `postgres` user to run PostgreSQL as (PostgreSQL refuses root): install Debian's `postgresql`, or run the tests as another user")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// A running cluster; stopped (fast shutdown, then SIGKILL) and deleted on drop.
pub struct Postgres {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
}

impl Postgres {
    /// `initdb`, start, wait until ready, create the database `app`. Panics (with the server's
    /// log) when it cannot.
    pub fn start() -> Postgres {
        let bin = bindir().unwrap_or_else(|e| panic!("{e}"));
        let user = run_as().unwrap_or_else(|e| panic!("{e}"));
        let mut last = String::new();
        // A free port can be taken between probing and binding: try again on another.
        for _ in 0..3 {
            match Self::try_start(&bin, user, crate::free_port()) {
                Ok(pg) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn command(bin: &Path, user: Option<(u32, u32)>, program: &str) -> Command {
        let mut cmd = Command::new(bin.join(program));
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        cmd
    }

    fn try_start(bin: &Path, user: Option<(u32, u32)>, port: u16) -> Result<Postgres, String> {
        let dir = tempfile::Builder::new()
            .prefix("baton-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .and_then(|()| std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)))
                .map_err(|e| format!("cannot give the temp dir to the postgres user: {e}"))?;
        }
        let data = dir.path().join("data");
        let out = Self::command(bin, user, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", text(&out)));
        }
        let log =
            std::fs::File::create(dir.path().join("postgres.log")).map_err(|e| e.to_string())?;
        let child = Self::command(bin, user, "postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            // A test cluster: nothing to make durable.
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        let mut pg = Postgres {
            child,
            dir,
            bin: bin.to_owned(),
            user,
            port,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = pg.child.try_wait() {
                return Err(format!("postgres exited with {status}: {}", pg.log()));
            }
            match pg.try_sql("postgres", "SELECT 1") {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "not ready within {READY_WITHIN:?} ({e}): {}",
                        pg.log()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        pg.try_sql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        Ok(pg)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL template OpenBao's `postgresql-database-plugin` takes (it fills in
    /// `{{username}}` and `{{password}}`).
    pub fn vault_connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.port
        )
    }

    /// The `psql` binary (for a child process that connects as a dynamic user).
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Self::command(&self.bin, self.user, "psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(text(&out))
        }
    }

    /// Runs `sql` in the database `app` as the superuser (over the unix socket); its output,
    /// unaligned, one row a line. Panics when the statement fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(DATABASE, sql)
            .unwrap_or_else(|e| panic!("psql -c {sql:?} failed: {e}"))
    }

    /// Whether a role of this name exists (`pg_roles`).
    pub fn has_role(&self, name: &str) -> bool {
        let quoted = name.replace('\'', "''");
        self.sql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{quoted}'"
        )) == "1"
    }

    /// The roles whose name starts with `prefix` (OpenBao names its users `v-<...>`).
    pub fn roles_like(&self, prefix: &str) -> Vec<String> {
        let quoted = prefix.replace('\'', "''");
        let out = self.sql(&format!(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{quoted}') ORDER BY 1"
        ));
        out.lines().map(str::to_owned).collect()
    }

    /// Whether `user`/`password` can log in over TCP (the way an app would) and run a query.
    pub fn can_login(&self, user: &str, password: &str) -> Result<(), String> {
        let out = Command::new(self.psql())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", DATABASE, "-X", "-q", "-t", "-A", "-w"])
            .args(["-c", "SELECT current_user"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    }
}

/// A session holding a PostgreSQL advisory lock ([`Postgres::hold_advisory_lock`]): a statement
/// that takes the same lock waits until [`Held::release`] (or the drop) ends the session.
pub struct Held {
    child: Option<Child>,
}

impl Held {
    /// Ends the session, which releases the lock.
    pub fn release(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(mut child) = self.child.take() {
            // EOF on psql's input: it disconnects, and the server drops the session's locks.
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.end();
    }
}

impl Postgres {
    /// Takes the advisory lock `key` (`pg_advisory_lock`) in a session of its own and returns
    /// once it is granted. With `SELECT pg_advisory_xact_lock(<key>)` among a role's creation
    /// statements, every new user then waits: a database that is slow to answer, so a
    /// credential read stays in flight for as long as a test needs. Panics when the lock is
    /// not granted in time.
    pub fn hold_advisory_lock(&self, key: u32) -> Held {
        use std::io::Write;
        let mut child = Self::command(&self.bin, self.user, "psql")
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                DATABASE,
            ])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        let mut stdin = child.stdin.take().expect("psql's stdin");
        writeln!(stdin, "SELECT pg_advisory_lock({key});")
            .unwrap_or_else(|e| panic!("cannot talk to psql: {e}"));
        child.stdin = Some(stdin);
        let held = Held { child: Some(child) };
        // A small key is the lock's objid (classid 0).
        let granted = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 \
             AND objid = {key} AND granted"
        );
        let deadline = Instant::now() + READY_WITHIN;
        while self.sql(&granted) != "1" {
            assert!(
                Instant::now() < deadline,
                "the advisory lock {key} was not granted within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        held
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (ends sessions, no checkpoint wait on fsync=off).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}
