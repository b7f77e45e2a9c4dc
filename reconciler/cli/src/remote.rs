//! `baton status [APP]`, `baton sync [--app APP...] [--wait]`, `baton history`: the daily
//! commands against a running `baton serve` (`GET /api/status`, `POST /api/sync`), through the
//! shared [`crate::client`].
//!
//! Exit codes (`baton::commands::exit`), as the one-shot commands':
//! - `status`: 0 every app (or APP) synced; 2 something out of sync (drift, a pending change, a
//!   held deletion, an invalid spec, a conflict), as `drift`'s 2; 3 an app failed, or the last
//!   cycle failed, as `apply`'s 3; 1 no such app.
//! - `sync`: 0 queued; with `--wait`, the outcome of the cycle that served this request: 0
//!   synced, 2 planned only (held back), 3 some apps failed, 1 the cycle failed or was stopped,
//!   or `--timeout` passed; 1 an unknown app (the server's 404) or a malformed one (400).
//! - `history`: 0.
//! - Every command: 4 the server unreachable or the token refused, 64 bad usage.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use baton::commands::{exit, Format};

use crate::client::{app_id, ClientError, Server};

/// How often `sync --wait` looks at the status.
const WAIT_POLL: Duration = Duration::from_millis(300);

/// `baton status [APP]`.
pub async fn status(
    server: &Server,
    app: Option<&str>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> Result<u8, ClientError> {
    let doc = server.status().await?;
    let Some(app) = app.map(app_id) else {
        match format {
            Format::Json => writeln!(out, "{doc}")?,
            Format::Text => write!(out, "{}", status_text(&doc))?,
        }
        let apps = doc.get("apps").and_then(Value::as_array);
        let mut code = apps
            .into_iter()
            .flatten()
            .map(app_code)
            .max()
            .unwrap_or(exit::OK);
        if !doc.get("lastError").is_none_or(Value::is_null) {
            code = exit::APPS_FAILED;
        }
        return Ok(code);
    };
    let entry = server.app_entry(&doc, &app)?;
    match format {
        Format::Json => writeln!(out, "{entry}")?,
        Format::Text => writeln!(out, "{}", app_line(entry))?,
    }
    Ok(app_code(entry))
}

/// The exit code one app's entry stands for.
fn app_code(entry: &Value) -> u8 {
    match entry.get("sync").and_then(Value::as_str) {
        Some("synced" | "deleted") => exit::OK,
        Some("failed") => exit::APPS_FAILED,
        _ => exit::CHANGES,
    }
}

fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("-")
}

/// One app for people: id, sync, health, commit, a deployment in flight, why.
fn app_line(entry: &Value) -> String {
    let mut line = format!(
        "{:<32} {:<10} {:<11} {}",
        text(entry.get("id")),
        text(entry.get("sync")),
        text(entry.get("health")),
        short(text(entry.get("commit")))
    );
    if let Some(d) = entry.get("deploying").filter(|d| !d.is_null()) {
        line.push_str(&format!("  deploying {}", text(d.get("deployment"))));
    }
    for key in ["lastError", "reason"] {
        if let Some(why) = entry.get(key).and_then(Value::as_str) {
            line.push_str(&format!("  ({why})"));
            break;
        }
    }
    line
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn when(ms: Option<&Value>) -> String {
    ms.and_then(Value::as_u64)
        .map(baton_core::drift::rfc3339)
        .unwrap_or_else(|| "-".into())
}

/// The whole status for people.
pub fn status_text(doc: &Value) -> String {
    let mut s = format!(
        "source: {}\nsync mode: {}, last synced: {}, last fetched: {}\n",
        text(doc.get("source")),
        text(doc.get("syncMode")),
        short(text(doc.get("lastSynced"))),
        short(text(doc.get("lastFetched"))),
    );
    if let Some(e) = doc.get("lastError").and_then(Value::as_str) {
        s.push_str(&format!("last cycle failed: {e}\n"));
    }
    if let Some(c) = doc.get("cycle").filter(|c| !c.is_null()) {
        s.push_str(&format!(
            "cycle in flight: {} ({}), since {}\n",
            text(c.get("trigger")),
            text(c.get("phase")),
            when(c.get("startedMs"))
        ));
    }
    let apps = doc.get("apps").and_then(Value::as_array);
    let apps: Vec<&Value> = apps.into_iter().flatten().collect();
    if apps.is_empty() {
        s.push_str("no apps\n");
    }
    for a in apps {
        s.push_str(&app_line(a));
        s.push('\n');
    }
    s
}

/// One history entry for people.
fn record_line(r: &Value) -> String {
    let mut line = format!(
        "{}  {:<15} {:<12} {:<9} {} changes",
        when(r.get("startedMs")),
        text(r.get("trigger")),
        short(text(r.get("commit"))),
        text(r.get("outcome")),
        r.get("changes").and_then(Value::as_u64).unwrap_or(0),
    );
    if let Some(apps) = r.pointer("/requests/apps").and_then(Value::as_array) {
        let apps: Vec<&str> = apps.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!(", apps {}", apps.join(" ")));
    }
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        line.push_str(&format!("  ({e})"));
    }
    line
}

/// `baton history`: the cycles `/api/status` keeps, most recent first.
pub async fn history(
    server: &Server,
    format: Format,
    out: &mut (dyn Write + Send),
) -> Result<u8, ClientError> {
    let doc = server.status().await?;
    let history = doc
        .get("history")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    match format {
        Format::Json => writeln!(out, "{history}")?,
        Format::Text => {
            let records = history.as_array().map(Vec::as_slice).unwrap_or_default();
            if records.is_empty() {
                writeln!(out, "no syncs yet")?;
            }
            for r in records {
                writeln!(out, "{}", record_line(r))?;
            }
        }
    }
    Ok(exit::OK)
}

/// What `baton sync` does.
pub struct SyncRequest<'a> {
    /// Only these apps (none: every app).
    pub apps: &'a [String],
    /// Wait for the cycle that serves the request, at most this long.
    pub wait: Option<Duration>,
}

/// `baton sync`: queue a sync (of some apps), and with `--wait` report how its cycle ended.
pub async fn sync(
    server: &Server,
    request: &SyncRequest<'_>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> Result<u8, ClientError> {
    let mut url = reqwest::Url::parse("http://baton.invalid/api/sync").map_err(|e| {
        ClientError::Protocol {
            server: server.shown().to_string(),
            reason: e.to_string(),
        }
    })?;
    if !request.apps.is_empty() {
        let mut q = url.query_pairs_mut();
        for app in request.apps {
            q.append_pair("app", &app_id(app));
        }
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let answer = server.post(&path).await?;
    let id = answer
        .get("sync")
        .and_then(Value::as_u64)
        .ok_or_else(|| ClientError::Protocol {
            server: server.shown().to_string(),
            reason: "no sync id in the answer of POST /api/sync (an older baton serve?)".into(),
        })?;
    let apps = answer.get("apps").cloned().unwrap_or(Value::Null);
    let named = match apps.as_array() {
        Some(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        None => "every app".into(),
    };
    let Some(limit) = request.wait else {
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"sync": id, "apps": apps, "record": null})
            )?,
            Format::Text => writeln!(out, "sync {id} queued ({named})")?,
        }
        return Ok(exit::OK);
    };
    let record = wait_for(server, id, limit).await?;
    let outcome = text(record.get("outcome")).to_string();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"sync": id, "apps": apps, "record": record})
        )?,
        Format::Text => {
            writeln!(
                out,
                "sync {id} ({named}) finished: {}",
                record_line(&record)
            )?;
        }
    }
    Ok(match outcome.as_str() {
        "synced" => exit::OK,
        "planned" => exit::CHANGES,
        "partial" => exit::APPS_FAILED,
        _ => exit::ERROR,
    })
}

/// The history entry of the cycle that served request `id`, once there is one.
async fn wait_for(server: &Server, id: u64, limit: Duration) -> Result<Value, ClientError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let doc = server.status().await?;
        let history = doc.get("history").and_then(Value::as_array);
        for r in history.into_iter().flatten() {
            let first = r.pointer("/requests/first").and_then(Value::as_u64);
            let last = r.pointer("/requests/last").and_then(Value::as_u64);
            if let (Some(first), Some(last)) = (first, last) {
                if (first..=last).contains(&id) {
                    return Ok(r.clone());
                }
            }
        }
        if tokio::time::Instant::now() + WAIT_POLL > deadline {
            return Err(ClientError::Timeout {
                sync: id,
                waited: limit,
                server: server.shown().to_string(),
            });
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}
