//! URLs that carry credentials (`https://user:token@host/...`): taken apart so the credentials
//! travel as credentials and the URL can be shown. HTTP clients put the URL they were given into
//! their error messages, and those reach logs, `/api/status` and notifications.

use secrecy::SecretString;

/// An `http(s)://` URL with user info split into the URL without it, the user and the password
/// (both percent-decoded; a lone `token@` is the user, with an empty password, as GitHub
/// accepts it). None for other URLs: `ssh://git@host` keeps its user, which is no secret.
pub fn split_http_userinfo(url: &str) -> Option<(String, String, SecretString)> {
    let lower = url.get(..8)?.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..host_end].rfind('@')?;
    let info = &rest[..at];
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    Some((
        format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        percent_decode(user),
        SecretString::from(percent_decode(password)),
    ))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without `user:password@` (tokens embedded in URLs must not reach logs).
pub fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{}://{}", &url[..scheme_end], &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn http_user_info_becomes_credentials() {
        let (url, user, password) =
            split_http_userinfo("https://x-access-token:t%40k@host/r.git").unwrap();
        assert_eq!(url, "https://host/r.git");
        assert_eq!(user, "x-access-token");
        assert_eq!(password.expose_secret(), "t@k");
        let (url, user, password) = split_http_userinfo("HTTP://tok@host:8080/r.git").unwrap();
        assert_eq!(url, "HTTP://host:8080/r.git");
        assert_eq!(user, "tok");
        assert_eq!(password.expose_secret(), "");
        // Nothing to take, or not HTTP (an ssh user is no secret and ssh needs it).
        assert!(split_http_userinfo("https://host/r.git").is_none());
        assert!(split_http_userinfo("ssh://git@host/r.git").is_none());
        assert!(split_http_userinfo("/srv/a@b/repo").is_none());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("https://u:tok@host/r.git"), "https://host/r.git");
        assert_eq!(redact_url("https://host/r.git"), "https://host/r.git");
        assert_eq!(redact_url("/local/path"), "/local/path");
    }
}
