//! The plain-value test of `hash_plain`: whether every value of a parameter set is one
//! its column takes exactly as it is, so the set needs no validation beyond its hash.
//!
//! The test only ever says yes for values the Python validation would accept unchanged
//! (`entropic._pyhash.plain_value` is its reference); for anything else it says no, and
//! the caller validates that set in full, which raises the error where there is one.

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// What a column takes as it is (the kind codes of `entropic._pyhash.PLAIN_KINDS`).
#[derive(Clone, Copy)]
enum Kind {
    /// Exactly `True` or `False`.
    Bool,
    /// An exact int within `low..=high`.
    Int { low: i64, high: i64 },
    /// An exact float that is not NaN.
    Float,
    /// An exact ASCII str without NUL, at most `max` characters long (`None`: any length).
    Str { max: Option<i64> },
}

/// One column of the spec: its kind, whether None is taken, whether it must be given.
#[derive(Clone, Copy)]
struct Column {
    kind: Kind,
    nullable: bool,
    required: bool,
}

/// The columns of one call, found by the spec tuple the columns dict maps a name to.
pub(super) struct Columns<'py> {
    by_name: Bound<'py, PyDict>,
    specs: Vec<(*mut ffi::PyObject, Column)>,
    required: usize,
}

impl<'py> Columns<'py> {
    /// Read `{name: (kind, nullable, required, low, high)}` once per call.
    pub(super) fn new(columns: &Bound<'py, PyDict>) -> PyResult<Self> {
        let mut specs = Vec::with_capacity(columns.len());
        let mut required = 0;
        for (_, spec) in columns.iter() {
            let tuple = spec.cast::<PyTuple>()?;
            let (code, nullable, must, low, high): (u8, bool, bool, i64, i64) = tuple.extract()?;
            let kind = match code {
                0 => Kind::Bool,
                1 => Kind::Int { low, high },
                2 => Kind::Float,
                3 => Kind::Str {
                    max: (high >= 0).then_some(high),
                },
                _ => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "hash_plain: unknown column kind {code}"
                    )))
                }
            };
            required += usize::from(must);
            // The dict keeps the tuple alive for the whole call.
            specs.push((
                tuple.as_ptr(),
                Column {
                    kind,
                    nullable,
                    required: must,
                },
            ));
        }
        Ok(Columns {
            by_name: columns.clone(),
            specs,
            required,
        })
    }

    /// Whether `obj` is an exact dict of exact str keys, each a column, each value one
    /// its column takes as it is, every required column given.
    pub(super) fn takes(&self, obj: *mut ffi::PyObject) -> bool {
        // SAFETY: `obj` is live; PyDict_Next gives borrowed references the dict keeps
        // alive, and nothing below runs Python code (exact str keys hash and compare in C).
        unsafe {
            if ffi::Py_TYPE(obj) != &raw mut ffi::PyDict_Type {
                return false;
            }
            let mut given = 0;
            let mut pos: ffi::Py_ssize_t = 0;
            let mut key = ptr::null_mut();
            let mut value = ptr::null_mut();
            while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
                if ffi::Py_TYPE(key) != &raw mut ffi::PyUnicode_Type {
                    return false;
                }
                let spec = ffi::PyDict_GetItem(self.by_name.as_ptr(), key);
                let Some(column) = self.column(spec) else {
                    return false;
                };
                if !takes_value(column, value) {
                    return false;
                }
                given += usize::from(column.required);
            }
            given == self.required
        }
    }

    fn column(&self, spec: *mut ffi::PyObject) -> Option<Column> {
        if spec.is_null() {
            return None;
        }
        self.specs
            .iter()
            .find(|(at, _)| *at == spec)
            .map(|(_, column)| *column)
    }
}

/// # Safety
/// `value` must be a live object.
unsafe fn takes_value(column: Column, value: *mut ffi::PyObject) -> bool {
    if value == ffi::Py_None() {
        return column.nullable;
    }
    let tp = ffi::Py_TYPE(value);
    match column.kind {
        Kind::Bool => tp == &raw mut ffi::PyBool_Type,
        Kind::Float => tp == &raw mut ffi::PyFloat_Type && !ffi::PyFloat_AsDouble(value).is_nan(),
        Kind::Int { low, high } => {
            if tp != &raw mut ffi::PyLong_Type {
                return false;
            }
            let mut overflow = 0;
            let n = ffi::PyLong_AsLongLongAndOverflow(value, &mut overflow);
            if n == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return false;
            }
            overflow == 0 && low <= n && n <= high
        }
        Kind::Str { max } => {
            if tp != &raw mut ffi::PyUnicode_Type {
                return false;
            }
            let chars = ffi::PyUnicode_GetLength(value);
            if max.is_some_and(|max| chars as i64 > max) {
                return false;
            }
            let mut size: ffi::Py_ssize_t = 0;
            let data = ffi::PyUnicode_AsUTF8AndSize(value, &mut size);
            if data.is_null() {
                ffi::PyErr_Clear(); // a lone surrogate: not ASCII
                return false;
            }
            // ASCII exactly when each character is one byte.
            size == chars
                && !std::slice::from_raw_parts(data.cast::<u8>(), size as usize).contains(&0)
        }
    }
}
