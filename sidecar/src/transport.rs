//! How baton-env reaches Vault and the gatekeeper whatever the container image holds: the
//! certificates it trusts and how it resolves `localhost`. The static build links no NSS and
//! may run in an image without a CA bundle (`FROM scratch`, distroless-static), so neither may
//! come from the image alone.
//!
//! Trusted roots, in order (docs/install.md, "baton-env in any image"):
//! 1. `SSL_CERT_FILE` / `SSL_CERT_DIR` when either is set: exactly what they hold (as OpenSSL
//!    and Go read them); set but holding no certificate is a configuration error, never a
//!    silent fallback.
//! 2. Else the image's CA bundle at the usual places (`/etc/ssl/certs/ca-certificates.crt`,
//!    `/etc/pki/tls/certs/ca-bundle.crt`, ...), when there is one.
//! 3. Else Mozilla's roots compiled into the binary (`webpki-roots`).
//!
//! plus `VAULT_CACERT` / `--ca-cert` on top of any of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why the trusted certificates could not be set up. Paths and variable names only.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{var} is set, but no CA certificate could be loaded from it{}", detail(.problems))]
    EnvUnusable {
        var: &'static str,
        problems: Vec<String>,
    },
    #[error("cannot read CA certificate {path}")]
    CaRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid CA certificate {path}: {reason}")]
    CaParse { path: String, reason: String },
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

fn detail(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    }
}

/// Where the base set of trusted roots came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsOrigin {
    /// `SSL_CERT_FILE` or `SSL_CERT_DIR`.
    Env(&'static str),
    /// The image's CA bundle.
    Image,
    /// Mozilla's roots compiled in.
    Embedded,
}

impl std::fmt::Display for RootsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(var) => write!(f, "{var}"),
            Self::Image => f.write_str("the image's CA bundle"),
            Self::Embedded => f.write_str("the compiled-in Mozilla roots (no CA bundle found)"),
        }
    }
}

/// The base roots from what the certificate loader found (pure): `env_var` is the variable
/// that chose the files, if any; `found` the certificates read, `problems` what could not be.
pub fn base_roots(
    env_var: Option<&'static str>,
    found: Vec<CertificateDer<'static>>,
    problems: Vec<String>,
) -> Result<(RootCertStore, RootsOrigin), TrustError> {
    let mut store = RootCertStore::empty();
    let (added, _unparsable) = store.add_parsable_certificates(found);
    match env_var {
        Some(var) if added == 0 => Err(TrustError::EnvUnusable { var, problems }),
        Some(var) => Ok((store, RootsOrigin::Env(var))),
        None if added > 0 => Ok((store, RootsOrigin::Image)),
        None => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Ok((store, RootsOrigin::Embedded))
        }
    }
}

/// The roots to trust: the base set (module docs) plus the certificates of `extra_ca`.
pub fn roots(extra_ca: Option<&Path>) -> Result<RootCertStore, TrustError> {
    let env_var = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .find(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    let loaded = rustls_native_certs::load_native_certs();
    let problems = loaded.errors.iter().map(ToString::to_string).collect();
    let (mut store, origin) = base_roots(env_var, loaded.certs, problems)?;
    tracing::debug!(
        roots = store.len(),
        "trusting the CA certificates of {origin}"
    );
    if let Some(path) = extra_ca {
        for cert in read_pem(path)? {
            store.add(cert).map_err(|e| TrustError::CaParse {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// Every certificate of a PEM file; none is an error (the flag promised one).
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TrustError::CaRead {
        path: shown(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::CaParse {
            path: shown(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::CaParse {
            path: shown(),
            reason: "no PEM certificate in the file".to_owned(),
        });
    }
    Ok(certs)
}

/// A reqwest client builder with baton-env's roots and resolver: what every client of
/// baton-env starts from.
pub fn client_builder(extra_ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Tls)?
        .with_root_certificates(roots(extra_ca)?)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(Resolver)))
}

/// Name resolution: `localhost` and `*.localhost` are the loopback addresses without asking
/// anyone (RFC 6761, 6.3), so `VAULT_ADDR=http://localhost:8200` works in an image without
/// `/etc/hosts`; every other name goes to the C library's resolver (musl's, in the static
/// build: `/etc/hosts` and `/etc/resolv.conf`, no NSS). IP addresses never reach a resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver;

/// The loopback addresses, IPv4 first (what most local servers bind).
const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Whether RFC 6761 makes `host` a loopback name.
pub fn is_localhost(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = if is_localhost(&host) {
                LOOPBACK.iter().map(|ip| SocketAddr::new(*ip, 0)).collect()
            } else {
                // getaddrinfo blocks: off the runtime's thread, as reqwest's own resolver does.
                tokio::task::spawn_blocking(move || {
                    (host.as_str(), 0).to_socket_addrs().map(Iterator::collect)
                })
                .await??
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_env_or_image_bundle_the_embedded_roots_are_trusted() {
        let (store, origin) = base_roots(None, Vec::new(), Vec::new()).unwrap();
        assert_eq!(origin, RootsOrigin::Embedded);
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(store.len() > 100, "{}", store.len());
    }

    #[test]
    fn an_image_bundle_replaces_the_embedded_roots() {
        let ca = rcgen_ca();
        let (store, origin) = base_roots(None, vec![ca], Vec::new()).unwrap();
        assert_eq!((origin, store.len()), (RootsOrigin::Image, 1));
    }

    #[test]
    fn an_env_variable_with_no_certificate_is_an_error_naming_it() {
        let problems = vec!["could not load PEM file \"/nope\"".to_owned()];
        let err = base_roots(Some("SSL_CERT_FILE"), Vec::new(), problems).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("SSL_CERT_FILE") && text.contains("/nope"),
            "{text}"
        );
        // Garbage that is no certificate counts as none.
        let junk = CertificateDer::from(vec![1, 2, 3]);
        assert!(base_roots(Some("SSL_CERT_DIR"), vec![junk], Vec::new()).is_err());
    }

    #[test]
    fn an_env_variable_with_certificates_is_used_alone() {
        let (store, origin) = base_roots(Some("SSL_CERT_FILE"), vec![rcgen_ca()], vec![]).unwrap();
        assert_eq!(
            (origin, store.len()),
            (RootsOrigin::Env("SSL_CERT_FILE"), 1)
        );
    }

    #[test]
    fn localhost_names_are_loopback() {
        for name in [
            "localhost",
            "LOCALHOST.",
            "vault.localhost",
            "a.b.localhost.",
        ] {
            assert!(is_localhost(name), "{name}");
        }
        for name in ["localhost.example", "mylocalhost", "vault", "127.0.0.1"] {
            assert!(!is_localhost(name), "{name}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_without_the_c_library() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = Resolver.resolve(name).await.unwrap().collect();
        assert_eq!(
            addrs.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
            LOOPBACK
        );
    }

    fn rcgen_ca() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }
}
