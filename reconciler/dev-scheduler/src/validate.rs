//! Marathon's validation of a submitted app: the rules behind its `422 Object is not valid`
//! (see `raml/v2/types/app.raml` and the `objectValidator` trait). Pure: an app in, a list of
//! `(JSON pointer, message)` out; empty means valid. Unknown fields are accepted, as in Marathon
//! 1.8+.

use serde_json::Value;

type Details = Vec<(String, String)>;

/// One segment of an app id (Marathon's `PathId` rule).
fn valid_segment(s: &str) -> bool {
    if s == "." || s == ".." {
        return true;
    }
    !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

const ID_PATTERN: &str =
    "^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$";

/// Check an app id given as a path (`/a/b` or `a/b`).
pub fn check_id(id: &str) -> Option<String> {
    let segments: Vec<&str> = id.trim_matches('/').split('/').collect();
    if id.trim_matches('/').is_empty() {
        return Some("path must not be empty".into());
    }
    if segments.iter().all(|s| valid_segment(s)) {
        None
    } else {
        Some(format!(
            "must fully match regular expression '{ID_PATTERN}'"
        ))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "jsboolean",
        Value::Number(_) => "jsnumber",
        Value::String(_) => "jsstring",
        Value::Array(_) => "jsarray",
        Value::Object(_) => "jsobject",
    }
}

struct V<'a> {
    app: &'a Value,
    out: Details,
}

impl V<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.out.push((path.to_string(), msg.into()));
    }

    /// A number field, when present: of the right type and at least `min` (at most `max`).
    fn number(&mut self, path: &str, min: f64, max: Option<f64>, integer: bool) {
        let Some(v) = self.app.pointer(path) else {
            return;
        };
        if v.is_null() {
            return;
        }
        let Some(n) = v.as_f64() else {
            self.err(path, "error.expected.jsnumber");
            return;
        };
        if integer && n.fract() != 0.0 {
            self.err(path, "error.expected.int");
        } else if n < min {
            self.err(path, format!("got {n}, expected {min} or more"));
        } else if let Some(max) = max.filter(|m| n > *m) {
            self.err(path, format!("is greater than {max}"));
        }
    }

    fn kind(&mut self, path: &str, expected: &str, ok: fn(&Value) -> bool) {
        if let Some(v) = self.app.pointer(path) {
            if !v.is_null() && !ok(v) {
                let _ = type_name(v);
                self.err(path, format!("error.expected.{expected}"));
            }
        }
    }
}

/// Validate an app as submitted (after a partial update is merged in).
pub fn validate_app(app: &Value) -> Details {
    let mut v = V {
        app,
        out: Vec::new(),
    };
    if !app.is_object() {
        v.err("", "error.expected.jsobject");
        return v.out;
    }
    match app.get("id") {
        Some(Value::String(id)) => {
            if let Some(m) = check_id(id) {
                v.err("/id", m);
            }
        }
        Some(other) if !other.is_null() => v.err("/id", "error.expected.jsstring"),
        _ => v.err("/id", "error.path.missing"),
    }

    v.kind("/cmd", "jsstring", Value::is_string);
    v.kind("/args", "jsarray", Value::is_array);
    v.kind("/env", "jsobject", Value::is_object);
    v.kind("/labels", "jsobject", Value::is_object);
    v.kind("/container", "jsobject", Value::is_object);
    v.kind("/healthChecks", "jsarray", Value::is_array);
    v.kind("/portDefinitions", "jsarray", Value::is_array);
    v.kind("/constraints", "jsarray", Value::is_array);
    v.kind("/upgradeStrategy", "jsobject", Value::is_object);

    let cmd = app.get("cmd").and_then(Value::as_str);
    if cmd == Some("") {
        v.err("/cmd", "error.minLength");
    }
    let has_cmd = cmd.is_some_and(|c| !c.is_empty());
    let has_args = app
        .get("args")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let has_container = app.get("container").is_some_and(|c| c.is_object());
    if has_cmd && has_args {
        v.err(
            "/",
            "AppDefinition must either contain a 'cmd' or a 'args', but not both",
        );
    }
    if !has_cmd && !has_args && !has_container {
        v.err(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
        );
    }
    if let Some(args) = app.get("args").and_then(Value::as_array) {
        for (i, a) in args.iter().enumerate() {
            if !a.is_string() {
                v.err(&format!("/args({i})"), "error.expected.jsstring");
            }
        }
    }

    v.number("/instances", 0.0, None, true);
    v.number("/cpus", 0.0, None, false);
    v.number("/mem", 0.0, None, false);
    v.number("/disk", 0.0, None, false);
    v.number("/gpus", 0.0, None, true);
    v.number("/backoffSeconds", 0.0, None, true);
    v.number("/backoffFactor", 1.0, None, false);
    v.number("/maxLaunchDelaySeconds", 0.0, None, true);
    v.number("/taskKillGracePeriodSeconds", 0.0, None, true);
    v.number(
        "/upgradeStrategy/minimumHealthCapacity",
        0.0,
        Some(1.0),
        false,
    );
    v.number(
        "/upgradeStrategy/maximumOverCapacity",
        0.0,
        Some(1.0),
        false,
    );

    if let Some(env) = app.get("env").and_then(Value::as_object) {
        let secrets = app.get("secrets").and_then(Value::as_object);
        for (k, val) in env {
            let path = format!("/env/{k}");
            match val {
                Value::String(_) => {}
                Value::Object(o) => match o.get("secret").and_then(Value::as_str) {
                    Some(s) if secrets.is_some_and(|m| m.contains_key(s)) => {}
                    Some(_) => v.err(&path, "references an undefined secret"),
                    None => v.err(&path, "error.expected.jsstring"),
                },
                _ => v.err(&path, "error.expected.jsstring"),
            }
        }
    }
    if let Some(labels) = app.get("labels").and_then(Value::as_object) {
        for (k, val) in labels {
            if !val.is_string() {
                v.err(&format!("/labels/{k}"), "error.expected.jsstring");
            }
        }
    }

    check_ports(&mut v);
    check_health(&mut v);
    check_constraints(&mut v);
    check_container(&mut v);
    if let Some(deps) = app.get("dependencies").and_then(Value::as_array) {
        for (i, d) in deps.iter().enumerate() {
            match d.as_str() {
                Some(id) if check_id(id).is_none() => {}
                _ => v.err(&format!("/dependencies({i})"), "must be a valid app id"),
            }
        }
    }
    v.out
}

fn check_ports(v: &mut V<'_>) {
    let Some(pds) = v.app.get("portDefinitions").and_then(Value::as_array) else {
        return;
    };
    let mut seen_ports = Vec::new();
    let mut seen_names = Vec::new();
    for (i, pd) in pds.iter().enumerate() {
        let path = format!("/portDefinitions({i})");
        match pd.get("port").map(Value::as_u64) {
            None => {}
            Some(Some(0)) => {}
            Some(Some(p)) if p <= 65535 => {
                if seen_ports.contains(&p) {
                    v.err(&format!("{path}/port"), "Ports must be unique.");
                }
                seen_ports.push(p);
            }
            Some(_) => v.err(&format!("{path}/port"), "got a port outside 0..65535"),
        }
        if let Some(name) = pd.get("name").and_then(Value::as_str) {
            if seen_names.contains(&name) {
                v.err(&path, "Port names must be unique.");
            }
            seen_names.push(name);
        }
        if let Some(proto) = pd.get("protocol").and_then(Value::as_str) {
            if !["tcp", "udp", "udp,tcp", "tcp,udp"].contains(&proto) {
                v.err(&format!("{path}/protocol"), "error.unknown.enum.literal");
            }
        }
    }
}

fn check_health(v: &mut V<'_>) {
    let Some(hcs) = v.app.get("healthChecks").and_then(Value::as_array) else {
        return;
    };
    let port_count = v
        .app
        .get("portDefinitions")
        .and_then(Value::as_array)
        .map(Vec::len)
        .or_else(|| {
            v.app
                .pointer("/container/portMappings")
                .and_then(Value::as_array)
                .map(Vec::len)
        })
        .or_else(|| v.app.get("ports").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(1);
    for (i, hc) in hcs.iter().enumerate() {
        let path = format!("/healthChecks({i})");
        let protocol = hc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP");
        if ![
            "HTTP",
            "HTTPS",
            "TCP",
            "COMMAND",
            "MESOS_HTTP",
            "MESOS_HTTPS",
            "MESOS_TCP",
        ]
        .contains(&protocol)
        {
            v.err(&format!("{path}/protocol"), "error.unknown.enum.literal");
        }
        if protocol == "COMMAND"
            && hc
                .pointer("/command/value")
                .and_then(Value::as_str)
                .is_none()
        {
            v.err(
                &path,
                "Health check with protocol COMMAND must specify command",
            );
        }
        if let Some(idx) = hc.get("portIndex").and_then(Value::as_u64) {
            if usize::try_from(idx).map_or(true, |i| i >= port_count) && protocol != "COMMAND" {
                v.err(
                    &path,
                    "Health check port indices must address an element of the ports array or container port mappings.",
                );
            }
        }
        for key in [
            "gracePeriodSeconds",
            "intervalSeconds",
            "timeoutSeconds",
            "maxConsecutiveFailures",
            "delaySeconds",
        ] {
            if let Some(n) = hc.get(key) {
                if n.as_f64().is_none_or(|n| n < 0.0) {
                    v.err(
                        &format!("{path}/{key}"),
                        "got a negative or non-numeric value",
                    );
                }
            }
        }
    }
}

fn check_constraints(v: &mut V<'_>) {
    let Some(cs) = v.app.get("constraints").and_then(Value::as_array) else {
        return;
    };
    const OPS: [&str; 7] = [
        "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
    ];
    for (i, c) in cs.iter().enumerate() {
        let path = format!("/constraints({i})");
        let parts: Option<Vec<&str>> = c
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        match parts {
            Some(p) if (2..=3).contains(&p.len()) => {
                if !OPS.contains(&p[1]) {
                    v.err(&path, "Constraint operator must be one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS");
                }
            }
            _ => v.err(&path, "Each constraint must have either 2 or 3 fields"),
        }
    }
}

fn check_container(v: &mut V<'_>) {
    let Some(c) = v.app.get("container").filter(|c| c.is_object()) else {
        return;
    };
    let ctype = c.get("type").and_then(Value::as_str).unwrap_or("DOCKER");
    if !["DOCKER", "MESOS"].contains(&ctype) {
        v.err("/container/type", "error.unknown.enum.literal");
    }
    let image = c.pointer("/docker/image").and_then(Value::as_str);
    if ctype == "DOCKER" && image.is_none_or(str::is_empty) {
        v.err("/container/docker/image", "must not be empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        assert!(check_id("/a/b-c/d.e").is_none());
        assert!(check_id("/A").is_some());
        assert!(check_id("/a_b").is_some());
        assert!(check_id("/-a").is_some());
        assert!(check_id("/").is_some());
    }

    #[test]
    fn rules() {
        assert!(validate_app(&json!({"id": "/a", "cmd": "sleep 1"})).is_empty());
        let d = validate_app(
            &json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}),
        );
        assert_eq!(
            d,
            vec![(
                "/upgradeStrategy/minimumHealthCapacity".to_string(),
                "is greater than 1".to_string()
            )]
        );
        let d = validate_app(&json!({"id": "/a"}));
        assert_eq!(d.len(), 1, "{d:?}");
        let d = validate_app(&json!({"id": "/a", "cmd": "x", "args": ["y"], "instances": -1}));
        assert_eq!(d.len(), 2, "{d:?}");
        let d = validate_app(&json!({"id": "/a", "container": {"type": "DOCKER", "docker": {}}}));
        assert_eq!(d[0].0, "/container/docker/image");
    }
}
