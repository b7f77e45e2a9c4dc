//! Apps and their versions: the dev scheduler's desired state, its clock and its persistence.
//!
//! Apps are kept as JSON in Marathon's stored form (what `GET /v2/apps/{id}/versions/{v}` serves):
//! the submitted app run through [`baton_core::spec::marathon_form`], service ports assigned, `version`
//! and `versionInfo` added. With a state dir, the apps and their versions survive restarts
//! ([`crate::journal`]); tasks do not: a restart ends the previous run's task processes and
//! launches new ones, as after a Marathon failover onto fresh agents ([`crate::leftovers`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::deploy::Deployment;
use crate::journal::Entry;
use crate::tasks::Task;

/// Marathon keeps this many versions of an app (`zk_max_versions`).
const MAX_VERSIONS: usize = 50;
/// Service ports are assigned from Marathon's default `local_port_min..local_port_max`.
pub const SERVICE_PORT_MIN: u16 = 10000;
pub const SERVICE_PORT_MAX: u16 = 20000;

/// Format a time as Marathon does: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub fn timestamp_now() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

/// Format a wall-clock time (e.g. a task's start) as a Marathon timestamp.
pub fn format_system_time(t: SystemTime) -> String {
    format_timestamp(OffsetDateTime::from(t))
}

/// Hands out app versions: timestamps that strictly increase, even within one millisecond, so
/// two changes never share a version.
#[derive(Debug)]
pub struct VersionClock {
    last: OffsetDateTime,
}

impl Default for VersionClock {
    fn default() -> Self {
        VersionClock {
            last: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

impl VersionClock {
    pub fn next_version(&mut self) -> String {
        let now = OffsetDateTime::now_utc();
        let now = now - Duration::from_nanos(u64::from(now.nanosecond() % 1_000_000));
        self.last = if now > self.last {
            now
        } else {
            self.last + Duration::from_millis(1)
        };
        format_timestamp(self.last)
    }
}

/// The launch delay of an app that keeps failing (Marathon's backoff, see `docs/backoff.md`).
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay the next failure will impose.
    pub next_delay: Duration,
    /// No task of the app is launched before this.
    pub until: Instant,
}

/// One app: its current definition, past versions and what the scheduler knows about its tasks.
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// Stored form, with `version` and `versionInfo`.
    pub def: Value,
    /// Every kept version (stored form), by version string.
    pub versions: BTreeMap<String, Value>,
    pub last_task_failure: Option<Value>,
    pub backoff: Option<Backoff>,
    /// When the app last started waiting for a launch (the queue's `since`).
    pub queued_since: Option<SystemTime>,
}

impl AppRecord {
    pub fn new(def: Value) -> Self {
        let mut versions = BTreeMap::new();
        if let Some(v) = def.get("version").and_then(Value::as_str) {
            versions.insert(v.to_string(), def.clone());
        }
        AppRecord {
            def,
            versions,
            last_task_failure: None,
            backoff: None,
            queued_since: None,
        }
    }

    /// Replace the definition and remember it as a version (oldest versions are dropped).
    pub fn set_def(&mut self, def: Value) {
        if let Some(v) = def.get("version").and_then(Value::as_str) {
            self.versions.insert(v.to_string(), def.clone());
        }
        while self.versions.len() > MAX_VERSIONS {
            let Some(oldest) = self.versions.keys().next().cloned() else {
                break;
            };
            self.versions.remove(&oldest);
        }
        self.def = def;
    }
}

/// Everything the dev scheduler knows. Guarded by one mutex; no I/O happens under it.
#[derive(Debug, Default)]
pub struct World {
    pub apps: BTreeMap<String, AppRecord>,
    pub tasks: BTreeMap<String, Task>,
    pub deployments: Vec<Deployment>,
    pub clock: VersionClock,
    /// Changes of apps not yet made durable (see [`crate::journal`]); kept only when
    /// [`World::journaling`].
    pub journal: Vec<Entry>,
    /// Apps are kept in a state dir: every change is queued in [`World::journal`].
    pub journaling: bool,
    /// Which apps hold each service port (see [`World::index_ports`]), so assigning ports to a
    /// written app does not look at every other app.
    service_ports: BTreeMap<u16, BTreeSet<String>>,
}

/// The part of an app that, when it changes, means its tasks must be replaced: everything but
/// `instances` and the version fields, plus `versionInfo.lastConfigChangeAt`. Marathon calls
/// that a config change (vs. a scaling); a restart (`POST /v2/apps/{id}/restart`) is one that
/// changes only `lastConfigChangeAt`.
pub fn config_of(def: &Value) -> Value {
    let mut c = def.clone();
    if let Some(o) = c.as_object_mut() {
        let changed = o
            .get("versionInfo")
            .and_then(|v| v.get("lastConfigChangeAt"))
            .cloned();
        for k in ["instances", "version", "versionInfo"] {
            o.remove(k);
        }
        // No labels and `{}` are one configuration (definitions stored before `{}` was filled
        // in must not look changed, which would restart their tasks).
        if o.get("labels")
            .is_some_and(|l| l.is_null() || l == &json!({}))
        {
            o.remove("labels");
        }
        if let Some(at) = changed {
            o.insert(
                "versionInfo".into(),
                serde_json::json!({ "lastConfigChangeAt": at }),
            );
        }
    }
    c
}

/// Whether two definitions have the same fields, `instances` and the version fields aside: a
/// write that keeps them is a scaling (or nothing), and keeps `lastConfigChangeAt`.
pub fn same_definition(a: &Value, b: &Value) -> bool {
    const SKIPPED: [&str; 3] = ["instances", "version", "versionInfo"];
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(bm)) => {
            let mut a = a.iter().filter(|(k, _)| !SKIPPED.contains(&k.as_str()));
            let b = bm.keys().filter(|k| !SKIPPED.contains(&k.as_str()));
            a.clone().count() == b.count() && a.all(|(k, v)| bm.get(k) == Some(v))
        }
        _ => a == b,
    }
}

pub fn instances_of(def: &Value) -> usize {
    def.get("instances")
        .and_then(Value::as_u64)
        .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Service ports an app holds: non-zero `portDefinitions[].port` and
/// `container.portMappings[].servicePort`.
fn service_ports_of(def: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for p in port_slots(def) {
        if let Some(port) = p
            .and_then(|v| v.as_u64())
            .and_then(|n| u16::try_from(n).ok())
        {
            if port != 0 {
                out.push(port);
            }
        }
    }
    out
}

fn port_slots(def: &Value) -> Vec<Option<&Value>> {
    if let Some(pds) = def.get("portDefinitions").and_then(Value::as_array) {
        return pds.iter().map(|p| p.get("port")).collect();
    }
    if let Some(pms) = def
        .pointer("/container/portMappings")
        .and_then(Value::as_array)
    {
        return pms.iter().map(|p| p.get("servicePort")).collect();
    }
    Vec::new()
}

impl World {
    /// A world holding `apps` (read from a state dir), its port index built.
    pub fn with_apps(apps: BTreeMap<String, AppRecord>) -> World {
        let mut world = World::default();
        for (id, record) in &apps {
            for port in service_ports_of(&record.def) {
                world
                    .service_ports
                    .entry(port)
                    .or_default()
                    .insert(id.clone());
            }
        }
        world.apps = apps;
        world
    }

    /// Keep the port index right when the definition of `id` goes from `old` to `new` (`None`:
    /// absent). Every change of `apps` goes through here ([`crate::deploy::apply`]).
    pub fn index_ports(&mut self, id: &str, old: Option<&Value>, new: Option<&Value>) {
        for port in old.map(service_ports_of).unwrap_or_default() {
            if let Some(holders) = self.service_ports.get_mut(&port) {
                holders.remove(id);
                if holders.is_empty() {
                    self.service_ports.remove(&port);
                }
            }
        }
        for port in new.map(service_ports_of).unwrap_or_default() {
            self.service_ports
                .entry(port)
                .or_default()
                .insert(id.to_string());
        }
    }

    /// The first port from `from` up that neither another app nor `own` holds (or
    /// [`SERVICE_PORT_MAX`] when none is left). Walks the index in order, not port by port.
    fn free_port_from(&self, from: u16, except: &str, own: &BTreeSet<u16>) -> u16 {
        let mut taken = self
            .service_ports
            .range(from..)
            .filter(|(_, holders)| holders.iter().any(|h| h != except))
            .map(|(p, _)| *p)
            .peekable();
        let mut port = from;
        while port < SERVICE_PORT_MAX {
            while taken.next_if(|t| *t < port).is_some() {}
            if taken.peek() != Some(&port) && !own.contains(&port) {
                return port;
            }
            port += 1;
        }
        SERVICE_PORT_MAX
    }

    /// Whether an app other than `except` holds `port`.
    fn port_taken(&self, port: u16, except: &str) -> bool {
        self.service_ports
            .get(&port)
            .is_some_and(|holders| holders.iter().any(|h| h != except))
    }

    /// Marathon assigns a service port to every `portDefinitions[].port` (or
    /// `container.portMappings[].servicePort`) of 0: unique across apps, from 10000 up. A port the
    /// previous version of the app held at the same index is kept, so an unchanged spec does not
    /// move its ports.
    pub fn assign_service_ports(&self, id: &str, def: &mut Value, previous: Option<&Value>) {
        // Ports this definition fixes itself, and those handed out below.
        let mut own: BTreeSet<u16> = service_ports_of(def).into_iter().collect();
        let used = |own: &BTreeSet<u16>, p: u16| own.contains(&p) || self.port_taken(p, id);
        let prev: Vec<u16> = previous
            .map(|p| {
                port_slots(p)
                    .into_iter()
                    .map(|v| {
                        v.and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok())
                            .unwrap_or(0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (list, key) = if def.get("portDefinitions").is_some() {
            ("/portDefinitions", "port")
        } else {
            ("/container/portMappings", "servicePort")
        };
        let Some(items) = def.pointer_mut(list).and_then(Value::as_array_mut) else {
            return;
        };
        let mut next = SERVICE_PORT_MIN;
        for (i, item) in items.iter_mut().enumerate() {
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            let current = obj.get(key).and_then(Value::as_u64).unwrap_or(0);
            if current != 0 {
                continue;
            }
            let port = match prev.get(i) {
                Some(&p) if p != 0 && !used(&own, p) => p,
                _ => {
                    next = self.free_port_from(next, id, &own);
                    next
                }
            };
            own.insert(port);
            obj.insert(key.into(), json!(port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_end_in_z() {
        let mut clock = VersionClock::default();
        let a = clock.next_version();
        let b = clock.next_version();
        assert!(b > a, "{b} must sort after {a}");
        assert!(a.ends_with('Z') && a.len() == 24, "{a}");
    }

    #[test]
    fn service_ports_are_unique_and_kept_across_versions() {
        let mut world = World::default();
        let mut a = json!({"id": "/a", "portDefinitions": [{"port": 0}, {"port": 0}]});
        world.assign_service_ports("/a", &mut a, None);
        assert_eq!(a.pointer("/portDefinitions/0/port"), Some(&json!(10000)));
        assert_eq!(a.pointer("/portDefinitions/1/port"), Some(&json!(10001)));
        world.index_ports("/a", None, Some(&a));
        world.apps.insert("/a".into(), AppRecord::new(a.clone()));

        let mut b = json!({"id": "/b", "portDefinitions": [{"port": 0}]});
        world.assign_service_ports("/b", &mut b, None);
        assert_eq!(b.pointer("/portDefinitions/0/port"), Some(&json!(10002)));

        let mut a2 = json!({"id": "/a", "portDefinitions": [{"port": 0}, {"port": 0}]});
        world.assign_service_ports("/a", &mut a2, Some(&a));
        assert_eq!(a2, a);
    }

    /// The port index changes with every definition written through `deploy::apply` and agrees
    /// with the ports the apps hold; a deleted app's ports are free again.
    #[test]
    fn the_port_index_follows_every_change() {
        let bus = crate::events::EventBus::default();
        let mut world = World::default();
        let put = |world: &mut World, id: &str, ports: Value| {
            let mut def = json!({"id": id, "cmd": "x", "portDefinitions": ports});
            let previous = world.apps.get(id).map(|r| r.def.clone());
            world.assign_service_ports(id, &mut def, previous.as_ref());
            let v = world.clock.next_version();
            crate::deploy::apply(world, &bus, vec![(id.into(), Some(def))], v, true).unwrap();
        };
        let recount = |world: &World| -> BTreeMap<u16, BTreeSet<String>> {
            let mut m: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
            for (id, r) in &world.apps {
                for p in service_ports_of(&r.def) {
                    m.entry(p).or_default().insert(id.clone());
                }
            }
            m
        };
        put(&mut world, "/a", json!([{"port": 0}, {"port": 0}]));
        put(&mut world, "/b", json!([{"port": 0}]));
        put(&mut world, "/c", json!([{"port": 10005}]));
        assert_eq!(world.service_ports, recount(&world));
        assert_eq!(world.apps["/b"].def["portDefinitions"][0]["port"], 10002);
        // /a shrinks to one port: 10001 is free for the next app.
        put(&mut world, "/a", json!([{"port": 0}]));
        assert_eq!(world.apps["/a"].def["portDefinitions"][0]["port"], 10000);
        put(&mut world, "/d", json!([{"port": 0}]));
        assert_eq!(world.apps["/d"].def["portDefinitions"][0]["port"], 10001);
        // /b goes: its port is taken by the next app that needs one.
        let v = world.clock.next_version();
        crate::deploy::apply(&mut world, &bus, vec![("/b".into(), None)], v, true).unwrap();
        assert_eq!(world.service_ports, recount(&world));
        put(&mut world, "/e", json!([{"port": 0}, {"port": 0}]));
        assert_eq!(
            world.apps["/e"].def["portDefinitions"],
            json!([{"port": 10002}, {"port": 10003}])
        );
        assert_eq!(world.service_ports, recount(&world));
        // A world read from a state dir starts with the index of its apps.
        let loaded = World::with_apps(world.apps.clone());
        assert_eq!(loaded.service_ports, recount(&world));
    }
}
