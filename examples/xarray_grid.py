"""The logistic sweep as an xarray Dataset: one dimension per swept parameter.

The sweep of logistic_sweep.py (growth rate r times harvest rate h) is read
back with ``Store.to_xarray``: r and h become the dimensions, the parameters
that did not vary (K, n0, t_end, steps) scalar coordinates, the custom_data
values (final, harvest, settle_time, elapsed_seconds) variables, and the peak
of each saved trajectory, read from its result file, one more variable. The
plot is two lines of xarray: the sustained harvest over the grid, and the
settling time along h for a few growth rates.

    python examples/xarray_grid.py            # 1,000 points: ./results, ./db.sqlite3
    python examples/xarray_grid.py --small    # 12 points
    python examples/xarray_grid.py --out DIR  # the store and the plot in DIR

It shares its store with logistic_sweep.py: after that one ran, nothing runs here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from entropic import Store
from logistic_sweep import Harvest, grid, simulate, sweep_and_report

__all__ = ["main", "peak", "plot"]


def peak(path: str) -> float:
    """The largest population of one saved trajectory (row 1 of the .npy file)."""
    return float(np.load(path)[1].max())


def plot(ds: xr.Dataset, png: Path) -> None:
    """The sustained harvest over (r, h), and the settling time along h for a few r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ds["harvest"].plot.pcolormesh(ax=left, x="r", y="h", cmap="viridis")
    left.set_title("sustained harvest h N")
    rs = ds["r"].values
    ds["settle_time"].sel(r=rs[:: max(1, len(rs) // 4)]).plot.line(ax=right, x="h", hue="r")
    right.set_title("settling time")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 12-point grid instead of 1,000")
    parser.add_argument(
        "--out", type=Path, default=Path(), help="folder for results/, db.sqlite3 and the plot"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = Store(
        simulate,
        Harvest,
        results_dir=args.out / "results",
        file_suffix=".npy",
        db_url=f"sqlite:///{args.out / 'db.sqlite3'}",
    )
    points = grid(args.small)
    with store:
        _records, line = sweep_and_report(store, points)
        # Only this grid's rows (the store may hold others): filter on the fixed parameters.
        fixed = {key: points[0][key] for key in ("K", "n0", "t_end", "steps")}
        ds = store.to_xarray(read={"peak": peak}, **fixed)
    png = args.out / "xarray_grid.png"
    plot(ds, png)
    best = ds["harvest"].where(ds["harvest"] == ds["harvest"].max(), drop=True)
    print(line)
    print(
        f"dims {dict(ds.sizes)}; largest sustained harvest {float(ds['harvest'].max()):.1f} "
        f"at r={float(best['r'][0]):g}, h={float(best['h'][0]):g}; "
        f"highest peak {float(ds['peak'].max()):.1f}; plot: {png}"
    )


if __name__ == "__main__":
    main()
