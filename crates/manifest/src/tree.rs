//! A YAML node tree where every node and key remembers where it starts in the source, built from
//! `saphyr-parser` events so that decoding can report `file:line:column` for any field.
//!
//! Building is bounded: nesting deeper than [`MAX_DEPTH`] is refused, and aliases are refused
//! (a manifest has no use for them, and expanding them is how "billion laughs" inputs blow up).
//! The event parser is a state machine and this builder keeps an explicit stack, so hostile
//! nesting cannot overflow the call stack.

use std::collections::HashSet;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

/// How deeply collections may nest in a manifest; the schema itself needs about five levels.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column in the source (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the source, used for errors about the document as a whole.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(marker: &Marker) -> Self {
        Pos { line: marker.line(), column: marker.col() + 1 }
    }
}

/// A value in the tree. Plain `null`, `~` and empty scalars become [`Value::Null`]; every other
/// scalar stays text, and the decoder decides what type it must be.
#[derive(Debug)]
pub(crate) enum Value {
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a string scalar in a manifest.
#[derive(Debug)]
pub(crate) struct Key {
    pub name: String,
    pub pos: Pos,
}

/// A value with the position where it starts.
#[derive(Debug)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// Describes the kind of value, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error, or an input outside what manifests allow (aliases, depth, several documents).
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl SyntaxError {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        SyntaxError { pos, message: message.into() }
    }
}

/// A collection whose end event has not been seen yet.
enum Frame {
    Seq { pos: Pos, items: Vec<Node> },
    Map { pos: Pos, entries: Vec<(Key, Node)>, key: Option<Key>, seen: HashSet<String> },
}

/// Parses `source` into a tree; `Ok(None)` means the source holds no document at all.
pub(crate) fn build(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    for event in Parser::new_from_str(source) {
        let (event, span) =
            event.map_err(|e| SyntaxError::new(Pos::from_marker(e.marker()), format!("invalid YAML: {}", e.info())))?;
        let pos = Pos::from_marker(&span.start);
        let finished = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError::new(pos, "a manifest must be a single YAML document"));
                }
                None
            }
            Event::Alias(_) => return Err(SyntaxError::new(pos, "YAML aliases are not supported in manifests")),
            Event::Scalar(text, style, _, _) => {
                let null = style == ScalarStyle::Plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                let value = if null { Value::Null } else { Value::Scalar(text.into_owned()) };
                Some(Node { value, pos })
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError::new(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err(SyntaxError::new(pos, "mapping keys must be strings"));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq { pos, items: Vec::new() }
                } else {
                    Frame::Map { pos, entries: Vec::new(), key: None, seen: HashSet::new() }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, items }) => Some(Node { value: Value::Seq(items), pos }),
                Some(Frame::Map { pos, entries, .. }) => Some(Node { value: Value::Map(entries), pos }),
                None => return Err(SyntaxError::new(pos, "unbalanced collection end")),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
        };
        if let Some(node) = finished {
            attach(&mut stack, &mut root, node)?;
        }
    }
    Ok(root)
}

/// Adds a finished node to the collection being built (as an item, a key or a value), or makes it the root.
fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) -> Result<(), SyntaxError> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq { items, .. }) => items.push(node),
        Some(Frame::Map { entries, key, seen, .. }) => match key.take() {
            Some(k) => entries.push((k, node)),
            None => {
                let Value::Scalar(name) = node.value else {
                    return Err(SyntaxError::new(node.pos, "mapping keys must be strings"));
                };
                if !seen.insert(name.clone()) {
                    return Err(SyntaxError::new(node.pos, format!("duplicate key `{name}`")));
                }
                *key = Some(Key { name, pos: node.pos });
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = build("a: 1\nb:\n  - x\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else { panic!("not a map") };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else { panic!("not a seq") };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
    }

    #[test]
    fn nulls_and_empty() {
        assert!(build("").unwrap().is_none());
        let root = build("a:\nb: ~\nc: 'null'\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else { panic!("not a map") };
        assert!(matches!(entries[0].1.value, Value::Null));
        assert!(matches!(entries[1].1.value, Value::Null));
        assert!(matches!(&entries[2].1.value, Value::Scalar(s) if s == "null"));
    }

    #[test]
    fn refuses_aliases_duplicates_documents_and_deep_nesting() {
        assert!(build("a: &x 1\nb: *x\n").unwrap_err().message.contains("aliases"));
        let dup = build("a: 1\na: 2\n").unwrap_err();
        assert_eq!((dup.pos, dup.message.as_str()), (Pos { line: 2, column: 1 }, "duplicate key `a`"));
        assert!(build("a: 1\n---\nb: 2\n").unwrap_err().message.contains("single YAML document"));
        assert!(build("? [a]\n: 1\n").unwrap_err().message.contains("keys must be strings"));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(build(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = build(&deep).unwrap_err();
        assert_eq!((err.pos, err.message.as_str()), (Pos { line: 1, column: 65 }, "nesting deeper than 64 levels"));
        let block: String = (0..100).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(build(&block).unwrap_err().message.contains("nesting deeper than 64"));
        // The parser has its own, larger limit; either way hostile nesting is an error, not a crash.
        assert!(build(&"[".repeat(100_000)).is_err());
    }
}
