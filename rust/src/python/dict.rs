//! Dicts: keys checked and classified in insertion order, ordered as Python's
//! `sorted()` orders them, and values walked in that order.

use std::collections::HashMap;
use std::ptr;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::text::{bytes_of_str, int_repr, type_name};
use super::walk::{Step, Walker};
use crate::error::HashError;
use crate::keys::{cmp_keys, KeyKind, KeyRef};

/// One dict entry during a walk. `key` and `value` are strong references (so a
/// `__str__` that mutates the dict cannot free them under us); `sort` borrows from
/// `key`, or from `owner` when the key's text had to be made (lone surrogates, big ints).
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub(super) key: *mut ffi::PyObject,
    /// Null for dict subclasses, whose `__getitem__` is called at visit time.
    pub(super) value: *mut ffi::PyObject,
    pub(super) owner: *mut ffi::PyObject,
    pub(super) sort: KeyRef<'static>,
    /// `int.__repr__` raised for this key; the reference raises it when it builds the path.
    repr_failed: bool,
    /// Position in the dict's insertion order.
    pub(super) index: usize,
}

/// Release the references held by `entries[start..]` and drop them.
fn release_entries(entries: &mut Vec<Entry>, start: usize) {
    for e in entries.drain(start..) {
        // SAFETY: each pointer is a strong reference taken when the entry was pushed.
        unsafe {
            ffi::Py_DECREF(e.key);
            ffi::Py_XDECREF(e.value);
            ffi::Py_XDECREF(e.owner);
        }
    }
}

impl<'py> Walker<'py> {
    pub(super) fn walk_dict(
        &mut self,
        obj: *mut ffi::PyObject,
        depth: usize,
        exact: bool,
    ) -> PyResult<()> {
        self.check_depth(depth)?;
        if exact && self.write_known_shape(obj)? {
            return Ok(());
        }
        let start = self.s.entries.len();
        let result = self
            .collect_entries(obj, exact)
            .and_then(|python_order| self.sort_entries(start, python_order))
            .and_then(|()| self.write_entries(obj, start, depth));
        if result.is_ok() && exact {
            self.remember_shape(start);
        }
        release_entries(&mut self.s.entries, start);
        result
    }

    /// Push the dict's entries, checking each key in insertion order as the reference
    /// does. Returns true if the keys must be ordered by Python's own `<` (subclass keys).
    fn collect_entries(&mut self, obj: *mut ffi::PyObject, exact: bool) -> PyResult<bool> {
        let start = self.s.entries.len();
        let mut kinds = 0u8;
        let mut python_order = false;
        // SAFETY: every pointer pushed is a new strong reference; PyDict_Next gives
        // borrowed ones, which are increfed before anything can run Python code.
        unsafe {
            if exact {
                let mut pos: ffi::Py_ssize_t = 0;
                let mut key = ptr::null_mut();
                let mut value = ptr::null_mut();
                while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
                    ffi::Py_INCREF(key);
                    ffi::Py_INCREF(value);
                    self.push_entry(key, value, start, &mut kinds, &mut python_order)?;
                }
            } else {
                let iter = Bound::from_borrowed_ptr(self.py, obj).try_iter()?;
                for key in iter {
                    let key = key?.into_ptr();
                    self.push_entry(key, ptr::null_mut(), start, &mut kinds, &mut python_order)?;
                }
            }
        }
        if kinds.count_ones() > 1 {
            let mut type_names = Vec::new();
            for e in &self.s.entries[start..] {
                // SAFETY: the entry holds the key alive.
                type_names.push(type_name(unsafe {
                    &Bound::from_borrowed_ptr(self.py, e.key)
                })?);
            }
            return Err(self.error(|path| HashError::MixedKeys { path, type_names }));
        }
        Ok(python_order)
    }

    /// Classify one key (taking ownership of `key` and `value`) and push its entry.
    unsafe fn push_entry(
        &mut self,
        key: *mut ffi::PyObject,
        value: *mut ffi::PyObject,
        start: usize,
        kinds: &mut u8,
        python_order: &mut bool,
    ) -> PyResult<()> {
        let index = self.s.entries.len() - start;
        let mut entry = Entry {
            key,
            value,
            owner: ptr::null_mut(),
            sort: KeyRef::Null,
            repr_failed: false,
            index,
        };
        // Pushed first, so the caller releases it whatever happens next.
        self.s.entries.push(entry);
        let tp = ffi::Py_TYPE(key);
        let exact_type = tp == &raw mut ffi::PyUnicode_Type
            || tp == &raw mut ffi::PyLong_Type
            || tp == &raw mut ffi::PyFloat_Type
            || tp == &raw mut ffi::PyBool_Type
            || key == ffi::Py_None();
        if ffi::PyUnicode_Check(key) != 0 {
            let (bytes, owner) = bytes_of_str(key)?;
            entry.sort = KeyRef::Str(bytes);
            entry.owner = owner;
        } else if key == ffi::Py_True() || key == ffi::Py_False() {
            entry.sort = KeyRef::Bool(key == ffi::Py_True());
        } else if ffi::PyLong_Check(key) != 0 {
            let n = ffi::PyLong_AsLongLong(key);
            if n != -1 || ffi::PyErr_Occurred().is_null() {
                entry.sort = KeyRef::Int(n);
            } else {
                ffi::PyErr_Clear();
                let bound = Bound::from_borrowed_ptr(self.py, key);
                match int_repr(self.py, &bound) {
                    Ok(text) => {
                        let owner = text.into_ptr();
                        let (bytes, extra) = bytes_of_str(owner)?;
                        ffi::Py_XDECREF(extra); // repr text is ASCII: never needed
                        let (negative, magnitude) = match bytes.split_first() {
                            Some((b'-', rest)) => (true, rest),
                            _ => (false, bytes),
                        };
                        entry.owner = owner;
                        entry.sort = KeyRef::Big {
                            negative,
                            magnitude,
                        };
                    }
                    Err(err) if err.is_instance_of::<PyValueError>(self.py) => {
                        // Ordered by Python; the error is raised again when the path is built.
                        entry.repr_failed = true;
                        entry.sort = KeyRef::Int(0);
                        *python_order = true;
                    }
                    Err(err) => return Err(err),
                }
            }
        } else if ffi::PyFloat_Check(key) != 0 {
            let f = ffi::PyFloat_AsDouble(key);
            entry.sort = KeyRef::Float(f);
            if f.is_nan() {
                return Err(self.error(|path| HashError::NanKey { path }));
            }
        } else if key == ffi::Py_None() {
            entry.sort = KeyRef::Null;
        } else {
            let type_name = type_name(&Bound::from_borrowed_ptr(self.py, key))?;
            return Err(self.error(|path| HashError::BadKeyType { path, type_name }));
        }
        *kinds |= match entry.sort.kind() {
            KeyKind::Str => 1,
            KeyKind::Number => 2,
            KeyKind::Null => 4,
        };
        *python_order |= !exact_type;
        *self.s.entries.last_mut().expect("pushed above") = entry;
        Ok(())
    }

    fn sort_entries(&mut self, start: usize, python_order: bool) -> PyResult<()> {
        let entries = &mut self.s.entries[start..];
        if !python_order {
            entries.sort_unstable_by(|a, b| cmp_keys(&a.sort, &b.sort));
            return Ok(());
        }
        // Keys of subclass types compare with their own `<`: let Python sort them.
        let keys = PyList::empty(self.py);
        for e in entries.iter() {
            // SAFETY: the entry holds the key alive.
            keys.append(unsafe { Bound::from_borrowed_ptr(self.py, e.key) })?;
        }
        keys.sort()?;
        let by_ptr: HashMap<usize, Entry> = entries.iter().map(|e| (e.key as usize, *e)).collect();
        for (slot, key) in entries.iter_mut().zip(keys.iter()) {
            *slot = by_ptr[&(key.as_ptr() as usize)];
        }
        Ok(())
    }

    fn write_entries(
        &mut self,
        obj: *mut ffi::PyObject,
        start: usize,
        depth: usize,
    ) -> PyResult<()> {
        self.s.out.push(b'{');
        let end = self.s.entries.len();
        for i in start..end {
            // Copied out: walking the value may push (and reallocate) more entries.
            let e = self.s.entries[i];
            if e.repr_failed {
                // SAFETY: the entry holds the key alive.
                int_repr(self.py, unsafe {
                    &Bound::from_borrowed_ptr(self.py, e.key)
                })?;
            }
            if i > start {
                self.s.out.push(b',');
            }
            e.sort.write_json(&mut self.s.out);
            self.s.out.push(b':');
            self.s.path.push(Step::Key(e.sort));
            let result = if e.value.is_null() {
                // A dict subclass: the reference reads `value[key]`, through its __getitem__.
                // SAFETY: both objects are alive; the item is a new reference held here.
                unsafe { Bound::from_borrowed_ptr(self.py, obj) }
                    .get_item(unsafe { Bound::from_borrowed_ptr(self.py, e.key) })
                    .and_then(|item| self.walk(item.as_ptr(), depth + 1))
            } else {
                self.walk(e.value, depth + 1)
            };
            self.s.path.pop();
            result?;
        }
        self.s.out.push(b'}');
        Ok(())
    }
}
