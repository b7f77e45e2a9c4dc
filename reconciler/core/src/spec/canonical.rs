//! Marathon's canonical app form: deprecated fields rewritten the way Marathon rewrites them on
//! input (`AppNormalization`), and every documented default filled in. Shared by the normaliser
//! (so that git and live compare equal) and the dev scheduler (so that it answers like Marathon).

use serde_json::{json, Map, Value};

use super::defaults;

/// Turn an app definition (as submitted) into the form Marathon stores and serves: deprecated
/// fields rewritten (`ports`, `uris`, `ipAddress`, `container.docker.network`,
/// `container.docker.portMappings`) and every default from the defaults table filled in. Service
/// ports of `0` stay `0`: assigning them is the scheduler's job.
pub fn marathon_form(app: &mut Value) {
    let Value::Object(map) = app else { return };
    rewrite_legacy(map);
    default_networking(map);
    default_health_check_ports(map);
    defaults::fill(app);
}

fn rewrite_legacy(map: &mut Map<String, Value>) {
    if let Some(ports) = map.remove("ports") {
        if !map.contains_key("portDefinitions") {
            if let Value::Array(ports) = ports {
                let defs = ports
                    .into_iter()
                    .map(|p| json!({"port": p, "protocol": "tcp"}))
                    .collect();
                map.insert("portDefinitions".into(), Value::Array(defs));
            }
        }
    }
    if let Some(Value::Array(uris)) = map.remove("uris") {
        let fetch = map
            .entry("fetch")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = fetch {
            for uri in uris {
                let extract = uri.as_str().is_some_and(is_archive);
                list.push(
                    json!({"uri": uri, "extract": extract, "executable": false, "cache": false}),
                );
            }
        }
    }
    let ip_network = map
        .remove("ipAddress")
        .and_then(|ip| ip.get("networkName").cloned());
    let mut legacy_mode: Option<Value> = None;
    if let Some(Value::Object(container)) = map.get_mut("container") {
        if let Some(Value::Object(docker)) = container.get_mut("docker") {
            let network = docker.remove("network");
            let mappings = docker.remove("portMappings");
            if let Some(Value::String(mode)) = network {
                legacy_mode = Some(match mode.as_str() {
                    "BRIDGE" => json!([{"mode": "container/bridge"}]),
                    "USER" => match &ip_network {
                        Some(name) => json!([{"mode": "container", "name": name}]),
                        None => json!([{"mode": "container"}]),
                    },
                    _ => json!([{"mode": "host"}]),
                });
            }
            if let Some(m) = mappings {
                container.entry("portMappings").or_insert(m);
            }
        }
    }
    if !map.contains_key("networks") {
        if let Some(n) = legacy_mode {
            map.insert("networks".into(), n);
        } else if let Some(name) = ip_network {
            map.insert(
                "networks".into(),
                json!([{"mode": "container", "name": name}]),
            );
        }
    }
}

/// Marathon extracts fetched archives by default only when the URI looks like one.
fn is_archive(uri: &str) -> bool {
    [
        ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
    ]
    .iter()
    .any(|ext| uri.ends_with(ext))
}

/// Host networking unless told otherwise; with it, one dynamic port unless told otherwise; with
/// bridge networking, one default port mapping.
fn default_networking(map: &mut Map<String, Value>) {
    if matches!(map.get("networks"), None | Some(Value::Null)) {
        map.insert("networks".into(), json!([{"mode": "host"}]));
    }
    let modes: Vec<String> = map
        .get("networks")
        .and_then(Value::as_array)
        .map(|n| {
            n.iter()
                .map(|x| {
                    x.get("mode")
                        .and_then(Value::as_str)
                        .unwrap_or("container")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let host = modes.iter().all(|m| m == "host");
    if host {
        if matches!(map.get("portDefinitions"), None | Some(Value::Null)) {
            map.insert(
                "portDefinitions".into(),
                json!([{"port": 0, "protocol": "tcp", "name": "default"}]),
            );
        }
    } else if modes.iter().any(|m| m == "container/bridge") {
        if let Some(Value::Object(container)) = map.get_mut("container") {
            if matches!(container.get("portMappings"), None | Some(Value::Null)) {
                container.insert(
                    "portMappings".into(),
                    json!([{"containerPort": 0, "hostPort": 0, "servicePort": 0, "protocol": "tcp", "name": "default"}]),
                );
            }
        }
    }
}

/// Network health checks without a port use the first one (`portIndex: 0`).
fn default_health_check_ports(map: &mut Map<String, Value>) {
    let Some(Value::Array(checks)) = map.get_mut("healthChecks") else {
        return;
    };
    for check in checks.iter_mut() {
        let Value::Object(c) = check else { continue };
        let protocol = c.get("protocol").and_then(Value::as_str).unwrap_or("HTTP");
        let networked = matches!(
            protocol,
            "HTTP" | "HTTPS" | "TCP" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP"
        );
        if networked && !c.contains_key("port") && !c.contains_key("portIndex") {
            c.insert("portIndex".into(), json!(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_fields_become_canonical() {
        let mut app = json!({
            "id": "/rails", "cmd": "x",
            "ports": [0, 8080],
            "uris": ["https://example.com/app.tgz", "https://example.com/config.json"],
            "container": {"type": "DOCKER", "docker": {
                "image": "rails", "network": "BRIDGE",
                "portMappings": [{"containerPort": 3000, "hostPort": 0}]
            }}
        });
        marathon_form(&mut app);
        assert!(app.get("ports").is_none() && app.get("uris").is_none());
        assert_eq!(
            app["portDefinitions"][1],
            json!({"port": 8080, "protocol": "tcp"})
        );
        assert_eq!(app["fetch"][0]["extract"], true);
        assert_eq!(app["fetch"][1]["extract"], false);
        assert_eq!(app["networks"], json!([{"mode": "container/bridge"}]));
        assert_eq!(app["container"]["portMappings"][0]["containerPort"], 3000);
        assert_eq!(app["container"]["portMappings"][0]["protocol"], "tcp");
        assert!(app["container"]["docker"].get("network").is_none());
    }

    #[test]
    fn host_networking_gets_one_default_port() {
        let mut app = json!({"id": "/a", "cmd": "x"});
        marathon_form(&mut app);
        assert_eq!(app["networks"], json!([{"mode": "host"}]));
        assert_eq!(app["portDefinitions"][0]["port"], 0);
        let mut none = json!({"id": "/a", "cmd": "x", "portDefinitions": []});
        marathon_form(&mut none);
        assert_eq!(none["portDefinitions"], json!([]));
    }

    #[test]
    fn health_checks_default_to_the_first_port() {
        let mut app = json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "HTTP"}, {"protocol": "COMMAND", "command": {"value": "true"}}, {"port": 80}]});
        marathon_form(&mut app);
        assert_eq!(app["healthChecks"][0]["portIndex"], 0);
        assert!(app["healthChecks"][1].get("portIndex").is_none());
        assert!(app["healthChecks"][2].get("portIndex").is_none());
    }
}
