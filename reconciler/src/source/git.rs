//! A repo followed in git (gix): fetched into a bare cache under `--cache-dir`, specs read straight
//! from the target commit's tree (no checkout), loaded incrementally between commits.
//!
//! - [`GitSource::fetch`] does one handshake (ls-refs) and compares the remote tip with what the
//!   cache holds; only when it differs is a pack received. Cheap when nothing changed.
//! - [`GitSource::load`] diffs the previous commit's tree against the new one and re-parses only
//!   the spec files whose blob changed ([`baton_core::spec::incremental`]); a changed `baton.yaml`
//!   reloads everything.
//! - Every failure is a [`SourceError`]; the caller keeps its last good state. A force-push is
//!   followed (the branch is the truth) and logged as a warning.
//! - A damaged cache is set aside (`<cache>.damaged`) and fetched afresh: pack files failing
//!   [`integrity`]'s checks, a followed ref whose commit cannot be read, a fetched tip that is
//!   not there, a read error, or a panic inside gix (caught at this boundary). gix reads pack
//!   files into memory rather than mapping them (`third_party/gix-pack`), so a file cut short
//!   under a running daemon is an error here, never a SIGBUS.
//!
//! Blocking: call from `spawn_blocking`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::ObjectId;
use secrecy::{ExposeSecret, SecretString};

use super::SourceError;
use baton_core::spec::incremental::{Entry, Incremental, Input};
use baton_core::spec::load::{parse_config, SourceFile, CONFIG_FILE};
use baton_core::spec::{AppId, Diagnostic, Repo, Severity};
pub use baton_core::userinfo::redact_url;
use baton_core::userinfo::split_http_userinfo;

/// Spec file extensions (as for a directory source).
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];
/// `baton.yaml` larger than this is refused.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Ancestry walked to tell a fast-forward from a force-push (only for the warning).
const ANCESTRY_LIMIT: usize = 10_000;
/// Packs (one per fetch) the cache may receive before it is reopened: gix's table of pack
/// indices is sized when the repository is opened, and a full table fails the next fetch
/// ("slotmap turned out to be too small"). Reopening drops every loaded index, so it is done
/// only this often, not after every fetch.
const PACKS_BETWEEN_REOPENS: usize = 64;

/// Packs on disk at which the cache is rebuilt by one full fetch into a fresh directory: each
/// fetch adds a pack, lookups slow down as they pile up, and gix's pack table has at most
/// 32,767 slots (a daemon that lived through that many pushes would stop fetching).
const COMPACT_AT_PACKS: usize = 1024;

/// Credentials for HTTP(S) remotes. SSH uses the system `ssh` and its agent/keys.
#[derive(Debug, Clone)]
pub struct GitAuth {
    /// For tokens, any user name the host accepts (GitHub: `x-access-token`, GitLab: `oauth2`).
    pub user: String,
    pub password: SecretString,
}

/// What to follow and where to cache it.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Remote URL (`https://`, `http://`, `file://`, `ssh://`, scp-like) or a local repo path.
    pub url: String,
    /// Branch, tag, full ref name or full commit id.
    pub reference: String,
    /// The bare cache repository is created at this path.
    pub cache_dir: PathBuf,
    pub auth: Option<GitAuth>,
}

/// The result of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The commit the followed ref points to (hex).
    pub commit: String,
    /// Whether a pack was received (false: the cache already had the commit).
    pub received: bool,
    /// The new commit does not descend from the previously fetched one.
    pub forced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A name: a branch if the remote has one, else a tag.
    Name(String),
    /// A full ref name (`refs/...`).
    Full(String),
    Commit(ObjectId),
}

struct Loaded {
    tree: ObjectId,
    /// Blob id of `baton.yaml` (None: absent).
    config_blob: Option<ObjectId>,
    /// The config loaded without errors (so the cache may be updated incrementally).
    config_ok: bool,
}

/// A followed git repo: cache, last fetched commit, and the incremental loader.
pub struct GitSource {
    config: GitConfig,
    /// URL without user info, for messages.
    shown_url: String,
    target: Target,
    repo: gix::ThreadSafeRepository,
    /// The handle loads read through: kept between loads, so its object cache still holds the
    /// trees of the previous commit when the next one is diffed against it (taken out while a
    /// load runs).
    reader: Option<gix::Repository>,
    /// Packs received since the cache was (re)opened.
    packs_since_open: usize,
    /// Packs in the cache (counted when it is opened, plus one per fetch).
    packs_on_disk: usize,
    /// [`COMPACT_AT_PACKS`], lower in tests.
    compact_at: usize,
    last_fetched: Option<ObjectId>,
    loaded: Option<Loaded>,
    cache: Incremental,
    /// Set on shutdown: a pack transfer in progress stops.
    interrupt: Arc<AtomicBool>,
    /// Commit and spec files added/modified by the last incremental load (None: full load).
    changed: Option<(String, Vec<PathBuf>)>,
    /// The environment loaded (docs/environments.md): each commit is then loaded whole, the
    /// base specs and the environment's overlay together, not through the incremental cache.
    environment: Option<String>,
    /// The pack files as last checked ([`integrity`]); empty until the first fetch.
    seal: integrity::Seal,
    /// The followed refs' commits were read back since the cache was opened or changed.
    refs_checked: bool,
    /// Whether [`verify`](Self::verify) checks anything: off only in tests that show the panic
    /// guard holds on its own.
    checks: bool,
    /// Why the cache was last set aside (for tests and their messages).
    last_damage: Option<String>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.shown_url)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Open (or create) the bare cache. No network.
    ///
    /// Credentials written into an `http(s)://user:token@host/...` URL are taken out of it and
    /// handed over like `--git-token-file` ones: gix and reqwest put the URL they were given
    /// into their error messages, which reach logs, `/api/status` and notifications.
    pub fn open(mut config: GitConfig) -> Result<Self, SourceError> {
        if let Some((bare, user, password)) = split_http_userinfo(&config.url) {
            config.url = bare;
            if config.auth.is_none() {
                config.auth = Some(GitAuth { user, password });
            }
        }
        let shown_url = redact_url(&config.url);
        let target = parse_target(&config.reference);
        let repo = open_cache(&config.cache_dir)?;
        let reader = Some(reader(&repo));
        let packs_on_disk = packs_in(&config.cache_dir);
        Ok(GitSource {
            config,
            shown_url,
            target,
            repo,
            reader,
            packs_since_open: 0,
            packs_on_disk,
            compact_at: COMPACT_AT_PACKS,
            last_fetched: None,
            loaded: None,
            cache: Incremental::default(),
            interrupt: Arc::new(AtomicBool::new(false)),
            changed: None,
            environment: None,
            seal: integrity::Seal::default(),
            refs_checked: false,
            checks: true,
            last_damage: None,
        })
    }

    /// Load each commit as environment `name` sees it.
    pub fn set_environment(&mut self, name: Option<String>) {
        self.environment = name;
        self.loaded = None;
    }

    /// The flag that interrupts a pack transfer (set it on shutdown).
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// The URL, without credentials.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Tell the source which commit was last good before a restart (ancestry check only).
    pub fn set_last_fetched(&mut self, commit: &str) {
        self.last_fetched = ObjectId::from_hex(commit.as_bytes()).ok();
    }

    /// Ask the remote where the followed ref points and fetch only if the cache lacks that
    /// commit. A missing ref (deleted branch) is [`SourceError::RefNotFound`]. A damaged cache
    /// (see the module doc) is set aside and fetched afresh, once per call.
    pub fn fetch(&mut self) -> Result<Fetched, SourceError> {
        match self.guarded(Self::fetch_checked) {
            Err(e @ SourceError::Corrupt { .. }) => {
                self.renew_cache(&e)?;
                self.guarded(Self::fetch_checked)
            }
            r => r,
        }
    }

    /// Run `step`, turning a panic inside it (gix indexing past the end of a damaged file; any
    /// other panic while reading is taken the same way, so the process stays up) into
    /// [`SourceError::Corrupt`]. Whatever `step` left half done is dropped by the
    /// [`renew_cache`](Self::renew_cache) that follows a `Corrupt`.
    fn guarded<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(result) => result,
            Err(panic) => {
                let message = (panic.downcast_ref::<&str>().copied())
                    .or(panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("no message");
                Err(SourceError::Corrupt {
                    url: self.shown_url.clone(),
                    reason: scrub(
                        format!("reading it panicked: {message}"),
                        self.config.auth.as_ref(),
                    ),
                })
            }
        }
    }

    /// [`fetch_once`](Self::fetch_once) between checks of the cache: before (what changed on disk
    /// since the last check, and the followed refs once), after a received pack (the new pack),
    /// and after a failed transfer (everything: receiving reads local commits, so damage the
    /// checks missed can be why it failed).
    fn fetch_checked(&mut self) -> Result<Fetched, SourceError> {
        self.verify()?;
        match self.fetch_once() {
            Ok(fetched) => {
                if fetched.received {
                    self.verify()?;
                }
                Ok(fetched)
            }
            Err(SourceError::Fetch { url, reason }) => {
                self.seal = integrity::Seal::default();
                self.refs_checked = false;
                match self.verify() {
                    Err(SourceError::Corrupt {
                        url,
                        reason: damage,
                    }) => Err(SourceError::Corrupt {
                        url,
                        reason: format!("{damage} (the fetch had failed: {reason})"),
                    }),
                    Err(e) => Err(e),
                    Ok(()) => Err(SourceError::Fetch { url, reason }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Check the pack files that changed since the last check (all of them the first time),
    /// and read back the followed refs' commits when the cache is new to this process or was
    /// changed by someone else. Damage is [`SourceError::Corrupt`].
    fn verify(&mut self) -> Result<(), SourceError> {
        if !self.checks {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let corrupt = |reason: String| SourceError::Corrupt {
            url: self.shown_url.clone(),
            reason,
        };
        let checked = integrity::check(&self.config.cache_dir, &self.seal)
            .map_err(|damage| corrupt(damage.to_string()))?;
        if !checked.altered.is_empty() {
            let files: Vec<_> = checked
                .altered
                .iter()
                .map(|f| f.to_string_lossy())
                .collect();
            tracing::warn!(
                files = %files.join(", "),
                "pack files of the git cache changed or went away under Baton; reopening it"
            );
            self.repo = open_cache(&self.config.cache_dir)?;
            self.reader = None;
            self.packs_since_open = 0;
            self.refs_checked = false;
        }
        if checked.bytes_read > 0 {
            tracing::debug!(
                files = checked.seal.len(),
                added = checked.added,
                bytes = checked.bytes_read,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "git cache: pack files checked"
            );
        }
        self.seal = checked.seal;
        if !self.refs_checked {
            check_refs(&self.repo.to_thread_local()).map_err(corrupt)?;
            self.refs_checked = true;
        }
        Ok(())
    }

    /// Move the damaged cache aside (to `<cache>.damaged`, replacing an older one) and start an
    /// empty one: the next fetch receives everything again. Never deletes what it did not
    /// create; logs why and where the old cache went.
    fn renew_cache(&mut self, why: &SourceError) -> Result<(), SourceError> {
        let dir = &self.config.cache_dir;
        let aside = dir.with_extension("damaged");
        let err = |reason: String| SourceError::Cache {
            path: dir.clone(),
            reason,
        };
        if dir.exists() {
            if aside.join("HEAD").exists() {
                std::fs::remove_dir_all(&aside).map_err(|e| err(e.to_string()))?;
            }
            std::fs::rename(dir, &aside).map_err(|e| err(format!("cannot move it aside: {e}")))?;
            tracing::warn!(error = %why, moved_to = %aside.display(), "the git cache is damaged: set aside, fetching afresh");
        } else {
            tracing::warn!(error = %why, path = %dir.display(), "the git cache is gone: fetching afresh");
        }
        self.repo = open_cache(dir)?;
        self.reader = None;
        self.packs_since_open = 0;
        self.packs_on_disk = 0;
        self.loaded = None;
        self.cache = Incremental::default();
        self.changed = None;
        self.seal = integrity::Seal::default();
        self.refs_checked = false;
        self.last_damage = Some(why.to_string());
        Ok(())
    }

    /// Rebuild the cache with one full fetch into `<cache>.compact`, then swap it in (the old
    /// one is removed: Baton made it, and nothing in it is lost, all is fetched again). Any
    /// failure keeps the current cache, is only logged (this is housekeeping) and is tried again
    /// [`PACKS_BETWEEN_REOPENS`] packs later. The next load
    /// is a full one, as the previous commit need not be in the new cache (a force-push).
    fn compact(&mut self) {
        let dir = self.config.cache_dir.clone();
        let fresh = dir.with_extension("compact");
        let old = dir.with_extension("old");
        let err = |reason: String| SourceError::Cache {
            path: dir.clone(),
            reason,
        };
        let swap = || -> Result<(), SourceError> {
            // Left over from an interrupted rebuild: removed only when it is a git cache.
            for leftover in [&fresh, &old] {
                if leftover.join("HEAD").exists() {
                    std::fs::remove_dir_all(leftover).map_err(|e| err(e.to_string()))?;
                } else if leftover.exists() {
                    return Err(err(format!("{} is in the way", leftover.display())));
                }
            }
            let mut config = self.config.clone();
            config.cache_dir = fresh.clone();
            let mut full = GitSource::open(config)?;
            full.target = self.target.clone();
            full.interrupt = self.interrupt.clone();
            full.fetch_once()?;
            drop(full);
            std::fs::rename(&dir, &old).map_err(|e| err(format!("cannot move it aside: {e}")))?;
            if let Err(e) = std::fs::rename(&fresh, &dir) {
                let _ = std::fs::rename(&old, &dir);
                return Err(err(format!("cannot move the new cache in: {e}")));
            }
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove the old git cache");
            }
            Ok(())
        };
        let packs = self.packs_on_disk;
        match swap() {
            Ok(()) => {
                tracing::info!(packs, "git cache rebuilt by one full fetch");
                self.loaded = None;
                self.cache = Incremental::default();
                self.changed = None;
                // Other files now: checked (fully) before the next read.
                self.seal = integrity::Seal::default();
                self.refs_checked = false;
            }
            Err(e) => {
                tracing::warn!(packs, error = %e, "cannot rebuild the git cache; keeping it");
                if fresh.join("HEAD").exists() {
                    let _ = std::fs::remove_dir_all(&fresh);
                }
                // Not a full fetch attempt at every push while the cause lasts.
                self.compact_at = packs + PACKS_BETWEEN_REOPENS;
            }
        }
        // Reopened either way: the directory may have changed under the old handle.
        match open_cache(&dir) {
            Ok(repo) => self.repo = repo,
            Err(e) => tracing::warn!(error = %e, "cannot reopen the git cache"),
        }
        self.reader = None;
        self.packs_since_open = 0;
        self.packs_on_disk = packs_in(&dir);
    }

    fn fetch_once(&mut self) -> Result<Fetched, SourceError> {
        let repo = self.repo.to_thread_local();
        if let Target::Commit(id) = &self.target {
            if repo.has_object(id) {
                return self.fetched(&repo, *id, false);
            }
        }
        if self.packs_on_disk >= self.compact_at {
            self.compact();
        }
        let repo = self.repo.to_thread_local();
        let url = self.shown_url.clone();
        let auth = self.config.auth.clone();
        let unreachable = |e: &dyn std::error::Error| classify(&url, e, auth.as_ref());
        let remote = repo
            .remote_at(self.config.url.as_str())
            .map_err(|e| SourceError::Git {
                url: url.clone(),
                reason: format!("bad remote URL: {}", chain(&e)),
            })?
            .with_refspecs(
                refspecs(&self.target).iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
            .map_err(|e| SourceError::Git {
                url: url.clone(),
                reason: format!("bad ref `{}`: {}", self.config.reference, chain(&e)),
            })?;
        let started = std::time::Instant::now();
        let ms = |since: std::time::Instant| since.elapsed().as_secs_f64() * 1e3;
        let mut conn = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| unreachable(&e))?;
        let connected = ms(started);
        if let Some(auth) = self.config.auth.clone() {
            // gix's callback signature fixes the (large) error type.
            #[allow(clippy::result_large_err)]
            conn.set_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(ctx) => {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: gix::sec::identity::Account {
                            username: auth.user.clone(),
                            password: auth.password.expose_secret().to_string(),
                        },
                        next: ctx.into(),
                    }))
                }
                _ => Ok(None),
            });
        }
        let prepare = conn
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| unreachable(&e))?;
        let listed = ms(started);
        let tip = match &self.target {
            Target::Commit(id) => *id,
            t => remote_tip(&prepare.ref_map().remote_refs, t).ok_or_else(|| {
                SourceError::RefNotFound {
                    url: url.clone(),
                    reference: self.config.reference.clone(),
                }
            })?,
        };
        if repo.has_object(tip) {
            // The remote ref is where we already are (or at an object we have): no pack.
            drop(prepare);
            tracing::debug!(
                connect_ms = connected,
                refs_ms = listed,
                "git: no pack needed"
            );
            return self.fetched(&repo, tip, false);
        }
        prepare
            .receive(gix::progress::Discard, &self.interrupt)
            .map_err(|e| {
                if self.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                    SourceError::Cancelled
                } else {
                    SourceError::Fetch {
                        url: url.clone(),
                        reason: scrub(chain(&e), self.config.auth.as_ref()),
                    }
                }
            })?;
        let received = ms(started);
        // Every fetch adds a pack: reopen (sizing the table for the packs on disk) before the
        // table the cache was opened with is full.
        self.packs_since_open += 1;
        self.packs_on_disk += 1;
        if self.packs_since_open >= PACKS_BETWEEN_REOPENS {
            self.repo = open_cache(&self.config.cache_dir)?;
            self.reader = Some(reader(&self.repo));
            self.packs_since_open = 0;
        }
        tracing::debug!(
            connect_ms = connected,
            refs_ms = listed,
            pack_ms = received,
            reopened_ms = ms(started),
            "git: fetched a pack"
        );
        let repo = self.repo.to_thread_local();
        if !repo.has_object(tip) {
            // The remote was asked for `tip` and the transfer succeeded: it sent nothing because
            // our refs said we had it. They point at objects the cache lost.
            return Err(SourceError::Corrupt {
                url,
                reason: format!("the fetched commit {tip} is not in it"),
            });
        }
        self.fetched(&repo, tip, true)
    }

    fn fetched(
        &mut self,
        repo: &gix::Repository,
        tip: ObjectId,
        received: bool,
    ) -> Result<Fetched, SourceError> {
        let commit = peel_to_commit(repo, tip).map_err(|reason| SourceError::Corrupt {
            url: self.shown_url.clone(),
            reason,
        })?;
        let forced = match self.last_fetched {
            Some(old) if old != commit => !descends_from(repo, commit, old),
            _ => false,
        };
        if forced {
            tracing::warn!(
                old = %old_short(self.last_fetched),
                new = %commit.to_hex_with_len(12),
                "the followed ref was rewritten (force-push); following it"
            );
        }
        self.last_fetched = Some(commit);
        Ok(Fetched {
            commit: commit.to_string(),
            received,
            forced,
        })
    }

    /// Load the specs of `commit` (which must be in the cache), re-parsing only files whose blob
    /// changed since the previous load. A damaged cache is renewed, so that the next fetch
    /// brings the objects again (this load still fails: the caller keeps its last good state).
    pub fn load(&mut self, commit: &str) -> Result<Repo, SourceError> {
        let loaded = self.guarded(|s| s.load_once(commit));
        if let Err(e @ SourceError::Corrupt { .. }) = &loaded {
            if let Err(e) = self.renew_cache(e) {
                tracing::warn!(error = %e, "cannot renew the git cache");
            }
            self.last_fetched = None;
        }
        loaded
    }

    fn load_once(&mut self, commit: &str) -> Result<Repo, SourceError> {
        let repo = match self.reader.take() {
            Some(r) => r,
            None => reader(&self.repo),
        };
        let loaded = self.load_with(&repo, commit);
        self.reader = Some(repo);
        loaded
    }

    fn load_with(&mut self, repo: &gix::Repository, commit: &str) -> Result<Repo, SourceError> {
        let url = self.shown_url.clone();
        let corrupt = |reason: String| SourceError::Corrupt {
            url: url.clone(),
            reason,
        };
        let id = ObjectId::from_hex(commit.as_bytes())
            .map_err(|e| corrupt(format!("bad commit id {commit}: {e}")))?;
        let tree = repo
            .find_commit(id)
            .map_err(|e| corrupt(chain(&e)))?
            .tree()
            .map_err(|e| corrupt(chain(&e)))?;
        // Any entry named `baton.yaml`: one that is not a file (a symlink, a folder, a
        // submodule) is a config error, never "no config" (which would mean the defaults).
        let config_entry = tree
            .lookup_entry_by_path(CONFIG_FILE)
            .map_err(|e| corrupt(chain(&e)))?
            .map(|e| (e.object_id(), e.mode().kind()));
        let config_blob = config_entry.map(|(id, _)| id);
        if let Some(env) = self.environment.clone() {
            self.changed = None;
            return self
                .environment_load(repo, &tree, config_entry, &env)
                .map_err(corrupt);
        }

        let prev = self
            .loaded
            .as_ref()
            .map(|l| (l.tree, l.config_blob, l.config_ok));
        self.changed = None;
        let result = match prev {
            // Same tree as last time (e.g. an empty commit): the cache is the answer.
            Some((t, _, ok)) if t == tree.id => {
                self.changed = Some((commit.to_string(), Vec::new()));
                (self.cache.update(&[], Vec::new()), ok)
            }
            Some((t, blob, true)) if blob == config_blob => {
                let started = std::time::Instant::now();
                let prev_tree = repo.find_tree(t).map_err(|e| corrupt(chain(&e)))?;
                let (removed, changed) =
                    diff_trees(repo, &prev_tree, &tree, self.cache.config()).map_err(corrupt)?;
                let diffed = started.elapsed();
                let paths = changed.iter().map(|e| e.path.clone()).collect();
                self.changed = Some((commit.to_string(), paths));
                let out = self.cache.update(&removed, changed);
                tracing::debug!(
                    parsed = self.cache.parsed_last(),
                    patched = self.cache.patched_last(),
                    diff_ms = diffed.as_secs_f64() * 1e3,
                    update_ms = (started.elapsed() - diffed).as_secs_f64() * 1e3,
                    "incremental load"
                );
                (out, true)
            }
            _ => self.full_load(repo, &tree, config_entry).map_err(corrupt)?,
        };
        let (out, config_ok) = result;
        self.loaded = Some(Loaded {
            tree: tree.id,
            config_blob,
            config_ok,
        });
        Ok(out)
    }

    /// How many files the last [`load`](Self::load) parsed.
    pub fn parsed_last(&self) -> usize {
        self.cache.parsed_last()
    }

    fn full_load(
        &mut self,
        repo: &gix::Repository,
        tree: &gix::Tree<'_>,
        config_entry: Option<(ObjectId, EntryKind)>,
    ) -> Result<(Repo, bool), String> {
        let mut base = Vec::new();
        let config_file = config_file(repo, config_entry, &mut base);
        let (config, config_diags) = parse_config(config_file.as_ref());
        let config_bad =
            !base.is_empty() || config_diags.iter().any(|d| d.severity == Severity::Error);
        base.extend(config_diags);
        if config_bad {
            // Without a trustworthy config we know neither where the apps are nor who owns them.
            return Ok((self.cache.reset(config, base, true, Vec::new()), false));
        }
        let mut entries = Vec::new();
        let apps = tree
            .lookup_entry_by_path(&config.apps_dir)
            .map_err(|e| chain(&e))?;
        if let Some(apps) = apps.filter(|e| e.mode().is_tree()) {
            let apps_tree = repo.find_tree(apps.object_id()).map_err(|e| chain(&e))?;
            let mut recorder = gix::traverse::tree::Recorder::default();
            apps_tree
                .traverse()
                .breadthfirst(&mut recorder)
                .map_err(|e| chain(&e))?;
            for r in recorder.records {
                let rel = r.filepath.to_str_lossy();
                let path = config.apps_dir.join(rel.as_ref());
                if let Some(e) = entry(repo, &config, path, r.mode.kind(), r.oid) {
                    entries.push(e);
                }
            }
        }
        Ok((self.cache.reset(config, base, false, entries), true))
    }
}

impl GitSource {
    /// One commit loaded whole as environment `env` sees it: `baton.yaml`, the base specs and
    /// the files under `environments/<env>/<appsDir>`, read with the same rules.
    fn environment_load(
        &mut self,
        repo: &gix::Repository,
        tree: &gix::Tree<'_>,
        config_entry: Option<(ObjectId, EntryKind)>,
        env: &str,
    ) -> Result<Repo, String> {
        let mut diagnostics = Vec::new();
        let config_file = config_file(repo, config_entry, &mut diagnostics);
        let (config, config_diags) = parse_config(config_file.as_ref());
        let config_bad =
            !diagnostics.is_empty() || config_diags.iter().any(|d| d.severity == Severity::Error);
        diagnostics.extend(config_diags);
        let mut snapshot = baton_core::spec::load::Snapshot {
            config,
            files: Vec::new(),
            diagnostics,
            incomplete: config_bad,
        };
        if config_bad {
            return Ok(crate::environment::load_as(snapshot, Vec::new(), env));
        }
        let overlay_dir =
            baton_core::environment::overlay::apps_dir(env, &snapshot.config.apps_dir);
        let apps_dir = snapshot.config.apps_dir.clone();
        let mut overlays = Vec::new();
        for (dir, into_overlays) in [(apps_dir, false), (overlay_dir, true)] {
            let Some(found) = tree.lookup_entry_by_path(&dir).map_err(|e| chain(&e))? else {
                continue;
            };
            if !found.mode().is_tree() {
                continue;
            }
            let sub = repo.find_tree(found.object_id()).map_err(|e| chain(&e))?;
            let mut recorder = gix::traverse::tree::Recorder::default();
            sub.traverse()
                .breadthfirst(&mut recorder)
                .map_err(|e| chain(&e))?;
            for r in recorder.records {
                let path = dir.join(r.filepath.to_str_lossy().as_ref());
                let Some(e) = entry(repo, &snapshot.config, path, r.mode.kind(), r.oid) else {
                    continue;
                };
                match e.input {
                    Input::File(bytes) if into_overlays => overlays.push(SourceFile {
                        path: e.path,
                        bytes,
                    }),
                    Input::File(bytes) => snapshot.files.push(SourceFile {
                        path: e.path,
                        bytes,
                    }),
                    Input::Problem(d) => {
                        // An overlay file that cannot be read names no base app: incomplete.
                        snapshot.incomplete |= d.app.is_none();
                        snapshot.diagnostics.push(d);
                    }
                }
            }
        }
        Ok(crate::environment::load_as(snapshot, overlays, env))
    }
}

/// Changed spec files between two trees (no rename tracking: a rename is a delete + an add).
/// The plain tree diff: subtrees with equal ids are skipped, and no blob-diff machinery (with
/// its attribute lookups) is set up, so the cost follows the trees that changed.
fn diff_trees(
    repo: &gix::Repository,
    old: &gix::Tree<'_>,
    new: &gix::Tree<'_>,
    config: &baton_core::spec::load::RepoConfig,
) -> Result<(Vec<PathBuf>, Vec<Entry>), String> {
    use gix::diff::tree::recorder::Change;
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&old.data),
        gix::objs::TreeRefIter::from_bytes(&new.data),
        gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(|e| chain(&e))?;
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for change in recorder.records {
        let (path, mode, id, gone) = match change {
            Change::Addition {
                path,
                entry_mode,
                oid,
                ..
            }
            | Change::Modification {
                path,
                entry_mode,
                oid,
                ..
            } => (path, entry_mode, oid, false),
            Change::Deletion {
                path,
                entry_mode,
                oid,
                ..
            } => (path, entry_mode, oid, true),
        };
        let path = PathBuf::from(path.to_str_lossy().as_ref());
        if mode.is_tree() || !path.starts_with(&config.apps_dir) {
            continue;
        }
        if gone {
            removed.push(path);
        } else {
            match entry(repo, config, path.clone(), mode.kind(), id) {
                Some(e) => changed.push(e),
                None => removed.push(path),
            }
        }
    }
    Ok((removed, changed))
}

/// One tree entry under the apps dir as an incremental [`Entry`]; `None` when it is not a spec
/// file (wrong extension, dotfile, directory).
fn entry(
    repo: &gix::Repository,
    config: &baton_core::spec::load::RepoConfig,
    path: PathBuf,
    kind: EntryKind,
    id: ObjectId,
) -> Option<Entry> {
    let name = path.file_name()?.to_string_lossy();
    if name.starts_with('.') {
        return None;
    }
    let is_spec = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e));
    if !is_spec || kind == EntryKind::Tree {
        return None;
    }
    let app = path
        .strip_prefix(&config.apps_dir)
        .ok()
        .and_then(|r| AppId::from_path(r).ok());
    let key = format!("{id}:{:o}", kind as u16);
    let input = match kind {
        EntryKind::Blob | EntryKind::BlobExecutable => {
            match read_blob(repo, id, config.max_file_bytes) {
                Ok(bytes) => Input::File(bytes),
                Err(message) => Input::Problem(problem(&path, app, message)),
            }
        }
        EntryKind::Link | EntryKind::Commit | EntryKind::Tree => {
            Input::Problem(problem(&path, app, not_a_file(kind)))
        }
    };
    Some(Entry { path, key, input })
}

/// Why a tree entry that is not a file is not read.
fn not_a_file(kind: EntryKind) -> String {
    match kind {
        EntryKind::Link => "symlinks are not followed in a git source".into(),
        // A submodule where a file should be: its content is not in this repo.
        EntryKind::Commit => "a submodule, not a file; cannot be read".into(),
        EntryKind::Tree => "a directory, not a file".into(),
        EntryKind::Blob | EntryKind::BlobExecutable => "a file".into(),
    }
}

/// A blob's bytes, refused (before reading) when over `limit`.
fn read_blob(repo: &gix::Repository, id: ObjectId, limit: u64) -> Result<Vec<u8>, String> {
    let header = repo
        .find_header(id)
        .map_err(|e| format!("cannot read blob {id}: {}", chain(&e)))?;
    if header.size() > limit {
        return Err(format!(
            "the file is {} bytes, over the limit of {limit} (maxFileBytes in baton.yaml)",
            header.size()
        ));
    }
    let mut blob = repo
        .find_blob(id)
        .map_err(|e| format!("cannot read blob {id}: {}", chain(&e)))?;
    Ok(blob.take_data())
}

/// `baton.yaml` of a commit, when it is a readable file; why not goes into `diagnostics`.
fn config_file(
    repo: &gix::Repository,
    config_entry: Option<(ObjectId, EntryKind)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<SourceFile> {
    match config_entry {
        None => None,
        Some((_, kind)) if !matches!(kind, EntryKind::Blob | EntryKind::BlobExecutable) => {
            diagnostics.push(problem(Path::new(CONFIG_FILE), None, not_a_file(kind)));
            None
        }
        Some((id, _)) => match read_blob(repo, id, MAX_CONFIG_BYTES) {
            Ok(bytes) => Some(SourceFile {
                path: PathBuf::from(CONFIG_FILE),
                bytes,
            }),
            Err(message) => {
                diagnostics.push(problem(Path::new(CONFIG_FILE), None, message));
                None
            }
        },
    }
}

fn problem(path: &Path, app: Option<AppId>, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        pointer: String::new(),
        line: None,
        column: None,
        message,
        app,
    }
}

/// Decoded objects the reading handle keeps (trees of the last commits, mostly): resolving a
/// tree stored as a chain of deltas is most of the cost of a diff otherwise.
const OBJECT_CACHE_BYTES: usize = 32 << 20;

/// A handle on the cache for loads, with an object cache.
fn reader(repo: &gix::ThreadSafeRepository) -> gix::Repository {
    let mut r = repo.to_thread_local();
    r.object_cache_size(Some(OBJECT_CACHE_BYTES));
    r
}

/// Open (or create) the bare cache, with room in its pack table for the packs on disk plus
/// [`PACKS_BETWEEN_REOPENS`] more.
fn open_cache(dir: &Path) -> Result<gix::ThreadSafeRepository, SourceError> {
    let err = |reason: String| SourceError::Cache {
        path: dir.to_path_buf(),
        reason,
    };
    if !(dir.join("HEAD").exists() || dir.join("objects").exists()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        gix::init_bare(dir).map_err(|e| err(chain(&e)))?;
    }
    let packs = packs_in(dir);
    let slots = (packs + PACKS_BETWEEN_REOPENS + 16).min(usize::from(u16::MAX / 2));
    let slots = gix::odb::store::init::Slots::Given(u16::try_from(slots).unwrap_or(u16::MAX / 2));
    // No commit-graph file is read (gix maps it; Baton never writes one), and `packed-refs` is
    // always read into memory: a mapped file cut short under the daemon would be a SIGBUS.
    let options = (gix::open::Options::default().object_store_slots(slots))
        .config_overrides(["core.commitGraph=false"]);
    let mut repo = gix::open_opts(dir, options)
        .map(|r| r.into_sync())
        .map_err(|e| err(chain(&e)))?;
    repo.refs.set_packed_buffer_mmap_threshold(u64::MAX);
    Ok(repo)
}

/// Read back what the followed refs (`refs/baton/...`) point to: a commit with its root tree,
/// or any other object whole. The first that cannot be read is the damage.
fn check_refs(repo: &gix::Repository) -> Result<(), String> {
    let refs = repo.references().map_err(|e| chain(&e))?;
    let followed = refs.prefixed("refs/baton/").map_err(|e| chain(&e))?;
    for r in followed {
        let mut r = r.map_err(|e| format!("a followed ref cannot be read: {e}"))?;
        let name = r.name().as_bstr().to_string();
        let id = r
            .peel_to_id_in_place()
            .map_err(|e| format!("{name}: {}", chain(&e)))?
            .detach();
        let object = repo
            .find_object(id)
            .map_err(|e| format!("{name} points to {id}: {}", chain(&e)))?;
        if object.kind == gix::object::Kind::Commit {
            peel_to_commit(repo, id).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

/// The pack indices in a cache directory (0 when it cannot be read).
fn packs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("objects").join("pack"))
        .map(|entries| {
            (entries.filter_map(Result::ok))
                .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
                .count()
        })
        .unwrap_or(0)
}

fn parse_target(reference: &str) -> Target {
    let r = reference.trim();
    if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(id) = ObjectId::from_hex(r.as_bytes()) {
            return Target::Commit(id);
        }
    }
    if r.starts_with("refs/") {
        Target::Full(r.to_string())
    } else {
        Target::Name(r.to_string())
    }
}

/// Refspecs into a private namespace (`refs/baton/...`) so nothing else in the cache moves.
fn refspecs(target: &Target) -> Vec<String> {
    match target {
        Target::Name(n) => vec![
            format!("+refs/heads/{n}:refs/baton/heads/{n}"),
            format!("+refs/tags/{n}:refs/baton/tags/{n}"),
        ],
        Target::Full(r) => {
            let local = r.trim_start_matches("refs/");
            vec![format!("+{r}:refs/baton/{local}")]
        }
        Target::Commit(_) => vec!["+refs/heads/*:refs/baton/heads/*".to_string()],
    }
}

/// Where the remote says the target points (a branch wins over a tag of the same name; an
/// annotated tag is peeled).
fn remote_tip(refs: &[gix::protocol::handshake::Ref], target: &Target) -> Option<ObjectId> {
    let wanted: Vec<String> = match target {
        Target::Name(n) => vec![format!("refs/heads/{n}"), format!("refs/tags/{n}")],
        Target::Full(r) => vec![r.clone()],
        Target::Commit(id) => return Some(*id),
    };
    for w in wanted {
        for r in refs {
            let (name, target, peeled) = r.unpack();
            if name == w.as_bytes() {
                return peeled.or(target).map(|o| o.to_owned());
            }
        }
    }
    None
}

/// The commit `id` points to (through tags), checked to decode whole with its root tree: a
/// damaged pack can still say an object is there (its index is intact).
fn peel_to_commit(repo: &gix::Repository, id: ObjectId) -> Result<ObjectId, String> {
    let object = repo.find_object(id).map_err(|e| chain(&e))?;
    let commit = object
        .peel_to_commit()
        .map_err(|e| format!("{id} is not a commit: {}", chain(&e)))?;
    commit
        .decode()
        .map_err(|e| format!("commit {}: {}", commit.id, chain(&e)))?;
    commit
        .tree()
        .map_err(|e| format!("the tree of {}: {}", commit.id, chain(&e)))?;
    Ok(commit.id)
}

fn descends_from(repo: &gix::Repository, new: ObjectId, old: ObjectId) -> bool {
    let Ok(walk) = repo.rev_walk([new]).all() else {
        return false;
    };
    walk.take(ANCESTRY_LIMIT)
        .filter_map(Result::ok)
        .any(|info| info.id == old)
}

fn old_short(id: Option<ObjectId>) -> String {
    id.map(|i| i.to_hex_with_len(12).to_string())
        .unwrap_or_default()
}

/// Sort a gix error into unreachable / auth.
fn classify(url: &str, e: &dyn std::error::Error, auth: Option<&GitAuth>) -> SourceError {
    let reason = scrub(chain(e), auth);
    let lower = reason.to_lowercase();
    if lower.contains("authenticat")
        || lower.contains("401")
        || lower.contains("403")
        || lower.contains("credentials")
        || lower.contains("permission denied")
    {
        SourceError::Auth {
            url: url.to_string(),
            reason,
        }
    } else {
        SourceError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    baton_core::error_chain(e)
}

/// `reason` with the credentials of `auth` blanked out, should a transport have echoed them
/// (a URL with user info in an error message, say). Very short values are left alone: blanking
/// them would garble the message and they are no secret worth the name.
fn scrub(reason: String, auth: Option<&GitAuth>) -> String {
    let Some(auth) = auth else { return reason };
    let mut out = reason;
    for word in [auth.password.expose_secret(), auth.user.as_str()] {
        if word.len() >= 6 && out.contains(word) {
            out = out.replace(word, "[redacted]");
        }
    }
    out
}

mod integrity;

#[cfg(test)]
mod tests;

impl super::SpecSource for GitSource {
    fn fetch(&mut self) -> Result<String, SourceError> {
        GitSource::fetch(self).map(|f| f.commit)
    }

    fn load(&mut self, rev: &str) -> Result<Repo, SourceError> {
        GitSource::load(self, rev)
    }

    fn describe(&self) -> String {
        format!("{}@{}", self.shown_url, self.config.reference)
    }

    fn is_git(&self) -> bool {
        true
    }

    fn changed_last(&self) -> Option<(String, Vec<PathBuf>)> {
        self.changed.clone()
    }

    fn resume_from(&mut self, last_fetched: &str) {
        self.set_last_fetched(last_fetched);
    }

    fn commit_info(&mut self, rev: &str) -> Option<super::CommitInfo> {
        let repo = match self.reader.take() {
            Some(r) => r,
            None => reader(&self.repo),
        };
        let info = ObjectId::from_hex(rev.as_bytes())
            .ok()
            .and_then(|id| repo.find_commit(id).ok())
            .map(|commit| {
                let author = (commit.author().ok()).map(|a| a.name.to_string());
                super::CommitInfo::new(rev, author, &commit.message_raw_sloppy().to_string())
            });
        self.reader = Some(repo);
        info
    }
}
