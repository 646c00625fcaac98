"""Log output of the worker: text lines or one JSON object per line (``--log-format json``).

Records of the worker (``pgflow.worker``) and of handlers' ``ctx.logger``
(``pgflow.handler``) carry ``run_id``, ``flow``, ``step``, ``task_index`` and
``attempt`` as attributes (``extra``); the JSON form writes them as fields,
with ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, when
there is one, ``exception`` (the formatted traceback).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Final

__all__ = ["FIELDS", "JsonFormatter", "configure"]

#: The task fields a record may carry.
FIELDS: Final = ("run_id", "flow", "step", "task_index", "attempt")

#: Attributes every LogRecord has: not copied into the JSON object.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra`` fields (task fields first) included."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in out:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str, verbose: int, stream: Any) -> None:
    """Logging of ``pgflow worker``: ``text`` or ``json`` on ``stream``; ``verbose`` 0-2."""
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose == 0:
        logging.getLogger("pgflow.worker").setLevel(logging.INFO)
        # a line per completed task costs more than a no-op handler: -v
        logging.getLogger("pgflow.worker.tasks").setLevel(logging.WARNING)
