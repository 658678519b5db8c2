//! The exceptions of `entropic.errors`, raised from a [`HashError`] with its exact message.

use pyo3::prelude::*;

use super::text::py_text;
use crate::error::HashError;

pyo3::import_exception!(entropic.errors, ParamsTypeError);
pyo3::import_exception!(entropic.errors, ParamsDepthError);

pub(super) fn to_pyerr(py: Python<'_>, err: HashError) -> PyErr {
    let message = match py_text(py, &err.message()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if err.is_depth() {
        ParamsDepthError::new_err(message.unbind())
    } else {
        ParamsTypeError::new_err(message.unbind())
    }
}
