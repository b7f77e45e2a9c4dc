//! The drift ledger's file in the state directory: read at start, replaced atomically (mode
//! 0600, [`super::state_dir::write_atomic`]) after each cycle that changed it.

use std::path::{Path, PathBuf};

use baton_core::drift::ledger::{Ledger, LEDGER_FILE};

/// Errors reading or writing the ledger file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read or write the drift ledger at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the drift ledger {path} is not valid: {message}")]
    Format { path: PathBuf, message: String },
}

/// Read the ledger from `dir` (an absent file is an empty ledger).
pub fn load(dir: &Path) -> Result<Ledger, LedgerError> {
    let path = dir.join(LEDGER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LedgerError::Format {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(source) => Err(LedgerError::Io { path, source }),
    }
}

/// Write the ledger atomically, mode 0600 ([`super::state_dir::write_atomic`]); a crash leaves
/// the old ledger or the new one, never a torn one.
pub fn save(dir: &Path, ledger: &Ledger) -> Result<(), LedgerError> {
    let target = dir.join(LEDGER_FILE);
    let bytes = serde_json::to_vec_pretty(ledger).map_err(|e| LedgerError::Format {
        path: target.clone(),
        message: e.to_string(),
    })?;
    super::state_dir::write_atomic(&target, &bytes).map_err(|source| LedgerError::Io {
        path: target,
        source,
    })
}

#[cfg(test)]
mod tests {
    use baton_core::drift::ledger::{LedgerEntry, Resolution};
    use baton_core::drift::DriftState;
    use baton_core::spec::AppId;

    use super::*;

    /// Saved and read back unchanged; an absent file is an empty ledger; a torn one an error.
    #[test]
    fn the_ledger_round_trips_through_its_file() {
        let mut ledger = Ledger::default();
        ledger.entries.push(LedgerEntry {
            app: AppId::parse("/web").unwrap(),
            state: DriftState::Drifted,
            first_seen: 1,
            last_seen: 2,
            duration_seconds: 0,
            fields: vec!["/cmd".into()],
            changed_by: None,
            resolution: Some(Resolution::OutOfBand),
            resolved_at: Some(2),
            git_digest: None,
        });
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &ledger).unwrap();
        assert_eq!(load(dir.path()).unwrap(), ledger);
        assert_eq!(load(&dir.path().join("absent")).unwrap(), Ledger::default());
        std::fs::write(dir.path().join(LEDGER_FILE), "{").unwrap();
        assert!(matches!(load(dir.path()), Err(LedgerError::Format { .. })));
    }
}
