//! The static `baton-env` (the release build for `<arch>-unknown-linux-musl`, which
//! `scripts/test.sh` builds first) is what goes into any container image: static, stripped,
//! under 10 MB, and it reads secrets from OpenBao inside an empty root filesystem (a chroot
//! holding only the binary, a static child program and `/dev/null`): no C library, NSS, CA
//! bundle, `/etc/hosts` or `/etc/resolv.conf` to lean on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::openbao::bao;
use crate::support::{missing, output, text, BIN};
use crate::tls::tls_front;

/// `uname -m`'s answer for this build: the musl triple's first part.
const ARCH: &str = std::env::consts::ARCH;

/// The static build: `$BATON_ENV_STATIC`, else `<target dir>/<arch>-unknown-linux-musl/release/
/// baton-env` beside the debug binary this test was built with.
fn static_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("BATON_ENV_STATIC") {
        Some(p) => PathBuf::from(p),
        None => Path::new(BIN)
            .parent()?
            .parent()?
            .join(format!("{ARCH}-unknown-linux-musl/release/baton-env")),
    };
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} is absent; build it with `cargo build --release --locked --target \
         {ARCH}-unknown-linux-musl -p baton-sidecar --bin baton-env` (scripts/test.sh does)",
        path.display()
    );
    (!missing("the static baton-env", &why)).then_some(path)
}

/// What the ELF headers say of a binary (64-bit little-endian, as on x86_64 and aarch64).
#[derive(Debug)]
struct Elf {
    /// A `PT_INTERP` program header: the binary needs a dynamic loader (and so a C library).
    interpreter: bool,
    /// A `.symtab` section: the binary is not stripped.
    symbols: bool,
}

fn elf(path: &Path) -> Elf {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is no ELF file", path.display());
    assert_eq!(
        (bytes[4], bytes[5]),
        (2, 1),
        "64-bit little-endian ELF expected"
    );
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let interpreter = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3); // PT_INTERP
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C));
    let symbols = (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == 2); // SHT_SYMTAB
    Elf {
        interpreter,
        symbols,
    }
}

#[test]
fn the_static_build_is_static_stripped_and_under_10_mb() {
    let Some(bin) = static_binary() else { return };
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size < 10 * 1024 * 1024, "{}: {size} bytes", bin.display());
    let header = elf(&bin);
    assert!(
        !header.interpreter,
        "{} needs a dynamic loader",
        bin.display()
    );
    assert!(!header.symbols, "{} is not stripped", bin.display());
    // The check itself can tell: the debug build is dynamic and has its symbols.
    let debug = elf(Path::new(BIN));
    assert!(debug.interpreter && debug.symbols, "{debug:?}");
}

/// The child: prints each variable named on its command line as `NAME=value`, or `NAME unset`.
/// Compiled static for the musl target (no C library in the empty root either).
const PRINTENV: &str = r#"fn main() {
    for name in std::env::args().skip(1) {
        match std::env::var(&name) {
            Ok(value) => println!("{name}={value}"),
            Err(_) => println!("{name} unset"),
        }
    }
}
"#;

/// A system program: from PATH, else /usr/sbin or /sbin (not always on a test's PATH).
fn system_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// An empty root: the static baton-env at `/baton-env`, the static child at `/printenv`,
/// `/dev/null`. `None` (after saying why) when this machine cannot make or enter one.
fn empty_root(bin: &Path, dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        skip(
            "it needs root for chroot(2) and mknod(2) (an unprivileged user cannot make /dev/null)",
        );
        return None;
    }
    let (Some(chroot), Some(mknod)) = (system_tool("chroot"), system_tool("mknod")) else {
        skip("the chroot or mknod program is absent");
        return None;
    };
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::copy(bin, root.join("baton-env")).unwrap();
    let source = dir.join("printenv.rs");
    std::fs::write(&source, PRINTENV).unwrap();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args(["--edition", "2021", "-C", "opt-level=1", "--target"])
        .arg(format!("{ARCH}-unknown-linux-musl"))
        .arg("-o")
        .arg(root.join("printenv"))
        .arg(&source)
        .output()
        .unwrap();
    if !built.status.success() {
        skip(&format!(
            "rustc cannot build for {ARCH}-unknown-linux-musl: {}",
            text(&built.stderr)
        ));
        return None;
    }
    assert!(
        !elf(&root.join("printenv")).interpreter,
        "the child is not static"
    );
    let mknod = Command::new(mknod)
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success(), "mknod /dev/null failed as root");
    // The container runtime may still refuse chroot(2) (no CAP_SYS_CHROOT).
    let probe = Command::new(&chroot)
        .arg(&root)
        .args(["/printenv", "HOME"])
        .env_clear()
        .output()
        .unwrap();
    if !probe.status.success() {
        skip(&format!("chroot is refused here: {}", text(&probe.stderr)));
        return None;
    }
    let mut entries: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["baton-env", "dev", "printenv"]);
    Some((chroot, root))
}

fn skip(why: &str) {
    std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skipped the_static_build_reads_openbao_in_an_empty_root: {why}\n"),
    )
    .ok();
}

/// `chroot ROOT /baton-env --max-wait 5s -- /printenv K VAULT_TOKEN` with only `vars` in its
/// environment.
async fn in_root(
    (chroot, root): &(PathBuf, PathBuf),
    vars: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(chroot);
    cmd.arg(root)
        .args(["/baton-env", "--max-wait", "5s", "--"])
        .args(["/printenv", "K", "VAULT_TOKEN"])
        .env_clear()
        .env("BATON_LOG", "debug")
        .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    output(cmd).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_static_build_reads_openbao_in_an_empty_root() {
    let Some(bin) = static_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = empty_root(&bin, dir.path()) else {
        return;
    };
    let chrooted = &root;
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "from-openbao"})))
        .await;
    let port = bao.url().rsplit(':').next().unwrap().to_owned();
    let reference = ("K", "vault:kv1/app#k");
    let token = ("VAULT_TOKEN", bao.root_token());
    let expected = "K=from-openbao\nVAULT_TOKEN unset\n";

    // Plain HTTP by address and by `localhost`: no /etc/hosts, no resolv.conf, no NSS.
    for host in ["127.0.0.1", "localhost"] {
        let addr = format!("http://{host}:{port}");
        let out = in_root(chrooted, &[("VAULT_ADDR", &addr), token, reference]).await;
        assert_eq!(out.status.code(), Some(0), "{host}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{host}");
    }

    // TLS: with no CA file in the root the compiled-in roots are used, and they do not trust a
    // private CA (69: Vault unreachable); the CA given by VAULT_CACERT or SSL_CERT_FILE is.
    let backend = bao.url().trim_start_matches("http://").to_owned();
    let (url, ca_pem) = tls_front(backend).await;
    std::fs::write(root.1.join("ca.pem"), ca_pem).unwrap();
    let out = in_root(chrooted, &[("VAULT_ADDR", &url), token, reference]).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("compiled-in"),
        "the roots' origin is not logged: {}",
        text(&out.stderr)
    );
    for var in ["VAULT_CACERT", "SSL_CERT_FILE"] {
        let out = in_root(
            chrooted,
            &[("VAULT_ADDR", &url), (var, "/ca.pem"), token, reference],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{var}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{var}");
    }
}
