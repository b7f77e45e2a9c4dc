//! Validation against our JSON Schemas (`schemas/app.schema.json`, `schemas/repo.schema.json`),
//! with findings in plain words: unknown fields get a did-you-mean, nested fields Marathon would
//! silently ignore get a warning.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Registry, Validator};
use serde_json::Value;

use super::parse::{escape_token, split_pointer};
use super::Severity;

/// The app spec schema, as shipped in `schemas/`.
pub const APP_SCHEMA: &str = include_str!("../../../../schemas/app.schema.json");
/// The `baton.yaml` schema.
pub const REPO_SCHEMA: &str = include_str!("../../../../schemas/repo.schema.json");

/// One schema finding: pointer into the instance, and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub pointer: String,
    pub message: String,
}

/// A compiled schema plus its raw form (walked for field names).
pub struct Schema {
    raw: Value,
    validator: Validator,
    /// What [`Schema::unknown_nested`] needs to know of each schema node, worked out once;
    /// `shapes[0]` is the root.
    shapes: Vec<Shape>,
}

/// Index into [`Schema::shapes`].
type ShapeId = usize;

/// A schema node as the unknown-field walk sees it: the node with its `$ref` target and
/// `oneOf`/`anyOf`/`allOf` branches ([`branches_in`]) folded together. Computing this per
/// instance node (resolving `$ref`s, collecting branches) was most of the cost of validating a
/// spec; the schema is fixed, so it is done once per schema node when the schema is compiled.
#[derive(Debug, Default)]
struct Shape {
    /// Some branch says `additionalProperties: false`.
    closed: bool,
    /// Some branch allows any key (`additionalProperties` true or a schema, `patternProperties`).
    open_map: bool,
    /// Some branch is a `$ref` into another schema file: its fields are not guessed at.
    external: bool,
    /// Some branch has `properties`.
    has_properties: bool,
    /// For each property name, the schema of that property in every branch that defines it, in
    /// branch order.
    properties: HashMap<String, Vec<ShapeId>>,
    /// Every property name of every branch (sorted, as the did-you-mean lists them).
    known: Vec<String>,
    /// The first branch's `additionalProperties` schema, when it is a mapping.
    additional: Option<ShapeId>,
    /// The first branch's `items`.
    items: Option<ShapeId>,
}

/// The shapes of every schema node reachable from `raw` through properties, additional
/// properties and items; node identity is the node's address inside `raw` (stable while `raw`
/// is borrowed), so a recursive schema ends up as a cycle of ids.
fn shapes_of(raw: &Value) -> Vec<Shape> {
    fn id_of<'a>(
        node: &'a Value,
        ids: &mut HashMap<*const Value, ShapeId>,
        shapes: &mut Vec<Shape>,
        todo: &mut Vec<(&'a Value, ShapeId)>,
    ) -> ShapeId {
        *ids.entry(node as *const Value).or_insert_with(|| {
            shapes.push(Shape::default());
            todo.push((node, shapes.len() - 1));
            shapes.len() - 1
        })
    }
    let mut shapes: Vec<Shape> = Vec::new();
    let mut ids: HashMap<*const Value, ShapeId> = HashMap::new();
    let mut todo: Vec<(&Value, ShapeId)> = Vec::new();
    id_of(raw, &mut ids, &mut shapes, &mut todo); // the root: shape 0
    while let Some((node, id)) = todo.pop() {
        let branches = branches_in(raw, node);
        let mut shape = Shape {
            closed: branches
                .iter()
                .any(|b| b.get("additionalProperties") == Some(&Value::Bool(false))),
            open_map: branches.iter().any(|b| {
                b.get("additionalProperties").is_some_and(Value::is_object)
                    || b.get("patternProperties").is_some()
                    || b.get("additionalProperties") == Some(&Value::Bool(true))
            }),
            external: branches.iter().any(|b| {
                b.get("$ref")
                    .and_then(Value::as_str)
                    .is_some_and(|r| !r.starts_with('#'))
            }),
            ..Shape::default()
        };
        let props: Vec<&serde_json::Map<String, Value>> = branches
            .iter()
            .filter_map(|b| b.get("properties").and_then(Value::as_object))
            .collect();
        shape.has_properties = !props.is_empty();
        for p in &props {
            for (k, sub) in p.iter() {
                let sub_id = id_of(sub, &mut ids, &mut shapes, &mut todo);
                shape.properties.entry(k.clone()).or_default().push(sub_id);
                shape.known.push(k.clone());
            }
        }
        shape.known.sort();
        if let Some(ap) = branches
            .iter()
            .find_map(|b| b.get("additionalProperties").filter(|a| a.is_object()))
        {
            shape.additional = Some(id_of(ap, &mut ids, &mut shapes, &mut todo));
        }
        if let Some(items) = branches.iter().find_map(|b| b.get("items")) {
            shape.items = Some(id_of(items, &mut ids, &mut shapes, &mut todo));
        }
        shapes[id] = shape;
    }
    shapes
}

/// A node and, recursively, its `$ref` target and `oneOf`/`anyOf`/`allOf` branches.
fn branches_in<'a>(raw: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let mut todo = vec![node];
    let mut seen = 0;
    while let Some(n) = todo.pop() {
        seen += 1;
        if seen > 64 {
            break; // recursive schemas: enough for field names
        }
        out.push(n);
        if let Some(target) = n
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| resolve_in(raw, r))
        {
            todo.push(target);
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            if let Some(list) = n.get(key).and_then(Value::as_array) {
                todo.extend(list.iter());
            }
        }
    }
    out
}

/// The node a local `$ref` (`#/...`) points to in `raw`.
fn resolve_in<'a>(raw: &'a Value, reference: &str) -> Option<&'a Value> {
    let fragment = reference.split_once('#').map(|(_, f)| f)?;
    if !reference.starts_with('#') {
        return None; // refs into the other schema file are not walked
    }
    raw.pointer(fragment)
}

/// Our schemas are part of the binary; failing to compile one is a build defect, caught by the
/// tests, so it is reported rather than panicking at run time.
#[derive(Debug, thiserror::Error)]
#[error("built-in schema {name} is broken: {reason}")]
pub struct SchemaDefect {
    name: &'static str,
    reason: String,
}

fn compile(name: &'static str, text: &str) -> Result<Schema, SchemaDefect> {
    let defect = |reason: String| SchemaDefect { name, reason };
    let raw: Value = serde_json::from_str(text).map_err(|e| defect(e.to_string()))?;
    let app: Value = serde_json::from_str(APP_SCHEMA).map_err(|e| defect(e.to_string()))?;
    let app_id = app
        .get("$id")
        .and_then(Value::as_str)
        .unwrap_or("https://baton.dev/schemas/app.schema.json")
        .to_string();
    let registry = Registry::new()
        .add(&app_id, app)
        .and_then(|b| b.prepare())
        .map_err(|e| defect(e.to_string()))?;
    // The `regex` engine: our patterns need no look-around, and it compiles far leaner than
    // fancy-regex.
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .with_registry(&registry)
        .build(&raw)
        .map_err(|e| defect(e.to_string()))?;
    let shapes = shapes_of(&raw);
    Ok(Schema {
        raw,
        validator,
        shapes,
    })
}

/// Start compiling the schemas on a background thread (they take a few hundred milliseconds),
/// so that reading files or the live state overlaps with it. Idempotent; later callers of
/// [`app`] wait for the compilation in progress instead of starting another.
pub fn warm_up() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        // If no thread can be spawned, the first caller of `app()` compiles instead.
        let _ = std::thread::Builder::new()
            .name("schema-compile".into())
            .spawn(|| {
                let _ = app();
                let _ = repo();
            });
    });
}

/// The compiled app schema (compiled once per process).
pub fn app() -> Result<&'static Schema, SchemaDefect> {
    static CELL: OnceLock<Result<Schema, String>> = OnceLock::new();
    cached(&CELL, "app.schema.json", APP_SCHEMA)
}

/// The compiled `baton.yaml` schema.
pub fn repo() -> Result<&'static Schema, SchemaDefect> {
    static CELL: OnceLock<Result<Schema, String>> = OnceLock::new();
    cached(&CELL, "repo.schema.json", REPO_SCHEMA)
}

fn cached(
    cell: &'static OnceLock<Result<Schema, String>>,
    name: &'static str,
    text: &str,
) -> Result<&'static Schema, SchemaDefect> {
    cell.get_or_init(|| compile(name, text).map_err(|e| e.reason))
        .as_ref()
        .map_err(|reason| SchemaDefect {
            name,
            reason: reason.clone(),
        })
}

impl Schema {
    /// All findings for `instance`: schema errors, then warnings for unknown nested fields.
    pub fn check(&self, instance: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        // Most specs are valid: `is_valid` stops at nothing and builds no errors, and only when it
        // says no are the errors collected (the same ones either way).
        let errors = if self.validator.is_valid(instance) {
            None
        } else {
            Some(self.validator.iter_errors(instance))
        };
        for e in errors.into_iter().flatten() {
            let pointer = e.instance_path().to_string();
            match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let known = self.known_fields(&pointer);
                    for field in unexpected {
                        out.push(Finding {
                            severity: Severity::Error,
                            pointer: format!("{pointer}/{}", escape_token(field)),
                            message: unknown_field_message(field, &known, ""),
                        });
                    }
                }
                ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                    let forms = self.forms_at(&e.schema_path().to_string());
                    let message = if forms.is_empty() {
                        format!(
                            "{} is not one of the forms this field allows",
                            json_type(e.instance())
                        )
                    } else {
                        format!(
                            "expected {}, found {}",
                            forms.join(" or "),
                            json_type(e.instance())
                        )
                    };
                    out.push(Finding {
                        severity: Severity::Error,
                        pointer,
                        message,
                    });
                }
                kind => out.push(Finding {
                    severity: Severity::Error,
                    pointer,
                    message: describe(kind, e.instance())
                        .or_else(|| self.rule_description(&e.schema_path().to_string()))
                        .unwrap_or_else(|| {
                            format!("{} is not allowed here", json_type(e.instance()))
                        }),
                }),
            }
        }
        if !self.shapes.is_empty() {
            self.unknown_nested(instance, 0, &mut String::new(), &mut out);
        }
        out.sort_by(|a, b| (a.severity, &a.pointer).cmp(&(b.severity, &b.pointer)));
        out.dedup();
        out
    }

    /// Property names the schema knows for the object at `pointer` (union over `oneOf`/`anyOf`/
    /// `allOf` branches), for did-you-mean suggestions.
    pub fn known_fields(&self, pointer: &str) -> Vec<String> {
        let mut nodes = vec![&self.raw];
        for token in split_pointer(pointer) {
            let mut next = Vec::new();
            for node in nodes {
                for n in self.branches(node) {
                    if let Some(p) = n.get("properties").and_then(|p| p.get(&token)) {
                        next.push(p);
                    } else if let Some(items) = n.get("items") {
                        if token.parse::<usize>().is_ok() {
                            next.push(items);
                        }
                    } else if let Some(ap) = n.get("additionalProperties") {
                        if ap.is_object() {
                            next.push(ap);
                        }
                    }
                }
            }
            nodes = next;
        }
        let mut names: Vec<String> = nodes
            .into_iter()
            .flat_map(|n| self.branches(n))
            .filter_map(|n| n.get("properties").and_then(Value::as_object))
            .flat_map(|p| p.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The `description` of the rule that failed (cross-field rules in `allOf` carry the message a
    /// user should see). Never the instance: it may hold secret values.
    fn rule_description(&self, schema_path: &str) -> Option<String> {
        let mut nodes = vec![&self.raw];
        let mut node = &self.raw;
        for token in split_pointer(schema_path) {
            let next = if token == "$ref" {
                node.get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| self.resolve(r))
            } else {
                match node {
                    Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => node.get(&token),
                }
            }?;
            node = next;
            nodes.push(node);
        }
        // The failing keyword's own node first, then its parents up to the enclosing rule.
        nodes
            .iter()
            .rev()
            .take(3)
            .find_map(|n| n.get("description").and_then(Value::as_str))
            .map(str::to_string)
    }

    /// The alternatives of an `anyOf`/`oneOf` keyword at `schema_path`, in words.
    fn forms_at(&self, schema_path: &str) -> Vec<String> {
        let mut node = &self.raw;
        for token in split_pointer(schema_path) {
            let next = if token == "$ref" {
                node.get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| self.resolve(r))
            } else {
                match node {
                    Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => node.get(&token),
                }
            };
            match next {
                Some(n) => node = n,
                None => return Vec::new(),
            }
        }
        let Some(branches) = node.as_array() else {
            return Vec::new();
        };
        branches
            .iter()
            .map(|b| {
                let b = b
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| self.resolve(r))
                    .unwrap_or(b);
                if let Some(values) = b.get("enum").and_then(Value::as_array) {
                    let shown: Vec<String> = values.iter().map(Value::to_string).collect();
                    return format!("one of {}", shown.join(", "));
                }
                if let Some(c) = b.get("const") {
                    return c.to_string();
                }
                match b.get("type").and_then(Value::as_str) {
                    Some("object") => match b.get("required").and_then(Value::as_array) {
                        Some(req) if !req.is_empty() => {
                            let keys: Vec<String> = req
                                .iter()
                                .filter_map(Value::as_str)
                                .map(|k| format!("`{k}`"))
                                .collect();
                            format!("a mapping with {}", keys.join(", "))
                        }
                        _ => "a mapping".to_string(),
                    },
                    Some("array") => "a list".to_string(),
                    Some(t) => format!("a {t}"),
                    None => "another form".to_string(),
                }
            })
            .collect()
    }

    /// A node and, recursively, its `$ref` target and `oneOf`/`anyOf`/`allOf` branches.
    fn branches<'a>(&'a self, node: &'a Value) -> Vec<&'a Value> {
        branches_in(&self.raw, node)
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        resolve_in(&self.raw, reference)
    }

    /// Warn about fields inside nested Marathon objects that the schema does not define: Marathon
    /// ignores them, which is rarely what the author meant (`forcePull` for `forcePullImage`).
    /// `pointer` is the instance's pointer; it is extended and restored on the way down.
    fn unknown_nested(
        &self,
        instance: &Value,
        shape: ShapeId,
        pointer: &mut String,
        out: &mut Vec<Finding>,
    ) {
        let Some(s) = self.shapes.get(shape) else {
            return;
        };
        match instance {
            Value::Object(map) => {
                if s.external {
                    return;
                }
                for (k, v) in map {
                    let len = pointer.len();
                    pointer.push('/');
                    if k.contains(['~', '/']) {
                        pointer.push_str(&escape_token(k));
                    } else {
                        pointer.push_str(k);
                    }
                    match s.properties.get(k).map(Vec::as_slice).unwrap_or_default() {
                        [sub] => self.unknown_nested(v, *sub, pointer, out),
                        // Alternatives (`oneOf` branches) may define the same field differently:
                        // warn only about what none of them knows.
                        [first, rest @ ..] => {
                            let mut common = Vec::new();
                            self.unknown_nested(v, *first, pointer, &mut common);
                            for sub in rest {
                                let mut other = Vec::new();
                                self.unknown_nested(v, *sub, pointer, &mut other);
                                common.retain(|f| other.iter().any(|o| o.pointer == f.pointer));
                            }
                            out.extend(common);
                        }
                        [] => {
                            if let Some(ap) = s.additional {
                                self.unknown_nested(v, ap, pointer, out);
                            } else if !s.closed && !s.open_map && s.has_properties {
                                out.push(Finding {
                                    severity: Severity::Warning,
                                    pointer: pointer.clone(),
                                    message: unknown_field_message(
                                        k,
                                        &s.known,
                                        "; Marathon ignores it",
                                    ),
                                });
                            }
                        }
                    }
                    pointer.truncate(len);
                }
            }
            Value::Array(items) => {
                if let Some(item_shape) = s.items {
                    for (i, v) in items.iter().enumerate() {
                        let len = pointer.len();
                        let _ = write!(pointer, "/{i}");
                        self.unknown_nested(v, item_shape, pointer, out);
                        pointer.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }
}

/// "unknown field `instance` (did you mean `instances`?)".
pub fn unknown_field_message(field: &str, known: &[String], suffix: &str) -> String {
    match did_you_mean(field, known) {
        Some(s) => format!("unknown field `{field}` (did you mean `{s}`?){suffix}"),
        None => format!("unknown field `{field}`{suffix}"),
    }
}

/// The closest known name, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(field: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = field.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Plain words for the common keywords; `None` for the rest (then the rule's description is used).
/// Values are shown only for scalars of fields that never hold secrets (numbers, enums).
fn describe(kind: &ValidationErrorKind, instance: &Value) -> Option<String> {
    Some(match kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, found {}", json_type(instance))
        }
        ValidationErrorKind::Required { property } => {
            format!("missing required field {property}")
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("must be at least {limit}, found {}", scalar_shown(instance))
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("must be at most {limit}, found {}", scalar_shown(instance))
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::Enum { options } => {
            format!("must be one of {options}, found {}", scalar_shown(instance))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!(
                "{} does not match the pattern {pattern}",
                scalar_shown(instance)
            )
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::UniqueItems => "list items must be unique".to_string(),
        ValidationErrorKind::Constant { expected_value } => format!("must be {expected_value}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        _ => return None,
    })
}

/// A short form of a value for messages: strings are cut, collections not shown at all.
fn scalar_shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 60 => {
            format!("\"{}...\"", s.chars().take(57).collect::<String>())
        }
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suggestions_are_close_names_only() {
        let known: Vec<String> = ["instances", "cpus", "mem", "healthChecks"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(did_you_mean("instance", &known), Some("instances"));
        assert_eq!(did_you_mean("healthchecks", &known), Some("healthChecks"));
        assert_eq!(did_you_mean("zzzz", &known), None);
    }

    #[test]
    fn app_schema_compiles_and_reports_in_plain_words() {
        let schema = app().unwrap();
        let findings = schema.check(&json!({"cmd": "sleep 1", "instance": 2, "cpus": "one"}));
        let unknown = findings.iter().find(|f| f.pointer == "/instance").unwrap();
        assert!(
            unknown.message.contains("did you mean `instances`"),
            "{unknown:?}"
        );
        let cpus = findings.iter().find(|f| f.pointer == "/cpus").unwrap();
        assert!(cpus.message.contains("found a string"), "{cpus:?}");
    }

    #[test]
    fn repo_schema_compiles() {
        let schema = repo().unwrap();
        assert!(schema.check(&json!({"owner": "team-a"})).is_empty());
        assert!(!schema.check(&json!({"ownr": "team-a"})).is_empty());
    }
}
