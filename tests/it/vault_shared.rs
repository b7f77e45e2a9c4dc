//! Several Batons on one Vault, against OpenBao (a real Vault-API server, `bao server -dev`)
//! and the dev scheduler. Each reconciler runs with the token `docs/security.md` prescribes for
//! its owner (the policy is read from that page), never root.
//!
//! - Ownership: two owners with the same app ids on one Vault create, keep and delete only
//!   their own objects; hand-made `baton-*` objects and those of the earlier `baton-<app>`
//!   naming are never touched and are reported as unmanaged (`/api/status`); a name held by an
//!   object that is not Baton's blocks its app; Vault deletions over the budget are held.
//! - The allow-list: an app asking for a policy the operator did not allow is left untouched;
//!   an allowed one (named in another case) is granted.
//! - The gatekeeper: `503` + `Retry-After` until a cycle has read Vault; secret ids usable
//!   only from the address that asked for them.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::config::VaultServeConfig;
use baton::secret_zero::gatekeeper::{
    self, AppGate, GateConfig, Gatekeeper, StaticTasks, TaskInfo,
};
use baton::secret_zero::vault_admin::{VaultAdmin, VaultAdminConfig};
use baton_core::secrets::{self, AllowedPolicies};
use baton_core::spec::AppId;
use baton_e2e::devsched::DevScheduler;
use baton_e2e::openbao::{self, OpenBao};
use baton_e2e::wait_until;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A token with the reconciler's documented policy (see [`openbao::reconciler_policy`]).
async fn reconciler_token(bao: &OpenBao, owner: &str) -> String {
    bao.reconciler_token(owner).await
}

fn vault_config(bao_url: &str, token: &str, allowed: &[&str]) -> VaultServeConfig {
    VaultServeConfig {
        addr: bao_url.to_owned(),
        token: token.to_owned().into(),
        approle_mount: "approle".into(),
        gatekeeper_url: None,
        task_max_age: Duration::from_secs(120),
        host_check: true,
        wrap_ttl: Duration::from_secs(60),
        allowed_policies: AllowedPolicies::new(allowed).unwrap(),
    }
}

/// `baton serve` in process on a plain directory.
struct Serve {
    url: String,
    http: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Serve {
    async fn start(repo: &Path, marathon: &str, state: &Path, vault: VaultServeConfig) -> Serve {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = baton::config::ServeConfig {
            vault: Some(vault),
            ..baton_e2e::serve_config(repo.display().to_string(), marathon, state, addr)
        };
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            baton::daemon::serve::serve(config, listener, s)
                .await
                .unwrap();
        });
        Serve {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop,
            task,
        }
    }

    async fn status(&self) -> Value {
        let r = self.http.get(format!("{}/api/status", self.url)).send();
        r.await.unwrap().json().await.unwrap()
    }

    /// `POST /api/sync` (loopback: no token needed).
    async fn sync(&self) {
        let r = self.http.post(format!("{}/api/sync", self.url)).send();
        assert_eq!(r.await.unwrap().status().as_u16(), 202);
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("serve stops")
            .unwrap();
    }
}

fn write(dir: &Path, rel: &str, doc: Value) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    baton_e2e::replace_file(&path, &doc.to_string());
}

/// An app that reads a secret (it need not run baton-env here: only its Vault objects matter).
fn reader(extra: Value) -> Value {
    let mut app = json!({
        "cmd": "sleep 600", "cpus": 0.01, "mem": 16, "instances": 1,
        "env": {"DB_PASSWORD": "vault:secret/web#password"}
    });
    if let Value::Object(m) = extra {
        app.as_object_mut().unwrap().extend(m);
    }
    app
}

/// The names (kind + name) of the unmanaged objects in a status or plan `vault` block.
fn unmanaged(vault: &Value) -> BTreeSet<String> {
    vault["unmanaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{} {}",
                u["kind"].as_str().unwrap(),
                u["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn app_sync<'a>(status: &'a Value, id: &str) -> &'a str {
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .and_then(|a| a["sync"].as_str())
        .unwrap_or("absent")
}

/// Two Batons (owners `shop` and `shop-qa`, the same app id `/web`, one Vault, their own
/// Marathons), each with the documented token, beside hand-made `baton-*` objects, objects of
/// the earlier naming, a hand-made object under `shop`'s prefix that takes an app's name, and
/// six of `shop`'s own objects whose apps are gone (over the delete budget of 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batons_on_one_vault_touch_only_their_own_objects() {
    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    bao.root(
        "POST",
        "secret/data/web",
        Some(json!({"data": {"password": "pw"}})),
    )
    .await;
    let shop_token = reconciler_token(&bao, "shop").await;
    let qa_token = reconciler_token(&bao, "shop-qa").await;

    // Objects that are not Baton's (or not provably), made as root.
    let mut foreign: Vec<(&str, String)> = Vec::new();
    // The lock-out: the reconciler's own policy under a `baton-` name.
    bao.write_policy("baton-reconciler", &openbao::reconciler_policy("shop"))
        .await;
    foreign.push(("policy", "baton-reconciler".into()));
    for i in 0..12 {
        let name = format!("baton-teamb-{i}");
        bao.root(
            "POST",
            &format!("auth/approle/role/{name}"),
            Some(json!({"token_policies": ["default"]})),
        )
        .await;
        foreign.push(("role", name));
    }
    // The earlier naming (`baton-<app>`, old header): no owner, so no proof.
    let old = "# Managed by Baton for /web; changes are overwritten.\npath \"secret/data/web\" {\n  capabilities = [\"read\"]\n}\n";
    bao.write_policy("baton-web", old).await;
    bao.root(
        "POST",
        "auth/approle/role/baton-web",
        Some(json!({"token_policies": ["baton-web"]})),
    )
    .await;
    foreign.push(("policy", "baton-web".into()));
    foreign.push(("role", "baton-web".into()));
    // Under shop's prefix but without the marker; and one taking /taken's name.
    bao.write_policy(
        "baton-shop_hand",
        "path \"secret/data/x\" { capabilities = [\"read\"] }\n",
    )
    .await;
    foreign.push(("policy", "baton-shop_hand".into()));
    bao.root(
        "POST",
        "auth/approle/role/baton-shop_taken",
        Some(json!({"token_policies": ["default"]})),
    )
    .await;
    foreign.push(("role", "baton-shop_taken".into()));
    let texts_before: Vec<Option<String>> = {
        let mut v = Vec::new();
        for (kind, name) in &foreign {
            if *kind == "policy" {
                v.push(bao.policy(name).await);
            }
        }
        v
    };
    // Six of shop's own objects (marked, as Baton writes them) whose apps are gone: over the
    // default budget of 5, so they are held, not deleted.
    for i in 0..6 {
        let app = AppId::parse(&format!("/gone{i}")).unwrap();
        let name = secrets::object_name("shop", &app);
        bao.write_policy(
            &name,
            &secrets::policy_text("shop", &app, &Default::default()),
        )
        .await;
        bao.root(
            "POST",
            &format!("auth/approle/role/{name}"),
            Some(json!({"token_policies": [name], "role_id": secrets::new_role_id(&name, &format!("u{i}"))})),
        )
        .await;
    }

    // The repos: the same /web in both; shop also has an app whose name is taken, one asking
    // for a policy the operator did not allow, and one asking for an allowed one.
    let tmp = tempfile::tempdir().unwrap();
    let (shop_repo, qa_repo) = (tmp.path().join("shop"), tmp.path().join("qa"));
    std::fs::create_dir_all(&shop_repo).unwrap();
    std::fs::create_dir_all(&qa_repo).unwrap();
    std::fs::write(shop_repo.join("baton.yaml"), "owner: shop\n").unwrap();
    std::fs::write(qa_repo.join("baton.yaml"), "owner: shop-qa\n").unwrap();
    for repo in [&shop_repo, &qa_repo] {
        write(repo, "apps/web.json", reader(json!({})));
        write(
            repo,
            "apps/plain.json",
            json!({"cmd": "sleep 600", "cpus": 0.01, "mem": 16}),
        );
    }
    write(&shop_repo, "apps/taken.json", reader(json!({})));
    write(
        &shop_repo,
        "apps/greedy.json",
        reader(json!({"baton": {"secrets": {"policies": ["baton-reconciler-shop"]}}})),
    );
    write(
        &shop_repo,
        "apps/metrics.json",
        reader(json!({"baton": {"secrets": {"policies": [" Metrics-Read"]}}})),
    );
    let prod = DevScheduler::start().await;
    let qa = DevScheduler::start().await;
    // /greedy already runs (an earlier revision): an invalid spec must leave it as it is.
    let greedy_old = json!({"id": "/greedy", "cmd": "sleep 601", "cpus": 0.01, "mem": 16,
        "labels": {"baton.dev/owner": "shop"}});
    let r = reqwest::Client::new()
        .post(format!("{}/v2/apps", prod.url))
        .json(&greedy_old)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let shop = Serve::start(
        &shop_repo,
        &prod.url,
        &tmp.path().join("shop-state"),
        vault_config(bao.url(), &shop_token, &["metrics-read"]),
    )
    .await;
    let qa_serve = Serve::start(
        &qa_repo,
        &qa.url,
        &tmp.path().join("qa-state"),
        vault_config(bao.url(), &qa_token, &[]),
    )
    .await;
    let limit = Duration::from_secs(120);
    for (serve, name) in [(&shop, "baton-shop_web"), (&qa_serve, "baton-shop-qa_web")] {
        wait_until(
            &format!("{name} created and a cycle done"),
            limit,
            || async {
                let st = serve.status().await;
                st["ready"] == true
                    && st["vault"].is_object()
                    && bao.policy(name).await.is_some()
                    && bao.has_role(name).await
            },
        )
        .await;
    }

    // Each Baton sees the other's objects once it has looked again.
    for (serve, other) in [(&shop, "baton-shop-qa_web"), (&qa_serve, "baton-shop_web")] {
        serve.sync().await;
        wait_until(&format!("{other} listed as unmanaged"), limit, || async {
            let st = serve.status().await;
            st["vault"].is_object() && unmanaged(&st["vault"]).contains(&format!("role {other}"))
        })
        .await;
    }

    // Each Baton made its own objects, with the marker and a role id of its own.
    for (owner, name) in [("shop", "baton-shop_web"), ("shop-qa", "baton-shop-qa_web")] {
        let text = bao.policy(name).await.unwrap();
        assert!(
            text.starts_with(&secrets::marker(owner, &AppId::parse("/web").unwrap())),
            "{text}"
        );
        let rid = bao
            .root("GET", &format!("auth/approle/role/{name}/role-id"), None)
            .await;
        assert!(
            secrets::is_baton_role_id(name, rid["data"]["role_id"].as_str().unwrap()),
            "{rid}"
        );
    }
    // The allowed extra policy, canonical.
    let metrics = bao
        .root("GET", "auth/approle/role/baton-shop_metrics", None)
        .await;
    assert_eq!(
        metrics["data"]["token_policies"],
        json!(["baton-shop_metrics", "metrics-read"])
    );

    // Nothing foreign was touched.
    let mut texts_after = Vec::new();
    for (kind, name) in &foreign {
        match *kind {
            "policy" => texts_after.push(bao.policy(name).await),
            _ => assert!(bao.has_role(name).await, "role {name} was deleted"),
        }
    }
    assert_eq!(
        texts_after, texts_before,
        "a foreign policy was changed or deleted"
    );

    // Shop's status: every foreign object unmanaged with a reason, the other owner's too;
    // the blocked apps invalid; the held deletions listed.
    let st = shop.status().await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    let listed = unmanaged(&st["vault"]);
    for (kind, name) in &foreign {
        assert!(
            listed.contains(&format!("{kind} {name}")),
            "{kind} {name} not in {listed:?}"
        );
    }
    assert!(
        listed.contains("policy baton-shop-qa_web") && listed.contains("role baton-shop-qa_web")
    );
    assert!(
        !listed.iter().any(|n| n.ends_with(" baton-shop_web")),
        "{listed:?}"
    );
    let held = st["vault"]["held"].as_array().unwrap();
    assert_eq!(held.len(), 12, "{held:?}");
    assert!(
        held[0]["reason"]
            .as_str()
            .unwrap()
            .contains("--allow-deletes 6"),
        "{held:?}"
    );
    for i in 0..6 {
        assert!(bao.policy(&format!("baton-shop_gone{i}")).await.is_some());
        assert!(bao.has_role(&format!("baton-shop_gone{i}")).await);
    }
    assert_eq!(app_sync(&st, "/taken"), "invalid");
    assert_eq!(app_sync(&st, "/greedy"), "invalid");
    assert!(
        prod.app("/taken").await.is_none(),
        "/taken must not be deployed"
    );
    assert_eq!(
        prod.app("/greedy").await.unwrap()["cmd"],
        "sleep 601",
        "/greedy was changed"
    );
    let qa_st = qa_serve.status().await;
    let qa_listed = unmanaged(&qa_st["vault"]);
    assert!(
        qa_listed.contains("policy baton-shop_web") && qa_listed.contains("role baton-shop_gone0")
    );
    assert!(qa_st["vault"]["held"].as_array().unwrap().is_empty());

    // Shop's /web goes: its app, then its objects; QA's /web and everything else stays.
    std::fs::remove_file(shop_repo.join("apps/web.json")).unwrap();
    shop.sync().await;
    wait_until("shop's /web objects deleted", limit, || async {
        bao.policy("baton-shop_web").await.is_none() && !bao.has_role("baton-shop_web").await
    })
    .await;
    assert!(prod.app("/web").await.is_none(), "the app went first");
    assert!(
        bao.policy("baton-shop-qa_web").await.is_some() && bao.has_role("baton-shop-qa_web").await
    );
    assert!(qa.app("/web").await.is_some());
    let mut texts_after = Vec::new();
    for (kind, name) in &foreign {
        match *kind {
            "policy" => texts_after.push(bao.policy(name).await),
            _ => assert!(bao.has_role(name).await, "role {name} was deleted"),
        }
    }
    assert_eq!(texts_after, texts_before);
    assert!(
        bao.policy("baton-shop_gone0").await.is_some(),
        "held, not deleted"
    );

    shop.stop().await;
    qa_serve.stop().await;
    prod.stop().await;
    qa.stop().await;
}

/// Vault down when `baton serve` starts: the gatekeeper cannot know its apps, so it answers
/// `503` + `Retry-After` (which baton-env retries) instead of a final `403`, until a cycle has
/// read Vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gatekeeper_is_not_ready_until_a_cycle_has_read_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("baton.yaml"), "owner: shop\n").unwrap();
    write(
        &repo,
        "apps/plain.json",
        json!({"cmd": "sleep 600", "cpus": 0.01, "mem": 16}),
    );
    let marathon = DevScheduler::start().await;
    // Vault's address is known, nothing answers there yet.
    let port = openbao::free_port();
    let vault_url = format!("http://127.0.0.1:{port}");
    let serve = Serve::start(
        &repo,
        &marathon.url,
        &tmp.path().join("state"),
        vault_config(&vault_url, openbao::ROOT_TOKEN, &[]),
    )
    .await;
    wait_until(
        "the Vault error in /api/status",
        Duration::from_secs(60),
        || async {
            serve.status().await["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("Vault"))
        },
    )
    .await;
    let gk_url = format!("{}{}", serve.url, gatekeeper::PATH);
    let ask = || async {
        serve
            .http
            .post(&gk_url)
            .json(&json!({"task_id": "plain.1", "app_id": "/plain"}))
            .send()
            .await
            .unwrap()
    };
    let r = ask().await;
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers()["retry-after"].to_str().unwrap(),
        gatekeeper::NOT_READY_RETRY_AFTER.to_string()
    );
    let metrics = baton_e2e::get_text(&serve.http, &format!("{}/metrics", serve.url)).await;
    assert!(
        metrics.contains("baton_secret_zero_requests_total{decision=\"not_ready\"} 1"),
        "{metrics}"
    );

    // Vault comes up; the next cycle reads it and the gatekeeper judges (no such app: 403).
    let bao = OpenBao::start_on(port).await;
    bao.enable_approle().await;
    serve.sync().await;
    wait_until("a judged request", Duration::from_secs(90), || async {
        ask().await.status().as_u16() == 403
    })
    .await;
    serve.stop().await;
    marathon.stop().await;
}

/// With the host check on, a secret id works only from the address that asked for it: the
/// task's own login succeeds (the sidecar's whole flow), the same kind of secret id taken to
/// another address is refused by Vault. Objects written with the documented reconciler token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_ids_are_bound_to_the_address_that_asked() {
    use baton_env::auth::{login, AuthMethod, HttpGatekeeper};
    use baton_env::retry::RetryPolicy;
    use baton_env::vault::{HttpVault, VaultConfig};

    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    bao.root(
        "POST",
        "secret/data/web",
        Some(json!({"data": {"password": "pw"}})),
    )
    .await;
    let token = reconciler_token(&bao, "shop").await;
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr: bao.url().to_owned(),
        token: token.into(),
        approle_mount: "approle".into(),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let app = AppId::parse("/web").unwrap();
    let name = secrets::object_name("shop", &app);
    admin
        .write_policy(
            &name,
            &secrets::policy_text("shop", &app, &["secret/data/web".to_string()].into()),
        )
        .await
        .unwrap();
    let role_id = secrets::new_role_id(&name, "7f00");
    admin
        .write_role(
            &name,
            &json!({"token_policies": [name], "token_ttl": 300, "token_max_ttl": 600,
                    "secret_id_num_uses": 1, "secret_id_ttl": 120, "role_id": role_id}),
        )
        .await
        .unwrap();

    let now = (gatekeeper::system_clock())();
    let start_gate = |check_host: bool| {
        let tasks = StaticTasks::default();
        for i in 1..=3 {
            tasks.insert(TaskInfo {
                id: format!("web.{i}"),
                app_id: "/web".into(),
                owner: Some("shop".into()),
                state: "TASK_RUNNING".into(),
                staged_at_ms: Some(now),
                addrs: vec!["127.0.0.1".parse().unwrap()],
                rollout_of: None,
            });
        }
        let gk = Arc::new(
            Gatekeeper::new(
                tasks,
                admin.clone(),
                GateConfig {
                    owner: "shop".into(),
                    check_host,
                    ..Default::default()
                },
                gatekeeper::system_clock(),
            )
            .unwrap(),
        );
        gk.set_apps(
            [(
                app.clone(),
                AppGate {
                    role: name.clone(),
                    role_id: Some(role_id.clone()),
                    instances: 1,
                    canary_of: None,
                },
            )]
            .into(),
        );
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}{}",
                listener.local_addr().unwrap(),
                gatekeeper::PATH
            );
            let router = gatekeeper::router(gk);
            tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await;
            });
            url
        }
    };
    let url = start_gate(true).await;

    // 1. The task's own start, as baton-env does it: lookup, unwrap, login, read.
    let vault = HttpVault::new(&VaultConfig {
        addr: bao.url().to_owned(),
        namespace: None,
        ca_cert: None,
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let gkc = HttpGatekeeper {
        http: reqwest::Client::new(),
        url: url.clone(),
    };
    let method = AuthMethod::Gatekeeper {
        mount: "approle".into(),
        task_id: "web.1".into(),
        app_id: "/web".into(),
        role: name.clone(),
        role_id: Some(baton_env::secret::Secret::new(role_id.clone())),
    };
    let policy = RetryPolicy::new(Duration::from_secs(30));
    let logged_in = login(&vault, &gkc, &method, &policy).await.unwrap();
    let (status, read) = bao
        .call_as(logged_in.token.expose(), "GET", "secret/data/web", None)
        .await;
    assert_eq!(
        (status, read["data"]["data"]["password"].as_str()),
        (200, Some("pw"))
    );

    // 2. A secret id of another task, carried to another address.
    let secret_id = |gk_url: String, task: &'static str| {
        let bao = &bao;
        async move {
            let r: Value = reqwest::Client::new()
                .post(gk_url)
                .json(&json!({"task_id": task, "app_id": "/web"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let wrap = r["wrap_token"].as_str().expect("granted").to_owned();
            let (status, v) = bao
                .call_as(&wrap, "POST", "sys/wrapping/unwrap", None)
                .await;
            assert_eq!(status, 200, "{v}");
            v["data"]["secret_id"].as_str().unwrap().to_owned()
        }
    };
    let login_from = |from: &'static str, secret_id: String| {
        let (url, role_id) = (bao.url().to_owned(), role_id.clone());
        async move {
            let client = reqwest::Client::builder()
                .local_address(from.parse::<IpAddr>().unwrap())
                .build()
                .unwrap();
            let r = client
                .post(format!("{url}/v1/auth/approle/login"))
                .json(&json!({"role_id": role_id, "secret_id": secret_id}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let stolen = secret_id(url.clone(), "web.2").await;
    let (status, body) = login_from("127.0.0.2", stolen.clone()).await;
    assert!(status >= 400 && body.contains("CIDR"), "{status} {body}");
    let (status, body) = login_from("127.0.0.1", stolen).await;
    assert_eq!(status, 200, "{body}");

    // 3. Host check off (behind a proxy): no binding either.
    let open_url = start_gate(false).await;
    let unbound = secret_id(open_url, "web.3").await;
    let (status, body) = login_from("127.0.0.2", unbound).await;
    assert_eq!(status, 200, "{body}");
}
