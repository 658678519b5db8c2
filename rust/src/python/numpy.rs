//! numpy's array and scalar types, found in `sys.modules` and never imported: a program
//! that has not imported numpy cannot hold a numpy value.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};

/// `numpy.ndarray` and `numpy.generic`, kept once the program has imported numpy.
static TYPES: PyOnceLock<[Py<PyType>; 2]> = PyOnceLock::new();

/// True if `obj`'s type (not a `__class__` it claims) derives from `numpy.ndarray` or
/// `numpy.generic`: rule 5 of docs/hashing.md. Runs no Python code once numpy is known.
pub(super) fn is_array_or_scalar(py: Python<'_>, obj: *mut ffi::PyObject) -> PyResult<bool> {
    let types = match TYPES.get(py) {
        Some(types) => types,
        None => match find(py)? {
            Some(found) => TYPES.get_or_init(py, || found),
            None => return Ok(false),
        },
    };
    // SAFETY: `obj` is a live object and both types are kept alive by TYPES.
    Ok(types.iter().any(|t| unsafe {
        ffi::PyType_IsSubtype(ffi::Py_TYPE(obj), t.as_ptr().cast::<ffi::PyTypeObject>()) != 0
    }))
}

/// `(numpy.ndarray, numpy.generic)` from `sys.modules`, or None if numpy is not imported.
fn find(py: Python<'_>) -> PyResult<Option<[Py<PyType>; 2]>> {
    // SAFETY: the interpreter's module dict, a borrowed reference to a live dict.
    let modules = unsafe { Bound::from_borrowed_ptr(py, ffi::PyImport_GetModuleDict()) };
    let numpy = match modules.cast_into::<PyDict>()?.get_item("numpy")? {
        Some(numpy) if !numpy.is_none() => numpy,
        _ => return Ok(None),
    };
    let ndarray = numpy.getattr("ndarray")?.cast_into::<PyType>()?.unbind();
    let generic = numpy.getattr("generic")?.cast_into::<PyType>()?.unbind();
    Ok(Some([ndarray, generic]))
}

/// True if `value`'s type says it comes from numpy (`__module__` is `numpy` or starts
/// with `numpy.`), read as the reference reads it.
pub(super) fn defined_in_numpy(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = value.py();
    let module = value.get_type().getattr(intern!(py, "__module__"))?;
    if let Ok(name) = module.cast::<PyString>() {
        let name = name.to_cow()?;
        return Ok(name == "numpy" || name.starts_with("numpy."));
    }
    if module.eq("numpy")? {
        return Ok(true);
    }
    module
        .call_method1(intern!(py, "startswith"), ("numpy.",))?
        .is_truthy()
}
