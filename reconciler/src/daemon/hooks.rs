//! Push webhooks, without a server: signature verification per provider (constant time, with
//! `ring`), push payload parsing, the branch filter and the replay window. [`crate::daemon::server`] is the
//! thin HTTP shell around [`receive`].
//!
//! Providers and what they send:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`, `X-GitHub-Event`,
//!   `X-GitHub-Delivery`.
//! - GitLab: `X-Gitlab-Token: <secret>` (a shared token, no HMAC), `X-Gitlab-Event`,
//!   `X-Gitlab-Event-UUID`.
//! - Gitea / Forgejo: `X-Gitea-Signature` (or `X-Forgejo-Signature`): `<hex HMAC-SHA256(body)>`,
//!   `X-Gitea-Event`, `X-Gitea-Delivery`.
//! - Gogs: `X-Gogs-Signature: <hex HMAC-SHA256(body)>`, `X-Gogs-Event`, `X-Gogs-Delivery`; the
//!   body is GitHub's shape (`ref`, `after`).
//! - Bitbucket Data Center / Server: `X-Hub-Signature: sha256=<hex HMAC-SHA256(body)>` (the
//!   webhook's secret), `X-Event-Key: repo:refs_changed`, `X-Request-Id`; the body lists
//!   `changes[]` (`refId`, `toHash`, `type`), several refs in one push.
//! - Bitbucket Cloud: `X-Hub-Signature: sha256=<hex HMAC-SHA256(body)>`, `X-Event-Key:
//!   repo:push`, `X-Request-UUID`; the body lists `push.changes[]` (`new`/`old`: `type`
//!   branch or tag, `name`, `target.hash`; `new` null when the ref was deleted).
//! - Generic: `X-Baton-Signature: sha256=<hex HMAC-SHA256(body)>`, optional `X-Baton-Delivery`;
//!   the body has the same `ref` / `after` fields as the others.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ring::hmac;
use serde_json::Value;

/// Largest webhook body accepted (GitHub caps its payloads at 25 MB; pushes are far smaller).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Longest `ref` accepted in a push payload.
const MAX_REF_BYTES: usize = 1024;

/// Who sent the hook (the `{provider}` of `POST /hooks/{provider}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (same headers, Forgejo also sends `X-Forgejo-*`).
    Gitea,
    Gogs,
    /// Bitbucket Data Center and Server.
    BitbucketServer,
    BitbucketCloud,
    Generic,
}

impl FromStr for Provider {
    type Err = HookError;
    fn from_str(s: &str) -> Result<Self, HookError> {
        match s {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            "gitea" | "forgejo" => Ok(Provider::Gitea),
            "gogs" => Ok(Provider::Gogs),
            "bitbucket-server" | "bitbucket-dc" | "bitbucket-datacenter" => {
                Ok(Provider::BitbucketServer)
            }
            "bitbucket-cloud" | "bitbucket" => Ok(Provider::BitbucketCloud),
            "generic" => Ok(Provider::Generic),
            other => Err(HookError::UnknownProvider(other.chars().take(40).collect())),
        }
    }
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Gogs => "gogs",
            Provider::BitbucketServer => "bitbucket-server",
            Provider::BitbucketCloud => "bitbucket-cloud",
            Provider::Generic => "generic",
        }
    }
}

/// Why a delivery was refused. Never holds the body, a signature or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("unknown webhook provider `{0}` (expected github, gitlab, gitea, forgejo, gogs, bitbucket-server, bitbucket-cloud or generic)")]
    UnknownProvider(String),
    #[error("the {provider} webhook has no `{header}` header")]
    MissingSignature {
        provider: &'static str,
        header: &'static str,
    },
    #[error("the {provider} webhook signature does not match")]
    BadSignature { provider: &'static str },
    #[error("the webhook body is not a push event: {0}")]
    BadPayload(String),
}

impl HookError {
    /// Authentication failures (401) as opposed to malformed requests (400/404).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            HookError::MissingSignature { .. } | HookError::BadSignature { .. }
        )
    }
}

/// A verified push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Full ref name, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// The commit the ref points to after the push (all zeros when the ref was deleted).
    pub after: String,
    /// The provider's delivery id, or `sha256:<body digest>` when it sends none (so a replay of
    /// the same body is still recognised).
    pub delivery: String,
}

/// What to do with a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A push to the followed ref: fetch.
    Accepted(Push),
    /// Authentic but irrelevant (another branch, a ping, another event type).
    Ignored(String),
    /// The same delivery id was seen within the replay window.
    Duplicate(String),
}

/// Constant-time check of `body` against the provider's signature header. `header` looks up a
/// request header by lowercase name.
pub fn verify<'h>(
    provider: Provider,
    secret: &[u8],
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<(), HookError> {
    let missing = |h: &'static str| HookError::MissingSignature {
        provider: provider.name(),
        header: h,
    };
    let bad = HookError::BadSignature {
        provider: provider.name(),
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    match provider {
        Provider::GitHub
        | Provider::Generic
        | Provider::BitbucketServer
        | Provider::BitbucketCloud => {
            let name = match provider {
                Provider::GitHub => "x-hub-signature-256",
                Provider::Generic => "x-baton-signature",
                _ => "x-hub-signature",
            };
            let given = header(name).ok_or_else(|| missing(name))?;
            let hex_tag = given.trim().strip_prefix("sha256=").ok_or(bad.clone())?;
            let tag = hex::decode(hex_tag).map_err(|_| bad.clone())?;
            hmac::verify(&key, body, &tag).map_err(|_| bad)
        }
        Provider::Gitea => {
            let given = header("x-gitea-signature")
                .or_else(|| header("x-forgejo-signature"))
                .ok_or_else(|| missing("x-gitea-signature"))?;
            let tag = hex::decode(given.trim()).map_err(|_| bad.clone())?;
            hmac::verify(&key, body, &tag).map_err(|_| bad)
        }
        Provider::Gogs => {
            let given = header("x-gogs-signature").ok_or_else(|| missing("x-gogs-signature"))?;
            let tag = hex::decode(given.trim()).map_err(|_| bad.clone())?;
            hmac::verify(&key, body, &tag).map_err(|_| bad)
        }
        Provider::GitLab => {
            // A plain shared token: compare HMACs of both values under the secret, which is
            // constant time in the content (`hmac::verify`) whatever the lengths.
            let given = header("x-gitlab-token").ok_or_else(|| missing("x-gitlab-token"))?;
            let expected = hmac::sign(&key, secret);
            hmac::verify(&key, given.as_bytes(), expected.as_ref()).map_err(|_| bad)
        }
    }
}

/// Refs one push may name that are looked at (Bitbucket sends one change per ref pushed).
const MAX_REFS: usize = 100;

/// The all-zero commit id forges send as the new tip of a deleted ref.
const ZERO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// A verified push of one or more refs (Bitbucket reports every ref of a `git push` in one
/// delivery; the other forges one ref per delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushes {
    /// `(ref, commit after the push)`, in the payload's order; at most [`MAX_REFS`].
    pub refs: Vec<(String, String)>,
    /// See [`Push::delivery`].
    pub delivery: String,
}

/// Parse a verified push body: the first ref it names (see [`parse_pushes`] for all of them).
pub fn parse_push<'h>(
    provider: Provider,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Option<Push>, HookError> {
    Ok(parse_pushes(provider, header, body)?.and_then(|p| {
        let (git_ref, after) = p.refs.into_iter().next()?;
        Some(Push {
            git_ref,
            after,
            delivery: p.delivery,
        })
    }))
}

/// Parse a verified push body: every ref it names. `None`: not a push event.
pub fn parse_pushes<'h>(
    provider: Provider,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Option<Pushes>, HookError> {
    let event = match provider {
        Provider::GitHub => header("x-github-event"),
        Provider::GitLab => header("x-gitlab-event"),
        Provider::Gitea => header("x-gitea-event").or_else(|| header("x-forgejo-event")),
        Provider::Gogs => header("x-gogs-event"),
        Provider::BitbucketServer | Provider::BitbucketCloud => header("x-event-key"),
        Provider::Generic => None,
    };
    if let Some(event) = event {
        let is_push = matches!(
            event,
            "push" | "Push Hook" | "Tag Push Hook" | "repo:refs_changed" | "repo:push"
        );
        if !is_push {
            return Ok(None);
        }
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| HookError::BadPayload(format!("not JSON: {e}")))?;
    let refs = match provider {
        Provider::BitbucketServer => bitbucket_server_refs(&doc)?,
        Provider::BitbucketCloud => bitbucket_cloud_refs(&doc)?,
        _ => {
            let field = |name: &str| {
                doc.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| HookError::BadPayload(format!("no `{name}` string")))
            };
            vec![(field("ref")?, field("after")?)]
        }
    };
    for (git_ref, after) in &refs {
        check_ref(git_ref, after)?;
    }
    let delivery = match provider {
        Provider::GitHub => header("x-github-delivery"),
        Provider::GitLab => header("x-gitlab-event-uuid").or_else(|| header("idempotency-key")),
        Provider::Gitea => header("x-gitea-delivery").or_else(|| header("x-forgejo-delivery")),
        Provider::Gogs => header("x-gogs-delivery"),
        Provider::BitbucketServer => header("x-request-id"),
        Provider::BitbucketCloud => header("x-request-uuid"),
        Provider::Generic => header("x-baton-delivery"),
    }
    .map(|d| {
        format!(
            "{}:{}",
            provider.name(),
            d.chars().take(128).collect::<String>()
        )
    })
    .unwrap_or_else(|| body_key(body));
    Ok(Some(Pushes { refs, delivery }))
}

/// Both are logged, shown and kept: bounded to what a forge sends (git caps a ref name's
/// component, not the name; 1 KiB is far past any real one).
fn check_ref(git_ref: &str, after: &str) -> Result<(), HookError> {
    if git_ref.len() > MAX_REF_BYTES {
        return Err(HookError::BadPayload(format!(
            "`ref` is longer than {MAX_REF_BYTES} bytes"
        )));
    }
    let is_commit = (4..=64).contains(&after.len()) && after.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_commit {
        return Err(HookError::BadPayload(
            "`after` is not a commit id (4 to 64 hex digits)".into(),
        ));
    }
    Ok(())
}

/// `changes[]` of Bitbucket Data Center's `repo:refs_changed`: `refId` (or `ref.id`) and
/// `toHash` (all zeros for a deleted ref).
fn bitbucket_server_refs(doc: &Value) -> Result<Vec<(String, String)>, HookError> {
    let changes = (doc.get("changes").and_then(Value::as_array))
        .ok_or_else(|| HookError::BadPayload("no `changes` list".into()))?;
    let mut refs = Vec::new();
    for (i, c) in changes.iter().take(MAX_REFS).enumerate() {
        let git_ref = (c.get("refId").and_then(Value::as_str))
            .or_else(|| c.pointer("/ref/id").and_then(Value::as_str))
            .ok_or_else(|| HookError::BadPayload(format!("no `changes/{i}/refId` string")))?;
        let after = (c.get("toHash").and_then(Value::as_str))
            .ok_or_else(|| HookError::BadPayload(format!("no `changes/{i}/toHash` string")))?;
        refs.push((git_ref.to_string(), after.to_string()));
    }
    if refs.is_empty() {
        return Err(HookError::BadPayload("`changes` is empty".into()));
    }
    Ok(refs)
}

/// `push.changes[]` of Bitbucket Cloud's `repo:push`: `new` (or, for a deleted ref, `old`)
/// with `type` (`branch`, `tag`), `name` and `target.hash`.
fn bitbucket_cloud_refs(doc: &Value) -> Result<Vec<(String, String)>, HookError> {
    let changes = (doc.pointer("/push/changes").and_then(Value::as_array))
        .ok_or_else(|| HookError::BadPayload("no `push/changes` list".into()))?;
    let mut refs = Vec::new();
    for (i, c) in changes.iter().take(MAX_REFS).enumerate() {
        let new = c.get("new").filter(|v| !v.is_null());
        let Some(side) = new.or_else(|| c.get("old").filter(|v| !v.is_null())) else {
            return Err(HookError::BadPayload(format!(
                "`push/changes/{i}` has neither `new` nor `old`"
            )));
        };
        let name = (side.get("name").and_then(Value::as_str))
            .ok_or_else(|| HookError::BadPayload(format!("no `push/changes/{i}` ref name")))?;
        let prefix = match side.get("type").and_then(Value::as_str) {
            Some("tag") => "refs/tags/",
            // `branch`; `named_branch` and `bookmark` were Mercurial's.
            _ => "refs/heads/",
        };
        let after = match new {
            Some(n) => (n.pointer("/target/hash").and_then(Value::as_str))
                .ok_or_else(|| {
                    HookError::BadPayload(format!("no `push/changes/{i}/new/target/hash`"))
                })?
                .to_string(),
            None => ZERO_COMMIT.to_string(),
        };
        refs.push((format!("{prefix}{name}"), after));
    }
    if refs.is_empty() {
        return Err(HookError::BadPayload("`push/changes` is empty".into()));
    }
    Ok(refs)
}

/// Whether a pushed ref is the one Baton follows. `followed` is what `--ref` says: a branch
/// (`main` or `refs/heads/main`), a tag (`v1` or `refs/tags/v1`), or a commit (never matches: a
/// pinned commit does not move).
pub fn ref_matches(followed: &str, pushed: &str) -> bool {
    if followed.starts_with("refs/") {
        return followed == pushed;
    }
    pushed == format!("refs/heads/{followed}") || pushed == format!("refs/tags/{followed}")
}

/// Delivery ids seen recently, to drop replays. Bounded: the oldest ids go first when full.
#[derive(Debug)]
pub struct ReplayWindow {
    window: Duration,
    capacity: usize,
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        ReplayWindow {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Record `id` at `now`; false when it was already seen within the window.
    pub fn first_time(&mut self, id: &str, now: Instant) -> bool {
        self.first_time_all(&[id], now)
    }

    /// Whether none of `ids` was seen within the window: then all are recorded at `now`; else
    /// nothing is (a replay must not push genuine deliveries out of a full window).
    pub fn first_time_all(&mut self, ids: &[&str], now: Instant) -> bool {
        self.expire(now, ids.len());
        if ids.iter().any(|id| self.seen.contains_key(*id)) {
            return false;
        }
        for id in ids {
            if self.seen.insert(id.to_string(), now).is_none() {
                self.order.push_back((now, id.to_string()));
            }
        }
        true
    }

    /// Forget what is older than the window, and the oldest entries until `room` more fit.
    fn expire(&mut self, now: Instant, room: usize) {
        while let Some((at, old)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > self.window;
            if !expired && self.order.len() + room <= self.capacity {
                break;
            }
            if self.seen.get(old) == Some(at) {
                self.seen.remove(old);
            }
            self.order.pop_front();
        }
    }
}

/// The key of a body in the replay window: its SHA-256, the same whatever the provider (GitHub
/// and the generic form sign the same way, so one captured delivery verifies at both).
fn body_key(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    format!("sha256:{}", hex::encode(d))
}

/// The whole check of one delivery: signature, payload, replay window, branch filter. The
/// replay window only records deliveries whose signature is valid (so forged requests cannot
/// burn real delivery ids).
///
/// A delivery is a replay when its delivery id *or its body* was seen within the window. The
/// delivery-id headers are not covered by any provider's signature, so a captured delivery
/// replayed under a made-up id is only recognised by its (signed) body; a forge's own retry
/// repeats both and is answered as a duplicate, which is harmless (the push was handled).
pub fn receive<'h>(
    provider: Provider,
    secret: &[u8],
    followed: &str,
    header: impl Fn(&str) -> Option<&'h str> + Copy,
    body: &[u8],
    window: &mut ReplayWindow,
    now: Instant,
) -> Result<Verdict, HookError> {
    verify(provider, secret, header, body)?;
    let Some(pushes) = parse_pushes(provider, header, body)? else {
        return Ok(Verdict::Ignored("not a push event".into()));
    };
    let body_key = body_key(body);
    if !window.first_time_all(&[pushes.delivery.as_str(), body_key.as_str()], now) {
        return Ok(Verdict::Duplicate(pushes.delivery));
    }
    let followed_ref = pushes.refs.iter().find(|(r, _)| ref_matches(followed, r));
    match followed_ref {
        Some((git_ref, after)) => Ok(Verdict::Accepted(Push {
            git_ref: git_ref.clone(),
            after: after.clone(),
            delivery: pushes.delivery,
        })),
        None => {
            // Bounded: the verdict is logged and answered.
            let mut names: Vec<String> = (pushes.refs.iter().take(3))
                .map(|(r, _)| r.chars().take(200).collect())
                .collect();
            if pushes.refs.len() > 3 {
                names.push(format!("{} more", pushes.refs.len() - 3));
            }
            Ok(Verdict::Ignored(format!(
                "push to {}, following {followed}",
                names.join(", ")
            )))
        }
    }
}

/// `sha256=<hex>` of the body, as GitHub and the generic form send it (for tests and tools).
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123abcd"}"#;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + Copy {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn github_signature_valid_and_tampered() {
        let sig = sign_sha256(SECRET, BODY);
        let h = [("x-hub-signature-256", sig.as_str())];
        assert_eq!(verify(Provider::GitHub, SECRET, headers(&h), BODY), Ok(()));
        let tampered = br#"{"ref":"refs/heads/main","after":"0123abce"}"#;
        assert_eq!(
            verify(Provider::GitHub, SECRET, headers(&h), tampered),
            Err(HookError::BadSignature { provider: "github" })
        );
        assert!(verify(Provider::GitHub, b"other", headers(&h), BODY).is_err());
    }

    #[test]
    fn missing_or_malformed_signature_is_an_auth_error() {
        let e = verify(Provider::GitHub, SECRET, headers(&[]), BODY).unwrap_err();
        assert!(e.is_auth());
        let h = [("x-hub-signature-256", "sha1=abcd")];
        assert!(verify(Provider::GitHub, SECRET, headers(&h), BODY)
            .unwrap_err()
            .is_auth());
        let h = [("x-hub-signature-256", "sha256=zz")];
        assert!(verify(Provider::GitHub, SECRET, headers(&h), BODY)
            .unwrap_err()
            .is_auth());
    }

    #[test]
    fn gitea_and_forgejo_use_bare_hex() {
        let sig = sign_sha256(SECRET, BODY);
        let hex_only = sig.trim_start_matches("sha256=");
        let h = [("x-gitea-signature", hex_only)];
        assert_eq!(verify(Provider::Gitea, SECRET, headers(&h), BODY), Ok(()));
        let h = [("x-forgejo-signature", hex_only)];
        assert_eq!(verify(Provider::Gitea, SECRET, headers(&h), BODY), Ok(()));
        let h = [("x-gitea-signature", sig.as_str())];
        assert!(verify(Provider::Gitea, SECRET, headers(&h), BODY).is_err());
    }

    /// Found by the webhook fuzz targets' bound on what a verdict holds: a signed push with a
    /// megabyte `ref` or `after` went whole into the INFO log, the answer and the state.
    #[test]
    fn ref_and_after_are_bounded_and_after_is_a_commit_id() {
        let parse = |body: &str| parse_push(Provider::Generic, headers(&[]), body.as_bytes());
        let long_ref = format!("refs/heads/{}", "a".repeat(2000));
        let e = parse(&format!("{{\"ref\":\"{long_ref}\",\"after\":\"abcd\"}}")).unwrap_err();
        assert!(matches!(e, HookError::BadPayload(_)), "{e:?}");
        for after in ["", "xyz", "12", &"a".repeat(65), &"0".repeat(1 << 20)] {
            let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{after}\"}}");
            let e = parse(&body).unwrap_err();
            assert!(e.to_string().len() < 200, "{after:.20}");
        }
        for after in ["0123abcd", &"0".repeat(40), &"f".repeat(64)] {
            let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{after}\"}}");
            assert!(parse(&body).unwrap().is_some(), "{after}");
        }
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        let h = [("x-gitlab-token", "s3cret")];
        assert_eq!(verify(Provider::GitLab, SECRET, headers(&h), BODY), Ok(()));
        for wrong in ["s3cre", "s3cret ", "S3CRET", ""] {
            let h = [("x-gitlab-token", wrong)];
            assert!(
                verify(Provider::GitLab, SECRET, headers(&h), BODY).is_err(),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn generic_form() {
        let sig = sign_sha256(SECRET, BODY);
        let h = [
            ("x-baton-signature", sig.as_str()),
            ("x-baton-delivery", "d1"),
        ];
        let push = parse_push(Provider::Generic, headers(&h), BODY)
            .unwrap()
            .unwrap();
        assert_eq!(verify(Provider::Generic, SECRET, headers(&h), BODY), Ok(()));
        assert_eq!(push.delivery, "generic:d1");
        assert_eq!(push.git_ref, "refs/heads/main");
        assert_eq!(push.after, "0123abcd");
    }

    #[test]
    fn providers_parse() {
        assert_eq!("forgejo".parse::<Provider>(), Ok(Provider::Gitea));
        assert_eq!(
            "bitbucket".parse::<Provider>(),
            Ok(Provider::BitbucketCloud)
        );
        assert_eq!(
            "bitbucket-dc".parse::<Provider>(),
            Ok(Provider::BitbucketServer)
        );
        assert_eq!("gogs".parse::<Provider>(), Ok(Provider::Gogs));
        assert!("bitbucket-server-x".parse::<Provider>().is_err());
    }

    #[test]
    fn non_push_events_are_ignored_and_bad_bodies_rejected() {
        let h = [("x-github-event", "ping")];
        assert_eq!(parse_push(Provider::GitHub, headers(&h), b"{}"), Ok(None));
        let h = [("x-github-event", "push")];
        assert!(matches!(
            parse_push(Provider::GitHub, headers(&h), b"{\"ref\":1}"),
            Err(HookError::BadPayload(_))
        ));
        assert!(parse_push(Provider::GitHub, headers(&h), b"not json").is_err());
    }

    #[test]
    fn delivery_defaults_to_body_digest() {
        let a = parse_push(Provider::Generic, headers(&[]), BODY)
            .unwrap()
            .unwrap();
        let b = parse_push(Provider::Generic, headers(&[]), BODY)
            .unwrap()
            .unwrap();
        assert!(a.delivery.starts_with("sha256:"));
        assert_eq!(a.delivery, b.delivery);
    }

    #[test]
    fn branch_filter() {
        assert!(ref_matches("main", "refs/heads/main"));
        assert!(ref_matches("v1", "refs/tags/v1"));
        assert!(ref_matches("refs/heads/main", "refs/heads/main"));
        assert!(!ref_matches("main", "refs/heads/main2"));
        assert!(!ref_matches("main", "refs/heads/feature"));
        assert!(!ref_matches("refs/heads/main", "refs/tags/main"));
    }

    #[test]
    fn replay_window_dedupes_then_forgets() {
        let mut w = ReplayWindow::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert!(w.first_time("a", t0));
        assert!(!w.first_time("a", t0 + Duration::from_secs(30)));
        assert!(w.first_time("b", t0 + Duration::from_secs(30)));
        assert!(w.first_time("a", t0 + Duration::from_secs(61)));
    }

    /// Delivery ids are not signed: a captured delivery replayed under a made-up id (or none,
    /// or at another provider's endpoint that signs the same way) is still a replay, known by its
    /// signed body. A forge's own retry (same id, same body) is a harmless duplicate, and a new
    /// push (another body) is accepted.
    #[test]
    fn replays_are_known_by_their_body_whatever_the_delivery_id() {
        let mut w = ReplayWindow::new(Duration::from_secs(3600), 100);
        let now = Instant::now();
        let sig = sign_sha256(SECRET, BODY);
        let mut check = |provider, pairs: &[(&str, &str)], body: &[u8]| {
            receive(provider, SECRET, "main", headers(pairs), body, &mut w, now)
        };
        let generic = |id: Option<&'static str>| {
            let mut h = vec![("x-baton-signature", sig.as_str())];
            h.extend(id.map(|id| ("x-baton-delivery", id)));
            h
        };
        // A generic sender that sends no id: accepted once.
        assert!(matches!(
            check(Provider::Generic, &generic(None), BODY),
            Ok(Verdict::Accepted(_))
        ));
        // Replayed as is, under made-up ids, at the GitHub endpoint: all duplicates.
        for replay in [None, Some("made-up-1"), Some("made-up-2")] {
            assert!(
                matches!(
                    check(Provider::Generic, &generic(replay), BODY),
                    Ok(Verdict::Duplicate(_))
                ),
                "{replay:?}"
            );
        }
        let github = |id| {
            vec![
                ("x-hub-signature-256", sig.as_str()),
                ("x-github-event", "push"),
                ("x-github-delivery", id),
            ]
        };
        assert!(matches!(
            check(Provider::GitHub, &github("g-1"), BODY),
            Ok(Verdict::Duplicate(_))
        ));
        // A new push (another body) from a forge, then the forge's own retry of it.
        let other = br#"{"ref":"refs/heads/main","after":"4567cdef"}"#;
        let other_sig = sign_sha256(SECRET, other);
        let h = [
            ("x-hub-signature-256", other_sig.as_str()),
            ("x-github-event", "push"),
            ("x-github-delivery", "g-2"),
        ];
        assert!(matches!(
            check(Provider::GitHub, &h, other),
            Ok(Verdict::Accepted(ref p)) if p.after == "4567cdef"
        ));
        assert_eq!(
            check(Provider::GitHub, &h, other),
            Ok(Verdict::Duplicate("github:g-2".into()))
        );
        // The replays recorded none of their made-up ids.
        assert!(w.first_time("generic:made-up-1", now));
    }

    #[test]
    fn replay_window_is_bounded() {
        let mut w = ReplayWindow::new(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d"] {
            assert!(w.first_time(id, t0));
        }
        assert!(w.seen.len() <= 3);
        // "a" was evicted to make room, so it counts as new again.
        assert!(w.first_time("a", t0));
    }

    #[test]
    fn receive_filters_branch_and_replays() {
        let sig = sign_sha256(SECRET, BODY);
        let h = [
            ("x-hub-signature-256", sig.as_str()),
            ("x-github-event", "push"),
            ("x-github-delivery", "abc"),
        ];
        let mut w = ReplayWindow::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let v = receive(
            Provider::GitHub,
            SECRET,
            "main",
            headers(&h),
            BODY,
            &mut w,
            now,
        )
        .unwrap();
        assert!(matches!(v, Verdict::Accepted(ref p) if p.after == "0123abcd"));
        let v = receive(
            Provider::GitHub,
            SECRET,
            "main",
            headers(&h),
            BODY,
            &mut w,
            now,
        )
        .unwrap();
        assert_eq!(v, Verdict::Duplicate("github:abc".into()));
        // Another push, to a branch Baton does not follow.
        let feature = br#"{"ref":"refs/heads/feature","after":"0123abcd"}"#;
        let sig2 = sign_sha256(SECRET, feature);
        let h2 = [
            ("x-hub-signature-256", sig2.as_str()),
            ("x-github-event", "push"),
            ("x-github-delivery", "def"),
        ];
        let v = receive(
            Provider::GitHub,
            SECRET,
            "main",
            headers(&h2),
            feature,
            &mut w,
            now,
        )
        .unwrap();
        assert!(matches!(v, Verdict::Ignored(_)));
        // A forged request with a fresh id is refused and does not burn that id.
        let forged = [
            ("x-hub-signature-256", "sha256=00"),
            ("x-github-delivery", "ghi"),
        ];
        assert!(receive(
            Provider::GitHub,
            SECRET,
            "main",
            headers(&forged),
            BODY,
            &mut w,
            now
        )
        .is_err());
        assert!(w.first_time("github:ghi", now));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/webhooks/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    /// One delivery of `body` as `provider` sends it: its signature over the body with
    /// [`SECRET`], its event header and its delivery id.
    fn delivery(
        provider: Provider,
        event: &'static str,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let sha = sign_sha256(SECRET, body);
        match provider {
            Provider::BitbucketServer => vec![
                ("x-hub-signature", sha),
                ("x-event-key", event.into()),
                (
                    "x-request-id",
                    "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into(),
                ),
            ],
            Provider::BitbucketCloud => vec![
                ("x-hub-signature", sha),
                ("x-event-key", event.into()),
                (
                    "x-request-uuid",
                    "6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
                ),
                ("x-hook-uuid", "a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90".into()),
            ],
            Provider::Gogs => vec![
                ("x-gogs-signature", sha.trim_start_matches("sha256=").into()),
                ("x-gogs-event", event.into()),
                (
                    "x-gogs-delivery",
                    "f3a1c2d4-0001-4000-8000-000000000001".into(),
                ),
            ],
            _ => unreachable!(),
        }
    }

    fn receive_fixture(
        provider: Provider,
        event: &'static str,
        file: &str,
        followed: &str,
    ) -> Result<Verdict, HookError> {
        let body = fixture(file);
        let h = delivery(provider, event, &body);
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut w = ReplayWindow::new(Duration::from_secs(60), 100);
        receive(
            provider,
            SECRET,
            followed,
            headers(&pairs),
            &body,
            &mut w,
            Instant::now(),
        )
    }

    const MAIN_AFTER: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";

    #[test]
    fn bitbucket_gogs_documented_pushes_are_accepted() {
        for (provider, event, file, delivery) in [
            (
                Provider::BitbucketServer,
                "repo:refs_changed",
                "bitbucket-server-refs-changed.json",
                "bitbucket-server:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            ),
            (
                Provider::BitbucketServer,
                "repo:refs_changed",
                "bitbucket-server-refs-changed-multi.json",
                "bitbucket-server:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            ),
            (
                Provider::BitbucketCloud,
                "repo:push",
                "bitbucket-cloud-push.json",
                "bitbucket-cloud:6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            ),
            (
                Provider::Gogs,
                "push",
                "gogs-push.json",
                "gogs:f3a1c2d4-0001-4000-8000-000000000001",
            ),
        ] {
            let v = receive_fixture(provider, event, file, "main");
            assert_eq!(
                v,
                Ok(Verdict::Accepted(Push {
                    git_ref: "refs/heads/main".into(),
                    after: MAIN_AFTER.into(),
                    delivery: delivery.into(),
                })),
                "{file}"
            );
        }
    }

    /// Bitbucket reports every ref of one `git push`: the followed one is found among them,
    /// a tag and a deleted branch are read as such.
    #[test]
    fn bitbucket_pushes_of_several_refs_deletions_and_tags() {
        let accepted = |v: Result<Verdict, HookError>| match v {
            Ok(Verdict::Accepted(p)) => (p.git_ref, p.after),
            other => panic!("{other:?}"),
        };
        let multi = "bitbucket-server-refs-changed-multi.json";
        let server = |followed| {
            accepted(receive_fixture(
                Provider::BitbucketServer,
                "repo:refs_changed",
                multi,
                followed,
            ))
        };
        assert_eq!(
            server("v2.3.0"),
            (
                "refs/tags/v2.3.0".into(),
                "3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b".into()
            )
        );
        assert_eq!(
            server("feature/canary"),
            ("refs/heads/feature/canary".into(), ZERO_COMMIT.into())
        );
        let ignored = receive_fixture(
            Provider::BitbucketServer,
            "repo:refs_changed",
            multi,
            "release",
        );
        assert_eq!(
            ignored,
            Ok(Verdict::Ignored(
                "push to refs/tags/v2.3.0, refs/heads/feature/canary, refs/heads/main, following release".into()
            ))
        );
        let deleted = receive_fixture(
            Provider::BitbucketCloud,
            "repo:push",
            "bitbucket-cloud-push-delete.json",
            "feature/canary",
        );
        assert_eq!(
            accepted(deleted),
            ("refs/heads/feature/canary".into(), ZERO_COMMIT.into())
        );
    }

    #[test]
    fn bitbucket_gogs_pings_and_other_events_are_ignored_and_forgeries_refused() {
        let ping = receive_fixture(
            Provider::BitbucketServer,
            "diagnostics:ping",
            "bitbucket-server-ping.json",
            "main",
        );
        assert_eq!(ping, Ok(Verdict::Ignored("not a push event".into())));
        let pr = receive_fixture(
            Provider::BitbucketCloud,
            "pullrequest:created",
            "bitbucket-cloud-push.json",
            "main",
        );
        assert_eq!(pr, Ok(Verdict::Ignored("not a push event".into())));
        for (provider, event, file) in [
            (
                Provider::BitbucketServer,
                "repo:refs_changed",
                "bitbucket-server-refs-changed.json",
            ),
            (
                Provider::BitbucketCloud,
                "repo:push",
                "bitbucket-cloud-push.json",
            ),
            (Provider::Gogs, "push", "gogs-push.json"),
        ] {
            let body = fixture(file);
            let h = delivery(provider, event, &body);
            let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // The body changed after signing: refused.
            let mut tampered = body.clone();
            let at = tampered.iter().position(|&b| b == b'9').unwrap();
            tampered[at] = b'8';
            let e = verify(provider, SECRET, headers(&pairs), &tampered).unwrap_err();
            assert!(e.is_auth(), "{file}: {e}");
            // No signature at all (a Bitbucket webhook without a secret): refused.
            let unsigned: Vec<(&str, &str)> = pairs
                .iter()
                .filter(|(k, _)| !k.ends_with("signature"))
                .copied()
                .collect();
            let e = verify(provider, SECRET, headers(&unsigned), &body).unwrap_err();
            assert!(
                matches!(e, HookError::MissingSignature { .. }),
                "{file}: {e}"
            );
        }
    }
}
