"""Accounts, groups and tokens: Argon2id passwords, digests only, revocation at once, throttled logins,
OIDC users recorded on first use, and who may call or manage a module."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import QueuePool

from modelport.control.access import AccessPolicies, ApiAccess, ModulePolicy, Permit, may_call, may_manage
from modelport.control.audit import Actor, AuditTrail
from modelport.control.identity import TOKEN_PREFIX, Identity, Principal
from modelport.control.oidc import OidcIdentity
from modelport.core.errors import (
    BadRequest,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidCredentials,
    ModuleNotFound,
    TooManyLoginAttempts,
    Unauthorized,
)
from modelport.core.manifests import Cors
from modelport.core.roles import Role
from modelport.db import ApiDefinition, Database, Module
from modelport.db.models import utcnow

ADMIN = Actor("root", client="10.0.0.7", request_id="req-1")


@pytest.fixture
def database(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def identity(database: Database) -> Iterator[Identity]:
    identity = Identity(database, audit=AuditTrail(database), login_attempts="3/minute")
    yield identity
    identity.close()


def dump(database: Database) -> str:
    with database.engine.connect() as connection:
        raw = connection.connection.driver_connection
        return "\n".join(raw.iterdump())


def test_passwords_are_stored_as_argon2id_hashes_and_log_in(identity, database):
    identity.create_user("ana", role=Role.DEVELOPER, password="correct horse", actor=ADMIN)
    assert "correct horse" not in dump(database)
    with database.session() as session:
        stored = session.execute(text("SELECT password_hash FROM users")).scalar_one()
    assert stored.startswith("$argon2id$")
    session = identity.login("ana", "correct horse", client="10.0.0.1")
    assert session.token.startswith(TOKEN_PREFIX)
    assert session.principal.name == "ana" and session.principal.role == Role.DEVELOPER
    assert identity.verify(session.token) == session.principal
    assert timedelta(minutes=59) < session.expires_at - utcnow() <= timedelta(hours=1)
    assert identity.user(session.principal.user_id).last_login_at is not None


def test_wrong_passwords_and_unknown_users_are_refused_alike_then_throttled(identity):
    identity.create_user("ana", role=Role.USER, password="correct horse", actor=ADMIN)
    identity.create_user("tokens-only", role=Role.USER, actor=ADMIN)
    for name, password in [("ana", "wrong"), ("nobody", "correct horse"), ("tokens-only", "")]:
        with pytest.raises(InvalidCredentials):
            identity.login(name, password or "x", client=None)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            identity.login("ana", "wrong", client="10.0.0.2")
    with pytest.raises(TooManyLoginAttempts) as refused:
        identity.login("ana", "correct horse", client="10.0.0.3")  # even the right password, for now
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60
    # An address that keeps failing is throttled whatever account it tries next.
    identity.create_user("bo", role=Role.USER, password="bo's password", actor=ADMIN)
    for name in ["x1", "x2", "x3"]:
        with pytest.raises(InvalidCredentials):
            identity.login(name, "guess", client="10.0.0.9")
    with pytest.raises(TooManyLoginAttempts):
        identity.login("bo", "bo's password", client="10.0.0.9")
    assert identity.login("bo", "bo's password", client="10.0.0.4").principal.name == "bo"


def test_logins_and_changes_are_recorded_in_the_audit_trail(identity):
    ana = identity.create_user("ana", role=Role.USER, password="correct horse", actor=ADMIN)
    identity.login("ana", "correct horse", client="10.0.0.1")
    for name in ["ana", "correct horse"]:  # the second is a password typed into the name field
        with pytest.raises(InvalidCredentials):
            identity.login(name, "wrong", client="10.0.0.2")
    identity.update_user(ana.id, role=Role.DEVELOPER, password="battery staple", actor=ADMIN)
    made = identity.create_token(ana.id, name="ci", expires_at=None, actor=ADMIN)
    assert identity.verify(made.token).token_id == made.id
    identity.revoke(made.id, actor=ADMIN)
    events = list(reversed(identity.audit.events()))
    assert [(e.actor, e.action, e.target, e.details) for e in events] == [
        ("root", "user.create", "user/ana", {"role": "user", "groups": []}),
        ("ana", "auth.login", "user/ana", {}),
        ("ana", "auth.fail", "user/ana", {}),
        ("(unknown user)", "auth.fail", "user/(unknown user)", {}),
        ("root", "user.update", "user/ana", {"role": "developer", "credentials": "new password"}),
        ("root", "token.create", f"token/{made.id}", {"name": "ci", "user": "ana", "expires_at": None}),
        ("root", "token.revoke", f"token/{made.id}", {"name": "ci", "user": "ana"}),
    ]
    assert [e.client for e in events[:4]] == ["10.0.0.7", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
    assert {e.request_id for e in events if e.actor == "root"} == {"req-1"}


def test_tokens_are_stored_as_digests_only(identity, database):
    user = identity.create_user("ana", role=Role.USER, actor=ADMIN)
    secrets = [identity.issue(user.id, name=f"t{i}")[0] for i in range(100)]
    text_dump = dump(database)
    assert not [s for s in secrets if s in text_dump or s[_PREFIX:] in text_dump]
    assert len(set(secrets)) == 100 and all(identity.verify(s) is not None for s in secrets)


_PREFIX = 10


def test_revoked_expired_and_disabled_tokens_stop_working_on_the_next_request(identity):
    user = identity.create_user("ana", role=Role.USER, groups=[], actor=ADMIN)
    secret, info = identity.issue(user.id, name="ci")
    assert identity.verify(secret).token_id == info.id
    identity.revoke(info.id, actor=ADMIN)
    assert identity.verify(secret) is None
    assert identity.token(info.id).revoked_at is not None

    expired, _ = identity.issue(user.id, name="old", expires_at=utcnow() - timedelta(seconds=1))
    assert identity.verify(expired) is None

    live, _ = identity.issue(user.id, name="live")
    identity.update_user(user.id, disabled=True, actor=ADMIN)
    assert identity.verify(live) is None
    identity.update_user(user.id, disabled=False, actor=ADMIN)
    assert identity.verify(live) is not None
    identity.delete_user(user.id, actor=ADMIN)
    assert identity.verify(live) is None and identity.tokens() == []


def test_a_token_remembered_by_one_gateway_is_dropped_when_another_revokes_it(database, request):
    # two gateway processes, one database
    here, there = (
        Identity(database, audit=AuditTrail(database)),
        Identity(database, audit=AuditTrail(database)),
    )
    request.addfinalizer(here.close)
    request.addfinalizer(there.close)
    user = here.create_user("ana", role=Role.USER, groups=[], actor=ADMIN)
    secret, info = here.issue(user.id, name="ci")
    other, _ = here.issue(user.id, name="other")
    assert here.verify(secret) is not None and here.verify(other) is not None
    there.create_group("/team", actor=ADMIN)
    there.update_user(user.id, groups=["/team"], actor=ADMIN)
    assert here.verify(secret).groups == frozenset({"/team"})
    there.revoke(info.id, actor=ADMIN)
    assert here.verify(secret) is None
    assert here.verify(other) is not None
    there.update_user(user.id, disabled=True, actor=ADMIN)
    assert here.verify(other) is None


def test_a_remembered_token_still_expires(database):
    clock = [utcnow()]
    identity = Identity(database, audit=AuditTrail(database), now=lambda: clock[0])
    user = identity.create_user("ana", role=Role.USER, actor=ADMIN)
    secret, _ = identity.issue(user.id, name="short", expires_at=clock[0] + timedelta(minutes=5))
    assert identity.verify(secret) is not None  # and now remembered
    clock[0] += timedelta(minutes=5) - timedelta(milliseconds=1)
    assert identity.verify(secret) is not None
    clock[0] += timedelta(milliseconds=2)
    assert identity.verify(secret) is None
    identity.close()


def test_users_and_groups(identity):
    identity.create_group("/team-a", actor=ADMIN)
    identity.create_group("/team-a/admins", actor=ADMIN)
    with pytest.raises(Conflict):
        identity.create_group("/team-a", actor=ADMIN)
    for bad in ["team-a", "/", "/a/", "/a//b", "/a\nb"]:
        with pytest.raises(BadRequest):
            identity.create_group(bad, actor=ADMIN)
    with pytest.raises(BadRequest, match="no such group"):
        identity.create_user("ana", role=Role.USER, groups=["/team-b"], actor=ADMIN)
    ana = identity.create_user("ana", role=Role.USER, groups=["/team-a", "/team-a/admins"], actor=ADMIN)
    assert ana.groups == ["/team-a", "/team-a/admins"] and ana.source == "local"
    with pytest.raises(Conflict):
        identity.create_user("ana", role=Role.USER, actor=ADMIN)
    with pytest.raises(BadRequest):
        identity.create_user("../ana", role=Role.USER, actor=ADMIN)
    secret, _ = identity.issue(ana.id, name="t")
    assert identity.verify(secret).groups == frozenset({"/team-a", "/team-a/admins"})
    identity.update_user(ana.id, groups=["/team-a"], role=Role.DEVELOPER, actor=ADMIN)
    principal = identity.verify(secret)
    assert (principal.groups, principal.role) == (frozenset({"/team-a"}), Role.DEVELOPER)
    group = next(g for g in identity.groups() if g.path == "/team-a")
    assert group.members == ["ana"]
    identity.delete_group(group.id, actor=ADMIN)
    assert identity.verify(secret).groups == frozenset()


def test_bootstrap_makes_an_admin_token_once_or_adopts_the_given_one(identity):
    made = identity.ensure_bootstrap(None)
    assert made is not None and identity.verify(made).is_admin
    assert identity.ensure_bootstrap(None) is None
    given = TOKEN_PREFIX + "x" * 43
    assert identity.ensure_bootstrap(given) is None
    assert identity.verify(given).name == "admin"
    assert identity.ensure_bootstrap(given) is None
    assert len(identity.tokens()) == 2


def oidc(subject: str, username: str, groups=(), roles=()) -> OidcIdentity:
    return OidcIdentity(
        issuer="https://sso.example.com/realms/main",
        subject=subject,
        username=username,
        groups=frozenset(groups),
        roles=frozenset(roles),
        email=None,
        expires_at=0.0,
    )


def test_oidc_users_are_recorded_on_first_use_and_follow_their_tokens(identity):
    identity.create_user("ana", role=Role.ADMIN, actor=ADMIN)  # a local user with the same name
    first = identity.oidc_principal(oidc("s-1", "ana", ["/team-a"], ["developer", "offline_access"]))
    assert first.role == Role.DEVELOPER and first.groups == frozenset({"/team-a"}) and first.source == "oidc"
    again = identity.oidc_principal(oidc("s-1", "ana", ["/team-a"], ["developer"]))
    assert again.user_id == first.user_id and again.name == first.name == "ana-2"
    listed = {u.name: u for u in identity.users()}
    assert listed["ana-2"].source == "oidc" and listed["ana-2"].groups == ["/team-a"]
    assert listed["ana"].role == "admin"  # the local user is untouched
    changed = identity.oidc_principal(oidc("s-1", "ana", ["/team-b"], []))
    assert changed.role == Role.USER and changed.user_id == first.user_id
    assert identity.user(first.user_id).groups == ["/team-b"]
    assert identity.oidc_principal(oidc("s-2", "root", [], ["admin"])).is_admin


def test_a_disabled_user_is_refused_on_the_next_oidc_request(identity):
    token = oidc("s-1", "ana", ["/team-a"], ["developer"])
    ana = identity.oidc_principal(token)
    assert ana is not None and identity.oidc_principal(token) is not None  # now remembered
    identity.update_user(ana.user_id, disabled=True, actor=ADMIN)
    assert identity.oidc_principal(token) is None
    assert identity.oidc_principal(token) is None  # remembered as disabled, not recorded as a sign-in
    assert identity.user(ana.user_id).disabled
    identity.update_user(ana.user_id, disabled=False, actor=ADMIN)
    assert identity.oidc_principal(token) == ana


def principal(role: Role, *groups: str) -> Principal:
    return Principal(user_id=1, name="p", role=role, groups=frozenset(groups))


def api(name="a", groups=(), anonymous=False, rate=None) -> ApiAccess:
    return ApiAccess(name, frozenset(groups), anonymous, rate, Cors())


def test_who_may_call_and_manage():
    owned = ModulePolicy("m", "/team-a", (api(groups=["/callers"]),))
    assert may_manage(principal(Role.ADMIN), owned)
    assert may_manage(principal(Role.DEVELOPER, "/team-a"), owned)
    assert not may_manage(principal(Role.DEVELOPER, "/x/team-a"), owned)
    assert not may_manage(principal(Role.USER, "/team-a"), owned)  # a user never manages
    assert may_call(principal(Role.USER, "/callers"), owned)
    assert not may_call(principal(Role.USER, "/x/callers"), owned)
    assert not may_call(principal(Role.USER, "/callers/sub"), owned)
    assert not may_call(principal(Role.USER), ModulePolicy("m", None))  # deny by default
    open_module = ModulePolicy("m", None, (api(anonymous=True),))
    assert may_call(Principal(user_id=None, name="anonymous", role=Role.USER), open_module)


def test_policies_come_from_the_database_and_hide_what_callers_may_not_see(database):
    with database.session() as session:
        session.add(Module(name="a", owner="/team-a"))
        session.add(Module(name="b", owner="/team-b"))
        session.flush()
        session.add(
            ApiDefinition(
                name="a-api",
                module_name="a",
                manifest={
                    "apiVersion": "modelport/v1",
                    "kind": "Api",
                    "metadata": {"name": "a-api"},
                    "spec": {"module": "a", "access": {"groups": ["/users-a"]}},
                },
            )
        )
    now = [0.0]
    policies = AccessPolicies(database, clock=lambda: now[0])
    caller = principal(Role.USER, "/users-a")
    assert policies.require_call(caller, "a").owner == "/team-a"
    with pytest.raises(ModuleNotFound):
        policies.require_call(caller, "b")
    with pytest.raises(ModuleNotFound):
        policies.require_call(caller, "missing")
    with pytest.raises(Forbidden):  # may call, so may know it exists, but not manage it
        policies.require_manage(caller, "a")
    with pytest.raises(ModuleNotFound):
        policies.require_manage(principal(Role.DEVELOPER, "/team-a"), "b")
    with pytest.raises(Unauthorized):
        policies.require_call(Principal(user_id=None, name="anonymous", role=Role.USER), "a")
    with database.session() as session:
        session.add(Module(name="c", owner=None))
    now[0] += 0.1
    assert policies.policy("c") is not None  # a new module is seen without waiting for the refresh


def test_owners_of_new_modules(database):
    policies = AccessPolicies(database)
    assert Permit(principal(Role.ADMIN), policies).new_owner(None) is None
    assert Permit(principal(Role.DEVELOPER, "/team-a"), policies).new_owner(None) == "/team-a"
    both = Permit(principal(Role.DEVELOPER, "/team-a", "/team-b"), policies)
    assert both.new_owner("/team-b") == "/team-b"
    with pytest.raises(Forbidden, match=r"spec\.owner"):
        both.new_owner(None)
    with pytest.raises(Forbidden):
        both.new_owner("/team-c")
    with pytest.raises(Forbidden):
        Permit(principal(Role.USER, "/team-a"), policies).new_owner("/team-a")


@contextmanager
def unreachable(database: Database) -> Iterator[None]:
    """The database as while its server is down: pooled connections are gone and new ones are refused."""

    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    working = database.engine.pool
    working.dispose()
    database.engine.pool = QueuePool(refuse)
    try:
        yield
    finally:
        database.engine.pool = working


@contextmanager
def connections_from(database: Database) -> Iterator[set[int]]:
    """The threads that take connections from the database's pool while the block runs."""
    threads: set[int] = set()

    def taken(*args: object) -> None:
        threads.add(threading.get_ident())

    event.listen(database.engine, "checkout", taken)
    try:
        yield threads
    finally:
        event.remove(database.engine, "checkout", taken)


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(condition()):
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.01)


async def _value(answer: Awaitable[bool] | bool) -> bool:
    return answer if isinstance(answer, bool) else await answer


@asynccontextmanager
async def watching(identity: Identity, every: float) -> AsyncIterator[None]:
    """`identity.watch` running, once it has read the revision."""
    stop = asyncio.Event()
    task = asyncio.create_task(identity.watch(stop, every=every))
    try:
        await until(lambda: identity._stamp() is not None)
        yield
    finally:
        stop.set()
        await task


async def test_known_tokens_are_answered_from_memory_while_the_database_is_down(identity, database, request):
    there = Identity(database, audit=AuditTrail(database))  # another gateway process
    request.addfinalizer(there.close)
    user = identity.create_user("ana", role=Role.USER, actor=ADMIN)
    known, info = identity.issue(user.id, name="known")
    unseen, _ = identity.issue(user.id, name="unseen")
    async with watching(identity, every=0.01):
        with connections_from(database) as threads:
            assert (await identity.authenticate(known)).token_id == info.id
            with unreachable(database):
                for _ in range(3):  # across several failed reads of the revision
                    assert (await identity.authenticate(known)).token_id == info.id
                    await asyncio.sleep(0.02)
                with pytest.raises(DatabaseUnavailable) as refused:  # neither let in nor called invalid
                    await identity.authenticate(unseen)
                assert refused.value.status == 503 and refused.value.retry_after
        assert threads and threading.get_ident() not in threads  # never on the event loop
        assert (await identity.authenticate(unseen)) is not None  # back by itself
        there.revoke(info.id, actor=ADMIN)  # after the database is back, on another gateway

        async def revoked() -> bool:
            return await identity.authenticate(known) is None

        await until(revoked, timeout=2.0)


async def test_changes_made_here_take_effect_on_the_next_request_without_waiting_for_the_poll(identity):
    user = identity.create_user("ana", role=Role.USER, actor=ADMIN)
    first, first_info = identity.issue(user.id, name="first")
    second, _ = identity.issue(user.id, name="second")
    async with watching(identity, every=3600):  # one read of the revision, at the start
        assert await identity.authenticate(first) is not None
        assert await identity.authenticate(second) is not None
        await asyncio.to_thread(identity.revoke, first_info.id, actor=ADMIN)
        assert await identity.authenticate(first) is None
        assert await identity.authenticate(second) is not None
        await asyncio.to_thread(identity.update_user, user.id, disabled=True, actor=ADMIN)
        assert await identity.authenticate(second) is None
        token = oidc("s-1", "bo", ["/team-a"], ["developer"])
        bo = await identity.authenticate_oidc(token)
        assert bo is not None and await identity.authenticate_oidc(token) == bo
        await asyncio.to_thread(identity.update_user, bo.user_id, disabled=True, actor=ADMIN)
        assert await identity.authenticate_oidc(token) is None


def add_module(database: Database, name: str) -> None:
    with database.session() as session:
        session.add(Module(name=name, owner=f"/team-{name}"))


async def test_policies_in_memory_keep_serving_while_the_database_is_down(database):
    add_module(database, "a")
    now = [0.0]
    policies = AccessPolicies(database, clock=lambda: now[0])
    owner = principal(Role.DEVELOPER, "/team-a")
    with connections_from(database) as threads:
        assert (await policies.current("a")).owner == "/team-a"
        with unreachable(database):
            now[0] += 2.0  # a read is due
            assert (await policies.current("a")).owner == "/team-a"
            with pytest.raises(DatabaseUnavailable):  # nobody can tell whether it exists
                await policies.current("b")
            assert policies.cached("a") is not None
            # Threads (the management routes' guards) are answered from memory too.
            assert (await asyncio.to_thread(policies.require_manage, owner, "a")).owner == "/team-a"
            with pytest.raises(DatabaseUnavailable):
                await asyncio.to_thread(policies.require_call, owner, "b")
        await asyncio.to_thread(add_module, database, "b")
        now[0] += 0.1

        async def seen() -> bool:
            try:
                return await policies.current("b") is not None
            except DatabaseUnavailable:
                return False

        await until(seen)
    assert threads and threading.get_ident() not in threads
