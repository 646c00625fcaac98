"""A per-tenant concurrency limit with real `pgflow worker` processes.

Tenant A queues 200 runs of a step limited to 2 at once per tenant, then
tenant B queues 10; three workers (four tasks at once each) serve the flow.
A sampler reads pgflow.step_tasks all along: A never has more than 2 tasks
started at once, every run completes, and B's runs are all done while A still
has a backlog (B's tasks never queue behind A's).  No timing is asserted.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from worker_helpers import Workers, apply_spec, wait_until

pytestmark = pytest.mark.db

SPEC = "tests/py/worker/tenant_flows.py"
A_RUNS, B_RUNS, LIMIT = 200, 10, 2


class Sampler(threading.Thread):
    """Counts the started tasks of each tenant, as often as it can, until stopped."""

    def __init__(self, db: str) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.most: Counter[str] = Counter()
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.db, autocommit=True) as conn:
            while not self.done.is_set():
                rows = conn.execute(
                    "SELECT r.input->>'tenant', count(*) FROM pgflow.step_tasks AS t"
                    " JOIN pgflow.runs AS r ON r.run_id = t.run_id"
                    " WHERE t.flow_slug = 'wt_tenants' AND t.status = 'started'"
                    " GROUP BY 1"
                ).fetchall()
                for tenant, count in rows:
                    self.most[tenant] = max(self.most[tenant], count)
                self.samples += 1


def test_a_tenant_over_its_limit_does_not_hold_up_another(workers: Workers, db: str) -> None:
    apply_spec(db, SPEC)
    sampler = Sampler(db)
    sampler.start()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "SELECT pgflow.start_flow('wt_tenants', jsonb_build_object('tenant', 'A', 'n', n))"
            " FROM generate_series(1, %s) AS n",
            (A_RUNS,),
        )
        conn.execute(
            "SELECT pgflow.start_flow('wt_tenants', jsonb_build_object('tenant', 'B', 'n', n))"
            " FROM generate_series(1, %s) AS n",
            (B_RUNS,),
        )
    procs = [workers.start(db, "--concurrency", "4", spec=SPEC) for _ in range(3)]

    def counts() -> dict[tuple[str, str], int]:
        with psycopg.connect(db) as conn:
            rows: list[Any] = conn.execute(
                "SELECT input->>'tenant', status, count(*) FROM pgflow.runs"
                " WHERE flow_slug = 'wt_tenants' GROUP BY 1, 2"
            ).fetchall()
        return {(tenant, status): n for tenant, status, n in rows}

    try:
        wait_until(
            lambda: (
                counts().get(("A", "completed")) == A_RUNS
                and counts().get(("B", "completed")) == B_RUNS
            ),
            timeout=180,
            what="every run to complete",
        )
    finally:
        sampler.done.set()
        sampler.join(timeout=10)
    for proc in procs:
        assert proc.poll() is None, workers.output(proc)
    assert counts() == {("A", "completed"): A_RUNS, ("B", "completed"): B_RUNS}
    assert sampler.samples > 10
    # the limit held for A at every sample, and A did use its two slots
    assert sampler.most["A"] == LIMIT, sampler.most
    assert 1 <= sampler.most["B"] <= LIMIT, sampler.most
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgflow.runs AS a"
            " WHERE a.flow_slug = 'wt_tenants' AND a.input->>'tenant' = 'A'"
            "   AND a.completed_at > (SELECT max(b.completed_at) FROM pgflow.runs AS b"
            "                         WHERE b.flow_slug = 'wt_tenants'"
            "                           AND b.input->>'tenant' = 'B')"
        ).fetchone()
    assert row is not None
    # when B's last run completed, A still had a backlog: B never waited for A's runs
    assert row[0] > A_RUNS // 2, f"only {row[0]} of A's runs completed after B's last"
