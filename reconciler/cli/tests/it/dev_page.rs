//! `baton dev --page-listen ADDR`: the binary serves its read-only status page at that address
//! and prints it on start; SIGINT stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn baton_dev_serves_its_page_at_the_address_given() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("baton.yaml"), "owner: dev\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["dev", "--repo"])
        .arg(repo.path())
        .args(["--page-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a `status page:` line");
        if line.starts_with("status page:") {
            break line;
        }
    };
    let url = format!("http://127.0.0.1:{port}/");
    assert!(line.contains(&url), "{line}");
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    assert!(page.text().await.unwrap().contains("<title>Baton</title>"));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await;
    let Ok(waited) = waited else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("baton dev did not stop on SIGINT within 60 s");
    };
    assert_eq!(waited.unwrap().unwrap().code(), Some(0));
}
