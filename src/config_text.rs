//! The config file's text: parsed strictly, with **every** unknown key,
//! wrong type and bad value found in one run, and each problem placed at its
//! line and column.
//!
//! serde stops at the first error, so one typo would hide every other
//! problem. Instead the file is parsed once into a document that keeps
//! positions (`toml_edit`), and deserialised into `RawConfig` through
//! `serde_path_to_error`, which says *where* in the structure it failed. The
//! offending key is then taken out of a copy (or, for a required key,
//! replaced by a stand-in of each TOML type until one fits) and the
//! deserialisation is tried again: each round finds the next problem, up to
//! `MAX_PROBLEMS`. Keys taken out or stood in for are remembered, so the
//! validation that follows does not report them a second time.

use std::ops::Range;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// More than this many problems in one file is a wrong file, not typos.
const MAX_PROBLEMS: usize = 64;

/// A config file's text and the positions of everything in it.
pub struct Source {
    text: String,
    /// Positions, for `locate`.
    doc: toml_edit::ImDocument<String>,
    /// The same document as plain values, for `deserialize` to edit a copy of.
    value: toml::Value,
}

/// One problem found while deserialising: the key path (`policy[1].mode`)
/// and serde's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    pub key: String,
    pub message: String,
}

/// What a strict parse found: the raw config (when every problem could be
/// stepped over), the problems, and the keys they concern.
pub struct Parsed<T> {
    pub raw: Option<T>,
    pub problems: Vec<ParseProblem>,
    /// Keys removed or stood in for; problems under them are already reported.
    pub replaced: Vec<String>,
}

impl Source {
    /// Parses TOML syntax. A syntax error stops everything (nothing after it
    /// can be trusted), so it is the one problem returned, with its position.
    pub fn parse(text: &str) -> Result<Source, (Option<(usize, usize)>, String)> {
        let at = |span: Option<Range<usize>>| span.map(|s| line_col(text, s.start));
        let doc =
            toml_edit::ImDocument::parse(text.to_string()).map_err(|e| (at(e.span()), e.message().to_string()))?;
        let table = toml::from_str::<toml::Table>(text).map_err(|e| (at(e.span()), e.message().to_string()))?;
        Ok(Source { text: text.to_string(), doc, value: toml::Value::Table(table) })
    }

    /// Deserialises into `T` (a `deny_unknown_fields` struct), finding every
    /// problem rather than the first.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Parsed<T> {
        let mut value = self.value.clone();
        let mut problems = Vec::new();
        let mut replaced = Vec::new();
        while problems.len() < MAX_PROBLEMS {
            let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(raw) => return Parsed { raw: Some(raw), problems, replaced },
                Err(e) => e,
            };
            let mut path: Vec<Segment> = err.path().iter().cloned().collect();
            let message = err.inner().to_string();
            if let Some(field) = quoted_after(&message, "missing field ") {
                path.push(Segment::Map { key: field.to_string() });
                let key = render(&path);
                if !replaced.contains(&key) {
                    problems.push(ParseProblem { key: key.clone(), message: "is required and missing".into() });
                }
                if !stand_in::<T>(&mut value, &path) {
                    break;
                }
                replaced.push(key);
                continue;
            }
            if let Some(field) = quoted_after(&message, "unknown field ") {
                // The path already ends at the unknown key; make sure.
                if !matches!(path.last(), Some(Segment::Map { key }) if key == field) {
                    path.push(Segment::Map { key: field.to_string() });
                }
            }
            let key = render(&path);
            problems.push(ParseProblem { key: key.clone(), message: tidy(&message) });
            if path.is_empty() || !remove(&mut value, &path) {
                break;
            }
            replaced.push(key);
        }
        Parsed { raw: None, problems, replaced }
    }

    /// Line and column (1-based) of `key` (`policy[1].cosign_keys[0]`): the
    /// key itself where it is written, else the nearest enclosing table.
    pub fn locate(&self, key: &str) -> Option<(usize, usize)> {
        let span = self.span_of(key)?;
        Some(line_col(&self.text, span.start))
    }

    /// The `name` of the `i`th `[[policy]]`, to name policies in problems.
    pub fn policy_name(&self, i: usize) -> Option<&str> {
        self.doc.as_table().get("policy")?.as_array_of_tables()?.get(i)?.get("name")?.as_str()
    }

    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let mut best = None;
        let mut at = Node::Table(self.doc.as_table());
        for step in parse_key(key) {
            let (next, span) = match (&at, &step) {
                (Node::Table(t), Step::Key(k)) => {
                    let Some(item) = t.get(k) else { break };
                    // The key, where the user typed it; a `[[table]]` has no
                    // key span, so its header is used.
                    let span = t.key(k).and_then(|k| k.span()).or_else(|| item.span());
                    (Node::of_item(item), span)
                }
                (Node::Inline(t), Step::Key(k)) => {
                    let Some(v) = t.get(k) else { break };
                    (Node::of_value(v), t.key(k).and_then(|k| k.span()).or_else(|| v.span()))
                }
                (Node::Tables(a), Step::Index(i)) => {
                    let Some(t) = a.get(*i) else { break };
                    (Some(Node::Table(t)), t.span())
                }
                (Node::Array(a), Step::Index(i)) => {
                    let Some(v) = a.get(*i) else { break };
                    (Node::of_value(v), v.span())
                }
                _ => break,
            };
            if span.is_some() {
                best = span;
            }
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        best
    }
}

/// Where a key path can lead in a `toml_edit` document.
enum Node<'a> {
    Table(&'a toml_edit::Table),
    Inline(&'a toml_edit::InlineTable),
    Tables(&'a toml_edit::ArrayOfTables),
    Array(&'a toml_edit::Array),
}

impl<'a> Node<'a> {
    fn of_item(item: &'a toml_edit::Item) -> Option<Node<'a>> {
        match item {
            toml_edit::Item::Table(t) => Some(Node::Table(t)),
            toml_edit::Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            toml_edit::Item::Value(v) => Node::of_value(v),
            toml_edit::Item::None => None,
        }
    }

    fn of_value(v: &'a toml_edit::Value) -> Option<Node<'a>> {
        match v {
            toml_edit::Value::InlineTable(t) => Some(Node::Inline(t)),
            toml_edit::Value::Array(a) => Some(Node::Array(a)),
            _ => None,
        }
    }
}

enum Step {
    Key(String),
    Index(usize),
}

/// `policy[1].cosign_certificates[0].roots` → key, index, key, index, key.
fn parse_key(key: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            steps.push(Step::Key(name.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            match inner[..end].parse() {
                Ok(i) => steps.push(Step::Index(i)),
                Err(_) => return steps,
            }
            rest = &inner[end + 1..];
        }
    }
    steps
}

/// A serde path in the config's own key syntax.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        "(file)".into()
    } else {
        out
    }
}

/// The container of the last segment, mutably.
fn parent_mut<'a>(value: &'a mut toml::Value, path: &[Segment]) -> Option<&'a mut toml::Value> {
    let mut at = value;
    for s in path {
        at = match (s, at) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key)?,
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Takes the value at `path` out, so the next round can get past it.
fn remove(value: &mut toml::Value, path: &[Segment]) -> bool {
    let Some((last, parent)) = path.split_last() else { return false };
    match (last, parent_mut(value, parent)) {
        (Segment::Map { key }, Some(toml::Value::Table(t))) => t.remove(key).is_some(),
        // An array element cannot be removed without renumbering the rest;
        // it is replaced by an empty table, which its type either takes or
        // reports once more at the same key (then the array goes).
        (Segment::Seq { index }, Some(toml::Value::Array(a))) if *index < a.len() => {
            if a[*index] == toml::Value::Table(toml::Table::new()) {
                return remove(value, parent);
            }
            a[*index] = toml::Value::Table(toml::Table::new());
            true
        }
        _ => false,
    }
}

/// Puts a stand-in for the required key at `path`: the first TOML type
/// with which deserialisation gets past it.
fn stand_in<T: DeserializeOwned>(value: &mut toml::Value, path: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parent)) = path.split_last() else { return false };
    let candidates = [
        toml::Value::String(String::new()),
        toml::Value::Array(Vec::new()),
        toml::Value::Integer(0),
        toml::Value::Boolean(false),
        toml::Value::Table(toml::Table::new()),
    ];
    let here = render(path);
    for candidate in candidates {
        let mut trial = value.clone();
        let Some(toml::Value::Table(t)) = parent_mut(&mut trial, parent) else { return false };
        t.insert(key.clone(), candidate);
        let still_here = match serde_path_to_error::deserialize::<_, T>(trial.clone()) {
            Ok(_) => false,
            Err(e) => {
                let mut p: Vec<Segment> = e.path().iter().cloned().collect();
                if let Some(f) = quoted_after(&e.inner().to_string(), "missing field ") {
                    p.push(Segment::Map { key: f.to_string() });
                }
                render(&p) == here
            }
        };
        if !still_here {
            *value = trial;
            return true;
        }
    }
    false
}

/// The name in backquotes after `prefix` in a serde message.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// serde's "unknown field `x`, expected one of …" is right but long; the
/// list of keys is in config/sigmirror.toml, which the fix points at.
fn tidy(message: &str) -> String {
    if let Some(field) = quoted_after(message, "unknown field ") {
        return format!("unknown key `{field}`");
    }
    // toml adds "in `key`" on a second line; the key is reported already.
    message.lines().next().unwrap_or("").trim().to_string()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        listen: String,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        item: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        #[serde(default)]
        size: u64,
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_found_with_its_position() {
        let text = "listen = 5\nport = \"x\"\ncolour = 1\n\n[[item]]\nname = \"a\"\nsize = true\ntypo = 2\n\n[[item]]\nsize = 1\n";
        let src = Source::parse(text).unwrap();
        let parsed = src.deserialize::<Doc>();
        let keys: Vec<_> = parsed.problems.iter().map(|p| p.key.as_str()).collect();
        for want in ["listen", "port", "colour", "item[0].size", "item[0].typo", "item[1].name"] {
            assert!(keys.contains(&want), "{want} missing from {:?}", parsed.problems);
        }
        assert_eq!(parsed.problems.len(), 6, "{:?}", parsed.problems);
        assert!(parsed.raw.is_some(), "every problem was stepped over");
        assert_eq!(src.locate("colour"), Some((3, 1)));
        assert_eq!(src.locate("item[0].typo"), Some((8, 1)));
        assert_eq!(src.locate("port"), Some((2, 1)));
        // A missing key is placed at its table's header.
        assert_eq!(src.locate("item[1].name"), Some((10, 1)));
        let msg = &parsed.problems.iter().find(|p| p.key == "colour").unwrap().message;
        assert_eq!(msg, "unknown key `colour`");
    }

    #[test]
    fn a_syntax_error_is_one_problem_with_its_line() {
        let Err((at, message)) = Source::parse("listen = \"a\"\nport = = 1\n") else { panic!("parsed") };
        assert_eq!(at.map(|(l, _)| l), Some(2), "{message}");
    }

    #[test]
    fn key_paths_parse_into_steps() {
        let steps = parse_key("policy[1].cosign_certificates[0].roots");
        assert_eq!(steps.len(), 5);
        assert!(matches!(&steps[1], Step::Index(1)));
    }
}
