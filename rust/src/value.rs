//! A plain-Rust parameter tree, for computing ids without Python.

use std::fmt;

use crate::json::{is_generalised_utf8, push_code_point};

/// A Python string as generalised UTF-8: UTF-8 that may also hold lone surrogates
/// (each encoded on its own, as Python's `"surrogatepass"` error handler does).
///
/// Byte order of this encoding is code-point order, which is how Python sorts strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Text(Vec<u8>);

impl Text {
    /// Wrap generalised UTF-8 bytes, or return `None` if they are not.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Text> {
        is_generalised_utf8(&bytes).then_some(Text(bytes))
    }

    /// Build from code points, as Python's `"".join(map(chr, codes))`; surrogate code
    /// points stay separate (two of them never merge into one astral character).
    pub fn from_code_points(codes: impl IntoIterator<Item = u32>) -> Option<Text> {
        let mut out = Vec::new();
        for code in codes {
            if code > 0x10ffff {
                return None;
            }
            push_code_point(&mut out, code);
        }
        Some(Text(out))
    }

    /// The generalised UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(s.as_bytes().to_vec())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(s.into_bytes())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

/// An integer outside the `i64` range, kept as canonical decimal text.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BigInt {
    negative: bool,
    magnitude: Vec<u8>,
}

impl BigInt {
    /// The sign and the decimal digits of the magnitude (no leading zeros).
    pub fn parts(&self) -> (bool, &[u8]) {
        (self.negative, &self.magnitude)
    }
}

/// A dict key: the kinds `json.dumps(sort_keys=True)` can write and order.
#[derive(Clone, PartialEq, Debug)]
pub enum Key {
    Str(Text),
    Int(i64),
    BigInt(BigInt),
    Float(f64),
    Bool(bool),
    Null,
}

/// A parameter value.
///
/// Python-only kinds map onto these: a tuple is a `List`, an enum member is its
/// `.value`, a numpy scalar or array is its `.tolist()`; `Set` covers set and frozenset.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    BigInt(BigInt),
    Float(f64),
    Str(Text),
    List(Vec<Value>),
    Set(Vec<Value>),
    /// Entries in insertion order (the order only matters for which error comes first).
    Dict(Vec<(Key, Value)>),
}

impl Drop for Value {
    // The derived drop would recurse once per level; a deep tree built in Rust (the
    // walk rejects it, but it still has to be freed) must not overflow the stack.
    fn drop(&mut self) {
        let mut pending = Vec::new();
        move_children(self, &mut pending);
        while let Some(mut child) = pending.pop() {
            move_children(&mut child, &mut pending);
        }
    }
}

fn move_children(value: &mut Value, pending: &mut Vec<Value>) {
    match value {
        Value::List(items) | Value::Set(items) => pending.append(items),
        Value::Dict(entries) => pending.extend(entries.drain(..).map(|(_, v)| v)),
        _ => {}
    }
}

/// Parse a decimal integer of any size (optional sign, digits) into `Int` or `BigInt`.
fn parse_integer(text: &str) -> Option<Result<i64, BigInt>> {
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Ok(n));
    }
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len() - 1);
    Some(Err(BigInt {
        negative,
        magnitude: digits[first..].to_vec(),
    }))
}

impl Value {
    /// An integer from its decimal text, of any size; `None` if it is not one.
    pub fn integer(text: &str) -> Option<Value> {
        parse_integer(text).map(|r| r.map_or_else(Value::BigInt, Value::Int))
    }

    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Text::from(s))
    }

    /// A dict with string keys.
    pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Key::Str(Text::from(k)), v))
                .collect(),
        )
    }

    /// Python's `type(value).__name__` for the corresponding Python value.
    pub fn python_type_name(&self) -> &'static str {
        match self {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Dict(_) => "dict",
        }
    }
}

impl Key {
    /// A string key.
    pub fn str(s: &str) -> Key {
        Key::Str(Text::from(s))
    }

    /// An integer key from its decimal text, of any size; `None` if it is not one.
    pub fn integer(text: &str) -> Option<Key> {
        parse_integer(text).map(|r| r.map_or_else(Key::BigInt, Key::Int))
    }

    /// Python's `type(key).__name__` for the corresponding Python key.
    pub fn python_type_name(&self) -> &'static str {
        match self {
            Key::Str(_) => "str",
            Key::Int(_) | Key::BigInt(_) => "int",
            Key::Float(_) => "float",
            Key::Bool(_) => "bool",
            Key::Null => "NoneType",
        }
    }
}
