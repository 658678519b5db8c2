"""expand_grid: the full product in itertools.product order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from entropic import expand_grid


def test_product_in_itertools_order() -> None:
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2], "c": ["x"]}
    expected = [
        {"a": a, "b": b, "c": c} for a, b, c in itertools.product([1, 2, 3], [0.1, 0.2], ["x"])
    ]
    assert expand_grid(grid) == expected
    assert expand_grid(grid)[:3] == [
        {"a": 1, "b": 0.1, "c": "x"},
        {"a": 1, "b": 0.2, "c": "x"},
        {"a": 2, "b": 0.1, "c": "x"},
    ]


def test_empty_axis_gives_no_points() -> None:
    assert expand_grid({"a": [1, 2], "b": []}) == []


def test_no_axes_gives_one_empty_point() -> None:
    assert expand_grid({}) == [{}]


def test_tuples_and_ranges_are_axes_and_values_are_kept_as_given() -> None:
    nested = {"k": 1}
    points = expand_grid({"a": range(2), "b": ((1, 2), nested)})
    assert points == [
        {"a": 0, "b": (1, 2)},
        {"a": 0, "b": {"k": 1}},
        {"a": 1, "b": (1, 2)},
        {"a": 1, "b": {"k": 1}},
    ]
    assert points[1]["b"] is nested


@pytest.mark.parametrize("bad", ["abc", 3, 0.5, None, {1, 2}, b"ab"])
def test_an_axis_that_is_not_a_list_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"grid\['b'\].*not a list.*wrap a single value"):
        expand_grid({"a": [1], "b": bad})


def test_a_grid_that_is_not_a_dict_is_refused() -> None:
    with pytest.raises(TypeError, match="dict of key"):
        expand_grid([("a", [1])])  # type: ignore[arg-type]
