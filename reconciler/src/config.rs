//! Configuration of `baton serve`: flags and `BATON_*` environment variables (parsed by clap in
//! `main.rs`) over an optional YAML file (`--config FILE`) over defaults. Checked completely
//! before anything binds a port or touches the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::daemon::reconcile::SyncMode;
use crate::source::git::GitAuth;
use baton_marathon::marathon::MarathonConfig;

/// The optional config file; every key mirrors a flag (kebab-case). Secrets are given as
/// `*-file` paths, never inline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub repo: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub marathon: Option<String>,
    /// Per-request timeout of the Marathon client (`30s`).
    pub marathon_timeout: Option<String>,
    /// Extra CA certificate (PEM) for Marathon.
    pub marathon_ca: Option<PathBuf>,
    /// HTTP basic auth to Marathon: the user, and a file holding the password.
    pub marathon_user: Option<String>,
    pub marathon_password_file: Option<PathBuf>,
    /// A file holding a DC/OS token (`Authorization: token=...`).
    pub marathon_token_file: Option<PathBuf>,
    pub sync: Option<SyncMode>,
    pub poll_interval: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// Bearer token required by `POST /api/sync` (without one, only loopback clients may).
    pub api_token_file: Option<PathBuf>,
    pub allow_deletes: Option<usize>,
    pub git_user: Option<String>,
    pub git_token_file: Option<PathBuf>,
    // Secret zero (all optional: without `vault-addr` no app may read Vault secrets).
    pub vault_addr: Option<String>,
    pub vault_token_file: Option<PathBuf>,
    pub vault_approle_mount: Option<String>,
    pub gatekeeper_url: Option<String>,
    pub task_max_age: Option<String>,
    pub gatekeeper_host_check: Option<bool>,
    pub wrap_ttl: Option<String>,
    /// The extra Vault policies specs may give their apps (`baton.secrets.policies`); none
    /// by default. Compared trimmed and case-insensitively; `root` is refused.
    pub vault_allowed_policies: Option<Vec<String>>,
    /// Generic JSON notification webhooks.
    pub notify_webhook: Option<Vec<String>>,
    /// A file of Slack-compatible incoming-webhook URLs, one a line (they carry a token).
    pub notify_slack_file: Option<PathBuf>,
}

/// What the flags gave (all optional: the file and defaults fill the rest).
#[derive(Debug, Clone, Default)]
pub struct FlagConfig {
    pub file: FileConfig,
    /// `BATON_WEBHOOK_SECRET` (inline, from the environment).
    pub webhook_secret: Option<SecretString>,
    /// `BATON_API_TOKEN`.
    pub api_token: Option<SecretString>,
    /// `BATON_GIT_TOKEN` / `BATON_GIT_PASSWORD`.
    pub git_token: Option<SecretString>,
    /// `--notify-webhook` / `BATON_NOTIFY_WEBHOOK` (URLs may carry tokens: kept secret).
    pub notify_webhook: Vec<SecretString>,
    /// `--notify-slack` / `BATON_NOTIFY_SLACK`.
    pub notify_slack: Vec<SecretString>,
    /// `BATON_VAULT_TOKEN` / `VAULT_TOKEN`.
    pub vault_token: Option<SecretString>,
}

/// Secret zero in `baton serve`: the reconciler's Vault access and the gatekeeper's settings.
#[derive(Debug, Clone)]
pub struct VaultServeConfig {
    /// Vault base address (also injected into app envs as `VAULT_ADDR`).
    pub addr: String,
    /// The reconciler's own token (policy in `docs/security.md`).
    pub token: SecretString,
    pub approle_mount: String,
    /// The URL tasks use to reach `POST /v1/secret-zero`; `None`: derived from the address
    /// `serve` listens on.
    pub gatekeeper_url: Option<String>,
    pub task_max_age: Duration,
    pub host_check: bool,
    pub wrap_ttl: Duration,
    /// `--vault-allowed-policies`: the extra policies specs may ask for.
    pub allowed_policies: baton_core::secrets::AllowedPolicies,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Git URL, local git repo, or plain directory.
    pub repo: String,
    pub reference: String,
    pub cache_dir: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub marathon: MarathonConfig,
    pub sync: SyncMode,
    pub poll_interval: Duration,
    /// The push webhooks' shared secret; `None`: no webhook is accepted (a git repo is polled,
    /// a plain directory is watched).
    pub webhook_secret: Option<SecretString>,
    /// Bearer token of `POST /api/sync`; `None`: only loopback clients may call it.
    pub api_token: Option<SecretString>,
    pub allow_deletes: Option<usize>,
    /// HTTPS git credentials (also those written into `repo`'s URL, which is then without them).
    pub git_auth: Option<GitAuth>,
    /// Secret zero; `None`: apps with `vault:` references are blocked with an error.
    pub vault: Option<VaultServeConfig>,
    /// Where notifications go (empty: nowhere). URLs are redacted in `Debug`.
    pub notify: Vec<crate::daemon::notifications::Sink>,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("missing setting: {0}")]
    Missing(&'static str),
    #[error("bad setting {name}: {reason}")]
    Bad { name: &'static str, reason: String },
}

/// Read a YAML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let doc = baton_core::spec::parse::parse(
        &text,
        baton_core::spec::parse::Format::Yaml,
        baton_core::spec::parse::Limits::default(),
    )
    .map_err(|e| err(e.message))?;
    serde_json::from_value(doc).map_err(|e| err(e.to_string()))
}

/// Flags over file over defaults. `marathon` carries the flag-level client settings (auth,
/// CA, timeout); its URL is replaced when only the file gives one.
pub fn resolve(
    flags: FlagConfig,
    file: FileConfig,
    mut marathon: MarathonConfig,
) -> Result<ServeConfig, ConfigError> {
    let f = flags.file;
    marathon_from_file(&mut marathon, &f, &file)?;
    let vault = resolve_vault(&f, &file, flags.vault_token)?;
    let mut repo = f.repo.or(file.repo).ok_or(ConfigError::Missing("--repo"))?;
    // Credentials in the URL become git credentials: the URL is shown in logs and status.
    let url_auth =
        baton_core::userinfo::split_http_userinfo(&repo).map(|(bare, user, password)| {
            repo = bare;
            GitAuth { user, password }
        });
    let reference = f
        .reference
        .or(file.reference)
        .unwrap_or_else(|| "main".into());
    let state_dir = f
        .state_dir
        .or(file.state_dir)
        .ok_or(ConfigError::Missing("--state-dir"))?;
    let cache_dir = f
        .cache_dir
        .or(file.cache_dir)
        .unwrap_or_else(|| state_dir.join("git-cache"));
    let listen = f
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8088)));
    if marathon.url.is_empty() {
        marathon.url = f
            .marathon
            .clone()
            .or(file.marathon.clone())
            .ok_or(ConfigError::Missing("--marathon"))?;
    }
    marathon.take_url_credentials();
    let poll = f
        .poll_interval
        .or(file.poll_interval)
        .unwrap_or_else(|| "60s".into());
    let poll_interval =
        baton_core::spec::load::parse_duration(&poll).map_err(|reason| ConfigError::Bad {
            name: "--poll-interval",
            reason,
        })?;
    if poll_interval < Duration::from_secs(1) {
        return Err(ConfigError::Bad {
            name: "--poll-interval",
            reason: "must be at least 1s".into(),
        });
    }
    let webhook_secret = match (
        flags.webhook_secret,
        f.webhook_secret_file.or(file.webhook_secret_file),
    ) {
        (Some(s), _) => Some(s),
        (None, Some(path)) => Some(read_secret(&path, "--webhook-secret-file")?),
        (None, None) => None,
    };
    let git_token = match (flags.git_token, f.git_token_file.or(file.git_token_file)) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => Some(read_secret(&path, "--git-token-file")?),
        (None, None) => None,
    };
    let notify = notify_sinks(
        flags.notify_webhook,
        flags.notify_slack,
        f.notify_webhook.or(file.notify_webhook),
        f.notify_slack_file.or(file.notify_slack_file),
    )?;
    let api_token = match (flags.api_token, f.api_token_file.or(file.api_token_file)) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => Some(read_secret(&path, "--api-token-file")?),
        (None, None) => None,
    };
    let git_auth = git_token
        .map(|password| GitAuth {
            user: f
                .git_user
                .clone()
                .or(file.git_user.clone())
                .unwrap_or_else(|| "x-access-token".into()),
            password,
        })
        .or(url_auth);
    Ok(ServeConfig {
        repo,
        reference,
        cache_dir,
        state_dir,
        listen,
        marathon,
        sync: f.sync.or(file.sync).unwrap_or(SyncMode::Auto),
        poll_interval,
        webhook_secret,
        api_token,
        allow_deletes: f.allow_deletes.or(file.allow_deletes),
        git_auth,
        vault,
        notify,
    })
}

/// The config file's Marathon client settings, where flags and the environment gave none
/// (`marathon` already holds what they gave).
fn marathon_from_file(
    marathon: &mut MarathonConfig,
    f: &FileConfig,
    file: &FileConfig,
) -> Result<(), ConfigError> {
    use baton_marathon::marathon::Auth;
    if let Some(t) = f
        .marathon_timeout
        .as_ref()
        .or(file.marathon_timeout.as_ref())
    {
        marathon.timeout =
            baton_core::spec::load::parse_duration(t).map_err(|reason| ConfigError::Bad {
                name: "--marathon-timeout",
                reason,
            })?;
    }
    if marathon.ca_cert.is_none() {
        marathon.ca_cert = file.marathon_ca.clone();
    }
    if marathon.auth.is_none() {
        marathon.auth = match (&file.marathon_token_file, &file.marathon_user) {
            (Some(path), _) => Some(Auth::Token(read_secret(path, "marathon-token-file")?)),
            (None, Some(user)) => Some(Auth::Basic {
                user: user.clone(),
                password: match &file.marathon_password_file {
                    Some(path) => read_secret(path, "marathon-password-file")?,
                    None => SecretString::from(String::new()),
                },
            }),
            (None, None) => None,
        };
    }
    Ok(())
}

/// Notification sinks: URLs from flags/env win over the config file's, per kind. Every URL
/// must be http(s); errors never echo a URL (Slack's carry a token).
fn notify_sinks(
    webhook_flags: Vec<SecretString>,
    slack_flags: Vec<SecretString>,
    webhook_file: Option<Vec<String>>,
    slack_file: Option<PathBuf>,
) -> Result<Vec<crate::daemon::notifications::Sink>, ConfigError> {
    use crate::daemon::notifications::{Sink, SinkKind};
    use secrecy::ExposeSecret;
    let webhooks: Vec<String> = if webhook_flags.is_empty() {
        webhook_file.unwrap_or_default()
    } else {
        (webhook_flags.iter())
            .map(|u| u.expose_secret().to_string())
            .collect()
    };
    let slack: Vec<String> = match (slack_flags.is_empty(), slack_file) {
        (false, _) => (slack_flags.iter())
            .map(|u| u.expose_secret().to_string())
            .collect(),
        (true, Some(path)) => {
            let text = read_secret(&path, "--notify-slack-file")?;
            (text.expose_secret().lines())
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        }
        (true, None) => Vec::new(),
    };
    let mut sinks = Vec::new();
    for (kind, name, urls) in [
        (SinkKind::Json, "--notify-webhook", webhooks),
        (SinkKind::Slack, "--notify-slack", slack),
    ] {
        for (i, url) in urls.into_iter().enumerate() {
            let ok = reqwest::Url::parse(&url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::Bad {
                    name,
                    reason: format!("URL #{} is not an http(s) URL", i + 1),
                });
            }
            sinks.push(Sink { kind, url });
        }
    }
    Ok(sinks)
}

/// The secret-zero settings, when `vault-addr` is given.
fn resolve_vault(
    f: &FileConfig,
    file: &FileConfig,
    token: Option<SecretString>,
) -> Result<Option<VaultServeConfig>, ConfigError> {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    // Flags (or env) win over the file; checked even without Vault, so a bad list never waits
    // for the day Vault is turned on.
    let allowed_policies = baton_core::secrets::AllowedPolicies::new(
        (f.vault_allowed_policies.iter())
            .chain(&file.vault_allowed_policies)
            .next()
            .into_iter()
            .flatten(),
    )
    .map_err(|reason| ConfigError::Bad {
        name: "--vault-allowed-policies",
        reason,
    })?;
    let token_file = f.vault_token_file.clone().or(file.vault_token_file.clone());
    let Some(addr) = pick(&f.vault_addr, &file.vault_addr) else {
        if token_file.is_some() {
            return Err(ConfigError::Bad {
                name: "--vault-token-file",
                reason: "given without --vault-addr".into(),
            });
        }
        return Ok(None);
    };
    if !(addr.starts_with("http://") || addr.starts_with("https://")) {
        return Err(ConfigError::Bad {
            name: "--vault-addr",
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    let token = match (token_file, token) {
        (Some(path), _) => read_secret(&path, "--vault-token-file")?,
        (None, Some(t)) => t,
        (None, None) => return Err(ConfigError::Missing(
            "a Vault token for --vault-addr (--vault-token-file, BATON_VAULT_TOKEN or VAULT_TOKEN)",
        )),
    };
    let duration = |name: &'static str, value: Option<String>, default: &str| {
        let text = value.unwrap_or_else(|| default.into());
        let d = baton_core::spec::load::parse_duration(&text)
            .map_err(|reason| ConfigError::Bad { name, reason })?;
        if d < Duration::from_secs(1) {
            return Err(ConfigError::Bad {
                name,
                reason: "must be at least 1s".into(),
            });
        }
        Ok(d)
    };
    let gatekeeper_url = pick(&f.gatekeeper_url, &file.gatekeeper_url);
    if gatekeeper_url.is_none() {
        if let Some(listen) = f.listen.or(file.listen) {
            if listen.ip().is_unspecified() {
                return Err(ConfigError::Missing(
                    "--gatekeeper-url (tasks cannot reach the unspecified listen address)",
                ));
            }
        }
    }
    Ok(Some(VaultServeConfig {
        allowed_policies,
        addr,
        token,
        approle_mount: pick(&f.vault_approle_mount, &file.vault_approle_mount)
            .unwrap_or_else(|| "approle".into()),
        gatekeeper_url,
        task_max_age: duration(
            "--task-max-age",
            pick(&f.task_max_age, &file.task_max_age),
            "120s",
        )?,
        host_check: f
            .gatekeeper_host_check
            .or(file.gatekeeper_host_check)
            .unwrap_or(true),
        wrap_ttl: duration("--wrap-ttl", pick(&f.wrap_ttl, &file.wrap_ttl), "60s")?,
    }))
}

fn read_secret(path: &Path, name: &'static str) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Bad {
        name,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(ConfigError::Bad {
            name,
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(SecretString::from(trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn flags_win_over_file_and_the_webhook_secret_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        std::fs::write(
            &cfg,
            format!(
                "repo: /file/repo\nref: dev\nstate-dir: /s\nmarathon: http://m\npoll-interval: 5m\nwebhook-secret-file: {}\n",
                secret.display()
            ),
        )
        .unwrap();
        let file = read_file(&cfg).unwrap();
        let flags = FlagConfig {
            file: FileConfig {
                reference: Some("main".into()),
                ..FileConfig::default()
            },
            ..FlagConfig::default()
        };
        let c = resolve(flags, file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.repo, "/file/repo");
        assert_eq!(c.reference, "main");
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert_eq!(
            c.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("from-file")
        );
        assert_eq!(c.cache_dir, PathBuf::from("/s/git-cache"));
        assert_eq!(c.marathon.url, "http://m");

        assert!(c.api_token.is_none());

        // A token in the repo URL becomes the git credentials; the URL is kept without it.
        let flags = FlagConfig {
            file: FileConfig {
                repo: Some("https://ci:glpat-s3cret@git.example/ops.git".into()),
                ..FileConfig::default()
            },
            api_token: Some(SecretString::from("sync-token".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags, file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.repo, "https://git.example/ops.git");
        let auth = c.git_auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.expose_secret()),
            ("ci", "glpat-s3cret")
        );
        assert_eq!(c.api_token.as_ref().unwrap().expose_secret(), "sync-token");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("glpat-s3cret") && !shown.contains("sync-token"),
            "{shown}"
        );

        // No webhook secret is no error: `serve` then accepts no webhook (and says so).
        let mut no_secret = file;
        no_secret.webhook_secret_file = None;
        let c = resolve(FlagConfig::default(), no_secret, MarathonConfig::new("")).unwrap();
        assert!(c.webhook_secret.is_none());
    }

    #[test]
    fn vault_settings_are_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s.reconciler-token\n").unwrap();
        let base = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            ..FileConfig::default()
        };
        let flags = |file: FileConfig| FlagConfig {
            file,
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let none = resolve(
            flags(base.clone()),
            FileConfig::default(),
            MarathonConfig::new(""),
        );
        assert!(none.unwrap().vault.is_none());

        let with = FileConfig {
            vault_addr: Some("http://vault:8200".into()),
            vault_token_file: Some(token.clone()),
            task_max_age: Some("30s".into()),
            gatekeeper_host_check: Some(false),
            ..base.clone()
        };
        let c = resolve(
            flags(with.clone()),
            FileConfig::default(),
            MarathonConfig::new(""),
        )
        .unwrap()
        .vault
        .unwrap();
        assert_eq!(c.token.expose_secret(), "s.reconciler-token");
        assert_eq!(c.approle_mount, "approle");
        assert_eq!(c.task_max_age, Duration::from_secs(30));
        assert_eq!(c.wrap_ttl, Duration::from_secs(60));
        assert!(!c.host_check);
        assert!(c.gatekeeper_url.is_none());
        assert!(!format!("{c:?}").contains("reconciler-token"));

        // No token at all, or a listen address tasks cannot reach without --gatekeeper-url.
        let no_token = FileConfig {
            vault_token_file: None,
            ..with.clone()
        };
        assert!(matches!(
            resolve(
                flags(no_token),
                FileConfig::default(),
                MarathonConfig::new("")
            ),
            Err(ConfigError::Missing(_))
        ));
        let any = FileConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8088))),
            ..with
        };
        assert!(resolve(flags(any), FileConfig::default(), MarathonConfig::new("")).is_err());
    }

    /// `vault-allowed-policies`: a config-file list, the flag (or env) winning over it; names
    /// canonical; `root` refused with the setting named, even without Vault.
    #[test]
    fn vault_allowed_policies_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(
            &cfg,
            format!(
                "repo: /r\nstate-dir: /s\nmarathon: http://m\nvault-addr: http://v:8200\nvault-token-file: {}\nvault-allowed-policies: [\" Metrics-Read\", shared]\n",
                token.display()
            ),
        )
        .unwrap();
        let file = read_file(&cfg).unwrap();
        let flags = |list: Option<Vec<&str>>| FlagConfig {
            file: FileConfig {
                vault_allowed_policies: list.map(|l| l.into_iter().map(String::from).collect()),
                ..FileConfig::default()
            },
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let allowed = |c: ServeConfig| -> Vec<String> {
            let v = c.vault.unwrap();
            v.allowed_policies.names().map(String::from).collect()
        };
        let c = resolve(flags(None), file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(allowed(c), ["metrics-read", "shared"]);
        let c = resolve(
            flags(Some(vec!["Other "])),
            file.clone(),
            MarathonConfig::new(""),
        )
        .unwrap();
        assert_eq!(allowed(c), ["other"]);
        let e = resolve(
            flags(Some(vec!["a", " ROOT"])),
            file.clone(),
            MarathonConfig::new(""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--vault-allowed-policies") && e.contains("`root`"),
            "{e}"
        );
        let no_vault = FileConfig {
            vault_addr: None,
            vault_token_file: None,
            ..file
        };
        assert!(resolve(
            flags(Some(vec!["root"])),
            no_vault.clone(),
            MarathonConfig::new("")
        )
        .is_err());
        let c = resolve(flags(None), no_vault, MarathonConfig::new("")).unwrap();
        assert!(c.vault.is_none());
    }

    #[test]
    fn notification_sinks_from_flags_file_and_bad_urls() {
        use crate::daemon::notifications::SinkKind;
        let dir = tempfile::tempdir().unwrap();
        let slack = dir.path().join("slack");
        std::fs::write(
            &slack,
            "# team channel\nhttps://hooks.slack.test/T0/B0/tok\n\n",
        )
        .unwrap();
        let base = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            notify_webhook: Some(vec!["http://127.0.0.1:9/a".into()]),
            notify_slack_file: Some(slack),
            ..FileConfig::default()
        };
        let flags = || FlagConfig {
            webhook_secret: Some(SecretString::from("s".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags(), base.clone(), MarathonConfig::new("")).unwrap();
        let got: Vec<(SinkKind, &str)> =
            c.notify.iter().map(|s| (s.kind, s.url.as_str())).collect();
        assert_eq!(
            got,
            [
                (SinkKind::Json, "http://127.0.0.1:9/a"),
                (SinkKind::Slack, "https://hooks.slack.test/T0/B0/tok")
            ]
        );
        assert!(!format!("{c:?}").contains("B0/tok"), "a sink URL leaked");

        // Flags win over the file, per kind.
        let mut f = flags();
        f.notify_webhook = vec![
            SecretString::from("https://a.test/1".to_string()),
            SecretString::from("https://b.test/2".to_string()),
        ];
        let c = resolve(f, base.clone(), MarathonConfig::new("")).unwrap();
        let kinds: Vec<SinkKind> = c.notify.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SinkKind::Json, SinkKind::Json, SinkKind::Slack]);

        let mut f = flags();
        f.notify_slack = vec![SecretString::from("ftp://x/secret-token".to_string())];
        let e = resolve(f, base, MarathonConfig::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--notify-slack") && !e.contains("secret-token"),
            "{e}"
        );
    }

    /// The Marathon client settings have config-file keys too; secrets come from files, and
    /// whatever the flags (or the environment) gave wins.
    #[test]
    fn marathon_settings_from_the_file() {
        use baton_marathon::marathon::Auth;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "m-pass\n").unwrap();
        let file = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("https://marathon:8443".into()),
            marathon_timeout: Some("5s".into()),
            marathon_ca: Some("/etc/baton/ca.pem".into()),
            marathon_user: Some("baton".into()),
            marathon_password_file: Some(password),
            ..FileConfig::default()
        };
        let flags = || FlagConfig {
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags(), file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.marathon.timeout, Duration::from_secs(5));
        assert_eq!(c.marathon.ca_cert, Some(PathBuf::from("/etc/baton/ca.pem")));
        let Some(Auth::Basic { user, password }) = &c.marathon.auth else {
            panic!("{:?}", c.marathon.auth);
        };
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("baton", "m-pass")
        );
        assert!(!format!("{c:?}").contains("m-pass"));

        // A token given by flag or environment wins over the file's user.
        let mut m = MarathonConfig::new("");
        m.auth = Some(Auth::Token(SecretString::from("dcos".to_string())));
        let c = resolve(flags(), file, m).unwrap();
        assert!(matches!(c.marathon.auth, Some(Auth::Token(_))));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(&cfg, "repos: x\n").unwrap();
        assert!(read_file(&cfg).is_err());
    }
}
