"""Signing in to the console and what its session cookie may do.

Signing in by password or token issues a console session (a token of kind `console`) in an `HttpOnly`,
`SameSite=Lax` cookie; signing out revokes it; a session that ended sends the next page to sign-in with where
it was. Every form needs its CSRF token, before sign-in too. The public API takes the cookie for reads, and
for changes only with the session's `X-CSRF-Token`. The language follows `Accept-Language` and the switch.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from console_world import ConsoleSession, World
from platform_server import ADMIN_TOKEN

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def users(world: World) -> dict[str, str]:
    """A developer with a password, and a plain user's API token."""
    with world.api() as api:
        made = api.post(
            "/api/v1/users", json={"name": "dev", "role": "developer", "password": "pass-dev-123456"}
        )
        assert made.status_code == 201, made.text
        user = api.post("/api/v1/users", json={"name": "plain", "role": "user"}).json()
        token = api.post("/api/v1/tokens", json={"name": "t", "user": user["id"]}).json()["token"]
    return {"dev": "pass-dev-123456", "plain": token}


def _cookie_header(session: ConsoleSession) -> str:
    return "; ".join(f"{name}={value}" for name, value in session.client.cookies.items())


def test_a_page_without_a_session_goes_to_sign_in_and_back(world: World) -> None:
    anonymous = world.anonymous()
    answer = anonymous.get("/ui/modules?x=1")
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.path == "/ui/sign-in"
    assert parse_qs(location.query)["next"] == ["/ui/modules?x=1"]
    page = anonymous.get(answer.headers["location"])
    assert page.status_code == 200
    assert 'name="next" value="/ui/modules?x=1"' in page.text
    assert "mp_csrf" in anonymous.client.cookies
    assert world.served.client().get("/").headers["location"] == "/ui/"


def test_password_sign_in_sets_a_console_session_cookie(world: World, users: dict[str, str]) -> None:
    session = world.anonymous()
    session.get("/ui/sign-in")
    answer = session.post(
        "/ui/sign-in/password", {"name": "dev", "password": users["dev"], "next": "/ui/jobs"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/jobs"
    cookie = next(value for value in answer.headers.get_list("set-cookie") if value.startswith("mp_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https would add it
    page = session.get("/ui/modules")
    assert page.status_code == 200 and ">dev<" in page.text
    with world.api() as api:
        tokens = api.get("/api/v1/tokens").json()["tokens"]
        audit = api.get("/api/v1/audit", params={"action": "auth.login"}).json()["events"]
    assert any(t["kind"] == "console" and t["user"] == "dev" for t in tokens)
    assert any(e["actor"] == "dev" and e["details"].get("via") == "password" for e in audit)


def test_wrong_passwords_and_tokens_are_refused_on_the_page(world: World, users: dict[str, str]) -> None:
    session = world.anonymous()
    session.get("/ui/sign-in")
    wrong = session.post("/ui/sign-in/password", {"name": "dev", "password": "nope", "next": "/ui/"})
    assert wrong.status_code == 401
    assert "Wrong user name or password." in wrong.text
    assert 'value="dev"' in wrong.text  # the name typed is kept
    bad_token = session.post("/ui/sign-in/token", {"token": "mp_not-a-real-token", "next": "/ui/"})
    assert bad_token.status_code == 401
    assert "mp_session" not in session.client.cookies


def test_repeated_failures_are_throttled(world: World) -> None:
    session = world.anonymous()
    session.get("/ui/sign-in")
    statuses = [
        session.post(
            "/ui/sign-in/password", {"name": "nobody-here", "password": "x", "next": "/ui/"}
        ).status_code
        for _ in range(7)
    ]
    # Five failures a minute per account and per address (this module's other tests fail from it too).
    assert statuses[0] == 401 and statuses[-1] == 429
    assert statuses == sorted(statuses)  # once refused, refused


def test_forms_without_their_csrf_token_change_nothing(world: World, users: dict[str, str]) -> None:
    session = world.anonymous()
    session.get("/ui/sign-in")
    refused = session.post("/ui/sign-in/token", {"token": ADMIN_TOKEN, "next": "/ui/"}, csrf=False)
    assert refused.status_code == 403
    assert "mp_session" not in session.client.cookies
    forged = session.post("/ui/sign-in/token", {"token": ADMIN_TOKEN, "next": "/ui/", "csrf": "forged"})
    assert forged.status_code == 403

    signed_in = world.console()
    out = signed_in.post("/ui/sign-out", {}, csrf=False)
    assert out.status_code == 403
    assert signed_in.get("/ui/modules").status_code == 200  # still signed in


def test_sign_out_revokes_the_session(world: World) -> None:
    session = world.console()
    secret = session.client.cookies["mp_session"]
    answer = session.post("/ui/sign-out", {})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/sign-in"
    with world.served.client({"Authorization": f"Bearer {secret}"}) as stolen:
        assert stolen.get("/api/v1/auth/me").status_code == 401
    replay = world.served.client({"Cookie": f"mp_session={secret}"})
    assert replay.get("/ui/modules").status_code == 303


def test_an_ended_session_returns_to_sign_in_with_where_it_was(world: World) -> None:
    session = world.console()
    with world.api() as api:
        mine = [
            t
            for t in api.get("/api/v1/tokens").json()["tokens"]
            if t["kind"] == "console" and not t["revoked_at"]
        ]
        for token in mine:
            assert api.delete(f"/api/v1/tokens/{token['id']}").status_code in (200, 204)
    answer = session.get("/ui/modules?state=running")
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["next"] == ["/ui/modules?state=running"] and query["expired"] == ["1"]
    page = session.get(answer.headers["location"])
    assert "Your session has ended" in page.text
    htmx = session.client.post(
        "/ui/modules/x/rollback",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/ui/modules/x"},
    )
    assert htmx.status_code == 204
    assert htmx.headers["hx-redirect"].startswith("/ui/sign-in?next=%2Fui%2Fmodules%2Fx")


def test_the_api_takes_the_cookie_for_reads_and_for_changes_only_with_the_csrf_header(world: World) -> None:
    session = world.console()
    secret = session.client.cookies["mp_session"]
    csrf = hashlib.sha256(b"modelport-csrf:" + secret.encode()).hexdigest()
    assert session.csrf == csrf
    cookie = {"Cookie": _cookie_header(session)}
    with world.served.client(cookie) as browser:
        assert browser.get("/api/v1/auth/me").json()["name"] == "admin"
        body = {"documents": [], "dry_run": True}
        assert browser.post("/api/v1/apply", json=body).status_code == 401
        assert browser.post("/api/v1/apply", json=body, headers={"X-CSRF-Token": "0" * 64}).status_code == 401
        assert browser.post("/api/v1/apply", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200


def test_next_never_leaves_the_console(world: World) -> None:
    session = world.anonymous()
    session.get("/ui/sign-in")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = session.post("/ui/sign-in/token", {"token": ADMIN_TOKEN, "next": target})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/", target
        session.client.cookies.clear()
        session.get("/ui/sign-in")


def test_the_language_follows_the_browser_and_the_switch(world: World) -> None:
    session = world.anonymous()
    russian = session.get("/ui/sign-in", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"})
    assert '<html lang="ru">' in russian.text
    assert "Войти" in russian.text
    english = session.get("/ui/sign-in", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert '<html lang="en">' in english.text
    switched = session.get("/ui/language/ru?next=/ui/sign-in")
    assert switched.status_code == 303 and switched.headers["location"] == "/ui/sign-in"
    assert '<html lang="ru">' in session.get("/ui/sign-in", headers={"Accept-Language": "en"}).text


def test_over_https_the_cookie_is_secure(world: World) -> None:
    session = ConsoleSession(world.served.client())
    session.client.base_url = httpx.URL("https://testserver")
    session.get("/ui/sign-in")
    answer = session.post("/ui/sign-in/token", {"token": ADMIN_TOKEN, "next": "/ui/"})
    cookie = next(value for value in answer.headers.get_list("set-cookie") if value.startswith("mp_session="))
    assert "Secure" in cookie


def test_single_sign_on_needs_an_issuer_and_a_flow_it_started(world: World) -> None:
    session = world.anonymous()
    assert session.get("/ui/sign-in/oidc").status_code == 400  # no issuer configured here
    stray = session.get("/ui/sign-in/oidc/callback?state=abc&code=def")
    assert stray.status_code == 303
    assert parse_qs(urlsplit(stray.headers["location"]).query)["problem"] == ["oidc_expired"]
    assert "single sign-on" not in session.get("/ui/sign-in").text
