"""metrics.md lists exactly the metrics /metrics serves; the Grafana JSON uses only those."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from pgflow.ui._metrics import families

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "reference" / "metrics.md").read_text(encoding="utf-8")
GRAFANA = json.loads((ROOT / "docs" / "grafana" / "pgflow.json").read_text(encoding="utf-8"))
PROMQL_WORDS = {"sum", "max", "by", "delta", "rate", "label_values", "flow", "status", "state"}


def served() -> dict[str, list[str]]:
    snapshot = {
        "workers": [{"worker_id": "w", "alive": True, "running": 1}],
        "queues": [
            {
                "flow_slug": "f",
                "step_slug": "s",
                "ready": 1,
                "delayed": 0,
                "started": 0,
                "stalled": 0,
                "oldest_claimable_s": 1.5,
            }
        ],
        "tasks": [{"flow_slug": "f", "step_slug": "s", "status": "queued", "count": 1}],
        "runs": [{"flow_slug": "f", "status": "started", "count": 1}],
    }
    out = {}
    for family in families(snapshot, [{"flow_slug": "f"}]):
        assert isinstance(family, GaugeMetricFamily)
        out[family.name] = sorted({k for s in family.samples for k in s.labels})
    return out


def documented() -> dict[str, list[str]]:
    rows = re.findall(r"^\| `(pgflow_\w+)` \| gauge \|([^|]*)\|", DOC, re.M)
    return {name: sorted(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("query"), str) and "(" in node["query"]:
            found.append(node["query"])
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def test_the_metric_list_is_what_metrics_serves() -> None:
    assert documented() == served()


def test_the_worker_metric_list_is_what_the_worker_registers() -> None:
    from pgflow.worker.metrics import WorkerMetrics  # noqa: PLC0415

    registered = {
        m.name + ("_total" if m.type == "counter" else "")
        for m in WorkerMetrics().registry.collect()
    }
    listed = set(re.findall(r"^\| `(pgflow_worker_\w+)` \| (?:counter|histogram) \|", DOC, re.M))
    assert listed == registered


def test_the_grafana_dashboard_names_only_real_metrics() -> None:
    exprs = expressions(GRAFANA)
    assert len(exprs) >= 9
    names = served()
    used: set[str] = set()
    for expr in exprs:
        metrics = set(re.findall(r"\bpgflow_\w+", expr))
        assert metrics, f"no pgflow metric in {expr!r}"
        assert metrics <= set(names), f"unknown metric in {expr!r}"
        for label in re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", expr):
            assert any(label in names[m] for m in metrics), f"unknown label {label} in {expr!r}"
        used |= metrics
    assert used == set(names), f"the dashboard shows no panel for {set(names) - used}"
