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
    /// Bytes in `data`; past [`MAX_LINE`] the event is dropped (`discard` until its end), so a
    /// peer that never ends an event cannot grow it without bound.
    data_bytes: usize,
    discard: bool,
}

/// A line longer than this is dropped (with its event): the stream stays usable and memory
/// bounded even if a peer sends garbage.
const MAX_LINE: usize = 4 << 20;

impl Parser {
    /// Feed a chunk; returns the events it completed. Linear in the chunk: only the new bytes
    /// are searched for line ends (the unfinished line before them has none), and the finished
    /// lines leave the buffer in one move, not one move per line (which made a chunk of many
    /// short lines quadratic: seconds for a few megabytes).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<RawEvent> {
        let mut out = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        let mut search = buf.len();
        buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(i) = buf[search..].iter().position(|b| *b == b'\n') {
            let end = search + i;
            let line = String::from_utf8_lossy(&buf[start..end]);
            self.line(line.trim_end_matches('\r'), &mut out);
            start = end + 1;
            search = start;
        }
        buf.drain(..start);
        self.buf = buf;
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
            self.event.clear();
            self.data.clear();
            self.data_bytes = 0;
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<RawEvent>) {
        if line.is_empty() {
            if std::mem::take(&mut self.discard) {
                self.event.clear();
            } else if !self.data.is_empty() || !self.event.is_empty() {
                out.push(RawEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.data_bytes = 0;
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
            "data" if self.discard => {}
            "data" => {
                self.data_bytes += value.len() + 1;
                if self.data_bytes > MAX_LINE {
                    self.discard = true;
                    self.data = Vec::new();
                    self.data_bytes = 0;
                } else {
                    self.data.push(value.to_string());
                }
            }
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

    /// A chunk of many short lines costs time in proportion to its size (it took minutes: each
    /// line moved the rest of the buffer).
    #[test]
    fn a_chunk_of_many_lines_is_parsed_in_linear_time() {
        let mut chunk = Vec::new();
        for i in 0..300_000 {
            chunk.extend_from_slice(format!("data: {i}\n").as_bytes());
        }
        chunk.extend_from_slice(b"\n");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Parser::default().feed(&chunk));
        });
        let events = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a 4 MB chunk took over a minute to parse");
        assert_eq!(events.len(), 1);
        assert!(events[0].data.ends_with("\n299999"));
    }

    /// An event whose data never ends is dropped past the bound; the stream goes on.
    #[test]
    fn an_endless_event_is_dropped_and_memory_stays_bounded() {
        let mut p = Parser::default();
        let line = format!("data: {}\n", "x".repeat(1000));
        for _ in 0..10_000 {
            assert!(p.feed(line.as_bytes()).is_empty());
        }
        let got = p.feed(b"\nevent: deployment_success\ndata: {\"id\":\"d1\"}\n\n");
        assert_eq!(
            got.len(),
            1,
            "only the event after the dropped one: {:.80?}",
            got
        );
        assert_eq!(got[0].event, "deployment_success");
    }

    #[test]
    fn marathon_transcript_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/marathon/api-examples/events.txt");
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
