"""What the benches share: entropic's log kept to warnings while they time."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def quiet() -> Iterator[None]:
    logger = logging.getLogger("entropic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
