//! Generate a repo of realistic app specs and a matching live state, for the plan benchmark.
//!
//! `cargo run --release -p baton-reconciler --example gen_repo -- <apps> <out-dir>` writes
//! `<out-dir>/repo/` (baton.yaml + apps/<200 groups>/...) and `<out-dir>/live.json` (a
//! `GET /v2/apps` answer: every app in Marathon's padded form with assigned ports and status
//! fields; 2% drifted, 1% not yet created, 1% owned apps whose spec is gone).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::path::PathBuf;

use serde_json::{json, Value};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: gen_repo <apps> <out-dir>");
    let out = PathBuf::from(args.next().expect("usage: gen_repo <apps> <out-dir>"));
    let repo = out.join("repo");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    std::fs::write(
        repo.join("baton.yaml"),
        "owner: bench\ndefaults:\n  labels: {cost-center: \"1234\"}\nprune: {maxDeletes: 5, maxDeletesPercent: 10}\n",
    )
    .unwrap();
    let groups = 200;
    for i in 0..n {
        let g = i % groups;
        let id = format!("/g{g:03}/svc-{i:05}");
        let (doc, yaml) = spec(i, g, groups);
        let rel = format!("apps{id}.{}", if yaml { "yaml" } else { "json" });
        let path = repo.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = if yaml {
            to_yaml(&doc, 0)
        } else {
            serde_json::to_string_pretty(&doc).unwrap()
        };
        std::fs::write(path, text).unwrap();
    }
    // Live state: what Marathon would serve after syncing that repo.
    let loaded = baton::commands::load_repo(&repo).unwrap();
    assert!(loaded.is_valid(), "generated repo must be valid");
    let mut port = 10000;
    let mut live = Vec::new();
    for (k, spec) in loaded.specs.values().enumerate() {
        if k % 100 == 7 {
            continue; // not created yet
        }
        let mut app =
            baton::ownership::labelled(spec, "bench", "0123456789abcdef0123456789abcdef01234567");
        baton::spec::marathon_form(&mut app);
        if let Some(defs) = app.get_mut("portDefinitions").and_then(Value::as_array_mut) {
            for d in defs {
                d["port"] = json!(port);
                port += 1;
            }
        }
        if k % 50 == 3 {
            app["instances"] = json!(app["instances"].as_u64().unwrap_or(1) + 2);
            // drift
        }
        app["version"] = json!("2026-11-20T09:00:00.000Z");
        app["versionInfo"] = json!({"lastScalingAt": "2026-11-20T09:00:00.000Z", "lastConfigChangeAt": "2026-11-20T09:00:00.000Z"});
        app["tasksRunning"] = app["instances"].clone();
        app["tasksStaged"] = json!(0);
        app["tasksHealthy"] = json!(0);
        app["tasksUnhealthy"] = json!(0);
        app["deployments"] = json!([]);
        live.push(app);
    }
    for k in 0..n / 100 {
        live.push(json!({"id": format!("/retired/old-{k:04}"), "cmd": "sleep 1", "labels": {"baton.dev/owner": "bench"}}));
    }
    std::fs::write(
        out.join("live.json"),
        serde_json::to_vec(&json!({"apps": live})).unwrap(),
    )
    .unwrap();
    eprintln!(
        "wrote {n} specs to {} and {} live apps",
        repo.display(),
        live.len()
    );
}

/// A varied spec: command or Docker apps, health checks, env, labels, constraints, ports, fetch,
/// and a dependency on an earlier app of the same group for one app in ten.
fn spec(i: usize, g: usize, groups: usize) -> (Value, bool) {
    let cpus = [0.1, 0.25, 0.5, 1.0][i % 4];
    let mem = [64, 128, 256, 512, 1024][i % 5];
    let level = ["info", "debug"][i % 2];
    let tier = ["web", "worker", "batch"][i % 3];
    let mut app = json!({
        "cpus": cpus,
        "mem": mem,
        "instances": 1 + i % 3,
        "env": {"SERVICE": format!("svc-{i}"), "LOG_LEVEL": level, "REGION": "eu-1"},
        "labels": {"team": format!("team-{}", g % 17), "tier": tier},
        "constraints": [["hostname", "UNIQUE"]],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2},
    });
    if i.is_multiple_of(3) {
        app["container"] = json!({
            "type": "DOCKER",
            "docker": {"image": format!("registry.example.com/team/svc-{i}:1.{}.{}", i % 10, i % 7)},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]
        });
        app["networks"] = json!([{"mode": "container/bridge"}]);
    } else {
        app["cmd"] = json!(format!("./bin/svc --port $PORT0 --id {i}"));
        app["portDefinitions"] = json!([{"port": 0, "name": "http"}]);
        app["fetch"] = json!([{"uri": format!("https://artifacts.example.com/svc-{i}.tgz")}]);
    }
    if i.is_multiple_of(2) {
        app["healthChecks"] = json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30, "intervalSeconds": 10}]);
    }
    let mut baton = serde_json::Map::new();
    if i % 10 == 5 && i >= groups {
        let dep = i - groups; // same group, created earlier
        baton.insert(
            "dependsOn".into(),
            json!([format!("/g{g:03}/svc-{dep:05}")]),
        );
    }
    if i.is_multiple_of(13) {
        baton.insert("ignore".into(), json!(["/instances"]));
    }
    if !baton.is_empty() {
        app["baton"] = Value::Object(baton);
    }
    (app, !i.is_multiple_of(4))
}

/// Block-style YAML for the generated shapes (strings quoted, so no YAML typing surprises).
fn to_yaml(v: &Value, indent: usize) -> String {
    let pad = "  ".repeat(indent);
    let mut out = String::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) | Value::Array(_) if !is_flat(v) => {
                        out.push_str(&format!("{pad}{k}:\n{}", to_yaml(v, indent + 1)));
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", v)),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let inner = to_yaml(item, indent + 1);
                let inner = inner.trim_start().to_string();
                out.push_str(&format!("{pad}- {inner}"));
                if !inner.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        other => out.push_str(&format!("{pad}{other}\n")),
    }
    out
}

fn is_flat(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().all(|x| !x.is_object()),
        Value::Object(_) => false,
        _ => true,
    }
}
