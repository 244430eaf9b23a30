"""The console's administration pages: users, groups, tokens and the audit trail, as a browser uses them."""

from __future__ import annotations

import html
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

from modelport.control.audit import AuditTrail
from modelport.control.identity import Identity
from modelport.control.oidc import OidcIdentity
from modelport.db import Database

if TYPE_CHECKING:
    from console_world import ConsoleSession, World

_SECRET = re.compile(r'id="secret"[^>]*value="([^"]+)"')


def _api_users(world: World) -> dict[str, dict[str, Any]]:
    with world.api() as api:
        return {user["name"]: user for user in api.get("/api/v1/users").json()["users"]}


def _api_tokens(world: World, user_id: int) -> list[dict[str, Any]]:
    with world.api() as api:
        tokens: list[dict[str, Any]] = api.get("/api/v1/tokens", params={"user": user_id}).json()["tokens"]
        return tokens


def _make_user(world: World, name: str, role: str = "user", groups: tuple[str, ...] = ()) -> tuple[int, str]:
    """A user made through the API, and an API token of theirs."""
    with world.api() as api:
        made = api.post("/api/v1/users", json={"name": name, "role": role, "groups": list(groups)})
        assert made.status_code == 201, made.text
        user_id = made.json()["id"]
        token = api.post("/api/v1/tokens", json={"name": "tests", "user": user_id})
        assert token.status_code == 201, token.text
        return int(user_id), str(token.json()["token"])


def _new_token(session: ConsoleSession, name: str, **fields: Any) -> tuple[httpx.Response, str]:
    """A token made on the tokens page: the answer page and the secret it shows."""
    answer = session.post("/ui/tokens", {"name": name, **fields})
    assert answer.status_code == 200, answer.text
    found = _SECRET.search(answer.text)
    assert found, answer.text
    return answer, html.unescape(found.group(1))


def test_an_admin_makes_a_user_who_then_signs_in(world: World) -> None:
    admin = world.console()
    assert admin.post("/ui/groups", {"path": "/team/vision"}).status_code == 303
    groups = admin.get("/ui/groups")
    assert groups.status_code == 200 and "/team/vision" in groups.text

    made = admin.post(
        "/ui/users",
        {"name": "carol", "role": "developer", "password": "carol-password", "groups": ["/team/vision"]},
    )
    assert made.status_code == 303 and made.headers["location"] == "/ui/users"
    carol = _api_users(world)["carol"]
    assert (carol["role"], carol["groups"], carol["source"], carol["disabled"]) == (
        "developer",
        ["/team/vision"],
        "local",
        False,
    )
    page = admin.get("/ui/users")
    row = page.text[page.text.index(f'data-user="{carol["id"]}"') :]
    row = row[: row.index("</tr>")]
    assert "carol" in row and "developer" in row and "/team/vision" in row and "never" in row

    # A token made for her on the tokens page signs her in to the console.
    listed = admin.get(f"/ui/tokens?user={carol['id']}")
    assert "Tokens of carol" in listed.text
    answer, secret = _new_token(admin, "carol-laptop", user=str(carol["id"]), days="30")
    assert "For carol." in answer.text
    session = world.console(secret)
    mine = session.get("/ui/tokens")
    assert mine.status_code == 200
    assert '<span class="who" title="developer">carol</span>' in mine.text
    assert "carol-laptop" in mine.text and "Your tokens" in mine.text
    assert 'data-kind="console"' in mine.text and "this session" in mine.text

    # Her password works on the sign-in form too; her last sign-in is recorded.
    browser = world.anonymous()
    browser.get("/ui/sign-in")
    signed = browser.post(
        "/ui/sign-in/password", {"name": "carol", "password": "carol-password", "next": "/ui/tokens"}
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/tokens"
    assert _api_users(world)["carol"]["last_login_at"] is not None


def test_a_new_token_secret_is_shown_once(world: World) -> None:
    admin = world.console()
    answer, secret = _new_token(admin, "shown-once")
    assert answer.text.count(secret) == 1
    assert "shown this once" in answer.text
    assert 'data-copy="secret"' in answer.text and "/static/admin.js" in answer.text
    assert answer.headers["cache-control"] == "no-store"
    listed = admin.get("/ui/tokens")
    assert "shown-once" in listed.text and secret[:10] in listed.text
    assert secret not in listed.text
    with world.api(secret) as api:
        assert api.get("/api/v1/auth/me").json()["name"] == "admin"


def test_revoking_tokens(world: World) -> None:
    user_id, _ = _make_user(world, "dave")
    admin = world.console()
    _, secret = _new_token(admin, "dave-ci", user=str(user_id))
    dave = world.console(secret)
    assert dave.get("/ui/tokens").status_code == 200
    listed = {token["name"]: token for token in _api_tokens(world, user_id)}
    assert listed["console"]["kind"] == "console" and listed["dave-ci"]["kind"] == "api"

    # Revoked from the admin's page: the token stops working at once. The console session signed in with it
    # is a token of its own (kind console), which lives on until it is revoked or signed out.
    revoked = admin.post(f"/ui/tokens/{listed['dave-ci']['id']}/revoke", {"user": str(user_id)})
    assert revoked.status_code == 303 and revoked.headers["location"] == f"/ui/tokens?user={user_id}"
    with world.api(secret) as api:
        assert api.get("/api/v1/auth/me").status_code == 401
    refused = world.anonymous()
    refused.get("/ui/sign-in")
    assert refused.post("/ui/sign-in/token", {"token": secret, "next": "/ui/modules"}).status_code == 401
    assert dave.get("/ui/tokens").status_code == 200

    # Dave revokes his own console session from his tokens page: he is signed out.
    page = dave.get("/ui/tokens")
    assert 'data-state="revoked"' in page.text
    assert dave.post(f"/ui/tokens/{listed['console']['id']}/revoke").status_code == 303
    after = dave.get("/ui/tokens")
    assert after.status_code == 303 and after.headers["location"].startswith(
        "/ui/sign-in?next=%2Fui%2Ftokens"
    )


def test_a_non_admin_is_answered_as_the_api_answers(world: World) -> None:
    erin_id, erin_token = _make_user(world, "erin", groups=("/team/vision",))
    frank_id, frank_token = _make_user(world, "frank")
    erin = world.console(erin_token)
    for path in ("/ui/users", "/ui/groups", "/ui/audit"):
        answer = erin.get(path)
        assert answer.status_code == 403 and "Not allowed" in answer.text, path
    assert erin.get(f"/ui/users/{frank_id}").status_code == 404
    assert erin.get(f"/ui/users/{erin_id}").status_code == 403
    assert erin.post(f"/ui/users/{frank_id}/delete").status_code == 404
    assert erin.post(f"/ui/users/{frank_id}/disable").status_code == 404
    assert erin.post("/ui/users", {"name": "mallory", "password": "mallory-password"}).status_code == 403
    groups = {group["path"]: group["id"] for group in _api_groups(world)}
    assert erin.post(f"/ui/groups/{groups['/team/vision']}/delete").status_code == 403
    users = _api_users(world)
    assert "frank" in users and not users["frank"]["disabled"] and "mallory" not in users
    assert "/team/vision" in {group["path"] for group in _api_groups(world)}

    # Tokens: her own only; someone else's is no token at all.
    page = erin.get("/ui/tokens")
    assert page.status_code == 200 and "Your tokens" in page.text and 'name="user"' in page.text
    assert "<select" not in page.text
    frank_tokens = _api_tokens(world, frank_id)
    assert erin.post(f"/ui/tokens/{frank_tokens[0]['id']}/revoke").status_code == 404
    assert _api_tokens(world, frank_id)[0]["revoked_at"] is None
    assert 'data-token="' not in erin.get(f"/ui/tokens?user={frank_id}").text
    assert erin.post("/ui/tokens", {"name": "for-frank", "user": str(frank_id)}).status_code == 404
    assert len(_api_tokens(world, frank_id)) == 1
    assert frank_token


def _api_groups(world: World) -> list[dict[str, Any]]:
    with world.api() as api:
        groups: list[dict[str, Any]] = api.get("/api/v1/groups").json()["groups"]
        return groups


def test_a_form_without_its_csrf_token_changes_nothing(world: World) -> None:
    admin = world.console()
    user_id, _ = _make_user(world, "grace")
    attempts = [
        ("/ui/users", {"name": "no-csrf", "password": "no-csrf-password"}),
        ("/ui/groups", {"path": "/no/csrf"}),
        ("/ui/tokens", {"name": "no-csrf"}),
        (f"/ui/users/{user_id}", {"role": "admin"}),
        (f"/ui/users/{user_id}/disable", {}),
        (f"/ui/users/{user_id}/delete", {}),
    ]
    for path, data in attempts:
        answer = admin.post(path, data, csrf=False)
        assert answer.status_code == 403, path
        assert admin.post(path, {**data, "csrf": "forged"}, csrf=False).status_code == 403, path
    users = _api_users(world)
    assert "no-csrf" not in users and users["grace"]["role"] == "user" and not users["grace"]["disabled"]
    assert "/no/csrf" not in {group["path"] for group in _api_groups(world)}
    with world.api() as api:
        assert "no-csrf" not in {token["name"] for token in api.get("/api/v1/tokens").json()["tokens"]}


def test_changing_disabling_and_deleting_a_user(world: World) -> None:
    admin = world.console()
    user_id, token = _make_user(world, "heidi")
    assert admin.post("/ui/groups", {"path": "/team/ops"}).status_code == 303
    page = admin.get(f"/ui/users/{user_id}")
    assert page.status_code == 200 and "heidi" in page.text
    changed = admin.post(f"/ui/users/{user_id}", {"role": "developer", "groups": ["/team/ops"]})
    assert changed.status_code == 303 and changed.headers["location"] == f"/ui/users/{user_id}"
    heidi = _api_users(world)["heidi"]
    assert heidi["role"] == "developer" and heidi["groups"] == ["/team/ops"]

    refused = admin.post(f"/ui/users/{user_id}", {"role": "developer", "password": "short"})
    assert refused.status_code == 422 and "at least 8" not in refused.text and "8 to 1024" in refused.text
    assert admin.post(f"/ui/users/{user_id}", {"role": "emperor"}).status_code == 422

    assert admin.post(f"/ui/users/{user_id}/disable").status_code == 303
    assert _api_users(world)["heidi"]["disabled"]
    with world.api(token) as api:
        assert api.get("/api/v1/auth/me").status_code == 401
    assert admin.post(f"/ui/users/{user_id}/enable").status_code == 303
    with world.api(token) as api:
        assert api.get("/api/v1/auth/me").status_code == 200

    # Deleting the group leaves heidi without it; deleting heidi takes her tokens too.
    group_id = {group["path"]: group["id"] for group in _api_groups(world)}["/team/ops"]
    assert admin.post(f"/ui/groups/{group_id}/delete").status_code == 303
    assert _api_users(world)["heidi"]["groups"] == []
    assert admin.post(f"/ui/users/{user_id}/delete").status_code == 303
    assert "heidi" not in _api_users(world)
    with world.api(token) as api:
        assert api.get("/api/v1/auth/me").status_code == 401
    assert admin.get(f"/ui/users/{user_id}").status_code == 404
    assert admin.get("/ui/users/99999999999").status_code == 404


def test_refused_forms_say_why_and_keep_what_was_typed(world: World) -> None:
    admin = world.console()
    bad_path = admin.post("/ui/groups", {"path": "team-a"})
    assert (
        bad_path.status_code == 422
        and "is not a group path" in bad_path.text
        and 'value="team-a"' in bad_path.text
    )
    assert admin.post("/ui/groups", {"path": "/team/twice"}).status_code == 303
    assert admin.post("/ui/groups", {"path": "/team/twice"}).status_code == 409

    unknown_group = admin.post("/ui/users", {"name": "ivan", "role": "developer", "groups": ["/no/such"]})
    assert unknown_group.status_code == 400 and "no such group" in unknown_group.text
    assert 'value="ivan"' in unknown_group.text
    assert admin.post("/ui/users", {"name": "ivan"}).status_code == 303
    assert admin.post("/ui/users", {"name": "ivan"}).status_code == 409

    for days in ("0", "3651", "soon"):
        answer = admin.post("/ui/tokens", {"name": "bad-days", "days": days})
        assert answer.status_code == 422 and 'id="secret"' not in answer.text
    assert admin.post("/ui/tokens", {"name": "  "}).status_code == 422


def test_names_from_users_come_back_escaped(world: World) -> None:
    admin = world.console()
    script = "<script>alert(1)</script>"
    refused = admin.post("/ui/users", {"name": script, "password": "whatever-password"})
    assert refused.status_code == 400
    assert script not in refused.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in refused.text

    _, secret = _new_token(admin, script)
    tokens = admin.get("/ui/tokens")
    assert script not in tokens.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in tokens.text
    audit = admin.get("/ui/audit?action=token.create")
    assert script not in audit.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in audit.text

    # A user recorded at a first single sign-on keeps the name its identity provider gave it.
    database = Database(f"sqlite:///{world.root / 'platform' / 'modelport.db'}")
    try:
        identity = Identity(database, audit=AuditTrail(database))
        try:
            identity.oidc_principal(
                OidcIdentity(
                    issuer="https://idp.example",
                    subject="s-1",
                    username=f"{script}<img src=x onerror=alert(2)>",
                    groups=frozenset({"/team/idp"}),
                    roles=frozenset(),
                    email=None,
                    expires_at=time.time() + 60,
                )
            )
        finally:
            identity.close()
    finally:
        database.close()
    users = admin.get("/ui/users")
    assert users.status_code == 200
    assert script not in users.text and "<img src=x" not in users.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in users.text
    assert "single sign-on" in users.text and "/team/idp" in users.text
    assert secret


def test_the_audit_trail_shows_console_actions_newest_first(world: World) -> None:
    user_id, token = _make_user(world, "judy", role="developer")
    judy = world.console(token)
    _new_token(judy, "judy-made")
    admin = world.console()
    assert admin.post("/ui/users", {"name": "kim", "role": "user"}).status_code == 303

    page = admin.get("/ui/audit")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-event="(\d+)">(.*?)</tr>', page.text, re.S)
    ids = [int(number) for number, _ in rows]
    assert ids == sorted(ids, reverse=True)
    newest = rows[0][1]
    assert "user.create" in newest and "user/kim" in newest and ">admin</a>" in newest
    judys = admin.get("/ui/audit", params={"actor": "judy", "action": "token.create"})
    found = re.findall(r'<tr data-event="\d+">(.*?)</tr>', judys.text, re.S)
    assert len(found) == 1 and ">judy</a>" in found[0] and "judy-made" in found[0] and "127.0.0.1" in found[0]
    assert 'value="judy"' in judys.text
    by_target = admin.get("/ui/audit", params={"target": "user/kim"})
    assert by_target.text.count('<tr data-event="') == 1
    future = admin.get("/ui/audit", params={"since": "2999-01-01T00:00"})
    assert 'data-event="' not in future.text and "No events." in future.text
    assert admin.get("/ui/audit", params={"since": "yesterday"}).status_code == 422
    assert admin.get("/ui/audit", params={"cursor": "x1"}).status_code == 400
    assert user_id


def test_the_audit_trail_pages_back(world: World) -> None:
    with world.api() as api:
        for number in range(55):
            assert api.post("/api/v1/groups", json={"path": f"/paged/g{number}"}).status_code == 201
    admin = world.console()
    first = admin.get("/ui/audit", params={"action": "group.create"})
    shown = re.findall(r'<tr data-event="(\d+)">', first.text)
    assert len(shown) == 50
    older = re.search(r'href="/ui/audit\?([^"]+)" rel="next"', first.text)
    assert older, first.text
    second = admin.get("/ui/audit?" + html.unescape(older.group(1)))
    more = re.findall(r'<tr data-event="(\d+)">', second.text)
    assert more and max(map(int, more)) < min(map(int, shown))
    assert "group/paged/g0" in second.text and "Newest" in second.text and 'rel="next"' not in second.text


def test_the_pages_render_in_russian(world: World) -> None:
    admin = world.console()
    _new_token(admin, "russian")
    admin.client.cookies.set("mp_lang", "ru")
    user_id = _api_users(world)["admin"]["id"]
    for path in ("/ui/users", f"/ui/users/{user_id}", "/ui/groups", "/ui/tokens?user=all", "/ui/audit"):
        answer = admin.get(path)
        assert answer.status_code == 200, path
        assert '<html lang="ru">' in answer.text, path
    answer = admin.post("/ui/tokens", {"name": "ru-token"})
    assert answer.status_code == 200 and 'id="secret"' in answer.text
