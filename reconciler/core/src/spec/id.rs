//! Marathon app ids (`/prod/web/api`) and how they follow from spec file paths.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An absolute Marathon app id, e.g. `/prod/web/api`: lowercase segments of letters, digits,
/// hyphens and dots, as Marathon's `PathId` requires. Shared text: a clone is a reference
/// count, so maps of thousands of ids copy cheaply (each new commit's repo, plans, reports).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(Arc<str>);

impl AppId {
    /// Parse an id; relative ids are refused (Baton always knows the full path).
    pub fn parse(s: &str) -> Result<AppId, String> {
        let trimmed = s.trim_end_matches('/');
        if !trimmed.starts_with('/') {
            return Err(format!("app id `{s}` must be absolute (start with `/`)"));
        }
        if trimmed.len() <= 1 {
            return Err("app id must not be the root group `/`".into());
        }
        for seg in trimmed[1..].split('/') {
            check_segment(seg).map_err(|why| format!("app id `{s}`: {why}"))?;
        }
        Ok(AppId(Arc::from(trimmed)))
    }

    /// The id a spec file defines: `apps/prod/web/api.yaml` under apps dir `apps` is
    /// `/prod/web/api`.
    pub fn from_path(relative_to_apps_dir: &Path) -> Result<AppId, String> {
        let mut segs = Vec::new();
        let comps: Vec<_> = relative_to_apps_dir.components().collect();
        for (i, c) in comps.iter().enumerate() {
            let s = c
                .as_os_str()
                .to_str()
                .ok_or_else(|| "the path is not valid UTF-8".to_string())?;
            let s = if i + 1 == comps.len() {
                s.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(s)
            } else {
                s
            };
            check_segment(s).map_err(|why| {
                format!(
                    "`{}` cannot name a Marathon app: {why}",
                    relative_to_apps_dir.display()
                )
            })?;
            segs.push(s);
        }
        if segs.is_empty() {
            return Err("empty path".into());
        }
        Ok(AppId(Arc::from(format!("/{}", segs.join("/")))))
    }

    /// Resolve an `id` written in this app's spec the way Marathon resolves ids posted within
    /// a group: absolute ids stand as they are, relative ones (`web`, `./web`, `../db`) are
    /// taken from the app's parent group. The result is not validated; callers compare it.
    pub fn resolve(&self, given: &str) -> String {
        let given = given.trim_end_matches('/');
        if given.starts_with('/') {
            return given.to_string();
        }
        let mut segs: Vec<&str> = self.0[1..].split('/').collect();
        segs.pop();
        for seg in given.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                s => segs.push(s),
            }
        }
        format!("/{}", segs.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Marathon's URL path form without the leading slash (`prod/web/api`).
    pub fn path(&self) -> &str {
        &self.0[1..]
    }
}

/// A prefix of app ids on segment boundaries (`idPrefixes` in `baton.yaml`). `/shop` and `/shop/`
/// are read alike: the id `/shop` itself and every id under it (`/shop/web`), never `/shopping`
/// (Marathon refuses an app and a group of the same id, so the two readings rarely differ, and
/// one reading leaves nothing to misremember). `/` contains every id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct IdPrefix(Arc<str>);

impl IdPrefix {
    /// Parse a prefix as written: absolute, lowercase segments as in app ids, at most one
    /// trailing `/`.
    pub fn parse(s: &str) -> Result<IdPrefix, String> {
        if !s.starts_with('/') {
            return Err(format!(
                "`{s}` must be an absolute app id prefix, starting with `/` (like `/shop`)"
            ));
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        if trimmed.is_empty() {
            return Ok(IdPrefix(Arc::from("/")));
        }
        for seg in trimmed[1..].split('/') {
            check_segment(seg).map_err(|why| format!("`{s}`: {why}"))?;
        }
        Ok(IdPrefix(Arc::from(trimmed)))
    }

    /// Whether `id` is this prefix or lies under it.
    pub fn contains(&self, id: &AppId) -> bool {
        if &*self.0 == "/" {
            return true;
        }
        id.as_str()
            .strip_prefix(&*self.0)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The prefix without a trailing `/` (`/` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<IdPrefix> for String {
    fn from(p: IdPrefix) -> String {
        p.0.to_string()
    }
}

fn check_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty path segment".into());
    }
    if seg == "." || seg == ".." {
        return Err("`.` and `..` are not allowed".into());
    }
    let ok_chars = seg
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let bad_edges = seg.starts_with(['-', '.']) || seg.ends_with(['-', '.']);
    if !ok_chars || bad_edges {
        return Err(format!(
            "segment `{seg}` must be lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AppId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AppId::parse(&s)
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> String {
        id.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_ids_resolve_against_the_parent_group() {
        let id = AppId::parse("/shop/web").unwrap();
        assert_eq!(id.resolve("web"), "/shop/web");
        assert_eq!(id.resolve("./web/"), "/shop/web");
        assert_eq!(id.resolve("../web"), "/web");
        assert_eq!(id.resolve("/other/web"), "/other/web");
        assert_eq!(
            AppId::parse("/tomcat").unwrap().resolve("tomcat"),
            "/tomcat"
        );
    }

    #[test]
    fn ids_from_paths() {
        let id = AppId::from_path(Path::new("prod/web/api.yaml")).unwrap();
        assert_eq!(id.as_str(), "/prod/web/api");
        assert_eq!(id.path(), "prod/web/api");
        assert_eq!(
            AppId::from_path(Path::new("db.v2.json")).unwrap().as_str(),
            "/db.v2"
        );
        assert!(AppId::from_path(Path::new("Prod/api.yaml"))
            .unwrap_err()
            .contains("lowercase"));
        assert!(AppId::from_path(Path::new("a_b.yaml")).is_err());
    }

    #[test]
    fn id_prefixes_match_on_segment_boundaries() {
        let id = |s: &str| AppId::parse(s).unwrap();
        for written in ["/shop", "/shop/"] {
            let p = IdPrefix::parse(written).unwrap();
            assert_eq!(p.as_str(), "/shop", "{written}");
            assert!(p.contains(&id("/shop")), "{written}: the id itself");
            assert!(p.contains(&id("/shop/web")), "{written}");
            assert!(p.contains(&id("/shop/web/api")), "{written}");
            assert!(
                !p.contains(&id("/shopping")),
                "{written}: not a segment boundary"
            );
            assert!(!p.contains(&id("/shopping/web")), "{written}");
            assert!(!p.contains(&id("/other/shop")), "{written}");
        }
        let nested = IdPrefix::parse("/prod/shop").unwrap();
        assert!(nested.contains(&id("/prod/shop/db")));
        assert!(!nested.contains(&id("/prod/shop-2")));
        assert!(!nested.contains(&id("/prod")));
        let root = IdPrefix::parse("/").unwrap();
        assert!(root.contains(&id("/anything/at/all")));
    }

    #[test]
    fn id_prefixes_are_refused_with_the_reason() {
        let err = |s: &str| IdPrefix::parse(s).unwrap_err();
        assert!(
            err("shop/").contains("starting with `/`"),
            "{}",
            err("shop/")
        );
        assert!(err("").contains("starting with `/`"));
        assert!(err("/Shop").contains("lowercase"), "{}", err("/Shop"));
        assert!(err("/shop//").contains("empty path segment"));
        assert!(err("/a/../b").contains("`..`"));
        assert!(err("/shop*").contains("lowercase"));
    }

    #[test]
    fn parse_ids() {
        assert_eq!(AppId::parse("/a/b/").unwrap().as_str(), "/a/b");
        assert!(AppId::parse("a/b").unwrap_err().contains("absolute"));
        assert!(AppId::parse("/").is_err());
        assert!(AppId::parse("/a//b").is_err());
        assert!(AppId::parse("/a/../b").is_err());
    }
}
