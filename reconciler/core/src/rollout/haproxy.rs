//! HAProxy's stats CSV (`show stat`, or the stats page with `;csv`), read by column name, into
//! the server rows of a [`super::Sample`]; which rows are a given app's tasks; and the analysis
//! window's arithmetic.
//!
//! Columns are read by name, never by position: HAProxy adds columns between versions (2.6 has
//! one named `-`, which crashed marathon-lb's `zdd.py`). The stats page marathon-lb configures
//! has no `stats show-legends`, so its `addr` column is empty: rows are matched to tasks by the
//! server name marathon-lb gives them as well as by address.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Counters, Sample, ServerRow, Window};

/// Bytes of one source's CSV that are read; the rest is ignored (a stats page of thousands of
/// servers is well under this).
pub const MAX_BYTES: usize = 4 << 20;
/// Rows of one source's CSV that are read; the rest are ignored.
pub const MAX_ROWS: usize = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("not an HAProxy stats CSV: {0}")]
    Format(String),
}

/// The columns summed into [`Counters::responses`] (with `eresp`, which counts into
/// [`Counters::errors`] too).
const RESPONSE_COLUMNS: [&str; 6] = [
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
];

/// The server rows of one source's CSV (`source`: its index among `--haproxy-stats`).
/// FRONTEND, BACKEND and listener rows are left out. An empty counter (tcp mode has no
/// `hrsp_*`) counts 0. Input beyond [`MAX_BYTES`] or [`MAX_ROWS`] is ignored.
pub fn parse_csv(source: usize, bytes: &[u8]) -> Result<Vec<ServerRow>, CsvError> {
    let bytes = bounded(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(CsvError::Format(format!("line 1: {e}"))),
        None => return Err(CsvError::Format("it is empty".into())),
    };
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = String::from_utf8_lossy(f);
            let f = if i == 0 {
                f.trim_start_matches('#').trim()
            } else {
                f.trim()
            };
            f.to_string()
        })
        .collect();
    if header.get(0).is_none_or(|f| !f.starts_with(b"#")) {
        return Err(CsvError::Format(
            "line 1 is not a header (`# pxname,svname,...`)".into(),
        ));
    }
    let column = |name: &str| names.iter().position(|n| n == name);
    let (Some(pxname), Some(svname)) = (column("pxname"), column("svname")) else {
        return Err(CsvError::Format(
            "the header has no `pxname` or `svname` column".into(),
        ));
    };
    let kind = column("type");
    let addr = column("addr");
    let responses: Vec<usize> = RESPONSE_COLUMNS.iter().filter_map(|c| column(c)).collect();
    let errors = column("hrsp_5xx");
    // Responses that failed at the server (a timeout: HAProxy answers 504; a dropped
    // connection: 502): the client got a 5xx, but the server's `hrsp_*` do not count it.
    let failed = column("eresp");

    let mut rows = Vec::new();
    for (i, record) in records.take(MAX_ROWS).enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| CsvError::Format(format!("line {line}: {e}")))?;
        let cell = |c: usize| -> &str {
            record
                .get(c)
                .and_then(|f| std::str::from_utf8(f).ok())
                .map(str::trim)
                .unwrap_or("")
        };
        if record.len() < 2 {
            continue; // the blank line that ends `show stat`
        }
        let server = cell(svname);
        let is_server = match kind.map(&cell).filter(|t| !t.is_empty()) {
            Some(t) => t == "2",
            None => server != "FRONTEND" && server != "BACKEND",
        };
        if !is_server {
            continue;
        }
        let number = |c: usize| -> Result<u64, CsvError> {
            let text = cell(c);
            if text.is_empty() {
                return Ok(0);
            }
            text.parse().map_err(|_| {
                // Quoted, and cut: the cell is whatever the source sent.
                let shown: String = text.chars().take(40).collect();
                CsvError::Format(format!(
                    "line {line}, column `{}`: not a count: {shown:?}",
                    names.get(c).map(String::as_str).unwrap_or("?")
                ))
            })
        };
        let mut counters = Counters::default();
        for &c in &responses {
            counters.responses = counters.responses.saturating_add(number(c)?);
        }
        if let Some(c) = errors {
            counters.errors = number(c)?;
        }
        // Only in http mode (its `hrsp_*` are filled): a tcp server has no responses to fail.
        let http = errors.is_some_and(|c| !cell(c).is_empty());
        if let Some(c) = failed.filter(|_| http) {
            let n = number(c)?;
            counters.responses = counters.responses.saturating_add(n);
            counters.errors = counters.errors.saturating_add(n);
        }
        rows.push(ServerRow {
            source,
            proxy: cell(pxname).to_string(),
            server: server.to_string(),
            addr: addr.map(cell).filter(|a| !a.is_empty()).map(String::from),
            counters,
        });
    }
    Ok(rows)
}

/// At most [`MAX_BYTES`], cut after the last whole line.
fn bounded(bytes: &[u8]) -> &[u8] {
    if bytes.len() <= MAX_BYTES {
        return bytes;
    }
    let head = &bytes[..MAX_BYTES];
    match head.iter().rposition(|b| *b == b'\n') {
        Some(end) => &head[..=end],
        None => head,
    }
}

/// The key of a server row in [`Window::last`]: `source/proxy/server`.
pub fn row_key(row: &ServerRow) -> String {
    format!("{}/{}/{}", row.source, row.proxy, row.server)
}

/// How the rows of one app's tasks are told apart: the addresses (`ip:port`) HAProxy may show
/// for them and the server names marathon-lb gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Servers {
    /// `ip:port` per task (index into the tasks given to [`Servers::of`]).
    addrs: BTreeMap<String, usize>,
    /// marathon-lb's exact server names per task.
    names: BTreeMap<String, usize>,
    /// For tasks on a named host: (sanitised host + `_`, `_` + port) -> task. marathon-lb's
    /// name is `host_ip_port` with the host's resolved IP, which a pure function cannot know.
    named_hosts: Vec<(String, String, usize)>,
}

impl Servers {
    /// The servers of `tasks` (Marathon task JSON: `host`, `ipAddresses`, `ports`).
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a Value>) -> Servers {
        Servers::of_app(None, tasks)
    }

    /// [`Servers::of`] for tasks of `app`: an app on a container network (IP per task) is
    /// reached by marathon-lb at each task's IP and the app's container ports.
    pub fn of_app<'a>(app: Option<&Value>, tasks: impl IntoIterator<Item = &'a Value>) -> Servers {
        let container_ports: Vec<u64> = app
            .filter(|a| {
                a.get("networks")
                    .and_then(Value::as_array)
                    .is_some_and(|n| {
                        n.iter()
                            .any(|n| n.get("mode").and_then(Value::as_str) == Some("container"))
                    })
            })
            .and_then(|a| a.pointer("/container/portMappings"))
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                    .collect()
            })
            .unwrap_or_default();
        let mut s = Servers::default();
        for (i, task) in tasks.into_iter().enumerate() {
            let host = task.get("host").and_then(Value::as_str).unwrap_or("");
            let ips: Vec<&str> = task
                .get("ipAddresses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|ip| ip.get("ipAddress").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let ports: Vec<u64> = task
                .get("ports")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let host_is_ip = host.parse::<std::net::IpAddr>().is_ok();
            for port in &ports {
                for ip in ips.iter().copied().chain(host_is_ip.then_some(host)) {
                    s.addrs.insert(format!("{ip}:{port}"), i);
                    s.names.insert(sanitize(&format!("{ip}_{port}")), i);
                    if !host.is_empty() && host != ip {
                        s.names.insert(sanitize(&format!("{host}_{ip}_{port}")), i);
                    }
                }
                if !host.is_empty() && !host_is_ip {
                    s.named_hosts
                        .push((sanitize(&format!("{host}_")), format!("_{port}"), i));
                }
            }
            for port in &container_ports {
                for ip in &ips {
                    s.addrs.insert(format!("{ip}:{port}"), i);
                    s.names.insert(sanitize(&format!("{ip}_{port}")), i);
                    // marathon-lb's name carries the agent's host too when it is not the
                    // task's IP (always so with IP per task).
                    if !host.is_empty() && host != *ip {
                        s.names.insert(sanitize(&format!("{host}_{ip}_{port}")), i);
                    }
                }
            }
        }
        s
    }

    /// The task (index) a row belongs to, if any.
    pub fn task_of(&self, row: &ServerRow) -> Option<usize> {
        if let Some(t) = row.addr.as_ref().and_then(|a| self.addrs.get(a)) {
            return Some(*t);
        }
        if let Some(t) = self.names.get(&row.server) {
            return Some(*t);
        }
        self.named_hosts.iter().find_map(|(prefix, suffix, t)| {
            let middle = row
                .server
                .strip_prefix(prefix.as_str())?
                .strip_suffix(suffix.as_str())?;
            // The sanitised IPv4 address in between: digits and underscores only.
            let is_ip = !middle.is_empty()
                && middle.bytes().all(|b| b.is_ascii_digit() || b == b'_')
                && middle.split('_').count() == 4;
            is_ip.then_some(*t)
        })
    }

    /// Whether no task has an address to match.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.names.is_empty() && self.named_hosts.is_empty()
    }
}

/// marathon-lb's server name: every character but ASCII letters, digits and `-` made `_`
/// (`marathon_lb.py`, "Create a unique, friendly name for the backend server").
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Which tasks of `servers` have a row in `sample`.
pub fn seen(servers: &Servers, sample: &Sample) -> BTreeSet<usize> {
    sample
        .rows
        .iter()
        .filter_map(|r| servers.task_of(r))
        .collect()
}

/// How many tasks of `servers` every load balancer serving the app shows: per source that has
/// a row of `servers` or of `stable`, the tasks of `servers` seen there; the fewest over those
/// sources (0 when there is none). A load balancer that has not reloaded yet still sends the
/// canary's share to the stable, so nothing may be judged or switched on the others alone.
pub fn seen_everywhere(servers: &Servers, stable: &Servers, sample: &Sample) -> usize {
    let mut per_source: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for r in &sample.rows {
        if let Some(t) = servers.task_of(r) {
            per_source.entry(r.source).or_default().insert(t);
        } else if stable.task_of(r).is_some() {
            per_source.entry(r.source).or_default();
        }
    }
    per_source.values().map(BTreeSet::len).min().unwrap_or(0)
}

impl Window {
    /// A window starting at `now_ms`, with the counters of `sample` as its base.
    pub fn open(now_ms: u64, sample: &Sample, canary: &Servers, stable: &Servers) -> Window {
        let mut w = Window {
            since_ms: now_ms,
            last: BTreeMap::new(),
            canary: Counters::default(),
            stable: Counters::default(),
        };
        w.last = relevant(sample, canary, stable)
            .map(|(_, r)| (row_key(r), r.counters))
            .collect();
        w
    }

    /// Count what happened since the last sample: per server, the difference to the counters
    /// last seen, or the raw counters when they went down (each marathon-lb reload starts a new
    /// HAProxy at zero) or the server is new.
    pub fn observe(&mut self, sample: &Sample, canary: &Servers, stable: &Servers) {
        // What a sample lacks is kept: a row back after a gap (a page cut at its bound) is a
        // difference to its last counters, not its whole history again. (Bounded by the
        // servers seen in this window's life, one step.)
        let mut last = std::mem::take(&mut self.last);
        for (is_canary, row) in relevant(sample, canary, stable) {
            let key = row_key(row);
            let raw = row.counters;
            let d = match last.get(&key) {
                Some(prev) if raw.responses >= prev.responses && raw.errors >= prev.errors => {
                    Counters {
                        responses: raw.responses - prev.responses,
                        errors: raw.errors - prev.errors,
                    }
                }
                _ => raw,
            };
            let sum = if is_canary {
                &mut self.canary
            } else {
                &mut self.stable
            };
            sum.responses = sum.responses.saturating_add(d.responses);
            sum.errors = sum.errors.saturating_add(d.errors);
            last.insert(key, raw);
        }
        self.last = last;
    }
}

/// The rows of `sample` that are canary (`true`) or stable (`false`) servers.
fn relevant<'s>(
    sample: &'s Sample,
    canary: &'s Servers,
    stable: &'s Servers,
) -> impl Iterator<Item = (bool, &'s ServerRow)> + 's {
    sample.rows.iter().filter_map(|r| {
        if canary.task_of(r).is_some() {
            Some((true, r))
        } else if stable.task_of(r).is_some() {
            Some((false, r))
        } else {
            None
        }
    })
}

/// The error rate of `c` (0 without responses).
pub fn error_rate(c: &Counters) -> f64 {
    if c.responses == 0 {
        0.0
    } else {
        c.errors as f64 / c.responses as f64
    }
}
