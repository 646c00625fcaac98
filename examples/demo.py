"""`make demo`: the example "order" flow, end to end, on a throwaway cluster.

Run by `make demo` inside `python -m pgflow.testing.cluster run --` (PGHOST etc. point
at the throwaway cluster).  It creates a database with the extension, builds
the flow's migration with `pgflow-build` and applies it, starts two `pgflow
worker` processes, starts 100 orders, shows their progress from the
pgflow_events channel, prints one run as a tree, and stops the workers with
SIGTERM.

With ``PGFLOW_DEMO_UI=1`` (``make demo UI=1``) it then serves ``pgflow ui``
on the same throwaway cluster at http://127.0.0.1:8080/ (or the port in
``PGFLOW_DEMO_UI_PORT``; a free one when that one is taken) until Ctrl-C;
the cluster goes when the demo exits.  ``PGFLOW_DEMO_UI_ONCE=1`` asks the
dashboard for its flows page once and stops instead of waiting (what the
test of this does).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgflow.cli.render import render_run
from pgflow.db.client import get_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPEC = "examples/flows/order.yaml"
DATABASE = "pgflow_demo"
RUNS = 100
SKUS = ("BOOK-1", "PEN-7", "MUG-3", "LAMP-2", "DESK-9", "CHAIR-4")


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def order(number: int, rng: random.Random) -> dict[str, Any]:
    items = [
        {
            "sku": rng.choice(SKUS),
            "qty": rng.choice((1, 2, 3, 12)),
            "unit_price": f"{rng.randint(2, 90)}.{rng.choice(('00', '50', '99'))}",
        }
        for _ in range(rng.randint(1, 4))
    ]
    return {
        "order_id": f"A-{1000 + number}",
        "customer": {
            "email": f"customer{number}@example.com",
            "tier": rng.choice(("gold", "silver", "bronze")),
        },
        "items": items,
        "silent": number % 10 == 0,
    }


def progress(done: int, total: int, failed: int, started: float) -> None:
    width = 40
    filled = width * done // total
    bar = "#" * filled + "-" * (width - filled)
    rate = done / max(time.monotonic() - started, 1e-6)
    line = f"\r    [{bar}] {done:3d}/{total} runs finished ({failed} failed)  {rate:5.1f} runs/s"
    print(line, end="", flush=True)


def _port(wanted: int) -> int:
    """``wanted`` when it is free on 127.0.0.1, else a free port the system picks."""
    for port in (wanted, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def serve_ui(dsn: str, once: bool, port: int = 8080, flow: str = "order") -> int:
    """Serve ``pgflow ui`` on 127.0.0.1 until Ctrl-C (``once``: one GET of its flows page).

    Exits 0 when the dashboard answered (and, with ``once``, its flows page
    lists ``flow``); 1 when it did not start.
    """
    port = _port(port)
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [str(BIN / "pgflow"), "ui", "--dsn", dsn, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                print(f"pgflow ui exited with {server.returncode}", file=sys.stderr)
                return 1
            try:
                status, body = _get(url)
                break
            except OSError:
                if time.monotonic() > deadline:
                    print(f"pgflow ui did not answer at {url} within 30 s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        if once:
            ok = status == 200 and f'data-flow="{flow}"' in body
            say(f"dashboard at {url} answered {status}" + ("" if ok else " without the flow"))
            return 0 if ok else 1
        say(f"dashboard: {url}  (Ctrl-C stops it and the throwaway cluster)")
        try:
            server.wait()
        except KeyboardInterrupt:
            print()
        return 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> int:
    admin = psycopg.connect(dbname="postgres", autocommit=True)
    admin.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
    )
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    dsn = psycopg.conninfo.make_conninfo(dbname=DATABASE)
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE EXTENSION pgflow")
    version = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'pgflow'"
    ).fetchone()
    say(f"database {DATABASE} with pgflow {version[0] if version else '?'}")

    workdir = Path(tempfile.mkdtemp(prefix="pgflow-demo-"))
    build = subprocess.run(
        [str(BIN / "pgflow-build"), SPEC, "--out-dir", str(workdir / "migrations")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        print(build.stdout + build.stderr, file=sys.stderr)
        return 1
    migration = next((workdir / "migrations").glob("*_create_order_flow.sql"))
    say(f"pgflow-build {SPEC} -> {migration.name}")
    conn.execute(migration.read_text())
    say("migration applied: flow 'order' with 6 steps (2 maps, 1 condition)")

    logs = [workdir / f"worker{i}.log" for i in (1, 2)]
    workers = [
        subprocess.Popen(
            [str(BIN / "pgflow"), "worker", SPEC, "--dsn", dsn, "--concurrency", "8"],
            cwd=ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    say(f"starting 2 workers (pids {workers[0].pid}, {workers[1].pid}; logs in {workdir})")
    ready = time.monotonic() + 30
    while time.monotonic() < ready and all(w.poll() is None for w in workers):
        live = conn.execute(
            "SELECT count(*) FROM pgflow.workers WHERE stopped_at IS NULL"
        ).fetchone()
        if live and live[0] == len(workers):
            break
        time.sleep(0.1)
    say("workers registered in pgflow.workers and listening")

    events = psycopg.connect(dsn, autocommit=True)
    events.execute("LISTEN pgflow_events")
    events.execute("SELECT pgflow.listen_events()")
    rng = random.Random(7)
    started = time.monotonic()
    run_ids = []
    with conn.transaction():
        for number in range(RUNS):
            row = conn.execute(
                "SELECT run_id FROM pgflow.start_flow('order', %s::jsonb)",
                (json.dumps(order(number, rng)),),
            ).fetchone()
            assert row is not None
            run_ids.append(str(row[0]))
    say(f"started {RUNS} runs of 'order'")

    finished: dict[str, str] = {}
    deadline = time.monotonic() + 120
    shown = -1
    while len(finished) < RUNS and time.monotonic() < deadline:
        for note in events.notifies(timeout=0.5):
            event = json.loads(note.payload)
            if event["event"] in ("run:completed", "run:failed"):
                finished[event["run_id"]] = event["status"]
            if len(finished) == RUNS:
                break
        if len(finished) != shown:
            shown = len(finished)
            progress(shown, RUNS, list(finished.values()).count("failed"), started)
        if any(w.poll() is not None for w in workers):
            break
    print()
    elapsed = time.monotonic() - started

    for w in workers:
        w.send_signal(signal.SIGTERM)
    codes = [w.wait(timeout=60) for w in workers]
    say(f"workers stopped with SIGTERM (exit codes {codes[0]} and {codes[1]})")

    if len(finished) < RUNS:
        print(f"only {len(finished)} of {RUNS} runs finished; worker logs:", file=sys.stderr)
        for log in logs:
            print(log.read_text()[-3000:], file=sys.stderr)
        return 1
    tasks = conn.execute(
        "SELECT count(*) FROM pgflow.step_tasks WHERE run_id = ANY(%s::uuid[])", (run_ids,)
    ).fetchone()
    failed = list(finished.values()).count("failed")
    say(
        f"{RUNS - failed} runs completed, {failed} failed, {tasks[0] if tasks else 0} tasks"
        f" in {elapsed:.1f} s"
    )
    gold = next(
        r
        for r in run_ids
        if (run := get_run(conn, r)) and run["input"]["customer"]["tier"] == "gold"
    )
    say("one run, as `pgflow status RUN_ID` shows it:")
    run = get_run(conn, gold)
    assert run is not None
    print(render_run(run))
    code = 0 if failed == 0 else 1
    if os.environ.get("PGFLOW_DEMO_UI") == "1":
        conn.close()
        events.close()
        port = int(os.environ.get("PGFLOW_DEMO_UI_PORT") or 8080)
        served = serve_ui(dsn, os.environ.get("PGFLOW_DEMO_UI_ONCE") == "1", port)
        code = code or served
    return code


if __name__ == "__main__":
    sys.exit(main())
