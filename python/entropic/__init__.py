"""entropic: a run cache for parameterised simulations."""

from importlib.metadata import PackageNotFoundError, version

from entropic.errors import ParamsDepthError, ParamsTypeError, PurePythonFallbackWarning
from entropic.hashing import canonical_json, hash_many, hash_params

try:
    __version__ = version("entropic")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ParamsDepthError",
    "ParamsTypeError",
    "PurePythonFallbackWarning",
    "__version__",
    "canonical_json",
    "hash_many",
    "hash_params",
]
