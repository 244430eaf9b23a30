"""The identity commands against a scripted transport: the exact requests they send (names resolved to ids
through the lists), what reaches stdout and stderr, the exit codes, and that no password is ever shown."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from modelport.cli import identity as identity_cli
from modelport.cli import platform as platform_cli
from modelport.cli.main import app
from modelport.client import Client, config_path, load_saved
from modelport.core.manifests import ManifestError, parse_document

runner = CliRunner()

PASSWORD = "correct horse battery"
Handler = Callable[[httpx.Request], httpx.Response]


pytestmark = pytest.mark.usefixtures("server_url")


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Make every client the commands create (the password exchange's too) answer with `handler`; returns
    the list of requests it receives."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            request.read()
            seen.append(request)
            return handler(request)

        transport = httpx.MockTransport(record)

        class Scripted(Client):
            def __init__(self, url: str, token: str, **options: Any) -> None:
                super().__init__(url, token, transport=transport)

        monkeypatch.setattr(platform_cli, "Client", Scripted)
        return seen

    return install


def sent(requests: list[httpx.Request]) -> list[tuple[str, str, Any]]:
    """(method, path with query, JSON body or None) of each request."""
    return [
        (r.method, r.url.raw_path.decode(), json.loads(r.content) if r.content else None) for r in requests
    ]


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def error(status: int, code: str, message: str = "refused", details: Any = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": details}})


def user(name: str = "ann", **fields: Any) -> dict[str, Any]:
    base = {
        "id": 7,
        "name": name,
        "role": "developer",
        "groups": ["/team/users"],
        "source": "local",
        "disabled": False,
        "created_at": "2024-05-01T10:00:00+00:00",
        "last_login_at": "2024-05-02T08:30:00+00:00",
    }
    return base | fields


USERS = [
    user("admin", id=1, role="admin", groups=[]),
    user(),
    user("bob", id=9, source="oidc", disabled=True),
]
GROUPS = [
    {"id": 3, "path": "/team/users", "members": ["ann", "bob"], "created_at": "2024-05-01T10:00:00+00:00"},
    {"id": 4, "path": "/ops", "members": [], "created_at": "2024-05-01T11:00:00+00:00"},
]


def token(**fields: Any) -> dict[str, Any]:
    base = {
        "id": 11,
        "name": "ci",
        "user": "ann",
        "user_id": 7,
        "prefix": "mp_abcdefg",
        "kind": "api",
        "created_at": "2024-05-01T10:00:00+00:00",
        "expires_at": None,
        "revoked_at": None,
    }
    return base | fields


def lists(request: httpx.Request) -> httpx.Response | None:
    """The users and groups lists, for commands that resolve names; None for other requests."""
    if request.method == "GET" and request.url.path == "/api/v1/users":
        return httpx.Response(200, json={"users": USERS})
    if request.method == "GET" and request.url.path == "/api/v1/groups":
        return httpx.Response(200, json={"groups": GROUPS})
    return None


def no_password_in(result: Any) -> None:
    assert PASSWORD not in result.stdout
    assert PASSWORD not in result.stderr


# login


def login_server(request: httpx.Request) -> httpx.Response:
    """A server whose password exchange gives `mp_session` and whose token endpoint makes `mp_long`."""
    path = request.url.path
    if path == "/api/v1/auth/token":
        ok = json.loads(request.content)["password"] == PASSWORD
        if not ok:
            return error(401, "invalid_credentials", "wrong user name or password")
        session = {"access_token": "mp_session", "token_type": "bearer", "expires_in": 900, "expires_at": "x"}
        return httpx.Response(200, json=session)
    if path == "/api/v1/tokens":
        return httpx.Response(201, json=token(id=12, name="modelport-cli@host", token="mp_long"))
    if path == "/api/v1/auth/me":
        caller = {
            "id": 7,
            "name": "ann",
            "role": "developer",
            "groups": [],
            "source": "local",
            "token_id": 12,
        }
        return httpx.Response(200, json=caller)
    return error(404, "not_found")


@pytest.fixture
def logged_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_URL")
    monkeypatch.delenv("MODELPORT_TOKEN")


def test_login_with_a_password_saves_a_new_api_token(answer: Any, logged_out: None) -> None:
    seen = answer(login_server)
    result = run(
        "login", "http://platform.test/", "--username", "ann", "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert sent(seen) == [
        ("POST", "/api/v1/auth/token", {"username": "ann", "password": PASSWORD}),
        ("POST", "/api/v1/tokens", {"name": f"modelport-cli@{socket.gethostname()}", "expires_in_days": 90}),
        ("GET", "/api/v1/auth/me", None),
    ]
    assert "Authorization" not in seen[0].headers
    assert seen[1].headers["Authorization"] == "Bearer mp_session"
    assert seen[2].headers["Authorization"] == "Bearer mp_long"
    assert result.stdout == ""
    assert result.stderr.startswith("Logged in to http://platform.test as ann (developer)\n")
    no_password_in(result)
    assert "mp_long" not in result.output
    saved = load_saved()
    assert saved is not None
    assert (saved.url, saved.token) == ("http://platform.test", "mp_long")
    assert PASSWORD not in config_path().read_text()


def test_login_asks_for_the_name_and_a_hidden_password(answer: Any, logged_out: None) -> None:
    seen = answer(login_server)
    result = run("login", "http://platform.test", input=f"ann\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(seen[0].content) == {"username": "ann", "password": PASSWORD}
    assert "User name" in result.stderr
    no_password_in(result)
    saved = load_saved()
    assert saved is not None
    assert saved.token == "mp_long"


def test_login_with_a_wrong_password_saves_nothing(answer: Any, logged_out: None) -> None:
    seen = answer(login_server)
    result = run("login", "http://platform.test", "--username", "ann", "--password-stdin", input="nope\n")
    assert result.exit_code == 1
    assert result.stderr == "error: the server refused the user name or password\n"
    assert len(seen) == 1
    assert load_saved() is None


def test_login_throttled_says_when_to_try_again(answer: Any, logged_out: None) -> None:
    throttled = error(429, "too_many_attempts", "too many failed logins")
    answer(lambda r: httpx.Response(429, json=throttled.json(), headers={"Retry-After": "30"}))
    result = run("login", "http://platform.test", "--username", "ann", "--password-stdin", input="x\n")
    assert result.exit_code == 1
    assert result.stderr == "error: too many failed logins; try again in 30 s (too_many_attempts)\n"
    assert load_saved() is None


def test_login_with_a_token_checks_it_with_me(answer: Any, logged_out: None) -> None:
    seen = answer(login_server)
    result = run("login", "http://platform.test", "--token", " mp_given ")
    assert result.exit_code == 0, result.output
    assert sent(seen) == [("GET", "/api/v1/auth/me", None)]
    assert seen[0].headers["Authorization"] == "Bearer mp_given"
    assert "Logged in to http://platform.test as ann (developer)" in result.stderr
    saved = load_saved()
    assert saved is not None
    assert saved.token == "mp_given"

    answer(lambda r: error(401, "invalid_token", "the token is not valid"))
    result = run("login", "http://other.test", "--token", "mp_wrong")
    assert result.exit_code == 1
    assert result.stderr == "error: the server refused the token\n"
    saved = load_saved()
    assert saved is not None
    assert saved.url == "http://platform.test"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--password-stdin"], "--password-stdin needs --username"),
        (["--token", "t", "--username", "ann"], "--token does not go with --username or --password-stdin"),
        (["--username", "ann", "--password-stdin"], "no password on stdin"),
    ],
)
def test_login_usage_errors_ask_no_server(
    no_server: None, logged_out: None, args: list[str], message: str
) -> None:
    result = run("login", "http://platform.test", *args, input="")
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


# whoami


def test_whoami_in_every_format(answer: Any) -> None:
    caller = {
        "id": 7,
        "name": "ann",
        "role": "developer",
        "groups": ["/a", "/b"],
        "source": "oidc",
        "token_id": 3,
    }
    seen = answer(lambda r: httpx.Response(200, json=caller))
    result = run("whoami")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout) == [
        ["NAME", "ROLE", "GROUPS", "SOURCE"],
        ["ann", "developer", "/a,", "/b", "oidc"],
    ]
    assert sent(seen) == [("GET", "/api/v1/auth/me", None)]
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert json.loads(run("whoami", "-o", "json").stdout) == caller
    assert yaml.safe_load(run("whoami", "-o", "yaml").stdout) == caller


def test_whoami_refused_exits_1(answer: Any) -> None:
    answer(lambda r: error(401, "invalid_token", "the token is not valid"))
    result = run("whoami")
    assert result.exit_code == 1
    assert result.stderr == "error: the token is not valid (invalid_token)\n"
    assert result.stdout == ""


# users


def test_users_list_in_every_format(answer: Any) -> None:
    answer(lambda r: httpx.Response(200, json={"users": USERS}))
    result = run("users", "list")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout) == [
        ["NAME", "ROLE", "GROUPS", "SOURCE", "STATUS", "LAST", "LOGIN"],
        ["admin", "admin", "-", "local", "active", "2024-05-02", "08:30:00"],
        ["ann", "developer", "/team/users", "local", "active", "2024-05-02", "08:30:00"],
        ["bob", "developer", "/team/users", "oidc", "disabled", "2024-05-02", "08:30:00"],
    ]
    assert json.loads(run("users", "list", "-o", "json").stdout) == USERS
    assert yaml.safe_load(run("users", "list", "-o", "yaml").stdout) == USERS


def test_users_get_finds_the_name_in_the_list(answer: Any) -> None:
    seen = answer(lambda r: lists(r) or error(500, "internal"))
    result = run("users", "get", "ann", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == user()
    assert sent(seen) == [("GET", "/api/v1/users", None)]
    assert rows(run("users", "get", "bob").stdout)[1][:5] == [
        "bob",
        "developer",
        "/team/users",
        "oidc",
        "disabled",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["users", "get", "zed"],
        ["users", "update", "zed", "--role", "admin"],
        ["users", "delete", "zed"],
        ["tokens", "list", "--user", "zed"],
        ["tokens", "create", "ci", "--user", "zed"],
    ],
)
def test_an_unknown_user_name_exits_1(answer: Any, args: list[str]) -> None:
    seen = answer(lambda r: lists(r) or error(500, "internal"))
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr == "error: no user named zed\n"
    assert result.stdout == ""
    assert sent(seen) == [("GET", "/api/v1/users", None)]


def test_users_create_sends_what_is_given(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(201, json=user()))
    result = run(
        "users", "create", "ann", "--role", "developer", "--group", "/team/users", "--group", "/ops",
        "--password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = {"name": "ann", "role": "developer", "groups": ["/team/users", "/ops"], "password": PASSWORD}
    assert sent(seen) == [("POST", "/api/v1/users", body)]
    assert result.stderr == "created user ann\n"
    assert rows(result.stdout)[1][:2] == ["ann", "developer"]
    no_password_in(result)


def test_users_create_off_a_terminal_makes_no_password(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(201, json=user(role="user", groups=[])))
    result = run("users", "create", "ann", "-o", "json")
    assert result.exit_code == 0, result.output
    assert sent(seen) == [("POST", "/api/v1/users", {"name": "ann"})]
    assert json.loads(result.stdout)["role"] == "user"


def test_users_create_on_a_terminal_asks_twice(answer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_cli, "_interactive", lambda: True)
    seen = answer(lambda r: httpx.Response(201, json=user()))
    result = run("users", "create", "ann", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(seen[0].content) == {"name": "ann", "password": PASSWORD}
    assert "Repeat for confirmation" in result.stderr
    no_password_in(result)


def test_users_create_of_a_taken_name_exits_1(answer: Any) -> None:
    answer(lambda r: error(409, "conflict", "a user named ann exists"))
    result = run("users", "create", "ann")
    assert result.exit_code == 1
    assert result.stderr == "error: a user named ann exists (conflict)\n"


def test_users_create_rejected_as_invalid_exits_2_with_the_details(answer: Any) -> None:
    details = [{"field": "name", "code": "invalid", "message": "not a user name"}]
    answer(lambda r: error(422, "validation_failed", "the request is not valid", details))
    result = run("users", "create", "a b")
    assert result.exit_code == 2
    assert result.stderr == "error: the request is not valid (validation_failed)\n  name: not a user name\n"


def test_users_create_rejects_an_unknown_role(no_server: None) -> None:
    assert run("users", "create", "ann", "--role", "boss").exit_code == 2


def test_users_update_resolves_the_name_and_patches_only_what_is_given(answer: Any) -> None:
    seen = answer(lambda r: lists(r) or httpx.Response(200, json=user(role="admin", disabled=True)))
    result = run("users", "update", "ann", "--role", "admin", "--disable", "--password-stdin", input=PASSWORD)
    assert result.exit_code == 0, result.output
    assert sent(seen) == [
        ("GET", "/api/v1/users", None),
        ("PATCH", "/api/v1/users/7", {"role": "admin", "password": PASSWORD, "disabled": True}),
    ]
    assert result.stderr == "updated user ann\n"
    assert rows(result.stdout)[1][4] == "disabled"
    no_password_in(result)

    seen = answer(lambda r: lists(r) or httpx.Response(200, json=user()))
    assert run("users", "update", "bob", "--enable", "--group", "/ops").exit_code == 0
    assert sent(seen)[1] == ("PATCH", "/api/v1/users/9", {"groups": ["/ops"], "disabled": False})
    assert run("users", "update", "bob", "--no-groups").exit_code == 0
    assert sent(seen)[3] == ("PATCH", "/api/v1/users/9", {"groups": []})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to change: give --role, --group, --no-groups, --password-stdin, --disable or --enable"),
        (["--group", "/a", "--no-groups"], "--group and --no-groups do not go together"),
    ],
)
def test_users_update_usage_errors_ask_no_server(no_server: None, args: list[str], message: str) -> None:
    result = run("users", "update", "ann", *args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_users_delete_resolves_the_name(answer: Any) -> None:
    seen = answer(lambda r: lists(r) or httpx.Response(204))
    result = run("users", "delete", "bob")
    assert result.exit_code == 0, result.output
    assert sent(seen) == [("GET", "/api/v1/users", None), ("DELETE", "/api/v1/users/9", None)]
    assert (result.stdout, result.stderr) == ("", "deleted user bob\n")


# groups


def test_groups_list_get_create_and_delete(answer: Any) -> None:
    seen = answer(lambda r: lists(r) or httpx.Response(201 if r.method == "POST" else 204, json=GROUPS[1]))
    result = run("groups", "list")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout) == [
        ["PATH", "MEMBERS", "CREATED"],
        ["/team/users", "ann,", "bob", "2024-05-01", "10:00:00"],
        ["/ops", "-", "2024-05-01", "11:00:00"],
    ]
    assert yaml.safe_load(run("groups", "list", "-o", "yaml").stdout) == GROUPS
    assert json.loads(run("groups", "get", "/ops", "-o", "json").stdout) == GROUPS[1]

    created = run("groups", "create", "/ops")
    assert created.exit_code == 0, created.output
    assert created.stderr == "created group /ops\n"
    assert rows(created.stdout)[1][0] == "/ops"

    deleted = run("groups", "delete", "/team/users")
    assert (deleted.exit_code, deleted.stdout, deleted.stderr) == (0, "", "deleted group /team/users\n")
    assert sent(seen)[-3:] == [
        ("POST", "/api/v1/groups", {"path": "/ops"}),
        ("GET", "/api/v1/groups", None),
        ("DELETE", "/api/v1/groups/3", None),
    ]


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize(
    "args",
    [
        ["groups", "create", "team-a"],
        ["groups", "delete", "team-a"],
        ["users", "create", "ann", "--group", "/ops", "--group", "team-a"],
        ["users", "update", "ann", "--group", "team-a"],
    ],
)
def test_a_group_named_without_its_slash_is_explained(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: 'team-a' is not a group path: group names are full paths starting with /, like /team-a\n"
    )


def test_a_manifest_group_without_its_slash_is_explained() -> None:
    document = {
        "kind": "Storage",
        "metadata": {"name": "receipts"},
        "spec": {"access": {"groups": ["team-a"]}},
    }
    with pytest.raises(ManifestError) as caught:
        parse_document(document, source="storage.yaml")
    [problem] = caught.value.problems
    assert problem["field"] == "spec.access.groups"
    assert problem["message"] == (
        "'team-a' is not a group path: group names are full paths starting with /, like /team-a"
    )


def test_an_unknown_group_exits_1(answer: Any) -> None:
    answer(lambda r: lists(r) or error(500, "internal"))
    for command in ("get", "delete"):
        result = run("groups", command, "/nope")
        assert result.exit_code == 1
        assert result.stderr == "error: no group /nope\n"


# tokens


def test_tokens_list_shows_which_still_work(answer: Any) -> None:
    tokens = [
        token(),
        token(id=12, name="old", expires_at="2001-01-01T00:00:00+00:00"),
        token(id=13, name="gone", revoked_at="2024-05-03T00:00:00+00:00"),
        token(id=14, name="s", kind="session", expires_at="2999-01-01T00:00:00"),
    ]
    seen = answer(lambda r: lists(r) or httpx.Response(200, json={"tokens": tokens}))
    result = run("tokens", "list")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout) == [
        ["ID", "NAME", "USER", "PREFIX", "KIND", "STATUS", "EXPIRES", "CREATED"],
        ["11", "ci", "ann", "mp_abcdefg", "api", "active", "never", "2024-05-01", "10:00:00"],
        [
            "12",
            "old",
            "ann",
            "mp_abcdefg",
            "api",
            "expired",
            "2001-01-01",
            "00:00:00",
            "2024-05-01",
            "10:00:00",
        ],
        ["13", "gone", "ann", "mp_abcdefg", "api", "revoked", "never", "2024-05-01", "10:00:00"],
        [
            "14",
            "s",
            "ann",
            "mp_abcdefg",
            "session",
            "active",
            "2999-01-01",
            "00:00:00",
            "2024-05-01",
            "10:00:00",
        ],
    ]
    assert json.loads(run("tokens", "list", "--user", "ann", "-o", "json").stdout) == tokens
    assert sent(seen)[1:] == [("GET", "/api/v1/users", None), ("GET", "/api/v1/tokens?user=7", None)]


def test_tokens_create_prints_only_the_secret_on_stdout(answer: Any) -> None:
    created = token(expires_at="2024-06-01T10:00:00+00:00", token="mp_secret")
    seen = answer(lambda r: lists(r) or httpx.Response(201, json=created))
    result = run("tokens", "create", "ci", "--expires-days", "31")
    assert result.exit_code == 0, result.output
    assert result.stdout == "mp_secret\n"
    assert "mp_secret" not in result.stderr
    assert "created token ci (id 11) for ann; it expires 2024-06-01 10:00:00" in result.stderr
    assert sent(seen) == [("POST", "/api/v1/tokens", {"name": "ci", "expires_in_days": 31})]

    result = run("tokens", "create", "ci", "--user", "bob", "-o", "json")
    assert json.loads(result.stdout) == created
    assert sent(seen)[1:] == [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/tokens", {"name": "ci", "user": 9}),
    ]
    assert run("tokens", "create", "ci", "--expires-days", "0").exit_code == 2


def test_tokens_revoke_by_id(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(204))
    result = run("tokens", "revoke", "11")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "revoked token 11\n")
    assert sent(seen) == [("DELETE", "/api/v1/tokens/11", None)]

    answer(lambda r: error(404, "not_found", "no token 99"))
    missing = run("tokens", "revoke", "99")
    assert missing.exit_code == 1
    assert missing.stderr == "error: no token 99 (not_found)\n"
    assert run("tokens", "revoke", "ci").exit_code == 2


# audit


EVENTS = [
    {
        "id": 6,
        "at": "2024-05-01T10:05:00+00:00",
        "actor": "admin",
        "action": "token.create",
        "target": "token/11",
        "client": "127.0.0.1",
        "request_id": "r2",
        "details": {"name": "[ci]"},
    },
    {
        "id": 5,
        "at": "2024-05-01T10:00:00+00:00",
        "actor": "admin",
        "action": "user.create",
        "target": "user/ann",
        "client": None,
        "request_id": None,
        "details": {},
    },
]


def test_audit_sends_the_filters_and_shows_the_events(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(200, json={"events": EVENTS}))
    result = run("audit")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout) == [
        ["ID", "AT", "ACTOR", "ACTION", "TARGET", "CLIENT", "DETAILS"],
        [
            "6",
            "2024-05-01",
            "10:05:00",
            "admin",
            "token.create",
            "token/11",
            "127.0.0.1",
            '{"name":',
            '"[ci]"}',
        ],
        ["5", "2024-05-01", "10:00:00", "admin", "user.create", "user/ann", "-"],
    ]
    assert dict(seen[0].url.params) == {"limit": "100"}

    args = ["--actor", "admin", "--action", "user.create", "--target", "user/ann", "--since", "2024-05-01"]
    result = run("audit", *args, "--before", "6", "--limit", "5", "-o", "json")
    assert json.loads(result.stdout) == EVENTS
    assert dict(seen[1].url.params) == {
        "actor": "admin",
        "action": "user.create",
        "target": "user/ann",
        "since": "2024-05-01",
        "before": "6",
        "limit": "5",
    }
    assert run("audit", "--limit", "1001").exit_code == 2


def test_piped_audit_rows_keep_long_details_whole(answer: Any) -> None:
    details = {"version": "v1.2.0", "digest": "sha256:" + "ab" * 32}
    event = EVENTS[0] | {"action": "version.push", "target": "module/receipt-ocr", "details": details}
    answer(lambda r: httpx.Response(200, json={"events": [event]}))
    result = runner.invoke(app, ["audit"], env={"COLUMNS": "50"})
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split("\t") == ["ID", "AT", "ACTOR", "ACTION", "TARGET", "CLIENT", "DETAILS"]
    cells = row.split("\t")
    assert cells[:6] == [
        "6",
        "2024-05-01 10:05:00",
        "admin",
        "version.push",
        "module/receipt-ocr",
        "127.0.0.1",
    ]
    assert json.loads(cells[6]) == details


def test_audit_for_a_non_admin_exits_1(answer: Any) -> None:
    answer(lambda r: error(403, "forbidden", "only admins may read the audit trail"))
    result = run("audit")
    assert result.exit_code == 1
    assert result.stderr == "error: only admins may read the audit trail (forbidden)\n"


# End to end: the commands against a real platform server


def ok(*args: str, input: str | None = None) -> Any:
    result = run(*args, input=input)
    assert result.exit_code == 0, f"{args}: {result.output}"
    no_password_in(result)
    return result


def as_admin(monkeypatch: pytest.MonkeyPatch, platform: Any) -> None:
    monkeypatch.setenv("MODELPORT_URL", platform.url)
    monkeypatch.setenv("MODELPORT_TOKEN", platform.token)


@pytest.mark.slow
def test_password_login_saves_a_token_that_works(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    as_admin(monkeypatch, platform)
    ok("groups", "create", "/team/users")
    made = ok(
        "users", "create", "alice", "--role", "developer", "--group", "/team/users", "--password-stdin", "-o",
        "json", input=PASSWORD + "\n",
    )  # fmt: skip
    alice = json.loads(made.stdout)
    assert (alice["name"], alice["role"], alice["groups"], alice["source"]) == (
        "alice",
        "developer",
        ["/team/users"],
        "local",
    )

    monkeypatch.delenv("MODELPORT_URL")
    monkeypatch.delenv("MODELPORT_TOKEN")
    wrong = run("login", platform.url, "--username", "alice", "--password-stdin", input="not it\n")
    assert wrong.exit_code == 1
    assert wrong.stderr == "error: the server refused the user name or password\n"
    assert load_saved() is None

    login = ok("login", platform.url, "--username", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert login.stderr.startswith(f"Logged in to {platform.url} as alice (developer)\n")
    saved = load_saved()
    assert saved is not None
    assert saved.url == platform.url
    assert saved.token.startswith("mp_")

    me = json.loads(ok("whoami", "-o", "json").stdout)
    assert (me["name"], me["role"], me["groups"]) == ("alice", "developer", ["/team/users"])
    (cli_token,) = [t for t in json.loads(ok("tokens", "list", "-o", "json").stdout) if t["kind"] == "api"]
    assert cli_token["name"] == f"modelport-cli@{socket.gethostname()}"
    assert cli_token["id"] == me["token_id"]
    assert cli_token["expires_at"] is not None
    assert saved.token.startswith(cli_token["prefix"])

    denied = run("users", "list")
    assert denied.exit_code == 1
    assert "(forbidden)" in denied.stderr or "(not_found)" in denied.stderr


@pytest.mark.slow
def test_users_and_tokens_round_trip_and_show_in_the_audit(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_admin(monkeypatch, platform)
    ok("users", "create", "bob")
    listed = rows(ok("users", "list").stdout)
    assert ["bob", "user", "-", "local", "active", "never"] in listed
    dup = run("users", "create", "bob")
    assert dup.exit_code == 1
    assert "(conflict)" in dup.stderr

    secret = ok("tokens", "create", "ci", "--user", "bob", "--expires-days", "7").stdout.strip()
    assert secret.startswith("mp_")
    (made,) = json.loads(ok("tokens", "list", "--user", "bob", "-o", "json").stdout)
    assert (made["name"], made["user"], made["kind"], made["revoked_at"]) == ("ci", "bob", "api", None)
    assert json.loads(ok("whoami", "--token", secret, "-o", "json").stdout)["name"] == "bob"

    ok("users", "update", "bob", "--role", "developer")
    assert json.loads(ok("users", "get", "bob", "-o", "json").stdout)["role"] == "developer"

    ok("tokens", "revoke", str(made["id"]))
    refused = run("whoami", "--token", secret)
    assert refused.exit_code == 1
    assert "(invalid_token)" in refused.stderr or "(unauthorized)" in refused.stderr
    (revoked,) = json.loads(ok("tokens", "list", "--user", "bob", "-o", "json").stdout)
    assert revoked["revoked_at"] is not None

    ok("users", "delete", "bob")
    assert run("users", "get", "bob").stderr == "error: no user named bob\n"

    events = json.loads(ok("audit", "-o", "json").stdout)
    done = [(e["action"], e["target"]) for e in events]
    for change in [
        ("user.create", "user/bob"),
        ("token.create", f"token/{made['id']}"),
        ("user.update", "user/bob"),
        ("token.revoke", f"token/{made['id']}"),
        ("user.delete", "user/bob"),
    ]:
        assert change in done
    assert done.index(("user.delete", "user/bob")) < done.index(("user.create", "user/bob"))  # newest first
    revokes = json.loads(ok("audit", "--action", "token.revoke", "-o", "json").stdout)
    assert [e["target"] for e in revokes] == [f"token/{made['id']}"]
    _, latest = rows(ok("audit", "--target", "user/bob", "--limit", "1").stdout)
    assert latest[4:6] == ["user.delete", "user/bob"]
