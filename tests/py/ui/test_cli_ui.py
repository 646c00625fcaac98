"""``pgflow ui``: refusals before anything binds, and a real server answering."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from pgflow.cli import main


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["ui", *args], env=env or {})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    result = invoke("--host", host, env={"PGFLOW_UI_TOKEN": ""})
    assert result.exit_code == 1
    assert f"refusing to bind {host} without a token" in result.output
    assert "hint: pass --token (or set PGFLOW_UI_TOKEN)" in result.output
    assert "Traceback" not in result.output


def test_a_short_token_is_refused() -> None:
    result = invoke("--host", "0.0.0.0", "--token", "short")
    assert result.exit_code == 1
    assert "shorter than 16 characters" in result.output


def test_a_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "uvicorn" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    result = invoke()
    assert result.exit_code == 1
    assert "pgflow ui needs uvicorn, which are not installed" in result.output
    assert "hint: pip install 'pgflow-tools[ui]'" in result.output


@pytest.mark.db
def test_pgflow_ui_serves_the_dashboard(db: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PGFLOW_UI_TOKEN": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgflow", "ui", "--port", str(port), "--dsn", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"pgflow ui: http://127.0.0.1:{port}/  (read-only: no token)"
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.1)
        assert page.status_code == 200
        assert "<h1>Flows</h1>" in page.text
        assert page.headers["x-frame-options"] == "DENY"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
