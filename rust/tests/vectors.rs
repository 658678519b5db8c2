//! The golden vectors (tests/vectors/hashing.json) through the plain-Rust API.
//!
//! Inputs are in the tagged form described in tests/vectors/tagged.py; Python-only
//! kinds map onto `Value` as the spec says (an enum is its value, a numpy value its
//! `.tolist()`, a tuple a list). Cases marked `python_only` are checked by pytest alone.

use entropic::{canonical_json, hash_id, HashError, Key, Text, Value, MAX_DEPTH};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("../../tests/vectors/hashing.json");

fn float(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("bad float {text:?} in the vectors"))
}

fn number(n: &serde_json::Number) -> Value {
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        Value::Float(float(&text))
    } else {
        Value::integer(&text).expect("an integer")
    }
}

fn code_points(list: &Json) -> Text {
    let codes = list
        .as_array()
        .expect("code points")
        .iter()
        .map(|c| c.as_u64().unwrap() as u32);
    Text::from_code_points(codes).expect("valid code points")
}

fn tag(value: &Json) -> Option<(&str, &Json)> {
    let object = value.as_object()?;
    let (name, body) = object.iter().next()?;
    (object.len() == 1 && name.starts_with('$')).then_some((name.as_str(), body))
}

fn key(tagged: &Json) -> Key {
    match tagged {
        Json::String(s) => Key::str(s),
        Json::Bool(b) => Key::Bool(*b),
        Json::Null => Key::Null,
        Json::Number(n) => {
            let text = n.to_string();
            Key::integer(&text).unwrap_or_else(|| Key::Float(float(&text)))
        }
        _ => match tag(tagged) {
            Some(("$float", body)) => Key::Float(float(body.as_str().unwrap())),
            Some(("$str", body)) => Key::Str(code_points(body)),
            other => panic!("key {other:?} has no Rust form"),
        },
    }
}

fn value(tagged: &Json) -> Value {
    match tagged {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n),
        Json::String(s) => Value::str(s),
        Json::Array(items) => Value::List(items.iter().map(value).collect()),
        Json::Object(object) => match tag(tagged) {
            None => Value::Dict(
                object
                    .iter()
                    .map(|(k, v)| (Key::str(k), value(v)))
                    .collect(),
            ),
            Some(("$float", body)) => Value::Float(float(body.as_str().unwrap())),
            Some(("$str", body)) => Value::Str(code_points(body)),
            Some(("$tuple", body)) => value(body),
            Some(("$set" | "$frozenset", body)) => {
                Value::Set(body.as_array().unwrap().iter().map(value).collect())
            }
            Some(("$dict", body)) => Value::Dict(
                body.as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| (key(&pair[0]), value(&pair[1])))
                    .collect(),
            ),
            Some(("$enum" | "$numpy", body)) => value(&body["value"]),
            Some(("$nest", body)) => {
                let mut v = value(&body["leaf"]);
                for _ in 0..body["depth"].as_u64().unwrap() {
                    v = Value::List(vec![v]);
                }
                v
            }
            Some((other, _)) => panic!("tag {other} has no Rust form"),
        },
    }
}

#[test]
fn golden_vectors() {
    let vectors: Json = serde_json::from_str(VECTORS).expect("hashing.json parses");
    assert_eq!(vectors["max_depth"].as_u64(), Some(MAX_DEPTH as u64));
    let mut checked = 0;
    for case in vectors["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap();
        if case.get("python_only").and_then(Json::as_bool) == Some(true) {
            continue;
        }
        let mut inputs = vec![value(&case["params"])];
        if let Some(plain) = case.get("json") {
            inputs.push(value(plain));
        }
        for params in &inputs {
            match &case.get("error") {
                None => {
                    let canonical = canonical_json(params)
                        .unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
                    assert_eq!(canonical, case["canonical"].as_str().unwrap(), "{name}");
                    assert_eq!(
                        hash_id(params).unwrap(),
                        case["id"].as_str().unwrap(),
                        "{name}"
                    );
                }
                Some(error) => {
                    let err: HashError = canonical_json(params).expect_err(name);
                    let class = if err.is_depth() {
                        "ParamsDepthError"
                    } else {
                        "ParamsTypeError"
                    };
                    assert_eq!(class, error["class"].as_str().unwrap(), "{name}");
                    let message = String::from_utf8(err.message()).expect("ASCII message");
                    assert_eq!(message, error["message"].as_str().unwrap(), "{name}");
                    assert_eq!(hash_id(params).unwrap_err(), err, "{name}");
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} vectors checked");
}
