//! What `baton serve` remembers across restarts, in its state directory. The data and its
//! bookkeeping are pure and live in the core ([`baton_core::cycle::state`], re-exported here),
//! next to the cycle rule that reads them; this is the thin I/O shell: [`load`] and [`save`]
//! (atomically and 0600 through [`crate::daemon::state_dir`], so a crash leaves either the old
//! file or the new one, never a torn one).

use std::fs;
use std::path::{Path, PathBuf};

pub use baton_core::cycle::state::*;

/// File name inside the state directory.
pub const STATE_FILE: &str = "serve-state.json";

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read or write the state at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is not valid: {message}")]
    Format { path: PathBuf, message: String },
}

/// Read the state from `dir`; a missing file is a fresh state.
pub fn load(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(StateError::Format {
            path,
            message: format!("version {} (this baton reads {VERSION})", state.version),
        });
    }
    Ok(state)
}

/// Write the state atomically, mode 0600 ([`crate::daemon::state_dir::write_atomic`]).
pub fn save(dir: &Path, state: &State) -> Result<(), StateError> {
    let target = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Format {
        path: target.clone(),
        message: e.to_string(),
    })?;
    crate::daemon::state_dir::write_atomic(&target, &bytes).map_err(|source| StateError::Io {
        path: target,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_of_earlier_releases_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"version": 1, "lastFetched": "c1", "lastSynced": "c1",
            "apps": {"/a": {"lastApplied": "c1", "lastError": null, "failure": null}},
            "history": [{"startedMs": 1, "finishedMs": 2, "trigger": "poll", "commit": "c1",
                         "outcome": "synced", "changes": 0, "error": null}]}"#;
        fs::write(dir.path().join(STATE_FILE), old).unwrap();
        let s = load(dir.path()).unwrap();
        assert_eq!(s.apps["/a"].rewrite, None);
        assert_eq!((s.history[0].held, s.history[0].invalid), (0, 0));
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), State::new());
        let mut s = State::new();
        s.last_fetched = Some("abc".into());
        s.record_success("/a", "abc");
        s.record_failure("/b", "abc", "HTTP 422", 5);
        save(dir.path(), &s).unwrap();
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()]);
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Format { .. })));
    }
}
