"""The modules pages: the list, a module's overview (deployment, versions, deploy / canary / rollback), a
version's build log.

Who sees what follows the API: a module's owners (developers in its owner group) and admins manage it and
see every tab; a caller its `Api` manifests let in sees its overview, try-it form and API docs; anyone else is
told there is no such module (404), exactly as the API tells them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelport.console.web import Console, Page
from modelport.control.access import ModulePolicy, may_call, may_manage
from modelport.core.errors import ModuleNotFound, ValidationFailed, field_error
from modelport.core.records import ModuleInfo

__all__ = ["ModuleAccess", "module_access", "module_routes"]


@dataclass(frozen=True)
class ModuleAccess:
    """What the page's caller may do with one module."""

    name: str
    policy: ModulePolicy
    manage: bool


def module_access(console: Console, page: Page, module: str, *, manage: bool = False) -> ModuleAccess:
    """The caller's access to `module`: `ModuleNotFound` where it may neither manage nor call it (or, with
    `manage`, may not manage it), as the API answers."""
    policy = console.services.policies.policy(module)
    if policy is None:
        raise ModuleNotFound(f"no module named {module!r}")
    managing = may_manage(page.principal, policy)
    if not managing and (manage or not may_call(page.principal, policy)):
        raise ModuleNotFound(f"no module named {module!r}")
    return ModuleAccess(module, policy, managing)


def visible_modules(console: Console, page: Page) -> list[tuple[ModuleInfo | None, str, bool]]:
    """The modules the caller may manage (with their info) or call: (info or None, name, manage)."""
    services = console.services
    managed = {info.name: info for info in services.modules(page.principal)}
    called = [
        policy.module
        for policy in services.policies.modules()
        if policy.module not in managed and may_call(page.principal, policy)
    ]
    shown: list[tuple[ModuleInfo | None, str, bool]] = [(info, name, True) for name, info in managed.items()]
    shown += [(None, name, False) for name in called]
    return sorted(shown, key=lambda item: item[1])


def module_routes(console: Console) -> list[BaseRoute]:
    services = console.services

    def modules_page(request: Request) -> Response:
        page = console.page(request)
        shown = visible_modules(console, page)
        overview = services.stats.overview([name for _, name, _ in shown])
        return console.render(page, "modules.html", modules=shown, overview=overview)

    def module_page(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"])
        return console.render(page, "module.html", tab="overview", **_overview(console, access))

    def deployment_fragment(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"])
        return console.render(page, "module_deployment.html", **_overview(console, access))

    def build_log(request: Request) -> Response:
        page = console.page(request)
        access = module_access(console, page, request.path_params["module"], manage=True)
        version = services.versions.get(access.name, request.path_params["version"])
        log = services.versions.build_log(access.name, version.name)
        return console.render(page, "build_log.html", tab="overview", access=access, version=version, log=log)

    async def deploy(request: Request) -> Response:
        page, form = await console.form(request)
        access = await asyncio.to_thread(
            module_access, console, page, request.path_params["module"], manage=True
        )
        version = str(form.get("version") or "")
        canary = _number(form.get("canary_percent"), "canary_percent", 0, 100)
        replicas = _number(form.get("replicas"), "replicas", 1, 64)
        await asyncio.to_thread(
            services.deployments.deploy,
            access.name,
            version,
            replicas=replicas,
            canary_percent=canary,
            actor=page.actor(),
        )
        return _back_to(request, access.name)

    async def rollback(request: Request) -> Response:
        page, _ = await console.form(request)
        access = await asyncio.to_thread(
            module_access, console, page, request.path_params["module"], manage=True
        )
        await asyncio.to_thread(services.deployments.rollback, access.name, actor=page.actor())
        return _back_to(request, access.name)

    return [
        Route("/modules", modules_page, methods=["GET"], name="modules"),
        Route("/modules/{module}", module_page, methods=["GET"], name="module"),
        Route("/modules/{module}/deployment", deployment_fragment, methods=["GET"], name="module-deployment"),
        Route("/modules/{module}/versions/{version}", build_log, methods=["GET"], name="module-version"),
        Route("/modules/{module}/deploy", deploy, methods=["POST"], name="module-deploy"),
        Route("/modules/{module}/rollback", rollback, methods=["POST"], name="module-rollback"),
    ]


def _overview(console: Console, access: ModuleAccess) -> dict[str, Any]:
    services = console.services
    info = services.module(access.name)
    versions = services.versions.list(access.name) if access.manage else []
    return {"access": access, "info": info, "deployment": info.deployment, "versions": versions}


def _number(value: Any, name: str, low: int, high: int) -> int | None:
    """An optional whole number of a form, `ValidationFailed` naming the field when it is not one in range."""
    text = str(value or "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValidationFailed(
            f"{name} must be a whole number from {low} to {high}",
            details=[field_error(name, "out_of_range", f"must be a whole number from {low} to {high}")],
        )
    return int(text)


def _back_to(request: Request, module: str) -> Response:
    """After an action: the module's page (HTMX swaps the deployment; a plain form follows the redirect)."""
    location = f"{request.scope.get('root_path', '')}/modules/{module}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)
