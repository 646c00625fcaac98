"""Worker settings: WorkerConfig checks, Worker(**settings), and `pgflow worker` taking each
option from its flag, its environment variable, [tool.pgflow.worker] of pyproject.toml or
the default, in that order -- plus the failure log levels and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import run as cli_run
from pgflow.errors import ConfigError
from pgflow.worker.logs import JsonFormatter
from pgflow.worker.reporter import Reporter
from pgflow.worker.task import Task


class Recorded:
    configs: ClassVar[list[Any]] = []
    logging: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, flows: Any, dsn: str, config: Any) -> None:
        self.configs.append((dsn, config))

    def run(self) -> int:
        return 0


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[Recorded]:
    Recorded.configs = []
    Recorded.logging = []
    monkeypatch.setattr(cli_run, "Worker", Recorded)
    monkeypatch.setattr(cli_run, "load_all", lambda specs: ["loaded"])
    # the real one replaces the root logger's handlers: record what it was given
    monkeypatch.setattr(
        cli_run,
        "configure_logging",
        lambda fmt, verbose, stream: Recorded.logging.append((fmt, verbose)),
    )
    monkeypatch.chdir(tmp_path)
    for name in (
        "CONCURRENCY",
        "BATCH_SIZE",
        "POLL_INTERVAL",
        "GRACE",
        "NO_LISTEN",
        "DSN",
        "LOG_FORMAT",
        "VERBOSE",
    ):
        monkeypatch.delenv(f"PGFLOW_{name}", raising=False)
    return Recorded


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli_run.worker, ["flows.py", *args], env=env)
    return result


def test_flag_beats_environment_beats_pyproject_beats_default(recorded: type[Recorded]) -> None:
    Path("pyproject.toml").write_text(
        "[tool.pgflow.worker]\nconcurrency = 7\nbatch_size = 3\ngrace = 2.5\nlisten = false\n"
    )
    result = invoke(
        ["--concurrency", "20"], env={"PGFLOW_CONCURRENCY": "15", "PGFLOW_BATCH_SIZE": "5"}
    )
    assert result.exit_code == 0, result.output
    dsn, config = recorded.configs[-1]
    assert config.concurrency == 20, "the flag wins"
    assert config.batch_size == 5, "the environment beats pyproject.toml"
    assert (config.grace, config.listen) == (2.5, False), "pyproject.toml beats the default"
    assert config.poll_interval == 1.0, "the default"
    result = invoke([], env={"PGFLOW_DSN": "dbname=app", "PGFLOW_NO_LISTEN": "0"})
    dsn, config = recorded.configs[-1]
    assert (dsn, config.concurrency, config.listen) == ("dbname=app", 7, True)


def test_log_format_and_verbosity_follow_the_same_order(recorded: type[Recorded]) -> None:
    Path("pyproject.toml").write_text('[tool.pgflow.worker]\nlog_format = "json"\nverbose = 1\n')
    assert invoke([]).exit_code == 0
    assert invoke([], env={"PGFLOW_VERBOSE": "2", "PGFLOW_LOG_FORMAT": "text"}).exit_code == 0
    assert invoke(["-v", "--log-format", "json"], env={"PGFLOW_VERBOSE": "2"}).exit_code == 0
    assert recorded.logging == [("json", 1), ("text", 2), ("json", 1)]


def test_bad_settings_name_where_they_come_from(recorded: type[Recorded]) -> None:
    Path("pyproject.toml").write_text("[tool.pgflow.worker]\nconcurency = 7\n")
    result = invoke([])
    assert result.exit_code == 2
    assert "pyproject.toml [tool.pgflow.worker]: unknown key 'concurency'" in result.output
    assert 'did you mean "concurrency"' in result.output
    Path("pyproject.toml").write_text("[tool.pgflow.worker]\nconcurrency = 0\n")
    result = invoke([])
    assert result.exit_code == 2
    assert "concurrency: 0 is not in the range 1<=x<=1000" in result.output
    Path("pyproject.toml").unlink()
    result = invoke([], env={"PGFLOW_CONCURRENCY": "lots"})
    assert result.exit_code == 2
    assert "'lots' is not a valid integer" in result.output
    assert invoke(["--config", "nope.toml"]).exit_code == 2
    assert recorded.configs == []


def test_help_shows_the_environment_variables() -> None:
    text = CliRunner().invoke(cli_run.worker, ["--help"]).output
    for name in (
        "CONCURRENCY",
        "BATCH_SIZE",
        "POLL_INTERVAL",
        "GRACE",
        "NO_LISTEN",
        "LOG_FORMAT",
        "VERBOSE",
        "DSN",
    ):
        assert f"PGFLOW_{name}" in text


def test_worker_config_validates_itself_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="batch_size must be between 1 and 1000, got 0"):
        pgflow.WorkerConfig(batch_size=0)
    with pytest.raises(ConfigError, match="concurrency must be an integer, got '4'"):
        pgflow.WorkerConfig(concurrency="4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Worker\(\): unknown worker setting 'concurency'"):
        pgflow.WorkerConfig.from_mapping({"concurency": 3}, "Worker()")


def test_worker_takes_flows_first_and_settings_as_keywords() -> None:
    flow = pgflow.Flow("cfg_flow")

    @flow.step
    def only(input: Any) -> Any:
        return input

    worker = pgflow.Worker([flow], "dbname=none", concurrency=3, listen=False)
    assert (worker.conninfo, worker.config.concurrency, worker.config.listen) == (
        "dbname=none",
        3,
        False,
    )
    assert list(worker.flows) == ["cfg_flow"]
    old_order = pgflow.Worker("dbname=none", [flow])  # the 0.2 order keeps working
    assert old_order.conninfo == "dbname=none"
    with pytest.raises(ConfigError, match="unknown worker setting 'concurency'"):
        pgflow.Worker([flow], "", concurency=3)
    for w in (worker, old_order):
        w.close()


def _task(attempt: int, max_attempts: int) -> Task:
    t = Task("f", "r", "s", 0, None, attempt, 60.0, lambda x: x)
    t.max_attempts = max_attempts
    return t


def test_a_retried_attempt_logs_one_warning_and_a_final_failure_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = Reporter.__new__(Reporter)
    reporter.completed = reporter.failed = 0
    with caplog.at_level(logging.DEBUG, logger="pgflow.worker"):
        reporter._log_done(_task(1, 3), "ValueError: boom", True)
        reporter._log_done(_task(3, 3), "ValueError: boom", True)
        reporter._log_done(_task(1, 3), "Fail: declined", False)
    levels = [(r.levelname, r.getMessage().split(" run_id")[0]) for r in caplog.records]
    assert levels == [
        ("WARNING", "attempt failed, will be retried"),
        ("ERROR", "task failed for good"),
        ("ERROR", "task failed for good"),
    ]
    assert all(r.exc_info is None for r in caplog.records), "tracebacks only at DEBUG"
    assert caplog.records[0].__dict__["step"] == "s"


def test_json_log_lines_carry_the_task_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pgflow.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        ctx = pgflow.Context("order", "r-1", "charge", attempt=2)
        adapter = ctx.logger
        adapter.logger = logger
        adapter.warning("declined %s", "card", extra={"amount": 5})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("crashed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message", "run_id", "flow", "step")} == {
        "level": "WARNING",
        "logger": "pgflow.test_json",
        "message": "declined card",
        "run_id": "r-1",
        "flow": "order",
        "step": "charge",
    }
    assert (first["attempt"], first["task_index"], first["amount"]) == (2, 0, 5)
    assert "ValueError: boom" in second["exception"]


def test_the_documented_pyproject_table_is_read_as_documented(
    recorded: type[Recorded],
) -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs/howto/workers-in-production.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    block = "\n".join(line.strip() for line in block.splitlines())
    assert set(tomllib.loads(block)["tool"]["pgflow"]["worker"]) == set(cli_run.PYPROJECT_KEYS)
    Path("pyproject.toml").write_text(block)
    assert invoke([]).exit_code == 0
    _, config = recorded.configs[-1]
    assert (config.concurrency, config.batch_size, config.grace, config.listen) == (
        20,
        20,
        60,
        True,
    )
    assert recorded.logging[-1] == ("json", 0)
