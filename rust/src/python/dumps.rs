//! `json.dumps` of plain data, for the rows a sweep writes: journal lines and JSON columns.
//!
//! Only exact builtin types are written (dict with str keys, list, tuple, str, int within
//! 64 bits, float, bool, None), in the text `json.dumps` gives them with its defaults
//! (`ensure_ascii`, `allow_nan`, insertion order). Anything else, a lone surrogate, or
//! nesting deeper than `MAX_DEPTH` makes the writer give up, and the caller leaves the
//! value to `json.dumps`, which writes it or raises as it always does. The walk runs no
//! Python code, so the borrowed references it reads stay valid throughout.

use std::ptr;

use pyo3::ffi;

use crate::json::{write_i64, write_str};
use crate::write_float_repr;
use crate::MAX_DEPTH;

/// The separators of `json.dumps`: `(", ", ": ")` by default, `(",", ":")` compact.
#[derive(Clone, Copy)]
pub(super) struct Separators {
    item: &'static [u8],
    key: &'static [u8],
}

impl Separators {
    pub(super) fn new(compact: bool) -> Self {
        if compact {
            Separators {
                item: b",",
                key: b":",
            }
        } else {
            Separators {
                item: b", ",
                key: b": ",
            }
        }
    }
}

/// Append the text of `obj`; false (with `out` partly written) if it is not plain data.
///
/// # Safety
/// `obj` must be a live object, and the caller must hold the GIL.
pub(super) unsafe fn write_value(
    out: &mut Vec<u8>,
    obj: *mut ffi::PyObject,
    sep: Separators,
    depth: usize,
) -> bool {
    let tp = ffi::Py_TYPE(obj);
    if tp == &raw mut ffi::PyUnicode_Type {
        return write_text(out, obj);
    }
    if tp == &raw mut ffi::PyFloat_Type {
        write_float_repr(out, ffi::PyFloat_AsDouble(obj));
        return true;
    }
    if tp == &raw mut ffi::PyLong_Type {
        let mut overflow = 0;
        let n = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
        if overflow != 0 || (n == -1 && !ffi::PyErr_Occurred().is_null()) {
            ffi::PyErr_Clear();
            return false;
        }
        write_i64(out, n);
        return true;
    }
    if obj == ffi::Py_None() {
        out.extend_from_slice(b"null");
        return true;
    }
    if obj == ffi::Py_True() {
        out.extend_from_slice(b"true");
        return true;
    }
    if obj == ffi::Py_False() {
        out.extend_from_slice(b"false");
        return true;
    }
    if depth >= MAX_DEPTH {
        return false;
    }
    if tp == &raw mut ffi::PyDict_Type {
        out.push(b'{');
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key = ptr::null_mut();
        let mut value = ptr::null_mut();
        let mut first = true;
        while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
            if ffi::Py_TYPE(key) != &raw mut ffi::PyUnicode_Type {
                return false;
            }
            if !first {
                out.extend_from_slice(sep.item);
            }
            first = false;
            if !write_text(out, key) {
                return false;
            }
            out.extend_from_slice(sep.key);
            if !write_value(out, value, sep, depth + 1) {
                return false;
            }
        }
        out.push(b'}');
        return true;
    }
    let list = tp == &raw mut ffi::PyList_Type;
    if list || tp == &raw mut ffi::PyTuple_Type {
        out.push(b'[');
        let size = if list {
            ffi::PyList_Size(obj)
        } else {
            ffi::PyTuple_Size(obj)
        };
        for i in 0..size {
            let item = if list {
                ffi::PyList_GetItem(obj, i)
            } else {
                ffi::PyTuple_GetItem(obj, i)
            };
            if i > 0 {
                out.extend_from_slice(sep.item);
            }
            if !write_value(out, item, sep, depth + 1) {
                return false;
            }
        }
        out.push(b']');
        return true;
    }
    false
}

/// # Safety
/// `obj` must be a live exact str.
unsafe fn write_text(out: &mut Vec<u8>, obj: *mut ffi::PyObject) -> bool {
    let mut size: ffi::Py_ssize_t = 0;
    let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut size);
    if data.is_null() {
        ffi::PyErr_Clear(); // a lone surrogate: left to json.dumps
        return false;
    }
    write_str(
        out,
        std::slice::from_raw_parts(data.cast::<u8>(), size as usize),
    );
    true
}
