"""The storage pages: buckets by group, a bucket's browser, uploads, deletes and presigned links.

The world: buckets `receipts` (read and write: `/team-a`, read only: `/auditors`) and `vault` (admins only);
`writer` in `/team-a`, `auditor` in `/auditors`, `stranger` in `/team-b`. Uploads go, as `storage.js` sends
them, to the files API with the console's session cookie and `X-CSRF-Token`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from console_world import ConsoleSession, World

pytestmark = pytest.mark.timeout(60)

_PRESIGNED = re.compile(r'id="presigned-url"[^>]*>([^<]+)</textarea>')


def _storage(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def people(world: World) -> dict[str, str]:
    """The buckets, and an API token for each user, by name."""
    tokens: dict[str, str] = {}
    with world.api() as api:
        for path in ["/team-a", "/team-b", "/auditors"]:
            assert api.post("/api/v1/groups", json={"path": path}).status_code == 201
        for name, group in {"writer": "/team-a", "auditor": "/auditors", "stranger": "/team-b"}.items():
            made = api.post("/api/v1/users", json={"name": name, "role": "user", "groups": [group]})
            assert made.status_code == 201, made.text
            token = api.post("/api/v1/tokens", json={"name": "t", "user": made.json()["id"]})
            tokens[name] = token.json()["token"]
        documents = [
            _storage(
                "receipts",
                access={"groups": ["/team-a"], "readGroups": ["/auditors"]},
                quota="10MiB",
                retentionDays=30,
            ),
            _storage("vault"),
        ]
        applied = api.post("/api/v1/apply", json={"documents": documents})
        assert applied.status_code == 200, applied.text
    return tokens


@pytest.fixture(scope="module")
def writer(world: World, people: dict[str, str]) -> Iterator[ConsoleSession]:
    session = world.console(people["writer"])
    yield session
    session.client.close()


def _object(bucket: str, key: str) -> str:
    return f"/api/v1/storage/{bucket}/objects/{quote(key, safe='/')}"


def _upload(session: ConsoleSession, bucket: str, key: str, body: bytes, **headers: str) -> httpx.Response:
    """What `storage.js` does: a PUT to the files API with the session cookie and the page's CSRF token."""
    headers = {"X-CSRF-Token": session.csrf, "Content-Type": "text/plain", **headers}
    return session.client.put(_object(bucket, key), content=body, headers=headers)


def _exists(world: World, bucket: str, key: str) -> bool:
    with world.api() as api:
        answer = api.head(_object(bucket, key))
    assert answer.status_code in (200, 404), answer.text
    return answer.status_code == 200


def test_the_bucket_list_shows_what_the_caller_may_use(world: World, people: dict[str, str]) -> None:
    admin = world.console()
    page = admin.get("/ui/storage")
    assert page.status_code == 200, page.text
    assert 'data-bucket="receipts"' in page.text and 'data-bucket="vault"' in page.text
    receipts = page.text[page.text.index('data-bucket="receipts"') :].split("</tr>")[0]
    assert "<code>/team-a</code>" in receipts and "<code>/auditors</code>" in receipts
    assert "10 MiB" in receipts and "30 days" in receipts
    assert "ago" in receipts  # created, from the audit trail of its manifest

    mine = world.console(people["writer"]).get("/ui/storage")
    assert 'data-bucket="receipts"' in mine.text and "vault" not in mine.text
    assert "read and write" in mine.text
    theirs = world.console(people["stranger"]).get("/ui/storage")
    assert theirs.status_code == 200
    assert "receipts" not in theirs.text and "No bucket you may use." in theirs.text


def test_an_upload_with_the_session_cookie_is_listed_with_its_size(
    world: World, writer: ConsoleSession
) -> None:
    page = writer.get("/ui/storage/receipts")
    assert page.status_code == 200, page.text
    assert 'data-api="/api/v1/storage/receipts/objects/"' in page.text
    assert "/ui/static/storage.js" in page.text
    assert world.served.client().get("/ui/static/storage.js").status_code == 200

    assert _upload(writer, "receipts", "docs/2024/march.txt", b"x" * 2048).status_code == 201
    assert (
        _upload(
            writer, "receipts", "docs/readme.md", b"hello", **{"Content-Type": "text/markdown"}
        ).status_code
        == 201
    )
    assert _upload(writer, "receipts", "top.bin", b"12345678901").status_code == 201
    refused = writer.client.put(_object("receipts", "no-token.txt"), content=b"x")  # no X-CSRF-Token
    assert refused.status_code == 401
    assert not _exists(world, "receipts", "no-token.txt")

    top = writer.get("/ui/storage/receipts")
    assert 'href="/ui/storage/receipts?prefix=docs%2F"' in top.text
    assert top.text.index("docs/") < top.text.index("top.bin")  # folders, then objects
    assert "11 B" in top.text
    assert 'href="/api/v1/storage/receipts/objects/top.bin"' in top.text

    docs = writer.get("/ui/storage/receipts?prefix=docs/")
    assert docs.status_code == 200
    assert 'href="/ui/storage/receipts?prefix=docs%2F2024%2F"' in docs.text
    assert ">readme.md</span>" in docs.text and "<code>text/markdown</code>" in docs.text
    assert 'aria-current="page">docs</a>' in docs.text  # the breadcrumbs end at the listed folder

    march = writer.get("/ui/storage/receipts?prefix=docs/2024/")
    assert ">march.txt</span>" in march.text and "2 KiB" in march.text
    download = writer.get("/api/v1/storage/receipts/objects/docs/2024/march.txt")  # the download link's GET
    assert download.status_code == 200 and download.content == b"x" * 2048


def test_the_browser_pages_with_the_store_cursor(world: World, writer: ConsoleSession) -> None:
    for index in range(3):
        assert _upload(writer, "receipts", f"pages/{index}.txt", b"p").status_code == 201
    first = writer.get("/ui/storage/receipts?prefix=pages/&limit=2")
    assert (
        ">0.txt</span>" in first.text and ">1.txt</span>" in first.text and ">2.txt</span>" not in first.text
    )
    found = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert found is not None
    second = writer.get(html.unescape(found.group(1)))
    assert second.status_code == 200
    assert ">2.txt</span>" in second.text and ">0.txt</span>" not in second.text
    assert 'rel="next"' not in second.text and "First page" in second.text
    assert writer.get("/ui/storage/receipts?limit=0").status_code == 422
    assert writer.get("/ui/storage/receipts?prefix=a//").status_code == 400


def test_delete_through_the_form_needs_csrf_and_is_audited(world: World, writer: ConsoleSession) -> None:
    assert _upload(writer, "receipts", "gone/soon.txt", b"bye").status_code == 201
    page = writer.get("/ui/storage/receipts?prefix=gone/")
    assert 'action="/ui/storage/receipts/delete"' in page.text and "data-confirm=" in page.text

    form = {"key": "gone/soon.txt", "prefix": "gone/"}
    stale = writer.post("/ui/storage/receipts/delete", form, csrf=False)
    assert stale.status_code == 403
    assert _exists(world, "receipts", "gone/soon.txt")

    done = writer.post("/ui/storage/receipts/delete", form)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/storage/receipts?prefix=gone%2F"
    assert not _exists(world, "receipts", "gone/soon.txt")
    assert writer.post("/ui/storage/receipts/delete", form).status_code == 404  # already gone
    with world.api() as api:
        events = api.get("/api/v1/audit", params={"action": "object.delete", "actor": "writer"}).json()[
            "events"
        ]
    assert [(e["target"], e["details"]["key"]) for e in events] == [("bucket/receipts", "gone/soon.txt")]


def test_a_presigned_link_downloads_without_credentials(world: World, writer: ConsoleSession) -> None:
    assert _upload(writer, "receipts", "share/report.txt", b"the report").status_code == 201
    page = writer.get("/ui/storage/receipts?prefix=share/")
    assert 'action="/ui/storage/receipts/presign"' in page.text

    stale = writer.post(
        "/ui/storage/receipts/presign", {"key": "share/report.txt", "expires_in": "3600"}, csrf=False
    )
    assert stale.status_code == 403
    made = writer.post("/ui/storage/receipts/presign", {"key": "share/report.txt", "expires_in": "3600"})
    assert made.status_code == 200, made.text
    found = _PRESIGNED.search(made.text)
    assert found is not None
    url = html.unescape(found.group(1))
    assert url.startswith("http://testserver/api/v1/storage/receipts/objects/share/report.txt?")
    with world.served.client() as nobody:
        answer = nobody.get(url)
    assert answer.status_code == 200 and answer.content == b"the report"

    too_long = writer.post(
        "/ui/storage/receipts/presign", {"key": "share/report.txt", "expires_in": "99999999"}
    )
    assert too_long.status_code == 400
    with world.api() as api:
        events = api.get("/api/v1/audit", params={"action": "object.presign", "actor": "writer"}).json()[
            "events"
        ]
    assert len(events) == 1 and events[0]["details"]["key"] == "share/report.txt"


def test_a_bucket_the_caller_may_not_see_is_404(
    world: World, people: dict[str, str], writer: ConsoleSession
) -> None:
    assert _upload(writer, "receipts", "private.txt", b"secret").status_code == 201
    stranger = world.console(people["stranger"])
    assert stranger.get("/ui/storage/receipts").status_code == 404
    assert stranger.get("/ui/storage/vault").status_code == 404
    assert stranger.get("/ui/storage/no-such-bucket").status_code == 404
    assert stranger.post("/ui/storage/receipts/delete", {"key": "private.txt"}).status_code == 404
    assert (
        stranger.post("/ui/storage/receipts/presign", {"key": "private.txt", "expires_in": "60"}).status_code
        == 404
    )
    assert _upload(stranger, "receipts", "theirs.txt", b"x").status_code == 404
    assert _exists(world, "receipts", "private.txt") and not _exists(world, "receipts", "theirs.txt")
    assert world.console(people["writer"]).get("/ui/storage/vault").status_code == 404


def test_a_reader_browses_but_may_not_change(
    world: World, people: dict[str, str], writer: ConsoleSession
) -> None:
    assert _upload(writer, "receipts", "kept.txt", b"keep me").status_code == 201
    auditor = world.console(people["auditor"])
    page = auditor.get("/ui/storage/receipts")
    assert page.status_code == 200 and ">kept.txt</span>" in page.text and "read only" in page.text
    assert "data-upload" not in page.text and "/delete" not in page.text
    assert auditor.post("/ui/storage/receipts/delete", {"key": "kept.txt"}).status_code == 403
    assert _upload(auditor, "receipts", "kept.txt", b"changed").status_code == 403
    assert _exists(world, "receipts", "kept.txt")
    shared = auditor.post("/ui/storage/receipts/presign", {"key": "kept.txt", "expires_in": "900"})
    assert shared.status_code == 200 and _PRESIGNED.search(shared.text) is not None


def test_object_names_are_shown_escaped(world: World, writer: ConsoleSession) -> None:
    for key in ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>.txt"]:
        assert _upload(writer, "receipts", key, b"x").status_code == 201
    page = writer.get("/ui/storage/receipts")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/" in page.text  # a folder
    assert "&lt;img src=x onerror=alert(2)&gt;.txt" in page.text
    folder = writer.get("/ui/storage/receipts", params={"prefix": "<script>alert(1)</"})
    assert folder.status_code == 200 and "<script>alert" not in folder.text
    assert ">script&gt;</span>" in folder.text  # the object's name below the folder


def test_storage_pages_need_a_session(world: World) -> None:
    anonymous = world.anonymous()
    answer = anonymous.get("/ui/storage/receipts")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/sign-in?next=")
