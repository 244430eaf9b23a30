"""What every console page shares: templates in the caller's language, the signed-in principal, CSRF, errors.

The console is server-rendered: Jinja2 templates (`console/templates/`, and the try-it form's macros in
`gateway/templates/_try_form.html`), uPlot vendored under `console/static/` and HTMX 2 under the gateway's
`static/`, no JavaScript build. Pages read and change the platform through the same control services
and the same permission checks as the public API's routes, with the principal of the session cookie that
`gateway/auth.py` authenticated. A caller without a session is sent to the sign-in page (an HTMX request is
told where to go in `HX-Redirect`); an object the caller may not see is the same 404 page as one that does
not exist.

Each form carries the session's CSRF token (`csrf` field, or the `X-CSRF-Token` header that HTMX sends for
every request the page makes); a POST without it changes nothing (403). Before sign-in, the sign-in forms use
a double-submit cookie instead.

Languages: English and Russian, from the `mp_lang` cookie (the switch in the page header) or else
`Accept-Language`. The Russian catalog is `locale/ru/LC_MESSAGES/messages.po`, read at start (no compiled
`.mo` files are kept).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from modelport.control.audit import Actor
from modelport.control.identity import Principal
from modelport.control.platform import Services
from modelport.core.errors import Forbidden, ModelportError
from modelport.gateway.auth import CSRF_HEADER, client_address, cookie, csrf_token, principal_of, session_of
from modelport.gateway.context import request_id_of

__all__ = [
    "LANGUAGES",
    "LOCALE_DIR",
    "STATIC_DIR",
    "Console",
    "Page",
    "SignInRequired",
    "translations",
]

STATIC_DIR = Path(__file__).parent / "static"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "ru")
LANG_COOKIE = "mp_lang"
FORM_CSRF_COOKIE = "mp_csrf"
"""Before sign-in: the double-submit CSRF token of the sign-in forms."""


class SignInRequired(Exception):
    """The page needs a signed-in caller; it has none (or its session has expired)."""


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of `language`, compiled in memory from its `.po` file (English is the source)."""
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == "en" or not po.exists():
        return NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate(request: Request) -> str:
    """The caller's language: the switch's cookie, else the best of `Accept-Language`, else English."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    header = request.headers.get("accept-language", "")
    wanted = [part.split(";")[0].strip().replace("-", "_") for part in header.split(",") if part.strip()]
    try:
        found = Locale.negotiate(wanted, list(LANGUAGES), sep="_") if wanted else None
    except (UnknownLocaleError, ValueError):
        found = None
    return str(found.language) if found is not None else "en"


@dataclass(frozen=True)
class Page:
    """One request as a page sees it: who asks, in which language, and the token its forms must carry."""

    request: Request
    principal: Principal
    language: str
    csrf: str

    @property
    def signed_in(self) -> bool:
        return not self.principal.is_anonymous

    def actor(self) -> Actor:
        return Actor(
            self.principal.name,
            client=client_address(self.request.scope),
            request_id=request_id_of(self.request.scope),
        )

    def gettext(self, message: str, **values: Any) -> str:
        text = translations(self.language).ugettext(message)
        return text % values if values else text


class Console:
    """The console's templates and helpers, shared by its pages."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.environments: dict[str, Environment] = {lang: self._environment(lang) for lang in LANGUAGES}

    def _environment(self, language: str) -> Environment:
        environment = Environment(
            # The try-it form's macros are the gateway's, shared with the dev server's page.
            loader=ChoiceLoader(
                [
                    PackageLoader("modelport.console", "templates"),
                    PackageLoader("modelport.gateway", "templates"),
                ]
            ),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        environment.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
        locale = Locale.parse(language)
        environment.filters["number"] = lambda value, digits=0: format_decimal(
            value, format=f"#,##0.{'0' * digits}" if digits else "#,##0", locale=locale
        )
        environment.filters["when"] = lambda value: _when(value, locale)
        environment.filters["ago"] = lambda value: _ago(value, locale)
        environment.filters["bytes"] = lambda value: _bytes(value, locale)
        environment.filters["q"] = lambda value: quote(str(value), safe="")
        environment.globals["languages"] = LANGUAGES
        return environment

    def page(self, request: Request, *, signed_in: bool = True) -> Page:
        """The request as a page: `SignInRequired` where it must be signed in and is not."""
        principal = principal_of(request.scope)
        if signed_in and principal.is_anonymous:
            raise SignInRequired
        session = session_of(request.scope)
        token = csrf_token(session) if session else request.cookies.get(FORM_CSRF_COOKIE) or ""
        return Page(request, principal, negotiate(request), token)

    async def form(self, request: Request, *, signed_in: bool = True) -> tuple[Page, Mapping[str, Any]]:
        """The page and its posted form, once the form's CSRF token is checked (403 otherwise)."""
        page = self.page(request, signed_in=signed_in)
        form = await request.form()
        sent = str(form.get("csrf") or request.headers.get(CSRF_HEADER.decode()) or "")
        if not page.csrf or not hmac.compare_digest(sent.encode(), page.csrf.encode()):
            raise Forbidden(
                "the form is stale or was not sent by this console: reload the page and try again"
            )
        return page, form

    def render(
        self,
        page: Page,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        environment = self.environments[page.language]
        html = environment.get_template(template).render(
            page=page,
            principal=page.principal,
            csrf=page.csrf,
            lang=page.language,
            ui=page.request.scope.get("root_path", ""),
            path=page.request.url.path,
            htmx=page.request.headers.get("hx-request") == "true",
            oidc=bool(self.settings.oidc_issuer and self.settings.oidc_client_id),
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(self, request: Request, exc: ModelportError) -> Response:
        """An error as a page (or, for HTMX, as a fragment that says what went wrong)."""
        page = self.page(request, signed_in=False)
        return self.render(
            page,
            "error.html",
            status=exc.status,
            code=exc.code,
            message=exc.public_message(),
            details=exc.details if exc.status < 500 else None,
        )

    def sign_in_redirect(self, request: Request) -> Response:
        """Where a caller without a session goes: the sign-in page, then back to `next`."""
        root = request.scope.get("root_path", "")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.headers.get("hx-current-url") or request.headers.get("referer") or root + "/"
            target = _local(target)
        location = f"{root}/sign-in?next={quote(target, safe='')}"
        if session_of(request.scope) is None and cookie(request.scope, "mp_session"):
            location += "&expired=1"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)


def new_form_csrf() -> str:
    return secrets.token_urlsafe(24)


def _local(url: str) -> str:
    """The path and query of `url`: where a redirect may go back to (never another site)."""
    parts = urlsplit(url)
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else "/"
    return path + (f"?{parts.query}" if parts.query else "")


def local_target(value: str | None, default: str) -> str:
    """A `next` parameter made safe: a path on this server, else `default`."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return _local(value)


def _when(value: str | datetime | None, locale: Locale) -> str:
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_datetime(moment, format="yyyy-MM-dd HH:mm:ss", locale=locale)


def _ago(value: str | datetime | None, locale: Locale) -> str:
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    now = datetime.now(moment.tzinfo)
    return format_timedelta(moment - now, add_direction=True, locale=locale)


def _bytes(value: int | None, locale: Locale) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{format_decimal(size, format='#,##0.#', locale=locale)} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
