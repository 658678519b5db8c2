//! Normalisation and canonical JSON of a plain-Rust [`Value`] tree (rules 1-8 of docs/hashing.md).

use crate::digest::id_of;
use crate::error::HashError;
use crate::float::{round12, write_float_repr};
use crate::json::{write_i64, write_str};
use crate::keys::{cmp_keys, KeyKind, KeyRef};
use crate::value::{Key, Text, Value};
use crate::MAX_DEPTH;

/// Return the 16-hex-character id of a parameter set.
pub fn hash_id(params: &Value) -> Result<String, HashError> {
    Ok(id_of(canonical_json(params)?.as_bytes()))
}

/// Return the canonical JSON text whose SHA-256 is the id of `params`.
pub fn canonical_json(params: &Value) -> Result<String, HashError> {
    let normalized = normalize(params)?;
    let mut out = Vec::with_capacity(128);
    write_normalized(&mut out, &normalized);
    // Only ASCII is ever written (ensure_ascii), so this cannot fail.
    Ok(String::from_utf8(out).expect("canonical JSON is ASCII"))
}

/// Return the normalised form of a parameter set: a dict with its entries in canonical
/// order, floats rounded to 12 places, sets turned into sorted lists.
pub fn normalize(params: &Value) -> Result<Value, HashError> {
    if !matches!(params, Value::Dict(_)) {
        return Err(HashError::NotAMapping {
            type_name: Text::from(params.python_type_name()),
        });
    }
    let mut path = Vec::new();
    normalize_value(params, &mut path, 0)
}

/// One step of the key path of an error message.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a Key),
    Index(usize),
    SetItem,
}

fn key_ref(key: &Key) -> KeyRef<'_> {
    match key {
        Key::Str(t) => KeyRef::Str(t.as_bytes()),
        Key::Int(n) => KeyRef::Int(*n),
        Key::BigInt(b) => {
            let (negative, magnitude) = b.parts();
            KeyRef::Big {
                negative,
                magnitude,
            }
        }
        Key::Float(f) => KeyRef::Float(*f),
        Key::Bool(b) => KeyRef::Bool(*b),
        Key::Null => KeyRef::Null,
    }
}

/// Append one key-path segment as the reference writes it: `["name"]`, `[3]`, `[0.5]`,
/// `[True]`, `[None]` (Python's `repr` for numbers, the raw text for strings).
pub fn push_key_segment(out: &mut Vec<u8>, key: &KeyRef<'_>) {
    match *key {
        KeyRef::Str(text) => {
            out.extend_from_slice(b"[\"");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\"]");
            return;
        }
        _ => out.push(b'['),
    }
    match *key {
        KeyRef::Int(n) => write_i64(out, n),
        KeyRef::Big {
            negative,
            magnitude,
        } => {
            if negative {
                out.push(b'-');
            }
            out.extend_from_slice(magnitude);
        }
        KeyRef::Float(f) if f.is_nan() => out.extend_from_slice(b"nan"),
        KeyRef::Float(f) if f.is_infinite() => {
            out.extend_from_slice(if f > 0.0 { b"inf" } else { b"-inf" })
        }
        KeyRef::Float(f) => write_float_repr(out, f),
        KeyRef::Bool(b) => out.extend_from_slice(if b { b"True" } else { b"False" }),
        KeyRef::Null => out.extend_from_slice(b"None"),
        KeyRef::Str(_) => {}
    }
    out.push(b']');
}

fn render_path(path: &[Step<'_>]) -> Text {
    let mut out = b"params".to_vec();
    for step in path {
        match step {
            Step::Key(key) => push_key_segment(&mut out, &key_ref(key)),
            Step::Index(i) => {
                out.push(b'[');
                write_i64(&mut out, *i as i64);
                out.push(b']');
            }
            Step::SetItem => out.extend_from_slice(b"[set item]"),
        }
    }
    Text::from_bytes(out).expect("path pieces are generalised UTF-8")
}

fn check_depth(path: &[Step<'_>], depth: usize) -> Result<(), HashError> {
    if depth >= MAX_DEPTH {
        return Err(HashError::TooDeep {
            path: render_path(path),
        });
    }
    Ok(())
}

// Recursion is bounded: every container level checks the depth first.
fn normalize_value<'a>(
    value: &'a Value,
    path: &mut Vec<Step<'a>>,
    depth: usize,
) -> Result<Value, HashError> {
    Ok(match value {
        Value::Dict(entries) => {
            check_depth(path, depth)?;
            let order = sorted_entries(entries, path)?;
            let mut out = Vec::with_capacity(entries.len());
            for i in order {
                let (key, item) = &entries[i];
                path.push(Step::Key(key));
                let normalized = normalize_value(item, path, depth + 1);
                path.pop();
                out.push((key.clone(), normalized?));
            }
            Value::Dict(out)
        }
        Value::List(items) => {
            check_depth(path, depth)?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                let normalized = normalize_value(item, path, depth + 1);
                path.pop();
                out.push(normalized?);
            }
            Value::List(out)
        }
        Value::Set(items) => {
            check_depth(path, depth)?;
            let mut members = Vec::with_capacity(items.len());
            for item in items {
                path.push(Step::SetItem);
                let normalized = normalize_value(item, path, depth + 1);
                path.pop();
                let normalized = normalized?;
                let mut text = Vec::new();
                write_normalized(&mut text, &normalized);
                members.push((text, normalized));
            }
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Value::List(members.into_iter().map(|(_, v)| v).collect())
        }
        Value::Float(f) => Value::Float(round12(*f)),
        other => other.clone(),
    })
}

/// Check the keys as the reference does (in insertion order) and return the entry
/// indices in Python's key order.
fn sorted_entries(entries: &[(Key, Value)], path: &[Step<'_>]) -> Result<Vec<usize>, HashError> {
    let mut kinds: Vec<KeyKind> = Vec::new();
    let mut names: Vec<&'static str> = Vec::new();
    for (key, _) in entries {
        let r = key_ref(key);
        if r.is_nan() {
            return Err(HashError::NanKey {
                path: render_path(path),
            });
        }
        if !kinds.contains(&r.kind()) {
            kinds.push(r.kind());
        }
        if !names.contains(&key.python_type_name()) {
            names.push(key.python_type_name());
        }
    }
    if kinds.len() > 1 {
        return Err(HashError::MixedKeys {
            path: render_path(path),
            type_names: names.into_iter().map(Text::from).collect(),
        });
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| cmp_keys(&key_ref(&entries[a].0), &key_ref(&entries[b].0)));
    Ok(order)
}

/// Append the JSON of an already normalised value (dict entries already in order).
fn write_normalized(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(n) => write_i64(out, *n),
        Value::BigInt(b) => {
            let (negative, magnitude) = b.parts();
            if negative {
                out.push(b'-');
            }
            out.extend_from_slice(magnitude);
        }
        Value::Float(f) => write_float_repr(out, *f),
        Value::Str(t) => write_str(out, t.as_bytes()),
        Value::List(items) | Value::Set(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_normalized(out, item);
            }
            out.push(b']');
        }
        Value::Dict(entries) => {
            out.push(b'{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                key_ref(key).write_json(out);
                out.push(b':');
                write_normalized(out, item);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_lists(levels: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..levels {
            v = Value::List(vec![v]);
        }
        v
    }

    #[test]
    fn sorts_keys_and_rounds_floats() {
        let params = Value::dict([
            ("n", Value::Int(100)),
            ("dt", Value::Float(0.1 + 0.2)),
            ("name", Value::str("é")),
        ]);
        assert_eq!(
            canonical_json(&params).unwrap(),
            r#"{"dt":0.3,"n":100,"name":"\u00e9"}"#
        );
        assert_eq!(hash_id(&params).unwrap().len(), 16);
    }

    #[test]
    fn depth_bound_is_an_error_not_a_crash() {
        let ok = Value::dict([("x", nested_lists(MAX_DEPTH - 1))]);
        assert!(canonical_json(&ok).is_ok());
        let deep = Value::dict([("x", nested_lists(MAX_DEPTH))]);
        let err = canonical_json(&deep).unwrap_err();
        assert!(err.is_depth());
        let expected_path = format!("params[\"x\"]{}", "[0]".repeat(MAX_DEPTH - 1));
        assert_eq!(
            err,
            HashError::TooDeep {
                path: Text::from(expected_path.as_str())
            }
        );
        // Deeper than the bound still fails cleanly: the walk stops at the bound.
        assert!(canonical_json(&Value::dict([("x", nested_lists(1_000_000))])).is_err());
    }

    #[test]
    fn key_errors_match_the_reference() {
        let mixed = Value::Dict(vec![
            (Key::Int(1), Value::Null),
            (Key::str("a"), Value::Null),
        ]);
        assert_eq!(
            canonical_json(&mixed).unwrap_err().to_string(),
            "cannot hash params: dict keys of types int, str cannot be ordered against each \
             other; use keys of one kind (all strings, or all numbers)"
        );
        let nan = Value::dict([(
            "cfg",
            Value::Dict(vec![(Key::Float(f64::NAN), Value::Null)]),
        )]);
        assert_eq!(
            canonical_json(&nan).unwrap_err().to_string(),
            "cannot hash params[\"cfg\"]: a NaN dict key cannot be ordered; use a string key"
        );
        assert_eq!(
            canonical_json(&Value::List(vec![]))
                .unwrap_err()
                .to_string(),
            "params must be a mapping of parameter names to values, not list; pass a dict \
             such as {'n': 100, 'dt': 0.1}"
        );
    }

    #[test]
    fn sets_sort_by_member_text() {
        let params = Value::dict([(
            "s",
            Value::Set(vec![
                Value::str("b"),
                Value::Int(10),
                Value::str("a"),
                Value::Int(9),
            ]),
        )]);
        assert_eq!(canonical_json(&params).unwrap(), r#"{"s":["a","b",10,9]}"#);
    }
}
