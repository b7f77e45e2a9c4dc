//! YAML and JSON documents into `serde_json::Value`, bounded, and back to line numbers.
//!
//! Specs are read with a pull parser (yaml-rust2) so that hostile input stays cheap: aliases are
//! expanded against a node budget (no "billion laughs"), nesting is capped, and the build is
//! iterative (no stack overflow). Positions are not kept on the fast path; when a diagnostic needs
//! a line, [`locate`] parses the text again and stops at the node a JSON pointer names.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// Limits that keep a single document from costing more than a legitimate spec could.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Nodes after alias expansion; an alias bomb trips this long before memory runs out.
    pub max_nodes: usize,
    /// Bytes of keys and strings after alias expansion: a few aliases of one long string are
    /// few nodes but can be gigabytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 200_000,
            max_bytes: 64 << 20,
        }
    }
}

/// The syntax of a spec file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// A document that could not be read, with the position where the parser gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    /// 1-based line, when the parser can tell.
    pub line: Option<usize>,
    /// 1-based column, when the parser can tell.
    pub column: Option<usize>,
}

/// 1-based line and column of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Parse one document. JSON goes through serde_json (exact JSON semantics and errors); YAML through
/// the bounded event builder below. An empty document is an error: a spec file with nothing in it
/// is far more likely a mistake (a truncated write) than an intent.
///
/// Both formats hold the same values and refuse the same things: a key given twice, a NUL
/// character in a key or a string (Marathon and the processes it starts would cut the string
/// there), and YAML tags outside the core schema (`!!binary`, `!!timestamp`, `!custom`: a spec
/// is plain data, and passing such a scalar on as its raw text would deploy something else than
/// its author meant). A leading byte order mark is allowed (both formats permit it).
pub fn parse(text: &str, format: Format, limits: Limits) -> Result<Value, ParseError> {
    let text = strip_bom(text);
    if text.trim().is_empty() {
        return Err(ParseError {
            message: "the file is empty".into(),
            line: None,
            column: None,
        });
    }
    match format {
        Format::Json => json_strict(text).map_err(|e| ParseError {
            message: json_message(&e),
            line: Some(e.line()),
            column: Some(e.column()),
        }),
        Format::Yaml => Builder::new(limits, None).run(text).map(|(v, _)| v),
    }
}

/// A byte order mark at the start of a stream is legal in YAML and tolerated in JSON (RFC 8259
/// lets a parser ignore it); editors on Windows write one. It is not part of the first key.
fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parse JSON like `serde_json::from_str::<Value>` (same values, same errors), but with every
/// mapping and list at its final size: `serde_json` grows them by doubling while it reads (a
/// one-item list keeps room for four values, a mapping of 15 keys room for 28 entries). For a
/// saved 2,000-app `GET /v2/apps` that is 22 MB of values instead of 26.6 MB (massif). Each
/// container is made compact as soon as it is complete, so the spare room is never held for
/// the whole document at once.
///
/// This is the reader for JSON Baton did not write by hand (a saved `GET /v2/apps`, a Marathon
/// answer): a repeated key keeps its last value as `serde_json` does. Specs go through the
/// stricter [`parse`].
pub fn json_compact(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Compact<false>>(text).map(|c| c.0)
}

/// [`json_compact`] that refuses what a spec must not hold: a key given twice (YAML refuses it
/// too) and a NUL character in a key or a string. The error carries the line of the key or
/// string (serde_json places a visitor's error where its reader stands, just after it).
fn json_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Compact<true>>(text).map(|c| c.0)
}

/// A `Value` deserialised with compact containers (see [`json_compact`]); `STRICT` refuses
/// duplicate keys and NUL characters (see [`json_strict`]).
struct Compact<const STRICT: bool>(Value);

impl<'de, const STRICT: bool> serde::Deserialize<'de> for Compact<STRICT> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CompactVisitor::<STRICT>).map(Compact)
    }
}

struct CompactVisitor<const STRICT: bool>;

/// Mappings up to this size look for a repeated key by scanning their entries; larger ones keep
/// a set. Spec mappings are small, so the set is rarely built.
const SCAN_KEYS: usize = 16;

impl<'de, const STRICT: bool> serde::de::Visitor<'de> for CompactVisitor<STRICT> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        if STRICT {
            no_nul(v).map_err(E::custom)?;
        }
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        if STRICT {
            no_nul(&v).map_err(E::custom)?;
        }
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Compact::<STRICT>(v)) = seq.next_element()? {
            items.push(v);
        }
        items.shrink_to_fit();
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // Entries are gathered first, then the mapping is built at its exact size; a repeated
        // key keeps its first place and its last value, as `serde_json::Value` does, unless
        // `STRICT` refuses it (checked before its value is read, so the error is at the key).
        use serde::de::Error;
        let mut entries: Vec<(String, Value)> = Vec::new();
        let mut seen: Option<std::collections::HashSet<String>> = None;
        while let Some(k) = map.next_key::<String>()? {
            if STRICT {
                no_nul(&k).map_err(A::Error::custom)?;
                let repeated = match &mut seen {
                    Some(set) => !set.insert(k.clone()),
                    None if entries.len() < SCAN_KEYS => entries.iter().any(|(e, _)| *e == k),
                    None => {
                        let mut set: std::collections::HashSet<String> =
                            entries.iter().map(|(e, _)| e.clone()).collect();
                        let repeated = !set.insert(k.clone());
                        seen = Some(set);
                        repeated
                    }
                };
                if repeated {
                    return Err(A::Error::custom(format!("duplicate key `{}`", shown(&k))));
                }
            }
            let Compact::<STRICT>(v) = map.next_value()?;
            entries.push((k, v));
        }
        let mut out = Map::with_capacity(entries.len());
        for (k, v) in entries {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Where the node at `pointer` starts in `text`, if the text parses that far. For a pointer to a
/// missing member, the position of the nearest existing ancestor is given.
pub fn locate(text: &str, pointer: &str) -> Option<Position> {
    let text = strip_bom(text);
    let target: Vec<String> = split_pointer(pointer);
    // JSON is YAML 1.2 as far as the event parser cares, so one locator serves both formats.
    let mut builder = Builder::new(Limits::default(), Some(target));
    let _ = builder.run(text);
    builder.found.map(|m| Position {
        line: m.line(),
        column: m.col() + 1,
    })
}

/// Split an RFC 6901 pointer into unescaped reference tokens.
pub fn split_pointer(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Escape one reference token for a JSON pointer.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn json_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; we report the position separately.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

enum Frame {
    Seq(Vec<Value>, usize),
    Map(MapFrame),
}

struct MapFrame {
    /// Members so far, with where each key starts. Kept as a list and made a mapping once, at
    /// its exact size, when the mapping ends: every key is hashed once, and a repeated key is
    /// found then.
    entries: Vec<(String, Value, Marker)>,
    /// The key whose value is being built, and where the key starts.
    key: Option<(String, Marker)>,
    anchor: usize,
    /// `<<` merges, applied when the mapping ends so explicit keys win wherever they appear.
    merged: Vec<Map<String, Value>>,
}

/// Builds a `Value` from parser events with an explicit stack.
struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    /// Anchored nodes (by the parser's anchor id) and their weight, for alias expansion under
    /// the budget. A map: a list searched per alias made many aliases quadratic.
    anchors: std::collections::HashMap<usize, (Value, Weight)>,
    nodes: usize,
    bytes: usize,
    /// Locator mode: the pointer we are looking for, and the best position found so far.
    target: Option<Vec<String>>,
    found: Option<Marker>,
    /// Length of the path of `found`, so the deepest match wins and the first at that depth.
    found_depth: Option<usize>,
}

impl Builder {
    fn new(limits: Limits, target: Option<Vec<String>>) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: std::collections::HashMap::new(),
            nodes: 0,
            bytes: 0,
            target,
            found: None,
            found_depth: None,
        }
    }

    fn run(&mut self, text: &str) -> Result<(Value, usize), ParseError> {
        let mut parser = Parser::new_from_str(text);
        let mut root: Option<Value> = None;
        let mut documents = 0;
        loop {
            let (event, mark) = parser.next_token().map_err(|e| ParseError {
                message: e.info().to_string(),
                line: Some(e.marker().line()),
                column: Some(e.marker().col() + 1),
            })?;
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(err_at(
                            "a spec file holds one document; found a second `---`",
                            mark,
                        ));
                    }
                }
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
                Event::Alias(_) if self.target.is_some() => {
                    // The locator runs on text that parsed: an alias is one node at its own
                    // place (nothing is copied, so placing a diagnostic never costs an expansion).
                    self.note_position(mark);
                    if let Some(done) = self.push_value(Value::Null, 0, Weight::default(), mark)? {
                        root = Some(done);
                    }
                }
                Event::Alias(id) => {
                    let Some(weight) = self.anchors.get(&id).map(|(_, w)| *w) else {
                        return Err(err_at("alias to an unknown anchor", mark));
                    };
                    // Counted before the copy is made: an over-budget alias is never copied.
                    self.count(weight, mark)?;
                    let Some(value) = self.anchors.get(&id).map(|(v, _)| v.clone()) else {
                        return Err(err_at("alias to an unknown anchor", mark));
                    };
                    self.note_position(mark);
                    if let Some(done) = self.push_value(value, 0, weight, mark)? {
                        root = Some(done);
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let weight = Weight {
                        nodes: 1,
                        bytes: text.len(),
                    };
                    self.count(weight, mark)?;
                    if self.expecting_key() {
                        key_ok(&text, tag.as_ref()).map_err(|m| err_at(&m, mark))?;
                        self.set_key(text, mark);
                        continue;
                    }
                    self.note_position(mark);
                    let value = scalar(text, style, tag.as_ref()).map_err(|m| err_at(&m, mark))?;
                    if let Some(done) = self.push_value(value, anchor, weight, mark)? {
                        root = Some(done);
                    }
                }
                Event::SequenceStart(anchor, tag) => {
                    collection_tag_ok(tag.as_ref(), Tagged::Seq).map_err(|m| err_at(&m, mark))?;
                    self.open(mark)?;
                    self.stack.push(Frame::Seq(Vec::new(), anchor));
                }
                Event::MappingStart(anchor, tag) => {
                    collection_tag_ok(tag.as_ref(), Tagged::Map).map_err(|m| err_at(&m, mark))?;
                    self.open(mark)?;
                    self.stack.push(Frame::Map(MapFrame {
                        entries: Vec::new(),
                        key: None,
                        anchor,
                        merged: Vec::new(),
                    }));
                }
                Event::SequenceEnd => {
                    if let Some(Frame::Seq(mut items, anchor)) = self.stack.pop() {
                        items.shrink_to_fit(); // see `json_compact`
                        if let Some(done) = self.close(Value::Array(items), anchor, mark)? {
                            root = Some(done);
                        }
                    }
                }
                Event::MappingEnd => {
                    if let Some(Frame::Map(f)) = self.stack.pop() {
                        let anchor = f.anchor;
                        let map = mapping(f)?;
                        if let Some(done) = self.close(Value::Object(map), anchor, mark)? {
                            root = Some(done);
                        }
                    }
                }
            }
        }
        match root {
            Some(v) => Ok((v, self.nodes)),
            None => Err(ParseError {
                message: "the file holds no document".into(),
                line: None,
                column: None,
            }),
        }
    }

    fn count(&mut self, w: Weight, mark: Marker) -> Result<(), ParseError> {
        self.nodes = self.nodes.saturating_add(w.nodes);
        self.bytes = self.bytes.saturating_add(w.bytes);
        if self.nodes > self.limits.max_nodes {
            return Err(err_at(
                &format!(
                    "the document expands to more than {} nodes (alias bomb?)",
                    self.limits.max_nodes
                ),
                mark,
            ));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(err_at(
                &format!(
                    "the document expands to more than {} bytes of text (alias bomb?)",
                    self.limits.max_bytes
                ),
                mark,
            ));
        }
        Ok(())
    }

    fn open(&mut self, mark: Marker) -> Result<(), ParseError> {
        self.count(Weight { nodes: 1, bytes: 0 }, mark)?;
        if self.expecting_key() {
            return Err(err_at("mapping keys must be plain strings", mark));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(err_at(
                &format!("nesting deeper than {} levels", self.limits.max_depth),
                mark,
            ));
        }
        self.note_position(mark);
        Ok(())
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map(MapFrame { key: None, .. }))
        )
    }

    fn set_key(&mut self, key: String, mark: Marker) {
        if let Some(Frame::Map(f)) = self.stack.last_mut() {
            f.key = Some((key, mark));
        }
    }

    /// In locator mode, remember where the value node about to be built starts when its path is
    /// a prefix of the target: the deepest such node wins, and the first one at that depth. A
    /// member of a mapping is placed at its key, where a reader looks for it.
    fn note_position(&mut self, mark: Marker) {
        let Some(target) = &self.target else { return };
        let path: Vec<String> = self
            .stack
            .iter()
            .map(|f| match f {
                Frame::Seq(items, _) => items.len().to_string(),
                Frame::Map(f) => f.key.as_ref().map(|k| k.0.clone()).unwrap_or_default(),
            })
            .collect();
        let mark = match self.stack.last() {
            Some(Frame::Map(MapFrame {
                key: Some((_, key_mark)),
                ..
            })) => *key_mark,
            _ => mark,
        };
        let deeper = self.found_depth.is_none_or(|d| path.len() > d);
        if deeper && path.len() <= target.len() && target[..path.len()] == path[..] {
            self.found = Some(mark);
            self.found_depth = Some(path.len());
        }
    }

    fn close(
        &mut self,
        value: Value,
        anchor: usize,
        mark: Marker,
    ) -> Result<Option<Value>, ParseError> {
        // The node count of a closed collection is not tracked per node; for anchors we count
        // the nodes of the subtree once, which is what an alias to it will cost again.
        let weight = if anchor > 0 {
            weight_of(&value)
        } else {
            Weight::default()
        };
        self.push_value(value, anchor, weight, mark)
    }

    /// Attach a finished node to its parent; returns the root when the document is complete.
    fn push_value(
        &mut self,
        value: Value,
        anchor: usize,
        weight: Weight,
        mark: Marker,
    ) -> Result<Option<Value>, ParseError> {
        if anchor > 0 && self.target.is_none() {
            self.anchors.insert(anchor, (value.clone(), weight));
        }
        match self.stack.last_mut() {
            None => Ok(Some(value)),
            Some(Frame::Seq(items, _)) => {
                items.push(value);
                Ok(None)
            }
            Some(Frame::Map(f)) => {
                let Some((k, key_mark)) = f.key.take() else {
                    return Err(err_at("mapping keys must be plain strings", mark));
                };
                if k == "<<" {
                    if self.target.is_some() {
                        return Ok(None); // aliases are not expanded when locating
                    }
                    f.merged
                        .extend(merge_sources(value).map_err(|m| err_at(&m, key_mark))?);
                    return Ok(None);
                }
                f.entries.push((k, value, key_mark));
                Ok(None)
            }
        }
    }
}

/// A finished mapping frame as a mapping at its exact size (see `json_compact`): explicit keys in
/// order, then what `<<` merges bring that no explicit key gave. A key given twice is an error
/// at its second place.
fn mapping(f: MapFrame) -> Result<Map<String, Value>, ParseError> {
    let mut map = Map::with_capacity(f.entries.len());
    for (k, v, key_mark) in f.entries {
        match map.entry(k) {
            serde_json::map::Entry::Occupied(e) => {
                return Err(err_at(
                    &format!("duplicate key `{}`", shown(e.key())),
                    key_mark,
                ));
            }
            serde_json::map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
    for source in f.merged {
        for (k, v) in source {
            map.entry(k).or_insert(v);
        }
    }
    Ok(map)
}

/// The mappings of a YAML merge key (`<<: *defaults` or `<<: [*a, *b]`); explicit keys win.
fn merge_sources(value: Value) -> Result<Vec<Map<String, Value>>, String> {
    Ok(match value {
        Value::Object(m) => vec![m],
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err("`<<` takes a mapping or a list of mappings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("`<<` takes a mapping or a list of mappings".into()),
    })
}

/// What a node costs against the [`Limits`]: its nodes, and the bytes of its keys and strings.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

fn weight_of(v: &Value) -> Weight {
    let mut w = Weight::default();
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        w.nodes += 1;
        match v {
            Value::Array(a) => todo.extend(a.iter()),
            Value::Object(m) => {
                w.bytes += m.keys().map(String::len).sum::<usize>();
                todo.extend(m.values());
            }
            Value::String(s) => w.bytes += s.len(),
            _ => {}
        }
    }
    w
}

fn err_at(message: &str, mark: Marker) -> ParseError {
    ParseError {
        message: message.to_string(),
        line: Some(mark.line()),
        column: Some(mark.col() + 1),
    }
}

/// Resolve a scalar with the YAML 1.2 core schema: quoted scalars are strings; plain ones may be
/// null, booleans, integers or floats. `yes`/`no`/`on`/`off` stay strings (YAML 1.1's surprise).
/// A core tag (`!!str`, `!!int`, ...) decides the type instead, and the text must fit it.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    no_nul(&text)?;
    let tagged = match tag {
        Some(t) => core_tag(t)?,
        None if style != TScalarStyle::Plain => Tagged::Str,
        None => Tagged::Any,
    };
    let resolved = || Yaml::from_str(&text);
    let misfit = |t: &Tag| format!("`{}` is not a valid `{}` value", shown(&text), tag_name(t));
    Ok(match (tagged, tag) {
        (Tagged::Str | Tagged::NonSpecific, _) => Value::String(text),
        (Tagged::Any, _) => match resolved() {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(b),
            Yaml::Integer(i) => Value::Number(i.into()),
            Yaml::Real(r) => real(&r)?,
            _ => Value::String(text),
        },
        (Tagged::Int, Some(t)) => match resolved() {
            Yaml::Integer(i) => Value::Number(i.into()),
            _ => return Err(misfit(t)),
        },
        (Tagged::Float, Some(t)) => match resolved() {
            Yaml::Integer(i) => real(&i.to_string())?,
            Yaml::Real(r) => real(&r)?,
            _ => return Err(misfit(t)),
        },
        (Tagged::Bool, Some(t)) => match resolved() {
            Yaml::Boolean(b) => Value::Bool(b),
            _ => return Err(misfit(t)),
        },
        (Tagged::Null, Some(t)) => match resolved() {
            Yaml::Null => Value::Null,
            _ if text.is_empty() => Value::Null,
            _ => return Err(misfit(t)),
        },
        (Tagged::Map | Tagged::Seq, Some(t)) => {
            return Err(format!("`{}` tags a scalar", tag_name(t)))
        }
        // Only reachable with a tag; kept total without a panic.
        (_, None) => Value::String(text),
    })
}

fn real(r: &str) -> Result<Value, String> {
    let f = parse_float(r).ok_or_else(|| format!("`{}` is not a number", shown(r)))?;
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("`{}` cannot be represented in JSON (inf or NaN)", shown(r)))
}

/// What a node's tag says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tagged {
    /// No tag, plain scalar: the core schema resolves it.
    Any,
    /// The non-specific tag `!`: a scalar is a string, a collection what it looks like.
    NonSpecific,
    Str,
    Int,
    Float,
    Bool,
    Null,
    Map,
    Seq,
}

const CORE: &str = "tag:yaml.org,2002:";

/// The core-schema meaning of a tag, or an error naming a tag a spec may not use.
fn core_tag(tag: &Tag) -> Result<Tagged, String> {
    let full = format!("{}{}", tag.handle, tag.suffix);
    if full == "!" {
        return Ok(Tagged::NonSpecific);
    }
    Ok(match full.strip_prefix(CORE) {
        Some("str") => Tagged::Str,
        Some("int") => Tagged::Int,
        Some("float") => Tagged::Float,
        Some("bool") => Tagged::Bool,
        Some("null") => Tagged::Null,
        Some("map") => Tagged::Map,
        Some("seq") => Tagged::Seq,
        _ => {
            return Err(format!(
                "the YAML tag `{}` is not supported: a spec holds plain values (strings, numbers, \
                 booleans, null, lists and mappings); write the value as a string",
                tag_name(tag)
            ))
        }
    })
}

/// A tag as its author likely wrote it: `!!binary` for the core namespace, else in full.
fn tag_name(tag: &Tag) -> String {
    let full = format!("{}{}", tag.handle, tag.suffix);
    match full.strip_prefix(CORE) {
        Some(name) => shown(&format!("!!{name}")),
        None => shown(&full),
    }
}

fn collection_tag_ok(tag: Option<&Tag>, kind: Tagged) -> Result<(), String> {
    let Some(t) = tag else { return Ok(()) };
    match core_tag(t)? {
        Tagged::NonSpecific => Ok(()),
        k if k == kind => Ok(()),
        _ => Err(format!(
            "`{}` cannot tag a {}",
            tag_name(t),
            match kind {
                Tagged::Map => "mapping",
                _ => "list",
            }
        )),
    }
}

/// A mapping key: a string without NUL; a tag, if any, from the core schema.
fn key_ok(key: &str, tag: Option<&Tag>) -> Result<(), String> {
    if let Some(t) = tag {
        core_tag(t)?;
    }
    no_nul(key)
}

/// Refuse a NUL character: C strings end there, so Marathon's command line, the environment of
/// the task and most tools on the way would see a shorter value than the spec shows.
fn no_nul(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(
            "a NUL character (`\\0`) in a string: Marathon and the processes it starts would cut \
             the string there"
                .into(),
        );
    }
    Ok(())
}

/// A key or value short enough for a message (the text may be a megabyte long).
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Result<Value, ParseError> {
        parse(text, Format::Yaml, Limits::default())
    }

    #[test]
    fn yaml_core_schema_types() {
        let v =
            yaml("a: 1\nb: 1.5\nc: true\nd: ~\ne: 'x'\nf: yes\ng: \"2\"\nh: [1, two]\n").unwrap();
        assert_eq!(
            v,
            json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "x", "f": "yes", "g": "2", "h": [1, "two"]})
        );
    }

    #[test]
    fn keeps_key_order_and_nested_maps() {
        let v = yaml("z: 1\na:\n  y: [ {k: v} ]\n").unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["z", "a"]);
        assert_eq!(v["a"]["y"][0]["k"], "v");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v =
            yaml("base: &b {cpus: 1, mem: 64}\napp:\n  <<: *b\n  mem: 128\nlist: [*b]\n").unwrap();
        assert_eq!(v["app"], json!({"mem": 128, "cpus": 1}));
        assert_eq!(v["list"][0]["cpus"], 1);
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let e = yaml(&text).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e:?}");
        assert!(e.line.is_some());
    }

    /// Found by review while writing the spec fuzz target: the node budget let a few aliases of
    /// one long string through (10,000 aliases of 100 kB: a gigabyte from a 110 kB file).
    #[test]
    fn aliases_of_long_strings_are_bounded_by_bytes() {
        let mut text = format!("a: &a \"{}\"\nb: [", "x".repeat(100_000));
        text.push_str(&"*a, ".repeat(1_000));
        text.push_str("]\n");
        let e = yaml(&text).unwrap_err();
        assert!(e.message.contains("bytes of text (alias bomb?)"), "{e:?}");
        // A few aliases of a long string are fine.
        let ok = format!("a: &a \"{}\"\nb: [*a, *a]\n", "x".repeat(100_000));
        assert_eq!(
            yaml(&ok).unwrap()["b"][1].as_str().map(str::len),
            Some(100_000)
        );
    }

    /// Aliases are found by id, not by a search of every anchor (quadratic in a file of many).
    #[test]
    fn many_anchors_and_aliases_parse_in_linear_time() {
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(&format!("a{i}: &a{i} {i}\n"));
        }
        text.push_str("all: [");
        for i in 0..40_000 {
            text.push_str(&format!("*a{i}, "));
        }
        text.push_str("]\n");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(yaml(&text).map(|v| v["all"].as_array().map(Vec::len)));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("40,000 aliases took over a minute");
        assert_eq!(got.unwrap(), Some(40_000));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "[".repeat(100_000);
        let e = yaml(&text).unwrap_err();
        // Either our cap or the parser's own recursion limit stops it; both are errors, fast.
        assert!(
            e.message.contains("nesting deeper than 64") || e.message.contains("recursion limit"),
            "{e:?}"
        );
        let nested_maps = "a:\n".to_string()
            + &(1..80)
                .map(|i| format!("{}a:\n", "  ".repeat(i)))
                .collect::<String>()
            + &"  ".repeat(80)
            + "x\n";
        let e = yaml(&nested_maps).unwrap_err();
        assert!(e.message.contains("nesting deeper than 64"), "{e:?}");
        let json_err = parse(&text, Format::Json, Limits::default()).unwrap_err();
        assert!(json_err.message.contains("recursion limit"), "{json_err:?}");
    }

    #[test]
    fn duplicate_keys_are_errors_with_line() {
        let e = yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.message, "duplicate key `a`");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let e = yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
    }

    #[test]
    fn malformed_json_has_line_and_column() {
        let e = parse(
            "{\n  \"a\": 1,\n  \"b\": }\n",
            Format::Json,
            Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.column.is_some());
        assert!(!e.message.contains("at line"), "{}", e.message);
    }

    #[test]
    fn empty_documents_are_errors() {
        assert_eq!(yaml("  \n").unwrap_err().message, "the file is empty");
        assert_eq!(
            yaml("# only a comment\n").unwrap_err().message,
            "the file holds no document"
        );
    }

    #[test]
    fn two_documents_are_an_error() {
        let e = yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("one document"), "{e:?}");
    }

    #[test]
    fn locate_finds_nested_nodes_in_yaml_and_json() {
        let y = "id: /a\ncontainer:\n  docker:\n    image: nginx\nports: [1, 2]\n";
        assert_eq!(
            locate(y, "/container/docker/image").map(|p| p.line),
            Some(4)
        );
        assert_eq!(
            locate(y, "/ports/1").map(|p| (p.line, p.column)),
            Some((5, 12))
        );
        // A missing member points at its nearest ancestor.
        assert_eq!(locate(y, "/container/docker/nope").map(|p| p.line), Some(3));
        let j = "{\n  \"id\": \"/a\",\n  \"env\": {\n    \"A\": 5\n  }\n}\n";
        assert_eq!(locate(j, "/env/A").map(|p| p.line), Some(4));
    }

    fn json(text: &str) -> Result<Value, ParseError> {
        parse(text, Format::Json, Limits::default())
    }

    #[test]
    fn a_leading_bom_is_not_part_of_the_first_key() {
        assert_eq!(yaml("\u{feff}cmd: run\n").unwrap(), json!({"cmd": "run"}));
        assert_eq!(
            json("\u{feff}{\"cmd\": \"run\"}").unwrap(),
            json!({"cmd": "run"})
        );
        // Positions are those an editor shows (the mark is invisible).
        let p = locate("\u{feff}a: 1\nb: [x]\n", "/b/0").unwrap();
        assert_eq!((p.line, p.column), (2, 5));
        // Only at the start: inside a document it stays a character.
        assert_eq!(yaml("a: \"\u{feff}x\"\n").unwrap()["a"], "\u{feff}x");
    }

    #[test]
    fn json_duplicate_keys_are_errors_at_the_second_key() {
        let e = json("{\n  \"cmd\": \"a\",\n  \"cmd\": \"b\"\n}\n").unwrap_err();
        assert_eq!(e.message, "duplicate key `cmd`");
        assert_eq!(e.line, Some(3));
        let e = json("{\"env\": {\"A\": 1,\n \"A\": 2}}").unwrap_err();
        assert_eq!((e.message.as_str(), e.line), ("duplicate key `A`", Some(2)));
        // Past the scan size the check keeps a set; the same answer.
        let mut big: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        big.push("\n\"k7\": 0".into());
        let e = json(&format!("{{{}}}", big.join(","))).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.line),
            ("duplicate key `k7`", Some(2))
        );
        assert!(json(&format!("{{{}}}", big[..40].join(","))).is_ok());
        // The same key in two mappings is no duplicate.
        assert!(json("{\"a\": {\"x\": 1}, \"b\": {\"x\": 1}}").is_ok());
        // Saved scheduler answers keep serde_json's reading (the last value wins).
        assert_eq!(
            json_compact("{\"a\": 1, \"a\": 2}").unwrap(),
            json!({"a": 2})
        );
    }

    #[test]
    fn nul_characters_are_refused_in_keys_and_values() {
        for (text, line) in [
            ("cmd: \"run\\0 --evil\"\n", 1),
            ("a: 1\nenv:\n  \"K\\0\": v\n", 3),
            ("args: [x, \"\\x00\"]\n", 1),
            ("a: 1\nb: \"\\u0000\"\n", 2),
        ] {
            let e = yaml(text).unwrap_err();
            assert!(e.message.contains("NUL"), "{text:?}: {e:?}");
            assert_eq!(e.line, Some(line), "{text:?}");
        }
        for (text, line) in [
            ("{\"cmd\": \"run\\u0000 --evil\"}", 1),
            ("{\n\"env\": {\"K\\u0000\": \"v\"}}", 2),
            ("{\"args\": [\"x\",\n\n \"\\u0000\"]}", 3),
        ] {
            let e = json(text).unwrap_err();
            assert!(e.message.contains("NUL"), "{text:?}: {e:?}");
            assert_eq!(e.line, Some(line), "{text:?}");
        }
    }

    #[test]
    fn tags_outside_the_core_schema_are_refused_by_name() {
        for (text, tag) in [
            ("a: !!binary aGVsbG8=\n", "`!!binary`"),
            ("a: !!timestamp 2001-12-14\n", "`!!timestamp`"),
            ("a: !custom x\n", "`!custom`"),
            (
                "a: !<tag:example.com,2000:x> x\n",
                "`tag:example.com,2000:x`",
            ),
            ("a: !!set {x: null}\n", "`!!set`"),
            ("a: !!omap [x: 1]\n", "`!!omap`"),
            ("!!binary a: 1\n", "`!!binary`"),
            (
                "%TAG !! tag:example.com,2000:\n---\na: !!str x\n",
                "`tag:example.com,2000:str`",
            ),
        ] {
            let e = yaml(text).unwrap_err();
            assert!(e.message.contains(tag), "{text:?}: {e:?}");
            assert!(e.line.is_some(), "{text:?}");
        }
        let e = yaml("a: !!map [1]\n").unwrap_err();
        assert!(e.message.contains("cannot tag a list"), "{e:?}");
    }

    #[test]
    fn core_tags_decide_the_type() {
        let v = yaml(
            "a: !!str 3\nb: !!int \"3\"\nc: !!float 1\nd: !!bool \"true\"\ne: !!null \"\"\n\
             f: ! 12\ng: !!map {x: 1}\nh: !!seq [1]\ni: !<tag:yaml.org,2002:str> 4\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": "3", "b": 3, "c": 1.0, "d": true, "e": null, "f": "12",
                   "g": {"x": 1}, "h": [1], "i": "4"})
        );
        let e = yaml("a: !!int abc\n").unwrap_err();
        assert!(e.message.contains("not a valid `!!int`"), "{e:?}");
        let e = yaml("a: !!str [1]\n").unwrap_err();
        assert!(e.message.contains("cannot tag a list"), "{e:?}");
    }

    /// Placing a diagnostic re-parses the text; aliases are not expanded for it (a file near
    /// the expansion budget cost that much again per diagnostic), and merges do not stop it.
    #[test]
    fn locate_does_not_expand_aliases() {
        let y = "base: &b {cpus: 1}\napp:\n  <<: *b\n  mem: 128\nlist: [*b, *b]\nlast: x\n";
        assert_eq!(locate(y, "/app/mem").map(|p| p.line), Some(4));
        assert_eq!(
            locate(y, "/list/1").map(|p| (p.line, p.column)),
            Some((5, 12))
        );
        assert_eq!(locate(y, "/last").map(|p| p.line), Some(6));
        // Close to the byte budget: parsing copies it, locating does not.
        let mut big = format!("a: &a \"{}\"\nb: [", "x".repeat(1 << 20));
        big.push_str(&"*a, ".repeat(60));
        big.push_str("]\nc: 1\n");
        assert!(yaml(&big).is_ok());
        let mut builder = Builder::new(Limits::default(), Some(split_pointer("/c")));
        let (v, _) = builder.run(&big).unwrap();
        assert!(v["b"][0].is_null(), "the alias was not copied");
        assert_eq!(builder.found.map(|m| m.line()), Some(3));
    }

    #[test]
    fn pointer_tokens_round_trip() {
        assert_eq!(split_pointer("/a~1b/c~0d"), vec!["a/b", "c~d"]);
        assert_eq!(escape_token("a/b~"), "a~1b~0");
        assert!(split_pointer("").is_empty());
    }
}
