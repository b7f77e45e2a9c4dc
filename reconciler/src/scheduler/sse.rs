//! Server-Sent Events, as Marathon's `/v2/events` sends them: `event:` and `data:` lines, a blank
//! line ends an event. A pure, incremental parser: feed it bytes as they arrive.

use serde_json::Value;

use super::SchedulerEvent;

/// One SSE event: its `event:` name and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event: String,
    pub data: String,
}

/// Incremental parser; keeps an unfinished line between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

/// A line longer than this is dropped (with its event): the stream stays usable and memory
/// bounded even if a peer sends garbage.
const MAX_LINE: usize = 4 << 20;

impl Parser {
    /// Feed a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<RawEvent> {
        let mut out = Vec::new();
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            self.line(line, &mut out);
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
            self.event.clear();
            self.data.clear();
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<RawEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() || !self.event.is_empty() {
                out.push(RawEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }
}

/// The deployment events apply cares about; everything else is `None`.
pub fn deployment_event(raw: &RawEvent) -> Option<SchedulerEvent> {
    let doc: Value = serde_json::from_str(&raw.data).ok()?;
    let kind = if raw.event.is_empty() {
        doc.get("eventType").and_then(Value::as_str)?
    } else {
        raw.event.as_str()
    };
    let id = doc
        .get("id")
        .or_else(|| doc.pointer("/plan/id"))
        .and_then(Value::as_str)?
        .to_string();
    match kind {
        "deployment_success" => Some(SchedulerEvent::DeploymentSuccess { id }),
        "deployment_failed" => Some(SchedulerEvent::DeploymentFailed { id }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_parsed() {
        let mut p = Parser::default();
        let mut got = p.feed(b"event: deployment_success\r\nda");
        assert!(got.is_empty());
        got.extend(
            p.feed(b"ta: {\"id\":\"d1\",\"eventType\":\"deployment_success\"}\r\n\r\n: keep\n\n"),
        );
        got.extend(
            p.feed(b"event: deployment_failed\ndata: {\"id\":\"d2\"}\n\nevent: x\ndata: {}\n\n"),
        );
        let events: Vec<_> = got.iter().filter_map(deployment_event).collect();
        assert_eq!(
            events,
            vec![
                SchedulerEvent::DeploymentSuccess { id: "d1".into() },
                SchedulerEvent::DeploymentFailed { id: "d2".into() },
            ]
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn marathon_transcript_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/marathon/api-examples/events.txt");
        let Ok(text) = std::fs::read(&path) else {
            std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("skipped: {} is absent\n", path.display()),
            )
            .ok();
            return;
        };
        let got = Parser::default().feed(&text);
        // The transcript has no deployment events: three events, each with JSON data.
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got
            .iter()
            .all(|e| serde_json::from_str::<Value>(&e.data).is_ok()));
        assert!(got.iter().all(|e| deployment_event(e).is_none()));
    }
}
