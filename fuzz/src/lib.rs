//! The harnesses behind the fuzz targets (`fuzz_targets/*.rs` are one line each). Each takes the
//! fuzzer's bytes, runs one parser of untrusted input, and checks what must hold whatever the
//! bytes: no panic (libFuzzer reports it), bounded time and memory (libFuzzer's `-timeout` and
//! `-rss_limit_mb`, set by `scripts/fuzz.sh`), and the invariants asserted below.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton::daemon::hooks::{self, Provider, ReplayWindow, Verdict};
use baton_core::spec::load::{self, Keep, Snapshot, SourceFile};
use baton_core::spec::parse::{self, Format, Limits};
use baton_core::spec::Severity;
use serde_json::Value;

/// `spec_parse`: first byte picks the format (even: YAML, odd: JSON), the rest is the document.
///
/// Invariants: what the strict JSON reader accepts, serde_json accepts with the same value; what
/// the YAML reader accepts is plain data that the strict JSON reader reads back unchanged (it
/// refuses duplicate keys and NUL characters too). `locate`, which diagnostics call on the text
/// of either format, terminates on anything.
pub fn spec_parse(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Yaml
    } else {
        Format::Json
    };
    let parsed = parse::parse(text, format, Limits::default());
    if let Ok(value) = &parsed {
        match format {
            Format::Json => {
                let body = text.strip_prefix('\u{feff}').unwrap_or(text);
                let plain: Value = match serde_json::from_str(body) {
                    Ok(v) => v,
                    Err(e) => panic!("strict reader accepted what serde_json refuses: {e}"),
                };
                assert!(same(&plain, value), "values differ from serde_json's");
            }
            Format::Yaml => {
                let json = value.to_string();
                match parse::parse(&json, Format::Json, Limits::default()) {
                    Ok(back) => assert!(same(&back, value), "YAML value does not round-trip"),
                    Err(e) => panic!("YAML accepted what JSON refuses: {e:?}"),
                }
            }
        }
    }
    for pointer in ["", "/cmd", "/env/A", "/container/docker/image", "/a/0/b"] {
        let _ = parse::locate(text, pointer);
    }
}

/// Equal values, floats within rounding (serde_json's default float reader may be one ulp off).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}

/// `spec_load`: the whole load of a one-file repo, as a source hands it over. First byte: bit 0
/// picks the spec's format (JSON when set), bit 1 whether there is a `baton.yaml`; the rest is
/// `baton.yaml`'s text, a 0xFF byte (never in UTF-8), then the spec file's bytes (no 0xFF: no
/// config, all spec).
///
/// Invariants: an app with an error diagnostic is never among the specs to deploy; loading for
/// diagnostics only (`validate`) finds exactly what a full load finds.
pub fn spec_load(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (config_bytes, spec_bytes) = match rest.iter().position(|b| *b == 0xFF) {
        Some(i) if selector & 2 != 0 => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    let ext = if selector & 1 != 0 { "json" } else { "yaml" };
    let config_file = config_bytes.map(|b| SourceFile {
        path: PathBuf::from(load::CONFIG_FILE),
        bytes: b.to_vec(),
    });
    let (config, diagnostics) = load::parse_config(config_file.as_ref());
    let config_bad = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let snapshot = || Snapshot {
        files: if config_bad {
            Vec::new()
        } else {
            vec![SourceFile {
                path: config.apps_dir.join(format!("team/web.{ext}")),
                bytes: spec_bytes.to_vec(),
            }]
        },
        config: config.clone(),
        diagnostics: diagnostics.clone(),
        incomplete: config_bad,
    };
    let full = load::load_with(snapshot(), Keep::Definitions);
    for d in &full.diagnostics {
        if let (Severity::Error, Some(app)) = (d.severity, &d.app) {
            assert!(
                !full.specs.contains_key(app),
                "{app} has an error ({}) but would be deployed",
                d.message
            );
            assert!(
                full.invalid.contains(app),
                "{app} has an error but is not invalid"
            );
        }
    }
    let checked = load::load_with(snapshot(), Keep::Diagnostics);
    assert_eq!(checked.diagnostics, full.diagnostics);
    assert_eq!(checked.invalid, full.invalid);
    assert!(checked.specs.keys().eq(full.specs.keys()));
}

/// The webhook harness for one provider. First byte: bit 0 signs the delivery correctly (the
/// harness adds the provider's signature header, so the parser behind the check is reached as
/// a real forge reaches it), bit 1 sends it twice. The rest: header lines `name: value` up to
/// an empty line, then the body.
///
/// Invariants: a correctly signed delivery never fails authentication; an unsigned one always
/// does (nothing but the secret opens the door); a delivery recorded once is a duplicate the
/// second time.
pub fn webhook(provider: Provider, data: &[u8]) {
    const SECRET: &[u8] = b"fuzz-webhook-secret";
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let split = rest.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let signed = selector & 1 != 0;
    // The fuzzer's own signature headers go: only the harness signs.
    let sig_headers = [
        "x-hub-signature-256",
        "x-baton-signature",
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gitlab-token",
        "x-hub-signature",
        "x-gogs-signature",
    ];
    headers.retain(|(k, _)| !sig_headers.contains(&k.as_str()));
    if signed {
        let sha = hooks::sign_sha256(SECRET, body);
        let (name, value) = match provider {
            Provider::GitHub => ("x-hub-signature-256", sha),
            Provider::Generic => ("x-baton-signature", sha),
            Provider::BitbucketServer | Provider::BitbucketCloud => ("x-hub-signature", sha),
            Provider::Gogs => (
                "x-gogs-signature",
                sha.trim_start_matches("sha256=").to_string(),
            ),
            Provider::Gitea => (
                "x-gitea-signature",
                sha.trim_start_matches("sha256=").to_string(),
            ),
            Provider::GitLab => (
                "x-gitlab-token",
                String::from_utf8_lossy(SECRET).into_owned(),
            ),
        };
        headers.push((name.to_string(), value));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut window = ReplayWindow::new(Duration::from_secs(600), 64);
    let now = Instant::now();
    let first = hooks::receive(provider, SECRET, "main", header, body, &mut window, now);
    match (&first, signed) {
        (Err(e), true) => assert!(!e.is_auth(), "a signed delivery failed auth: {e}"),
        (Err(e), false) => assert!(e.is_auth(), "an unsigned delivery passed auth: {e:?}"),
        (Ok(_), false) => panic!("an unsigned delivery was accepted"),
        (Ok(_), true) => {}
    }
    // What a verdict holds is logged and answered: bounded whatever the body's size.
    let size = match &first {
        Ok(Verdict::Accepted(p)) => p.git_ref.len() + p.after.len() + p.delivery.len(),
        Ok(Verdict::Ignored(m)) | Ok(Verdict::Duplicate(m)) => m.len(),
        Err(e) => e.to_string().len(),
    };
    assert!(size < 2048, "a verdict of {size} bytes grows with the body");
    if selector & 2 != 0 {
        let again = hooks::receive(provider, SECRET, "main", header, body, &mut window, now);
        let recorded = match &first {
            Ok(Verdict::Accepted(_)) => true,
            Ok(Verdict::Ignored(m)) => m.starts_with("push to"),
            _ => false,
        };
        if recorded {
            assert!(
                matches!(again, Ok(Verdict::Duplicate(_))),
                "a replay was not recognised: {again:?}"
            );
        }
    }
}

/// `gatekeeper_request`: the body of `POST /v1/secret-zero` through the handler's parser, then
/// the policy against one known app whose task matches the request (the deepest path a forged
/// request can reach). Invariant: a malformed body is refused as malformed; a grant goes only to
/// the known app's role.
pub fn gatekeeper_request(data: &[u8]) {
    use baton::secret_zero::gatekeeper::{
        decide, parse_request, AppGate, Decision, GateConfig, RateLimiter, Served, TaskInfo,
    };
    use baton_core::spec::AppId;
    use std::collections::BTreeMap;
    let Ok(req) = parse_request(data) else {
        return;
    };
    let Ok(known) = AppId::parse("/shop/web") else {
        return;
    };
    let apps = BTreeMap::from([(
        known,
        AppGate {
            role: "baton-shop-web".into(),
            role_id: None,
            instances: 2,
            canary_of: None,
        },
    )]);
    let now_ms = 1_800_000_000_000;
    let peer: std::net::IpAddr = [127, 0, 0, 1].into();
    let task = TaskInfo {
        id: req.task_id.clone(),
        app_id: req.app_id.clone(),
        owner: Some("baton".into()),
        state: "TASK_RUNNING".into(),
        staged_at_ms: Some(now_ms - 1000),
        addrs: vec![peer],
        rollout_of: None,
    };
    let config = GateConfig::default();
    let mut limiter = RateLimiter::default();
    let served = Served::default();
    let decision = decide(
        &req,
        Some(peer),
        Some(&task),
        &apps,
        &served,
        &mut limiter,
        now_ms,
        &config,
    );
    if let Decision::Grant { role } = decision {
        assert_eq!(role, "baton-shop-web");
        assert!(!req.task_id.is_empty() && req.task_id.len() <= 512);
    }
}

/// `sse`: the event-stream parser fed the bytes whole and in chunks (cut where the first byte
/// says), then each event through `deployment_event`. Invariant: chunking never changes the
/// events (the parser is incremental).
pub fn sse(data: &[u8]) {
    use baton_core::app::sse::{deployment_event, Parser};
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let whole = Parser::default().feed(rest);
    let step = usize::from(cut).max(1);
    let mut parser = Parser::default();
    let mut chunked = Vec::new();
    for chunk in rest.chunks(step) {
        chunked.extend(parser.feed(chunk));
    }
    assert_eq!(whole, chunked, "chunking changed the events");
    for e in &whole {
        let _ = deployment_event(e);
    }
}
