"""Who is calling: users, groups, bearer tokens, passwords, and the principals they resolve to.

Tokens carry 256 bits of randomness, so a plain SHA-256 digest (looked up by its unique index) is the right
storage; passwords are guessable, so they are stored as Argon2id hashes and failed logins are throttled per
account and per client address.

OIDC users (see `oidc.py`) are recorded on first use under their issuer and subject; their role and groups
come from each token and are copied to the user list when they change.

Verified tokens are remembered in memory, each with the identity revision read before it was looked up: a
single counter in the database that every revocation and every change to a user or a group increments. While
the server runs, `watch` reads that number in a worker thread twice a second, and a request compares its
token's with memory only: a token verified before is answered without the database (so also while the
database is unavailable), a change made through this object takes effect on the next request, and one made by
another gateway process within half a second. Whatever memory cannot answer is looked up in a few worker
threads of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from modelport.control.audit import Actor, AuditTrail
from modelport.core import manifests
from modelport.core.errors import (
    BadRequest,
    Conflict,
    DatabaseUnavailable,
    InvalidCredentials,
    NotFound,
    TooManyLoginAttempts,
)
from modelport.core.names import TOKEN_PREFIX
from modelport.core.records import (
    AccessToken,
    CallerInfo,
    GroupInfo,
    IdentitySource,
    NewToken,
    TokenInfo,
    UserInfo,
)
from modelport.core.roles import Role
from modelport.db import ApiToken, Database, Group, IdentityRevision, User
from modelport.db.database import failure, unavailable
from modelport.db.models import utcnow

if TYPE_CHECKING:
    from modelport.control.oidc import OidcIdentity

__all__ = [
    "ANONYMOUS",
    "REVISION_POLL_SECONDS",
    "TOKEN_PREFIX",
    "Identity",
    "LoginSession",
    "Principal",
    "caller_info",
    "check_group_path",
    "digest",
    "new_secret",
]

log = logging.getLogger("modelport.identity")

REVISION_POLL_SECONDS = 0.5
"""How often `watch` reads the identity revision: how soon another gateway's changes take effect here."""

_SHOWN_PREFIX = 10  # characters of a secret kept to recognise it in lists: the marker and 7 random ones
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}$")
_LOOKUP_THREADS = 4

_T = TypeVar("_T")
_Stamp = tuple[int, int]
"""What a remembered answer was read at: the identity revision, and the changes made through this object."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user with a role and groups, or `ANONYMOUS`."""

    user_id: int | None
    name: str
    role: Role
    groups: frozenset[str] = frozenset()
    source: str = "local"
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Principal(user_id=None, name="anonymous", role=Role.USER, source="anonymous")


@dataclass(frozen=True)
class LoginSession:
    """A short-lived bearer token handed out for a password, good for `seconds`."""

    token: str
    expires_at: datetime
    seconds: int
    principal: Principal

    def access_token(self) -> AccessToken:
        """The session as the API hands it out."""
        return AccessToken(
            access_token=self.token,
            token_type="bearer",  # noqa: S106 - the scheme, not a secret
            expires_in=self.seconds,
            expires_at=self.expires_at.isoformat(),
        )


def new_secret() -> str:
    """A fresh token secret: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_group_path(path: str) -> str:
    """`path` if it is a full group path such as `/team/users`; `BadRequest` otherwise."""
    try:
        return manifests.check_group_path(path)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@dataclass
class _LoginThrottle:
    """Failed logins per account and per client address, in a moving window (in memory, per process)."""

    rate: str
    storage: MemoryStorage = field(default_factory=MemoryStorage)

    def __post_init__(self) -> None:
        self.item = parse(self.rate)
        self.limiter = MovingWindowRateLimiter(self.storage)

    def check(self, keys: Sequence[str]) -> None:
        for key in keys:
            if not self.limiter.test(self.item, key):
                reset, _ = self.limiter.get_window_stats(self.item, key)
                raise TooManyLoginAttempts(
                    "too many failed logins; try again later", retry_after=max(1.0, reset - time.time())
                )

    def failed(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.limiter.hit(self.item, key)


class Identity:
    """Users, groups and tokens in the database; authentication of passwords, tokens and OIDC identities."""

    def __init__(
        self,
        database: Database,
        *,
        audit: AuditTrail,
        session_seconds: int = 3600,
        login_attempts: str = "5/minute",
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.audit = audit
        self.now = now  # the time tokens expire against
        self.session_seconds = session_seconds
        self.hasher = PasswordHasher()  # Argon2id with the RFC 9106 low-memory parameters
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self._throttle = _LoginThrottle(login_attempts)
        self._verified: dict[str, tuple[_Stamp, Principal, datetime | None]] = {}
        self._oidc_seen: dict[tuple[str, str], tuple[tuple[Any, ...], _Stamp, _OidcUser]] = {}
        self._lock = threading.Lock()
        self._revision: int | None = None  # the last one `watch` read; None while no `watch` runs
        self._changes = 0  # changes made through this object, each counted once committed
        self._lookups = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="modelport-identity")

    # Tokens

    def issue(
        self,
        user_id: int,
        *,
        name: str,
        kind: str = "api",
        expires_at: datetime | None = None,
        secret: str | None = None,
    ) -> tuple[str, TokenInfo]:
        """Store a new token of `user_id`; return its secret (never stored or shown again) and its info."""
        secret = secret or new_secret()
        with self.database.session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFound(f"no user with id {user_id}")
            token = ApiToken(
                user_id=user_id,
                name=name,
                kind=kind,
                prefix=secret[:_SHOWN_PREFIX],
                digest=digest(secret),
                expires_at=expires_at,
            )
            session.add(token)
            session.flush()
            return secret, token_info(token, user.name)

    def create_token(self, user_id: int, *, name: str, expires_at: datetime | None, actor: Actor) -> NewToken:
        """An API token made on purpose (by `actor`, for `user_id`), with its secret, shown only now."""
        secret, info = self.issue(user_id, name=name, expires_at=expires_at)
        self.audit.record(
            actor, "token.create", f"token/{info.id}", name=name, user=info.user, expires_at=info.expires_at
        )
        return NewToken(**info.model_dump(), token=secret)

    def verify(self, secret: str) -> Principal | None:
        """The principal a token stands for; None if it is unknown, revoked, expired or its user disabled.

        Reads the identity revision first; requests on the event loop use `authenticate` instead."""
        return self._verify(digest(secret), None)

    async def authenticate(self, secret: str) -> Principal | None:
        """`verify` for the event loop: a token verified at the revision `watch` read last is answered from
        memory; any other is looked up in a worker thread, and is `DatabaseUnavailable` if the database
        cannot answer (a token nobody can check is neither let in nor called invalid)."""
        key = digest(secret)
        stamp = self._stamp()
        if stamp is not None:
            known, principal = self._recall(key, stamp)
            if known:
                return principal
        return await self._off_loop(self._verify, key, stamp)

    def _verify(self, key: str, stamp: _Stamp | None) -> Principal | None:
        if stamp is None:
            stamp = self._read_stamp()
        known, remembered = self._recall(key, stamp)
        if known:
            return remembered
        with self.database.session() as session:
            token = session.scalars(
                select(ApiToken)
                .where(ApiToken.digest == key)
                .options(selectinload(ApiToken.user).selectinload(User.groups))
            ).one_or_none()
            if token is None or token.revoked_at is not None or token.user.disabled:
                return None
            if token.expires_at is not None and token.expires_at <= self.now():
                return None
            principal = _principal(token.user, token_id=token.id)
            expires_at = token.expires_at
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = (stamp, principal, expires_at)
        return principal

    def _recall(self, key: str, stamp: _Stamp) -> tuple[bool, Principal | None]:
        """Whether the token was verified at `stamp`, and if so whom it stands for (None once expired)."""
        remembered = self._verified.get(key)
        if remembered is None or remembered[0] != stamp:
            return False, None
        _, principal, expires_at = remembered
        return True, principal if expires_at is None or expires_at > self.now() else None

    # The identity revision

    async def watch(self, stop: asyncio.Event, *, every: float = REVISION_POLL_SECONDS) -> None:
        """Read the identity revision every `every` seconds, in a worker thread, until `stop` is set; until
        then `authenticate` compares with memory only. While the database is unavailable the revision read
        last stays, so the callers verified at it keep being served."""
        failing = False
        try:
            while not stop.is_set():
                try:
                    self._revision, _ = await asyncio.to_thread(self._read_stamp)
                except Exception as exc:
                    if not failing:
                        log.warning(
                            "cannot read the identity revision (%s); serving the callers verified before",
                            failure(exc),
                            exc_info=not unavailable(exc),
                        )
                    failing = True
                else:
                    if failing:
                        log.warning("the identity revision is read again")
                    failing = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            self._revision = None

    def _stamp(self) -> _Stamp | None:
        """The revision `watch` read last and the changes made here since; None while no `watch` runs."""
        revision = self._revision
        return None if revision is None else (revision, self._changes)

    def _read_stamp(self) -> _Stamp:
        """The identity revision read now, and the changes made here."""
        with self.database.engine.connect() as connection:
            revision = int(connection.execute(_REVISION).scalar_one())
        return revision, self._changes

    def _changed(self, session: Session) -> None:
        """Count a change that may invalidate verified tokens, in the same transaction as the change; once it
        is committed, what this object remembers is checked again on its next use."""
        session.execute(
            update(IdentityRevision)
            .where(IdentityRevision.id == 1)
            .values(revision=IdentityRevision.revision + 1)
        )
        event.listen(session, "after_commit", self._count_change, once=True)

    def _count_change(self, session: Session) -> None:
        with self._lock:
            self._changes += 1

    async def _off_loop(self, work: Callable[..., _T], *args: Any) -> _T:
        """`work(*args)` in a lookup thread; a database that cannot answer is `DatabaseUnavailable`."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._lookups, work, *args)
        except Exception as exc:
            if unavailable(exc):
                raise DatabaseUnavailable() from exc
            raise

    def close(self) -> None:
        """Stop the lookup threads once the lookups running have finished (bounded by the database's
        timeouts), so that none opens a connection on a closed engine."""
        self._lookups.shutdown(wait=True, cancel_futures=True)

    def tokens(self, *, user_id: int | None = None) -> list[TokenInfo]:
        with self.database.session() as session:
            query = select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id)
            if user_id is not None:
                query = query.where(ApiToken.user_id == user_id)
            return [token_info(token, token.user.name) for token in session.scalars(query)]

    def token(self, token_id: int) -> TokenInfo:
        with self.database.session() as session:
            token = session.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"no token with id {token_id}")
            return token_info(token, token.user.name)

    def revoke(self, token_id: int, *, actor: Actor) -> TokenInfo:
        """Revoke a token at once (idempotent: revoking twice keeps the first time)."""
        with self.database.session() as session:
            token = session.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"no token with id {token_id}")
            if token.revoked_at is None:
                token.revoked_at = self.now()
                self._changed(session)
            info = token_info(token, token.user.name)
        self.audit.record(actor, "token.revoke", f"token/{token_id}", name=info.name, user=info.user)
        return info

    def ensure_bootstrap(self, secret: str | None) -> str | None:
        """Make sure an admin can sign in; return a newly made secret to show once, else None.

        With `secret` (MODELPORT_BOOTSTRAP_TOKEN) that token is made the `admin` user's if it is unknown.
        Without it, a token is made only when no admin holds a usable token.
        """
        with self.database.session() as session:
            admin = session.scalars(select(User).where(User.name == "admin")).one_or_none()
            if admin is None:
                admin = User(name="admin", role=Role.ADMIN)
                session.add(admin)
                session.flush()
            admin_id = admin.id
            if secret is not None:
                known = session.scalars(select(ApiToken.id).where(ApiToken.digest == digest(secret))).first()
                usable = known is not None
            else:
                usable = (
                    session.scalars(
                        select(ApiToken.id)
                        .join(User)
                        .where(User.role == Role.ADMIN, ApiToken.revoked_at.is_(None), ~User.disabled)
                        .where((ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > self.now()))
                    ).first()
                    is not None
                )
        if usable:
            return None
        made, _ = self.issue(admin_id, name="bootstrap", secret=secret)
        return None if secret is not None else made

    # Passwords

    def login(self, name: str, password: str, *, client: str | None) -> LoginSession:
        """A session token for a correct password; `InvalidCredentials` otherwise, and
        `TooManyLoginAttempts` once the account or the address has failed too often. Successes and
        failures are recorded in the audit trail, from `client`."""
        principal = self.check_password(name, password, client=client)
        assert principal.user_id is not None
        expires_at = self.now() + timedelta(seconds=self.session_seconds)
        secret, info = self.issue(principal.user_id, name="session", kind="session", expires_at=expires_at)
        self.audit.record(Actor(name, client=client), "auth.login", f"user/{name}")
        return LoginSession(secret, expires_at, self.session_seconds, replace(principal, token_id=info.id))

    def console_session(
        self, principal: Principal, *, seconds: int, how: str, client: str | None
    ) -> LoginSession:
        """A web console session of a signed-in `principal` (by password, token or OIDC: `how`): a token of
        kind `console`, good for `seconds`, recorded in the audit trail. Signing out revokes it."""
        if principal.user_id is None:
            raise InvalidCredentials("sign in as a user")
        expires_at = self.now() + timedelta(seconds=seconds)
        secret, info = self.issue(principal.user_id, name="console", kind="console", expires_at=expires_at)
        self.audit.record(
            Actor(principal.name, client=client), "auth.login", f"user/{principal.name}", via=how
        )
        return LoginSession(secret, expires_at, seconds, replace(principal, token_id=info.id))

    def check_password(self, name: str, password: str, *, client: str | None) -> Principal:
        """The principal of a correct password (throttled and audited as `login`), without a token."""
        keys = [f"user:{name.lower()}"] + ([f"client:{client}"] if client else [])
        self._throttle.check(keys)
        principal, known = self._check_password(name, password)
        if principal is None:
            self._throttle.failed(keys)
            shown = name if known else "(unknown user)"
            self.audit.record(Actor(shown, client=client), "auth.fail", f"user/{shown}")
            raise InvalidCredentials("wrong user name or password")
        return principal

    def _check_password(self, name: str, password: str) -> tuple[Principal | None, bool]:
        """The principal of the user `name` if `password` is theirs (None otherwise), and whether `name` is
        a user's at all."""
        with self.database.session() as session:
            user = session.scalars(
                select(User).where(User.name == name).options(selectinload(User.groups))
            ).one_or_none()
            stored = user.password_hash if user is not None and not user.disabled else None
            if not self._password_matches(stored, password):
                return None, user is not None
            assert user is not None
            if stored is not None and self.hasher.check_needs_rehash(stored):
                user.password_hash = self.hasher.hash(password)
            user.last_login_at = self.now()
            return _principal(user, token_id=None), True

    def _password_matches(self, stored: str | None, password: str) -> bool:
        try:
            # An unknown user costs a hash too, so that timing does not tell which names exist.
            return self.hasher.verify(stored or self._dummy_hash, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    # Users

    def users(self) -> list[UserInfo]:
        with self.database.session() as session:
            rows = session.scalars(select(User).options(selectinload(User.groups)).order_by(User.id))
            return [user_info(user) for user in rows]

    def user(self, user_id: int) -> UserInfo:
        with self.database.session() as session:
            return user_info(_user(session, user_id))

    def create_user(
        self,
        name: str,
        *,
        role: Role,
        groups: Sequence[str] = (),
        password: str | None = None,
        actor: Actor,
    ) -> UserInfo:
        if not _USER_NAME.match(name):
            raise BadRequest(f"{name!r} is not a user name: letters, digits and . _ @ + - (up to 255)")
        password_hash = self.hasher.hash(password) if password else None
        try:
            with self.database.session() as session:
                user = User(
                    name=name, role=role, password_hash=password_hash, groups=_groups(session, groups)
                )
                session.add(user)
                session.flush()
                info = user_info(user)
        except IntegrityError:
            raise Conflict(f"a user named {name!r} exists already") from None
        self.audit.record(actor, "user.create", f"user/{name}", role=role, groups=list(groups))
        return info

    def update_user(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        groups: Sequence[str] | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        actor: Actor,
    ) -> UserInfo:
        """Change what is given, and record in the audit trail what changed."""
        with self.database.session() as session:
            user = _user(session, user_id)
            if role is not None:
                user.role = role
            if groups is not None:
                user.groups = _groups(session, groups)
            if password is not None:
                user.password_hash = self.hasher.hash(password)
            if disabled is not None:
                user.disabled = disabled
            self._changed(session)
            info = user_info(user)
        asked = {"role": role, "groups": groups, "disabled": disabled}
        changed = {key: value for key, value in asked.items() if value is not None}
        if password is not None:
            changed["credentials"] = "new password"  # a key naming a password would be dropped as secret
        self.audit.record(actor, "user.update", f"user/{info.name}", **changed)
        return info

    def delete_user(self, user_id: int, *, actor: Actor) -> None:
        """Delete a user and with it every token it holds."""
        with self.database.session() as session:
            user = _user(session, user_id)
            name = user.name
            session.delete(user)
            self._changed(session)
        self.audit.record(actor, "user.delete", f"user/{name}")

    # Groups

    def groups(self) -> list[GroupInfo]:
        with self.database.session() as session:
            rows = session.scalars(select(Group).options(selectinload(Group.members)).order_by(Group.path))
            return [group_info(group) for group in rows]

    def group(self, group_id: int) -> GroupInfo:
        with self.database.session() as session:
            group = session.get(Group, group_id)
            if group is None:
                raise NotFound(f"no group with id {group_id}")
            return group_info(group)

    def create_group(self, path: str, *, actor: Actor) -> GroupInfo:
        check_group_path(path)
        try:
            with self.database.session() as session:
                group = Group(path=path)
                session.add(group)
                session.flush()
                info = group_info(group)
        except IntegrityError:
            raise Conflict(f"the group {path!r} exists already") from None
        self.audit.record(actor, "group.create", f"group{path}")
        return info

    def delete_group(self, group_id: int, *, actor: Actor) -> None:
        with self.database.session() as session:
            group = session.get(Group, group_id)
            if group is None:
                raise NotFound(f"no group with id {group_id}")
            path = group.path
            session.delete(group)
            self._changed(session)
        self.audit.record(actor, "group.delete", f"group{path}")

    # OIDC

    def oidc_principal(self, identity: OidcIdentity) -> Principal | None:
        """The principal of a verified OIDC identity; None if an admin disabled its user. The user is
        recorded on first use and its role and groups are copied to the user list when they change.

        What was read is remembered with the identity revision, like verified tokens: any change to a user
        (disabling one, say) makes the next request read the user again."""
        return self._oidc_principal(identity, None)

    async def authenticate_oidc(self, identity: OidcIdentity) -> Principal | None:
        """`oidc_principal` for the event loop: an identity seen at the revision `watch` read last, with the
        same name, role and groups, is answered from memory; any other is recorded in a worker thread."""
        stamp = self._stamp()
        if stamp is not None:
            user = self._oidc_recall(identity, stamp)
            if user is not None:
                return _oidc_answer(identity, user)
        return await self._off_loop(self._oidc_principal, identity, stamp)

    def _oidc_principal(self, identity: OidcIdentity, stamp: _Stamp | None) -> Principal | None:
        if stamp is None:
            stamp = self._read_stamp()  # before reading: a change made meanwhile is read again next time
        user = self._oidc_recall(identity, stamp)
        if user is None:
            user = self._record_oidc_user(identity, _oidc_role(identity))
            with self._lock:
                if len(self._oidc_seen) > 10_000:
                    self._oidc_seen.clear()
                self._oidc_seen[(identity.issuer, identity.subject)] = (_oidc_shape(identity), stamp, user)
        return _oidc_answer(identity, user)

    def _oidc_recall(self, identity: OidcIdentity, stamp: _Stamp) -> _OidcUser | None:
        """The user recorded for `identity` if it was read at `stamp` and the identity has not changed."""
        seen = self._oidc_seen.get((identity.issuer, identity.subject))
        if seen is None or seen[0] != _oidc_shape(identity) or seen[1] != stamp:
            return None
        return seen[2]

    def _record_oidc_user(self, identity: OidcIdentity, role: Role) -> _OidcUser:
        for attempt in range(3):
            try:
                with self.database.session() as session:
                    user = session.scalars(
                        select(User)
                        .where(User.issuer == identity.issuer, User.subject == identity.subject)
                        .options(selectinload(User.groups))
                    ).one_or_none()
                    if user is None:
                        user = User(
                            name=_free_name(session, identity.username),
                            role=role,
                            issuer=identity.issuer,
                            subject=identity.subject,
                        )
                        session.add(user)
                    if user.role != role or {g.path for g in user.groups} != identity.groups:
                        user.role = role
                        user.groups = _groups(session, sorted(identity.groups), create=True)
                        self._changed(session)  # the user's API tokens now stand for the new role and groups
                    if not user.disabled:
                        user.last_login_at = self.now()
                    session.flush()
                    return _OidcUser(user.id, user.name, user.disabled)
            except IntegrityError:  # another request recorded the same user or group first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _OidcUser:
    """What an OIDC identity's user record says: its id, its name in the user list, whether it is disabled."""

    id: int
    name: str
    disabled: bool


_REVISION = select(IdentityRevision.revision).where(IdentityRevision.id == 1)


def _oidc_role(identity: OidcIdentity) -> Role:
    if "admin" in identity.roles:
        return Role.ADMIN
    return Role.DEVELOPER if "developer" in identity.roles else Role.USER


def _oidc_shape(identity: OidcIdentity) -> tuple[Any, ...]:
    """What of an OIDC identity its user record follows: its name, role and groups."""
    return (identity.username, _oidc_role(identity), identity.groups)


def _oidc_answer(identity: OidcIdentity, user: _OidcUser) -> Principal | None:
    if user.disabled:
        return None
    # The user list's name: the token's own, unless a local user had it first (then `name-2`).
    return Principal(
        user_id=user.id, name=user.name, role=_oidc_role(identity), groups=identity.groups, source="oidc"
    )


def _principal(user: User, *, token_id: int | None) -> Principal:
    return Principal(
        user_id=user.id,
        name=user.name,
        role=user.role,
        groups=frozenset(group.path for group in user.groups),
        source=_source(user),
        token_id=token_id,
    )


def _source(user: User) -> IdentitySource:
    """Where a user comes from: made here, or recorded at its first sign-in through the OIDC issuer."""
    return "local" if user.issuer is None else "oidc"


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def _groups(session: Session, paths: Iterable[str], *, create: bool = False) -> list[Group]:
    """The groups named by `paths`; unknown ones are made when `create`, else refused."""
    wanted = sorted({check_group_path(path) for path in paths})
    if not wanted:
        return []
    found = {g.path: g for g in session.scalars(select(Group).where(Group.path.in_(wanted)))}
    missing = [path for path in wanted if path not in found]
    if missing and not create:
        raise BadRequest(f"no such group: {', '.join(missing)} (create it first)")
    for path in missing:
        found[path] = Group(path=path)
        session.add(found[path])
    return [found[path] for path in wanted]


def _free_name(session: Session, wanted: str) -> str:
    name = wanted[:240] or "user"
    taken = set(session.scalars(select(User.name).where(User.name.like(f"{name}%"))))
    if name not in taken:
        return name
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def caller_info(principal: Principal) -> CallerInfo:
    """Who a signed-in principal is, as the API tells it."""
    return CallerInfo(
        id=principal.user_id,
        name=principal.name,
        role=principal.role,
        groups=sorted(principal.groups),
        source=principal.source,
        token_id=principal.token_id,
    )


def user_info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        name=user.name,
        role=user.role,
        groups=sorted(group.path for group in user.groups),
        source=_source(user),
        disabled=user.disabled,
        created_at=user.created_at.isoformat(),
        last_login_at=user.last_login_at.isoformat() if user.last_login_at else None,
    )


def group_info(group: Group) -> GroupInfo:
    return GroupInfo(
        id=group.id,
        path=group.path,
        members=sorted(user.name for user in group.members),
        created_at=group.created_at.isoformat(),
    )


def token_info(token: ApiToken, user_name: str) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        name=token.name,
        user=user_name,
        user_id=token.user_id,
        prefix=token.prefix,
        kind=token.kind,
        created_at=token.created_at.isoformat(),
        expires_at=token.expires_at.isoformat() if token.expires_at else None,
        revoked_at=token.revoked_at.isoformat() if token.revoked_at else None,
    )
