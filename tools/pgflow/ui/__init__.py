"""The web dashboard (``pgflow ui``): an ASGI application on Starlette.

:func:`app` builds it; an application can mount it, ``pgflow ui`` serves it
with uvicorn.  Needs the ``ui`` extra (``pip install 'pgflow-tools[ui]'``):
Starlette and prometheus_client (jinja2 is a dependency of the package).

Reads go through the functions ``pgflow.grant_client`` grants (``list_flows``,
``list_runs``, ``get_run``, ``listen_events``), plus ``flow_shape`` for the
DAG pictures when the role may call it; see docs/howto/dashboard.md.
"""

from __future__ import annotations

from pgflow.ui._app import app, is_loopback

__all__ = ["app", "is_loopback"]
