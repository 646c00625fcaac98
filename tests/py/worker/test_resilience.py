"""The worker across database restarts and behind PgBouncer (transaction pooling)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from worker_helpers import Workers, apply_spec, start, wait_until

from pgflow.testing import Server
from pgflow.testing.cluster import Cluster, free_port

pytestmark = pytest.mark.db


def _all_finished(dsn: str, count: int) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM pgflow.runs"
            ).fetchone()
    except psycopg.OperationalError:
        return False
    return row == (count, count)


def _wait_quietly(check: Callable[[], bool], timeout: float) -> bool:
    try:
        wait_until(check, timeout, "")
    except AssertionError:
        return False
    return True


def test_runs_complete_across_database_restarts(workers: Workers) -> None:
    # synchronous_commit stays on: an immediate shutdown may lose the last
    # asynchronous commits, and the runs this test starts must survive it
    with Cluster(settings={"fsync": "off"}) as cluster:
        dsn = cluster.conninfo()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgflow")
        apply_spec(dsn)
        for n in range(1, 41):
            start(dsn, "wt_dag", json.dumps({"n": n}))
        proc = workers.start(dsn, "--concurrency", "4")
        time.sleep(1.0)
        cluster.restart("fast")
        time.sleep(1.0)
        for n in range(41, 61):
            start(dsn, "wt_dag", json.dumps({"n": n}))
        cluster.restart("immediate")
        finished = _wait_quietly(lambda: _all_finished(dsn, 60), 90)
        alive = proc.poll() is None
        proc.terminate()
        out = workers.finish(proc, timeout=30)
        assert finished, f"every run completes; worker output:\n{out[-5000:]}"
        assert alive, f"the worker survived both restarts:\n{out[-5000:]}"
        assert "reconnecting" in out
        with psycopg.connect(dsn) as conn:
            wrong = conn.execute(
                "SELECT count(*) FROM pgflow.runs"
                " WHERE output <> jsonb_build_object('total', jsonb_build_object("
                "   'sum', (SELECT sum(i * i) FROM generate_series(0, (input->>'n')::int - 1) i),"
                "   'count', (input->>'n')::int))"
            ).fetchone()
        assert wrong == (0,)


@pytest.fixture
def pgbouncer(pg_server: Server, db: str) -> Iterator[str]:
    """A PgBouncer in transaction pooling mode in front of the test database."""
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(exe).exists():
        pytest.fail("pgbouncer is not installed (make prereqs installs it)", pytrace=False)
    dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    tmp = Path(tempfile.mkdtemp(prefix="pgflow-bouncer-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    (tmp / "users.txt").write_text(f'"{pg_server.user}" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        f"""[databases]
{dbname} = host={pg_server.host} port={pg_server.port} dbname={dbname}
[pgbouncer]
listen_addr =
listen_port = {port}
unix_socket_dir = {tmp}
auth_type = trust
auth_file = {tmp}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 50
logfile = {tmp}/pgbouncer.log
pidfile = {tmp}/pgbouncer.pid
"""
    )
    for f in tmp.iterdir():
        if run_as:
            os.chown(f, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    proc = subprocess.Popen([*run_as, exe, str(tmp / "pgbouncer.ini")])
    dsn = psycopg.conninfo.make_conninfo(
        host=str(tmp), port=str(port), user=pg_server.user, dbname=dbname
    )
    try:
        wait_until(lambda: _connects(dsn), 10, "pgbouncer to accept connections")
        yield dsn
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _connects(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.mark.parametrize("flag", [[], ["--no-listen"]], ids=["detects", "told"])
def test_through_pgbouncer_in_transaction_mode_the_worker_polls(
    db: str, pgbouncer: str, workers: Workers, flag: list[str]
) -> None:
    apply_spec(db)
    runs = [start(pgbouncer, "wt_dag", json.dumps({"n": n})) for n in range(1, 11)]
    proc = workers.start(pgbouncer, "--concurrency", "4", *flag)
    wait_until(lambda: _all_finished(db, len(runs)), 60, "every run to complete")
    proc.terminate()
    out = workers.finish(proc, timeout=30)
    assert proc.returncode == 0, out
    detected = "LISTEN does not work through this connection" in out
    assert detected == (flag == []), out
