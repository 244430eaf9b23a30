"""Verifying the bearer access tokens (JWTs) of one external OpenID Connect issuer (Keycloak-shaped).

modelport is an OAuth 2 resource server here: it never logs anyone in, it only checks tokens. The issuer's
discovery document (`<issuer>/.well-known/openid-configuration`) is fetched on the first verification; it
must name the configured issuer exactly, else every token is refused. Its `jwks_uri` gives the signing keys,
cached by `kid` for `refresh_seconds`. A token whose `kid` is not cached causes at most one early fetch per
`min_refetch_seconds`, shared by every verification waiting on it; a failed fetch keeps the keys already
held, so a provider outage does not log out current users, while tokens signed by keys not yet seen fail
closed. Fetches, failed ones included, are at least `min_refetch_seconds` apart, so a provider that is down
is not hammered. Nothing a token says decides what is fetched: its `jku`, `x5u`, `jwk` and `x5c` headers are
ignored.

A token passes when its `alg` is in the asymmetric allow-list, its `kid` names a signing key of a fitting
type, the signature verifies, `iss` equals the issuer exactly, `sub` is present, `exp` (required), `nbf` and
`iat` hold within `leeway`, and its `aud` contains one of `audiences` or its `azp` is one of them. There is
always at least one audience: without the check, a token the issuer gave any of its clients would pass.

ID tokens are refused: a payload `typ` other than `Bearer` (Keycloak's ID tokens say `ID`), a header `typ`
other than `JWT`, `at+jwt` or `application/at+jwt` (compared case-insensitively), or an OIDC ID-token
marker (`nonce`, `at_hash`, `c_hash`) in a token not typed `at+jwt`. (Older Keycloak releases, and newer
ones with their backward-compatibility switch on, copy `nonce` into access tokens; those are refused.)

Every refusal is `InvalidToken` with a fixed message that never repeats any part of the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from modelport.core.errors import InvalidToken
from modelport.core.names import SIGNATURE_ALGORITHMS
from modelport.core.settings import Settings

__all__ = ["OidcIdentity", "OidcVerifier"]

log = logging.getLogger("modelport.oidc")

# The key type (and curves) that each accepted algorithm needs.
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_KEY_PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}
_ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
_AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_TOKEN_CHARS = 32 * 1024
_MAX_DOCUMENT_BYTES = 1024 * 1024
_HTTP_TIMEOUT = httpx.Timeout(5.0)


@dataclass(frozen=True)
class OidcIdentity:
    """Who a verified access token speaks for."""

    issuer: str
    subject: str
    username: str
    """The username claim, else `sub`."""
    groups: frozenset[str]
    """Full group paths (`/team/users`) from the groups claim; entries that are not strings are ignored."""
    roles: frozenset[str]
    """Strings found at the dotted roles claim path (`realm_access.roles`)."""
    email: str | None
    expires_at: float
    """The token's `exp`, in seconds since the epoch."""


@dataclass(frozen=True)
class _Key:
    """One public signing key of the issuer's JWKS, with the parameters that say what it may verify."""

    kty: str
    crv: object
    alg: object
    use: object
    key_ops: object
    key: Any

    def fits(self, alg: str) -> bool:
        kty, curves = _KEY_TYPES[alg]
        return (
            self.kty == kty
            and (curves is None or (isinstance(self.crv, str) and self.crv in curves))
            and self.alg in (None, alg)
            and self.use in (None, "sig")
            and (self.key_ops is None or (isinstance(self.key_ops, list) and "verify" in self.key_ops))
        )


class _ProviderError(Exception):
    """The issuer's discovery document or key set is unusable."""


class OidcVerifier:
    """Verifies access tokens of one issuer; share one per process, it caches the issuer's keys.

    `http` is used for discovery and key fetches and stays the caller's to close; without it the verifier
    makes its own client, which `close` closes. `clock` (monotonic seconds) paces the key cache.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audiences: Sequence[str],
        algorithms: Sequence[str],
        leeway: float = 30,
        username_claim: str = "preferred_username",
        groups_claim: str = "groups",
        roles_claim: str = "realm_access.roles",
        refresh_seconds: float = 300,
        min_refetch_seconds: float = 10,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if urlsplit(issuer).scheme not in ("https", "http") or not urlsplit(issuer).netloc:
            raise ValueError("the OIDC issuer must be an http(s) URL")
        refused = [alg for alg in algorithms if alg not in SIGNATURE_ALGORITHMS]
        if refused or not algorithms:
            raise ValueError(f"not an accepted signature algorithm list: {', '.join(refused) or 'empty'}")
        if not audiences:
            raise ValueError("name at least one audience: the client ids whose access tokens are accepted")
        if refresh_seconds <= 0 or min_refetch_seconds < 0 or leeway < 0:
            raise ValueError("refresh_seconds must be positive; min_refetch_seconds and leeway not negative")
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self._username_claim = username_claim
        self._groups_claim = groups_claim
        self._roles_path = [part for part in roles_claim.split(".") if part]
        self._refresh_seconds = refresh_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._http = http
        self._owns_http = http is None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, list[_Key]] | None = None
        self._keys_at = 0.0
        self._tried_at: float | None = None
        self._fetches = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier the settings describe, or None when no issuer is configured."""
        if not settings.oidc_issuer:
            return None
        return cls(
            issuer=settings.oidc_issuer,
            audiences=settings.oidc_audience,
            algorithms=settings.oidc_algorithms,
            leeway=settings.oidc_leeway_seconds,
            username_claim=settings.oidc_username_claim,
            groups_claim=settings.oidc_groups_claim,
            roles_claim=settings.oidc_roles_claim,
            refresh_seconds=settings.oidc_jwks_refresh_seconds,
            min_refetch_seconds=settings.oidc_jwks_min_refetch_seconds,
        )

    async def verify(self, token: str) -> OidcIdentity:
        """The identity an access token of the issuer speaks for; `InvalidToken` for anything else."""
        header = _header(token, self.algorithms)
        alg, kid = header["alg"], header["kid"]
        payload = self._decode(token, await self._keys_for(kid, alg))
        _check_access_token(header, payload)
        self._check_audience(payload)
        return self._identity(payload)

    async def close(self) -> None:
        """Closes the HTTP client the verifier made for itself (one passed in is left open)."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # Claims

    def _decode(self, token: str, keys: Sequence[_Key]) -> dict[str, Any]:
        """The payload, once the signature verifies with one of `keys` and the registered claims hold."""
        for key in keys:
            try:
                payload: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=self.algorithms,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={
                        "require": ["exp", "iss", "sub"],
                        "verify_aud": False,  # aud-or-azp is checked by the verifier
                        "enforce_minimum_key_length": True,
                    },
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise InvalidToken(_refusal(exc)) from None
            for claim in ("exp", "nbf", "iat"):
                value = payload.get(claim)
                if claim in payload and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise InvalidToken(f"the token's {claim} claim is not a number")
            if not payload["sub"]:
                raise InvalidToken("the token's sub claim is empty")
            return payload
        raise InvalidToken("the token's signature does not verify")

    def _check_audience(self, payload: Mapping[str, Any]) -> None:
        aud, azp = payload.get("aud"), payload.get("azp")
        claimed = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if any(isinstance(a, str) and a in self.audiences for a in claimed):
            return
        if isinstance(azp, str) and azp in self.audiences:
            return
        raise InvalidToken("the token was not issued for this service (aud, azp)")

    def _identity(self, payload: Mapping[str, Any]) -> OidcIdentity:
        subject = payload["sub"]
        username = payload.get(self._username_claim)
        email = payload.get("email")
        roles: Any = payload
        for part in self._roles_path:
            roles = roles.get(part) if isinstance(roles, dict) else None
        return OidcIdentity(
            issuer=self.issuer,
            subject=subject,
            username=username if isinstance(username, str) and username else subject,
            groups=_strings(payload.get(self._groups_claim)),
            roles=_strings(roles) if self._roles_path else frozenset(),
            email=email if isinstance(email, str) else None,
            expires_at=float(payload["exp"]),
        )

    # Keys

    async def _keys_for(self, kid: str, alg: str) -> list[_Key]:
        if self._refresh_due():
            await self._fetch(still_needed=self._refresh_due)
        keys = self._fitting(kid, alg)
        if not keys and self._refetch_allowed():
            await self._fetch(still_needed=lambda: not self._fitting(kid, alg) and self._refetch_allowed())
            keys = self._fitting(kid, alg)
        if not keys:
            if self._keys is None:
                raise InvalidToken("the issuer's signing keys are unavailable")
            raise InvalidToken("the token's signing key is not one of the issuer's keys")
        return keys

    def _fitting(self, kid: str, alg: str) -> list[_Key]:
        return [key for key in (self._keys or {}).get(kid, ()) if key.fits(alg)]

    def _refetch_allowed(self) -> bool:
        return self._tried_at is None or self._clock() - self._tried_at >= self._min_refetch_seconds

    def _refresh_due(self) -> bool:
        stale = self._keys is None or self._clock() - self._keys_at >= self._refresh_seconds
        return stale and self._refetch_allowed()

    async def _fetch(self, *, still_needed: Callable[[], bool]) -> None:
        """Fetches the key set once for all callers waiting: a caller that waited on another's fetch
        takes its result instead of fetching again."""
        seen = self._fetches
        async with self._lock:
            if self._fetches != seen or not still_needed():
                return
            try:
                keys = await self._fetch_keys()
            except Exception as exc:  # whatever failed, the keys held stay; tokens they cannot verify fail
                held = "keeping the keys held" if self._keys is not None else "no keys held"
                log.warning("fetching the signing keys of %s failed (%s): %r", self.issuer, held, exc)
            else:
                self._keys, self._keys_at = keys, self._clock()
            # not in `finally`: a cancelled fetch neither counts as one nor delays the next
            self._fetches, self._tried_at = self._fetches + 1, self._clock()

    async def _fetch_keys(self) -> dict[str, list[_Key]]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        return _parse_jwks(await self._get_json(self._jwks_uri))

    async def _discover(self) -> str:
        document = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise _ProviderError("the discovery document names another issuer; every token is refused")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("https", "http"):
            raise _ProviderError("the discovery document has no http(s) jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False)
        body = bytearray()
        async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_DOCUMENT_BYTES:
                    raise _ProviderError(f"{url} answered more than {_MAX_DOCUMENT_BYTES} bytes")
        return json.loads(body)


def _header(token: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """The token's header, refused unless it names an allowed algorithm and a key id and nothing else
    this verifier would have to understand."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
        raise InvalidToken("the token is not a signed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("the token's header cannot be read") from None
    if not isinstance(header.get("alg"), str) or header["alg"] not in algorithms:
        raise InvalidToken("the token's signature algorithm is not accepted")
    if "crit" in header or "b64" in header:
        raise InvalidToken("the token uses a JWS extension this service does not accept")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidToken("the token's header names no key id")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise InvalidToken("the token is not an access token (typ)")
    return header


def _refusal(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf, iat)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token was not issued by the configured issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidKeyError):
        return "the issuer's key for this token is not usable"
    if isinstance(exc, jwt.DecodeError):
        return "the token is malformed"
    return "the token is not valid"


def _check_access_token(header: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    if "typ" in payload and payload["typ"] != "Bearer":
        raise InvalidToken("the token is not an access token (typ)")
    typ = header.get("typ")
    at_jwt = isinstance(typ, str) and typ.lower() in _AT_JWT_TYPES
    if not at_jwt and any(claim in payload for claim in _ID_TOKEN_CLAIMS):
        raise InvalidToken("the token is an ID token, not an access token")


def _parse_jwks(document: Any) -> dict[str, list[_Key]]:
    """The usable public keys of a JWKS by `kid`; entries that cannot be used are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _ProviderError("the key set has no keys list")
    keys: dict[str, list[_Key]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or "d" in jwk:
            continue  # no kid: no token can name it; "d": private material has no place here
        kty = jwk.get("kty")
        if not isinstance(kty, str) or kty not in _KEY_PARSERS:
            continue
        try:
            public = _KEY_PARSERS[kty](jwk)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            log.warning("skipping the issuer's key %r: it cannot be read", jwk["kid"])
            continue
        keys.setdefault(jwk["kid"], []).append(
            _Key(
                kty=kty,
                crv=jwk.get("crv"),
                alg=jwk.get("alg"),
                use=jwk.get("use"),
                key_ops=jwk.get("key_ops"),
                key=public,
            )
        )
    return keys


def _strings(value: Any) -> frozenset[str]:
    return frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) else frozenset()
