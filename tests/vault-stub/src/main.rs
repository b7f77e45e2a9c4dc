//! vault-stub: run the Vault API stub on loopback for benchmarks and manual tests.
//!
//! Usage: vault-stub [--port N] [--root-token T]
//! Prints `VAULT_ADDR=...` on stdout once listening, then serves until SIGTERM/SIGINT.
//! Seed it over HTTP with the root token like a Vault dev server (KV v1 at `kv1/`,
//! KV v2 at `secret/`).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use vault_stub::{spawn, StubConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut config = StubConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let port: u16 = args.next().context("--port needs a value")?.parse()?;
                config.addr = SocketAddr::from(([127, 0, 0, 1], port));
            }
            "--root-token" => {
                config.root_token = args.next().context("--root-token needs a value")?
            }
            "-h" | "--help" => {
                println!("usage: vault-stub [--port N] [--root-token T]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let stub = spawn(config).await?;
    println!("VAULT_ADDR={}", stub.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stub.shutdown().await;
    Ok(())
}
