//! The `entropic._core` extension: the hash walked straight over Python objects.
//!
//! `walk` applies the rules of docs/hashing.md to Python objects and writes the
//! canonical JSON as it goes, `dict` orders and walks dict entries, `cache` keeps a
//! thread's buffers and the texts it can reuse between calls, `text` reads Python
//! strings and ints as bytes, `numpy` finds numpy's types without importing it,
//! `dumps` and `loads` write and read plain JSON as the json module does, and
//! `errors` raises entropic's exceptions. This module holds the functions Python calls.

mod cache;
mod dict;
mod dumps;
mod errors;
mod loads;
mod numpy;
mod plain;
mod text;
mod walk;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::digest::{id_bytes, ids_of_many, ID_LEN};
use crate::{MAX_DEPTH, MAX_NESTED_CALLS};
use plain::Columns;
use walk::Walker;

fn id_string<'py>(py: Python<'py>, canonical: &[u8]) -> PyResult<Bound<'py, PyString>> {
    id_str(py, &id_bytes(canonical))
}

fn id_str<'py>(py: Python<'py>, id: &[u8; ID_LEN]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: 16 ASCII bytes; a new reference or null with an error set.
    unsafe {
        // ASCII decoding makes the str with its final kind and copies word by word.
        let obj = ffi::PyUnicode_DecodeASCII(
            id.as_ptr().cast(),
            ID_LEN as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// Return the 16-hex-character id of one parameter set.
#[pyfunction]
#[pyo3(signature = (params))]
fn hash_params<'py>(py: Python<'py>, params: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let mut walker = Walker::new(py)?;
    walker.params(params)?;
    id_string(py, &walker.s.out)
}

/// Return the ids of many parameter sets, consuming the iterable once, in order.
#[pyfunction]
#[pyo3(signature = (params))]
fn hash_many<'py>(py: Python<'py>, params: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let mut walker = Walker::new(py)?;
    let mut ids = Batch::new(py);
    if let Ok(list) = params.cast_exact::<PyList>() {
        // A list is read by index, as its iterator would (the length is re-read each step).
        let mut i = 0;
        while i < list.len() {
            let item = list.get_item(i)?;
            walker.params(&item)?;
            ids.push(&mut walker)?;
            i += 1;
        }
    } else {
        for item in params.try_iter()? {
            walker.params(&item?)?;
            ids.push(&mut walker)?;
        }
    }
    ids.finish()
}

/// Canonical texts hashed a batch at a time (see `ids_of_many`), and the ids made so far.
struct Batch<'py> {
    py: Python<'py>,
    /// The ids made so far, appended as they are made.
    list: Bound<'py, PyList>,
    /// The texts of the batch, `texts[..len]`; their buffers are reused.
    texts: Vec<Vec<u8>>,
    len: usize,
}

/// Parameter sets per batch.
const BATCH: usize = 16;

impl<'py> Batch<'py> {
    fn new(py: Python<'py>) -> Self {
        Batch {
            py,
            list: PyList::empty(py),
            texts: Vec::new(),
            len: 0,
        }
    }

    /// Take the canonical text the walker just wrote; when the batch is full, make
    /// the ids of its texts, in order.
    fn push(&mut self, walker: &mut Walker<'py>) -> PyResult<()> {
        if self.len == self.texts.len() {
            self.texts.push(Vec::new());
        }
        // The walker writes the next text into the buffer it gets in exchange.
        std::mem::swap(&mut self.texts[self.len], &mut walker.s.out);
        self.len += 1;
        if self.len == BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PyResult<()> {
        let mut texts: [&[u8]; BATCH] = [&[]; BATCH];
        for (slot, text) in texts.iter_mut().zip(&self.texts[..self.len]) {
            *slot = text;
        }
        let mut ids = [[0u8; ID_LEN]; BATCH];
        ids_of_many(&texts[..self.len], &mut ids[..self.len]);
        for id in &ids[..self.len] {
            self.list.append(id_str(self.py, id)?)?;
        }
        self.len = 0;
        Ok(())
    }

    fn finish(mut self) -> PyResult<Bound<'py, PyList>> {
        self.flush()?;
        Ok(self.list)
    }
}

/// Return the id of each parameter set whose every value its column takes as it is,
/// and None for each of the others (the caller validates those in full).
#[pyfunction]
#[pyo3(signature = (params, columns))]
fn hash_plain<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyList>,
    columns: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyList>> {
    let columns = Columns::new(columns)?;
    let mut walker = Walker::new(py)?;
    let mut ids: Vec<Option<Bound<'py, PyString>>> = Vec::with_capacity(params.len());
    let mut i = 0;
    while i < params.len() {
        let item = params.get_item(i)?;
        if columns.takes(item.as_ptr()) {
            walker.params(&item)?;
            ids.push(Some(id_string(py, &walker.s.out)?));
        } else {
            ids.push(None);
        }
        i += 1;
    }
    PyList::new(py, ids)
}

/// Return ``json.dumps(value)`` (with ``separators=(",", ":")`` if ``compact``) when
/// ``value`` is plain data, else None: the caller leaves such a value to ``json.dumps``.
#[pyfunction]
#[pyo3(signature = (value, compact))]
fn json_dumps<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    compact: bool,
) -> PyResult<Option<Bound<'py, PyString>>> {
    let mut out = Vec::with_capacity(256);
    // SAFETY: a live object, with the GIL held; the result is ASCII (ensure_ascii).
    unsafe {
        if !dumps::write_value(&mut out, value.as_ptr(), dumps::Separators::new(compact), 0) {
            return Ok(None);
        }
        let obj = ffi::PyUnicode_DecodeASCII(
            out.as_ptr().cast(),
            out.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Some(
            Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked(),
        ))
    }
}

/// Return ``json.loads(text)`` when ``text`` is an exact str holding one plain JSON value,
/// else None: the caller leaves such text to ``json.loads``.
#[pyfunction]
#[pyo3(signature = (text))]
fn json_loads<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Ok(text) = text.cast_exact::<PyString>() else {
        return Ok(None);
    };
    // A str with a lone surrogate has no UTF-8: left to json.loads.
    let Ok(text) = text.to_str() else {
        return Ok(None);
    };
    match loads::read(py, text) {
        Ok(value) => Ok(Some(value)),
        Err(loads::Stop::GiveUp) => Ok(None),
        Err(loads::Stop::Python(err)) => Err(err),
    }
}

/// Return the canonical JSON text whose SHA-256 is the id of ``params``.
#[pyfunction]
#[pyo3(signature = (params))]
fn canonical_json<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    let mut walker = Walker::new(py)?;
    walker.params(params)?;
    // SAFETY: canonical JSON is ASCII.
    unsafe {
        let out = &walker.s.out;
        let obj =
            ffi::PyUnicode_FromStringAndSize(out.as_ptr().cast(), out.len() as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// entropic's compiled hashing core (see entropic.hashing, which picks the backend).
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_DEPTH", MAX_DEPTH)?;
    m.add("MAX_NESTED_CALLS", MAX_NESTED_CALLS)?;
    m.add_function(wrap_pyfunction!(hash_params, m)?)?;
    m.add_function(wrap_pyfunction!(hash_many, m)?)?;
    m.add_function(wrap_pyfunction!(hash_plain, m)?)?;
    m.add_function(wrap_pyfunction!(json_dumps, m)?)?;
    m.add_function(wrap_pyfunction!(json_loads, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_json, m)?)?;
    Ok(())
}
