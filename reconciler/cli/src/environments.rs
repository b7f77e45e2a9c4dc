//! `baton diff-env` and `baton promote` (docs/environments.md), and how `plan`, `apply`,
//! `drift` find an environment's Marathon (and `plan` its Vault address).

use std::path::PathBuf;

use baton::commands::{exit, CommandError, Format};
use baton::config::{self, ConfigError, MarathonArgs, Sources};
use baton_core::environment::Environment;
use baton_marathon::marathon::MarathonConfig;
use clap::Args;

#[derive(Args)]
pub struct DiffEnvArgs {
    /// The environment promoted from (e.g. `qa`).
    pub from: String,
    /// The environment promoted to (e.g. `prod`).
    pub to: String,
    /// Only these apps (ids like `/shop/web`); all by default.
    pub apps: Vec<String>,
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text, alias = "format")]
    pub output: Format,
}

#[derive(Args)]
pub struct PromoteArgs {
    /// The environment promoted from.
    pub from: String,
    /// The environment whose overlay is written.
    pub to: String,
    /// The apps to promote (ids like `/shop/web`).
    #[arg(required = true)]
    pub apps: Vec<String>,
    /// Only these fields (JSON pointers, comma-separated: `/container/docker/image,/env/MODE`);
    /// every differing field by default.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// Commit the overlay files written on the current branch (`git commit`); without it they
    /// are left in the working tree for review.
    #[arg(long)]
    pub commit: bool,
    /// The repo directory (a git working tree for `--commit`).
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
}

/// `baton diff-env`.
pub fn diff_env(args: DiffEnvArgs, out: &mut dyn std::io::Write) -> Result<u8, CommandError> {
    baton::environment::diff_env(
        &args.repo,
        &args.from,
        &args.to,
        &args.apps,
        args.output,
        out,
    )
}

/// `baton promote`: exit 0 written (or nothing differed), 1 refused.
pub fn promote(args: PromoteArgs, out: &mut dyn std::io::Write) -> Result<u8, CommandError> {
    let promoted =
        baton::environment::promote(&args.repo, &args.from, &args.to, &args.apps, &args.fields)?;
    if promoted.files.is_empty() {
        writeln!(
            out,
            "nothing to promote: {} already runs what {} runs there",
            args.to, args.from
        )?;
        return Ok(exit::OK);
    }
    for (file, fields) in &promoted.files {
        writeln!(out, "wrote {}: {}", file.display(), fields.join(", "))?;
    }
    if args.commit {
        baton::environment::commit_promotion(&args.repo, &args.from, &args.to, &promoted)?;
        writeln!(out, "committed on the current branch")?;
    } else {
        writeln!(
            out,
            "review with `git diff`, then commit (or run again with --commit)"
        )?;
    }
    Ok(exit::OK)
}

/// The environment `--environment` names, read from the repo's `baton.yaml` once (`None`
/// without the flag): its Marathon and Vault address are the defaults of the flags.
pub fn settings(
    repo: &std::path::Path,
    environment: Option<&str>,
) -> Result<Option<Environment>, CommandError> {
    environment
        .map(|name| baton::environment::settings(repo, name))
        .transpose()
}

/// The Marathon of `plan`/`apply`/`drift`: the environment's (its URL unless `--marathon`
/// overrides it, its credentials unless the client flags give some) or `--marathon` alone.
pub fn marathon(
    environment: Option<&Environment>,
    url: Option<String>,
    auth: &MarathonArgs,
    sources: &Sources,
) -> Result<Result<MarathonConfig, CommandError>, ConfigError> {
    let Some(env) = environment else {
        let url = url.ok_or(ConfigError::Missing("--marathon (or --environment)"))?;
        return Ok(Ok(config::marathon(url, auth, sources)?));
    };
    let base = config::marathon(String::new(), auth, sources)?;
    Ok(
        baton::environment::marathon_for(env, url, base, &config::process_env)
            .map_err(CommandError::from),
    )
}
