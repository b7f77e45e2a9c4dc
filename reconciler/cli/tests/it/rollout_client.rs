//! `baton rollout` as a process against `baton serve`'s real router: the exit codes of the
//! contract (0 done, 1 refused, 4 token refused, 64 bad usage) and the token from the environment or a file.

use std::process::Command;

use baton::daemon::reconcile::{Shared, SyncMode};
use baton::daemon::server::{router, AppState, HookSettings};
use baton_core::cycle::state::State;
use baton_core::rollout::{Phase, RolloutState, Strategy};
use secrecy::SecretString;

fn rollout() -> RolloutState {
    RolloutState {
        commit: "c0ffee".into(),
        digest: "d".into(),
        strategy: Strategy::Canary,
        canary: "/shop/api-canary".into(),
        started_at: "2026-01-02T03:04:05.000000".into(),
        phase: Phase::Step { index: 0 },
        entered_ms: 0,
        window: None,
        analysis: None,
        timeline: Vec::new(),
    }
}

/// `baton rollout <args>` with a clean client environment; (exit code, stdout, stderr).
fn baton(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.arg("rollout").args(args);
    cmd.env_remove("BATON_API_TOKEN")
        .env_remove("BATON_API_TOKEN_FILE")
        .env_remove("BATON_SERVER");
    if let Some(t) = token {
        cmd.env("BATON_API_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rollout_client_exits_by_the_contract() {
    let (shared, _rx) = Shared::new("test".into(), SyncMode::Auto);
    let mut state = State::new();
    state.rollouts.insert("/shop/api".into(), rollout());
    shared.set_rollouts(&state);
    let app = router(
        AppState::new(shared.clone(), HookSettings::Off { reason: "off" })
            .with_api_token(Some(SecretString::from("tok".to_string()))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok\n").unwrap();
    let token_file = token_file.to_str().unwrap().to_string();

    let run = |args: Vec<String>, token: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            baton(&args, token)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // Refused without the token: 4 (as every client command), with the server's reason.
    let (code, _, err) = run(s(&["promote", "/shop/api", "--server", &server]), None)
        .await
        .unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // The token from a file: queued, 0.
    let (code, out, err) = run(
        s(&[
            "promote",
            "/shop/api",
            "--server",
            &server,
            "--api-token-file",
            &token_file,
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "promote of /shop/api queued: the next rollout tick acts on it"
        ),
        "{err}"
    );
    assert_eq!(
        shared.operators.take("/shop/api"),
        Some(baton_core::rollout::OperatorCommand::Promote)
    );
    // From the environment, JSON; no rollout of that app: 1.
    let (code, _, err) = run(
        s(&["abort", "/other", "--server", &server, "--output", "json"]),
        Some("tok"),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no rollout of /other"), "{err}");
    // A token file that cannot be read: bad usage, 64.
    let (code, _, err) = run(
        s(&[
            "abort",
            "/shop/api",
            "--server",
            &server,
            "--api-token-file",
            "/nonexistent/t",
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--api-token-file"), "{err}");
    // Status of an app the server does not list: 1.
    let (code, _, err) = run(s(&["status", "/shop/api", "--server", &server]), None)
        .await
        .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no app /shop/api"), "{err}");
}
