"""A module's "Try it" and "API" tabs: a form built from the module's `ApiSpec` that calls the real predict
route from the browser, and the module's API as tables with a curl example.

The form's controls are the dev server's (`gateway/pages.py`); `static/try.js` sends the same multipart
request its try-it page sends (`inputs.<name>`, `parameters.<name>`, `output_fields`) to
`/api/v1/modules/{module}/predict`, authenticated by the session cookie and its CSRF header, so the API
applies access, rate limits and the request log to it as to any other call. Both tabs show the API of the
version that serves the module's calls; a manager may pick another running version (`?version=`). Who sees
them follows the API's module rule: whoever may call the module, its owners and admins; anyone else gets the
404 page.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.console.modules import ModuleAccess, module_access
from modelport.console.web import Console
from modelport.gateway.pages import form_controls
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, TypeSpec

__all__ = ["routes"]


@dataclass(frozen=True)
class ShownApi:
    """The running version whose API a tab shows, and the running versions the caller may pick from."""

    version: str
    spec: ApiSpec
    pinned: bool
    """Whether the caller picked this version (`?version=`): its calls then pin it as well."""
    running: tuple[str, ...]
    """Every running version, for a manager; empty for a caller who may not pick one."""


@dataclass(frozen=True)
class FieldRow:
    """One row of the API tab's tables: a declared field as a caller reads it."""

    name: str
    type: str
    required: bool
    default: str | None
    """The default as JSON; None when the field has none."""
    limits: str
    description: str


def _shown_api(console: Console, access: ModuleAccess, wanted: str | None) -> ShownApi | None:
    """The version to show: `wanted` where a manager picked a running one (`VersionNotFound` where it does
    not run), else the active version; None while no version serves the module."""
    registry = console.services.registry
    running = tuple(sorted(registry.versions(access.name))) if access.manage else ()
    active = registry.active(access.name)
    if wanted and access.manage and (active is None or wanted != active.version):
        served = registry.get(access.name, wanted)
        return ShownApi(served.version, served.spec, True, running)
    if active is None:
        return None
    return ShownApi(active.version, active.spec, False, running)


def routes(console: Console) -> list[BaseRoute]:
    def try_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"])
        shown = _shown_api(console, access, request.query_params.get("version"))
        context: dict[str, Any] = {"access": access, "shown": shown, "tab": "try"}
        if shown is not None:
            context |= {
                "controls": form_controls(shown.spec),
                "description": _description(shown.spec),
                "predict_url": _predict_url(access.name, shown),
            }
        return console.render(page, "module_try.html", **context)

    def docs_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"])
        shown = _shown_api(console, access, request.query_params.get("version"))
        context: dict[str, Any] = {"access": access, "shown": shown, "tab": "docs"}
        if shown is not None:
            origin = f"{request.url.scheme}://{request.url.netloc}"
            name = quote(access.name, safe="")
            context |= {
                "description": _description(shown.spec),
                "predict_url": _predict_url(access.name, shown),
                "inputs": _field_rows(shown.spec.inputs),
                "parameters": _field_rows(shown.spec.parameters),
                "outputs": _field_rows(shown.spec.outputs),
                "curl": _curl_example(shown.spec, origin + _predict_url(access.name, shown)),
                "swagger_url": f"/docs?module={name}",
                "openapi_url": f"/api/v1/modules/{name}/openapi.json" + _version_query(shown),
            }
        return console.render(page, "module_docs.html", **context)

    return [
        Route("/modules/{module}/try", try_page, methods=["GET"], name="module-try"),
        Route("/modules/{module}/docs", docs_page, methods=["GET"], name="module-docs"),
    ]


def _field_rows(fields: tuple[FieldSpec, ...]) -> list[FieldRow]:
    """The rows of one group's table (inputs, parameters or outputs)."""
    return [
        FieldRow(
            name=f.name,
            type=f.type_text,
            required=f.required,
            default=json.dumps(f.default, ensure_ascii=False) if f.has_default else None,
            limits=", ".join(
                m for m in f.render_modifiers() if m != "optional" and not m.startswith("default ")
            ),
            description=f.description,
        )
        for f in fields
    ]


def _curl_example(spec: ApiSpec, url: str) -> str:
    """A curl command that calls `url` with the required inputs of `spec` (multipart where one of them is a
    file, JSON otherwise), authenticated by the token in `$MODELPORT_TOKEN`."""
    required = [f for f in spec.inputs if f.required]
    lines = [f"curl -X POST {_shell(url)}", '-H "Authorization: Bearer $MODELPORT_TOKEN"']
    if any(f.has_file for f in required):
        lines += [_form_part(f) for f in required]
    else:
        body = {"inputs": {f.name: _example(f) for f in required}}
        lines += ["-H 'Content-Type: application/json'", f"-d {_shell(json.dumps(body, ensure_ascii=False))}"]
    return " \\\n  ".join(lines)


def _form_part(f: FieldSpec) -> str:
    if f.has_file:
        return "-F " + _shell(f"inputs.{f.name}=@{_file_name(f)}")
    value = _example(f)
    return "-F " + _shell(f"inputs.{f.name}={value if isinstance(value, str) else json.dumps(value)}")


def _file_name(f: FieldSpec) -> str:
    """A file name for a file field's example: the field's name, with the suffix of its first MIME type."""
    file_type = f.file_type or next((t.item for t in f.types if t.item is not None), None)
    for mime in file_type.mime if file_type is not None else ():
        suffix = None if "*" in mime else mimetypes.guess_extension(mime)
        if suffix:
            return f.name + suffix
    return f.name


def _example(f: FieldSpec) -> Any:
    """A value `f` accepts, to show in the example."""
    if f.choices:
        return f.choices[0]
    return _type_example(f.types[0], f.minimum, f.maximum)


def _type_example(t: TypeSpec, minimum: float | None, maximum: float | None) -> Any:
    if t.kind is Kind.STR:
        return "text".ljust(int(minimum or 0), "x")
    if t.kind in (Kind.INT, Kind.FLOAT):
        value: float = 1 if t.kind is Kind.INT else 0.5
        value = max(value, minimum) if minimum is not None else value
        value = min(value, maximum) if maximum is not None else value
        return int(value) if t.kind is Kind.INT else float(value)
    if t.kind is Kind.BOOL:
        return True
    if t.kind is Kind.LIST and t.item is not None:
        return [_type_example(t.item, None, None)] * max(1, int(minimum or 1))
    return {}


def _shell(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _description(spec: ApiSpec) -> str:
    """The module's description without its title line."""
    body = spec.description
    if spec.title and body.startswith(spec.title):
        body = body[len(spec.title) :]
    return body.strip()


def _predict_url(module: str, shown: ShownApi) -> str:
    return f"/api/v1/modules/{quote(module, safe='')}/predict" + _version_query(shown)


def _version_query(shown: ShownApi) -> str:
    return f"?version={quote(shown.version, safe='')}" if shown.pinned else ""
