//! The errors both backends raise, with the reference implementation's exact messages.

use std::fmt;

use crate::value::Text;
use crate::{MAX_DEPTH, MAX_NESTED_CALLS};

/// Why a parameter set has no canonical form.
///
/// Paths and type names are [`Text`] because Python strings (and so key paths) may
/// hold lone surrogates; [`HashError::message`] keeps them, `Display` replaces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The parameter set itself is not a mapping (Python: `ParamsTypeError`).
    NotAMapping { type_name: Text },
    /// Containers nested deeper than [`MAX_DEPTH`] (Python: `ParamsDepthError`).
    TooDeep { path: Text },
    /// More than [`MAX_NESTED_CALLS`] hash calls inside one another (Python objects only;
    /// Python: `ParamsDepthError`).
    NestedCalls,
    /// A NaN dict key, which has no place in any order (Python: `ParamsTypeError`).
    NanKey { path: Text },
    /// Dict keys of kinds that cannot be compared, e.g. `str` and `int`.
    MixedKeys { path: Text, type_names: Vec<Text> },
    /// A dict key that is not str, int, float, bool or None (Python objects only).
    BadKeyType { path: Text, type_name: Text },
    /// A value whose `str()` holds a memory address (Python objects only).
    AddressInText { path: Text, type_name: Text },
    /// A numpy scalar whose `.tolist()` is a numpy value again, such as a `longdouble`
    /// (Python objects only).
    NumpyNotPython { path: Text, type_name: Text },
    /// A numpy object that is neither an array nor a scalar, such as a dtype or a ufunc
    /// (Python objects only).
    NumpyNotAValue { path: Text, type_name: Text },
}

impl HashError {
    /// True for the depth bound (Python `ValueError`), false for the `TypeError` kinds.
    pub fn is_depth(&self) -> bool {
        matches!(self, HashError::TooDeep { .. } | HashError::NestedCalls)
    }

    /// The message as generalised UTF-8, byte for byte what the Python reference says.
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
        match self {
            HashError::NotAMapping { type_name } => put(&[
                b"params must be a mapping of parameter names to values, not ",
                type_name.as_bytes(),
                b"; pass a dict such as {'n': 100, 'dt': 0.1}",
            ]),
            HashError::TooDeep { path } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": params are nested more than ",
                MAX_DEPTH.to_string().as_bytes(),
                b" levels deep (or contain themselves); flatten the structure",
            ]),
            HashError::NestedCalls => put(&[
                b"cannot hash params: hash calls are nested more than ",
                MAX_NESTED_CALLS.to_string().as_bytes(),
                b" deep (a __str__, .value or other method of a value hashes parameters \
                  itself); pass plain values instead",
            ]),
            HashError::NanKey { path } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": a NaN dict key cannot be ordered; use a string key",
            ]),
            HashError::MixedKeys { path, type_names } => {
                let mut names: Vec<&[u8]> = type_names.iter().map(Text::as_bytes).collect();
                names.sort_unstable();
                names.dedup();
                put(&[b"cannot hash ", path.as_bytes(), b": dict keys of types "]);
                put(&[&names.join(&b", "[..])]);
                put(&[
                    b" cannot be ordered against each other; use keys of one kind \
                        (all strings, or all numbers)",
                ]);
            }
            HashError::BadKeyType { path, type_name } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": dict keys must be str, int, float, bool or None, not ",
                type_name.as_bytes(),
                b"; convert the keys to strings",
            ]),
            HashError::AddressInText { path, type_name } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": str() of a ",
                type_name.as_bytes(),
                b" object contains a memory address, so its id would change in every \
                  process; pass plain values (numbers, strings, lists, dicts) or give ",
                type_name.as_bytes(),
                b" a __str__ that describes its content",
            ]),
            HashError::NumpyNotPython { path, type_name } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": a numpy ",
                type_name.as_bytes(),
                b" has no exact Python value (its .tolist() is a numpy value again); \
                  convert it first, for example with float(value), or complex(value) \
                  for a complex one",
            ]),
            HashError::NumpyNotAValue { path, type_name } => put(&[
                b"cannot hash ",
                path.as_bytes(),
                b": a numpy ",
                type_name.as_bytes(),
                b" is neither an array nor a scalar, so it has no canonical value; \
                  pass a plain value that stands for it, such as str(value)",
            ]),
        }
        out
    }
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.message()))
    }
}

impl std::error::Error for HashError {}
