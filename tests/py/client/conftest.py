"""Fixtures of the client tests: a flow, and calls made later from a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def greet(conn: Conn) -> str:
    """Flow ``greet``: one step ``hello``, one attempt (a failure fails the run)."""
    conn.execute("SELECT pgflow.create_flow('greet', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('greet', 'hello')")
    return "greet"


Later = Callable[..., None]


@pytest.fixture
def later() -> Iterator[Later]:
    """``later(delay, fn, *args, **kwargs)``: call fn in a thread after a delay (joined after)."""
    threads: list[threading.Thread] = []

    def schedule(delay: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            time.sleep(delay)
            fn(*args, **kwargs)

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)

    yield schedule
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
