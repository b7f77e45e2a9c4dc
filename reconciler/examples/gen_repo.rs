//! Generate a repo of realistic app specs and a matching live state, for the plan benchmark
//! (`reconciler/bench/plan.sh`, results in `docs/benchmarks.md`, "validate and plan").
//!
//! `cargo run --release -p baton-reconciler --example gen_repo -- <apps> <out-dir>` writes
//! `<out-dir>/repo/` (baton.yaml + apps/<200 groups>/..., see [`spec`] for what varies) and
//! `<out-dir>/live.json` (a `GET /v2/apps` answer of the same size: every app in Marathon's
//! padded form with assigned ports and status fields; 2% drifted on `instances` and 2% on `env`,
//! 1% not yet created, and 1% owned apps whose spec is gone).
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
        let id = app_id(i, groups);
        let (doc, yaml) = spec(i, n, groups);
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
        let mut app = baton_core::ownership::labelled(
            spec,
            "bench",
            "0123456789abcdef0123456789abcdef01234567",
        );
        baton_core::spec::marathon_form(&mut app);
        // Service ports Marathon assigns for the `0`s of the spec.
        for (list, key) in [
            ("/portDefinitions", "port"),
            ("/container/portMappings", "servicePort"),
        ] {
            if let Some(items) = app.pointer_mut(list).and_then(Value::as_array_mut) {
                for item in items {
                    if item.get(key).and_then(Value::as_u64).unwrap_or(0) == 0 {
                        item[key] = json!(port);
                        port += 1;
                    }
                }
            }
        }
        // Drift: someone scaled the app, or changed its log level by hand.
        if k % 50 == 3 {
            app["instances"] = json!(app["instances"].as_u64().unwrap_or(1) + 2);
        }
        if k % 50 == 28 {
            app["env"]["LOG_LEVEL"] = json!("trace");
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

/// A deterministic pseudo-random number for app `i` and purpose `salt` (splitmix64), so that
/// fields vary independently of each other instead of all following `i % k`.
fn pick(i: usize, salt: u64) -> u64 {
    let mut z = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One of `items`, chosen by [`pick`].
fn one_of<T: Copy>(i: usize, salt: u64, items: &[T]) -> T {
    items[(pick(i, salt) % items.len() as u64) as usize]
}

/// True for about `percent` % of the apps.
fn chance(i: usize, salt: u64, percent: u64) -> bool {
    pick(i, salt) % 100 < percent
}

/// What an app is in its group: the group's shared infrastructure, a core service on top of it,
/// or an edge service (APIs, web front ends, workers, crons) on top of both.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Db,
    Cache,
    Queue,
    Core,
    Edge,
}

/// App `i` is the `i / groups`-th app of group `i % groups`.
fn role(i: usize, groups: usize) -> Role {
    match i / groups {
        0 => Role::Db,
        1 => Role::Cache,
        2 => Role::Queue,
        3..=7 => Role::Core,
        _ => Role::Edge,
    }
}

/// The app id of app `i`.
fn app_id(i: usize, groups: usize) -> String {
    let g = i % groups;
    let name = match role(i, groups) {
        Role::Db => "db".to_string(),
        Role::Cache => "cache".to_string(),
        Role::Queue => "queue".to_string(),
        Role::Core => format!("core-{i:05}"),
        Role::Edge => format!(
            "{}-{i:05}",
            one_of(
                i,
                1,
                &["api", "web", "worker", "cron", "gateway", "consumer"]
            )
        ),
    };
    format!("/g{g:03}/{name}")
}

/// A varied spec for app `i` of `n`: Docker or command apps, 1–3 ports, health and readiness
/// checks, env (2–12 variables), labels, constraints, volumes, fetch URIs, upgrade and
/// unreachable strategies, and a `baton:` block. Dependencies (`dependsOn`) form three layers in
/// each group: core services depend on the group's database and/or cache; edge services on up to
/// three of the group's infrastructure and core apps, and some on a shared core service of group
/// 0 (across groups). Every target has a lower index, so there are no cycles. About a quarter of
/// the files are JSON, the rest YAML.
fn spec(i: usize, n: usize, groups: usize) -> (Value, bool) {
    let g = i % groups;
    let role = role(i, groups);
    let infra = matches!(role, Role::Db | Role::Cache | Role::Queue);
    let name = app_id(i, groups)
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let tier = match role {
        Role::Db | Role::Cache | Role::Queue => "infra",
        Role::Core => "core",
        Role::Edge => "edge",
    };
    let instances = match role {
        Role::Db => 1,
        Role::Cache | Role::Queue => 3,
        _ => one_of(i, 2, &[1, 2, 2, 3, 4, 6, 10]),
    };
    let mut app = json!({
        "cpus": one_of(i, 3, &[0.1, 0.25, 0.5, 1.0, 2.0]),
        "mem": one_of(i, 4, &[64, 128, 256, 512, 1024, 2048, 4096]),
        "instances": instances,
        "labels": {"team": format!("team-{}", g % 17), "tier": tier, "app": name.clone()},
    });
    if chance(i, 5, 30) {
        app["disk"] = json!(one_of(i, 6, &[100, 512, 1024, 10240]));
    }

    // env: a few always, more for some apps.
    let mut env = serde_json::Map::new();
    env.insert("SERVICE".into(), json!(name.clone()));
    env.insert(
        "LOG_LEVEL".into(),
        json!(one_of(i, 7, &["info", "debug", "warn"])),
    );
    let extra = pick(i, 8) % 11;
    for k in 0..extra {
        let (key, value) = match k {
            0 => (
                "REGION".to_string(),
                json!(one_of(i, 9, &["eu-1", "eu-2", "us-1"])),
            ),
            1 => (
                "JAVA_OPTS".to_string(),
                json!(format!("-Xmx{}m -XX:+UseG1GC", 48 + i % 200)),
            ),
            2 => (
                "DB_URL".to_string(),
                json!(format!("postgres://db.g{g:03}.marathon.mesos:5432/app")),
            ),
            3 => (
                "CACHE_URL".to_string(),
                json!(format!("redis://cache.g{g:03}.marathon.mesos:6379")),
            ),
            4 => ("WORKERS".to_string(), json!(format!("{}", 1 + i % 16))),
            _ => (
                format!("FEATURE_{k}"),
                json!(one_of(i, 10 + k, &["on", "off"])),
            ),
        };
        env.insert(key, value);
    }
    app["env"] = Value::Object(env);

    let ports = match role {
        Role::Db | Role::Cache => 1,
        _ => one_of(i, 20, &[1, 1, 1, 2, 3]),
    };
    let port_names = ["http", "admin", "metrics"];
    let docker = infra || chance(i, 21, 50);
    if docker {
        let image = match role {
            Role::Db => "postgres:16.4".to_string(),
            Role::Cache => "redis:7.2".to_string(),
            Role::Queue => "rabbitmq:3.13-management".to_string(),
            _ => format!(
                "registry.example.com/team-{}/{name}:1.{}.{}",
                g % 17,
                pick(i, 22) % 40,
                pick(i, 23) % 9
            ),
        };
        let mut docker = json!({"image": image});
        if chance(i, 24, 20) {
            docker["forcePullImage"] = json!(true);
        }
        if chance(i, 25, 10) {
            docker["parameters"] = json!([{"key": "log-driver", "value": "journald"}]);
        }
        let mappings: Vec<Value> = (0..ports)
            .map(|p| {
                let container_port = [8080, 9090, 9100][p];
                let mut m =
                    json!({"containerPort": container_port, "hostPort": 0, "name": port_names[p]});
                if p == 0 && chance(i, 26, 30) {
                    m["labels"] = json!({"VIP_0": format!("/{name}:{}", 80 + g)});
                }
                m
            })
            .collect();
        app["container"] = json!({"type": "DOCKER", "docker": docker, "portMappings": mappings});
        if role == Role::Db {
            app["container"]["volumes"] = json!([{"containerPath": "/var/lib/postgresql/data", "hostPath": format!("/srv/g{g:03}/db"), "mode": "RW"}]);
        } else if chance(i, 27, 10) {
            app["container"]["volumes"] =
                json!([{"containerPath": "/etc/app", "hostPath": "/etc/app", "mode": "RO"}]);
        }
        app["networks"] = json!([{"mode": "container/bridge"}]);
        if !infra && chance(i, 28, 40) {
            app["args"] = json!(["--config", "/etc/app/config.yaml", "--id", format!("{i}")]);
        }
    } else {
        app["cmd"] = json!(format!(
            "./bin/{name} --port $PORT0 --threads {}",
            1 + i % 8
        ));
        app["portDefinitions"] = Value::Array(
            (0..ports)
                .map(|p| json!({"port": 0, "name": port_names[p], "protocol": "tcp"}))
                .collect(),
        );
        let mut fetch = vec![
            json!({"uri": format!("https://artifacts.example.com/{name}-{}.tgz", pick(i, 29) % 100)}),
        ];
        if chance(i, 30, 30) {
            fetch.push(json!({"uri": format!("https://config.example.com/g{g:03}/{name}.json"), "extract": false, "cache": true}));
        }
        app["fetch"] = Value::Array(fetch);
        if chance(i, 31, 20) {
            app["user"] = json!("nobody");
        }
    }

    // Health: HTTP mostly, TCP for infra, a command check now and then.
    app["healthChecks"] = match role {
        Role::Db | Role::Cache | Role::Queue => {
            json!([{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 60, "intervalSeconds": 20}])
        }
        _ => match pick(i, 32) % 6 {
            0 => json!([]),
            1 => {
                json!([{"protocol": "COMMAND", "command": {"value": "curl -f http://localhost:$PORT0/health"}, "intervalSeconds": 30}])
            }
            _ => {
                json!([{"protocol": if docker { "MESOS_HTTP" } else { "HTTP" }, "path": "/health", "portIndex": 0, "gracePeriodSeconds": one_of(i, 33, &[30, 60, 300]), "intervalSeconds": one_of(i, 34, &[10, 30, 60]), "maxConsecutiveFailures": 3}])
            }
        },
    };
    if app["healthChecks"].as_array().is_some_and(Vec::is_empty) {
        app.as_object_mut().map(|m| m.remove("healthChecks"));
    }
    if role == Role::Edge && chance(i, 35, 15) {
        app["readinessChecks"] = json!([{"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http", "intervalSeconds": 30, "timeoutSeconds": 10, "httpStatusCodesForReady": [200]}]);
    }

    app["constraints"] = match pick(i, 36) % 5 {
        0 => json!([]),
        1 | 2 => json!([["hostname", "UNIQUE"]]),
        3 => json!([["rack_id", "GROUP_BY", "3"]]),
        _ => json!([["zone", "LIKE", "eu-.*"], ["hostname", "MAX_PER", "2"]]),
    };
    if app["constraints"].as_array().is_some_and(Vec::is_empty) {
        app.as_object_mut().map(|m| m.remove("constraints"));
    }
    if role == Role::Db {
        app["upgradeStrategy"] = json!({"minimumHealthCapacity": 0, "maximumOverCapacity": 0});
    } else if chance(i, 37, 60) {
        app["upgradeStrategy"] = json!({"minimumHealthCapacity": one_of(i, 38, &[0.5, 0.75, 1.0]), "maximumOverCapacity": one_of(i, 39, &[0.0, 0.2, 0.5])});
    }
    if chance(i, 40, 15) {
        app["unreachableStrategy"] =
            json!({"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600});
    }
    if chance(i, 41, 10) {
        app["killSelection"] = json!("OLDEST_FIRST");
    }
    if chance(i, 42, 20) {
        app["taskKillGracePeriodSeconds"] = json!(one_of(i, 43, &[5, 30, 120]));
    }
    if chance(i, 44, 10) {
        app["backoffSeconds"] = json!(5);
        app["maxLaunchDelaySeconds"] = json!(600);
    }

    // The `baton:` block: dependencies, ignored fields, deadlines, prune protection.
    let mut baton = serde_json::Map::new();
    let mut deps: Vec<String> = Vec::new();
    let in_group = |k: usize| k * groups + g; // the k-th app of this group
    match role {
        Role::Core => {
            if chance(i, 50, 70) {
                deps.push(app_id(in_group(0), groups));
            }
            if chance(i, 51, 40) {
                deps.push(app_id(in_group(1), groups));
            }
        }
        Role::Edge => {
            let candidates = [0, 1, 2, 3 + (pick(i, 52) % 5) as usize];
            let wanted = pick(i, 53) % 4; // 0..=3 dependencies
            for &k in candidates
                .iter()
                .skip((pick(i, 54) % 2) as usize)
                .take(wanted as usize)
            {
                deps.push(app_id(in_group(k), groups));
            }
            // A shared core service of group 0 (authentication, say), across groups.
            let shared = 3 * groups;
            if g != 0 && chance(i, 55, 5) && shared < n {
                deps.push(app_id(shared, groups));
            }
        }
        _ => {}
    }
    deps.dedup();
    if !deps.is_empty() {
        baton.insert("dependsOn".into(), json!(deps));
    }
    if !infra && chance(i, 56, 8) {
        baton.insert("ignore".into(), json!(["/instances"]));
    }
    if role == Role::Db {
        baton.insert("prune".into(), json!(false));
        baton.insert("deadline".into(), json!("20m"));
    } else if chance(i, 57, 10) {
        baton.insert(
            "deadline".into(),
            json!(one_of(i, 58, &["5m", "15m", "1h"])),
        );
    }
    if !baton.is_empty() {
        app["baton"] = Value::Object(baton);
    }
    (app, !chance(i, 59, 25))
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
