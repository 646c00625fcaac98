"""The human table and the JSON document of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.db import Conn

ROOT = Path(__file__).resolve().parents[1]
SHOWN_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_compression",
    "shared_buffers",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "commit_delay",
    "wal_sync_method",
    "max_connections",
)


def machine_info(conn: Conn) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kb = int(f.readline().split()[1])
    version = conn.execute("SELECT version()").fetchone()
    settings: dict[str, str] = dict(
        conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s)",
            (list(SHOWN_SETTINGS),),
        ).fetchall()
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "postgres": version[0] if version else "",
        "settings": {k: settings.get(k, "") for k in SHOWN_SETTINGS},
        "git": commit,
    }


@dataclass(frozen=True)
class Row:
    label: str
    values: list[float]  # one per repeat (or a single figure)
    unit: str = ""
    target: str = ""
    check: Callable[[float], bool] | None = None  # applied to the median
    digits: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def status(self) -> str:
        if self.check is None or not self.values:
            return ""
        return "met" if self.check(self.median) else "MISSED"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, "values": self.values}
        if self.values:
            out |= {"min": min(self.values), "median": self.median, "max": max(self.values)}
        if self.target:
            out |= {"target": self.target, "met": self.status == "met"}
        return out


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    head = ("metric", "min", "median", "max", "target", "")
    cells = [head]
    for r in rows:
        if not r.values:
            cells.append((r.label, "", "n/a", "", r.target, ""))
            continue
        lo, mid, hi = min(r.values), r.median, max(r.values)
        if len(r.values) == 1:
            cells.append((r.label, "", _fmt(mid, r.digits), "", r.target, r.status))
        else:
            cells.append(
                (
                    r.label,
                    _fmt(lo, r.digits),
                    _fmt(mid, r.digits),
                    _fmt(hi, r.digits),
                    r.target,
                    r.status,
                )
            )
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        line = "  ".join(
            c[i].ljust(widths[i]) if i in (0, 4, 5) else c[i].rjust(widths[i])
            for i in range(len(head))
        )
        lines.append(line.rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def header(info: dict[str, Any]) -> str:
    s = info["settings"]
    return "\n".join(
        [
            f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gb']} GB,"
            f" Linux {info['kernel']}, Python {info['python']}, psycopg {info['psycopg']}",
            f"server:  {info['postgres'].split(' on ')[0]}, git {info['git']}",
            "settings: " + ", ".join(f"{k}={v}" for k, v in s.items()),
            *(
                [
                    "load average (1 min) before / after: "
                    f"{info['loadavg_before'][0]:.2f} / {info['loadavg_after'][0]:.2f}"
                    " (other processes on the machine skew the figures)"
                ]
                if "loadavg_after" in info
                else []
            ),
        ]
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def say(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)
