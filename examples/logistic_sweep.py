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
import itertools
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


def _cell_edges(centres: Sequence[float]) -> list[float]:
    """Edges of the cells centred on sorted grid values: midpoints, half a step past the ends."""
    if len(centres) == 1:
        return [centres[0] - 0.5, centres[0] + 0.5]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(centres)]
    return [2 * centres[0] - mids[0], *mids, 2 * centres[-1] - mids[-1]]


def _spread(ys: Sequence[float], gap: float) -> list[float]:
    """Heights near ``ys``, in their order, at least ``gap`` apart: labels that never overlap."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [0.0] * len(ys)
    floor = -np.inf
    for i in order:
        placed[i] = max(ys[i], floor + gap)
        floor = placed[i]
    return placed


def plot(records: Sequence[Harvest], png: Path) -> None:
    """A few trajectories at one growth rate, and the sustained harvest over the (r, h) grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted({rec.r for rec in records})
    hs = sorted({rec.h for rec in records})
    harvest = np.full((len(hs), len(rs)), np.nan)
    for rec in records:
        harvest[hs.index(rec.h), rs.index(rec.r)] = rec.custom_data["harvest"]

    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1, 1.15]}
    )
    first = records[0]
    fig.suptitle(
        rf"Logistic growth under harvesting, $\mathrm{{d}}N/\mathrm{{d}}t = rN\,(1 - N/K) - hN$"
        rf" ($K = {first.K:g}$, $N_0 = {first.n0:g}$)"
    )

    # Left: each trajectory labelled at its end, so no legend covers the plateaus.
    middle = rs[len(rs) // 2]
    at_middle = sorted((rec for rec in records if rec.r == middle), key=lambda rec: rec.h)
    shown = at_middle[:: max(1, len(at_middle) // 6)]
    finals = []
    for rec in shown:
        t, y = np.load(rec.result_file)
        (line,) = left.plot(t, y, linewidth=1.6)
        finals.append((float(t[-1]), float(y[-1]), line.get_color(), rec.h))
    left.set(
        xlabel="time t",
        ylabel="population N",
        title=f"Trajectories at r = {middle:.2f}, one per harvest rate h",
    )
    t_end = max(f[0] for f in finals)
    left.set_xlim(-0.02 * t_end, 1.13 * t_end)  # room on the right for the labels
    low, high = left.get_ylim()
    heights = _spread([f[1] for f in finals], 0.055 * (high - low))
    for (_, _, colour, h), y_label in zip(finals, heights, strict=True):
        left.text(1.015 * t_end, y_label, f"h = {h:g}", color=colour, fontsize="small", va="center")

    # Right: one cell per grid point, centred on its (r, h); pcolormesh takes the cell edges.
    r_edges, h_edges = _cell_edges(rs), _cell_edges(hs)
    mesh = right.pcolormesh(r_edges, h_edges, harvest, cmap="viridis", shading="flat")
    r_line = np.array([max(r_edges[0], 0.0), r_edges[-1]])  # rates are not negative
    right.plot(r_line, r_line, "w--", linewidth=1.2, label="h = r: collapse")
    right.plot(r_line, r_line / 2, "w:", linewidth=1.4, label="h = r/2: best harvest")
    right.axvline(middle, color="0.85", linewidth=0.8, label=f"r = {middle:.2f}: left panel")
    right.set(
        xlabel="growth rate r",
        ylabel="harvest rate h",
        title="Sustained harvest once the population has settled",
        xlim=(r_edges[0], r_edges[-1]),
        ylim=(h_edges[0], h_edges[-1]),
    )
    # Above h = r every population dies out: nothing to see there but the legend.
    right.legend(fontsize="small", loc="upper left", framealpha=0.85)
    bar = fig.colorbar(mesh, ax=right)
    bar.set_label("sustained harvest h N (individuals per unit time)")
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
