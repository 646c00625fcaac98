"""The short chaos run (`python -m chaos --short`) as a test: workers killed
with SIGKILL and PostgreSQL restarted (fast and immediate) under load, then
every invariant of chaos/checks.py checked from SQL."""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chaos.harness import SHORT, execute  # noqa: E402

pytestmark = pytest.mark.db


def test_short_chaos_run_keeps_every_invariant(pgflow_template: str) -> None:
    seed = random.randrange(1 << 30)
    workdir = Path(tempfile.mkdtemp(prefix="pgflow-chaos-"))
    outcome = execute(SHORT, seed, workdir)
    f = outcome.figures
    summary = (
        f"seed={seed} runs={f['runs']} tasks={f['tasks']} kills={f['kills']}"
        f" restarts={f['restarts']} lost={int(f['lost_runs']) + int(f['lost_tasks'])}"
        f" duplicates={f['duplicates']} worst_recovery={f['worst_recovery_s']} s"
        f" duration={outcome.duration:.0f} s"
    )
    details = "\n".join(
        f"{name}: {len(rows)} rows, e.g. {rows[:3]}" for name, rows in outcome.violations.items()
    )
    assert outcome.drained, f"runs still open after the drain ({summary}); logs in {workdir}"
    # the chaos phase ends at a deadline: a loaded machine gets fewer kills
    assert int(f["kills"]) >= 20 and f["restarts"] == SHORT.restarts, summary
    assert int(f["runs"]) > 0 and int(f["kills_holding_tasks"]) > 0, summary
    assert not outcome.violations, f"{summary}; evidence in {workdir}/evidence\n{details}"
    shutil.rmtree(workdir, ignore_errors=True)
