"""The dashboard's pages against a live database, read as a grant_client role."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from pgflow.ui import app

from .conftest import Start, Work

pytestmark = pytest.mark.db
Conn = psycopg.Connection[tuple[Any, ...]]


def test_flows_page_lists_each_flow_with_its_runs_and_dag(
    ui: TestClient, pipe: str, start: Start, work: Work
) -> None:
    start()
    start()
    page = ui.get("/")
    assert page.status_code == 200
    row = re.search(r'<tr data-flow="pipe">(.*?)</tr>', page.text, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert ">2</a>" in cells[5]  # in flight
    assert ">2</a>" in cells[6]  # runs
    assert '<pre class="mermaid">' in page.text
    assert "s_fetch --&gt; s_store" in page.text
    assert page.text.count('src="/static/mermaid.min.js"') == 1


def test_flows_page_counts_runs_by_status_up_to_the_limit(
    ui: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    start()
    conn.execute(
        "INSERT INTO pgflow.runs (flow_slug, status, input, remaining_steps, failed_at,"
        " error_message) VALUES ('pipe', 'failed', '{}', 1, now(), 'boom')"
    )

    def cells() -> list[str]:
        page = ui.get("/")
        assert page.status_code == 200
        row = re.search(r'<tr data-flow="pipe">(.*?)</tr>', page.text, re.S)
        assert row is not None
        return [
            re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
        ]

    assert cells()[5:10] == ["1", "2", "0", "1", "0"]  # in flight, runs, by status
    conn.execute(
        "INSERT INTO pgflow.runs (flow_slug, status, input, output, remaining_steps,"
        " completed_at) SELECT 'pipe', 'completed', '{}', '{}', 0, now()"
        " FROM generate_series(1, 10000)"
    )
    # 10 002 runs: the total stops at 10 000, completed is not known
    assert cells()[5:10] == ["1", "10\u202f000+", "-", "1", "0"]


def test_a_grant_client_role_gets_the_run_pages_without_pictures(
    app_dsn: str, pipe: str, start: Start
) -> None:
    run_id = start()
    with TestClient(app(app_dsn), base_url="http://127.0.0.1") as app_ui:
        flows = app_ui.get("/")
        run = app_ui.get(f"/runs/{run_id}")
        workers = app_ui.get("/workers")
    assert flows.status_code == 200
    assert 'class="mermaid"' not in flows.text  # flow_shape is not grant_client's
    assert run.status_code == 200
    assert workers.status_code == 403
    assert "pgflow.grant_dashboard" in workers.text


def test_runs_filter_by_flow_and_status_and_search_by_id(
    ui: TestClient, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    conn.execute("SELECT pgflow.create_flow('other')")
    conn.execute("SELECT pgflow.add_step('other', 'only')")
    first = start()
    work()  # fetch of first
    work()  # store of first: completed
    second = start()
    other = start("other")

    def listed(query: str) -> set[str]:
        page = ui.get(f"/runs{query}")
        assert page.status_code == 200
        return set(re.findall(r'<tr data-run="([0-9a-f-]+)">', page.text))

    assert listed("") == {str(first), str(second), str(other)}
    assert listed("?flow=pipe") == {str(first), str(second)}
    assert listed("?status=completed") == {str(first)}
    assert listed("?flow=pipe&status=started") == {str(second)}
    assert listed("?status=bogus") == {str(first), str(second), str(other)}
    found = ui.get(f"/runs?run_id={second}", follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == f"/runs/{second}"
    bad = ui.get("/runs?run_id=not-a-uuid")
    assert bad.status_code == 400
    assert "is not a run id" in bad.text


def _rows(page: Any) -> list[str]:
    assert page.status_code == 200, page.text
    return re.findall(r'<tr data-run="([0-9a-f-]+)">', page.text)


def _link(page: Any, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)">', page.text)
    return html.unescape(found.group(1)) if found else None


def test_runs_paging_walks_back_and_forth_through_runs_of_one_instant(
    ui: TestClient, conn: Conn, pipe: str
) -> None:
    # one statement: all 120 runs have the same started_at; the run id decides
    conn.execute(
        "SELECT pgflow.start_flow('pipe', jsonb_build_object('i', i))"
        " FROM generate_series(1, 120) AS i"
    )
    assert conn.execute("SELECT count(DISTINCT started_at) FROM pgflow.runs").fetchone() == (1,)
    expected = [
        str(r[0])
        for r in conn.execute(
            "SELECT run_id FROM pgflow.runs ORDER BY started_at DESC, run_id DESC"
        ).fetchall()
    ]
    pages = [ui.get("/runs")]
    while (older := _link(pages[-1], "next")) is not None:
        pages.append(ui.get(older))
    assert [len(_rows(p)) for p in pages] == [50, 50, 20]
    assert [r for p in pages for r in _rows(p)] == expected
    assert _link(pages[0], "prev") is None
    # and back: each "newer" link gives the page before, row for row
    back = [pages[-1]]
    while (newer := _link(back[-1], "prev")) is not None:
        back.append(ui.get(newer))
    assert [_rows(p) for p in reversed(back)] == [_rows(p) for p in pages]


def test_runs_paging_keeps_the_filters_and_time_range(
    ui: TestClient, conn: Conn, pipe: str
) -> None:
    conn.execute("SELECT pgflow.create_flow('other')")
    conn.execute("SELECT pgflow.add_step('other', 'only')")
    conn.execute(
        "SELECT pgflow.start_flow(CASE WHEN i % 3 = 0 THEN 'other' ELSE 'pipe' END, '{}')"
        " FROM generate_series(1, 240) AS i"
    )
    # spread them over time and give some a status, as the engine would
    conn.execute(
        "UPDATE pgflow.runs SET started_at = timestamptz '2026-01-01 00:00+00'"
        " + (SELECT count(*) FROM pgflow.runs AS o WHERE o.run_id < runs.run_id) / 7"
        " * interval '1 minute'"
    )
    conn.execute(
        "UPDATE pgflow.runs SET status = 'failed', failed_at = started_at"
        " WHERE run_id IN (SELECT run_id FROM pgflow.runs ORDER BY run_id LIMIT 170)"
        " AND (SELECT count(*) FROM pgflow.runs AS o WHERE o.run_id < runs.run_id) % 2 = 0"
    )

    def walk(query: str) -> list[str]:
        pages = [ui.get("/runs" + query)]
        while (older := _link(pages[-1], "next")) is not None:
            pages.append(ui.get(older))
        return [r for p in pages for r in _rows(p)]

    def expected(where: str) -> list[str]:
        rows = conn.execute(
            f"SELECT run_id FROM pgflow.runs WHERE {where} ORDER BY started_at DESC, run_id DESC"
        ).fetchall()
        return [str(r[0]) for r in rows]

    assert walk("?status=failed") == expected("status = 'failed'")
    assert walk("?flow=pipe&status=started") == expected(
        "flow_slug = 'pipe' AND status = 'started'"
    )
    since, until = "2026-01-01T00:10", "2026-01-01T00:25"
    got = walk(f"?flow=pipe&since={since}&until={until}")
    assert got == expected(
        "flow_slug = 'pipe' AND started_at >= '2026-01-01 00:10+00'"
        " AND started_at < '2026-01-01 00:25+00'"
    )
    assert 50 < len(got) < 150
    assert ui.get("/runs?cursor=nonsense").status_code == 400
    assert ui.get("/runs?since=yesterday").status_code == 400


def test_runs_hide_sub_flow_children_unless_asked_and_run_pages_link_them(
    ui: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    parent = start()
    # children of the parent's fetch task, as a sub-flow step would start them
    kids = [
        str(r[0])
        for r in conn.execute(
            "INSERT INTO pgflow.runs (run_id, flow_slug, input, remaining_steps, parent_run_id,"
            " parent_step_slug, parent_task_index, parent_attempt, depth)"
            " SELECT gen_random_uuid(), 'pipe', '{}', 2, %s, 'fetch', 0, a, 1"
            " FROM generate_series(1, 60) AS a RETURNING run_id",
            (parent,),
        ).fetchall()
    ]
    assert _rows(ui.get("/runs")) == [str(parent)]
    shown: list[str] = []
    page = ui.get("/runs?children=1")
    while True:
        shown += _rows(page)
        older = _link(page, "next")
        if older is None:
            break
        assert "children=1" in older, "the toggle is kept across pages"
        page = ui.get(older)
    assert sorted(shown) == sorted([*kids, str(parent)])
    assert f'class="parent" href="/runs/{parent}"' in ui.get("/runs?children=1").text
    child_page = ui.get(f"/runs/{kids[0]}")
    assert 'id="parent-run"' in child_page.text
    assert f'href="/runs/{parent}"' in child_page.text
    parent_page = ui.get(f"/runs/{parent}")
    assert "60 child runs" in parent_page.text
    assert all(f'href="/runs/{k}"' in parent_page.text for k in kids)


def test_run_page_shows_steps_errors_and_outputs(
    ui: TestClient, pipe: str, start: Start, work: Work
) -> None:
    run_id = start()
    work(output='{"fetched": "' + "x" * 3000 + '"}')
    work(error="disk full on /var")
    page = ui.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert 'id="run-status">failed<' in page.text
    assert re.search(r'data-step="fetch" data-status="completed"', page.text)
    assert re.search(r'data-step="store" data-status="failed"', page.text)
    assert "disk full on /var" in page.text
    assert "(cut at 2000 characters)" in page.text  # the long output is truncated...
    assert "x" * 2990 in page.text  # ...with the whole text one click away
    live = ui.get(f"/runs/{run_id}/live")
    assert live.status_code == 200
    assert live.text.lstrip().startswith('<div id="run-live" data-status="failed">')


def test_hidden_payloads_never_reach_the_page(client_dsn: str, pipe: str, start: Start) -> None:
    run_id = start(payload='{"card": "4111-1111-1111-1111"}')
    with TestClient(app(client_dsn, show_payloads=False), base_url="http://127.0.0.1") as hidden:
        page = hidden.get(f"/runs/{run_id}")
        as_json = hidden.get(f"/runs/{run_id}/json")
    assert page.status_code == 200
    assert "4111" not in page.text
    assert "hidden by the server" in page.text
    assert as_json.json()["input"] is None


def test_unknown_run_is_a_404_page(ui: TestClient) -> None:
    page = ui.get(f"/runs/{uuid.uuid4()}")
    assert page.status_code == 404
    assert ui.get("/runs/not-a-uuid").status_code == 404


def test_security_headers_on_every_response(ui: TestClient, pipe: str) -> None:
    for path in ("/", "/runs", "/static/dashboard.js", "/login"):
        response = ui.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_a_role_without_grants_gets_a_clear_403(bare_dsn: str) -> None:
    with TestClient(app(bare_dsn), base_url="http://127.0.0.1") as bare:
        page = bare.get("/")
        metrics = bare.get("/metrics")
    assert page.status_code == 403
    assert "pgflow.grant_dashboard" in page.text
    assert "Traceback" not in page.text
    assert metrics.status_code == 403
    assert "grant_dashboard" in metrics.text


def test_workers_page_shows_registered_workers_and_what_they_run(
    ui: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    alive, gone = uuid.uuid4(), uuid.uuid4()
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['pipe'], 'box-1', 42)", (alive,))
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['pipe'])", (gone,))
    conn.execute("SELECT pgflow.stop_worker(%s)", (gone,))
    start()
    conn.execute("SELECT pgflow.claim_tasks('pipe', 1, %s)", (alive,))
    page = ui.get("/workers")
    assert page.status_code == 200
    row = re.search(rf'<tr data-worker="{alive}" data-alive="yes">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "box-1" in row.group(1)
    assert re.findall(r'<td class="num">(\d*)</td>', row.group(1)) == ["42", "1"]
    assert f'<tr data-worker="{gone}" data-alive="no">' in page.text


def test_queues_page_counts_ready_delayed_and_started_tasks(
    ui: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    for _ in range(3):
        start()
    conn.execute("SELECT pgflow.claim_tasks('pipe', 1, %s)", (uuid.uuid4(),))
    page = ui.get("/queues")
    row = re.search(r'<tr data-queue="pipe/fetch">(.*?)</tr>', page.text, re.S)
    assert row is not None
    numbers = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    assert numbers[:4] == ["2", "0", "1", "0"]
    assert numbers[4].endswith(" s")
