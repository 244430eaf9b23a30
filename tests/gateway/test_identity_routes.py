"""The identity routes' refusals of ids that no row can have and of group names that are not paths, on each
database backend.

Ids are INTEGER columns: 32 bits on PostgreSQL, 64 on SQLite, and each database raises on a larger number
rather than finding nothing. The platform is the real composition root served in this process.
"""

from __future__ import annotations

import pytest

from modelport.core.manifests import check_group_path

# Zero, past PostgreSQL's INTEGER, past SQLite's.
NUMBERS = [0, 2**31, 2**63]


@pytest.mark.parametrize("number", NUMBERS)
def test_ids_that_no_row_can_have_are_invalid_requests(platform_client, number):
    requests = [
        ("GET", f"/api/v1/users/{number}", None),
        ("PATCH", f"/api/v1/users/{number}", {}),
        ("DELETE", f"/api/v1/users/{number}", None),
        ("GET", f"/api/v1/groups/{number}", None),
        ("DELETE", f"/api/v1/groups/{number}", None),
        ("GET", f"/api/v1/tokens/{number}", None),
        ("DELETE", f"/api/v1/tokens/{number}", None),
        ("GET", f"/api/v1/tokens?user={number}", None),
        ("GET", f"/api/v1/audit?before={number}", None),
        ("POST", "/api/v1/tokens", {"name": "t", "user": number}),
    ]
    for method, url, body in requests:
        response = platform_client.request(method, url, json=body)
        assert response.status_code == 422, (method, url, response.text)
        assert response.json()["error"]["code"] == "validation_failed"


def test_a_group_id_that_no_row_can_have_is_a_group_a_user_may_not_see(platform_client):
    ann = platform_client.post("/api/v1/users", json={"name": "ann"}).json()
    token = platform_client.post("/api/v1/tokens", json={"name": "t", "user": ann["id"]}).json()["token"]
    for number in NUMBERS:
        response = platform_client.get(
            f"/api/v1/groups/{number}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"


def test_text_the_database_cannot_store_is_a_bad_request_that_changes_nothing(platform_client, database_url):
    """PostgreSQL refuses NUL characters in text; SQLite stores them. Neither answers 500."""
    before = platform_client.get("/api/v1/tokens").json()
    requests = [
        ("POST", "/api/v1/auth/token", {"username": "\u0000", "password": "x"}),
        ("POST", "/api/v1/tokens", {"name": "nul\u0000"}),
        ("GET", "/api/v1/audit?actor=%00", None),
        ("GET", "/api/v1/audit?target=a%00b", None),
        ("GET", "/api/v1/storage/%00", None),
    ]
    for method, url, body in requests:
        response = platform_client.request(method, url, json=body)
        assert response.status_code < 500, (method, url, response.text)
        if database_url.startswith("postgresql") and response.status_code == 400:
            assert "NUL" in response.json()["error"]["message"]
    if database_url.startswith("postgresql"):
        assert platform_client.get("/api/v1/tokens").json() == before


def test_a_group_name_that_is_not_a_path_is_refused_in_the_words_of_the_cli(platform_client):
    ann = platform_client.post("/api/v1/users", json={"name": "ann"}).json()
    requests = [
        ("POST", "/api/v1/groups", {"path": "team-a"}, "path"),
        ("POST", "/api/v1/users", {"name": "bob", "groups": ["/ok", "team-a"]}, "groups.1"),
        ("PATCH", f"/api/v1/users/{ann['id']}", {"groups": ["team-a"]}, "groups.0"),
    ]
    with pytest.raises(ValueError) as cli:
        check_group_path("team-a")
    for method, url, body, field in requests:
        response = platform_client.request(method, url, json=body)
        assert response.status_code == 422, (method, url, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_failed"
        assert error["details"] == [{"field": field, "code": "group_path", "message": str(cli.value)}]
    assert str(cli.value) == (
        "'team-a' is not a group path: group names are full paths starting with /, like /team-a"
    )
    assert platform_client.get("/api/v1/groups").json()["groups"] == []
    assert [u["name"] for u in platform_client.get("/api/v1/users").json()["users"]] == ["admin", "ann"]
