"""The Store: run each parameter set once, index its result file in SQL, hand back the record.

``Store`` is the public face: the contract's methods, each a few lines over the
storage layer (``entropic._storage``: the index, the files, claims, recovery;
docs/architecture.md draws it) and ``entropic.sweep``. A Store pickles as its
configuration and reopens its engine wherever it is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.engine import Engine

from entropic import sweep as sweeps
from entropic._storage import archive_export, archive_import, grid_view, query
from entropic._storage.archive_export import ExportReport
from entropic._storage.archive_import import ImportReport
from entropic._storage.core import StoreCore
from entropic.models import Base, Failure

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pandas as pd
    import xarray as xr
    from distributed import Client

__all__ = ["ModelT", "Runner", "Store"]

ModelT = TypeVar("ModelT", bound=Base)
Runner = Callable[[dict[str, Any]], None]


class Store(Generic[ModelT]):
    """A run cache: one table of ``result_cls`` rows, one folder of result files."""

    def __init__(
        self,
        runner: Callable[[dict[str, Any]], None],
        result_cls: type[ModelT],
        results_dir: str | Path = "./results",
        file_suffix: str = ".h5",
        db_url: str = "sqlite:///db.sqlite3",
    ) -> None:
        self._core = StoreCore(runner, result_cls, results_dir, file_suffix, db_url)
        try:
            self._core.open()
        except BaseException:
            self._core.close()
            raise

    # -- configuration ---------------------------------------------------------------------

    @property
    def runner(self) -> Callable[[dict[str, Any]], None]:
        return self._core.runner

    @property
    def result_cls(self) -> type[ModelT]:
        return self._core.model  # type: ignore[return-value]

    @property
    def results_dir(self) -> Path:
        """The absolute results_dir (a relative one is resolved when the Store is built)."""
        return self._core.disk.root

    @property
    def file_suffix(self) -> str:
        return self._core.disk.suffix

    @property
    def db_url(self) -> str:
        """The database URL with any password masked."""
        return self._core.index.shown_url

    @property
    def engine(self) -> Engine:
        """The Store's one engine, opened on first use in each process and reused by every call."""
        return self._core.index.engine

    def close(self) -> None:
        """Close the engine's connections (an in-memory database is lost); later calls reopen it."""
        self._core.close()

    def __enter__(self) -> Store[ModelT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Store({self._core.model.__name__}, results_dir={str(self.results_dir)!r}, "
            f"file_suffix={self.file_suffix!r}, db_url={self.db_url!r})"
        )

    # -- the contract ----------------------------------------------------------------------

    def run_or_retrieve(self, params: dict[str, Any], **custom_data: Any) -> ModelT:
        """Return the cached record of ``params``, running the runner first if there is none."""
        core = self._core
        point = core.point(params, custom_data)
        record = core.hit(point.id)
        if record is not None:
            return record  # type: ignore[no-any-return]
        return core.run_one(point, again=False)  # type: ignore[no-any-return]

    def run(self, params: dict[str, Any], **custom_data: Any) -> ModelT:
        """Run the runner for ``params`` even if cached, and insert or overwrite its row."""
        core = self._core
        return core.run_one(core.point(params, custom_data), again=True)  # type: ignore[no-any-return]

    def retrieve(self, params: dict[str, Any]) -> ModelT | None:
        """Return the record of ``params`` (or of ``params['id']``), or ``None`` on a miss."""
        core = self._core
        return core.index.get(core.identify(params))  # type: ignore[no-any-return]

    def register(
        self, params: dict[str, Any], result_file: str | Path, **custom_data: Any
    ) -> ModelT:
        """Index a result file produced elsewhere under the id of ``params``; nothing is run."""
        core = self._core
        point = core.point(params, custom_data)
        path = os.path.abspath(os.fspath(result_file))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"cannot register {path}: no such file; write the result first, then register it"
            )
        return core.register(point, path)  # type: ignore[no-any-return]

    def sweep(
        self,
        params: Iterable[dict[str, Any]],
        client: Client | Executor | None = None,
        *,
        progress: bool = False,
        fallback: bool = True,
    ) -> list[ModelT]:
        """Run or retrieve every parameter set; one record per distinct id, in input order.

        Runner failures do not stop the sweep: the other points run, then
        ``SweepError`` reports them. ``client`` is a Dask ``distributed.Client`` (or a
        ``concurrent.futures.Executor``); if it fails, the rest runs in this process,
        or with ``fallback=False`` ``DispatchError`` is raised. See docs/sweeps.md.
        """
        return sweeps.sweep(self._core, params, client, progress=progress, fallback=fallback)

    def isweep(
        self,
        params: Iterable[dict[str, Any]],
        client: Client | Executor | None = None,
        *,
        progress: bool = False,
        fallback: bool = True,
    ) -> Iterator[ModelT]:
        """``sweep`` as a generator: records in input order, memory bounded by a chunk.

        The input is read, validated, run and persisted a chunk at a time (a bad
        point stops the stream before anything of its chunk runs); the records of
        each chunk are yielded once it is persisted. Failed points yield nothing,
        and ``SweepError`` follows the last record. See docs/sweeps.md.
        """
        return sweeps.isweep(self._core, params, client, progress=progress, fallback=fallback)

    def failures(self) -> list[Failure]:
        """The recorded failures of points that have not succeeded since, newest first."""
        return self._core.index.failures()

    def delete(self, params: dict[str, Any], remove_file: bool = False) -> bool:
        """Delete the row of ``params`` (and its file if ``remove_file``); True if there was one."""
        core = self._core
        return core.delete(core.identify(params), remove_file=remove_file)

    # -- queries ---------------------------------------------------------------------------

    def find(self, **equals: Any) -> list[ModelT]:
        """Records whose columns equal ``equals`` (floats as ids round them), oldest first."""
        return query.find(self._core.index, equals)

    def count(self, **equals: Any) -> int:
        """How many rows ``find(**equals)`` would return."""
        return query.count(self._core.index, equals)

    def to_pandas(self, **equals: Any) -> pd.DataFrame:
        """The rows ``find(**equals)`` would return as a DataFrame (needs pandas)."""
        return query.to_pandas(self._core.index, equals)

    def to_xarray(
        self,
        dims: Sequence[str] | None = None,
        *,
        read: Callable[[str], Any] | Mapping[str, Callable[[str], Any]] | None = None,
        **where: Any,
    ) -> xr.Dataset:
        """The rows ``find(**where)`` would return as an N-dimensional Dataset (needs xarray).

        Its dimensions are ``dims`` (by default the parameter columns that vary), its
        coordinates their sorted values; custom_data values (and ``read(result_file)``
        of each row, if given) are its variables, NaN where the grid has no row. See
        docs/store.md.
        """
        return grid_view.to_xarray(self._core.index, where, dims=dims, read=read)

    # -- archives --------------------------------------------------------------------------

    def export(self, path: str | Path, **where: Any) -> ExportReport:
        """Write the rows ``find(**where)`` would return, and their files, to a new archive.

        ``path`` must not exist; a name ending in ``.gz``, ``.bz2`` or ``.xz`` is
        compressed. Rows whose result file is gone are left out and reported. See
        docs/archives.md.
        """
        core = self._core
        index = core.index
        conditions = query.conditions(
            index.table, where, owner=core.schema.name, dialect=index.dialect
        )
        return archive_export.export_archive(
            index, path, suffix=core.disk.suffix, conditions=conditions
        )

    def import_(self, path: str | Path, *, explicit_ids: bool = False) -> ImportReport:
        """Merge an archive into this store; a newer row already here is never overwritten.

        The whole archive is checked first (members, checksums, ids recomputed from
        the parameters, values against this model): if anything is wrong,
        ``ArchiveError`` says what and nothing is written. Rows with explicit ids
        are imported only with ``explicit_ids=True``. See docs/archives.md.
        """
        core = self._core
        plan = archive_import.check_import(
            core.index, path, suffix=core.disk.suffix, explicit_ids=explicit_ids
        )
        try:
            return archive_import.apply_import(plan, core.index, core.disk)
        finally:
            plan.close()
