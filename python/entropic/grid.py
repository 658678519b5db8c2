"""``expand_grid``: the full Cartesian product of a grid, the common input of a sweep."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["expand_grid"]


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Expand ``{key: [values]}`` into one dict per combination, in ``itertools.product`` order."""
    if not isinstance(grid, Mapping):
        raise TypeError(
            f"expand_grid takes a dict of key -> list of values, not {type(grid).__name__}"
        )
    axes: list[Sequence[Any]] = []
    for key, values in grid.items():
        # A str is a Sequence too, but expanding "abc" into "a", "b", "c" is never meant.
        if isinstance(values, (str, bytes, bytearray)) or not isinstance(values, Sequence):
            raise TypeError(
                f"grid[{key!r}] = {values!r} is not a list of candidate values; "
                f"wrap a single value in a list: {{{key!r}: [{values!r}]}}"
            )
        axes.append(values)
    keys = list(grid)
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*axes)]
