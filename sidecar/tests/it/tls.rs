//! TLS with a custom CA (`VAULT_CACERT`, `SSL_CERT_FILE`): a CA and a server certificate minted
//! with rcgen, a rustls listener in front of OpenBao.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use tokio_rustls::rustls;

use crate::openbao::bao;
use crate::support::{baton_env, output, text};

/// A TLS-terminating proxy to `backend` (host:port) on a free loopback port; returns its https
/// URL and the CA's PEM.
pub async fn tls_front(backend: String) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (format!("https://{addr}"), ca.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_ca_is_trusted_and_required() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "over-tls"})))
        .await;
    let backend = bao.url().trim_start_matches("http://").to_owned();
    let (url, ca_pem) = tls_front(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let run = |ca: bool| {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", &url)
            .env("VAULT_TOKEN", bao.root_token())
            .env("K", "vault:kv1/app#k")
            .args(["--max-wait", "1s"]);
        if ca {
            cmd.env("VAULT_CACERT", &ca_file);
        }
        cmd.args(["--", "sh", "-c", "printf %s \"$K\""]);
        output(cmd)
    };
    let out = run(true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over-tls");
    // Without the CA the server is not trusted: Vault counts as unreachable (69).
    let out = run(false).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

/// `SSL_CERT_FILE` replaces the roots baton-env trusts, as for OpenSSL and Go programs: a
/// private CA installed that way is trusted without `VAULT_CACERT` (it used to be ignored: the
/// client trusted only the compiled-in roots and exited 69).
#[tokio::test(flavor = "multi_thread")]
async fn ssl_cert_file_is_trusted() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "via-ssl-cert-file"})))
        .await;
    let backend = bao.url().trim_start_matches("http://").to_owned();
    let (url, ca_pem) = tls_front(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("bundle.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", &url)
        .env("VAULT_TOKEN", bao.root_token())
        .env("SSL_CERT_FILE", &ca_file)
        .env("K", "vault:kv1/app#k")
        .args(["--max-wait", "1s", "--", "sh", "-c", "printf %s \"$K\""]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-ssl-cert-file");
}

/// An `SSL_CERT_FILE` that holds no certificate is a configuration error naming the variable
/// (exit 64), not a silent fall back to other roots.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_ssl_cert_file_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for file in [empty, dir.path().join("missing.pem")] {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", "https://127.0.0.1:9")
            .env("VAULT_TOKEN", "t")
            .env("SSL_CERT_FILE", &file)
            .env("K", "vault:kv1/app#k")
            .args(["--max-wait", "1s", "--", "true"]);
        let out = output(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {stderr}", file.display());
        assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    }
}
