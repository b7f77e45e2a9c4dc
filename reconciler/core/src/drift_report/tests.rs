use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::diff::FieldChange;
use crate::drift::{Attribution, DriftSummary, Tasks};
use crate::spec::{AppId, DriftPolicy};

const NOW: u64 = 1_795_000_000_000;

fn app(id: &str, state: DriftState) -> AppDrift {
    sample(id, state)
}

fn sample(id: &str, state: DriftState) -> AppDrift {
    AppDrift {
        app: AppId::parse(id).unwrap(),
        state,
        fields: Vec::new(),
        changed_by: None,
        since: None,
        policy: Some(DriftPolicy::Report),
        file: Some(PathBuf::from(format!("apps{id}.yaml"))),
        owner: Some("baton".into()),
        commit: Some("0123abcd".into()),
        deployed_at: Some("2026-11-19T10:00:00.000Z".into()),
        tasks: Some(Tasks {
            instances: 2,
            running: 2,
            healthy: 0,
            unhealthy: 0,
            staged: 0,
            up: true,
            checked: false,
            deploying: false,
            summary: "up 2/2 running".into(),
        }),
        note: None,
        desired_digest: None,
        failed_write: false,
    }
}

/// A report with one app in each interesting state.
fn report() -> DriftReport {
    let mut web = app("/shop/web", DriftState::Drifted);
    web.fields = vec![
        FieldChange {
            pointer: "/env/COLOR".into(),
            desired: Some(json!("blue")),
            live: Some(json!("green|<b>`x`</b>")),
        },
        FieldChange {
            pointer: "/instances".into(),
            desired: Some(json!(2)),
            live: Some(json!(5)),
        },
    ];
    web.changed_by = Some(Attribution {
        client_ip: "10.0.0.8".into(),
        uri: "/v2/apps/shop/web".into(),
        at: NOW - 120_000,
    });
    web.since = Some(NOW - 300_000);
    let mut db = app("/shop/db", DriftState::Missing);
    db.policy = Some(DriftPolicy::CorrectAfter(std::time::Duration::from_secs(
        600,
    )));
    db.tasks = None;
    let mut bad = app("/shop/bad", DriftState::Invalid);
    bad.note = Some("apps/shop/bad.yaml at /mem: expected a number".into());
    bad.policy = None;
    let ok = app("/shop/ok", DriftState::InSync);
    let mut other = app("/other", DriftState::Unmanaged);
    other.policy = None;
    other.file = None;
    let apps = vec![other, bad, db, ok, web];
    let mut summary = DriftSummary::default();
    for a in &apps {
        match a.state {
            DriftState::InSync => summary.in_sync += 1,
            DriftState::Drifted => summary.drifted += 1,
            DriftState::Pending => summary.pending += 1,
            DriftState::Missing => summary.missing += 1,
            DriftState::Unmanaged => summary.unmanaged += 1,
            DriftState::Failed => summary.failed += 1,
            DriftState::Invalid => summary.invalid += 1,
        }
    }
    DriftReport {
        owner: "baton".into(),
        generated_at: NOW,
        summary,
        apps,
        ledger: vec![],
    }
}

#[test]
fn text_is_aligned() {
    let out = text(&report(), Style { color: false });
    insta::assert_snapshot!("drift_text", out);
    // Every table row starts its STATE column at the same place.
    let starts: Vec<usize> = out
        .lines()
        .filter(|l| l.starts_with("  /") || l.starts_with("  APP"))
        .map(|l| {
            l.find(|c: char| c.is_whitespace())
                .map(|i| i + l[i..].find(|c: char| !c.is_whitespace()).unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(starts.len(), 4);
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}\n{out}");
}

#[test]
fn text_is_coloured_only_when_asked() {
    let plain = text(&report(), Style { color: false });
    assert!(!plain.contains('\x1b'));
    let coloured = text(&report(), Style { color: true });
    assert!(coloured.contains("\x1b[33mdrifted"));
    assert!(coloured.contains("\x1b[31minvalid"));
}

#[test]
fn no_drift_is_one_line() {
    let mut r = report();
    r.apps.retain(|a| a.state == DriftState::InSync);
    r.summary = DriftSummary {
        in_sync: 1,
        ..Default::default()
    };
    let out = text(&r, Style { color: false });
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("No drift:"));
}

#[test]
fn markdown_escapes_table_cells() {
    let out = markdown(&report());
    insta::assert_snapshot!("drift_markdown", out);
    // The live value with a pipe and backticks stays in one cell.
    let row = out.lines().find(|l| l.contains("/env/COLOR")).unwrap();
    assert_eq!(row.matches(" | ").count(), 2, "{row}");
}

#[test]
fn html_is_one_self_contained_escaped_file() {
    let out = html(&report());
    insta::assert_snapshot!("drift_html", out);
    assert!(!out.contains("<b>"), "values are escaped");
    assert!(out.contains("&lt;b&gt;"));
    for external in ["src=", "href=\"http", "<link", "@import", "url("] {
        assert!(!out.contains(external), "external asset: {external}");
    }
}
