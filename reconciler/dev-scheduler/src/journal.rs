//! Durable apps in `--state-dir`: a snapshot (`apps.json`) and a journal of the changes made since
//! it (`apps.journal.<N>`), so that a change the API acknowledged survives `kill -9`.
//!
//! Every change of apps ([`crate::deploy::apply`]) queues an [`Entry`] in the [`World`]; before
//! a write is answered, [`Journal::commit`] appends the queued entries as JSON lines and
//! `fdatasync`s the file. A write costs one appended line, whatever the number of apps, and
//! writes that arrive while a commit runs share the next one (group commit). When the journal
//! outgrows the snapshot, the snapshot is rewritten for the next generation (temporary file,
//! fsync, rename, fsync of the directory) and a fresh journal started, so compaction costs
//! O(1) per change, amortised.
//!
//! Loading reads the snapshot and replays the journal of its generation. A last line without
//! its newline is a write that never completed (so was never acknowledged) and is dropped;
//! any other bad line is an error naming the file and line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::store::{AppRecord, World};
use crate::DevError;

/// The snapshot file in `--state-dir`.
const SNAPSHOT: &str = "apps.json";
/// Below this size the journal is never compacted (a few hundred changes).
const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// One change of the apps, in the order it was made.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The app's new definition (stored form, with `id` and `version`).
    Put(Value),
    /// The app with this id is deleted.
    Delete(String),
}

impl Entry {
    fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = match self {
            Entry::Put(def) => serde_json::to_vec(&serde_json::json!({ "put": def }))?,
            Entry::Delete(id) => serde_json::to_vec(&serde_json::json!({ "delete": id }))?,
        };
        line.push(b'\n');
        Ok(line)
    }

    fn from_line(line: &[u8]) -> Result<Entry, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if let Some(def) = v.get("put") {
            if def.pointer("/id").and_then(Value::as_str).is_none() {
                return Err("`put` has no `id`".into());
            }
            return Ok(Entry::Put(def.clone()));
        }
        match v.get("delete").and_then(Value::as_str) {
            Some(id) => Ok(Entry::Delete(id.to_string())),
            None => Err("neither `put` nor `delete`".into()),
        }
    }

    /// Carry out this change on `apps`, as [`crate::deploy::apply`] did.
    fn replay(self, apps: &mut BTreeMap<String, AppRecord>) {
        match self {
            Entry::Put(def) => {
                let id = def
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match apps.get_mut(&id) {
                    Some(record) => record.set_def(def),
                    None => {
                        apps.insert(id, AppRecord::new(def));
                    }
                }
            }
            Entry::Delete(id) => {
                apps.remove(&id);
            }
        }
    }
}

/// The open journal of a state dir.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Generation of the snapshot; the journal file is `apps.journal.<generation>`.
    generation: u64,
    file: File,
    /// Bytes in the journal file.
    len: u64,
    /// Bytes of the last snapshot written or read.
    snapshot_len: u64,
    /// An append failed part way: the next commit writes a snapshot instead of appending.
    broken: bool,
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("apps.journal.{generation}"))
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::State {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Open the state in `dir` (created if missing): the apps of its snapshot with its journal
    /// replayed. A journal that had entries is folded into a new snapshot at once.
    pub fn open(dir: &Path) -> Result<(Journal, BTreeMap<String, AppRecord>), DevError> {
        std::fs::create_dir_all(dir).map_err(state_err(dir))?;
        let (mut apps, generation, snapshot_len) = read_snapshot(dir)?;
        remove_stale_journals(dir, generation);
        let path = journal_path(dir, generation);
        let replayed = replay(&path, &mut apps)?;
        let file = open_append(&path)?;
        let len = file.metadata().map_err(state_err(&path))?.len();
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            generation,
            file,
            len,
            snapshot_len,
            broken: false,
        };
        if replayed > 0 {
            journal.write_snapshot(&apps)?;
        }
        Ok((journal, apps))
    }

    /// Make the changes queued in `world` durable: append them (or, when the journal is due for
    /// compaction or broken, write a snapshot of every app). Call with the world unlocked;
    /// `world` is locked only to take the queue (and, for a snapshot, to serialise the apps).
    pub fn commit(&mut self, world: &std::sync::Mutex<World>) -> Result<(), DevError> {
        let lock = || world.lock().unwrap_or_else(|e| e.into_inner());
        if self.broken || self.len > MIN_COMPACT_BYTES.max(self.snapshot_len) {
            let (bytes, generation) = {
                let mut w = lock();
                w.journal.clear();
                (
                    snapshot_bytes(&w.apps, self.generation + 1),
                    self.generation + 1,
                )
            };
            return self.install_snapshot(bytes, generation);
        }
        let entries = std::mem::take(&mut lock().journal);
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in &entries {
            let line = e.to_line().map_err(|e| DevError::StateFormat {
                path: journal_path(&self.dir, self.generation),
                message: e.to_string(),
            })?;
            buf.extend_from_slice(&line);
        }
        let path = journal_path(&self.dir, self.generation);
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Part of the lines may be in the file: never append after them. The next
                // commit writes every app into a new snapshot, these entries included.
                self.broken = true;
                Err(DevError::State { path, source })
            }
        }
    }

    /// Write `apps` as the snapshot of the next generation (shutdown, or after a replay).
    fn write_snapshot(&mut self, apps: &BTreeMap<String, AppRecord>) -> Result<(), DevError> {
        let generation = self.generation + 1;
        self.install_snapshot(snapshot_bytes(apps, generation), generation)
    }

    /// Make `bytes` the snapshot of `generation`, start its empty journal, remove the old one.
    fn install_snapshot(&mut self, bytes: Vec<u8>, generation: u64) -> Result<(), DevError> {
        let dir = self.dir.clone();
        let result = (|| {
            let next = journal_path(&dir, generation);
            // An empty journal for the new snapshot exists before the snapshot names it (a
            // handle at offset 0 of an empty file: its writes append).
            let file = File::create(&next)
                .and_then(|f| f.sync_all().map(|()| f))
                .map_err(state_err(&next))?;
            write_atomically(&dir, SNAPSHOT, &bytes)?;
            let _ = std::fs::remove_file(journal_path(&dir, self.generation));
            Ok::<File, DevError>(file)
        })();
        match result {
            Ok(file) => {
                self.file = file;
                self.generation = generation;
                self.len = 0;
                self.snapshot_len = bytes.len() as u64;
                self.broken = false;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }
}

/// Journals of other generations: one a crash left behind between a compaction's rename and
/// its removal of the old journal (already in the snapshot), or an empty next one.
fn remove_stale_journals(dir: &Path, generation: u64) {
    let current = format!("apps.journal.{generation}");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("apps.journal.") && name != current {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn open_append(path: &Path) -> Result<File, DevError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(state_err(path))
}

/// Write `dir/name` so that a crash leaves the old or the new content, never a mix, and the new
/// content is on disk when this returns: temporary file, fsync, rename, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DevError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(state_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(state_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(state_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(state_err(dir))
}

/// The snapshot file: `{"journal": generation, "apps": [{"app": def, "versions": {...}}]}`.
fn snapshot_bytes(apps: &BTreeMap<String, AppRecord>, generation: u64) -> Vec<u8> {
    let mut out = format!("{{\"journal\":{generation},\"apps\":[").into_bytes();
    for (i, record) in apps.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\n{\"app\":");
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &record.def);
        out.extend_from_slice(b",\"versions\":");
        let _ = serde_json::to_writer(&mut out, &record.versions);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// The snapshot's apps, the generation of its journal (0 for a snapshot written before journals
/// existed) and its size; nothing when there is no snapshot yet.
fn read_snapshot(dir: &Path) -> Result<(BTreeMap<String, AppRecord>, u64, u64), DevError> {
    let path = dir.join(SNAPSHOT);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0, 0)),
        Err(source) => return Err(DevError::State { path, source }),
    };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| DevError::StateFormat {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let generation = doc.get("journal").and_then(Value::as_u64).unwrap_or(0);
    let mut apps = BTreeMap::new();
    for (i, entry) in doc
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (Some(def), Some(id)) = (
            entry.get("app"),
            entry.pointer("/app/id").and_then(Value::as_str),
        ) else {
            return Err(DevError::StateFormat {
                path,
                message: format!("/apps/{i} has no `app.id`"),
            });
        };
        let mut record = AppRecord::new(def.clone());
        if let Some(vs) = entry.get("versions").and_then(Value::as_object) {
            for (v, d) in vs {
                record.versions.insert(v.clone(), d.clone());
            }
        }
        apps.insert(id.to_string(), record);
    }
    Ok((apps, generation, text.len() as u64))
}

/// Replay the journal at `path` onto `apps`; the number of entries replayed. A torn last line
/// (no newline: its write never completed, so it was never acknowledged) is cut off.
fn replay(path: &Path, apps: &mut BTreeMap<String, AppRecord>) -> Result<usize, DevError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(state_err(path)(source)),
    };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut count = 0;
    for (n, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry = Entry::from_line(line).map_err(|message| DevError::StateFormat {
            path: path.to_path_buf(),
            message: format!("line {}: {message}", n + 1),
        })?;
        entry.replay(apps);
        count += 1;
    }
    if complete < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = bytes.len() - complete,
            "dev scheduler: dropping an incomplete last journal line (a write cut short, never acknowledged)"
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(state_err(path))?;
        f.set_len(complete as u64)
            .and_then(|()| f.sync_all())
            .map_err(state_err(path))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(id: &str, version: &str, cmd: &str) -> Value {
        json!({"id": id, "cmd": cmd, "version": version})
    }

    fn queue(world: &std::sync::Mutex<World>, entry: Entry) {
        let mut w = world.lock().unwrap();
        let mut apps = std::mem::take(&mut w.apps);
        entry.clone().replay(&mut apps);
        w.apps = apps;
        w.journal.push(entry);
    }

    fn world_of(apps: BTreeMap<String, AppRecord>) -> std::sync::Mutex<World> {
        std::sync::Mutex::new(World::with_apps(apps))
    }

    /// Every committed change is there after reopening, versions included, without any
    /// snapshot written in between (the journal alone carries them).
    #[test]
    fn committed_changes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, apps) = Journal::open(dir.path()).unwrap();
        assert!(apps.is_empty());
        let world = world_of(apps);
        queue(&world, Entry::Put(def("/a", "v1", "one")));
        queue(&world, Entry::Put(def("/b", "v1", "b")));
        j.commit(&world).unwrap();
        queue(&world, Entry::Put(def("/a", "v2", "two")));
        queue(&world, Entry::Delete("/b".into()));
        j.commit(&world).unwrap();
        assert!(
            !dir.path().join(SNAPSHOT).exists(),
            "no snapshot needed yet"
        );
        drop(j);

        let (_, apps) = Journal::open(dir.path()).unwrap();
        assert_eq!(apps.keys().collect::<Vec<_>>(), ["/a"]);
        assert_eq!(apps["/a"].def["cmd"], "two");
        assert_eq!(apps["/a"].versions.keys().collect::<Vec<_>>(), ["v1", "v2"]);
        // The replayed journal was folded into a snapshot; a third open reads the same.
        assert!(dir.path().join(SNAPSHOT).exists());
        let (_, again) = Journal::open(dir.path()).unwrap();
        assert_eq!(again["/a"].def, apps["/a"].def);
        assert_eq!(again["/a"].versions, apps["/a"].versions);
    }

    /// A write cut short (no newline) is dropped and cut off, so later appends stay readable;
    /// a bad complete line is an error naming the file and line.
    #[test]
    fn a_torn_last_line_is_dropped_and_a_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, apps) = Journal::open(dir.path()).unwrap();
        let world = world_of(apps);
        queue(&world, Entry::Put(def("/a", "v1", "one")));
        j.commit(&world).unwrap();
        drop(j);
        let path = journal_path(dir.path(), 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"put":{"id":"/a","cmd":"tw"#).unwrap();
        drop(f);
        let (_, apps) = Journal::open(dir.path()).unwrap();
        assert_eq!(apps["/a"].def["cmd"], "one");

        let (j, _) = Journal::open(dir.path()).unwrap();
        let path = journal_path(dir.path(), j.generation);
        drop(j);
        std::fs::write(
            &path,
            "{\"delete\":\"/a\"}\nnot json\n{\"delete\":\"/a\"}\n",
        )
        .unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 2"),
            "{err}"
        );
    }

    /// Past the threshold a commit writes a snapshot of the next generation and starts an
    /// empty journal; the old journal is removed and nothing is lost.
    #[test]
    fn a_large_journal_is_compacted_into_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, apps) = Journal::open(dir.path()).unwrap();
        let world = world_of(apps);
        let big = "x".repeat(4096);
        let mut n = 0;
        while j.generation == 0 {
            queue(&world, Entry::Put(def(&format!("/app{n}"), "v1", &big)));
            j.commit(&world).unwrap();
            n += 1;
            assert!(n < 1000, "never compacted");
        }
        assert!(!journal_path(dir.path(), 0).exists());
        assert_eq!(j.len, 0);
        drop(j);
        // A crash between the rename and the removal leaves the old journal: it is ignored
        // (its entries are in the snapshot) and removed.
        std::fs::write(journal_path(dir.path(), 0), "{\"delete\":\"/app0\"}\n").unwrap();
        let (_, apps) = Journal::open(dir.path()).unwrap();
        assert_eq!(apps.len(), n);
        assert!(!journal_path(dir.path(), 0).exists());
    }

    /// An append that fails is an error (the API answers 500, not 2xx), and the next commit
    /// writes every app into a new snapshot, the failed entries included: nothing is lost.
    #[test]
    fn a_failed_append_is_reported_and_the_next_commit_writes_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, apps) = Journal::open(dir.path()).unwrap();
        let world = world_of(apps);
        // A handle that cannot write stands in for a full or failing disk.
        j.file = File::open(journal_path(dir.path(), 0)).unwrap();
        queue(&world, Entry::Put(def("/a", "v1", "kept")));
        let err = j.commit(&world).unwrap_err().to_string();
        assert!(err.contains("apps.journal.0"), "{err}");
        assert!(j.broken);
        j.commit(&world).unwrap();
        assert_eq!((j.generation, j.broken), (1, false));
        drop(j);
        let (_, apps) = Journal::open(dir.path()).unwrap();
        assert_eq!(apps["/a"].def["cmd"], "kept");
    }

    /// A state dir written before journals existed (`apps.json` with pretty-printed apps and
    /// no `journal` key) still loads.
    #[test]
    fn an_older_snapshot_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = json!({"apps": [{"app": def("/a", "v1", "x"), "versions": {"v1": def("/a", "v1", "x")}}]});
        std::fs::write(
            dir.path().join(SNAPSHOT),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        let (j, apps) = Journal::open(dir.path()).unwrap();
        assert_eq!(j.generation, 0);
        assert_eq!(apps["/a"].def["cmd"], "x");
    }
}
