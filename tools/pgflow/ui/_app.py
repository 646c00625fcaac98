"""The dashboard's routes, its database access, its live events and its safety rules."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgflow.errors import PgflowError

log = logging.getLogger("pgflow.ui")

HERE: Final = Path(__file__).resolve().parent
STATUSES: Final = ("started", "completed", "failed", "cancelled")
PAGE_SIZE: Final = 50
#: seconds the Runs page's list of flow names is used before it is read again
NAMES_TTL: Final = 30.0
#: Outputs and inputs longer than this are cut on the page (the full text is one click away).
TRUNCATE: Final = 2000
SESSION_COOKIE: Final = "pgflow_ui"
KEEPALIVE: Final = 15.0

SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        b" img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none';"
        b" form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _SecurityHeaders:
    """Adds the security headers to every response (plain ASGI: streaming stays streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Database:
    """A few autocommit connections, handed out one per call (each call is one statement)."""

    def __init__(self, conninfo: str, size: int = 4) -> None:
        self.conninfo = conninfo
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            if conn.closed or conn.broken:
                return
            self._idle.put(conn)

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The first column of every row of a query."""
        with self.connection() as conn:
            return [row[0] for row in conn.execute(query, params).fetchall()]

    def value(self, query: str, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (``None`` for no row)."""
        rows = self.rows(query, params)
        return rows[0] if rows else None

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class Broadcaster:
    """One LISTEN connection per process; every browser's event stream is a queue it fills."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        #: How many LISTEN connections this process opened (one, unless it had to reconnect).
        self.connections_opened = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                self.connections_opened += 1
                async with conn:
                    await conn.execute("LISTEN pgflow_events")
                    await conn.execute("SELECT pgflow.listen_events()")
                    self.connected.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        try:
                            event = json.loads(note.payload)
                        except ValueError:
                            continue
                        if isinstance(event, dict) and "run_id" in event:
                            self.publish(event)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self.connected.clear()
                log.warning("pgflow ui: event connection lost (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


class Auth:
    """The server's token: a session cookie for browsers, a bearer header for scripts.

    Without a token every page can be read and no action is allowed.  With
    one, every page needs it and actions also need the CSRF token of the
    session (a hidden field of each form).
    """

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        key = (token or uuid.uuid4().hex).encode()
        self._session = hmac.new(key, b"pgflow-ui session", hashlib.sha256).hexdigest()
        self._csrf = hmac.new(key, b"pgflow-ui csrf " + self._session.encode(), hashlib.sha256)

    @property
    def session_value(self) -> str:
        return self._session

    @property
    def csrf(self) -> str:
        return self._csrf.hexdigest()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return False
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and self.token_matches(header[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def may_read(self, request: Request) -> bool:
        return self.token is None or self.signed_in(request)

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True)
    env.filters["when"] = _when
    env.filters["count"] = _count
    return env


def _count(value: Any, limit: Any = None) -> str:
    """A count of list_flows: ``10 000+`` once it reaches the count limit, ``-`` if unknown."""
    if value is None:
        return "-"
    text = f"{int(value):,}".replace(",", "\u202f")
    return text + "+" if limit is not None and int(value) >= int(limit) else text


def _when(value: Any) -> str:
    if not value:
        return ""
    text = str(value)
    return text.replace("T", " ")[:19]


def shape_mermaid(shape: Mapping[str, Any], states: Mapping[str, str] | None = None) -> str:
    """The Mermaid flowchart of a flow_shape document, steps coloured by their state.

    Same drawing as ``pgflow graph`` (pgflow.compiler.mermaid), which draws a
    spec; the ui layer may not import the compiler, and draws the shape the
    database holds.
    """
    steps = list(shape.get("steps") or [])
    lines = ["flowchart TD", f"    %% flow {shape.get('flow_slug')}"]
    for step in steps:
        slug = str(step["step_slug"])
        marks = []
        if step.get("step_type") == "map":
            marks.append("map")
        if step.get("step_type") == "wait":
            marks.append("wait")
        if step.get("required_input_pattern") is not None:
            marks.append("if")
        if step.get("forbidden_input_pattern") is not None:
            marks.append("if not")
        label = slug + (f"<br/><i>{', '.join(marks)}</i>" if marks else "")
        conditional = (
            step.get("required_input_pattern") is not None
            or step.get("forbidden_input_pattern") is not None
        )
        if conditional:
            lines.append(f'    s_{slug}{{{{"{label}"}}}}')
        elif step.get("step_type") == "map":
            lines.append(f'    s_{slug}[["{label}"]]')
        else:
            lines.append(f'    s_{slug}["{label}"]')
    for step in steps:
        for dep in step.get("deps") or []:
            lines.append(f"    s_{dep} --> s_{step['step_slug']}")
    if states:
        colours = {
            "created": "fill:#eeeeee,stroke:#888888",
            "started": "fill:#fff3c4,stroke:#c79100",
            "completed": "fill:#d4f7d4,stroke:#2e7d32",
            "failed": "fill:#ffd6d6,stroke:#c62828",
            "skipped": "fill:#e0e0ff,stroke:#5c6bc0",
            "cancelled": "fill:#dddddd,stroke:#555555",
        }
        for status, style in colours.items():
            members = [f"s_{slug}" for slug, st in states.items() if st == status]
            if members:
                lines.append(f"    classDef st_{status} {style}")
                lines.append(f"    class {','.join(members)} st_{status}")
    return "\n".join(lines) + "\n"


def _cut(value: Any, show: bool) -> dict[str, Any] | None:
    """A payload as the page shows it: hidden, or JSON text cut at TRUNCATE characters."""
    if value is None:
        return None
    if not show:
        return {"hidden": True, "text": "", "full": "", "cut": False}
    text = json.dumps(value, indent=2, sort_keys=True)
    return {"hidden": False, "text": text[:TRUNCATE], "full": text, "cut": len(text) > TRUNCATE}


@dataclass(frozen=True)
class Page:
    """Where a Runs page starts: a cursor (a row of list_runs) and a direction, a time range."""

    cursor: dict[str, str] | None = None
    direction: str = "older"
    since: datetime | None = None
    until: datetime | None = None
    #: leave sub-flow children out (the Runs page's default)
    top_level: bool = True


@dataclass(frozen=True)
class RunsPage:
    """The runs of one page and whether a newer / an older page exists."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    newer: bool = False
    older: bool = False


def cursor_text(row: Mapping[str, Any]) -> str:
    """The cursor of a list_runs row as the pager's links carry it: ``started_at,run_id``."""
    return f"{row['started_at']},{row['run_id']}"


def parse_cursor(text: str) -> dict[str, str]:
    """``started_at,run_id`` back into a list_runs cursor; ValueError when it is not one."""
    at, sep, run_id = text.rpartition(",")
    if not sep:
        raise ValueError(text)
    datetime.fromisoformat(at)
    return {"started_at": at, "run_id": str(uuid.UUID(run_id))}


def _moment(text: str | None) -> datetime | None:
    """A time filter from the form (ISO 8601; without an offset it is UTC)."""
    if not text or not text.strip():
        return None
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Dashboard:
    """The state of one dashboard application."""

    def __init__(self, conninfo: str, token: str | None, show_payloads: bool) -> None:
        self.db = Database(conninfo)
        self.events = Broadcaster(conninfo)
        self.auth = Auth(token)
        self.show_payloads = show_payloads
        self.env = _templates()
        self.metrics: Callable[[], bytes] | None = None
        self._names: tuple[float, list[str]] | None = None
        self._names_lock = threading.Lock()

    # ------------------------------------------------------------------ reads

    def flows(self) -> list[dict[str, Any]]:
        return list(self.db.rows("SELECT pgflow.list_flows()"))

    def flow_names(self) -> list[str]:
        """The flow names of the Runs page's filter, read at most every NAMES_TTL seconds.

        list_flows counts every flow's runs (up to 10 000 index entries per
        count and flow), which a Runs page should not pay each time: the first call reads
        the names, later ones get them at once and, once they are older
        than NAMES_TTL, refresh them on a thread for the next page.
        """
        cached = self._names
        if cached is None:
            names = sorted({str(f["flow_name"]) for f in self.flows()})
            self._names = (time.monotonic(), names)
            return names
        if time.monotonic() - cached[0] > NAMES_TTL and self._names_lock.acquire(blocking=False):

            def refresh() -> None:
                try:
                    self._names = (
                        time.monotonic(),
                        sorted({str(f["flow_name"]) for f in self.flows()}),
                    )
                except psycopg.Error:
                    log.warning("could not refresh the flow names", exc_info=True)
                finally:
                    self._names_lock.release()

            threading.Thread(target=refresh, name="pgflow-ui-names", daemon=True).start()
        return cached[1]

    def shape(self, flow_slug: str) -> dict[str, Any] | None:
        """flow_shape of a flow, or None when unknown or when the role may not call it."""
        try:
            value = self.db.value("SELECT pgflow.flow_shape(%(f)s)", {"f": flow_slug})
        except pg_errors.InsufficientPrivilege:
            return None
        return value if isinstance(value, dict) else None

    def runs(self, flow: str | None, status: str | None, page: Page) -> RunsPage:
        """One page of runs (newest first), read after or before the page's cursor.

        list_runs reads ``PAGE_SIZE + 1`` rows from the cursor on: the extra
        row says whether another page lies that way; however deep the page,
        it is one index range of the runs table (keyset paging).
        """
        rows = self.db.rows(
            "SELECT pgflow.list_runs(%(flow)s, %(status)s, %(n)s,"
            " cursor => %(cursor)s, direction => %(direction)s,"
            " started_after => %(since)s, started_before => %(until)s, top_level => %(top)s)",
            {
                "flow": flow,
                "status": status,
                "n": PAGE_SIZE + 1,
                "cursor": Jsonb(page.cursor) if page.cursor else None,
                "direction": page.direction,
                "since": page.since,
                "until": page.until,
                "top": page.top_level,
            },
        )
        extra = len(rows) > PAGE_SIZE
        if page.direction == "newer":
            # newest first: the extra row is the one farthest from the cursor
            rows = rows[1:] if extra else rows
            return RunsPage(rows, newer=extra, older=True)
        return RunsPage(rows[:PAGE_SIZE], newer=page.cursor is not None, older=extra)

    def run(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        value = self.db.value("SELECT pgflow.get_run(%(r)s)", {"r": run_id})
        return value if isinstance(value, dict) else None

    # ---------------------------------------------------------------- helpers

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("signed_in", self.auth.signed_in(request))
        ctx.setdefault("token_required", self.auth.token is not None)
        ctx.setdefault("csrf", self.auth.csrf if self.auth.signed_in(request) else "")
        html = self.env.get_template(name).render(request=request, **ctx)
        return HTMLResponse(html, status_code=status_code)

    def error(self, request: Request, status_code: int, message: str, hint: str = "") -> Response:
        if "text/html" not in request.headers.get("accept", "text/html"):
            return JSONResponse({"error": message, "hint": hint}, status_code=status_code)
        return self.render(request, "error.html", status_code, message=message, hint=hint)

    def run_view(self, run: Mapping[str, Any]) -> dict[str, Any]:
        show = self.show_payloads
        steps = [
            {
                **step,
                "output_view": _cut(step.get("output"), show),
            }
            for step in run.get("steps") or []
        ]
        shape = self.shape(str(run["flow_slug"]))
        states = {str(s["step_slug"]): str(s["status"]) for s in steps}
        return {
            "run": run,
            "steps": steps,
            "input_view": _cut(run.get("input"), show),
            "output_view": _cut(run.get("output"), show),
            "graph": shape_mermaid(shape, states) if shape else None,
            "finished": run.get("status") in ("completed", "failed", "cancelled"),
        }


def _guarded(
    handler: Callable[[Dashboard, Request], Response],
) -> Callable[[Request], Response]:
    """A read route: the token when the server has one; a database error as a page."""

    def route(request: Request) -> Response:
        dash: Dashboard = request.app.state.dashboard
        if not dash.auth.may_read(request):
            if "text/html" in request.headers.get("accept", ""):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return dash.error(request, 401, "this dashboard needs its token", "sign in at /login")
        try:
            return handler(dash, request)
        except pg_errors.InsufficientPrivilege as exc:
            return dash.error(
                request,
                403,
                f"the dashboard's role may not do this: {exc.diag.message_primary}",
                "run SELECT pgflow.grant_dashboard('<role>') as the extension owner"
                " (docs/howto/dashboard.md)",
            )
        except psycopg.OperationalError as exc:
            return dash.error(
                request, 503, f"the database cannot be reached: {str(exc).strip()}", ""
            )
        except (psycopg.Error, PgflowError) as exc:
            message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
            return dash.error(request, 500, f"the database refused: {message}", "")

    return route


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


def flows_page(dash: Dashboard, request: Request) -> Response:
    flows = dash.flows()
    names = sorted({str(f["flow_name"]) for f in flows})
    pictures: dict[str, str] = {}
    for f in flows:
        if f.get("current"):
            shape = dash.shape(str(f["flow_slug"]))
            if shape:
                pictures[str(f["flow_slug"])] = shape_mermaid(shape)
    return dash.render(request, "flows.html", flows=flows, names=names, pictures=pictures)


def runs_page(dash: Dashboard, request: Request) -> Response:
    q = request.query_params
    search = (q.get("run_id") or "").strip()
    if search:
        try:
            run_id = uuid.UUID(search)
        except ValueError:
            return dash.error(
                request,
                400,
                f"{search!r} is not a run id",
                "a run id is a UUID, as list_runs shows",
            )
        return RedirectResponse(f"/runs/{run_id}", status_code=303)
    flow = q.get("flow") or None
    status = _choice(q.get("status"), STATUSES)
    direction = "newer" if q.get("dir") == "newer" else "older"
    try:
        cursor = parse_cursor(q["cursor"]) if q.get("cursor") else None
    except ValueError:
        return dash.error(
            request,
            400,
            f"{q.get('cursor')!r} is not a page cursor",
            "follow the newer / older links of the Runs page, or start from /runs",
        )
    try:
        since, until = _moment(q.get("since")), _moment(q.get("until"))
    except ValueError:
        return dash.error(
            request,
            400,
            f"{q.get('since') or q.get('until')!r} is not a time",
            "write it as 2026-12-03T17:00 (UTC) or with an offset, 2026-12-03T18:00+01:00",
        )
    children = q.get("children") == "1"
    page = dash.runs(
        flow, status, Page(cursor, direction if cursor else "older", since, until, not children)
    )
    names = dash.flow_names()
    keep = {"flow": flow or "", "status": status or ""}
    keep |= {"since": q.get("since") or "", "until": q.get("until") or ""}
    keep |= {"children": "1" if children else ""}
    keep = {k: v for k, v in keep.items() if v}

    def link(**more: str) -> str:
        query = urllib.parse.urlencode(keep | more)
        return "/runs" + ("?" + query if query else "")

    newer = older = ""
    if page.runs and page.newer:
        newer = link(cursor=cursor_text(page.runs[0]), dir="newer")
    if page.runs and page.older:
        older = link(cursor=cursor_text(page.runs[-1]))
    first = link() if cursor else ""
    return dash.render(
        request,
        "runs.html",
        runs=page.runs,
        newer=newer,
        older=older,
        first=first,
        flow=flow or "",
        status=status or "",
        since=q.get("since") or "",
        until=q.get("until") or "",
        children=children,
        statuses=STATUSES,
        names=names,
    )


def _snapshot(dash: Dashboard) -> dict[str, Any]:
    value = dash.db.value("SELECT pgflow.dashboard_snapshot(with_counts => false)")
    return value if isinstance(value, dict) else {}


def workers_page(dash: Dashboard, request: Request) -> Response:
    return dash.render(request, "workers.html", workers=_snapshot(dash).get("workers") or [])


def queues_page(dash: Dashboard, request: Request) -> Response:
    return dash.render(request, "queues.html", queues=_snapshot(dash).get("queues") or [])


def _run_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.path_params["run_id"])
    except ValueError:
        return None


def run_page(dash: Dashboard, request: Request) -> Response:
    run_id = _run_id(request)
    run = dash.run(run_id) if run_id else None
    if run is None:
        return dash.error(request, 404, f"no run {request.path_params['run_id']}", "")
    return dash.render(request, "run.html", **dash.run_view(run))


def run_live(dash: Dashboard, request: Request) -> Response:
    """The live part of a run page (steps and picture), fetched when an event arrives."""
    run_id = _run_id(request)
    run = dash.run(run_id) if run_id else None
    if run is None:
        return dash.error(request, 404, f"no run {request.path_params['run_id']}", "")
    return dash.render(request, "_run_live.html", **dash.run_view(run))


def run_json(dash: Dashboard, request: Request) -> Response:
    run_id = _run_id(request)
    run = dash.run(run_id) if run_id else None
    if run is None:
        return JSONResponse({"error": "no such run"}, status_code=404)
    if not dash.show_payloads:
        run = {**run, "input": None, "output": None}
        run["steps"] = [{**s, "output": None} for s in run.get("steps") or []]
    return JSONResponse(run)


async def action(request: Request) -> Response:
    """POST /runs/{id}/cancel or /retry: the server's token and the session's CSRF token."""
    dash: Dashboard = request.app.state.dashboard
    what = request.path_params["action"]
    if dash.auth.token is None:
        return dash.error(
            request,
            403,
            "actions are off: this server has no token",
            "start it with --token (or PGFLOW_UI_TOKEN) to cancel and retry runs",
        )
    if not dash.auth.signed_in(request):
        return dash.error(request, 401, "sign in with the server's token first", "/login")
    form = await _form(request)
    if not dash.auth.csrf_matches(form.get("csrf", "")):
        return dash.error(request, 403, "the form's CSRF token is missing or wrong", "reload")
    run_id = _run_id(request)
    if run_id is None or what not in ("cancel", "retry"):
        return dash.error(request, 404, "no such action", "")
    query = (
        "SELECT to_jsonb(r) FROM pgflow.cancel_run(%(r)s) AS r"
        if what == "cancel"
        else "SELECT pgflow.retry_run(%(r)s)"
    )
    try:
        await asyncio.to_thread(dash.db.value, query, {"r": run_id})
    except pg_errors.InsufficientPrivilege as exc:
        return dash.error(
            request,
            403,
            f"the dashboard's role may not {what}: {exc.diag.message_primary}",
            "retry_run is an operator function: GRANT EXECUTE ON FUNCTION"
            " pgflow.retry_run(uuid) TO <role>",
        )
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        return dash.error(request, 409, f"{what} refused: {message}", exc.diag.message_hint or "")
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


async def login_form(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    return dash.render(request, "login.html", next=_safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    form = await _form(request)
    if not dash.auth.token_matches(form.get("token", "")):
        return dash.render(
            request, "login.html", 401, next=_safe_next(form.get("next")), wrong=True
        )
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, dash.auth.session_value, httponly=True, samesite="strict", path="/"
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form (the only kind the pages post; at most 64 KiB)."""
    body = await request.body()
    if len(body) > 65536:
        return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    return {name: values[0] for name, values in fields.items() if values}


def _safe_next(value: str | None) -> str:
    """Only a path of this site (no //host, no scheme) is a place to go back to."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def events(request: Request) -> Response:
    """Server-Sent Events: pgflow_events as they arrive (``?run_id=`` for one run's)."""
    dash: Dashboard = request.app.state.dashboard
    if not dash.auth.may_read(request):
        return PlainTextResponse("this dashboard needs its token\n", status_code=401)
    wanted = request.query_params.get("run_id") or None

    async def stream() -> AsyncIterator[bytes]:
        with dash.events.subscription() as q:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if wanted and str(event.get("run_id")) != wanted:
                    continue
                yield f"event: pgflow\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def metrics(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    if not dash.auth.may_read(request):
        return PlainTextResponse("this dashboard needs its token\n", status_code=401)
    if dash.metrics is None:
        return PlainTextResponse("metrics need prometheus_client\n", status_code=501)
    try:
        body = await asyncio.to_thread(dash.metrics)
    except pg_errors.InsufficientPrivilege as exc:
        return PlainTextResponse(
            f"the dashboard's role may not read the metrics: {exc.diag.message_primary}\n"
            "run SELECT pgflow.grant_dashboard('<role>') as the extension owner\n",
            status_code=403,
        )
    except psycopg.Error as exc:
        return PlainTextResponse(f"the database refused: {exc}\n", status_code=503)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def app(conninfo: str = "", *, token: str | None = None, show_payloads: bool = True) -> ASGIApp:
    """The dashboard as an ASGI application.

    ``conninfo``: libpq connection string of a role with ``pgflow.grant_client``
    (``""``: the ``PG*`` environment; ``pgflow.grant_dashboard`` gives
    everything, ``grant_client`` alone the run pages).  ``token``: the secret that pages,
    ``/metrics`` and actions need (``None``: pages are open and actions off --
    for a loopback bind only).  ``show_payloads=False`` hides run inputs and
    step outputs.
    """
    dash = Dashboard(conninfo, token, show_payloads)
    try:
        from pgflow.ui import _metrics  # noqa: PLC0415 - prometheus_client is optional
    except ImportError:  # prometheus_client missing: /metrics says so
        pass
    else:
        dash.metrics = _metrics.Collector(dash.db).render

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        dash.events.start()
        try:
            yield
        finally:
            await dash.events.stop()
            dash.db.close()

    routes = [
        Route("/", _guarded(flows_page)),
        Route("/runs", _guarded(runs_page)),
        Route("/runs/{run_id}", _guarded(run_page)),
        Route("/runs/{run_id}/live", _guarded(run_live)),
        Route("/runs/{run_id}/json", _guarded(run_json)),
        Route("/workers", _guarded(workers_page)),
        Route("/queues", _guarded(queues_page)),
        Route("/runs/{run_id}/{action}", action, methods=["POST"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/events", events),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    starlette.state.dashboard = dash
    return _SecurityHeaders(starlette)


__all__ = ["app", "is_loopback", "shape_mermaid"]
