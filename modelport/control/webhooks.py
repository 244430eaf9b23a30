"""Signed webhooks of jobs (Standard Webhooks): where they may go, the callers' signing secrets, and the
deliverer that empties the outbox.

The guard (`check`, `target`) lets a webhook reach public unicast addresses only, and the networks the
settings open (`webhook_allowed_networks`). It reads IP literals in every spelling URL parsers accept
(`0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`, `[::ffff:127.0.0.1]`), resolves names, and refuses a URL
when any address it leads to is private, loopback, link-local, multicast, reserved, or an IPv6 form of one.
A delivery checks its URL again and connects to the very address it checked, naming the host in `Host` and
in TLS, so a name that resolves elsewhere by then gains nothing; redirects are never followed.

Job changes write their messages in the outbox (`webhook_messages`, from `queue/jobs.py`). The deliverer
claims the due ones in one transaction (SQLite's write lock; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so that
gateways claim side by side) and moves their `next_at` past the longest an attempt can take, so no other
gateway sends them meanwhile. It sends up to `MAX_IN_FLIGHT` at once, records every attempt, and retries a
failing receiver on a growing schedule until `webhook_retry_hours` after the event. A gateway that stops
or dies leaves its messages pending, for itself or another to send: an event is sent at least once, always
under the same `webhook-id`.

Each message is signed with its caller's secret as Standard Webhooks sign them; for a day after a rotation,
with the previous secret too (the receiver accepts either).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelport.control.audit import Actor, AuditTrail
from modelport.core.errors import WebhookRefused, WebhookSecretNotFound
from modelport.core.records import WebhookAttempt, WebhookAttemptList, WebhookSecret
from modelport.core.settings import Settings
from modelport.db import Database
from modelport.db.database import failure
from modelport.db.models import WebhookDelivery, WebhookMessage
from modelport.db.models import WebhookSecret as SecretRow

__all__ = ["MAX_IN_FLIGHT", "MAX_URL", "ROTATION_OVERLAP", "SECRET_PREFIX", "Target", "Webhooks", "sign"]

log = logging.getLogger("modelport.webhooks")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int, int, int], Sequence[tuple[Any, ...]]]
"""`socket.getaddrinfo(host, port, family, type)`."""

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MAX_URL = 2048
MAX_IN_FLIGHT = 16
"""Deliveries one gateway makes at once."""
ROTATION_OVERLAP = timedelta(hours=24)
"""How long messages are signed with the previous secret too, after a rotation."""

_SCHEDULE = (5, 300, 1800, 7200, 18_000, 36_000)
"""Seconds before each retry at the default `webhook_retry_seconds` (5 s); the last repeats."""
_JITTER = 0.1
_LOOK_SECONDS = 1.0
"""The longest the deliverer waits between looks at the outbox."""
_LEASE_MARGIN = 60.0
"""Seconds a claim holds a message beyond the longest an attempt may take: time to record it."""
_STOP_GRACE = 1.0
"""How long deliveries in flight may finish once the deliverer is stopped; the rest stay pending."""
_ERROR_CHARS = 500
_USER_AGENT = "modelport-webhooks"
_DEFAULT_PORTS = {"http": 80, "https": 443}

_URL_CHARACTERS = re.compile(r"[!-\[\]-~]+")
"""Printable ASCII without spaces or backslashes."""
_AUTHORITY = re.compile(r"(?P<host>\[[^\[\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]*))?")
_NAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC = re.compile(r"[0-9]+|0x[0-9a-f]*")
_IPV4_PARTS = {16: re.compile(r"[0-9a-f]*"), 8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+")}


def _networks(*table: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(network), reason) for network, reason in table)


_REFUSED_V4 = _networks(
    ("0.0.0.0/8", "an unspecified address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a reserved address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a reserved address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a reserved address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_REFUSED_V6 = _networks(
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/8", "a reserved address"),
    ("64:ff9b:1::/48", "a local NAT64 address"),
    ("100::/64", "a discard address"),
    ("2001::/23", "a reserved address"),
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a unique local address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NEXT_DUE = select(func.min(WebhookMessage.next_at)).where(WebhookMessage.state == "pending")
"""When the next pending message is due (claimed ones count: they are due when their claim runs out)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL as the guard let it pass: the checked addresses to connect to and the name to present."""

    scheme: str
    host: str
    """The host as the URL names it, lowercased (an IP literal spelled as usual): `Host` and TLS name it."""
    port: int
    path: str
    """The path and query, as given."""
    addresses: tuple[Address, ...]
    """Every address the host has, each checked; deliveries connect to the first."""
    literal: bool
    """The URL names an IP address, not a host name."""

    @property
    def authority(self) -> str:
        """The `Host` header: the host, and the port unless it is the scheme's own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def connect_url(self) -> httpx.URL:
        """The URL with its host replaced by the first checked address."""
        return httpx.URL(
            scheme=self.scheme, host=str(self.addresses[0]), port=self.port, raw_path=self.path.encode()
        )


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks signature (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`) under `secret`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A message this gateway holds until `lease`, and the secrets that sign it (if the caller has any)."""

    id: str
    url: str
    body: str
    lease: datetime
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Attempt:
    at: datetime
    status: int | None
    error: str | None
    duration_ms: float
    final: bool = False
    """No retry can help: the message fails now."""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Webhooks:
    """The webhooks of the jobs in `database`: the URL guard, the signing secrets, the deliverer."""

    def __init__(
        self,
        database: Database,
        *,
        settings: Settings,
        resolve: Resolve = socket.getaddrinfo,
        clock: Callable[[], float] = time.time,
        audit: AuditTrail | None = None,
    ) -> None:
        self.database = database
        self.audit = audit
        self.settings = settings
        self.resolve = resolve
        self.clock = clock
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in settings.webhook_allowed_networks
        )
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # the guard

    def check(self, url: str) -> None:
        """Raise `WebhookRefused`, saying why, unless webhooks may go to `url`. Blocks: names are resolved."""
        self.target(url)

    def target(self, url: str) -> Target:
        """Where a webhook to `url` connects, every address checked; else `WebhookRefused`. Blocks."""
        scheme, host, port, path = _split(url)
        literal = _ip_literal(host)
        if literal is not None:
            addresses: tuple[Address, ...] = (literal,)
            verb = "is"
        else:
            addresses, verb = self._resolved(host, port), "resolves to"
        for address in addresses:
            reason = self._refusal(address)
            if reason is not None:
                # The host as the caller gave it: never the addresses a name resolved to.
                _refuse(
                    f"the webhook URL's host {host} {verb} {reason}; webhooks go to public addresses only"
                )
        shown = host if literal is None else str(literal)
        return Target(scheme, shown, port, path, addresses, literal is not None)

    def _resolved(self, host: str, port: int) -> tuple[Address, ...]:
        try:
            found = self.resolve(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            _refuse(f"the webhook URL's host {host} cannot be resolved")
        addresses: dict[Address, None] = {}
        for *_, sockaddr in found:
            with contextlib.suppress(ValueError, IndexError, TypeError):
                addresses[ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])] = None
        if not addresses:
            _refuse(f"the webhook URL's host {host} cannot be resolved")
        return tuple(addresses)

    def _refusal(self, address: Address) -> str | None:
        """Why webhooks may not go to `address`; None if they may."""
        embedded = _embedded_ipv4(address)
        if any(
            address in network or (embedded is not None and embedded in network) for network in self.allowed
        ):
            return None
        if embedded is not None:
            reason = _classify(embedded)
            return None if reason is None else f"an IPv6 form of {reason}"
        return _classify(address)

    # secrets

    def has_secret(self, user_id: int) -> bool:
        with self.database.session() as session:
            return session.get(SecretRow, user_id) is not None

    def secret_info(self, user_id: int) -> WebhookSecret:
        """When the user's secret was made (the secret itself is not shown again); `WebhookSecretNotFound`."""
        with self.database.session() as session:
            row = session.get(SecretRow, user_id)
            if row is None:
                raise WebhookSecretNotFound(
                    "you have no webhook signing secret yet; make one with `POST /api/v1/webhooks/secret`"
                )
            return WebhookSecret(secret=None, created_at=row.created_at.isoformat())

    def rotate(self, user_id: int, *, actor: Actor | None = None) -> WebhookSecret:
        """Make the user's first secret, or replace it (the previous one signs too for `ROTATION_OVERLAP`).
        The answer holds the new secret: it is shown only now. `actor` is who the audit trail names."""
        secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        now = self.now()
        for tries_left in (1, 0):
            try:
                with self.database.writing() as session:
                    self._replace(session, user_id, secret, now)
                break
            except IntegrityError:  # another request made the first secret at the same moment
                if not tries_left:
                    raise
        if self.audit is not None and actor is not None:
            self.audit.record(actor, "webhook.rotate", f"user/{user_id}")
        return WebhookSecret(secret=secret, created_at=now.isoformat())

    @staticmethod
    def _replace(session: Session, user_id: int, secret: str, now: datetime) -> None:
        row = session.get(SecretRow, user_id, with_for_update=True)
        if row is None:
            session.add(SecretRow(user_id=user_id, secret=secret, created_at=now))
            session.flush()
            return
        row.previous, row.previous_until = row.secret, now + ROTATION_OVERLAP
        row.secret, row.created_at = secret, now

    # attempts

    def attempts(self, job_id: str) -> WebhookAttemptList:
        """Every delivery attempt of the job's events, oldest first, and its events still pending."""
        with self.database.session() as session:
            tried = session.execute(
                select(WebhookDelivery, WebhookMessage.event)
                .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
                .where(WebhookDelivery.job_id == job_id)
                .order_by(WebhookDelivery.at, WebhookDelivery.id)
            ).all()
            waiting = session.scalars(
                select(WebhookMessage)
                .where(WebhookMessage.job_id == job_id, WebhookMessage.state == "pending")
                .order_by(WebhookMessage.created_at, WebhookMessage.id)
            ).all()
            return WebhookAttemptList(
                attempts=[_attempt_record(row, event) for row, event in tried],
                pending=[
                    {
                        "message_id": row.id,
                        "event": row.event,
                        "next_at": row.next_at.isoformat(),
                        "attempts": row.attempts,
                    }
                    for row in waiting
                ],
            )

    # the deliverer

    def wake(self) -> None:
        """Have the deliverer look for due messages now; from its event loop or from any thread."""
        loop = self._loop
        if loop is None:
            return  # not running: it looks as soon as it starts
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver the messages that come due until `stop` is set; then give the deliveries in flight
        `_STOP_GRACE` seconds and leave the rest pending, due at once."""
        self._loop = asyncio.get_running_loop()
        in_flight: dict[asyncio.Task[None], _Claimed] = {}
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=0)
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy: the connection goes to the checked address
            timeout=self.settings.webhook_timeout_seconds,
            limits=limits,  # no connection is reused: each one verified one host name
        )
        try:
            while not stop.is_set():
                self._wake.clear()
                delay = await self._start_due(client, in_flight)
                await _either(stop, self._wake, timeout=delay)
        finally:
            await self._settle(in_flight)
            await client.aclose()

    async def _start_due(
        self, client: httpx.AsyncClient, in_flight: dict[asyncio.Task[None], _Claimed]
    ) -> float:
        """Claim and start what is due, as far as there is room; returns how long to wait for more."""
        room = MAX_IN_FLIGHT - len(in_flight)
        if room <= 0:
            return _LOOK_SECONDS  # a delivery that ends wakes the loop
        try:
            claimed, upcoming = await asyncio.to_thread(self._claim, room)
        except Exception as exc:
            self._trouble("claiming due messages", exc)
            return _LOOK_SECONDS
        self._failing = False

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.pop(task, None)
            self._wake.set()  # room for another, and a retry may be due soon

        for message in claimed:
            task = asyncio.create_task(self._deliver(client, message), name=f"webhook {message.id}")
            in_flight[task] = message
            task.add_done_callback(finished)
        if upcoming is None:
            return _LOOK_SECONDS
        return min(_LOOK_SECONDS, max(0.01, (upcoming - self.now()).total_seconds()))

    async def _settle(self, in_flight: dict[asyncio.Task[None], _Claimed]) -> None:
        if not in_flight:
            return
        _, unfinished = await asyncio.wait(set(in_flight), timeout=_STOP_GRACE)
        left = [in_flight[task] for task in unfinished]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if left:
            try:
                await asyncio.to_thread(self._release, left)
            except Exception as exc:  # they are sent once their claims run out
                log.warning(
                    "webhooks: %d messages stay claimed until their lease ends: %s", len(left), failure(exc)
                )

    def _claim(self, limit: int) -> tuple[list[_Claimed], datetime | None]:
        """Take up to `limit` due messages; returns them and when the next pending one is due."""
        now = self.now()
        with self.database.session() as session:  # a look without the write lock, which most rounds need not
            upcoming = session.scalar(_NEXT_DUE)
        if upcoming is None or upcoming > now:
            return [], upcoming
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + _LEASE_MARGIN)
        with self.database.writing() as session:
            rows = list(
                session.scalars(
                    select(WebhookMessage)
                    .where(WebhookMessage.state == "pending", WebhookMessage.next_at <= now)
                    .order_by(WebhookMessage.next_at, WebhookMessage.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's write lock is held already
                )
            )
            keys = _signing_keys(session, {row.user_id for row in rows if row.user_id is not None}, now)
            claimed = []
            for row in rows:
                row.next_at = lease
                signing = keys.get(row.user_id, ()) if row.user_id is not None else ()
                claimed.append(_Claimed(row.id, row.url, row.body, lease, signing))
            session.flush()
            upcoming = session.scalar(_NEXT_DUE)
        return claimed, upcoming

    async def _deliver(self, client: httpx.AsyncClient, message: _Claimed) -> None:
        attempt = await self._attempt(client, message)
        try:
            await asyncio.to_thread(self._record, message, attempt)
        except Exception as exc:  # the message stays claimed, and is sent again once the claim runs out
            self._trouble("recording a delivery", exc)

    async def _attempt(self, client: httpx.AsyncClient, message: _Claimed) -> _Attempt:
        at, started = self.now(), time.monotonic()

        def attempt(status: int | None, error: str | None, *, final: bool = False) -> _Attempt:
            return _Attempt(at, status, error, (time.monotonic() - started) * 1000, final)

        if not message.secrets:
            return attempt(None, "the job's caller has no webhook signing secret any more", final=True)
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(timeout):  # resolving, connecting and the answer together
                target = await asyncio.to_thread(self.target, message.url)
                status = await self._post(client, target, message)
        except WebhookRefused as exc:
            return attempt(None, exc.message)
        except TimeoutError:
            return attempt(None, f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return attempt(None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
        except Exception:
            log.exception("webhooks: delivering message %s failed unexpectedly", message.id)
            return attempt(None, "the delivery failed unexpectedly")
        if 300 <= status < 400:
            return attempt(status, f"the receiver answered {status}; redirects are not followed")
        return attempt(status, None if 200 <= status < 300 else f"the receiver answered {status}")

    async def _post(self, client: httpx.AsyncClient, target: Target, message: _Claimed) -> int:
        timestamp = int(self.clock())
        signatures = " ".join(sign(secret, message.id, timestamp, message.body) for secret in message.secrets)
        headers = {
            "host": target.authority,
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }
        tls_name = target.scheme == "https" and not target.literal
        request = client.build_request(
            "POST",
            target.connect_url(),
            content=message.body.encode(),
            headers=headers,
            extensions={"sni_hostname": target.host} if tls_name else None,
        )
        response = await client.send(request, stream=True)  # the body is never read
        await response.aclose()
        return response.status_code

    def _record(self, message: _Claimed, attempt: _Attempt) -> None:
        """Record `attempt`, and what follows for the message: delivered, retried later, or failed."""
        with self.database.writing() as session:
            row = session.get(WebhookMessage, message.id, with_for_update=True)
            if row is None:
                return  # the job has been swept, and its messages with it
            row.attempts += 1
            session.add(
                WebhookDelivery(
                    message_id=row.id,
                    job_id=row.job_id,
                    attempt=row.attempts,
                    at=attempt.at,
                    url=row.url,
                    status=attempt.status,
                    error=attempt.error,
                    duration_ms=round(attempt.duration_ms, 3),
                    delivered=attempt.delivered,
                )
            )
            if row.state != "pending":
                return
            if attempt.delivered:
                row.state = "delivered"
            elif row.next_at != message.lease:
                return  # the claim ran out and another gateway holds the message now
            elif attempt.final:
                row.state = "failed"
            else:
                self._reschedule(row)

    def _reschedule(self, row: WebhookMessage) -> None:
        scale = self.settings.webhook_retry_seconds / _SCHEDULE[0]
        delay = _SCHEDULE[min(row.attempts, len(_SCHEDULE)) - 1] * scale
        retry_at = self.now() + timedelta(seconds=delay * random.uniform(1 - _JITTER, 1 + _JITTER))
        if retry_at > row.created_at + timedelta(hours=self.settings.webhook_retry_hours):
            row.state = "failed"
        else:
            row.next_at = retry_at

    def _release(self, messages: Iterable[_Claimed]) -> None:
        """Make messages this gateway claimed but did not finish due at once."""
        now = self.now()
        with self.database.writing() as session:
            for message in messages:
                session.execute(
                    update(WebhookMessage)
                    .where(
                        WebhookMessage.id == message.id,
                        WebhookMessage.state == "pending",
                        WebhookMessage.next_at == message.lease,
                    )
                    .values(next_at=now)
                )

    def _trouble(self, doing: str, exc: Exception) -> None:
        """Log a failure once while it lasts (the database may be down for a while)."""
        if not self._failing:
            log.warning("webhooks: %s failed: %s; trying again", doing, failure(exc), exc_info=True)
        self._failing = True


def _split(url: str) -> tuple[str, str, int, str]:
    """The scheme, host (lowercased), port and path with query of `url`; `WebhookRefused` if it is not a
    plain http(s) URL."""
    if len(url) > MAX_URL:
        _refuse(f"the webhook URL is longer than {MAX_URL} characters")
    if not _URL_CHARACTERS.fullmatch(url):
        _refuse(
            "the webhook URL must be printable ASCII without spaces or backslashes: percent-encode the rest, "
            "and give international names in punycode"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        _refuse("the webhook URL is not a valid URL")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        _refuse("the webhook URL must be http:// or https://")
    if "@" in parts.netloc:
        _refuse("the webhook URL must not hold credentials (user:password@)")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if authority is None or not authority["host"] or authority["host"] == "[]":
        _refuse("the webhook URL has no valid host")
    port = int(authority["port"]) if authority["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        _refuse("the webhook URL's port must be from 1 to 65535")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, authority["host"].lower(), port, path


def _ip_literal(host: str) -> Address | None:
    """The address `host` spells, in any form a URL parser reads as one; None for a host name."""
    if host.startswith("["):
        text = host[1:-1]
        if "%" in text:
            _refuse("the webhook URL's IPv6 address must not name a zone")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            _refuse(f"the webhook URL's host {host} is not a valid IPv6 address")
    labels = host.split(".")
    if len(labels) > 1 and not labels[-1]:
        labels.pop()  # a trailing dot
    if not _NUMERIC.fullmatch(labels[-1]):
        _check_name(host)
        return None
    # As URL parsers read it (WHATWG's IPv4 parser, glibc's inet_aton): one to four parts, each decimal,
    # octal (`0177`) or hexadecimal (`0x7f`), the last filling the bytes that are left.
    numbers = [_ipv4_part(label) for label in labels]
    fits = len(numbers) <= 4 and all(n is not None and n <= 255 for n in numbers[:-1])
    last = numbers[-1]
    if not fits or last is None or last >= 256 ** (5 - len(numbers)):
        _refuse(f"the webhook URL's host {host} is not a valid IPv4 address")
    value = sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]) if n is not None) + last
    return ipaddress.IPv4Address(value)


def _ipv4_part(label: str) -> int | None:
    if label.startswith("0x"):
        digits, base = label[2:], 16
    elif len(label) > 1 and label.startswith("0"):
        digits, base = label[1:], 8
    else:
        digits, base = label, 10
    if not _IPV4_PARTS[base].fullmatch(digits):
        return None
    return int(digits, base) if digits else 0


def _check_name(host: str) -> None:
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_NAME_LABEL.fullmatch(label) for label in name.split(".")):
        _refuse(f"the webhook URL's host {host} is not a valid host name")


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, IPv4-compatible, NAT64, 6to4."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def _classify(address: Address) -> str | None:
    """What kind of address that is not public `address` is; None for a public unicast address."""
    table = _REFUSED_V4 if address.version == 4 else _REFUSED_V6
    for network, reason in table:
        if address in network:
            return reason
    return None if address.is_global else "an address that is not public"


def _refuse(message: str) -> NoReturn:
    raise WebhookRefused(message)


def _signing_keys(session: Session, user_ids: set[int], now: datetime) -> dict[int, tuple[str, ...]]:
    """Each user's secrets that sign now: the current one, and the previous one during its overlap."""
    keys: dict[int, tuple[str, ...]] = {}
    if not user_ids:
        return keys
    for row in session.scalars(select(SecretRow).where(SecretRow.user_id.in_(sorted(user_ids)))):
        overlap = row.previous is not None and row.previous_until is not None and row.previous_until > now
        keys[row.user_id] = (row.secret, row.previous) if overlap and row.previous else (row.secret,)
    return keys


async def _either(first: asyncio.Event, second: asyncio.Event, *, timeout: float) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def _attempt_record(row: WebhookDelivery, event: str) -> WebhookAttempt:
    return WebhookAttempt(
        message_id=row.message_id,
        event=event,
        attempt=row.attempt,
        at=row.at.isoformat(),
        url=row.url,
        status=row.status,
        error=row.error,
        duration_ms=row.duration_ms,
        delivered=row.delivered,
    )
