"""Fixtures of the SLURM tests, and the rule that none of them may skip in CI.

With ``ENTROPIC_REQUIRE_SLURM=1`` (bash .ci/run sets it) a test here that skips
(no SLURM, no PostgreSQL, no dask-jobqueue) fails instead, with the skip's reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from ._slurm import Slurm, slurm_problem

REQUIRE = os.environ.get("ENTROPIC_REQUIRE_SLURM") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if REQUIRE and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"ENTROPIC_REQUIRE_SLURM=1, but this SLURM test skipped: {reason}"
    return report


@pytest.fixture(scope="session")
def _slurm_up() -> None:
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def slurm(_slurm_up: None) -> Iterator[Slurm]:
    """SLURM for one test; its jobs still queued or running at the end are cancelled."""
    cluster = Slurm()
    try:
        yield cluster
    finally:
        cluster.cancel_all()
