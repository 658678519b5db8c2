//! entropic's parameter hash: the id of a parameter set, computed without Python.
//!
//! `id = sha256(canonical_json(normalize(params)))[:16 hex]`, where `normalize` rounds
//! floats to 12 decimal places, turns sets into sorted lists and keeps everything else,
//! and `canonical_json` is byte for byte what Python's
//! `json.dumps(value, sort_keys=True, separators=(",", ":"))` prints. docs/hashing.md is
//! the normative spec; `python/entropic/_pyhash.py` is its readable reference.
//!
//! ```
//! use entropic::{hash_id, Value};
//!
//! let params = Value::dict([("n", Value::Int(100)), ("dt", Value::Float(0.1))]);
//! assert_eq!(entropic::canonical_json(&params).unwrap(), r#"{"dt":0.1,"n":100}"#);
//! assert_eq!(hash_id(&params).unwrap().len(), 16);
//! ```
//!
//! Everything here is plain Rust; the `python` feature adds the `entropic._core`
//! extension module, which walks Python objects directly.

mod canonical;
mod digest;
mod error;
mod float;
mod json;
mod keys;
mod value;

#[cfg(feature = "python")]
mod python;

pub use canonical::{canonical_json, hash_id, normalize};
pub use digest::{id_of, ID_LEN};
pub use error::HashError;
pub use float::{format_round12_short, round12, write_float_repr, write_round12_repr, SHORT_REPR};
pub use json::write_str as write_json_str;
pub use value::{BigInt, Key, Text, Value};

/// Containers (and enum `.value` unwrappings) nested deeper than this are rejected,
/// the same bound as the Python reference.
pub const MAX_DEPTH: usize = 256;

/// Hash calls running inside one another on a thread (a value's `__str__` that hashes
/// parameters itself) beyond this many are rejected, the same bound as the Python
/// reference: each call may nest `MAX_DEPTH` levels, so this bounds the stack too.
pub const MAX_NESTED_CALLS: usize = 8;
