//! `schemas/app.schema.json`, `schemas/repo.schema.json` and the defaults table
//! (`reconciler/core/src/spec/defaults.json`) checked against Marathon's RAML types and examples in
//! `../shared/marathon` (those tests skip with a printed reason when it is absent), plus behaviour
//! tests of both schemas that always run.
//!
//! The RAML is read as YAML (`#%RAML 1.0 Library` is a YAML comment) and resolved the way
//! Marathon's type generator reads it: library aliases from `uses`, `Type[]` and `A | B`
//! expressions, facets of a named type inherited by what uses it, except `default` (the generator
//! only honours a default written on the field itself: `hostPort` is `numbers.AnyPort`, whose type
//! default is 0, yet Marathon treats an absent hostPort as "none"), and a field with a default is
//! never required.

// Test code: a failed expectation is a test failure (clippy's test allowance misses helpers).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::support::{repo_root, shared_marathon};

// ---------------------------------------------------------------------------------------------
// Loading

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn app_schema() -> Value {
    read_json(&repo_root().join("schemas/app.schema.json"))
}

fn repo_schema() -> Value {
    read_json(&repo_root().join("schemas/repo.schema.json"))
}

fn app_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&app_schema())
        .unwrap_or_else(|e| panic!("schemas/app.schema.json does not compile: {e}"))
}

/// The repo schema refers to the app schema by its `$id`, as the loader compiles it.
fn repo_validator() -> jsonschema::Validator {
    let app = app_schema();
    let id = app["$id"]
        .as_str()
        .expect("app schema has an $id")
        .to_string();
    let registry = jsonschema::Registry::new()
        .add(&id, app)
        .and_then(|b| b.prepare())
        .expect("app schema in a registry");
    jsonschema::options()
        .with_registry(&registry)
        .build(&repo_schema())
        .unwrap_or_else(|e| panic!("schemas/repo.schema.json does not compile: {e}"))
}

/// Every validation error as "pointer: message", for assertions and failure messages.
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// RAML model

/// The RAML type libraries reachable from `app.raml`, parsed, by file name.
struct Raml {
    files: BTreeMap<String, Value>,
}

/// A type expression or declaration, in the context of the file that wrote it (for aliases).
#[derive(Clone, Debug)]
struct Decl {
    file: String,
    node: Value,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Object,
    Array,
    Union,
    Scalar(&'static str),
    Nil,
}

/// A resolved RAML type: its facets merged along the inheritance chain.
#[derive(Clone, Debug)]
struct Ty {
    kind: Kind,
    /// The RAML type name, when the type is a named one (matches the schema's `$defs`).
    name: Option<String>,
    facets: Map<String, Value>,
    props: Vec<Prop>,
    items: Option<Decl>,
    branches: Vec<Decl>,
}

#[derive(Clone, Debug)]
struct Prop {
    name: String,
    required: bool,
    /// A pattern property (`/regex/`): the keys of a map.
    pattern: bool,
    decl: Decl,
}

const FACETS: &[&str] = &[
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "uniqueItems",
    "default",
    "enum",
    "format",
    "minItems",
    "maxItems",
];

impl Ty {
    fn new(kind: Kind) -> Ty {
        Ty {
            kind,
            name: None,
            facets: Map::new(),
            props: Vec::new(),
            items: None,
            branches: Vec::new(),
        }
    }

    /// The JSON Schema type Marathon's reader accepts: `number` with an integer format is read
    /// as an Int/Long.
    fn json_type(&self) -> &'static str {
        match &self.kind {
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Union => "union",
            Kind::Nil => "null",
            Kind::Scalar("number") => {
                let format = self.facets.get("format").and_then(Value::as_str);
                if matches!(
                    format,
                    Some("int" | "int8" | "int16" | "int32" | "int64" | "long")
                ) {
                    "integer"
                } else {
                    "number"
                }
            }
            Kind::Scalar(t) => t,
        }
    }
}

impl Raml {
    /// `app.raml` and, transitively, every library it `uses`.
    fn load(types_dir: &Path) -> Raml {
        let mut files = BTreeMap::new();
        let mut todo = vec!["app.raml".to_string()];
        while let Some(name) = todo.pop() {
            if files.contains_key(&name) {
                continue;
            }
            let path = types_dir.join(&name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let doc: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            if let Some(uses) = doc.get("uses").and_then(Value::as_object) {
                todo.extend(uses.values().filter_map(Value::as_str).map(str::to_string));
            }
            files.insert(name, doc);
        }
        Raml { files }
    }

    fn named(&self, file: &str, name: &str) -> Decl {
        Decl {
            file: file.to_string(),
            node: Value::String(name.to_string()),
        }
    }

    fn resolve(&self, d: &Decl) -> Ty {
        match &d.node {
            Value::String(expr) => self.resolve_expr(&d.file, expr),
            // `name:` with nothing: RAML's default type.
            Value::Null => Ty::new(Kind::Scalar("string")),
            Value::Object(m) => {
                let expr = match m.get("type") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => panic!("{}: unsupported type expression {other}", d.file),
                    None if m.contains_key("properties") => "object".to_string(),
                    None if m.contains_key("items") => "array".to_string(),
                    None => "string".to_string(),
                };
                let mut ty = self.resolve_expr(&d.file, &expr);
                for f in FACETS {
                    if let Some(v) = m.get(*f) {
                        ty.facets.insert((*f).to_string(), v.clone());
                    }
                }
                if let Some(props) = m.get("properties").and_then(Value::as_object) {
                    for (key, value) in props {
                        let p = prop(&d.file, key, value);
                        ty.props.retain(|q| q.name != p.name);
                        ty.props.push(p);
                    }
                }
                if let Some(items) = m.get("items") {
                    ty.items = Some(Decl {
                        file: d.file.clone(),
                        node: items.clone(),
                    });
                }
                ty
            }
            other => panic!("{}: unsupported type declaration {other}", d.file),
        }
    }

    fn resolve_expr(&self, file: &str, expr: &str) -> Ty {
        let e = strip_parens(expr.trim());
        let parts = split_union(e);
        if parts.len() > 1 {
            let mut ty = Ty::new(Kind::Union);
            ty.branches = parts.iter().map(|p| self.named(file, p)).collect();
            return ty;
        }
        if let Some(inner) = e.strip_suffix("[]") {
            let mut ty = Ty::new(Kind::Array);
            ty.items = Some(self.named(file, inner));
            return ty;
        }
        match e {
            "string" => return Ty::new(Kind::Scalar("string")),
            "boolean" => return Ty::new(Kind::Scalar("boolean")),
            "integer" => return Ty::new(Kind::Scalar("integer")),
            "number" => return Ty::new(Kind::Scalar("number")),
            // JSON carries dates as strings.
            "datetime" | "datetime-only" | "date-only" | "time-only" => {
                return Ty::new(Kind::Scalar("string"))
            }
            "nil" => return Ty::new(Kind::Nil),
            "object" => return Ty::new(Kind::Object),
            "array" => return Ty::new(Kind::Array),
            _ => {}
        }
        let (lib, name) = match e.split_once('.') {
            Some((alias, name)) => {
                let target = self.files[file]["uses"][alias]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: unknown library alias {alias}"));
                (target.to_string(), name)
            }
            None => (file.to_string(), e),
        };
        let decl = self.files[&lib]["types"]
            .get(name)
            .unwrap_or_else(|| panic!("{lib}: no type {name}"))
            .clone();
        let mut ty = self.resolve(&Decl {
            file: lib,
            node: decl,
        });
        // Marathon's generator takes a field's default from the field only.
        ty.facets.remove("default");
        ty.name = Some(name.to_string());
        ty
    }
}

fn prop(file: &str, key: &str, value: &Value) -> Prop {
    let pattern = key.len() > 1 && key.starts_with('/') && key.ends_with('/');
    let (name, optional) = match key.strip_suffix('?') {
        Some(n) if !pattern => (n, true),
        _ => (key, pattern),
    };
    let explicit = value.get("required").and_then(Value::as_bool);
    // Marathon's generator: "if a field has a default, its not required".
    let required = !pattern && explicit.unwrap_or(!optional) && value.get("default").is_none();
    Prop {
        name: name.to_string(),
        required,
        pattern,
        decl: Decl {
            file: file.to_string(),
            node: value.clone(),
        },
    }
}

/// `(A | B)` -> `A | B`, only when the parentheses enclose the whole expression.
fn strip_parens(mut e: &str) -> &str {
    while e.starts_with('(') && e.ends_with(')') {
        let mut depth = 0;
        let mut encloses = true;
        for (i, c) in e.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 && i + 1 < e.len() {
                encloses = false;
                break;
            }
        }
        if !encloses {
            break;
        }
        e = e[1..e.len() - 1].trim();
    }
    e
}

fn split_union(e: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in e.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(e[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(e[start..].trim());
    parts
}

fn is_catch_all(pattern_key: &str) -> bool {
    matches!(pattern_key, "/.*/" | "/^.*$/")
}

// ---------------------------------------------------------------------------------------------
// Schema side

/// Reads a schema node together with the chain of local `$ref`s it points to; the first node
/// that has a keyword wins (like a RAML facet overriding its type's).
struct SchemaView<'a> {
    root: &'a Value,
}

impl<'a> SchemaView<'a> {
    fn chain(&self, node: &'a Value) -> Vec<&'a Value> {
        let mut out = vec![node];
        let mut cur = node;
        while let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            let fragment = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs are expected here, found {r}"));
            cur = self
                .root
                .pointer(fragment)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            out.push(cur);
            assert!(out.len() < 16, "$ref loop at {r}");
        }
        out
    }

    fn get(&self, node: &'a Value, key: &str) -> Option<&'a Value> {
        self.chain(node).into_iter().find_map(|n| n.get(key))
    }

    /// The `$defs` name a node refers to (its first `$ref`).
    fn ref_name(node: &Value) -> Option<&str> {
        node.get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "none".to_string(), Value::to_string)
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Walks a RAML type and the schema node side by side, collecting every difference.
struct Compare<'a> {
    raml: &'a Raml,
    schema: SchemaView<'a>,
    errors: Vec<String>,
    /// Properties compared, to tell a real pass from a vacuous one.
    fields: usize,
}

impl<'a> Compare<'a> {
    fn compare(&mut self, path: &str, ty: &Ty, node: &'a Value) {
        assert!(path.len() < 400, "runaway recursion at {path}");
        self.compare_facets(path, ty, node);
        if ty.kind == Kind::Union {
            self.compare_union(path, ty, node);
            return;
        }
        let expected = ty.json_type();
        let actual = self.schema.get(node, "type");
        if actual != Some(&Value::String(expected.to_string())) {
            let actual = actual.and_then(Value::as_str).unwrap_or("none");
            self.errors
                .push(format!("{path}: type: RAML {expected}, schema {actual}"));
            return;
        }
        match ty.kind {
            Kind::Object => self.compare_object(path, ty, node),
            Kind::Array => match (&ty.items, self.schema.get(node, "items")) {
                (Some(items), Some(schema_items)) => {
                    let item_ty = self.raml.resolve(items);
                    self.compare(&format!("{path}[]"), &item_ty, schema_items);
                }
                (Some(_), None) => self.errors.push(format!(
                    "{path}: RAML gives the item type, the schema has no items"
                )),
                (None, _) => {}
            },
            _ => {}
        }
    }

    fn compare_facets(&mut self, path: &str, ty: &Ty, node: &'a Value) {
        for key in [
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "pattern",
            "uniqueItems",
            "default",
            "enum",
        ] {
            let raml = ty.facets.get(key);
            let schema = self.schema.get(node, key);
            let same = match key {
                "uniqueItems" => {
                    raml.and_then(Value::as_bool).unwrap_or(false)
                        == schema.and_then(Value::as_bool).unwrap_or(false)
                }
                // Marathon matches a RAML pattern against the whole value; JSON Schema searches,
                // so an unanchored RAML pattern is written `^(?:pattern)$`.
                "pattern" => match (raml.and_then(Value::as_str), schema.and_then(Value::as_str)) {
                    (Some(r), Some(s)) => s == r || s == format!("^(?:{r})$"),
                    (None, None) => true,
                    _ => false,
                },
                "enum" => {
                    let set = |v: Option<&Value>| -> Option<BTreeSet<String>> {
                        v.and_then(Value::as_array)
                            .map(|a| a.iter().map(Value::to_string).collect())
                    };
                    set(raml) == set(schema)
                }
                _ => match (raml, schema) {
                    (Some(r), Some(s)) => same_json(r, s),
                    (None, None) => true,
                    _ => false,
                },
            };
            if !same {
                self.errors.push(format!(
                    "{path}: {key}: RAML {}, schema {}",
                    show(raml),
                    show(schema)
                ));
            }
        }
        // Marathon's validation code adds item-count limits the RAML lacks (the schema may say
        // more), but every RAML one must be there.
        for key in ["minItems", "maxItems"] {
            if let Some(r) = ty.facets.get(key) {
                let s = self.schema.get(node, key);
                if !s.is_some_and(|s| same_json(r, s)) {
                    self.errors
                        .push(format!("{path}: {key}: RAML {r}, schema {}", show(s)));
                }
            }
        }
    }

    fn compare_object(&mut self, path: &str, ty: &Ty, node: &'a Value) {
        let props = self
            .schema
            .get(node, "properties")
            .and_then(Value::as_object);
        let top = path == "App";
        let mut raml_names = BTreeSet::new();
        for p in &ty.props {
            let child = self.raml.resolve(&p.decl);
            if p.pattern {
                if !is_catch_all(&p.name) {
                    continue; // e.g. MesosCommand's `/^argv$/: nil` ("not both"), said with `not`
                }
                match self.schema.get(node, "additionalProperties") {
                    Some(ap) if ap.is_object() => {
                        self.fields += 1;
                        self.compare(&format!("{path}{{*}}"), &child, ap);
                    }
                    other => self.errors.push(format!(
                        "{path}: RAML is a map ({}), schema additionalProperties is {}",
                        p.name,
                        show(other)
                    )),
                }
                continue;
            }
            raml_names.insert(p.name.as_str());
            match props.and_then(|m| m.get(&p.name)) {
                Some(s) => {
                    self.fields += 1;
                    self.compare(&format!("{path}.{}", p.name), &child, s);
                }
                None => self.errors.push(format!(
                    "{path}.{}: in the RAML, missing from the schema",
                    p.name
                )),
            }
        }
        for name in props.into_iter().flat_map(Map::keys) {
            let ours = top && matches!(name.as_str(), "$schema" | "baton");
            if !ours && !raml_names.contains(name.as_str()) {
                self.errors
                    .push(format!("{path}.{name}: in the schema, not in the RAML"));
            }
        }
        let raml_required: BTreeSet<&str> = ty
            .props
            .iter()
            .filter(|p| p.required)
            // Baton derives the id from the file path.
            .filter(|p| !(top && p.name == "id"))
            .map(|p| p.name.as_str())
            .collect();
        let schema_required: BTreeSet<&str> = self
            .schema
            .get(node, "required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if raml_required != schema_required {
            self.errors.push(format!(
                "{path}: required: RAML {raml_required:?}, schema {schema_required:?}"
            ));
        }
    }

    fn compare_union(&mut self, path: &str, ty: &Ty, node: &'a Value) {
        let Some(branches) = self.schema.get(node, "anyOf").and_then(Value::as_array) else {
            self.errors.push(format!(
                "{path}: RAML is a union, schema has no anyOf (Marathon reads the first branch that fits)"
            ));
            return;
        };
        if branches.len() != ty.branches.len() {
            self.errors.push(format!(
                "{path}: RAML union has {} branches, schema anyOf {}",
                ty.branches.len(),
                branches.len()
            ));
        }
        for b in &ty.branches {
            let bty = self.raml.resolve(b);
            let by_name = branches
                .iter()
                .find(|s| bty.name.is_some() && SchemaView::ref_name(s) == bty.name.as_deref());
            let by_type = || {
                branches.iter().find(|s| {
                    self.schema.get(s, "type") == Some(&Value::String(bty.json_type().into()))
                })
            };
            let label = bty
                .name
                .clone()
                .unwrap_or_else(|| bty.json_type().to_string());
            match by_name.or_else(by_type) {
                Some(s) => self.compare(&format!("{path}<{label}>"), &bty, s),
                None => self.errors.push(format!(
                    "{path}: union branch {label} is missing from the schema"
                )),
            }
        }
    }
}

fn app_type(raml: &Raml) -> Ty {
    let mut ty = raml.resolve_expr("app.raml", "App");
    ty.name = Some("App".into());
    ty
}

// ---------------------------------------------------------------------------------------------
// Tests against ../shared/marathon

#[test]
fn app_schema_has_every_raml_field_with_the_same_types_limits_and_defaults() {
    let Some(shared) = shared_marathon("app_schema_has_every_raml_field") else {
        return;
    };
    let raml = Raml::load(&shared.join("raml/v2/types"));
    let schema = app_schema();
    let mut cmp = Compare {
        raml: &raml,
        schema: SchemaView { root: &schema },
        errors: Vec::new(),
        fields: 0,
    };
    cmp.compare("App", &app_type(&raml), &schema);
    assert!(
        cmp.errors.is_empty(),
        "app.schema.json disagrees with the RAML in {} places:\n{}",
        cmp.errors.len(),
        cmp.errors.join("\n")
    );
    // The App type has 40-odd fields and well over a hundred nested ones: a handful compared
    // would mean the walk silently stopped.
    assert!(cmp.fields > 150, "only {} fields compared", cmp.fields);
}

/// The RAML type a path of the defaults table lands on, for the item templates the lead named.
const TEMPLATE_TYPES: &[(&str, &str)] = &[
    ("networks[]", "Network"),
    ("portDefinitions[]", "PortDefinition"),
    ("container.portMappings[]", "ContainerPortMapping"),
    ("healthChecks[]", "AppHealthCheck"),
    ("readinessChecks[]", "ReadinessCheck"),
    ("fetch[]", "Artifact"),
];

struct DefaultsCheck<'a> {
    raml: &'a Raml,
    errors: Vec<String>,
    checked: usize,
    templates: BTreeMap<String, String>,
}

impl DefaultsCheck<'_> {
    /// `table` is an object of the defaults table, `ty` the RAML object type it describes.
    fn object(&mut self, path: &str, table: &Map<String, Value>, ty: &Ty) {
        let ty = match ty.kind {
            Kind::Object => ty.clone(),
            // unreachableStrategy: the object branch.
            Kind::Union => match ty
                .branches
                .iter()
                .map(|b| self.raml.resolve(b))
                .find(|b| b.kind == Kind::Object)
            {
                Some(b) => b,
                None => {
                    self.errors.push(format!(
                        "{path}: an object in the table, a union without object in the RAML"
                    ));
                    return;
                }
            },
            _ => {
                self.errors.push(format!(
                    "{path}: an object in the table, {} in the RAML",
                    ty.json_type()
                ));
                return;
            }
        };
        for (key, value) in table {
            if key.starts_with('$') {
                continue; // $comment, $fill: the table's own keywords
            }
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let Some(p) = ty.props.iter().find(|p| !p.pattern && p.name == *key) else {
                self.errors.push(format!(
                    "{child}: in the defaults table, not a field in the RAML"
                ));
                continue;
            };
            let field_ty = self.raml.resolve(&p.decl);
            match value {
                Value::Object(m) if m.contains_key("$source") => {
                    // A default from Marathon's code that the RAML does not document: it must say
                    // where it comes from, and the RAML must not say otherwise.
                    self.checked += 1;
                    let cited = m["$source"].as_str().is_some_and(|s| s.len() > 10);
                    let raml = field_ty.facets.get("default");
                    if !cited || raml.is_some_and(|r| !same_json(r, &m["$default"])) {
                        self.errors.push(format!(
                            "{child}: defaults table {} (source {}), RAML default {}",
                            m["$default"],
                            m["$source"],
                            show(raml)
                        ));
                    }
                }
                Value::Object(m) if m.contains_key("$default") => {
                    self.scalar(&child, &m["$default"], &field_ty);
                }
                Value::Object(m) => self.object(&child, m, &field_ty),
                Value::Array(a) => self.template(&child, a, &field_ty),
                v => self.scalar(&child, v, &field_ty),
            }
        }
    }

    fn template(&mut self, path: &str, items: &[Value], ty: &Ty) {
        let [Value::Object(template)] = items else {
            self.errors.push(format!(
                "{path}: a table array must hold one object template"
            ));
            return;
        };
        let item_ty = match (&ty.kind, &ty.items) {
            (Kind::Array, Some(items)) => self.raml.resolve(items),
            _ => {
                self.errors.push(format!(
                    "{path}: an item template in the table, {} in the RAML",
                    ty.json_type()
                ));
                return;
            }
        };
        let path = format!("{path}[]");
        self.templates
            .insert(path.clone(), item_ty.name.clone().unwrap_or_default());
        self.object(&path, template, &item_ty);
    }

    fn scalar(&mut self, path: &str, value: &Value, ty: &Ty) {
        self.checked += 1;
        let raml = ty.facets.get("default");
        if !raml.is_some_and(|r| same_json(r, value)) {
            self.errors.push(format!(
                "{path}: defaults table {value}, RAML default {}",
                show(raml)
            ));
        }
    }
}

#[test]
fn defaults_table_agrees_with_raml_defaults() {
    let Some(shared) = shared_marathon("defaults_table_agrees_with_raml_defaults") else {
        return;
    };
    let raml = Raml::load(&shared.join("raml/v2/types"));
    let table = read_json(&repo_root().join("reconciler/core/src/spec/defaults.json"));
    let table = table.as_object().expect("the defaults table is an object");
    let mut check = DefaultsCheck {
        raml: &raml,
        errors: Vec::new(),
        checked: 0,
        templates: BTreeMap::new(),
    };
    check.object("", table, &app_type(&raml));
    for (path, expected) in TEMPLATE_TYPES {
        if let Some(found) = check.templates.get(*path) {
            if found != expected {
                check.errors.push(format!(
                    "{path}: item template applies to RAML type {found}, expected {expected}"
                ));
            }
        }
    }
    assert!(
        check.errors.is_empty(),
        "reconciler/core/src/spec/defaults.json disagrees with the RAML in {} places:\n{}",
        check.errors.len(),
        check.errors.join("\n")
    );
    assert!(
        check.checked > 20,
        "only {} defaults checked",
        check.checked
    );
}

/// Every app of a Marathon file: the file itself, or the apps of a group, recursively.
fn apps_of(doc: &Value, out: &mut Vec<Value>) {
    let is_group = doc.get("apps").is_some() || doc.get("groups").is_some();
    if !is_group {
        out.push(doc.clone());
        return;
    }
    for app in doc
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(app.clone());
    }
    for group in doc
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        apps_of(group, out);
    }
}

#[test]
fn marathon_example_apps_validate_against_app_schema() {
    let Some(shared) = shared_marathon("marathon_example_apps_validate_against_app_schema") else {
        return;
    };
    let validator = app_validator();
    let mut files: Vec<_> = std::fs::read_dir(shared.join("examples"))
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    // Marathon's own serialised form (every default filled in) must be a valid spec too.
    files.push(shared.join("live/apps-100.json"));
    let mut failures = Vec::new();
    let mut count = 0;
    for file in &files {
        let mut apps = Vec::new();
        apps_of(&read_json(file), &mut apps);
        for app in apps {
            count += 1;
            let errs = errors(&validator, &app);
            if !errs.is_empty() {
                failures.push(format!(
                    "{} app {}:\n  {}",
                    file.display(),
                    app["id"],
                    errs.join("\n  ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 19 app files, 5 apps in the two group files, 100 live apps.
    assert!(count >= 120, "only {count} apps found");
}

// ---------------------------------------------------------------------------------------------
// Behaviour of the schemas (always run)

fn small_app() -> Value {
    json!({
        "$schema": "https://baton.dev/schemas/app.schema.json",
        "cmd": "python3 -m http.server $PORT0",
        "cpus": 0.25,
        "mem": 64,
        "instances": 2,
        "env": {"MODE": "prod", "DB_PASSWORD": {"secret": "db"}},
        "secrets": {"db": {"source": "/prod/db/password"}},
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 600},
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
        "baton": {
            "dependsOn": ["/prod/db"],
            "prune": false,
            "ignore": ["/instances", "/labels/a~1b"],
            "deadline": "1h30m",
            "drift": {"correctAfter": "15m"},
            "secrets": {"anything": ["goes", "for", "now"]},
            "rollout": {}
        }
    })
}

#[test]
fn app_schema_compiles_and_accepts_a_small_valid_app() {
    let validator = app_validator();
    let app = small_app();
    assert_eq!(errors(&validator, &app), Vec::<String>::new());
    // The other accepted forms of the union-typed fields.
    let mut app = app;
    app["unreachableStrategy"] = json!("disabled");
    app["baton"]["drift"] = json!("correct");
    app["baton"]["deadline"] = json!("500ms");
    app["id"] = json!("/prod/web");
    assert_eq!(errors(&validator, &app), Vec::<String>::new());
    // `rollout: {}` takes every default; the full block, and blueGreen, are valid too.
    for rollout in [
        json!({
            "strategy": "canary",
            "steps": [
                {"isolated": {"check": {"http": "/health", "expect": 200}}},
                {"traffic": 10, "pause": "1m"},
                {"traffic": 50, "pause": "1m"}
            ],
            "analysis": {"maxErrorRate": 0.01, "minRequests": 20}
        }),
        json!({
            "strategy": "blueGreen",
            "grace": "5m",
            "steps": [{"isolated": {"check": {"command": "./smoke.sh", "timeout": "30s"}}}]
        }),
    ] {
        app["baton"]["rollout"] = rollout;
        assert_eq!(errors(&validator, &app), Vec::<String>::new());
    }
    // A Docker app with volumes of every kind.
    let docker = json!({
        "container": {
            "type": "MESOS",
            "docker": {"image": "nginx:1.27", "pullConfig": {"secret": "pull"}},
            "volumes": [
                {"containerPath": "data", "persistent": {"size": 100}, "mode": "RW"},
                {"containerPath": "/etc/x", "hostPath": "/etc/x", "mode": "RO"},
                {"containerPath": "secret.txt", "secret": "pull"},
                {"containerPath": "ext", "mode": "RW", "external": {"name": "v", "provider": "csi",
                    "options": {"pluginName": "p", "capability": {"accessMode": "SINGLE_NODE_WRITER", "accessType": "mount"}}}}
            ]
        },
        "secrets": {"pull": {"source": "/docker/config"}},
        "unreachableStrategy": "disabled"
    });
    assert_eq!(errors(&validator, &docker), Vec::<String>::new());
}

#[test]
fn app_schema_rejects_bad_apps_at_the_right_place() {
    let validator = app_validator();
    let with = |pointer: &str, value: Value| {
        let mut app = small_app();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        let target = if parent.is_empty() {
            &mut app
        } else {
            app.pointer_mut(parent).expect("parent exists")
        };
        target[key] = value;
        app
    };
    let cases = [
        ("cpus as a string", with("/cpus", json!("one")), "/cpus"),
        (
            "negative instances",
            with("/instances", json!(-1)),
            "/instances",
        ),
        (
            "fractional instances",
            with("/instances", json!(1.5)),
            "/instances",
        ),
        ("unknown top-level field", with("/instance", json!(3)), ""),
        (
            "unknown key in baton",
            with("/baton/prunes", json!(true)),
            "/baton",
        ),
        (
            "bad duration",
            with("/baton/deadline", json!("10 minutes")),
            "/baton/deadline",
        ),
        // Issue 15: `baton.rollout` is closed, typed and bounded.
        (
            "unknown key in rollout",
            with("/baton/rollout/stpes", json!([])),
            "/baton/rollout",
        ),
        (
            "unknown strategy",
            with("/baton/rollout/strategy", json!("linear")),
            "/baton/rollout/strategy",
        ),
        (
            "traffic over 100",
            with("/baton/rollout/steps", json!([{"traffic": 101}])),
            "/baton/rollout/steps/0/traffic",
        ),
        (
            "unknown key in a step",
            with("/baton/rollout/steps", json!([{"trafic": 10}])),
            "/baton/rollout/steps/0",
        ),
        (
            "a relative check path",
            with(
                "/baton/rollout/steps",
                json!([{"isolated": {"check": {"http": "health"}}}]),
            ),
            "/baton/rollout/steps/0/isolated/check/http",
        ),
        (
            "an isolated step without a check",
            with("/baton/rollout/steps", json!([{"isolated": {}}])),
            "/baton/rollout/steps/0/isolated",
        ),
        (
            "an error rate over 1",
            with("/baton/rollout/analysis", json!({"maxErrorRate": 1.5})),
            "/baton/rollout/analysis/maxErrorRate",
        ),
        (
            "no requests needed",
            with("/baton/rollout/analysis", json!({"minRequests": 0})),
            "/baton/rollout/analysis/minRequests",
        ),
        (
            "a bad grace",
            with("/baton/rollout/grace", json!("5 minutes")),
            "/baton/rollout/grace",
        ),
        (
            "duration without unit",
            with("/baton/deadline", json!("600")),
            "/baton/deadline",
        ),
        (
            "bad drift",
            with("/baton/drift", json!("fix")),
            "/baton/drift",
        ),
        (
            "unknown key in drift",
            with("/baton/drift", json!({"correctAfter": "1m", "x": 1})),
            "/baton/drift",
        ),
        (
            "pointer without slash",
            with("/baton/ignore", json!(["instances"])),
            "/baton/ignore/0",
        ),
        (
            "pointer with bad escape",
            with("/baton/ignore", json!(["/a~2b"])),
            "/baton/ignore/0",
        ),
        (
            "duplicate pointers",
            with("/baton/ignore", json!(["/a", "/a"])),
            "/baton/ignore",
        ),
        (
            "relative dependsOn",
            with("/baton/dependsOn", json!(["db"])),
            "/baton/dependsOn/0",
        ),
        (
            "prune not a boolean",
            with("/baton/prune", json!("no")),
            "/baton/prune",
        ),
        ("cpus below the minimum", with("/cpus", json!(0)), "/cpus"),
        (
            "port out of range",
            with("/portDefinitions/0/port", json!(70000)),
            "/portDefinitions/0/port",
        ),
        (
            "unknown enum",
            with("/killSelection", json!("RANDOM")),
            "/killSelection",
        ),
        ("bad id", with("/id", json!("/Prod/Web")), "/id"),
        (
            "constraint too short",
            with("/constraints", json!([["hostname"]])),
            "/constraints/0",
        ),
        ("cmd and args", with("/args", json!(["sleep", "1"])), ""),
        ("ports and portDefinitions", with("/ports", json!([0])), ""),
        (
            "uris and fetch",
            {
                let mut a = with("/uris", json!(["http://x/a.tgz"]));
                a["fetch"] = json!([{"uri": "http://x/b.tgz"}]);
                a
            },
            "",
        ),
        (
            "two readiness checks",
            with("/readinessChecks", json!([{}, {}])),
            "/readinessChecks",
        ),
        (
            "two Mesos health checks",
            with(
                "/healthChecks",
                json!([{"protocol": "MESOS_TCP"}, {"protocol": "MESOS_HTTP"}]),
            ),
            "/healthChecks",
        ),
        ("env value a number", with("/env/N", json!(1)), "/env/N"),
        (
            "resident app not disabled",
            {
                let mut a = small_app();
                a["container"] = json!({"type": "MESOS", "volumes": [
                {"containerPath": "data", "persistent": {"size": 1}, "mode": "RW"}]});
                a
            },
            "/unreachableStrategy",
        ),
        (
            "portMappings in two places",
            with(
                "/container",
                json!({"portMappings": [], "docker": {"image": "x", "portMappings": [{}]}}),
            ),
            "",
        ),
        (
            "docker.network and networks",
            {
                let mut a = with(
                    "/container",
                    json!({"docker": {"image": "x", "network": "HOST"}}),
                );
                a["networks"] = json!([{"mode": "host"}]);
                a
            },
            "",
        ),
        (
            "ipAddress and networks",
            {
                let mut a = small_app();
                a.as_object_mut().unwrap().remove("portDefinitions");
                a["ipAddress"] = json!({"networkName": "dcos"});
                a["networks"] = json!([{"mode": "container", "name": "dcos"}]);
                a
            },
            "",
        ),
        (
            "ipAddress and portDefinitions",
            with("/ipAddress", json!({"networkName": "dcos"})),
            "",
        ),
        (
            "ipAddress discovery with a Docker container",
            {
                let mut a = small_app();
                a.as_object_mut().unwrap().remove("portDefinitions");
                a["container"] = json!({"docker": {"image": "x"}});
                a["ipAddress"] = json!({"discovery": {"ports": []}});
                a
            },
            "",
        ),
    ];
    for (what, app, pointer) in cases {
        let errs = errors(&validator, &app);
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{pointer}: "))),
            "{what}: expected an error at `{pointer}`, got {errs:?}"
        );
    }
    // A non-empty args with cmd is an error, an empty one is not (Marathon: args.nonEmpty).
    let app = with("/args", json!([]));
    assert_eq!(errors(&validator, &app), Vec::<String>::new());
    // A field of the wrong type is reported there, not also as a broken cross-field rule.
    for (pointer, value) in [("/args", Value::Null), ("/container", json!(null))] {
        let errs = errors(&validator, &with(pointer, value));
        assert!(
            !errs.is_empty() && errs.iter().all(|e| e.starts_with(&format!("{pointer}: "))),
            "{pointer}: {errs:?}"
        );
    }
    // The same deprecated fields alone, or with their canonical form left empty, are fine.
    let mut app = small_app();
    app.as_object_mut().unwrap().remove("portDefinitions");
    app["ipAddress"] = json!({"networkName": "dcos", "discovery": {"ports": [{"name": "http"}]}});
    app["container"] = json!({"type": "MESOS"});
    app["uris"] = json!(["http://x/a.tgz"]);
    app["fetch"] = json!([]);
    app["networks"] = json!([]);
    assert_eq!(errors(&validator, &app), Vec::<String>::new());
}

#[test]
fn nested_marathon_objects_stay_open_and_top_level_is_closed() {
    let validator = app_validator();
    // Marathon 1.8+ ignores unknown nested fields (Baton warns about them separately).
    let mut app = small_app();
    app["container"] = json!({"docker": {"image": "x", "forcePull": true}});
    app["healthChecks"][0]["unknownNested"] = json!(1);
    assert_eq!(errors(&validator, &app), Vec::<String>::new());
    let schema = app_schema();
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(
        schema["$defs"]["Baton"]["additionalProperties"],
        json!(false)
    );
}

/// Every `properties` entry of both schemas has a description (cross-field rules excepted: their
/// `properties` are constraints on fields described elsewhere).
#[test]
fn every_schema_property_has_a_description() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        match node {
            Value::Object(m) => {
                if let Some(props) = m.get("properties").and_then(Value::as_object) {
                    for (name, p) in props {
                        let described = p
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        // `false` forbids a field; there is nothing to describe.
                        if !described && p != &Value::Bool(false) {
                            missing.push(format!("{path}/properties/{name}"));
                        }
                    }
                }
                for (k, v) in m {
                    if matches!(k.as_str(), "not" | "if" | "then" | "else" | "contains") {
                        continue;
                    }
                    walk(v, &format!("{path}/{k}"), missing);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}/{i}"), missing);
                }
            }
            _ => {}
        }
    }
    for (name, schema) in [("app", app_schema()), ("repo", repo_schema())] {
        let mut missing = Vec::new();
        walk(&schema, "#", &mut missing);
        // A cross-field rule's description is the message a user gets when it fails.
        for (i, rule) in schema["allOf"].as_array().into_iter().flatten().enumerate() {
            if !rule.get("description").is_some_and(Value::is_string) {
                missing.push(format!("#/allOf/{i}"));
            }
        }
        assert!(
            missing.is_empty(),
            "{name}.schema.json: no description at {missing:?}"
        );
    }
}

#[test]
fn repo_schema_accepts_a_full_config_and_rejects_bad_ones() {
    let validator = repo_validator();
    let good = json!({
        "appsDir": "deploy/apps",
        "owner": "team-a.prod",
        "defaults": {"cpus": 0.5, "labels": {"team": "a"}, "container": {"docker": {"image": "x"}}},
        "prune": {"maxDeletes": 0, "maxDeletesPercent": 12.5},
        "drift": {"correctAfter": "30m"},
        "maxFileBytes": 65536
    });
    assert_eq!(errors(&validator, &good), Vec::<String>::new());
    assert_eq!(errors(&validator, &json!({})), Vec::<String>::new());
    let cases = [
        ("unknown key", json!({"ownr": "a"}), ""),
        (
            "appsDir absolute",
            json!({"appsDir": "/srv/apps"}),
            "/appsDir",
        ),
        (
            "appsDir escapes",
            json!({"appsDir": "apps/../.."}),
            "/appsDir",
        ),
        ("appsDir parent", json!({"appsDir": ".."}), "/appsDir"),
        (
            "appsDir Windows drive",
            json!({"appsDir": "C:apps"}),
            "/appsDir",
        ),
        ("owner uppercase", json!({"owner": "Team"}), "/owner"),
        ("owner too long", json!({"owner": "a".repeat(64)}), "/owner"),
        (
            "defaults with id",
            json!({"defaults": {"id": "/x"}}),
            "/defaults/id",
        ),
        (
            "defaults with baton",
            json!({"defaults": {"baton": {}}}),
            "/defaults/baton",
        ),
        (
            "defaults with a typo",
            json!({"defaults": {"instance": 2}}),
            "/defaults",
        ),
        (
            "defaults with a bad type",
            json!({"defaults": {"mem": "lots"}}),
            "/defaults/mem",
        ),
        ("prune unknown key", json!({"prune": {"max": 1}}), "/prune"),
        (
            "negative maxDeletes",
            json!({"prune": {"maxDeletes": -1}}),
            "/prune/maxDeletes",
        ),
        (
            "percent over 100",
            json!({"prune": {"maxDeletesPercent": 101}}),
            "/prune/maxDeletesPercent",
        ),
        ("bad drift", json!({"drift": "always"}), "/drift"),
        (
            "maxFileBytes zero",
            json!({"maxFileBytes": 0}),
            "/maxFileBytes",
        ),
    ];
    for (what, config, pointer) in cases {
        let errs = errors(&validator, &config);
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{pointer}: "))),
            "{what}: expected an error at `{pointer}`, got {errs:?}"
        );
    }
    // The defaults documented in the schema are the ones the brief fixed.
    let schema = repo_schema();
    let props = &schema["properties"];
    assert_eq!(props["appsDir"]["default"], json!("apps"));
    assert_eq!(props["owner"]["default"], json!("baton"));
    assert_eq!(props["drift"]["default"], json!("report"));
    assert_eq!(props["maxFileBytes"]["default"], json!(1048576));
    assert_eq!(
        props["prune"]["properties"]["maxDeletes"]["default"],
        json!(5)
    );
    assert_eq!(
        props["prune"]["properties"]["maxDeletesPercent"]["default"],
        json!(10)
    );
}
