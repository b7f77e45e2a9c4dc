//! `baton drift` on fixtures: exit codes, and real JSON output against `schemas/drift.schema.json`.

use baton::commands::{self, DriftOptions, LiveFrom};
use baton_core::drift::{Attribution, Attributions, Ledger};
use baton_core::drift_report::DriftFormat;
use baton_core::report::Style;
use baton_core::spec::AppId;

use crate::support::{assert_matches_schema, fixture};

async fn run(
    format: DriftFormat,
    attributions: Attributions,
    state_dir: Option<std::path::PathBuf>,
) -> (u8, String) {
    let options = DriftOptions {
        format,
        state_dir,
        attributions,
        now: Some(1_795_000_000_000),
    };
    let mut out = Vec::new();
    let live = LiveFrom::File(fixture("plan/basic/live.json"));
    let code = commands::drift(
        &fixture("plan/basic"),
        &live,
        &options,
        Style { color: false },
        &mut out,
    )
    .await
    .unwrap();
    (code, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn json_output_matches_the_schema() {
    let mut att = Attributions::default();
    att.record(
        AppId::parse("/changed").unwrap(),
        Attribution {
            client_ip: "10.1.2.3".into(),
            uri: "/v2/apps/changed".into(),
            at: 1_794_999_000_000,
        },
        None,
    );
    // With a ledger from the state dir, the output carries it too.
    let state = tempfile::tempdir().unwrap();
    let repo = commands::load_repo(&fixture("plan/basic")).unwrap();
    let live = commands::live_apps(&LiveFrom::File(fixture("plan/basic/live.json")))
        .await
        .unwrap();
    let mut report = baton_core::drift::drift(&repo, &live, &att, 1_794_999_500_000);
    let mut ledger = Ledger::default();
    ledger.observe(&mut report, &Default::default(), 1_794_999_500_000);
    baton::daemon::ledger_file::save(state.path(), &ledger).unwrap();

    let (code, out) = run(DriftFormat::Json, att, Some(state.path().to_path_buf())).await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_matches_schema("drift.schema.json", &doc);
    // The fixture has an invalid spec: exit 1 even though there is drift.
    assert_eq!(code, 1);
    assert!(doc["summary"]["drifted"].as_u64().unwrap() >= 1, "{doc:#}");
    assert!(doc["summary"]["invalid"].as_u64().unwrap() >= 1);
    assert!(!doc["ledger"].as_array().unwrap().is_empty());
    let changed = doc["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "/changed")
        .unwrap();
    assert_eq!(changed["changed_by"]["client_ip"], "10.1.2.3");
}

#[tokio::test]
async fn every_format_renders() {
    for (format, marker) in [
        (DriftFormat::Text, "Drift:"),
        (DriftFormat::Markdown, "## "),
        (DriftFormat::Html, "<!doctype html>"),
    ] {
        let (_, out) = run(format, Attributions::default(), None).await;
        assert!(out.contains(marker), "{format:?}: {out}");
        assert!(out.contains("/changed"), "{format:?}: {out}");
    }
}
