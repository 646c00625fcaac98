"""README.md's 60-second tour works when followed literally.

The shell block under "## 60-second tour" is taken from README.md itself and
run line by line by bash, in an empty directory standing for a fresh clone
(its ``.venv`` is this repository's), against the test server with only
``PGHOST``/``PGPORT``/``PGUSER`` set, as a reader's shell would have them.
The one line not run is ``make venv install``: ``make test`` has just done
both (and installing into the system PostgreSQL is not a test's business);
the test checks that it names real Makefile targets.  The script runs under
``set -euo pipefail`` and ends with ``wait`` (the worker has exited).  The YAML shown after
it must be what ``pgflow new`` writes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from pgflow.testing import Server, admin_connect

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
TOUR_DB = "pgflow_tour"


def tour_section() -> str:
    start = README.index("## 60-second tour")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def first_block(text: str, lang: str) -> str:
    match = re.search(rf"^```{lang}\n(.*?)^```$", text, re.M | re.S)
    assert match, f"no ```{lang} block in the tour"
    return match.group(1)


def test_readme_starts_with_make_demo_and_make_test() -> None:
    block = first_block(README, "sh")
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert README.index("```sh") < README.index("## ")


def test_the_tour_yaml_is_what_pgflow_new_writes(tmp_path: Path) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "pgflow"), "new", "greet", "--dir", "flows"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    written = yaml.safe_load((tmp_path / "flows" / "greet.yaml").read_text())
    shown = yaml.safe_load(first_block(tour_section(), "yaml"))
    assert shown == written


def test_the_tour_psql_stops_on_errors() -> None:
    for line in first_block(tour_section(), "sh").splitlines():
        if line.startswith("psql"):
            assert "-v ON_ERROR_STOP=1" in line


@pytest.mark.db
def test_the_tour_runs_as_written(pg_server: Server, tmp_path: Path) -> None:
    lines = first_block(tour_section(), "sh").splitlines()
    assert lines[0].split("#")[0].split() == ["make", "venv", "install"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("venv", "install"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"
    script = "\n".join(["set -euo pipefail", *lines[1:]]) + "\nwait\n"

    venv = Path(sys.prefix)
    (tmp_path / ".venv").symlink_to(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=pg_server.host, PGPORT=pg_server.port, PATH=os.environ["PATH"])
    if pg_server.user:
        env["PGUSER"] = pg_server.user
    with admin_connect(pg_server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TOUR_DB} WITH (FORCE)")
    try:
        done = subprocess.run(
            ["bash", "-c", script],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert (tmp_path / "flows" / "greet_handlers.py").exists()
        assert '"longest": "quick"' in done.stdout, out
        with psycopg.connect(pg_server.conninfo(TOUR_DB)) as conn:
            row = conn.execute(
                "SELECT status, output FROM pgflow.runs WHERE flow_slug = 'greet'"
            ).fetchall()
        assert row == [("completed", {"summarize": {"words": 4, "longest": "quick"}})]
    finally:
        with admin_connect(pg_server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {TOUR_DB} WITH (FORCE)")
