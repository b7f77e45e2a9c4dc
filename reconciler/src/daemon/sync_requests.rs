//! `POST /api/sync` requests between the HTTP API and the reconcile loop: each request gets an
//! id (in its answer); the requests queued while the loop is busy are served together by the
//! next manual-sync cycle, which takes them all at once and records their ids (and the apps
//! they named) in its history entry, so a client can tell when its sync ran and how it ended.
//!
//! Ids grow across restarts (they start from the clock, in microseconds), so an id handed out
//! by an earlier process is never claimed by a cycle of a later one.

use std::collections::BTreeSet;
use std::sync::Mutex;

use baton_core::cycle::state::SyncRequests as Served;
use baton_core::spec::AppId;

/// The most apps one request may name (a URL is bounded too; this bounds the set the loop
/// keeps between cycles).
pub const MAX_APPS: usize = 1000;

/// The requests not yet taken by a cycle.
#[derive(Debug)]
pub struct SyncRequests {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The last id handed out.
    last: u64,
    /// The last id a cycle took.
    taken: u64,
    /// What the pending requests asked for: `None` none pending; `Some(None)` every app.
    pending: Option<Option<BTreeSet<AppId>>>,
}

/// Why `POST /api/sync?...` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// 400: not `app=<id>` pairs, or an id that is not a Marathon app id.
    #[error("{0}")]
    Malformed(String),
    /// 404: ids that are neither in the repo nor Baton's apps on the scheduler.
    #[error("no app {} in the repo or among this Baton's apps (as of the last cycle)", .0.join(", "))]
    Unknown(Vec<String>),
}

/// The apps a `POST /api/sync` query names (`app=/shop/web`, repeatable; none: every app).
/// `known`: whether the last cycle saw the app (in the repo or as Baton's on the scheduler).
pub fn parse_query(
    pairs: &[(String, String)],
    known: impl Fn(&AppId) -> bool,
) -> Result<Option<BTreeSet<AppId>>, QueryError> {
    let mut apps = BTreeSet::new();
    for (key, value) in pairs {
        if key != "app" {
            return Err(QueryError::Malformed(format!(
                "unknown parameter `{key}` (only `app=<app id>`, repeatable)"
            )));
        }
        // `shop/web` and `/shop/web` alike, as the CLI accepts them.
        let id = format!("/{}", value.trim_start_matches('/'));
        let id =
            AppId::parse(&id).map_err(|e| QueryError::Malformed(format!("app `{value}`: {e}")))?;
        apps.insert(id);
        if apps.len() > MAX_APPS {
            return Err(QueryError::Malformed(format!(
                "more than {MAX_APPS} apps in one request"
            )));
        }
    }
    if apps.is_empty() {
        return Ok(None);
    }
    let unknown: Vec<String> = (apps.iter())
        .filter(|a| !known(a))
        .map(|a| a.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(QueryError::Unknown(unknown));
    }
    Ok(Some(apps))
}

/// What a manual-sync cycle serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub first: u64,
    pub last: u64,
    /// `None`: every app.
    pub apps: Option<BTreeSet<AppId>>,
}

impl Taken {
    /// The record of the history entry.
    pub fn record(&self) -> Served {
        Served {
            first: self.first,
            last: self.last,
            apps: (self.apps.as_ref()).map(|a| a.iter().map(|id| id.to_string()).collect()),
        }
    }
}

impl SyncRequests {
    /// Ids start after `start` (the loop passes the clock in microseconds).
    pub fn new(start: u64) -> Self {
        SyncRequests {
            inner: Mutex::new(Inner {
                last: start,
                taken: start,
                pending: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request for `apps` (`None`: all of them); its id. Requests pending together merge:
    /// one for every app makes the next cycle sync every app.
    pub fn ask(&self, apps: Option<BTreeSet<AppId>>) -> u64 {
        let mut inner = self.lock();
        inner.last += 1;
        inner.pending = Some(match (inner.pending.take(), apps) {
            (None, apps) => apps,
            (Some(None), _) | (Some(Some(_)), None) => None,
            (Some(Some(mut had)), Some(apps)) => {
                had.extend(apps);
                Some(had)
            }
        });
        inner.last
    }

    /// Everything asked since the last call, for the cycle about to run (`None`: nothing was
    /// asked through [`SyncRequests::ask`]; such a manual sync syncs every app).
    pub fn take(&self) -> Option<Taken> {
        let mut inner = self.lock();
        let apps = inner.pending.take()?;
        let taken = Taken {
            first: inner.taken + 1,
            last: inner.last,
            apps,
        };
        inner.taken = inner.last;
        Some(taken)
    }
}

impl Default for SyncRequests {
    fn default() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        SyncRequests::new(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(ids: &[&str]) -> Option<BTreeSet<AppId>> {
        Some(ids.iter().map(|a| AppId::parse(a).unwrap()).collect())
    }

    /// `POST /api/sync?app=` through the real router: the token first (a refused caller learns
    /// nothing of which apps exist), then 400 for a malformed query, 404 naming an unknown app,
    /// 202 with the request's id for known apps, whose cycle then gets exactly those apps.
    #[tokio::test]
    async fn the_api_queues_a_sync_of_the_apps_named() {
        use crate::daemon::reconcile::{AppStatus, Shared, SyncMode, Trigger};
        use crate::daemon::server::{router, AppState, HookSettings};
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let (shared, mut rx) = Shared::new("test".into(), SyncMode::Manual);
        for id in ["/shop/api", "/shop/web"] {
            shared.status.write().unwrap().apps.push(AppStatus {
                id: id.into(),
                sync: "outOfSync",
                health: "healthy",
                commit: None,
                last_error: None,
                reason: None,
                deploying: None,
                rollout: None,
                rolled_back: None,
            });
        }
        let app = router(
            AppState::new(shared.clone(), HookSettings::Off { reason: "off" })
                .with_api_token(Some(secrecy::SecretString::from("tok".to_string()))),
        );
        let post = |uri: &str, token: Option<&str>| {
            let mut r = Request::post(uri);
            if let Some(t) = token {
                r = r.header("Authorization", format!("Bearer {t}"));
            }
            let req = r.body(Body::empty()).unwrap();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let code = resp.status().as_u16();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (
                    code,
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                )
            }
        };
        assert_eq!(post("/api/sync?app=/nope", None).await.0, 401);
        assert_eq!(post("/api/sync?app=/nope", Some("bad")).await.0, 401);
        let (code, doc) = post("/api/sync?app=/nope&app=/shop/web", Some("tok")).await;
        assert_eq!(code, 404);
        assert!(
            doc["error"].as_str().unwrap().contains("no app /nope"),
            "{doc}"
        );
        for bad in [
            "/api/sync?app=/Shop%20Web",
            "/api/sync?app=",
            "/api/sync?ap=/shop/web",
        ] {
            assert_eq!(post(bad, Some("tok")).await.0, 400, "{bad}");
        }
        assert!(rx.try_recv().is_err(), "nothing refused was queued");
        assert_eq!(shared.sync_requests.take(), None);

        let (code, doc) = post("/api/sync?app=%2Fshop%2Fweb", Some("tok")).await;
        assert_eq!(code, 202, "{doc}");
        assert_eq!(doc["apps"], serde_json::json!(["/shop/web"]));
        let id = doc["sync"].as_u64().unwrap();
        assert_eq!(rx.try_recv().unwrap(), Trigger::ManualSync);
        let taken = shared.sync_requests.take().unwrap();
        assert_eq!((taken.first, taken.last), (id, id));
        assert_eq!(taken.apps, apps(&["/shop/web"]));
        // Without `app`: every app, as before.
        let (code, doc) = post("/api/sync", Some("tok")).await;
        assert_eq!((code, doc["apps"].clone()), (202, serde_json::Value::Null));
        assert_eq!(shared.sync_requests.take().unwrap().apps, None);
    }

    #[test]
    fn a_query_names_known_apps_or_is_refused() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let known = |a: &AppId| a.as_str().starts_with("/shop/");
        assert_eq!(parse_query(&[], known), Ok(None));
        assert_eq!(
            parse_query(&pairs(&[("app", "/shop/web"), ("app", "shop/api")]), known),
            Ok(apps(&["/shop/api", "/shop/web"]))
        );
        assert_eq!(
            parse_query(&pairs(&[("app", "/nope"), ("app", "/shop/web")]), known),
            Err(QueryError::Unknown(vec!["/nope".into()]))
        );
        for bad in [
            &[("app", "/Shop Web")][..],
            &[("app", "")],
            &[("apps", "/shop/web")],
        ] {
            let r = parse_query(&pairs(bad), known);
            assert!(matches!(r, Err(QueryError::Malformed(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn requests_pending_together_are_served_by_one_cycle() {
        let q = SyncRequests::new(100);
        assert_eq!(q.take(), None);
        assert_eq!(q.ask(apps(&["/a"])), 101);
        assert_eq!(q.ask(apps(&["/b"])), 102);
        let t = q.take().unwrap();
        assert!(t.record().served(102) && !t.record().served(103));
        assert_eq!((t.first, t.last, t.apps), (101, 102, apps(&["/a", "/b"])));
        assert_eq!(q.take(), None);
        // A request for every app wins over those naming some.
        q.ask(apps(&["/a"]));
        q.ask(None);
        q.ask(apps(&["/c"]));
        let t = q.take().unwrap();
        assert_eq!((t.first, t.last, t.apps), (103, 105, None));
    }
}
