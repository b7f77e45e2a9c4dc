//! Support for the end-to-end tests: locating the built binaries, temp repos.
//!
//! Test-only code: a failed setup step should stop the test loudly, so `expect` is allowed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod daemon;
pub mod devsched;
pub mod freeze;
pub mod githttp;
pub mod load;
pub mod mlb;
pub mod process;
pub mod zookeeper;

/// The OpenBao harness (a crate of its own, shared with the sidecar's tests).
pub use openbao_harness as openbao;

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared` beside the project (reference data and tools that are never copied into it). It
/// may be absent: tests that read it skip with a printed reason.
pub fn shared_dir() -> std::path::PathBuf {
    repo_root().join("../shared")
}

/// The body of `GET url` as text (a daemon's `/metrics`, a page). Panics when the request fails:
/// every caller expects the server to be up.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("GET");
    response.text().await.expect("GET: body")
}

/// Replace the file at `path` with `text` in one step, as editors save: written to a temp file
/// (in the temp dir, where the tests' repos live too) and renamed over `path`. A watcher of the
/// repo never sees the file empty or half written, however long the writing thread stalls.
pub fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), text).expect("write temp file");
    tmp.persist(path).expect("rename over the file");
}

/// A binary of this workspace built next to the test executable (`target/<profile>/<name>`),
/// e.g. `baton-env` (build it first: `cargo build -p baton-sidecar`). `None` when absent.
pub fn workspace_bin(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe.parent()?.parent()?.join(name);
    path.is_file().then_some(path)
}

/// Validate `doc` against `schemas/<name>` (all schemas registered by `$id`, as they refer to
/// each other), failing with every error.
pub fn assert_matches_schema(name: &str, doc: &serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut builder = jsonschema::Registry::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let schema = read(&entry.unwrap().path());
        if let Some(id) = schema
            .get("$id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
        {
            builder = builder.add(id, schema).unwrap();
        }
    }
    let registry = builder.prepare().unwrap();
    let validator = jsonschema::options()
        .with_registry(&registry)
        .build(&read(&dir.join(name)))
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{doc:#}");
}

/// `baton serve` settings for a test: `repo` (a directory, local git repo or URL) synced to
/// the scheduler at `marathon`, state under `state`, listening at `listen`, polling only
/// hourly (cycles come from the test's triggers), webhook secret `e2e-secret`, no Vault, no
/// notifications. Tests change what they need with struct update syntax.
pub fn serve_config(
    repo: impl Into<String>,
    marathon: impl Into<String>,
    state: &std::path::Path,
    listen: std::net::SocketAddr,
) -> baton::config::ServeConfig {
    baton::config::ServeConfig {
        repo: repo.into(),
        reference: "main".into(),
        cache_dir: state.join("cache"),
        state_dir: state.to_path_buf(),
        listen,
        marathon: baton_marathon::marathon::MarathonConfig::new(marathon),
        sync: baton::daemon::reconcile::SyncMode::Auto,
        poll_interval: std::time::Duration::from_secs(3600),
        webhook_secret: Some(secrecy::SecretString::from("e2e-secret".to_string())),
        api_token: None,
        allow_deletes: None,
        git_auth: None,
        vault: None,
        notify: Vec::new(),
        haproxy_stats: Vec::new(),
        allow_check_commands: false,
        rollout_tick: std::time::Duration::from_secs(5),
        auth_proxy_header: None,
        environment: None,
        ha: None,
    }
}

/// Polls `check` until it is true; panics naming `what` after `limit`. For conditions with no
/// event to wait on (a counter in `/metrics`, a token gone from Vault).
pub async fn wait_until<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
