"""Logistic growth under harvesting, swept over a grid of growth and harvest rates.

A population grows as dN/dt = r N (1 - N/K) - h N: logistic growth at rate r up
to the carrying capacity K, harvested at rate h. Each run integrates one (r, h)
pair with fourth-order Runge-Kutta and saves the trajectory as a .npy file; the
sustained harvest h N (what a fishery would land each year once the population
settles) is kept in the row's custom_data. The plot shows a few trajectories
and the sustained harvest over the whole grid.

    python examples/logistic_sweep.py            # 1,000 points: ./results, ./db.sqlite3
    python examples/logistic_sweep.py --small    # 12 points, for a quick look
    python examples/logistic_sweep.py --out DIR  # the store and the plot in DIR

Run it twice: the second run finds every point in the store and runs nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entropic import Base, Mapped, Store, SweepError, expand_grid

__all__ = ["Harvest", "grid", "main", "plot", "simulate", "sweep_and_report"]


class Harvest(Base):
    """One run: the parameters are the columns, the trajectory is the result file."""

    __tablename__ = "logistic_harvest"

    r: Mapped[float]  # intrinsic growth rate, per unit time
    h: Mapped[float]  # harvest rate, the fraction of the population taken per unit time
    K: Mapped[float]  # carrying capacity
    n0: Mapped[float]  # initial population
    t_end: Mapped[float]
    steps: Mapped[int]


def simulate(params: dict[str, Any]) -> None:
    """The runner: integrate one trajectory, save it, and note what it settled to."""
    r, h, K = float(params["r"]), float(params["h"]), float(params["K"])
    steps = int(params["steps"])
    dt = float(params["t_end"]) / steps

    def rate(n: float) -> float:
        return r * n * (1.0 - n / K) - h * n

    n = float(params["n0"])
    path = [n]
    for _ in range(steps):
        k1 = rate(n)
        k2 = rate(n + 0.5 * dt * k1)
        k3 = rate(n + 0.5 * dt * k2)
        k4 = rate(n + dt * k3)
        n += dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        path.append(n)
    t = np.linspace(0.0, params["t_end"], steps + 1)
    y = np.asarray(path)
    np.save(params["result_file"], np.stack([t, y]))
    final = float(y[-1])
    # Settling time: from then on the population stays within 1% of K of its final value.
    outside = np.nonzero(np.abs(y - final) > 0.01 * K)[0]
    settle = float(t[outside[-1] + 1]) if outside.size else 0.0
    params["custom_data"].update(final=final, harvest=h * final, settle_time=settle)


def grid(small: bool) -> list[dict[str, Any]]:
    """40 growth rates x 25 harvest rates (1,000 points), or 4 x 3 with ``small``."""
    rs = np.linspace(0.1, 2.0, 4 if small else 40)
    hs = np.linspace(0.0, 1.2, 3 if small else 25)
    return expand_grid(
        {
            "r": [round(float(x), 6) for x in rs],
            "h": [round(float(x), 6) for x in hs],
            "K": [100.0],
            "n0": [5.0],
            "t_end": [40.0],
            "steps": [400],
        }
    )


def sweep_and_report(
    store: Store[Harvest], points: list[dict[str, Any]], client: Any = None
) -> tuple[list[Harvest], str]:
    """Sweep ``points`` (on ``client`` if given) and return the records and a summary line."""
    before = store.count()
    start = time.perf_counter()
    failed = 0
    try:
        records = store.sweep(points, client=client, progress=True)
    except SweepError as err:
        # The other points ran and were kept; sweeping again retries only the failures.
        records, failed = err.records, len(err.failures)
    elapsed = time.perf_counter() - start
    ran = store.count() - before
    line = (
        f"points {len(points)}, cached {len(records) - ran}, ran {ran}, failed {failed}, "
        f"time {elapsed:.2f} s"
    )
    return records, line


def plot(records: Sequence[Harvest], png: Path) -> None:
    """A few trajectories, and the sustained harvest over the (r, h) grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted({rec.r for rec in records})
    hs = sorted({rec.h for rec in records})
    harvest = np.full((len(hs), len(rs)), np.nan)
    for rec in records:
        harvest[hs.index(rec.h), rs.index(rec.r)] = rec.custom_data["harvest"]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    middle = rs[len(rs) // 2]
    shown = sorted((rec for rec in records if rec.r == middle), key=lambda rec: rec.h)
    for rec in shown[:: max(1, len(shown) // 6)]:
        t, y = np.load(rec.result_file)
        left.plot(t, y, label=f"h = {rec.h:g}")
    left.set(xlabel="time", ylabel="population N", title=f"trajectories at r = {middle:.2f}")
    left.legend(fontsize="small", loc="center right")
    image = right.imshow(
        harvest,
        origin="lower",
        aspect="auto",
        extent=(rs[0], rs[-1], hs[0], hs[-1]),
        cmap="viridis",
    )
    right.plot(rs, [r for r in rs], "w--", linewidth=1, label="h = r: collapse")
    right.set(
        xlabel="growth rate r",
        ylabel="harvest rate h",
        title="sustained harvest h N",
        ylim=(hs[0], hs[-1]),
    )
    right.legend(fontsize="small", loc="upper left")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 12-point grid instead of 1,000")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(),
        help="folder for results/, db.sqlite3 and logistic.png (default: here, where a "
        "Store with default arguments keeps them)",
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
    with store:
        records, line = sweep_and_report(store, grid(args.small))
        png = args.out / "logistic.png"
        plot(records, png)
        best = max(records, key=lambda rec: rec.custom_data["harvest"])
    print(line)
    print(
        f"largest sustained harvest {best.custom_data['harvest']:.1f} at r={best.r:g}, "
        f"h={best.h:g}; plot: {png}"
    )


if __name__ == "__main__":
    main()
