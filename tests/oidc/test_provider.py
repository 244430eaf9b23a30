"""The OIDC provider fixture against the real oidc-provider: discovery, Keycloak tokens, key rotation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from oidc_provider import DEFAULT_ACCOUNTS, LoginError, OidcProvider
from platform_server import alive


@pytest.fixture
def own_provider() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def jwks(provider: OidcProvider) -> jwt.PyJWKSet:
    response = httpx.get(provider.metadata["jwks_uri"], timeout=10)
    response.raise_for_status()
    return jwt.PyJWKSet.from_dict(response.json())


def verified(provider: OidcProvider, token: str, *, audience: str) -> dict[str, Any]:
    """The claims of `token`, checked against the JWKS the provider publishes."""
    key = jwks(provider)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=provider.issuer
    )
    return claims


def test_discovery_names_the_issuer_exactly(oidc_provider: OidcProvider) -> None:
    assert oidc_provider.issuer == f"http://127.0.0.1:{oidc_provider.port}/realms/test"
    response = httpx.get(oidc_provider.url("/.well-known/openid-configuration"))

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == oidc_provider.issuer
    assert metadata["jwks_uri"] == oidc_provider.url("/protocol/openid-connect/certs")
    assert metadata["token_endpoint"] == oidc_provider.url("/protocol/openid-connect/token")


def test_access_token_is_a_keycloak_shaped_jwt(oidc_provider: OidcProvider) -> None:
    tokens = oidc_provider.tokens("alice", "password-alice")

    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": oidc_provider.signing_key.kid}
    claims = verified(oidc_provider, tokens["access_token"], audience="modelport")
    assert claims["iss"] == oidc_provider.issuer
    assert claims["aud"] == "modelport"
    assert claims["sub"] == "alice"
    assert claims["azp"] == claims["client_id"] == "modelport-web"
    assert claims["typ"] == "Bearer"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["/team-a"]
    assert claims["realm_access"] == {"roles": ["user"]}
    assert claims["scope"] == "openid profile email"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["jti"]


def test_signing_keys_are_the_published_ones(oidc_provider: OidcProvider) -> None:
    token = oidc_provider.tokens("bob", "password-bob")["access_token"]

    public_key = oidc_provider.signing_key.private_key.public_key()
    claims = jwt.decode(token, public_key, algorithms=["RS256"], audience="modelport")
    assert claims["groups"] == ["/team-b"]
    assert [key.key_id for key in jwks(oidc_provider).keys] == [oidc_provider.signing_key.kid]


@pytest.mark.parametrize("username", sorted(DEFAULT_ACCOUNTS))
def test_each_account_gets_its_groups_and_roles(oidc_provider: OidcProvider, username: str) -> None:
    token = oidc_provider.tokens(username, f"password-{username}")["access_token"]

    claims = verified(oidc_provider, token, audience="modelport")
    account = DEFAULT_ACCOUNTS[username]
    assert claims["preferred_username"] == username
    assert claims["groups"] == list(account.groups)
    assert claims["realm_access"]["roles"] == list(account.roles)


def test_id_token_is_for_the_client(oidc_provider: OidcProvider) -> None:
    id_token = oidc_provider.tokens("dave", "password-dave")["id_token"]

    claims = verified(oidc_provider, id_token, audience="modelport-web")
    assert claims["aud"] == "modelport-web"
    assert claims["preferred_username"] == "dave"
    assert claims["groups"] == ["/x/team-a"]
    assert "typ" not in jwt.get_unverified_header(id_token)


@pytest.mark.parametrize(("username", "password"), [("alice", "password-bob"), ("mallory", "password")])
def test_wrong_credentials_yield_no_code(oidc_provider: OidcProvider, username: str, password: str) -> None:
    with pytest.raises(LoginError) as refused:
        oidc_provider.tokens(username, password)

    assert refused.value.response is not None
    assert refused.value.response.status_code == 401
    assert "Invalid username or password." in refused.value.response.text
    assert 'id="login"' in refused.value.response.text


def test_token_endpoint_allows_browsers_of_other_origins(oidc_provider: OidcProvider) -> None:
    origin = "http://127.0.0.1:9"
    response = httpx.options(
        oidc_provider.metadata["token_endpoint"],
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == origin


def test_rotate_signs_with_a_new_key_and_keeps_the_old_one(own_provider: OidcProvider) -> None:
    before = own_provider.tokens("alice", "password-alice")["access_token"]
    old_kid, issuer = own_provider.signing_key.kid, own_provider.issuer

    fresh = own_provider.rotate()

    assert own_provider.issuer == issuer
    after = own_provider.tokens("alice", "password-alice")["access_token"]
    assert jwt.get_unverified_header(after)["kid"] == fresh.kid != old_kid
    assert [key.key_id for key in jwks(own_provider).keys] == [fresh.kid, old_kid]
    assert verified(own_provider, before, audience="modelport")["sub"] == "alice"
    assert verified(own_provider, after, audience="modelport")["sub"] == "alice"


def test_stop_and_start_on_the_same_port(own_provider: OidcProvider) -> None:
    discovery = own_provider.url("/.well-known/openid-configuration")
    pid, kid = own_provider.pid, own_provider.signing_key.kid
    assert pid is not None

    own_provider.stop()

    assert own_provider.pid is None
    assert not alive(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(discovery)
    own_provider.start()
    assert httpx.get(discovery).json()["issuer"] == own_provider.issuer
    token = own_provider.tokens("root", "password-root")["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == kid


def test_close_ends_the_process_and_removes_its_files() -> None:
    provider = OidcProvider()
    with provider:
        pid = provider.pid
        assert pid is not None and alive(pid)
    assert not alive(pid)
    assert not provider.directory.exists()


def test_a_provider_that_cannot_start_raises_with_its_log(own_provider: OidcProvider) -> None:
    taken = OidcProvider()
    taken.port = own_provider.port
    try:
        with pytest.raises(RuntimeError, match="EADDRINUSE"):
            taken.start()
        assert taken.pid is None
    finally:
        taken.close()
