"""The compiled core as the tests see it: ``core`` is ``entropic._core``, or None when a
pure-Python run has not built it (any other failure to import it is an error)."""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["PURE_RUN", "core"]

#: Whether this run forces the pure-Python backend (``ENTROPIC_PURE_PYTHON=1``).
PURE_RUN = os.environ.get("ENTROPIC_PURE_PYTHON", "") not in ("", "0")

core: Any
try:
    core = importlib.import_module("entropic._core")
except ModuleNotFoundError as exc:  # pragma: no cover - only a pure-Python run may lack it
    if not PURE_RUN or exc.name != "entropic._core":
        raise
    core = None
