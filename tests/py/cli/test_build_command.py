"""pgflow-build, pgflow graph and pgflow new: exit codes, messages, files written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pgflow import __version__
from pgflow.cli import main
from pgflow.cli.build import build
from pgflow.compiler.migration import same_body

REPO = Path(__file__).resolve().parents[3]
STAMPED = re.compile(r"[0-9]{14}_create_order_flow\.sql")

ORDER = """\
flow: order
steps:
  - slug: fetch
  - slug: each
    map: true
    depends_on: [fetch]
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "order.yaml").write_text(ORDER, encoding="utf-8")
    return tmp_path


def run_build(*args: str) -> Result:
    return CliRunner().invoke(build, list(args), prog_name="pgflow-build")


def run_pgflow(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="pgflow")


def migrations(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_build_writes_one_migration_then_is_up_to_date(cwd: Path) -> None:
    first = run_build("flows/order.yaml")
    assert first.exit_code == 0, first.output
    (name,) = migrations(cwd / "migrations")
    assert STAMPED.fullmatch(name)
    assert first.stdout == f"order: wrote migrations/{name}\n"
    assert first.stderr == ""
    text = (cwd / "migrations" / name).read_text(encoding="utf-8")
    assert text.startswith("-- pgflow migration: flow order")
    assert "-- spec: flows/order.yaml\n" in text

    again = run_build("flows/order.yaml")
    assert again.exit_code == 0
    assert again.stdout == f"order: up to date (migrations/{name})\n"
    assert migrations(cwd / "migrations") == [name]


def test_a_changed_spec_gets_a_new_later_migration(cwd: Path) -> None:
    assert run_build("flows/order.yaml").exit_code == 0
    (cwd / "flows" / "order.yaml").write_text(ORDER + "    timeout: 9\n", encoding="utf-8")
    result = run_build("flows/order.yaml")
    assert result.exit_code == 0
    old, new = migrations(cwd / "migrations")
    assert old < new  # even within the same second
    assert result.stdout == f"order: wrote migrations/{new}\n"
    assert "timeout => 9" in (cwd / "migrations" / new).read_text(encoding="utf-8")
    assert "timeout => 9" not in (cwd / "migrations" / old).read_text(encoding="utf-8")


def test_only_the_header_differing_is_up_to_date(cwd: Path) -> None:
    (cwd / "flows" / "order.yaml").write_text("# a comment\n" + ORDER, encoding="utf-8")
    assert run_build("flows/order.yaml").exit_code == 0
    (cwd / "flows" / "order.yaml").write_text(ORDER, encoding="utf-8")
    result = run_build("flows/order.yaml")
    assert result.exit_code == 0
    assert "up to date" in result.stdout
    assert len(migrations(cwd / "migrations")) == 1


def test_out_dir(cwd: Path) -> None:
    result = run_build("flows/order.yaml", "--out-dir", "db/migrations")
    assert result.exit_code == 0
    assert len(migrations(cwd / "db" / "migrations")) == 1
    assert not (cwd / "migrations").exists()


def test_dry_run_prints_and_writes_nothing(cwd: Path) -> None:
    result = run_build("flows/order.yaml", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.startswith("-- pgflow migration: flow order")
    assert result.stdout.rstrip().endswith("COMMIT;")
    assert not (cwd / "migrations").exists()


def test_check_reports_missing_stale_and_up_to_date(cwd: Path) -> None:
    missing = run_build("flows/order.yaml", "--check")
    assert missing.exit_code == 1
    assert missing.stderr == (
        "order: no migration in migrations (run: pgflow-build flows/order.yaml)\n"
    )
    assert not (cwd / "migrations").exists()

    assert run_build("flows/order.yaml").exit_code == 0
    (name,) = migrations(cwd / "migrations")
    fresh = run_build("flows/order.yaml", "--check")
    assert fresh.exit_code == 0
    assert fresh.stdout == f"order: up to date (migrations/{name})\n"

    (cwd / "flows" / "order.yaml").write_text(ORDER + "    max_attempts: 2\n", encoding="utf-8")
    stale = run_build("flows/order.yaml", "--check")
    assert stale.exit_code == 1
    assert stale.stderr == (
        f"order: migrations/{name} differs from flows/order.yaml"
        " (run: pgflow-build flows/order.yaml)\n"
    )
    assert migrations(cwd / "migrations") == [name]


def test_check_compares_the_newest_migration(cwd: Path) -> None:
    assert run_build("flows/order.yaml").exit_code == 0
    (old,) = migrations(cwd / "migrations")
    # a file pgflow-build did not write is not compared, and the build says so
    (cwd / "migrations" / "99990101000000_create_order_flow.sql").write_text(
        "-- hand made\n\nSELECT 1;\n", encoding="utf-8"
    )
    result = run_build("flows/order.yaml", "--check")
    assert result.exit_code == 0
    assert "99990101000000_create_order_flow.sql was not written by pgflow-build" in result.stderr
    (cwd / "migrations" / "99990101000000_create_order_flow.sql").unlink()

    assert run_build("flows/order.yaml", "--check").exit_code == 0
    assert migrations(cwd / "migrations") == [old]


def test_spec_errors_exit_1_and_write_nothing(cwd: Path) -> None:
    (cwd / "flows" / "bad.yaml").write_text(
        "flow: bad\nsteps:\n  - slug: a\n  - slug: b\n    depends_on: [a, c]\n    map: yes\n",
        encoding="utf-8",
    )
    result = run_build("flows/order.yaml", "flows/bad.yaml")
    assert result.exit_code == 1
    assert result.stdout == ""
    # every problem, of every kind, in line order
    assert result.stderr.splitlines() == [
        'flows/bad.yaml:5: steps[1].depends_on: unknown step "c"',
        'flows/bad.yaml:6: steps[1].map: must be true or false, got string "yes"',
    ]
    assert not (cwd / "migrations").exists()


def test_every_spec_is_reported(cwd: Path) -> None:
    (cwd / "a.yaml").write_text("flow: 1\nsteps: [{slug: a}]\n", encoding="utf-8")
    result = run_build("a.yaml", "missing.yaml", "flows/order.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "a.yaml:1: flow: must be a string, got integer 1\nerror: missing.yaml: no such file\n"
    )


def test_the_same_flow_twice_is_an_error(cwd: Path) -> None:
    shutil.copy(cwd / "flows" / "order.yaml", cwd / "flows" / "copy.yaml")
    result = run_build("flows/order.yaml", "flows/copy.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        'flows/copy.yaml:1: flow: flow "order" is also defined in flows/order.yaml:1\n'
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Usage: pgflow-build [OPTIONS] SPEC..."),
        (("x.yaml", "--dry-run", "--check"), "Error: --dry-run and --check cannot be combined"),
        (("x.yaml", "--bogus"), "Error: No such option '--bogus'."),
    ],
)
def test_usage_errors_exit_2(cwd: Path, args: Sequence[str], message: str) -> None:
    result = run_build(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_version() -> None:
    result = run_build("--version")
    # the version moves with every release (make release bumps pgflow.__version__)
    assert (result.exit_code, result.stdout) == (0, f"pgflow-build, version {__version__}\n")


def test_pgflow_build_is_also_a_subcommand(cwd: Path) -> None:
    result = run_pgflow("build", "flows/order.yaml", "--dry-run")
    assert result.exit_code == 0
    assert "SELECT pgflow.create_flow(flow_slug => 'order');" in result.stdout


# ---------------------------------------------------------------------- graph and new


def test_graph(cwd: Path) -> None:
    result = run_pgflow("graph", "flows/order.yaml")
    assert result.exit_code == 0
    assert result.stdout == (
        "flowchart TD\n"
        "    %% flow order\n"
        '    s_fetch["fetch"]\n'
        '    s_each[["each<br/><i>map</i>"]]\n'
        "    s_fetch --> s_each\n"
        "    classDef map stroke-width:3px\n"
        "    class s_each map\n"
    )


def test_graph_errors(cwd: Path) -> None:
    missing = run_pgflow("graph", "flows/order.yaml", "--flow", "other")
    assert (missing.exit_code, missing.stderr) == (
        1,
        'error: flows/order.yaml defines no flow "other"\n',
    )
    assert run_pgflow("graph").exit_code == 2
    broken = run_pgflow("graph", "nope.yaml")
    assert (broken.exit_code, broken.stderr) == (1, "error: nope.yaml: no such file\n")


def test_new_scaffolds_files_that_build(cwd: Path) -> None:
    result = run_pgflow("new", "words", "--dir", "app/flows")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "created app/flows/words.yaml\n"
        "created app/flows/words_handlers.py\n"
        "next: pgflow-build app/flows/words.yaml\n"
    )
    assert run_build("app/flows/words.yaml").exit_code == 0
    again = run_pgflow("new", "words", "--dir", "app/flows")
    assert again.exit_code == 1
    assert again.stderr == (
        "error: app/flows/words.yaml already exists (not overwritten)\n"
        "error: app/flows/words_handlers.py already exists (not overwritten)\n"
    )


def test_new_refuses_bad_arguments(cwd: Path) -> None:
    bad_slug = run_pgflow("new", "9words")
    assert (bad_slug.exit_code, bad_slug.stderr) == (
        1,
        'error: invalid flow slug "9words": it must start with a letter\n',
    )
    bad_dir = run_pgflow("new", "words", "--dir", "my-flows")
    assert bad_dir.exit_code == 1
    assert not (cwd / "my-flows").exists()


# ---------------------------------------------------------------------- the installed command


def installed(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        assert found, f"{name} is not installed (pip install -e .)"
        return found
    return str(path)


def test_the_installed_pgflow_build(tmp_path: Path) -> None:
    spec = tmp_path / "order.yaml"
    shutil.copy(REPO / "examples" / "flows" / "order.yaml", spec)
    exe = installed("pgflow-build")
    ok = subprocess.run(
        [exe, "order.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    (written,) = (tmp_path / "migrations").iterdir()
    assert ok.stdout == f"order: wrote migrations/{written.name}\n"
    dry = subprocess.run(
        [exe, "order.yaml", "--dry-run"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert same_body(dry.stdout, written.read_text(encoding="utf-8"))

    spec.write_text("flow: order\nsteps:\n  - slug: a\n    depends_on: [b]\n", encoding="utf-8")
    bad = subprocess.run(
        [exe, "order.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert bad.stderr == 'order.yaml:4: steps[0].depends_on: unknown step "b"\n'
    assert bad.stdout == ""


def test_the_same_spec_named_twice_counts_once(cwd: Path) -> None:
    (cwd / "many.py").write_text(
        "from pgflow import Flow\nflow = Flow('many')\n\n@flow.step\ndef a(input):\n    return 1\n",
        encoding="utf-8",
    )
    result = run_build("flows/order.yaml", "flows/order.yaml", "many.py", "many:flow")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == sorted(
        f"{slug}: wrote migrations/{name}"
        for name in migrations(cwd / "migrations")
        for slug in ("order", "many")
        if f"_create_{slug}_flow" in name
    )
    assert len(migrations(cwd / "migrations")) == 2
