//! Query strings, label selectors and app paths: what a request asks for, parsed without
//! looking at the world (pure, so it is tested here without a server).
//!
//! Marathon's semantics are kept: repeated parameters (`embed=a&embed=b`), Jersey's booleans
//! (`true` in any case, anything else false), its label selector language, and the suffixes it
//! resolves in `/v2/apps/{*rest}` before the rest is taken as an app id.

use serde_json::{Map, Value};

/// A request's query parameters in order, repeated keys kept (`embed=a&embed=b`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Parse a raw query string (`None`: no query), percent-decoding keys and values.
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.unwrap_or_default()
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Jersey's boolean parsing: "true" in any case is true, anything else false; `default`
    /// when the parameter is absent.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        self.get(key)
            .map_or(default, |v| v.eq_ignore_ascii_case("true"))
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, a malformed `%` escape stays
/// as it is, invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/a//b/` -> `/a/b`.
pub(crate) fn canonical_id(raw: &str) -> String {
    let parts: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Which nested resources an app answer embeds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Embed {
    /// `tasks`: the app's tasks.
    pub tasks: bool,
    /// `tasksStaged`, `tasksRunning`, `tasksHealthy`, `tasksUnhealthy`.
    pub counts: bool,
    /// `deployments`: the ids of the deployments that lock the app.
    pub deployments: bool,
    /// `lastTaskFailure`, when there was one.
    pub failure: bool,
    /// `readinessCheckResults` (always empty: no readiness checks run).
    pub readiness: bool,
    /// `taskStats` (always empty).
    pub stats: bool,
}

impl Embed {
    /// `base` plus what the `embed` parameters ask for (`apps.`/`app.` prefixes ignored, unknown
    /// values too, as Marathon does).
    pub fn parse(q: &Query, mut base: Embed) -> Embed {
        for v in q.all("embed") {
            let what = v.trim_start_matches("apps.").trim_start_matches("app.");
            match what {
                "tasks" => {
                    base.tasks = true;
                    base.deployments = true;
                }
                "counts" | "count" => base.counts = true,
                "deployments" => base.deployments = true,
                "lastTaskFailure" => base.failure = true,
                "readiness" => base.readiness = true,
                "taskStats" => base.stats = true,
                "failures" => {
                    base.failure = true;
                    base.tasks = true;
                    base.counts = true;
                    base.deployments = true;
                }
                _ => {}
            }
        }
        base
    }
}

// Label selectors (`GET /v2/apps?label=...`)

#[derive(Debug, Clone, PartialEq)]
/// One requirement of a label selector.
pub(crate) enum Selector {
    Exists(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Split on a separator outside parentheses, honouring backslash escapes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            c if c == sep && depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Trimmed, backslash escapes removed.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.trim().chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Marathon's label selector language (existence, `==`, `!=`, `in (..)`, `notin (..)`). A `/`
/// in a label name needs no escaping here, unlike in Marathon.
pub(crate) fn parse_selectors(q: &str) -> Result<Vec<Selector>, String> {
    let mut out = Vec::new();
    for part in split_top(q, ',') {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        let sel = if let Some((k, v)) = p.split_once("==") {
            Selector::Eq(unescape(k), unescape(v))
        } else if let Some((k, v)) = p.split_once("!=") {
            Selector::Ne(unescape(k), unescape(v))
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            Selector::NotIn(unescape(k), set_of(rest)?)
        } else if let Some((k, rest)) = p.split_once(" in ") {
            Selector::In(unescape(k), set_of(rest)?)
        } else if let Some((k, v)) = p.split_once('=') {
            Selector::Eq(unescape(k), unescape(v))
        } else {
            Selector::Exists(unescape(p))
        };
        out.push(sel);
    }
    Ok(out)
}

/// `(a, b)` -> `[a, b]`.
fn set_of(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("Can not parse label selector set {s}"))?;
    Ok(split_top(inner, ',').iter().map(|v| unescape(v)).collect())
}

/// Whether an app with `labels` meets `sel`.
pub(crate) fn matches(labels: Option<&Map<String, Value>>, sel: &Selector) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    match sel {
        Selector::Exists(k) => get(k).is_some(),
        Selector::Eq(k, v) => get(k) == Some(v.as_str()),
        Selector::Ne(k, v) => get(k).is_some_and(|x| x != v),
        Selector::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Selector::NotIn(k, vs) => get(k).is_some_and(|x| !vs.iter().any(|v| v == x)),
    }
}

/// `GET /v2/apps`'s filters: `label` (a selector), `id` and `cmd` (substrings).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AppFilter {
    pub selectors: Vec<Selector>,
    pub id: Option<String>,
    pub cmd: Option<String>,
}

impl AppFilter {
    /// The filters of `q`; an unparsable label selector is Marathon's 400 message.
    pub fn parse(q: &Query) -> Result<AppFilter, String> {
        let selectors = match q.get("label") {
            Some(l) => parse_selectors(l)?,
            None => Vec::new(),
        };
        Ok(AppFilter {
            selectors,
            id: q.get("id").map(str::to_string),
            cmd: q.get("cmd").map(str::to_string),
        })
    }

    /// Whether the app `id` with definition `def` passes every filter.
    pub fn admits(&self, id: &str, def: &Value) -> bool {
        let labels = def.get("labels").and_then(Value::as_object);
        self.selectors.iter().all(|s| matches(labels, s))
            && self.id.as_deref().is_none_or(|f| id.contains(f))
            && self.cmd.as_deref().is_none_or(|f| {
                def.get("cmd")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.contains(f))
            })
    }
}

/// What `/v2/apps/{*rest}` addresses.
#[derive(Debug, PartialEq)]
pub(crate) enum AppPath {
    App(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

/// Marathon resolves the suffixes before treating the rest as an app id.
pub(crate) fn app_path(rest: &str) -> AppPath {
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let id = |n: usize| canonical_id(&parts[..parts.len().saturating_sub(n)].join("/"));
    match parts.as_slice() {
        [.., "tasks"] if parts.len() > 1 => AppPath::Tasks(id(1)),
        [.., "tasks", task] if parts.len() > 2 => AppPath::Task(id(2), (*task).to_string()),
        [.., "versions"] if parts.len() > 1 => AppPath::Versions(id(1)),
        [.., "versions", v] if parts.len() > 2 => AppPath::Version(id(2), (*v).to_string()),
        [.., "restart"] if parts.len() > 1 => AppPath::Restart(id(1)),
        _ => AppPath::App(id(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(app_path("a/b"), AppPath::App("/a/b".into()));
        assert_eq!(app_path("/a"), AppPath::App("/a".into()));
        assert_eq!(app_path("a/b/tasks"), AppPath::Tasks("/a/b".into()));
        assert_eq!(
            app_path("a/tasks/a.1"),
            AppPath::Task("/a".into(), "a.1".into())
        );
        assert_eq!(
            app_path("a/versions/2020"),
            AppPath::Version("/a".into(), "2020".into())
        );
    }

    #[test]
    fn paths_resolve_suffixes_only_after_an_app_id() {
        // A suffix alone is an app id, as in Marathon.
        assert_eq!(app_path("tasks"), AppPath::App("/tasks".into()));
        assert_eq!(app_path("versions"), AppPath::App("/versions".into()));
        assert_eq!(app_path("a//b/versions/"), AppPath::Versions("/a/b".into()));
        assert_eq!(app_path("a/b/restart"), AppPath::Restart("/a/b".into()));
        assert_eq!(app_path(""), AppPath::App("/".into()));
    }

    #[test]
    fn queries_and_selectors() {
        let q = Query::parse(Some(
            "embed=apps.tasks&embed=apps.deployments&label=a%3D%3Db",
        ));
        assert_eq!(q.0.len(), 3);
        assert_eq!(q.get("label"), Some("a==b"));
        let s = parse_selectors("baton.dev\\/owner==me, tier in (a, b), x, y!=z").unwrap();
        assert_eq!(s[0], Selector::Eq("baton.dev/owner".into(), "me".into()));
        assert_eq!(
            s[1],
            Selector::In("tier".into(), vec!["a".into(), "b".into()])
        );
        let labels = json!({"baton.dev/owner": "me", "tier": "b", "x": "", "y": "q"});
        assert!(s.iter().all(|sel| matches(labels.as_object(), sel)));
        assert!(!matches(
            labels.as_object(),
            &Selector::Exists("nope".into())
        ));
    }

    #[test]
    fn query_decoding_keeps_order_and_repeats() {
        let q = Query::parse(Some("a=1&&b&a=x+y%2Fz&c=%zz&d=%4"));
        assert_eq!(q.all("a").collect::<Vec<_>>(), ["1", "x y/z"]);
        assert_eq!(q.get("b"), Some(""));
        // A malformed escape stays as it is.
        assert_eq!(q.get("c"), Some("%zz"));
        assert_eq!(q.get("d"), Some("%4"));
        assert_eq!(q.get("e"), None);
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse(Some("")), Query::default());
    }

    #[test]
    fn flags_follow_jersey() {
        let q = Query::parse(Some("a=TRUE&b=yes&c=1&d=&e=true"));
        assert!(q.flag("a", false));
        assert!(!q.flag("b", true), "only `true` is true");
        assert!(!q.flag("c", true));
        assert!(!q.flag("d", true), "present but empty is false");
        assert!(q.flag("e", false));
        assert!(q.flag("absent", true));
        assert!(!q.flag("absent", false));
    }

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_id("a//b/"), "/a/b");
        assert_eq!(canonical_id("/a"), "/a");
        assert_eq!(canonical_id(""), "/");
    }

    #[test]
    fn embed_adds_to_its_base() {
        let none = Embed::parse(&Query::default(), Embed::default());
        assert!(!none.tasks && !none.counts && !none.deployments && !none.failure);
        // Embedding tasks brings their deployments, as Marathon does.
        let e = Embed::parse(&Query::parse(Some("embed=apps.tasks")), Embed::default());
        assert!(e.tasks && e.deployments && !e.counts);
        let e = Embed::parse(
            &Query::parse(Some("embed=app.counts&embed=readiness")),
            Embed::default(),
        );
        assert!(e.counts && e.readiness && !e.tasks);
        let e = Embed::parse(&Query::parse(Some("embed=apps.failures")), Embed::default());
        assert!(e.failure && e.tasks && e.counts && e.deployments && !e.stats);
        let e = Embed::parse(
            &Query::parse(Some(
                "embed=apps.taskStats&embed=apps.nonsense&embedx=tasks",
            )),
            Embed {
                counts: true,
                ..Embed::default()
            },
        );
        assert!(e.stats && e.counts && !e.tasks);
    }

    #[test]
    fn selectors_cover_every_operator() {
        let s = parse_selectors("a notin (x, y), b!=1, c in (p\\,q, r), d=3").unwrap();
        assert_eq!(
            s,
            vec![
                Selector::NotIn("a".into(), vec!["x".into(), "y".into()]),
                Selector::Ne("b".into(), "1".into()),
                Selector::In("c".into(), vec!["p,q".into(), "r".into()]),
                Selector::Eq("d".into(), "3".into()),
            ]
        );
        let labels = json!({"a": "z", "b": "2", "c": "p,q", "d": "3"});
        assert!(s.iter().all(|sel| matches(labels.as_object(), sel)));
        // `!=` and `notin` need the label to exist.
        let bare = json!({});
        assert!(!matches(bare.as_object(), &s[0]));
        assert!(!matches(bare.as_object(), &s[1]));
        assert!(!matches(None, &Selector::Exists("a".into())));
        let other = json!({"a": "x"});
        assert!(!matches(other.as_object(), &s[0]));
        assert!(parse_selectors("a in x, y").is_err());
        assert_eq!(parse_selectors(" , ").unwrap(), vec![]);
    }

    #[test]
    fn app_filters() {
        let f =
            AppFilter::parse(&Query::parse(Some("label=team%3D%3Dweb&id=api&cmd=serve"))).unwrap();
        let app = json!({"labels": {"team": "web"}, "cmd": "python -m serve"});
        assert!(f.admits("/web/api", &app));
        assert!(!f.admits("/web/ui", &app), "id is a substring filter");
        let no_cmd = json!({"labels": {"team": "web"}});
        assert!(!f.admits("/web/api", &no_cmd), "a cmd filter needs a cmd");
        let other_team = json!({"labels": {"team": "db"}, "cmd": "serve"});
        assert!(!f.admits("/web/api", &other_team));
        assert!(AppFilter::default().admits("/x", &json!({})));
        assert_eq!(
            AppFilter::parse(&Query::parse(Some("label=a+in+x"))),
            Err("Can not parse label selector set x".to_string())
        );
    }
}
