"""The server as an OAuth resource server for a Keycloak-shaped issuer (a real oidc-provider on loopback):
users sign in there, their groups open modules to them, and every forged or misused token is refused (401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from drive import deploy, push, wait_built, wait_deployment
from manifests import api, module_copy
from oidc_provider import OidcProvider
from platform_server import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    server: ServerProcess
    provider: OidcProvider

    def call(self, token: str, module: str = "mod-a", scheme: str = "Bearer") -> httpx.Response:
        return httpx.post(
            f"{self.server.url}/api/v1/modules/{module}/predict",
            json={"inputs": {"text": "hi"}},
            headers={"Authorization": f"{scheme} {token}"},
        )

    def access_token(self, user: str) -> str:
        return str(self.provider.tokens(user, f"password-{user}")["access_token"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A provider of this module's own (the tests rotate its keys and stop it) and a server trusting it."""
    root = tmp_path_factory.mktemp("oidc")
    with OidcProvider() as provider:
        server = ServerProcess(
            root / "server",
            token=ADMIN_TOKEN,
            env={
                "MODELPORT_OIDC_ISSUER": provider.issuer,
                "MODELPORT_OIDC_AUDIENCE": "modelport",
                "MODELPORT_OIDC_JWKS_MIN_REFETCH_SECONDS": "0",
            },
        )
        server.start()
        try:
            with server.client() as admin:
                for name in ["mod-a", "mod-b"]:
                    assert push(admin, module_copy(root, "echo", name, None), version="v1").status_code == 201
                for name in ["mod-a", "mod-b"]:
                    assert wait_built(admin, name, "v1")["build_status"] == "ready"
                    wait_deployment(admin, name, deploy(admin, name, "v1")["generation"])
                documents = [
                    api("a-api", "mod-a", access={"groups": ["/team-a"]}),
                    api("b-api", "mod-b", access={"groups": ["/team-b"]}),
                ]
                assert admin.post("/api/v1/apply", json={"documents": documents}).status_code == 200
            yield Setup(server, provider)
        finally:
            server.stop()


def test_users_of_the_issuer_call_what_their_groups_allow(setup: Setup) -> None:
    alice = setup.access_token("alice")
    assert setup.call(alice).status_code == 200
    assert setup.call(alice, scheme="bearer").status_code == 200  # the scheme is case-insensitive
    assert setup.call(alice, "mod-b").status_code == 404
    assert setup.call(setup.access_token("dave"), "mod-a").status_code == 404  # /x/team-a is not /team-a
    assert setup.call(setup.access_token("bob"), "mod-b").status_code == 200

    me = httpx.get(f"{setup.server.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {alice}"}).json()
    assert (me["name"], me["role"], me["groups"], me["source"]) == ("alice", "user", ["/team-a"], "oidc")
    root = setup.access_token("root")  # realm role `admin`
    users = httpx.get(f"{setup.server.url}/api/v1/users", headers={"Authorization": f"Bearer {root}"})
    listed = {u["name"]: u for u in users.json()["users"]}
    assert listed["alice"]["source"] == "oidc" and listed["alice"]["groups"] == ["/team-a"]
    assert listed["root"]["role"] == "admin"


# The forged-token matrix


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(setup: Setup, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload = {
        "iss": setup.provider.issuer,
        "sub": "alice",
        "aud": "modelport",
        "azp": "modelport-web",
        "typ": "Bearer",
        "preferred_username": "alice",
        "groups": ["/team-a"],
        "realm_access": {"roles": ["user"]},
        "iat": now,
        "exp": now + 300,
        "jti": "forged",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def sign(setup: Setup, payload: dict[str, Any], *, key: Any = None, **headers: Any) -> str:
    signing = setup.provider.signing_key
    return jwt.encode(
        payload,
        key or signing.private_key,
        algorithm="RS256",
        headers={"kid": signing.kid, "typ": "at+jwt", **headers},
    )


class Canary:
    """A loopback server that counts every request it gets: none must arrive."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"keys": []}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Canary:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_unforged_control_passes(setup: Setup) -> None:
    assert setup.call(sign(setup, claims(setup))).status_code == 200


def test_forged_and_misused_tokens_are_refused(setup: Setup) -> None:
    good = claims(setup)
    public_pem = setup.provider.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": setup.provider.signing_key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good).encode())}"
    hs256_with_public_key = (
        f"{signing_input}.{b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"
    )
    none_header = {"alg": "none", "typ": "at+jwt", "kid": setup.provider.signing_key.kid}
    alg_none = f"{b64(json.dumps(none_header).encode())}.{b64(json.dumps(good).encode())}."
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    valid = sign(setup, good)
    head, _, signature = valid.split(".")
    tampered_claims = {**good, "groups": ["/team-a", "/admins"], "realm_access": {"roles": ["admin"]}}
    tampered = f"{head}.{b64(json.dumps(tampered_claims).encode())}.{signature}"
    id_token = setup.provider.tokens("alice", "password-alice")["id_token"]
    now = int(time.time())

    with Canary() as canary:
        forged = {
            "alg none": alg_none,
            "HS256 signed with the RSA public key": hs256_with_public_key,
            "a foreign key with the same kid": sign(setup, good, key=foreign),
            "wrong issuer": sign(setup, claims(setup, iss="http://127.0.0.1:1/realms/test")),
            "issuer with a trailing slash": sign(setup, claims(setup, iss=setup.provider.issuer + "/")),
            "missing audience": sign(setup, claims(setup, aud=None, azp="other-client")),
            "wrong audience": sign(setup, claims(setup, aud="someone-else", azp="other-client")),
            "account-only audience": sign(setup, claims(setup, aud="account", azp="other-client")),
            "expired": sign(setup, claims(setup, iat=now - 3600, exp=now - 600)),
            "nbf in the future": sign(setup, claims(setup, nbf=now + 600)),
            "unknown kid": sign(setup, good, kid="no-such-key"),
            "jku to a canary": sign(setup, good, key=foreign, kid="canary-key", jku=canary.url),
            "x5u to a canary": sign(setup, good, key=foreign, kid="canary-key", x5u=canary.url),
            "an ID token": id_token,
            "a Keycloak-style ID token": sign(setup, claims(setup, typ="ID")),
            "a tampered payload": tampered,
            "junk": "not-a-token",
            "junk with dots": "a.b.c",
            "empty segments": "..",
        }
        for case, token in forged.items():
            response = setup.call(token)
            assert response.status_code == 401, (case, response.text)
            assert response.json()["error"]["code"] == "invalid_token", case
            assert token not in response.text, case
        assert canary.hits == []
    assert setup.call(valid).status_code == 200  # the positive control, after all of that


def test_rotated_keys_are_fetched_and_cached_keys_outlive_the_provider(setup: Setup) -> None:
    before = setup.access_token("alice")
    assert setup.call(before).status_code == 200
    setup.provider.rotate()
    after = setup.access_token("alice")
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    assert setup.call(after).status_code == 200  # an unknown kid made the server fetch the keys again
    assert setup.call(before).status_code == 200  # and the previous key still verifies
    setup.provider.stop()
    try:
        assert setup.call(after).status_code == 200  # cached keys keep working while the provider is down
        stranger = sign(setup, claims(setup), kid="never-published")
        assert setup.call(stranger).status_code == 401  # and unknown ones fail closed
    finally:
        setup.provider.start()


def test_tokens_do_not_reach_the_server_log(setup: Setup, tmp_path: Path) -> None:
    token = setup.access_token("alice")
    setup.call(token)
    setup.call(token + "x")
    log = "".join(setup.server.output)
    assert token not in log and token[:40] not in log
