"""Helpers for tests that run real worker processes (imported by their tests)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import load

ROOT = Path(__file__).resolve().parents[3]
SPEC = "tests/py/worker/flows.py"
PGFLOW = str(Path(sys.executable).with_name("pgflow"))


def apply_spec(conninfo: str, spec: str = SPEC) -> None:
    """Compile every flow of a spec and run the migrations, as a deployer would."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        flows = load(spec)
    finally:
        os.chdir(cwd)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for flow in flows:
            conn.execute(compile_flow(flow.spec, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Workers:
    """Starts `pgflow worker` processes and makes sure none outlives the test.

    Output goes to a file (a pipe nobody reads would fill up and block the
    worker's logging); :meth:`finish` waits for a process and returns it.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="pgflow-workers-"))

    def start(self, conninfo: str, *args: str, spec: str = SPEC) -> subprocess.Popen[bytes]:
        log = self._dir / f"worker{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [PGFLOW, "worker", spec, "--dsn", conninfo, "--poll-interval", "0.2", *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
        """Wait for the process to exit; its whole output."""
        proc.wait(timeout=timeout)
        return self.output(proc)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


def run_status(conninfo: str, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT status, output, error_message FROM pgflow.runs WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


def start(conninfo: str, flow: str, flow_input: str) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT run_id FROM pgflow.start_flow(%s, %s::jsonb)", (flow, flow_input)
        ).fetchone()
    assert row is not None
    return str(row[0])
