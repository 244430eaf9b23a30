"""The storage pages: the buckets the caller may use, and a browser of one bucket's objects.

The browser lists one "folder" at a time (the common prefixes up to the next `/`, then the objects), a page
at a time with the store's continuation cursor. Downloads and uploads go to the files API itself
(`/api/v1/storage/...`), which the session cookie authenticates: a download is a plain link, an upload a
`PUT` from `static/storage.js` carrying the page's CSRF token. Deleting an object and making a presigned
link are forms of these pages, done by the same storage service, with the same checks and audit records, as
the API's `DELETE` and `presign` routes.

Who sees what follows the API: admins see every bucket; members of a bucket's `groups` read and write it,
members of its `readGroups` only read it; to anyone else it is a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelport.console.web import Console
from modelport.control.audit import manifest_action
from modelport.core.errors import ValidationFailed, field_error

__all__ = ["routes"]

PAGE_SIZE = 50
"""Objects and folders on one page of the browser, unless the address asks for `limit`."""
MAX_PAGE_SIZE = 1000
PRESIGN_CHOICES = (900, 3600, 86_400, 7 * 86_400)
"""The lifetimes (seconds) the presign form offers, up to `presign_max_seconds`."""


@dataclass(frozen=True)
class Crumb:
    """One step of the path to the listed prefix: its label and the prefix it lists."""

    label: str
    prefix: str


def routes(console: Console) -> list[BaseRoute]:
    storage = console.services.storage

    def buckets_page(request: Request) -> Response:
        page = console.page(request)
        buckets = storage.buckets(page.principal)
        return console.render(page, "storage_buckets.html", buckets=buckets, created=_created(console))

    def bucket_page(request: Request) -> Response:
        page = console.page(request)
        bucket = request.path_params["bucket"]
        policy = storage.require(page.principal, bucket, write=False)
        query = request.query_params
        prefix = _text(query.get("prefix"), "prefix")
        cursor = _text(query.get("cursor"), "cursor") or None
        limit = _limit(query.get("limit"))
        listing = storage.objects(bucket, prefix=prefix, delimiter="/", cursor=cursor, limit=limit)
        info = next((found for found in storage.buckets(page.principal) if found.name == bucket), None)
        return console.render(
            page,
            "storage_bucket.html",
            bucket=bucket,
            info=info,
            writable=policy.may_write(page.principal),
            listing=listing,
            cursor=cursor,
            limit=limit if "limit" in query else None,
            crumbs=_crumbs(prefix),
            folder=prefix[: prefix.rfind("/") + 1],
            api=_api_root(request),
            object_url=lambda key: f"{_api_root(request)}/{bucket}/objects/{quote(key, safe='/')}",
            presign_choices=_lifetimes(console.settings.presign_max_seconds),
        )

    async def delete_object(request: Request) -> Response:
        page, form = await console.form(request)
        bucket = request.path_params["bucket"]
        await asyncio.to_thread(storage.require, page.principal, bucket, write=True)
        await asyncio.to_thread(storage.delete, bucket, _field(form, "key"), actor=page.actor())
        return _back_to(request, bucket, str(form.get("prefix") or ""))

    async def presign_object(request: Request) -> Response:
        page, form = await console.form(request)
        bucket = request.path_params["bucket"]
        await asyncio.to_thread(storage.require, page.principal, bucket, write=False)
        key = _field(form, "key")
        presigned = await asyncio.to_thread(
            storage.presign,
            bucket,
            key,
            method="GET",
            expires_in=_seconds(form.get("expires_in")),
            base_url=str(request.base_url),
            actor=page.actor(),
        )
        return console.render(
            page,
            "storage_presign.html",
            bucket=bucket,
            key=key,
            presigned=presigned,
            back=str(form.get("prefix") or ""),
        )

    return [
        Route("/storage", buckets_page, methods=["GET"], name="storage"),
        Route("/storage/{bucket}", bucket_page, methods=["GET"], name="storage-bucket"),
        Route("/storage/{bucket}/delete", delete_object, methods=["POST"], name="storage-delete"),
        Route("/storage/{bucket}/presign", presign_object, methods=["POST"], name="storage-presign"),
    ]


def _lifetimes(longest: int) -> list[int]:
    """What the presign form offers: the usual lifetimes up to `longest`, or `longest` alone."""
    return [seconds for seconds in PRESIGN_CHOICES if seconds <= longest] or [longest]


def _created(console: Console) -> dict[str, str]:
    """When each bucket's `Storage` manifest was first applied, by bucket, from the audit trail (one query;
    a bucket made again after a delete shows its latest creation)."""
    action = manifest_action("storage", "created")
    events = console.services.audit.events(action=action, limit=MAX_PAGE_SIZE)
    created: dict[str, str] = {}
    for event in events:  # newest first
        created.setdefault(event.target.removeprefix("storage/"), event.at)
    return created


def _api_root(request: Request) -> str:
    """The path of the files API, as seen from the browser (the platform may itself be mounted below `/`)."""
    root = str(request.scope.get("app_root_path", "")).rstrip("/")
    return f"{root}/api/v1/storage"


def _crumbs(prefix: str) -> list[Crumb]:
    """The steps from the bucket's top to `prefix`: `a/b/` → `a/`, `a/b/`."""
    crumbs: list[Crumb] = []
    start = 0
    while start < len(prefix):
        end = prefix.find("/", start)
        stop = len(prefix) if end < 0 else end + 1
        crumbs.append(Crumb(prefix[start:stop].rstrip("/"), prefix[:stop]))
        start = stop
    return crumbs


def _back_to(request: Request, bucket: str, prefix: str) -> Response:
    """After a change: the listing it was made from."""
    location = f"{request.scope.get('root_path', '')}/storage/{bucket}"
    if prefix:
        location += f"?prefix={quote(prefix, safe='')}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def _text(value: str | None, name: str) -> str:
    """A query parameter of at most 1024 characters, as the API takes it."""
    text = value or ""
    if len(text) > 1024:
        raise ValidationFailed(
            f"{name} is longer than 1024 characters",
            details=[field_error(name, "too_long", "at most 1024 characters")],
        )
    return text


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ValidationFailed(
            f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}",
            details=[field_error("limit", "out_of_range", f"from 1 to {MAX_PAGE_SIZE}")],
        )
    return int(value)


def _field(form: Mapping[str, Any], name: str) -> str:
    value = str(form.get(name) or "")
    if not value:
        raise ValidationFailed(f"{name} is required", details=[field_error(name, "missing", "required")])
    return value


def _seconds(value: Any) -> int:
    text = str(value or "").strip()
    if not text.isdigit():
        raise ValidationFailed(
            "expires_in must be a number of seconds",
            details=[field_error("expires_in", "invalid", "a whole number of seconds")],
        )
    return int(text)
