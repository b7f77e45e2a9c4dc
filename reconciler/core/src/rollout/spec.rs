//! The `baton.rollout` block of a spec: parse and validate (the JSON Schema has checked names
//! and types), defaults. Errors are `(JSON pointer, message)`, like the rest of `spec::load`.
//!
//! Two halves: [`parse`] reads the block alone (steps in order, strategy, analysis); [`check_app`]
//! checks what the block needs of the app around it (marathon-lb's labels, http mode, a fixed
//! service port) and warns when the traffic shares cannot be met with the app's instance count.
//!
//! Defaults (`rollout: {}`): canary, steps `[traffic 10 pause 1m, traffic 50 pause 1m]`,
//! analysis `maxErrorRate 0.01, minRequests 20`, blueGreen grace 5m, an http check expects 200,
//! a command check times out after 1m.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Analysis, Check, Rollout, Step, Strategy};
use crate::spec::load::parse_duration;
use crate::spec::parse::escape_token;
use crate::spec::Severity;

/// Where the block sits in a spec.
pub const POINTER: &str = "/baton/rollout";
/// A traffic step's pause when it names none.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(60);
/// The canary steps of `rollout: {}`.
pub const DEFAULT_STEPS: [u8; 2] = [10, 50];
/// blueGreen: how long the old version is kept after the switch, when `grace` is not given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// A command check's time limit when it names none, and the most it may name.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(600);
/// An http check's expected status when it names none.
pub const DEFAULT_EXPECT: u16 = 200;
/// How far (in percentage points) the share marathon-lb can give may be from a step's percent
/// before validation warns.
pub const SHARE_TOLERANCE: f64 = 5.0;

/// marathon-lb's labels of its deployment-group mechanism that Baton writes itself (the group,
/// on the stable and the canary) or must never see (the rest: `zdd.py`'s, whose
/// `NEW_INSTANCES` branch swaps old and new by scaling time). A spec setting one would fight
/// the rollout.
pub const RESERVED_LABELS: [&str; 5] = [
    "HAPROXY_DEPLOYMENT_STARTED_AT",
    "HAPROXY_DEPLOYMENT_NEW_INSTANCES",
    "HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
    "HAPROXY_DEPLOYMENT_COLOUR",
    "HAPROXY_DEPLOYMENT_ALT_PORT",
];

type Error = (String, String);

/// Parse a `baton.rollout` value. Pointers in errors are full (`/baton/rollout/steps/1`).
pub fn parse(v: &Value) -> Result<Rollout, Error> {
    let err = |pointer: String, message: &str| Err((pointer, message.to_string()));
    let Some(block) = v.as_object() else {
        return err(POINTER.into(), "expected a mapping");
    };
    let strategy = match block.get("strategy").map(|s| s.as_str()) {
        None | Some(Some("canary")) => Strategy::Canary,
        Some(Some("blueGreen")) => Strategy::BlueGreen,
        Some(_) => {
            return err(
                format!("{POINTER}/strategy"),
                "expected `canary` or `blueGreen`",
            )
        }
    };
    let analysis = analysis(block.get("analysis"))?;
    let grace = match block.get("grace") {
        None => DEFAULT_GRACE,
        Some(_) if strategy == Strategy::Canary => {
            return err(
                format!("{POINTER}/grace"),
                "`grace` is for `strategy: blueGreen` (how long the old version is kept after the switch); a canary's last step's `pause` plays that part",
            )
        }
        Some(g) => duration(g, &format!("{POINTER}/grace"))?,
    };
    let mut steps = Vec::new();
    match block.get("steps") {
        None if strategy == Strategy::Canary => {
            steps.extend(DEFAULT_STEPS.iter().map(|&percent| Step::Traffic {
                percent,
                pause: DEFAULT_PAUSE,
            }));
        }
        None => {}
        Some(list) => {
            let Some(list) = list.as_array() else {
                return err(format!("{POINTER}/steps"), "expected a list of steps");
            };
            if list.is_empty() && strategy == Strategy::Canary {
                return err(
                    format!("{POINTER}/steps"),
                    "a canary needs at least one step: leave `steps` out for the defaults (10%, then 50%), or use `strategy: blueGreen`",
                );
            }
            for (i, raw) in list.iter().enumerate() {
                steps.push(step(raw, i)?);
            }
        }
    }
    check_order(strategy, &steps)?;
    if strategy == Strategy::BlueGreen {
        // blueGreen as steps: the check (if any), then everything at once for `grace`.
        steps.push(Step::Traffic {
            percent: 100,
            pause: grace,
        });
    }
    Ok(Rollout {
        strategy,
        steps,
        analysis,
        grace,
    })
}

/// The order rules: `isolated` first if at all; canary shares strictly increasing and below
/// 100 (full production follows the last step); blueGreen has no traffic steps.
fn check_order(strategy: Strategy, steps: &[Step]) -> Result<(), Error> {
    let at = |i: usize| format!("{POINTER}/steps/{i}");
    let mut last = 0u8;
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Isolated(_) if i > 0 => {
                return Err((
                    at(i),
                    "`isolated` must be the first step: the new version is checked before it gets any traffic".into(),
                ))
            }
            Step::Isolated(_) => {}
            Step::Traffic { .. } if strategy == Strategy::BlueGreen => {
                return Err((
                    format!("{}/traffic", at(i)),
                    "blueGreen switches all traffic at once: its only step is an optional `isolated` check (use `strategy: canary` for traffic steps)".into(),
                ))
            }
            Step::Traffic { percent, .. } if *percent >= 100 => {
                return Err((
                    format!("{}/traffic", at(i)),
                    "a canary step takes less than 100%: full production always follows the last step".into(),
                ))
            }
            Step::Traffic { percent, .. } if *percent <= last => {
                return Err((
                    format!("{}/traffic", at(i)),
                    format!("traffic shares must increase step by step: {percent}% follows {last}%"),
                ))
            }
            Step::Traffic { percent, .. } => last = *percent,
        }
    }
    Ok(())
}

fn step(raw: &Value, i: usize) -> Result<Step, Error> {
    let at = format!("{POINTER}/steps/{i}");
    let Some(m) = raw.as_object() else {
        return Err((at, "expected a mapping".into()));
    };
    match (m.get("isolated"), m.get("traffic")) {
        (Some(_), Some(_)) => Err((
            at,
            "a step is either `isolated` or `traffic`, not both".into(),
        )),
        (Some(iso), None) => {
            if m.contains_key("pause") {
                return Err((
                    format!("{at}/pause"),
                    "`pause` belongs to a `traffic` step; an `isolated` step lasts until its check passes".into(),
                ));
            }
            let check_at = format!("{at}/isolated/check");
            let Some(c) = iso.get("check") else {
                return Err((
                    format!("{at}/isolated"),
                    "an `isolated` step needs a `check` (`{http: /health, expect: 200}` or `{command: ./smoke.sh}`)".into(),
                ));
            };
            Ok(Step::Isolated(check(c, &check_at)?))
        }
        (None, Some(t)) => {
            let percent = t
                .as_u64()
                .filter(|p| (1..=100).contains(p))
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| {
                    (
                        format!("{at}/traffic"),
                        "expected a percent from 1 to 100".to_string(),
                    )
                })?;
            let pause = match m.get("pause") {
                None => DEFAULT_PAUSE,
                Some(p) => duration(p, &format!("{at}/pause"))?,
            };
            Ok(Step::Traffic { percent, pause })
        }
        (None, None) => Err((
            at,
            "a step is `isolated: {check: ...}` or `traffic: <percent>` (with an optional `pause`)"
                .into(),
        )),
    }
}

fn check(c: &Value, at: &str) -> Result<Check, Error> {
    let Some(m) = c.as_object() else {
        return Err((at.to_string(), "expected a mapping".into()));
    };
    let field = |k: &str| format!("{at}/{k}");
    match (m.get("http"), m.get("command")) {
        (Some(_), Some(_)) => Err((
            at.to_string(),
            "a check is `http` or `command`, not both".into(),
        )),
        (Some(path), None) => {
            if m.contains_key("timeout") {
                return Err((
                    field("timeout"),
                    "`timeout` belongs to a `command` check (an http check has a fixed 5s)".into(),
                ));
            }
            let path = path
                .as_str()
                .filter(|p| p.starts_with('/'))
                .ok_or_else(|| (field("http"), "expected a path starting with `/`".to_string()))?;
            if path.chars().any(char::is_control) {
                return Err((field("http"), "the path has control characters".into()));
            }
            let expect = match m.get("expect") {
                None => DEFAULT_EXPECT,
                Some(e) => e
                    .as_u64()
                    .filter(|s| (100..=599).contains(s))
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| {
                        (
                            field("expect"),
                            "expected an HTTP status from 100 to 599".to_string(),
                        )
                    })?,
            };
            Ok(Check::Http {
                path: path.to_string(),
                expect,
            })
        }
        (None, Some(cmd)) => {
            if m.contains_key("expect") {
                return Err((
                    field("expect"),
                    "`expect` belongs to an `http` check (a command passes by exiting 0)".into(),
                ));
            }
            let cmd = cmd
                .as_str()
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| (field("command"), "expected a shell command".to_string()))?;
            let timeout = match m.get("timeout") {
                None => DEFAULT_CHECK_TIMEOUT,
                Some(t) => duration(t, &field("timeout"))?,
            };
            if timeout.is_zero() || timeout > MAX_CHECK_TIMEOUT {
                return Err((
                    field("timeout"),
                    format!(
                        "expected more than 0s and at most {}m",
                        MAX_CHECK_TIMEOUT.as_secs() / 60
                    ),
                ));
            }
            Ok(Check::Command {
                cmd: cmd.to_string(),
                timeout,
            })
        }
        (None, None) => Err((
            at.to_string(),
            "a check is `{http: <path>, expect: <status>}` or `{command: <shell command>, timeout: <duration>}`".into(),
        )),
    }
}

fn analysis(v: Option<&Value>) -> Result<Analysis, Error> {
    let mut a = Analysis::default();
    let Some(v) = v else { return Ok(a) };
    let at = format!("{POINTER}/analysis");
    let Some(m) = v.as_object() else {
        return Err((at, "expected a mapping".into()));
    };
    if let Some(r) = m.get("maxErrorRate") {
        a.max_error_rate = r
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                (
                    format!("{at}/maxErrorRate"),
                    "expected a share from 0 to 1 (0.01 is 1%)".to_string(),
                )
            })?;
    }
    if let Some(n) = m.get("minRequests") {
        a.min_requests = n.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            (
                format!("{at}/minRequests"),
                "expected a whole number of at least 1".to_string(),
            )
        })?;
    }
    Ok(a)
}

fn duration(v: &Value, at: &str) -> Result<Duration, Error> {
    v.as_str()
        .ok_or_else(|| "expected a duration like `90s`, `10m` or `1h30m`".to_string())
        .and_then(parse_duration)
        .map_err(|m| (at.to_string(), m))
}

/// A finding of [`check_app`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub pointer: String,
    pub message: String,
}

/// What a rollout needs of the app around it, checked on the app's definition (the repo's
/// defaults merged in, `baton:` removed, before Baton injects its group label): `raw` is the
/// `baton.rollout` value as written, for pointers into its steps.
///
/// Errors: a label of [`RESERVED_LABELS`] (or a `HAPROXY_DEPLOYMENT_GROUP` other than the app's
/// id); no `HAPROXY_GROUP` (marathon-lb would expose neither version); not marathon-lb's http
/// mode (HAProxy counts responses by status only there); service port 0 without
/// `HAPROXY_0_PORT` (Marathon would pick a new port on every update). Warning: a traffic share
/// that `instances` cannot come within [`SHARE_TOLERANCE`] points of.
pub fn check_app(rollout: &Rollout, raw: &Value, app: &Value, id: &str) -> Vec<Problem> {
    // Judged on the form Marathon stores, which is what marathon-lb reads (a health check's
    // default protocol and port index, `ports` as `portDefinitions`, one port 0 by default).
    let written = app;
    let mut stored = app.clone();
    crate::spec::canonical::marathon_form(&mut stored);
    let app = &stored;
    let mut out = Vec::new();
    let mut error = |pointer: String, message: String| {
        out.push(Problem {
            severity: Severity::Error,
            pointer,
            message,
        })
    };
    let empty = Map::new();
    let labels = app
        .get("labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let label_at = |k: &str| format!("/labels/{}", escape_token(k));
    for k in RESERVED_LABELS {
        if labels.contains_key(k) {
            error(
                label_at(k),
                format!("`{k}` is marathon-lb's deployment bookkeeping, which Baton's rollout does itself; remove the label"),
            );
        }
    }
    if let Some(g) = label(super::DEPLOYMENT_GROUP).filter(|g| *g != id) {
        let shown: String = g.chars().take(60).collect();
        error(
            label_at(super::DEPLOYMENT_GROUP),
            format!("`{}` is set by Baton to the app id (`{id}`) for a rollout, not `{shown}`; remove the label", super::DEPLOYMENT_GROUP),
        );
    }
    if label("HAPROXY_GROUP").is_none() && label("HAPROXY_0_GROUP").is_none() {
        error(
            POINTER.into(),
            "a rollout needs marathon-lb in front of the app: set the label `HAPROXY_GROUP` (e.g. `external`)".into(),
        );
    }
    if !http_mode(app, labels) {
        error(
            POINTER.into(),
            "a rollout is judged by HAProxy's http status counts, which marathon-lb only keeps in http mode: give port 0 a health check with `protocol: HTTP`, or set the label `HAPROXY_0_MODE: http`".into(),
        );
    }
    match service_port(app) {
        ServicePort::Fixed => {}
        _ if label("HAPROXY_0_PORT").is_some() => {}
        ServicePort::None => error(
            POINTER.into(),
            "a rollout shares the app's service port through marathon-lb, and the app has no port: add `portDefinitions` (or `portMappings`)".into(),
        ),
        ServicePort::Assigned(pointer) => error(
            // A field the spec leaves to Marathon's defaults has no line: point at the block.
            if written.pointer(&pointer).is_some() {
                pointer
            } else {
                POINTER.into()
            },
            "a rollout needs a fixed service port (with 0 Marathon picks one, and may pick another on the update that ends the rollout): set it, or set the label `HAPROXY_0_PORT`".into(),
        ),
    }
    if rollout.strategy == Strategy::Canary {
        share_warnings(rollout, raw, app, &mut out);
    }
    out
}

/// Warn about each traffic step whose share cannot be met: marathon-lb disables one stable
/// server per healthy canary task, so with S instances the canary's share is a multiple of 1/S.
fn share_warnings(rollout: &Rollout, raw: &Value, app: &Value, out: &mut Vec<Problem>) {
    // `instances` absent: Marathon's default, 1. Not a number (an autoscaler's field under
    // `baton.ignore` may still be written): nothing to say.
    let s = match app.get("instances") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(s) if s > 0 => s,
            _ => return,
        },
    };
    let written = raw.get("steps").is_some();
    for (i, step) in rollout.steps.iter().enumerate() {
        let Step::Traffic { percent, .. } = step else {
            continue;
        };
        let (c, share) = achievable_share(*percent, s);
        if (share - f64::from(*percent)).abs() > SHARE_TOLERANCE {
            out.push(Problem {
                severity: Severity::Warning,
                pointer: if written {
                    format!("{POINTER}/steps/{i}/traffic")
                } else {
                    POINTER.into()
                },
                message: format!(
                    "with {s} instance{} the {percent}% step gives the new version {share:.0}% ({c} of {s}): marathon-lb splits traffic by instance count; more instances make finer steps",
                    if s == 1 { "" } else { "s" }
                ),
            });
        }
    }
}

/// The canary size for `percent` of `s` stable instances, `clamp(round(p·S/100), 1, S)`, and
/// the share (in percent) it gets.
pub fn achievable_share(percent: u8, s: u64) -> (u64, f64) {
    if s == 0 {
        return (0, 0.0);
    }
    let c = ((f64::from(percent) * s as f64 / 100.0).round() as u64).clamp(1, s);
    (c, c as f64 * 100.0 / s as f64)
}

/// marathon-lb's mode of service port 0, as its `MarathonService` and config decide it from the
/// stored app: `http` when the health check of port 0 (the first with a `port`, or `portIndex`
/// 0) has protocol `HTTP` (only that one: `MESOS_HTTP` does not count there); `HAPROXY_0_MODE`
/// overrides; with neither, a `HAPROXY_0_VHOST` makes it http; otherwise tcp.
fn http_mode(app: &Value, labels: &Map<String, Value>) -> bool {
    let check = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter().find(|c| {
                c.get("port").and_then(Value::as_u64).is_some_and(|p| p > 0)
                    || c.get("portIndex").and_then(Value::as_u64) == Some(0)
            })
        });
    let mut mode = check
        .and_then(|c| c.get("protocol"))
        .and_then(Value::as_str)
        .filter(|p| *p == "HTTP")
        .map(|_| "http".to_string());
    if let Some(m) = labels.get("HAPROXY_0_MODE").and_then(Value::as_str) {
        mode = Some(m.to_ascii_lowercase());
    }
    match mode {
        Some(m) => m == "http",
        None => labels.contains_key("HAPROXY_0_VHOST"),
    }
}

enum ServicePort {
    /// A non-zero service port.
    Fixed,
    /// 0 (or left out): Marathon assigns one; the pointer of the field (or of the block).
    Assigned(String),
    /// No port at all.
    None,
}

/// The stored app's first service port: `container.portMappings[0].servicePort` when there are
/// port mappings, else `portDefinitions[0].port`.
fn service_port(app: &Value) -> ServicePort {
    let judge = |v: Option<&Value>, pointer: &str| match v.and_then(Value::as_u64) {
        Some(p) if p > 0 => ServicePort::Fixed,
        Some(_) => ServicePort::Assigned(pointer.to_string()),
        None => ServicePort::Assigned(POINTER.to_string()),
    };
    if let Some(first) = app
        .pointer("/container/portMappings")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
    {
        return judge(
            first.get("servicePort"),
            "/container/portMappings/0/servicePort",
        );
    }
    match app.get("portDefinitions").and_then(Value::as_array) {
        None => ServicePort::None,
        Some(list) => match list.first() {
            None => ServicePort::None,
            Some(first) => judge(first.get("port"), "/portDefinitions/0/port"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_empty_block_takes_every_default() {
        let r = parse(&json!({})).unwrap();
        assert_eq!(r.strategy, Strategy::Canary);
        assert_eq!(
            r.steps,
            vec![
                Step::Traffic {
                    percent: 10,
                    pause: secs(60)
                },
                Step::Traffic {
                    percent: 50,
                    pause: secs(60)
                }
            ]
        );
        assert_eq!(r.analysis, Analysis::default());
        assert_eq!(r.grace, DEFAULT_GRACE);
    }

    #[test]
    fn the_issues_example_parses() {
        let r = parse(&json!({
            "strategy": "canary",
            "steps": [
                {"isolated": {"check": {"http": "/health", "expect": 200}}},
                {"traffic": 10, "pause": "1m"},
                {"traffic": 50, "pause": "90s"}
            ],
            "analysis": {"maxErrorRate": 0.05, "minRequests": 30}
        }))
        .unwrap();
        assert_eq!(
            r.steps,
            vec![
                Step::Isolated(Check::Http {
                    path: "/health".into(),
                    expect: 200
                }),
                Step::Traffic {
                    percent: 10,
                    pause: secs(60)
                },
                Step::Traffic {
                    percent: 50,
                    pause: secs(90)
                }
            ]
        );
        assert_eq!(
            r.analysis,
            Analysis {
                max_error_rate: 0.05,
                min_requests: 30
            }
        );
    }

    #[test]
    fn blue_green_is_an_optional_check_then_everything_for_the_grace() {
        let r = parse(&json!({"strategy": "blueGreen"})).unwrap();
        assert_eq!(
            r,
            parse(&json!({"strategy": "blueGreen", "steps": []})).unwrap()
        );
        assert_eq!(
            r.steps,
            vec![Step::Traffic {
                percent: 100,
                pause: DEFAULT_GRACE
            }]
        );
        let r = parse(&json!({
            "strategy": "blueGreen",
            "grace": "10m",
            "steps": [{"isolated": {"check": {"command": "./smoke.sh", "timeout": "30s"}}}]
        }))
        .unwrap();
        assert_eq!(
            r.steps,
            vec![
                Step::Isolated(Check::Command {
                    cmd: "./smoke.sh".into(),
                    timeout: secs(30)
                }),
                Step::Traffic {
                    percent: 100,
                    pause: secs(600)
                }
            ]
        );
        assert_eq!(r.grace, secs(600));
    }

    #[test]
    fn defaults_inside_steps() {
        let r = parse(&json!({"steps": [
            {"isolated": {"check": {"http": "/ready"}}},
            {"traffic": 25}
        ]}))
        .unwrap();
        assert_eq!(
            r.steps,
            vec![
                Step::Isolated(Check::Http {
                    path: "/ready".into(),
                    expect: 200
                }),
                Step::Traffic {
                    percent: 25,
                    pause: DEFAULT_PAUSE
                }
            ]
        );
        let r = parse(&json!({"steps": [{"isolated": {"check": {"command": "true"}}}]})).unwrap();
        assert_eq!(
            r.steps,
            vec![Step::Isolated(Check::Command {
                cmd: "true".into(),
                timeout: DEFAULT_CHECK_TIMEOUT
            })]
        );
    }

    #[test]
    fn bad_blocks_are_refused_at_their_pointer() {
        let iso = json!({"isolated": {"check": {"http": "/health"}}});
        let rows = [
            (
                json!({"steps": [{"traffic": 10}, iso.clone()]}),
                "/baton/rollout/steps/1",
                "must be the first step",
            ),
            (
                json!({"steps": [iso.clone(), iso.clone()]}),
                "/baton/rollout/steps/1",
                "must be the first step",
            ),
            (
                json!({"steps": [{"traffic": 50}, {"traffic": 10}]}),
                "/baton/rollout/steps/1/traffic",
                "10% follows 50%",
            ),
            (
                json!({"steps": [{"traffic": 10}, {"traffic": 10}]}),
                "/baton/rollout/steps/1/traffic",
                "must increase",
            ),
            (
                json!({"steps": [{"traffic": 10}, {"traffic": 100}]}),
                "/baton/rollout/steps/1/traffic",
                "less than 100%",
            ),
            (
                json!({"strategy": "blueGreen", "steps": [{"traffic": 10}]}),
                "/baton/rollout/steps/0/traffic",
                "blueGreen switches all traffic at once",
            ),
            (
                json!({"steps": []}),
                "/baton/rollout/steps",
                "at least one step",
            ),
            (
                json!({"grace": "1m"}),
                "/baton/rollout/grace",
                "is for `strategy: blueGreen`",
            ),
            (
                json!({"steps": [{"traffic": 10, "isolated": {"check": {"http": "/"}}}]}),
                "/baton/rollout/steps/0",
                "not both",
            ),
            (
                json!({"steps": [{}]}),
                "/baton/rollout/steps/0",
                "a step is",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"http": "/"}}, "pause": "1m"}]}),
                "/baton/rollout/steps/0/pause",
                "belongs to a `traffic` step",
            ),
            (
                json!({"steps": [{"isolated": {}}]}),
                "/baton/rollout/steps/0/isolated",
                "needs a `check`",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"http": "/", "command": "x"}}}]}),
                "/baton/rollout/steps/0/isolated/check",
                "not both",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"command": "x", "timeout": "11m"}}}]}),
                "/baton/rollout/steps/0/isolated/check/timeout",
                "at most 10m",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"command": "x", "timeout": "0s"}}}]}),
                "/baton/rollout/steps/0/isolated/check/timeout",
                "more than 0s",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"command": "x", "expect": 200}}}]}),
                "/baton/rollout/steps/0/isolated/check/expect",
                "belongs to an `http` check",
            ),
            (
                json!({"steps": [{"isolated": {"check": {"http": "/", "timeout": "1s"}}}]}),
                "/baton/rollout/steps/0/isolated/check/timeout",
                "belongs to a `command` check",
            ),
            (
                json!({"steps": [{"traffic": 10, "pause": "soon"}]}),
                "/baton/rollout/steps/0/pause",
                "is not a duration",
            ),
            (
                json!({"analysis": {"maxErrorRate": 2}}),
                "/baton/rollout/analysis/maxErrorRate",
                "from 0 to 1",
            ),
            (
                json!({"analysis": {"minRequests": 0}}),
                "/baton/rollout/analysis/minRequests",
                "at least 1",
            ),
            (
                json!({"strategy": "linear"}),
                "/baton/rollout/strategy",
                "`canary` or `blueGreen`",
            ),
        ];
        for (block, pointer, words) in rows {
            let (p, m) = parse(&block).expect_err(&block.to_string());
            assert_eq!(p, pointer, "{block}: {m}");
            assert!(m.contains(words), "{block}: {m}");
        }
    }

    /// An app marathon-lb can roll out: in a group, http mode, a fixed service port.
    fn good_app() -> Value {
        json!({
            "id": "/shop/api",
            "instances": 10,
            "labels": {"HAPROXY_GROUP": "external"},
            "portDefinitions": [{"port": 10100}],
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0}]
        })
    }

    fn problems(app: &Value, raw: &Value) -> Vec<(Severity, String, String)> {
        let r = parse(raw).unwrap();
        check_app(&r, raw, app, "/shop/api")
            .into_iter()
            .map(|p| (p.severity, p.pointer, p.message))
            .collect()
    }

    fn with(pointer: &str, value: Value) -> Value {
        let mut app = good_app();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        app.pointer_mut(parent).unwrap()[key] = value;
        app
    }

    #[test]
    fn a_good_app_has_no_problems() {
        assert_eq!(problems(&good_app(), &json!({})), vec![]);
        // The other ways to http mode and a fixed port.
        let mut app = good_app();
        app["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/"}]);
        app["labels"]["HAPROXY_0_MODE"] = json!("HTTP");
        app["portDefinitions"] = json!([{"port": 0}]);
        app["labels"]["HAPROXY_0_PORT"] = json!("10100");
        app["labels"]["HAPROXY_DEPLOYMENT_GROUP"] = json!("/shop/api");
        assert_eq!(problems(&app, &json!({})), vec![]);
        // Marathon's defaults: a check without protocol is HTTP on port index 0; `ports` is
        // the old form of `portDefinitions`.
        let mut app = good_app();
        app["healthChecks"] = json!([{"path": "/health"}]);
        app.as_object_mut().unwrap().remove("portDefinitions");
        app["ports"] = json!([10100]);
        assert_eq!(problems(&app, &json!({})), vec![]);
        // marathon-lb takes the first check of port 0; a COMMAND check has no port.
        let mut app = good_app();
        app["healthChecks"] = json!([
            {"protocol": "COMMAND", "command": {"value": "true"}},
            {"protocol": "HTTP", "path": "/health"}
        ]);
        assert_eq!(problems(&app, &json!({})), vec![]);
        let mut app = good_app();
        app.as_object_mut().unwrap().remove("healthChecks");
        app["labels"]["HAPROXY_0_VHOST"] = json!("shop.example.com");
        app.as_object_mut().unwrap().remove("portDefinitions");
        app["container"] = json!({"portMappings": [{"containerPort": 80, "servicePort": 10100}]});
        assert_eq!(problems(&app, &json!({})), vec![]);
    }

    #[test]
    fn what_marathon_lb_needs_is_checked() {
        let e = Severity::Error;
        let rows: Vec<(&str, Value, &str, &str)> = vec![
            (
                "a user-set STARTED_AT",
                with(
                    "/labels/HAPROXY_DEPLOYMENT_STARTED_AT",
                    json!("2020-01-01T00:00:00"),
                ),
                "/labels/HAPROXY_DEPLOYMENT_STARTED_AT",
                "remove the label",
            ),
            (
                "zdd's colour",
                with("/labels/HAPROXY_DEPLOYMENT_COLOUR", json!("blue")),
                "/labels/HAPROXY_DEPLOYMENT_COLOUR",
                "remove the label",
            ),
            (
                "zdd's alt port",
                with("/labels/HAPROXY_DEPLOYMENT_ALT_PORT", json!("10101")),
                "/labels/HAPROXY_DEPLOYMENT_ALT_PORT",
                "remove the label",
            ),
            (
                "new instances",
                with("/labels/HAPROXY_DEPLOYMENT_NEW_INSTANCES", json!("1")),
                "/labels/HAPROXY_DEPLOYMENT_NEW_INSTANCES",
                "remove the label",
            ),
            (
                "target instances",
                with("/labels/HAPROXY_DEPLOYMENT_TARGET_INSTANCES", json!("1")),
                "/labels/HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
                "remove the label",
            ),
            (
                "another group",
                with("/labels/HAPROXY_DEPLOYMENT_GROUP", json!("shop")),
                "/labels/HAPROXY_DEPLOYMENT_GROUP",
                "set by Baton to the app id",
            ),
            (
                "no HAPROXY_GROUP",
                with("/labels", json!({})),
                "/baton/rollout",
                "`HAPROXY_GROUP`",
            ),
            (
                "tcp mode",
                with(
                    "/healthChecks",
                    json!([{"protocol": "TCP", "portIndex": 0}]),
                ),
                "/baton/rollout",
                "http mode",
            ),
            (
                "MESOS_HTTP alone is tcp to marathon-lb",
                with(
                    "/healthChecks",
                    json!([{"protocol": "MESOS_HTTP", "path": "/"}]),
                ),
                "/baton/rollout",
                "http mode",
            ),
            (
                "a COMMAND check first, then nothing for port 0",
                with(
                    "/healthChecks",
                    json!([{"protocol": "COMMAND", "command": {"value": "true"}}]),
                ),
                "/baton/rollout",
                "http mode",
            ),
            (
                "an HTTP check of another port",
                with(
                    "/healthChecks",
                    json!([{"protocol": "HTTP", "path": "/", "portIndex": 1}]),
                ),
                "/baton/rollout",
                "http mode",
            ),
            (
                "HAPROXY_0_MODE tcp wins",
                with("/labels/HAPROXY_0_MODE", json!("tcp")),
                "/baton/rollout",
                "http mode",
            ),
            (
                "service port 0",
                with("/portDefinitions", json!([{"port": 0}])),
                "/portDefinitions/0/port",
                "fixed service port",
            ),
            (
                "no portDefinitions: Marathon's port 0",
                {
                    let mut a = good_app();
                    a.as_object_mut().unwrap().remove("portDefinitions");
                    a
                },
                "/baton/rollout",
                "fixed service port",
            ),
            (
                "no ports at all",
                with("/portDefinitions", json!([])),
                "/baton/rollout",
                "has no port",
            ),
        ];
        for (what, app, pointer, words) in rows {
            let got = problems(&app, &json!({}));
            assert!(
                got.iter()
                    .any(|(s, p, m)| *s == e && p == pointer && m.contains(words)),
                "{what}: {got:?}"
            );
            assert!(
                got.iter().all(|(s, _, _)| *s == e),
                "{what}: errors only: {got:?}"
            );
        }
    }

    #[test]
    fn shares_instances_cannot_give_are_warned_about() {
        let warnings = |instances: Value, raw: Value| -> Vec<(String, String)> {
            problems(&with("/instances", instances), &raw)
                .into_iter()
                .filter(|(s, _, _)| *s == Severity::Warning)
                .map(|(_, p, m)| (p, m))
                .collect()
        };
        // 10 instances: 10% and 50% exact.
        assert_eq!(warnings(json!(10), json!({})), vec![]);
        // 3 instances: 10% is 33% (warned), 50% is 67% (warned: 17 points off).
        let w = warnings(
            json!(3),
            json!({"steps": [{"traffic": 10}, {"traffic": 50}]}),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, "/baton/rollout/steps/0/traffic");
        assert!(
            w[0].1
                .contains("with 3 instances the 10% step gives the new version 33% (1 of 3)"),
            "{w:?}"
        );
        // Defaults: the pointer is the block's.
        let w = warnings(json!(1), json!({}));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|(p, _)| p == "/baton/rollout"), "{w:?}");
        // 20 instances, 12%: round(2.4) = 2 -> 10%, within 5 points.
        assert_eq!(
            warnings(json!(20), json!({"steps": [{"traffic": 12}]})),
            vec![]
        );
        // blueGreen is always 100%: nothing to warn about.
        assert_eq!(warnings(json!(3), json!({"strategy": "blueGreen"})), vec![]);
    }

    #[test]
    fn achievable_share_is_clamped_to_one_canary_task_and_the_stables_size() {
        assert_eq!(achievable_share(10, 10), (1, 10.0));
        assert_eq!(achievable_share(50, 10), (5, 50.0));
        assert_eq!(achievable_share(10, 3), (1, 100.0 / 3.0));
        assert_eq!(achievable_share(1, 1), (1, 100.0));
        assert_eq!(achievable_share(99, 2), (2, 100.0));
        assert_eq!(achievable_share(10, 0), (0, 0.0));
    }
}
