"""The 3-column grid the sweep benches share: n x 10 step sizes x 10 method names."""

from __future__ import annotations

from typing import Any

from entropic import expand_grid


def grid(size: int) -> list[dict[str, Any]]:
    """``size`` points (a multiple of 100) of n, dt and method."""
    methods = [f"m{i}" for i in range(10)]
    dts = [round(0.001 * (i + 1), 3) for i in range(10)]
    return expand_grid({"n": list(range(size // 100)), "dt": dts, "method": methods})
