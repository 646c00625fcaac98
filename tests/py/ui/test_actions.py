"""Token, session and CSRF: who may read and who may cancel or retry."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from pgflow.ui import app, is_loopback

from .conftest import TOKEN, Start, Work

pytestmark = pytest.mark.db
Conn = psycopg.Connection[tuple[Any, ...]]


def status_of(conn: Conn, run_id: object) -> str:
    row = conn.execute("SELECT status FROM pgflow.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


def sign_in(client: TestClient) -> str:
    """Signs in with the token; the CSRF token of the session."""
    response = client.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303
    page = client.get("/runs")
    assert page.status_code == 200
    return ""


def csrf_of(client: TestClient, run_id: object) -> str:
    page = client.get(f"/runs/{run_id}")
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match is not None, "no CSRF field on the run page"
    return match.group(1)


def test_without_a_token_actions_are_refused(
    ui: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    run_id = start()
    response = ui.post(f"/runs/{run_id}/cancel", data={"csrf": "x"})
    assert response.status_code == 403
    assert "no token" in response.text
    assert status_of(conn, run_id) == "started"


def test_with_a_token_pages_need_it(ui_token: TestClient, pipe: str) -> None:
    page = ui_token.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/"
    assert ui_token.get("/runs", headers={"accept": "application/json"}).status_code == 401
    assert ui_token.get("/metrics").status_code == 401
    assert ui_token.get("/events").status_code == 401
    wrong = ui_token.post("/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "pgflow_ui" not in wrong.headers.get("set-cookie", "")
    bearer = ui_token.get("/runs", headers={"authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200


def test_login_goes_back_only_to_a_path_of_this_site(ui_token: TestClient) -> None:
    response = ui_token.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()


def test_cancel_needs_the_session_and_its_csrf_token(
    ui_token: TestClient, conn: Conn, pipe: str, start: Start
) -> None:
    run_id = start()
    assert ui_token.post(f"/runs/{run_id}/cancel", data={"csrf": "x"}).status_code == 401
    sign_in(ui_token)
    csrf = csrf_of(ui_token, run_id)
    no_csrf = ui_token.post(f"/runs/{run_id}/cancel", data={})
    assert no_csrf.status_code == 403
    assert "CSRF" in no_csrf.text
    wrong = ui_token.post(f"/runs/{run_id}/cancel", data={"csrf": "0" * len(csrf)})
    assert wrong.status_code == 403
    assert status_of(conn, run_id) == "started"
    done = ui_token.post(f"/runs/{run_id}/cancel", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert status_of(conn, run_id) == "cancelled"


def test_retry_as_the_owner_resumes_a_failed_run(
    db: str, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    run_id = start()
    work(error="boom")
    assert status_of(conn, run_id) == "failed"
    with TestClient(app(db, token=TOKEN), base_url="http://127.0.0.1") as owner:
        sign_in(owner)
        csrf = csrf_of(owner, run_id)
        done = owner.post(f"/runs/{run_id}/retry", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert status_of(conn, run_id) == "started"


def test_retry_as_a_client_role_is_refused_with_the_grant_to_give(
    ui_token: TestClient, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    run_id = start()
    work(error="boom")
    sign_in(ui_token)
    csrf = csrf_of(ui_token, run_id)
    refused = ui_token.post(f"/runs/{run_id}/retry", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "GRANT EXECUTE ON FUNCTION pgflow.retry_run(uuid)" in refused.text
    assert status_of(conn, run_id) == "failed"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
