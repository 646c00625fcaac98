"""Throwaway PostgreSQL clusters for tests, the demo, the benchmark and pg-matrix.

A :class:`Cluster` runs ``initdb`` into a private temporary directory, starts
``postgres`` on a unix socket in that directory and a free port, and removes
everything when stopped.  PostgreSQL refuses to run as root, so when the
current user is root the server runs as the ``postgres`` OS user (through
``runuser``); as any other user it runs as that user.  The server binaries are
those of ``pg_config --bindir`` unless ``bindir`` names them (the binaries of
tools/scripts/pg-matrix come without ``pg_config``).

Command line (used by the Makefile)::

    python -m pgflow.testing.cluster run [--setting NAME=VALUE ...] -- COMMAND [ARG ...]

starts a cluster, exports the libpq variables (``PGHOST``, ``PGPORT``,
``PGUSER``, ``PGDATABASE``) to COMMAND, runs it, stops the cluster whatever
happens (exit, error, SIGINT, SIGTERM) and exits with COMMAND's status.  With
``--reuse-env`` and ``PGHOST`` already set, no cluster is started: COMMAND runs
against the server the environment points at.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pgflow.errors import ClusterError

__all__ = ["FAST_SETTINGS", "Cluster", "ClusterError", "free_port", "pg_bindir", "stop_on_signals"]

log = logging.getLogger(__name__)

#: Settings for throwaway test clusters: durability is not under test there.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def pg_bindir(pg_config: str | None = None) -> Path:
    """Directory of the server binaries of the PostgreSQL that ``pg_config`` names."""
    exe = pg_config or os.environ.get("PG_CONFIG") or "pg_config"
    try:
        out = subprocess.run([exe, "--bindir"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ClusterError(
            f"cannot run {exe!r} to find the PostgreSQL binaries: {exc}; "
            "install PostgreSQL server packages or set PG_CONFIG"
        ) from exc
    return Path(out.stdout.strip())


def free_port() -> int:
    """A TCP port number nobody listens on right now (used for the socket name)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A private PostgreSQL cluster in a temporary directory."""

    settings: Mapping[str, str] = field(default_factory=lambda: dict(FAST_SETTINGS))
    pg_config: str | None = None
    base_dir: Path | None = None
    port: int = 0
    superuser: str = ""
    #: Directory of ``initdb``, ``pg_ctl`` and ``postgres``; when set, ``pg_config`` is not asked.
    bindir: Path | None = None
    #: ``initdb --locale``.
    locale: str = "C.UTF-8"
    #: The cluster's directory (socket, ``data/``, ``postgres.log``), created when missing
    #: and left in place by :meth:`stop` for a post-mortem.  Default: a fresh temporary
    #: directory in ``base_dir``, deleted by :meth:`stop`.
    directory: Path | None = None
    _tmp: Path | None = None
    _run_as: str | None = None

    @property
    def host(self) -> str:
        """The unix socket directory (what ``PGHOST`` must say)."""
        if self._tmp is None:
            raise ClusterError("cluster is not started")
        return str(self._tmp)

    @property
    def datadir(self) -> Path:
        return self._files() / "data"

    @property
    def logfile(self) -> Path:
        return self._files() / "postgres.log"

    def _files(self) -> Path:
        # A given directory outlives the server: its paths stay valid after stop().
        files = self._tmp if self._tmp is not None else self.directory
        if files is None:
            raise ClusterError("cluster is not started")
        return files

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """libpq environment variables that point at this cluster."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGDATABASE": dbname,
        }

    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} user={user or self.superuser} dbname={dbname}"

    def _cmd(self, args: Sequence[str]) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def _bindir(self) -> Path:
        return self.bindir if self.bindir is not None else pg_bindir(self.pg_config)

    def _run(self, args: Sequence[str]) -> None:
        proc = subprocess.run(self._cmd(args), check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )

    def start(self) -> Cluster:
        """initdb and start the server; returns self once it accepts connections."""
        bindir = self._bindir()
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ClusterError(
                    "running as root needs the 'postgres' OS user (PostgreSQL refuses root); "
                    "install the postgresql package or run as an ordinary user"
                ) from exc
            self._run_as = "postgres"
            self.superuser = "postgres"
        else:
            owner = pwd.getpwuid(os.geteuid())
            self.superuser = owner.pw_name
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._tmp = self.directory
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="pgflow-pg-", dir=self.base_dir))
        os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
        if not self.port:
            self.port = free_port()
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    "--auth=trust",
                    "--encoding=UTF8",
                    f"--locale={self.locale}",
                    "--no-sync",
                ]
            )
            self._pg_ctl_start(bindir)
        except BaseException:
            self.stop()
            raise
        log.info("started throwaway cluster on %s port %s", self.host, self.port)
        return self

    def restart(self, mode: str = "fast") -> None:
        """Stop the server with ``mode`` (smart, fast, immediate) and start it again."""
        bindir = self._bindir()
        self._run([str(bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])
        self._pg_ctl_start(bindir)

    def _pg_ctl_start(self, bindir: Path) -> None:
        # -l keeps the server's output out of our pipes (pg_ctl restart would not)
        options = [f"-p {self.port}", f"-k {self.host}", "-c listen_addresses=''"]
        options += [f"-c {k}={v}" for k, v in self.settings.items()]
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        """Stop the server (fast mode) and delete the cluster unless it is ``directory``.

        Safe to call twice.
        """
        if self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        pid_file = tmp / "data" / "postmaster.pid"
        if pid_file.exists():
            bindir = self._bindir()
            stop = self._cmd(
                [str(bindir / "pg_ctl"), "-D", str(tmp / "data"), "-m", "fast", "-w", "stop"]
            )
            if subprocess.run(stop, check=False, capture_output=True).returncode != 0:
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text().split()[0])
                    os.kill(pid, signal.SIGQUIT)
                    time.sleep(0.5)
        if self.directory is None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _parse_settings(items: Sequence[str]) -> dict[str, str]:
    settings = dict(FAST_SETTINGS)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"pgflow.testing.cluster: --setting wants NAME=VALUE, got {item!r}")
        settings[name] = value
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgflow.testing.cluster",
        description="Run a command against a throwaway PostgreSQL cluster that is "
        "deleted afterwards (libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE are exported).",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="start a cluster, run COMMAND, stop the cluster")
    run.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (repeatable); defaults favour speed: fsync=off",
    )
    run.add_argument(
        "--durable",
        action="store_true",
        help="keep PostgreSQL's durable defaults (fsync, synchronous_commit on)",
    )
    run.add_argument(
        "--reuse-env",
        action="store_true",
        help="if PGHOST is set, run COMMAND against that server instead",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("no COMMAND given (put it after --)")
    logging.basicConfig(level=logging.INFO, format="pgflow.testing.cluster: %(message)s")
    if args.reuse_env and os.environ.get("PGHOST"):
        log.info("using the server at PGHOST=%s (no throwaway cluster)", os.environ["PGHOST"])
        return subprocess.call(command)
    settings = _parse_settings(args.setting)
    if args.durable:
        for name in FAST_SETTINGS:
            settings.pop(name, None)
    cluster = Cluster(settings=settings)
    with stop_on_signals():
        try:
            cluster.start()
            env = {**os.environ, **cluster.env()}
            return subprocess.call(command, env=env)
        except ClusterError as exc:
            print(f"pgflow.testing.cluster: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
