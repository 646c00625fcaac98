"""The JavaScript worker of examples/node-worker against a real database.

It serves the example ``order`` flow (examples/flows/order.yaml) with the
handlers of examples/node-worker/handlers.js, speaking only the SQL protocol
of docs/howto/workers.md.  Every step of every run must end with the output
the Python handlers (examples/handlers/order.py, called directly here) give
for the same input; a failing handler is retried through ``fail_task`` and
fails the run after ``max_attempts``; SIGTERM finishes the running tasks,
claims nothing more and exits 0.

Needs node and npm (``make prereqs`` installs them); the node modules are
installed with ``npm ci`` when missing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import load
from pgflow.spec.model import FlowSpec

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[3]
WORKER_DIR = ROOT / "examples" / "node-worker"
SPEC = "examples/flows/order.yaml"

Handler = Callable[[Any], Any]

# A worker whose price_line handler takes a second: tasks are still running when SIGTERM comes.
SLOW_WORKER = """
const { runWorker } = require('./worker');
const { order } = require('./handlers');
const slow = { ...order, price_line: (line) =>
  new Promise((resolve) => setTimeout(() => resolve(order.price_line(line)), 1000)) };
runWorker(['order'], { order: slow }, { concurrency: 4, pollMs: 200 })
  .then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
"""


def _cannot_run(reason: str) -> None:
    """Like the database fixtures: fail under PGFLOW_REQUIRE_DB or CI, else skip."""
    if os.environ.get("PGFLOW_REQUIRE_DB") or os.environ.get("CI"):
        pytest.fail(f"the node worker test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the worker's node modules installed (npm ci)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _cannot_run(
            "node and npm are missing: `make prereqs` installs them as root"
            " (apt-get install nodejs npm)"
        )
    assert node is not None and npm is not None
    pinned = json.loads((WORKER_DIR / "package.json").read_text())["dependencies"]["pg"]
    installed = WORKER_DIR / "node_modules" / "pg" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != pinned:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=WORKER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            output = done.stdout + done.stderr
            pytest.fail(f"npm ci in {WORKER_DIR} failed:\n{output}", pytrace=False)
    return node


@pytest.fixture(scope="module")
def order() -> tuple[FlowSpec, dict[str, Handler]]:
    """The order flow's spec and its Python handlers (imported from the repository root)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        (flow,) = load(SPEC)
        return flow.spec, flow.handlers()
    finally:
        os.chdir(cwd)


class NodeWorkers:
    """Starts JS worker processes on one database; none outlives the test."""

    def __init__(self, node: str, tmp_path: Path) -> None:
        self.node, self.dir = node, tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, db: str, *args: str, poll_ms: int = 200) -> subprocess.Popen[bytes]:
        params = conninfo_to_dict(db)
        env = os.environ | {"PGFLOW_POLL_INTERVAL_MS": str(poll_ms)}
        for key in ("host", "port", "user", "dbname"):
            if params.get(key):
                env["PGDATABASE" if key == "dbname" else f"PG{key.upper()}"] = str(params[key])
        log = self.dir / f"node-worker{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [self.node, *args], cwd=WORKER_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.procs if p is proc).read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes]) -> str:
        """SIGTERM, then the exit status must be 0; the whole output."""
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=15)
        out = self.output(proc)
        assert status == 0, f"worker exited with {status}:\n{out}"
        return out

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def workers(node: str, tmp_path: Path) -> Iterator[NodeWorkers]:
    started = NodeWorkers(node, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def apply_flow(db: str, spec: FlowSpec) -> None:
    """Apply the flow's migration, as a deployer does before starting workers."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(compile_flow(spec, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))


def start_runs(db: str, inputs: list[Any]) -> list[str]:
    """Start one run per input, all in one transaction."""
    sql = "SELECT run_id FROM pgflow.start_flow('order', %s::jsonb)"
    with psycopg.connect(db) as conn:
        return [
            str(row[0])
            for flow_input in inputs
            for row in conn.execute(sql, (json.dumps(flow_input),))
        ]


def query(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_finished(db: str, run_ids: list[str], timeout: float) -> None:
    wait_until(
        lambda: query(
            db,
            "SELECT count(*) = %s FROM pgflow.runs WHERE run_id = ANY(%s::uuid[])"
            " AND status <> 'started'",
            len(run_ids),
            run_ids,
        )[0][0],
        timeout,
        "the runs to finish",
    )


def python_outputs(
    spec: FlowSpec, handlers: dict[str, Handler], flow_input: Any, completed: set[str]
) -> dict[str, Any]:
    """What the Python handlers give, step by step, for the steps the engine ran."""
    outputs: dict[str, Any] = {}
    for step in spec.steps:
        if step.slug not in completed:
            continue
        handler = handlers[step.slug]
        if step.map:
            source = outputs[step.depends_on[0]] if step.depends_on else flow_input
            outputs[step.slug] = [handler(element) for element in source]
        else:
            deps = {dep: outputs[dep] for dep in step.depends_on if dep in outputs}
            outputs[step.slug] = handler({"run": flow_input} | deps)
    return outputs


def check_runs(
    db: str, order: tuple[FlowSpec, dict[str, Handler]], run_ids: list[str], inputs: list[Any]
) -> None:
    """Each run completed, each step with the Python handlers' output."""
    spec, handlers = order
    leaves = {s.slug for s in spec.steps} - {d for s in spec.steps for d in s.depends_on}
    for run_id, flow_input in zip(run_ids, inputs, strict=True):
        ((status, run_output, error),) = query(
            db, "SELECT status, output, error_message FROM pgflow.runs WHERE run_id = %s", run_id
        )
        assert (status, error) == ("completed", None), flow_input
        rows = query(
            db, "SELECT step_slug, status, output FROM pgflow.step_states WHERE run_id = %s", run_id
        )
        steps = {slug: (step_status, output) for slug, step_status, output in rows}
        completed = {slug for slug, (st, _) in steps.items() if st == "completed"}
        gold = flow_input.get("customer", {}).get("tier") == "gold"
        assert ("loyalty_bonus" in completed) == gold
        assert ("send_confirmation" in completed) == (flow_input.get("silent") is not True)
        expected = python_outputs(spec, handlers, flow_input, completed)
        assert {slug: steps[slug][1] for slug in completed} == expected, flow_input
        assert run_output == {slug: expected[slug] for slug in leaves & completed}


def orders(count: int) -> list[dict[str, Any]]:
    """Orders that exercise every handler: rounding, bulk lines, tiers, silence, odd skus."""
    fixed: list[dict[str, Any]] = [
        {
            "order_id": "A-1001",
            "customer": {"email": "ada@example.com", "tier": "gold"},
            "items": [
                {"sku": " book-1 ", "qty": 2, "unit_price": "12.50"},
                {"sku": "pen-7", "qty": 10, "unit_price": "1.99"},
            ],
        },
        {
            "order_id": "A-1002",
            "customer": {"email": "bob@example.com", "tier": "silver"},
            "silent": True,
            "items": [
                {"sku": "café-1", "qty": 3, "unit_price": "0.125"},
                {"sku": "mug", "qty": 1, "unit_price": "0.135"},
                {"sku": "ink", "qty": 12, "unit_price": 12.5},
                {"sku": 42, "qty": 1, "unit_price": 3},
                {"sku": "big", "qty": 1, "unit_price": "1e1"},
                {"sku": "free", "qty": 1, "unit_price": "-0"},
            ],
        },
        {"items": [{"sku": "x", "qty": 1, "unit_price": ".5"}]},  # no order_id, no customer
    ]
    rng = random.Random(20260105)
    generated = [
        {
            "order_id": f"R-{n}",
            "customer": {"email": f"c{n}@example.com", "tier": rng.choice(["gold", "silver"])},
            "silent": rng.random() < 0.3,
            "items": [
                {
                    "sku": f"sku-{rng.randrange(1000)}",
                    "qty": rng.randrange(1, 25),
                    "unit_price": f"{rng.randrange(0, 10000) / 1000:.3f}",
                }
                for _ in range(rng.randrange(1, 12))
            ],
        }
        for n in range(count - len(fixed))
    ]
    return fixed + generated


def idle_marks(db: str) -> int:
    """Sessions marked idle by pgflow.worker_idle in this database."""
    return int(
        query(
            db,
            # the marks are advisory locks keyed (1885824631, <flow>): see sql-api.md
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1885824631"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )[0][0]
    )


def test_runs_give_the_outputs_of_the_python_handlers(
    db: str, order: tuple[FlowSpec, dict[str, Handler]], workers: NodeWorkers
) -> None:
    apply_flow(db, order[0])
    # A fallback poll of a minute: every claim below must come from a LISTEN wake-up
    # (the runs start after the worker went idle) or from a finished task.
    proc = workers.start(db, "worker.js", "order", poll_ms=60_000)
    wait_until(lambda: idle_marks(db) or proc.poll() is not None, 10, "the worker to go idle")
    assert proc.poll() is None, workers.output(proc)
    inputs = orders(24)
    run_ids = start_runs(db, inputs)
    wait_finished(db, run_ids, 20)
    check_runs(db, order, run_ids, inputs)
    out = workers.stop(proc)
    tasks = query(db, "SELECT count(*) FROM pgflow.step_tasks")[0][0]
    assert out.rstrip().endswith(f"stopped: {tasks} task(s) completed, 0 failed"), out
    assert "Warning" not in out, out  # e.g. pg's deprecation of overlapping queries
    assert query(db, "SELECT stopped_at IS NOT NULL, pid FROM pgflow.workers") == [(True, proc.pid)]


def test_a_failing_handler_is_retried_then_fails_the_run(
    db: str, order: tuple[FlowSpec, dict[str, Handler]], workers: NodeWorkers
) -> None:
    spec, handlers = order
    apply_flow(db, spec)
    # validate_order has max_attempts 1 in the spec; give it 3 (a tunable, changed in place).
    query(
        db,
        "SELECT step_slug FROM pgflow.add_step(flow_slug => 'order',"
        " step_slug => 'validate_order', max_attempts => 3)",
    )
    bad = [
        {"items": []},
        {"items": [{"sku": "x", "qty": "2", "unit_price": "1"}]},
        {"items": [{"sku": "pen", "qty": 1, "unit_price": "abc"}]},
        {"items": [{"sku": "pen", "qty": 1}]},
    ]
    good = orders(3)[:1]
    run_ids = start_runs(db, bad + good)
    proc = workers.start(db, "worker.js")  # a retry sends no wake-up: the fallback poll finds it
    wait_finished(db, run_ids, 15)
    for run_id, flow_input in zip(run_ids[: len(bad)], bad, strict=True):
        with pytest.raises(ValueError) as raised:
            handlers["validate_order"]({"run": flow_input})
        error = f"ValueError: {raised.value}"
        assert query(
            db, "SELECT status, error_message FROM pgflow.runs WHERE run_id = %s", run_id
        ) == [("failed", f'step "validate_order" failed: {error}')]
        assert query(
            db,
            "SELECT status, attempts_count, error_message FROM pgflow.step_tasks"
            " WHERE run_id = %s AND step_slug = 'validate_order'",
            run_id,
        ) == [("failed", 3, error)]
    check_runs(db, order, run_ids[len(bad) :], good)
    out = workers.stop(proc)
    for attempt in (1, 2, 3):
        assert out.count(f'"attempt":{attempt}}}: ValueError: ') == len(bad), out
    assert f"{len(bad) * 3} failed" in out


def test_sigterm_finishes_the_running_tasks_claims_nothing_more_and_exits_0(
    db: str, order: tuple[FlowSpec, dict[str, Handler]], workers: NodeWorkers
) -> None:
    apply_flow(db, order[0])
    inputs = orders(6)
    run_ids = start_runs(db, inputs)
    slow = workers.start(db, "-e", SLOW_WORKER)

    def running() -> list[tuple[Any, ...]]:
        return query(
            db,
            "SELECT run_id, task_index FROM pgflow.step_tasks"
            " WHERE step_slug = 'price_line' AND status = 'started'",
        )

    in_flight = wait_until(running, 10, "price_line tasks to be running")
    out = workers.stop(slow)
    assert "SIGTERM: claiming nothing more" in out
    for run_id, task_index in in_flight:
        assert query(
            db,
            "SELECT status FROM pgflow.step_tasks"
            " WHERE run_id = %s AND step_slug = 'price_line' AND task_index = %s",
            run_id,
            task_index,
        ) == [("completed",)], "a task running at SIGTERM was finished and reported"
    assert query(db, "SELECT count(*) FROM pgflow.step_tasks WHERE status = 'started'") == [(0,)]
    # nothing was claimed after the signal: no total task (claimable only once its
    # price_line tasks finish) has been attempted
    assert query(
        db,
        "SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'total' AND attempts_count > 0",
    ) == [(0,)]
    assert query(db, "SELECT count(*) FROM pgflow.runs WHERE status = 'completed'") == [(0,)]
    # another worker finishes the runs, with the same outputs
    proc = workers.start(db, "worker.js")
    wait_finished(db, run_ids, 15)
    check_runs(db, order, run_ids, inputs)
    workers.stop(proc)


def test_a_flow_it_cannot_serve_stops_the_worker_at_start_up(
    db: str, order: tuple[FlowSpec, dict[str, Handler]], workers: NodeWorkers
) -> None:
    proc = workers.start(db, "worker.js", "order")
    assert proc.wait(timeout=15) == 1
    out = workers.output(proc)
    assert 'error: flow "order" does not exist: apply its migration first' in out
    # a step with a heartbeat needs extend_leases, which this worker does not call
    apply_flow(db, order[0])
    query(
        db,
        "SELECT step_slug FROM pgflow.add_step(flow_slug => 'order', step_slug => 'total',"
        " deps_slugs => '{price_line,reserve_stock}', heartbeat => 5)",
    )
    proc = workers.start(db, "worker.js", "order")
    assert proc.wait(timeout=15) == 1
    out = workers.output(proc)
    assert 'error: step "total" of flow "order" has a heartbeat' in out
