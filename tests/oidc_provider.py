"""A real OpenID Connect provider on 127.0.0.1 that issues Keycloak-shaped JWT access tokens.

`OidcProvider` runs `tests/oidc/provider.mjs` (the npm package `oidc-provider`, installed by `make test`) as a
child process. Its issuer looks like a Keycloak realm's, `http://127.0.0.1:PORT/realms/test`, and so do its
endpoint paths and the claims of its access tokens (`preferred_username`, `groups`, `realm_access.roles`,
`azp`, `typ: Bearer`). `tokens()` logs a user in through the real authorization-code + PKCE flow.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import selectors
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PACKAGE = Path(__file__).parent / "oidc"
SCRIPT = PACKAGE / "provider.mjs"
CLIENT_ID = "modelport-web"
# A loopback redirect URI of a native client: the provider accepts it on any port (RFC 8252).
REDIRECT_URI = "http://127.0.0.1/callback"
SCOPE = "openid profile email"
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


@dataclass(frozen=True)
class Account:
    password: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    email: str | None = None

    def config(self) -> dict[str, Any]:
        return {
            "password": self.password,
            "groups": list(self.groups),
            "roles": list(self.roles),
            "email": self.email,
        }


def _account(name: str, group: str, role: str) -> Account:
    return Account(f"password-{name}", (group,), (role,), f"{name}@example.test")


DEFAULT_ACCOUNTS: Mapping[str, Account] = {
    "alice": _account("alice", "/team-a", "user"),
    "bob": _account("bob", "/team-b", "user"),
    "dave": _account("dave", "/x/team-a", "developer"),
    "root": _account("root", "/admins", "admin"),
}


def public_client(
    client_id: str = CLIENT_ID, redirect_uris: Sequence[str] = (REDIRECT_URI,)
) -> dict[str, Any]:
    """Metadata of a public client (no secret, PKCE) for the authorization-code flow.

    It is a native client so that its loopback redirect URIs are accepted on any port; the browser runs
    the flow just the same.
    """
    return {
        "client_id": client_id,
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "redirect_uris": list(redirect_uris),
    }


@dataclass(frozen=True)
class SigningKey:
    """An RS256 key of the provider; `private_key` signs, `kid` names it in token headers and the JWKS."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(uuid.uuid4().hex, key)

    def jwk(self) -> dict[str, Any]:
        """The private JWK, as the provider's configuration takes it."""
        jwk = RSAAlgorithm.to_jwk(self.private_key, as_dict=True)
        jwk.pop("key_ops", None)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


class LoginError(Exception):
    """The authorization flow ended without a code: refused credentials, or an error from the provider."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class OidcProvider:
    """oidc-provider as a child process on 127.0.0.1; `start()`, `stop()`, `rotate()`, `tokens()`.

    The first start picks a free port; later starts (after `stop()` or in `rotate()`) reuse it, so the
    issuer stays the same. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        *,
        accounts: Mapping[str, Account] = DEFAULT_ACCOUNTS,
        clients: Sequence[Mapping[str, Any]] | None = None,
        audience: str = "modelport",
        access_token_ttl: int = 300,
        realm_path: str = "/realms/test",
        startup_timeout: float = 20.0,
    ) -> None:
        self.accounts = dict(accounts)
        self.clients = [dict(client) for client in clients or [public_client()]]
        self.audience = audience
        self.access_token_ttl = access_token_ttl
        self.realm_path = realm_path
        self.startup_timeout = startup_timeout
        self.port = 0
        self.issuer = ""
        self.directory = Path(tempfile.mkdtemp(prefix="modelport-oidc-"))
        self.log = self.directory / "provider.log"
        self._keys: tuple[SigningKey, ...] = (SigningKey.generate(),)
        self._process: subprocess.Popen[bytes] | None = None
        self._metadata: dict[str, Any] | None = None

    # Lifecycle

    def start(self) -> None:
        """Start the provider (on the port of the first start, if there was one) and wait until it listens."""
        if self._process is not None:
            raise RuntimeError("the OIDC provider is already running")
        if not (PACKAGE / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                "oidc-provider is not installed: run `make test` or `npm ci --prefix tests/oidc`"
            )
        config = self.directory / "config.json"
        config.write_text(json.dumps(self._config()))
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["node", str(SCRIPT), str(config)],
                cwd=PACKAGE,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            ready = self._ready_line(self._process)
        except BaseException:
            self.stop()
            raise
        self.issuer, self.port = ready["issuer"], ready["port"]
        self._metadata = None

    def stop(self, timeout: float = 5.0) -> None:
        """End the provider's process (SIGTERM, then SIGKILL); tokens it issued stay verifiable later."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def rotate(self) -> SigningKey:
        """Restart with a fresh signing key, the previous one second in the JWKS; returns the new key."""
        fresh = SigningKey.generate()
        self._keys = (fresh, self._keys[0])
        self.stop()
        self.start()
        return fresh

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The process id of the running provider."""
        return self._process.pid if self._process is not None else None

    # Where things are

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """The private keys of the JWKS; the first one signs new tokens."""
        return self._keys

    @property
    def signing_key(self) -> SigningKey:
        return self._keys[0]

    def url(self, path: str) -> str:
        """An address under the issuer: `url("/.well-known/openid-configuration")`."""
        return self.issuer + path

    @property
    def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched once per start."""
        if self._metadata is None:
            response = httpx.get(self.url("/.well-known/openid-configuration"), timeout=10)
            response.raise_for_status()
            self._metadata = response.json()
        return self._metadata

    # Logging in

    def tokens(
        self,
        username: str,
        password: str,
        *,
        client_id: str = CLIENT_ID,
        redirect_uri: str | None = None,
        scope: str = SCOPE,
    ) -> dict[str, Any]:
        """Log `username` in through the authorization-code + PKCE flow; returns the token response.

        Raises `LoginError` when the flow ends without a code (a wrong password, an unknown client).
        """
        redirect_uri = redirect_uri or self._client(client_id)["redirect_uris"][0]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        request = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope,
            "state": secrets.token_urlsafe(16),
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
        with httpx.Client(timeout=10) as http:
            code = self._authorize(http, request, username=username, password=password)
            response = http.post(
                self.metadata["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "client_id": client_id,
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                },
            )
        response.raise_for_status()
        tokens: dict[str, Any] = response.json()
        return tokens

    def _authorize(self, http: httpx.Client, request: dict[str, str], *, username: str, password: str) -> str:
        """The authorization code: the authorization request, the login form, the redirect back."""
        redirect_uri = request["redirect_uri"]
        started = http.get(self.metadata["authorization_endpoint"], params=request)
        page = self._follow(http, started, redirect_uri)
        if isinstance(page, str):
            return self._code(page, state=request["state"])
        form = _FORM_ACTION.search(page.text)
        if page.status_code != 200 or form is None:
            raise LoginError(f"the provider showed no login form: HTTP {page.status_code}", page)
        login = page.url.join(html.unescape(form.group(1)))
        submitted = http.post(login, data={"username": username, "password": password})
        callback = self._follow(http, submitted, redirect_uri)
        if not isinstance(callback, str):
            raise LoginError(f"login of {username!r} failed: HTTP {callback.status_code}", callback)
        return self._code(callback, state=request["state"])

    # Internals

    def _config(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "issuer_path": self.realm_path,
            "audience": self.audience,
            "access_token_ttl": self.access_token_ttl,
            "jwks": {"keys": [key.jwk() for key in self._keys]},
            "accounts": {name: account.config() for name, account in self.accounts.items()},
            "clients": self.clients,
        }

    def _ready_line(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if selector.select(remaining):
                    line = process.stdout.readline()
                    if not line:
                        break
                    ready: dict[str, Any] = json.loads(line)
                    return ready
        state = "exited" if process.poll() is not None else "did not start in time"
        raise RuntimeError(f"the OIDC provider {state}:\n{self._log_text()}")

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _client(self, client_id: str) -> Mapping[str, Any]:
        for client in self.clients:
            if client["client_id"] == client_id:
                return client
        raise KeyError(f"no client {client_id!r}")

    @staticmethod
    def _follow(http: httpx.Client, response: httpx.Response, redirect_uri: str) -> httpx.Response | str:
        """Follow redirects up to the client's redirect URI, which is returned without being requested."""
        for _ in range(10):
            if not response.is_redirect:
                return response
            location = urljoin(str(response.url), response.headers["location"])
            if location.split("?")[0] == redirect_uri:
                return location
            response = http.get(location)
        raise LoginError("too many redirects", response)

    def _code(self, callback: str, *, state: str) -> str:
        query = {name: values[0] for name, values in parse_qs(urlsplit(callback).query).items()}
        if "error" in query:
            raise LoginError(f"the provider answered {query['error']}: {query.get('error_description', '')}")
        if query.get("state") != state or query.get("iss") != self.issuer:
            raise LoginError(f"unexpected redirect {callback}")
        return query["code"]
