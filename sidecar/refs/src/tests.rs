use super::*;

fn r(path: &str, key: &str, version: Option<u32>) -> SecretRef {
    SecretRef {
        path: path.into(),
        key: key.into(),
        version,
    }
}

#[test]
fn whole_value_references() {
    let cases = [
        (
            "vault:database/creds/app#password",
            r("database/creds/app", "password", None),
        ),
        (
            "vault:secret/data/app#key",
            r("secret/data/app", "key", None),
        ),
        ("vault:kv1/app#key", r("kv1/app", "key", None)),
        (
            "vault:secret/data/app#key?version=3",
            r("secret/data/app", "key", Some(3)),
        ),
        (
            "vault:secret/data/app?version=2#key",
            r("secret/data/app", "key", Some(2)),
        ),
        ("vault:/secret/app/#key", r("secret/app", "key", None)),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_value(input),
            Ok(Some(vec![Segment::Ref(want)])),
            "{input}"
        );
    }
}

#[test]
fn plain_values_stay_plain() {
    for input in [
        "",
        "hello",
        "vault:8200",
        "http://vault:8200",
        "{{ .Values.x }}",
        "{{",
    ] {
        assert_eq!(parse_value(input), Ok(None), "{input}");
    }
}

#[test]
fn templates_render_text_and_refs() {
    let got = parse_value(
        "postgres://{{ vault:database/creds/app#username }}:{{vault:database/creds/app#password}}@db:5432/app",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        got,
        vec![
            Segment::Text("postgres://".into()),
            Segment::Ref(r("database/creds/app", "username", None)),
            Segment::Text(":".into()),
            Segment::Ref(r("database/creds/app", "password", None)),
            Segment::Text("@db:5432/app".into()),
        ]
    );
}

#[test]
fn templates_keep_foreign_braces() {
    let got = parse_value("{{ other }}-{{ vault:kv1/a#b }}")
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        vec![
            Segment::Text("{{ other }}-".into()),
            Segment::Ref(r("kv1/a", "b", None)),
        ]
    );
}

#[test]
fn malformed_references_are_errors() {
    let cases = [
        ("vault:secret/app", RefErrorKind::MissingKey),
        ("vault:#key", RefErrorKind::EmptyPath),
        ("vault:secret/app#", RefErrorKind::EmptyKey),
        ("vault:secret//app#k", RefErrorKind::BadPath),
        ("vault:secret/../sys#k", RefErrorKind::BadPath),
        ("vault:secret/app#k?version=x", RefErrorKind::BadVersion),
        ("vault:secret/app#k?version=0", RefErrorKind::BadVersion),
        (
            "vault:secret/app#k?ttl=1",
            RefErrorKind::UnknownParam("ttl".into()),
        ),
        ("x{{ vault:secret/app#k", RefErrorKind::Unterminated),
    ];
    for (input, want) in cases {
        assert_eq!(parse_value(input), Err(want), "{input}");
    }
}

#[test]
fn parse_env_collects_every_error_and_distinct_reads() {
    let env = [
        ("A", "vault:database/creds/app#username"),
        ("B", "vault:database/creds/app#password"),
        ("BAD1", "vault:secret/app"),
        ("C", "u={{ vault:secret/data/app#user }}"),
        ("D", "vault:secret/data/app#key?version=2"),
        ("PLAIN", "x"),
        ("BAD2", "vault:#k"),
    ];
    let (plan, errors) = parse_env(env);
    assert_eq!(plan.names().collect::<Vec<_>>(), ["A", "B", "C", "D"]);
    let reads: Vec<String> = plan.reads().iter().map(ToString::to_string).collect();
    assert_eq!(
        reads,
        [
            "database/creds/app",
            "secret/data/app",
            "secret/data/app?version=2"
        ]
    );
    let vars: Vec<&str> = errors.iter().map(|e| e.var.as_str()).collect();
    assert_eq!(vars, ["BAD1", "BAD2"]);
}

#[test]
fn errors_never_echo_the_value() {
    let (_, errors) = parse_env([("X", "vault:s3cr3t-looking/path")]);
    let msg = errors[0].to_string();
    assert!(msg.contains('X'));
    assert!(!msg.contains("s3cr3t"));
}

#[test]
fn kv2_paths_get_data_inserted_once() {
    assert_eq!(kv2_data_path("secret/", "secret/app"), "secret/data/app");
    assert_eq!(
        kv2_data_path("secret/", "secret/data/app"),
        "secret/data/app"
    );
    assert_eq!(kv2_data_path("a/b/", "a/b/c/d"), "a/b/data/c/d");
}
