//! The event bus: Marathon's `/v2/events` Server-Sent Events stream.
//!
//! Every event is a JSON object with `eventType` and `timestamp` (as in Marathon's `events.txt`),
//! sent as `event: <eventType>` + `data: <json>`. Slow subscribers lose events rather than slow
//! down the scheduler (a bounded broadcast channel), as Marathon's own stream does.

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::store::timestamp_now;

/// Events kept for a subscriber that does not keep up; older ones are dropped for it.
const BUS_CAPACITY: usize = 1024;

/// One event as it goes over the wire.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: String,
    /// The whole JSON object, `eventType` and `timestamp` included.
    pub body: Value,
}

/// The sending side of the bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        EventBus { tx }
    }
}

impl EventBus {
    /// Publish `fields` as an event of `event_type`, adding `eventType` and `timestamp`.
    pub fn publish(&self, event_type: &str, fields: Value) {
        let _ = self.tx.send(make_event(event_type, fields));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// Build an event: the given fields, then `eventType` and `timestamp`.
pub fn make_event(event_type: &str, fields: Value) -> Event {
    let mut body = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("eventType".into(), Value::String(event_type.into()));
    body.insert("timestamp".into(), Value::String(timestamp_now()));
    Event {
        event_type: event_type.to_string(),
        body: Value::Object(body),
    }
}
