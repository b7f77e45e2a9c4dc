//! `baton rollout status|promote|abort <app>`: a client of a running `baton serve`
//! (`GET /api/status`, `POST /api/rollouts/<app>/promote|abort`).
//!
//! Exit codes (`baton::commands::exit`): 0 done (`status`: also when no rollout runs, which it
//! says), 1 refused or failed (no such app, no rollout to promote or abort, already finishing),
//! 4 the server unreachable or the token refused ([`crate::client`]), 64 bad usage. `--output json` prints the app's entry of
//! `/api/status` (`schemas/status.schema.json`, `$defs/app`) or the server's answer.

use std::io::Write;

use secrecy::SecretString;
use serde_json::Value;

use baton::commands::{exit, Format};
use baton_core::rollout::RolloutStatus;

pub use crate::client::ClientError;
use crate::client::{app_id, Server};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Status,
    Promote,
    Abort,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Status => "status",
            Verb::Promote => "promote",
            Verb::Abort => "abort",
        }
    }
}

/// Run `verb` for `app` against `server`; the exit code, or why it failed.
pub async fn run(
    verb: Verb,
    app: &str,
    server: &str,
    token: Option<&SecretString>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> Result<u8, ClientError> {
    let app = app_id(app);
    let server = Server::new(server, token.cloned())?;
    if verb != Verb::Status {
        let doc = server
            .post(&format!("/api/rollouts{app}/{}", verb.word()))
            .await?;
        match format {
            Format::Json => writeln!(out, "{doc}")?,
            Format::Text => writeln!(
                out,
                "{} of {app} queued: the next rollout tick acts on it",
                verb.word()
            )?,
        }
        return Ok(exit::OK);
    }
    let doc = server.status().await?;
    let entry = server.app_entry(&doc, &app)?;
    match format {
        Format::Json => writeln!(out, "{entry}")?,
        Format::Text => write!(out, "{}", status_text(&app, entry))?,
    }
    Ok(exit::OK)
}

/// The status of `app`'s rollout for people.
pub fn status_text(app: &str, entry: &Value) -> String {
    let mut s = String::new();
    let rollout = entry
        .get("rollout")
        .and_then(|r| serde_json::from_value::<RolloutStatus>(r.clone()).ok());
    match rollout {
        None => s.push_str(&format!("{app}: no rollout in progress\n")),
        Some(r) => {
            let step = r.step.map(|i| format!(" {i}")).unwrap_or_default();
            s.push_str(&format!(
                "{app}: rolling out commit {} ({:?})\n  phase: {}{step}, {:.1}% of the traffic on {}\n",
                r.commit, r.strategy, r.phase, r.traffic_percent, r.canary_app
            ));
            if let Some(w) = &r.window {
                let pct = |c: &baton_core::rollout::Counters| {
                    if c.responses == 0 {
                        "-".to_string()
                    } else {
                        format!("{:.2}%", 100.0 * c.errors as f64 / c.responses as f64)
                    }
                };
                s.push_str(&format!(
                    "  window: canary {} responses, {} 5xx ({}); stable {} responses, {} 5xx ({})\n",
                    w.canary.responses,
                    w.canary.errors,
                    pct(&w.canary),
                    w.stable.responses,
                    w.stable.errors,
                    pct(&w.stable)
                ));
            }
            if let Some(why) = &r.waiting_for {
                s.push_str(&format!("  waiting for: {why}\n"));
            }
            for t in &r.timeline {
                s.push_str(&format!(
                    "  {} {}\n",
                    baton_core::drift::rfc3339(t.at_ms),
                    t.event
                ));
            }
        }
    }
    if let Some(rb) = entry.get("rolledBack") {
        let commit = rb.get("commit").and_then(Value::as_str).unwrap_or("?");
        let summary = rb.get("summary").and_then(Value::as_str).unwrap_or("");
        s.push_str(&format!("  last rolled back: commit {commit}: {summary}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::daemon::reconcile::{Shared, SyncMode};
    use baton::daemon::server::{router, AppState, HookSettings};
    use baton_core::cycle::state::State;
    use baton_core::rollout::{Phase, RolloutState, Strategy, TimelineEntry};

    fn rollout(phase: Phase) -> RolloutState {
        RolloutState {
            commit: "c0ffee".into(),
            digest: "d".into(),
            strategy: Strategy::Canary,
            canary: "/shop/api-canary".into(),
            started_at: "2026-01-02T03:04:05.000000".into(),
            phase,
            entered_ms: 0,
            window: None,
            analysis: None,
            timeline: vec![TimelineEntry {
                at_ms: 0,
                event: "canary launched".into(),
            }],
        }
    }

    /// A `baton serve` HTTP API (the real router) with `/shop/api` rolling out at step 1.
    async fn server(token: &str) -> (String, std::sync::Arc<Shared>) {
        let (shared, _rx) = Shared::new("test".into(), SyncMode::Auto);
        let mut state = State::new();
        state
            .rollouts
            .insert("/shop/api".into(), rollout(Phase::Step { index: 1 }));
        shared.set_rollouts(&state);
        let status = serde_json::json!({
            "strategy": "canary", "commit": "c0ffee", "phase": "step", "step": 1,
            "trafficPercent": 10.0, "canaryApp": "/shop/api-canary",
            "window": {"sinceMs": 0, "last": {}, "canary": {"responses": 200, "errors": 3},
                       "stable": {"responses": 1800, "errors": 0}},
            "waitingFor": "the pause: 20s left",
            "timeline": [{"atMs": 0, "event": "canary launched"}],
        });
        {
            let mut st = shared.status.write().unwrap();
            st.apps.push(baton::daemon::reconcile::AppStatus {
                id: "/shop/api".into(),
                sync: "synced",
                health: "healthy",
                commit: Some("c0".into()),
                last_error: None,
                reason: None,
                deploying: None,
                rollout: Some(serde_json::from_value(status).unwrap()),
                rolled_back: None,
            });
        }
        let app = router(
            AppState::new(shared.clone(), HookSettings::Off { reason: "off" })
                .with_api_token(Some(SecretString::from(token.to_string()))),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), shared)
    }

    async fn call(
        verb: Verb,
        app: &str,
        server: &str,
        token: Option<&str>,
        f: Format,
    ) -> (Result<u8, ClientError>, String) {
        let token = token.map(|t| SecretString::from(t.to_string()));
        let mut out = Vec::new();
        let r = run(verb, app, server, token.as_ref(), f, &mut out).await;
        (r, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn status_shows_the_step_the_share_and_the_numbers() {
        let (url, _shared) = server("tok").await;
        let (r, text) = call(Verb::Status, "shop/api", &url, None, Format::Text).await;
        assert_eq!(r.unwrap(), exit::OK);
        assert!(text.contains("rolling out commit c0ffee"), "{text}");
        assert!(
            text.contains("phase: step 1, 10.0% of the traffic on /shop/api-canary"),
            "{text}"
        );
        assert!(
            text.contains("canary 200 responses, 3 5xx (1.50%)"),
            "{text}"
        );
        assert!(text.contains("canary launched"), "{text}");
        let (r, json) = call(Verb::Status, "/shop/api", &url, None, Format::Json).await;
        assert_eq!(r.unwrap(), exit::OK);
        let doc: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["rollout"]["step"], 1);
        // The app's entry of /api/status, as its schema says.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/status.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let app_schema = serde_json::json!({"$ref": "#/$defs/app", "$defs": schema["$defs"]});
        let validator = jsonschema::validator_for(&app_schema).unwrap();
        let problems: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(problems.is_empty(), "{problems:?}");
        let (r, _) = call(Verb::Status, "/nope", &url, None, Format::Text).await;
        assert!(matches!(r, Err(ClientError::NoApp { .. })), "{r:?}");
    }

    /// Promote and abort carry the token; without it, with a wrong one, for an app without a
    /// rollout: refused (exit 1 in the binary), with the server's reason.
    #[tokio::test]
    async fn promote_and_abort_need_the_token_and_a_rollout() {
        let (url, shared) = server("tok").await;
        let (r, _) = call(Verb::Promote, "/shop/api", &url, None, Format::Text).await;
        assert!(matches!(r, Err(ClientError::Unauthorized { .. })), "{r:?}");
        let (r, _) = call(Verb::Abort, "/shop/api", &url, Some("bad"), Format::Text).await;
        assert!(matches!(r, Err(ClientError::Unauthorized { .. })), "{r:?}");
        assert_eq!(shared.operators.take("/shop/api"), None);
        let (r, _) = call(Verb::Abort, "/other", &url, Some("tok"), Format::Text).await;
        match r {
            Err(ClientError::Refused {
                status: 404,
                message,
                ..
            }) => {
                assert!(message.contains("no rollout of /other"), "{message}")
            }
            r => panic!("{r:?}"),
        }
        let (r, text) = call(Verb::Promote, "shop/api", &url, Some("tok"), Format::Text).await;
        assert_eq!(r.unwrap(), exit::OK);
        assert!(text.contains("promote of /shop/api queued"), "{text}");
        assert_eq!(
            shared.operators.take("/shop/api"),
            Some(baton_core::rollout::OperatorCommand::Promote)
        );
        let (r, json) = call(Verb::Abort, "/shop/api", &url, Some("tok"), Format::Json).await;
        assert_eq!(r.unwrap(), exit::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["command"],
            "abort"
        );
        // Unreachable: an error naming the server without credentials.
        let (r, _) = call(
            Verb::Status,
            "/shop/api",
            "http://u:pw@127.0.0.1:1",
            None,
            Format::Text,
        )
        .await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("cannot reach baton serve at http://127.0.0.1:1"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
    }
}
