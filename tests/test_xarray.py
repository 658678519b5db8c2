"""Store.to_xarray: a grid sweep as an N-dimensional Dataset, on every database."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from entropic import Base, Mapped, Store, expand_grid

np = pytest.importorskip("numpy")
xr = pytest.importorskip("xarray")


class Grid(Base):
    __tablename__ = "xarray_grid"

    a: Mapped[int]
    b: Mapped[float]
    method: Mapped[str]


def runner(params: dict[str, Any]) -> None:
    a, b = params["a"], params["b"]
    Path(params["result_file"]).write_text(f"{a * b!r}\n{a} {b}\n")
    params["custom_data"].update(
        product=a * b,
        count=a,
        tag=f"a{a}",
        fit={"slope": b, "ok": a > 1},
        a=-a,  # the name of a column: kept as custom_data.a
    )


def first_line(path: str) -> float:
    return float(Path(path).read_text().splitlines()[0])


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Any:
    with Store(runner, Grid, tmp_path / "results", ".txt", db_url) as store:
        yield store


GRID = {"a": [3, 1, 2], "b": [0.5, 0.25], "method": ["rk4"]}


def test_a_full_grid_has_one_dimension_per_varying_column(store: Store[Grid]) -> None:
    store.sweep(expand_grid(GRID))
    ds = store.to_xarray(read=first_line)
    assert ds.sizes == {"a": 3, "b": 2}
    assert list(ds["product"].dims) == ["a", "b"]
    assert ds["a"].values.tolist() == [1, 2, 3]
    assert ds["b"].values.tolist() == [0.25, 0.5]
    assert ds["method"].item() == "rk4"  # constant: a scalar coordinate
    assert "method" not in ds.dims
    for a in (1, 2, 3):
        for b in (0.25, 0.5):
            point = ds.sel(a=a, b=b)
            assert point["product"].item() == a * b
            assert point["result"].item() == a * b
            assert point["tag"].item() == f"a{a}"
            assert point["fit.slope"].item() == b
            assert point["fit.ok"].item() == (a > 1)
            assert point["custom_data.a"].item() == -a
            record = store.retrieve({"a": a, "b": b, "method": "rk4"})
            assert record is not None
            assert point["id"].item() == record.id
            assert point["result_file"].item() == record.result_file
    assert ds["count"].dtype == np.int64  # whole numbers at every point stay ints
    assert ds["elapsed_seconds"].dtype == np.float64
    assert ds.attrs["entropic_table"] == "xarray_grid"


def test_missing_grid_points_are_nan(store: Store[Grid]) -> None:
    points = expand_grid(GRID)
    store.sweep(points[1:])
    gone = store.sweep([points[-1]])[0]
    Path(gone.result_file).unlink()
    ds = store.to_xarray(read={"value": first_line})
    missing = ds.sel(a=points[0]["a"], b=points[0]["b"])
    assert math.isnan(missing["product"].item())
    assert math.isnan(missing["count"].item())  # floats now, to hold the NaN
    assert math.isnan(missing["tag"].item())
    assert ds["count"].dtype == np.float64
    # A row whose result file is gone: its own values are there, what read gives is NaN.
    lost = ds.sel(a=gone.a, b=gone.b)
    assert lost["product"].item() == gone.a * gone.b
    assert math.isnan(lost["value"].item())
    assert int(ds["product"].isnull().sum()) == 1


def test_filters_and_given_dims(store: Store[Grid]) -> None:
    store.sweep(expand_grid(GRID))
    store.sweep(expand_grid({"a": [1], "b": [0.25], "method": ["euler"]}))
    ds = store.to_xarray(b=0.25, method="rk4")
    assert ds.sizes == {"a": 3}
    assert ds["b"].item() == 0.25
    wide = store.to_xarray(dims=["method", "a", "b"])
    assert wide.sizes == {"method": 2, "a": 3, "b": 2}
    assert int(wide["product"].notnull().sum()) == 7
    assert store.to_xarray(dims="a", b=0.5, method="rk4").sizes == {"a": 3}
    with pytest.raises(ValueError, match=r"fall on the same grid point .* differ in b"):
        store.to_xarray(dims=["a"], method="rk4")
    with pytest.raises(ValueError, match=r"dims 'c' are not parameter columns"):
        store.to_xarray(dims=["c"])
    with pytest.raises(ValueError, match="cannot filter on 'c'"):
        store.to_xarray(c=1)


def test_read_may_give_arrays_of_one_shape(store: Store[Grid]) -> None:
    store.sweep(expand_grid(GRID))

    def pair(path: str) -> Any:
        return np.array([float(x) for x in Path(path).read_text().splitlines()[1].split()])

    ds = store.to_xarray(read={"pair": pair})
    assert ds["pair"].dims == ("a", "b", "pair_dim_0")
    assert ds["pair"].sel(a=2, b=0.5).values.tolist() == [2.0, 0.5]
    with pytest.raises(TypeError, match="read must be a function"):
        store.to_xarray(read="first_line")  # type: ignore[arg-type]

    def ragged(path: str) -> Any:
        return np.zeros(int(float(Path(path).read_text().split()[1])))

    with pytest.raises(ValueError, match="values of different shapes"):
        store.to_xarray(read={"r": ragged})


def test_an_empty_selection_is_an_empty_dataset(store: Store[Grid]) -> None:
    assert store.to_xarray().sizes == {}
    assert store.to_xarray(dims=["a"]).sizes == {"a": 0}


def test_without_xarray_the_error_says_how_to_install_it(
    store: Store[Grid], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(ImportError, match=r"pip install entropic\[xarray\]"):
        store.to_xarray()
