//! The rollout machine's decision tables and a small simulated scheduler that applies its plans,
//! so whole rollouts (and re-runs of every step) can be checked without I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::haproxy::{self, Servers};
use super::machine::{advance, instances_at, naive_iso, spec_digest, start};
use super::*;
use crate::ownership;
use crate::plan::Action;
use crate::spec::{AppId, BatonBlock};

const OWNER: &str = "team";
const STABLE: &str = "/shop/api";
const CANARY: &str = "/shop/api-canary";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const PROXY: &str = "shop_api_10100";

fn rollout(steps: Vec<Step>) -> Rollout {
    Rollout {
        strategy: Strategy::Canary,
        steps,
        analysis: Analysis {
            max_error_rate: 0.05,
            min_requests: 20,
        },
        grace: Duration::from_secs(300),
    }
}

fn http_check() -> Step {
    Step::Isolated(Check::Http {
        path: "/health".into(),
        expect: 200,
    })
}

fn traffic(percent: u8, pause_s: u64) -> Step {
    Step::Traffic {
        percent,
        pause: Duration::from_secs(pause_s),
    }
}

/// The design's example: isolated, 10% for 60 s, 50% for 60 s.
fn standard() -> Rollout {
    rollout(vec![http_check(), traffic(10, 60), traffic(50, 60)])
}

/// The app as spec'd at version `v`, with `instances`, rolled out by `r`.
fn spec_with(v: &str, instances: u64, r: Option<Rollout>) -> Spec {
    Spec {
        id: AppId::parse(STABLE).unwrap(),
        file: "apps/shop/api.yaml".into(),
        app: json!({
            "id": STABLE,
            "cmd": format!("python3 app.py --port $PORT0 --version {v}"),
            "instances": instances,
            "cpus": 0.1,
            "mem": 64,
            "portDefinitions": [{"port": 10100, "name": "http"}],
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
            "labels": {
                "HAPROXY_GROUP": "external",
                "HAPROXY_DEPLOYMENT_GROUP": STABLE,
                "HAPROXY_0_PORT": "10100",
                "HAPROXY_0_VHOST": "shop.example",
                "HAPROXY_0_MODE": "http",
                "team": "shop"
            }
        }),
        baton: BatonBlock {
            rollout: r,
            ..BatonBlock::default()
        },
    }
}

fn spec(v: &str, instances: u64) -> Spec {
    spec_with(v, instances, Some(standard()))
}

fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A scheduler in miniature: apps as Marathon serves them (canonical form, assigned service
/// ports, versions, tasks with health), changed only by applying plans.
struct Sim {
    now: u64,
    apps: BTreeMap<String, Value>,
    /// What was last PUT per app, to tell a scale from a config change.
    submitted: BTreeMap<String, Value>,
    next_port: u64,
    /// New tasks come up healthy.
    healthy: bool,
    /// HAProxy's raw counters per server name.
    counters: BTreeMap<String, Counters>,
    /// Every write, in order: (app, action).
    writes: Vec<(String, Action)>,
}

impl Sim {
    /// A stable app at v1 with `instances` healthy tasks, as Baton wrote it.
    fn new(instances: u64) -> Sim {
        let mut sim = Sim {
            now: T0,
            apps: BTreeMap::new(),
            submitted: BTreeMap::new(),
            next_port: 31_000,
            healthy: true,
            counters: BTreeMap::new(),
            writes: Vec::new(),
        };
        let v1 = spec("v1", instances);
        sim.put(ownership::labelled(&v1, OWNER, "c1"));
        sim.writes.clear();
        sim
    }

    fn put(&mut self, body: Value) {
        let id = body["id"].as_str().unwrap().to_string();
        let strip = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("instances");
            v
        };
        let config_changed = self
            .submitted
            .get(&id)
            .is_none_or(|old| strip(old) != strip(&body));
        let version = rfc3339(self.now);
        let old = self.apps.get(&id).cloned();
        let mut app = body.clone();
        crate::spec::marathon_form(&mut app);
        for d in app["portDefinitions"].as_array_mut().unwrap() {
            if d["port"] == 0 {
                d["port"] = json!(self.next_port);
                self.next_port += 1;
            }
        }
        let last_config = match (&old, config_changed) {
            (Some(o), false) => o["versionInfo"]["lastConfigChangeAt"].clone(),
            _ => json!(version),
        };
        app["version"] = json!(version);
        app["versionInfo"] = json!({"lastScalingAt": version, "lastConfigChangeAt": last_config});
        app["deployments"] = json!([]);
        let mut tasks: Vec<Value> = match (&old, config_changed) {
            (Some(o), false) => o["tasks"].as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        let n = body["instances"].as_u64().unwrap_or(1) as usize;
        tasks.truncate(n);
        while tasks.len() < n {
            let port = self.next_port;
            self.next_port += 1;
            tasks.push(json!({
                "id": format!("{}.{port}", id.trim_start_matches('/').replace('/', "_")),
                "appId": id,
                "host": "agent-1.example",
                "ipAddresses": [{"ipAddress": "10.0.0.1", "protocol": "IPv4"}],
                "ports": [port],
                "state": "TASK_RUNNING",
                "version": version,
                "healthCheckResults": [{"alive": self.healthy}],
            }));
        }
        app["tasks"] = json!(tasks);
        self.apps.insert(id.clone(), app);
        self.submitted.insert(id, body);
    }

    fn apply(&mut self, plan: &crate::plan::Plan) {
        for c in plan.changes() {
            self.writes.push((c.app.as_str().to_string(), c.action));
            match c.action {
                Action::Delete => {
                    self.apps.remove(c.app.as_str());
                    self.submitted.remove(c.app.as_str());
                }
                Action::Create | Action::Update => {
                    let body = c.body.clone().expect("a create or update has a body");
                    assert_eq!(body["id"], c.app.as_str(), "the body is of the app written");
                    self.put(body);
                }
            }
        }
    }

    fn app(&self, id: &str) -> Option<&Value> {
        self.apps.get(id)
    }

    fn set_health(&mut self, id: &str, alive: bool) {
        if let Some(app) = self.apps.get_mut(id) {
            for t in app["tasks"].as_array_mut().unwrap() {
                t["healthCheckResults"] = json!([{"alive": alive}]);
            }
        }
    }

    /// marathon-lb's name for a task's server (`host_ip_port`, sanitised).
    fn server_name(task: &Value) -> String {
        format!(
            "agent-1_example_10_0_0_1_{}",
            task["ports"][0].as_u64().unwrap()
        )
    }

    /// `responses` (of which `errors` are 5xx) served by each task of `id`.
    fn serve(&mut self, id: &str, responses: u64, errors: u64) {
        let names: Vec<String> = self
            .app(id)
            .map(|a| {
                a["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Sim::server_name)
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            let c = self.counters.entry(n).or_default();
            c.responses += responses;
            c.errors += errors;
        }
    }

    /// HAProxy restarted: every counter back at zero.
    fn reload(&mut self) {
        self.counters.clear();
    }

    /// The stats as the stats page shows them (no `addr`): a row per task of both apps.
    fn sample(&self) -> Sample {
        let rows = [STABLE, CANARY]
            .iter()
            .filter_map(|id| self.app(id))
            .flat_map(|a| a["tasks"].as_array().unwrap().iter())
            .map(|t| {
                let server = Sim::server_name(t);
                ServerRow {
                    source: 0,
                    proxy: PROXY.into(),
                    counters: self.counters.get(&server).copied().unwrap_or_default(),
                    server,
                    addr: None,
                }
            })
            .collect();
        Sample { rows }
    }
}

/// What the daemon would pass, beyond the live apps.
#[derive(Default)]
struct Extra<'a> {
    spec_gone: bool,
    spec_invalid: bool,
    no_sample: bool,
    check: Option<&'a CheckOutcome>,
    operator: Option<OperatorCommand>,
}

fn run(sim: &Sim, state: &RolloutState, spec: &Spec, extra: Extra<'_>) -> Decision {
    let sample = sim.sample();
    let input = Input {
        spec: (!extra.spec_gone && !extra.spec_invalid).then_some(spec),
        spec_invalid: extra.spec_invalid,
        owner: OWNER,
        rev: "c2",
        stable: sim.app(STABLE),
        canary: sim.app(CANARY),
        sample: (!extra.no_sample).then_some(&sample),
        check: extra.check,
        operator: extra.operator,
        now_ms: sim.now,
    };
    advance(state, &input)
}

/// Advance and apply, then check that advancing again from the saved state (as after a
/// `kill -9` between apply and the next tick) repeats none of the writes just made: it may move
/// on, never redo.
fn step(sim: &mut Sim, state: &RolloutState, spec: &Spec, extra: Extra<'_>) -> Decision {
    let check = extra.check;
    let d = run(sim, state, spec, extra);
    sim.apply(&d.plan);
    if let Some(next) = &d.next {
        let again = run(
            sim,
            next,
            spec,
            Extra {
                check,
                ..Extra::default()
            },
        );
        for c in again.plan.changes() {
            assert!(
                !d.plan.changes().any(|done| done.app == c.app
                    && done.action == c.action
                    && done.body == c.body),
                "a re-run in {:?} repeated {} {:?}",
                next.phase,
                c.app,
                c.action
            );
        }
    }
    d
}

fn writes(d: &Decision) -> Vec<(String, Action)> {
    d.plan
        .changes()
        .map(|c| (c.app.as_str().to_string(), c.action))
        .collect()
}

fn body_of(d: &Decision, id: &str) -> Value {
    d.plan
        .changes()
        .find(|c| c.app.as_str() == id)
        .and_then(|c| c.body.clone())
        .unwrap_or_else(|| panic!("no body for {id}: {:?}", writes(d)))
}

fn haproxy_labels(body: &Value) -> Vec<String> {
    body["labels"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("HAPROXY_"))
        .cloned()
        .collect()
}

/// A rollout driven to `Step { index }` with its canary healthy and its window open.
fn at_step(sim: &mut Sim, spec: &Spec, index: usize) -> RolloutState {
    let mut state = start(spec, "c2", sim.now);
    for _ in 0..20 {
        if state.phase == (Phase::Step { index }) && state.window.is_some() {
            return state;
        }
        let check = CheckOutcome::Passed;
        let promote =
            matches!(state.phase, Phase::Step { index: i } if i < index) && state.window.is_some();
        let d = step(
            sim,
            &state,
            spec,
            Extra {
                check: (state.phase == Phase::Check).then_some(&check),
                operator: promote.then_some(OperatorCommand::Promote),
                ..Extra::default()
            },
        );
        state = d.next.expect("still rolling out");
        sim.now += 1_000;
    }
    panic!("never reached step {index}: {state:?}");
}

#[test]
fn start_fixes_a_naive_started_at_and_the_digest() {
    let s = spec("v2", 10);
    let state = start(&s, "c2", T0 + 1_234);
    assert_eq!(state.started_at, "2026-01-01T00:00:01.234000");
    assert!(!state.started_at.ends_with('Z') && !state.started_at.contains('+'));
    assert_eq!(naive_iso(0), "1970-01-01T00:00:00.000000");
    // The first advance (which knows the owner) settles the digest on `baton.dev/digest`'s.
    let sim = Sim::new(10);
    let next = run(&sim, &state, &s, Extra::default()).next.unwrap();
    assert_eq!(next.digest, spec_digest(&s, OWNER));
    assert_eq!(
        next.digest,
        ownership::labelled(&s, OWNER, "c2")["labels"][ownership::DIGEST]
    );
    assert_ne!(next.digest, spec_digest(&spec("v3", 10), OWNER));
    let again = run(&sim, &next, &s, Extra::default()).next.unwrap();
    assert_eq!(again.digest, next.digest);
    assert_eq!(state.canary, CANARY);
    assert_eq!(state.phase, Phase::Launch);
}

#[test]
fn launch_creates_an_isolated_canary_that_claims_no_port_and_no_group() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Create)]);
    let body = body_of(&d, CANARY);
    assert_eq!(body["id"], CANARY);
    assert_eq!(body["instances"], 1);
    assert!(
        haproxy_labels(&body).is_empty(),
        "{:?}",
        haproxy_labels(&body)
    );
    assert_eq!(body["labels"][ROLLOUT_OF], STABLE);
    assert_eq!(body["labels"][ownership::OWNER], OWNER);
    assert_eq!(body["labels"][ownership::COMMIT], "c2");
    assert_eq!(body["labels"]["team"], "shop", "the spec's own labels stay");
    assert_eq!(body["portDefinitions"][0]["port"], 0);
    assert!(body["cmd"].as_str().unwrap().contains("v2"));
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Launch);
    assert_eq!(d.status.traffic_percent, 0.0);
    assert!(d.status.waiting_for.is_some());
}

#[test]
fn without_an_isolated_step_the_canary_launches_joined_at_the_first_steps_size() {
    let mut sim = Sim::new(10);
    let s = spec_with("v2", 10, Some(rollout(vec![traffic(50, 60)])));
    let state = start(&s, "c2", sim.now);
    let d = step(&mut sim, &state, &s, Extra::default());
    let body = body_of(&d, CANARY);
    assert_eq!(body["instances"], 5);
    assert_eq!(body["labels"][DEPLOYMENT_GROUP], STABLE);
    assert_eq!(body["labels"][DEPLOYMENT_STARTED_AT], state.started_at);
    // Healthy: straight to the step, which finds nothing to write.
    let d = step(&mut sim, &d.next.unwrap(), &s, Extra::default());
    assert!(d.plan.is_empty());
    assert!(d.run_check.is_none());
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 0 });
    assert_eq!(d.status.traffic_percent, 50.0);
}

#[test]
fn an_unhealthy_canary_is_waited_for_and_never_rewritten() {
    let mut sim = Sim::new(10);
    sim.healthy = false;
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let d = step(&mut sim, &state, &s, Extra::default());
    let state = d.next.unwrap();
    sim.now += 5_000;
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert_eq!(d.next.unwrap().phase, Phase::Launch);
    assert_eq!(
        d.status.waiting_for.as_deref(),
        Some("canary tasks healthy: 0/1")
    );
    assert!(d.wake_at_ms > sim.now && d.wake_at_ms <= sim.now + 5_000);
}

#[test]
fn a_healthy_isolated_canary_gets_its_check_run_against_its_task() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    sim.now += 1_000;
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert_eq!(d.next.as_ref().unwrap().phase, Phase::Check);
    let run = d.run_check.expect("a check to run");
    let task = &sim.app(CANARY).unwrap()["tasks"][0];
    assert_eq!(run.app, CANARY);
    assert_eq!(run.host, "agent-1.example");
    assert_eq!(run.ports, vec![task["ports"][0].as_u64().unwrap() as u16]);
    assert_eq!(
        run.check,
        Check::Http {
            path: "/health".into(),
            expect: 200
        }
    );
}

#[test]
fn a_passed_check_joins_the_canary_to_the_stables_group() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    assert_eq!(state.phase, Phase::Check);
    let d = step(
        &mut sim,
        &state,
        &s,
        Extra {
            check: Some(&CheckOutcome::Passed),
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Update)]);
    let body = body_of(&d, CANARY);
    let mut labels = haproxy_labels(&body);
    labels.sort();
    assert_eq!(
        labels,
        vec![DEPLOYMENT_GROUP, DEPLOYMENT_STARTED_AT, "HAPROXY_GROUP"],
        "joined: the group labels and nothing that makes a frontend of its own"
    );
    assert_eq!(body["labels"][DEPLOYMENT_GROUP], STABLE);
    assert_eq!(body["labels"]["HAPROXY_GROUP"], "external");
    let at = body["labels"][DEPLOYMENT_STARTED_AT].as_str().unwrap();
    assert_eq!(at, state.started_at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    );
    assert!(time::PrimitiveDateTime::parse(at, format).is_ok(), "{at}");
    assert_eq!(body["portDefinitions"][0]["port"], 0);
    assert_eq!(body["instances"], 1, "10% of 10");
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 1 });
}

#[test]
fn the_canary_joins_the_group_the_stable_carries_live() {
    let mut sim = Sim::new(10);
    // The stable was labelled `shop-api` (marathon-lb reads it as `/shop-api`) before.
    sim.apps.get_mut(STABLE).unwrap()["labels"][DEPLOYMENT_GROUP] = json!("shop-api");
    let s = spec_with("v2", 10, Some(rollout(vec![traffic(10, 60)])));
    let state = start(&s, "c2", sim.now);
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(body_of(&d, CANARY)["labels"][DEPLOYMENT_GROUP], "shop-api");
}

#[test]
fn a_failed_check_deletes_the_canary_and_nothing_else() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    let failed = CheckOutcome::Failed {
        output: "GET /health: 503".into(),
    };
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            check: Some(&failed),
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    let state = d.next.unwrap();
    assert_eq!(
        state.phase,
        Phase::RollBack {
            reason: Reason::CheckFailed {
                output: "GET /health: 503".into()
            }
        }
    );
    sim.apply(&d.plan);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty(), "the canary is gone: nothing to write");
    assert!(d.next.is_none());
    assert!(matches!(
        d.outcome,
        Some(Outcome::RolledBack {
            reason: Reason::CheckFailed { .. }
        })
    ));
    assert!(
        sim.writes.iter().all(|(app, _)| app == CANARY),
        "{:?}",
        sim.writes
    );
}

#[test]
fn canary_sizes_follow_the_stable_and_a_new_step_is_a_scale() {
    // (S, percent) -> C
    let table = [
        (1, 10, 1),
        (1, 50, 1),
        (3, 10, 1),
        (3, 50, 2),
        (10, 10, 1),
        (10, 50, 5),
        (10, 100, 10),
        (0, 10, 1),
    ];
    for (s, p, c) in table {
        assert_eq!(instances_at(p, s), c, "S={s} p={p}");
    }
    for s_count in [1u64, 3, 10] {
        let mut sim = Sim::new(s_count);
        let s = spec("v2", s_count);
        let state = at_step(&mut sim, &s, 1);
        let joined_10 = sim.submitted[CANARY].clone();
        assert_eq!(joined_10["instances"], instances_at(10, s_count));
        // Pass the 10% window.
        let d = step(
            &mut sim,
            &state,
            &s,
            Extra {
                operator: Some(OperatorCommand::Promote),
                ..Extra::default()
            },
        );
        let state = d.next.unwrap();
        assert_eq!(state.phase, Phase::Step { index: 2 });
        let joined_50 = sim.submitted[CANARY].clone();
        assert_eq!(joined_50["instances"], instances_at(50, s_count));
        let strip = |mut v: Value| {
            v.as_object_mut().unwrap().remove("instances");
            v
        };
        assert_eq!(
            strip(joined_10),
            strip(joined_50),
            "S={s_count}: the bodies differ only in instances"
        );
    }
}

#[test]
fn a_window_under_min_requests_waits_past_its_pause() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    sim.now += 120_000; // twice the pause
    sim.serve(CANARY, 7, 0);
    sim.serve(STABLE, 70, 0);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Step { index: 1 });
    assert_eq!(
        d.status.waiting_for.as_deref(),
        Some("traffic: 7/20 requests")
    );
    let w = next.window.unwrap();
    assert_eq!(
        w.canary,
        Counters {
            responses: 7,
            errors: 0
        }
    );
    assert_eq!(
        w.stable.responses,
        70 * 10,
        "70 by each of the 10 stable tasks"
    );
    assert_eq!(d.status.traffic_percent, 10.0);
}

#[test]
fn errors_over_the_limit_roll_back_at_once_before_the_pause() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    sim.now += 5_000; // well inside the 60 s pause
    sim.serve(CANARY, 20, 2); // 10% > 5%
    sim.serve(STABLE, 200, 1);
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    let next = d.next.unwrap();
    assert_eq!(
        next.phase,
        Phase::RollBack {
            reason: Reason::Analysis {
                step: 1,
                requests: 20,
                errors: 2,
                rate: 0.1
            }
        }
    );
    // Under minRequests the same rate is not judged yet.
    let mut sim = Sim::new(10);
    let state = at_step(&mut sim, &s, 1);
    sim.serve(CANARY, 19, 10);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 1 });
}

#[test]
fn a_passing_window_moves_to_the_next_step_with_a_fresh_window() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    let since = state.window.as_ref().unwrap().since_ms;
    sim.now = since + 30_000;
    sim.serve(CANARY, 25, 1); // 4% <= 5%
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty(), "the pause has not ended");
    let state = d.next.unwrap();
    assert_eq!(d.status.waiting_for.as_deref(), Some("pause: 30s left"));
    assert_eq!(d.wake_at_ms, sim.now + 5_000);
    sim.now = since + 58_000;
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(d.wake_at_ms, since + 60_000, "woken at the pause's end");
    sim.now = since + 60_000;
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Update)]);
    assert_eq!(body_of(&d, CANARY)["instances"], 5);
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Step { index: 2 });
    assert_eq!(next.window, None);
    assert!(next
        .timeline
        .iter()
        .any(|e| e.event.contains("10% step passed: 25 requests, 1 errors")));
}

#[test]
fn counters_that_went_down_are_a_reset_and_count_from_zero() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    sim.serve(CANARY, 0, 0);
    sim.serve(STABLE, 100, 0);
    let state = at_step(&mut sim, &s, 1);
    sim.serve(CANARY, 10, 0);
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    assert_eq!(state.window.as_ref().unwrap().canary.responses, 10);
    // marathon-lb reloads HAProxy: counters restart at zero.
    sim.reload();
    sim.serve(CANARY, 4, 1);
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    let w = state.window.unwrap();
    assert_eq!(
        w.canary,
        Counters {
            responses: 14,
            errors: 1
        }
    );
}

#[test]
fn without_a_sample_nothing_is_judged_or_promoted() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    sim.now += 600_000;
    sim.serve(CANARY, 100, 100);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            no_sample: true,
            ..Extra::default()
        },
    );
    assert!(d.plan.is_empty());
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Step { index: 1 });
    assert_eq!(next.window, state.window, "the window is not touched");
    assert!(d.status.waiting_for.unwrap().contains("stats"));
    // And a window only opens once every canary task is in the stats.
    let mut sim = Sim::new(10);
    let state = at_step(&mut sim, &s, 1);
    let mut before = state.clone();
    before.window = None;
    let d = run(
        &sim,
        &before,
        &s,
        Extra {
            no_sample: true,
            ..Extra::default()
        },
    );
    assert_eq!(d.next.unwrap().window, None);
}

#[test]
fn a_window_opens_only_once_the_canary_is_in_the_stats() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let mut state = at_step(&mut sim, &s, 1);
    state.window = None;
    // The stats without the canary's rows (marathon-lb has not reloaded yet).
    let sample = Sample {
        rows: sim
            .sample()
            .rows
            .into_iter()
            .filter(|r| {
                let canary_tasks =
                    Servers::of(sim.app(CANARY).unwrap()["tasks"].as_array().unwrap());
                canary_tasks.task_of(r).is_none()
            })
            .collect(),
    };
    let input = Input {
        spec: Some(&s),
        spec_invalid: false,
        owner: OWNER,
        rev: "c2",
        stable: sim.app(STABLE),
        canary: sim.app(CANARY),
        sample: Some(&sample),
        check: None,
        operator: None,
        now_ms: sim.now,
    };
    let d = advance(&state, &input);
    assert_eq!(d.next.unwrap().window, None);
    assert_eq!(
        d.status.waiting_for.as_deref(),
        Some("the canary's tasks in the load balancer's stats (0/1)")
    );
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(d.next.unwrap().window.unwrap().since_ms, sim.now);
}

#[test]
fn a_new_definition_supersedes_before_the_stable_is_written_and_not_after() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let v3 = spec("v3", 10);
    let state = at_step(&mut sim, &s, 1);
    let d = run(&sim, &state, &v3, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::Superseded
        }
    );
    // Once the stable's update began: finish (retire the canary) once the stable's deployment
    // is done, never write v3 to the stable.
    let mut updating = state.clone();
    updating.phase = Phase::UpdateStable;
    updating.window = None;
    sim.set_health(STABLE, false);
    let d = run(&sim, &updating, &v3, Extra::default());
    assert!(
        d.plan.is_empty(),
        "the canary still serves: kept until the stable is healthy"
    );
    assert_eq!(d.next.unwrap().phase, Phase::UpdateStable);
    assert!(d.status.waiting_for.unwrap().contains("superseded"));
    sim.set_health(STABLE, true);
    let d = run(&sim, &updating, &v3, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(d.next.unwrap().phase, Phase::Retire);
    // The spec removed meanwhile: the same.
    let d = run(
        &sim,
        &updating,
        &v3,
        Extra {
            spec_gone: true,
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
}

#[test]
fn a_phase_over_its_deadline_rolls_back() {
    let mut sim = Sim::new(10);
    sim.healthy = false;
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    sim.now += 600_000;
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty(), "exactly at the deadline: still waiting");
    sim.now += 1;
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::Deadline {
                phase: "launch".into()
            }
        }
    );
    // A traffic step has its pause on top of the deadline.
    let mut sim = Sim::new(10);
    let state = at_step(&mut sim, &s, 1);
    sim.now = state.entered_ms + 600_000 + 59_000;
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 1 });
}

#[test]
fn a_canary_task_failure_since_the_start_rolls_back() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    // A failure from before this rollout (an older canary): not this one's.
    sim.apps.get_mut(CANARY).unwrap()["lastTaskFailure"] = json!({
        "appId": CANARY, "taskId": "old", "state": "TASK_FAILED", "message": "old",
        "timestamp": rfc3339(T0 - 60_000), "version": rfc3339(T0 - 60_000)
    });
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    sim.apps.get_mut(CANARY).unwrap()["lastTaskFailure"] = json!({
        "appId": CANARY, "taskId": "t1", "state": "TASK_FAILED", "message": "Command exited with status 1",
        "timestamp": rfc3339(sim.now - 500), "version": rfc3339(sim.now - 500)
    });
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::Crashed {
                message: "canary task t1 ended TASK_FAILED: Command exited with status 1".into()
            }
        }
    );
}

#[test]
fn operators_promote_past_a_check_or_window_and_abort() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    assert_eq!(state.phase, Phase::Check);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Promote),
            ..Extra::default()
        },
    );
    assert!(d.run_check.is_none());
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 1 });

    let state = at_step(&mut sim, &s, 1);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Promote),
            ..Extra::default()
        },
    );
    assert_eq!(
        d.next.unwrap().phase,
        Phase::Step { index: 2 },
        "one step only"
    );

    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Abort),
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::Aborted
        }
    );
    // Abort once the stable is being updated: too late, ignored (and said).
    let mut updating = state.clone();
    updating.phase = Phase::UpdateStable;
    let d = run(
        &sim,
        &updating,
        &s,
        Extra {
            operator: Some(OperatorCommand::Abort),
            ..Extra::default()
        },
    );
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::UpdateStable);
    assert!(next
        .timeline
        .iter()
        .any(|e| e.event.contains("abort ignored")));
}

#[test]
fn a_rollback_with_the_canary_already_gone_ends_without_a_write() {
    let sim = Sim::new(10);
    let s = spec("v2", 10);
    let mut state = start(&s, "c2", sim.now);
    state.digest = spec_digest(&s, OWNER); // as after its first advance
    state.phase = Phase::RollBack {
        reason: Reason::Aborted,
    };
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert!(d.next.is_none());
    assert_eq!(
        d.outcome,
        Some(Outcome::RolledBack {
            reason: Reason::Aborted
        })
    );
    assert_eq!(d.status.phase, "rollBack");
}

#[test]
fn a_rollout_ending_at_its_first_advance_is_saved_once_with_its_digest_first() {
    let sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = start(&s, "c2", sim.now);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Abort),
            ..Extra::default()
        },
    );
    assert!(d.plan.is_empty(), "no canary yet: nothing to delete");
    assert_eq!(d.outcome, None);
    let next = d.next.unwrap();
    assert_eq!(next.digest, spec_digest(&s, OWNER));
    assert_eq!(
        next.phase,
        Phase::RollBack {
            reason: Reason::Aborted
        }
    );
    let d = run(&sim, &next, &s, Extra::default());
    assert_eq!(
        d.outcome,
        Some(Outcome::RolledBack {
            reason: Reason::Aborted
        })
    );
}

#[test]
fn a_canary_baton_does_not_own_is_never_touched() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    // Someone else's app at the canary's id.
    sim.put(json!({"id": CANARY, "cmd": "theirs", "instances": 1, "labels": {"baton.dev/owner": "other"}}));
    let state = start(&s, "c2", sim.now);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert!(d
        .status
        .waiting_for
        .unwrap()
        .contains("not this rollout's canary"));
    // Owned by us but a canary of another app: not ours either.
    sim.put(json!({"id": CANARY, "cmd": "x", "instances": 1,
        "labels": {"baton.dev/owner": OWNER, (ROLLOUT_OF): "/shop/other"}}));
    let mut rolling_back = state.clone();
    rolling_back.digest = spec_digest(&s, OWNER);
    rolling_back.phase = Phase::RollBack {
        reason: Reason::Aborted,
    };
    let d = run(&sim, &rolling_back, &s, Extra::default());
    assert!(d.plan.is_empty(), "never deleted");
    assert!(d.outcome.is_some());
}

#[test]
fn an_invalid_spec_holds_everything() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    // Past the pause, with passing numbers: not promoted.
    sim.now += 120_000;
    sim.serve(CANARY, 100, 0);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            spec_invalid: true,
            ..Extra::default()
        },
    );
    assert!(d.plan.is_empty());
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Step { index: 1 });
    assert!(d.status.waiting_for.unwrap().contains("does not validate"));
}

/// A canary serving errors keeps a share of the users' traffic for as long as it runs: a spec
/// that stops validating mid-step (a broken push) must not keep it there. The window is still
/// judged, with the limits the rollout started with, and fails as it would have; it never
/// passes while the spec is invalid.
#[test]
fn an_invalid_spec_still_rolls_back_a_failing_canary() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    sim.now += 5_000;
    sim.serve(CANARY, 100, 100);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            spec_invalid: true,
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert!(
        matches!(
            d.next.unwrap().phase,
            Phase::RollBack {
                reason: Reason::Analysis {
                    step: 1,
                    requests: 100,
                    errors: 100,
                    ..
                }
            }
        ),
        "{:?}",
        d.status
    );
}

#[test]
fn a_removed_spec_or_rollout_rolls_back() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            spec_gone: true,
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::SpecRemoved
        }
    );
    let without = spec_with("v2", 10, None);
    let d = run(&sim, &state, &without, Extra::default());
    assert_eq!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::SpecRemoved
        }
    );
}

#[test]
fn a_stable_app_gone_mid_rollout_rolls_back() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    sim.apps.remove(STABLE);
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert!(matches!(
        d.next.unwrap().phase,
        Phase::RollBack {
            reason: Reason::Crashed { .. }
        }
    ));
}

#[test]
fn the_stable_is_updated_after_the_switch_and_the_canary_retired_once_it_is_healthy() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 2);
    // Pass the 50% step: the switch scales the canary to S.
    sim.now += 61_000;
    sim.serve(CANARY, 100, 0);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(d.next.as_ref().unwrap().phase, Phase::Switch);
    assert_eq!(body_of(&d, CANARY)["instances"], 10);
    assert_eq!(
        d.status.traffic_percent, 50.0,
        "live: 5 healthy of 10 before the scale"
    );
    let state = d.next.unwrap();
    // The canary at 100%, in the stats: the stable is written with git's definition.
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(STABLE.to_string(), Action::Update)]);
    assert_eq!(body_of(&d, STABLE), ownership::labelled(&s, OWNER, "c2"));
    let state = d.next.unwrap();
    assert_eq!(state.phase, Phase::UpdateStable);
    // Its new tasks are not healthy yet: wait, write nothing.
    sim.set_health(STABLE, false);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert_eq!(
        d.status.waiting_for.as_deref(),
        Some("the stable app's deployment: 0/10 tasks healthy at the new version")
    );
    // An operator may end the wait.
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Promote),
            ..Extra::default()
        },
    );
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    // Healthy: retire the canary, then done.
    sim.set_health(STABLE, true);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    let state = d.next.unwrap();
    assert_eq!(state.phase, Phase::Retire);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert_eq!(d.outcome, Some(Outcome::Completed));
    assert!(d.next.is_none());
}

#[test]
fn a_stable_app_another_owner_took_is_not_written() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let mut state = at_step(&mut sim, &s, 2);
    state.phase = Phase::UpdateStable;
    sim.apps.get_mut(STABLE).unwrap()["labels"][ownership::OWNER] = json!("other");
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    assert!(d.status.waiting_for.unwrap().contains("owned by `other`"));
}

#[test]
fn a_whole_rollout_writes_the_stable_once_and_never_runs_two_canaries() {
    for (name, r) in [
        ("canary", standard()),
        (
            "no isolated step",
            rollout(vec![traffic(10, 10), traffic(50, 10)]),
        ),
        ("blueGreen", {
            let mut r = rollout(vec![http_check(), traffic(100, 30)]);
            r.strategy = Strategy::BlueGreen;
            r
        }),
        ("no steps", rollout(vec![])),
    ] {
        let mut sim = Sim::new(10);
        let s = spec_with("v2", 10, Some(r));
        let mut state = start(&s, "c2", sim.now);
        let mut outcome = None;
        let mut checked = false;
        for _ in 0..200 {
            let passed = CheckOutcome::Passed;
            let d = step(
                &mut sim,
                &state,
                &s,
                Extra {
                    check: checked.then_some(&passed),
                    ..Extra::default()
                },
            );
            checked = d.run_check.is_some();
            assert!(
                sim.apps.keys().filter(|k| k.ends_with("-canary")).count() <= 1,
                "{name}"
            );
            sim.now += 2_000;
            sim.serve(CANARY, 3, 0);
            sim.serve(STABLE, 3, 0);
            match d.next {
                Some(next) => state = next,
                None => {
                    outcome = d.outcome;
                    break;
                }
            }
        }
        assert_eq!(outcome, Some(Outcome::Completed), "{name}: {state:?}");
        let stable_writes: Vec<_> = sim.writes.iter().filter(|(a, _)| a == STABLE).collect();
        assert_eq!(stable_writes.len(), 1, "{name}: {:?}", sim.writes);
        assert!(sim.app(CANARY).is_none(), "{name}");
        assert_eq!(
            sim.submitted[STABLE],
            ownership::labelled(&s, OWNER, "c2"),
            "{name}"
        );
        let last = sim.writes.last().unwrap();
        assert_eq!(last, &(CANARY.to_string(), Action::Delete), "{name}");
    }
}

#[test]
fn the_stable_is_never_written_before_its_update_even_when_edited() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    // Someone scales the stable by hand mid-rollout.
    sim.apps.get_mut(STABLE).unwrap()["instances"] = json!(12);
    sim.apps.get_mut(STABLE).unwrap()["cmd"] = json!("hotfix");
    sim.now += 61_000;
    sim.serve(CANARY, 30, 0);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert!(
        writes(&d).iter().all(|(a, _)| a == CANARY),
        "{:?}",
        writes(&d)
    );
    // The share follows the live stable: 10% of 12 -> 1, 50% of 12 -> 6.
    assert_eq!(body_of(&d, CANARY)["instances"], 6);
}

#[test]
fn a_lost_canary_is_written_again_and_an_orphan_is_taken_over() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    // The scheduler lost the canary (restarted from older state).
    sim.apps.remove(CANARY);
    sim.submitted.remove(CANARY);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Create)]);
    assert_eq!(body_of(&d, CANARY)["instances"], 1);
    assert_eq!(d.next.unwrap().phase, Phase::Step { index: 1 });
    // A canary of ours from an older commit, at launch: rewritten, not doubled.
    let mut sim = Sim::new(10);
    let old = spec("v1b", 10);
    let old_state = start(&old, "c1b", sim.now);
    step(&mut sim, &old_state, &old, Extra::default());
    let state = start(&s, "c2", sim.now);
    let d = step(&mut sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Update)]);
}

#[test]
fn the_timeline_is_bounded() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let mut state = at_step(&mut sim, &s, 1);
    state.timeline = (0..TIMELINE as u64)
        .map(|i| TimelineEntry {
            at_ms: i,
            event: format!("e{i}"),
        })
        .collect();
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            operator: Some(OperatorCommand::Promote),
            ..Extra::default()
        },
    );
    let tl = d.next.unwrap().timeline;
    assert_eq!(tl.len(), TIMELINE);
    assert_eq!(tl[0].event, "e1");
    assert!(tl.last().unwrap().event.contains("promoted"));
}

#[test]
fn the_state_and_status_round_trip_through_json() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    let text = serde_json::to_string(&state).unwrap();
    let back: RolloutState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    let d = run(&sim, &state, &s, Extra::default());
    let status = serde_json::to_value(&d.status).unwrap();
    assert_eq!(status["phase"], "step");
    assert_eq!(status["step"], 1);
    assert_eq!(status["canaryApp"], CANARY);
}

#[test]
fn rows_are_matched_by_address_and_by_marathon_lb_server_names() {
    let tasks = [
        json!({"host": "127.0.0.1", "ipAddresses": [{"ipAddress": "127.0.0.1"}], "ports": [31001]}),
        json!({"host": "agent-2.example", "ports": [31002]}),
        json!({"host": "agent-3", "ipAddresses": [{"ipAddress": "10.0.0.3"}], "ports": [31003, 31004]}),
    ];
    let servers = Servers::of(tasks.iter());
    let row = |server: &str, addr: Option<&str>| ServerRow {
        source: 0,
        proxy: PROXY.into(),
        server: server.into(),
        addr: addr.map(String::from),
        counters: Counters::default(),
    };
    let table = [
        (row("x", Some("127.0.0.1:31001")), Some(0)),
        (row("127_0_0_1_31001", None), Some(0)),
        (row("agent-2_example_192_168_1_9_31002", None), Some(1)),
        (row("agent-2_example_31002", None), None),
        (row("agent-3_10_0_0_3_31004", None), Some(2)),
        (row("x", Some("10.0.0.3:31003")), Some(2)),
        (row("127_0_0_1_31009", None), None),
        (row("FRONTEND", None), None),
    ];
    for (r, want) in table {
        assert_eq!(servers.task_of(&r), want, "{r:?}");
    }
    // IP per task: marathon-lb uses the task's IP and the app's container ports.
    let app = json!({"networks": [{"mode": "container", "name": "dcos"}],
        "container": {"portMappings": [{"containerPort": 8080}]}});
    let task = [json!({"host": "agent-4", "ipAddresses": [{"ipAddress": "9.0.0.4"}], "ports": []})];
    let servers = Servers::of_app(Some(&app), task.iter());
    assert_eq!(servers.task_of(&row("9_0_0_4_8080", None)), Some(0));
    assert_eq!(servers.task_of(&row("x", Some("9.0.0.4:8080"))), Some(0));
    assert_eq!(
        Servers::of(task.iter()).task_of(&row("9_0_0_4_8080", None)),
        None
    );
}

#[test]
fn window_arithmetic_takes_differences_and_resets() {
    let tasks = [json!({"host": "127.0.0.1", "ports": [31001]})];
    let stable_tasks = [json!({"host": "127.0.0.1", "ports": [31002]})];
    let canary = Servers::of(tasks.iter());
    let stable = Servers::of(stable_tasks.iter());
    let sample = |c: (u64, u64), s: (u64, u64)| Sample {
        rows: vec![
            ServerRow {
                source: 0,
                proxy: PROXY.into(),
                server: "127_0_0_1_31001".into(),
                addr: None,
                counters: Counters {
                    responses: c.0,
                    errors: c.1,
                },
            },
            ServerRow {
                source: 1,
                proxy: PROXY.into(),
                server: "127_0_0_1_31002".into(),
                addr: None,
                counters: Counters {
                    responses: s.0,
                    errors: s.1,
                },
            },
        ],
    };
    let mut w = Window::open(5, &sample((100, 10), (1000, 1)), &canary, &stable);
    assert_eq!(w.since_ms, 5);
    assert_eq!(w.last.len(), 2);
    assert!(w.last.contains_key("0/shop_api_10100/127_0_0_1_31001"));
    w.observe(&sample((130, 12), (1100, 1)), &canary, &stable);
    assert_eq!(
        w.canary,
        Counters {
            responses: 30,
            errors: 2
        }
    );
    assert_eq!(
        w.stable,
        Counters {
            responses: 100,
            errors: 0
        }
    );
    w.observe(&sample((7, 0), (1150, 1)), &canary, &stable);
    assert_eq!(
        w.canary,
        Counters {
            responses: 37,
            errors: 2
        }
    );
    assert_eq!(w.stable.responses, 150);
    assert!((haproxy::error_rate(&w.canary) - 2.0 / 37.0).abs() < 1e-9);
    assert_eq!(haproxy::error_rate(&Counters::default()), 0.0);
}

/// The stats page of Debian's HAProxy 2.6.12, as marathon-lb configures it (no
/// `stats show-legends`: no `addr`); see `fixtures/haproxy/README.md`.
const STATS_PAGE: &[u8] = include_bytes!("../../../../fixtures/haproxy/stats-page-2.6.12.csv");
/// `show stat` on the admin socket of the same HAProxy (with `addr`).
const SHOW_STAT: &[u8] = include_bytes!("../../../../fixtures/haproxy/show-stat-2.6.12.csv");

#[test]
fn a_real_haproxy_2_6_csv_is_read_by_column_name() {
    let header =
        String::from_utf8_lossy(STATS_PAGE.split(|b| *b == b'\n').next().unwrap()).to_string();
    assert!(
        header.split(',').any(|c| c == "-"),
        "the fixture has 2.6's `-` column"
    );
    let rows = haproxy::parse_csv(3, STATS_PAGE).unwrap();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.proxy.as_str(), r.server.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("shop_api_10100", "127_0_0_1_37547"),
            ("shop_api_10100", "127_0_0_1_60197"),
            ("shop_api_10100", "127_0_0_1_49145"),
            ("shop_db_10101", "127_0_0_1_37547"),
        ],
        "server rows only: no FRONTEND or BACKEND"
    );
    assert!(rows.iter().all(|r| r.source == 3 && r.addr.is_none()));
    // 10 x 200, 1 x 404, 2 x 500 each; the disabled server none; tcp mode: empty hrsp_*.
    assert_eq!(
        rows[0].counters,
        Counters {
            responses: 13,
            errors: 2
        }
    );
    assert_eq!(
        rows[1].counters,
        Counters {
            responses: 13,
            errors: 2
        }
    );
    assert_eq!(rows[2].counters, Counters::default());
    assert_eq!(rows[3].counters, Counters::default());

    let rows = haproxy::parse_csv(0, SHOW_STAT).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].addr.as_deref(), Some("127.0.0.1:37547"));
    assert_eq!(
        rows[0].counters,
        Counters {
            responses: 13,
            errors: 2
        }
    );
    let task = [json!({"host": "127.0.0.1", "ports": [37547]})];
    let servers = Servers::of(task.iter());
    assert_eq!(servers.task_of(&rows[0]), Some(0));
}

#[test]
fn columns_are_found_wherever_they_are_and_bad_input_is_an_error() {
    // Another order, fewer columns, quoted cells, no `type`: still read by name.
    let csv = b"# svname,hrsp_5xx,pxname,hrsp_2xx,check_desc\n\
        FRONTEND,9,web,90,\n\
        srv_1,\"3\",web,7,\"Layer7 wrong status, code 500\"\n\
        BACKEND,3,web,7,\n";
    let rows = haproxy::parse_csv(0, csv).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].server, "srv_1");
    assert_eq!(
        rows[0].counters,
        Counters {
            responses: 10,
            errors: 3
        }
    );

    let err = |bytes: &[u8]| haproxy::parse_csv(0, bytes).unwrap_err().to_string();
    assert!(err(b"").contains("empty"));
    assert!(err(b"pxname,svname\nweb,srv\n").contains("header"));
    assert!(err(b"# pxname,hrsp_5xx\nweb,1\n").contains("svname"));
    assert_eq!(
        err(b"# pxname,svname,hrsp_5xx\nweb,srv,lots\n"),
        "not an HAProxy stats CSV: line 2, column `hrsp_5xx`: not a count: \"lots\""
    );
    let long = format!(
        "# pxname,svname,hrsp_5xx\nweb,srv,{}\n",
        "9x".repeat(10_000)
    );
    assert!(
        err(long.as_bytes()).len() < 200,
        "a bad cell is not echoed whole"
    );
}

#[test]
fn oversized_input_is_cut_not_failed() {
    let mut csv = b"# pxname,svname,hrsp_2xx\n".to_vec();
    let row = b"web,srv_000000000000000000000000000000000000000000,1\n";
    while csv.len() < haproxy::MAX_BYTES + 1_000 {
        csv.extend_from_slice(row);
    }
    let rows = haproxy::parse_csv(0, &csv).unwrap();
    let fits = (haproxy::MAX_BYTES - 25) / row.len();
    assert!(fits < haproxy::MAX_ROWS);
    assert_eq!(rows.len(), fits, "whole lines up to the byte bound");
    assert!(
        rows.iter().all(|r| r.counters.responses == 1),
        "no cut row is read"
    );
    // Short rows: the row bound.
    let mut csv = b"# pxname,svname,hrsp_2xx\n".to_vec();
    for _ in 0..haproxy::MAX_ROWS + 10 {
        csv.extend_from_slice(b"w,s,1\n");
    }
    assert_eq!(
        haproxy::parse_csv(0, &csv).unwrap().len(),
        haproxy::MAX_ROWS
    );
}

/// Random sequences of events against the invariants.
mod properties {
    use super::*;
    use proptest::prelude::{
        any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
    };
    use proptest::strategy::Strategy as _;

    /// One thing that may happen between two ticks of a rollout.
    #[derive(Debug, Clone)]
    enum Event {
        /// Each canary and each stable task serves this many responses, this many 5xx.
        Traffic(u64, u64, u64),
        /// HAProxy reloaded: counters back at zero.
        Reload,
        /// New and existing tasks of an app turn (un)healthy.
        Health(bool, bool),
        Time(u64),
        /// The scheduler loses the canary (restarted from older state).
        LoseCanary,
        /// Someone edits the stable by hand.
        EditStable,
        /// Someone else's app appears at the canary's id.
        ForeignCanary,
        /// The canary's task fails.
        CanaryFails,
        /// Git moves on to another definition.
        NewCommit,
        /// The spec stops validating, or comes back.
        Invalid(bool),
        SpecGone,
        Operator(bool),
        /// This tick's writes are refused (a 409 that outlasts the lock wait, a scheduler down).
        WritesFail,
        NoSample,
    }

    /// What a scheduler and a load balancer do on their own: the rollout can complete.
    fn weather() -> impl proptest::strategy::Strategy<Value = Event> {
        prop_oneof![
            8 => (0u64..40, 0u64..2, 0u64..10).prop_map(|(a, b, c)| Event::Traffic(a, b.min(a), c)),
            1 => Just(Event::Reload),
            2 => (0u8..4, any::<bool>()).prop_map(|(a, b)| Event::Health(a > 0, b)),
            8 => (0u64..90_000).prop_map(Event::Time),
            1 => Just(Event::LoseCanary),
            1 => Just(Event::EditStable),
            1 => Just(Event::WritesFail),
            1 => Just(Event::NoSample),
        ]
    }

    /// Anything, including what ends a rollout early.
    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        prop_oneof![
            12 => weather(),
            1 => (0u64..40, 0u64..40, 0u64..10).prop_map(|(a, b, c)| Event::Traffic(a, b.min(a), c)),
            1 => Just(Event::ForeignCanary),
            1 => Just(Event::CanaryFails),
            1 => Just(Event::NewCommit),
            1 => any::<bool>().prop_map(Event::Invalid),
            1 => Just(Event::SpecGone),
            1 => any::<bool>().prop_map(Event::Operator),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever happens, the machine writes only its canary and the stable; deletes only a
        /// canary that is its own; never creates a second canary; writes the stable only in
        /// `UpdateStable`, with git's definition at the rollout's commit, and never once it has
        /// decided to roll back; holds while the spec is invalid; and always ends or goes on.
        #[test]
        fn whatever_happens_only_the_own_canary_and_the_updated_stable_are_written(
            events in prop_oneof![
                prop::collection::vec(weather(), 1..120),
                prop::collection::vec(event(), 1..120),
            ],
            instances in 1u64..12,
        ) {
            let mut sim = Sim::new(instances);
            let v2 = spec("v2", instances);
            let v3 = spec("v3", instances);
            let mut current = &v2;
            let mut state = start(&v2, "c2", sim.now);
            let mut invalid = false;
            let mut gone = false;
            let mut stable_written = false;
            let mut rolled_back = false;
            for e in events {
                let mut extra = Extra::default();
                let mut writes_fail = false;
                let passed = CheckOutcome::Passed;
                match e {
                    Event::Traffic(c, ce, s) => {
                        sim.serve(CANARY, c, ce);
                        sim.serve(STABLE, s, 0);
                    }
                    Event::Reload => sim.reload(),
                    Event::Health(new, existing) => {
                        sim.healthy = new;
                        sim.set_health(CANARY, existing);
                    }
                    Event::Time(ms) => sim.now += ms,
                    Event::LoseCanary => {
                        sim.apps.remove(CANARY);
                        sim.submitted.remove(CANARY);
                    }
                    Event::EditStable => {
                        if let Some(a) = sim.apps.get_mut(STABLE) {
                            a["cmd"] = json!("hotfix");
                        }
                    }
                    Event::ForeignCanary => {
                        if sim.app(CANARY).is_none() {
                            sim.put(json!({"id": CANARY, "cmd": "theirs", "instances": 1,
                                "labels": {"baton.dev/owner": "other"}}));
                        }
                    }
                    Event::CanaryFails => {
                        let at = rfc3339(sim.now);
                        if let Some(a) = sim.apps.get_mut(CANARY) {
                            a["lastTaskFailure"] = json!({"taskId": "t", "state": "TASK_FAILED",
                                "timestamp": at, "version": at});
                        }
                    }
                    Event::NewCommit => current = &v3,
                    Event::Invalid(on) => invalid = on,
                    Event::SpecGone => gone = true,
                    Event::Operator(promote) => {
                        extra.operator = Some(if promote { OperatorCommand::Promote } else { OperatorCommand::Abort });
                    }
                    Event::WritesFail => writes_fail = true,
                    Event::NoSample => extra.no_sample = true,
                }
                extra.spec_invalid = invalid;
                extra.spec_gone = gone;
                if state.phase == Phase::Check {
                    extra.check = Some(&passed);
                }
                let canary_before = sim.app(CANARY).cloned();
                let ours = canary_before.as_ref().is_some_and(|c| {
                    c["labels"][ownership::OWNER] == OWNER && c["labels"][ROLLOUT_OF] == STABLE
                });
                let d = run(&sim, &state, current, extra);
                let next_phase = d.next.as_ref().map(|n| n.phase.clone());
                for c in d.plan.changes() {
                    let app = c.app.as_str();
                    prop_assert!(app == CANARY || app == STABLE, "wrote {app}");
                    match (app, c.action) {
                        (CANARY, Action::Delete) => prop_assert!(ours, "deleted a canary not its own"),
                        (CANARY, Action::Create) => prop_assert!(canary_before.is_none()),
                        (CANARY, Action::Update) => prop_assert!(ours),
                        (STABLE, Action::Delete) => prop_assert!(false, "deleted the stable"),
                        (STABLE, _) => {
                            prop_assert_eq!(next_phase.clone(), Some(Phase::UpdateStable));
                            prop_assert!(!rolled_back);
                            prop_assert!(!invalid && !gone);
                            prop_assert_eq!(c.body.clone(), Some(ownership::labelled(current, OWNER, "c2")));
                            prop_assert_eq!(spec_digest(current, OWNER), spec_digest(&v2, OWNER));
                            stable_written = true;
                        }
                        _ => {}
                    }
                }
                if invalid && !matches!(state.phase, Phase::RollBack { .. } | Phase::Retire) {
                    let aborting = matches!(next_phase, Some(Phase::RollBack { reason: Reason::Aborted }));
                    // A failing window is still judged: the canary goes, nothing else is written.
                    let failing = matches!(next_phase, Some(Phase::RollBack { reason: Reason::Analysis { .. } }))
                        && d.plan.changes().all(|c| c.app.as_str() == CANARY && c.action == Action::Delete);
                    prop_assert!(d.plan.is_empty() || aborting || failing, "wrote while the spec is invalid");
                }
                if matches!(next_phase, Some(Phase::RollBack { .. })) {
                    rolled_back = true;
                    prop_assert!(!stable_written, "rolled back after the stable was written");
                }
                prop_assert!(d.wake_at_ms >= sim.now);
                if !writes_fail {
                    sim.apply(&d.plan);
                }
                prop_assert!(sim.apps.keys().filter(|k| k.ends_with("-canary")).count() <= 1);
                match d.next {
                    Some(next) => state = next,
                    None => {
                        match d.outcome {
                            Some(Outcome::Completed) => prop_assert!(stable_written),
                            Some(Outcome::RolledBack { .. }) => prop_assert!(!stable_written),
                            None => prop_assert!(false, "ended without an outcome"),
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// marathon-lb names an IP-per-task server `host_taskip_containerport` when the agent's host
/// differs from the task's IP (`marathon_lb.py`, "Create a unique, friendly name"), and its
/// stats page has no `addr`: without that name the canary is never seen and no window opens.
#[test]
fn ip_per_task_rows_are_matched_by_marathon_lbs_host_ip_port_name() {
    let app = json!({"networks": [{"mode": "container", "name": "dcos"}],
        "container": {"portMappings": [{"containerPort": 8080}]}});
    let row = |server: &str| ServerRow {
        source: 0,
        proxy: PROXY.into(),
        server: server.into(),
        addr: None,
        counters: Counters::default(),
    };
    // The agent by name and by IP: both differ from the task's IP.
    let named = [
        json!({"host": "agent-4.example", "ipAddresses": [{"ipAddress": "9.0.0.4"}], "ports": []}),
    ];
    let servers = Servers::of_app(Some(&app), named.iter());
    assert_eq!(
        servers.task_of(&row("agent-4_example_9_0_0_4_8080")),
        Some(0)
    );
    let by_ip =
        [json!({"host": "10.1.0.7", "ipAddresses": [{"ipAddress": "9.0.0.5"}], "ports": []})];
    let servers = Servers::of_app(Some(&app), by_ip.iter());
    assert_eq!(servers.task_of(&row("10_1_0_7_9_0_0_5_8080")), Some(0));
    // Another task's IP on the same agent is not this one.
    assert_eq!(servers.task_of(&row("10_1_0_7_9_0_0_6_8080")), None);
}

/// With several load balancers (`--haproxy-stats` twice), one that has not reloaded yet still
/// sends the canary's share to the stable: a window must not open, and the stable must not be
/// written at the switch, until every load balancer serving the app shows the canary's tasks.
/// A source that serves other apps only (no row of the stable's) does not hold anything.
#[test]
fn every_load_balancer_serving_the_app_must_show_the_canary() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let mut state = at_step(&mut sim, &s, 1);
    state.window = None;
    let canary_servers = Servers::of(sim.app(CANARY).unwrap()["tasks"].as_array().unwrap());
    // Source 0 has reloaded; source 1 still shows the stable's servers only; source 2 is a
    // load balancer of other apps.
    let lagging = |sim: &Sim, canary_too: bool| {
        let mut rows = sim.sample().rows;
        let behind: Vec<ServerRow> = rows
            .iter()
            .filter(|r| canary_too || canary_servers.task_of(r).is_none())
            .map(|r| ServerRow {
                source: 1,
                ..r.clone()
            })
            .collect();
        rows.extend(behind);
        rows.push(ServerRow {
            source: 2,
            proxy: "other_10200".into(),
            server: "10_9_9_9_31999".into(),
            addr: None,
            counters: Counters::default(),
        });
        Sample { rows }
    };
    fn input<'a>(s: &'a Spec, sim: &'a Sim, sample: &'a Sample) -> Input<'a> {
        Input {
            spec: Some(s),
            spec_invalid: false,
            owner: OWNER,
            rev: "c2",
            stable: sim.app(STABLE),
            canary: sim.app(CANARY),
            sample: Some(sample),
            check: None,
            operator: None,
            now_ms: sim.now,
        }
    }
    let behind = lagging(&sim, false);
    let d = advance(&state, &input(&s, &sim, &behind));
    assert_eq!(d.next.unwrap().window, None, "{:?}", d.status.waiting_for);
    let caught_up = lagging(&sim, true);
    let d = advance(&state, &input(&s, &sim, &caught_up));
    assert!(d.next.unwrap().window.is_some());

    // The switch: the canary scaled to S, shown by source 0 only.
    let mut sim = Sim::new(10);
    let state = {
        let mut st = start(&s, "c2", sim.now);
        for _ in 0..30 {
            if st.phase == Phase::Switch {
                break;
            }
            let check = CheckOutcome::Passed;
            let d = step(
                &mut sim,
                &st,
                &s,
                Extra {
                    check: (st.phase == Phase::Check).then_some(&check),
                    operator: st.window.is_some().then_some(OperatorCommand::Promote),
                    ..Extra::default()
                },
            );
            st = d.next.expect("still rolling out");
            sim.now += 1_000;
        }
        assert_eq!(st.phase, Phase::Switch, "{st:?}");
        st
    };
    // The step that moved to the switch scaled the canary to S.
    assert_eq!(sim.app(CANARY).unwrap()["instances"], 10);
    let canary_servers = Servers::of(sim.app(CANARY).unwrap()["tasks"].as_array().unwrap());
    let behind = {
        let mut rows = sim.sample().rows;
        let lag: Vec<ServerRow> = rows
            .iter()
            .filter(|r| canary_servers.task_of(r).is_none())
            .map(|r| ServerRow {
                source: 1,
                ..r.clone()
            })
            .collect();
        rows.extend(lag);
        Sample { rows }
    };
    let d = advance(&state, &input(&s, &sim, &behind));
    assert!(
        d.plan.is_empty(),
        "the stable is not written: {:?}",
        writes(&d)
    );
    assert_eq!(d.next.unwrap().phase, Phase::Switch);
}

/// A canary that hangs (HAProxy answers 504 at `timeout server`) or drops its connections
/// (502) gets no `hrsp_5xx` on its server row, only `eresp`: the client saw a 5xx all the same
/// (`retries`/`redispatch` retry connections, not responses). Captured from HAProxy 2.6.12, see
/// `fixtures/haproxy/README.md`: three servers, one hanging, one closing, one answering 500,
/// each sent 2 requests.
#[test]
fn failed_responses_haproxy_made_itself_count_as_canary_errors() {
    const ERESP: &[u8] = include_bytes!("../../../../fixtures/haproxy/eresp-2.6.12.csv");
    let rows = haproxy::parse_csv(0, ERESP).unwrap();
    let servers: Vec<(&str, Counters)> = rows
        .iter()
        .filter(|r| r.proxy == "shop_api_10100")
        .map(|r| (r.server.as_str(), r.counters))
        .collect();
    assert_eq!(servers.len(), 3, "{servers:?}");
    for (server, c) in servers {
        assert_eq!(
            c,
            Counters {
                responses: 2,
                errors: 2
            },
            "{server}: every request it was sent failed"
        );
    }
}

/// The stats CSV is whatever a URL answered: any bytes give rows or an error, never a panic;
/// rows stay within the bounds and errors never exceed responses.
mod csv_input {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::{any, prop_oneof, proptest, Just, ProptestConfig};
    use proptest::strategy::Strategy as _;

    /// Cells a hostile or broken source might send: names of the columns read, numbers at and
    /// past u64's edge, quotes, separators, control and multi-byte characters.
    fn cell() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("# pxname".to_string()),
            Just("#".to_string()),
            Just("pxname".to_string()),
            Just("svname".to_string()),
            Just("type".to_string()),
            Just("addr".to_string()),
            Just("hrsp_2xx".to_string()),
            Just("hrsp_5xx".to_string()),
            Just("eresp".to_string()),
            Just("FRONTEND".to_string()),
            Just("BACKEND".to_string()),
            Just("2".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("\"".to_string()),
            Just("\"a,\"\"b\"".to_string()),
            Just("\r".to_string()),
            Just("\u{0}é\u{202e}".to_string()),
            "[0-9]{1,25}",
            ".{0,12}",
        ]
    }

    fn text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        vec(vec(cell(), 0..12), 0..12).prop_map(|lines| {
            lines
                .iter()
                .map(|l| l.join(","))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
    }

    fn check(bytes: &[u8]) {
        if let Ok(rows) = haproxy::parse_csv(3, bytes) {
            assert!(rows.len() <= haproxy::MAX_ROWS);
            for r in rows {
                assert_eq!(r.source, 3);
                assert!(r.counters.errors <= r.counters.responses, "{r:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_bytes_never_panic(bytes in vec(any::<u8>(), 0..2_048)) {
            check(&bytes);
        }

        #[test]
        fn csv_shaped_input_never_panics(bytes in text()) {
            check(&bytes);
        }

        #[test]
        fn a_valid_header_with_hostile_rows_never_panics(rows in text()) {
            let mut bytes = b"# pxname,svname,hrsp_1xx,hrsp_2xx,hrsp_5xx,eresp,type,addr\n".to_vec();
            bytes.extend(rows);
            check(&bytes);
        }
    }
}

/// Every phase and every reason survives the state file (and an outcome the status), and a
/// state written by a newer Baton with fields this one does not know still loads.
#[test]
fn every_phase_and_reason_round_trips_and_unknown_fields_are_ignored() {
    let reasons = [
        Reason::CheckFailed {
            output: "exit 1: \"quoted\"\n".into(),
        },
        Reason::Analysis {
            step: 2,
            requests: u64::MAX,
            errors: 7,
            rate: 0.1 + 0.2,
        },
        Reason::Crashed {
            message: "canary task x ended TASK_FAILED".into(),
        },
        Reason::Deadline {
            phase: "step".into(),
        },
        Reason::Superseded,
        Reason::Aborted,
        Reason::SpecRemoved,
    ];
    let mut phases = vec![
        Phase::Launch,
        Phase::Check,
        Phase::Step { index: 3 },
        Phase::Switch,
        Phase::UpdateStable,
        Phase::Retire,
    ];
    phases.extend(
        reasons
            .iter()
            .cloned()
            .map(|reason| Phase::RollBack { reason }),
    );
    let s = spec("v2", 10);
    for phase in phases {
        let mut state = start(&s, "c2", T0);
        state.phase = phase;
        state.window = Some(Window {
            since_ms: T0,
            last: [(
                "0/p/s".to_string(),
                Counters {
                    responses: u64::MAX,
                    errors: 1,
                },
            )]
            .into(),
            canary: Counters::default(),
            stable: Counters {
                responses: 3,
                errors: 0,
            },
        });
        let text = serde_json::to_string(&state).unwrap();
        let back: RolloutState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state, "{text}");
        // A newer Baton's extra fields, at every level.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["fromTheFuture"] = json!(1);
        v["window"]["fromTheFuture"] = json!(1);
        if v["phase"].get("reason").is_some() {
            v["phase"]["reason"]["fromTheFuture"] = json!(1);
        }
        v["phase"]["fromTheFuture"] = json!(1);
        let back: RolloutState = serde_json::from_value(v).unwrap();
        assert_eq!(back, state);
    }
    for reason in reasons {
        let outcome = Outcome::RolledBack { reason };
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), outcome);
    }
}

/// `baton.ignore` keeps the live value of what it covers: over the labels, the deployment-group
/// label Baton adds would never land, the app would never be eligible, and every change would
/// silently be a plain update in place, with a `rollout` block in git saying otherwise.
#[test]
fn a_rollout_app_may_not_ignore_its_deployment_group_label() {
    let text = |ignore: &str| {
        format!(
            "cmd: ./serve\ninstances: 10\nlabels: {{HAPROXY_GROUP: external, HAPROXY_0_MODE: http}}\nportDefinitions: [{{port: 10100}}]\nbaton:\n  ignore: [/instances, {ignore}]\n  rollout: {{}}\n"
        )
    };
    let api = AppId::parse("/api").unwrap();
    for ignore in ["/labels", "/labels/HAPROXY_DEPLOYMENT_GROUP"] {
        let t = text(ignore);
        let r = crate::spec::load::from_texts(&[
            ("baton.yaml", "owner: team\n"),
            ("apps/api.yaml", &t),
        ]);
        assert!(r.invalid.contains(&api), "{ignore}: {:?}", r.diagnostics);
        assert!(
            r.diagnostics.iter().any(|d| d.pointer == "/baton/ignore/1"
                && d.message.contains("HAPROXY_DEPLOYMENT_GROUP")),
            "{ignore}: {:?}",
            r.diagnostics
        );
    }
    // Other labels may be someone else's.
    let t = text("/labels/cost-centre");
    let r =
        crate::spec::load::from_texts(&[("baton.yaml", "owner: team\n"), ("apps/api.yaml", &t)]);
    assert!(r.invalid.is_empty(), "{:?}", r.diagnostics);
}

/// Mesos' failure message of a container that did not start can quote the whole `docker run`
/// line, `-e NAME=value` for every env var of the app. The rollback's reason goes to the
/// timeline, `/api/status`, notifications and the log: no env value of the app may be in it.
#[test]
fn a_crash_message_never_carries_the_apps_env_values() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 1);
    let secret = "hunter2-Zq8xV3pL";
    let canary = sim.apps.get_mut(CANARY).unwrap();
    canary["env"] = json!({"DB_PASSWORD": secret, "MODE": "on", "TOKEN": {"secret": "tok"}});
    let head = format!("Failed to run 'docker -H unix:///var/run/docker.sock run -e MODE=on -e DB_PASSWORD={secret} img': exited with status 125; ");
    // The message is cut at 300 characters: 6 of the secret's second copy before the cut.
    let padding = "x".repeat(300 - head.len() - "DB_PASSWORD=".len() - 6);
    canary["lastTaskFailure"] = json!({
        "appId": CANARY, "taskId": "t1", "state": "TASK_FAILED",
        "message": format!("{head}{padding}DB_PASSWORD={secret}"),
        "timestamp": rfc3339(sim.now - 500), "version": rfc3339(sim.now - 500)
    });
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    let next = d.next.unwrap();
    let Phase::RollBack {
        reason: Reason::Crashed { message },
    } = &next.phase
    else {
        panic!("{:?}", next.phase);
    };
    assert!(message.contains("exited with status 125"), "{message}");
    let everything = format!(
        "{}{}",
        serde_json::to_string(&next).unwrap(),
        serde_json::to_string(&d.status).unwrap()
    );
    // Nor a prefix of it, cut at the message's bound.
    assert!(!everything.contains(&secret[..6]), "{everything}");
}

/// A failed http check's output is the tail of what the task answered, and a health page may
/// dump its configuration: the app's env values stay out of the rollback's reason too.
#[test]
fn a_failed_checks_output_never_carries_the_apps_env_values() {
    let mut sim = Sim::new(10);
    let mut s = spec("v2", 10);
    let secret = "sk_live_4eC39HqLyjWDarjtT1";
    s.app["env"] = json!({"API_KEY": secret});
    let state = start(&s, "c2", sim.now);
    let state = step(&mut sim, &state, &s, Extra::default()).next.unwrap();
    let state = run(&sim, &state, &s, Extra::default()).next.unwrap();
    assert_eq!(state.phase, Phase::Check);
    let failed = CheckOutcome::Failed {
        output: format!("GET /health: 500 {{\"env\":{{\"API_KEY\":\"{secret}\"}}}}"),
    };
    let d = run(
        &sim,
        &state,
        &s,
        Extra {
            check: Some(&failed),
            ..Extra::default()
        },
    );
    let next = d.next.unwrap();
    let Phase::RollBack {
        reason: Reason::CheckFailed { output },
    } = &next.phase
    else {
        panic!("{:?}", next.phase);
    };
    assert!(output.starts_with("GET /health: 500"), "{output}");
    let everything = format!(
        "{}{}",
        serde_json::to_string(&next).unwrap(),
        serde_json::to_string(&d.status).unwrap()
    );
    assert!(!everything.contains(secret), "{everything}");
}

/// A step's window stays judged while a canary task is unhealthy (or its scale is under way):
/// the healthy ones keep serving their share, and a canary failing health checks now and then
/// while answering 5xx must not serve users until the deadline.
#[test]
fn an_open_window_is_judged_while_a_canary_task_is_unhealthy() {
    let mut sim = Sim::new(10);
    let s = spec("v2", 10);
    let state = at_step(&mut sim, &s, 2);
    assert_eq!(
        sim.app(CANARY).unwrap()["tasks"].as_array().unwrap().len(),
        5
    );
    sim.apps.get_mut(CANARY).unwrap()["tasks"][0]["healthCheckResults"] = json!([{"alive": false}]);
    sim.now += 5_000;
    sim.serve(CANARY, 20, 10);
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    assert!(
        matches!(
            d.next.unwrap().phase,
            Phase::RollBack {
                reason: Reason::Analysis { step: 2, .. }
            }
        ),
        "{:?}",
        d.status
    );
    // Failing while the canary is being written again (edited by hand): the rollback drops
    // that write; only the removal is planned.
    let mut sim = Sim::new(10);
    let state = at_step(&mut sim, &s, 2);
    sim.apps.get_mut(CANARY).unwrap()["cmd"] = json!("edited by hand");
    sim.now += 5_000;
    sim.serve(CANARY, 20, 10);
    let d = run(&sim, &state, &s, Extra::default());
    assert_eq!(writes(&d), vec![(CANARY.to_string(), Action::Delete)]);
    // Passing numbers do not pass the step while a task is unhealthy.
    let mut sim = Sim::new(10);
    let state = at_step(&mut sim, &s, 2);
    sim.apps.get_mut(CANARY).unwrap()["tasks"][0]["healthCheckResults"] = json!([{"alive": false}]);
    sim.now += 120_000;
    sim.serve(CANARY, 100, 0);
    let d = run(&sim, &state, &s, Extra::default());
    assert!(d.plan.is_empty());
    let next = d.next.unwrap();
    assert_eq!(next.phase, Phase::Step { index: 2 });
    assert_eq!(
        next.window.unwrap().canary.responses,
        500,
        "observed meanwhile"
    );
}

/// With `baton.ignore: [/instances]` an autoscaler owns the stable's size and the spec's
/// `instances` means nothing: the switch sizes the canary by the live stable (enough to drain
/// it), not by a stale number in git that could be many times the cluster's room.
#[test]
fn an_autoscaled_stable_sizes_the_switch_by_its_live_instances() {
    let mut sim = Sim::new(10);
    let mut s = spec("v2", 40);
    s.baton.ignore = vec!["/instances".into()];
    let mut state = start(&s, "c2", sim.now);
    let mut switch_size = None;
    for _ in 0..30 {
        let check = CheckOutcome::Passed;
        let d = step(
            &mut sim,
            &state,
            &s,
            Extra {
                check: (state.phase == Phase::Check).then_some(&check),
                operator: state.window.is_some().then_some(OperatorCommand::Promote),
                ..Extra::default()
            },
        );
        if let Some(c) = d
            .plan
            .changes()
            .find(|c| c.app.as_str() == CANARY && c.body.is_some())
        {
            let n = c.body.as_ref().unwrap()["instances"].as_u64().unwrap();
            assert!(n <= 10, "the canary was sized {n} for a stable of 10");
            if d.next.as_ref().is_some_and(|n| n.phase == Phase::Switch) {
                switch_size = Some(n);
            }
        }
        if let Some(c) = d.plan.changes().find(|c| c.app.as_str() == STABLE) {
            assert_eq!(
                c.body.as_ref().unwrap()["instances"],
                10,
                "the live size is kept"
            );
        }
        sim.now += 1_000;
        match d.next {
            Some(n) => state = n,
            None => break,
        }
    }
    assert_eq!(switch_size, Some(10));
}

/// `instances` comes from the scheduler's JSON: any u64, never an overflow.
#[test]
fn canary_sizes_never_overflow() {
    for s in [u64::MAX, u64::MAX / 99, 1 << 62] {
        for p in [1u8, 10, 50, 99, 100] {
            let c = instances_at(p, s);
            assert!((1..=s).contains(&c), "{p}% of {s}: {c}");
        }
    }
    assert_eq!(instances_at(100, u64::MAX), u64::MAX);
    assert_eq!(instances_at(50, u64::MAX), u64::MAX / 2 + 1);
}

/// A server row missing from one sample (a stats page cut at its size bound, a source that
/// answered from a process that does not have it) and back in the next, with the counters of
/// the same process, is a difference to what was last seen of it, not new traffic: counting
/// its raw counters again would count the earlier steps' traffic into this window (and pass
/// `minRequests` at once).
#[test]
fn a_row_missing_from_one_sample_is_not_counted_twice() {
    let canary_tasks = [json!({"host": "127.0.0.1", "ports": [31001]})];
    let canary = Servers::of(canary_tasks.iter());
    let stable = Servers::of(std::iter::empty());
    let sample = |rows: &[(u64, u64)]| Sample {
        rows: rows
            .iter()
            .map(|&(responses, errors)| ServerRow {
                source: 0,
                proxy: PROXY.into(),
                server: "127_0_0_1_31001".into(),
                addr: None,
                counters: Counters { responses, errors },
            })
            .collect(),
    };
    // Step 1's traffic is in the base: 1000 responses.
    let mut w = Window::open(0, &sample(&[(1000, 3)]), &canary, &stable);
    w.observe(&sample(&[]), &canary, &stable);
    w.observe(&sample(&[(1010, 3)]), &canary, &stable);
    assert_eq!(
        w.canary,
        Counters {
            responses: 10,
            errors: 0
        }
    );
    // A reset (a reload) while it was missing still counts from zero.
    w.observe(&sample(&[]), &canary, &stable);
    w.observe(&sample(&[(4, 1)]), &canary, &stable);
    assert_eq!(
        w.canary,
        Counters {
            responses: 14,
            errors: 1
        }
    );
}

/// `eresp` counts as failed responses in http mode only: a tcp-mode server (a second port of
/// the app, say a database protocol) has no responses to fail, and its aborted connections
/// must not weigh against the http traffic the rate is about.
#[test]
fn failed_responses_count_in_http_mode_only() {
    let csv = b"# pxname,svname,eresp,hrsp_1xx,hrsp_2xx,hrsp_5xx,type,\n\
shop_db_10101,127_0_0_1_31001,5,,,,2,\n\
shop_api_10100,127_0_0_1_31000,5,0,10,0,2,\n";
    let rows = haproxy::parse_csv(0, csv).unwrap();
    let by_proxy = |p: &str| rows.iter().find(|r| r.proxy == p).unwrap().counters;
    assert_eq!(by_proxy("shop_db_10101"), Counters::default());
    assert_eq!(
        by_proxy("shop_api_10100"),
        Counters {
            responses: 15,
            errors: 5
        }
    );
}
