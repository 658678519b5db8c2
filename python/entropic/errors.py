"""Exceptions raised by entropic, each subclassing the builtin an ``except`` clause expects."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArchiveError",
    "DispatchError",
    "MissingResultError",
    "ParamsDepthError",
    "ParamsTypeError",
    "PurePythonFallbackWarning",
    "RemoteRunError",
    "ReservedColumnError",
    "ResultsDirError",
    "SchemaDriftError",
    "SweepError",
]


class ParamsTypeError(TypeError):
    """A parameter set holds something that has no stable canonical form.

    Raised for a params object that is not a mapping, dict keys that are of an
    unsupported type or cannot be ordered, and values whose text would change
    from one process to the next (a default ``repr`` with a memory address).
    """


class ParamsDepthError(ValueError):
    """A parameter set is nested deeper than ``entropic.hashing.MAX_DEPTH`` (or contains itself)."""


class PurePythonFallbackWarning(RuntimeWarning):
    """The compiled hashing core is not installed; the slower pure-Python backend is in use."""


class ReservedColumnError(TypeError):
    """A model subclassing ``entropic.Base`` redefines one of the columns entropic owns."""


class MissingResultError(FileNotFoundError):
    """A runner returned without writing the result file it was given."""


class SchemaDriftError(RuntimeError):
    """The existing table does not fit the model: it lacks columns the model declares, or has
    NOT NULL columns without a default that the model lacks. It needs an ``ALTER TABLE`` first."""


class SweepError(RuntimeError):
    """Some points of a sweep failed; the others ran and were persisted.

    ``failures`` holds ``(params, exception)`` for each failed point and
    ``records`` the persisted records in input order. Sweeping the same points
    again runs only those that failed or never ran.
    """

    def __init__(
        self,
        message: str,
        failures: list[tuple[dict[str, Any], BaseException]] | None = None,
        records: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = failures if failures is not None else []
        self.records = records if records is not None else []


class RemoteRunError(RuntimeError):
    """Stands in for an exception raised on a worker that could not be sent back.

    Its message is the original's type and text; the traceback is in ``Store.failures()``.
    """


class DispatchError(RuntimeError):
    """The client of a sweep failed and ``fallback=False`` forbade running the rest here.

    ``unfinished`` is how many points did not run; the runs that finished are kept.
    """

    def __init__(self, message: str, unfinished: int = 0) -> None:
        super().__init__(message)
        self.unfinished = unfinished


class ResultsDirError(ValueError):
    """A results_dir holds the result files of another table; each table needs its own."""


class ArchiveError(ValueError):
    """An archive cannot be imported (damaged, or not fit for the store); nothing was written."""
