//! Python strings and ints as bytes: UTF-8 (lone surrogates included), type names,
//! the default-repr address check and `int.__repr__`, shared by the walk and its errors.

use std::ffi::CStr;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::value::Text;

static INT_REPR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

const UTF8: &CStr = c"utf-8";
const SURROGATEPASS: &CStr = c"surrogatepass";

/// The UTF-8 bytes of a str, and the object that owns them when they had to be made
/// (null when they are cached in the str itself); the caller releases the owner.
pub(super) fn bytes_of_str<'a>(
    obj: *mut ffi::PyObject,
) -> PyResult<(&'a [u8], *mut ffi::PyObject)> {
    // SAFETY: `obj` is a live str; the UTF-8 buffer is cached in it (or in the returned
    // owner) and lives as long as the caller keeps that object alive.
    unsafe {
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut size);
        if !data.is_null() {
            return Ok((
                std::slice::from_raw_parts(data.cast::<u8>(), size as usize),
                ptr::null_mut(),
            ));
        }
        let py = Python::assume_attached();
        // Lone surrogates have no UTF-8; Python's "surrogatepass" gives generalised UTF-8.
        if ffi::PyErr_ExceptionMatches(ffi::PyExc_UnicodeEncodeError) == 0 {
            return Err(PyErr::fetch(py));
        }
        ffi::PyErr_Clear();
        let owner = ffi::PyUnicode_AsEncodedString(obj, UTF8.as_ptr(), SURROGATEPASS.as_ptr());
        if owner.is_null() {
            return Err(PyErr::fetch(py));
        }
        let data = ffi::PyBytes_AsString(owner);
        let size = ffi::PyBytes_Size(owner);
        Ok((
            std::slice::from_raw_parts(data.cast::<u8>(), size as usize),
            owner,
        ))
    }
}

/// Text (generalised UTF-8) to a Python str, lone surrogates included.
pub(super) fn py_text<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: a valid buffer and length; the result is a new reference or null with an error set.
    unsafe {
        let obj = ffi::PyUnicode_DecodeUTF8(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            SURROGATEPASS.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

pub(super) fn type_name(obj: &Bound<'_, PyAny>) -> PyResult<Text> {
    let name = obj.get_type().name()?;
    let (bytes, owner) = bytes_of_str(name.as_ptr())?;
    let text = Text::from_bytes(bytes.to_vec()).unwrap_or_default();
    // SAFETY: owner is null or a new reference we own.
    unsafe { ffi::Py_XDECREF(owner) };
    Ok(text)
}

/// True if `text` holds a default repr's address: ` at 0x` + hex digits + `>`.
pub(super) fn has_address(text: &[u8]) -> bool {
    const MARK: &[u8] = b" at 0x";
    text.windows(MARK.len()).enumerate().any(|(i, w)| {
        if w != MARK {
            return false;
        }
        let rest = &text[i + MARK.len()..];
        let hex = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        hex > 0 && rest.get(hex) == Some(&b'>')
    })
}

pub(super) fn int_repr<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let repr = INT_REPR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .get_type::<pyo3::types::PyInt>()
            .getattr("__repr__")?
            .unbind())
    })?;
    repr.bind(py).call1((obj,))
}
