"""OidcVerifier against a stand-in issuer: discovery and JWKS served by a real HTTP server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from modelport.control.oidc import OidcIdentity, OidcVerifier
from modelport.core.errors import InvalidToken
from modelport.core.settings import Settings

AUDIENCE = "modelport"
ALGORITHMS = ["RS256", "PS256", "ES256"]
DROP = object()  # a claim or header given this value is left out


class Server:
    """Answers fixed documents on a free loopback port and counts the requests for each path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: Counter[str] = Counter()
        self.held: str | None = None  # requests for this path wait until `gate` is set
        self.gate = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if self.path == server.held:
                    server.gate.wait(5)
                status, body = server.routes.get(self.path, (404, b"{}"))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()
        self.running = True

    def serve(self, path: str, document: object, status: int = 200) -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.routes[path] = (status, body)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.gate.set()
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)


class Issuer:
    """A Keycloak-shaped realm: its discovery document and its key set."""

    def __init__(self, server: Server, *, realm: str = "/realms/main") -> None:
        self.server = server
        self.url = server.url + realm
        base = self.url.rstrip("/")
        self.discovery_path = base.removeprefix(server.url) + "/.well-known/openid-configuration"
        self.jwks_path = base.removeprefix(server.url) + "/protocol/openid-connect/certs"
        self.discover(issuer=self.url)

    def discover(self, *, issuer: str) -> None:
        document = {"issuer": issuer, "jwks_uri": self.server.url + self.jwks_path}
        self.server.serve(self.discovery_path, document)

    def publish(self, *jwks: dict[str, Any]) -> None:
        self.server.serve(self.jwks_path, {"keys": list(jwks)})

    @property
    def discoveries(self) -> int:
        return self.server.hits[self.discovery_path]

    @property
    def jwks_fetches(self) -> int:
        return self.server.hits[self.jwks_path]


@dataclass(frozen=True)
class Signer:
    private: Any
    kid: str
    alg: str

    def public_jwk(self, **changes: object) -> dict[str, Any]:
        public = self.private.public_key()
        kind = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        jwk = {**kind.to_jwk(public, as_dict=True), "kid": self.kid, "use": "sig", "alg": self.alg}
        return _changed(jwk, changes)

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, **headers: object) -> str:
        header = _changed({"kid": self.kid}, headers)
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=header)


@dataclass(frozen=True)
class Keys:
    rsa: Signer  # published by the issuer
    ec: Signer  # published by the issuer
    next: Signer  # published later (rotation) or with unfit parameters
    foreign: Signer  # never published


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _changed(base: dict[str, Any], changes: dict[str, object]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {name: value for name, value in merged.items() if value is not DROP}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def claims(issuer: Issuer, **changes: object) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": issuer.url,
        "sub": "f1d0c0de-0001",
        "aud": AUDIENCE,
        "azp": "console",
        "typ": "Bearer",
        "exp": now + 300,
        "iat": now,
        "preferred_username": "alice",
        "email": "alice@example.com",
        "groups": ["/team/users", "/ops", 7, None],
        "realm_access": {"roles": ["developer", "offline_access", 3]},
    }
    return _changed(base, changes)


async def refused(verifier: OidcVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    error = caught.value
    assert error.code == "invalid_token"
    assert error.status == 401
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in str(error)
            assert part not in error.message
    return error


@pytest.fixture(scope="module")
def keys() -> Keys:
    def rsa_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(
        rsa=Signer(rsa_key(), "rsa-1", "RS256"),
        ec=Signer(ec.generate_private_key(ec.SECP256R1()), "ec-1", "ES256"),
        next=Signer(rsa_key(), "rsa-2", "RS256"),
        foreign=Signer(rsa_key(), "rsa-1", "RS256"),
    )


@pytest.fixture
def issuer(keys: Keys) -> Iterator[Issuer]:
    server = Server()
    issuer = Issuer(server)
    issuer.publish(keys.rsa.public_jwk(), keys.ec.public_jwk())
    yield issuer
    server.stop()


@pytest.fixture
def canary() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # made once: loading the CA bundle per client is slow


@pytest.fixture
async def http(tls: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=2, verify=tls) as client:
        yield client


def make_verifier(issuer: Issuer, http: httpx.AsyncClient, clock: Clock, **changes: Any) -> OidcVerifier:
    options: dict[str, Any] = {
        "issuer": issuer.url,
        "audiences": [AUDIENCE],
        "algorithms": ALGORITHMS,
        "refresh_seconds": 300,
        "min_refetch_seconds": 10,
        "http": http,
        "clock": clock,
    }
    return OidcVerifier(**{**options, **changes})


@pytest.fixture
async def verifier(issuer: Issuer, http: httpx.AsyncClient, clock: Clock) -> AsyncIterator[OidcVerifier]:
    verifier = make_verifier(issuer, http, clock)
    yield verifier
    await verifier.close()


# Positive controls


async def test_an_rs256_access_token_gives_its_identity(verifier: OidcVerifier, issuer: Issuer, keys: Keys):
    token_claims = claims(issuer)
    identity = await verifier.verify(keys.rsa.sign(token_claims))
    assert identity == OidcIdentity(
        issuer=issuer.url,
        subject="f1d0c0de-0001",
        username="alice",
        groups=frozenset({"/team/users", "/ops"}),
        roles=frozenset({"developer", "offline_access"}),
        email="alice@example.com",
        expires_at=float(token_claims["exp"]),
    )
    await verifier.verify(keys.rsa.sign(claims(issuer, sub="second")))
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 1)  # fetched lazily, once


async def test_an_es256_token_verifies(verifier: OidcVerifier, issuer: Issuer, keys: Keys):
    assert (await verifier.verify(keys.ec.sign(claims(issuer)))).username == "alice"


async def test_ps256_with_a_key_published_without_alg(issuer: Issuer, http, clock, keys: Keys):
    issuer.publish(keys.rsa.public_jwk(alg=DROP, use=DROP))
    verifier = make_verifier(issuer, http, clock)
    assert (await verifier.verify(keys.rsa.sign(claims(issuer), alg="PS256"))).username == "alice"


@pytest.mark.parametrize(
    "audience",
    [
        {"aud": ["account", AUDIENCE]},
        {"aud": "account", "azp": AUDIENCE},
        {"aud": DROP, "azp": AUDIENCE},
    ],
    ids=["aud-list", "azp-with-account-aud", "azp-without-aud"],
)
async def test_audience_passes_by_aud_list_or_azp(verifier, issuer: Issuer, keys: Keys, audience):
    assert (await verifier.verify(keys.rsa.sign(claims(issuer, **audience)))).username == "alice"


async def test_username_falls_back_to_sub_and_missing_claims_are_empty(verifier, issuer, keys: Keys):
    token = keys.rsa.sign(
        claims(issuer, preferred_username=DROP, email=DROP, groups="/not-a-list", realm_access=DROP)
    )
    identity = await verifier.verify(token)
    assert identity.username == identity.subject == "f1d0c0de-0001"
    assert (identity.groups, identity.roles, identity.email) == (frozenset(), frozenset(), None)


async def test_claim_names_are_configurable(issuer: Issuer, http, clock, keys: Keys):
    verifier = make_verifier(
        issuer, http, clock, username_claim="email", roles_claim="resource_access.modelport.roles"
    )
    token = keys.rsa.sign(claims(issuer, resource_access={"modelport": {"roles": ["admin"]}}))
    identity = await verifier.verify(token)
    assert (identity.username, identity.roles) == ("alice@example.com", frozenset({"admin"}))


async def test_an_issuer_with_a_trailing_slash_is_discovered_without_doubling_it(http, clock, keys: Keys):
    server = Server()
    try:
        issuer = Issuer(server, realm="/realms/main/")
        issuer.publish(keys.rsa.public_jwk())
        verifier = make_verifier(issuer, http, clock)
        assert issuer.url.endswith("/main/")
        assert (await verifier.verify(keys.rsa.sign(claims(issuer)))).issuer == issuer.url
        assert server.hits == {"/realms/main/.well-known/openid-configuration": 1, issuer.jwks_path: 1}
        await refused(verifier, keys.rsa.sign(claims(issuer, iss=issuer.url.rstrip("/"))))
    finally:
        server.stop()


# Header checks: nothing is fetched for these


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(verifier, issuer: Issuer, alg: str):
    for signature in (b"", b"x"):
        token = compact({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, claims(issuer), lambda _, s=signature: s)
        await refused(verifier, token)
    assert sum(issuer.server.hits.values()) == 0


async def test_hs256_signed_with_the_rsa_public_key_is_refused(verifier, issuer: Issuer, keys: Keys):
    pem = keys.rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(keys.rsa.public_jwk()).encode()
    for secret in (pem, jwk_json):
        token = compact(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
            claims(issuer),
            lambda message, secret=secret: hmac.new(secret, message, hashlib.sha256).digest(),
        )
        error = await refused(verifier, token)
        assert "algorithm" in error.message
    assert sum(issuer.server.hits.values()) == 0


async def test_an_algorithm_outside_the_allow_list_is_refused(verifier, issuer: Issuer, keys: Keys):
    await refused(verifier, keys.rsa.sign(claims(issuer), alg="RS512"))
    assert sum(issuer.server.hits.values()) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"kid": DROP},
        {"kid": ""},
        {"kid": 7},
        {"crit": ["exp"], "exp": 1},
        {"typ": "JOSE"},
        {"typ": "dpop+jwt"},
    ],
    ids=["no-kid", "empty-kid", "int-kid", "crit", "typ-jose", "typ-dpop"],
)
async def test_bad_headers_are_refused_before_any_fetch(verifier, issuer: Issuer, keys: Keys, headers):
    token = compact(
        _changed({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}, headers),
        claims(issuer),
        lambda message: b"signature-not-checked",
    )
    await refused(verifier, token)
    assert sum(issuer.server.hits.values()) == 0


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "..",
        " . . ",
        "é.é.é",
        "Bearer x.y.z",
        f"{_b64(b'not json')}.{_b64(b'{}')}.c2ln",
        f"{_b64(b'[1, 2]')}.{_b64(b'{}')}.c2ln",
        f"{_b64(b'{}')}.{_b64(b'{}')}.c2ln",
        "x" * 100_000,
    ],
)
async def test_junk_is_refused(verifier, issuer: Issuer, junk: str):
    await refused(verifier, junk)
    assert sum(issuer.server.hits.values()) == 0


async def test_a_payload_that_is_not_json_is_refused(verifier, issuer: Issuer, keys: Keys):
    def sign(message: bytes) -> bytes:
        return jwt.get_algorithm_by_name("RS256").sign(message, keys.rsa.private)

    header = _b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}).encode())
    for payload in (b"not json", b"[1]"):
        signing_input = f"{header}.{_b64(payload)}"
        await refused(verifier, f"{signing_input}.{_b64(sign(signing_input.encode()))}")


# Signature and keys


async def test_a_foreign_key_with_a_published_kid_is_refused(verifier, issuer: Issuer, keys: Keys):
    error = await refused(verifier, keys.foreign.sign(claims(issuer)))
    assert "signature" in error.message


async def test_a_tampered_payload_is_refused(verifier, issuer: Issuer, keys: Keys):
    honest = keys.rsa.sign(claims(issuer))
    wanted = keys.rsa.sign(claims(issuer, sub="mallory", realm_access={"roles": ["admin"]}))
    header, _, signature = honest.split(".")
    await refused(verifier, f"{header}.{wanted.split('.')[1]}.{signature}")


async def test_a_key_of_the_wrong_type_for_the_alg_is_not_used(verifier, issuer: Issuer, keys: Keys):
    await refused(verifier, keys.ec.sign(claims(issuer), kid="rsa-1"))  # ES256 naming an RSA key
    await refused(verifier, keys.rsa.sign(claims(issuer), kid="ec-1"))  # RS256 naming an EC key


@pytest.mark.parametrize(
    ("published", "verifies"),
    [
        ({"use": "enc"}, False),
        ({"alg": "RS512"}, False),
        ({"key_ops": ["encrypt"]}, False),
        ({"use": ["sig"]}, False),
        ({"key_ops": ["verify"]}, True),
        ({"use": DROP, "alg": DROP}, True),
    ],
)
async def test_only_keys_fit_for_signatures_with_this_alg_verify(
    issuer: Issuer, http, clock, keys: Keys, published, verifies
):
    issuer.publish(keys.next.public_jwk(**published))
    verifier = make_verifier(issuer, http, clock)
    token = keys.next.sign(claims(issuer))
    if verifies:
        assert (await verifier.verify(token)).username == "alice"
    else:
        await refused(verifier, token)


async def test_a_short_rsa_key_is_not_used(issuer: Issuer, http, clock, keys: Keys):
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    issuer.publish(Signer(short, "short-1", "RS256").public_jwk())
    verifier = make_verifier(issuer, http, clock)
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "short-1"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims(issuer)).encode())}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), short)
    await refused(verifier, f"{signing_input}.{_b64(signature)}")  # and no warning (they are errors here)


async def test_private_key_material_in_the_jwks_is_not_used(issuer: Issuer, http, clock, keys: Keys):
    private_jwk = json.loads(RSAAlgorithm.to_jwk(keys.next.private))
    issuer.publish({**private_jwk, "kid": "rsa-2", "use": "sig", "alg": "RS256"})
    verifier = make_verifier(issuer, http, clock)
    await refused(verifier, keys.next.sign(claims(issuer)))


async def test_jku_x5u_jwk_and_x5c_headers_are_never_fetched_nor_used(
    verifier, issuer: Issuer, canary: Server, clock: Clock, keys: Keys
):
    canary.serve("/jwks", {"keys": [keys.foreign.public_jwk(kid="attacker")]})
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    clock.advance(10)
    pointers = {"jku": canary.url + "/jwks", "x5u": canary.url + "/cert.pem"}
    embedded = {"jwk": keys.foreign.public_jwk(kid="attacker"), "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]}
    await refused(verifier, keys.foreign.sign(claims(issuer), kid="attacker", **pointers, **embedded))
    await refused(verifier, keys.foreign.sign(claims(issuer), **pointers, **embedded))  # published kid
    assert sum(canary.hits.values()) == 0
    assert issuer.jwks_fetches == 2  # the unknown kid refetched the issuer's own key set, once


# Claims


@dataclass(frozen=True)
class FromNow:
    """A time `seconds` from the moment the test runs."""

    seconds: int


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://sso.example.com/realms/main"},
        {"iss": "TRAILING/"},
        {"iss": DROP},
        {"aud": DROP, "azp": "console"},
        {"aud": "someone-else"},
        {"aud": ["someone-else", 7]},
        {"aud": "account"},
        {"aud": [{"x": 1}], "azp": ["modelport"]},
        {"exp": FromNow(-120)},
        {"exp": DROP},
        {"exp": "9999999999"},
        {"nbf": FromNow(120)},
        {"iat": FromNow(120)},
        {"sub": DROP},
        {"sub": ""},
        {"sub": 7},
    ],
    ids=[
        "wrong-iss",
        "iss-trailing-slash",
        "no-iss",
        "no-aud",
        "wrong-aud",
        "wrong-aud-list",
        "account-aud-only",
        "malformed-aud-azp",
        "expired",
        "no-exp",
        "string-exp",
        "nbf-future",
        "iat-future",
        "no-sub",
        "empty-sub",
        "int-sub",
    ],
)
async def test_bad_claims_are_refused(verifier, issuer: Issuer, keys: Keys, changes: dict[str, object]):
    # Times are taken when the test runs, not when the parameters were collected minutes earlier.
    changes = {k: int(time.time()) + v.seconds if isinstance(v, FromNow) else v for k, v in changes.items()}
    if changes.get("iss") == "TRAILING/":
        changes = {"iss": issuer.url + "/"}
    await refused(verifier, keys.rsa.sign(claims(issuer, **changes)))


async def test_times_within_the_leeway_pass(verifier, issuer: Issuer, keys: Keys):
    now = int(time.time())
    for changes in ({"nbf": now + 10}, {"iat": now + 10}, {"exp": now - 10}):
        assert (await verifier.verify(keys.rsa.sign(claims(issuer, **changes)))).username == "alice"


def test_a_verifier_without_an_audience_cannot_be_made(issuer: Issuer, http, clock):
    # Without one, a token the issuer gave any of its clients would pass.
    with pytest.raises(ValueError, match="at least one audience"):
        make_verifier(issuer, http, clock, audiences=[])


# ID tokens


@pytest.mark.parametrize(
    "changes",
    [
        {"typ": "ID"},
        {"typ": "Refresh"},
        {"nonce": "n-0S6_WzA2Mj"},
        {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"},
        {"c_hash": "x"},
    ],
)
async def test_id_tokens_are_refused(verifier, issuer: Issuer, keys: Keys, changes):
    await refused(verifier, keys.rsa.sign(claims(issuer, **changes)))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+jwt", None])
async def test_access_token_header_types_pass(verifier, issuer: Issuer, keys: Keys, typ: str | None):
    token = keys.rsa.sign(claims(issuer), typ=typ)  # None: no typ header at all
    assert jwt.get_unverified_header(token).get("typ") == typ
    assert (await verifier.verify(token)).username == "alice"


@pytest.mark.parametrize(
    ("typ", "passes"), [("at+jwt", True), ("application/at+jwt", True), ("JWT", False), (None, False)]
)
async def test_id_token_claims_pass_only_in_tokens_typed_at_jwt(
    verifier, issuer: Issuer, keys: Keys, typ: str | None, passes: bool
):
    token = keys.rsa.sign(claims(issuer, nonce="n-0S6_WzA2Mj"), typ=typ)
    if passes:
        assert (await verifier.verify(token)).username == "alice"
    else:
        await refused(verifier, token)


# The key cache


async def test_an_unknown_kid_refetches_once_per_min_refetch(
    verifier, issuer: Issuer, clock: Clock, keys: Keys
):
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    await refused(verifier, keys.rsa.sign(claims(issuer), kid="unknown-1"))  # the keys are fresh
    assert issuer.jwks_fetches == 1
    clock.advance(10)
    error = await refused(verifier, keys.rsa.sign(claims(issuer), kid="unknown-2"))
    assert "not one of the issuer's keys" in error.message
    assert issuer.jwks_fetches == 2
    clock.advance(9)
    await refused(verifier, keys.rsa.sign(claims(issuer), kid="unknown-3"))
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 2)


async def test_concurrent_verifications_share_one_fetch(verifier, issuer: Issuer, clock: Clock, keys: Keys):
    good = [keys.rsa.sign(claims(issuer, sub=f"user-{n}")) for n in range(5)]
    identities = await asyncio.gather(*(verifier.verify(token) for token in good))
    assert {identity.subject for identity in identities} == {f"user-{n}" for n in range(5)}
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 1)
    clock.advance(10)
    unknown = [keys.rsa.sign(claims(issuer), kid=f"unknown-{n}") for n in range(5)]
    results = await asyncio.gather(*(verifier.verify(token) for token in unknown), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    assert issuer.jwks_fetches == 2


async def test_a_cancelled_fetch_does_not_hold_back_the_next(
    verifier, issuer: Issuer, clock: Clock, keys: Keys
):
    issuer.server.held = issuer.jwks_path
    pending = asyncio.create_task(verifier.verify(keys.rsa.sign(claims(issuer))))
    for _ in range(1000):
        if issuer.jwks_fetches:
            break
        await asyncio.sleep(0.002)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    issuer.server.gate.set()
    assert (await verifier.verify(keys.rsa.sign(claims(issuer)))).username == "alice"
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 2)


async def test_keys_are_refreshed_after_refresh_seconds(verifier, issuer: Issuer, clock: Clock, keys: Keys):
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    clock.advance(299)
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    assert issuer.jwks_fetches == 1
    issuer.publish(keys.next.public_jwk())  # rsa-1 is withdrawn
    clock.advance(1)
    await refused(verifier, keys.rsa.sign(claims(issuer)))
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 2)


async def test_a_rotated_key_verifies_after_one_refetch(verifier, issuer: Issuer, clock: Clock, keys: Keys):
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    issuer.publish(keys.rsa.public_jwk(), keys.next.public_jwk())
    clock.advance(10)
    assert (await verifier.verify(keys.next.sign(claims(issuer)))).username == "alice"
    assert (await verifier.verify(keys.rsa.sign(claims(issuer)))).username == "alice"
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 2)


@pytest.mark.parametrize("outage", ["stopped", "503", "bad-json", "no-keys-list"])
async def test_while_the_provider_is_down_cached_keys_work_and_unknown_ones_fail_closed(
    verifier, issuer: Issuer, clock: Clock, keys: Keys, outage: str, caplog: pytest.LogCaptureFixture
):
    await verifier.verify(keys.rsa.sign(claims(issuer)))
    if outage == "stopped":
        issuer.server.stop()
    elif outage == "503":
        issuer.server.serve(issuer.jwks_path, b"down", status=503)
    elif outage == "bad-json":
        issuer.server.serve(issuer.jwks_path, b'{"keys": [')
    else:
        issuer.server.serve(issuer.jwks_path, {"error": "oops"})
    clock.advance(300)
    with caplog.at_level(logging.WARNING, logger="modelport.oidc"):
        assert (await verifier.verify(keys.rsa.sign(claims(issuer)))).username == "alice"
        assert (await verifier.verify(keys.ec.sign(claims(issuer)))).username == "alice"
    assert "keeping the keys held" in caplog.text
    clock.advance(10)
    await refused(verifier, keys.next.sign(claims(issuer)))
    if outage != "stopped":
        assert issuer.jwks_fetches == 3  # the failed refresh, then the unknown kid's refetch


async def test_with_the_provider_down_from_the_start_every_token_fails_closed(
    issuer: Issuer, http, clock: Clock, keys: Keys
):
    issuer.server.stop()
    verifier = make_verifier(issuer, http, clock)
    error = await refused(verifier, keys.rsa.sign(claims(issuer)))
    assert "unavailable" in error.message


async def test_a_failed_first_fetch_is_retried_no_sooner_than_min_refetch(
    issuer: Issuer, http, clock: Clock, keys: Keys
):
    issuer.server.serve(issuer.jwks_path, b"", status=500)
    verifier = make_verifier(issuer, http, clock)
    await refused(verifier, keys.rsa.sign(claims(issuer)))
    await refused(verifier, keys.rsa.sign(claims(issuer)))
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 1)
    issuer.publish(keys.rsa.public_jwk())
    clock.advance(10)
    assert (await verifier.verify(keys.rsa.sign(claims(issuer)))).username == "alice"
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 2)


@pytest.mark.parametrize("named", ["SLASH", "https://sso.example.com/realms/main", None])
async def test_a_discovery_document_naming_another_issuer_fails_every_token(
    issuer: Issuer, http, clock: Clock, keys: Keys, named, caplog: pytest.LogCaptureFixture
):
    issuer.discover(issuer=issuer.url + "/" if named == "SLASH" else named)
    verifier = make_verifier(issuer, http, clock)
    with caplog.at_level(logging.WARNING, logger="modelport.oidc"):
        await refused(verifier, keys.rsa.sign(claims(issuer)))
    assert "another issuer" in caplog.text
    assert (issuer.discoveries, issuer.jwks_fetches) == (1, 0)


# Construction


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"], []])
def test_symmetric_or_no_algorithms_are_refused_at_construction(algorithms: list[str]):
    with pytest.raises(ValueError, match="algorithm"):
        OidcVerifier(issuer="https://sso.example.com/realms/main", audiences=["a"], algorithms=algorithms)


def test_an_issuer_must_be_an_http_url():
    with pytest.raises(ValueError, match="URL"):
        OidcVerifier(issuer="sso.example.com", audiences=["a"], algorithms=["RS256"])


async def test_from_settings(issuer: Issuer, keys: Keys):
    assert OidcVerifier.from_settings(Settings(oidc_issuer=None)) is None
    settings = Settings(oidc_issuer=issuer.url, oidc_audience=[AUDIENCE], oidc_jwks_min_refetch_seconds=0)
    verifier = OidcVerifier.from_settings(settings)
    assert verifier is not None
    try:
        assert (verifier.issuer, verifier.audiences) == (issuer.url, frozenset({AUDIENCE}))
        assert "HS256" not in verifier.algorithms and "ES256" in verifier.algorithms
        assert (await verifier.verify(keys.ec.sign(claims(issuer)))).username == "alice"
    finally:
        await verifier.close()


def test_every_accepted_algorithm_has_its_key_type():
    from modelport.control import oidc
    from modelport.core.names import SIGNATURE_ALGORITHMS

    assert set(oidc._KEY_TYPES) == SIGNATURE_ALGORITHMS
