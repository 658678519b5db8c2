"""entropic: a run cache for parameterised simulations."""

from importlib.metadata import PackageNotFoundError, version

from entropic._storage.archive_export import ExportReport
from entropic._storage.archive_import import ImportReport
from entropic.errors import (
    ArchiveError,
    DispatchError,
    MissingResultError,
    ParamsDepthError,
    ParamsTypeError,
    PurePythonFallbackWarning,
    RemoteRunError,
    ReservedColumnError,
    ResultsDirError,
    SchemaDriftError,
    SweepError,
)
from entropic.grid import expand_grid
from entropic.hashing import canonical_json, hash_many, hash_params
from entropic.models import Base, Failure, Mapped, mapped_column
from entropic.store import Store

try:
    __version__ = version("entropic")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ArchiveError",
    "Base",
    "DispatchError",
    "ExportReport",
    "Failure",
    "ImportReport",
    "Mapped",
    "MissingResultError",
    "ParamsDepthError",
    "ParamsTypeError",
    "PurePythonFallbackWarning",
    "RemoteRunError",
    "ReservedColumnError",
    "ResultsDirError",
    "SchemaDriftError",
    "Store",
    "SweepError",
    "__version__",
    "canonical_json",
    "expand_grid",
    "hash_many",
    "hash_params",
    "mapped_column",
]
