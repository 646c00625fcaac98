"""The `workers` fixture: `pgflow worker` processes killed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from worker_helpers import Workers


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    try:
        yield w
    finally:
        w.stop_all()
