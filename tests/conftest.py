"""Shared fixtures: Hypothesis profiles and the databases every Store test runs against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: URL of a PostgreSQL server the tests may create databases on (set by .ci/run).
PG_URL = os.environ.get("ENTROPIC_TEST_PG_URL", "")
PG_SKIP_REASON = "PostgreSQL not configured: set ENTROPIC_TEST_PG_URL (bash .ci/run does)"


@pytest.fixture(autouse=True)
def _private_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder, so default paths (./results, db.sqlite3) stay private."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def pg_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database for one test and drop it afterwards."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    import sqlalchemy as sa

    name = f"entropic_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: an SQLite file, in-memory SQLite, and a real PostgreSQL database."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
    elif request.param == "sqlite-memory":
        yield "sqlite://"
    else:
        yield from pg_database()


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database several processes can open at once: an SQLite file or PostgreSQL."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        yield from pg_database()
