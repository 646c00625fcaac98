"""The dashboard's pages against a live database, read as a grant_client role."""

from __future__ import annotations

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


def test_runs_paging_walks_back_through_all_runs_newest_first(
    ui: TestClient, conn: Conn, pipe: str
) -> None:
    conn.execute(
        "SELECT pgflow.start_flow('pipe', jsonb_build_object('i', i))"
        " FROM generate_series(1, 120) AS i"
    )
    expected = [
        str(r[0])
        for r in conn.execute(
            "SELECT run_id FROM pgflow.runs ORDER BY started_at DESC, run_id"
        ).fetchall()
    ]
    seen: list[str] = []
    page_no = 0
    while True:
        page = ui.get(f"/runs?page={page_no}")
        seen += re.findall(r'<tr data-run="([0-9a-f-]+)">', page.text)
        if 'rel="next"' not in page.text:
            break
        page_no += 1
    assert page_no == 2
    assert seen == expected


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
