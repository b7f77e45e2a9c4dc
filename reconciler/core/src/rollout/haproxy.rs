//! HAProxy's stats CSV (`show stat`, or the stats page with `;csv`), read by column name, into
//! the server rows of a [`super::Sample`]; and the analysis window's arithmetic.
//!
//! Work in progress (issue 15, WP-B): only the signatures are here.

use super::ServerRow;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("not an HAProxy stats CSV: {0}")]
    Format(String),
}

/// The server rows of one source's CSV (`source`: its index among `--haproxy-stats`).
pub fn parse_csv(source: usize, bytes: &[u8]) -> Result<Vec<ServerRow>, CsvError> {
    let _ = (source, bytes);
    todo!("WP-B")
}
