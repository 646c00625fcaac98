"""`make demo UI=1`: the demo serves pgflow ui on its cluster (PGFLOW_DEMO_UI_ONCE: one GET)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.db

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo.py"


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgflow_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_serves_the_dashboard_of_its_database(client_dsn: str, pipe: str) -> None:
    demo = _demo()
    assert demo.serve_ui(client_dsn, once=True, port=0, flow=pipe) == 0
    # the same page without that flow on it: the check of the answer is real
    assert demo.serve_ui(client_dsn, once=True, port=0, flow="no_such_flow") == 1


def test_a_taken_port_gives_way_to_a_free_one() -> None:
    demo = _demo()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port = demo._port(busy)
    assert port not in (busy, 0)


def test_make_demo_passes_ui_1_to_the_script() -> None:
    makefile = (DEMO.parents[1] / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "PGFLOW_DEMO_UI=$(if $(filter 1,$(UI)),1,)" in recipe
    assert "examples/demo.py" in recipe
